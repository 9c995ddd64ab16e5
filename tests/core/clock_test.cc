#include "keel/clock.h"

#include <atomic>
#include <limits>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace keel {
namespace {

TEST(ManualClockTest, MovesOnlyWhenAdvanced) {
  ManualClock clock;
  const Instant start = clock.Now();
  EXPECT_EQ(clock.Now(), start);
  clock.Advance(absl::Milliseconds(250));
  EXPECT_EQ(clock.Now() - start, std::chrono::milliseconds(250));
}

TEST(ManualClockTest, NeverMovesBackwards) {
  ManualClock clock;
  const Instant start = clock.Now();
  clock.Advance(-absl::Seconds(5));
  EXPECT_EQ(clock.Now(), start);
  clock.Set(start - std::chrono::seconds(1));
  EXPECT_EQ(clock.Now(), start);
  clock.Set(start + std::chrono::seconds(3));
  EXPECT_EQ(clock.Now(), start + std::chrono::seconds(3));
}

TEST(ManualClockTest, AdvancingByInfinitySaturatesInsteadOfWrapping) {
  ManualClock clock;
  const Instant start = clock.Now();
  clock.Advance(absl::InfiniteDuration());
  EXPECT_GT(clock.Now(), start);
  const Instant far = clock.Now();
  clock.Advance(absl::Seconds(1));
  EXPECT_EQ(clock.Now(), far) << "a saturated clock must stay put, not wrap";
}

TEST(ManualClockTest, ConcurrentAdvancesAddUp) {
  ManualClock clock;
  const Instant start = clock.Now();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) clock.Advance(absl::Milliseconds(1));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(clock.Now() - start, std::chrono::seconds(4));
}

TEST(ManualClockTest, RealWaitIsZeroWhenDueAndUnknownOtherwise) {
  ManualClock clock;
  EXPECT_EQ(clock.RealWaitUntil(clock.Now()), std::chrono::nanoseconds(0));
  EXPECT_FALSE(clock.RealWaitUntil(clock.Now() + std::chrono::seconds(1)).has_value());
}

TEST(ManualClockTest, WatchersSeeEveryJumpUntilUnwatched) {
  ManualClock clock;
  int calls = 0;
  const Clock::WatchId id = clock.Watch([&] { ++calls; });
  clock.Advance(absl::Seconds(1));
  clock.Set(clock.Now() + std::chrono::seconds(1));
  EXPECT_EQ(calls, 2);
  clock.Unwatch(id);
  clock.Advance(absl::Seconds(1));
  EXPECT_EQ(calls, 2);
}

TEST(SteadyClockTest, IsMonotonicAndWaitsForFutureDeadlines) {
  Clock* clock = Clock::Steady();
  const Instant a = clock->Now();
  const Instant b = clock->Now();
  EXPECT_LE(a, b);
  auto wait = clock->RealWaitUntil(b + std::chrono::seconds(10));
  ASSERT_TRUE(wait.has_value());
  EXPECT_GT(*wait, std::chrono::seconds(9));
  EXPECT_EQ(clock->RealWaitUntil(a), std::chrono::nanoseconds(0));
}

TEST(AddDurationTest, SaturatesInsteadOfOverflowing) {
  const Instant t(std::chrono::hours(1));
  EXPECT_EQ(AddDuration(t, absl::Seconds(1)) - t, std::chrono::seconds(1));
  EXPECT_EQ(AddDuration(t, absl::InfiniteDuration()).time_since_epoch().count(),
            std::numeric_limits<int64_t>::max());
  EXPECT_EQ(Elapsed(t, AddDuration(t, absl::Milliseconds(7))), absl::Milliseconds(7));
}

}  // namespace
}  // namespace keel
