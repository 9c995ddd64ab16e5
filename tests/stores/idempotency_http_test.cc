// IdempotencyHttp, the framework-agnostic HTTP layer: each row of the decision table in
// keel/idempotency_http.h, byte-exact where the IETF draft fixes the bytes (status codes,
// Retry-After as delta-seconds, Expires as an IMF-fixdate, Idempotent-Replayed: true,
// problem+json bodies), with a manual runtime clock and a wall clock that moves with it.
#include "keel/idempotency_http.h"

#include <cctype>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "keel/clock.h"
#include "keel/idempotency.h"
#include "keel/runtime.h"
#include "support/flat_json.h"

namespace keel {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using Proceed = IdempotencyHttp::Proceed;
using Headers = std::vector<std::pair<std::string, std::string>>;

// A flat JSON object of strings and integers, as problem+json bodies are; nullopt when `text`
// is not exactly one such object or repeats a name. Values keep integers as text.
std::optional<std::map<std::string, std::string>> ParseFlatJsonObject(std::string_view text) {
  std::optional<std::vector<std::pair<std::string, std::string>>> members =
      keel::testing::ParseFlatJson(text);
  if (!members.has_value()) return std::nullopt;
  std::map<std::string, std::string> fields;
  for (auto& [name, value] : *members) {
    if (!fields.emplace(std::move(name), std::move(value)).second) return std::nullopt;
  }
  return fields;
}

constexpr char kProblemType[] = "https://keel.invalid/problems/";

class IdempotencyHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto runtime = Runtime::Create({.name = "idem-http-test", .clock = &clock_});
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    runtime_ = *std::move(runtime);
    tracker_ = MakeTracker(TrackerOptions());
    ASSERT_NE(tracker_, nullptr);
  }

  static IdempotencyOptions TrackerOptions() {
    IdempotencyOptions o;
    o.lease = absl::Seconds(30);
    o.retention = absl::Minutes(10);
    return o;
  }

  std::unique_ptr<IdempotencyTracker> MakeTracker(IdempotencyOptions options) {
    auto tracker = IdempotencyTracker::Create(*runtime_, options);
    EXPECT_TRUE(tracker.ok()) << tracker.status();
    return tracker.ok() ? *std::move(tracker) : nullptr;
  }

  // A layer on `tracker` (the fixture's by default) whose wall clock reads kWallStart when the
  // test starts and moves with the manual clock, so that Expires dates are exact.
  IdempotencyHttp Make(IdempotencyHttpOptions options = {}, IdempotencyTracker* tracker = nullptr) {
    options.wall_now = [this] { return kWallStart + Elapsed(start_, clock_.Now()); };
    auto http = IdempotencyHttp::Create(*runtime_, tracker ? *tracker : *tracker_, options);
    EXPECT_TRUE(http.ok()) << http.status();
    if (!http.ok()) throw std::runtime_error("IdempotencyHttp::Create failed");
    return *std::move(http);
  }

  // A request; `key_value` is the raw Idempotency-Key header value, none when empty.
  static HttpRequestView Request(std::string_view method, std::string_view key_value,
                                 std::string_view body = R"({"qty":1})",
                                 std::string_view identity = "alice",
                                 std::string_view route = "/orders") {
    HttpRequestView request{.method = method,
                            .route = route,
                            .headers = {{"Content-Type", "application/json"}},
                            .body = body,
                            .identity = identity};
    if (!key_value.empty()) request.headers.emplace_back("Idempotency-Key", key_value);
    return request;
  }

  // Decides and expects a Proceed.
  static Proceed ExpectProceed(const IdempotencyHttp& http, const HttpRequestView& request) {
    IdempotencyHttp::Decision decision = http.Decide(request);
    EXPECT_TRUE(std::holds_alternative<Proceed>(decision))
        << "got a reply: " << std::get<HttpReply>(decision).status << " "
        << *std::get<HttpReply>(decision).body;
    if (!std::holds_alternative<Proceed>(decision)) throw std::runtime_error("no Proceed");
    return std::get<Proceed>(std::move(decision));
  }

  // Decides and expects a reply.
  static HttpReply ExpectReply(const IdempotencyHttp& http, const HttpRequestView& request) {
    IdempotencyHttp::Decision decision = http.Decide(request);
    EXPECT_TRUE(std::holds_alternative<HttpReply>(decision)) << "got a Proceed";
    if (!std::holds_alternative<HttpReply>(decision)) throw std::runtime_error("no reply");
    HttpReply reply = std::get<HttpReply>(std::move(decision));
    EXPECT_NE(reply.body, nullptr);
    if (reply.body == nullptr) throw std::runtime_error("null body");
    return reply;
  }

  // The problem fields of `reply`, checking that its body is one JSON object with exactly
  // type, title, status and detail, and that status matches the reply's.
  static std::map<std::string, std::string> ExpectProblem(const HttpReply& reply) {
    EXPECT_THAT(reply.headers,
                ::testing::IsSupersetOf({Pair("Content-Type", "application/problem+json")}));
    std::optional<std::map<std::string, std::string>> fields = ParseFlatJsonObject(*reply.body);
    EXPECT_TRUE(fields.has_value()) << "not a flat JSON object: " << *reply.body;
    if (!fields) return {};
    EXPECT_THAT(*fields, ElementsAre(Pair("detail", ::testing::_), Pair("status", ::testing::_),
                                     Pair("title", ::testing::_), Pair("type", ::testing::_)));
    EXPECT_EQ((*fields)["status"], absl::StrCat(reply.status));
    return *fields;
  }

  void Advance(absl::Duration d) {
    clock_.Advance(d);
    ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  }

  // Sun, 06 Nov 1994 08:49:37 GMT: a one-digit day, so Expires must pad it.
  const absl::Time kWallStart =
      absl::FromCivil(absl::CivilSecond(1994, 11, 6, 8, 49, 37), absl::UTCTimeZone());
  ManualClock clock_;
  const Instant start_ = clock_.Now();
  std::unique_ptr<Runtime> runtime_;
  std::unique_ptr<IdempotencyTracker> tracker_;
};

TEST_F(IdempotencyHttpTest, AFirstPostWithAKeyProceedsWithAScopedClaim) {
  IdempotencyHttp http = Make();
  Proceed proceed = ExpectProceed(http, Request("POST", R"("k1")"));
  ASSERT_TRUE(proceed.claim.has_value());
  EXPECT_EQ(proceed.key, "k1");
  EXPECT_EQ(proceed.claim->key(), IdempotencyHttp::ScopedKey("alice", "POST", "/orders", "k1"));
  // 64 hex digits of the scope, ':', the client's key.
  EXPECT_THAT(proceed.claim->key(), ::testing::MatchesRegex("[0-9a-f]{64}:k1"));
  ASSERT_TRUE(proceed.claim->Abort().ok());
}

TEST_F(IdempotencyHttpTest, APostWithoutAKeyIsA400ProblemWithTheDraftsTitle) {
  IdempotencyHttp http = Make();
  HttpReply reply = ExpectReply(http, Request("POST", ""));
  EXPECT_EQ(reply.status, 400);
  EXPECT_THAT(reply.headers, ElementsAre(Pair("Content-Type", "application/problem+json"),
                                         Pair("Content-Language", "en")));
  EXPECT_EQ(*reply.body,
            R"({"type":"https://keel.invalid/problems/idempotency-key-missing",)"
            R"("title":"Idempotency-Key is missing","status":400,)"
            R"("detail":"POST requests to /orders must carry an Idempotency-Key header: a unique )"
            R"(key per operation, as a quoted string )"
            R"json((Idempotency-Key: \"8e03978e-40d5-43e8-bc93-6894a57f9324\")"})json");
  EXPECT_EQ(ExpectProblem(reply)["detail"],
            "POST requests to /orders must carry an Idempotency-Key header: a unique key per "
            "operation, as a quoted string (Idempotency-Key: "
            "\"8e03978e-40d5-43e8-bc93-6894a57f9324\")");
  EXPECT_EQ(tracker_->Stats().claims, 0u);
}

TEST_F(IdempotencyHttpTest, APatchRequiresAKeyToo) {
  IdempotencyHttp http = Make();
  EXPECT_EQ(ExpectReply(http, Request("PATCH", "")).status, 400);
}

TEST_F(IdempotencyHttpTest, TwoKeyHeadersAreA400) {
  IdempotencyHttp http = Make();
  HttpRequestView request = Request("POST", R"("k1")");
  request.headers.emplace_back("idempotency-key", R"("k2")");
  HttpReply reply = ExpectReply(http, request);
  EXPECT_EQ(reply.status, 400);
  std::map<std::string, std::string> problem = ExpectProblem(reply);
  EXPECT_EQ(problem["type"], absl::StrCat(kProblemType, "idempotency-key-invalid"));
  EXPECT_EQ(problem["title"], "Idempotency-Key is invalid");
  EXPECT_EQ(problem["detail"], "Idempotency-Key must appear once in a request, got 2 header lines");
  EXPECT_THAT(reply.headers, ::testing::Not(::testing::Contains(Pair("Expires", ::testing::_))));
}

TEST_F(IdempotencyHttpTest, AListOfKeysInOneHeaderIsA400) {
  IdempotencyHttp http = Make();
  HttpReply reply = ExpectReply(http, Request("POST", R"("k1", "k2")"));
  EXPECT_EQ(reply.status, 400);
  EXPECT_THAT(ExpectProblem(reply)["detail"], HasSubstr("exactly one key"));
}

TEST_F(IdempotencyHttpTest, AMalformedKeyIsA400SayingWhatWasExpected) {
  IdempotencyHttp http = Make();
  for (std::string_view value : {"k1", "\"unterminated", "\"a\";v=2", "\"\""}) {
    HttpReply reply = ExpectReply(http, Request("POST", value));
    EXPECT_EQ(reply.status, 400) << value;
    std::map<std::string, std::string> problem = ExpectProblem(reply);
    EXPECT_EQ(problem["type"], absl::StrCat(kProblemType, "idempotency-key-invalid")) << value;
    EXPECT_EQ(problem["detail"], ParseIdempotencyKey(value).status().message()) << value;
  }
  EXPECT_EQ(tracker_->Stats().claims, 0u);
}

TEST_F(IdempotencyHttpTest, AnOverLongKeyIsA400) {
  IdempotencyHttp http = Make();
  const std::string at_limit = absl::StrCat("\"", std::string(255, 'a'), "\"");
  const std::string over_limit = absl::StrCat("\"", std::string(256, 'a'), "\"");
  Proceed proceed = ExpectProceed(http, Request("POST", at_limit));
  ASSERT_TRUE(proceed.claim.has_value());
  ASSERT_TRUE(proceed.claim->Abort().ok());
  HttpReply reply = ExpectReply(http, Request("POST", over_limit));
  EXPECT_EQ(reply.status, 400);
  EXPECT_EQ(ExpectProblem(reply)["detail"],
            "Idempotency-Key is 256 bytes long, over the limit of 255 bytes");
}

TEST_F(IdempotencyHttpTest, ABareTokenIsAcceptedOnlyWhenConfigured) {
  IdempotencyHttp strict = Make();
  EXPECT_EQ(ExpectReply(strict, Request("POST", "k1")).status, 400);
  IdempotencyHttp lenient = Make({.key = {.accept_bare_token = true}});
  Proceed bare = ExpectProceed(lenient, Request("POST", "k1"));
  ASSERT_TRUE(bare.claim.has_value());
  // The bare token and its quoted form are the same key.
  ASSERT_TRUE(bare.claim->Complete({.status = 201}).ok());
  EXPECT_EQ(ExpectReply(lenient, Request("POST", R"("k1")")).status, 201);
}

TEST_F(IdempotencyHttpTest, ARetryWhileTheFirstRunsIsA409WithRetryAfterAndExpires) {
  IdempotencyHttp http = Make();
  Proceed first = ExpectProceed(http, Request("POST", R"("k1")"));
  Advance(absl::Seconds(10));
  HttpReply reply = ExpectReply(http, Request("POST", R"("k1")"));
  EXPECT_EQ(reply.status, 409);
  // The lease (30 s) runs out in 20 s; the entry expires 10 min after the claim.
  EXPECT_THAT(reply.headers, ElementsAre(Pair("Content-Type", "application/problem+json"),
                                         Pair("Content-Language", "en"), Pair("Retry-After", "20"),
                                         Pair("Expires", "Sun, 06 Nov 1994 08:59:37 GMT")));
  EXPECT_EQ(
      *reply.body,
      R"({"type":"https://keel.invalid/problems/request-in-flight",)"
      R"("title":"A request is outstanding for this Idempotency-Key","status":409,)"
      R"("detail":"The first request with this key is still being processed; retry in 20 s."})");
  ExpectProblem(reply);
  ASSERT_TRUE(first.claim->Abort().ok());
}

TEST_F(IdempotencyHttpTest, RetryAfterRoundsUpToWholeSecondsAndIsAtLeastOne) {
  IdempotencyHttp http = Make();
  Proceed first = ExpectProceed(http, Request("POST", R"("k1")"));
  Advance(absl::Milliseconds(10'500));
  EXPECT_THAT(ExpectReply(http, Request("POST", R"("k1")")).headers,
              ::testing::Contains(Pair("Retry-After", "20")));
  Advance(absl::Milliseconds(19'400));  // 100 ms of lease left
  EXPECT_THAT(ExpectReply(http, Request("POST", R"("k1")")).headers,
              ::testing::Contains(Pair("Retry-After", "1")));
  ASSERT_TRUE(first.claim->Abort().ok());
}

TEST_F(IdempotencyHttpTest, AnotherPayloadWithTheSameKeyIsA422WithExpires) {
  IdempotencyHttp http = Make();
  Proceed first = ExpectProceed(http, Request("POST", R"("k1")", R"({"qty":1})"));
  HttpReply reply = ExpectReply(http, Request("POST", R"("k1")", R"({"qty":2})"));
  EXPECT_EQ(reply.status, 422);
  EXPECT_THAT(reply.headers, ElementsAre(Pair("Content-Type", "application/problem+json"),
                                         Pair("Content-Language", "en"),
                                         Pair("Expires", "Sun, 06 Nov 1994 08:59:37 GMT")));
  EXPECT_EQ(*reply.body,
            R"({"type":"https://keel.invalid/problems/idempotency-key-reused",)"
            R"("title":"Idempotency-Key is already used","status":422,)"
            R"("detail":"This Idempotency-Key was used for a request with another payload; a key )"
            R"(must not be reused across different payloads of this operation."})");
  ExpectProblem(reply);
  // Checked before the state: still a 422 once the first request completed.
  ASSERT_TRUE(http.Finish(first, {.status = 201}).stored.ok());
  EXPECT_EQ(ExpectReply(http, Request("POST", R"("k1")", R"({"qty":2})")).status, 422);
}

TEST_F(IdempotencyHttpTest, ACompletedRequestIsReplayedWithItsHeadersAndIdempotentReplayed) {
  IdempotencyHttp http = Make();
  Proceed first = ExpectProceed(http, Request("POST", R"("k1")"));
  Advance(absl::Seconds(5));
  IdempotencyHttp::Finished finished = http.Finish(
      first, {.status = 201,
              .headers = {{"Location", "/orders/7"}, {"Content-Type", "application/json"}},
              .body = R"({"id":7})"});
  ASSERT_TRUE(finished.stored.ok()) << finished.stored;
  EXPECT_FALSE(first.claim.has_value());
  // Retention restarts when the response is stored: 08:49:37 + 5 s + 10 min.
  EXPECT_EQ(finished.reply.status, 201);
  EXPECT_THAT(finished.reply.headers,
              ElementsAre(Pair("Location", "/orders/7"), Pair("Content-Type", "application/json"),
                          Pair("Expires", "Sun, 06 Nov 1994 08:59:42 GMT")));
  EXPECT_EQ(*finished.reply.body, R"({"id":7})");

  Advance(absl::Minutes(1));
  HttpReply replay = ExpectReply(http, Request("POST", R"("k1")"));
  EXPECT_EQ(replay.status, 201);
  EXPECT_THAT(replay.headers,
              ElementsAre(Pair("Location", "/orders/7"), Pair("Content-Type", "application/json"),
                          Pair("Idempotent-Replayed", "true"),
                          Pair("Expires", "Sun, 06 Nov 1994 08:59:42 GMT")));
  EXPECT_EQ(*replay.body, R"({"id":7})");
  // Replays share the stored body.
  HttpReply again = ExpectReply(http, Request("POST", R"("k1")"));
  EXPECT_EQ(again.body.get(), replay.body.get());
  EXPECT_EQ(tracker_->Stats().replays, 2u);
}

TEST_F(IdempotencyHttpTest, KeelsExpiresAndIdempotentReplayedReplaceTheHandlers) {
  IdempotencyHttp http = Make();
  Proceed first = ExpectProceed(http, Request("POST", R"("k1")"));
  IdempotencyHttp::Finished finished = http.Finish(
      first, {.status = 200,
              .headers = {{"expires", "0"}, {"X-Request", "a"}, {"IDEMPOTENT-REPLAYED", "false"}},
              .body = "ok"});
  EXPECT_THAT(
      finished.reply.headers,
      ElementsAre(Pair("X-Request", "a"), Pair("Expires", "Sun, 06 Nov 1994 08:59:37 GMT")));
  EXPECT_THAT(ExpectReply(http, Request("POST", R"("k1")")).headers,
              ElementsAre(Pair("X-Request", "a"), Pair("Idempotent-Replayed", "true"),
                          Pair("Expires", "Sun, 06 Nov 1994 08:59:37 GMT")));
}

TEST_F(IdempotencyHttpTest, AResponseStoredByTheClaimDirectlyIsReplayedWithOneExpires) {
  IdempotencyHttp http = Make();
  Proceed first = ExpectProceed(http, Request("POST", R"("k1")"));
  ASSERT_TRUE(first.claim->Complete({.status = 202, .headers = {{"Expires", "0"}}}).ok());
  EXPECT_THAT(ExpectReply(http, Request("POST", R"("k1")")).headers,
              ElementsAre(Pair("Idempotent-Replayed", "true"),
                          Pair("Expires", "Sun, 06 Nov 1994 08:59:37 GMT")));
}

TEST_F(IdempotencyHttpTest, ExpiresIsAnImfFixdateWithATwoDigitDayOnTheWallClock) {
  IdempotencyHttp http = Make();
  Proceed first = ExpectProceed(http, Request("POST", R"("k1")"));
  // Wall time 08:49:37.9 truncates to :37; the entry expires at 08:59:37.9, shown as :37.
  Advance(absl::Milliseconds(900));
  EXPECT_THAT(ExpectReply(http, Request("POST", R"("k1")")).headers,
              ::testing::Contains(Pair("Expires", "Sun, 06 Nov 1994 08:59:37 GMT")));
  // Across midnight and into the next month: a tracker whose entries live 25 days 16 hours.
  IdempotencyOptions long_lived = TrackerOptions();
  long_lived.retention = absl::Hours(24 * 25 + 16);
  std::unique_ptr<IdempotencyTracker> tracker = MakeTracker(long_lived);
  IdempotencyHttp long_http = Make({}, tracker.get());
  Proceed second = ExpectProceed(long_http, Request("POST", R"("k2")"));
  EXPECT_THAT(ExpectReply(long_http, Request("POST", R"("k2")")).headers,
              ::testing::Contains(Pair("Expires", "Fri, 02 Dec 1994 00:49:37 GMT")));
  ASSERT_TRUE(first.claim->Abort().ok());
  ASSERT_TRUE(second.claim->Abort().ok());
}

TEST_F(IdempotencyHttpTest, AHandlerThatThrowsMakesTheRetryA500Halted) {
  IdempotencyHttp http = Make();
  try {
    IdempotencyHttp::Decision decision = http.Decide(Request("POST", R"("k1")"));
    EXPECT_TRUE(std::holds_alternative<Proceed>(decision));
    throw std::runtime_error("the handler failed");  // the claim is destroyed while unwinding
  } catch (const std::runtime_error&) {
  }
  Advance(absl::Seconds(2));  // the entry expires 10 min after it halted, not after the retry
  HttpReply reply = ExpectReply(http, Request("POST", R"("k1")"));
  EXPECT_EQ(reply.status, 500);
  EXPECT_THAT(reply.headers, ElementsAre(Pair("Content-Type", "application/problem+json"),
                                         Pair("Content-Language", "en"),
                                         Pair("Expires", "Sun, 06 Nov 1994 08:59:37 GMT")));
  std::map<std::string, std::string> problem = ExpectProblem(reply);
  EXPECT_EQ(problem["type"], absl::StrCat(kProblemType, "request-halted"));
  EXPECT_EQ(problem["title"], "The request with this Idempotency-Key failed");
  EXPECT_THAT(problem["detail"], HasSubstr("the handler threw"));
}

TEST_F(IdempotencyHttpTest, ALapsedLeaseMakesTheRetryA500AndTheLateFinishIsSentUnstored) {
  IdempotencyHttp http = Make();
  Proceed first = ExpectProceed(http, Request("POST", R"("k1")"));
  Advance(absl::Seconds(31));
  HttpReply retry = ExpectReply(http, Request("POST", R"("k1")"));
  EXPECT_EQ(retry.status, 500);
  EXPECT_EQ(ExpectProblem(retry)["type"], absl::StrCat(kProblemType, "request-halted"));
  IdempotencyHttp::Finished late = http.Finish(first, {.status = 201, .body = "late"});
  EXPECT_TRUE(absl::IsFailedPrecondition(late.stored)) << late.stored;
  EXPECT_EQ(late.reply.status, 201);
  EXPECT_EQ(*late.reply.body, "late");
  EXPECT_TRUE(late.reply.headers.empty());  // no Expires: the entry is not this response's
}

TEST_F(IdempotencyHttpTest, HaltedKeysRunAgainWhenTheTrackerReleasesThem) {
  IdempotencyOptions releasing = TrackerOptions();
  releasing.on_halted = HaltedEntries::kReleaseKey;
  std::unique_ptr<IdempotencyTracker> tracker = MakeTracker(releasing);
  IdempotencyHttp http = Make({}, tracker.get());
  { Proceed dropped = ExpectProceed(http, Request("POST", R"("k1")")); }
  Proceed again = ExpectProceed(http, Request("POST", R"("k1")"));
  ASSERT_TRUE(again.claim.has_value());
  ASSERT_TRUE(http.Finish(again, {.status = 201}).stored.ok());
}

TEST_F(IdempotencyHttpTest, AbortLetsTheRetryRunAgainAndFinishAfterwardsIsNotStored) {
  IdempotencyHttp http = Make();
  Proceed first = ExpectProceed(http, Request("POST", R"("k1")"));
  ASSERT_TRUE(first.claim->Abort().ok());
  IdempotencyHttp::Finished after_abort = http.Finish(first, {.status = 503, .body = "busy"});
  EXPECT_TRUE(absl::IsFailedPrecondition(after_abort.stored));
  EXPECT_EQ(after_abort.reply.status, 503);
  Proceed retry = ExpectProceed(http, Request("POST", R"("k1")"));
  ASSERT_TRUE(http.Finish(retry, {.status = 201}).stored.ok());
  IdempotencyHttp::Finished twice = http.Finish(retry, {.status = 201});
  EXPECT_TRUE(absl::IsFailedPrecondition(twice.stored));
}

TEST_F(IdempotencyHttpTest, TheSameKeyFromAnotherIdentityIsAnIndependentClaim) {
  IdempotencyHttp http = Make();
  Proceed alice = ExpectProceed(http, Request("POST", R"("k1")", "{}", "alice"));
  ASSERT_TRUE(http.Finish(alice, {.status = 201, .body = "alice's order"}).stored.ok());
  Proceed bob = ExpectProceed(http, Request("POST", R"("k1")", "{}", "bob"));
  ASSERT_TRUE(bob.claim.has_value());
  ASSERT_TRUE(http.Finish(bob, {.status = 201, .body = "bob's order"}).stored.ok());
  EXPECT_EQ(*ExpectReply(http, Request("POST", R"("k1")", "{}", "alice")).body, "alice's order");
  EXPECT_EQ(*ExpectReply(http, Request("POST", R"("k1")", "{}", "bob")).body, "bob's order");
  // Anonymous callers have a scope of their own.
  Proceed anonymous = ExpectProceed(http, Request("POST", R"("k1")", "{}", ""));
  ASSERT_TRUE(anonymous.claim.has_value());
  ASSERT_TRUE(anonymous.claim->Abort().ok());
}

TEST_F(IdempotencyHttpTest, TheSameKeyOnAnotherRouteOrMethodIsAnIndependentClaim) {
  IdempotencyHttp http = Make();
  Proceed orders = ExpectProceed(http, Request("POST", R"("k1")", "{}", "alice", "/orders"));
  Proceed refunds = ExpectProceed(http, Request("POST", R"("k1")", "{}", "alice", "/refunds"));
  Proceed patch = ExpectProceed(http, Request("PATCH", R"("k1")", "{}", "alice", "/orders"));
  ASSERT_TRUE(orders.claim && refunds.claim && patch.claim);
  EXPECT_NE(orders.claim->key(), refunds.claim->key());
  EXPECT_NE(orders.claim->key(), patch.claim->key());
  ASSERT_TRUE(orders.claim->Abort().ok());
  ASSERT_TRUE(refunds.claim->Abort().ok());
  ASSERT_TRUE(patch.claim->Abort().ok());
}

TEST_F(IdempotencyHttpTest, AnIdentityAndRouteSplitCannotBeForged) {
  IdempotencyHttp http = Make();
  // Joined without lengths, both would read "ab/c" (or "ab|/c" with any separator the
  // identity may contain).
  Proceed first = ExpectProceed(http, Request("POST", R"("k1")", "{}", "ab", "/c"));
  Proceed second = ExpectProceed(http, Request("POST", R"("k1")", "{}", "a", "b/c"));
  Proceed third = ExpectProceed(http, Request("POST", R"("k1")", "{}", "ab|/c", ""));
  ASSERT_TRUE(first.claim && second.claim && third.claim);
  EXPECT_NE(first.claim->key(), second.claim->key());
  EXPECT_NE(first.claim->key(), third.claim->key());
  EXPECT_NE(IdempotencyHttp::ScopedKey("a", "POST", "b", "k"),
            IdempotencyHttp::ScopedKey("aPOST", "", "b", "k"));
  ASSERT_TRUE(first.claim->Abort().ok());
  ASSERT_TRUE(second.claim->Abort().ok());
  ASSERT_TRUE(third.claim->Abort().ok());
}

TEST_F(IdempotencyHttpTest, TheFingerprintCoversMethodRouteAndBodyUnambiguously) {
  const std::string fingerprint = IdempotencyHttp::Fingerprint("POST", "/a", "b");
  EXPECT_EQ(fingerprint.size(), 32u);
  EXPECT_EQ(fingerprint, IdempotencyHttp::Fingerprint("POST", "/a", "b"));
  EXPECT_NE(fingerprint, IdempotencyHttp::Fingerprint("POST", "/ab", ""));
  EXPECT_NE(fingerprint, IdempotencyHttp::Fingerprint("POST/a", "", "b"));
  EXPECT_NE(fingerprint, IdempotencyHttp::Fingerprint("PATCH", "/a", "b"));
}

TEST_F(IdempotencyHttpTest, AGetWithoutAKeyProceedsUntrackedAndPassesThrough) {
  IdempotencyHttp http = Make();
  Proceed get = ExpectProceed(http, Request("GET", ""));
  EXPECT_FALSE(get.claim.has_value());
  EXPECT_TRUE(get.key.empty());
  IdempotencyHttp::Finished finished =
      http.Finish(get, {.status = 200, .headers = {{"Expires", "0"}}, .body = "list"});
  EXPECT_TRUE(finished.stored.ok());
  EXPECT_EQ(finished.reply.status, 200);
  EXPECT_THAT(finished.reply.headers, ElementsAre(Pair("Expires", "0")));  // untouched
  EXPECT_EQ(*finished.reply.body, "list");
  EXPECT_EQ(tracker_->Stats().claims, 0u);
}

TEST_F(IdempotencyHttpTest, AKeyOnAMethodThatTakesNoneIsIgnoredEvenMalformed) {
  IdempotencyHttp http = Make();
  EXPECT_FALSE(ExpectProceed(http, Request("GET", R"("k1")")).claim.has_value());
  EXPECT_FALSE(ExpectProceed(http, Request("DELETE", "not a key")).claim.has_value());
  // Method names are case-sensitive: "post" is not POST.
  EXPECT_FALSE(ExpectProceed(http, Request("post", "")).claim.has_value());
  EXPECT_EQ(tracker_->Stats().claims, 0u);
}

TEST_F(IdempotencyHttpTest, AMethodThatAcceptsAKeyIsTrackedOnlyWithOne) {
  IdempotencyHttp http = Make({.methods_accepting_key = {"PUT"}});
  EXPECT_FALSE(ExpectProceed(http, Request("PUT", "")).claim.has_value());
  Proceed with_key = ExpectProceed(http, Request("PUT", R"("k1")"));
  ASSERT_TRUE(with_key.claim.has_value());
  EXPECT_EQ(ExpectReply(http, Request("PUT", R"("k1")")).status, 409);
  EXPECT_EQ(ExpectReply(http, Request("PUT", "not a key")).status, 400);
  ASSERT_TRUE(with_key.claim->Abort().ok());
}

TEST_F(IdempotencyHttpTest, ACanonicaliserMakesEquivalentBodiesTheSameRequest) {
  auto without_spaces = [](std::string_view body) -> absl::StatusOr<std::string> {
    std::string out;
    for (char c : body) {
      if (c != ' ' && c != '\n') out.push_back(c);
    }
    return out;
  };
  IdempotencyHttp canonical = Make({.canonicalise_body = without_spaces});
  Proceed first = ExpectProceed(canonical, Request("POST", R"("k1")", R"({"qty": 1})"));
  ASSERT_TRUE(canonical.Finish(first, {.status = 201, .body = "made"}).stored.ok());
  HttpReply replay = ExpectReply(canonical, Request("POST", R"("k1")", "{\n  \"qty\":1\n}"));
  EXPECT_EQ(replay.status, 201);
  EXPECT_EQ(*replay.body, "made");
  EXPECT_EQ(ExpectReply(canonical, Request("POST", R"("k1")", R"({"qty": 2})")).status, 422);

  // Without it, the same two bodies are different payloads.
  IdempotencyHttp raw = Make();
  Proceed second = ExpectProceed(raw, Request("POST", R"("k2")", R"({"qty": 1})"));
  ASSERT_TRUE(raw.Finish(second, {.status = 201}).stored.ok());
  EXPECT_EQ(ExpectReply(raw, Request("POST", R"("k2")", "{\n  \"qty\":1\n}")).status, 422);
}

TEST_F(IdempotencyHttpTest, ACanonicaliserThatRefusesTheBodyIsA400AndOneThatThrowsA500) {
  IdempotencyHttp refusing = Make({.canonicalise_body = [](std::string_view) {
    return absl::StatusOr<std::string>(absl::InvalidArgumentError("the body is not JSON"));
  }});
  HttpReply refused = ExpectReply(refusing, Request("POST", R"("k1")"));
  EXPECT_EQ(refused.status, 400);
  std::map<std::string, std::string> problem = ExpectProblem(refused);
  EXPECT_EQ(problem["type"], absl::StrCat(kProblemType, "request-body-invalid"));
  EXPECT_EQ(problem["detail"], "the body is not JSON");

  IdempotencyHttp throwing =
      Make({.canonicalise_body = [](std::string_view) -> absl::StatusOr<std::string> {
        throw std::runtime_error("parser crashed");
      }});
  HttpReply failed = ExpectReply(throwing, Request("POST", R"("k1")"));
  EXPECT_EQ(failed.status, 500);
  EXPECT_THAT(ExpectProblem(failed)["detail"], HasSubstr("parser crashed"));
  EXPECT_EQ(tracker_->Stats().claims, 0u);
}

TEST_F(IdempotencyHttpTest, AFullTrackerIsA503WithRetryAfter) {
  IdempotencyOptions small = TrackerOptions();
  small.max_entries = 1;
  std::unique_ptr<IdempotencyTracker> tracker = MakeTracker(small);
  IdempotencyHttp http = Make({.retry_after_when_full = absl::Milliseconds(2500)}, tracker.get());
  Proceed first = ExpectProceed(http, Request("POST", R"("k1")"));
  HttpReply full = ExpectReply(http, Request("POST", R"("k2")"));
  EXPECT_EQ(full.status, 503);
  EXPECT_THAT(full.headers, ElementsAre(Pair("Content-Type", "application/problem+json"),
                                        Pair("Content-Language", "en"), Pair("Retry-After", "3")));
  EXPECT_EQ(ExpectProblem(full)["type"], absl::StrCat(kProblemType, "idempotency-store-full"));
  // Retry-After is at least 1 second, whatever the option says.
  IdempotencyHttp eager = Make({.retry_after_when_full = absl::ZeroDuration()}, tracker.get());
  EXPECT_THAT(ExpectReply(eager, Request("POST", R"("k3")")).headers,
              ::testing::Contains(Pair("Retry-After", "1")));
  ASSERT_TRUE(first.claim->Abort().ok());
}

TEST_F(IdempotencyHttpTest, ProblemBodiesAreValidJsonWhateverTheHaltReason) {
  IdempotencyHttp http = Make({.problem_type_base = "https://example.com/\"docs\"/"});
  Proceed first = ExpectProceed(http, Request("POST", R"("k1")"));
  // Quotes, a backslash, control bytes, DEL, valid UTF-8 (é, U+20AC, U+1F600), and ill-formed
  // UTF-8 (a stray continuation byte, an overlong '/', a surrogate, a truncated sequence).
  const std::string reason =
      "say \"hi\" \\ line\nfeed\ttab\x01\x1f\x7f caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 "
      "\x80 \xc0\xaf \xed\xa0\x80 \xe2\x82";
  ASSERT_TRUE(first.claim->Halt(reason).ok());
  HttpReply reply = ExpectReply(http, Request("POST", R"("k1")"));
  EXPECT_EQ(reply.status, 500);
  std::map<std::string, std::string> problem = ExpectProblem(reply);
  EXPECT_EQ(problem["type"], "https://example.com/\"docs\"/request-halted");
  const std::string replacement = "\xef\xbf\xbd";  // U+FFFD, one per ill-formed byte
  EXPECT_EQ(problem["detail"],
            absl::StrCat("The first request with this key did not complete and its outcome is "
                         "unknown: say \"hi\" \\ line\nfeed\ttab\x01\x1f\x7f caf\xc3\xa9 "
                         "\xe2\x82\xac \xf0\x9f\x98\x80 ",
                         replacement, " ", replacement, replacement, " ", replacement, replacement,
                         replacement, " ", replacement, replacement,
                         ". This key gives this answer until it expires."));
  EXPECT_THAT(*reply.body, HasSubstr(R"(\u0001\u001f\u007f)"));
}

TEST_F(IdempotencyHttpTest, CreateRefusesOptionsThatCannotWork) {
  auto create = [&](IdempotencyHttpOptions options, IdempotencyTracker* tracker = nullptr) {
    return IdempotencyHttp::Create(*runtime_, tracker ? *tracker : *tracker_, options).status();
  };
  EXPECT_TRUE(create({}).ok());
  EXPECT_THAT(create({.methods_requiring_key = {"POST", ""}}).message(), HasSubstr("empty"));
  EXPECT_THAT(create({.methods_accepting_key = {"POST"}}).message(), HasSubstr("both"));
  EXPECT_TRUE(absl::IsInvalidArgument(create({.key = {.max_length = 0}})));
  // 512 bytes of tracker key hold the 65 bytes of scope and keys of up to 447 bytes.
  EXPECT_TRUE(create({.key = {.max_length = 447}}).ok());
  EXPECT_THAT(create({.key = {.max_length = 448}}).message(), HasSubstr("max_key_bytes (512)"));
  EXPECT_TRUE(absl::IsInvalidArgument(create({.retry_after_when_full = -absl::Seconds(1)})));
  IdempotencyOptions narrow = TrackerOptions();
  narrow.max_fingerprint_bytes = 31;
  std::unique_ptr<IdempotencyTracker> tracker = MakeTracker(narrow);
  EXPECT_THAT(create({}, tracker.get()).message(), HasSubstr("max_fingerprint_bytes"));
}

}  // namespace
}  // namespace keel
