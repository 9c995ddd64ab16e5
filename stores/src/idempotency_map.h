// Internal to keel::stores: the in-memory idempotency store, a sharded hash map with one timer
// wheel per shard for expiry.
//
// Its operations are the store contract the tracker needs, shaped so that a shared SQL store
// can offer the same ones: TryClaim is an atomic insert-if-absent (or replace a record that
// the rules say is free), Complete / Halt / Release are conditional on the owner token, and
// expiry is data (each record carries its instants; a sweep removes what has expired).
//
// Layout: a record is one allocation (an Entry: its fields, then the key's bytes; the
// fingerprint inline up to 32 bytes); a shard's table is an absl::flat_hash_set of Entry
// pointers hashed by the key (each entry caches its hash, so growing the table and erasing
// never hash a key again). The key's hash picks the shard too, computed once per call.
//
// Invariants (each under the shard's lock):
//   1. Every entry in a shard's set has exactly one pending timer in that shard's wheel, at
//      or before the entry's next instant of interest: the lease deadline while processing
//      (when the lease ends before the entry expires), else the expiry. `timer` names it. A
//      claim arms it at that instant; settling (Complete, Halt) leaves it where it is, since
//      the new expiry is normally no earlier than the lease deadline (retention >= lease), so
//      the request path does no timer work; a sweep that finds a timer fired early re-arms
//      it.
//   2. The wheel's payload is the Entry's address; an entry leaves the set (and its timer is
//      cancelled, unless it is the one firing) before it is freed.
//   3. Places: free_places_ + the shards' credits + the entries of all shards ==
//      max_entries. A new entry spends one of its shard's credits; a shard out of credits
//      takes a batch from free_places_, and gives back its surplus when entries leave. So
//      the bound is exact (a claim is refused only when no place is left, after the other
//      shards' unused credits were gathered), and the request path touches the shared
//      counter once per kCreditBatch new entries, not on each.
//   4. `counts` counts the shard's entries by state; `events` only grows.
// Entries leave a shard under its lock and are freed after the lock is released, so a shard
// lock is never held across the frees of a record and its response.
#ifndef KEEL_STORES_SRC_IDEMPOTENCY_MAP_H_
#define KEEL_STORES_SRC_IDEMPOTENCY_MAP_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "keel/clock.h"
#include "keel/idempotency.h"
#include "keel/internal/sync.h"
#include "keel/timer_wheel.h"

namespace keel::internal {

enum class RecordState : uint8_t { kProcessing, kCompleted, kHalted };

// When a live record may be replaced by a new claim.
struct ClaimRules {
  Instant now;
  absl::Duration lease;
  absl::Duration retention;
  bool reclaim_lapsed_lease;  // LeaseExpiry::kReclaim
  bool release_halted;        // HaltedEntries::kReleaseKey
};

// What TryClaim found, decided under the shard's lock (the fingerprint check first).
enum class ClaimOutcome { kClaimed, kInFlight, kReplay, kHalted, kMismatch };

struct ClaimAttempt {
  ClaimOutcome outcome = ClaimOutcome::kClaimed;
  uint64_t owner = 0;      // kClaimed: the new owner; kInFlight: the live owner
  Instant lease_deadline;  // kClaimed, kInFlight
  Instant expires;
  std::shared_ptr<const IdempotentResponse> response;  // kReplay
  std::string detail;  // kHalted: the reason; kMismatch: the stored fingerprint
};

// The halt reason of a processing record whose lease ran out.
inline constexpr char kLeaseLapsedReason[] =
    "the claim's lease ran out before it settled (its owner died or hangs)";

struct SweepResult {
  size_t expired = 0;  // records removed because they expired
  size_t lapsed = 0;   // processing records whose lease ran out (halted or removed)
};

// Events counted by the shards (under their locks, so counting costs no shared cache line).
struct MapEvents {
  uint64_t claims = 0, replays = 0, conflicts = 0, mismatches = 0, halts = 0, halted_answers = 0,
           expirations = 0;
};

class ShardedIdempotencyMap {
 public:
  // `shards` is a power of two; `start` is the wheels' first tick; at most `max_entries`
  // entries are held at once.
  ShardedIdempotencyMap(int shards, Instant start, size_t max_entries);
  ~ShardedIdempotencyMap();
  ShardedIdempotencyMap(const ShardedIdempotencyMap&) = delete;
  ShardedIdempotencyMap& operator=(const ShardedIdempotencyMap&) = delete;

  // Claims `key` for `owner` when it is absent, expired, or free by `rules`; otherwise says
  // what the live record is. A live record with another fingerprint is never replaced
  // (mismatch comes first), except when its lease lapsed under reclaim_lapsed_lease, which
  // frees the key whatever the payload. ResourceExhausted when a new record would pass
  // max_entries (expired records count until a sweep removes them).
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
  // (halt, or remove when `reclaim_lapsed_lease`). One shard locked at a time, for at most
  // kSweepStep records at a time; removed records are freed with no lock held.
  SweepResult Sweep(Instant now, bool reclaim_lapsed_lease);
  static constexpr size_t kSweepStep = 16;

  struct Counts {
    uint64_t processing = 0, completed = 0, halted = 0;
  };
  Counts CountByState() const;
  MapEvents Events() const;
  size_t size() const;  // locks each shard in turn

 private:
  struct Entry;
  struct EntryDeleter {
    void operator()(Entry* entry) const;
  };
  using EntryPtr = std::unique_ptr<Entry, EntryDeleter>;
  // A key looked up with its hash, computed once per call.
  struct Probe {
    std::string_view key;
    size_t hash;
  };
  struct EntryHash {
    using is_transparent = void;
    size_t operator()(const Entry* entry) const;
    size_t operator()(const Probe& probe) const { return probe.hash; }
  };
  struct EntryEq {
    using is_transparent = void;
    bool operator()(const Entry* a, const Entry* b) const { return a == b; }
    bool operator()(const Entry* a, const Probe& b) const;
    bool operator()(const Probe& a, const Entry* b) const { return (*this)(b, a); }
  };
  using EntrySet = absl::flat_hash_set<Entry*, EntryHash, EntryEq>;

  struct Shard {
    mutable SpinLock mu;  // held for one lookup or a bounded sweep step, never across a free
    EntrySet set ABSL_GUARDED_BY(mu);  // owns its entries (freed by the map)
    TimerWheel<Entry*> wheel ABSL_GUARDED_BY(mu);
    int64_t counts[3] ABSL_GUARDED_BY(mu) = {0, 0, 0};  // entries by RecordState
    MapEvents events ABSL_GUARDED_BY(mu);
    size_t credits ABSL_GUARDED_BY(mu) = 0;  // places reserved for new entries (invariant 3)
    explicit Shard(uint64_t start_tick) : wheel(start_tick) {}
  };

  static constexpr size_t kCreditBatch = 32;

  absl::StatusOr<ClaimAttempt> TryClaimInShard(const Probe& probe, std::string_view fingerprint,
                                               uint64_t owner, const ClaimRules& rules);
  // Takes up to kCreditBatch places from free_places_; false when none is left.
  bool TakeCredits(Shard& shard) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void ReturnCredits(Shard& shard) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  static size_t HashKey(std::string_view key);
  Shard& ShardFor(size_t hash);
  uint64_t TickCeil(Instant t) const;
  uint64_t TickFloor(Instant t) const;
  // The entry's next instant of interest (invariant 1).
  static Instant NextInstant(const Entry& entry);
  // Moves a processing entry to `state` (completed or halted) with a new expiry, leaving its
  // timer where it is when that is no later than the expiry (invariant 1).
  void SettleAt(Shard& shard, Entry& entry, RecordState state, Instant expires)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Re-arms the entry's timer at its next instant of interest (invariant 1).
  void Arm(Shard& shard, Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Finds `key` held as processing by `owner` with a live lease, or says why not.
  absl::StatusOr<Entry*> Owned(Shard& shard, const Probe& probe, uint64_t owner, Instant now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Takes `entry` out of the shard (its set, its timer, the counts); the caller frees it once
  // the lock is released.
  EntryPtr Unlink(Shard& shard, Entry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  static void SetState(Shard& shard, Entry& entry, RecordState state)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // What a live entry that stays answers a Track, counted.
  static ClaimAttempt Describe(Shard& shard, const Entry& entry, bool same_fingerprint, Instant now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);

  const Instant epoch_;
  std::vector<std::unique_ptr<Shard>> shards_;
  const uint64_t shard_mask_;
  const size_t max_entries_;
  std::atomic<size_t> free_places_;  // invariant 3
};

}  // namespace keel::internal

#endif  // KEEL_STORES_SRC_IDEMPOTENCY_MAP_H_
