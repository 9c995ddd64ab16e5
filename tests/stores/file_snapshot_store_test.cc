// Tests of FileSnapshotStore (keel/snapshot_store.h): format checks, fallback past damaged
// snapshots, pruning, sequence rules, concurrent use, and a real process killed mid-Save.
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "keel/snapshot_store.h"
#include "support/temp_dir.h"

namespace keel {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

// Bytes that tell which sequence wrote them, so a torn or mixed file cannot pass for another.
std::string Payload(uint64_t sequence, size_t size) {
  std::string bytes(size, '\0');
  uint64_t x = sequence * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    bytes[i] = static_cast<char>(x);
  }
  return bytes;
}

Snapshot Make(uint64_t sequence, size_t size = 100, uint32_t schema_version = 1) {
  return Snapshot{schema_version, sequence, Payload(sequence, size)};
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::string> FileNames(const std::string& directory) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(directory)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class FileSnapshotStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("keel_snapshot_test");
    ASSERT_FALSE(dir_.empty());
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  FileSnapshotOptions Options(int keep = 2) {
    FileSnapshotOptions options;
    options.directory = dir_;
    options.name = "state";
    options.keep = keep;
    return options;
  }

  std::unique_ptr<FileSnapshotStore> OpenStore(FileSnapshotOptions options) {
    absl::StatusOr<std::unique_ptr<FileSnapshotStore>> store = FileSnapshotStore::Open(options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  // Saves 1 and 2, damages 2 with `damage`, and expects Load to fall back to 1, reporting 2 as
  // DataLoss with `why` in the message.
  void ExpectNewestSkipped(const std::function<void(const std::string& path)>& damage,
                           const std::string& why) {
    auto store = OpenStore(Options());
    ASSERT_TRUE(store->Save(Make(1)).ok());
    ASSERT_TRUE(store->Save(Make(2)).ok());
    damage(store->PathFor(2));
    absl::StatusOr<LoadedSnapshot> loaded = OpenStore(Options())->Load();
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->snapshot.sequence, 1u);
    EXPECT_EQ(loaded->snapshot.bytes, Payload(1, 100));
    ASSERT_THAT(loaded->skipped, SizeIs(1));
    EXPECT_EQ(loaded->skipped[0].code(), absl::StatusCode::kDataLoss) << loaded->skipped[0];
    EXPECT_THAT(loaded->skipped[0].message(), HasSubstr(store->PathFor(2)));
    EXPECT_THAT(loaded->skipped[0].message(), HasSubstr(why));
  }

  std::string dir_;
};

TEST_F(FileSnapshotStoreTest, ASavedSnapshotLoadsBackInANewStore) {
  auto store = OpenStore(Options());
  EXPECT_EQ(store->last_sequence(), std::nullopt);
  ASSERT_TRUE(store->Save(Snapshot{7, 42, std::string("hello\0world", 11)}).ok());
  ASSERT_TRUE(store->Save(Snapshot{3, 43, std::string()}).ok());  // empty bytes are fine
  EXPECT_EQ(store->PathFor(42), dir_ + "/state.00000000000000000042.snap");

  auto reopened = OpenStore(Options());
  EXPECT_EQ(reopened->last_sequence(), 43u);
  absl::StatusOr<LoadedSnapshot> loaded = reopened->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->snapshot.schema_version, 3u);
  EXPECT_EQ(loaded->snapshot.sequence, 43u);
  EXPECT_EQ(loaded->snapshot.bytes, "");
  EXPECT_TRUE(loaded->skipped.empty());

  struct stat st;
  ASSERT_EQ(::stat(store->PathFor(43).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(FileSnapshotStoreTest, TheNewestSnapshotWins) {
  auto store = OpenStore(Options(/*keep=*/5));
  for (uint64_t sequence : {3, 10, 11, 200}) {
    ASSERT_TRUE(store->Save(Make(sequence, 1000, static_cast<uint32_t>(sequence))).ok());
  }
  absl::StatusOr<LoadedSnapshot> loaded = store->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->snapshot.sequence, 200u);
  EXPECT_EQ(loaded->snapshot.schema_version, 200u);
  EXPECT_EQ(loaded->snapshot.bytes, Payload(200, 1000));
}

TEST_F(FileSnapshotStoreTest, SaveKeepsOnlyTheNewestKeepFiles) {
  auto store = OpenStore(Options(/*keep=*/2));
  // A file of another store in the same directory is never touched.
  auto other = OpenStore(FileSnapshotOptions{dir_, "other", 1});
  ASSERT_TRUE(other->Save(Make(1)).ok());
  for (uint64_t sequence = 1; sequence <= 5; ++sequence) {
    ASSERT_TRUE(store->Save(Make(sequence)).ok());
  }
  EXPECT_THAT(FileNames(dir_), ::testing::ElementsAre("other.00000000000000000001.snap",
                                                      "state.00000000000000000004.snap",
                                                      "state.00000000000000000005.snap"));
  absl::StatusOr<LoadedSnapshot> loaded = other->Load();
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->snapshot.sequence, 1u);
}

TEST_F(FileSnapshotStoreTest, ATruncatedNewestSnapshotIsSkipped) {
  ExpectNewestSkipped(
      [](const std::string& path) {
        std::string bytes = ReadAll(path);
        WriteAll(path, bytes.substr(0, bytes.size() / 2));
      },
      "truncated");
}

TEST_F(FileSnapshotStoreTest, AnEmptyNewestSnapshotIsSkipped) {
  ExpectNewestSkipped([](const std::string& path) { WriteAll(path, ""); }, "bad magic");
}

TEST_F(FileSnapshotStoreTest, ANewestSnapshotWithAFlippedByteIsSkipped) {
  ExpectNewestSkipped(
      [](const std::string& path) {
        std::string bytes = ReadAll(path);
        bytes[bytes.size() / 2] ^= 0x10;
        WriteAll(path, bytes);
      },
      "checksum");
}

TEST_F(FileSnapshotStoreTest, ANewestSnapshotWithTrailingBytesIsSkipped) {
  ExpectNewestSkipped([](const std::string& path) { WriteAll(path, ReadAll(path) + "x"); },
                      "trailing");
}

TEST_F(FileSnapshotStoreTest, ANewestSnapshotWithAWrongMagicIsSkipped) {
  ExpectNewestSkipped(
      [](const std::string& path) {
        std::string bytes = ReadAll(path);
        bytes.replace(0, 8, "KEELSNP2");
        WriteAll(path, bytes);
      },
      "bad magic");
}

TEST_F(FileSnapshotStoreTest, ANewestSnapshotWhoseNameDisagreesWithItsSequenceIsSkipped) {
  // A whole, intact file under the wrong name: copied or renamed by hand.
  ExpectNewestSkipped(
      [this](const std::string& path) {
        std::filesystem::copy_file(dir_ + "/state.00000000000000000001.snap", path,
                                   std::filesystem::copy_options::overwrite_existing);
      },
      "holds sequence 1 but its name says 2");
}

TEST_F(FileSnapshotStoreTest, ADirectoryUnderASnapshotsNameIsSkipped) {
  ExpectNewestSkipped(
      [](const std::string& path) {
        std::filesystem::remove(path);
        std::filesystem::create_directory(path);
      },
      "not a regular file");
}

TEST_F(FileSnapshotStoreTest, NoSnapshotIsNotFound) {
  absl::StatusOr<LoadedSnapshot> loaded = OpenStore(Options())->Load();
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound) << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("no intact snapshot named state"));
}

TEST_F(FileSnapshotStoreTest, WhenEverySnapshotIsDamagedLoadIsNotFoundNamingThem) {
  auto store = OpenStore(Options());
  ASSERT_TRUE(store->Save(Make(1)).ok());
  ASSERT_TRUE(store->Save(Make(2)).ok());
  WriteAll(store->PathFor(1), "KEELSNP1");
  WriteAll(store->PathFor(2), "garbage");
  absl::StatusOr<LoadedSnapshot> loaded = store->Load();
  ASSERT_EQ(loaded.status().code(), absl::StatusCode::kNotFound) << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("skipped 2"));
  EXPECT_THAT(loaded.status().message(), HasSubstr(store->PathFor(1) + ": truncated"));
  EXPECT_THAT(loaded.status().message(), HasSubstr(store->PathFor(2) + ": not a keel snapshot"));
}

TEST_F(FileSnapshotStoreTest, ASequenceNotGreaterThanTheLastIsRefused) {
  auto store = OpenStore(Options());
  ASSERT_TRUE(store->Save(Make(5)).ok());
  absl::Status again = store->Save(Make(5));
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
  EXPECT_THAT(again.message(), HasSubstr("greater than the last one (5)"));
  EXPECT_EQ(store->Save(Make(4)).code(), absl::StatusCode::kFailedPrecondition);

  // A new store learns the last sequence from the disk, damaged files included (a save under
  // them would be shadowed by them).
  WriteAll(dir_ + "/state.00000000000000000009.snap", "damaged");
  auto reopened = OpenStore(Options());
  EXPECT_EQ(reopened->last_sequence(), 9u);
  EXPECT_EQ(reopened->Save(Make(9)).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(reopened->Save(Make(10)).ok());
  absl::StatusOr<LoadedSnapshot> loaded = reopened->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->snapshot.sequence, 10u);
  EXPECT_TRUE(loaded->skipped.empty());
  // Sequence 0 is a valid first sequence, and the largest one is representable.
  auto fresh = OpenStore(FileSnapshotOptions{dir_, "fresh"});
  ASSERT_TRUE(fresh->Save(Make(0)).ok());
  ASSERT_TRUE(fresh->Save(Make(UINT64_MAX)).ok());
  loaded = OpenStore(FileSnapshotOptions{dir_, "fresh"})->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->snapshot.sequence, UINT64_MAX);
}

TEST_F(FileSnapshotStoreTest, OversizedSnapshotsAreRefusedOnSaveAndSkippedOnLoad) {
  FileSnapshotOptions small = Options();
  small.max_bytes = 16;
  auto store = OpenStore(small);
  ASSERT_TRUE(store->Save(Make(1, 16)).ok());
  absl::Status big = store->Save(Make(2, 17));
  EXPECT_EQ(big.code(), absl::StatusCode::kResourceExhausted) << big;
  EXPECT_FALSE(std::filesystem::exists(store->PathFor(2)));
  ASSERT_TRUE(store->Save(Make(2, 16)).ok());  // the refused save did not use up sequence 2

  // A file written under a larger cap is skipped by a store with a smaller one.
  auto large = OpenStore(Options());
  ASSERT_TRUE(large->Save(Make(3, 1000)).ok());
  absl::StatusOr<LoadedSnapshot> loaded = store->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->snapshot.sequence, 2u);
  ASSERT_THAT(loaded->skipped, SizeIs(1));
  EXPECT_EQ(loaded->skipped[0].code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(loaded->skipped[0].message(), HasSubstr(store->PathFor(3)));
}

TEST_F(FileSnapshotStoreTest, BadOptionsAreInvalidArgument) {
  auto code = [](FileSnapshotOptions options) {
    return FileSnapshotStore::Open(std::move(options)).status().code();
  };
  EXPECT_EQ(code(FileSnapshotOptions{"", "state"}), absl::StatusCode::kInvalidArgument);
  for (const char* name : {"", ".hidden", "a/b", "with space", "..", "x\n"}) {
    EXPECT_EQ(code(FileSnapshotOptions{dir_, name}), absl::StatusCode::kInvalidArgument) << name;
  }
  EXPECT_EQ(code(FileSnapshotOptions{dir_, std::string(129, 'a')}),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(FileSnapshotOptions{dir_, "state", 0}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(FileSnapshotOptions{dir_, "state", -1}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(FileSnapshotOptions{dir_, "state", 2, 0}), absl::StatusCode::kInvalidArgument);
  WriteAll(dir_ + "/file", "x");
  absl::Status not_a_dir =
      FileSnapshotStore::Open(FileSnapshotOptions{dir_ + "/file", "s"}).status();
  EXPECT_EQ(not_a_dir.code(), absl::StatusCode::kInvalidArgument) << not_a_dir;
  EXPECT_THAT(not_a_dir.message(), HasSubstr("is not a directory"));
  EXPECT_TRUE(FileSnapshotStore::Open(FileSnapshotOptions{dir_, "Ok_name-1.v2"}).ok());
}

TEST_F(FileSnapshotStoreTest, OpenCreatesAMissingDirectoryButNotItsParents) {
  const std::string sub = dir_ + "/snapshots";
  auto store = OpenStore(FileSnapshotOptions{sub, "state"});
  struct stat st;
  ASSERT_EQ(::stat(sub.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0077, 0u);  // private to the user
  ASSERT_TRUE(store->Save(Make(1)).ok());

  absl::Status missing =
      FileSnapshotStore::Open(FileSnapshotOptions{dir_ + "/no/such", "state"}).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << missing;
}

TEST_F(FileSnapshotStoreTest, LeftoverTemporaryFilesAreIgnoredByLoadAndRemovedBySave) {
  auto store = OpenStore(Options());
  ASSERT_TRUE(store->Save(Make(1)).ok());
  // What a Save killed mid-write leaves: a temporary next to where sequence 2 would go.
  const std::string leftover = store->PathFor(2) + ".tmp.Ab12Cd";
  const std::string full = ReadAll(store->PathFor(1));
  WriteAll(leftover, full.substr(0, full.size() / 2));
  const std::string unrelated = dir_ + "/state.notes";
  WriteAll(unrelated, "kept");

  auto reopened = OpenStore(Options());  // Open changes nothing: readers open stores too
  EXPECT_TRUE(std::filesystem::exists(leftover));
  EXPECT_EQ(reopened->last_sequence(), 1u);  // a temporary is not a sequence
  absl::StatusOr<LoadedSnapshot> loaded = reopened->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->snapshot.sequence, 1u);
  EXPECT_TRUE(loaded->skipped.empty());
  EXPECT_TRUE(std::filesystem::exists(leftover));  // Load only reads

  ASSERT_TRUE(reopened->Save(Make(2)).ok());
  EXPECT_FALSE(std::filesystem::exists(leftover));
  EXPECT_TRUE(std::filesystem::exists(unrelated));
  EXPECT_THAT(FileNames(dir_),
              ::testing::ElementsAre("state.00000000000000000001.snap",
                                     "state.00000000000000000002.snap", "state.notes"));
}

// Property: a Load that runs while Saves replace and prune files always returns a whole
// snapshot that some Save wrote (never a torn or mixed one, never a skipped file), and the
// sequences one reader sees never go back.
TEST_F(FileSnapshotStoreTest, ConcurrentLoadsNeverSeeATornSnapshot) {
  auto store = OpenStore(Options(/*keep=*/2));
  constexpr uint64_t kSaves = 150;
  constexpr size_t kSize = 64 << 10;
  ASSERT_TRUE(store->Save(Make(1, kSize)).ok());
  std::atomic<bool> done{false};
  std::atomic<int> loads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      auto reader = OpenStore(Options());  // another store, as another process would have
      uint64_t last = 0;
      while (!done.load()) {
        absl::StatusOr<LoadedSnapshot> loaded = (r == 0 ? store.get() : reader.get())->Load();
        ASSERT_TRUE(loaded.ok()) << loaded.status();
        ASSERT_TRUE(loaded->skipped.empty()) << loaded->skipped[0];
        ASSERT_GE(loaded->snapshot.sequence, last);
        last = loaded->snapshot.sequence;
        ASSERT_EQ(loaded->snapshot.bytes, Payload(last, kSize));
        loads.fetch_add(1);
      }
    });
  }
  for (uint64_t sequence = 2; sequence <= kSaves; ++sequence) {
    absl::Status saved = store->Save(Make(sequence, kSize));
    EXPECT_TRUE(saved.ok()) << saved;
    if (!saved.ok()) break;
  }
  done = true;
  for (auto& reader : readers) reader.join();
  EXPECT_GT(loads.load(), 0);
  EXPECT_THAT(FileNames(dir_), SizeIs(2));
}

// Property: Saves from several threads are serialised: each one either lands or is refused as
// stale, and afterwards the store holds the greatest sequence that landed.
TEST_F(FileSnapshotStoreTest, SavesFromSeveralThreadsKeepTheGreatestSequence) {
  auto store = OpenStore(Options(/*keep=*/3));
  std::atomic<uint64_t> next{1};
  std::atomic<uint64_t> greatest_saved{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 3; ++w) {
    writers.emplace_back([&] {
      for (int i = 0; i < 40; ++i) {
        const uint64_t sequence = next.fetch_add(1);
        absl::Status saved = store->Save(Make(sequence, 4096));
        if (saved.ok()) {
          uint64_t seen = greatest_saved.load();
          while (seen < sequence && !greatest_saved.compare_exchange_weak(seen, sequence)) {
          }
        } else {
          ASSERT_EQ(saved.code(), absl::StatusCode::kFailedPrecondition) << saved;
        }
      }
    });
  }
  for (auto& writer : writers) writer.join();
  absl::StatusOr<LoadedSnapshot> loaded = store->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->snapshot.sequence, greatest_saved.load());
  EXPECT_EQ(loaded->snapshot.sequence, store->last_sequence());
  EXPECT_TRUE(loaded->skipped.empty());
  EXPECT_THAT(FileNames(dir_), SizeIs(3));
}

// Property checked here: a process SIGKILLed at an arbitrary moment while it saves snapshots
// leaves a directory from which a restarted process loads an intact snapshot at least as new
// as the last Save the killed one saw succeed; never a torn one, never a skipped one.
// The child is a plain fork that only uses the store (no keel runtime threads) and reports
// each sequence it saved through a pipe; 20 rounds, each killed 1-20 ms after the child
// opened its store.
TEST(SnapshotStoreCrashTest, AProcessKilledMidWriteRestartsFromAGoodSnapshot) {
  const std::string dir = testing::MakeTempDir("keel_snapshot_crash");
  ASSERT_FALSE(dir.empty());
  const FileSnapshotOptions options{dir, "crash", 2};
  constexpr size_t kSize = 256 << 10;
  constexpr int kRounds = 20;
  constexpr uint64_t kReady = 0;  // the child's first report: its store is open

  std::random_device seed_source;
  const unsigned seed = seed_source();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delay_ms(1, 20);

  uint64_t last_reported = 0;
  int killed_mid_run = 0;
  int temporaries_found = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_NE(pid, -1);
    if (pid == 0) {
      // Child: save in a tight loop until killed (bounded: 5 s or 100000 saves). Exit codes
      // say what failed.
      ::close(fds[0]);
      auto store = FileSnapshotStore::Open(options);
      if (!store.ok()) _exit(10);
      uint64_t report = kReady;
      if (::write(fds[1], &report, sizeof report) != sizeof report) _exit(11);
      uint64_t sequence = (*store)->last_sequence().value_or(0) + 1;
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      for (int i = 0; i < 100000 && std::chrono::steady_clock::now() < until; ++i, ++sequence) {
        if (!(*store)
                 ->Save(Snapshot{static_cast<uint32_t>(round), sequence, Payload(sequence, kSize)})
                 .ok()) {
          _exit(12);
        }
        if (::write(fds[1], &sequence, sizeof sequence) != sizeof sequence) _exit(11);
      }
      _exit(0);
    }
    ::close(fds[1]);
    // Wait (bounded) for the child to be ready, let it save for a while, kill it.
    pollfd ready{fds[0], POLLIN, 0};
    ASSERT_EQ(::poll(&ready, 1, 10000), 1) << "the child never opened its store";
    if (round % 2 == 0) {
      // Every other round waits for a finished save before the kill, so that the restarts are
      // from a snapshot however slow this build is (sanitizers); the other rounds may kill
      // the child before its first save.
      for (bool saved = false; !saved;) {
        pollfd more{fds[0], POLLIN, 0};
        ASSERT_EQ(::poll(&more, 1, 10000), 1) << "the child saved nothing within 10 s";
        uint64_t report = 0;
        ASSERT_EQ(::read(fds[0], &report, sizeof report), static_cast<ssize_t>(sizeof report));
        if (report != kReady) {
          ASSERT_GT(report, last_reported);
          last_reported = report;
          saved = true;
        }
      }
    }
    // The sleep only picks a moment for the kill (mid-write or between writes); no result
    // depends on its length.
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status)) {
      EXPECT_EQ(WTERMSIG(status), SIGKILL);
      ++killed_mid_run;
    } else {
      ASSERT_TRUE(WIFEXITED(status));
      ASSERT_EQ(WEXITSTATUS(status), 0) << "10: Open failed, 11: pipe write, 12: Save failed";
    }
    // Everything the child reported, up to end of file (the child is gone).
    uint64_t report;
    ssize_t got;
    while ((got = ::read(fds[0], &report, sizeof report)) == sizeof report) {
      if (report != kReady) {
        ASSERT_GT(report, last_reported);
        last_reported = report;
      }
    }
    ASSERT_EQ(got, 0) << "a torn report";
    ::close(fds[0]);

    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      if (entry.path().filename().string().find(".tmp.") != std::string::npos) {
        ++temporaries_found;
      }
    }
    // The restart: a new store on the same directory.
    absl::StatusOr<std::unique_ptr<FileSnapshotStore>> restarted = FileSnapshotStore::Open(options);
    ASSERT_TRUE(restarted.ok()) << restarted.status();
    absl::StatusOr<LoadedSnapshot> loaded = (*restarted)->Load();
    if (last_reported == 0) {
      // Killed before its first Save returned: nothing, or that first snapshot.
      if (!loaded.ok()) {
        ASSERT_EQ(loaded.status().code(), absl::StatusCode::kNotFound) << loaded.status();
        continue;
      }
    }
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(loaded->skipped.empty()) << loaded->skipped[0];
    EXPECT_GE(loaded->snapshot.sequence, last_reported);
    ASSERT_EQ(loaded->snapshot.bytes, Payload(loaded->snapshot.sequence, kSize))
        << "snapshot " << loaded->snapshot.sequence << " holds another sequence's bytes";
    // At most one save past the last report: the one whose report the kill cut off.
    EXPECT_LE(loaded->snapshot.sequence, last_reported + 1);
    last_reported = loaded->snapshot.sequence;
  }
  EXPECT_GT(killed_mid_run, 0) << "no child was killed while saving";
  EXPECT_GT(last_reported, 0u) << "no child ever saved";
  std::printf(
      "[          ] %d of %d children killed mid-run, last sequence %llu, %d leftover "
      "temporary files found\n",
      killed_mid_run, kRounds, static_cast<unsigned long long>(last_reported), temporaries_found);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace keel
