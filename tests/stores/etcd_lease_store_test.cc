// EtcdLeaseStore against a real etcd (Debian etcd-server) started on 127.0.0.1, and Leaders
// electing through it in this process on the steady clock. The store's requests, its error
// mapping and its endpoint failover are checked directly; the leaders check the properties
// users rely on: one leader, a successor after a stop, demotion when etcd freezes, and no
// election while it is gone.
#include "keel/etcd_lease_store.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "keel/internal/sync.h"
#include "keel/leader.h"
#include "keel/runtime.h"
#include "support/etcd.h"
#include "support/eventually.h"

namespace keel {
namespace {

using testing::EtcdServer;
using testing::Eventually;
using ::testing::HasSubstr;

// Runs one store call on the runtime's control thread and waits for its answer.
template <class T>
absl::StatusOr<T> Call(Runtime& runtime, std::function<void(LeaseStore::Done<T>)> start) {
  internal::Mutex mu;
  internal::CondVar cv;
  std::optional<absl::StatusOr<T>> result;
  EXPECT_TRUE(runtime
                  .Post([&] {
                    start([&](absl::StatusOr<T> r) {
                      internal::MutexLock lock(&mu);
                      result = std::move(r);
                      cv.NotifyAll();
                    });
                  })
                  .ok());
  internal::MutexLock lock(&mu);
  cv.Wait(&mu, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return result.has_value(); });
  return *std::move(result);
}

absl::Status CallStatus(Runtime& runtime, std::function<void(LeaseStore::DoneStatus)> start) {
  auto r = Call<bool>(runtime, [&](LeaseStore::Done<bool> done) {
    start([done = std::move(done)](absl::Status s) mutable {
      if (s.ok()) {
        done(true);
      } else {
        done(s);
      }
    });
  });
  return r.status();
}

class EtcdLeaseStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto etcd = EtcdServer::Start();
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = std::move(*etcd);
    auto rt = Runtime::Create({.name = "etcd-test"});
    ASSERT_TRUE(rt.ok());
    runtime_ = std::move(*rt);
  }
  void TearDown() override {
    leaders_.clear();
    runtime_.reset();
  }

  std::shared_ptr<EtcdLeaseStore> Store(std::vector<std::string> endpoints = {}) {
    if (endpoints.empty()) endpoints = {etcd_->Endpoint()};
    auto store = EtcdLeaseStore::Create(
        {.endpoints = endpoints, .request_timeout = absl::Milliseconds(400)});
    EXPECT_TRUE(store.ok()) << store.status();
    return *store;
  }

  // Starts one Leader per node on `store` (ttl 3 s, heartbeat 500 ms, margin 1 s).
  void StartLeaders(const std::shared_ptr<EtcdLeaseStore>& store,
                    std::initializer_list<const char*> nodes) {
    for (const char* node : nodes) {
      auto l = Leader::Start(*runtime_, store,
                             {.election = "etcd-job",
                              .node_id = node,
                              .ttl = absl::Seconds(3),
                              .heartbeat_interval = absl::Milliseconds(500),
                              .safety_margin = absl::Seconds(1)});
      ASSERT_TRUE(l.ok()) << l.status();
      leaders_.push_back(std::move(*l));
    }
  }
  int LeaderCount() const {
    int n = 0;
    for (const auto& l : leaders_) n += l->IsLeader();
    return n;
  }

  std::unique_ptr<EtcdServer> etcd_;
  std::unique_ptr<Runtime> runtime_;
  std::vector<std::unique_ptr<Leader>> leaders_;
};

TEST_F(EtcdLeaseStoreTest, LeasesRecordsAndTermsFollowEtcd) {
  auto store = Store();
  Runtime& rt = *runtime_;
  auto lease =
      Call<LeaseId>(rt, [&](auto done) { store->Grant(rt, absl::Seconds(3), std::move(done)); });
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_NE(*lease, 0);
  EXPECT_TRUE(
      CallStatus(rt, [&](auto done) { store->KeepAlive(rt, *lease, std::move(done)); }).ok());

  auto view = Call<ElectionView>(
      rt, [&](auto done) { store->Heartbeat(rt, "job", "a", *lease, 7, std::move(done)); });
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_FALSE(view->leader.has_value());
  ASSERT_EQ(view->members.size(), 1u);
  EXPECT_EQ(view->members[0].node, "a");
  EXPECT_EQ(view->members[0].heartbeat, 7u);

  auto won = Call<LeaderRecord>(
      rt, [&](auto done) { store->Campaign(rt, "job", "a", *lease, std::move(done)); });
  ASSERT_TRUE(won.ok()) << won.status();
  EXPECT_EQ(won->node, "a");
  EXPECT_EQ(won->lease, *lease);
  EXPECT_GT(won->term, 0);

  // A second node's campaign finds the incumbent.
  auto other =
      Call<LeaseId>(rt, [&](auto done) { store->Grant(rt, absl::Seconds(3), std::move(done)); });
  ASSERT_TRUE(other.ok());
  auto lost = Call<LeaderRecord>(
      rt, [&](auto done) { store->Campaign(rt, "job", "b", *other, std::move(done)); });
  ASSERT_TRUE(lost.ok());
  EXPECT_EQ(lost->node, "a");
  EXPECT_EQ(lost->term, won->term);

  // Resign with another term changes nothing; with its own it deletes the record.
  EXPECT_TRUE(CallStatus(rt, [&](auto done) {
                store->Resign(rt, "job", won->term + 100, std::move(done));
              }).ok());
  view = Call<ElectionView>(
      rt, [&](auto done) { store->Heartbeat(rt, "job", "b", *other, 1, std::move(done)); });
  ASSERT_TRUE(view.ok() && view->leader.has_value());
  EXPECT_EQ(view->members.size(), 2u);
  EXPECT_TRUE(CallStatus(rt, [&](auto done) {
                store->Resign(rt, "job", won->term, std::move(done));
              }).ok());
  auto next = Call<LeaderRecord>(
      rt, [&](auto done) { store->Campaign(rt, "job", "b", *other, std::move(done)); });
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->node, "b");
  EXPECT_GT(next->term, won->term) << "terms only grow";

  // Revoking a lease removes its records; the lapsed lease is then NotFound everywhere.
  EXPECT_TRUE(CallStatus(rt, [&](auto done) { store->Revoke(rt, *other, std::move(done)); }).ok());
  auto gone = CallStatus(rt, [&](auto done) { store->KeepAlive(rt, *other, std::move(done)); });
  EXPECT_EQ(gone.code(), absl::StatusCode::kNotFound) << gone;
  auto put = Call<ElectionView>(
      rt, [&](auto done) { store->Heartbeat(rt, "job", "b", *other, 2, std::move(done)); });
  EXPECT_EQ(put.status().code(), absl::StatusCode::kNotFound) << put.status();
  view = Call<ElectionView>(
      rt, [&](auto done) { store->Heartbeat(rt, "job", "a", *lease, 8, std::move(done)); });
  ASSERT_TRUE(view.ok());
  EXPECT_FALSE(view->leader.has_value());
  ASSERT_EQ(view->members.size(), 1u);
  EXPECT_TRUE(CallStatus(rt, [&](auto done) { store->Revoke(rt, *other, std::move(done)); }).ok())
      << "revoking a gone lease is not an error";
}

TEST_F(EtcdLeaseStoreTest, ALeaseLapsesAfterItsTtlWithoutKeepAlive) {
  auto store = Store();
  Runtime& rt = *runtime_;
  auto lease =
      Call<LeaseId>(rt, [&](auto done) { store->Grant(rt, absl::Seconds(1), std::move(done)); });
  ASSERT_TRUE(lease.ok());
  // A heartbeat writes a record on the lease without renewing it.
  uint64_t beat = 0;
  ASSERT_TRUE(Eventually([&] {
    auto view = Call<ElectionView>(
        rt, [&](auto done) { store->Heartbeat(rt, "job", "a", *lease, ++beat, std::move(done)); });
    return absl::IsNotFound(view.status());
  }));
  EXPECT_EQ(
      CallStatus(rt, [&](auto done) { store->KeepAlive(rt, *lease, std::move(done)); }).code(),
      absl::StatusCode::kNotFound);
}

TEST_F(EtcdLeaseStoreTest, ADeadEndpointFailsOverToTheNextAndIsRemembered) {
  auto dead = EtcdServer::Start();
  ASSERT_TRUE(dead.ok());
  const std::string dead_endpoint = (*dead)->Endpoint();
  (*dead)->Stop();
  auto store = Store({dead_endpoint, etcd_->Endpoint()});
  Runtime& rt = *runtime_;
  auto lease =
      Call<LeaseId>(rt, [&](auto done) { store->Grant(rt, absl::Seconds(3), std::move(done)); });
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(store->Failovers(), 1u);
  EXPECT_EQ(store->CurrentEndpoint(), etcd_->Endpoint());
  EXPECT_TRUE(
      CallStatus(rt, [&](auto done) { store->KeepAlive(rt, *lease, std::move(done)); }).ok());
  EXPECT_EQ(store->Failovers(), 1u) << "the live endpoint is asked first now";
}

TEST_F(EtcdLeaseStoreTest, NoReachableEndpointIsUnavailableNamingEach) {
  const std::string endpoint = etcd_->Endpoint();
  etcd_->Stop();
  auto store = Store({endpoint, "http://127.0.0.1:1"});
  Runtime& rt = *runtime_;
  auto lease =
      Call<LeaseId>(rt, [&](auto done) { store->Grant(rt, absl::Seconds(3), std::move(done)); });
  ASSERT_FALSE(lease.ok());
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(lease.status().message(), HasSubstr(endpoint));
  EXPECT_THAT(lease.status().message(), HasSubstr("http://127.0.0.1:1"));
}

TEST_F(EtcdLeaseStoreTest, AFrozenEtcdTimesOut) {
  auto store = Store();
  Runtime& rt = *runtime_;
  ASSERT_TRUE(etcd_->Pause().ok());
  auto lease =
      Call<LeaseId>(rt, [&](auto done) { store->Grant(rt, absl::Seconds(3), std::move(done)); });
  ASSERT_TRUE(etcd_->Resume().ok());
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kDeadlineExceeded) << lease.status();
}

TEST_F(EtcdLeaseStoreTest, OptionsAreValidated) {
  EXPECT_THAT(EtcdLeaseStore::Create({}).status().message(), HasSubstr("at least one"));
  EXPECT_THAT(EtcdLeaseStore::Create({.endpoints = {"127.0.0.1:2379"}}).status().message(),
              HasSubstr("must start with http:// or https://"));
  EXPECT_THAT(EtcdLeaseStore::Create({.endpoints = {"http://etcd:2379"}, .key_prefix = "keel"})
                  .status()
                  .message(),
              HasSubstr("key_prefix must end with '/'"));
  EXPECT_THAT(EtcdLeaseStore::Create(
                  {.endpoints = {"http://etcd:2379"}, .request_timeout = absl::ZeroDuration()})
                  .status()
                  .message(),
              HasSubstr("must be > 0"));
}

TEST_F(EtcdLeaseStoreTest, ThreeLeadersElectOneAndAStoppedLeaderIsSucceededAtOnce) {
  auto store = Store();
  ASSERT_NO_FATAL_FAILURE(StartLeaders(store, {"a", "b", "c"}));
  ASSERT_TRUE(Eventually([&] { return LeaderCount() == 1; }));
  Leader* first = nullptr;
  for (auto& l : leaders_) {
    if (l->IsLeader()) first = l.get();
  }
  const int64_t term = first->Term();
  ASSERT_TRUE(Eventually([&] { return first->Status().members.size() == 3; }));
  ASSERT_TRUE(first->Stop().ok());
  const auto stopped = std::chrono::steady_clock::now();
  ASSERT_TRUE(Eventually([&] { return LeaderCount() == 1; }));
  // Stop deleted the record and revoked the lease: a successor within about one heartbeat,
  // far less than the 3 s ttl.
  EXPECT_LT(std::chrono::steady_clock::now() - stopped, std::chrono::milliseconds(2500));
  for (auto& l : leaders_) {
    if (l->IsLeader()) {
      EXPECT_GT(l->Term(), term);
    }
  }
}

TEST_F(EtcdLeaseStoreTest, AFrozenEtcdDemotesTheLeaderAndNobodyLeadsUntilItIsBack) {
  auto store = Store();
  ASSERT_NO_FATAL_FAILURE(StartLeaders(store, {"a", "b"}));
  ASSERT_TRUE(Eventually([&] { return leaders_[0]->IsLeader() || leaders_[1]->IsLeader(); }));
  ASSERT_TRUE(etcd_->Pause().ok());
  const auto paused = std::chrono::steady_clock::now();
  ASSERT_TRUE(Eventually([&] { return !leaders_[0]->IsLeader() && !leaders_[1]->IsLeader(); }));
  // Demoted by its own margin: within ttl - margin (2 s) of its last renewal.
  EXPECT_LT(std::chrono::steady_clock::now() - paused, std::chrono::milliseconds(2600));
  // Nobody leads while etcd is frozen.
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_FALSE(leaders_[0]->IsLeader() || leaders_[1]->IsLeader());
  }
  EXPECT_GT(leaders_[0]->Status().store_errors + leaders_[1]->Status().store_errors, 0u);
  ASSERT_TRUE(etcd_->Resume().ok());
  ASSERT_TRUE(Eventually([&] { return leaders_[0]->IsLeader() != leaders_[1]->IsLeader(); }));
}

TEST_F(EtcdLeaseStoreTest, AStoppedAndRestartedEtcdGetsOneLeaderAgain) {
  auto store = Store();
  ASSERT_NO_FATAL_FAILURE(StartLeaders(store, {"a", "b", "c"}));
  ASSERT_TRUE(Eventually([&] { return LeaderCount() == 1; }));
  etcd_->Stop();
  ASSERT_TRUE(Eventually([&] { return LeaderCount() == 0; }));
  ASSERT_TRUE(etcd_->Restart().ok());
  ASSERT_TRUE(Eventually([&] { return LeaderCount() == 1; }));
}

}  // namespace
}  // namespace keel
