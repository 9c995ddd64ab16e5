// Property checked here: while writers republish thousands of times, readers on other
// threads only ever see fully built, not yet destroyed values, and every value is destroyed
// exactly once after it was replaced. Under ASan a read of a freed value is reported
// directly; in every build the values carry a checksum and a liveness mark that the
// destructor clears. Loops are bounded in count and time.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "keel/rcu_cell.h"

namespace keel {
namespace {

constexpr uint64_t kAlive = 0xA11CEA11CEA11CEull;
constexpr uint64_t kDead = 0xDEADDEADDEADDEADull;

std::atomic<int64_t> live_values{0};

struct Value {
  explicit Value(uint64_t seq) : seq(seq), check(~seq), payload(64, seq), mark(kAlive) {
    live_values.fetch_add(1);
  }
  ~Value() {
    // relaxed stores would do for the checks below; volatile keeps them from being elided.
    *const_cast<volatile uint64_t*>(&mark) = kDead;
    live_values.fetch_sub(1);
  }
  bool Intact() const {
    if (mark != kAlive || check != ~seq) return false;
    for (uint64_t p : payload) {
      if (p != seq) return false;
    }
    return true;
  }
  uint64_t seq;
  uint64_t check;
  std::vector<uint64_t> payload;
  uint64_t mark;
};

struct Budget {
  int publishes;
  std::chrono::seconds max_time;
};

void RunStress(int readers, int writers, Budget budget, bool pin) {
  const int64_t live_before = live_values.load();
  {
    RcuCell<Value> cell;
    cell.Emplace(0);
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> reads{0};
    std::atomic<uint64_t> torn{0};
    std::atomic<uint64_t> went_back{0};

    std::vector<std::thread> threads;
    for (int r = 0; r < readers; ++r) {
      threads.emplace_back([&] {
        uint64_t last_seq = 0;
        uint64_t local_reads = 0;
        while (!stop.load(std::memory_order_relaxed)) {
          uint64_t seq;
          if (pin) {
            auto value = cell.Pin();
            if (!value->Intact()) torn.fetch_add(1);
            seq = value->seq;
          } else {
            auto guard = cell.Read();
            if (!guard->Intact()) torn.fetch_add(1);
            seq = guard->seq;
          }
          // With one writer, sequence numbers only grow as seen from any one reader.
          if (writers == 1 && seq < last_seq) went_back.fetch_add(1);
          last_seq = seq;
          ++local_reads;
        }
        reads.fetch_add(local_reads);
      });
    }
    const auto deadline = std::chrono::steady_clock::now() + budget.max_time;
    std::atomic<uint64_t> next_seq{1};
    std::vector<std::thread> writer_threads;
    for (int w = 0; w < writers; ++w) {
      writer_threads.emplace_back([&] {
        for (int i = 0; i < budget.publishes / writers; ++i) {
          if (std::chrono::steady_clock::now() > deadline) break;
          cell.Emplace(next_seq.fetch_add(1));
          if (i % 64 == 0) std::this_thread::yield();
        }
      });
    }
    for (auto& t : writer_threads) t.join();
    stop = true;
    for (auto& t : threads) t.join();

    EXPECT_EQ(torn.load(), 0u) << "a reader saw a half-built or destroyed value";
    EXPECT_EQ(went_back.load(), 0u) << "a reader saw an older value after a newer one";
    EXPECT_GT(reads.load(), 0u);
    EXPECT_GE(cell.PublishCountRelaxed(), 1000u) << "too few publishes to mean anything";
  }
  ASSERT_TRUE(RcuSynchronize(absl::Seconds(60)).ok());
  EXPECT_EQ(live_values.load(), live_before) << "every replaced value is destroyed once";
}

TEST(RcuCellStressTest, ReadersNeverSeeAHalfBuiltOrFreedValue) {
  RunStress(/*readers=*/3, /*writers=*/1,
            {.publishes = 20000, .max_time = std::chrono::seconds(20)},
            /*pin=*/false);
}

TEST(RcuCellStressTest, PinnedReadersNeverSeeAHalfBuiltOrFreedValue) {
  RunStress(/*readers=*/2, /*writers=*/1,
            {.publishes = 10000, .max_time = std::chrono::seconds(20)},
            /*pin=*/true);
}

TEST(RcuCellStressTest, ConcurrentWritersLoseNoValueAndFreeEachOnce) {
  RunStress(/*readers=*/2, /*writers=*/3,
            {.publishes = 12000, .max_time = std::chrono::seconds(20)},
            /*pin=*/false);
}

}  // namespace
}  // namespace keel
