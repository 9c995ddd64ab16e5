// Keeper<W>: every failure scenario of a worker whose state survives its crashes, with a
// manual clock for backoffs and restart windows. Real time appears only as the bound of a
// wait (a Call's timeout, a listener's arrival), never as a sleep that a result depends on.
#include "keel/keeper.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "keel/clock.h"
#include "keel/runtime.h"
#include "support/eventually.h"

namespace keel {
namespace {

using ::testing::ElementsAre;
using testing::Eventually;
using ::testing::HasSubstr;

// What the test worker does with a message.
enum class Act {
  kAdd,          // add `n`
  kCrash,        // throw, every time
  kCrashOnce,    // throw the first time this message is seen, then add `n`
  kNoChange,     // leave the state as it is
  kWaitForGate,  // wait for the probe's gate, then add `n`
};

struct Msg {
  Act act = Act::kAdd;
  int64_t n = 0;
  int id = 0;  // for kCrashOnce: which message
};

// Shared by every incarnation of a test worker: what happened, and what to do.
struct Probe {
  std::atomic<int> first_starts{0};
  std::atomic<int> recovers{0};
  std::atomic<int> fail_first_starts{0};  // OnFirstStart throws this many times
  std::atomic<int> fail_recovers{0};      // OnRecover throws this many times
  std::atomic<int> instances{0};          // live W objects
  std::mutex mu;
  std::vector<int> crashed_once;  // ids of kCrashOnce messages that crashed already
  std::vector<Crash> causes;      // what OnRecover was told
  std::condition_variable gate_cv;
  bool gate_open = false;
  std::atomic<int> at_gate{0};

  void OpenGate() {
    std::lock_guard<std::mutex> lock(mu);
    gate_open = true;
    gate_cv.notify_all();
  }
};

struct Counter {
  using State = int64_t;
  using Args = int64_t;
  using CastMsg = Msg;
  using InfoMsg = Msg;
  using CallMsg = Msg;
  using Reply = int64_t;

  explicit Counter(std::shared_ptr<Probe> p) : probe(std::move(p)) { ++probe->instances; }
  ~Counter() { --probe->instances; }

  State OnFirstStart(const Args& start) {
    ++probe->first_starts;
    if (probe->fail_first_starts.fetch_sub(1) > 0) throw std::runtime_error("no start today");
    return start;
  }
  Next<State> OnRecover(const State&, const Crash& crash) {
    ++probe->recovers;
    {
      std::lock_guard<std::mutex> lock(probe->mu);
      probe->causes.push_back(crash);
    }
    if (probe->fail_recovers.fetch_sub(1) > 0) throw std::runtime_error("recovery failed");
    return kUnchanged;
  }
  Next<State> Apply(const State& n, const Msg& m) {
    switch (m.act) {
      case Act::kAdd:
        return n + m.n;
      case Act::kCrash:
        throw std::runtime_error("poison message");
      case Act::kCrashOnce: {
        std::lock_guard<std::mutex> lock(probe->mu);
        if (std::find(probe->crashed_once.begin(), probe->crashed_once.end(), m.id) ==
            probe->crashed_once.end()) {
          probe->crashed_once.push_back(m.id);
          throw std::runtime_error("transient failure");
        }
        return n + m.n;
      }
      case Act::kNoChange:
        return kUnchanged;
      case Act::kWaitForGate: {
        ++probe->at_gate;
        std::unique_lock<std::mutex> lock(probe->mu);
        probe->gate_cv.wait(lock, [&] { return probe->gate_open; });
        return n + m.n;
      }
    }
    return kUnchanged;
  }
  Next<State> HandleCast(const State& n, const Msg& m) { return Apply(n, m); }
  Next<State> HandleInfo(const State& n, const Msg& m) { return Apply(n, m); }
  CallOutcome<State, Reply> HandleCall(const State& n, const Msg& m) {
    Next<State> next = Apply(n, m);
    // The reply is the state after the call (n when unchanged).
    const int64_t after = m.act == Act::kNoChange ? n : n + m.n;
    return {std::move(next), after};
  }

  std::shared_ptr<Probe> probe;
};

// Collects what listeners hear, and waits (bounded) for it.
template <class T>
class Heard {
 public:
  void Add(T value) {
    std::lock_guard<std::mutex> lock(mu_);
    values_.push_back(std::move(value));
    cv_.notify_all();
  }
  // Waits up to 10 s until `pred(values)` holds; returns the values then.
  std::vector<T> WaitFor(const std::function<bool(const std::vector<T>&)>& pred) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(10), [&] { return pred(values_); });
    return values_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<T> values_;
};

// Every test runs with the worker on its own thread and on the runtime's offload pool.
class KeeperTest : public ::testing::TestWithParam<Placement> {
 protected:
  void SetUp() override {
    auto runtime = Runtime::Create({.name = "keeper-test", .clock = &clock_});
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    runtime_ = *std::move(runtime);
  }

  KeeperOptions Options() const {
    KeeperOptions o;
    o.name = "counter";
    o.placement = GetParam();
    o.max_restarts = 3;
    o.restart_window = absl::Seconds(10);
    o.backoff_initial = absl::Milliseconds(100);
    o.backoff_max = absl::Seconds(1);
    o.backoff_jitter = 0.0;  // exact delays
    o.poison_after = 3;
    return o;
  }

  std::unique_ptr<Keeper<Counter>> Start(int64_t start) { return Start(start, Options()); }
  std::unique_ptr<Keeper<Counter>> Start(int64_t start, KeeperOptions options) {
    auto keeper = Keeper<Counter>::Start(*runtime_, start, std::move(options),
                                         [p = probe_] { return std::make_unique<Counter>(p); });
    EXPECT_TRUE(keeper.ok()) << keeper.status();
    return keeper.ok() ? *std::move(keeper) : nullptr;
  }

  // The state after everything queued so far was handled (a call is handled after them).
  int64_t Read(Keeper<Counter>& keeper) {
    absl::StatusOr<int64_t> n = keeper.Call({Act::kNoChange}, absl::Seconds(10));
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? *n : -1;
  }

  void Advance(absl::Duration d) {
    clock_.Advance(d);
    ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  }

  ManualClock clock_;
  std::unique_ptr<Runtime> runtime_;
  std::shared_ptr<Probe> probe_ = std::make_shared<Probe>();
};

TEST_P(KeeperTest, HandlersCommitAndCallsReplyAfterTheCommit) {
  auto keeper = Start(10);
  ASSERT_TRUE(keeper->Cast({Act::kAdd, 5}).ok());
  ASSERT_TRUE(keeper->Send({Act::kAdd, 1}).ok());
  absl::StatusOr<int64_t> after = keeper->Call({Act::kAdd, 4}, absl::Seconds(10));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(*after, 20);
  Committed<int64_t> committed = keeper->state();
  EXPECT_EQ(*committed.state, 20);
  EXPECT_EQ(committed.epoch, 1u);
  EXPECT_EQ(committed.version, 4u);  // the first state, then three changes
  EXPECT_EQ(probe_->first_starts.load(), 1);
  EXPECT_EQ(keeper->Stats().handled, 3u);
}

TEST_P(KeeperTest, ACrashAfterACommitKeepsTheCommitAndTheCrashingMessageIsNotApplied) {
  auto keeper = Start(0);
  ASSERT_TRUE(keeper->Cast({Act::kAdd, 7}).ok());
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 100, /*id=*/1}).ok());  // crashes, then applies
  ASSERT_TRUE(keeper->Cast({Act::kAdd, 1}).ok());
  EXPECT_EQ(Read(*keeper), 108);
  KeeperStats stats = keeper->Stats();
  EXPECT_EQ(stats.crashes, 1u);
  EXPECT_EQ(stats.restarts, 1u);
  EXPECT_EQ(stats.epoch, 2u);
  EXPECT_EQ(probe_->first_starts.load(), 1);  // OnFirstStart runs once
  EXPECT_EQ(probe_->recovers.load(), 1);
  std::lock_guard<std::mutex> lock(probe_->mu);
  ASSERT_EQ(probe_->causes.size(), 1u);
  EXPECT_EQ(probe_->causes[0].epoch, 1u);
  EXPECT_EQ(probe_->causes[0].site, CrashSite::kHandler);
  EXPECT_EQ(probe_->causes[0].what, "transient failure");
}

TEST_P(KeeperTest, ACrashingCallIsAnErrorForItsCallerAndChangesNothing) {
  auto keeper = Start(3);
  absl::StatusOr<int64_t> crashed = keeper->Call({Act::kCrash, 50}, absl::Seconds(10));
  EXPECT_EQ(crashed.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(crashed.status().message(), HasSubstr("poison message"));
  EXPECT_EQ(Read(*keeper), 3);  // not applied, not delivered again
  EXPECT_EQ(keeper->Stats().dead_letters, 0u);
  EXPECT_EQ(probe_->instances.load(), 1);  // the crashed incarnation's worker is gone
}

TEST_P(KeeperTest, APoisonMessageIsDeadLetteredAfterPoisonAfterCrashes) {
  Heard<DeadLetter> letters;
  KeeperOptions options = Options();
  options.max_restarts = 10;
  options.backoff_initial = absl::ZeroDuration();  // no waiting between restarts
  options.backoff_max = absl::ZeroDuration();
  options.on_dead_letter = [&](const DeadLetter& d) { letters.Add(d); };
  auto keeper = Start(0, options);
  ASSERT_TRUE(keeper->Cast({Act::kCrash}).ok());
  ASSERT_TRUE(keeper->Cast({Act::kAdd, 2}).ok());
  EXPECT_EQ(Read(*keeper), 2);
  KeeperStats stats = keeper->Stats();
  EXPECT_EQ(stats.crashes, 3u);  // poison_after
  EXPECT_EQ(stats.dead_letters, 1u);
  std::vector<DeadLetter> heard = letters.WaitFor([](const auto& v) { return !v.empty(); });
  ASSERT_EQ(heard.size(), 1u);
  EXPECT_EQ(heard[0].kind, MessageKind::kCast);
  EXPECT_EQ(heard[0].crashes, 3);
  EXPECT_THAT(heard[0].last_error, HasSubstr("poison message"));
}

TEST_P(KeeperTest, ACrashInOnRecoverIsAnotherCrashAndTheNextIncarnationRecovers) {
  KeeperOptions options = Options();
  options.backoff_initial = absl::ZeroDuration();
  options.backoff_max = absl::ZeroDuration();
  auto keeper = Start(40, options);
  probe_->fail_recovers = 1;
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 2, /*id=*/1}).ok());
  EXPECT_EQ(Read(*keeper), 42);
  KeeperStats stats = keeper->Stats();
  EXPECT_EQ(stats.crashes, 2u);
  EXPECT_EQ(stats.epoch, 3u);
  std::lock_guard<std::mutex> lock(probe_->mu);
  ASSERT_EQ(probe_->causes.size(), 2u);
  EXPECT_EQ(probe_->causes[1].site, CrashSite::kRecover);
  EXPECT_EQ(probe_->causes[1].what, "recovery failed");
}

TEST_P(KeeperTest, AFailedFirstStartIsRetriedWithTheStartArguments) {
  probe_->fail_first_starts = 1;
  auto keeper = Start(5);
  EXPECT_EQ(Read(*keeper), 5);
  EXPECT_EQ(probe_->first_starts.load(), 2);
  EXPECT_EQ(probe_->recovers.load(), 0);
  EXPECT_EQ(keeper->Stats().last_crash->site, CrashSite::kFirstStart);
}

TEST_P(KeeperTest, RestartsBackOffOnTheClockAndCallersWaitUpToTheirDeadline) {
  auto keeper = Start(0);
  // First crash: restarted at once. Second, in the same window: after backoff_initial.
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 1, /*id=*/1}).ok());
  EXPECT_EQ(Read(*keeper), 1);
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 1, /*id=*/2}).ok());
  // The worker now waits for the clock; a caller waits, bounded by its own timeout.
  absl::StatusOr<int64_t> early = keeper->Call({Act::kNoChange}, absl::Milliseconds(200));
  EXPECT_EQ(early.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(keeper->Stats().phase, KeeperPhase::kRestarting);
  Advance(absl::Milliseconds(99));
  EXPECT_EQ(keeper->Stats().phase, KeeperPhase::kRestarting);
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(Read(*keeper), 2);
  EXPECT_EQ(keeper->Stats().phase, KeeperPhase::kRunning);
  EXPECT_EQ(keeper->Stats().restarts, 2u);
}

TEST_P(KeeperTest, PastTheRestartIntensityTheWorkerGivesUpAndItsStateStaysReadable) {
  Heard<Termination> ends;
  Heard<Crash> escalated;
  KeeperOptions options = Options();
  options.max_restarts = 2;
  options.backoff_initial = absl::ZeroDuration();
  options.backoff_max = absl::ZeroDuration();
  options.poison_after = 100;
  options.on_give_up = GiveUp::kEscalate;
  options.escalate = [&](const Crash& c) { escalated.Add(c); };
  auto keeper = Start(0, options);
  keeper->OnTerminate([&](const Termination& t) { ends.Add(t); });
  ASSERT_TRUE(keeper->Cast({Act::kAdd, 9}).ok());
  EXPECT_EQ(Read(*keeper), 9);
  // Three crashes in the window: two restarts, then the third crash gives up.
  ASSERT_TRUE(keeper->Cast({Act::kCrash}).ok());
  std::vector<Termination> heard = ends.WaitFor([](const auto& v) { return !v.empty(); });
  ASSERT_EQ(heard.size(), 1u);
  EXPECT_EQ(heard[0].phase, KeeperPhase::kGaveUp);
  ASSERT_TRUE(heard[0].last_crash.has_value());
  EXPECT_EQ(heard[0].last_crash->what, "poison message");
  EXPECT_EQ(escalated.WaitFor([](const auto& v) { return !v.empty(); }).size(), 1u);
  KeeperStats stats = keeper->Stats();
  EXPECT_EQ(stats.phase, KeeperPhase::kGaveUp);
  EXPECT_EQ(stats.crashes, 3u);
  EXPECT_EQ(stats.restarts, 2u);
  EXPECT_EQ(*keeper->state().state, 9);  // never silently dropped
  EXPECT_EQ(keeper->Cast({Act::kAdd, 1}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(keeper->Call({Act::kNoChange}, absl::Seconds(1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// The backoff before the second restart in a window: crash twice, read when the next
// incarnation is due.
absl::Duration SecondBackoff(Keeper<Counter>& keeper, int first_id) {
  if (!keeper.Cast({Act::kCrashOnce, 0, first_id}).ok()) return absl::ZeroDuration();
  if (!keeper.Call({Act::kNoChange}, absl::Seconds(10)).ok()) return absl::ZeroDuration();
  if (!keeper.Cast({Act::kCrashOnce, 0, first_id + 1}).ok()) return absl::ZeroDuration();
  for (;;) {  // the worker plans the backoff right after the crash; nothing else can happen
    KeeperStats stats = keeper.Stats();
    if (stats.restart_due.has_value() && stats.crashes == 2) {
      return Elapsed(stats.last_crash->at, *stats.restart_due);
    }
    std::this_thread::yield();
  }
}

TEST_P(KeeperTest, TheSameJitterSeedGivesTheSameBackoffs) {
  KeeperOptions options = Options();
  options.backoff_jitter = 0.5;  // the 100 ms backoff is cut to somewhere in (50, 100] ms
  options.jitter_seed = 42;
  auto first = Start(0, options);
  auto second = Start(0, options);
  const absl::Duration waited = SecondBackoff(*first, 1);
  const absl::Duration waited_again = SecondBackoff(*second, 11);
  EXPECT_GT(waited, absl::Milliseconds(50));
  EXPECT_LE(waited, absl::Milliseconds(100));
  EXPECT_EQ(waited, waited_again);
  Advance(absl::Milliseconds(100));  // both restart
  EXPECT_EQ(Read(*first), 0);
  EXPECT_EQ(first->Stats().restart_due, std::nullopt);
}

TEST_P(KeeperTest, GivingUpUnderStopDoesNotEscalate) {
  Heard<Termination> ends;
  std::atomic<int> escalated{0};
  KeeperOptions options = Options();
  options.max_restarts = 0;
  options.on_give_up = GiveUp::kStop;
  options.escalate = [&](const Crash&) { ++escalated; };
  auto keeper = Start(0, options);
  keeper->OnTerminate([&](const Termination& t) { ends.Add(t); });
  ASSERT_TRUE(keeper->Cast({Act::kCrash}).ok());
  // The termination notice comes after any escalation would have.
  EXPECT_EQ(ends.WaitFor([](const auto& v) { return !v.empty(); }).size(), 1u);
  EXPECT_EQ(escalated.load(), 0);
  EXPECT_EQ(keeper->Stats().phase, KeeperPhase::kGaveUp);
}

TEST_P(KeeperTest, RestartsOutsideTheWindowDoNotCount) {
  KeeperOptions options = Options();
  options.max_restarts = 1;
  auto keeper = Start(0, options);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 1, i}).ok());
    EXPECT_EQ(Read(*keeper), i);
    Advance(options.restart_window);  // the restart leaves the window
  }
  EXPECT_EQ(keeper->Stats().phase, KeeperPhase::kRunning);
  EXPECT_EQ(keeper->Stats().restarts, 3u);
}

TEST_P(KeeperTest, ACommitFromAnEarlierIncarnationIsRefused) {
  auto keeper = Start(1);
  EXPECT_EQ(keeper->Commit(0, int64_t{5}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Read(*keeper), 1);  // the first incarnation has started
  const uint64_t first = keeper->epoch();
  EXPECT_TRUE(keeper->Commit(first, int64_t{2}).ok());  // work finished elsewhere, in time
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 0, /*id=*/1}).ok());
  EXPECT_EQ(Read(*keeper), 2);
  ASSERT_EQ(keeper->epoch(), first + 1);
  absl::Status stale = keeper->Commit(first, int64_t{99});
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Read(*keeper), 2);
  EXPECT_EQ(keeper->Stats().stale_commits, 2u);
  EXPECT_EQ(keeper->Commit(keeper->epoch(), kUnchanged).code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(KeeperTest, ACommitDuringABackoffIsRefusedAndOnRecoverSeesTheLastGoodState) {
  auto keeper = Start(1);
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 0, /*id=*/1}).ok());
  EXPECT_EQ(Read(*keeper), 1);  // first restart: at once
  const uint64_t crashed = keeper->epoch();
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 0, /*id=*/2}).ok());
  // The second restart waits 100 ms of the manual clock; the crashed incarnation's epoch is
  // still the latest, but it is dead.
  while (keeper->Stats().phase != KeeperPhase::kRestarting) std::this_thread::yield();
  EXPECT_EQ(keeper->Commit(crashed, int64_t{777}).code(), absl::StatusCode::kFailedPrecondition);
  Advance(absl::Milliseconds(100));
  EXPECT_EQ(Read(*keeper), 1);
}

TEST_P(KeeperTest, StopDuringABackoffRestartsAtOnceAndHandlesWhatIsQueued) {
  auto keeper = Start(0);
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 1, /*id=*/1}).ok());
  EXPECT_EQ(Read(*keeper), 1);
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 1, /*id=*/2}).ok());
  ASSERT_TRUE(keeper->Cast({Act::kAdd, 5}).ok());
  ASSERT_TRUE(keeper->Stop(absl::Seconds(10)).ok());  // the clock never moves
  EXPECT_EQ(*keeper->state().state, 7);
}

TEST_P(KeeperTest, GivingUpFailsQueuedCallsAndDeadLettersQueuedMessages) {
  Heard<DeadLetter> letters;
  KeeperOptions options = Options();
  options.max_restarts = 0;  // the first crash gives up
  options.on_dead_letter = [&](const DeadLetter& d) { letters.Add(d); };
  auto keeper = Start(0, options);
  ASSERT_TRUE(keeper->Cast({Act::kWaitForGate, 1}).ok());
  while (probe_->at_gate.load() == 0) std::this_thread::yield();
  // Queued behind the gate: a crash, then a call and two messages that never get their turn.
  ASSERT_TRUE(keeper->Cast({Act::kCrash}).ok());
  absl::StatusOr<int64_t> call = absl::UnknownError("unset");
  std::thread caller([&] { call = keeper->Call({Act::kAdd, 1}, absl::Seconds(10)); });
  while (keeper->Stats().queued < 2) std::this_thread::yield();  // the crash and the call
  ASSERT_TRUE(keeper->Cast({Act::kAdd, 2}).ok());
  ASSERT_TRUE(keeper->Send({Act::kAdd, 3}).ok());
  probe_->OpenGate();
  caller.join();
  EXPECT_EQ(call.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(call.status().message(), HasSubstr("gave up"));
  // The crashing cast (back at the head of the mailbox), then the other two: none is lost.
  std::vector<DeadLetter> heard = letters.WaitFor([](const auto& v) { return v.size() == 3; });
  ASSERT_EQ(heard.size(), 3u);
  EXPECT_EQ(heard[0].kind, MessageKind::kCast);
  EXPECT_EQ(heard[0].crashes, 1);
  EXPECT_EQ(heard[1].kind, MessageKind::kCast);
  EXPECT_EQ(heard[2].kind, MessageKind::kInfo);
  EXPECT_EQ(keeper->Stats().dead_letters, 3u);
  EXPECT_EQ(*keeper->state().state, 1);
}

TEST_P(KeeperTest, ARuntimeShutdownDuringABackoffDoesNotStrandTheWorker) {
  Heard<Termination> ends;
  auto keeper = Start(0);
  keeper->OnTerminate([&](const Termination& t) { ends.Add(t); });
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 1, /*id=*/1}).ok());
  EXPECT_EQ(Read(*keeper), 1);
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 1, /*id=*/2}).ok());
  while (keeper->Stats().phase != KeeperPhase::kRestarting) std::this_thread::yield();
  ASSERT_TRUE(runtime_->Shutdown(ShutdownMode::kDropPending).ok());  // drops the backoff timer
  EXPECT_EQ(Read(*keeper), 2);                                       // the worker restarted anyway
  keeper.reset();  // the termination notice is delivered by the closing thread
  EXPECT_EQ(ends.WaitFor([](const auto& v) { return !v.empty(); }).size(), 1u);
}

TEST_P(KeeperTest, AListenerMayRemoveItself) {
  Heard<int64_t> values;
  auto keeper = Start(0);
  EXPECT_EQ(Read(*keeper), 0);  // the first state is committed: the next commit is the cast's
  Keeper<Counter>* self = keeper.get();
  Keeper<Counter>::ListenerId id = 0;  // assigned before anything can call the listener
  id = keeper->OnStateChange([&values, self, &id](const Committed<int64_t>& c) {
    values.Add(*c.state);
    self->RemoveListener(id);
  });
  ASSERT_TRUE(keeper->Cast({Act::kAdd, 1}).ok());
  EXPECT_EQ(Read(*keeper), 1);
  EXPECT_EQ(values.WaitFor([](const auto& v) { return !v.empty(); }).size(), 1u);
  ASSERT_TRUE(keeper->Cast({Act::kAdd, 1}).ok());
  EXPECT_EQ(Read(*keeper), 2);
  keeper.reset();  // waits for the dispatch: nothing more was heard
  std::vector<int64_t> heard = values.WaitFor([](const auto&) { return true; });
  EXPECT_EQ(heard.size(), 1u);
}

TEST_P(KeeperTest, APoisonPlainMessageIsDeadLetteredToo) {
  KeeperOptions options = Options();
  options.backoff_initial = absl::ZeroDuration();
  options.backoff_max = absl::ZeroDuration();
  options.poison_after = 2;
  auto keeper = Start(0, options);
  ASSERT_TRUE(keeper->Send({Act::kCrash}).ok());
  EXPECT_EQ(Read(*keeper), 0);
  EXPECT_EQ(keeper->Stats().dead_letters, 1u);
  EXPECT_EQ(keeper->Stats().crashes, 2u);
}

TEST_P(KeeperTest, ListenersHearCommitsInOrderAndNothingForUnchangedStates) {
  Heard<int64_t> values;
  auto keeper = Start(0);
  // Listeners run in registration order: the throwing one first, then the one that records.
  keeper->OnStateChange([](const Committed<int64_t>&) { throw std::runtime_error("bad"); });
  keeper->OnStateChange([&](const Committed<int64_t>& c) { values.Add(*c.state); });
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(keeper->Cast({i % 2 == 0 ? Act::kAdd : Act::kNoChange, 1}).ok());
  }
  EXPECT_EQ(Read(*keeper), 25);
  std::vector<int64_t> heard =
      values.WaitFor([](const auto& v) { return !v.empty() && v.back() == 25; });
  ASSERT_FALSE(heard.empty());
  EXPECT_EQ(heard.back(), 25);
  EXPECT_TRUE(std::is_sorted(heard.begin(), heard.end()));  // ordered, maybe coalesced
  EXPECT_EQ(std::adjacent_find(heard.begin(), heard.end()), heard.end());  // no repeats
  EXPECT_GE(keeper->Stats().listener_failures, 1u);
}

TEST_P(KeeperTest, ASlowListenerDoesNotSlowTheWorker) {
  std::latch release(1);
  auto keeper = Start(0);
  keeper->OnStateChange([&](const Committed<int64_t>&) { release.wait(); });
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(keeper->Cast({Act::kAdd, 1}).ok());
  EXPECT_EQ(Read(*keeper), 100);  // handled while the listener is stuck
  release.count_down();
}

TEST_P(KeeperTest, StopHandlesWhatIsQueuedThenRefusesMessages) {
  Heard<Termination> ends;
  auto keeper = Start(0);
  keeper->OnTerminate([&](const Termination& t) { ends.Add(t); });
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(keeper->Cast({Act::kAdd, 1}).ok());
  ASSERT_TRUE(keeper->Stop(absl::Seconds(10)).ok());
  EXPECT_EQ(*keeper->state().state, 10);
  EXPECT_EQ(keeper->Stats().phase, KeeperPhase::kStopped);
  EXPECT_EQ(keeper->Cast({Act::kAdd, 1}).code(), absl::StatusCode::kFailedPrecondition);
  std::vector<Termination> heard = ends.WaitFor([](const auto& v) { return !v.empty(); });
  ASSERT_EQ(heard.size(), 1u);
  EXPECT_EQ(heard[0].phase, KeeperPhase::kStopped);
  EXPECT_EQ(heard[0].version, 11u);
  EXPECT_EQ(probe_->instances.load(), 0);
}

TEST_P(KeeperTest, CallersDuringABusyHandlerWaitAndAreAnsweredInOrder) {
  // Calls queued behind a handler that blocks are answered once it returns, in order.
  auto keeper = Start(0);
  ASSERT_TRUE(keeper->Cast({Act::kWaitForGate, 1}).ok());
  std::vector<std::thread> callers;
  std::vector<absl::StatusOr<int64_t>> answers(4, absl::UnknownError("unset"));
  while (probe_->at_gate.load() == 0) std::this_thread::yield();
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&, i] { answers[i] = keeper->Call({Act::kAdd, 10}, absl::Seconds(10)); });
  }
  probe_->OpenGate();
  for (std::thread& t : callers) t.join();
  std::vector<int64_t> values;
  for (auto& a : answers) {
    ASSERT_TRUE(a.ok()) << a.status();
    values.push_back(*a);
  }
  std::sort(values.begin(), values.end());
  EXPECT_THAT(values, ElementsAre(11, 21, 31, 41));
}

// A worker whose cast calls its own keeper (which must be refused, not deadlock).
struct SelfCaller {
  using State = int;
  using Args = int;
  using CastMsg = int;
  using CallMsg = int;
  using Reply = int;
  static inline Keeper<SelfCaller>* self = nullptr;
  static inline absl::Status seen;
  State OnFirstStart(const Args& a) { return a; }
  Next<State> OnRecover(const State&, const Crash&) { return kUnchanged; }
  Next<State> HandleCast(const State& s, const int&) {
    seen = self->Call(0, absl::Seconds(1)).status();
    return s + 1;
  }
  CallOutcome<State, Reply> HandleCall(const State& s, const int&) { return {kUnchanged, s}; }
};

TEST_P(KeeperTest, ACallFromTheWorkersOwnThreadIsRefused) {
  auto keeper = Keeper<SelfCaller>::Start(*runtime_, 0, Options());
  ASSERT_TRUE(keeper.ok());
  SelfCaller::self = keeper->get();
  ASSERT_TRUE((*keeper)->Cast(0).ok());
  absl::StatusOr<int> n = (*keeper)->Call(0, absl::Seconds(10));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
  EXPECT_EQ(SelfCaller::seen.code(), absl::StatusCode::kFailedPrecondition);
}

// A worker that owns a side table (never copied: its copy constructor is deleted).
struct Indexed {
  struct Index {
    Index() = default;
    Index(const Index&) = delete;
    Index& operator=(const Index&) = delete;
    std::vector<int64_t> seen;  // every value a handler saw, crashed ones included
  };
  struct Report {
    int64_t sum;
    size_t seen;
    const Index* index;
  };
  using Tables = Index;
  using State = int64_t;
  using Args = int64_t;
  using CastMsg = int64_t;
  using CallMsg = std::monostate;
  using Reply = Report;

  void AdoptTables(std::unique_ptr<Index> t) { tables = std::move(t); }
  std::unique_ptr<Index> ReleaseTables() { return std::move(tables); }
  State OnFirstStart(const Args& start) { return start; }
  Next<State> OnRecover(const State&, const Crash&) { return kUnchanged; }
  Next<State> HandleCast(const State& sum, const int64_t& v) {
    tables->seen.push_back(v);
    if (v < 0) throw std::runtime_error("negative");
    return sum + v;
  }
  CallOutcome<State, Reply> HandleCall(const State& sum, const std::monostate&) {
    return {kUnchanged, Report{sum, tables->seen.size(), tables.get()}};
  }

  std::unique_ptr<Index> tables;
};

TEST_P(KeeperTest, OwnedTablesSurviveACrashWithoutACopyAndKeepTheCrashedHandlersWrites) {
  KeeperOptions options = Options();
  options.poison_after = 1;  // the crashing message is not delivered again
  auto keeper = Keeper<Indexed>::Start(*runtime_, 0, options);
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  ASSERT_TRUE((*keeper)->Cast(1).ok());
  absl::StatusOr<Indexed::Report> before = (*keeper)->Call({}, absl::Seconds(10));
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE((*keeper)->Cast(-1).ok());  // crashes the first incarnation
  ASSERT_TRUE((*keeper)->Cast(2).ok());
  absl::StatusOr<Indexed::Report> after = (*keeper)->Call({}, absl::Seconds(10));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*keeper)->Stats().epoch, 2u);
  EXPECT_EQ(after->sum, 3);                // the state rolled back the crashed message
  EXPECT_EQ(after->seen, 3u);              // the table did not: 1, -1, 2
  EXPECT_EQ(after->index, before->index);  // the same table, handed over by pointer
}

TEST_P(KeeperTest, BadOptionsAreRefusedSayingWhatWasExpected) {
  auto expect_invalid = [&](KeeperOptions o, const char* what) {
    auto keeper = Keeper<Counter>::Start(*runtime_, 0, o,
                                         [p = probe_] { return std::make_unique<Counter>(p); });
    EXPECT_EQ(keeper.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_THAT(keeper.status().message(), HasSubstr(what));
  };
  KeeperOptions o = Options();
  o.max_restarts = -1;
  expect_invalid(o, "max_restarts");
  o = Options();
  o.restart_window = absl::ZeroDuration();
  expect_invalid(o, "restart_window");
  o = Options();
  o.backoff_max = absl::Milliseconds(1);
  expect_invalid(o, "backoff");
  o = Options();
  o.backoff_jitter = 1.0;
  expect_invalid(o, "backoff_jitter");
  o = Options();
  o.poison_after = 0;
  expect_invalid(o, "poison_after");
  o = Options();
  o.on_give_up = GiveUp::kEscalate;
  expect_invalid(o, "escalate");
  o = Options();
  o.executor_batch = 0;
  expect_invalid(o, "executor_batch");
}

// Where handlers run: never on the control thread; on the pool only under kExecutor.
struct Whereabouts {
  using State = int;
  using Args = Runtime*;
  using CastMsg = int;
  using CallMsg = int;
  struct Reply {
    bool on_pool = false;
    bool on_control = false;
  };
  Runtime* runtime = nullptr;
  State OnFirstStart(const Args& rt) {
    runtime = rt;
    return 0;
  }
  Next<State> OnRecover(const State&, const Crash&) { return kUnchanged; }
  Next<State> HandleCast(const State& s, const int& n) { return s + n; }
  CallOutcome<State, Reply> HandleCall(const State&, const int&) {
    return {kUnchanged, Reply{runtime->InOffloadPool(), runtime->InControlThread()}};
  }
};

TEST_P(KeeperTest, HandlersRunWhereThePlacementSaysAndNeverOnTheControlThread) {
  auto keeper = Keeper<Whereabouts>::Start(*runtime_, runtime_.get(), Options());
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  absl::StatusOr<Whereabouts::Reply> where = (*keeper)->Call(0, absl::Seconds(10));
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_FALSE(where->on_control);
  EXPECT_EQ(where->on_pool, GetParam() == Placement::kExecutor);
}

// Many workers on one two-thread pool: no thread each, and every count exact.
TEST_P(KeeperTest, ManyWorkersShareThePoolWithoutLosingAMessage) {
  constexpr int kWorkers = 40;
  constexpr int kCasts = 200;
  std::vector<std::unique_ptr<Keeper<Counter>>> keepers;
  KeeperOptions options = Options();
  options.executor_batch = 8;  // turns yield often: workers interleave on the pool
  for (int i = 0; i < kWorkers; ++i) keepers.push_back(Start(i, options));
  for (int c = 1; c <= kCasts; ++c) {
    for (auto& k : keepers) ASSERT_TRUE(k->Cast({Act::kAdd, c}).ok());
  }
  for (int i = 0; i < kWorkers; ++i) {
    EXPECT_EQ(Read(*keepers[i]), i + kCasts * (kCasts + 1) / 2) << "worker " << i;
  }
}

// A worker that checks the order of every message: each sender numbers its casts 1, 2, ...
// and the state records, per sender, the last number seen and any that came out of order.
// Every 500th message crashes its first delivery (a restart, and a redelivery, mid-transfer).
struct Sequencer {
  struct State {
    std::array<int64_t, 2> last{};
    int64_t count = 0;
    int64_t disorder = 0;
  };
  struct Msg {
    int sender = 0;
    int64_t seq = 0;
  };
  using Args = int;
  using CastMsg = Msg;
  using CallMsg = std::monostate;
  using Reply = State;
  static inline std::mutex mu;
  static inline std::set<std::pair<int, int64_t>> crashed;
  State OnFirstStart(const Args&) { return State{}; }
  Next<State> OnRecover(const State&, const Crash&) { return kUnchanged; }
  Next<State> HandleCast(const State& s, const Msg& m) {
    if (m.seq % 500 == 0) {
      std::lock_guard<std::mutex> lock(mu);
      if (crashed.insert({m.sender, m.seq}).second) throw std::runtime_error("first delivery");
    }
    State next = s;
    if (m.seq != s.last[m.sender] + 1) ++next.disorder;
    next.last[m.sender] = m.seq;
    ++next.count;
    return next;
  }
  CallOutcome<State, Reply> HandleCall(const State& s, const std::monostate&) {
    return {kUnchanged, s};
  }
};

// Property checked here: moving a worker from runtime to runtime while two threads cast to it
// loses, repeats and reorders nothing, and leaves nothing on the runtime it left (each one is
// shut down and destroyed right after the move). Bounded: 2 x 20000 casts, 6 moves.
TEST_P(KeeperTest, TransferUnderLoadLosesDuplicatesAndReordersNothing) {
  constexpr int64_t kPerSender = 20000;
  constexpr int kMoves = 6;
  {
    std::lock_guard<std::mutex> lock(Sequencer::mu);
    Sequencer::crashed.clear();
  }
  auto first = Runtime::Create({.name = "transfer-0"});
  ASSERT_TRUE(first.ok()) << first.status();
  std::unique_ptr<Runtime> home = std::move(*first);
  KeeperOptions options = Options();
  options.max_restarts = 1000;
  options.backoff_initial = absl::Microseconds(100);
  options.backoff_max = absl::Milliseconds(1);
  auto keeper = Keeper<Sequencer>::Start(*home, 0, options);
  ASSERT_TRUE(keeper.ok()) << keeper.status();
  std::atomic<int64_t> sent[2] = {0, 0};
  std::vector<std::thread> senders;
  struct JoinAll {  // also when an assertion returns early: no thread outlives the test
    std::vector<std::thread>& threads;
    ~JoinAll() {
      for (std::thread& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } join_all{senders};
  for (int sender = 0; sender < 2; ++sender) {
    senders.emplace_back([&, sender] {
      for (int64_t seq = 1; seq <= kPerSender; ++seq) {
        if (!(*keeper)->Cast({sender, seq}).ok()) return;
        sent[sender] = seq;
        if (seq % 64 == 0) std::this_thread::yield();
      }
    });
  }
  int moves = 0;
  for (int i = 1; i <= kMoves; ++i) {
    // Spread the moves over the load: wait (bounded) until more has been sent.
    const int64_t target = kPerSender * i / (kMoves + 1);
    for (int spin = 0; spin < 10000 && sent[0] + sent[1] < 2 * target; ++spin) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    auto next = Runtime::Create({.name = absl::StrCat("transfer-", i)});
    ASSERT_TRUE(next.ok()) << next.status();
    ASSERT_TRUE((*keeper)->TransferTo(**next, absl::Seconds(10)).ok());
    ++moves;
    ASSERT_TRUE(home->Shutdown().ok());
    home = std::move(*next);  // the previous runtime is destroyed here
  }
  for (std::thread& t : senders) t.join();
  absl::StatusOr<Sequencer::State> end = (*keeper)->Call({}, absl::Seconds(30));
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(sent[0].load(), kPerSender);
  EXPECT_EQ(sent[1].load(), kPerSender);
  EXPECT_EQ(end->count, 2 * kPerSender) << "lost or repeated messages";
  EXPECT_EQ(end->last[0], kPerSender);
  EXPECT_EQ(end->last[1], kPerSender);
  EXPECT_EQ(end->disorder, 0) << "messages out of order";
  KeeperStats stats = (*keeper)->Stats();
  EXPECT_EQ(stats.dead_letters, 0u);
  EXPECT_EQ(stats.crashes, static_cast<uint64_t>(2 * kPerSender / 500));
  EXPECT_EQ(moves, kMoves);
  ASSERT_TRUE((*keeper)->Stop().ok());
  keeper->reset();  // before `home`, which it was moved to last
}

TEST_P(KeeperTest, ATransferDuringABackoffKeepsTheTimeItHadLeft) {
  ManualClock other_clock;
  other_clock.Advance(absl::Hours(5));  // another clock entirely
  auto other = Runtime::Create({.name = "keeper-test-2", .clock = &other_clock});
  ASSERT_TRUE(other.ok()) << other.status();
  auto keeper = Start(0);
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 1, 1}).ok());  // a first restart: no backoff
  EXPECT_EQ(Read(*keeper), 1);
  ASSERT_TRUE(keeper->Cast({Act::kCrashOnce, 1, 2}).ok());  // a second: backs off 100 ms
  ASSERT_TRUE(Eventually([&] { return keeper->Stats().restart_due.has_value(); }));
  Advance(absl::Milliseconds(40));
  ASSERT_TRUE(keeper->TransferTo(**other, absl::Seconds(10)).ok());
  // 60 ms left, now on the other clock; the first clock no longer matters.
  EXPECT_EQ(keeper->Stats().restart_due, AddDuration(other_clock.Now(), absl::Milliseconds(60)));
  Advance(absl::Seconds(10));
  EXPECT_EQ(keeper->Stats().phase, KeeperPhase::kRestarting);
  other_clock.Advance(absl::Milliseconds(59));
  ASSERT_TRUE((*other)->Sync(absl::Seconds(10)).ok());
  EXPECT_EQ(keeper->Stats().phase, KeeperPhase::kRestarting);
  other_clock.Advance(absl::Milliseconds(1));
  ASSERT_TRUE((*other)->Sync(absl::Seconds(10)).ok());
  EXPECT_EQ(Read(*keeper), 2);
  ASSERT_TRUE(keeper->Stop().ok());
  keeper.reset();
}

// A worker that tries to move itself (refused: it would wait for its own turn).
struct Mover {
  using State = int;
  using Args = Runtime*;
  using CastMsg = int;
  using CallMsg = int;
  using Reply = int;
  static inline Keeper<Mover>* self = nullptr;
  static inline absl::Status seen;
  Runtime* target = nullptr;
  State OnFirstStart(const Args& t) {
    target = t;
    return 0;
  }
  Next<State> OnRecover(const State&, const Crash&) { return kUnchanged; }
  Next<State> HandleCast(const State& s, const int&) {
    seen = self->TransferTo(*target);
    return s + 1;
  }
  CallOutcome<State, Reply> HandleCall(const State& s, const int&) { return {kUnchanged, s}; }
};

TEST_P(KeeperTest, ATransferFromTheWorkersOwnCodeOrToTheSameRuntime) {
  auto keeper = Start(0);
  EXPECT_TRUE(keeper->TransferTo(*runtime_).ok()) << "a move to where it is changes nothing";
  auto other = Runtime::Create({.name = "keeper-test-2"});
  ASSERT_TRUE(other.ok()) << other.status();
  auto mover = Keeper<Mover>::Start(*runtime_, other->get(), Options());
  ASSERT_TRUE(mover.ok()) << mover.status();
  Mover::self = mover->get();
  ASSERT_TRUE((*mover)->Cast(0).ok());
  ASSERT_TRUE((*mover)->Call(0, absl::Seconds(10)).ok());
  EXPECT_EQ(Mover::seen.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Mover::seen.message(), HasSubstr("own code"));
}

TEST_P(KeeperTest, StopFromAnOffloadJobIsRefusedWhenTheWorkerRunsOnThePool) {
  auto keeper = Start(0);
  std::promise<absl::Status> stopped;
  ASSERT_TRUE(runtime_->Offload([&] { stopped.set_value(keeper->Stop()); }).ok());
  absl::Status status = stopped.get_future().get();
  if (GetParam() == Placement::kExecutor) {
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(status.message(), HasSubstr("offload pool"));
    EXPECT_EQ(Read(*keeper), 0) << "still running";
    EXPECT_TRUE(keeper->Stop().ok());
  } else {
    EXPECT_TRUE(status.ok()) << status;  // its own thread does not need the pool
  }
}

INSTANTIATE_TEST_SUITE_P(Placements, KeeperTest,
                         ::testing::Values(Placement::kOwnThread, Placement::kExecutor),
                         [](const ::testing::TestParamInfo<Placement>& info) {
                           return info.param == Placement::kOwnThread ? "OwnThread" : "Executor";
                         });

}  // namespace
}  // namespace keel
