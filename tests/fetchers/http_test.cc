// The HTTP fetcher against a real nginx on 127.0.0.1: conditional requests turn an unchanged
// source into a 304 with zero body bytes, caching headers and Retry-After set the next
// refresh, gzip bodies stay compressed, the size cap stops a transfer early, and every
// failure (HTTP status, timeout, redirects, TLS, refused connection, cancellation) arrives as
// the documented canonical code, exactly once, on the control thread. The test thread waits
// for each answer with a bounded wait; it never sleeps to make time pass.
#include "keel/fetchers/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "keel/fetchers/gzip.h"
#include "keel/fetchers/http_cache.h"
#include "keel/internal/sync.h"
#include "keel/internal/transfers.h"
#include "keel/runtime.h"
#include "support/nginx.h"

namespace keel::fetchers {
namespace {

using ::keel::testing::NginxOptions;
using ::keel::testing::NginxServer;

constexpr absl::Duration kInterval = absl::Minutes(5);
constexpr absl::Duration kAnswerTimeout = absl::Seconds(30);
const absl::Time kMtime = absl::FromUnixSeconds(1700000000);

// Locations beyond the fixture's standard ones, for answers nginx gives only when asked to.
constexpr char kExtraLocations[] = R"(
    location = /always304 { return 304; }
    location = /brotli { add_header Content-Encoding br; return 200 "not really brotli"; }
    location = /fakegzip { add_header Content-Encoding gzip; return 200 "plain text"; }
    location = /twoheaders {
      add_header Cache-Control "max-age=60";
      add_header Cache-Control "no-store";
      return 200 "x";
    }
    location = /redirect-with-maxage {
      add_header Cache-Control "max-age=5";
      return 302 /target.txt;
    }
    location = /redirect-ftp { return 302 ftp://127.0.0.1/file; }
    location = /redirect-http { return 302 http://127.0.0.1:$server_port/target.txt; }
)";

HttpOptions Options(std::string url) {
  HttpOptions options;
  options.url = std::move(url);
  return options;
}

// nginx's ETag for a file: hex mtime seconds, hex size.
std::string NginxEtag(absl::Time mtime, size_t size) {
  return absl::StrFormat("\"%x-%x\"", absl::ToUnixSeconds(mtime), size);
}

// A port nobody listens on: bound to pick it, then closed.
uint16_t ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  return ntohs(addr.sin_port);
}

// One fetch's answer, handed from the control thread to the test thread.
struct Answer {
  internal::Notification arrived;
  std::atomic<int> calls{0};
  std::atomic<bool> on_control_thread{false};
  FetchResult result;  // written before `arrived` is notified, read after
};

class HttpFetcherTest : public ::testing::Test {
 protected:
  explicit HttpFetcherTest(bool tls = false) : tls_(tls) {}

  void SetUp() override {
    NginxOptions options;
    options.tls = tls_;
    options.extra_server_config = kExtraLocations;
    auto nginx = NginxServer::Start(options);
    ASSERT_TRUE(nginx.ok()) << nginx.status();
    nginx_ = std::move(*nginx);
    auto runtime = Runtime::Create({.name = "http-test"});
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    runtime_ = std::move(*runtime);
  }

  FetchRequest Request(Validators known = {}, uint64_t max_bytes = uint64_t{16} << 20) {
    FetchRequest request;
    request.known = std::move(known);
    request.max_bytes = max_bytes;
    request.policy.interval = kInterval;
    request.policy.min_interval = absl::ZeroDuration();
    request.policy.max_interval = absl::Hours(24);
    request.policy.honor_cache_headers = true;
    request.wall_now = absl::Now();
    return request;
  }

  // Starts a fetch on the control thread; the answer lands in the returned Answer.
  std::shared_ptr<Answer> StartFetch(Fetcher& fetcher, FetchRequest request) {
    auto answer = std::make_shared<Answer>();
    absl::Status posted = runtime_->Post([this, &fetcher, request, answer] {
      fetcher.Fetch(*runtime_, request, [this, answer](FetchResult result) {
        answer->on_control_thread = runtime_->InControlThread();
        answer->result = std::move(result);
        ++answer->calls;
        answer->arrived.Notify();
      });
    });
    EXPECT_TRUE(posted.ok()) << posted;
    return answer;
  }

  // Waits for the answer; a missing answer fails the test.
  FetchResult Await(const std::shared_ptr<Answer>& answer) {
    if (!answer->arrived.WaitForNotificationWithTimeout(kAnswerTimeout)) {
      ADD_FAILURE() << "no answer within " << kAnswerTimeout;
      FetchResult none;
      none.status = absl::DeadlineExceededError("the test's wait ran out");
      return none;
    }
    EXPECT_EQ(answer->calls.load(), 1) << "the callback must run exactly once";
    EXPECT_TRUE(answer->on_control_thread.load()) << "the callback runs on the control thread";
    return std::move(answer->result);
  }

  FetchResult Fetch(Fetcher& fetcher, FetchRequest request) {
    return Await(StartFetch(fetcher, std::move(request)));
  }
  FetchResult Fetch(const HttpOptions& options, FetchRequest request) {
    std::unique_ptr<Fetcher> fetcher = Http(options);
    return Fetch(*fetcher, std::move(request));
  }
  FetchResult Fetch(const std::string& path) {
    return Fetch(Options(nginx_->Url(path)), Request());
  }

  // Runs `f` on the control thread and waits for it.
  template <class F>
  void OnLoop(F f) {
    internal::Notification ran;
    ASSERT_TRUE(runtime_
                    ->Post([&] {
                      f();
                      ran.Notify();
                    })
                    .ok());
    ASSERT_TRUE(ran.WaitForNotificationWithTimeout(kAnswerTimeout));
  }

  const bool tls_;
  std::unique_ptr<NginxServer> nginx_;
  std::unique_ptr<Runtime> runtime_;
};

TEST_F(HttpFetcherTest, A200CarriesTheBodyEtagAndLastModified) {
  ASSERT_TRUE(nginx_->WriteFile("config.json", R"({"v":1})", kMtime).ok());
  std::unique_ptr<Fetcher> fetcher = Http(Options(nginx_->Url("/config.json")));
  EXPECT_EQ(fetcher->Describe(), "http " + nginx_->Url("/config.json"));
  FetchResult result = Fetch(*fetcher, Request());
  ASSERT_TRUE(result.status.ok()) << result.status;
  EXPECT_FALSE(result.not_modified);
  EXPECT_EQ(result.body, R"({"v":1})");
  EXPECT_EQ(result.bytes_received, 7u);
  EXPECT_EQ(result.validators.etag, NginxEtag(kMtime, 7));
  EXPECT_EQ(result.validators.version, result.validators.etag);
  EXPECT_EQ(result.validators.last_modified, FormatHttpDate(kMtime));
  EXPECT_EQ(result.modified, kMtime);
  ASSERT_TRUE(result.next_refresh.has_value());
  EXPECT_EQ(result.next_refresh->delay, kInterval) << result.next_refresh->reason;
}

TEST_F(HttpFetcherTest, AConditionalFetchWithTheEtagGets304AndNoBodyBytes) {
  ASSERT_TRUE(nginx_->WriteFile("config.json", "same", kMtime).ok());
  std::unique_ptr<Fetcher> fetcher = Http(Options(nginx_->Url("/config.json")));
  FetchResult first = Fetch(*fetcher, Request());
  ASSERT_TRUE(first.status.ok()) << first.status;
  Validators known;
  known.etag = first.validators.etag;  // the ETag alone decides
  FetchResult second = Fetch(*fetcher, Request(known));
  ASSERT_TRUE(second.status.ok()) << second.status;
  EXPECT_TRUE(second.not_modified);
  EXPECT_EQ(second.body, "");
  EXPECT_EQ(second.bytes_received, 0u);
  EXPECT_EQ(second.validators.etag, first.validators.etag);
  EXPECT_EQ(second.validators.last_modified, first.validators.last_modified);
  ASSERT_TRUE(second.next_refresh.has_value());
  EXPECT_EQ(second.next_refresh->delay, kInterval);
}

TEST_F(HttpFetcherTest, WithoutAnEtagLastModifiedMakesTheFetchConditional) {
  ASSERT_TRUE(nginx_->WriteFile("noetag/config.json", "same", kMtime).ok());
  std::unique_ptr<Fetcher> fetcher = Http(Options(nginx_->Url("/noetag/config.json")));
  FetchResult first = Fetch(*fetcher, Request());
  ASSERT_TRUE(first.status.ok()) << first.status;
  EXPECT_EQ(first.validators.etag, "");
  EXPECT_EQ(first.validators.version, "");
  ASSERT_EQ(first.validators.last_modified, FormatHttpDate(kMtime));
  FetchResult second = Fetch(*fetcher, Request(first.validators));
  ASSERT_TRUE(second.status.ok()) << second.status;
  EXPECT_TRUE(second.not_modified);
  EXPECT_EQ(second.bytes_received, 0u);
}

TEST_F(HttpFetcherTest, AChangedFileGets200WithANewEtag) {
  ASSERT_TRUE(nginx_->WriteFile("config.json", "v1", kMtime).ok());
  std::unique_ptr<Fetcher> fetcher = Http(Options(nginx_->Url("/config.json")));
  FetchResult first = Fetch(*fetcher, Request());
  ASSERT_TRUE(first.status.ok()) << first.status;
  ASSERT_TRUE(nginx_->WriteFile("config.json", "v2", kMtime + absl::Seconds(1)).ok());
  FetchResult second = Fetch(*fetcher, Request(first.validators));
  ASSERT_TRUE(second.status.ok()) << second.status;
  EXPECT_FALSE(second.not_modified);
  EXPECT_EQ(second.body, "v2");
  EXPECT_EQ(second.validators.etag, NginxEtag(kMtime + absl::Seconds(1), 2));
  EXPECT_NE(second.validators.etag, first.validators.etag);
  EXPECT_EQ(second.modified, kMtime + absl::Seconds(1));
}

TEST_F(HttpFetcherTest, GzipBodiesStayCompressedOnlyWhenAskedFor) {
  std::string plain;
  for (int i = 0; i < 2000; ++i) plain += "line " + std::to_string(i) + "\n";
  ASSERT_TRUE(nginx_->WriteFile("gzip/data.txt", plain).ok());
  HttpOptions options = Options(nginx_->Url("/gzip/data.txt"));
  FetchResult gzipped = Fetch(options, Request());
  ASSERT_TRUE(gzipped.status.ok()) << gzipped.status;
  ASSERT_TRUE(LooksGzipped(gzipped.body));
  EXPECT_LT(gzipped.body.size(), plain.size());
  EXPECT_EQ(gzipped.bytes_received, gzipped.body.size());
  absl::StatusOr<std::string> inflated = Gunzip(gzipped.body);
  ASSERT_TRUE(inflated.ok()) << inflated.status();
  EXPECT_EQ(*inflated, plain);

  options.request_gzip = false;
  FetchResult identity = Fetch(options, Request());
  ASSERT_TRUE(identity.status.ok()) << identity.status;
  EXPECT_EQ(identity.body, plain);
}

TEST_F(HttpFetcherTest, AnUnsupportedContentEncodingIsInvalidArgument) {
  FetchResult result = Fetch("/brotli");
  EXPECT_EQ(result.status.code(), absl::StatusCode::kInvalidArgument) << result.status;
  EXPECT_TRUE(absl::StrContains(result.status.message(), "unsupported Content-Encoding br"))
      << result.status;
}

TEST_F(HttpFetcherTest, AGzipEncodingWithoutTheGzipMagicIsDataLoss) {
  FetchResult result = Fetch("/fakegzip");
  EXPECT_EQ(result.status.code(), absl::StatusCode::kDataLoss) << result.status;
}

TEST_F(HttpFetcherTest, MaxAgeMinusAgeSetsTheNextRefresh) {
  ASSERT_TRUE(nginx_->WriteFile("maxage/config.json", "{}").ok());
  FetchResult result = Fetch("/maxage/config.json");
  ASSERT_TRUE(result.status.ok()) << result.status;
  ASSERT_TRUE(result.next_refresh.has_value());
  EXPECT_EQ(result.next_refresh->delay, absl::Seconds(40)) << result.next_refresh->reason;
}

TEST_F(HttpFetcherTest, NoStoreFallsBackToTheInterval) {
  ASSERT_TRUE(nginx_->WriteFile("nostore/config.json", "{}").ok());
  FetchResult result = Fetch("/nostore/config.json");
  ASSERT_TRUE(result.status.ok()) << result.status;
  ASSERT_TRUE(result.next_refresh.has_value());
  EXPECT_EQ(result.next_refresh->delay, kInterval) << result.next_refresh->reason;
}

TEST_F(HttpFetcherTest, RepeatedHeaderLinesAreJoined) {
  // "max-age=60, no-store": no-store wins over max-age.
  FetchResult result = Fetch("/twoheaders");
  ASSERT_TRUE(result.status.ok()) << result.status;
  ASSERT_TRUE(result.next_refresh.has_value());
  EXPECT_EQ(result.next_refresh->delay, kInterval) << result.next_refresh->reason;
}

TEST_F(HttpFetcherTest, OnlyTheLastResponsesHeadersCount) {
  ASSERT_TRUE(nginx_->WriteFile("target.txt", "target").ok());
  FetchResult result = Fetch("/redirect-with-maxage");  // the 302 says max-age=5, 200 nothing
  ASSERT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(result.body, "target");
  ASSERT_TRUE(result.next_refresh.has_value());
  EXPECT_EQ(result.next_refresh->delay, kInterval) << result.next_refresh->reason;
}

TEST_F(HttpFetcherTest, A503WithRetryAfterIsUnavailableAndSetsTheNextRefresh) {
  FetchResult result = Fetch("/busy");
  EXPECT_EQ(result.status.code(), absl::StatusCode::kUnavailable) << result.status;
  EXPECT_TRUE(
      absl::StrContains(result.status.message(), "GET " + nginx_->Url("/busy") + ": HTTP 503"))
      << result.status;
  ASSERT_TRUE(result.next_refresh.has_value());
  EXPECT_EQ(result.next_refresh->delay, absl::Seconds(120)) << result.next_refresh->reason;
}

TEST_F(HttpFetcherTest, A429WithRetryAfterIsResourceExhaustedAndSetsTheNextRefresh) {
  FetchResult result = Fetch("/ratelimited");
  EXPECT_EQ(result.status.code(), absl::StatusCode::kResourceExhausted) << result.status;
  EXPECT_TRUE(absl::StrContains(result.status.message(), "HTTP 429")) << result.status;
  ASSERT_TRUE(result.next_refresh.has_value());
  EXPECT_EQ(result.next_refresh->delay, absl::Seconds(30)) << result.next_refresh->reason;
}

TEST_F(HttpFetcherTest, A500IsUnavailableAndTheSourceRecovers) {
  std::unique_ptr<Fetcher> fetcher = Http(Options(nginx_->Url("/flaky/config.json")));
  FetchResult failed = Fetch(*fetcher, Request());
  EXPECT_EQ(failed.status.code(), absl::StatusCode::kUnavailable) << failed.status;
  EXPECT_EQ(failed.status.message(), "GET " + nginx_->Url("/flaky/config.json") + ": HTTP 500");
  EXPECT_FALSE(failed.next_refresh.has_value()) << "no Retry-After: the term's backoff decides";
  ASSERT_TRUE(nginx_->WriteFile("flaky/config.json", "ok").ok());
  FetchResult recovered = Fetch(*fetcher, Request());
  ASSERT_TRUE(recovered.status.ok()) << recovered.status;
  EXPECT_EQ(recovered.body, "ok");
}

TEST_F(HttpFetcherTest, A404IsNotFound) {
  FetchResult result = Fetch("/missing.json");
  EXPECT_EQ(result.status.code(), absl::StatusCode::kNotFound) << result.status;
}

TEST_F(HttpFetcherTest, A304ToAnUnconditionalRequestIsAnError) {
  FetchResult result = Fetch("/always304");
  EXPECT_EQ(result.status.code(), absl::StatusCode::kInvalidArgument) << result.status;
  EXPECT_FALSE(result.not_modified);
}

TEST_F(HttpFetcherTest, AContentLengthOverTheCapStopsBeforeTheBody) {
  const std::string big(4 << 20, 'x');
  ASSERT_TRUE(nginx_->WriteFile("big.bin", big).ok());
  FetchResult result = Fetch(Options(nginx_->Url("/big.bin")), Request({}, 64 << 10));
  EXPECT_EQ(result.status.code(), absl::StatusCode::kResourceExhausted) << result.status;
  EXPECT_TRUE(absl::StrContains(result.status.message(), "body of " + nginx_->Url("/big.bin") +
                                                             " exceeds the cap of 65536 bytes"))
      << result.status;
  EXPECT_EQ(result.bytes_received, 0u);
  EXPECT_EQ(result.body, "");
}

TEST_F(HttpFetcherTest, ABodyWithoutContentLengthIsCutSoonAfterTheCap) {
  const std::string big(4 << 20, 'x');
  ASSERT_TRUE(nginx_->WriteFile("novalidators/big.bin", big).ok());  // chunked, no length
  FetchResult result = Fetch(Options(nginx_->Url("/novalidators/big.bin")), Request({}, 64 << 10));
  EXPECT_EQ(result.status.code(), absl::StatusCode::kResourceExhausted) << result.status;
  EXPECT_GT(result.bytes_received, uint64_t{64} << 10);
  EXPECT_LT(result.bytes_received, uint64_t{1} << 20) << "the transfer stops at the cap";
  EXPECT_EQ(result.body, "");
}

TEST_F(HttpFetcherTest, ABodyAtTheCapIsAccepted) {
  ASSERT_TRUE(nginx_->WriteFile("novalidators/exact.bin", std::string(1000, 'y')).ok());
  FetchResult result = Fetch(Options(nginx_->Url("/novalidators/exact.bin")), Request({}, 1000));
  ASSERT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(result.body.size(), 1000u);
  EXPECT_EQ(result.validators.etag, "");
  EXPECT_EQ(result.validators.last_modified, "");
  EXPECT_FALSE(result.modified.has_value());
}

TEST_F(HttpFetcherTest, ASlowBodyHitsTheTimeoutAsDeadlineExceeded) {
  ASSERT_TRUE(nginx_->WriteFile("slow/big.bin", std::string(20 << 10, 's')).ok());
  HttpOptions options = Options(nginx_->Url("/slow/big.bin"));
  options.timeout = absl::Milliseconds(300);
  const auto start = std::chrono::steady_clock::now();
  FetchResult result = Fetch(options, Request());
  const absl::Duration took = absl::FromChrono(std::chrono::steady_clock::now() - start);
  EXPECT_EQ(result.status.code(), absl::StatusCode::kDeadlineExceeded) << result.status;
  // libcurl's timer may round a millisecond either way; the body would take 100 s.
  EXPECT_GE(took, absl::Milliseconds(250));
  EXPECT_LT(took, absl::Seconds(1));
}

TEST_F(HttpFetcherTest, CancelDeliversCancelledErrorOnce) {
  ASSERT_TRUE(nginx_->WriteFile("slow/big.bin", std::string(20 << 10, 's')).ok());
  std::unique_ptr<Fetcher> fetcher = Http(Options(nginx_->Url("/slow/big.bin")));
  std::shared_ptr<Answer> answer = StartFetch(*fetcher, Request());
  OnLoop([&] { fetcher->Cancel(*runtime_); });
  EXPECT_TRUE(answer->arrived.HasBeenNotified()) << "Cancel runs the callback at once";
  FetchResult result = Await(answer);
  EXPECT_EQ(result.status.code(), absl::StatusCode::kCancelled) << result.status;
  OnLoop([&] { fetcher->Cancel(*runtime_); });  // nothing running: a no-op
  EXPECT_EQ(answer->calls.load(), 1);
}

TEST_F(HttpFetcherTest, DestroyingTheFetcherOnTheControlThreadCancelsItsFetch) {
  ASSERT_TRUE(nginx_->WriteFile("slow/big.bin", std::string(20 << 10, 's')).ok());
  std::unique_ptr<Fetcher> fetcher = Http(Options(nginx_->Url("/slow/big.bin")));
  std::shared_ptr<Answer> answer = StartFetch(*fetcher, Request());
  OnLoop([&] { fetcher.reset(); });
  FetchResult result = Await(answer);
  EXPECT_EQ(result.status.code(), absl::StatusCode::kCancelled) << result.status;
}

TEST_F(HttpFetcherTest, RuntimeShutdownCancelsARunningFetch) {
  ASSERT_TRUE(nginx_->WriteFile("slow/big.bin", std::string(20 << 10, 's')).ok());
  std::unique_ptr<Fetcher> fetcher = Http(Options(nginx_->Url("/slow/big.bin")));
  std::shared_ptr<Answer> answer = StartFetch(*fetcher, Request());
  OnLoop([] {});  // the fetch has started (a fetch started during Shutdown fails at once)
  ASSERT_TRUE(runtime_->Shutdown().ok());
  EXPECT_EQ(Await(answer).status.code(), absl::StatusCode::kCancelled);
  fetcher.reset();  // after its runtime stopped: nothing left to cancel
}

// Against the contract, but memory-safe: the transfer is cancelled on the control thread and
// the callback is dropped unrun.
TEST_F(HttpFetcherTest, DestroyingTheFetcherOffTheControlThreadDropsItsFetch) {
  ASSERT_TRUE(nginx_->WriteFile("slow/big.bin", std::string(20 << 10, 's')).ok());
  std::unique_ptr<Fetcher> fetcher = Http(Options(nginx_->Url("/slow/big.bin")));
  std::shared_ptr<Answer> answer = StartFetch(*fetcher, Request());
  OnLoop([] {});  // the fetch has started
  fetcher.reset();
  size_t running = 1;
  OnLoop([&] { running = internal::RunningTransfers(*runtime_); });  // after the cancellation
  EXPECT_EQ(running, 0u);
  EXPECT_FALSE(answer->arrived.HasBeenNotified());
}

TEST_F(HttpFetcherTest, ASecondFetchWhileOneRunsIsRefused) {
  ASSERT_TRUE(nginx_->WriteFile("slow/big.bin", std::string(20 << 10, 's')).ok());
  std::unique_ptr<Fetcher> fetcher = Http(Options(nginx_->Url("/slow/big.bin")));
  std::shared_ptr<Answer> first = StartFetch(*fetcher, Request());
  FetchResult second = Fetch(*fetcher, Request());
  EXPECT_EQ(second.status.code(), absl::StatusCode::kFailedPrecondition) << second.status;
  OnLoop([&] { fetcher->Cancel(*runtime_); });
  EXPECT_EQ(Await(first).status.code(), absl::StatusCode::kCancelled);
}

TEST_F(HttpFetcherTest, ARedirectLoopFailsNamingRedirects) {
  FetchResult result = Fetch("/loop");
  EXPECT_EQ(result.status.code(), absl::StatusCode::kFailedPrecondition) << result.status;
  EXPECT_TRUE(absl::StrContains(result.status.message(), "redirects")) << result.status;
}

TEST_F(HttpFetcherTest, RedirectsAreFollowedToTheFile) {
  ASSERT_TRUE(nginx_->WriteFile("target.txt", "target", kMtime).ok());
  FetchResult result = Fetch("/redirect/target.txt");
  ASSERT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(result.body, "target");
  EXPECT_EQ(result.validators.etag, NginxEtag(kMtime, 6));
}

TEST_F(HttpFetcherTest, ARedirectToAnotherProtocolIsRefused) {
  FetchResult result = Fetch("/redirect-ftp");
  EXPECT_EQ(result.status.code(), absl::StatusCode::kFailedPrecondition) << result.status;
}

TEST_F(HttpFetcherTest, ZeroMaxRedirectsMakesAnyRedirectAnError) {
  ASSERT_TRUE(nginx_->WriteFile("target.txt", "target").ok());
  HttpOptions options = Options(nginx_->Url("/redirect/target.txt"));
  options.max_redirects = 0;
  FetchResult result = Fetch(options, Request());
  EXPECT_EQ(result.status.code(), absl::StatusCode::kFailedPrecondition) << result.status;
}

TEST_F(HttpFetcherTest, ConfiguredHeadersAreSent) {
  ASSERT_TRUE(nginx_->WriteFile("auth/config.json", "secret").ok());
  HttpOptions options = Options(nginx_->Url("/auth/config.json"));
  FetchResult denied = Fetch(options, Request());
  EXPECT_EQ(denied.status.code(), absl::StatusCode::kPermissionDenied) << denied.status;
  EXPECT_TRUE(absl::StrContains(denied.status.message(), "HTTP 401")) << denied.status;
  options.headers = {{"Authorization", "Bearer s3cret"}};
  FetchResult allowed = Fetch(options, Request());
  ASSERT_TRUE(allowed.status.ok()) << allowed.status;
  EXPECT_EQ(allowed.body, "secret");
}

TEST_F(HttpFetcherTest, AClosedPortIsUnavailable) {
  FetchResult result =
      Fetch(Options("http://127.0.0.1:" + std::to_string(ClosedPort()) + "/x"), Request());
  EXPECT_EQ(result.status.code(), absl::StatusCode::kUnavailable) << result.status;
}

TEST_F(HttpFetcherTest, AFetchWithInvalidOptionsFailsWithTheValidationError) {
  HttpOptions options = Options("ftp://127.0.0.1/x");
  FetchResult result = Fetch(options, Request());
  EXPECT_EQ(result.status.code(), absl::StatusCode::kInvalidArgument) << result.status;
  EXPECT_TRUE(absl::StrContains(result.status.message(), "ftp")) << result.status;
}

TEST_F(HttpFetcherTest, AFetchOffTheControlThreadFailsAtOnce) {
  std::unique_ptr<Fetcher> fetcher = Http(Options(nginx_->Url("/x")));
  std::optional<FetchResult> result;
  fetcher->Fetch(*runtime_, Request(), [&](FetchResult r) { result = std::move(r); });
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->status.code(), absl::StatusCode::kFailedPrecondition) << result->status;
}

class HttpsFetcherTest : public HttpFetcherTest {
 protected:
  HttpsFetcherTest() : HttpFetcherTest(/*tls=*/true) {}
};

TEST_F(HttpsFetcherTest, ASelfSignedCertificateFailsVerificationByDefault) {
  ASSERT_TRUE(nginx_->WriteFile("config.json", "tls").ok());
  FetchResult result = Fetch("/config.json");
  EXPECT_EQ(result.status.code(), absl::StatusCode::kFailedPrecondition) << result.status;
  EXPECT_TRUE(absl::StrContains(result.status.message(), "certificate")) << result.status;
}

TEST_F(HttpsFetcherTest, TheCertificateIsTrustedThroughCaFile) {
  ASSERT_TRUE(nginx_->WriteFile("config.json", "tls").ok());
  HttpOptions options = Options(nginx_->Url("/config.json"));
  options.ca_file = nginx_->ca_file();
  FetchResult result = Fetch(options, Request());
  ASSERT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(result.body, "tls");
}

TEST_F(HttpsFetcherTest, ARedirectFromHttpsDownToHttpIsRefused) {
  HttpOptions options = Options(nginx_->Url("/redirect-http"));
  options.ca_file = nginx_->ca_file();
  FetchResult result = Fetch(options, Request());
  EXPECT_EQ(result.status.code(), absl::StatusCode::kFailedPrecondition) << result.status;
  // Refused by keel before any request goes out in clear (not the server's answer to one).
  EXPECT_FALSE(absl::StrContains(result.status.message(), "HTTP 400")) << result.status;
  EXPECT_TRUE(absl::StrContains(result.status.message(), "http")) << result.status;
}

TEST_F(HttpsFetcherTest, VerificationCanBeTurnedOff) {
  ASSERT_TRUE(nginx_->WriteFile("config.json", "tls").ok());
  HttpOptions options = Options(nginx_->Url("/config.json"));
  options.verify_tls = false;
  FetchResult result = Fetch(options, Request());
  ASSERT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(result.body, "tls");
}

// Validate() needs no server: the options alone.
absl::Status ValidateOptions(const HttpOptions& options) { return Http(options)->Validate(); }

void ExpectInvalid(const HttpOptions& options, const std::string& expected) {
  absl::Status status = ValidateOptions(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), expected))
      << "expected \"" << expected << "\" in: " << status;
}

TEST(HttpValidateTest, GoodOptionsPass) {
  HttpOptions options = Options("https://cdn.example/pricing.json.gz?v=1");
  options.headers = {{"Authorization", "Bearer x"}, {"X-Empty", ""}};
  options.max_redirects = 0;
  EXPECT_TRUE(ValidateOptions(options).ok()) << ValidateOptions(options);
  EXPECT_TRUE(ValidateOptions(Options("http://127.0.0.1:8080/")).ok());
  EXPECT_TRUE(ValidateOptions(Options("HTTP://[::1]/x")).ok());
}

TEST(HttpValidateTest, TheUrlMustBeHttpOrHttpsWithAHost) {
  ExpectInvalid(Options(""), "url must be an http:// or https:// URL with a host, got \"\"");
  ExpectInvalid(Options("ftp://example.com/x"), "got scheme \"ftp\"");
  ExpectInvalid(Options("file:///etc/passwd"), "file");
  ExpectInvalid(Options("example.com/x"), "example.com/x");
  ExpectInvalid(Options("http://"), "http://");
  ExpectInvalid(Options("http://exa mple.com/"), "exa mple");
}

TEST(HttpValidateTest, CredentialsInTheUrlAreRefusedWithoutQuotingThem) {
  absl::Status status = ValidateOptions(Options("https://user:hunter2@example.com/x"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "credentials")) << status;
  EXPECT_FALSE(absl::StrContains(status.message(), "hunter2")) << status;
}

TEST(HttpValidateTest, TimeoutsMustBePositiveAndFinite) {
  HttpOptions options = Options("http://127.0.0.1/");
  options.timeout = absl::Seconds(-5);
  ExpectInvalid(options, "timeout must be > 0 and finite, got -5s");
  options = Options("http://127.0.0.1/");
  options.connect_timeout = absl::ZeroDuration();
  ExpectInvalid(options, "connect_timeout must be > 0 and finite, got 0");
  options = Options("http://127.0.0.1/");
  options.timeout = absl::InfiniteDuration();
  ExpectInvalid(options, "timeout must be > 0 and finite, got inf");
}

TEST(HttpValidateTest, MaxRedirectsMustBeWithinZeroToFifty) {
  HttpOptions options = Options("http://127.0.0.1/");
  options.max_redirects = -1;
  ExpectInvalid(options, "max_redirects must be in [0, 50], got -1");
  options.max_redirects = 51;
  ExpectInvalid(options, "max_redirects must be in [0, 50], got 51");
}

TEST(HttpValidateTest, HeadersMustBeSafeOnTheWire) {
  HttpOptions options = Options("http://127.0.0.1/");
  options.headers = {{"", "x"}};
  ExpectInvalid(options, "header names must be non-empty tokens");
  options.headers = {{"Bad Name", "x"}};
  ExpectInvalid(options, "got \"Bad Name\"");
  options.headers = {{"X-Injected", "a\r\nHost: evil"}};
  ExpectInvalid(options, "the value of header X-Injected must not contain CR, LF or NUL");
  options.headers = {{"if-none-match", "\"x\""}};
  ExpectInvalid(options, "is set by keel from the term's validators");
  options.headers = {{"Accept-Encoding", "br"}};
  ExpectInvalid(options, "use request_gzip");
}

TEST(HttpValidateTest, CaFileMustBeAReadableFile) {
  HttpOptions options = Options("https://127.0.0.1/");
  options.ca_file = "/nonexistent/ca.pem";
  ExpectInvalid(options, "ca_file \"/nonexistent/ca.pem\" must be a readable file");
  options.ca_file = "/tmp";
  ExpectInvalid(options, "must be a regular file");
}

TEST(HttpValidateTest, AllProblemsAreReportedTogether) {
  HttpOptions options = Options("ftp://x/");
  options.timeout = absl::Seconds(-1);
  options.max_redirects = 99;
  absl::Status status = ValidateOptions(options);
  EXPECT_TRUE(absl::StrContains(status.message(), "scheme")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "timeout")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "max_redirects")) << status;
}

}  // namespace
}  // namespace keel::fetchers
