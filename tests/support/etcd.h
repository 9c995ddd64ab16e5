// Test support, not part of keel: a real single-member etcd on 127.0.0.1 for the leader-election
// integration tests.
//
// `EtcdServer::Start` picks two free loopback ports (client and peer), starts /usr/bin/etcd
// (Debian's etcd-server 3.4) with its data dir in a fresh temp dir, and waits until it is
// usable: `GET /version` answers and a write through the JSON gateway succeeds (an etcd that
// answers /version may not have elected itself leader yet). It listens on 127.0.0.1 only, for
// clients and peers alike. Tests drive it through the gRPC-JSON gateway (`Post`, keys and values
// base64-encoded) and break it on purpose with `Stop`, `Kill`, `Pause` and `Restart`, which
// comes back on the same ports with the same data, so keys, revisions and leases survive.
//
// Leases, as etcd 3.4 handles them: a lease survives Stop, Kill and Restart, and comes back
// with its full TTL (a new leader re-arms every lease), so downtime never expires a lease;
// a lease whose TTL runs out while etcd is paused is expired as soon as it resumes.
// The gateway speaks proto3 JSON: int64s are strings ("revision":"5") and fields with a zero
// value are left out (no "kvs" and no "count" for a range that matches nothing).
// The destructor stops etcd and removes the temp dir.
//
//   auto etcd = keel::testing::EtcdServer::Start();
//   ASSERT_TRUE(etcd.ok()) << etcd.status();  // a missing etcd fails the test, never skips
//   std::string endpoint = (*etcd)->Endpoint();  // "http://127.0.0.1:<port>"
//   auto put = (*etcd)->Post("/v3/kv/put", absl::StrCat(R"({"key":")",
//                            EtcdServer::Base64("k"), R"(","value":")", EtcdServer::Base64("v"),
//                            R"("})"));
//
// The readiness probe writes the key `kReadinessKey` (value "ready") at every Start and
// Restart, so the store's revision is at least 2 when Start returns and grows by one at every
// Restart; tests that count revisions should use their own key prefix and compare revisions
// with each other, not with constants.
//
// Thread safety: thread-compatible. Start, Stop, Restart, Kill and the destructor fork and wait
// for child processes; call them from a thread that outlives the server (a test's main thread):
// etcd is started with PR_SET_PDEATHSIG, so it dies with that thread, and so with a killed test.
// `Post` and the accessors may be called from any thread while no other method runs.
#ifndef KEEL_TESTS_SUPPORT_ETCD_H_
#define KEEL_TESTS_SUPPORT_ETCD_H_

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace keel::testing {

inline constexpr char kEtcdPath[] = "/usr/bin/etcd";
// The key the readiness probe writes (see above).
inline constexpr char kReadinessKey[] = "keel-test/ready";

struct EtcdOptions {
  // The etcd binary; another path is for testing the fixture's own "not found" error.
  std::string etcd_path = kEtcdPath;
  // Raft timers for a test machine: --heartbeat-interval=10 --election-timeout=100 (etcd's
  // defaults are 100 and 1000 ms). Start takes ~0.1 s instead of ~0.7 s and Restart ~0.2 s
  // instead of ~1.5 s (a restarted member waits an election timeout before it leads again),
  // and the shortest lease is 1 s instead of 2 s (etcd raises a smaller TTL to 1.5 election
  // timeouts, rounded up to whole seconds). A single member cannot lose its leadership, so
  // short timers cost nothing in flakiness.
  bool short_raft_timers = true;
  // Flags appended to etcd's command line, e.g. "--auto-compaction-retention=1" or
  // "--max-txn-ops=1024"; the last of a repeated flag wins. They must not change the listen or
  // advertise URLs (the fixture's servers listen on 127.0.0.1 only).
  std::vector<std::string> extra_flags;
};

class EtcdServer {
 public:
  // Starts etcd as described above. FailedPrecondition when etcd is not installed: "etcd not
  // found at /usr/bin/etcd (scripts/install-deps.sh installs etcd-server)"; Unavailable when
  // etcd exits or is not ready within 15 s (after up to 3 tries with fresh ports when a port
  // was taken in between); Internal when the temp dir cannot be set up. Every etcd failure
  // quotes the tail of its log.
  static absl::StatusOr<std::unique_ptr<EtcdServer>> Start(EtcdOptions options = {});

  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;
  // Stops etcd (as `Stop`) and removes the temp dir.
  ~EtcdServer();

  // "http://127.0.0.1:<port>", the client URL (gRPC and the JSON gateway share the port).
  std::string Endpoint() const;
  uint16_t port() const { return port_; }
  // The peer (raft) port; nothing but etcd itself talks to it.
  uint16_t peer_port() const { return peer_port_; }
  // The temp dir: data/ (etcd's data dir) and etcd.log.
  const std::filesystem::path& dir() const { return dir_; }
  // etcd's process id, or -1 while it is stopped or killed.
  pid_t pid() const { return pid_; }

  // Stops etcd gracefully: SIGTERM (and SIGCONT, should it be paused), SIGKILL after 5 s,
  // then reaps it. The data dir is kept, for `Restart`; a no-op when etcd is not running.
  void Stop();
  // Kills etcd with SIGKILL and reaps it: a crash, with no chance to flush anything (etcd
  // fsyncs its WAL before it acknowledges a write, so acknowledged writes survive). The data
  // dir is kept; a no-op when etcd is not running.
  void Kill();
  // Stops etcd if it runs, then starts it again on the same ports with the same data dir
  // (keys, revisions and unexpired leases survive) and waits until it is ready, as `Start`.
  // Unavailable, quoting the log, when it exits (a port taken by someone else in between, say)
  // or is not ready within 15 s.
  absl::Status Restart();
  // SIGSTOP and SIGCONT: a frozen server whose connections stay open, and which lets leases
  // expire in the meantime. Each returns once etcd has stopped or continued.
  // FailedPrecondition when etcd is not running (or, for Pause, already paused).
  absl::Status Pause();
  absl::Status Resume();

  // POSTs `json_body` to the JSON gateway at `path` (e.g. "/v3/kv/range", "/v3/lease/grant")
  // and returns the response body. Unavailable when the request does not get an answer within
  // 10 s (connection refused while etcd is stopped, or no answer while it is paused); for a
  // non-2xx answer, the gateway's gRPC code (the canonical code) with the body as message.
  absl::StatusOr<std::string> Post(std::string_view path, std::string_view json_body) const;
  // Standard base64 with padding, as the gateway takes and returns keys and values.
  static std::string Base64(std::string_view bytes);

  // The last `max_bytes` of etcd's log (stdout and stderr of every run), for failure messages.
  std::string LogTail(size_t max_bytes = 4096) const;

 private:
  EtcdServer() = default;
  // Starts etcd on port_ and peer_port_ and waits until it is ready.
  absl::Status Launch();

  EtcdOptions options_;
  std::filesystem::path dir_;  // the temp dir
  uint16_t port_ = 0;
  uint16_t peer_port_ = 0;
  pid_t pid_ = -1;
  bool paused_ = false;
};

}  // namespace keel::testing

#endif  // KEEL_TESTS_SUPPORT_ETCD_H_
