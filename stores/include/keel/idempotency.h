// IdempotencyTracker: at-most-once processing of requests keyed by an idempotency key.
//
// A client that retries a request (a timeout, a dropped connection) sends the same
// Idempotency-Key again. The tracker makes the first request run and every retry see what
// became of it: still running (in flight), its stored response (replay), or its failure
// (halted). A retry whose payload differs from the first request's is a mismatch, whatever
// the state. `Track(key, fingerprint)` decides all of this in one atomic step: under any
// number of threads sending the same key, exactly one gets the claim.
//
//   auto tracker = keel::IdempotencyTracker::Create(*runtime, {.lease = absl::Seconds(30)});
//   absl::StatusOr<keel::TrackResult> tracked = (*tracker)->Track(key, fingerprint);
//   if (!tracked.ok()) return BadRequest(tracked.status());
//   if (auto* claim = std::get_if<keel::Claim>(&*tracked)) {
//     keel::IdempotentResponse response = Handle(request);   // may throw: the entry halts
//     claim->Complete(std::move(response));                   // stored for the retries
//   } else if (auto* replay = std::get_if<keel::Replay>(&*tracked)) {
//     Send(*replay->response);
//   } // InFlight: 409 and Retry-After; Halted: 500; Mismatch: 422
//
// Entries: a claimed key is *processing* (owner token, lease deadline) until its claim
// completes (*completed*, with the response), aborts (the key is released) or is dropped
// (*halted*, with a reason that says whether an exception unwound). A processing entry whose
// lease runs out (its owner died or hangs) becomes halted, or free again (LeaseExpiry). A
// halted entry replays its failure until it expires, or frees the key (HaltedEntries). Every
// entry expires `retention` after it was claimed, completed or halted; expiry is checked on
// every lookup, and the runtime's control thread removes expired entries from per-shard
// timer wheels, in time proportional to the number expired.
//
// Thread safety: thread-safe. Track, Stats and a Claim's methods may be called from any
// thread; a Claim may be completed on another thread than the one that got it.
//
// Lifetime: the tracker must outlive its claims, and the runtime must outlive the tracker.
//
// Progress: Track takes one shard's lock for the lookup-and-insert (a hash lookup, and for a
// claim a timer wheel insert); Complete and Halt take it for a lookup (their entry's timer
// stays where the claim put it; the sweep moves it to the expiry when it fires). Shards are
// independent, so lookups of different keys rarely contend. A shard lock is a spin lock held
// for one lookup (and, for a new key, one allocation): no user code, no I/O and no free of a
// record or response runs under it; a waiter spins briefly, then yields its CPU.
//
// Costs (bench/idempotency_bench.cc, 2-vCPU VM, 1M+ entries; claim + complete + replay of
// one request): about 0.93 us at 1 thread and 0.53 us per request at 2 threads, 1.6x / 1.5x
// oneTBB's concurrent_hash_map doing the same; 210-215 heap bytes per entry beyond the key
// and the response (oneTBB 268, std::unordered_map 247). A sweep removing 10k expired
// entries among 1M takes ~9 ms, most of it freeing them; a full scan takes ~23 ms.
#ifndef KEEL_IDEMPOTENCY_H_
#define KEEL_IDEMPOTENCY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "keel/clock.h"
#include "keel/runtime.h"

namespace keel {

// A response stored for replays: stored once, shared by every replay without copying.
struct IdempotentResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers = {};
  std::string body = {};
};

// What happens when a processing entry's lease runs out.
enum class LeaseExpiry {
  kHalt,     // the entry becomes halted ("lease expired"); retries see Halted
  kReclaim,  // the key is free again; the next Track claims it
};

// What a halted entry does for retries.
enum class HaltedEntries {
  kReplayFailure,  // retries see Halted until the entry expires
  kReleaseKey,     // the next Track with the same payload claims the key again
};

struct IdempotencyOptions {
  // How long a claim may run before its entry is given up (LeaseExpiry); > 0.
  absl::Duration lease = absl::Seconds(30);
  // How long an entry lives after it was claimed, completed or halted; >= lease.
  absl::Duration retention = absl::Hours(24);
  LeaseExpiry on_lease_expiry = LeaseExpiry::kHalt;
  HaltedEntries on_halted = HaltedEntries::kReplayFailure;
  // The most entries held at once; a Track that would add one more is ResourceExhausted
  // (nothing is evicted: evicting an in-flight entry would break at-most-once). Expired
  // entries a sweep has not removed yet do not block it: a Track that finds the table full
  // sweeps first, on its own thread.
  size_t max_entries = size_t{1} << 22;
  // Bounds on the bytes of a key and of a fingerprint; longer ones are InvalidArgument.
  size_t max_key_bytes = 512;
  size_t max_fingerprint_bytes = 64;
  // Shards of the in-memory store: a power of two, or 0 to choose from the core count.
  int shards = 0;
  // How often the control thread removes expired entries (lookups check expiry anyway).
  absl::Duration sweep_interval = absl::Seconds(1);
};

class IdempotencyTracker;

// The right, and the duty, to process a key's request. Move-only. Exactly one of
// Complete() or Abort() should be called; destroying a claim without either halts its entry,
// with a reason that tells an exception unwinding from an early return.
class [[nodiscard]] Claim {
 public:
  Claim(Claim&& other) noexcept;
  Claim& operator=(Claim&&) = delete;
  Claim(const Claim&) = delete;
  Claim& operator=(const Claim&) = delete;
  ~Claim();

  // Stores `response` for replays; the entry is kept `retention` from now. FailedPrecondition
  // (and nothing changes) when this claim no longer owns the entry: its lease ran out, or it
  // was already completed, aborted or halted. Any thread.
  absl::Status Complete(IdempotentResponse response);
  // Releases the key: the next Track claims it. FailedPrecondition as for Complete.
  absl::Status Abort();
  // Halts the entry with `reason` (retries see Halted). FailedPrecondition as for Complete.
  absl::Status Halt(std::string reason);

  const std::string& key() const noexcept { return key_; }
  // The owner token stored with the entry.
  uint64_t token() const noexcept { return token_; }
  Instant lease_deadline() const noexcept { return lease_deadline_; }
  Instant expires() const noexcept { return expires_; }

 private:
  friend class IdempotencyTracker;
  Claim(IdempotencyTracker* tracker, std::string key, uint64_t token, Instant lease_deadline,
        Instant expires);

  IdempotencyTracker* tracker_;  // null once moved from or settled
  std::string key_;
  uint64_t token_;
  Instant lease_deadline_;
  Instant expires_;
  int uncaught_at_start_;  // std::uncaught_exceptions() when the claim was made
};

// The key is being processed by another claim.
struct InFlight {
  uint64_t owner;
  Instant lease_deadline;
  Instant expires;
};
// The key's request completed: replay its response.
struct Replay {
  std::shared_ptr<const IdempotentResponse> response;
  Instant expires;
};
// The key's request failed or was given up.
struct Halted {
  std::string reason;
  Instant expires;
};
// The key was used for another payload (checked before anything else).
struct Mismatch {
  std::string fingerprint;  // the stored one
  Instant expires;
};

using TrackResult = std::variant<Claim, InFlight, Replay, Halted, Mismatch>;

// Counters; entries by state are exact at the moment each shard is read.
struct IdempotencyStats {
  uint64_t processing = 0;
  uint64_t completed = 0;
  uint64_t halted = 0;
  uint64_t claims = 0;
  uint64_t replays = 0;
  uint64_t conflicts = 0;  // InFlight answers
  uint64_t mismatches = 0;
  uint64_t halts = 0;  // entries that became halted (dropped claims, lapsed leases, Halt)
  uint64_t halted_answers = 0;
  uint64_t expirations = 0;   // entries removed because they expired
  uint64_t refused_full = 0;  // Tracks refused because max_entries was reached
};

namespace internal {
class ShardedIdempotencyMap;
}

class IdempotencyTracker {
 public:
  // A tracker on the in-memory sharded store; the runtime's control thread sweeps expired
  // entries. InvalidArgument for bad options, naming the option and what was expected.
  static absl::StatusOr<std::unique_ptr<IdempotencyTracker>> Create(
      Runtime& runtime, IdempotencyOptions options = {});

  IdempotencyTracker(const IdempotencyTracker&) = delete;
  IdempotencyTracker& operator=(const IdempotencyTracker&) = delete;
  // Stops the sweep (waits for a sweep that is running). Claims must be gone.
  ~IdempotencyTracker();

  // Looks `key` up and claims it if it is free, in one atomic step; see the header comment.
  // `fingerprint` identifies the payload (a SHA-256 of method, route and body, say).
  // InvalidArgument for an empty or over-long key or an over-long fingerprint;
  // ResourceExhausted when a claim would exceed max_entries even after a sweep. Any thread.
  absl::StatusOr<TrackResult> Track(std::string_view key, std::string_view fingerprint);

  IdempotencyStats Stats() const;
  const IdempotencyOptions& options() const noexcept { return options_; }

  // Removes expired entries and applies lapsed leases now; returns how many entries were
  // removed. Granularity is 1 ms: an instant passed less than a millisecond ago may wait for
  // the next sweep (lookups see it passed anyway). The control thread does this every
  // sweep_interval; tests call it after moving a manual clock. Shard locks are held for a
  // bounded step each, and removed entries are freed with no lock held. Any thread.
  size_t SweepNow();

 private:
  friend class Claim;
  IdempotencyTracker(Runtime& runtime, IdempotencyOptions options);

  enum class Settle { kComplete, kAbort, kHalt };
  absl::Status SettleClaim(Claim& claim, Settle how, IdempotentResponse* response,
                           std::string reason);
  void ScheduleSweep();
  struct Shared;  // the sweep timer's state, shared with the control thread
  static void ScheduleSweepLocked(const std::shared_ptr<Shared>& shared);

  Runtime& runtime_;
  const IdempotencyOptions options_;
  std::unique_ptr<internal::ShardedIdempotencyMap> map_;
  std::shared_ptr<Shared> shared_;
};

}  // namespace keel

#endif  // KEEL_IDEMPOTENCY_H_
