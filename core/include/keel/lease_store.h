// LeaseStore: the interface through which a `keel::Leader` keeps its lease, its membership
// record and the election's leader record. It lives in keel::core, beside the Leader that
// uses it; the implementations are in keel::stores (keel/lease_stores.h): an in-memory store
// for one process (many nodes as objects, driven by a manual clock in tests) and an etcd v3
// store for a cluster.
//
// The model is etcd's, so that the distributed store is a direct mapping:
//   - a lease is granted with a time to live and lapses unless it is kept alive;
//   - a node's member record and the leader record are attached to the node's lease and
//     vanish with it;
//   - the leader record is created only when there is none (a campaign), and its creation
//     gets a revision from a counter that only grows: that revision is the leadership's term,
//     the fencing token a stale leader's writes are rejected by.
//
// Calling convention: every method is called on the control thread of `runtime`, never
// blocks, and runs `done` later on that same control thread, exactly once, never inside the
// call itself. When the runtime shuts down before the answer, `done` gets CancelledError or
// is destroyed unrun together with the runtime's pending work (a Leader is stopped before its
// runtime). Errors: NotFound when the lease named has lapsed or was revoked; Unavailable when
// the store cannot be reached; DeadlineExceeded when it did not answer in time; DataLoss for
// an answer that cannot be read.
//
// Thread safety: implementations are thread-safe; one store may serve many leaders, on one
// runtime or several.
#ifndef KEEL_LEASE_STORE_H_
#define KEEL_LEASE_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "keel/runtime.h"

namespace keel {

// A lease in a store; 0 is never a valid lease.
using LeaseId = int64_t;

// The record of an election's current leader.
struct LeaderRecord {
  std::string node;   // the leader's node id
  int64_t term = 0;   // the record's creation revision: grows with every new leadership
  LeaseId lease = 0;  // the lease the record is attached to
};

// A live member of an election: a node whose member record's lease has not lapsed.
struct MemberRecord {
  std::string node;
  uint64_t heartbeat = 0;  // the counter the node wrote with its latest heartbeat
};

// What a store holds for one election.
struct ElectionView {
  std::optional<LeaderRecord> leader;
  std::vector<MemberRecord> members;  // sorted by node id
};

class LeaseStore {
 public:
  template <class T>
  using Done = absl::AnyInvocable<void(absl::StatusOr<T>)>;
  using DoneStatus = absl::AnyInvocable<void(absl::Status)>;

  virtual ~LeaseStore() = default;

  // Grants a new lease that lapses after `ttl` unless kept alive.
  virtual void Grant(Runtime& runtime, absl::Duration ttl, Done<LeaseId> done) = 0;
  // Renews `lease` for its full ttl, counted from when the store handles the request.
  // NotFound when it has lapsed or was revoked.
  virtual void KeepAlive(Runtime& runtime, LeaseId lease, DoneStatus done) = 0;
  // Ends `lease` now, and with it every record attached to it. OK when it had already lapsed.
  virtual void Revoke(Runtime& runtime, LeaseId lease, DoneStatus done) = 0;
  // Writes `node`'s member record of `election` (attached to `lease`, holding `heartbeat`),
  // then returns the election as the store holds it after the write, in one step. NotFound
  // when `lease` has lapsed.
  virtual void Heartbeat(Runtime& runtime, const std::string& election, const std::string& node,
                         LeaseId lease, uint64_t heartbeat, Done<ElectionView> done) = 0;
  // Creates the leader record for `node` attached to `lease` when the election has none,
  // and returns the leader record after the attempt: `node`'s own (with a new term) when it
  // won, the incumbent's otherwise. NotFound when `lease` has lapsed.
  virtual void Campaign(Runtime& runtime, const std::string& election, const std::string& node,
                        LeaseId lease, Done<LeaderRecord> done) = 0;
  // Deletes the leader record when its term is `term` (a leader stepping down); OK and no
  // change when the record is another leadership's or gone.
  virtual void Resign(Runtime& runtime, const std::string& election, int64_t term,
                      DoneStatus done) = 0;
};

}  // namespace keel

#endif  // KEEL_LEASE_STORE_H_
