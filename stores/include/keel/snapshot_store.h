// FileSnapshotStore, and the SnapshotStore interface it implements (keel/snapshot.h, in
// keel::core): where a worker's committed state is kept across process restarts.
//
// A Keeper keeps its worker's state across the worker's own crashes in memory; to survive a
// restart of the whole process it also saves snapshots (the state encoded by the user's
// codec, with the codec's schema version and a sequence that grows with each save, such as
// the keeper's commit version) to a store, and on start loads the newest intact one. A
// snapshot that was torn or corrupted on disk is skipped, reported, and the one before it is
// used, so that one bad file costs the last few commits, not the state.
//
//   auto store = keel::FileSnapshotStore::Open({.directory = "/var/lib/svc", .name = "cart"});
//   if (!store.ok()) return store.status();
//   // On start, on the offload pool:
//   absl::StatusOr<keel::LoadedSnapshot> loaded = (*store)->Load();
//   if (loaded.ok()) {
//     for (const absl::Status& bad : loaded->skipped) LogWarning(bad);
//     state = Decode(loaded->snapshot.schema_version, loaded->snapshot.bytes);
//   } else if (!absl::IsNotFound(loaded.status())) {
//     return loaded.status();
//   }
//   // After a commit, on the offload pool:
//   absl::Status saved = (*store)->Save({.schema_version = 3, .sequence = version,
//                                        .bytes = Encode(state)});
//
// Progress: Save and Load block on file I/O (Save flushes the file and its directory to
// disk). Call them on the runtime's offload pool or a worker thread, never on the control
// thread.
//
// Costs: FileSnapshotStore::Save builds the whole file in memory (the snapshot's bytes plus 36
// bytes) before writing it, and flushes twice (the file, then its directory); Load reads one
// file whole, more only when newer ones are damaged.
#ifndef KEEL_SNAPSHOT_STORE_H_
#define KEEL_SNAPSHOT_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "keel/internal/sync.h"
#include "keel/snapshot.h"

namespace keel {

struct FileSnapshotOptions {
  // The directory that holds the snapshot files. Created (mode 0700) when missing; its parent
  // must exist.
  std::string directory;
  // The snapshots' file-name prefix: 1 to 128 characters out of [A-Za-z0-9._-], not starting
  // with a dot. Several stores may share a directory under different names.
  std::string name;
  // How many snapshot files to keep (the newest ones), at least 1. More than one keeps an
  // older snapshot to fall back to if the newest is damaged on disk.
  int keep = 2;
  // The largest Snapshot::bytes accepted by Save and read by Load, at least 1.
  uint64_t max_bytes = uint64_t{1} << 30;
};

// A SnapshotStore in files: one file per snapshot, "<directory>/<name>.<sequence as 20
// decimal digits>.snap", written atomically (a temporary file with mode 0600, flushed to disk,
// renamed into place, the directory flushed), so that a crash, a kill or a power cut during a
// Save leaves the snapshots as they were plus, at most, a whole new one.
//
// Format, all integers little-endian:
//   "KEELSNP1"             8 bytes, magic and format version
//   u32 schema_version
//   u64 sequence           must match the file name
//   u64 length + bytes     the snapshot's bytes
//   u64 checksum           content hash of everything above (not an authenticator)
//
// One writer: only one FileSnapshotStore (in one process) may Save under a given directory
// and name at a time; a second writer's Saves may fail, or replace and prune the first one's
// snapshots, but never tear one. Stores
// that only Load (in this process or others) are safe at any time: they never see a torn
// file.
//
// Leftover temporary files ("<name>.<digits>.snap.tmp.*", from a process killed mid-Save) are
// ignored by Load and removed by the next successful Save.
//
// Thread safety: thread-safe. Saves are serialised by an internal mutex; Load may run
// concurrently with Save and with other Loads (it retries if a Save prunes the files it
// listed).
class FileSnapshotStore final : public SnapshotStore {
 public:
  // Validates `options` (InvalidArgument naming the bad one), creates the directory if it is
  // missing (NotFound when its parent is), and learns the highest sequence on disk. Changes no
  // file, so a process that only loads may open a store another process saves to. Blocking.
  static absl::StatusOr<std::unique_ptr<FileSnapshotStore>> Open(FileSnapshotOptions options);

  // Writes the snapshot's file atomically, then removes the oldest files beyond `keep` and
  // leftover temporary files.
  // FailedPrecondition when snapshot.sequence is not greater than last_sequence();
  // ResourceExhausted when snapshot.bytes is over max_bytes (nothing is written). A failure
  // to remove an old file is not an error. Blocking; any thread.
  absl::Status Save(const Snapshot& snapshot) override;

  // Tries the snapshot files newest first and returns the first intact one; each damaged
  // newer one is listed in `skipped`. NotFound when no file is intact. An I/O error other than
  // a missing file (a permission error, say) is returned as is rather than skipped, so that a
  // readable older snapshot never silently replaces an unreadable newer one. Blocking; any
  // thread.
  absl::StatusOr<LoadedSnapshot> Load() override;

  // The highest sequence this store knows of: the highest in a snapshot file name seen by
  // Open or Load (intact or not), or saved since; nullopt when there is none. A Save must use
  // a greater one. Any thread.
  std::optional<uint64_t> last_sequence() const override ABSL_LOCKS_EXCLUDED(sequence_mu_);

  // The file a snapshot with `sequence` is saved to.
  std::string PathFor(uint64_t sequence) const;

  const FileSnapshotOptions& options() const { return options_; }

 private:
  explicit FileSnapshotStore(FileSnapshotOptions options);

  // Raises last_sequence_ to at least `sequence`.
  void NoteSequence(uint64_t sequence) ABSL_LOCKS_EXCLUDED(sequence_mu_);

  const FileSnapshotOptions options_;
  // Serialises Save (check, write, prune) so that sequences stay ordered on disk.
  internal::Mutex save_mu_;
  mutable internal::Mutex sequence_mu_;
  std::optional<uint64_t> last_sequence_ ABSL_GUARDED_BY(sequence_mu_);
};

}  // namespace keel

#endif  // KEEL_SNAPSHOT_STORE_H_
