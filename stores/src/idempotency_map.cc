#include "idempotency_map.h"

#include <algorithm>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"

namespace keel::internal {
namespace {

bool Expired(const IdempotencyRecord& r, Instant now) { return r.expires <= now; }

// abseil's string_view (a distinct type in Debian's build) for heterogeneous lookups.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

bool LeaseLapsed(const IdempotencyRecord& r, Instant now) {
  return r.state == RecordState::kProcessing && r.lease_deadline <= now;
}

void ShardedIdempotencyMap::SetState(Shard& shard, IdempotencyRecord& r, RecordState state) {
  --shard.counts[static_cast<int>(r.state)];
  r.state = state;
  ++shard.counts[static_cast<int>(state)];
}

ShardedIdempotencyMap::ShardedIdempotencyMap(int shards, Instant start)
    : epoch_(start), shard_mask_(static_cast<uint64_t>(shards) - 1) {
  shards_.reserve(static_cast<size_t>(shards));
  for (int i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>(/*start_tick=*/0));
}

ShardedIdempotencyMap::~ShardedIdempotencyMap() = default;

ShardedIdempotencyMap::Shard& ShardedIdempotencyMap::ShardFor(std::string_view key) {
  // The high bits pick the shard; absl's flat maps inside use the low ones.
  uint64_t h = absl::HashOf(Sv(key));
  return *shards_[(h >> 40) & shard_mask_];
}

uint64_t ShardedIdempotencyMap::Tick(Instant t) const {
  if (t <= epoch_) return 0;
  // Rounded up: a timer never fires before its instant.
  return static_cast<uint64_t>(
      absl::ToInt64Milliseconds(absl::Ceil(Elapsed(epoch_, t), absl::Milliseconds(1))));
}

void ShardedIdempotencyMap::Arm(Shard& shard, const std::string* key, Slot& slot) {
  if (slot.timer != kInvalidTimerId) shard.wheel.Cancel(slot.timer);
  const IdempotencyRecord& r = slot.record;
  Instant next = r.expires;
  if (r.state == RecordState::kProcessing) next = std::min(next, r.lease_deadline);
  slot.timer = shard.wheel.Schedule(Tick(next), key);
}

void ShardedIdempotencyMap::Erase(Shard& shard,
                                  absl::node_hash_map<std::string, Slot>::iterator it) {
  if (it->second.timer != kInvalidTimerId) shard.wheel.Cancel(it->second.timer);
  --shard.counts[static_cast<int>(it->second.record.state)];
  shard.map.erase(it);
  // relaxed: a counter; TryClaim's check is a bound, not a synchronisation point.
  entries_.fetch_sub(1, std::memory_order_relaxed);
}

absl::StatusOr<ClaimAttempt> ShardedIdempotencyMap::TryClaim(std::string_view key,
                                                             std::string_view fingerprint,
                                                             uint64_t owner,
                                                             const ClaimRules& rules) {
  Shard& shard = ShardFor(key);
  MutexLock lock(&shard.mu);
  auto it = shard.map.find(Sv(key));
  if (it != shard.map.end()) {
    IdempotencyRecord& r = it->second.record;
    bool free =
        Expired(r, rules.now) || (rules.reclaim_lapsed_lease && LeaseLapsed(r, rules.now)) ||
        // A lapsed lease under kHalt is halted whether or not a sweep has said so yet.
        (rules.release_halted && (r.state == RecordState::kHalted || LeaseLapsed(r, rules.now)) &&
         r.fingerprint == fingerprint);
    if (!free) return ClaimAttempt{false, r};
    // Replace in place: the node, its key and its place in entries_ stay.
    SetState(shard, r, RecordState::kProcessing);
    r.response.reset();
    r.halt_reason.clear();
    r.fingerprint.assign(fingerprint);
    r.owner = owner;
    r.lease_deadline = AddDuration(rules.now, rules.lease);
    r.expires = AddDuration(rules.now, rules.retention);
    Arm(shard, &it->first, it->second);
    return ClaimAttempt{true, r};
  }
  // relaxed: see Erase. Reserve a place first, so that concurrent claims on other shards
  // cannot together pass the bound.
  if (entries_.fetch_add(1, std::memory_order_relaxed) >= rules.max_entries) {
    entries_.fetch_sub(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(absl::StrCat(
        "the idempotency table holds its maximum of ", rules.max_entries,
        " entries; no entry is evicted (in-flight ones must stay): raise max_entries or "
        "shorten retention"));
  }
  auto [inserted, ok] = shard.map.try_emplace(std::string(key));
  (void)ok;
  IdempotencyRecord& r = inserted->second.record;
  r.state = RecordState::kProcessing;
  ++shard.counts[static_cast<int>(RecordState::kProcessing)];
  r.fingerprint.assign(fingerprint);
  r.owner = owner;
  r.lease_deadline = AddDuration(rules.now, rules.lease);
  r.expires = AddDuration(rules.now, rules.retention);
  Arm(shard, &inserted->first, inserted->second);
  return ClaimAttempt{true, r};
}

absl::StatusOr<ShardedIdempotencyMap::Slot*> ShardedIdempotencyMap::Owned(Shard& shard,
                                                                          std::string_view key,
                                                                          uint64_t owner,
                                                                          Instant now) {
  auto it = shard.map.find(Sv(key));
  if (it == shard.map.end() || Expired(it->second.record, now)) {
    return absl::FailedPreconditionError(
        "the claim's entry is gone (expired, or its lease ran out and the key was reclaimed)");
  }
  const IdempotencyRecord& r = it->second.record;
  if (r.owner != owner) {
    return absl::FailedPreconditionError(
        "the key belongs to another claim now (this claim's lease ran out and the key was "
        "claimed again); nothing was changed");
  }
  // A lapsed lease reads the same whether or not a sweep has halted the entry yet.
  if (LeaseLapsed(r, now) ||
      (r.state == RecordState::kHalted && r.halt_reason == kLeaseLapsedReason)) {
    return absl::FailedPreconditionError(
        "the claim's lease ran out before it settled; nothing was stored");
  }
  if (r.state != RecordState::kProcessing) {
    return absl::FailedPreconditionError(
        "the claim was already settled (completed, aborted or halted)");
  }
  return &it->second;
}

absl::Status ShardedIdempotencyMap::Settle(std::string_view key, uint64_t owner, Instant now,
                                           RecordState state, absl::Duration retention,
                                           absl::FunctionRef<void(IdempotencyRecord&)> fill) {
  Shard& shard = ShardFor(key);
  MutexLock lock(&shard.mu);
  absl::StatusOr<Slot*> slot = Owned(shard, key, owner, now);
  if (!slot.ok()) return slot.status();
  auto it = shard.map.find(Sv(key));
  IdempotencyRecord& r = it->second.record;
  SetState(shard, r, state);
  fill(r);
  r.expires = AddDuration(now, retention);  // retention restarts when the entry settles
  Arm(shard, &it->first, it->second);
  return absl::OkStatus();
}

absl::Status ShardedIdempotencyMap::Complete(std::string_view key, uint64_t owner,
                                             std::shared_ptr<const IdempotentResponse> response,
                                             Instant now, absl::Duration retention) {
  return Settle(key, owner, now, RecordState::kCompleted, retention,
                [&](IdempotencyRecord& r) { r.response = std::move(response); });
}

absl::Status ShardedIdempotencyMap::Halt(std::string_view key, uint64_t owner, std::string reason,
                                         Instant now, absl::Duration retention) {
  return Settle(key, owner, now, RecordState::kHalted, retention,
                [&](IdempotencyRecord& r) { r.halt_reason = std::move(reason); });
}

absl::Status ShardedIdempotencyMap::Release(std::string_view key, uint64_t owner, Instant now) {
  Shard& shard = ShardFor(key);
  MutexLock lock(&shard.mu);
  absl::StatusOr<Slot*> slot = Owned(shard, key, owner, now);
  if (!slot.ok()) return slot.status();
  Erase(shard, shard.map.find(Sv(key)));
  return absl::OkStatus();
}

SweepResult ShardedIdempotencyMap::Sweep(Instant now, bool reclaim_lapsed_lease) {
  SweepResult result;
  // Rounded down: only timers whose instant has passed fire (Tick rounds deadlines up).
  const uint64_t tick = now <= epoch_ ? 0
                                      : static_cast<uint64_t>(absl::ToInt64Milliseconds(absl::Floor(
                                            Elapsed(epoch_, now), absl::Milliseconds(1))));
  for (auto& shard_ptr : shards_) {
    Shard& shard = *shard_ptr;
    MutexLock lock(&shard.mu);
    std::vector<const std::string*> due;
    shard.wheel.Advance(tick, [&due](TimerId, const std::string*&& key) { due.push_back(key); });
    for (const std::string* key : due) {
      auto it = shard.map.find(*key);
      if (it == shard.map.end()) continue;
      Slot& slot = it->second;
      slot.timer = kInvalidTimerId;  // it fired
      IdempotencyRecord& r = slot.record;
      if (Expired(r, now) || (reclaim_lapsed_lease && LeaseLapsed(r, now))) {
        result.expired += Expired(r, now) ? 1 : 0;
        result.lapsed += Expired(r, now) ? 0 : 1;
        Erase(shard, it);
        continue;
      }
      if (LeaseLapsed(r, now)) {
        // Halted in place; it keeps the expiry it got when it was claimed.
        SetState(shard, r, RecordState::kHalted);
        r.halt_reason = kLeaseLapsedReason;
        ++result.lapsed;
      }
      Arm(shard, &it->first, slot);
    }
  }
  return result;
}

ShardedIdempotencyMap::Counts ShardedIdempotencyMap::CountByState() const {
  Counts counts;
  for (const auto& shard_ptr : shards_) {
    MutexLock lock(&shard_ptr->mu);
    counts.processing += shard_ptr->counts[static_cast<int>(RecordState::kProcessing)];
    counts.completed += shard_ptr->counts[static_cast<int>(RecordState::kCompleted)];
    counts.halted += shard_ptr->counts[static_cast<int>(RecordState::kHalted)];
  }
  return counts;
}

}  // namespace keel::internal
