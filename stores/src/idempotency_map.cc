#include "idempotency_map.h"

#include <algorithm>
#include <new>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace keel::internal {

// One record, allocated with its key's bytes right after it.
struct ShardedIdempotencyMap::Entry {
  Entry(std::string_view key, size_t key_hash)
      : hash(key_hash), key_size(static_cast<uint32_t>(key.size())) {
    std::copy(key.begin(), key.end(), reinterpret_cast<char*>(this + 1));
  }

  static EntryPtr New(std::string_view key, size_t key_hash) {
    void* memory = ::operator new(sizeof(Entry) + key.size());
    return EntryPtr(new (memory) Entry(key, key_hash));
  }

  std::string_view key() const {
    return std::string_view(reinterpret_cast<const char*>(this + 1), key_size);
  }
  std::string_view fingerprint_view() const {
    return std::string_view(fingerprint.data(), fingerprint.size());
  }
  bool Expired(Instant now) const { return expires <= now; }
  bool LeaseLapsed(Instant now) const {
    return state == RecordState::kProcessing && lease_deadline <= now;
  }

  const size_t hash;
  uint64_t owner = 0;      // the claim's token (processing)
  Instant lease_deadline;  // processing
  Instant expires;
  std::shared_ptr<const IdempotentResponse> response;  // completed
  std::unique_ptr<const std::string> halt_reason;      // halted by its owner (else null)
  TimerId timer = kInvalidTimerId;
  absl::InlinedVector<char, 32> fingerprint;
  const uint32_t key_size;
  RecordState state = RecordState::kProcessing;
  bool lease_lapsed = false;  // halted because the lease ran out
};

void ShardedIdempotencyMap::EntryDeleter::operator()(Entry* entry) const {
  entry->~Entry();
  ::operator delete(entry);
}

size_t ShardedIdempotencyMap::EntryHash::operator()(const Entry* entry) const {
  return entry->hash;
}

bool ShardedIdempotencyMap::EntryEq::operator()(const Entry* a, const Probe& b) const {
  return a->hash == b.hash && a->key() == b.key;
}

size_t ShardedIdempotencyMap::HashKey(std::string_view key) {
  // abseil's string_view (a distinct type in Debian's build).
  return absl::HashOf(absl::string_view(key.data(), key.size()));
}

void ShardedIdempotencyMap::SetState(Shard& shard, Entry& entry, RecordState state) {
  --shard.counts[static_cast<int>(entry.state)];
  entry.state = state;
  ++shard.counts[static_cast<int>(state)];
}

ShardedIdempotencyMap::ShardedIdempotencyMap(int shards, Instant start, size_t max_entries)
    : epoch_(start),
      shard_mask_(static_cast<uint64_t>(shards) - 1),
      max_entries_(max_entries),
      free_places_(max_entries) {
  shards_.reserve(static_cast<size_t>(shards));
  for (int i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>(/*start_tick=*/0));
}

ShardedIdempotencyMap::~ShardedIdempotencyMap() {
  for (auto& shard : shards_) {
    SpinLockHolder lock(&shard->mu);
    for (Entry* entry : shard->set) EntryDeleter()(entry);
    shard->set.clear();
  }
}

ShardedIdempotencyMap::Shard& ShardedIdempotencyMap::ShardFor(size_t hash) {
  // The high bits pick the shard; the shard's table uses all of them, the low ones first.
  return *shards_[(static_cast<uint64_t>(hash) >> 40) & shard_mask_];
}

uint64_t ShardedIdempotencyMap::TickCeil(Instant t) const {
  if (t <= epoch_) return 0;
  // Rounded up: a timer never fires before its instant.
  const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t - epoch_).count();
  return static_cast<uint64_t>(ns / 1'000'000 + (ns % 1'000'000 != 0 ? 1 : 0));
}

uint64_t ShardedIdempotencyMap::TickFloor(Instant t) const {
  if (t <= epoch_) return 0;
  const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t - epoch_).count();
  return static_cast<uint64_t>(ns / 1'000'000);
}

Instant ShardedIdempotencyMap::NextInstant(const Entry& entry) {
  return entry.state == RecordState::kProcessing ? std::min(entry.expires, entry.lease_deadline)
                                                 : entry.expires;
}

void ShardedIdempotencyMap::SettleAt(Shard& shard, Entry& entry, RecordState state,
                                     Instant expires) {
  // A processing entry's timer is exactly at its next instant's tick (claims arm it).
  const uint64_t armed = TickCeil(NextInstant(entry));
  SetState(shard, entry, state);
  entry.expires = expires;  // retention restarts when the entry settles
  // The timer stays where it is (invariant 1) unless the new expiry comes before it: that
  // takes a settle whose `now` is behind its claim's (callers read the clock before taking
  // the lock) by more than retention - lease.
  if (TickCeil(expires) < armed) Arm(shard, entry);
}

void ShardedIdempotencyMap::Arm(Shard& shard, Entry& entry) {
  if (entry.timer != kInvalidTimerId) shard.wheel.Cancel(entry.timer);
  entry.timer = shard.wheel.Schedule(TickCeil(NextInstant(entry)), &entry);
}

ShardedIdempotencyMap::EntryPtr ShardedIdempotencyMap::Unlink(Shard& shard, Entry* entry) {
  if (entry->timer != kInvalidTimerId) shard.wheel.Cancel(entry->timer);
  entry->timer = kInvalidTimerId;
  --shard.counts[static_cast<int>(entry->state)];
  shard.set.erase(Probe{entry->key(), entry->hash});
  // The entry's place goes back to the shard's credits, and a surplus to the map.
  if (++shard.credits > 2 * kCreditBatch) {
    // relaxed: a count of free places, a bound; it orders nothing.
    free_places_.fetch_add(shard.credits - kCreditBatch, std::memory_order_relaxed);
    shard.credits = kCreditBatch;
  }
  return EntryPtr(entry);
}

ClaimAttempt ShardedIdempotencyMap::Describe(Shard& shard, const Entry& entry,
                                             bool same_fingerprint, Instant now) {
  ClaimAttempt a;
  a.expires = entry.expires;
  if (!same_fingerprint) {
    ++shard.events.mismatches;
    a.outcome = ClaimOutcome::kMismatch;
    a.detail.assign(entry.fingerprint_view());
    return a;
  }
  switch (entry.state) {
    case RecordState::kProcessing:
      if (entry.LeaseLapsed(now)) {  // under kHalt: halted whether or not a sweep said so yet
        ++shard.events.halted_answers;
        a.outcome = ClaimOutcome::kHalted;
        a.detail = kLeaseLapsedReason;
        return a;
      }
      ++shard.events.conflicts;
      a.outcome = ClaimOutcome::kInFlight;
      a.owner = entry.owner;
      a.lease_deadline = entry.lease_deadline;
      return a;
    case RecordState::kCompleted:
      ++shard.events.replays;
      a.outcome = ClaimOutcome::kReplay;
      a.response = entry.response;
      return a;
    case RecordState::kHalted:
      ++shard.events.halted_answers;
      a.outcome = ClaimOutcome::kHalted;
      a.detail = entry.halt_reason != nullptr ? *entry.halt_reason : kLeaseLapsedReason;
      return a;
  }
  return a;
}

bool ShardedIdempotencyMap::TakeCredits(Shard& shard) {
  // relaxed: see Unlink.
  size_t free = free_places_.load(std::memory_order_relaxed);
  while (free > 0) {
    const size_t take = std::min(free, kCreditBatch);
    if (free_places_.compare_exchange_weak(free, free - take, std::memory_order_relaxed)) {
      shard.credits += take;
      return true;
    }
  }
  return false;
}

void ShardedIdempotencyMap::ReturnCredits(Shard& shard) {
  if (shard.credits == 0) return;
  free_places_.fetch_add(shard.credits, std::memory_order_relaxed);  // relaxed: see Unlink
  shard.credits = 0;
}

absl::StatusOr<ClaimAttempt> ShardedIdempotencyMap::TryClaim(std::string_view key,
                                                             std::string_view fingerprint,
                                                             uint64_t owner,
                                                             const ClaimRules& rules) {
  const Probe probe{key, HashKey(key)};
  absl::StatusOr<ClaimAttempt> attempt = TryClaimInShard(probe, fingerprint, owner, rules);
  if (!absl::IsResourceExhausted(attempt.status())) return attempt;
  // No free place left in the map's pool: the other shards' unused credits may hold some.
  // Gather them (one shard locked at a time, never two) and try once more.
  for (auto& shard : shards_) {
    SpinLockHolder lock(&shard->mu);
    ReturnCredits(*shard);
  }
  return TryClaimInShard(probe, fingerprint, owner, rules);
}

absl::StatusOr<ClaimAttempt> ShardedIdempotencyMap::TryClaimInShard(const Probe& probe,
                                                                    std::string_view fingerprint,
                                                                    uint64_t owner,
                                                                    const ClaimRules& rules) {
  Shard& shard = ShardFor(probe.hash);
  // What a replaced record held, freed after the lock is released (declared first).
  std::shared_ptr<const IdempotentResponse> old_response;
  std::unique_ptr<const std::string> old_reason;
  SpinLockHolder lock(&shard.mu);
  auto it = shard.set.find(probe);
  Entry* entry;
  if (it != shard.set.end()) {
    entry = *it;
    const bool same_fingerprint = entry->fingerprint_view() == fingerprint;
    const bool lapsed = entry->LeaseLapsed(rules.now);
    const bool free =
        entry->Expired(rules.now) || (rules.reclaim_lapsed_lease && lapsed) ||
        // A lapsed lease under kHalt is halted whether or not a sweep has said so yet.
        (rules.release_halted && (entry->state == RecordState::kHalted || lapsed) &&
         same_fingerprint);
    if (!free) return Describe(shard, *entry, same_fingerprint, rules.now);
    // Replace in place: the entry, its key and its place stay.
    SetState(shard, *entry, RecordState::kProcessing);
    old_response = std::move(entry->response);
    old_reason = std::move(entry->halt_reason);
    entry->lease_lapsed = false;
  } else {
    if (shard.credits == 0 && !TakeCredits(shard)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the idempotency table holds its maximum of ", max_entries_,
          " entries; no entry is evicted (in-flight ones must stay): raise max_entries or "
          "shorten retention"));
    }
    --shard.credits;
    entry = Entry::New(probe.key, probe.hash).release();  // owned by the set from here
    shard.set.insert(entry);
    ++shard.counts[static_cast<int>(RecordState::kProcessing)];
  }
  entry->fingerprint.assign(fingerprint.begin(), fingerprint.end());
  entry->owner = owner;
  entry->lease_deadline = AddDuration(rules.now, rules.lease);
  entry->expires = AddDuration(rules.now, rules.retention);
  Arm(shard, *entry);
  ++shard.events.claims;
  ClaimAttempt a;
  a.owner = owner;
  a.lease_deadline = entry->lease_deadline;
  a.expires = entry->expires;
  return a;
}

absl::StatusOr<ShardedIdempotencyMap::Entry*> ShardedIdempotencyMap::Owned(Shard& shard,
                                                                           const Probe& probe,
                                                                           uint64_t owner,
                                                                           Instant now) {
  auto it = shard.set.find(probe);
  if (it == shard.set.end() || (*it)->Expired(now)) {
    return absl::FailedPreconditionError(
        "the claim's entry is gone (expired, or its lease ran out and the key was reclaimed)");
  }
  Entry* entry = *it;
  if (entry->owner != owner) {
    return absl::FailedPreconditionError(
        "the key belongs to another claim now (this claim's lease ran out and the key was "
        "claimed again); nothing was changed");
  }
  // A lapsed lease reads the same whether or not a sweep has halted the entry yet.
  if (entry->LeaseLapsed(now) || entry->lease_lapsed) {
    return absl::FailedPreconditionError(
        "the claim's lease ran out before it settled; nothing was stored");
  }
  if (entry->state != RecordState::kProcessing) {
    return absl::FailedPreconditionError(
        "the claim was already settled (completed, aborted or halted)");
  }
  return entry;
}

absl::Status ShardedIdempotencyMap::Complete(std::string_view key, uint64_t owner,
                                             std::shared_ptr<const IdempotentResponse> response,
                                             Instant now, absl::Duration retention) {
  const Probe probe{key, HashKey(key)};
  Shard& shard = ShardFor(probe.hash);
  SpinLockHolder lock(&shard.mu);
  absl::StatusOr<Entry*> entry = Owned(shard, probe, owner, now);
  if (!entry.ok()) return entry.status();  // `response` is freed after the lock is released
  (*entry)->response = std::move(response);
  SettleAt(shard, **entry, RecordState::kCompleted, AddDuration(now, retention));
  return absl::OkStatus();
}

absl::Status ShardedIdempotencyMap::Halt(std::string_view key, uint64_t owner, std::string reason,
                                         Instant now, absl::Duration retention) {
  auto halt_reason = std::make_unique<const std::string>(std::move(reason));  // before locking
  const Probe probe{key, HashKey(key)};
  Shard& shard = ShardFor(probe.hash);
  SpinLockHolder lock(&shard.mu);
  absl::StatusOr<Entry*> entry = Owned(shard, probe, owner, now);
  if (!entry.ok()) return entry.status();
  (*entry)->halt_reason = std::move(halt_reason);
  SettleAt(shard, **entry, RecordState::kHalted, AddDuration(now, retention));
  ++shard.events.halts;
  return absl::OkStatus();
}

absl::Status ShardedIdempotencyMap::Release(std::string_view key, uint64_t owner, Instant now) {
  const Probe probe{key, HashKey(key)};
  Shard& shard = ShardFor(probe.hash);
  EntryPtr removed;  // freed after the lock is released
  SpinLockHolder lock(&shard.mu);
  absl::StatusOr<Entry*> entry = Owned(shard, probe, owner, now);
  if (!entry.ok()) return entry.status();
  removed = Unlink(shard, *entry);
  return absl::OkStatus();
}

SweepResult ShardedIdempotencyMap::Sweep(Instant now, bool reclaim_lapsed_lease) {
  SweepResult result;
  // Rounded down: only timers whose instant has passed fire (TickCeil rounds deadlines up).
  const uint64_t tick = TickFloor(now);
  for (auto& shard_ptr : shards_) {
    Shard& shard = *shard_ptr;
    for (;;) {
      EntryPtr removed[kSweepStep];  // freed after the lock is released
      size_t removed_count = 0;
      size_t fired;
      {
        SpinLockHolder lock(&shard.mu);
        fired = shard.wheel.Advance(
            tick,
            [&](TimerId, Entry*&& fired_entry) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              Entry& entry = *fired_entry;
              entry.timer = kInvalidTimerId;  // it fired
              // A timer that fired early (invariant 1) only re-arms: the entry is handled
              // when the tick of its instant of interest has passed, as if the timer had
              // been there all along; then the instants are checked at `now`.
              if (TickCeil(NextInstant(entry)) > tick) {
                Arm(shard, entry);
                return;
              }
              const bool expired = entry.Expired(now);
              const bool lapsed = entry.LeaseLapsed(now);
              if (expired || (reclaim_lapsed_lease && lapsed)) {
                if (expired) {
                  ++result.expired;
                  ++shard.events.expirations;
                } else {
                  ++result.lapsed;
                }
                removed[removed_count++] = Unlink(shard, &entry);
                return;
              }
              if (lapsed) {
                // Halted in place; it keeps the expiry it got when it was claimed.
                SetState(shard, entry, RecordState::kHalted);
                entry.lease_lapsed = true;
                ++result.lapsed;
                ++shard.events.halts;
              }
              Arm(shard, entry);
            },
            kSweepStep);
      }
      if (fired < kSweepStep) break;
    }
  }
  return result;
}

ShardedIdempotencyMap::Counts ShardedIdempotencyMap::CountByState() const {
  Counts counts;
  for (const auto& shard_ptr : shards_) {
    SpinLockHolder lock(&shard_ptr->mu);
    counts.processing += shard_ptr->counts[static_cast<int>(RecordState::kProcessing)];
    counts.completed += shard_ptr->counts[static_cast<int>(RecordState::kCompleted)];
    counts.halted += shard_ptr->counts[static_cast<int>(RecordState::kHalted)];
  }
  return counts;
}

size_t ShardedIdempotencyMap::size() const {
  size_t total = 0;
  for (const auto& shard_ptr : shards_) {
    SpinLockHolder lock(&shard_ptr->mu);
    total += shard_ptr->set.size();
  }
  return total;
}

MapEvents ShardedIdempotencyMap::Events() const {
  MapEvents total;
  for (const auto& shard_ptr : shards_) {
    SpinLockHolder lock(&shard_ptr->mu);
    const MapEvents& e = shard_ptr->events;
    total.claims += e.claims;
    total.replays += e.replays;
    total.conflicts += e.conflicts;
    total.mismatches += e.mismatches;
    total.halts += e.halts;
    total.halted_answers += e.halted_answers;
    total.expirations += e.expirations;
  }
  return total;
}

}  // namespace keel::internal
