#include "keel/timer_wheel.h"

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace keel {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr uint64_t kMs = 1;
constexpr uint64_t kSecond = 1000 * kMs;
constexpr uint64_t kDay = 24 * 3600 * kSecond;

// Records what fired, as (id, payload) pairs.
struct Recorder {
  std::vector<std::pair<TimerId, int>> fired;
  void operator()(TimerId id, int&& payload) { fired.emplace_back(id, payload); }
  std::vector<int> Payloads() const {
    std::vector<int> out;
    for (const auto& [id, payload] : fired) out.push_back(payload);
    return out;
  }
};

TEST(TimerWheelTest, FiresInDeadlineOrderAndFifoAmongEquals) {
  TimerWheel<int> wheel;
  wheel.Schedule(500, 1);
  wheel.Schedule(70, 2);
  wheel.Schedule(500, 3);
  wheel.Schedule(5, 4);
  wheel.Schedule(70'000, 5);
  wheel.Schedule(500, 6);
  wheel.Schedule(70, 7);
  Recorder recorder;
  EXPECT_EQ(wheel.Advance(100'000, std::ref(recorder)), 7u);
  EXPECT_THAT(recorder.Payloads(), ElementsAre(4, 2, 7, 1, 3, 6, 5));
  EXPECT_TRUE(wheel.empty());
  EXPECT_EQ(wheel.now(), 100'000u);
}

TEST(TimerWheelTest, FifoAmongEqualDeadlinesSurvivesCascades) {
  // The first timer sits on level 1 until the cascade at tick 64; the second is scheduled
  // after that cascade, straight into level 0. They must still fire in schedule order.
  TimerWheel<int> wheel;
  wheel.Schedule(100, 1);
  Recorder recorder;
  wheel.Advance(64, std::ref(recorder));
  wheel.Schedule(100, 2);
  wheel.Schedule(100, 3);
  wheel.Advance(100, std::ref(recorder));
  EXPECT_THAT(recorder.Payloads(), ElementsAre(1, 2, 3));
}

// Property: under random schedule / cancel / advance, including deadlines in the past and
// far beyond the 2^36-tick span of the levels, the wheel fires exactly the timers a
// std::multimap ordered by deadline (and by schedule order among equal keys) says are due,
// in the same order, and NextDeadline() never lies past the earliest pending deadline.
TEST(TimerWheelTest, MatchesAMultimapOracleUnderRandomScheduleCancelAdvance) {
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937_64 rng(seed);
    const uint64_t start = seed % 3 == 0 ? (uint64_t{1} << 36) - 1000 : seed * 12345;
    TimerWheel<uint64_t> wheel(start);
    std::multimap<uint64_t, TimerId> oracle;  // deadline -> id, equal keys in schedule order
    std::unordered_map<TimerId, std::multimap<uint64_t, TimerId>::iterator> where;
    std::unordered_map<TimerId, uint64_t> payload_of;
    std::vector<TimerId> ids;  // every id ever issued, live or stale
    uint64_t now = start;
    uint64_t next_payload = 0;
    size_t total_fired = 0;

    auto offset = [&]() -> uint64_t {
      switch (rng() % 6) {
        case 0:
          return rng() % 70;
        case 1:
          return rng() % 5000;
        case 2:
          return rng() % (uint64_t{1} << 24);
        case 3:
          return rng() % (uint64_t{1} << 34);
        case 4:
          return (uint64_t{1} << 36) + rng() % (uint64_t{1} << 40);
        default:
          return rng() % (uint64_t{1} << 50);
      }
    };

    // Odd seeds keep few timers pending (more cancels and advances), so that levels run
    // empty and the overflow list and cascades decide NextDeadline() on their own.
    const bool sparse = seed % 2 == 1;
    // Seeds divisible by 4 never cancel, so NextDeadline() must be exact.
    const bool exact = seed % 4 == 0;
    for (int op = 0; op < 4000; ++op) {
      const uint64_t kind = rng() % 10;
      if (kind < (sparse ? 3u : 5u)) {
        uint64_t deadline;
        if (rng() % 8 == 0) {
          deadline = now - std::min(now, rng() % 200);  // in the past, or now
        } else {
          deadline = now + offset();
        }
        const uint64_t payload = next_payload++;
        const TimerId id = wheel.Schedule(deadline, payload);
        ASSERT_NE(id, kInvalidTimerId);
        where[id] = oracle.emplace(deadline, id);
        payload_of[id] = payload;
        ids.push_back(id);
      } else if (kind < (sparse ? 6u : 7u)) {
        if (ids.empty() || exact) continue;
        const TimerId id = ids[rng() % ids.size()];
        const auto it = where.find(id);
        const bool live = it != where.end();
        EXPECT_EQ(wheel.Contains(id), live);
        EXPECT_EQ(wheel.Cancel(id), live);
        if (live) {
          oracle.erase(it->second);
          where.erase(it);
        }
        EXPECT_FALSE(wheel.Cancel(id));
      } else {
        uint64_t to;
        const uint64_t how = rng() % 8;
        if (how == 0) {
          to = now - std::min(now, rng() % 100);  // past: a no-op
        } else if (how <= 2 && wheel.NextDeadline().has_value()) {
          to = std::max(now, *wheel.NextDeadline());
        } else if (how <= 5) {
          to = now + rng() % 3000;
        } else {
          to = now + offset();
        }
        std::vector<TimerId> expected;
        if (to >= now) {
          while (!oracle.empty() && oracle.begin()->first <= to) {
            expected.push_back(oracle.begin()->second);
            where.erase(oracle.begin()->second);
            oracle.erase(oracle.begin());
          }
        }
        std::vector<TimerId> got;
        uint64_t last_now = now;
        const size_t fired = wheel.Advance(to, [&](TimerId id, uint64_t&& payload) {
          got.push_back(id);
          EXPECT_GE(wheel.now(), last_now);  // time never moves backwards
          EXPECT_LE(wheel.now(), to);
          last_now = wheel.now();
          EXPECT_EQ(payload, payload_of[id]);
          EXPECT_FALSE(wheel.Contains(id));
        });
        ASSERT_EQ(got, expected);
        EXPECT_EQ(fired, expected.size());
        total_fired += fired;
        now = std::max(now, to);
        EXPECT_EQ(wheel.now(), now);
      }
      ASSERT_EQ(wheel.size(), oracle.size());
      ASSERT_EQ(wheel.empty(), oracle.empty());
      const std::optional<uint64_t> next = wheel.NextDeadline();
      ASSERT_EQ(next.has_value(), !oracle.empty());
      if (!oracle.empty()) {
        ASSERT_LE(*next, oracle.begin()->first);
        if (exact) {
          ASSERT_EQ(*next, oracle.begin()->first);
        }
        if (oracle.begin()->first > now) {
          ASSERT_GT(*next, now);
        }
      }
    }
    EXPECT_GT(total_fired, 500u);  // the run exercised expiry, not only scheduling
  }
}

TEST(TimerWheelTest, NextDeadlineIsNulloptWhenEmptyAndNeverPastTheEarliestDeadline) {
  TimerWheel<int> wheel(1000);
  EXPECT_EQ(wheel.NextDeadline(), std::nullopt);
  wheel.Schedule(1000 + 3 * kDay, 1);
  EXPECT_EQ(wheel.NextDeadline(), 1000 + 3 * kDay);  // not a cascade point
  wheel.Schedule(uint64_t{1} << 40, 2);
  EXPECT_EQ(wheel.NextDeadline(), 1000 + 3 * kDay);
  wheel.Schedule(5000, 3);
  EXPECT_EQ(wheel.NextDeadline(), 5000u);
  wheel.Schedule(1010, 4);
  EXPECT_EQ(wheel.NextDeadline(), 1010u);
  wheel.Schedule(900, 5);  // in the past
  EXPECT_EQ(wheel.NextDeadline(), 900u);
}

TEST(TimerWheelTest, NextDeadlineMayLagACancelledEarliestTimerUntilAdvanceReachesIt) {
  TimerWheel<int> wheel;
  const TimerId first = wheel.Schedule(100'000, 1);
  wheel.Schedule(100'500, 2);  // same level-2 slot as the first
  ASSERT_EQ(wheel.NextDeadline(), 100'000u);
  wheel.Cancel(first);
  const std::optional<uint64_t> next = wheel.NextDeadline();
  ASSERT_TRUE(next.has_value());
  EXPECT_GE(*next, 100'000u);  // a lower bound: the cancelled deadline or the exact one
  EXPECT_LE(*next, 100'500u);
  EXPECT_EQ(wheel.Advance(*next, [](TimerId, int&&) {}), 0u);
  EXPECT_EQ(wheel.NextDeadline(), 100'500u);  // exact again
}

TEST(TimerWheelTest, AdvancingToNextDeadlineRepeatedlyReachesEveryTimerAtItsTick) {
  TimerWheel<int> wheel;
  const std::vector<uint64_t> deadlines = {
      1, 63, 64, 65, 4095, 4096, 300'000, 3 * kDay, uint64_t{1} << 36, (uint64_t{1} << 40) + 7};
  for (size_t i = 0; i < deadlines.size(); ++i) wheel.Schedule(deadlines[i], static_cast<int>(i));
  std::vector<uint64_t> fired_at;
  size_t wakeups = 0;
  while (std::optional<uint64_t> next = wheel.NextDeadline()) {
    ++wakeups;
    wheel.Advance(*next, [&](TimerId, int&&) { fired_at.push_back(wheel.now()); });
  }
  EXPECT_EQ(fired_at, deadlines);
  EXPECT_EQ(wakeups, deadlines.size());  // cascade points are not reported
}

TEST(TimerWheelTest, ThreeDaysAtOneMillisecondTicksFiresAtExactlyThatTick) {
  const uint64_t start = 123'456'789;
  TimerWheel<int> wheel(start);
  const uint64_t deadline = start + 3 * kDay;
  wheel.Schedule(deadline, 7);
  Recorder recorder;
  EXPECT_EQ(wheel.Advance(deadline - 1, std::ref(recorder)), 0u);
  EXPECT_THAT(recorder.fired, IsEmpty());
  EXPECT_EQ(wheel.size(), 1u);
  uint64_t fired_at = 0;
  EXPECT_EQ(wheel.Advance(deadline + kDay, [&](TimerId, int&&) { fired_at = wheel.now(); }), 1u);
  EXPECT_EQ(fired_at, deadline);
}

TEST(TimerWheelTest, RangesOfDaysAndYearsFireAtTheirExactTickWhenSteppedBySeconds) {
  // Stepping in coarse increments still fires each timer at its own tick, never early.
  const uint64_t start = 5 * kDay + 17;
  TimerWheel<uint64_t> wheel(start);
  const std::vector<uint64_t> offsets = {
      1, 999, 3 * kDay, 13 * kDay + 1, 400 * kDay + 3, 3 * 365 * kDay};
  for (uint64_t offset : offsets) wheel.Schedule(start + offset, start + offset);
  size_t fired = 0;
  uint64_t now = start;
  while (!wheel.empty()) {
    now += (now - start < 2 * kSecond) ? kMs : 3600 * kSecond;
    fired += wheel.Advance(now, [&](TimerId, uint64_t&& deadline) {
      EXPECT_EQ(wheel.now(), deadline);
      EXPECT_LE(deadline, now);
    });
  }
  EXPECT_EQ(fired, offsets.size());
}

TEST(TimerWheelTest, DeadlineInThePastFiresAtTheNextAdvance) {
  TimerWheel<int> wheel(1000);
  wheel.Schedule(10, 1);
  wheel.Schedule(1000, 2);
  wheel.Schedule(5, 3);
  Recorder recorder;
  EXPECT_EQ(wheel.Advance(1000, std::ref(recorder)), 3u);
  EXPECT_THAT(recorder.Payloads(), ElementsAre(3, 1, 2));  // deadline order
}

TEST(TimerWheelTest, AdvanceToThePastIsANoOp) {
  TimerWheel<int> wheel(500);
  wheel.Schedule(400, 1);
  wheel.Schedule(600, 2);
  Recorder recorder;
  EXPECT_EQ(wheel.Advance(499, std::ref(recorder)), 0u);
  EXPECT_EQ(wheel.now(), 500u);
  EXPECT_EQ(wheel.size(), 2u);
  EXPECT_THAT(recorder.fired, IsEmpty());
  EXPECT_EQ(wheel.Advance(500, std::ref(recorder)), 1u);
  EXPECT_THAT(recorder.Payloads(), ElementsAre(1));
}

TEST(TimerWheelTest, CancelOfAFiredOrCancelledIdReturnsFalse) {
  TimerWheel<int> wheel;
  const TimerId fires = wheel.Schedule(10, 1);
  const TimerId cancelled = wheel.Schedule(20, 2);
  EXPECT_TRUE(wheel.Contains(cancelled));
  EXPECT_TRUE(wheel.Cancel(cancelled));
  EXPECT_FALSE(wheel.Cancel(cancelled));
  EXPECT_FALSE(wheel.Contains(cancelled));
  wheel.Advance(100, [](TimerId, int&&) {});
  EXPECT_FALSE(wheel.Contains(fires));
  EXPECT_FALSE(wheel.Cancel(fires));
  // The freed slab entries are reused; the old ids stay stale.
  const TimerId reused = wheel.Schedule(200, 3);
  EXPECT_NE(reused, fires);
  EXPECT_NE(reused, cancelled);
  EXPECT_FALSE(wheel.Cancel(fires));
  EXPECT_FALSE(wheel.Cancel(cancelled));
  EXPECT_TRUE(wheel.Contains(reused));
}

TEST(TimerWheelTest, InvalidAndUnknownIdsAreRejected) {
  TimerWheel<int> wheel;
  EXPECT_FALSE(wheel.Contains(kInvalidTimerId));
  EXPECT_FALSE(wheel.Cancel(kInvalidTimerId));
  const TimerId id = wheel.Schedule(5, 1);
  EXPECT_NE(id, kInvalidTimerId);
  EXPECT_FALSE(wheel.Cancel(id + 1));
  EXPECT_FALSE(wheel.Cancel(id & 0xffffffffu));  // right index, generation 0
  EXPECT_FALSE(wheel.Cancel(std::numeric_limits<TimerId>::max()));
  EXPECT_TRUE(wheel.Contains(id));
}

TEST(TimerWheelTest, SizeTracksScheduleCancelAndFire) {
  TimerWheel<int> wheel;
  EXPECT_TRUE(wheel.empty());
  const TimerId a = wheel.Schedule(10, 1);
  wheel.Schedule(20, 2);
  wheel.Schedule(uint64_t{1} << 40, 3);
  wheel.Schedule(0, 4);
  EXPECT_EQ(wheel.size(), 4u);
  wheel.Cancel(a);
  EXPECT_EQ(wheel.size(), 3u);
  wheel.Advance(15, [&](TimerId, int&&) { EXPECT_EQ(wheel.size(), 2u); });
  EXPECT_EQ(wheel.size(), 2u);
  wheel.Advance(20, [](TimerId, int&&) {});
  EXPECT_EQ(wheel.size(), 1u);
  EXPECT_FALSE(wheel.empty());
  wheel.Advance(uint64_t{1} << 41, [](TimerId, int&&) {});
  EXPECT_TRUE(wheel.empty());
}

TEST(TimerWheelTest, CancelDestroysThePayload) {
  auto payload = std::make_shared<int>(42);
  TimerWheel<std::shared_ptr<int>> wheel;
  const TimerId near = wheel.Schedule(10, payload);
  const TimerId far = wheel.Schedule(uint64_t{1} << 50, payload);
  const TimerId due = wheel.Schedule(0, payload);
  EXPECT_EQ(payload.use_count(), 4);
  EXPECT_TRUE(wheel.Cancel(near));
  EXPECT_EQ(payload.use_count(), 3);
  EXPECT_TRUE(wheel.Cancel(far));
  EXPECT_TRUE(wheel.Cancel(due));
  EXPECT_EQ(payload.use_count(), 1);
}

TEST(TimerWheelTest, FiredPayloadIsMovedOutAndPendingPayloadsDieWithTheWheel) {
  auto payload = std::make_shared<int>(1);
  {
    TimerWheel<std::shared_ptr<int>> wheel;
    wheel.Schedule(10, payload);
    wheel.Schedule(20, payload);
    std::shared_ptr<int> kept;
    wheel.Advance(10, [&](TimerId, std::shared_ptr<int>&& p) { kept = std::move(p); });
    EXPECT_EQ(payload.use_count(), 3);  // payload, kept, the pending timer
    kept.reset();
    wheel.Advance(20, [](TimerId, std::shared_ptr<int>&&) {});  // not kept: destroyed
    EXPECT_EQ(payload.use_count(), 1);
    wheel.Schedule(30, payload);
    EXPECT_EQ(payload.use_count(), 2);
  }
  EXPECT_EQ(payload.use_count(), 1);
}

TEST(TimerWheelTest, CancelledPayloadsDestructorMayUseTheWheel) {
  // The runtime's payloads own arbitrary state; destroying one may schedule or cancel.
  TimerWheel<std::shared_ptr<int>> wheel;
  const TimerId other = wheel.Schedule(50, nullptr);
  TimerId rescheduled = kInvalidTimerId;
  std::shared_ptr<int> payload(new int(0), [&](int* p) {
    delete p;
    EXPECT_TRUE(wheel.Cancel(other));
    rescheduled = wheel.Schedule(70, nullptr);
  });
  const TimerId id = wheel.Schedule(60, std::move(payload));
  EXPECT_TRUE(wheel.Cancel(id));
  EXPECT_FALSE(wheel.Contains(id));
  EXPECT_FALSE(wheel.Contains(other));
  EXPECT_TRUE(wheel.Contains(rescheduled));
  EXPECT_EQ(wheel.size(), 1u);
  EXPECT_EQ(wheel.NextDeadline(), 70u);
}

TEST(TimerWheelTest, MoveOnlyPayloadWorks) {
  TimerWheel<std::unique_ptr<std::string>> wheel;
  for (int i = 0; i < 100; ++i) {  // grows the slab, moving the payloads
    wheel.Schedule(static_cast<uint64_t>(1 + i % 7), std::make_unique<std::string>("t"));
  }
  const TimerId cancelled = wheel.Schedule(3, std::make_unique<std::string>("no"));
  EXPECT_TRUE(wheel.Cancel(cancelled));
  std::string seen;
  const size_t fired = wheel.Advance(10, [&](TimerId, std::unique_ptr<std::string>&& s) {
    std::unique_ptr<std::string> owned = std::move(s);
    seen += *owned;
  });
  EXPECT_EQ(fired, 100u);
  EXPECT_EQ(seen, std::string(100, 't'));
}

TEST(TimerWheelTest, CancellingASameBatchTimerFromFireKeepsItFromFiring) {
  TimerWheel<int> wheel;
  TimerId second = kInvalidTimerId;
  wheel.Schedule(50, 1);
  second = wheel.Schedule(50, 2);
  wheel.Schedule(50, 3);
  const TimerId later = wheel.Schedule(60, 4);
  std::vector<int> fired;
  const size_t count = wheel.Advance(100, [&](TimerId, int&& payload) {
    fired.push_back(payload);
    if (payload == 1) {
      EXPECT_TRUE(wheel.Cancel(second));
      EXPECT_TRUE(wheel.Cancel(later));
    }
  });
  EXPECT_THAT(fired, ElementsAre(1, 3));
  EXPECT_EQ(count, 2u);
  EXPECT_TRUE(wheel.empty());
}

TEST(TimerWheelTest, CancellingADueTimerFromFireKeepsItFromFiring) {
  TimerWheel<int> wheel(100);
  wheel.Schedule(10, 1);
  const TimerId victim = wheel.Schedule(20, 2);
  std::vector<int> fired;
  wheel.Advance(100, [&](TimerId, int&& payload) {
    fired.push_back(payload);
    wheel.Cancel(victim);
  });
  EXPECT_THAT(fired, ElementsAre(1));
}

TEST(TimerWheelTest, TimerScheduledAtNowFromFireFiresAtTheNextAdvance) {
  TimerWheel<int> wheel;
  wheel.Schedule(10, 0);
  int rearms = 0;
  auto rearm = [&](TimerId, int&& generation) {
    ++rearms;
    wheel.Schedule(wheel.now(), generation + 1);  // always due: must not loop forever
    wheel.Schedule(0, generation + 1);
  };
  EXPECT_EQ(wheel.Advance(10, rearm), 1u);
  EXPECT_EQ(wheel.size(), 2u);
  EXPECT_EQ(wheel.NextDeadline(), 0u);
  EXPECT_EQ(wheel.Advance(10, rearm), 2u);
  EXPECT_EQ(wheel.Advance(11, rearm), 4u);
  EXPECT_EQ(rearms, 7);
}

TEST(TimerWheelTest, TimerScheduledInTheFutureFromFireFiresInTheSameAdvanceWhenDue) {
  TimerWheel<int> wheel;
  wheel.Schedule(10, 1);
  std::vector<std::pair<int, uint64_t>> fired;  // (payload, now)
  const size_t count = wheel.Advance(5000, [&](TimerId, int&& payload) {
    fired.emplace_back(payload, wheel.now());
    if (payload == 1) {
      wheel.Schedule(wheel.now() + 1, 2);     // level 0
      wheel.Schedule(wheel.now() + 4000, 3);  // level 1, ahead of level 0's timers
      wheel.Schedule(5001, 4);                // beyond `to`
    }
  });
  EXPECT_EQ(count, 3u);
  EXPECT_THAT(fired, ElementsAre(std::pair{1, uint64_t{10}}, std::pair{2, uint64_t{11}},
                                 std::pair{3, uint64_t{4010}}));
  EXPECT_EQ(wheel.size(), 1u);
  EXPECT_EQ(wheel.now(), 5000u);
}

TEST(TimerWheelTest, NowInsideFireIsTheDeadlineOrTheCallTickIfLater) {
  TimerWheel<int> wheel(100);
  wheel.Schedule(50, 1);
  wheel.Schedule(300, 2);
  std::vector<uint64_t> seen;
  wheel.Advance(1000, [&](TimerId, int&&) { seen.push_back(wheel.now()); });
  EXPECT_THAT(seen, ElementsAre(100u, 300u));
}

TEST(TimerWheelTest, AdvanceFromInsideFireIsANoOp) {
  TimerWheel<int> wheel;
  wheel.Schedule(10, 1);
  wheel.Schedule(20, 2);
  std::vector<int> fired;
  wheel.Advance(30, [&](TimerId, int&& payload) {
    fired.push_back(payload);
    EXPECT_EQ(wheel.Advance(1000, [](TimerId, int&&) { ADD_FAILURE(); }), 0u);
  });
  EXPECT_THAT(fired, ElementsAre(1, 2));
  EXPECT_EQ(wheel.now(), 30u);
}

TEST(TimerWheelTest, ExceptionFromFireLeavesTheRestOfTheBatchDue) {
  TimerWheel<int> wheel;
  wheel.Schedule(10, 1);
  wheel.Schedule(10, 2);
  wheel.Schedule(10, 3);
  wheel.Schedule(40, 4);
  std::vector<int> fired;
  EXPECT_THROW(wheel.Advance(50,
                             [&](TimerId, int&& payload) {
                               fired.push_back(payload);
                               if (payload == 1) throw std::runtime_error("boom");
                             }),
               std::runtime_error);
  EXPECT_EQ(wheel.now(), 10u);
  EXPECT_EQ(wheel.size(), 3u);
  EXPECT_EQ(wheel.NextDeadline(), 10u);
  wheel.Advance(50, [&](TimerId, int&& payload) { fired.push_back(payload); });
  EXPECT_THAT(fired, ElementsAre(1, 2, 3, 4));
  EXPECT_TRUE(wheel.empty());
}

TEST(TimerWheelTest, AdvanceWithALimitFiresInBoundedStepsInTheSameOrder) {
  // Four timers at tick 10 (scheduled out of payload order across a cascade), two at 20,
  // one at 70: steps of at most 3 fire them in (deadline, schedule) order, the rest of a
  // cut batch first on the next call, and time stops at the batch being fired.
  TimerWheel<int> wheel;
  wheel.Schedule(10, 1);
  wheel.Schedule(20, 5);
  wheel.Schedule(10, 2);
  wheel.Schedule(10, 3);
  wheel.Schedule(70, 7);
  wheel.Schedule(10, 4);
  wheel.Schedule(20, 6);
  std::vector<int> fired;
  auto record = [&](TimerId, int&& payload) { fired.push_back(payload); };
  EXPECT_EQ(wheel.Advance(100, record, 3), 3u);
  EXPECT_THAT(fired, ElementsAre(1, 2, 3));
  EXPECT_EQ(wheel.now(), 10u);
  EXPECT_EQ(wheel.size(), 4u);
  EXPECT_EQ(wheel.NextDeadline(), 10u);
  EXPECT_EQ(wheel.Advance(100, record, 3), 3u);
  EXPECT_THAT(fired, ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_EQ(wheel.now(), 20u);
  EXPECT_EQ(wheel.Advance(100, record, 3), 1u);
  EXPECT_THAT(fired, ElementsAre(1, 2, 3, 4, 5, 6, 7));
  EXPECT_EQ(wheel.now(), 100u);
  EXPECT_TRUE(wheel.empty());
  EXPECT_EQ(wheel.Advance(200, record, 0), 0u);
  EXPECT_EQ(wheel.now(), 100u);
}

TEST(TimerWheelTest, TheRestOfACutBatchCanBeCancelledAndMergesWithLaterDueTimers) {
  TimerWheel<int> wheel;
  wheel.Schedule(10, 1);
  const TimerId second = wheel.Schedule(10, 2);
  wheel.Schedule(10, 3);
  std::vector<int> fired;
  auto record = [&](TimerId, int&& payload) { fired.push_back(payload); };
  EXPECT_EQ(wheel.Advance(50, record, 1), 1u);
  EXPECT_TRUE(wheel.Cancel(second));
  // Due now (deadline 5 <= now() == 10): it joins the rest of the batch, in deadline order.
  wheel.Schedule(5, 0);
  EXPECT_EQ(wheel.NextDeadline(), 5u);
  EXPECT_EQ(wheel.Advance(50, record), 2u);
  EXPECT_THAT(fired, ElementsAre(1, 0, 3));
  EXPECT_TRUE(wheel.empty());
}

TEST(TimerWheelTest, WorksNearTheEndOfTheTickRange) {
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  TimerWheel<int> wheel(kMax - 100);
  wheel.Schedule(kMax, 1);
  wheel.Schedule(kMax - 50, 2);
  wheel.Schedule(kMax - 200, 3);
  Recorder recorder;
  EXPECT_EQ(wheel.Advance(kMax, std::ref(recorder)), 3u);
  EXPECT_THAT(recorder.Payloads(), ElementsAre(3, 2, 1));
  EXPECT_EQ(wheel.now(), kMax);
}

TEST(TimerWheelTest, OverflowTimersWaitForTheirBlockWithoutWalkingEveryBlock) {
  // A deadline 2^60 ticks ahead is ~2^24 blocks of 2^36 ticks away; reaching it takes one
  // wakeup and a handful of steps inside Advance, not one step per block.
  TimerWheel<int> wheel(12345);
  const uint64_t deadline = 12345 + (uint64_t{1} << 60) + 999;
  wheel.Schedule(deadline, 1);
  wheel.Schedule(deadline, 2);
  size_t wakeups = 0;
  std::vector<int> fired;
  while (std::optional<uint64_t> next = wheel.NextDeadline()) {
    ASSERT_LE(*next, deadline);
    ++wakeups;
    wheel.Advance(*next, [&](TimerId, int&& payload) {
      EXPECT_EQ(wheel.now(), deadline);
      fired.push_back(payload);
    });
  }
  EXPECT_THAT(fired, ElementsAre(1, 2));
  EXPECT_EQ(wakeups, 1u);
}

}  // namespace
}  // namespace keel
