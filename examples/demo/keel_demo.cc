// keel-demo: the main job on embedded defaults. It starts a runtime and exercises what keel
// has today, then prints a short report with the figures it measured:
//   - timers: thousands of timers on the control thread's wheel, half of them cancelled;
//     how late they ran (loop lag) and that none ran early or after cancellation;
//   - a remote term: a gzipped price table in a local file, rewritten every 100 ms (one write
//     in five invalid) while reader threads price SKUs through the term; reads per second,
//     torn reads (must be 0), the refresh outcomes (updated / not_modified / failed) and the
//     final status;
//   - the offload pool: a payload gzipped and gunzipped off the control thread, the result
//     delivered back on it;
//   - idempotency: a simulated "POST /payments" endpoint behind IdempotencyHttp, sent a
//     seeded burst of requests from two identities (first requests, duplicates, retries while
//     the first still runs, another body under a used key, missing and malformed keys, a
//     handler that throws, one that releases its key, the same key from the other identity);
//     one line per request saying how it was answered, then the handler runs, the answers by
//     status and the tracker's counters. Each answer must be the planned one, no key may run
//     its handler twice unless released, and every replay must repeat the first response
//     byte for byte.
//   - a keeper: a counter worker that crashes on every 100th message, sent thousands of
//     casts from two threads; the count must come out exact (every crashing message is
//     delivered again to the next incarnation and applied once), with the restarts counted.
//     Then, with snapshots on, the same counter across a restart of the process: a child
//     keel-demo counts, waits until its state is saved and is SIGKILLed (no Stop); this
//     process restores the counter from the child's snapshots and counts on, exactly.
//   - a leader election: three nodes on the in-memory lease store (each with its own runtime)
//     elect one; the leader crashes (its runtime stops dead, its lease is left to lapse) and a
//     follower takes over within ttl + one heartbeat; the new leader resigns and the third
//     node takes over at once. Events with their times, the takeover and handover times, the
//     terms, and a fenced ledger the leader-only job writes to (no stale term may reach it);
//     a sampler checks that no two nodes ever hold the lease at once. With --etcd the same
//     again on a local etcd (started on 127.0.0.1 when /usr/bin/etcd is installed).
// Exit status 0 when every check holds, 1 otherwise.
//
// Usage: keel-demo [--seconds=N] [--etcd] (seconds: default 2, 1 to 600)
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "keel/etcd_lease_store.h"
#include "keel/fetchers/file.h"
#include "keel/fetchers/gzip.h"
#include "keel/idempotency.h"
#include "keel/idempotency_http.h"
#include "keel/keeper.h"
#include "keel/leader.h"
#include "keel/logging.h"
#include "keel/memory_lease_store.h"
#include "keel/rcu_cell.h"
#include "keel/remote_term.h"
#include "keel/runtime.h"
#include "keel/snapshot_store.h"

namespace {

struct Config {
  explicit Config(uint64_t v) : version(v), check(~v) {}
  bool Intact() const { return check == ~version; }
  uint64_t version;
  uint64_t check;
};

bool ok = true;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::printf("  FAILED: %s\n", what);
    ok = false;
  }
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

// A price table: one price per SKU. Table n prices SKU i at i * 7 + n, so a reader can tell
// a whole table from a mix of two.
struct PriceTable {
  static constexpr uint64_t kSkus = 10000;

  // Parses "version N" then one "sku,price" line per SKU.
  static absl::StatusOr<PriceTable> Parse(std::string_view bytes) {
    PriceTable table;
    // (abseil's string_view, which its string functions take on every platform.)
    absl::string_view text(bytes.data(), bytes.size());
    std::vector<absl::string_view> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
    if (lines.empty() || !absl::StartsWith(lines[0], "version ") ||
        !absl::SimpleAtoi(lines[0].substr(8), &table.version)) {
      return absl::InvalidArgumentError("expected a first line 'version <n>'");
    }
    table.prices.reserve(lines.size() - 1);
    for (size_t i = 1; i < lines.size(); ++i) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(lines[i], ',');
      int64_t price;
      if (!absl::SimpleAtoi(kv.second, &price)) {
        return absl::InvalidArgumentError(absl::StrCat("line ", i + 1, ": expected sku,price"));
      }
      table.prices.push_back(price);
    }
    return table;
  }

  absl::Status Validate() const {
    if (prices.size() != kSkus) {
      return absl::FailedPreconditionError(
          absl::StrCat("expected ", kSkus, " prices, got ", prices.size()));
    }
    for (size_t i = 0; i < prices.size(); ++i) {
      if (prices[i] <= 0) {
        return absl::FailedPreconditionError(absl::StrCat("sku-", i, ": price must be > 0"));
      }
    }
    return absl::OkStatus();
  }

  bool Consistent(uint64_t sku) const {
    return prices[sku] == static_cast<int64_t>(sku * 7 + version);
  }

  uint64_t version = 0;
  std::vector<int64_t> prices;
};

std::string MakeTempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "keel-demo-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    return "";
  }
  return pattern;
}

// Writes table `version` gzipped to `path` atomically (temporary file, then rename). An
// invalid table has one negative price.
bool WriteTable(const std::string& path, uint64_t version, bool valid) {
  std::string text = absl::StrCat("version ", version, "\n");
  for (uint64_t i = 0; i < PriceTable::kSkus; ++i) {
    int64_t price = static_cast<int64_t>(i * 7 + version);
    if (!valid && i == 4242) price = -1;
    absl::StrAppend(&text, "sku-", i, ",", price, "\n");
  }
  absl::StatusOr<std::string> packed = keel::fetchers::Gzip(text);
  std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!packed.ok() || f == nullptr ||
      std::fwrite(packed->data(), 1, packed->size(), f) != packed->size() || std::fclose(f) != 0 ||
      std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::perror("writing the price table");
    return false;
  }
  return true;
}

// --- idempotency ------------------------------------------------------------------------
// A simulated "POST /payments" endpoint, in process: an adapter turns each request into an
// HttpRequestView, asks IdempotencyHttp whether to run the handler, and sends what it is told
// to. The burst is planned from a fixed seed, with the answer each request must get.

constexpr uint64_t kIdempotencySeed = 20240611;
constexpr int kSequentialRequests = 33;
constexpr auto kGateTimeout = std::chrono::seconds(5);

// What the (simulated) bank does when the handler charges a payment.
enum class Bank {
  kOk,
  kThrows,  // the card network times out: the handler throws
  kBusy,    // a transient refusal: the handler aborts its claim so that a retry runs again
  kSlow,    // the handler is held until the retries sent meanwhile were answered
};

// How a request was answered (or, in a plan, must be answered).
enum class Answered {
  kRan,         // the handler ran and its response was stored
  kReplayed,    // the stored response, Idempotent-Replayed: true
  kInFlight,    // 409: the first request with the key is still running
  kMismatch,    // 422: the key was used for another body
  kKeyMissing,  // 400
  kKeyInvalid,  // 400
  kThrew,       // 500 from the server: the handler threw, its claim halted the key
  kHalted,      // 500 problem: the first request with the key failed; not run again
  kReleased,    // 503 from the server: the handler aborted its claim
  kRace,        // plan only: one of two racing requests runs, the other is in flight
  kOther,
};

const char* AnsweredName(Answered a) {
  switch (a) {
    case Answered::kRan:
      return "ran handler";
    case Answered::kReplayed:
      return "replayed";
    case Answered::kInFlight:
      return "in flight";
    case Answered::kMismatch:
      return "mismatch";
    case Answered::kKeyMissing:
      return "key missing";
    case Answered::kKeyInvalid:
      return "key invalid";
    case Answered::kThrew:
      return "handler threw, key halted";
    case Answered::kHalted:
      return "halted, not run again";
    case Answered::kReleased:
      return "bank busy, key released";
    case Answered::kRace:
      return "ran handler or in flight";
    case Answered::kOther:
      break;
  }
  return "unexpected answer";
}

struct PaymentRequest {
  int number = 0;
  int thread = 1;  // the client thread that sends it (1 or 2)
  std::string identity;
  std::optional<std::string> key_header;  // the raw Idempotency-Key value; none if absent
  std::string key;                        // the key it names, for the model ("" if none)
  int64_t amount_cents = 0;
  std::string to;
  Bank bank = Bank::kOk;
  Answered expected = Answered::kOther;
  std::string note;

  std::string Body() const {
    return "{\"amount\":" + std::to_string(amount_cents) + ",\"currency\":\"EUR\",\"to\":\"" + to +
           "\"}";
  }
  std::string Summary() const {
    char text[64];
    std::snprintf(text, sizeof(text), "%lld.%02lld to %s",
                  static_cast<long long>(amount_cents / 100),
                  static_cast<long long>(amount_cents % 100), to.c_str());
    return text;
  }
};

// Plans the sequential part of the burst: new payments and duplicates from two identities,
// with the special cases mixed in at seeded places. A small model of the tracker (which keys
// completed, halted or were released) gives each request the answer it must get.
std::vector<PaymentRequest> PlanSequentialBurst(std::mt19937_64& rng, int& keys_issued) {
  enum class Special { kThrows, kMismatch, kMissingKey, kOtherIdentity, kBareKey, kBusy, kKeyList };
  std::vector<Special> specials = {
      Special::kThrows,  Special::kMismatch, Special::kMissingKey, Special::kOtherIdentity,
      Special::kBareKey, Special::kBusy,     Special::kKeyList};
  const std::string identities[] = {"alice", "bob"};
  std::vector<PaymentRequest> plan;
  std::vector<size_t> completed;  // plan indices of requests whose response is stored
  std::vector<std::pair<size_t, PaymentRequest>> follow_ups;  // (due position, request)

  auto fresh = [&](const std::string& identity) {
    PaymentRequest r;
    r.identity = identity;
    char key[16];
    std::snprintf(key, sizeof(key), "pay-%03d", ++keys_issued);
    r.key = key;
    r.key_header = "\"" + r.key + "\"";
    r.amount_cents = 100 + static_cast<int64_t>(rng() % 99900);
    r.to = "acct-" + std::to_string(1 + rng() % 9);
    r.expected = Answered::kRan;
    return r;
  };
  auto emit = [&](PaymentRequest r) {
    r.number = static_cast<int>(plan.size()) + 1;
    if (r.expected == Answered::kRan) completed.push_back(plan.size());
    plan.push_back(std::move(r));
  };
  auto copy_of = [&](size_t index, Answered expected, std::string note) {
    PaymentRequest r = plan[index];
    r.bank = Bank::kOk;
    r.expected = expected;
    r.note = std::move(note);
    return r;
  };
  auto ref = [&](const char* what, size_t index) {
    return std::string(what) + " #" + std::to_string(plan[index].number);
  };

  while (plan.size() < kSequentialRequests || !specials.empty() || !follow_ups.empty()) {
    const size_t position = plan.size();
    if (!follow_ups.empty() &&
        (follow_ups.front().first <= position || position >= kSequentialRequests)) {
      emit(std::move(follow_ups.front().second));
      follow_ups.erase(follow_ups.begin());
      continue;
    }
    const uint64_t roll = rng() % 10;
    const bool special_now =
        !specials.empty() && !completed.empty() && (roll < 3 || position >= kSequentialRequests);
    if (!special_now) {
      if (!completed.empty() && roll < 6) {
        const size_t original = completed[rng() % completed.size()];
        emit(copy_of(original, Answered::kReplayed, ref("duplicate of", original)));
      } else {
        emit(fresh(identities[rng() % 2]));
      }
      continue;
    }
    const Special special = specials.front();
    specials.erase(specials.begin());
    const size_t earlier = completed[rng() % completed.size()];
    switch (special) {
      case Special::kThrows: {
        PaymentRequest r = fresh(identities[rng() % 2]);
        r.bank = Bank::kThrows;
        r.expected = Answered::kThrew;
        emit(r);
        PaymentRequest retry = copy_of(position, Answered::kHalted, ref("retry of", position));
        follow_ups.emplace_back(position + 2 + rng() % 3, std::move(retry));
        break;
      }
      case Special::kBusy: {
        PaymentRequest r = fresh(identities[rng() % 2]);
        r.bank = Bank::kBusy;
        r.expected = Answered::kReleased;
        emit(r);
        PaymentRequest retry =
            copy_of(position, Answered::kRan, ref("retry of", position) + ", runs again");
        follow_ups.emplace_back(position + 2 + rng() % 3, std::move(retry));
        break;
      }
      case Special::kMismatch: {
        PaymentRequest r = copy_of(earlier, Answered::kMismatch, ref("other body than", earlier));
        r.amount_cents += 100;
        emit(r);
        break;
      }
      case Special::kOtherIdentity: {
        PaymentRequest r = copy_of(earlier, Answered::kRan, "");
        r.identity = r.identity == "alice" ? "bob" : "alice";
        r.note = "same key and body as #" + std::to_string(plan[earlier].number) + " from " +
                 plan[earlier].identity;
        emit(r);
        break;
      }
      case Special::kMissingKey: {
        PaymentRequest r = fresh(identities[rng() % 2]);
        --keys_issued;
        r.key.clear();
        r.key_header.reset();
        r.expected = Answered::kKeyMissing;
        r.note = "no Idempotency-Key header";
        emit(r);
        break;
      }
      case Special::kBareKey: {
        PaymentRequest r = fresh(identities[rng() % 2]);
        r.key_header = r.key;  // the draft's key is a quoted string
        r.key.clear();
        r.expected = Answered::kKeyInvalid;
        r.note = "unquoted key";
        emit(r);
        break;
      }
      case Special::kKeyList: {
        PaymentRequest r = fresh(identities[rng() % 2]);
        r.key_header = "\"" + r.key + "\", \"" + plan[earlier].key + "\"";
        r.key.clear();
        r.expected = Answered::kKeyInvalid;
        r.note = "two keys in one header";
        emit(r);
        break;
      }
    }
  }
  return plan;
}

// A one-shot event with a bounded wait, so that a broken guarantee fails the demo instead of
// hanging it.
class Gate {
 public:
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  bool Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kGateTimeout, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;  // guarded by mu_
};

struct ServedAnswer {
  keel::HttpReply reply;
  Answered answered = Answered::kOther;
  absl::Status stored;  // Finish's status when the handler ran
};

const std::string* FindHeader(const keel::HttpReply& reply, std::string_view name) {
  for (const auto& [header, value] : reply.headers) {
    if (header.size() == name.size() &&
        std::equal(header.begin(), header.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return &value;
    }
  }
  return nullptr;
}

// The server side: the adapter, the handler, and the records the checks use.
class PaymentsEndpoint {
 public:
  explicit PaymentsEndpoint(const keel::IdempotencyHttp& http) : http_(http) {}

  // Serves one request; `hold`, if set, runs inside the handler before it answers. Any thread.
  ServedAnswer Serve(const PaymentRequest& request, const std::function<void()>& hold = nullptr) {
    const std::string body = request.Body();
    keel::HttpRequestView view{.method = "POST",
                               .route = "/payments",
                               .headers = {{"Content-Type", "application/json"}},
                               .body = body,
                               .identity = request.identity};
    if (request.key_header.has_value()) {
      view.headers.emplace_back(keel::kIdempotencyKeyHeader, *request.key_header);
    }
    keel::IdempotencyHttp::Decision decision = http_.Decide(view);
    ServedAnswer answer;
    if (auto* reply = std::get_if<keel::HttpReply>(&decision)) {
      answer.reply = std::move(*reply);
      answer.answered = Classify(answer.reply);
      return answer;
    }
    try {
      // Owned inside the try block: if the handler throws, the claim is destroyed while the
      // exception unwinds, and the tracker halts the key with a reason that says so.
      keel::IdempotencyHttp::Proceed proceed =
          std::move(std::get<keel::IdempotencyHttp::Proceed>(decision));
      if (!proceed.claim.has_value()) {
        answer.reply = Plain(500, "{\"error\":\"POST was not tracked\"}");
        return answer;
      }
      std::optional<keel::IdempotentResponse> charged = Charge(request, hold);
      if (!charged.has_value()) {
        // A transient refusal: release the key, so that the client's retry runs again.
        answer.stored = proceed.claim->Abort();
        RecordRelease(request);
        answer.reply = Plain(503, "{\"error\":\"the bank is busy; retry\"}");
        answer.reply.headers.emplace_back("Retry-After", "1");
        answer.answered = Answered::kReleased;
        return answer;
      }
      keel::IdempotencyHttp::Finished finished = http_.Finish(proceed, *std::move(charged));
      answer.reply = std::move(finished.reply);
      answer.stored = finished.stored;
      answer.answered = Answered::kRan;
    } catch (...) {
      // What a server framework does with a handler's exception; the claim has halted by now.
      answer.reply = Plain(500, "{\"error\":\"internal error\"}");
      answer.answered = Answered::kThrew;
    }
    return answer;
  }

  // Handler runs per (identity, key), and releases (aborted claims) per (identity, key).
  std::map<std::pair<std::string, std::string>, int> Runs() const {
    std::lock_guard<std::mutex> lock(mu_);
    return runs_;
  }
  std::map<std::pair<std::string, std::string>, int> Releases() const {
    std::lock_guard<std::mutex> lock(mu_);
    return releases_;
  }

 private:
  // The handler: charges the payment and answers 201 with a new payment id, so that a second
  // run for the same key would show (another id). Throws when the bank's network is down;
  // returns nothing when the bank is busy.
  std::optional<keel::IdempotentResponse> Charge(const PaymentRequest& request,
                                                 const std::function<void()>& hold) {
    int id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++runs_[{request.identity, request.key}];
      id = ++payments_;
    }
    if (request.bank == Bank::kThrows) throw std::runtime_error("card network timed out");
    if (request.bank == Bank::kBusy) return std::nullopt;
    if (hold) hold();
    char payment_id[16];
    std::snprintf(payment_id, sizeof(payment_id), "pay_%04d", id);
    keel::IdempotentResponse response;
    response.status = 201;
    response.headers = {{"Content-Type", "application/json"},
                        {"Location", std::string("/payments/") + payment_id}};
    response.body = std::string("{\"id\":\"") + payment_id +
                    "\",\"amount\":" + std::to_string(request.amount_cents) +
                    ",\"currency\":\"EUR\",\"to\":\"" + request.to + "\",\"status\":\"captured\"}";
    return response;
  }

  void RecordRelease(const PaymentRequest& request) {
    std::lock_guard<std::mutex> lock(mu_);
    ++releases_[{request.identity, request.key}];
  }

  static keel::HttpReply Plain(int status, std::string body) {
    keel::HttpReply reply;
    reply.status = status;
    reply.headers = {{"Content-Type", "application/json"}};
    reply.body = std::make_shared<const std::string>(std::move(body));
    return reply;
  }

  // Tells the layer's answers apart by status and problem type.
  static Answered Classify(const keel::HttpReply& reply) {
    const std::string* replayed = FindHeader(reply, "Idempotent-Replayed");
    if (replayed != nullptr && *replayed == "true") return Answered::kReplayed;
    const std::string& body = *reply.body;
    switch (reply.status) {
      case 400:
        if (body.find("/idempotency-key-missing\"") != std::string::npos) {
          return Answered::kKeyMissing;
        }
        if (body.find("/idempotency-key-invalid\"") != std::string::npos) {
          return Answered::kKeyInvalid;
        }
        break;
      case 409:
        return Answered::kInFlight;
      case 422:
        return Answered::kMismatch;
      case 500:
        if (body.find("/request-halted\"") != std::string::npos) return Answered::kHalted;
        break;
    }
    return Answered::kOther;
  }

  const keel::IdempotencyHttp& http_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, int> runs_;      // guarded by mu_
  std::map<std::pair<std::string, std::string>, int> releases_;  // guarded by mu_
  int payments_ = 0;                                             // guarded by mu_
};

// What a replay must repeat byte for byte: status, the handler's headers, and the body.
struct SentResponse {
  int status;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  static SentResponse Of(const keel::HttpReply& reply) {
    SentResponse sent{reply.status, {}, *reply.body};
    for (const auto& header : reply.headers) {
      if (header.first != "Expires" && header.first != "Idempotent-Replayed") {
        sent.headers.push_back(header);
      }
    }
    return sent;
  }
  bool operator==(const SentResponse&) const = default;
};

// Prints each answer and checks it against the plan, in plan order.
class BurstReport {
 public:
  void Add(const PaymentRequest& request, const ServedAnswer& answer) {
    ++requests_;
    ++by_status_[answer.reply.status];
    ++by_answer_[answer.answered];
    std::string text = std::to_string(answer.reply.status) + " " + AnsweredName(answer.answered);
    const std::string& body = *answer.reply.body;
    if (answer.answered == Answered::kRan || answer.answered == Answered::kReplayed) {
      const size_t id = body.find("\"id\":\"");
      if (id != std::string::npos) text += " " + body.substr(id + 6, 8);
    }
    if (answer.answered == Answered::kInFlight) {
      const std::string* retry_after = FindHeader(answer.reply, "Retry-After");
      text += ", Retry-After " + (retry_after != nullptr ? *retry_after : std::string("?"));
      Check(retry_after != nullptr, "a 409 carries Retry-After");
    }
    PrintRow(std::to_string(request.number), "t" + std::to_string(request.thread), request.identity,
             request.key_header.value_or("(none)"), request.Summary(), text, Annotation(request));

    if (request.expected != Answered::kRace && answer.answered != request.expected) {
      const std::string what = "#" + std::to_string(request.number) + " is answered '" +
                               AnsweredName(request.expected) + "'";
      Check(false, what.c_str());
    }
    if (answer.answered == Answered::kRan) {
      const std::string what =
          "#" + std::to_string(request.number) + ": the handler's response was stored";
      Check(answer.stored.ok(), what.c_str());
      first_[{request.identity, request.key}] = SentResponse::Of(answer.reply);
    }
    if (answer.answered == Answered::kReplayed) {
      auto first = first_.find({request.identity, request.key});
      const std::string what = "#" + std::to_string(request.number) +
                               ": the replay is byte-identical to the first response";
      Check(first != first_.end() && first->second == SentResponse::Of(answer.reply), what.c_str());
      Check(FindHeader(answer.reply, "Expires") != nullptr, "a replay carries Expires");
    }
    if (answer.answered == Answered::kReleased) {
      Check(answer.stored.ok(), "the busy handler's Abort released its key");
    }
    if (answer.answered == Answered::kHalted) {
      Check(body.find("the handler threw") != std::string::npos,
            "the 500 for a halted key says that the first request's handler threw");
    }
  }

  // One row of the table; the last column is left unpadded.
  static void PrintRow(const std::string& number, const std::string& thread,
                       const std::string& identity, const std::string& key, const std::string& body,
                       const std::string& answer, const std::string& note) {
    std::string row(256, '\0');
    const int length = std::snprintf(row.data(), row.size(), "%3s %-3s %-5s %-20s %-16s %-29s %s",
                                     number.c_str(), thread.c_str(), identity.c_str(), key.c_str(),
                                     body.c_str(), answer.c_str(), note.c_str());
    row.resize(std::clamp<int>(length, 0, static_cast<int>(row.size()) - 1));
    while (!row.empty() && row.back() == ' ') row.pop_back();
    std::printf("            %s\n", row.c_str());
  }

  int requests() const { return requests_; }
  int Count(Answered a) const {
    auto it = by_answer_.find(a);
    return it == by_answer_.end() ? 0 : it->second;
  }
  const std::map<int, int>& by_status() const { return by_status_; }

 private:
  static std::string Annotation(const PaymentRequest& request) {
    std::string text = request.note;
    switch (request.bank) {
      case Bank::kOk:
        break;
      case Bank::kThrows:
        text = "bank down: the handler throws";
        break;
      case Bank::kBusy:
        text = "bank busy: the handler aborts its claim";
        break;
      case Bank::kSlow:
        text = "slow handler: " + request.note;
        break;
    }
    return text.empty() ? text : "(" + text + ")";
  }

  int requests_ = 0;
  std::map<int, int> by_status_;
  std::map<Answered, int> by_answer_;
  std::map<std::pair<std::string, std::string>, SentResponse> first_;
};

void RunIdempotencyDemo(keel::Runtime& runtime) {
  auto tracker = keel::IdempotencyTracker::Create(runtime, {});
  if (!tracker.ok()) {
    Check(false, "the idempotency tracker starts");
    return;
  }
  auto http = keel::IdempotencyHttp::Create(runtime, **tracker, {});
  if (!http.ok()) {
    Check(false, "the idempotency HTTP layer starts");
    return;
  }
  PaymentsEndpoint endpoint(*http);
  BurstReport report;

  std::mt19937_64 rng(kIdempotencySeed);
  int keys_issued = 0;
  std::vector<PaymentRequest> plan = PlanSequentialBurst(rng, keys_issued);
  int next_number = static_cast<int>(plan.size()) + 1;
  auto next_key = [&] {
    char key[16];
    std::snprintf(key, sizeof(key), "pay-%03d", ++keys_issued);
    return std::string(key);
  };

  std::printf(
      "idempotency POST /payments through IdempotencyHttp over an IdempotencyTracker (default "
      "policy),\n            a burst from 2 identities (seed %llu); answers in request order:\n",
      static_cast<unsigned long long>(kIdempotencySeed));
  BurstReport::PrintRow("#", "thr", "who", "Idempotency-Key", "body", "answer", "");
  for (const PaymentRequest& request : plan) report.Add(request, endpoint.Serve(request));

  // Retries of a key while its first request runs: thread 1's handler is held until thread 2
  // has sent a retry (409) and a retry with another body (422); then a late retry replays.
  PaymentRequest slow;
  slow.number = next_number++;
  slow.identity = "alice";
  slow.key = next_key();
  slow.key_header = "\"" + slow.key + "\"";
  slow.amount_cents = 100 + static_cast<int64_t>(rng() % 99900);
  slow.to = "acct-" + std::to_string(1 + rng() % 9);
  slow.bank = Bank::kSlow;
  slow.expected = Answered::kRan;
  const std::string while_slow = " while #" + std::to_string(slow.number) + " runs";
  PaymentRequest retry = slow, changed = slow, late = slow;
  retry.bank = changed.bank = late.bank = Bank::kOk;
  retry.thread = changed.thread = late.thread = 2;
  retry.number = next_number++;
  retry.expected = Answered::kInFlight;
  retry.note = "retry" + while_slow;
  changed.number = next_number++;
  changed.amount_cents += 1;
  changed.expected = Answered::kMismatch;
  changed.note = "other body" + while_slow;
  late.number = next_number++;
  late.expected = Answered::kReplayed;
  late.note = "retry after #" + std::to_string(slow.number) + " answered";
  slow.note = "held until #" + std::to_string(retry.number) + " and #" +
              std::to_string(changed.number) + " are answered";
  {
    Gate entered, release;
    bool held = false;
    ServedAnswer slow_answer;
    std::thread first([&] {
      slow_answer = endpoint.Serve(slow, [&] {
        entered.Open();
        held = release.Wait();
      });
    });
    Check(entered.Wait(), "the slow handler started");
    ServedAnswer retry_answer = endpoint.Serve(retry);
    ServedAnswer changed_answer = endpoint.Serve(changed);
    release.Open();
    first.join();
    ServedAnswer late_answer = endpoint.Serve(late);
    Check(held, "the slow handler was held until the retries were answered");
    report.Add(slow, slow_answer);
    report.Add(retry, retry_answer);
    report.Add(changed, changed_answer);
    report.Add(late, late_answer);
  }

  // Two threads send the same new key at the same moment: exactly one runs the handler, which
  // is held until the other was answered, so the other is in flight whichever thread wins.
  PaymentRequest racer[2];
  racer[0].identity = "bob";
  racer[0].key = next_key();
  racer[0].key_header = "\"" + racer[0].key + "\"";
  racer[0].amount_cents = 100 + static_cast<int64_t>(rng() % 99900);
  racer[0].to = "acct-" + std::to_string(1 + rng() % 9);
  racer[0].expected = Answered::kRace;
  racer[1] = racer[0];
  racer[0].number = next_number++;
  racer[1].number = next_number++;
  racer[1].thread = 2;
  racer[0].note = "sent with #" + std::to_string(racer[1].number) + " at once";
  racer[1].note = "sent with #" + std::to_string(racer[0].number) + " at once";
  PaymentRequest after_race = racer[0];
  after_race.number = next_number++;
  after_race.expected = Answered::kReplayed;
  after_race.note = "retry after the race";
  {
    Gate go, loser_answered;
    std::atomic<bool> held{true};
    ServedAnswer race_answer[2];
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        if (!go.Wait()) return;
        race_answer[t] = endpoint.Serve(racer[t], [&] {
          if (!loser_answered.Wait()) held = false;
        });
        if (race_answer[t].answered != Answered::kRan) loser_answered.Open();
      });
    }
    go.Open();
    for (std::thread& t : threads) t.join();
    Check(held.load(), "the race winner's handler was held until the other was answered");
    report.Add(racer[0], race_answer[0]);
    report.Add(racer[1], race_answer[1]);
    const bool one_won = (race_answer[0].answered == Answered::kRan &&
                          race_answer[1].answered == Answered::kInFlight) ||
                         (race_answer[1].answered == Answered::kRan &&
                          race_answer[0].answered == Answered::kInFlight);
    Check(one_won, "of two requests racing with one key, one ran and the other was in flight");
    report.Add(after_race, endpoint.Serve(after_race));
  }

  // Summary and the invariants a user relies on.
  const auto runs = endpoint.Runs();
  const auto releases = endpoint.Releases();
  int handler_runs = 0;
  bool at_most_once = true;
  for (const auto& [scoped, count] : runs) {
    handler_runs += count;
    auto released = releases.find(scoped);
    const int allowed = 1 + (released == releases.end() ? 0 : released->second);
    if (count > allowed) {
      std::printf("            %s %s ran the handler %d times\n", scoped.first.c_str(),
                  scoped.second.c_str(), count);
      at_most_once = false;
    }
  }
  std::string statuses;
  for (const auto& [status, count] : report.by_status()) {
    statuses +=
        (statuses.empty() ? "" : ", ") + std::to_string(status) + " x" + std::to_string(count);
  }
  const keel::IdempotencyStats stats = (*tracker)->Stats();
  std::printf(
      "            %d requests, %d handler runs (%d stored, %d threw, %d aborted: key released)\n",
      report.requests(), handler_runs, report.Count(Answered::kRan), report.Count(Answered::kThrew),
      report.Count(Answered::kReleased));
  std::printf("            answers by status: %s\n", statuses.c_str());
  std::printf(
      "            tracker: %llu claims, %llu replays, %llu conflicts, %llu mismatches, "
      "%llu halts, %llu halted answers;\n"
      "                     entries: %llu completed, %llu halted, %llu processing\n",
      static_cast<unsigned long long>(stats.claims), static_cast<unsigned long long>(stats.replays),
      static_cast<unsigned long long>(stats.conflicts),
      static_cast<unsigned long long>(stats.mismatches),
      static_cast<unsigned long long>(stats.halts),
      static_cast<unsigned long long>(stats.halted_answers),
      static_cast<unsigned long long>(stats.completed),
      static_cast<unsigned long long>(stats.halted),
      static_cast<unsigned long long>(stats.processing));
  Check(at_most_once, "each (identity, key) ran the handler at most once unless released");
  Check(static_cast<uint64_t>(handler_runs) == stats.claims, "one handler run per claim");
  Check(stats.replays == static_cast<uint64_t>(report.Count(Answered::kReplayed)) &&
            stats.conflicts == static_cast<uint64_t>(report.Count(Answered::kInFlight)) &&
            stats.mismatches == static_cast<uint64_t>(report.Count(Answered::kMismatch)) &&
            stats.halts == static_cast<uint64_t>(report.Count(Answered::kThrew)) &&
            stats.halted_answers == static_cast<uint64_t>(report.Count(Answered::kHalted)),
        "the tracker's counters match the answers sent");
  Check(stats.processing == 0 &&
            stats.completed == static_cast<uint64_t>(report.Count(Answered::kRan)) &&
            stats.halted == static_cast<uint64_t>(report.Count(Answered::kThrew)),
        "every claim was settled: completed or halted entries, none left processing");
}

}  // namespace

// --- keeper -------------------------------------------------------------------------------

// A counter whose handler throws on every 100th message it sees for the first time (a
// transient fault): the crash is not applied, the message is delivered again to the next
// incarnation, and the count stays exact.
struct FlakyCounter {
  struct State {
    int64_t count = 0;
    int64_t sum = 0;
  };
  using Args = int64_t;
  using CastMsg = int64_t;         // a value to add
  using CallMsg = std::monostate;  // read the state
  using Reply = State;

  // Shared by every incarnation (a worker's own members do not survive a crash).
  struct Faults {
    std::mutex mu;
    int64_t seen = 0;
    std::set<int64_t> crashed;  // values whose first delivery crashed
    int64_t restored = 0;       // incarnations that began from a snapshot (site kRestart)
  };
  explicit FlakyCounter(std::shared_ptr<Faults> f) : faults(std::move(f)) {}

  State OnFirstStart(const Args& start) { return State{start, 0}; }
  // After a crash the committed state is right as it is (the crashing message was not
  // applied), and so is a state restored from a snapshot; the restorations are counted so
  // that the demo can tell a restored start from a fresh one.
  keel::Next<State> OnRecover(const State&, const keel::Crash& crash) {
    if (crash.site == keel::CrashSite::kRestart) {
      std::lock_guard<std::mutex> lock(faults->mu);
      ++faults->restored;
    }
    return keel::kUnchanged;
  }
  keel::Next<State> HandleCast(const State& s, const int64_t& value) {
    {
      std::lock_guard<std::mutex> lock(faults->mu);
      if (++faults->seen % 100 == 0 && faults->crashed.insert(value).second) {
        throw std::runtime_error("every 100th message crashes the worker");
      }
    }
    return State{s.count + 1, s.sum + value};
  }
  keel::CallOutcome<State, Reply> HandleCall(const State& s, const std::monostate&) {
    return {keel::kUnchanged, s};
  }

  std::shared_ptr<Faults> faults;
};

keel::KeeperOptions FlakyCounterOptions() {
  keel::KeeperOptions options;
  options.name = "flaky-counter";
  options.max_restarts = 1000;  // a crash every 100 messages is expected here
  options.restart_window = absl::Seconds(1);
  options.backoff_initial = absl::ZeroDuration();
  options.backoff_max = absl::ZeroDuration();
  options.poison_after = 2;  // a message that crashed twice would be dead-lettered
  return options;
}

// The counter's snapshots: files in `dir`, the state encoded as the text "<count> <sum>".
absl::StatusOr<keel::KeeperSnapshots<FlakyCounter::State>> FlakyCounterSnapshots(
    const std::string& dir) {
  auto store = keel::FileSnapshotStore::Open({.directory = dir, .name = "flaky-counter"});
  if (!store.ok()) return store.status();
  keel::KeeperSnapshots<FlakyCounter::State> snapshots;
  snapshots.store = std::shared_ptr<keel::SnapshotStore>(std::move(*store));
  snapshots.schema_version = 1;
  snapshots.encode = [](const FlakyCounter::State& s) -> absl::StatusOr<std::string> {
    return absl::StrCat(s.count, " ", s.sum);
  };
  // The store's checksum already catches damaged files; this refuses bytes that are intact
  // but not a counter (another encoding written under schema version 1, say).
  snapshots.decode = [](const std::string& bytes) -> absl::StatusOr<FlakyCounter::State> {
    std::vector<absl::string_view> fields = absl::StrSplit(bytes, ' ');
    FlakyCounter::State s;
    if (fields.size() != 2 || !absl::SimpleAtoi(fields[0], &s.count) ||
        !absl::SimpleAtoi(fields[1], &s.sum) || s.count < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "flaky-counter snapshot: expected '<count> <sum>', got ", bytes.size(), " bytes"));
    }
    return s;
  };
  return snapshots;
}

constexpr int64_t kChildCasts = 2500;

// keel-demo --keeper-child=DIR: the process that is killed. It counts 1..kChildCasts with
// snapshots in DIR, waits until the last commit is saved, prints "saved <version> <count>
// <sum>" and waits to be SIGKILLed. It never calls Stop (which would save the last state as
// it returns): what the next process finds is only what the background saves wrote.
// Errors go to stderr; the parent sees them as a missing line.
int RunKeeperChild(const std::string& dir) {
  auto created = keel::Runtime::Create({.name = "keel-demo-child"});
  if (!created.ok()) {
    std::fprintf(stderr, "keeper child: no runtime: %s\n", created.status().ToString().c_str());
    return 1;
  }
  auto snapshots = FlakyCounterSnapshots(dir);
  if (!snapshots.ok()) {
    std::fprintf(stderr, "keeper child: %s\n", snapshots.status().ToString().c_str());
    return 1;
  }
  auto faults = std::make_shared<FlakyCounter::Faults>();
  // Declared after the runtime, so destroyed before it (the runtime must outlive it).
  auto keeper = keel::Keeper<FlakyCounter>::StartWithSnapshots(
      **created, 0, std::move(*snapshots), FlakyCounterOptions(),
      [faults] { return std::make_unique<FlakyCounter>(faults); });
  if (!keeper.ok()) {
    std::fprintf(stderr, "keeper child: %s\n", keeper.status().ToString().c_str());
    return 1;
  }
  for (int64_t i = 1; i <= kChildCasts; ++i) {
    if (!(*keeper)->Cast(i).ok()) {
      std::fprintf(stderr, "keeper child: cast %lld refused\n", static_cast<long long>(i));
      return 1;
    }
  }
  absl::StatusOr<FlakyCounter::State> state = (*keeper)->Call({}, absl::Seconds(30));
  if (!state.ok()) {
    std::fprintf(stderr, "keeper child: read failed: %s\n", state.status().ToString().c_str());
    return 1;
  }
  // Saves run on the offload pool after commits, coalesced: wait until the newest commit is
  // the newest snapshot, so that the kill below loses nothing.
  keel::KeeperStats stats = (*keeper)->Stats();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (stats.saved_version != stats.version && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stats = (*keeper)->Stats();
  }
  if (stats.saved_version != stats.version) {
    std::fprintf(stderr, "keeper child: version %llu not saved within 10 s (saved %llu): %s\n",
                 static_cast<unsigned long long>(stats.version),
                 static_cast<unsigned long long>(stats.saved_version),
                 stats.last_snapshot_error.ToString().c_str());
    return 1;
  }
  std::printf("saved %llu %lld %lld\n", static_cast<unsigned long long>(stats.saved_version),
              static_cast<long long>(state->count), static_cast<long long>(state->sum));
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::seconds(30));
  std::fprintf(stderr, "keeper child: not killed within 30 s\n");
  return 1;
}

// Runs `keel-demo --keeper-child=dir` with its stdout on a pipe, reads its first line (up to
// 30 s), then SIGKILLs it and reaps it. The line, or an error saying what went wrong.
absl::StatusOr<std::string> RunChildUntilSaved(const std::string& dir, int& killed_by) {
  // Everything the child needs is built before fork: between fork and exec a child of a
  // threaded process may only make async-signal-safe calls.
  std::string arg = "--keeper-child=" + dir;
  char name[] = "keel-demo";
  char* child_argv[] = {name, arg.data(), nullptr};
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return absl::InternalError("fork failed");
  }
  if (pid == 0) {
    if (dup2(fds[1], STDOUT_FILENO) < 0) _exit(127);
    execv("/proc/self/exe", child_argv);
    _exit(127);
  }
  close(fds[1]);
  std::string line;
  bool eof = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (line.find('\n') == std::string::npos && !eof) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p = {.fd = fds[0], .events = POLLIN, .revents = 0};
    const int ready = poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    char buffer[256];
    const ssize_t n = read(fds[0], buffer, sizeof(buffer));
    if (n < 0 && errno != EINTR) break;
    if (n == 0) eof = true;
    if (n > 0) line.append(buffer, static_cast<size_t>(n));
  }
  close(fds[0]);
  kill(pid, SIGKILL);
  int status = 0;
  killed_by = 0;
  if (waitpid(pid, &status, 0) == pid && WIFSIGNALED(status)) killed_by = WTERMSIG(status);
  const size_t end = line.find('\n');
  if (end == std::string::npos) {
    if (eof) return absl::InternalError("the child ended without reporting a save (see stderr)");
    return absl::DeadlineExceededError("the child reported no save within 30 s");
  }
  return line.substr(0, end);
}

// The counter across a process restart: a child process counts 1..kChildCasts and is killed
// once its state is saved; this process restores the counter from the same directory and
// counts kChildCasts more. Every value must be applied exactly once across both processes.
void RunKeeperRestartDemo(keel::Runtime& runtime) {
  const std::string dir = MakeTempDir();
  if (dir.empty()) {
    Check(false, "a temporary directory for the snapshots");
    return;
  }
  int killed_by = 0;
  absl::StatusOr<std::string> line = RunChildUntilSaved(dir, killed_by);
  unsigned long long child_version = 0;
  long long child_count = 0, child_sum = 0;
  if (!line.ok() || std::sscanf(line->c_str(), "saved %llu %lld %lld", &child_version, &child_count,
                                &child_sum) != 3) {
    std::printf(
        "            snapshots on: the child process failed: %s\n",
        line.ok() ? ("unexpected line '" + *line + "'").c_str() : line.status().ToString().c_str());
    Check(false, "the child process counted and saved its state");
    std::filesystem::remove_all(dir);
    return;
  }
  constexpr int64_t kChildSum = kChildCasts * (kChildCasts + 1) / 2;
  Check(child_count == kChildCasts && child_sum == kChildSum, "the child's count is exact");
  Check(killed_by == SIGKILL, "the child was SIGKILLed (it did not stop on its own)");

  auto faults = std::make_shared<FlakyCounter::Faults>();
  auto snapshots = FlakyCounterSnapshots(dir);
  absl::StatusOr<std::unique_ptr<keel::Keeper<FlakyCounter>>> keeper =
      snapshots.ok()
          ? keel::Keeper<FlakyCounter>::StartWithSnapshots(
                runtime, 0, std::move(*snapshots), FlakyCounterOptions(),
                [faults] { return std::make_unique<FlakyCounter>(faults); })
          : absl::StatusOr<std::unique_ptr<keel::Keeper<FlakyCounter>>>(snapshots.status());
  if (!keeper.ok()) {
    std::printf("            restart from snapshots failed: %s\n",
                keeper.status().ToString().c_str());
    Check(false, "the keeper starts from the child's snapshots");
    std::filesystem::remove_all(dir);
    return;
  }
  const keel::RestoreReport report = (*keeper)->restore_report();  // a copy: outlives keeper
  absl::StatusOr<FlakyCounter::State> restored = (*keeper)->Call({}, absl::Seconds(30));
  for (int64_t i = kChildCasts + 1; i <= 2 * kChildCasts; ++i) {
    Check((*keeper)->Cast(i).ok(), "a cast is queued");
  }
  absl::StatusOr<FlakyCounter::State> final_state = (*keeper)->Call({}, absl::Seconds(30));
  const absl::Status stopped = (*keeper)->Stop();
  const keel::KeeperStats stats = (*keeper)->Stats();
  int64_t restored_incarnations = 0;
  {
    std::lock_guard<std::mutex> lock(faults->mu);
    restored_incarnations = faults->restored;
  }
  keeper->reset();
  std::filesystem::remove_all(dir);

  constexpr int64_t kTotal = 2 * kChildCasts;
  constexpr int64_t kTotalSum = kTotal * (kTotal + 1) / 2;
  // "exact", or what it should have been (the Checks below say which figure failed).
  auto exact = [](long long actual, long long expected) {
    return actual == expected ? std::string("exact") : absl::StrCat("expected ", expected);
  };
  const long long restored_count = restored.ok() ? static_cast<long long>(restored->count) : -1;
  const long long restored_sum = restored.ok() ? static_cast<long long>(restored->sum) : -1;
  const long long final_count = final_state.ok() ? static_cast<long long>(final_state->count) : -1;
  const long long final_sum = final_state.ok() ? static_cast<long long>(final_state->sum) : -1;
  std::printf(
      "            snapshots on: a child process counted %lld (saved as version %llu), %s\n",
      child_count, child_version,
      killed_by == SIGKILL ? "then was SIGKILLed" : "but was NOT SIGKILLed");
  std::printf("            restored from snapshot %llu (%s): count %lld, sum %lld %s\n",
              static_cast<unsigned long long>(report.sequence),
              restored_incarnations == 1 ? "OnRecover, kRestart" : "NOT via OnRecover",
              restored_count, restored_sum, exact(restored_sum, kChildSum).c_str());
  std::printf(
      "            %lld more casts: count %lld, sum %lld %s; %llu crashes, snapshots saved: %llu\n",
      static_cast<long long>(kChildCasts), final_count, final_sum,
      exact(final_sum, kTotalSum).c_str(), static_cast<unsigned long long>(stats.crashes),
      static_cast<unsigned long long>(stats.snapshots_saved));
  Check(report.restored && report.sequence == child_version,
        "the keeper restored the child's last saved snapshot");
  Check(report.skipped.empty(), "no snapshot was skipped as damaged");
  Check(restored_incarnations == 1, "the first incarnation ran OnRecover with site kRestart");
  Check(restored.ok() && restored->count == kChildCasts && restored->sum == kChildSum,
        "the restored count is the child's, exactly");
  Check(final_state.ok() && final_state->count == kTotal && final_state->sum == kTotalSum,
        "the count is exact across the process restart");
  Check(stats.dead_letters == 0, "no message was given up after the restart");
  Check(stopped.ok(), "the restored keeper stops cleanly");
}

// The counter in this process: casts from two threads, crashes on every 100th message.
void RunKeeperCrashDemo(keel::Runtime& runtime) {
  constexpr int kThreads = 2;
  constexpr int64_t kPerThread = 2500;
  auto faults = std::make_shared<FlakyCounter::Faults>();
  const keel::KeeperOptions options = FlakyCounterOptions();
  const auto started = std::chrono::steady_clock::now();
  auto keeper = keel::Keeper<FlakyCounter>::Start(
      runtime, 0, options, [faults] { return std::make_unique<FlakyCounter>(faults); });
  if (!keeper.ok()) {
    Check(false, "the keeper starts");
    return;
  }
  std::vector<std::thread> senders;
  for (int t = 0; t < kThreads; ++t) {
    senders.emplace_back([&, t] {
      for (int64_t i = 1; i <= kPerThread; ++i) {
        Check((*keeper)->Cast(t * kPerThread + i).ok(), "a cast is queued");
      }
    });
  }
  for (std::thread& t : senders) t.join();
  absl::StatusOr<FlakyCounter::State> final_state = (*keeper)->Call({}, absl::Seconds(30));
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  keel::KeeperStats stats = (*keeper)->Stats();
  constexpr int64_t kMessages = kThreads * kPerThread;
  constexpr int64_t kExpectedSum = kMessages * (kMessages + 1) / 2;
  std::printf(
      "keeper      counter worker crashing on every 100th message; %lld casts from %d "
      "threads in %.1f ms\n",
      static_cast<long long>(kMessages), kThreads, ms);
  if (!final_state.ok()) {
    std::printf("            final read failed: %s\n", final_state.status().ToString().c_str());
    Check(false, "the counter answers");
    return;
  }
  std::printf("            count %lld (expected %lld), sum %lld (expected %lld)\n",
              static_cast<long long>(final_state->count), static_cast<long long>(kMessages),
              static_cast<long long>(final_state->sum), static_cast<long long>(kExpectedSum));
  std::printf(
      "            %llu crashes, %llu restarts, incarnation %llu, %llu commits, %llu dead "
      "letters\n",
      static_cast<unsigned long long>(stats.crashes),
      static_cast<unsigned long long>(stats.restarts), static_cast<unsigned long long>(stats.epoch),
      static_cast<unsigned long long>(stats.version),
      static_cast<unsigned long long>(stats.dead_letters));
  Check(final_state->count == kMessages, "the count is exact despite the crashes");
  Check(final_state->sum == kExpectedSum, "every message was applied exactly once");
  Check(stats.crashes >= static_cast<uint64_t>(kMessages / 101), "the worker did crash");
  Check(stats.dead_letters == 0, "no message was given up");
}

void RunKeeperDemo(keel::Runtime& runtime) {
  RunKeeperCrashDemo(runtime);
  RunKeeperRestartDemo(runtime);
  std::printf("\n");
}

// --- leader ----------------------------------------------------------------------------

// Starts a local etcd for `keel-demo --etcd`: on 127.0.0.1, free ports, data in `dir`, with
// short raft timers. Returns its pid and client URL, or an error when it is not installed or
// does not answer within 15 s.
absl::StatusOr<std::pair<pid_t, std::string>> StartLocalEtcd(const std::string& dir) {
  constexpr char kEtcd[] = "/usr/bin/etcd";
  if (access(kEtcd, X_OK) != 0) {
    return absl::FailedPreconditionError(
        "etcd is not installed at /usr/bin/etcd (Debian package etcd-server; "
        "scripts/install-deps.sh installs it)");
  }
  auto free_port = []() -> int {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    int port = -1;
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
    close(fd);
    return port;
  };
  const int client = free_port();
  const int peer = free_port();
  if (client < 0 || peer < 0 || client == peer) {
    return absl::UnavailableError("no free loopback port for etcd");
  }
  const std::string url = absl::StrCat("http://127.0.0.1:", client);
  const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer);
  std::vector<std::string> args = {kEtcd,
                                   "--name=keel-demo",
                                   "--data-dir=" + dir + "/data",
                                   "--listen-client-urls=" + url,
                                   "--advertise-client-urls=" + url,
                                   "--listen-peer-urls=" + peer_url,
                                   "--initial-advertise-peer-urls=" + peer_url,
                                   "--initial-cluster=keel-demo=" + peer_url,
                                   "--heartbeat-interval=10",
                                   "--election-timeout=100",
                                   "--logger=zap",
                                   "--log-outputs=stderr"};
  const std::string log = dir + "/etcd.log";
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(kEtcd, argv.data());
    _exit(127);
  }
  // Ready once the client port accepts connections and a lease can be granted.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < until) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      return absl::UnavailableError(absl::StrCat("etcd exited at start; see ", log));
    }
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(client));
    const bool up = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    if (up) return std::make_pair(pid, url);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return absl::UnavailableError(absl::StrCat("etcd did not answer within 15 s; see ", log));
}

// Three nodes elect a leader on `store`; the leader's runtime is then shut down without a
// word (a crash: its lease is left to lapse), a follower takes over; the new leader then
// resigns and hands over at once. A leader-only job appends to a ledger that refuses terms
// lower than the highest it has seen; a sampler thread checks that no two nodes ever hold
// the lease at once.
void RunLeaderElection(const char* label, std::shared_ptr<keel::LeaseStore> store,
                       absl::Duration ttl, absl::Duration heartbeat, absl::Duration margin) {
  struct Ledger {
    std::mutex mu;
    int64_t highest = 0;
    int accepted = 0;
    int refused = 0;
  } ledger;
  struct Node {
    std::string id;
    std::unique_ptr<keel::Runtime> runtime;
    std::unique_ptr<keel::Leader> leader;
    std::atomic<bool> ready{false};
    bool crashed = false;  // its runtime was stopped dead: IsLeader() stays as it last was
  };
  std::vector<std::unique_ptr<Node>> nodes;
  std::mutex events_mu;
  std::vector<std::string> events;
  const auto t0 = std::chrono::steady_clock::now();
  auto since = [&](keel::Instant t) {
    return std::chrono::duration<double, std::milli>(t - t0).count();
  };
  std::atomic<keel::Instant> last_elected{keel::Instant{}};
  for (const char* id : {"node-a", "node-b", "node-c"}) {
    auto node = std::make_unique<Node>();
    node->id = id;
    auto rt = keel::Runtime::Create({.name = id, .offload_threads = 1});
    Check(rt.ok(), "a node's runtime started");
    if (!rt.ok()) return;
    node->runtime = std::move(*rt);
    Node* self = node.get();
    keel::LeaderCallbacks cb;
    cb.on_elected = [&, self](const keel::Election& e) {
      last_elected = e.at;
      std::lock_guard<std::mutex> lock(events_mu);
      events.push_back(absl::StrCat(absl::StrFormat("%8.1f ms", since(e.at)), "  ", self->id,
                                    " elected, term ", e.term));
    };
    cb.on_demoted = [&, self](const keel::Demotion& d) {
      std::lock_guard<std::mutex> lock(events_mu);
      events.push_back(absl::StrCat(absl::StrFormat("%8.1f ms", since(d.at)), "  ", self->id,
                                    " demoted from term ", d.term, " (",
                                    std::string(keel::DemotionCauseName(d.cause)), ")"));
    };
    cb.on_leader_tick = [&, self](const keel::LeaderTick& tick) {
      while (!self->ready.load()) std::this_thread::yield();
      if (!self->leader->HoldsLease()) return absl::Milliseconds(20);
      std::lock_guard<std::mutex> lock(ledger.mu);
      if (tick.term < ledger.highest) {
        ++ledger.refused;
      } else {
        ledger.highest = tick.term;
        ++ledger.accepted;
      }
      return absl::Milliseconds(20);
    };
    auto leader = keel::Leader::Start(*node->runtime, store,
                                      {.election = "demo-job",
                                       .node_id = id,
                                       .ttl = ttl,
                                       .heartbeat_interval = heartbeat,
                                       .safety_margin = margin},
                                      std::move(cb));
    Check(leader.ok(), "a node joined the election");
    if (!leader.ok()) {
      std::printf("  %s\n", leader.status().ToString().c_str());
      return;
    }
    node->leader = std::move(*leader);
    node->ready = true;
    nodes.push_back(std::move(node));
  }
  std::atomic<bool> sampling{true};
  std::atomic<int> overlaps{0};
  std::atomic<uint64_t> samples{0};
  std::thread sampler([&] {
    while (sampling.load()) {
      int holders = 0;
      for (auto& n : nodes) {
        // The crashed node counts too: its HoldsLease() must turn false by its own deadline.
        if (n->leader->HoldsLease()) ++holders;
      }
      if (holders > 1) overlaps.fetch_add(1);
      samples.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  auto leader_index = [&]() -> int {
    int found = -1;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (!nodes[i]->crashed && nodes[i]->leader->IsLeader()) {
        found = found == -1 ? static_cast<int>(i) : -2;
      }
    }
    return found;
  };
  auto wait_leader = [&](int not_this) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (std::chrono::steady_clock::now() < until) {
      const int i = leader_index();
      if (i >= 0 && i != not_this) return i;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return -1;
  };
  const int first = wait_leader(-1);
  Check(first >= 0, "one node was elected");
  int third = -1;
  double takeover_ms = 0, handover_ms = 0;
  int64_t first_term = 0, second_term = 0, third_term = 0;
  if (first >= 0) {
    first_term = nodes[first]->leader->Term();
    // A crash: the leader's runtime stops dead, its lease is left to lapse in the store.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const auto killed = std::chrono::steady_clock::now();
    nodes[first]->runtime->Shutdown(keel::ShutdownMode::kDropPending).IgnoreError();
    nodes[first]->crashed = true;
    {
      std::lock_guard<std::mutex> lock(events_mu);
      events.push_back(absl::StrCat(absl::StrFormat("%8.1f ms", since(killed)), "  ",
                                    nodes[first]->id, " crashes (its runtime stops, no resign)"));
    }
    const int second = wait_leader(first);
    Check(second >= 0, "a follower took over from the crashed leader");
    if (second >= 0) {
      takeover_ms = std::chrono::duration<double, std::milli>(last_elected.load() - killed).count();
      second_term = nodes[second]->leader->Term();
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      const auto resigned = std::chrono::steady_clock::now();
      Check(nodes[second]->leader->Resign().ok(), "the new leader resigned");
      third = wait_leader(second);
      Check(third >= 0 && third != first, "the third node took over after the resignation");
      if (third >= 0) {
        handover_ms =
            std::chrono::duration<double, std::milli>(last_elected.load() - resigned).count();
        third_term = nodes[third]->leader->Term();
      }
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  sampling = false;
  sampler.join();
  for (auto& n : nodes) {
    (void)n->leader->Stop(absl::Seconds(5));
  }
  std::printf("leader      %s: 3 nodes, ttl %s, heartbeat %s, margin %s\n", label,
              absl::FormatDuration(ttl).c_str(), absl::FormatDuration(heartbeat).c_str(),
              absl::FormatDuration(margin).c_str());
  {
    std::lock_guard<std::mutex> lock(events_mu);
    for (const auto& e : events) std::printf("            %s\n", e.c_str());
  }
  std::printf(
      "            takeover after the crash %.0f ms (target: within ttl + one heartbeat, %.0f "
      "ms); handover after Resign() %.0f ms\n",
      takeover_ms, Ms(ttl + heartbeat), handover_ms);
  std::printf(
      "            terms %lld -> %lld -> %lld; ledger: %d fenced writes accepted, %d refused; "
      "%llu samples, %d with two lease holders\n\n",
      static_cast<long long>(first_term), static_cast<long long>(second_term),
      static_cast<long long>(third_term), ledger.accepted, ledger.refused,
      static_cast<unsigned long long>(samples.load()), overlaps.load());
  Check(takeover_ms > 0 && takeover_ms <= Ms(ttl + heartbeat) + 200,
        "the takeover came within ttl + one heartbeat (+200 ms of scheduling slack)");
  Check(handover_ms > 0 && handover_ms < Ms(ttl), "Resign() handed over faster than a lapse");
  Check(first_term < second_term && second_term < third_term, "terms only grew");
  Check(ledger.refused == 0 && ledger.accepted > 0, "no leader ever acted on a stale term");
  Check(overlaps.load() == 0, "no two nodes held the lease at once");
}

void RunLeaderDemo(bool with_etcd) {
  RunLeaderElection("in-memory store", std::make_shared<keel::MemoryLeaseStore>(),
                    absl::Milliseconds(1000), absl::Milliseconds(200), absl::Milliseconds(300));
  if (!with_etcd) return;
  char dir_template[] = "/tmp/keel-demo-etcd-XXXXXX";
  const char* dir = mkdtemp(dir_template);
  Check(dir != nullptr, "a temp dir for etcd");
  if (dir == nullptr) return;
  auto etcd = StartLocalEtcd(dir);
  Check(etcd.ok(), "a local etcd started (--etcd)");
  if (!etcd.ok()) {
    std::printf("leader      --etcd: %s\n\n", etcd.status().ToString().c_str());
    std::filesystem::remove_all(dir);
    return;
  }
  auto store = keel::EtcdLeaseStore::Create(
      {.endpoints = {etcd->second}, .request_timeout = absl::Milliseconds(250)});
  Check(store.ok(), "the etcd lease store was created");
  if (store.ok()) {
    RunLeaderElection(absl::StrCat("etcd at ", etcd->second).c_str(), *store, absl::Seconds(2),
                      absl::Milliseconds(500), absl::Milliseconds(750));
  }
  kill(etcd->first, SIGTERM);
  waitpid(etcd->first, nullptr, 0);
  std::filesystem::remove_all(dir);
}

int main(int argc, char** argv) {
  int seconds = 2;
  std::optional<std::string> keeper_child;  // hidden: the process the keeper demo kills
  bool with_etcd = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--seconds=", 10) == 0) {
      seconds = std::atoi(argv[i] + 10);
    } else if (std::strncmp(argv[i], "--keeper-child=", 15) == 0 && argv[i][15] != '\0') {
      keeper_child = argv[i] + 15;
    } else if (std::strcmp(argv[i], "--etcd") == 0) {
      with_etcd = true;
    } else {
      std::fprintf(stderr, "usage: %s [--seconds=N] [--etcd]\n", argv[0]);
      return 2;
    }
  }
  if (seconds < 1 || seconds > 600) {
    std::fprintf(stderr, "--seconds must be between 1 and 600, got %d\n", seconds);
    return 2;
  }

  // The refresh outcomes are reported below; keel's own warnings would repeat them.
  keel::SetLogLevel(keel::LogLevel::kError);
  if (keeper_child.has_value()) return RunKeeperChild(*keeper_child);
  auto created = keel::Runtime::Create({.name = "keel-demo"});
  if (!created.ok()) {
    std::fprintf(stderr, "cannot start the runtime: %s\n", created.status().ToString().c_str());
    return 1;
  }
  keel::Runtime& runtime = **created;
  std::printf("keel-demo: runtime '%s' started (control thread + %d offload threads)\n\n",
              runtime.name().c_str(), keel::RuntimeOptions{}.offload_threads);

  // --- timers -------------------------------------------------------------------------
  constexpr int kTimers = 10000;
  std::atomic<int> fired{0};
  std::atomic<int> early{0};
  std::vector<std::atomic<bool>> ran(kTimers);
  std::vector<std::pair<int, keel::TimerHandle>> to_cancel;
  std::mt19937_64 rng(42);
  const auto timers_start = std::chrono::steady_clock::now();
  for (int i = 0; i < kTimers; ++i) {
    const auto delay = std::chrono::milliseconds(rng() % 500);
    const bool cancel = i % 2 == 1;
    const auto scheduled = std::chrono::steady_clock::now();
    auto handle = runtime.Schedule(absl::FromChrono(delay), [&, i, scheduled, delay] {
      ran[i] = true;
      if (std::chrono::steady_clock::now() - scheduled < delay) ++early;
      ++fired;
    });
    if (!handle.ok()) return 1;
    if (cancel) to_cancel.emplace_back(i, *handle);
  }
  std::vector<int> cancelled_ids;
  for (const auto& [i, h] : to_cancel) {
    if (runtime.Cancel(h)) cancelled_ids.push_back(i);
  }
  const int cancelled = static_cast<int>(cancelled_ids.size());
  while (fired.load() + cancelled < kTimers &&
         std::chrono::steady_clock::now() - timers_start < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  keel::LoopStats loop = runtime.Stats();
  std::printf("timers      %d scheduled over 0-500 ms, %d cancelled, %d ran\n", kTimers, cancelled,
              fired.load());
  std::printf("            loop lag: mean %.3f ms, p99 <= %.3f ms, max %.3f ms\n",
              Ms(loop.mean_lag), Ms(loop.p99_lag), Ms(loop.max_lag));
  Check(fired.load() + cancelled == kTimers, "every timer either ran or was cancelled");
  Check(early.load() == 0, "no timer ran before its delay");
  int ran_after_cancel = 0;
  for (int i : cancelled_ids) ran_after_cancel += ran[i] ? 1 : 0;
  Check(ran_after_cancel == 0, "successfully cancelled timers never ran");

  // --- remote term -------------------------------------------------------------------
  // A price table in a local file (gzipped), rewritten every 100 ms by a "publisher" thread,
  // one write in five invalid; the term refreshes every 50 ms; readers price SKUs meanwhile.
  const std::string dir = MakeTempDir();
  if (dir.empty()) return 1;
  const std::string path = dir + "/prices.csv.gz";
  uint64_t written_version = 1;
  if (!WriteTable(path, written_version, /*valid=*/true)) return 1;

  std::mutex outcomes_mu;
  std::map<std::string, int> outcomes;
  auto subscription = runtime.telemetry().Subscribe([&](const keel::Span& span) {
    if (span.name != "keel.term.update") return;
    std::lock_guard<std::mutex> lock(outcomes_mu);
    ++outcomes[span.outcome];
  });
  auto term = keel::RemoteTerm<PriceTable>::Start(
      runtime, {
                   .name = "prices",
                   .fetcher = keel::fetchers::File(path),
                   .decode = PriceTable::Parse,
                   .validate = [](const PriceTable& t) { return t.Validate(); },
                   .refresh = absl::Milliseconds(50),
                   .min_refresh = absl::Milliseconds(10),
                   .jitter = 0.2,
                   .backoff_initial = absl::Milliseconds(20),
                   .backoff_max = absl::Milliseconds(200),
                   .last_known_good_path = dir + "/prices.lkg",
               });
  if (!term.ok()) {
    std::fprintf(stderr, "cannot start the term: %s\n", term.status().ToString().c_str());
    return 1;
  }
  keel::RemoteTerm<PriceTable>& prices = **term;
  std::printf("term        '%s' from %s: %s, version %s\n", prices.status().name.c_str(),
              prices.status().source.c_str(),
              std::string(keel::TermStateName(prices.status().state)).c_str(),
              prices.status().version.c_str());

  constexpr int kReaders = 2;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0}, torn{0}, versions_seen{0};
  std::vector<std::thread> readers;
  const auto read_start = std::chrono::steady_clock::now();
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      uint64_t local = 0, bad = 0, last_version = 0, changes = 0;
      uint64_t sku = static_cast<uint64_t>(r);
      while (!stop.load(std::memory_order_relaxed)) {
        for (int i = 0; i < 1024; ++i) {
          auto table = prices.Read();
          sku = (sku + 7919) % PriceTable::kSkus;
          bad += table->Consistent(sku) ? 0 : 1;
          if (table->version != last_version) {
            last_version = table->version;
            ++changes;
          }
        }
        local += 1024;
      }
      reads += local;
      torn += bad;
      if (r == 0) versions_seen = changes;
    });
  }
  int invalid_writes = 0;
  const auto write_until = read_start + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < write_until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ++written_version;
    const bool valid = written_version % 5 != 0;
    invalid_writes += valid ? 0 : 1;
    if (!WriteTable(path, written_version, valid)) return 1;
  }
  stop = true;
  for (auto& t : readers) t.join();
  const double read_secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - read_start).count();
  // Ask for one last fetch, so that the table on disk is the one published.
  if (written_version % 5 == 0) {
    ++written_version;
    if (!WriteTable(path, written_version, true)) return 1;
  }
  absl::Status last = prices.RefreshNow(absl::Seconds(10));
  keel::TermStatus status = prices.status();
  runtime.telemetry().Unsubscribe(subscription);
  std::printf(
      "            %d readers for %.1f s while the file changed every 100 ms (%d writes,"
      " %d invalid)\n",
      kReaders, read_secs, static_cast<int>(written_version - 1), invalid_writes);
  std::printf(
      "            %.1f M reads/s in all (%.2f ns per read per thread), %llu torn, "
      "%llu versions seen by reader 0\n",
      reads.load() / read_secs / 1e6, read_secs * 1e9 * kReaders / reads.load(),
      static_cast<unsigned long long>(torn.load()),
      static_cast<unsigned long long>(versions_seen.load()));
  {
    std::lock_guard<std::mutex> lock(outcomes_mu);
    std::printf("            refresh outcomes: %d updated, %d not_modified, %d failed\n",
                outcomes["updated"], outcomes["not_modified"], outcomes["failed"]);
    Check(outcomes["updated"] >= 2, "the term picked up new versions of the file");
    Check(outcomes["not_modified"] >= 1, "unchanged files were not re-read and republished");
    Check(invalid_writes == 0 || outcomes["failed"] >= 1, "invalid tables were refused");
  }
  std::printf("            final: %s, version %s, %llu updates, last error: %s\n",
              std::string(keel::TermStateName(status.state)).c_str(), status.version.c_str(),
              static_cast<unsigned long long>(status.updates),
              status.last_error.ok() ? "none" : status.last_error.ToString().c_str());
  Check(torn.load() == 0, "no reader saw a torn or freed table");
  Check(last.ok() && prices.Read()->version == written_version,
        "the last table written is the one published");
  Check(status.state == keel::TermState::kFresh, "the term ends fresh");
  term->reset();
  std::filesystem::remove_all(dir);

  // --- offload pool -------------------------------------------------------------------
  std::string payload;
  for (int i = 0; i < 20000; ++i) {
    payload.append("sku-").append(std::to_string(i)).append(",price=");
    payload.append(std::to_string(i * 7)).append("\n");
  }
  std::promise<std::pair<bool, std::string>> offloaded;
  const auto offload_start = std::chrono::steady_clock::now();
  absl::Status submitted = runtime.OffloadThen<std::string>(
      [&payload]() -> std::string {
        auto packed = keel::fetchers::Gzip(payload);
        if (!packed.ok()) return "";
        auto unpacked = keel::fetchers::Gunzip(*packed);
        return unpacked.ok()
                   ? std::to_string(packed->size()) + "/" + std::to_string(unpacked->size())
                   : "";
      },
      [&](absl::StatusOr<std::string> result) {
        offloaded.set_value({runtime.InControlThread(), result.ok() ? *result : ""});
      });
  Check(submitted.ok(), "offload accepted the job");
  auto [on_loop, sizes] = offloaded.get_future().get();
  const double offload_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - offload_start)
          .count();
  std::printf(
      "offload     gzip + gunzip of %zu bytes off the loop: compressed/plain %s in %.1f ms\n",
      payload.size(), sizes.c_str(), offload_ms);
  Check(on_loop, "the completion ran on the control thread");
  const std::string plain_size = std::to_string(payload.size());
  Check(sizes.size() > plain_size.size() && sizes.ends_with(plain_size) &&
            sizes[sizes.size() - plain_size.size() - 1] == '/',
        "the round trip kept every byte");

  // --- idempotency -------------------------------------------------------------------
  RunIdempotencyDemo(runtime);

  // --- keeper ------------------------------------------------------------------------
  RunKeeperDemo(runtime);

  // --- leader ------------------------------------------------------------------------
  RunLeaderDemo(with_etcd);

  // --- shutdown -----------------------------------------------------------------------
  loop = runtime.Stats();
  absl::Status shut = runtime.Shutdown();
  std::printf(
      "shutdown    %s after %llu loop turns, %llu tasks, %llu timers, %llu callback "
      "exceptions\n\n",
      shut.ok() ? "clean" : shut.ToString().c_str(),
      static_cast<unsigned long long>(loop.iterations),
      static_cast<unsigned long long>(loop.tasks_run),
      static_cast<unsigned long long>(loop.timers_run),
      static_cast<unsigned long long>(loop.callback_exceptions));
  Check(shut.ok(), "shutdown was clean");
  std::printf("keel-demo: %s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
