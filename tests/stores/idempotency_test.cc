// IdempotencyTracker on the in-memory sharded store, with a manual clock: every transition of
// the entry state machine, every expiry, both policies, and exactly-once under contention.
#include "keel/idempotency.h"

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "keel/clock.h"
#include "keel/runtime.h"

namespace keel {
namespace {

using ::testing::HasSubstr;

class IdempotencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto runtime = Runtime::Create({.name = "idem-test", .clock = &clock_});
    ASSERT_TRUE(runtime.ok());
    runtime_ = *std::move(runtime);
  }

  std::unique_ptr<IdempotencyTracker> Make(IdempotencyOptions options = {}) {
    auto tracker = IdempotencyTracker::Create(*runtime_, options);
    EXPECT_TRUE(tracker.ok()) << tracker.status();
    return tracker.ok() ? *std::move(tracker) : nullptr;
  }

  static IdempotencyOptions Short() {
    IdempotencyOptions o;
    o.lease = absl::Seconds(30);
    o.retention = absl::Minutes(10);
    o.sweep_interval = absl::Seconds(1);
    return o;
  }

  // Tracks and expects an outcome of type R.
  template <class R>
  R Expect(IdempotencyTracker& tracker, std::string_view key, std::string_view fp) {
    absl::StatusOr<TrackResult> result = tracker.Track(key, fp);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) throw std::runtime_error("Track failed");
    EXPECT_TRUE(std::holds_alternative<R>(*result)) << "got variant index " << result->index();
    if (!std::holds_alternative<R>(*result)) throw std::runtime_error("unexpected outcome");
    return std::get<R>(std::move(*result));
  }

  void Advance(absl::Duration d) {
    clock_.Advance(d);
    ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  }

  ManualClock clock_;
  std::unique_ptr<Runtime> runtime_;
};

TEST_F(IdempotencyTest, TheFirstTrackClaimsAndARetryIsInFlight) {
  auto tracker = Make(Short());
  Claim claim = Expect<Claim>(*tracker, "k1", "fp");
  EXPECT_EQ(claim.lease_deadline(), AddDuration(clock_.Now(), absl::Seconds(30)));
  EXPECT_EQ(claim.expires(), AddDuration(clock_.Now(), absl::Minutes(10)));
  InFlight in_flight = Expect<InFlight>(*tracker, "k1", "fp");
  EXPECT_EQ(in_flight.owner, claim.token());
  EXPECT_EQ(in_flight.lease_deadline, claim.lease_deadline());
  ASSERT_TRUE(claim.Abort().ok());
}

TEST_F(IdempotencyTest, AnotherPayloadIsAMismatchWhateverTheState) {
  auto tracker = Make(Short());
  Claim claim = Expect<Claim>(*tracker, "k", "fp-a");
  EXPECT_EQ(Expect<Mismatch>(*tracker, "k", "fp-b").fingerprint, "fp-a");
  ASSERT_TRUE(claim.Complete({.status = 201, .body = "made"}).ok());
  EXPECT_EQ(Expect<Mismatch>(*tracker, "k", "fp-b").fingerprint, "fp-a");
  EXPECT_EQ(tracker->Stats().mismatches, 2u);
}

TEST_F(IdempotencyTest, ACompletedResponseIsReplayedSharedNotCopied) {
  auto tracker = Make(Short());
  Claim claim = Expect<Claim>(*tracker, "k", "fp");
  Advance(absl::Seconds(5));
  ASSERT_TRUE(
      claim.Complete({.status = 201, .headers = {{"Location", "/orders/7"}}, .body = "{}"}).ok());
  Replay first = Expect<Replay>(*tracker, "k", "fp");
  Replay second = Expect<Replay>(*tracker, "k", "fp");
  EXPECT_EQ(first.response->status, 201);
  EXPECT_EQ(first.response->headers[0].second, "/orders/7");
  EXPECT_EQ(first.response.get(), second.response.get());
  // Retention restarts when the response is stored.
  EXPECT_EQ(first.expires, AddDuration(clock_.Now(), absl::Minutes(10)));
  EXPECT_EQ(tracker->Stats().replays, 2u);
  EXPECT_EQ(tracker->Stats().completed, 1u);
}

TEST_F(IdempotencyTest, AbortReleasesTheKey) {
  auto tracker = Make(Short());
  Claim claim = Expect<Claim>(*tracker, "k", "fp");
  ASSERT_TRUE(claim.Abort().ok());
  Claim again = Expect<Claim>(*tracker, "k", "fp");
  EXPECT_NE(again.token(), claim.token());
  ASSERT_TRUE(again.Abort().ok());
}

TEST_F(IdempotencyTest, ADroppedClaimHaltsItsEntrySayingWhy) {
  auto tracker = Make(Short());
  { Claim dropped = Expect<Claim>(*tracker, "early", "fp"); }
  EXPECT_THAT(Expect<Halted>(*tracker, "early", "fp").reason, HasSubstr("without Complete"));
  try {
    Claim claim = Expect<Claim>(*tracker, "threw", "fp");
    throw std::runtime_error("handler failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_THAT(Expect<Halted>(*tracker, "threw", "fp").reason, HasSubstr("exception unwound"));
  EXPECT_EQ(tracker->Stats().halts, 2u);
  EXPECT_EQ(tracker->Stats().halted, 2u);
}

TEST_F(IdempotencyTest, HaltedEntriesReplayTheFailureOrReleaseTheKeyByPolicy) {
  auto replaying = Make(Short());
  { Claim dropped = Expect<Claim>(*replaying, "k", "fp"); }
  Expect<Halted>(*replaying, "k", "fp");
  Expect<Halted>(*replaying, "k", "fp");

  IdempotencyOptions release = Short();
  release.on_halted = HaltedEntries::kReleaseKey;
  auto releasing = Make(release);
  { Claim dropped = Expect<Claim>(*releasing, "k", "fp"); }
  EXPECT_EQ(Expect<Mismatch>(*releasing, "k", "other").fingerprint, "fp");  // payload first
  Claim rerun = Expect<Claim>(*releasing, "k", "fp");
  ASSERT_TRUE(rerun.Complete({.status = 200}).ok());
  Expect<Replay>(*releasing, "k", "fp");
}

TEST_F(IdempotencyTest, ALapsedLeaseHaltsTheEntryAndTheLateOwnerCannotComplete) {
  auto tracker = Make(Short());
  Claim claim = Expect<Claim>(*tracker, "k", "fp");
  Advance(absl::Seconds(29));
  Expect<InFlight>(*tracker, "k", "fp");
  clock_.Advance(absl::Seconds(1));  // no sweep yet: the lookup sees the lapse itself
  EXPECT_THAT(Expect<Halted>(*tracker, "k", "fp").reason, HasSubstr("lease ran out"));
  absl::Status late = claim.Complete({.status = 200});
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(late.message(), HasSubstr("lease ran out"));
  EXPECT_EQ(tracker->SweepNow(), 0u);  // halted in place, not removed
  EXPECT_EQ(tracker->Stats().halted, 1u);
  EXPECT_EQ(tracker->Stats().processing, 0u);
}

TEST_F(IdempotencyTest, ALapsedLeaseUnderReleaseKeyFreesTheKeyBeforeAndAfterASweep) {
  // Found by the differential fuzzer: the answer must not depend on whether a sweep ran.
  IdempotencyOptions options = Short();
  options.on_halted = HaltedEntries::kReleaseKey;
  auto tracker = Make(options);
  Claim first = Expect<Claim>(*tracker, "a", "fp");
  Claim second = Expect<Claim>(*tracker, "b", "fp");
  clock_.Advance(absl::Seconds(30));  // both leases lapse; no sweep has run for "a"
  Claim again_a = Expect<Claim>(*tracker, "a", "fp");
  tracker->SweepNow();  // "b" is halted by the sweep
  Claim again_b = Expect<Claim>(*tracker, "b", "fp");
  ASSERT_TRUE(again_a.Abort().ok());
  ASSERT_TRUE(again_b.Abort().ok());
}

TEST_F(IdempotencyTest, ALapsedLeaseFreesTheKeyUnderReclaimAndTheStaleOwnerChangesNothing) {
  IdempotencyOptions options = Short();
  options.on_lease_expiry = LeaseExpiry::kReclaim;
  auto tracker = Make(options);
  Claim stale = Expect<Claim>(*tracker, "k", "fp");
  clock_.Advance(absl::Seconds(30));
  Claim fresh = Expect<Claim>(*tracker, "k", "fp");
  absl::Status late = stale.Complete({.status = 500, .body = "stale"});
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(late.message(), HasSubstr("another claim"));
  ASSERT_TRUE(fresh.Complete({.status = 200, .body = "fresh"}).ok());
  EXPECT_EQ(Expect<Replay>(*tracker, "k", "fp").response->body, "fresh");
}

TEST_F(IdempotencyTest, ASettledClaimCannotBeSettledAgain) {
  auto tracker = Make(Short());
  Claim claim = Expect<Claim>(*tracker, "k", "fp");
  ASSERT_TRUE(claim.Complete({.status = 200, .body = "one"}).ok());
  EXPECT_EQ(claim.Complete({.status = 200, .body = "two"}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(claim.Abort().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Expect<Replay>(*tracker, "k", "fp").response->body, "one");
}

TEST_F(IdempotencyTest, ExpiredEntriesAreFreeOnLookupAndSweptByTheControlThread) {
  auto tracker = Make(Short());
  for (int i = 0; i < 100; ++i) {
    Claim claim = Expect<Claim>(*tracker, absl::StrCat("k", i), "fp");
    ASSERT_TRUE(claim.Complete({.status = 200}).ok());
  }
  Advance(absl::Minutes(10) - absl::Milliseconds(1));
  Expect<Replay>(*tracker, "k0", "fp");
  EXPECT_EQ(tracker->Stats().completed, 100u);
  clock_.Advance(absl::Milliseconds(1));
  // Expired: a lookup claims it even before any sweep.
  Claim reclaimed = Expect<Claim>(*tracker, "k0", "fp");
  ASSERT_TRUE(reclaimed.Abort().ok());
  Advance(absl::Seconds(1));  // the control thread's sweep runs
  IdempotencyStats stats = tracker->Stats();
  EXPECT_EQ(stats.completed, 0u);
  EXPECT_EQ(stats.expirations, 99u);  // k0 was replaced by the claim, then released
}

TEST_F(IdempotencyTest, AFullTableRefusesNewKeysWithoutEvictingAny) {
  IdempotencyOptions options = Short();
  options.max_entries = 3;
  auto tracker = Make(options);
  std::vector<Claim> claims;
  for (int i = 0; i < 3; ++i) claims.push_back(Expect<Claim>(*tracker, absl::StrCat("k", i), "f"));
  absl::StatusOr<TrackResult> full = tracker->Track("k3", "f");
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status().message(), HasSubstr("max_entries"));
  Expect<InFlight>(*tracker, "k0", "f");  // still there
  ASSERT_TRUE(claims[0].Abort().ok());
  Claim fits = Expect<Claim>(*tracker, "k3", "f");
  EXPECT_EQ(tracker->Stats().refused_full, 1u);
  for (int i = 1; i < 3; ++i) ASSERT_TRUE(claims[i].Abort().ok());
  ASSERT_TRUE(fits.Abort().ok());
}

TEST_F(IdempotencyTest, AFullTableOfExpiredEntriesMakesRoomBeforeTheNextSweep) {
  IdempotencyOptions options = Short();
  options.max_entries = 2;
  options.sweep_interval = absl::Hours(1);  // the periodic sweep does not run in this test
  auto tracker = Make(options);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(Expect<Claim>(*tracker, absl::StrCat("k", i), "f").Complete({}).ok());
  }
  Advance(options.retention);  // both expire; no sweep has removed them
  Claim fits = Expect<Claim>(*tracker, "k2", "f");
  IdempotencyStats stats = tracker->Stats();
  EXPECT_EQ(stats.refused_full, 0u);
  EXPECT_EQ(stats.expirations, 2u);
  EXPECT_EQ(stats.processing, 1u);
  EXPECT_EQ(stats.completed, 0u);
  ASSERT_TRUE(fits.Abort().ok());
}

TEST_F(IdempotencyTest, KeysAndFingerprintsAreBounded) {
  IdempotencyOptions options = Short();
  options.max_key_bytes = 8;
  options.max_fingerprint_bytes = 4;
  auto tracker = Make(options);
  EXPECT_EQ(tracker->Track("", "f").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tracker->Track("123456789", "f").status().message(), HasSubstr("limit of 8"));
  EXPECT_THAT(tracker->Track("k", "12345").status().message(), HasSubstr("limit of 4"));
  Claim ok = Expect<Claim>(*tracker, "12345678", "1234");
  ASSERT_TRUE(ok.Abort().ok());
}

TEST_F(IdempotencyTest, BadOptionsAreRefusedSayingWhatWasExpected) {
  auto expect_invalid = [&](IdempotencyOptions o, std::string_view needle) {
    auto tracker = IdempotencyTracker::Create(*runtime_, o);
    ASSERT_FALSE(tracker.ok()) << needle;
    EXPECT_EQ(tracker.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(tracker.status().message(), HasSubstr(needle));
  };
  IdempotencyOptions o = Short();
  o.lease = absl::ZeroDuration();
  expect_invalid(o, "lease must be >= 1ms");
  o = Short();
  o.retention = absl::Seconds(1);
  expect_invalid(o, "retention must be finite and >= lease");
  o = Short();
  o.shards = 6;
  expect_invalid(o, "power of two");
  o = Short();
  o.max_entries = 0;
  expect_invalid(o, "max_entries");
}

TEST_F(IdempotencyTest, ExactlyOneOfManyConcurrentTracksOfOneKeyGetsTheClaim) {
  // Property: N threads tracking the same key at once get exactly one Claim; everyone else
  // sees InFlight (before completion) or Replay (after). Bounded: 200 rounds of 8 threads.
  auto tracker = Make(Short());
  for (int round = 0; round < 200; ++round) {
    std::string key = absl::StrCat("hot-", round);
    std::atomic<int> claims{0}, others{0}, go{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        ++go;
        while (go.load() < 8) {
        }
        absl::StatusOr<TrackResult> r = tracker->Track(key, "fp");
        if (!r.ok()) return;
        if (auto* claim = std::get_if<Claim>(&*r)) {
          ++claims;
          (void)claim->Complete({.status = 200});
        } else if (std::holds_alternative<InFlight>(*r) || std::holds_alternative<Replay>(*r)) {
          ++others;
        }
      });
    }
    for (auto& t : threads) t.join();
    ASSERT_EQ(claims.load(), 1) << "round " << round;
    ASSERT_EQ(others.load(), 7) << "round " << round;
  }
  EXPECT_EQ(tracker->Stats().claims, 200u);
}

TEST_F(IdempotencyTest, DestroyingTheTrackerStopsItsSweeps) {
  auto tracker = Make(Short());
  Claim claim = Expect<Claim>(*tracker, "k", "fp");
  ASSERT_TRUE(claim.Abort().ok());
  tracker.reset();
  Advance(absl::Seconds(5));  // a sweep timer that survived would touch freed memory (ASan)
}

}  // namespace
}  // namespace keel
