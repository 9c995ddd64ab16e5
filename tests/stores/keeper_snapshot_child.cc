// The child process of KeeperSnapshotCrashTest (keeper_snapshot_test.cc): restores a Tally
// keeper from the snapshot directory given as its argument, casts 1s in batches without pause,
// and prints each version saved since (newer than the one it restored) on stdout (one per line,
// flushed) until it is killed, or for at most 5 s (then it stops its keeper and exits 0). Exit
// codes: 2 usage, 3 the store or the keeper would not start, 4 a cast or call failed.
#include <chrono>
#include <cstdio>
#include <memory>
#include <variant>

#include "keel/keeper.h"
#include "keel/runtime.h"
#include "keel/snapshot_store.h"
#include "stores/keeper_tally.h"

int main(int argc, char** argv) {
  using keel::testing::Tally;
  if (argc != 2) return 2;
  auto runtime = keel::Runtime::Create({.name = "keeper-crash-child"});
  auto store = keel::FileSnapshotStore::Open({.directory = argv[1], .name = "tally", .keep = 2});
  if (!runtime.ok() || !store.ok()) return 3;
  auto probe = std::make_shared<keel::testing::Probe>();
  auto keeper = keel::Keeper<Tally>::StartWithSnapshots(
      **runtime, 0,
      keel::testing::Codec(std::shared_ptr<keel::SnapshotStore>(std::move(*store)), 1), {},
      [probe] { return std::make_unique<Tally>(probe); });
  if (!keeper.ok()) {
    std::fprintf(stderr, "keeper_snapshot_child: %s\n", keeper.status().ToString().c_str());
    return 3;
  }
  uint64_t reported = (*keeper)->restore_report().sequence;  // only newer saves are news
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < until) {
    for (int i = 0; i < 50; ++i) {
      if (!(*keeper)->Cast(1).ok()) return 4;
    }
    if (!(*keeper)->Call(std::monostate{}, absl::Seconds(10)).ok()) return 4;  // keeps pace
    const uint64_t saved = (*keeper)->Stats().saved_version;
    if (saved > reported) {
      reported = saved;
      std::printf("%llu\n", static_cast<unsigned long long>(saved));
      std::fflush(stdout);
    }
  }
  return (*keeper)->Stop().ok() ? 0 : 4;
}
