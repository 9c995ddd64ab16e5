// Model-checking fuzzer of IdempotencyHttp, the Idempotency-Key protocol layer: a random
// sequence of requests and handler outcomes against one layer and one tracker on a manual
// clock, with every answer compared to a model of the decision table in
// keel/idempotency_http.h.
//
// The input first picks the options: the tracker's lease, retention (whole milliseconds, so
// that the tracker's millisecond sweep ticks are exact), lease and halt policies and
// max_entries; the layer's method lists, key options (bare tokens, max_length), problem type
// base (sometimes raw bytes), Retry-After when full, and a canonicaliser (none, one that
// drops spaces, one that also refuses bodies with '!', one that also throws on '?'). Then at
// most kMaxSteps steps: Decide on a request (a method from a small set with odd ones, a
// route, an identity, 0, 1 or 2 Idempotency-Key lines among other headers, their names in
// any case, their values from a pool of well-formed and malformed keys or raw bytes, a body
// from a pool or raw bytes), Finish a Proceed with a random response (again, or after its
// claim was settled), Abort or Halt its claim, drop it (which halts the claim), move the
// clock (a little, to a record's lease deadline or expiry give or take a millisecond, or
// past the retention), and SweepNow. The tracker's own periodic sweep never comes due.
//
// The model keeps one record per scope (identity, method, route, decoded key), with the
// tracker's rules: a record is free when it expired, when its lease lapsed under kReclaim,
// or when it is halted (or its lease lapsed) under kReleaseKey with the same canonical body;
// otherwise another body is a 422, a running claim a 409, a completed one a replay and a
// halted one (or a lapsed lease) a 500. A new key is refused (503) when max_entries records
// are held even after the sweep that a full table triggers. A claim settles only while it
// owns an unexpired record with a live lease. A sweep removes expired records and, under
// kReclaim, lapsed ones; under kHalt it halts lapsed ones.
//
// Properties checked on every answer:
//   - Every reply has a status in 100..599 and a non-null body.
//   - The decision (Proceed with or without a claim, or the reply's status) is the model's:
//     in particular 400 exactly for a missing key on a method that requires one, two key
//     lines, a value ParseIdempotencyKey refuses, or a body the canonicaliser refuses.
//   - Problems (every reply of Decide but a replay) have exactly the headers of the table
//     (Content-Type application/problem+json, Content-Language, then Retry-After and Expires
//     where the table says), and a body that is one flat JSON object, valid UTF-8, with
//     "type", "title", "status" and "detail" in that order, the status equal to the reply's,
//     the type the base followed by the problem's name, the draft's titles for the missing
//     key's 400, the 409 and the 422, and the detail the key reader's or canonicaliser's
//     message, or quoting the halt reason.
//   - Retry-After of a 409 is the whole seconds to the lease deadline rounded up, at least 1,
//     and of a 503 retry_after_when_full likewise; Expires is the IMF-fixdate (29 bytes) of
//     the record's expiry on the wall clock.
//   - A replay is the response Finish returned (status, headers without Expires, body byte
//     for byte), with Idempotent-Replayed: true and Expires; a scope never replays another
//     scope's response (the model is keyed by identity, so a leak is a divergence).
//   - At most one Proceed holds an unsettled claim with a live lease per scope, and a claim's
//     key, lease deadline and expiry are the scoped key, now + lease and now + retention.
//   - Finish stores exactly when the model says the claim still owns its record, and answers
//     the handler's status and body, its headers without Expires and Idempotent-Replayed
//     then the layer's Expires when stored, as they are otherwise (dropped or not: see
//     Finish()); Abort and Halt succeed exactly when the model says so.
//   - The tracker's entries by state equal the model's after every step; at the end, past
//     every expiry, a sweep leaves none.
// A divergence prints the steps so far and aborts.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "keel/clock.h"
#include "keel/idempotency.h"
#include "keel/idempotency_http.h"
#include "keel/idempotency_key.h"
#include "keel/runtime.h"
#include "support/flat_json.h"

namespace {

using keel::HttpReply;
using keel::HttpRequestView;
using keel::IdempotencyHttp;
using keel::IdempotentResponse;
using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr int kMaxSteps = 64;

// Request methods: the defaults' two, methods that take no key by default, odd spellings.
const std::string kMethods[] = {"POST", "PATCH", "GET", "PUT", "DELETE", "post", "M-SEARCH", ""};
// Methods the options may list (an empty name is refused by Create).
const std::string kOptionMethods[] = {"POST", "PATCH", "PUT", "DELETE", "post"};
// ("ab", "/c") and ("a", "b/c") concatenate alike: their scopes must still differ.
const std::string kRoutes[] = {"/orders", "/c", "b/c"};
const std::string kIdentities[] = {"alice", "bob", "", "ab", "a"};
const std::string kKeyHeaderNames[] = {"Idempotency-Key", "idempotency-key", "IDEMPOTENCY-KEY"};
const std::string kOtherHeaderNames[] = {"Content-Type", "Idempotency-Keys", "X-Idempotency-Key"};
const std::string kKeyValues[] = {
    "\"k1\"",
    "\"k2\"",
    "k1",  // a bare token: the same key as "k1" when accepted
    " \t\"k1\" ",
    "\"a\\\"b\"",
    "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"",
    "8e03978e-40d5-43e8-bc93-6894a57f9324",
    "\"123456789\"",  // over a max_length of 8
    "\"k1\";v=2",
    "\"k1\", \"k2\"",
    "\"\"",
    "\"unterminated",
    "a/b",
    "",
    "\"caf\xc3\xa9\"",
    "\"" + std::string(255, 'x') + "\"",
    "\"" + std::string(256, 'x') + "\"",
    "\"" + std::string(447, 'y') + "\"",
    std::string(448, 'y'),
};
// "{\"qty\": 1}" and "{\"qty\":1}" are the same request once spaces are dropped.
const std::string kBodies[] = {"{\"qty\":1}", "{\"qty\": 1}", "{\"qty\":2}", "",
                               "!refused",    "?throws"};
const std::string kResponseBodies[] = {"{\"id\":1}", "", "created", std::string("nul\0byte", 8)};
const std::pair<std::string, std::string> kResponseHeaders[] = {
    {"Content-Type", "application/json"},
    {"Expires", "Thu, 01 Jan 1970 00:00:00 GMT"},  // the layer's own: dropped
    {"idempotent-replayed", "false"},              // the layer's own: dropped
    {"Location", "/orders/1"},
    {"EXPIRES", "soon"},
};
const std::string kHaltReasons[] = {"handler threw", "", "bad \xff\xfe bytes",
                                    "quote \" backslash \\ newline \n tab \t del \x7f"};
const std::string kDropReason =
    "the claim was dropped without Complete or Abort (an early return?)";
// Sun, 06 Nov 1994 08:49:37 GMT: the wall clock when the input starts.
const absl::Time kWallStart =
    absl::FromCivil(absl::CivilSecond(1994, 11, 6, 8, 49, 37), absl::UTCTimeZone());

enum class Canonicaliser { kNone, kDropSpaces, kRefuses, kThrows };

// What the canonicaliser of `mode` makes of `body`: the canonical bytes, a refusal (non-OK),
// or nullopt when it throws.
std::optional<absl::StatusOr<std::string>> Canonicalise(Canonicaliser mode, std::string_view body) {
  if (mode == Canonicaliser::kNone) return absl::StatusOr<std::string>(std::string(body));
  if (mode == Canonicaliser::kThrows && body.find('?') != std::string_view::npos) {
    return std::nullopt;
  }
  if (mode != Canonicaliser::kDropSpaces && body.find('!') != std::string_view::npos) {
    return absl::StatusOr<std::string>(
        absl::InvalidArgumentError("the body must not hold '!' (test canonicaliser)"));
  }
  std::string canonical;
  for (char c : body) {
    if (c != ' ') canonical.push_back(c);
  }
  return absl::StatusOr<std::string>(std::move(canonical));
}

bool AsciiEqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

using keel::testing::IsValidUtf8;
using keel::testing::ParseFlatJson;

// An IMF-fixdate (RFC 9110 §5.6.7) of `t`, truncated to the second.
std::string ImfFixdate(absl::Time t) {
  static const char* const kDays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const absl::CivilSecond s = absl::ToCivilSecond(t, absl::UTCTimeZone());
  const int weekday = static_cast<int>(absl::GetWeekday(s));  // Monday is 0
  char out[64];
  std::snprintf(out, sizeof(out), "%s, %02d %s %04lld %02d:%02d:%02d GMT", kDays[weekday], s.day(),
                kMonths[s.month() - 1], static_cast<long long>(s.year()), s.hour(), s.minute(),
                s.second());
  return out;
}

// A problem the model expects from Decide.
struct ExpectedProblem {
  int status = 0;
  std::string type_name = {};
  // The draft's titles (the missing key's 400, 409 and 422); other titles must not be empty.
  std::optional<std::string> title = std::nullopt;
  std::optional<std::string> detail = std::nullopt;         // the whole detail, if fixed
  std::optional<std::string> detail_quotes = std::nullopt;  // text the detail must hold
  std::optional<int64_t> retry_after = std::nullopt;
  std::optional<int64_t> expires_ms = std::nullopt;  // the record's expiry, ms after the start
};

// The model's record of one scope.
enum class State { kProcessing, kCompleted, kHalted };
const char* StateName(State s) {
  switch (s) {
    case State::kProcessing:
      return "processing";
    case State::kCompleted:
      return "completed";
    case State::kHalted:
      return "halted";
  }
  return "?";
}

struct Record {
  State state = State::kProcessing;
  std::string canonical_body;  // stands for the fingerprint: method and route are the scope's
  int owner = 0;               // the Proceed holding the claim (processing)
  int64_t lease_deadline_ms = 0;
  int64_t expires_ms = 0;
  HttpReply stored;                        // completed: what Finish answered, without Expires
  std::optional<std::string> halt_reason;  // halted: checked when known
};

// (identity, method, route, decoded key)
using Scope = std::tuple<std::string, std::string, std::string, std::string>;

std::string DescribeScope(const Scope& s) {
  return absl::StrCat("(identity=\"", absl::CEscape(std::get<0>(s)), "\" method=\"",
                      absl::CEscape(std::get<1>(s)), "\" route=\"", absl::CEscape(std::get<2>(s)),
                      "\" key=\"", absl::CEscape(std::get<3>(s)), "\")");
}

// A Proceed the harness holds, as a handler would while it runs.
struct Pending {
  int id = 0;
  IdempotencyHttp::Proceed proceed;
  std::optional<Scope> scope;  // set when tracked
  bool settled = false;        // the claim was aborted or halted by hand (still held)
  int64_t lease_deadline_ms = 0;
};

class Harness {
 public:
  explicit Harness(FuzzedDataProvider& input) : input_(input) {}

  void Run() {
    auto runtime =
        keel::Runtime::Create({.name = "http-fuzz", .clock = &clock_, .offload_threads = 1});
    Check(runtime.ok(), absl::StrCat("Runtime::Create: ", runtime.status().ToString()));
    runtime_ = *std::move(runtime);

    ConsumeOptions();
    auto tracker = keel::IdempotencyTracker::Create(*runtime_, tracker_options_);
    Check(tracker.ok(), absl::StrCat("IdempotencyTracker::Create: ", tracker.status().ToString()));
    tracker_ = *std::move(tracker);
    auto http = IdempotencyHttp::Create(*runtime_, *tracker_, http_options_);
    Check(http.ok(), absl::StrCat("IdempotencyHttp::Create: ", http.status().ToString()));
    http_.emplace(*std::move(http));

    for (int step = 0; step < kMaxSteps && input_.remaining_bytes() > 0; ++step) {
      switch (input_.ConsumeIntegralInRange<int>(0, 13)) {
        case 0:
        case 1:
        case 2:
        case 3:
        case 4:
          Decide();
          break;
        case 5:
        case 6:
          Finish();
          break;
        case 7:
          Abort();
          break;
        case 8:
          Halt();
          break;
        case 9:
          Drop();
          break;
        case 10:
        case 11:
          Advance();
          break;
        case 12:
          Sweep();
          break;
        default:
          CompleteDirectly();
          break;
      }
      CheckCounts();
    }

    // Drop what is still held, then move past every expiry: a sweep leaves nothing.
    while (!pending_.empty()) DropAt(pending_.size() - 1);
    CheckCounts();
    int64_t last_expiry = now_ms_;
    for (const auto& [scope, record] : records_) {
      last_expiry = std::max(last_expiry, record.expires_ms);
    }
    AdvanceTo(last_expiry);
    Sweep();
    CheckCounts();
    Check(records_.empty(), "the model is empty after everything expired");

    http_.reset();
    tracker_.reset();
    runtime_.reset();
  }

 private:
  // ---- Options ----

  void ConsumeOptions() {
    keel::IdempotencyOptions& t = tracker_options_;
    t.lease = absl::Milliseconds(input_.ConsumeIntegralInRange<int64_t>(1, 60'000));
    t.retention =
        t.lease + absl::Milliseconds(input_.ConsumeBool()
                                         ? 0
                                         : input_.ConsumeIntegralInRange<int64_t>(0, 600'000));
    t.on_lease_expiry =
        input_.ConsumeBool() ? keel::LeaseExpiry::kHalt : keel::LeaseExpiry::kReclaim;
    t.on_halted = input_.ConsumeBool() ? keel::HaltedEntries::kReplayFailure
                                       : keel::HaltedEntries::kReleaseKey;
    t.max_entries = input_.ConsumeIntegralInRange<size_t>(1, 8);
    t.shards = 1 << input_.ConsumeIntegralInRange<int>(0, 3);
    // Never due within an input: the harness sweeps by hand, at instants the model knows.
    t.sweep_interval = absl::Hours(24 * 365);

    keel::IdempotencyHttpOptions& o = http_options_;
    if (input_.ConsumeBool()) {  // otherwise the defaults: POST and PATCH require a key
      o.methods_requiring_key.clear();
      o.methods_accepting_key.clear();
      for (const std::string& method : kOptionMethods) {
        switch (input_.ConsumeIntegralInRange<int>(0, 2)) {
          case 1:
            o.methods_requiring_key.push_back(method);
            break;
          case 2:
            o.methods_accepting_key.push_back(method);
            break;
          default:
            break;
        }
      }
    }
    o.key.accept_bare_token = input_.ConsumeBool();
    static constexpr size_t kMaxLengths[] = {255, 8, 1, 447};  // 447 + 65 = max_key_bytes
    o.key.max_length = kMaxLengths[input_.ConsumeIntegralInRange<size_t>(0, 3)];
    switch (input_.ConsumeIntegralInRange<int>(0, 2)) {
      case 1:
        o.problem_type_base = "https://example.com/problems#";
        break;
      case 2:
        o.problem_type_base = input_.ConsumeRandomLengthString(24);
        break;
      default:
        break;  // the default
    }
    o.retry_after_when_full = absl::Milliseconds(input_.ConsumeIntegralInRange<int64_t>(0, 5'000));
    canonicaliser_ = static_cast<Canonicaliser>(input_.ConsumeIntegralInRange<int>(0, 3));
    if (canonicaliser_ != Canonicaliser::kNone) {
      const Canonicaliser mode = canonicaliser_;
      o.canonicalise_body = [mode](std::string_view body) -> absl::StatusOr<std::string> {
        std::optional<absl::StatusOr<std::string>> result = Canonicalise(mode, body);
        if (!result.has_value()) throw std::runtime_error("test canonicaliser threw");
        return *std::move(result);
      };
    }
    const keel::Instant start = start_;
    keel::ManualClock* clock = &clock_;
    o.wall_now = [start, clock] { return kWallStart + keel::Elapsed(start, clock->Now()); };

    Log(absl::StrCat(
        "options: lease=", absl::FormatDuration(t.lease),
        " retention=", absl::FormatDuration(t.retention), " on_lease_expiry=",
        t.on_lease_expiry == keel::LeaseExpiry::kHalt ? "kHalt" : "kReclaim", " on_halted=",
        t.on_halted == keel::HaltedEntries::kReplayFailure ? "kReplayFailure" : "kReleaseKey",
        " max_entries=", t.max_entries, " shards=", t.shards, " requiring=[",
        absl::StrJoin(o.methods_requiring_key, ","), "] accepting=[",
        absl::StrJoin(o.methods_accepting_key, ","),
        "] accept_bare_token=", o.key.accept_bare_token, " max_length=", o.key.max_length,
        " type_base=\"", absl::CEscape(o.problem_type_base),
        "\" retry_after_when_full=", absl::FormatDuration(o.retry_after_when_full),
        " canonicaliser=", static_cast<int>(canonicaliser_)));
  }

  // ---- Steps ----

  void Decide() {
    const std::string& method = Pick(kMethods);
    const std::string& route = Pick(kRoutes);
    const std::string& identity = Pick(kIdentities);
    // Header lines: 0, 1 or 2 key lines among up to two others, in input order.
    std::vector<std::pair<std::string, std::string>> lines;
    const int lines_pick = input_.ConsumeIntegralInRange<int>(0, 5);  // mostly one key line
    const int key_lines = lines_pick == 0 ? 0 : lines_pick == 5 ? 2 : 1;
    int others = input_.ConsumeIntegralInRange<int>(0, 2);
    int keys_left = key_lines;
    while (keys_left > 0 || others > 0) {
      if (keys_left > 0 && (others == 0 || input_.ConsumeBool())) {
        std::string value = input_.ConsumeIntegralInRange<int>(0, 3) == 0
                                ? input_.ConsumeRandomLengthString(500)
                                : Pick(kKeyValues);
        lines.emplace_back(Pick(kKeyHeaderNames), std::move(value));
        --keys_left;
      } else {
        lines.emplace_back(Pick(kOtherHeaderNames), "\"k9\"");
        --others;
      }
    }
    const std::string body = input_.ConsumeIntegralInRange<int>(0, 3) == 0
                                 ? input_.ConsumeRandomLengthString(64)
                                 : Pick(kBodies);

    HttpRequestView request{
        .method = method, .route = route, .headers = {}, .body = body, .identity = identity};
    std::string described;
    for (const auto& [name, value] : lines) {
      request.headers.emplace_back(name, value);
      absl::StrAppend(&described, " ", name, ": \"", absl::CEscape(value), "\";");
    }
    Log(absl::StrCat("t=", now_ms_, "ms Decide method=\"", absl::CEscape(method),
                     "\" route=", route, " identity=\"", identity, "\" body=\"",
                     absl::CEscape(body), "\" headers:", described));

    IdempotencyHttp::Decision decision = http_->Decide(request);
    if (const auto* reply = std::get_if<HttpReply>(&decision)) {
      Log(absl::StrCat("  -> reply ", reply->status));
    }

    // The model's answer, row by row of the table.
    const bool required = Contains(http_options_.methods_requiring_key, method);
    const bool accepting = Contains(http_options_.methods_accepting_key, method);
    if (!required && !accepting) return ExpectUntracked(decision, "method takes no key");
    int found = 0;
    std::string_view value;
    for (const auto& [name, v] : lines) {
      if (AsciiEqualsIgnoreCase(name, keel::kIdempotencyKeyHeader)) {
        if (found++ == 0) value = v;
      }
    }
    if (found == 0) {
      if (!required) return ExpectUntracked(decision, "no key on a method accepting one");
      return ExpectProblem(decision, {.status = 400,
                                      .type_name = "idempotency-key-missing",
                                      .title = "Idempotency-Key is missing"});
    }
    if (found > 1) {
      // The detail is the message of the public header-list reader.
      return ExpectProblem(
          decision,
          {.status = 400,
           .type_name = "idempotency-key-invalid",
           .detail = std::string(keel::IdempotencyKeyFromHeaders(request.headers, http_options_.key)
                                     .status()
                                     .message())});
    }
    // The public parser is the oracle for one value.
    absl::StatusOr<std::string> key = keel::ParseIdempotencyKey(value, http_options_.key);
    if (!key.ok()) {
      ExpectedProblem expected{.status = 400, .type_name = "idempotency-key-invalid"};
      const std::string message(key.status().message());
      if (IsValidUtf8(message)) expected.detail = message;
      return ExpectProblem(decision, expected);
    }
    Check(!key->empty() && key->size() <= http_options_.key.max_length,
          absl::StrCat("ParseIdempotencyKey accepted a key of ", key->size(), " bytes"));
    std::optional<absl::StatusOr<std::string>> canonical = Canonicalise(canonicaliser_, body);
    if (!canonical.has_value()) {
      return ExpectProblem(decision, {.status = 500,
                                      .type_name = "internal-error",
                                      .detail_quotes = "test canonicaliser threw"});
    }
    if (!canonical->ok()) {
      return ExpectProblem(decision, {.status = 400,
                                      .type_name = "request-body-invalid",
                                      .detail = std::string(canonical->status().message())});
    }
    DecideTracked(decision, Scope{identity, method, route, *key}, **canonical);
  }

  // The tracker's part of the table, for a request whose key and body were accepted.
  void DecideTracked(IdempotencyHttp::Decision& decision, const Scope& scope,
                     const std::string& canonical) {
    auto it = records_.find(scope);
    if (it != records_.end()) {
      Record& r = it->second;
      const bool lapsed = r.state == State::kProcessing && r.lease_deadline_ms <= now_ms_;
      const bool halted = r.state == State::kHalted || lapsed;
      const bool free = r.expires_ms <= now_ms_ || (Reclaims() && lapsed) ||
                        (ReleasesHalted() && halted && r.canonical_body == canonical);
      if (!free) {
        if (r.canonical_body != canonical) {
          return ExpectProblem(decision, {.status = 422,
                                          .type_name = "idempotency-key-reused",
                                          .title = "Idempotency-Key is already used",
                                          .expires_ms = r.expires_ms});
        }
        if (halted) {
          // The detail quotes the halt reason (a lapsed lease's is keel's own).
          ExpectedProblem expected{
              .status = 500, .type_name = "request-halted", .expires_ms = r.expires_ms};
          if (!lapsed && r.halt_reason.has_value() && IsValidUtf8(*r.halt_reason)) {
            expected.detail_quotes = *r.halt_reason;
          }
          return ExpectProblem(decision, expected);
        }
        if (r.state == State::kProcessing) {
          const int64_t wait_ms = r.lease_deadline_ms - now_ms_;
          const int64_t retry_after = std::max<int64_t>(1, (wait_ms + 999) / 1000);
          return ExpectProblem(decision,
                               {.status = 409,
                                .type_name = "request-in-flight",
                                .title = "A request is outstanding for this Idempotency-Key",
                                .retry_after = retry_after,
                                .expires_ms = r.expires_ms});
        }
        return ExpectReplay(decision, scope, r);
      }
    } else if (records_.size() >= tracker_options_.max_entries) {
      // A new key finds the table full: the tracker sweeps, then refuses only if still full.
      SweepModel();
      if (records_.size() >= tracker_options_.max_entries) {
        return ExpectProblem(
            decision, {.status = 503,
                       .type_name = "idempotency-store-full",
                       .retry_after = std::max<int64_t>(
                           1, absl::ToInt64Seconds(absl::Ceil(http_options_.retry_after_when_full,
                                                              absl::Seconds(1))))});
      }
    }
    ExpectClaim(decision, scope, canonical);
  }

  // A handler's response: a usual or any status, up to three headers (the layer's own among
  // them), a body from the pool or raw bytes.
  IdempotentResponse ConsumeResponse() {
    IdempotentResponse response;
    static constexpr int kStatuses[] = {200, 201, 202, 204, 409, 500};
    response.status = input_.ConsumeBool() ? kStatuses[input_.ConsumeIntegralInRange<size_t>(0, 5)]
                                           : input_.ConsumeIntegralInRange<int>(100, 599);
    for (int n = input_.ConsumeIntegralInRange<int>(0, 3); n > 0; --n) {
      response.headers.push_back(Pick(kResponseHeaders));
    }
    response.body =
        input_.ConsumeBool() ? Pick(kResponseBodies) : input_.ConsumeRandomLengthString(64);
    return response;
  }

  static std::string DescribeResponse(const IdempotentResponse& response) {
    return absl::StrCat("status=", response.status, " headers=", DescribeHeaders(response.headers),
                        " body=\"", absl::CEscape(response.body), "\"");
  }

  void Finish() {
    if (pending_.empty()) return;
    Pending& p = *pending_[PickIndex()];
    IdempotentResponse response = ConsumeResponse();
    Log(absl::StrCat("t=", now_ms_, "ms Finish proceed#", p.id, " ", DescribeResponse(response)));

    const IdempotentResponse sent = response;
    const bool had_claim = p.proceed.claim.has_value();
    IdempotencyHttp::Finished finished = http_->Finish(p.proceed, std::move(response));
    CheckReplyBasics(finished.reply, "Finish");
    Check(!p.proceed.claim.has_value(), "Finish leaves the Proceed without its claim");
    Check(finished.reply.status == sent.status && *finished.reply.body == sent.body,
          "Finish answers the handler's status and body");

    if (!had_claim) {  // untracked, or finished before: passed through as is
      Check(finished.reply.headers == sent.headers,
            "Finish without a claim passes the headers through");
      const bool ok = !p.scope.has_value();
      Check(finished.stored.ok() == ok,
            absl::StrCat("Finish without a claim: stored=", finished.stored.ToString(),
                         ", expected ", ok ? "OK (untracked)" : "FailedPrecondition"));
      if (!ok) CheckFailedPrecondition(finished.stored, "Finish again");
      return;
    }
    Headers expected_headers = WithoutOwned(sent.headers);
    const bool owns = !p.settled && Owns(p);
    Check(finished.stored.ok() == owns,
          absl::StrCat("Finish stored=", finished.stored.ToString(), ", the model says ",
                       owns ? "the claim owns its record" : "the claim no longer owns it"));
    if (!owns) {
      CheckFailedPrecondition(finished.stored, "Finish of a claim that no longer owns its record");
      // The header says both "passed through" and "the handler's Expires and
      // Idempotent-Replayed are dropped from Finish's reply": either, but no Expires added.
      Check(finished.reply.headers == expected_headers || finished.reply.headers == sent.headers,
            absl::StrCat("an unstored Finish answers the handler's headers (without the layer's, "
                         "or all of them), no Expires added; got ",
                         DescribeHeaders(finished.reply.headers)));
      p.settled = true;
      return;
    }
    Record& r = records_.at(*p.scope);
    r.state = State::kCompleted;
    r.expires_ms = now_ms_ + Ms(tracker_options_.retention);
    r.stored.status = sent.status;
    r.stored.headers = expected_headers;
    r.stored.body = finished.reply.body;
    expected_headers.emplace_back("Expires", ExpiresAt(r.expires_ms));
    Check(finished.reply.headers == expected_headers,
          absl::StrCat("a stored Finish answers the handler's headers without the layer's, then "
                       "Expires; got ",
                       DescribeHeaders(finished.reply.headers), ", expected ",
                       DescribeHeaders(expected_headers)));
    p.settled = true;
  }

  // Stores a response through the claim itself, bypassing Finish: a replay still drops the
  // handler's Expires and Idempotent-Replayed.
  void CompleteDirectly() {
    Pending* p = PickClaimed();
    if (p == nullptr) return;
    IdempotentResponse response = ConsumeResponse();
    Log(absl::StrCat("t=", now_ms_, "ms Claim::Complete proceed#", p->id, " ",
                     DescribeResponse(response)));
    const bool owns = !p->settled && Owns(*p);
    HttpReply stored;  // what replays answer, before Idempotent-Replayed and Expires
    stored.status = response.status;
    stored.headers = WithoutOwned(response.headers);
    stored.body = std::make_shared<const std::string>(response.body);
    const absl::Status status = p->proceed.claim->Complete(std::move(response));
    CheckSettled("Claim::Complete", status, owns);
    if (owns) {
      Record& r = records_.at(*p->scope);
      r.state = State::kCompleted;
      r.expires_ms = now_ms_ + Ms(tracker_options_.retention);
      r.stored = std::move(stored);
    }
    p->settled = true;
  }

  void Abort() {
    Pending* p = PickClaimed();
    if (p == nullptr) return;
    Log(absl::StrCat("t=", now_ms_, "ms Abort proceed#", p->id));
    const bool owns = !p->settled && Owns(*p);
    const absl::Status status = p->proceed.claim->Abort();
    CheckSettled("Abort", status, owns);
    if (owns) records_.erase(*p->scope);
    p->settled = true;
  }

  void Halt() {
    Pending* p = PickClaimed();
    if (p == nullptr) return;
    const std::string reason =
        input_.ConsumeBool() ? Pick(kHaltReasons) : input_.ConsumeRandomLengthString(48);
    Log(absl::StrCat("t=", now_ms_, "ms Halt proceed#", p->id, " reason=\"", absl::CEscape(reason),
                     "\""));
    const bool owns = !p->settled && Owns(*p);
    const absl::Status status = p->proceed.claim->Halt(reason);
    CheckSettled("Halt", status, owns);
    if (owns) HaltRecord(*p->scope, reason);
    p->settled = true;
  }

  void Drop() {
    if (pending_.empty()) return;
    DropAt(PickIndex());
  }

  void DropAt(size_t index) {
    Pending& p = *pending_[index];
    Log(absl::StrCat("t=", now_ms_, "ms Drop proceed#", p.id));
    // An unsettled claim halts its record as it is destroyed, if it still owns it.
    if (p.proceed.claim.has_value() && !p.settled && Owns(p)) HaltRecord(*p.scope, kDropReason);
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(index));
  }

  void Advance() {
    int64_t target = now_ms_;
    switch (input_.ConsumeIntegralInRange<int>(0, 3)) {
      case 0:
        target += input_.ConsumeIntegralInRange<int64_t>(1, 2'000);
        break;
      case 1:
        target += 1000 * input_.ConsumeIntegralInRange<int64_t>(1, 120);
        break;
      case 2:  // past the retention: everything there is now has expired
        target += Ms(tracker_options_.retention) + 1;
        break;
      default: {  // to a lease deadline or an expiry, give or take a millisecond
        if (records_.empty()) break;
        auto it = records_.begin();
        std::advance(it, input_.ConsumeIntegralInRange<size_t>(0, records_.size() - 1));
        target = (input_.ConsumeBool() ? it->second.lease_deadline_ms : it->second.expires_ms) +
                 input_.ConsumeIntegralInRange<int64_t>(-1, 1);
        break;
      }
    }
    AdvanceTo(target);
  }

  void AdvanceTo(int64_t target_ms) {
    if (target_ms <= now_ms_) return;
    Log(absl::StrCat("t=", now_ms_, "ms Advance to ", target_ms, "ms"));
    clock_.Advance(absl::Milliseconds(target_ms - now_ms_));
    now_ms_ = target_ms;
    Check(keel::Elapsed(start_, clock_.Now()) == absl::Milliseconds(now_ms_),
          "the manual clock moved as asked");
  }

  void Sweep() {
    Log(absl::StrCat("t=", now_ms_, "ms SweepNow"));
    const size_t removed = tracker_->SweepNow();
    const size_t expected = SweepModel();
    Check(removed == expected,
          absl::StrCat("SweepNow removed ", removed, " entries, the model ", expected));
  }

  // What a sweep does now: removes expired records and, under kReclaim, lapsed ones (the
  // count returned); halts lapsed ones under kHalt.
  size_t SweepModel() {
    size_t removed = 0;
    for (auto it = records_.begin(); it != records_.end();) {
      Record& r = it->second;
      const bool lapsed = r.state == State::kProcessing && r.lease_deadline_ms <= now_ms_;
      if (r.expires_ms <= now_ms_ || (Reclaims() && lapsed)) {
        ++removed;
        it = records_.erase(it);
        continue;
      }
      if (lapsed) {  // halted in place, keeping its expiry
        r.state = State::kHalted;
        r.halt_reason = std::nullopt;  // keel's own lapse reason, not checked
      }
      ++it;
    }
    return removed;
  }

  // ---- Expectations ----

  void ExpectUntracked(IdempotencyHttp::Decision& decision, const char* why) {
    if (auto* reply = std::get_if<HttpReply>(&decision)) {
      Fail(absl::StrCat("expected an untracked Proceed (", why, "), got ", Describe(*reply)));
    }
    auto& proceed = std::get<IdempotencyHttp::Proceed>(decision);
    Check(!proceed.claim.has_value() && proceed.key.empty(),
          absl::StrCat("an untracked Proceed has no claim and no key (", why, ")"));
    Keep(std::move(proceed), std::nullopt);
  }

  void ExpectClaim(IdempotencyHttp::Decision& decision, const Scope& scope,
                   const std::string& canonical) {
    if (auto* reply = std::get_if<HttpReply>(&decision)) {
      Fail(absl::StrCat("expected a Proceed with a claim for ", DescribeScope(scope), ", got ",
                        Describe(*reply)));
    }
    auto& proceed = std::get<IdempotencyHttp::Proceed>(decision);
    Check(proceed.claim.has_value(), "a tracked Proceed has a claim");
    const auto& [identity, method, route, key] = scope;
    Check(proceed.key == key, absl::StrCat("Proceed key \"", absl::CEscape(proceed.key),
                                           "\", expected \"", absl::CEscape(key), "\""));
    Check(proceed.claim->key() == IdempotencyHttp::ScopedKey(identity, method, route, key),
          "the claim's key is the scoped key");
    const keel::Instant now = clock_.Now();
    Check(proceed.claim->lease_deadline() == keel::AddDuration(now, tracker_options_.lease) &&
              proceed.claim->expires() == keel::AddDuration(now, tracker_options_.retention),
          "the claim's lease deadline and expiry are now + lease and now + retention");
    // At most one claim with a live lease per scope.
    for (const auto& other : pending_) {
      if (other->scope == scope && other->proceed.claim.has_value() && !other->settled &&
          other->lease_deadline_ms > now_ms_) {
        Fail(absl::StrCat("a second outstanding claim for ", DescribeScope(scope), ": proceed#",
                          other->id, " still holds one until ", other->lease_deadline_ms, "ms"));
      }
    }
    Record& r = records_[scope];  // a new record, or one replaced in place
    r = Record{};
    r.state = State::kProcessing;
    r.canonical_body = canonical;
    r.owner = next_id_;
    r.lease_deadline_ms = now_ms_ + Ms(tracker_options_.lease);
    r.expires_ms = now_ms_ + Ms(tracker_options_.retention);
    Keep(std::move(proceed), scope);
  }

  void ExpectReplay(IdempotencyHttp::Decision& decision, const Scope& scope, const Record& r) {
    auto* reply = std::get_if<HttpReply>(&decision);
    if (reply == nullptr) {
      Fail(absl::StrCat("expected a replay for ", DescribeScope(scope), ", got a Proceed"));
    }
    CheckReplyBasics(*reply, "replay");
    Check(reply->status == r.stored.status && *reply->body == *r.stored.body,
          absl::StrCat("a replay is byte-identical to the stored response: got ", reply->status,
                       " \"", absl::CEscape(*reply->body), "\", stored ", r.stored.status, " \"",
                       absl::CEscape(*r.stored.body), "\""));
    Headers expected = r.stored.headers;
    expected.emplace_back("Idempotent-Replayed", "true");
    expected.emplace_back("Expires", ExpiresAt(r.expires_ms));
    Check(reply->headers == expected,
          absl::StrCat("replay headers ", DescribeHeaders(reply->headers), ", expected ",
                       DescribeHeaders(expected)));
  }

  void ExpectProblem(IdempotencyHttp::Decision& decision, const ExpectedProblem& expected) {
    auto* reply = std::get_if<HttpReply>(&decision);
    if (reply == nullptr) {
      Fail(absl::StrCat(
          "expected a ", expected.status, " ", expected.type_name, " problem, got a Proceed",
          std::get<IdempotencyHttp::Proceed>(decision).claim.has_value() ? " with a claim"
                                                                         : " without a claim"));
    }
    CheckReplyBasics(*reply, "problem");
    Check(reply->status == expected.status,
          absl::StrCat("expected a ", expected.status, " ", expected.type_name, " problem, got ",
                       Describe(*reply)));
    Headers headers = {{"Content-Type", "application/problem+json"}, {"Content-Language", "en"}};
    if (expected.retry_after)
      headers.emplace_back("Retry-After", absl::StrCat(*expected.retry_after));
    if (expected.expires_ms) headers.emplace_back("Expires", ExpiresAt(*expected.expires_ms));
    Check(reply->headers == headers,
          absl::StrCat("problem headers ", DescribeHeaders(reply->headers), ", expected ",
                       DescribeHeaders(headers)));
    std::optional<std::vector<std::pair<std::string, std::string>>> members =
        ParseFlatJson(*reply->body);
    if (!members) Fail(absl::StrCat("not one flat JSON object: ", absl::CEscape(*reply->body)));
    Check(members->size() == 4 && (*members)[0].first == "type" && (*members)[1].first == "title" &&
              (*members)[2].first == "status" && (*members)[3].first == "detail",
          absl::StrCat("members are type, title, status, detail: ", absl::CEscape(*reply->body)));
    const std::string& type = (*members)[0].second;
    if (IsValidUtf8(http_options_.problem_type_base)) {
      Check(type == http_options_.problem_type_base + expected.type_name,
            absl::StrCat("problem type \"", absl::CEscape(type), "\", expected base + ",
                         expected.type_name));
    } else {
      Check(type.size() >= expected.type_name.size() &&
                type.substr(type.size() - expected.type_name.size()) == expected.type_name,
            absl::StrCat("problem type \"", absl::CEscape(type), "\" ends with ",
                         expected.type_name));
    }
    const std::string& title = (*members)[1].second;
    Check(expected.title ? title == *expected.title : !title.empty(),
          absl::StrCat("problem title \"", absl::CEscape(title), "\", expected \"",
                       expected.title.value_or("(any, not empty)"), "\""));
    Check((*members)[2].second == absl::StrCat(reply->status),
          "the problem's status is the reply's");
    const std::string& detail = (*members)[3].second;
    if (expected.detail) {
      Check(detail == *expected.detail,
            absl::StrCat("problem detail \"", absl::CEscape(detail), "\", expected \"",
                         absl::CEscape(*expected.detail), "\""));
    }
    if (expected.detail_quotes) {
      Check(detail.find(*expected.detail_quotes) != std::string::npos,
            absl::StrCat("problem detail \"", absl::CEscape(detail), "\" does not quote \"",
                         absl::CEscape(*expected.detail_quotes), "\""));
    }
  }

  void CheckReplyBasics(const HttpReply& reply, const char* what) {
    Check(reply.status >= 100 && reply.status <= 599,
          absl::StrCat(what, ": status ", reply.status, " outside 100..599"));
    Check(reply.body != nullptr, absl::StrCat(what, ": null body"));
  }

  void CheckSettled(const char* op, const absl::Status& status, bool owns) {
    Check(status.ok() == owns,
          absl::StrCat(op, ": ", status.ToString(), ", the model says the claim ",
                       owns ? "owns its record" : "does not own its record"));
    if (!owns) CheckFailedPrecondition(status, op);
  }

  void CheckFailedPrecondition(const absl::Status& status, const char* op) {
    Check(absl::IsFailedPrecondition(status),
          absl::StrCat(op, ": expected FailedPrecondition, got ", status.ToString()));
  }

  void CheckCounts() {
    const keel::IdempotencyStats stats = tracker_->Stats();
    uint64_t by_state[3] = {0, 0, 0};
    for (const auto& [scope, r] : records_) ++by_state[static_cast<int>(r.state)];
    Check(stats.processing == by_state[0] && stats.completed == by_state[1] &&
              stats.halted == by_state[2],
          absl::StrCat("entries by state (processing/completed/halted): tracker ", stats.processing,
                       "/", stats.completed, "/", stats.halted, ", model ", by_state[0], "/",
                       by_state[1], "/", by_state[2]));
  }

  // ---- The model's helpers ----

  bool Reclaims() const { return tracker_options_.on_lease_expiry == keel::LeaseExpiry::kReclaim; }
  bool ReleasesHalted() const {
    return tracker_options_.on_halted == keel::HaltedEntries::kReleaseKey;
  }

  // True when `p`'s claim may still settle its record now: the record is there, unexpired,
  // processing for `p`, with a live lease.
  bool Owns(const Pending& p) const {
    if (!p.scope) return false;
    auto it = records_.find(*p.scope);
    if (it == records_.end()) return false;
    const Record& r = it->second;
    return r.expires_ms > now_ms_ && r.owner == p.id && r.state == State::kProcessing &&
           r.lease_deadline_ms > now_ms_;
  }

  void HaltRecord(const Scope& scope, const std::string& reason) {
    Record& r = records_.at(scope);
    r.state = State::kHalted;
    r.halt_reason = reason;
    r.expires_ms = now_ms_ + Ms(tracker_options_.retention);
  }

  void Keep(IdempotencyHttp::Proceed proceed, std::optional<Scope> scope) {
    auto p = std::make_unique<Pending>(
        Pending{.id = next_id_++,
                .proceed = std::move(proceed),
                .scope = std::move(scope),
                .lease_deadline_ms = now_ms_ + Ms(tracker_options_.lease)});
    Log(absl::StrCat("  -> proceed#", p->id, p->scope ? " claimed " : " untracked",
                     p->scope ? DescribeScope(*p->scope) : ""));
    pending_.push_back(std::move(p));
  }

  Pending* PickClaimed() {
    if (pending_.empty()) return nullptr;
    Pending* p = pending_[PickIndex()].get();
    return p->proceed.claim.has_value() ? p : nullptr;
  }

  size_t PickIndex() { return input_.ConsumeIntegralInRange<size_t>(0, pending_.size() - 1); }

  template <typename T, size_t N>
  const T& Pick(const T (&pool)[N]) {
    return pool[input_.ConsumeIntegralInRange<size_t>(0, N - 1)];
  }

  static bool Contains(const std::vector<std::string>& methods, std::string_view method) {
    return std::find(methods.begin(), methods.end(), method) != methods.end();
  }

  static int64_t Ms(absl::Duration d) { return absl::ToInt64Milliseconds(d); }

  static Headers WithoutOwned(const Headers& headers) {
    Headers kept;
    for (const auto& header : headers) {
      if (!AsciiEqualsIgnoreCase(header.first, "Expires") &&
          !AsciiEqualsIgnoreCase(header.first, "Idempotent-Replayed")) {
        kept.push_back(header);
      }
    }
    return kept;
  }

  // The Expires value of a record expiring `expires_ms` after the start: an IMF-fixdate
  // ("Sun, 06 Nov 1994 08:49:37 GMT", 29 bytes) of the wall clock then.
  std::string ExpiresAt(int64_t expires_ms) {
    std::string date = ImfFixdate(kWallStart + absl::Milliseconds(expires_ms));
    Check(date.size() == 29 && date[3] == ',' && date[4] == ' ' && date.substr(25) == " GMT",
          absl::StrCat("an IMF-fixdate is 29 bytes: \"", date, "\""));
    return date;
  }

  static std::string DescribeHeaders(const Headers& headers) {
    std::string out = "[";
    for (const auto& [name, value] : headers) {
      absl::StrAppend(&out, name, ": \"", absl::CEscape(value), "\"; ");
    }
    out += "]";
    return out;
  }

  static std::string Describe(const HttpReply& reply) {
    return absl::StrCat("a ", reply.status, " reply ", DescribeHeaders(reply.headers), " \"",
                        reply.body ? absl::CEscape(*reply.body) : "(null)", "\"");
  }

  void Log(std::string line) { log_.push_back(std::move(line)); }

  [[noreturn]] void Fail(std::string_view what) {
    std::fprintf(stderr, "idempotency_http_fuzzer: divergence: %.*s\n",
                 static_cast<int>(what.size()), what.data());
    std::fprintf(stderr, "steps (t = ms after the start):\n");
    for (const std::string& line : log_) std::fprintf(stderr, "  %s\n", line.c_str());
    std::fprintf(stderr, "the model's records at t=%lldms:\n", static_cast<long long>(now_ms_));
    for (const auto& [scope, r] : records_) {
      std::fprintf(stderr, "  %s: %s owner=proceed#%d lease_deadline=%lldms expires=%lldms\n",
                   DescribeScope(scope).c_str(), StateName(r.state), r.owner,
                   static_cast<long long>(r.lease_deadline_ms),
                   static_cast<long long>(r.expires_ms));
    }
    std::abort();
  }

  void Check(bool condition, std::string_view what) {
    if (!condition) Fail(what);
  }

  FuzzedDataProvider& input_;
  keel::ManualClock clock_;
  const keel::Instant start_ = clock_.Now();
  int64_t now_ms_ = 0;  // the manual clock, ms after start_
  std::unique_ptr<keel::Runtime> runtime_;
  keel::IdempotencyOptions tracker_options_;
  keel::IdempotencyHttpOptions http_options_;
  Canonicaliser canonicaliser_ = Canonicaliser::kNone;
  std::unique_ptr<keel::IdempotencyTracker> tracker_;
  std::optional<IdempotencyHttp> http_;
  std::map<Scope, Record> records_;
  std::vector<std::unique_ptr<Pending>> pending_;  // destroyed before the tracker (Run's end)
  int next_id_ = 1;
  std::vector<std::string> log_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  Harness harness(input);
  harness.Run();
  return 0;
}
