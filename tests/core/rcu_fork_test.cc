// Property checked here: after fork(), a child whose parent had keel's reclaimer running can
// publish, read and reclaim with keel (the reclaimer restarts itself in the child), provided
// no parent thread was inside a read section at the fork. The child reports through its
// exit status.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "gtest/gtest.h"
#include "keel/rcu_cell.h"

namespace keel {
namespace {

TEST(RcuForkTest, AChildCanPublishAndReclaimAfterFork) {
  RcuCell<int> cell(std::make_shared<const int>(1));
  cell.Emplace(2);  // the parent's reclaimer thread is running now
  ASSERT_TRUE(RcuSynchronize().ok());

  const pid_t pid = fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    // Child: only this thread exists. Exit codes say what failed.
    if (*cell.Read() != 2) _exit(10);
    const RcuReclaimStats before = GetRcuReclaimStats();
    for (int i = 0; i < 100; ++i) cell.Emplace(i);
    if (!RcuSynchronize(absl::Seconds(20)).ok()) _exit(11);
    if (GetRcuReclaimStats().reclaimed - before.reclaimed < 100) _exit(12);
    if (*cell.Read() != 99) _exit(13);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died abnormally, status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: stale read, 11: grace period hung, 12: nothing "
                                       "reclaimed, 13: wrong value";
  // The parent is unaffected.
  cell.Emplace(3);
  EXPECT_TRUE(RcuSynchronize(absl::Seconds(20)).ok());
  EXPECT_EQ(*cell.Read(), 3);
}

// A value whose destructor takes a while, so that a fork can happen while the reclaimer is
// in the middle of a batch. It spins on the steady clock (bounded, 300 ms).
std::atomic<bool> slow_destructor_started{false};
struct SlowToDestroy {
  ~SlowToDestroy() {
    slow_destructor_started = true;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    while (std::chrono::steady_clock::now() < until) {
    }
  }
};

TEST(RcuForkTest, AForkDuringAReclaimerBatchWaitsForTheBatch) {
  RcuCell<SlowToDestroy> slow;
  slow.Emplace();
  slow.Clear();  // the reclaimer will spend 300 ms destroying it
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!slow_destructor_started && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::yield();
  }
  ASSERT_TRUE(slow_destructor_started) << "the reclaimer never started the batch";

  const pid_t pid = fork();  // the batch is in flight now
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    RcuCell<int> cell;
    for (int i = 0; i < 10; ++i) cell.Emplace(i);
    // A batch lost in the fork would leave the reclaimed count short for ever.
    _exit(RcuSynchronize(absl::Seconds(20)).ok() ? 0 : 11);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died abnormally, status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "11: the child's grace period never completed";
  EXPECT_TRUE(RcuSynchronize(absl::Seconds(20)).ok());
}

}  // namespace
}  // namespace keel
