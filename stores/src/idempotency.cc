#include "keel/idempotency.h"

#include <atomic>
#include <bit>
#include <exception>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "idempotency_map.h"
#include "keel/internal/sync.h"

namespace keel {
namespace {

absl::Status CheckOptions(const IdempotencyOptions& o) {
  auto invalid = [](std::string message) {
    return absl::InvalidArgumentError(absl::StrCat("idempotency tracker: ", message));
  };
  if (o.lease < absl::Milliseconds(1) || o.lease == absl::InfiniteDuration()) {
    return invalid(
        absl::StrCat("lease must be >= 1ms and finite, got ", absl::FormatDuration(o.lease)));
  }
  if (o.retention < o.lease || o.retention == absl::InfiniteDuration()) {
    return invalid(absl::StrCat("retention must be finite and >= lease (",
                                absl::FormatDuration(o.lease), "), got ",
                                absl::FormatDuration(o.retention)));
  }
  if (o.max_entries == 0) return invalid("max_entries must be > 0");
  if (o.max_key_bytes == 0) return invalid("max_key_bytes must be > 0");
  if (o.shards < 0 || o.shards > (1 << 16) ||
      (o.shards > 0 && !std::has_single_bit(static_cast<unsigned>(o.shards)))) {
    return invalid(
        absl::StrCat("shards must be 0 (automatic) or a power of two up to 65536, got ", o.shards));
  }
  if (o.sweep_interval < absl::Milliseconds(1) || o.sweep_interval == absl::InfiniteDuration()) {
    return invalid(absl::StrCat("sweep_interval must be >= 1ms and finite, got ",
                                absl::FormatDuration(o.sweep_interval)));
  }
  return absl::OkStatus();
}

int ChooseShards(int requested) {
  if (requested > 0) return requested;
  // Eight shards per core, at least 64: contention stays low with a few hot keys, and a
  // sweep, which holds each shard's lock while it removes that shard's expired entries, holds
  // it for 1/64th of the work at most.
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<int>(std::bit_ceil(std::max(64u, cores * 8)));
}

}  // namespace

// The sweep's state, shared by the tracker and the timer task on the control thread.
// The timer task holds it weakly and does everything under `mu` after checking `stopped`,
// which the tracker's destructor sets under `mu`: no sweep touches a destroyed tracker.
struct IdempotencyTracker::Shared {
  internal::Mutex mu;
  bool stopped ABSL_GUARDED_BY(mu) = false;
  std::optional<TimerHandle> timer ABSL_GUARDED_BY(mu);
  IdempotencyTracker* tracker = nullptr;  // valid while !stopped

  // Relaxed: a statistic, ordered with nothing. (The map counts the other events per shard,
  // under the shard locks it holds anyway.)
  std::atomic<uint64_t> refused_full{0};
};

Claim::Claim(IdempotencyTracker* tracker, std::string key, uint64_t token, Instant lease_deadline,
             Instant expires)
    : tracker_(tracker),
      key_(std::move(key)),
      token_(token),
      lease_deadline_(lease_deadline),
      expires_(expires),
      uncaught_at_start_(std::uncaught_exceptions()) {}

Claim::Claim(Claim&& other) noexcept
    : tracker_(std::exchange(other.tracker_, nullptr)),
      key_(std::move(other.key_)),
      token_(other.token_),
      lease_deadline_(other.lease_deadline_),
      expires_(other.expires_),
      uncaught_at_start_(other.uncaught_at_start_) {}

Claim::~Claim() {
  if (tracker_ == nullptr) return;
  std::string reason = std::uncaught_exceptions() > uncaught_at_start_
                           ? "the handler threw: its claim was destroyed while an exception unwound"
                           : "the claim was dropped without Complete or Abort (an early return?)";
  (void)tracker_->SettleClaim(*this, IdempotencyTracker::Settle::kHalt, nullptr, std::move(reason));
}

absl::Status Claim::Complete(IdempotentResponse response) {
  if (tracker_ == nullptr) return absl::FailedPreconditionError("the claim was already settled");
  return tracker_->SettleClaim(*this, IdempotencyTracker::Settle::kComplete, &response, "");
}

absl::Status Claim::Abort() {
  if (tracker_ == nullptr) return absl::FailedPreconditionError("the claim was already settled");
  return tracker_->SettleClaim(*this, IdempotencyTracker::Settle::kAbort, nullptr, "");
}

absl::Status Claim::Halt(std::string reason) {
  if (tracker_ == nullptr) return absl::FailedPreconditionError("the claim was already settled");
  return tracker_->SettleClaim(*this, IdempotencyTracker::Settle::kHalt, nullptr,
                               std::move(reason));
}

IdempotencyTracker::IdempotencyTracker(Runtime& runtime, IdempotencyOptions options)
    : runtime_(runtime),
      options_(std::move(options)),
      map_(std::make_unique<internal::ShardedIdempotencyMap>(ChooseShards(options_.shards),
                                                             runtime.Now(), options_.max_entries)),
      shared_(std::make_shared<Shared>()) {
  shared_->tracker = this;
}

absl::StatusOr<std::unique_ptr<IdempotencyTracker>> IdempotencyTracker::Create(
    Runtime& runtime, IdempotencyOptions options) {
  absl::Status valid = CheckOptions(options);
  if (!valid.ok()) return valid;
  std::unique_ptr<IdempotencyTracker> tracker(new IdempotencyTracker(runtime, std::move(options)));
  tracker->ScheduleSweep();
  return tracker;
}

IdempotencyTracker::~IdempotencyTracker() {
  internal::MutexLock lock(&shared_->mu);  // waits for a sweep that is running
  shared_->stopped = true;
  if (shared_->timer.has_value()) runtime_.Cancel(*shared_->timer);
}

void IdempotencyTracker::ScheduleSweep() {
  internal::MutexLock lock(&shared_->mu);
  ScheduleSweepLocked(shared_);
}

void IdempotencyTracker::ScheduleSweepLocked(const std::shared_ptr<Shared>& shared) {
  if (shared->stopped) return;
  IdempotencyTracker* tracker = shared->tracker;
  std::weak_ptr<Shared> weak = shared;
  absl::StatusOr<TimerHandle> timer =
      tracker->runtime_.Schedule(tracker->options_.sweep_interval, [weak] {
        std::shared_ptr<Shared> shared = weak.lock();
        if (shared == nullptr) return;
        internal::MutexLock lock(&shared->mu);
        if (shared->stopped) return;
        shared->tracker->SweepNow();
        ScheduleSweepLocked(shared);
      });
  if (timer.ok()) shared->timer = *timer;
}

size_t IdempotencyTracker::SweepNow() {
  const bool reclaim = options_.on_lease_expiry == LeaseExpiry::kReclaim;
  internal::SweepResult swept = map_->Sweep(runtime_.Now(), reclaim);
  return swept.expired + (reclaim ? swept.lapsed : 0);
}

absl::StatusOr<TrackResult> IdempotencyTracker::Track(std::string_view key,
                                                      std::string_view fingerprint) {
  if (key.empty()) return absl::InvalidArgumentError("the idempotency key is empty");
  if (key.size() > options_.max_key_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("the idempotency key is ", key.size(),
                                                   " bytes, over the limit of ",
                                                   options_.max_key_bytes));
  }
  if (fingerprint.size() > options_.max_fingerprint_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("the fingerprint is ", fingerprint.size(),
                                                   " bytes, over the limit of ",
                                                   options_.max_fingerprint_bytes));
  }
  // Owner tokens: random per thread, so that a stale claim of a restarted process (or of a
  // shared store's other instance) does not share a token with a live one.
  thread_local std::mt19937_64 tokens{std::random_device{}()};
  uint64_t token = tokens() | 1;  // never 0
  Instant now = runtime_.Now();
  internal::ClaimRules rules{now, options_.lease, options_.retention,
                             options_.on_lease_expiry == LeaseExpiry::kReclaim,
                             options_.on_halted == HaltedEntries::kReleaseKey};
  absl::StatusOr<internal::ClaimAttempt> attempt = map_->TryClaim(key, fingerprint, token, rules);
  if (absl::IsResourceExhausted(attempt.status())) {
    // Full, perhaps of entries that expired since the last sweep: sweep now, on this thread
    // (the shards one at a time, in bounded steps), and try once more.
    SweepNow();
    attempt = map_->TryClaim(key, fingerprint, token, rules);
  }
  if (!attempt.ok()) {
    shared_->refused_full.fetch_add(1, std::memory_order_relaxed);
    return attempt.status();
  }
  internal::ClaimAttempt& a = *attempt;
  switch (a.outcome) {
    case internal::ClaimOutcome::kClaimed:
      return TrackResult(std::in_place_type<Claim>,
                         Claim(this, std::string(key), token, a.lease_deadline, a.expires));
    case internal::ClaimOutcome::kInFlight:
      return TrackResult(InFlight{a.owner, a.lease_deadline, a.expires});
    case internal::ClaimOutcome::kReplay:
      return TrackResult(Replay{std::move(a.response), a.expires});
    case internal::ClaimOutcome::kHalted:
      return TrackResult(Halted{std::move(a.detail), a.expires});
    case internal::ClaimOutcome::kMismatch:
      return TrackResult(Mismatch{std::move(a.detail), a.expires});
  }
  return absl::InternalError("unknown claim outcome");
}

absl::Status IdempotencyTracker::SettleClaim(Claim& claim, Settle how, IdempotentResponse* response,
                                             std::string reason) {
  Instant now = runtime_.Now();
  absl::Status status;
  switch (how) {
    case Settle::kComplete:
      status = map_->Complete(claim.key_, claim.token_,
                              std::make_shared<const IdempotentResponse>(std::move(*response)), now,
                              options_.retention);
      break;
    case Settle::kAbort:
      status = map_->Release(claim.key_, claim.token_, now);
      break;
    case Settle::kHalt:
      status = map_->Halt(claim.key_, claim.token_, std::move(reason), now, options_.retention);
      break;
  }
  // Settled or not, this claim is done: a second call is an error, not a second try.
  claim.tracker_ = nullptr;
  return status;
}

IdempotencyStats IdempotencyTracker::Stats() const {
  internal::ShardedIdempotencyMap::Counts counts = map_->CountByState();
  IdempotencyStats s;
  s.processing = counts.processing;
  s.completed = counts.completed;
  s.halted = counts.halted;
  internal::MapEvents events = map_->Events();
  s.claims = events.claims;
  s.replays = events.replays;
  s.conflicts = events.conflicts;
  s.mismatches = events.mismatches;
  s.halts = events.halts;
  s.halted_answers = events.halted_answers;
  s.expirations = events.expirations;
  s.refused_full = shared_->refused_full.load(std::memory_order_relaxed);
  return s;
}

}  // namespace keel
