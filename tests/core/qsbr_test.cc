#include "keel/qsbr.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "keel/internal/sync.h"
#include "keel/logging.h"
#include "keel/rcu_cell.h"

namespace keel {
namespace {

// A value that records its destruction in a flag owned by the test.
struct DestroyFlag {
  explicit DestroyFlag(int v, std::atomic<bool>* destroyed) : value(v), destroyed(destroyed) {}
  DestroyFlag(const DestroyFlag&) = delete;
  DestroyFlag& operator=(const DestroyFlag&) = delete;
  ~DestroyFlag() { destroyed->store(true); }
  int value;
  std::atomic<bool>* destroyed;
};

// A short wait for a grace period that must not end: long enough for the reclaimer to have
// run, short enough to keep the suite fast.
constexpr absl::Duration kStalled = absl::Milliseconds(100);
// A generous bound for a grace period that must end.
constexpr absl::Duration kEnds = absl::Seconds(30);

TEST(QsbrTest, AQsbrReaderSeesPublishedValues) {
  RcuCell<int> cell;
  QsbrThread qsbr;
  {
    auto guard = cell.ReadQsbr(qsbr);
    EXPECT_FALSE(guard);
    EXPECT_EQ(guard.get(), nullptr);
  }
  cell.Emplace(1);
  {
    auto guard = cell.ReadQsbr(qsbr);
    ASSERT_TRUE(guard);
    EXPECT_EQ(*guard, 1);
  }
  qsbr.Quiescent();
  cell.Emplace(2);
  EXPECT_EQ(*cell.ReadQsbr(qsbr), 2);
  qsbr.Quiescent();
  std::thread publisher([&] { cell.Emplace(3); });
  publisher.join();
  EXPECT_EQ(*cell.ReadQsbr(qsbr), 3);
}

TEST(QsbrTest, AValueRetiredWhileAReaderHoldsItLivesUntilTheReaderIsQuiescent) {
  // Property: a value a QSBR reader loaded is not destroyed while that reader stays online
  // without announcing a quiescent state, even after its guard's scope has ended; it is
  // destroyed once the reader calls Quiescent() (and, for the next value, goes offline).
  std::atomic<bool> first_destroyed{false};
  std::atomic<bool> second_destroyed{false};
  std::atomic<bool> third_destroyed{false};
  RcuCell<DestroyFlag> cell;
  cell.Emplace(1, &first_destroyed);
  internal::Notification holding;
  internal::Notification guard_done;
  internal::Notification go_quiescent;
  internal::Notification quiescent;
  internal::Notification go_offline;
  internal::Notification finish;
  std::thread reader([&] {
    QsbrThread qsbr;
    {
      auto guard = cell.ReadQsbr(qsbr);
      EXPECT_EQ(guard->value, 1);
      holding.Notify();
      guard_done.WaitForNotification();  // blocking while online: on purpose, for the test
      EXPECT_EQ(guard->value, 1);
      EXPECT_FALSE(first_destroyed.load());
    }
    go_quiescent.WaitForNotification();
    qsbr.Quiescent();
    quiescent.Notify();
    go_offline.WaitForNotification();
    qsbr.Offline();
    finish.WaitForNotification();
  });
  holding.WaitForNotification();
  cell.Emplace(2, &second_destroyed);
  EXPECT_EQ(RcuSynchronize(kStalled).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(first_destroyed.load());
  guard_done.Notify();
  // The guard is gone, but the reader has not said so: still no grace period.
  EXPECT_EQ(RcuSynchronize(kStalled).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(first_destroyed.load());
  go_quiescent.Notify();
  quiescent.WaitForNotification();
  ASSERT_TRUE(RcuSynchronize(kEnds).ok());
  EXPECT_TRUE(first_destroyed.load());
  EXPECT_FALSE(second_destroyed.load());

  // The reader is online again after its quiescent state and has announced nothing since.
  cell.Emplace(3, &third_destroyed);
  EXPECT_EQ(RcuSynchronize(kStalled).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(second_destroyed.load());
  go_offline.Notify();
  ASSERT_TRUE(RcuSynchronize(kEnds).ok());
  EXPECT_TRUE(second_destroyed.load());
  finish.Notify();
  reader.join();
  cell.Clear();
  ASSERT_TRUE(RcuSynchronize(kEnds).ok());
  EXPECT_TRUE(third_destroyed.load());
}

TEST(QsbrTest, AnOfflineThreadDoesNotStallReclamation) {
  // Property: a registered thread that blocks while offline (here inside an OfflineScope)
  // does not delay grace periods; it reads again once back online.
  std::atomic<bool> destroyed{false};
  RcuCell<DestroyFlag> cell;
  cell.Emplace(1, &destroyed);
  internal::Notification blocked;
  internal::Notification wake;
  std::atomic<int> read_after_wake{0};
  std::thread reader([&] {
    QsbrThread qsbr;
    EXPECT_EQ(cell.ReadQsbr(qsbr)->value, 1);
    {
      QsbrThread::OfflineScope idle(qsbr);
      EXPECT_FALSE(qsbr.IsOnline());
      blocked.Notify();
      wake.WaitForNotification();
    }
    EXPECT_TRUE(qsbr.IsOnline());
    read_after_wake = cell.ReadQsbr(qsbr)->value;
  });
  blocked.WaitForNotification();
  std::atomic<bool> unused{false};
  cell.Emplace(2, &unused);
  ASSERT_TRUE(RcuSynchronize(kEnds).ok());
  EXPECT_TRUE(destroyed.load());
  wake.Notify();
  reader.join();
  EXPECT_EQ(read_after_wake.load(), 2);
}

TEST(QsbrTest, ThreadsThatUnregisteredDoNotStallReclamation) {
  // Property: a QsbrThread's destruction takes its thread out of every later grace period,
  // even when the thread never announced a quiescent state.
  RcuCell<int> cell(std::make_shared<const int>(5));
  for (int i = 0; i < 20; ++i) {
    std::thread([&] {
      QsbrThread qsbr;
      EXPECT_EQ(*cell.ReadQsbr(qsbr), 5);
    }).join();
  }
  cell.Emplace(6);
  ASSERT_TRUE(RcuSynchronize(kEnds).ok());
}

TEST(QsbrTest, SynchronizeOnAnOnlineQsbrThreadIsRefusedNotDeadlocked) {
  RcuCell<int> cell(std::make_shared<const int>(1));
  QsbrThread qsbr;
  cell.Emplace(2);
  EXPECT_EQ(RcuSynchronize().code(), absl::StatusCode::kFailedPrecondition);
  {
    QsbrThread::OfflineScope offline(qsbr);
    EXPECT_TRUE(RcuSynchronize(kEnds).ok());
  }
  EXPECT_EQ(*cell.ReadQsbr(qsbr), 2);
}

TEST(QsbrTest, OfflineScopesNestAndRestoreThePreviousState) {
  QsbrThread qsbr;
  EXPECT_TRUE(qsbr.IsOnline());
  {
    QsbrThread::OfflineScope outer(qsbr);
    EXPECT_FALSE(qsbr.IsOnline());
    {
      QsbrThread::OfflineScope inner(qsbr);
      EXPECT_FALSE(qsbr.IsOnline());
    }
    EXPECT_FALSE(qsbr.IsOnline());
    qsbr.Quiescent();  // a no-op while offline: the thread stays offline
    EXPECT_FALSE(qsbr.IsOnline());
  }
  EXPECT_TRUE(qsbr.IsOnline());
  qsbr.Online();  // already online: a no-op
  qsbr.Offline();
  qsbr.Offline();  // already offline: a no-op
  EXPECT_FALSE(qsbr.IsOnline());
  qsbr.Online();
  EXPECT_TRUE(qsbr.IsOnline());
}

TEST(QsbrTest, MembReadsAndPinsWorkOnAQsbrThreadOnlineOrOffline) {
  RcuCell<int> cell(std::make_shared<const int>(7));
  QsbrThread qsbr;
  EXPECT_EQ(*cell.Read(), 7);
  std::shared_ptr<const int> pinned;
  {
    QsbrThread::OfflineScope offline(qsbr);
    EXPECT_EQ(*cell.Read(), 7);
    pinned = cell.Pin();
    cell.Emplace(8);
    ASSERT_TRUE(RcuSynchronize(kEnds).ok());
  }
  EXPECT_EQ(*pinned, 7);
  EXPECT_EQ(*cell.ReadQsbr(qsbr), 8);
}

TEST(QsbrTest, ASecondQsbrThreadOnTheSameThreadAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        SetLogLevel(LogLevel::kError);  // the test main turns keel's log off
        QsbrThread first;
        QsbrThread second;
      },
      "already has one");
}

// Not in ThreadSanitizer builds: TSan still counts the parent's reader thread as running in
// the child, and aborts when the child's new reclaimer thread reuses its stack ("dup thread
// with used id"). The release and ASan builds run it.
#if !defined(__SANITIZE_THREAD__)
TEST(QsbrTest, AChildForkedWhileAQsbrThreadIsOnlineStillReclaims) {
  // Property: a thread that is online in QSBR mode at fork() does not exist in the child, yet
  // the child (whose forking thread is not a QSBR reader) publishes and reclaims: its
  // reclaimer no longer waits for QSBR grace periods. The child reports through its exit
  // status.
  RcuCell<int> cell(std::make_shared<const int>(1));
  cell.Emplace(2);
  ASSERT_TRUE(RcuSynchronize(kEnds).ok());  // no batch in flight at the fork
  internal::Notification online;
  internal::Notification done;
  std::thread reader([&] {
    QsbrThread qsbr;
    EXPECT_EQ(*cell.ReadQsbr(qsbr), 2);
    online.Notify();
    done.WaitForNotification();  // online, never quiescent, until the child has run
  });
  online.WaitForNotification();
  const pid_t pid = fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    const RcuReclaimStats before = GetRcuReclaimStats();
    for (int i = 0; i < 100; ++i) cell.Emplace(i);
    if (!RcuSynchronize(absl::Seconds(20)).ok()) _exit(11);
    if (GetRcuReclaimStats().reclaimed - before.reclaimed < 100) _exit(12);
    if (*cell.Read() != 99) _exit(13);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  done.Notify();
  reader.join();
  ASSERT_TRUE(WIFEXITED(status)) << "child died abnormally, status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "11: grace period hung, 12: nothing reclaimed, 13: wrong value";
  cell.Emplace(3);
  EXPECT_TRUE(RcuSynchronize(kEnds).ok());
}
#endif  // !defined(__SANITIZE_THREAD__)

// Checks a value's integrity; the destructor poisons it.
constexpr uint64_t kAlive = 0x5AFE5AFE5AFE5AFEull;
constexpr uint64_t kPoisoned = 0xDEADBEEFDEADBEEFull;

struct Poisoned {
  explicit Poisoned(uint64_t seq) : seq(seq), check(~seq), mark(kAlive) {}
  ~Poisoned() {
    // volatile: the poison must reach memory although the object dies here.
    *const_cast<volatile uint64_t*>(&mark) = kPoisoned;
    *const_cast<volatile uint64_t*>(&check) = kPoisoned;
  }
  bool Intact() const { return mark == kAlive && check == ~seq; }
  uint64_t seq;
  uint64_t check;
  uint64_t mark;
};

TEST(QsbrTest, ReadersOfBothFlavoursNeverSeeADestroyedValue) {
  // Property: while a publisher replaces the value thousands of times, QSBR readers and memb
  // readers only ever see intact values, and every replaced value is eventually destroyed.
  // A QSBR reader works like a request loop: it holds one guard for a whole "request" (a
  // yield, then 32 further reads; the held value is often replaced and retired meanwhile),
  // checks it again at the end, then announces a quiescent state; now and then it goes
  // offline. Under ASan a read of a freed value is reported directly; every build checks the
  // poison mark. Bounded: 20000 publishes or 3 seconds, whichever comes first.
  constexpr int kPublishes = 20000;
  constexpr int kReadsPerRequest = 32;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  RcuCell<Poisoned> cell;
  cell.Emplace(0);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad{0};
  std::atomic<uint64_t> went_back{0};
  std::atomic<uint64_t> qsbr_reads{0};
  std::atomic<uint64_t> memb_reads{0};
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      QsbrThread qsbr;
      uint64_t last_seq = 0;
      uint64_t reads = 0;
      uint64_t requests = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        {
          auto held = cell.ReadQsbr(qsbr);
          if (!held->Intact()) bad.fetch_add(1);
          std::this_thread::yield();  // let the publisher and the reclaimer run meanwhile
          for (int i = 0; i < kReadsPerRequest; ++i) {
            auto guard = cell.ReadQsbr(qsbr);
            if (!guard->Intact()) bad.fetch_add(1);
            if (guard->seq < last_seq) went_back.fetch_add(1);
            last_seq = guard->seq;
          }
          if (!held->Intact()) bad.fetch_add(1);
          reads += kReadsPerRequest + 1;
        }
        qsbr.Quiescent();
        if (++requests % 64 == 0) {
          QsbrThread::OfflineScope offline(qsbr);
          std::this_thread::yield();
        }
      }
      qsbr_reads.fetch_add(reads);
    });
  }
  threads.emplace_back([&] {
    uint64_t reads = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      auto guard = cell.Read();
      if (!guard->Intact()) bad.fetch_add(1);
      ++reads;
    }
    memb_reads.fetch_add(reads);
  });
  int published = 0;
  while (published < kPublishes && std::chrono::steady_clock::now() < deadline) {
    cell.Emplace(static_cast<uint64_t>(++published));
    if (published % 64 == 0) std::this_thread::yield();
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_EQ(went_back.load(), 0u);
  EXPECT_GT(qsbr_reads.load(), 0u);
  EXPECT_GT(memb_reads.load(), 0u);
  EXPECT_GT(published, 0);
  const RcuReclaimStats before = GetRcuReclaimStats();
  ASSERT_TRUE(RcuSynchronize(kEnds).ok());
  EXPECT_GE(GetRcuReclaimStats().reclaimed, before.retired);
}

}  // namespace
}  // namespace keel
