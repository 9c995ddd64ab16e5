// EtcdLeaseStore: a LeaseStore (keel/lease_store.h) on etcd v3, for elections whose nodes are
// processes on several machines. It speaks etcd's JSON gateway (`/v3/...`, etcd 3.4 and
// later) with libcurl on the calling runtime's control thread, so a heartbeat never blocks
// the loop.
//
//   auto store = keel::EtcdLeaseStore::Create(
//       {.endpoints = {"http://10.0.0.1:2379", "http://10.0.0.2:2379"}});
//   if (!store.ok()) return store.status();
//   auto leader = keel::Leader::Start(*runtime, *store, {.election = "billing", ...});
//
// Mapping onto etcd:
//   lease          /v3/lease/grant (ttl rounded up to whole seconds; etcd may raise it to its
//                  minimum, never lower it), /v3/lease/keepalive, /v3/lease/revoke
//   member record  `<prefix><election>/members/<node>` = heartbeat counter, on the node's lease
//   leader record  `<prefix><election>/leader` = node id, on the leader's lease; created by a
//                  txn that requires its create revision to be 0; the term is that revision
//   heartbeat      one txn: put the member record, then range over `<prefix><election>/`
//   resign         a txn that deletes the leader record if its create revision is the term
//
// Endpoints: a request goes to the endpoint that answered last; when it cannot be reached,
// times out, or answers 5xx / Unavailable, the next endpoint is tried, each at most once per
// request. The error after the last one names every endpoint and what went wrong.
//
// Errors: NotFound for a lapsed lease; Unavailable when no endpoint answered; DeadlineExceeded
// when the last endpoint timed out; DataLoss for an answer that is not the JSON expected;
// etcd's own errors keep their gRPC code (the same numbers as absl::StatusCode).
//
// Thread safety: thread-safe; one store may serve leaders on several runtimes.
#ifndef KEEL_ETCD_LEASE_STORE_H_
#define KEEL_ETCD_LEASE_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "keel/lease_store.h"

namespace keel {

struct EtcdLeaseStoreOptions {
  // etcd client URLs, "http://host:port" or "https://host:port", tried in this order first.
  std::vector<std::string> endpoints;
  // Prefix of every key this store writes; must end with '/'.
  std::string key_prefix = "keel/elections/";
  // Per request and endpoint: connecting, and the whole request. Keep the request timeout
  // below the leader's heartbeat interval.
  absl::Duration connect_timeout = absl::Milliseconds(500);
  absl::Duration request_timeout = absl::Seconds(1);
  // Answers larger than this are refused (DataLoss); an election's range holds every member.
  size_t max_response_bytes = 4 << 20;
  // For https endpoints: a CA bundle to verify them with (empty: the system's).
  std::string ca_file = "";
};

class EtcdLeaseStore final : public LeaseStore {
 public:
  // Validates the options: InvalidArgument naming the problem.
  static absl::StatusOr<std::shared_ptr<EtcdLeaseStore>> Create(EtcdLeaseStoreOptions options);

  void Grant(Runtime& runtime, absl::Duration ttl, Done<LeaseId> done) override;
  void KeepAlive(Runtime& runtime, LeaseId lease, DoneStatus done) override;
  void Revoke(Runtime& runtime, LeaseId lease, DoneStatus done) override;
  void Heartbeat(Runtime& runtime, const std::string& election, const std::string& node,
                 LeaseId lease, uint64_t heartbeat, Done<ElectionView> done) override;
  void Campaign(Runtime& runtime, const std::string& election, const std::string& node,
                LeaseId lease, Done<LeaderRecord> done) override;
  void Resign(Runtime& runtime, const std::string& election, int64_t term,
              DoneStatus done) override;

  // The endpoint requests go to first (the one that answered last).
  std::string CurrentEndpoint() const;
  // Requests that moved on to another endpoint because one failed.
  uint64_t Failovers() const;

  struct Shared;  // internal

 private:
  explicit EtcdLeaseStore(std::shared_ptr<Shared> shared);
  std::shared_ptr<Shared> shared_;
};

}  // namespace keel

#endif  // KEEL_ETCD_LEASE_STORE_H_
