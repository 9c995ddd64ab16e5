#include "keel/rcu_cell.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "keel/internal/sync.h"

namespace keel {
namespace {

// Counts live instances, to observe when the reclaimer destroys a value. The counter is
// shared-owned: a value may be reclaimed after the test that made it has returned.
using LiveCount = std::shared_ptr<std::atomic<int>>;
struct Tracked {
  explicit Tracked(int v, LiveCount live) : value(v), live(std::move(live)) { ++*this->live; }
  ~Tracked() { --*live; }
  int value;
  LiveCount live;
};
LiveCount MakeLiveCount() { return std::make_shared<std::atomic<int>>(0); }

TEST(RcuCellTest, EmptyCellReadsAsNull) {
  RcuCell<int> cell;
  auto guard = cell.Read();
  EXPECT_FALSE(guard);
  EXPECT_EQ(guard.get(), nullptr);
  EXPECT_EQ(cell.Pin(), nullptr);
}

TEST(RcuCellTest, ReadSeesTheLatestPublishedValue) {
  RcuCell<std::string> cell(std::make_shared<const std::string>("one"));
  {
    auto guard = cell.Read();
    ASSERT_TRUE(guard);
    EXPECT_EQ(*guard, "one");
  }
  cell.Emplace("two");
  EXPECT_EQ(*cell.Read(), "two");
  EXPECT_EQ(cell.Read()->size(), 3u);
  cell.Clear();
  EXPECT_FALSE(cell.Read());
  EXPECT_EQ(cell.PublishCountRelaxed(), 3u);
}

TEST(RcuCellTest, AGuardKeepsItsValueAliveAcrossAPublish) {
  LiveCount live = MakeLiveCount();
  RcuCell<Tracked> cell;
  cell.Emplace(1, live);
  {
    auto guard = cell.Read();
    cell.Emplace(2, live);
    // The reclaimer cannot free value 1 while this thread is inside its read section.
    EXPECT_EQ(guard->value, 1);
    EXPECT_EQ(cell.Read()->value, 2);
    EXPECT_EQ(live->load(), 2);
  }
  ASSERT_TRUE(RcuSynchronize().ok());
  EXPECT_EQ(live->load(), 1);
}

TEST(RcuCellTest, AGuardOnAnotherThreadDelaysReclamationUntilReleased) {
  LiveCount live = MakeLiveCount();
  RcuCell<Tracked> cell;
  cell.Emplace(1, live);
  internal::Notification holding;
  internal::Notification release;
  std::thread reader([&] {
    auto guard = cell.Read();
    holding.Notify();
    release.WaitForNotification();
    EXPECT_EQ(guard->value, 1);
  });
  holding.WaitForNotification();
  cell.Emplace(2, live);
  // The grace period cannot end while the reader holds its guard.
  absl::Status early = RcuSynchronize(absl::Milliseconds(100));
  EXPECT_EQ(early.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(live->load(), 2);
  release.Notify();
  reader.join();
  ASSERT_TRUE(RcuSynchronize().ok());
  EXPECT_EQ(live->load(), 1);
}

TEST(RcuCellTest, PinnedValuesOutliveTheirPublication) {
  LiveCount live = MakeLiveCount();
  RcuCell<Tracked> cell;
  cell.Emplace(1, live);
  std::shared_ptr<const Tracked> pinned = cell.Pin();
  cell.Emplace(2, live);
  ASSERT_TRUE(RcuSynchronize().ok());
  EXPECT_EQ(pinned->value, 1);
  EXPECT_EQ(live->load(), 2);
  pinned.reset();
  EXPECT_EQ(live->load(), 1);
}

TEST(RcuCellTest, DestroyingTheCellReclaimsItsValueAfterAGracePeriod) {
  LiveCount live = MakeLiveCount();
  {
    RcuCell<Tracked> cell;
    cell.Emplace(1, live);
  }
  ASSERT_TRUE(RcuSynchronize().ok());
  EXPECT_EQ(live->load(), 0);
}

TEST(RcuCellTest, GuardsNest) {
  RcuCell<int> a(std::make_shared<const int>(1));
  RcuCell<int> b(std::make_shared<const int>(2));
  auto ga = a.Read();
  {
    auto gb = b.Read();
    EXPECT_EQ(*ga + *gb, 3);
  }
  EXPECT_EQ(*ga, 1);
}

TEST(RcuCellTest, SynchronizeInsideAReadSectionIsRefusedNotDeadlocked) {
  RcuCell<int> cell(std::make_shared<const int>(1));
  auto guard = cell.Read();
  absl::Status status = RcuSynchronize();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RcuCellTest, ValuesAreDestroyedOffTheReadersThread) {
  std::atomic<std::thread::id> destroyed_on{};
  struct Recorder {
    std::atomic<std::thread::id>* where;
    ~Recorder() { where->store(std::this_thread::get_id()); }
  };
  RcuCell<Recorder> cell;
  cell.Emplace(Recorder{&destroyed_on});
  cell.Clear();
  ASSERT_TRUE(RcuSynchronize().ok());
  EXPECT_NE(destroyed_on.load(), std::thread::id{});
  EXPECT_NE(destroyed_on.load(), std::this_thread::get_id());
}

TEST(RcuCellTest, ReclaimStatsCountRetiredAndReclaimedValues) {
  RcuReclaimStats before = GetRcuReclaimStats();
  RcuCell<int> cell;
  for (int i = 0; i < 10; ++i) cell.Emplace(i);
  ASSERT_TRUE(RcuSynchronize().ok());
  RcuReclaimStats after = GetRcuReclaimStats();
  EXPECT_GE(after.retired - before.retired, 9u);
  EXPECT_GE(after.reclaimed - before.reclaimed, 9u);
  EXPECT_GT(after.grace_periods, before.grace_periods);
}

TEST(RcuCellTest, ThreadsRegisterThemselvesAndExitCleanly) {
  // Many short-lived reader threads: each registers on its first read and unregisters at
  // exit; a grace period afterwards must not wait for any of them.
  RcuCell<int> cell(std::make_shared<const int>(5));
  for (int i = 0; i < 50; ++i) {
    std::thread([&] { EXPECT_EQ(*cell.Read(), 5); }).join();
  }
  cell.Emplace(6);
  ASSERT_TRUE(RcuSynchronize(absl::Seconds(30)).ok());
}

// A cell and a result slot for LateReader, which runs in a thread_local destructor.
RcuCell<int>* late_cell = nullptr;
std::atomic<int> late_sum{-1};

struct LateReader {
  ~LateReader() {
    auto outer = late_cell->Read();
    auto inner = late_cell->Read();  // nested, on a thread whose registration is gone
    late_sum = *outer + *inner;
  }
};

TEST(RcuCellTest, ReadsFromThreadLocalDestructorsAfterTeardownStillWork) {
  RcuCell<int> cell(std::make_shared<const int>(21));
  late_cell = &cell;
  std::thread([&] {
    // Constructed before the thread's first read, so destroyed after keel's registration.
    thread_local LateReader late;
    (void)&late;
    EXPECT_EQ(*cell.Read(), 21);
  }).join();
  EXPECT_EQ(late_sum.load(), 42);
  // The temporary registration was undone: a grace period does not wait for a dead thread.
  cell.Emplace(1);
  EXPECT_TRUE(RcuSynchronize(absl::Seconds(30)).ok());
  late_cell = nullptr;
}

}  // namespace
}  // namespace keel
