// Snapshot, SnapshotStore: the interface through which a worker's committed state is kept
// across process restarts. It lives in keel::core, beside the Keeper that will use it; the
// file-backed implementation, FileSnapshotStore, is in keel::stores
// (keel/snapshot_store.h), and its header comment has the full story and an example.
#ifndef KEEL_SNAPSHOT_H_
#define KEEL_SNAPSHOT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace keel {

// One saved state.
struct Snapshot {
  // The version of the codec that produced `bytes`, for the caller's upgrade hook.
  uint32_t schema_version = 0;
  // Grows with each save (for example the keeper's commit version); the newest snapshot is
  // the one with the highest sequence.
  uint64_t sequence = 0;
  // The state as the user's codec encoded it; opaque to the store.
  std::string bytes;
};

// What Load found: the newest intact snapshot, and the newer ones it had to skip.
struct LoadedSnapshot {
  Snapshot snapshot;
  // One status per newer snapshot that was skipped, newest first: DataLoss for a torn or
  // corrupt one, ResourceExhausted for one over the store's size cap; each message names the
  // snapshot and says what is wrong. Meant to be reported: each one is lost state.
  std::vector<absl::Status> skipped;
};

// The interface a Keeper saves its snapshots through.
//
// Thread safety: implementations say; FileSnapshotStore is thread-safe.
class SnapshotStore {
 public:
  virtual ~SnapshotStore() = default;

  // Stores `snapshot` durably, so that a later Load (in this process or the next) returns it
  // or a newer one. FailedPrecondition when snapshot.sequence is not greater than the last
  // sequence saved; ResourceExhausted when the bytes are over the store's cap. Blocking.
  virtual absl::Status Save(const Snapshot& snapshot) = 0;

  // The newest intact snapshot, with the newer ones skipped on the way. NotFound when there
  // is none (its message lists the skipped ones). Blocking.
  virtual absl::StatusOr<LoadedSnapshot> Load() = 0;

  // The highest sequence the store knows of, damaged snapshots included (nullopt: none); a
  // Save must use a greater one. A Keeper continues its versions past it.
  virtual std::optional<uint64_t> last_sequence() const = 0;
};

}  // namespace keel

#endif  // KEEL_SNAPSHOT_H_
