// MemoryLeaseStore: a LeaseStore (keel/lease_store.h) held in this process, for elections
// whose nodes are objects in one process: tests, the demo, and single-process services that
// want leader-only work across several workers. It follows etcd's model exactly: leases with
// a ttl on the store's clock, records attached to leases, a revision counter that grows with
// every write, and the leader record's creation revision as the term.
//
//   keel::ManualClock clock;
//   auto store = std::make_shared<keel::MemoryLeaseStore>(&clock);
//   auto a = keel::Leader::Start(*runtime, store, {.election = "job", .node_id = "a"});
//   auto b = keel::Leader::Start(*runtime, store, {.election = "job", .node_id = "b"});
//
// Leases lapse when the store's clock passes their deadline; the store notices on its next
// request (every request first removes lapsed leases and their records). For fault tests,
// `SetAvailable(false)` makes every request fail with Unavailable, as a store outage would,
// without touching leases: they go on lapsing by the clock.
//
// Thread safety: thread-safe; one store may serve leaders on several runtimes. Answers are
// posted to the calling runtime's control thread, never run inside the call.
#ifndef KEEL_MEMORY_LEASE_STORE_H_
#define KEEL_MEMORY_LEASE_STORE_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "keel/clock.h"
#include "keel/internal/sync.h"
#include "keel/lease_store.h"

namespace keel {

class MemoryLeaseStore final : public LeaseStore {
 public:
  // `clock` (nullptr: the steady clock) times the leases; it must outlive the store.
  explicit MemoryLeaseStore(Clock* clock = nullptr);

  void Grant(Runtime& runtime, absl::Duration ttl, Done<LeaseId> done) override;
  void KeepAlive(Runtime& runtime, LeaseId lease, DoneStatus done) override;
  void Revoke(Runtime& runtime, LeaseId lease, DoneStatus done) override;
  void Heartbeat(Runtime& runtime, const std::string& election, const std::string& node,
                 LeaseId lease, uint64_t heartbeat, Done<ElectionView> done) override;
  void Campaign(Runtime& runtime, const std::string& election, const std::string& node,
                LeaseId lease, Done<LeaderRecord> done) override;
  void Resign(Runtime& runtime, const std::string& election, int64_t term,
              DoneStatus done) override;

  // While false, every request fails with Unavailable and changes nothing.
  void SetAvailable(bool available);
  // The election's records as they are now (lapsed leases removed first).
  ElectionView View(const std::string& election);
  // Live leases.
  size_t LeaseCount();
  // The revision counter: the number of writes so far.
  int64_t Revision();

 private:
  struct Lease {
    absl::Duration ttl;
    Instant deadline;
  };
  struct Record {
    std::string value;
    int64_t create_revision = 0;
    LeaseId lease = 0;
  };

  void ExpireLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deletes every record attached to `lease` (one write).
  void EraseRecordsLocked(LeaseId lease) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ElectionView ViewLocked(const std::string& election) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckAvailableLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Clock* const clock_;
  internal::Mutex mu_;
  bool available_ ABSL_GUARDED_BY(mu_) = true;
  int64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  LeaseId next_lease_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<LeaseId, Lease> leases_ ABSL_GUARDED_BY(mu_);
  // Keys "<election>/leader" and "<election>/members/<node>", ordered so that one election's
  // records are one range.
  std::map<std::string, Record> records_ ABSL_GUARDED_BY(mu_);
};

}  // namespace keel

#endif  // KEEL_MEMORY_LEASE_STORE_H_
