// Leader: heartbeat-based election of one active node per job, with fencing terms.
//
// Every node that may run a job runs a `Leader` for the job's election name. Each one
// heartbeats into a shared `LeaseStore` (keel/lease_store.h; in memory for one process, etcd
// for a cluster): it keeps a lease alive and writes a member record attached to it, so the
// membership is the set of live heartbeats. One node holds the leader record, attached to its
// lease; when that lease lapses (the leader died, paused, or lost the store) the record
// vanishes and a follower's next heartbeat campaigns and takes over. Each leadership gets a
// term that only grows (the store's revision of the leader record), and no term is led twice
// (a node demoted while the store kept its record deletes the record and campaigns anew):
// leader-only work carries it, so that a store downstream can reject writes from a stale
// leader (fencing).
//
//   auto leader = keel::Leader::Start(*runtime, store,
//       {.election = "billing-cron", .node_id = "node-a", .ttl = absl::Seconds(6),
//        .heartbeat_interval = absl::Seconds(2), .safety_margin = absl::Seconds(1)},
//       {.on_elected = [](const keel::Election& e) { ... },
//        .on_leader_tick = [](const keel::LeaderTick& tick) {
//          RunBatch(tick.term);                 // downstream rejects terms below its highest
//          return absl::Seconds(10);            // the next tick, while still leader
//        }});
//   if (leader->IsLeader()) { ... }            // one atomic load, any thread
//
// Safety margin: the leader believes its lease only until `renewal sent + ttl - margin` on
// its own steady clock (the runtime's Clock), where "renewal sent" is when it sent the last
// keep-alive the store confirmed. The store counts the same ttl from when it received that
// request, so the leader's belief ends at least `margin` before anyone else can take over.
// A leader that pauses (a stall, SIGSTOP) and resumes notices the gap before it acts: every
// leader-only tick and every renewal answer is checked against that deadline first. Only the
// steady clock is used, so wall-clock jumps change nothing.
//
// Callbacks run on the runtime's offload pool, one at a time, in the order of the events
// (never on the control thread, which only heartbeats): elected, demoted, leader changed,
// cluster changed, the leader-only tick, shutdown. A callback that throws is caught, counted
// in `Status().callback_errors` and logged; the leader goes on. A slow callback delays the
// callbacks behind it, never the heartbeats.
//
// Thread safety: thread-safe. `IsLeader()`, `Term()` and `HoldsLease()` are lock-free and
// allocation-free on any thread.
//
// Memory ordering: the control thread publishes role and term together in one atomic word
// with a release store; `IsLeader()` / `Term()` / `Role()` load it with acquire, so a reader
// that sees a term also sees everything the control thread wrote before electing it.
//
// Lifetime: `Stop()` (or the destructor) steps down (the leader record is deleted and the
// lease revoked, so a successor takes over at once), runs on_shutdown, and returns once no
// callback runs or will run. The runtime and the store must outlive the Leader.
//
// Costs (bench/leader_bench.cc): `IsLeader()` and `Term()` are one acquire load, the same
// cost as a raw atomic load; `HoldsLease()` adds one clock read.
#ifndef KEEL_LEADER_H_
#define KEEL_LEADER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "keel/clock.h"
#include "keel/lease_store.h"
#include "keel/runtime.h"

namespace keel {

enum class LeaderRole {
  kFollower,  // running, not the leader (also before the first heartbeat)
  kLeader,
  kStopped,  // after Stop()
};
std::string_view LeaderRoleName(LeaderRole role) noexcept;  // "follower", "leader", "stopped"

// Why a leader stopped being one.
enum class DemotionCause {
  kLeaseExpired,  // its believed deadline passed without a confirmed renewal (store
                  // unreachable, too slow, or the process paused)
  kLeaseLost,     // the store says its lease is gone
  kSuperseded,    // the store shows another leadership
  kResigned,      // Resign()
  kShutdown,      // Stop() or the destructor
};
std::string_view DemotionCauseName(DemotionCause cause) noexcept;  // "lease_expired", ...

// A live member as this node last saw it.
struct LeaderMember {
  std::string node;
  uint64_t heartbeat = 0;  // the member's heartbeat counter
  Instant last_heartbeat;  // when this node first saw that counter, on the runtime's clock
};

// An election of this node, as on_elected receives it.
struct Election {
  int64_t term = 0;
  Instant at;              // when the control thread decided, on the runtime's clock
  Instant lease_deadline;  // the believed deadline at that moment
};

// A demotion of this node, as on_demoted receives it.
struct Demotion {
  int64_t term = 0;  // the leadership that ended
  DemotionCause cause = DemotionCause::kShutdown;
  Instant at;  // when the control thread decided, on the runtime's clock
  // The believed deadline the leadership had. For a leader that paused, `at` is after it:
  // the node could not have acted past `min(at, lease_deadline)`.
  Instant lease_deadline;
};

// What the leader-only tick receives.
struct LeaderTick {
  int64_t term = 0;        // the leadership this tick belongs to: pass it downstream
  Instant lease_deadline;  // the leader's believed deadline when the tick was started
  uint64_t tick = 0;       // 1 for the first tick of a leadership, then 2, 3, ...
};

struct LeaderOptions {
  // The job's election name and this node's id: 1 to 128 characters from [A-Za-z0-9._-].
  // Node ids must be unique among the election's nodes.
  std::string election = "";
  std::string node_id = "";
  // Lease time to live. Must be more than twice the heartbeat interval, at most 1 h.
  absl::Duration ttl = absl::Seconds(10);
  // How often a node renews its lease, writes its member record and reads the election.
  // At least 10 ms.
  absl::Duration heartbeat_interval = absl::Seconds(2);
  // The leader trusts its lease until `renewal sent + ttl - safety_margin`. More than 0, and
  // `ttl - safety_margin` must exceed the heartbeat interval (else the leader would demote
  // itself between two renewals).
  absl::Duration safety_margin = absl::Seconds(2);
  // After Resign(), this node does not campaign for this long, so that another member takes
  // over. Default (zero): the ttl. A lone node leads again after it.
  absl::Duration resign_holdoff = absl::ZeroDuration();
  // First leader-only tick after being elected.
  absl::Duration first_tick_after = absl::ZeroDuration();
};

struct LeaderCallbacks {
  std::function<void(const Election& election)> on_elected = nullptr;
  std::function<void(const Demotion& demotion)> on_demoted = nullptr;
  // The leader this node sees changed: another node, this one, or none (empty id, term 0).
  std::function<void(const std::string& leader, int64_t term)> on_leader_changed = nullptr;
  // The set of live members changed (a node joined or left); sorted by node id.
  std::function<void(const std::vector<LeaderMember>& members)> on_cluster_changed = nullptr;
  // Leader-only work: runs while this node leads, first `first_tick_after` after the
  // election, then the interval it returns after the previous tick was due (fixed rate; at
  // once when the callback took longer; clamped to at least 1 ms; absl::InfiniteDuration()
  // stops ticking for this leadership; after a throw, 1 s). Ticks never overlap. Cancelled on
  // demotion; a tick that was queued when the node was demoted is skipped, never run late.
  std::function<absl::Duration(const LeaderTick& tick)> on_leader_tick = nullptr;
  // Last callback, once, from Stop().
  std::function<void()> on_shutdown = nullptr;
};

struct LeaderStatus {
  LeaderRole role = LeaderRole::kFollower;
  int64_t term = 0;    // this node's term when leading, else the observed leader's
  std::string leader;  // the leader's node id as last seen; empty when none
  std::optional<Instant> lease_deadline;  // when leading: the believed deadline
  std::vector<LeaderMember> members;      // live members, sorted by node id
  Instant created_at;                     // when Start ran
  std::optional<Instant> leader_since;    // when this node's current leadership began
  LeaseId lease = 0;                      // this node's lease; 0 when it has none
  std::optional<Instant> next_tick;       // when leading: when the next leader tick is due
                                          // (empty while one runs, or when none is armed)
  uint64_t heartbeats = 0;                // heartbeats the store confirmed
  uint64_t elections_won = 0;
  uint64_t demotions = 0;
  uint64_t store_errors = 0;     // failed store requests
  uint64_t callback_errors = 0;  // callbacks that threw
  absl::Status last_error;       // the latest store error (OK once a heartbeat succeeds again)
};

class Leader {
 public:
  // Validates the options (InvalidArgument naming the option and the rule) and starts
  // heartbeating on `runtime`'s control thread; the first heartbeat is sent at once.
  // FailedPrecondition when the runtime is shutting down.
  static absl::StatusOr<std::unique_ptr<Leader>> Start(Runtime& runtime,
                                                       std::shared_ptr<LeaseStore> store,
                                                       LeaderOptions options,
                                                       LeaderCallbacks callbacks);
  static absl::StatusOr<std::unique_ptr<Leader>> Start(Runtime& runtime,
                                                       std::shared_ptr<LeaseStore> store,
                                                       LeaderOptions options);

  Leader(const Leader&) = delete;
  Leader& operator=(const Leader&) = delete;
  // Stop(), waiting as long as it takes.
  ~Leader();

  // True while this node leads, as its control thread last decided. One acquire load.
  bool IsLeader() const noexcept { return (word_.load(std::memory_order_acquire) & 1) != 0; }
  // This node's term while it leads; otherwise the term of the leader it last saw (0 when
  // none). One acquire load.
  int64_t Term() const noexcept {
    return static_cast<int64_t>(word_.load(std::memory_order_acquire) >> 1);
  }
  // IsLeader() and, on this thread's reading of the clock, the believed lease deadline has
  // not passed: true only while no other node can have taken over, even if the control
  // thread has not run yet (right after a process pause). Use it right before an action a
  // stale leader must not take and that carries no term. One more clock read than IsLeader().
  bool HoldsLease() const noexcept;

  // Steps down at once when leading: the node is demoted (cause kResigned) and the leader
  // record is deleted in the store, so another member takes over on its next heartbeat;
  // this node does not campaign for `resign_holdoff`. IsLeader() is false when it returns.
  // FailedPrecondition when this node does not lead or the leader has stopped.
  absl::Status Resign();

  // A copy of the leader's state, any thread.
  LeaderStatus Status() const;

  // Stops heartbeating: a leader is demoted (kShutdown), deletes its record and revokes its
  // lease (waiting up to `timeout` for the store), then on_shutdown runs. Returns once no
  // callback runs or will run; DeadlineExceeded when that took longer than `timeout` (the
  // remaining steps still finish in the background). Idempotent. From inside one of this
  // leader's own callbacks, or from any job on the runtime's offload pool, it starts the stop
  // and returns without waiting (waiting could wait for that very thread). Not on the
  // control thread (FailedPrecondition).
  absl::Status Stop(absl::Duration timeout = absl::Seconds(10));

  struct Core;  // internal

 private:
  Leader(std::shared_ptr<Core> core, const std::atomic<uint64_t>& word);
  std::shared_ptr<Core> core_;
  // Role and term, published by the control thread: `term << 1 | is_leader`. Points into
  // core_; a reference so that the read path is inline.
  const std::atomic<uint64_t>& word_;
};

}  // namespace keel

#endif  // KEEL_LEADER_H_
