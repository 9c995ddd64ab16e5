// Tests of Keeper::StartWithSnapshots (keel/keeper.h) on a FileSnapshotStore: state kept
// across restarts of the keeper, schema versions (upgrades, refusals), damaged snapshots,
// failing saves, coalescing, and a real child process SIGKILLed while its keeper saves.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "keel/keeper.h"
#include "keel/runtime.h"
#include "keel/snapshot_store.h"
#include "stores/keeper_tally.h"
#include "support/eventually.h"
#include "support/temp_dir.h"

#ifndef KEEL_KEEPER_SNAPSHOT_CHILD
#error "KEEL_KEEPER_SNAPSHOT_CHILD must name the child program"
#endif

namespace keel {
namespace {

using testing::Codec;
using ::testing::ElementsAre;
using testing::Encode;
using testing::Eventually;
using ::testing::HasSubstr;
using testing::MakeTempDir;
using testing::Probe;
using testing::Tally;
using testing::UpgradeStep;

// Every test runs with the worker on its own thread and on the runtime's offload pool.
class KeeperSnapshotTest : public ::testing::TestWithParam<Placement> {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("keel_keeper_snapshot");
    ASSERT_FALSE(dir_.empty());
    auto runtime = Runtime::Create({.name = "keeper-snapshot-test"});
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    runtime_ = std::move(*runtime);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // A new store on the test's directory, as a restarted process would open it.
  std::shared_ptr<FileSnapshotStore> OpenStore(int keep = 2) {
    auto store = FileSnapshotStore::Open({.directory = dir_, .name = "tally", .keep = keep});
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::shared_ptr<FileSnapshotStore>(std::move(*store)) : nullptr;
  }

  absl::StatusOr<std::unique_ptr<Keeper<Tally>>> Start(KeeperSnapshots<Tally::State> codec,
                                                       std::shared_ptr<Probe> probe,
                                                       int64_t args = 0) {
    KeeperOptions options;
    options.name = "tally";
    options.placement = GetParam();
    return Keeper<Tally>::StartWithSnapshots(*runtime_, args, std::move(codec), options,
                                             [probe] { return std::make_unique<Tally>(probe); });
  }

  // Starts a keeper on `schema`, casts `values`, stops it; returns its last committed version.
  uint64_t RunAndStop(uint32_t schema, const std::vector<int64_t>& values, int64_t args = 0) {
    auto keeper = Start(Codec(OpenStore(), schema), std::make_shared<Probe>(), args);
    EXPECT_TRUE(keeper.ok()) << keeper.status();
    if (!keeper.ok()) return 0;
    for (int64_t v : values) EXPECT_TRUE((*keeper)->Cast(v).ok());
    EXPECT_TRUE((*keeper)->Stop().ok());
    KeeperStats stats = (*keeper)->Stats();
    EXPECT_EQ(stats.saved_version, stats.version) << "Stop saves the last committed state";
    EXPECT_EQ(stats.snapshot_failures, 0u) << stats.last_snapshot_error;
    return stats.version;
  }

  std::string dir_;
  std::unique_ptr<Runtime> runtime_;
};

TEST_P(KeeperSnapshotTest, WithoutASnapshotTheWorkerStartsWithOnFirstStart) {
  auto probe = std::make_shared<Probe>();
  auto keeper = Start(Codec(OpenStore(), 1), probe, 7);
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  EXPECT_FALSE((*keeper)->restore_report().restored);
  EXPECT_TRUE((*keeper)->restore_report().skipped.empty());
  absl::StatusOr<Tally::State> s = (*keeper)->Call({}, absl::Seconds(10));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, (Tally::State{0, 7}));
  EXPECT_EQ(probe->first_starts.load(), 1);
  EXPECT_TRUE(probe->causes.empty());
}

TEST_P(KeeperSnapshotTest, TheStateSurvivesARestartAndVersionsGoOn) {
  std::vector<int64_t> values;
  for (int64_t i = 1; i <= 100; ++i) values.push_back(i);
  const uint64_t first_version = RunAndStop(1, values, 1000);
  ASSERT_EQ(first_version, 101u);  // the first state, then one commit per cast

  auto probe = std::make_shared<Probe>();
  auto keeper = Start(Codec(OpenStore(), 1), probe, /*args, unused*/ -1);
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  const RestoreReport& report = (*keeper)->restore_report();
  EXPECT_TRUE(report.restored);
  EXPECT_EQ(report.sequence, first_version);
  EXPECT_EQ(report.schema_version, 1u);
  absl::StatusOr<Tally::State> s = (*keeper)->Call({}, absl::Seconds(10));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, (Tally::State{100, 1000 + 5050}));
  EXPECT_EQ(probe->first_starts.load(), 0) << "OnFirstStart runs only without a snapshot";
  {
    std::lock_guard<std::mutex> lock(probe->mu);
    ASSERT_EQ(probe->causes.size(), 1u);
    EXPECT_EQ(probe->causes[0].site, CrashSite::kRestart);
    EXPECT_THAT(probe->causes[0].what, HasSubstr(absl::StrCat("snapshot ", first_version)));
  }
  EXPECT_EQ((*keeper)->state().version, first_version);
  ASSERT_TRUE((*keeper)->Cast(1).ok());
  ASSERT_TRUE((*keeper)->Stop().ok());
  EXPECT_EQ((*keeper)->state().version, first_version + 1);
  EXPECT_EQ((*keeper)->Stats().saved_version, first_version + 1);

  // A third start sees the second one's commit.
  auto third = Start(Codec(OpenStore(), 1), std::make_shared<Probe>());
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(*(*third)->state().state, (Tally::State{101, 1000 + 5050 + 1}));
  EXPECT_EQ((*third)->restore_report().sequence, first_version + 1);
}

TEST_P(KeeperSnapshotTest, ANewerSchemaVersionIsRefusedWithAClearErrorAndKept) {
  const uint64_t saved = RunAndStop(3, {5, 6});
  auto probe = std::make_shared<Probe>();
  auto refused = Start(Codec(OpenStore(), 2), probe);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr(absl::StrCat("snapshot ", saved)));
  EXPECT_THAT(refused.status().message(), HasSubstr("schema version 3"));
  EXPECT_THAT(refused.status().message(), HasSubstr("reads schema version 2"));
  EXPECT_EQ(probe->first_starts.load(), 0) << "nothing started";
  // The store is untouched: a codec that knows schema 3 still restores it.
  auto keeper = Start(Codec(OpenStore(), 3), std::make_shared<Probe>());
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  EXPECT_EQ(*(*keeper)->state().state, (Tally::State{2, 11}));
}

TEST_P(KeeperSnapshotTest, AnOlderSchemaIsUpgradedStepByStep) {
  RunAndStop(1, {10, 20, 30});
  std::vector<uint32_t> steps;
  KeeperSnapshots<Tally::State> codec = Codec(OpenStore(), 3);
  codec.upgrade = [&steps](uint32_t from, std::string bytes) {
    steps.push_back(from);
    return UpgradeStep(from, std::move(bytes));
  };
  auto keeper = Start(codec, std::make_shared<Probe>());
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  EXPECT_THAT(steps, ElementsAre(1u, 2u));
  EXPECT_EQ((*keeper)->restore_report().schema_version, 1u);
  EXPECT_EQ(*(*keeper)->state().state, (Tally::State{3, 60}));
  // Its next save is in schema 3, which a schema-3 codec without upgrades reads.
  ASSERT_TRUE((*keeper)->Cast(4).ok());
  ASSERT_TRUE((*keeper)->Stop().ok());
  auto next = Start(Codec(OpenStore(), 3), std::make_shared<Probe>());
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(*(*next)->state().state, (Tally::State{4, 64}));
}

TEST_P(KeeperSnapshotTest, AnOlderSchemaWithoutAnUpgradeHookIsRefused) {
  RunAndStop(1, {1});
  auto refused = Start(Codec(OpenStore(), 2), std::make_shared<Probe>());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("schema version 1"));
  EXPECT_THAT(refused.status().message(), HasSubstr("no upgrade hook"));
}

TEST_P(KeeperSnapshotTest, AFailingUpgradeOrDecodeRefusesTheStartNamingTheSnapshot) {
  const uint64_t saved = RunAndStop(1, {1, 2});
  KeeperSnapshots<Tally::State> codec = Codec(OpenStore(), 2);
  codec.upgrade = [](uint32_t, std::string) -> absl::StatusOr<std::string> {
    return absl::DataLossError("field 'sum' is missing");
  };
  auto refused = Start(codec, std::make_shared<Probe>());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(refused.status().message(),
              HasSubstr(absl::StrCat("upgrading snapshot ", saved, " (schema version 1)")));
  EXPECT_THAT(refused.status().message(), HasSubstr("field 'sum' is missing"));

  KeeperSnapshots<Tally::State> bad_decode = Codec(OpenStore(), 1);
  bad_decode.decode = [](const std::string&) -> absl::StatusOr<Tally::State> {
    return absl::DataLossError("garbage");
  };
  refused = Start(bad_decode, std::make_shared<Probe>());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(refused.status().message(), HasSubstr(absl::StrCat("decoding snapshot ", saved)));

  KeeperSnapshots<Tally::State> throwing = Codec(OpenStore(), 1);
  throwing.decode = [](const std::string&) -> absl::StatusOr<Tally::State> {
    throw std::runtime_error("parser exploded");
  };
  refused = Start(throwing, std::make_shared<Probe>());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(refused.status().message(), HasSubstr("parser exploded"));
}

TEST_P(KeeperSnapshotTest, ADamagedNewestSnapshotIsSkippedReportedAndPassed) {
  // Two snapshots on disk: versions 3 (after two casts) and 4.
  {
    auto keeper = Start(Codec(OpenStore(), 1), std::make_shared<Probe>());
    ASSERT_TRUE(keeper.ok()) << keeper.status();
    ASSERT_TRUE((*keeper)->Cast(1).ok());
    ASSERT_TRUE((*keeper)->Cast(2).ok());
    ASSERT_TRUE(Eventually([&] { return (*keeper)->Stats().saved_version == 3; }));
    ASSERT_TRUE((*keeper)->Cast(3).ok());
    ASSERT_TRUE((*keeper)->Stop().ok());
    ASSERT_EQ((*keeper)->Stats().saved_version, 4u);
  }
  std::shared_ptr<FileSnapshotStore> store = OpenStore();
  std::filesystem::resize_file(store->PathFor(4), 20);  // torn

  auto keeper = Start(Codec(store, 1), std::make_shared<Probe>());
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  const RestoreReport& report = (*keeper)->restore_report();
  EXPECT_TRUE(report.restored);
  EXPECT_EQ(report.sequence, 3u);
  ASSERT_EQ(report.skipped.size(), 1u);
  EXPECT_EQ(report.skipped[0].code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(*(*keeper)->state().state, (Tally::State{2, 3}));
  // Versions continue past the damaged snapshot's sequence, so the next save is accepted.
  EXPECT_EQ((*keeper)->state().version, 4u);
  ASSERT_TRUE((*keeper)->Cast(10).ok());
  ASSERT_TRUE((*keeper)->Stop().ok());
  KeeperStats stats = (*keeper)->Stats();
  EXPECT_EQ(stats.snapshot_failures, 0u) << stats.last_snapshot_error;
  EXPECT_EQ(stats.saved_version, 5u);

  auto next = Start(Codec(OpenStore(), 1), std::make_shared<Probe>());
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(*(*next)->state().state, (Tally::State{3, 13}));
  EXPECT_TRUE((*next)->restore_report().skipped.empty());
}

TEST_P(KeeperSnapshotTest, WhenEverySnapshotIsDamagedTheWorkerStartsAfreshAndSaysSo) {
  RunAndStop(1, {1, 2});  // up to version 3, in the newest two snapshot files
  std::shared_ptr<FileSnapshotStore> store = OpenStore();
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    std::filesystem::resize_file(entry.path(), 10);
  }
  auto probe = std::make_shared<Probe>();
  auto keeper = Start(Codec(store, 1), probe, 42);
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  EXPECT_FALSE((*keeper)->restore_report().restored);
  ASSERT_EQ((*keeper)->restore_report().skipped.size(), 1u);
  EXPECT_EQ((*keeper)->restore_report().skipped[0].code(), absl::StatusCode::kNotFound);
  absl::StatusOr<Tally::State> s = (*keeper)->Call({}, absl::Seconds(10));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, (Tally::State{0, 42}));
  EXPECT_EQ(probe->first_starts.load(), 1);
  ASSERT_TRUE((*keeper)->Cast(1).ok());
  ASSERT_TRUE((*keeper)->Stop().ok());
  KeeperStats stats = (*keeper)->Stats();
  EXPECT_EQ(stats.snapshot_failures, 0u) << stats.last_snapshot_error;
  EXPECT_GT(stats.saved_version, 3u) << "saved past the damaged sequences";
  auto next = Start(Codec(OpenStore(), 1), std::make_shared<Probe>());
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(*(*next)->state().state, (Tally::State{1, 43}));
}

TEST_P(KeeperSnapshotTest, AFailingSaveIsCountedAndTheNextCommitSavesAgain) {
  auto fail = std::make_shared<std::atomic<bool>>(true);
  KeeperSnapshots<Tally::State> codec = Codec(OpenStore(), 1);
  codec.encode = [fail](const Tally::State& s) -> absl::StatusOr<std::string> {
    if (fail->load()) return absl::UnavailableError("disk on fire");
    return Encode(1, s);
  };
  auto keeper = Start(codec, std::make_shared<Probe>());
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  ASSERT_TRUE(Eventually([&] { return (*keeper)->Stats().snapshot_failures >= 1; }));
  KeeperStats stats = (*keeper)->Stats();
  EXPECT_EQ(stats.last_snapshot_error.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(stats.last_snapshot_error.message(), HasSubstr("disk on fire"));
  EXPECT_EQ(stats.saved_version, 0u);
  // The worker goes on regardless.
  ASSERT_TRUE((*keeper)->Cast(5).ok());
  absl::StatusOr<Tally::State> s = (*keeper)->Call({}, absl::Seconds(10));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, (Tally::State{1, 5}));
  fail->store(false);
  ASSERT_TRUE((*keeper)->Cast(6).ok());
  ASSERT_TRUE(Eventually([&] { return (*keeper)->Stats().saved_version == 3; }));
  ASSERT_TRUE((*keeper)->Stop().ok());
  auto next = Start(Codec(OpenStore(), 1), std::make_shared<Probe>());
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(*(*next)->state().state, (Tally::State{2, 11}));
}

TEST_P(KeeperSnapshotTest, AThrowingEncoderFailsThatSaveOnly) {
  KeeperSnapshots<Tally::State> codec = Codec(OpenStore(), 1);
  codec.encode = [](const Tally::State& s) -> absl::StatusOr<std::string> {
    if (s.count == 1) throw std::runtime_error("encoder bug");
    return Encode(1, s);
  };
  auto keeper = Start(codec, std::make_shared<Probe>());
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  ASSERT_TRUE(Eventually([&] { return (*keeper)->Stats().saved_version == 1; }));
  ASSERT_TRUE((*keeper)->Cast(1).ok());
  ASSERT_TRUE(Eventually([&] { return (*keeper)->Stats().snapshot_failures == 1; }));
  EXPECT_THAT((*keeper)->Stats().last_snapshot_error.message(), HasSubstr("encoder bug"));
  ASSERT_TRUE((*keeper)->Cast(1).ok());
  ASSERT_TRUE((*keeper)->Stop().ok());
  EXPECT_EQ((*keeper)->Stats().saved_version, 3u);
}

TEST_P(KeeperSnapshotTest, SavesAreCoalescedAndTheLastStateIsSavedOnStop) {
  constexpr int kCasts = 3000;
  auto keeper = Start(Codec(OpenStore(), 1), std::make_shared<Probe>());
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  for (int i = 1; i <= kCasts; ++i) ASSERT_TRUE((*keeper)->Cast(i).ok());
  ASSERT_TRUE((*keeper)->Stop().ok());
  KeeperStats stats = (*keeper)->Stats();
  EXPECT_EQ(stats.version, kCasts + 1u);
  EXPECT_EQ(stats.saved_version, stats.version);
  EXPECT_GE(stats.snapshots_saved, 1u);
  EXPECT_LT(stats.snapshots_saved, stats.version) << "each save writes the newest state";
  std::printf("[          ] %d commits, %llu saves\n", kCasts + 1,
              static_cast<unsigned long long>(stats.snapshots_saved));
  auto next = Start(Codec(OpenStore(), 1), std::make_shared<Probe>());
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(*(*next)->state().state, (Tally::State{kCasts, int64_t{kCasts} * (kCasts + 1) / 2}));
}

TEST_P(KeeperSnapshotTest, GivingUpSavesTheLastState) {
  auto probe = std::make_shared<Probe>();
  KeeperOptions options;
  options.name = "tally";
  options.placement = GetParam();
  options.max_restarts = 1;
  options.backoff_initial = absl::ZeroDuration();
  options.backoff_max = absl::ZeroDuration();
  options.poison_after = 5;
  auto keeper =
      Keeper<Tally>::StartWithSnapshots(*runtime_, 0, Codec(OpenStore(), 1), options,
                                        [probe] { return std::make_unique<Tally>(probe); });
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  ASSERT_TRUE((*keeper)->Cast(9).ok());
  ASSERT_TRUE((*keeper)->Cast(-1).ok());  // crashes every incarnation: gives up
  ASSERT_TRUE(Eventually([&] { return (*keeper)->Stats().phase == KeeperPhase::kGaveUp; }));
  ASSERT_TRUE((*keeper)->Stop().ok());
  EXPECT_EQ((*keeper)->Stats().saved_version, 2u);
  auto next = Start(Codec(OpenStore(), 1), std::make_shared<Probe>());
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(*(*next)->state().state, (Tally::State{1, 9}));
}

TEST_P(KeeperSnapshotTest, ACrashInTheRestoringOnRecoverRecoversAgainFromTheSnapshot) {
  RunAndStop(1, {4, 5});
  auto probe = std::make_shared<Probe>();
  probe->fail_recovers = 1;
  auto keeper = Start(Codec(OpenStore(), 1), probe);
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  absl::StatusOr<Tally::State> s = (*keeper)->Call({}, absl::Seconds(10));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, (Tally::State{2, 9}));
  std::lock_guard<std::mutex> lock(probe->mu);
  ASSERT_EQ(probe->causes.size(), 2u);
  EXPECT_EQ(probe->causes[0].site, CrashSite::kRestart);
  EXPECT_EQ(probe->causes[1].site, CrashSite::kRecover);
  EXPECT_EQ(probe->first_starts.load(), 0);
}

TEST_P(KeeperSnapshotTest, StartingOnTheControlThreadIsRefused) {
  std::shared_ptr<FileSnapshotStore> store = OpenStore();
  std::promise<absl::Status> result;
  ASSERT_TRUE(runtime_
                  ->Post([&] {
                    auto keeper = Start(Codec(store, 1), std::make_shared<Probe>());
                    result.set_value(keeper.status());
                  })
                  .ok());
  absl::Status status = result.get_future().get();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("control thread"));
}

TEST_P(KeeperSnapshotTest, BadSnapshotOptionsAreInvalidArgument) {
  KeeperSnapshots<Tally::State> none = Codec(nullptr, 1);
  EXPECT_EQ(Start(none, std::make_shared<Probe>()).status().code(),
            absl::StatusCode::kInvalidArgument);
  KeeperSnapshots<Tally::State> zero = Codec(OpenStore(), 0);
  EXPECT_EQ(Start(zero, std::make_shared<Probe>()).status().code(),
            absl::StatusCode::kInvalidArgument);
  KeeperSnapshots<Tally::State> no_encode = Codec(OpenStore(), 1);
  no_encode.encode = nullptr;
  EXPECT_EQ(Start(no_encode, std::make_shared<Probe>()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Placements, KeeperSnapshotTest,
                         ::testing::Values(Placement::kOwnThread, Placement::kExecutor),
                         [](const ::testing::TestParamInfo<Placement>& info) {
                           return info.param == Placement::kOwnThread ? "OwnThread" : "Executor";
                         });

// Property checked here: a process whose keeper is SIGKILLed at an arbitrary moment (often
// in the middle of a snapshot write) restarts from an intact snapshot, never behind the last
// save the child reported, and its state is consistent with its version (count = version - 1:
// each commit is one cast). The child (keeper_snapshot_child) restores from the directory,
// casts without pause, and reports each saved version through stdout; 12 rounds, killed 1-30
// ms after its first report.
TEST(KeeperSnapshotCrashTest, AKeeperKilledMidSaveRestartsFromAGoodSnapshot) {
  const std::string dir = MakeTempDir("keel_keeper_crash");
  ASSERT_FALSE(dir.empty());
  constexpr int kRounds = 12;
  std::random_device seed_source;
  const unsigned seed = seed_source();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delay_ms(1, 30);
  uint64_t last_reported = 0;
  int killed = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_NE(pid, -1);
    if (pid == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      ::close(fds[0]);
      ::close(fds[1]);
      ::execl(KEEL_KEEPER_SNAPSHOT_CHILD, KEEL_KEEPER_SNAPSHOT_CHILD, dir.c_str(),
              static_cast<char*>(nullptr));
      _exit(127);
    }
    ::close(fds[1]);
    FILE* reports = ::fdopen(fds[0], "r");
    ASSERT_NE(reports, nullptr);
    // The first report: a save newer than what the child restored from (so every round
    // restarts from a newer snapshot than the last).
    unsigned long long version = 0;
    ASSERT_EQ(std::fscanf(reports, "%llu", &version), 1) << "the child reported nothing";
    ASSERT_GT(version, last_reported);
    last_reported = version;
    // The sleep only picks the moment of the kill; no result depends on its length.
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status)) {
      ++killed;
    } else {
      ASSERT_TRUE(WIFEXITED(status));
      ASSERT_EQ(WEXITSTATUS(status), 0) << "the child failed (see its stderr)";
    }
    while (std::fscanf(reports, "%llu", &version) == 1) {
      ASSERT_GE(version, last_reported);
      last_reported = version;
    }
    std::fclose(reports);

    // The restart, in this process.
    auto runtime = Runtime::Create({.name = "keeper-crash-restart"});
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    auto store = FileSnapshotStore::Open({.directory = dir, .name = "tally", .keep = 2});
    ASSERT_TRUE(store.ok()) << store.status();
    auto probe = std::make_shared<Probe>();
    auto keeper = Keeper<Tally>::StartWithSnapshots(
        **runtime, 0, Codec(std::shared_ptr<SnapshotStore>(std::move(*store)), 1), {},
        [probe] { return std::make_unique<Tally>(probe); });
    ASSERT_TRUE(keeper.ok()) << keeper.status();
    const RestoreReport& report = (*keeper)->restore_report();
    ASSERT_TRUE(report.restored);
    EXPECT_TRUE(report.skipped.empty()) << report.skipped[0];
    EXPECT_GE(report.sequence, last_reported);
    Committed<Tally::State> c = (*keeper)->state();
    ASSERT_NE(c.state, nullptr);
    EXPECT_EQ(c.state->count + 1, static_cast<int64_t>(report.sequence))
        << "the state does not match its version";
    EXPECT_EQ(c.state->sum, c.state->count) << "the child casts 1s";
    last_reported = report.sequence;
  }
  EXPECT_GT(killed, 0) << "no child was killed while it ran";
  std::printf("[          ] %d of %d children killed, last version %llu\n", killed, kRounds,
              static_cast<unsigned long long>(last_reported));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace keel
