// Leader's engine: the heartbeat cycle on the control thread, the believed lease deadline,
// and the ordered callback queue on the offload pool.
//
// Invariants (control thread state, `Core` below):
//  1. One heartbeat cycle at a time: grant-or-keepalive, then heartbeat (member record and
//     the election's view), then a campaign when nobody leads. `cycle_running` is set for its
//     whole length; a heartbeat timer that fires meanwhile does nothing but re-arm.
//  2. `renewed_at` is the instant the last confirmed grant or keep-alive was *sent*; the
//     store counted its ttl from a later instant, so `renewed_at + ttl - margin` ends before
//     the store's lease by at least the margin. A leader never believes past it.
//  3. `leading` changes only on the control thread, and `word` (term << 1 | leading) is
//     stored right after, with release, by Publish(); the deadline is stored before the word.
//  4. Each leadership has a generation; a tick or completion from an older generation is
//     dropped. Ticks run one at a time: the next is scheduled when the previous returned.
//  5. Callbacks are queued in event order and run one at a time on the offload pool; once
//     the shutdown marker is queued nothing else is.
#include "keel/leader.h"

#include <algorithm>
#include <deque>
#include <exception>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "keel/internal/sync.h"
#include "log.h"

namespace keel {
namespace {

using internal::CondVar;
using internal::Mutex;
using internal::MutexLock;

thread_local const void* running_callbacks_of = nullptr;

absl::Status CheckName(const char* what, const std::string& name) {
  if (name.empty() || name.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be 1 to 128 characters, got ", name.size()));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " may hold only [A-Za-z0-9._-], got '", name, "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(const LeaderOptions& o) {
  if (auto s = CheckName("election", o.election); !s.ok()) return s;
  if (auto s = CheckName("node_id", o.node_id); !s.ok()) return s;
  if (o.heartbeat_interval < absl::Milliseconds(10)) {
    return absl::InvalidArgumentError(absl::StrCat("heartbeat_interval must be >= 10ms, got ",
                                                   absl::FormatDuration(o.heartbeat_interval)));
  }
  if (o.ttl <= o.heartbeat_interval * 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ttl must be more than twice heartbeat_interval (",
        absl::FormatDuration(o.heartbeat_interval), "), got ", absl::FormatDuration(o.ttl)));
  }
  if (o.ttl > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl must be <= 1h, got ", absl::FormatDuration(o.ttl)));
  }
  if (o.safety_margin <= absl::ZeroDuration() || o.safety_margin >= o.ttl) {
    return absl::InvalidArgumentError(absl::StrCat("safety_margin must be > 0 and < ttl (",
                                                   absl::FormatDuration(o.ttl), "), got ",
                                                   absl::FormatDuration(o.safety_margin)));
  }
  if (o.ttl - o.safety_margin <= o.heartbeat_interval) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ttl - safety_margin (", absl::FormatDuration(o.ttl - o.safety_margin),
        ") must exceed heartbeat_interval (", absl::FormatDuration(o.heartbeat_interval),
        "), else the leader would demote itself between two renewals"));
  }
  if (o.resign_holdoff < absl::ZeroDuration() || o.resign_holdoff > absl::Hours(24)) {
    return absl::InvalidArgumentError(absl::StrCat("resign_holdoff must be 0 to 24h, got ",
                                                   absl::FormatDuration(o.resign_holdoff)));
  }
  if (o.first_tick_after < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("first_tick_after must be >= 0, got ",
                                                   absl::FormatDuration(o.first_tick_after)));
  }
  return absl::OkStatus();
}

int64_t ToNanos(Instant t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

std::string_view LeaderRoleName(LeaderRole role) noexcept {
  switch (role) {
    case LeaderRole::kFollower:
      return "follower";
    case LeaderRole::kLeader:
      return "leader";
    case LeaderRole::kStopped:
      return "stopped";
  }
  return "unknown";
}

std::string_view DemotionCauseName(DemotionCause cause) noexcept {
  switch (cause) {
    case DemotionCause::kLeaseExpired:
      return "lease_expired";
    case DemotionCause::kLeaseLost:
      return "lease_lost";
    case DemotionCause::kSuperseded:
      return "superseded";
    case DemotionCause::kResigned:
      return "resigned";
    case DemotionCause::kShutdown:
      return "shutdown";
  }
  return "unknown";
}

struct Leader::Core : std::enable_shared_from_this<Core> {
  Core(Runtime& rt, std::shared_ptr<LeaseStore> st, LeaderOptions opts, LeaderCallbacks cbs)
      : runtime(rt), store(std::move(st)), options(std::move(opts)), callbacks(std::move(cbs)) {
    if (options.resign_holdoff == absl::ZeroDuration()) options.resign_holdoff = options.ttl;
  }

  Runtime& runtime;
  const std::shared_ptr<LeaseStore> store;
  LeaderOptions options;
  const LeaderCallbacks callbacks;

  // Read path. `word`: term << 1 | leading (invariant 3). `deadline_ns`: the believed
  // deadline in nanoseconds of the runtime's clock while leading; stored (relaxed) before the
  // release store of `word` that elects, so HoldsLease()'s acquire load of `word` sees it.
  std::atomic<uint64_t> word{0};
  std::atomic<int64_t> deadline_ns{0};

  // ---- control thread only ----
  bool stopping = false;
  bool cycle_running = false;
  LeaseId lease = 0;
  Instant renewed_at;  // invariant 2
  uint64_t heartbeat_seq = 0;
  bool leading = false;
  int64_t term = 0;
  Instant believed_until;
  Instant leader_since;
  uint64_t generation = 0;  // invariant 4
  uint64_t tick_count = 0;
  std::optional<Instant> next_tick_at;  // when the next leader tick is due, if one is armed
  std::string seen_leader;
  int64_t seen_term = 0;
  std::map<std::string, LeaderMember> members;
  bool members_reported = false;
  Instant holdoff_until;
  int64_t resigned_term = 0;  // never taken back from a record still in the store
  TimerHandle beat_timer, deadline_timer, tick_timer;
  uint64_t heartbeats = 0, elections_won = 0, demotions = 0, store_errors = 0;
  absl::Status last_error;

  // ---- status copy, any thread ----
  mutable Mutex status_mu;
  LeaderStatus status ABSL_GUARDED_BY(status_mu);

  // ---- callback queue (invariant 5) ----
  Mutex queue_mu;
  std::deque<std::pair<const char*, std::function<void()>>> queue ABSL_GUARDED_BY(queue_mu);
  bool draining ABSL_GUARDED_BY(queue_mu) = false;
  bool queue_closed ABSL_GUARDED_BY(queue_mu) = false;
  std::atomic<uint64_t> callback_errors{0};

  // ---- stop ----
  std::atomic<bool> stop_requested{false};
  Mutex stop_mu;
  CondVar stop_cv;
  bool stopped ABSL_GUARDED_BY(stop_mu) = false;

  Instant Now() const { return runtime.Now(); }

  // ---------------- read path helpers ----------------
  void Publish() {
    const uint64_t t = static_cast<uint64_t>(leading ? term : seen_term);
    // release: publishes the role with its term (and the deadline stored before it); pairs
    // with the acquire loads in IsLeader(), Term() and HoldsLease().
    word.store((t << 1) | (leading ? 1u : 0u), std::memory_order_release);
  }

  void PublishStatus() {
    MutexLock lock(&status_mu);
    status.role = leading ? LeaderRole::kLeader : LeaderRole::kFollower;
    status.term = leading ? term : seen_term;
    status.leader = seen_leader;
    status.lease_deadline =
        leading ? std::optional<Instant>(believed_until) : std::optional<Instant>();
    status.members.clear();
    for (const auto& [node, member] : members) status.members.push_back(member);
    status.leader_since = leading ? std::optional<Instant>(leader_since) : std::optional<Instant>();
    status.lease = lease;
    status.next_tick = leading ? next_tick_at : std::nullopt;
    status.heartbeats = heartbeats;
    status.elections_won = elections_won;
    status.demotions = demotions;
    status.store_errors = store_errors;
    status.last_error = last_error;
  }

  // ---------------- callbacks ----------------
  // Queues a user callback (control thread, or Stop when the runtime is gone).
  void Enqueue(const char* what, std::function<void()> fn) {
    if (!fn) return;
    bool start = false;
    {
      MutexLock lock(&queue_mu);
      if (queue_closed) return;
      queue.emplace_back(what, std::move(fn));
      if (!draining) draining = start = true;
    }
    if (start) StartDrain();
  }

  void StartDrain() {
    auto self = shared_from_this();
    absl::Status s = runtime.Offload([self] { self->Drain(); });
    if (s.ok()) return;
    if (absl::IsResourceExhausted(s) && runtime.InControlThread()) {
      // The pool's queue is full: try again shortly, in order (nothing else drains meanwhile).
      if (runtime.Schedule(absl::Milliseconds(1), [self] { self->StartDrain(); }).ok()) return;
    }
    if (!runtime.InControlThread()) {
      Drain();  // the runtime is gone (Stop after its shutdown): run them here, in order
      return;
    }
    internal::Log().error("leader '{}/{}': callbacks dropped, the offload pool refused them: {}",
                          options.election, options.node_id, s.ToString());
    MutexLock lock(&queue_mu);
    queue.clear();
    draining = false;
  }

  void Drain() {
    const void* outer = running_callbacks_of;
    running_callbacks_of = this;
    for (;;) {
      std::pair<const char*, std::function<void()>> item;
      {
        MutexLock lock(&queue_mu);
        if (queue.empty()) {
          draining = false;
          break;
        }
        item = std::move(queue.front());
        queue.pop_front();
      }
      try {
        item.second();
      } catch (const std::exception& e) {
        callback_errors.fetch_add(1, std::memory_order_relaxed);
        internal::Log().error("leader '{}/{}': the {} callback threw: {}", options.election,
                              options.node_id, item.first, e.what());
      } catch (...) {
        callback_errors.fetch_add(1, std::memory_order_relaxed);
        internal::Log().error("leader '{}/{}': the {} callback threw a non-std exception",
                              options.election, options.node_id, item.first);
      }
    }
    running_callbacks_of = outer;
  }

  // ---------------- heartbeat cycle (invariant 1) ----------------
  void ArmBeat(absl::Duration after) {
    auto self = shared_from_this();
    auto timer = runtime.Schedule(after, [self] { self->Beat(); });
    if (timer.ok()) beat_timer = *timer;
  }

  void Beat() {
    if (stopping) return;
    ArmBeat(options.heartbeat_interval);
    if (leading) CheckDeadline();
    if (cycle_running) return;
    cycle_running = true;
    auto self = shared_from_this();
    const Instant sent = Now();
    if (lease == 0) {
      store->Grant(runtime, options.ttl,
                   [self, sent](absl::StatusOr<LeaseId> r) { self->OnGrant(sent, std::move(r)); });
    } else {
      const LeaseId used = lease;
      store->KeepAlive(runtime, used, [self, used, sent](absl::Status s) {
        self->OnKeepAlive(used, sent, std::move(s));
      });
    }
  }

  void EndCycle() {
    cycle_running = false;
    PublishStatus();
  }

  void StoreError(const char* op, const absl::Status& s) {
    ++store_errors;
    last_error = s;
    internal::Log().warn("leader '{}/{}': {} failed: {}", options.election, options.node_id, op,
                         s.ToString());
  }

  void OnGrant(Instant sent, absl::StatusOr<LeaseId> r) {
    if (stopping) {
      if (r.ok()) store->Revoke(runtime, *r, [](absl::Status) {});
      cycle_running = false;
      return;
    }
    if (!r.ok()) {
      StoreError("lease grant", r.status());
      return EndCycle();
    }
    lease = *r;
    renewed_at = sent;
    SendHeartbeat();
  }

  void OnKeepAlive(LeaseId used, Instant sent, absl::Status s) {
    if (stopping) {
      cycle_running = false;
      return;
    }
    if (absl::IsNotFound(s)) {
      LoseLease(used, "keep-alive");
      // Start over with a new lease in the same cycle.
      auto self = shared_from_this();
      const Instant again = Now();
      store->Grant(runtime, options.ttl, [self, again](absl::StatusOr<LeaseId> r) {
        self->OnGrant(again, std::move(r));
      });
      return;
    }
    if (!s.ok()) {
      StoreError("lease keep-alive", s);
      return EndCycle();
    }
    renewed_at = sent;
    if (leading) {
      believed_until = AddDuration(sent, options.ttl - options.safety_margin);
      if (!CheckDeadline()) {
        deadline_ns.store(ToNanos(believed_until), std::memory_order_relaxed);
        ArmDeadline();
      }
    }
    SendHeartbeat();
  }

  void LoseLease(LeaseId used, const char* where) {
    if (lease != used) return;
    internal::Log().warn("leader '{}/{}': lease {} is gone (seen at {})", options.election,
                         options.node_id, used, where);
    lease = 0;
    if (leading) Demote(DemotionCause::kLeaseLost);
  }

  void SendHeartbeat() {
    auto self = shared_from_this();
    const LeaseId used = lease;
    store->Heartbeat(
        runtime, options.election, options.node_id, used, ++heartbeat_seq,
        [self, used](absl::StatusOr<ElectionView> r) { self->OnView(used, std::move(r)); });
  }

  void OnView(LeaseId used, absl::StatusOr<ElectionView> r) {
    if (stopping) {
      cycle_running = false;
      return;
    }
    if (absl::IsNotFound(r.status())) {
      LoseLease(used, "heartbeat");
      return EndCycle();
    }
    if (!r.ok()) {
      StoreError("heartbeat", r.status());
      return EndCycle();
    }
    ++heartbeats;
    last_error = absl::OkStatus();
    UpdateMembers(r->members);
    if (r->leader.has_value()) {
      const LeaderRecord& record = *r->leader;
      if (record.node == options.node_id && record.lease == lease) {
        // Ours but not led: a leadership that ended (demoted by its deadline while the store
        // kept the record, or won too late to trust) or was resigned. A term is never led
        // twice: the record is deleted, and the next campaign makes a new term.
        if (!leading && record.term != resigned_term) ResignRecord(record.term);
      } else {
        if (leading) Demote(DemotionCause::kSuperseded);
        SeeLeader(record.node, record.term);
      }
      return EndCycle();
    }
    if (leading) Demote(DemotionCause::kSuperseded);  // our record vanished under a live lease
    SeeLeader("", 0);
    if (Now() < holdoff_until) return EndCycle();
    auto self = shared_from_this();
    store->Campaign(
        runtime, options.election, options.node_id, used,
        [self, used](absl::StatusOr<LeaderRecord> c) { self->OnCampaign(used, std::move(c)); });
  }

  void OnCampaign(LeaseId used, absl::StatusOr<LeaderRecord> r) {
    if (stopping) {
      cycle_running = false;
      return;
    }
    if (absl::IsNotFound(r.status())) {
      LoseLease(used, "campaign");
      return EndCycle();
    }
    if (!r.ok()) {
      StoreError("campaign", r.status());
      return EndCycle();
    }
    if (r->node == options.node_id && r->lease == lease) {
      if (r->term != resigned_term) BecomeLeader(r->term);
    } else {
      SeeLeader(r->node, r->term);
    }
    EndCycle();
  }

  void UpdateMembers(const std::vector<MemberRecord>& now_live) {
    const Instant now = Now();
    std::map<std::string, LeaderMember> next;
    for (const MemberRecord& m : now_live) {
      LeaderMember member{m.node, m.heartbeat, now};
      auto it = members.find(m.node);
      if (it != members.end() && it->second.heartbeat == m.heartbeat) {
        member.last_heartbeat = it->second.last_heartbeat;
      }
      next.emplace(m.node, std::move(member));
    }
    bool changed = !members_reported || next.size() != members.size();
    if (!changed) {
      for (auto a = next.begin(), b = members.begin(); a != next.end(); ++a, ++b) {
        if (a->first != b->first) {
          changed = true;
          break;
        }
      }
    }
    members = std::move(next);
    if (!changed) return;
    members_reported = true;
    std::vector<LeaderMember> list;
    for (const auto& [node, member] : members) list.push_back(member);
    if (callbacks.on_cluster_changed) {
      Enqueue("cluster changed",
              [this, list = std::move(list)] { callbacks.on_cluster_changed(list); });
    }
  }

  void SeeLeader(const std::string& node, int64_t t) {
    if (node == seen_leader && t == seen_term) return;
    seen_leader = node;
    seen_term = t;
    if (!leading) Publish();
    if (callbacks.on_leader_changed) {
      Enqueue("leader changed", [this, node, t] { callbacks.on_leader_changed(node, t); });
    }
  }

  // ---------------- leadership ----------------
  void BecomeLeader(int64_t new_term) {
    const Instant until = AddDuration(renewed_at, options.ttl - options.safety_margin);
    const Instant now = Now();
    if (now >= until) return;  // too late to trust this lease; the next renewal decides
    leading = true;
    term = new_term;
    believed_until = until;
    leader_since = now;
    ++generation;
    ++elections_won;
    tick_count = 0;
    // relaxed: published by the release store of `word` in Publish() below.
    deadline_ns.store(ToNanos(until), std::memory_order_relaxed);
    SeeLeader(options.node_id, new_term);
    Publish();
    ArmDeadline();
    internal::Log().info("leader '{}/{}': elected, term {}", options.election, options.node_id,
                         new_term);
    if (callbacks.on_elected) {
      Enqueue("elected", [this, e = Election{new_term, now, until}] { callbacks.on_elected(e); });
    }
    if (callbacks.on_leader_tick) ArmTick(options.first_tick_after);
  }

  void Demote(DemotionCause cause) {
    if (!leading) return;
    leading = false;
    ++demotions;
    ++generation;
    deadline_ns.store(0, std::memory_order_relaxed);
    Publish();
    runtime.Cancel(deadline_timer);
    runtime.Cancel(tick_timer);
    next_tick_at.reset();
    internal::Log().info("leader '{}/{}': demoted from term {} ({})", options.election,
                         options.node_id, term, DemotionCauseName(cause));
    if (callbacks.on_demoted) {
      Enqueue("demoted", [this, d = Demotion{term, cause, Now(), believed_until}] {
        callbacks.on_demoted(d);
      });
    }
    PublishStatus();
  }

  // Demotes when the believed deadline has passed; true when it did.
  bool CheckDeadline() {
    if (leading && Now() >= believed_until) {
      Demote(DemotionCause::kLeaseExpired);
      return true;
    }
    return false;
  }

  void ArmDeadline() {
    runtime.Cancel(deadline_timer);
    auto self = shared_from_this();
    auto timer = runtime.ScheduleAt(believed_until, [self] { self->CheckDeadline(); });
    if (timer.ok()) deadline_timer = *timer;
  }

  void ArmTick(absl::Duration after) { ArmTickAt(AddDuration(Now(), after)); }
  void ArmTickAt(Instant at) {
    auto self = shared_from_this();
    const uint64_t gen = generation;
    auto timer = runtime.ScheduleAt(at, [self, gen] { self->Tick(gen); });
    if (timer.ok()) {
      tick_timer = *timer;
      next_tick_at = at;
      PublishStatus();
    }
  }

  void Tick(uint64_t gen) {
    if (stopping || !leading || gen != generation) return;
    if (CheckDeadline()) return;  // a pause: notice the gap before acting
    next_tick_at.reset();         // known once this tick's callback has returned
    PublishStatus();
    const LeaderTick tick{term, believed_until, ++tick_count};
    // The next tick is due `interval` after this one was due to start (fixed rate), however
    // long the callback queue and the callback took; at once if that has passed.
    const Instant fired = Now();
    const uint64_t expected = (static_cast<uint64_t>(term) << 1) | 1u;
    auto self = shared_from_this();
    Enqueue("leader tick", [this, self, tick, expected, gen, fired] {
      // Skipped when demoted since it was queued, or when the deadline passed meanwhile.
      if (word.load(std::memory_order_acquire) != expected || !HoldsLease()) return;
      absl::Duration next = absl::InfiniteDuration();
      bool returned = false;
      struct Reschedule {
        Core* core;
        std::shared_ptr<Core> keep;
        uint64_t gen;
        Instant fired;
        absl::Duration* next;
        bool* returned;
        ~Reschedule() {
          // Also after a throw: the tick goes on at its last interval (1 s floor if none).
          const absl::Duration after = *returned ? *next : absl::Seconds(1);
          if (after == absl::InfiniteDuration()) return;
          auto k = keep;
          const uint64_t g = gen;
          const Instant at = AddDuration(fired, std::max(after, absl::Milliseconds(1)));
          (void)core->runtime.Post([k, g, at] {
            if (!k->stopping && k->leading && k->generation == g) k->ArmTickAt(at);
          });
        }
      } reschedule{this, self, gen, fired, &next, &returned};
      next = callbacks.on_leader_tick(tick);
      returned = true;
    });
  }

  bool HoldsLease() const noexcept {
    // acquire: pairs with the release store in Publish(); the deadline was stored before it.
    if ((word.load(std::memory_order_acquire) & 1) == 0) return false;
    return ToNanos(runtime.clock().Now()) < deadline_ns.load(std::memory_order_relaxed);
  }

  // Deletes the leader record of `t` (ours, not led) so that no term is led twice.
  void ResignRecord(int64_t t) {
    resigned_term = t;
    auto self = shared_from_this();
    store->Resign(runtime, options.election, t, [self](absl::Status s) {
      if (!s.ok()) self->StoreError("resign", s);
    });
  }

  // ---------------- resign and stop ----------------
  absl::Status ResignOnLoop() {
    if (stopping) return absl::FailedPreconditionError("the leader has stopped");
    if (!leading) {
      return absl::FailedPreconditionError(absl::StrCat(
          "node '", options.node_id, "' does not lead election '", options.election, "'"));
    }
    const int64_t t = term;
    Demote(DemotionCause::kResigned);
    holdoff_until = AddDuration(Now(), options.resign_holdoff);
    ResignRecord(t);
    return absl::OkStatus();
  }

  void StopOnLoop() {
    if (stopping) return;
    stopping = true;
    runtime.Cancel(beat_timer);
    const int64_t led = leading ? term : 0;
    Demote(DemotionCause::kShutdown);
    auto self = shared_from_this();
    auto revoke = [self] {
      if (self->lease == 0) return self->FinishStop();
      const LeaseId used = self->lease;
      self->lease = 0;
      self->store->Revoke(self->runtime, used, [self](absl::Status s) {
        if (!s.ok()) self->StoreError("lease revoke", s);
        self->FinishStop();
      });
    };
    if (led != 0) {
      store->Resign(runtime, options.election, led, [self, revoke](absl::Status s) mutable {
        if (!s.ok()) self->StoreError("resign", s);
        revoke();
      });
    } else {
      revoke();
    }
  }

  // Queues on_shutdown and the marker that ends Stop()'s wait; nothing is queued after.
  void FinishStop() {
    {
      MutexLock lock(&status_mu);
      status.role = LeaderRole::kStopped;
      status.lease = 0;
      status.lease_deadline.reset();
      status.leader_since.reset();
      status.store_errors = store_errors;
      status.last_error = last_error;
    }
    if (callbacks.on_shutdown) Enqueue("shutdown", [this] { callbacks.on_shutdown(); });
    auto self = shared_from_this();
    Enqueue("stop marker", [self] { self->MarkStopped(); });
    MutexLock lock(&queue_mu);
    queue_closed = true;
  }

  void MarkStopped() {
    MutexLock lock(&stop_mu);
    stopped = true;
    stop_cv.NotifyAll();
  }
};

// ---------------- Leader ----------------

absl::StatusOr<std::unique_ptr<Leader>> Leader::Start(Runtime& runtime,
                                                      std::shared_ptr<LeaseStore> store,
                                                      LeaderOptions options) {
  return Start(runtime, std::move(store), std::move(options), LeaderCallbacks{});
}

absl::StatusOr<std::unique_ptr<Leader>> Leader::Start(Runtime& runtime,
                                                      std::shared_ptr<LeaseStore> store,
                                                      LeaderOptions options,
                                                      LeaderCallbacks callbacks) {
  if (store == nullptr) return absl::InvalidArgumentError("the lease store is null");
  if (auto s = ValidateOptions(options); !s.ok()) return s;
  auto core =
      std::make_shared<Core>(runtime, std::move(store), std::move(options), std::move(callbacks));
  {
    MutexLock lock(&core->status_mu);
    core->status.created_at = runtime.Now();
    core->status.role = LeaderRole::kFollower;
  }
  absl::Status posted = runtime.Post([core] { core->Beat(); });
  if (!posted.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the runtime does not accept work: ", posted.message()));
  }
  std::unique_ptr<Leader> leader(new Leader(core, core->word));
  return leader;
}

Leader::Leader(std::shared_ptr<Core> core, const std::atomic<uint64_t>& word)
    : core_(std::move(core)), word_(word) {}

Leader::~Leader() { (void)Stop(absl::InfiniteDuration()); }

bool Leader::HoldsLease() const noexcept { return core_->HoldsLease(); }

LeaderStatus Leader::Status() const {
  LeaderStatus copy;
  {
    MutexLock lock(&core_->status_mu);
    copy = core_->status;
  }
  copy.callback_errors = core_->callback_errors.load(std::memory_order_relaxed);
  return copy;
}

namespace {
// A result handed from the control thread to a waiting caller; set by the task, or by its
// destructor when the runtime destroyed the task unrun.
struct Handoff {
  Mutex mu;
  CondVar cv;
  std::optional<absl::Status> result ABSL_GUARDED_BY(mu);
  void Set(absl::Status s) {
    MutexLock lock(&mu);
    if (!result.has_value()) result = std::move(s);
    cv.NotifyAll();
  }
  absl::Status Wait() {
    MutexLock lock(&mu);
    cv.Wait(&mu, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return result.has_value(); });
    return *result;
  }
};
struct HandoffGuard {
  std::shared_ptr<Handoff> handoff;
  HandoffGuard(std::shared_ptr<Handoff> h) : handoff(std::move(h)) {}
  HandoffGuard(HandoffGuard&& other) noexcept = default;
  ~HandoffGuard() {
    if (handoff) handoff->Set(absl::FailedPreconditionError("the runtime is shutting down"));
  }
};
}  // namespace

absl::Status Leader::Resign() {
  if (core_->runtime.InControlThread()) {
    return absl::FailedPreconditionError("Resign() must not be called on the control thread");
  }
  if (core_->stop_requested.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("the leader has stopped");
  }
  auto handoff = std::make_shared<Handoff>();
  auto core = core_;
  absl::Status posted = core_->runtime.Post(
      [core, guard = HandoffGuard(handoff)] { guard.handoff->Set(core->ResignOnLoop()); });
  if (!posted.ok()) return absl::FailedPreconditionError("the runtime is shutting down");
  return handoff->Wait();
}

absl::Status Leader::Stop(absl::Duration timeout) {
  Core& core = *core_;
  if (core.runtime.InControlThread()) {
    return absl::FailedPreconditionError("Stop() must not be called on the control thread");
  }
  if (!core.stop_requested.exchange(true, std::memory_order_acq_rel)) {
    auto self = core_;
    absl::Status posted = core.runtime.Post([self] { self->StopOnLoop(); });
    if (!posted.ok()) {
      // The runtime is gone, and with it the control thread: nothing else touches the
      // control state now, so finish here. The store is not told (it cannot be reached
      // through a stopped runtime); the lease lapses by itself.
      core.stopping = true;
      core.leading = false;
      core.deadline_ns.store(0, std::memory_order_relaxed);
      core.Publish();
      core.FinishStop();
    }
  }
  // From its own callback, or from any job on the runtime's pool (which the remaining
  // callbacks may need), waiting could wait for itself: the stop goes on without the caller.
  if (running_callbacks_of == &core || core.runtime.InOffloadPool()) return absl::OkStatus();
  MutexLock lock(&core.stop_mu);
  const bool done = core.stop_cv.WaitFor(
      &core.stop_mu, timeout, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return core.stopped; });
  if (!done) {
    return absl::DeadlineExceededError(
        absl::StrCat("leader '", core.options.election, "/", core.options.node_id,
                     "' did not finish stopping within ", absl::FormatDuration(timeout)));
  }
  return absl::OkStatus();
}

}  // namespace keel
