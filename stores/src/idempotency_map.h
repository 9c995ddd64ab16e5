// Internal to keel::stores: the in-memory idempotency store, a sharded hash map with one timer
// wheel per shard for expiry.
//
// Its operations are the store contract the tracker needs, shaped so that a shared SQL store
// can offer the same ones: TryClaim is an atomic insert-if-absent (or replace a record that
// the rules say is free), Complete / Halt / Release are conditional on the owner token, and
// expiry is data (each record carries its instants; a sweep removes what has expired).
//
// Invariants (each under the shard's lock):
//   1. Every record in a shard's map has exactly one pending timer in that shard's wheel, at
//      the record's next instant of interest: the lease deadline while processing (when the
//      lease ends before the record expires), else the expiry. `timer` names it.
//   2. The wheel's payload is a pointer to the key inside the map's node (a node map: the
//      address is stable until the record is erased, and erasing cancels the timer first).
//   3. `entries_` counts the records of all shards; a claim that would pass max_entries is
//      refused before anything is inserted.
#ifndef KEEL_STORES_SRC_IDEMPOTENCY_MAP_H_
#define KEEL_STORES_SRC_IDEMPOTENCY_MAP_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "keel/clock.h"
#include "keel/idempotency.h"
#include "keel/internal/sync.h"
#include "keel/timer_wheel.h"

namespace keel::internal {

enum class RecordState { kProcessing, kCompleted, kHalted };

// A snapshot of one key's record.
struct IdempotencyRecord {
  RecordState state = RecordState::kProcessing;
  std::string fingerprint;
  uint64_t owner = 0;      // the claim's token (processing)
  Instant lease_deadline;  // processing
  Instant expires;
  std::shared_ptr<const IdempotentResponse> response;  // completed
  std::string halt_reason;                             // halted
};

// When a live record may be replaced by a new claim.
struct ClaimRules {
  Instant now;
  absl::Duration lease;
  absl::Duration retention;
  bool reclaim_lapsed_lease;  // LeaseExpiry::kReclaim
  bool release_halted;        // HaltedEntries::kReleaseKey
  size_t max_entries;
};

struct ClaimAttempt {
  bool claimed = false;
  IdempotencyRecord record;  // the new record when claimed, else the live one found
};

// The halt reason of a processing record whose lease ran out.
inline constexpr char kLeaseLapsedReason[] =
    "the claim's lease ran out before it settled (its owner died or hangs)";

// True when `r` is processing and its lease ran out at `now`.
bool LeaseLapsed(const IdempotencyRecord& r, Instant now);

struct SweepResult {
  size_t expired = 0;  // records removed
  size_t lapsed = 0;   // processing records whose lease ran out (halted or removed)
};

class ShardedIdempotencyMap {
 public:
  // `shards` is a power of two; `start` is the wheels' first tick.
  ShardedIdempotencyMap(int shards, Instant start);
  ~ShardedIdempotencyMap();

  // Claims `key` for `owner` when it is absent, expired, or free by `rules`; otherwise returns
  // the live record. A live record with another fingerprint is never replaced (mismatch
  // comes first), except when its lease lapsed under reclaim_lapsed_lease, which frees the key
  // whatever the payload. ResourceExhausted when a new record would pass max_entries.
  absl::StatusOr<ClaimAttempt> TryClaim(std::string_view key, std::string_view fingerprint,
                                        uint64_t owner, const ClaimRules& rules);

  // Conditional on `owner` holding a processing record whose lease has not run out at `now`;
  // FailedPrecondition otherwise, and nothing changes.
  absl::Status Complete(std::string_view key, uint64_t owner,
                        std::shared_ptr<const IdempotentResponse> response, Instant now,
                        absl::Duration retention);
  absl::Status Halt(std::string_view key, uint64_t owner, std::string reason, Instant now,
                    absl::Duration retention);
  absl::Status Release(std::string_view key, uint64_t owner, Instant now);

  // Advances every shard's wheel to `now`: removes expired records, and applies lapsed leases
  // (halt, or remove when `reclaim_lapsed_lease`). One shard locked at a time.
  SweepResult Sweep(Instant now, bool reclaim_lapsed_lease);

  struct Counts {
    uint64_t processing = 0, completed = 0, halted = 0;
  };
  Counts CountByState() const;
  size_t size() const noexcept { return entries_.load(std::memory_order_relaxed); }

 private:
  struct Slot {
    IdempotencyRecord record;
    TimerId timer = kInvalidTimerId;
  };
  struct Shard {
    mutable Mutex mu;
    absl::node_hash_map<std::string, Slot> map ABSL_GUARDED_BY(mu);
    TimerWheel<const std::string*> wheel ABSL_GUARDED_BY(mu);
    int64_t counts[3] ABSL_GUARDED_BY(mu) = {0, 0, 0};  // records by RecordState
    explicit Shard(uint64_t start_tick) : wheel(start_tick) {}
  };

  Shard& ShardFor(std::string_view key);
  uint64_t Tick(Instant t) const;
  // Re-arms the slot's timer at its record's next instant of interest (invariant 1).
  void Arm(Shard& shard, const std::string* key, Slot& slot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Finds `key` held as processing by `owner` with a live lease, or says why not.
  absl::StatusOr<Slot*> Owned(Shard& shard, std::string_view key, uint64_t owner, Instant now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void Erase(Shard& shard, absl::node_hash_map<std::string, Slot>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  static void SetState(Shard& shard, IdempotencyRecord& r, RecordState state)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Complete and Halt: checks ownership, moves the record to `state`, lets `fill` set the
  // state's data, restarts retention and re-arms the timer, all under the shard's lock.
  absl::Status Settle(std::string_view key, uint64_t owner, Instant now, RecordState state,
                      absl::Duration retention, absl::FunctionRef<void(IdempotencyRecord&)> fill);

  const Instant epoch_;
  std::vector<std::unique_ptr<Shard>> shards_;
  const uint64_t shard_mask_;
  std::atomic<size_t> entries_{0};
};

}  // namespace keel::internal

#endif  // KEEL_STORES_SRC_IDEMPOTENCY_MAP_H_
