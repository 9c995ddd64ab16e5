// The cost of one refresh through keel's S3 fetcher (keel/fetchers/s3.h) beside its peers, in
// the same run: the same signed request through a bare libcurl handle, and keel's Http fetcher
// against nginx, whose 304 is what a refresh costs without SigV4 and without a node server.
//
// Setup (once per run, in main, before any row; stopped at exit): one S3 server
// (keel::testing::S3Server, tests/support/s3rver.h: npm s3rver 3.7.1 under node, behind the
// fixture's SigV4 check) with bucket "alpha" holding two objects, bench/object-65536 (64 KB)
// and bench/object-4194304 (4 MB); one nginx (keel::testing::NginxServer,
// tests/support/nginx.h) serving a 64 KB file object-65536 with its ETag; one keel::Runtime.
// s3rver is then warmed up with 100 rounds of the rows' requests (node's JIT would otherwise
// bill the first rows). Everything is on 127.0.0.1, plain http. A fixture that cannot start
// (node, s3rver or nginx missing) fails every row that needs it with the fixture's message
// (SkipWithError), and the binary then exits 1.
//
// Rows (one thread, wall time: the work runs on the runtime's control thread and in the
// server processes; one iteration is one refresh):
//   BM_S3Fetcher_S3NotModified
//       keel's S3 fetcher, given the object's ETag: a Fetch posted to the runtime's control
//       thread, the benchmark thread waiting for its callback. A signed GET with
//       If-None-Match, answered 304.
//   BM_S3FetcherHeadFirst_S3NotModified
//       the same with head_first: a signed HEAD whose ETag matches, so no GET follows.
//   BM_RawCurl_S3NotModified
//       the peer: the same signed conditional GET (CURLOPT_AWS_SIGV4 "aws:amz:us-east-1:s3",
//       the key pair as CURLOPT_USERNAME/PASSWORD, x-amz-content-sha256 of the empty body,
//       If-None-Match) with one reused easy handle, curl_easy_perform on the benchmark thread.
//   BM_S3Fetcher_S3Get/<bytes>, BM_RawCurl_S3Get/<bytes>
//       keel's S3 fetcher with no known ETag: a full GET of the 64 KB or 4 MB object, and the
//       same GET through the reused easy handle (the body appended to a std::string, as keel
//       does; the peer's string keeps its capacity between iterations, keel's result is a
//       fresh one). bytes/s is object bytes per second of wall time.
//   BM_HttpFetcher_HttpNotModified, BM_RawCurl_HttpNotModified
//       keel's Http fetcher against nginx, given the file's ETag: a conditional GET answered
//       304 (no signature); and the same request through a reused easy handle.
//   BM_Runtime_PostAndWait
//       keel's hand-off alone, no request: an empty task posted to the control thread that
//       wakes the waiting thread, as around every keel fetch above.
// Every iteration checks its answer (304 with no body, or 200 with the whole object) and the
// row fails at the first wrong one.
//
// Counters (per iteration): body_bytes, the body bytes received (0 for every NotModified row:
// a 304 and a HEAD carry none); s3_requests, the requests the S3 server counted during the
// timed loop (1 for every S3 row: head_first sends the HEAD alone).
//
// How to read it: keel's row / RawCurl's on the same request is what keel adds to libcurl: a Post
// to the control thread and its wake-up, a fresh easy handle per request (the connection itself is
// reused from the runtime's multi handle, as the peer reuses its own), the fetcher's bookkeeping,
// and the wake-up of the waiting thread; the request's signing and the server's work are the same
// on both sides. BM_S3Fetcher_S3NotModified / BM_HttpFetcher_HttpNotModified is what SigV4 (signing
// here, and the fixture's check in node) plus s3rver's handling in node cost over a C server's 304
// on the same loopback; it says little about AWS, where the round trip dominates.
// BM_S3FetcherHeadFirst_S3NotModified / BM_S3Fetcher_S3NotModified is the price of a HEAD against a
// conditional GET when nothing changed: on a real link both are one round trip. The CPU column is
// the benchmark thread's alone (for keel rows, posting and waiting, not the request): compare wall
// times.
//
// Costs (this machine: a 2-vCPU Firecracker VM, Release, one run of the binary with
// --benchmark_min_time=1, as Google Benchmark 1.7.1 spells it; wall time per refresh, and
// keel / raw curl on the same request). "as run" is that run; "one vCPU" is the same binary
// right after under `taskset -c 0` (every thread and both servers on one vCPU):
//                                          as run             one vCPU
//   BM_S3Fetcher_S3NotModified            2114 us  1.16x    1926 us  1.21x
//   BM_S3FetcherHeadFirst_S3NotModified   2079 us  1.14x    1693 us  1.06x
//   BM_RawCurl_S3NotModified              1818 us           1598 us
//   BM_S3Fetcher_S3Get/65536              2218 us  1.03x    1751 us  0.90x
//   BM_RawCurl_S3Get/65536                2152 us           1943 us
//   BM_S3Fetcher_S3Get/4194304            15.5 ms  1.00x    14.0 ms  0.98x (258 / 286 MB/s)
//   BM_RawCurl_S3Get/4194304              15.5 ms           14.2 ms        (258 / 281 MB/s)
//   BM_HttpFetcher_HttpNotModified         105 us  1.31x    30.5 us  1.57x
//   BM_RawCurl_HttpNotModified              80 us           19.4 us
//   BM_Runtime_PostAndWait                  60 us            5.1 us
// body_bytes was 0 on every NotModified row and s3_requests 1 on every S3 row. An S3 304 is
// mostly s3rver's time in node: raw curl, which signs too, takes 1.6-1.8 ms; through keel it
// is 20x (as run) to 63x (one vCPU) nginx's 304 through keel. keel adds ~0.3 ms to an S3 304
// in these runs and nothing measurable to a 4 MB GET; head_first's HEAD is no dearer than the
// conditional GET against s3rver.
// Noise: on this VM, waking a thread that sleeps on the other, idle vCPU costs ~25-30 us
// (BM_Runtime_PostAndWait is two such wake-ups: 60 us, against 5 us on one vCPU, and ~6 us in
// runs where other processes kept both vCPUs busy). keel's rows make two more wake-ups per
// request than raw curl's (to the control thread and back), so the small rows swing between
// runs (BM_RawCurl_HttpNotModified measured 19-125 us within the hour). The S3 rows swing too
// (the raw 304 measured 1.8-3.7 ms over eight runs, some while other builds ran), and keel /
// raw on the S3 304 ranged 0.8x-1.2x: read the ratios to +-0.2.
#include <curl/curl.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "keel/fetchers/fetcher.h"
#include "keel/fetchers/http.h"
#include "keel/fetchers/s3.h"
#include "keel/internal/sync.h"
#include "keel/runtime.h"
#include "support/nginx.h"
#include "support/s3rver.h"

namespace {

using ::keel::fetchers::Fetcher;
using ::keel::fetchers::FetchRequest;
using ::keel::fetchers::FetchResult;
using ::keel::fetchers::Validators;
using ::keel::testing::NginxServer;
using ::keel::testing::S3Server;

constexpr char kBucket[] = "alpha";
constexpr int64_t kSmallBytes = int64_t{64} << 10;
constexpr int64_t kLargeBytes = int64_t{4} << 20;
// Each row's minimum wall time: the whole binary, servers included, runs in well under a
// minute.
constexpr double kMinTimeSeconds = 1.0;
// Per request, for keel and the peer alike; a loopback answer takes milliseconds.
constexpr long kRequestTimeoutMs = 10'000;

std::string S3Key(int64_t bytes) { return absl::StrCat("bench/object-", bytes); }
std::string NginxPath(int64_t bytes) { return absl::StrCat("/object-", bytes); }

// Object bytes that are not all the same, so that neither side could shortcut them.
std::string ObjectBytes(int64_t size) {
  std::string bytes(static_cast<size_t>(size), '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>('a' + i % 26);
  return bytes;
}

// Built in main() before any row runs (starting servers must not land in a timed run), and
// destroyed after the last one: the runtime before the servers it talks to.
struct Fixture {
  // OK, or why the S3 server or its objects could not be set up (the fixture's message).
  absl::Status s3_status;
  std::unique_ptr<S3Server> s3;
  // The ETag of S3Key(kSmallBytes), as the server sent it (quotes included).
  std::string s3_small_etag;
  absl::Status nginx_status;
  std::unique_ptr<NginxServer> nginx;
  // nginx's ETag of NginxPath(kSmallBytes).
  std::string nginx_small_etag;
  absl::Status runtime_status;
  std::unique_ptr<keel::Runtime> runtime;
};
Fixture* fixture = nullptr;

// Set by any row that fails; main() then exits 1 (Google Benchmark itself exits 0).
std::atomic<bool> any_row_failed{false};

void Fail(benchmark::State& state, const std::string& message) {
  any_row_failed.store(true);
  state.SkipWithError(message.c_str());
}

// True when every status is OK; else fails the row with the first error and returns false.
bool Ready(benchmark::State& state, std::initializer_list<const absl::Status*> statuses) {
  for (const absl::Status* s : statuses) {
    if (!s->ok()) {
      Fail(state, s->ToString());
      return false;
    }
  }
  return true;
}

// --- keel ---------------------------------------------------------------------------------

// One fetch as a term makes it: posted to the runtime's control thread, the calling thread
// waiting for the callback. The fetcher's own timeout bounds the wait.
FetchResult FetchOnce(keel::Runtime& runtime, Fetcher& fetcher, const Validators& known) {
  keel::internal::Notification arrived;
  FetchResult result;
  FetchRequest request;
  request.known = known;
  absl::Status posted = runtime.Post([&runtime, &fetcher, &request, &result, &arrived] {
    fetcher.Fetch(runtime, request, [&result, &arrived](FetchResult r) {
      result = std::move(r);
      arrived.Notify();  // under its lock: `arrived` may go as soon as the waiter wakes
    });
  });
  if (!posted.ok()) {
    result.status = std::move(posted);
    return result;
  }
  arrived.WaitForNotification();
  return result;
}

// Destroys `fetcher` on the runtime's control thread, and waits. The fetcher contract would
// also allow this thread once the last callback has run, but keel's HttpRequester drops its
// last reference to the finished transfer on the control thread just after the callback;
// a fetcher destroyed here in that window takes the transfer for a running one and logs a
// misuse (harmless, but not a line a benchmark should print).
void DestroyOnControlThread(keel::Runtime& runtime, std::unique_ptr<Fetcher> fetcher) {
  keel::internal::Notification destroyed;
  Fetcher* raw = fetcher.release();
  absl::Status posted = runtime.Post([raw, &destroyed] {
    delete raw;
    destroyed.Notify();
  });
  if (posted.ok()) {
    destroyed.WaitForNotification();
  } else {
    delete raw;  // the runtime is shutting down: no fetch of ours can be running
  }
}

// "" when `r` is the expected answer: not modified with no body, or the whole object.
std::string CheckResult(const FetchResult& r, bool expect_not_modified, int64_t object_bytes) {
  if (!r.status.ok()) return r.status.ToString();
  if (expect_not_modified) {
    if (!r.not_modified || !r.body.empty() || r.bytes_received != 0) {
      return absl::StrCat("expected not modified with 0 body bytes, got not_modified=",
                          r.not_modified, " and ", r.bytes_received, " body bytes");
    }
    return "";
  }
  if (r.not_modified || r.body.size() != static_cast<size_t>(object_bytes)) {
    return absl::StrCat("expected the ", object_bytes,
                        "-byte object, got not_modified=", r.not_modified, " and a ", r.body.size(),
                        "-byte body");
  }
  return "";
}

// The S3 server's request count, or -1 (and the row failed) when it cannot be read.
int64_t S3RequestCount(benchmark::State& state) {
  absl::StatusOr<int64_t> count = fixture->s3->RequestCount();
  if (!count.ok()) {
    Fail(state, absl::StrCat("S3 request count: ", count.status().ToString()));
    return -1;
  }
  return *count;
}

// Refreshes through `fetcher` once per iteration, after one untimed fetch that opens the
// connection. `count_s3_requests`: report the S3 server's requests per iteration.
void KeelLoop(benchmark::State& state, Fetcher& fetcher, const Validators& known,
              bool expect_not_modified, int64_t object_bytes, bool count_s3_requests) {
  keel::Runtime& runtime = *fixture->runtime;
  if (std::string wrong =
          CheckResult(FetchOnce(runtime, fetcher, known), expect_not_modified, object_bytes);
      !wrong.empty()) {
    Fail(state, absl::StrCat("warm-up fetch: ", wrong));
    return;
  }
  const int64_t requests_before = count_s3_requests ? S3RequestCount(state) : 0;
  if (requests_before < 0) return;
  uint64_t body_bytes = 0;
  for (auto _ : state) {
    FetchResult r = FetchOnce(runtime, fetcher, known);
    if (std::string wrong = CheckResult(r, expect_not_modified, object_bytes); !wrong.empty()) {
      Fail(state, wrong);
      break;
    }
    body_bytes += r.bytes_received;
    benchmark::DoNotOptimize(r.body.data());
  }
  state.counters["body_bytes"] =
      benchmark::Counter(static_cast<double>(body_bytes), benchmark::Counter::kAvgIterations);
  if (count_s3_requests) {
    const int64_t requests_after = S3RequestCount(state);
    if (requests_after < 0) return;
    state.counters["s3_requests"] = benchmark::Counter(
        static_cast<double>(requests_after - requests_before), benchmark::Counter::kAvgIterations);
  }
  if (!expect_not_modified) state.SetBytesProcessed(state.iterations() * object_bytes);
}

keel::fetchers::S3Options S3FetcherOptions(const S3Server& s3, int64_t object_bytes) {
  keel::fetchers::S3Options o;
  o.bucket = kBucket;
  o.key = S3Key(object_bytes);
  o.region = s3.region();
  o.endpoint = s3.Endpoint();
  o.credentials = keel::fetchers::S3Credentials{.access_key_id = s3.access_key_id(),
                                                .secret_access_key = s3.secret_access_key(),
                                                .session_token = ""};
  o.connect_timeout = absl::Seconds(2);
  o.timeout = absl::Milliseconds(kRequestTimeoutMs);
  return o;
}

Validators EtagOnly(const std::string& etag) {
  return Validators{.etag = etag, .last_modified = "", .version = etag};
}

void S3KeelRow(benchmark::State& state, bool head_first, bool not_modified, int64_t bytes) {
  if (!Ready(state, {&fixture->runtime_status, &fixture->s3_status})) return;
  keel::fetchers::S3Options options = S3FetcherOptions(*fixture->s3, bytes);
  options.head_first = head_first;
  std::unique_ptr<Fetcher> fetcher = keel::fetchers::S3(std::move(options));
  if (absl::Status valid = fetcher->Validate(); !valid.ok()) {
    Fail(state, valid.ToString());
    return;
  }
  KeelLoop(state, *fetcher, not_modified ? EtagOnly(fixture->s3_small_etag) : Validators{},
           not_modified, bytes, /*count_s3_requests=*/true);
  DestroyOnControlThread(*fixture->runtime, std::move(fetcher));
}

std::unique_ptr<Fetcher> NginxFetcher(const NginxServer& nginx) {
  return keel::fetchers::Http({.url = nginx.Url(NginxPath(kSmallBytes)),
                               .headers = {},
                               .connect_timeout = absl::Seconds(2),
                               .timeout = absl::Milliseconds(kRequestTimeoutMs),
                               .max_redirects = 0,
                               .verify_tls = true,
                               .ca_file = "",
                               .request_gzip = false});
}

// --- The peer: a bare libcurl easy handle -------------------------------------------------

size_t AppendBody(char* data, size_t size, size_t count, void* body) {
  static_cast<std::string*>(body)->append(data, size * count);
  return size * count;
}

// One easy handle configured once and performed once per iteration, on the calling thread:
// what a program that makes the request itself pays.
class RawCurl {
 public:
  RawCurl() : easy_(curl_easy_init()) {}
  RawCurl(const RawCurl&) = delete;
  RawCurl& operator=(const RawCurl&) = delete;
  ~RawCurl() {
    if (easy_ != nullptr) curl_easy_cleanup(easy_);
    curl_slist_free_all(headers_);
  }

  // `aws_sigv4` "" for an unsigned request. OK, or which option libcurl refused.
  absl::Status Configure(const std::string& url, const std::vector<std::string>& headers,
                         const std::string& aws_sigv4, const std::string& username,
                         const std::string& password) {
    if (easy_ == nullptr) return absl::ResourceExhaustedError("curl_easy_init failed");
    url_ = url;
    for (const std::string& h : headers) {
      curl_slist* appended = curl_slist_append(headers_, h.c_str());
      if (appended == nullptr) return absl::ResourceExhaustedError("curl_slist_append failed");
      headers_ = appended;
    }
    CURLcode rc = CURLE_OK;
    auto set = [&](CURLoption option, auto value) {
      if (rc == CURLE_OK) rc = curl_easy_setopt(easy_, option, value);
    };
    set(CURLOPT_URL, url_.c_str());
    set(CURLOPT_HTTPGET, 1L);
    set(CURLOPT_NOSIGNAL, 1L);
    set(CURLOPT_TIMEOUT_MS, kRequestTimeoutMs);
    set(CURLOPT_HTTP_CONTENT_DECODING, 0L);  // as keel: bytes as sent
    set(CURLOPT_PATH_AS_IS, 1L);             // as keel's S3 fetcher
    set(CURLOPT_HTTPHEADER, headers_);
    set(CURLOPT_WRITEFUNCTION, &AppendBody);
    set(CURLOPT_WRITEDATA, static_cast<void*>(&body_));
    if (!aws_sigv4.empty()) {  // libcurl copies string options
      set(CURLOPT_AWS_SIGV4, aws_sigv4.c_str());
      set(CURLOPT_USERNAME, username.c_str());
      set(CURLOPT_PASSWORD, password.c_str());
    }
    if (rc != CURLE_OK) {
      return absl::InternalError(absl::StrCat("curl_easy_setopt: ", curl_easy_strerror(rc)));
    }
    return absl::OkStatus();
  }

  // Performs the request; "" when it was answered `expected_status` with `expected_bytes`
  // body bytes, else what went wrong.
  std::string Perform(long expected_status, int64_t expected_bytes) {
    body_.clear();
    const CURLcode rc = curl_easy_perform(easy_);
    if (rc != CURLE_OK) return absl::StrCat("GET ", url_, ": ", curl_easy_strerror(rc));
    long status = 0;
    curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &status);
    if (status != expected_status || body_.size() != static_cast<size_t>(expected_bytes)) {
      return absl::StrCat("GET ", url_, ": expected HTTP ", expected_status, " with ",
                          expected_bytes, " body bytes, got HTTP ", status, " with ", body_.size());
    }
    return "";
  }

  const std::string& body() const { return body_; }

 private:
  CURL* const easy_;
  curl_slist* headers_ = nullptr;
  std::string url_;  // for messages
  std::string body_;
};

// Performs the configured request once per iteration, after one untimed request that opens
// the connection.
void RawLoop(benchmark::State& state, RawCurl& curl, long expected_status, int64_t body_size,
             bool count_s3_requests) {
  if (std::string wrong = curl.Perform(expected_status, body_size); !wrong.empty()) {
    Fail(state, absl::StrCat("warm-up request: ", wrong));
    return;
  }
  const int64_t requests_before = count_s3_requests ? S3RequestCount(state) : 0;
  if (requests_before < 0) return;
  uint64_t body_bytes = 0;
  for (auto _ : state) {
    if (std::string wrong = curl.Perform(expected_status, body_size); !wrong.empty()) {
      Fail(state, wrong);
      break;
    }
    body_bytes += curl.body().size();
    benchmark::DoNotOptimize(curl.body().data());
  }
  state.counters["body_bytes"] =
      benchmark::Counter(static_cast<double>(body_bytes), benchmark::Counter::kAvgIterations);
  if (count_s3_requests) {
    const int64_t requests_after = S3RequestCount(state);
    if (requests_after < 0) return;
    state.counters["s3_requests"] = benchmark::Counter(
        static_cast<double>(requests_after - requests_before), benchmark::Counter::kAvgIterations);
  }
  if (expected_status == 200) state.SetBytesProcessed(state.iterations() * body_size);
}

// Configures `curl` for the signed GET of S3Key(bytes), conditional when `etag` is not "".
absl::Status ConfigureS3Get(RawCurl& curl, const S3Server& s3, int64_t bytes,
                            const std::string& etag) {
  std::vector<std::string> headers = {
      absl::StrCat("x-amz-content-sha256: ", keel::testing::kEmptyPayloadSha256)};
  if (!etag.empty()) headers.push_back(absl::StrCat("If-None-Match: ", etag));
  return curl.Configure(s3.ObjectUrl(kBucket, S3Key(bytes)), headers, s3.CurlAwsSigV4(),
                        s3.access_key_id(), s3.secret_access_key());
}

void S3RawRow(benchmark::State& state, bool not_modified, int64_t bytes) {
  if (!Ready(state, {&fixture->s3_status})) return;
  RawCurl curl;
  if (absl::Status configured =
          ConfigureS3Get(curl, *fixture->s3, bytes, not_modified ? fixture->s3_small_etag : "");
      !configured.ok()) {
    Fail(state, configured.ToString());
    return;
  }
  RawLoop(state, curl, not_modified ? 304 : 200, not_modified ? 0 : bytes,
          /*count_s3_requests=*/true);
}

// --- Rows ---------------------------------------------------------------------------------

void BM_S3Fetcher_S3NotModified(benchmark::State& state) {
  S3KeelRow(state, /*head_first=*/false, /*not_modified=*/true, kSmallBytes);
}

void BM_S3FetcherHeadFirst_S3NotModified(benchmark::State& state) {
  S3KeelRow(state, /*head_first=*/true, /*not_modified=*/true, kSmallBytes);
}

void BM_RawCurl_S3NotModified(benchmark::State& state) {
  S3RawRow(state, /*not_modified=*/true, kSmallBytes);
}

void BM_S3Fetcher_S3Get(benchmark::State& state) {
  S3KeelRow(state, /*head_first=*/false, /*not_modified=*/false, state.range(0));
}

void BM_RawCurl_S3Get(benchmark::State& state) {
  S3RawRow(state, /*not_modified=*/false, state.range(0));
}

void BM_HttpFetcher_HttpNotModified(benchmark::State& state) {
  if (!Ready(state, {&fixture->runtime_status, &fixture->nginx_status})) return;
  std::unique_ptr<Fetcher> fetcher = NginxFetcher(*fixture->nginx);
  KeelLoop(state, *fetcher, EtagOnly(fixture->nginx_small_etag), /*expect_not_modified=*/true,
           kSmallBytes, /*count_s3_requests=*/false);
  DestroyOnControlThread(*fixture->runtime, std::move(fetcher));
}

void BM_RawCurl_HttpNotModified(benchmark::State& state) {
  if (!Ready(state, {&fixture->nginx_status})) return;
  RawCurl curl;
  if (absl::Status configured =
          curl.Configure(fixture->nginx->Url(NginxPath(kSmallBytes)),
                         {absl::StrCat("If-None-Match: ", fixture->nginx_small_etag)}, "", "", "");
      !configured.ok()) {
    Fail(state, configured.ToString());
    return;
  }
  RawLoop(state, curl, 304, 0, /*count_s3_requests=*/false);
}

// The hand-off alone: an empty task posted to the control thread that notifies the waiting
// benchmark thread, as FetchOnce does around every keel fetch.
void BM_Runtime_PostAndWait(benchmark::State& state) {
  if (!Ready(state, {&fixture->runtime_status})) return;
  keel::Runtime& runtime = *fixture->runtime;
  for (auto _ : state) {
    keel::internal::Notification ran;
    if (absl::Status posted = runtime.Post([&ran] { ran.Notify(); }); !posted.ok()) {
      Fail(state, posted.ToString());
      break;
    }
    ran.WaitForNotification();
  }
}

// Every row: wall time (the work runs on other threads and processes), a fixed minimum time.
void Rows(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->MinTime(kMinTimeSeconds)->Unit(benchmark::kMicrosecond);
}
void SizedRows(benchmark::internal::Benchmark* b) { Rows(b->Arg(kSmallBytes)->Arg(kLargeBytes)); }

BENCHMARK(BM_S3Fetcher_S3NotModified)->Apply(Rows);
BENCHMARK(BM_S3FetcherHeadFirst_S3NotModified)->Apply(Rows);
BENCHMARK(BM_RawCurl_S3NotModified)->Apply(Rows);
BENCHMARK(BM_HttpFetcher_HttpNotModified)->Apply(Rows);
BENCHMARK(BM_RawCurl_HttpNotModified)->Apply(Rows);
BENCHMARK(BM_Runtime_PostAndWait)->Apply(Rows);
BENCHMARK(BM_S3Fetcher_S3Get)->Apply(SizedRows);
BENCHMARK(BM_RawCurl_S3Get)->Apply(SizedRows);

// --- Setup --------------------------------------------------------------------------------

// s3rver runs on node, whose JIT compiles the request path over the first hundreds of
// requests: without a warm-up, the first rows would pay for it. Sends kWarmUpRounds rounds of
// the rows' requests (keel's conditional GET and HEAD, the raw conditional GET, a full GET of
// the 64 KB object); OK, or the first wrong answer.
constexpr int kWarmUpRounds = 100;

absl::Status WarmUpS3(keel::Runtime& runtime, const S3Server& s3, const std::string& etag) {
  std::unique_ptr<Fetcher> get = keel::fetchers::S3(S3FetcherOptions(s3, kSmallBytes));
  keel::fetchers::S3Options head_options = S3FetcherOptions(s3, kSmallBytes);
  head_options.head_first = true;
  std::unique_ptr<Fetcher> head = keel::fetchers::S3(std::move(head_options));
  RawCurl conditional;
  RawCurl full;
  absl::Status status = ConfigureS3Get(conditional, s3, kSmallBytes, etag);
  if (status.ok()) status = ConfigureS3Get(full, s3, kSmallBytes, "");
  for (int i = 0; i < kWarmUpRounds && status.ok(); ++i) {
    std::string wrong = CheckResult(FetchOnce(runtime, *get, EtagOnly(etag)),
                                    /*expect_not_modified=*/true, kSmallBytes);
    if (wrong.empty()) {
      wrong = CheckResult(FetchOnce(runtime, *head, EtagOnly(etag)), /*expect_not_modified=*/true,
                          kSmallBytes);
    }
    if (wrong.empty()) wrong = conditional.Perform(304, 0);
    if (wrong.empty()) wrong = full.Perform(200, kSmallBytes);
    if (!wrong.empty()) status = absl::UnavailableError(absl::StrCat("warm-up: ", wrong));
  }
  DestroyOnControlThread(runtime, std::move(get));
  DestroyOnControlThread(runtime, std::move(head));
  return status;
}

// Starts the servers and the runtime and stores the objects. Never exits: each part's status
// is kept for the rows that need it, and printed here.
std::unique_ptr<Fixture> MakeFixture() {
  auto f = std::make_unique<Fixture>();

  auto runtime = keel::Runtime::Create({.name = "s3-bench"});
  if (runtime.ok()) {
    f->runtime = *std::move(runtime);
  } else {
    f->runtime_status = runtime.status();
  }

  auto s3 = S3Server::Start(keel::testing::S3ServerOptions{.buckets = {kBucket}});
  if (s3.ok()) {
    f->s3 = *std::move(s3);
    for (int64_t size : {kSmallBytes, kLargeBytes}) {
      absl::StatusOr<std::string> etag = f->s3->Put(kBucket, S3Key(size), ObjectBytes(size));
      if (!etag.ok()) {
        f->s3_status =
            absl::Status(etag.status().code(),
                         absl::StrCat("storing ", S3Key(size), ": ", etag.status().message()));
        break;
      }
      if (size == kSmallBytes) f->s3_small_etag = *etag;
    }
    if (f->s3_status.ok() && f->runtime_status.ok()) {
      f->s3_status = WarmUpS3(*f->runtime, *f->s3, f->s3_small_etag);
    }
  } else {
    f->s3_status = s3.status();
  }

  auto nginx = NginxServer::Start();
  if (nginx.ok()) {
    f->nginx = *std::move(nginx);
    f->nginx_status =
        f->nginx->WriteFile(NginxPath(kSmallBytes).substr(1), ObjectBytes(kSmallBytes));
  } else {
    f->nginx_status = nginx.status();
  }
  // nginx's ETag, read the way a term first reads it: an unconditional fetch through keel.
  if (f->nginx_status.ok() && !f->runtime_status.ok()) {
    f->nginx_status = absl::FailedPreconditionError(
        "nginx's ETag is read through keel, whose runtime did not start");
  } else if (f->nginx_status.ok()) {
    std::unique_ptr<Fetcher> fetcher = NginxFetcher(*f->nginx);
    FetchResult first = FetchOnce(*f->runtime, *fetcher, {});
    DestroyOnControlThread(*f->runtime, std::move(fetcher));
    if (std::string wrong = CheckResult(first, /*expect_not_modified=*/false, kSmallBytes);
        !wrong.empty()) {
      f->nginx_status = absl::UnavailableError(absl::StrCat("nginx's first GET: ", wrong));
    } else if (first.validators.etag.empty()) {
      f->nginx_status = absl::FailedPreconditionError("nginx sent no ETag");
    } else {
      f->nginx_small_etag = first.validators.etag;
    }
  }

  for (const auto& [what, status] :
       {std::pair<const char*, const absl::Status*>{"keel runtime", &f->runtime_status},
        {"S3 server (s3rver)", &f->s3_status},
        {"nginx", &f->nginx_status}}) {
    if (!status->ok()) {
      std::fprintf(stderr, "s3_fetch_bench: %s: %s\n", what, status->ToString().c_str());
    }
  }
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::unique_ptr<Fixture> owned = MakeFixture();
  fixture = owned.get();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  fixture = nullptr;
  owned->runtime.reset();  // before the servers it talks to
  owned.reset();
  return any_row_failed.load() ? 1 : 0;
}
