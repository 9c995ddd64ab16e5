// keel's internal locks: mutual exclusion, and the ordering a lock must give (what one holder
// wrote, the next holder reads), checked by counting under contention; the TSan build checks
// the ordering too.
#include "keel/internal/sync.h"

#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace keel::internal {
namespace {

TEST(SpinLockTest, CriticalSectionsNeverOverlapAndSeeEachOthersWrites) {
  constexpr int kThreads = 4;  // more threads than this machine's cores: holders get preempted
  constexpr int kIterations = 20000;
  SpinLock lock;
  int64_t counter = 0;  // guarded by `lock`, written with plain stores
  int inside = 0;       // how many threads are in the critical section (must stay 0 or 1)
  bool overlapped = false;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIterations; ++i) {
        SpinLockHolder holder(&lock);
        if (++inside != 1) overlapped = true;
        counter = counter + 1;
        --inside;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_FALSE(overlapped);
  EXPECT_EQ(counter, int64_t{kThreads} * kIterations);
}

TEST(SpinLockTest, AnUncontendedLockIsTakenAndReleasedAtOnce) {
  SpinLock lock;
  for (int i = 0; i < 3; ++i) {
    lock.Lock();
    lock.Unlock();
  }
  // A holder on another thread: the lock is taken after it is released.
  lock.Lock();
  bool taken = false;
  std::thread waiter([&] {
    SpinLockHolder holder(&lock);
    taken = true;
  });
  lock.Unlock();
  waiter.join();
  EXPECT_TRUE(taken);
}

}  // namespace
}  // namespace keel::internal
