// Leader on the in-memory lease store, every transition driven by manual clocks.
//
// Each node has its own runtime and its own ManualClock; the store has a "world" clock.
// Moving time moves every clock together, except a paused node's: a paused node's control
// thread sees no time pass (as under SIGSTOP) and catches up in one jump when resumed. The
// property checked throughout: at no instant do two nodes believe they hold the lease, and
// terms only grow.
#include "keel/leader.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "keel/internal/sync.h"
#include "keel/memory_lease_store.h"
#include "keel/runtime.h"
#include "support/eventually.h"

namespace keel {
namespace {

using ::testing::ElementsAre;
using testing::Eventually;
using ::testing::HasSubstr;

constexpr absl::Duration kTtl = absl::Seconds(5);
constexpr absl::Duration kBeat = absl::Seconds(1);
constexpr absl::Duration kMargin = absl::Seconds(1);
constexpr absl::Duration kStep = absl::Milliseconds(250);

// Callback events of one node, in the order they ran.
class Events {
 public:
  void Add(std::string e) {
    internal::MutexLock lock(&mu_);
    events_.push_back(std::move(e));
  }
  std::vector<std::string> All() const {
    internal::MutexLock lock(&mu_);
    return events_;
  }
  bool Has(const std::string& e) const {
    auto all = All();
    return std::find(all.begin(), all.end(), e) != all.end();
  }
  size_t CountPrefix(const std::string& prefix) const {
    size_t n = 0;
    for (const auto& e : All()) n += e.rfind(prefix, 0) == 0;
    return n;
  }
  void Clear() {
    internal::MutexLock lock(&mu_);
    events_.clear();
  }

 private:
  mutable internal::Mutex mu_;
  std::vector<std::string> events_ ABSL_GUARDED_BY(mu_);
};

LeaderCallbacks Recording(Events* events) {
  LeaderCallbacks cb;
  cb.on_elected = [events](const Election& e) { events->Add(absl::StrCat("elected ", e.term)); };
  cb.on_demoted = [events](const Demotion& d) {
    events->Add(absl::StrCat("demoted ", d.term, " ", std::string(DemotionCauseName(d.cause))));
  };
  cb.on_leader_changed = [events](const std::string& node, int64_t term) {
    events->Add(absl::StrCat("leader ", node.empty() ? "-" : node, " ", term));
  };
  cb.on_cluster_changed = [events](const std::vector<LeaderMember>& members) {
    std::vector<std::string> ids;
    for (const auto& m : members) ids.push_back(m.node);
    events->Add(absl::StrCat("cluster ", absl::StrJoin(ids, ",")));
  };
  cb.on_shutdown = [events] { events->Add("shutdown"); };
  return cb;
}

class Cluster {
 public:
  struct Node {
    std::string id;
    std::unique_ptr<ManualClock> clock;
    std::unique_ptr<Runtime> runtime;
    std::unique_ptr<Leader> leader;
    Events events;
    bool paused = false;
  };

  Cluster() : start_(ManualClock().Now()), world_(start_) {
    store_ = std::make_shared<MemoryLeaseStore>(&world_);
  }
  ~Cluster() {
    for (auto& n : nodes_) {
      if (n->paused) Resume(*n);
      n->leader.reset();
      n->runtime.reset();
    }
  }

  LeaderOptions Options(const std::string& id) {
    LeaderOptions o;
    o.election = "job";
    o.node_id = id;
    o.ttl = kTtl;
    o.heartbeat_interval = kBeat;
    o.safety_margin = kMargin;
    return o;
  }

  // Starts a node (clock at the world's time) and lets its first heartbeat finish.
  Node& Add(const std::string& id, std::function<void(LeaderCallbacks&)> customize = nullptr) {
    return AddWith(Options(id), std::move(customize));
  }
  Node& AddWith(LeaderOptions options, std::function<void(LeaderCallbacks&)> customize = nullptr) {
    auto node = std::make_unique<Node>();
    node->id = options.node_id;
    node->clock = std::make_unique<ManualClock>(world_.Now());
    auto rt = Runtime::Create({.name = node->id, .clock = node->clock.get(), .offload_threads = 1});
    EXPECT_TRUE(rt.ok()) << rt.status();
    node->runtime = std::move(*rt);
    LeaderCallbacks cb = Recording(&node->events);
    if (customize) customize(cb);
    auto leader = Leader::Start(*node->runtime, store_, std::move(options), std::move(cb));
    EXPECT_TRUE(leader.ok()) << leader.status();
    node->leader = std::move(*leader);
    nodes_.push_back(std::move(node));
    Settle();
    return *nodes_.back();
  }

  // Runs every running node's control thread until the store's answers stop chaining.
  void Settle() {
    for (int round = 0; round < 12; ++round) {
      for (auto& n : nodes_) {
        if (!n->paused && n->runtime) {
          ASSERT_TRUE(n->runtime->Sync(absl::Seconds(10)).ok());
        }
      }
    }
  }

  // Moves the world and every running node by `d`, in steps of kStep, checking after each
  // step that at most one node believes it holds the lease.
  void Advance(absl::Duration d) {
    while (d > absl::ZeroDuration()) {
      const absl::Duration step = std::min(d, kStep);
      world_.Advance(step);
      for (auto& n : nodes_) {
        if (!n->paused) n->clock->Advance(step);
      }
      Settle();
      CheckOneHolder();
      d -= step;
    }
  }

  void CheckOneHolder() {
    std::vector<std::string> holders;
    for (auto& n : nodes_) {
      // A paused node's frozen clock is not real time: it cannot act until resumed.
      if (!n->paused && n->leader && n->leader->HoldsLease()) holders.push_back(n->id);
    }
    EXPECT_LE(holders.size(), 1u) << "two nodes hold the lease: " << absl::StrJoin(holders, ",");
  }

  void Pause(Node& n) { n.paused = true; }
  // The paused node's clock jumps to the world's time at once, as after SIGCONT.
  void Resume(Node& n) {
    n.paused = false;
    n.clock->Set(world_.Now());
    Settle();
  }

  std::vector<Node*> Leaders() {
    std::vector<Node*> out;
    for (auto& n : nodes_) {
      if (n->leader && n->leader->IsLeader()) out.push_back(n.get());
    }
    return out;
  }

  Node& node(size_t i) { return *nodes_[i]; }
  MemoryLeaseStore& store() { return *store_; }
  std::shared_ptr<MemoryLeaseStore> store_ptr() { return store_; }
  Instant now() const { return world_.Now(); }

 private:
  Instant start_;
  ManualClock world_;
  std::shared_ptr<MemoryLeaseStore> store_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

TEST(LeaderTest, ALoneNodeIsElectedAtItsFirstHeartbeat) {
  Cluster c;
  const Instant started = c.now();
  auto& a = c.Add("a");
  EXPECT_TRUE(a.leader->IsLeader());
  EXPECT_TRUE(a.leader->HoldsLease());
  const int64_t term = a.leader->Term();
  EXPECT_GT(term, 0);
  LeaderStatus s = a.leader->Status();
  EXPECT_EQ(s.role, LeaderRole::kLeader);
  EXPECT_EQ(s.term, term);
  EXPECT_EQ(s.leader, "a");
  ASSERT_TRUE(s.lease_deadline.has_value());
  EXPECT_EQ(*s.lease_deadline, AddDuration(started, kTtl - kMargin));
  ASSERT_TRUE(s.leader_since.has_value());
  EXPECT_EQ(*s.leader_since, started);
  EXPECT_EQ(s.created_at, started);
  ASSERT_EQ(s.members.size(), 1u);
  EXPECT_EQ(s.members[0].node, "a");
  EXPECT_NE(s.lease, 0);
  ASSERT_TRUE(Eventually([&] { return a.events.All().size() >= 3; }));
  EXPECT_THAT(a.events.All(), ElementsAre("cluster a", absl::StrCat("leader a ", term),
                                          absl::StrCat("elected ", term)));
}

TEST(LeaderTest, ExactlyOneOfThreeNodesLeadsAndAllAgreeOnItsTerm) {
  Cluster c;
  c.Add("a");
  c.Add("b");
  c.Add("c");
  c.Advance(kBeat * 2);
  auto leaders = c.Leaders();
  ASSERT_EQ(leaders.size(), 1u);
  const int64_t term = leaders[0]->leader->Term();
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(c.node(i).leader->Term(), term) << c.node(i).id;
    LeaderStatus s = c.node(i).leader->Status();
    EXPECT_EQ(s.leader, leaders[0]->id);
    EXPECT_EQ(s.members.size(), 3u);
    if (c.node(i).id != leaders[0]->id) {
      EXPECT_EQ(s.role, LeaderRole::kFollower);
      EXPECT_FALSE(s.lease_deadline.has_value());
    }
  }
}

TEST(LeaderTest, TheLeaderRenewsItsLeaseWithEveryHeartbeat) {
  Cluster c;
  auto& a = c.Add("a");
  c.Add("b");
  const int64_t term = a.leader->Term();
  c.Advance(absl::Seconds(60));
  EXPECT_TRUE(a.leader->IsLeader());
  EXPECT_EQ(a.leader->Term(), term);
  LeaderStatus s = a.leader->Status();
  EXPECT_GE(s.heartbeats, 60u);
  EXPECT_EQ(s.demotions, 0u);
  // The deadline follows the last renewal: sent at the last whole heartbeat.
  ASSERT_TRUE(s.lease_deadline.has_value());
  EXPECT_EQ(*s.lease_deadline, AddDuration(c.now(), kTtl - kMargin));
  EXPECT_FALSE(c.node(1).leader->IsLeader());
}

TEST(LeaderTest, ALeaderCutOffFromTheStoreDemotesAtItsMarginAndNobodyElseLeads) {
  Cluster c;
  auto& a = c.Add("a");
  auto& b = c.Add("b");
  const int64_t term = a.leader->Term();
  const Instant last_renewal = c.now();
  c.store().SetAvailable(false);
  // Just before renewal + ttl - margin the leader still believes its lease.
  c.Advance(kTtl - kMargin - kStep);
  EXPECT_TRUE(a.leader->IsLeader());
  c.Advance(kStep);
  EXPECT_EQ(c.now(), AddDuration(last_renewal, kTtl - kMargin));
  EXPECT_FALSE(a.leader->IsLeader());
  EXPECT_FALSE(a.leader->HoldsLease());
  ASSERT_TRUE(
      Eventually([&] { return a.events.Has(absl::StrCat("demoted ", term, " lease_expired")); }));
  // Nobody elects anyone while the store is unreachable.
  c.Advance(absl::Seconds(20));
  EXPECT_TRUE(c.Leaders().empty());
  EXPECT_GT(b.leader->Status().store_errors, 0u);
  EXPECT_THAT(b.leader->Status().last_error.message(), HasSubstr("unavailable"));
  // Back: one leader again, with a higher term.
  c.store().SetAvailable(true);
  c.Advance(kBeat * 2);
  auto leaders = c.Leaders();
  ASSERT_EQ(leaders.size(), 1u);
  EXPECT_GT(leaders[0]->leader->Term(), term);
  EXPECT_TRUE(leaders[0]->leader->Status().last_error.ok());
}

TEST(LeaderTest, ALeaderDemotedWhileTheStoreKeptItsRecordNeverLeadsThatTermAgain) {
  Cluster c;
  auto& a = c.Add("a");
  c.Add("b");
  const int64_t term = a.leader->Term();
  // Out of reach past renewal + ttl - margin, back before the store's lease lapses.
  c.store().SetAvailable(false);
  c.Advance(kTtl - kMargin);
  ASSERT_FALSE(a.leader->IsLeader());
  c.store().SetAvailable(true);
  c.Advance(kBeat * 3);
  auto leaders = c.Leaders();
  ASSERT_EQ(leaders.size(), 1u);
  EXPECT_GT(leaders[0]->leader->Term(), term) << "a new leadership, a new term";
  ASSERT_TRUE(Eventually([&] { return a.events.CountPrefix("demoted ") == 1; }));
  EXPECT_EQ(a.events.CountPrefix(absl::StrCat("elected ", term)), 1u);
}

TEST(LeaderTest, APauseLongerThanTheLeaseDemotesBeforeTheLeaderActsAgain) {
  Cluster c;
  std::atomic<int> ticks_after_resume{0};
  std::atomic<bool> resumed{false};
  auto& a = c.Add("a", [&](LeaderCallbacks& cb) {
    cb.on_leader_tick = [&](const LeaderTick&) {
      if (resumed.load()) ticks_after_resume.fetch_add(1);
      return absl::Milliseconds(500);
    };
  });
  auto& b = c.Add("b");
  const int64_t old_term = a.leader->Term();
  ASSERT_TRUE(a.leader->IsLeader());
  c.Pause(a);
  c.Advance(kTtl + absl::Seconds(2));
  // The store's lease lapsed; b took over with a higher term.
  ASSERT_TRUE(b.leader->IsLeader());
  EXPECT_GT(b.leader->Term(), old_term);
  // a, still paused, has not noticed; its own clock says its lease is fine.
  EXPECT_TRUE(a.leader->IsLeader());
  resumed = true;
  // The moment its clock catches up, HoldsLease() is false, before the loop has run.
  a.clock->Set(c.now());
  EXPECT_FALSE(a.leader->HoldsLease());
  c.Resume(a);
  EXPECT_FALSE(a.leader->IsLeader());
  ASSERT_TRUE(Eventually(
      [&] { return a.events.Has(absl::StrCat("demoted ", old_term, " lease_expired")); }));
  c.Advance(kBeat * 3);
  EXPECT_EQ(ticks_after_resume.load(), 0);
  EXPECT_EQ(a.leader->Term(), b.leader->Term());
  EXPECT_EQ(a.leader->Status().leader, "b");
}

TEST(LeaderTest, APauseJustUnderTheBelievedLeaseKeepsTheLeader) {
  Cluster c;
  auto& a = c.Add("a");
  auto& b = c.Add("b");
  const int64_t term = a.leader->Term();
  c.Advance(kBeat);  // a renewed just now
  c.Pause(a);
  c.Advance(kTtl - kMargin - kStep);  // resume just before renewal + ttl - margin
  c.Resume(a);
  c.Advance(kBeat * 5);
  EXPECT_TRUE(a.leader->IsLeader());
  EXPECT_EQ(a.leader->Term(), term);
  EXPECT_EQ(a.leader->Status().demotions, 0u);
  EXPECT_FALSE(b.leader->IsLeader());
  EXPECT_EQ(b.leader->Status().elections_won, 0u);
}

TEST(LeaderTest, ResignHandsOverWithinOneHeartbeat) {
  Cluster c;
  auto& a = c.Add("a");
  auto& b = c.Add("b");
  const int64_t term = a.leader->Term();
  EXPECT_EQ(b.leader->Resign().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(a.leader->Resign().ok());
  EXPECT_FALSE(a.leader->IsLeader());
  EXPECT_EQ(a.leader->Resign().code(), absl::StatusCode::kFailedPrecondition);
  c.Settle();
  EXPECT_FALSE(c.store().View("job").leader.has_value()) << "the record is deleted at once";
  c.Advance(kBeat);
  ASSERT_TRUE(b.leader->IsLeader());
  EXPECT_GT(b.leader->Term(), term);
  ASSERT_TRUE(
      Eventually([&] { return a.events.Has(absl::StrCat("demoted ", term, " resigned")); }));
  // a stays a follower (it holds off for a ttl, and then b leads).
  c.Advance(kTtl * 2);
  EXPECT_FALSE(a.leader->IsLeader());
  EXPECT_TRUE(b.leader->IsLeader());
}

TEST(LeaderTest, ALoneNodeThatResignedLeadsAgainAfterItsHoldoff) {
  Cluster c;
  auto& a = c.Add("a");
  const int64_t term = a.leader->Term();
  ASSERT_TRUE(a.leader->Resign().ok());
  c.Advance(kTtl - kStep);
  EXPECT_FALSE(a.leader->IsLeader());
  c.Advance(kBeat);
  EXPECT_TRUE(a.leader->IsLeader());
  EXPECT_GT(a.leader->Term(), term);
}

TEST(LeaderTest, NodesJoiningAndLeavingChangeTheMembership) {
  Cluster c;
  auto& a = c.Add("a");
  c.Add("b");
  c.Advance(kBeat);
  ASSERT_TRUE(Eventually([&] { return a.events.Has("cluster a,b"); }));
  auto& z = c.Add("z");
  c.Advance(kBeat);
  ASSERT_TRUE(Eventually([&] { return a.events.Has("cluster a,b,z"); }));
  // b stops: its lease is revoked, so it leaves at the next heartbeat, not after a ttl.
  ASSERT_TRUE(c.node(1).leader->Stop().ok());
  c.Advance(kBeat);
  ASSERT_TRUE(Eventually([&] { return a.events.Has("cluster a,z"); }));
  // z dies without a word: it leaves when its lease lapses.
  c.Pause(z);
  c.Advance(kTtl - kBeat);
  EXPECT_EQ(a.leader->Status().members.size(), 2u);
  c.Advance(kBeat * 2);
  ASSERT_TRUE(Eventually([&] { return a.events.CountPrefix("cluster ") == 5; }));
  LeaderStatus s = a.leader->Status();
  ASSERT_EQ(s.members.size(), 1u);
  EXPECT_EQ(s.members[0].node, "a");
  EXPECT_EQ(s.members[0].last_heartbeat, c.now());
  EXPECT_EQ(a.events.CountPrefix("cluster "), 5u) << absl::StrJoin(a.events.All(), "; ");
}

TEST(LeaderTest, AKilledLeaderIsReplacedWithinTtlPlusOneHeartbeat) {
  Cluster c;
  auto& a = c.Add("a");
  auto& b = c.Add("b");
  auto& z = c.Add("z");
  const int64_t term = a.leader->Term();
  c.Advance(kBeat / 2);
  const Instant killed = c.now();
  c.Pause(a);
  Instant taken_over;
  for (int i = 0; i < 100 && !(b.leader->IsLeader() || z.leader->IsLeader()); ++i) {
    c.Advance(kStep);
    taken_over = c.now();
  }
  ASSERT_TRUE(b.leader->IsLeader() || z.leader->IsLeader());
  EXPECT_LE(Elapsed(killed, taken_over), kTtl + kBeat);
  EXPECT_GT((b.leader->IsLeader() ? b : z).leader->Term(), term);
}

TEST(LeaderTest, AStoreThatForgetsTheLeaseDemotesTheLeaderWhichCampaignsAgain) {
  Cluster c;
  auto& a = c.Add("a");
  const int64_t term = a.leader->Term();
  const LeaseId lease = a.leader->Status().lease;
  ASSERT_TRUE(
      a.runtime->Post([&] { c.store().Revoke(*a.runtime, lease, [](absl::Status) {}); }).ok());
  c.Settle();
  c.Advance(kBeat);
  ASSERT_TRUE(
      Eventually([&] { return a.events.Has(absl::StrCat("demoted ", term, " lease_lost")); }));
  EXPECT_TRUE(a.leader->IsLeader()) << "re-elected in the same heartbeat with a new lease";
  EXPECT_GT(a.leader->Term(), term);
  EXPECT_NE(a.leader->Status().lease, lease);
}

TEST(LeaderTest, TheLeaderTickRunsWithTheIntervalItReturnsAndStopsOnDemotion) {
  Cluster c;
  Events ticks;
  auto& a = c.Add("a", [&](LeaderCallbacks& cb) {
    cb.on_leader_tick = [&](const LeaderTick& t) {
      ticks.Add(absl::StrCat(t.term, ":", t.tick));
      return absl::Seconds(2);
    };
  });
  const int64_t term = a.leader->Term();
  const Instant elected = c.now();
  // The next tick is armed once the callback has returned: 2 s after the previous was due.
  auto next_tick_at = [&](absl::Duration d) {
    return Eventually([&] { return a.leader->Status().next_tick == AddDuration(elected, d); });
  };
  ASSERT_TRUE(next_tick_at(absl::Seconds(2)));
  for (int i = 2; i <= 4; ++i) {
    c.Advance(absl::Seconds(2));
    ASSERT_TRUE(next_tick_at(absl::Seconds(2 * i)));
  }
  ASSERT_EQ(ticks.All().size(), 4u);
  EXPECT_THAT(ticks.All(), ElementsAre(absl::StrCat(term, ":1"), absl::StrCat(term, ":2"),
                                       absl::StrCat(term, ":3"), absl::StrCat(term, ":4")));
  c.store().SetAvailable(false);
  c.Advance(absl::Seconds(2));
  ASSERT_TRUE(next_tick_at(absl::Seconds(10)));
  c.Advance(kTtl * 2);
  EXPECT_FALSE(a.leader->IsLeader());
  EXPECT_FALSE(a.leader->Status().next_tick.has_value());
  // One more tick 2 s in, while the lease was still believed (renewal + 4 s); the one due
  // at the deadline itself is not run.
  EXPECT_THAT(ticks.All().back(), absl::StrCat(term, ":5"));
  EXPECT_EQ(ticks.All().size(), 5u) << "no tick after the demotion";
  c.store().SetAvailable(true);
  c.Advance(kBeat);
  ASSERT_TRUE(a.leader->IsLeader());
  const int64_t next = a.leader->Term();
  ASSERT_TRUE(Eventually([&] { return ticks.All().size() == 6; }));
  EXPECT_EQ(ticks.All().back(), absl::StrCat(next, ":1"));
}

TEST(LeaderTest, ThrowingCallbacksAreCaughtCountedAndTheLeaderGoesOn) {
  Cluster c;
  std::atomic<int> ticks{0};
  auto& a = c.Add("a", [&](LeaderCallbacks& cb) {
    cb.on_elected = [](const Election&) { throw std::runtime_error("elected hook broke"); };
    cb.on_cluster_changed = [](const std::vector<LeaderMember>&) { throw 42; };
    cb.on_leader_tick = [&](const LeaderTick&) -> absl::Duration {
      if (ticks.fetch_add(1) == 0) throw std::runtime_error("first tick broke");
      return absl::Seconds(1);
    };
  });
  ASSERT_TRUE(Eventually([&] { return a.leader->Status().callback_errors == 3; }));
  EXPECT_TRUE(a.leader->IsLeader());
  // A tick that threw is retried a second later.
  ASSERT_TRUE(Eventually([&] { return a.leader->Status().next_tick.has_value(); }));
  c.Advance(absl::Seconds(1));
  ASSERT_TRUE(Eventually([&] { return ticks.load() == 2; }));
  ASSERT_TRUE(Eventually([&] { return a.leader->Status().next_tick.has_value(); }));
  c.Advance(absl::Seconds(1));
  ASSERT_TRUE(Eventually([&] { return ticks.load() == 3; }));
  EXPECT_EQ(a.leader->Status().callback_errors, 3u);
}

TEST(LeaderTest, StopStepsDownAndASuccessorTakesOverAtTheNextHeartbeat) {
  Cluster c;
  auto& a = c.Add("a");
  auto& b = c.Add("b");
  const int64_t term = a.leader->Term();
  ASSERT_TRUE(a.leader->Stop().ok());
  EXPECT_FALSE(a.leader->IsLeader());
  EXPECT_EQ(a.leader->Status().role, LeaderRole::kStopped);
  auto events = a.events.All();
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[events.size() - 2], absl::StrCat("demoted ", term, " shutdown"));
  EXPECT_EQ(events.back(), "shutdown");
  ElectionView view = c.store().View("job");
  EXPECT_FALSE(view.leader.has_value());
  ASSERT_EQ(view.members.size(), 1u);
  EXPECT_EQ(view.members[0].node, "b");
  EXPECT_EQ(c.store().LeaseCount(), 1u);
  c.Advance(kBeat);
  EXPECT_TRUE(b.leader->IsLeader());
  EXPECT_TRUE(a.leader->Stop().ok()) << "idempotent";
  EXPECT_EQ(a.events.All().size(), events.size()) << "no callback after Stop";
}

TEST(LeaderTest, StopFromInsideItsOwnCallbackDoesNotWaitForItself) {
  Cluster c;
  std::atomic<Leader*> self{nullptr};
  std::atomic<int> result{-1};
  auto& a = c.Add("a", [&](LeaderCallbacks& cb) {
    cb.on_leader_tick = [&](const LeaderTick&) {
      Leader* l = nullptr;
      while ((l = self.load()) == nullptr) std::this_thread::yield();
      result = static_cast<int>(l->Stop().code());
      return absl::Seconds(1);
    };
  });
  self = a.leader.get();
  ASSERT_TRUE(Eventually([&] { return result.load() >= 0; }));
  EXPECT_EQ(result.load(), static_cast<int>(absl::StatusCode::kOk));
  ASSERT_TRUE(Eventually([&] { return a.events.Has("shutdown"); }));
  EXPECT_EQ(a.leader->Status().role, LeaderRole::kStopped);
}

TEST(LeaderTest, TermsOnlyGrowAcrossRepeatedFailovers) {
  Cluster c;
  c.Add("a");
  c.Add("b");
  c.Add("z");
  std::vector<int64_t> terms;
  for (int round = 0; round < 8; ++round) {
    auto leaders = c.Leaders();
    ASSERT_EQ(leaders.size(), 1u) << "round " << round;
    terms.push_back(leaders[0]->leader->Term());
    Cluster::Node& l = *leaders[0];
    if (round % 2 == 0) {
      c.Pause(l);
      c.Advance(kTtl + kBeat);
      c.Resume(l);
    } else {
      ASSERT_TRUE(l.leader->Resign().ok());
    }
    c.Advance(kBeat * 2);
  }
  for (size_t i = 1; i < terms.size(); ++i) EXPECT_GT(terms[i], terms[i - 1]);
}

TEST(LeaderTest, OptionsAreValidatedAtStart) {
  ManualClock clock;
  auto rt = Runtime::Create({.clock = &clock});
  ASSERT_TRUE(rt.ok());
  auto store = std::make_shared<MemoryLeaseStore>(&clock);
  struct Case {
    std::function<void(LeaderOptions&)> change;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](LeaderOptions& o) { o.election = ""; }, "election must be 1 to 128 characters"},
      {[](LeaderOptions& o) { o.node_id = "a/b"; }, "node_id may hold only"},
      {[](LeaderOptions& o) { o.heartbeat_interval = absl::Milliseconds(5); },
       "heartbeat_interval must be >= 10ms"},
      {[](LeaderOptions& o) { o.ttl = absl::Seconds(4); },
       "ttl must be more than twice heartbeat_interval (2s), got 4s"},
      {[](LeaderOptions& o) { o.safety_margin = absl::Seconds(10); },
       "safety_margin must be > 0 and < ttl"},
      {[](LeaderOptions& o) { o.safety_margin = absl::ZeroDuration(); },
       "safety_margin must be > 0"},
      {[](LeaderOptions& o) { o.safety_margin = absl::Seconds(8.5); },
       "must exceed heartbeat_interval"},
      {[](LeaderOptions& o) { o.ttl = absl::Hours(2); }, "ttl must be <= 1h"},
      {[](LeaderOptions& o) { o.resign_holdoff = absl::Seconds(-1); }, "resign_holdoff"},
      {[](LeaderOptions& o) { o.first_tick_after = absl::Seconds(-1); }, "first_tick_after"},
  };
  for (const auto& c : cases) {
    LeaderOptions o{.election = "job", .node_id = "a"};
    c.change(o);
    auto leader = Leader::Start(**rt, store, o);
    ASSERT_FALSE(leader.ok()) << c.message;
    EXPECT_EQ(leader.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(leader.status().message(), HasSubstr(c.message));
  }
  EXPECT_FALSE(Leader::Start(**rt, nullptr, {.election = "job", .node_id = "a"}).ok());
  EXPECT_TRUE(Leader::Start(**rt, store, {.election = "job", .node_id = "a"}).ok());
}

TEST(LeaderTest, ReadsAreSafeFromManyThreadsWhileLeadershipMoves) {
  // Readers on plain threads see a consistent (role, term) word while the control threads
  // elect and demote: a reader that sees IsLeader() never sees term 0.
  Cluster c;
  auto& a = c.Add("a");
  auto& b = c.Add("b");
  std::atomic<bool> done{false};
  std::atomic<uint64_t> bad{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < 2; ++i) {
    readers.emplace_back([&] {
      while (!done.load(std::memory_order_relaxed)) {
        for (Leader* l : {a.leader.get(), b.leader.get()}) {
          if (l->IsLeader() && l->Term() == 0) bad.fetch_add(1);
          (void)l->HoldsLease();
        }
      }
    });
  }
  for (int round = 0; round < 6; ++round) {
    auto leaders = c.Leaders();
    ASSERT_EQ(leaders.size(), 1u);
    ASSERT_TRUE(leaders[0]->leader->Resign().ok());
    c.Advance(kTtl + kBeat);
  }
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0u);
}

}  // namespace
}  // namespace keel
