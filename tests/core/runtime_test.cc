#include "keel/runtime.h"

#include <atomic>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "keel/internal/sync.h"

namespace keel {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<Runtime> MakeRuntime(RuntimeOptions options = {}) {
  auto runtime = Runtime::Create(std::move(options));
  EXPECT_TRUE(runtime.ok()) << runtime.status();
  return std::move(*runtime);
}

// A log of strings appended from the control thread, read from the test thread after Sync.
class Log {
 public:
  void Add(std::string s) {
    internal::MutexLock lock(&mu_);
    entries_.push_back(std::move(s));
  }
  std::vector<std::string> entries() {
    internal::MutexLock lock(&mu_);
    return entries_;
  }

 private:
  internal::Mutex mu_;
  std::vector<std::string> entries_ ABSL_GUARDED_BY(mu_);
};

// Blocks the control thread on `gate` and returns once it is blocked, so that what is posted
// next stays queued.
void BlockUntil(Runtime& runtime, internal::Notification& gate) {
  internal::Notification blocked;
  ASSERT_TRUE(runtime
                  .Post([&] {
                    blocked.Notify();
                    gate.WaitForNotification();
                  })
                  .ok());
  blocked.WaitForNotification();
}

TEST(RuntimeTest, RejectsInvalidOptionsWithClearErrors) {
  auto bad_threads = Runtime::Create({.offload_threads = 0});
  EXPECT_EQ(bad_threads.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_threads.status().message(), HasSubstr("offload_threads"));
  auto bad_queue = Runtime::Create({.offload_queue_capacity = 0});
  EXPECT_EQ(bad_queue.status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_name = Runtime::Create({.name = ""});
  EXPECT_EQ(bad_name.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RuntimeTest, RunsPostedTasksInOrderOnTheControlThread) {
  auto runtime = MakeRuntime();
  Log log;
  std::atomic<bool> all_on_control{true};
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(runtime
                    ->Post([&, i] {
                      if (!runtime->InControlThread()) all_on_control = false;
                      log.Add(std::to_string(i));
                    })
                    .ok());
  }
  ASSERT_TRUE(runtime->Sync().ok());
  auto entries = log.entries();
  ASSERT_EQ(entries.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(entries[i], std::to_string(i));
  EXPECT_TRUE(all_on_control);
  EXPECT_FALSE(runtime->InControlThread());
}

TEST(RuntimeTest, TimersFireOnlyWhenTheManualClockReachesTheirDeadline) {
  ManualClock clock;
  auto runtime = MakeRuntime({.clock = &clock});
  Log log;
  ASSERT_TRUE(runtime->Schedule(absl::Seconds(2), [&] { log.Add("2s"); }).ok());
  ASSERT_TRUE(runtime->Schedule(absl::Seconds(1), [&] { log.Add("1s"); }).ok());
  ASSERT_TRUE(runtime->Schedule(absl::Hours(30), [&] { log.Add("30h"); }).ok());
  ASSERT_TRUE(runtime->Sync().ok());
  EXPECT_TRUE(log.entries().empty());

  clock.Advance(absl::Milliseconds(999));
  ASSERT_TRUE(runtime->Sync().ok());
  EXPECT_TRUE(log.entries().empty()) << "a timer fired early";

  clock.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(runtime->Sync().ok());
  EXPECT_THAT(log.entries(), ElementsAre("1s"));

  clock.Advance(absl::Seconds(5));
  ASSERT_TRUE(runtime->Sync().ok());
  EXPECT_THAT(log.entries(), ElementsAre("1s", "2s"));

  clock.Advance(absl::Hours(30));
  ASSERT_TRUE(runtime->Sync().ok());
  EXPECT_THAT(log.entries(), ElementsAre("1s", "2s", "30h"));
  EXPECT_EQ(runtime->Stats().timers_run, 3u);
  EXPECT_EQ(runtime->Stats().timers_pending, 0u);
}

TEST(RuntimeTest, EqualDeadlinesFireInScheduleOrder) {
  ManualClock clock;
  auto runtime = MakeRuntime({.clock = &clock});
  Log log;
  const Instant deadline = AddDuration(clock.Now(), absl::Seconds(1));
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(runtime->ScheduleAt(deadline, [&, i] { log.Add(std::to_string(i)); }).ok());
  }
  clock.Advance(absl::Seconds(1));
  ASSERT_TRUE(runtime->Sync().ok());
  auto entries = log.entries();
  ASSERT_EQ(entries.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(entries[i], std::to_string(i));
}

TEST(RuntimeTest, CancelledTimersNeverRunAndReleaseTheirTask) {
  ManualClock clock;
  auto runtime = MakeRuntime({.clock = &clock});
  std::atomic<int> runs{0};
  auto token = std::make_shared<int>(7);
  auto timer = runtime->Schedule(absl::Seconds(1), [&runs, token] { ++runs; });
  ASSERT_TRUE(timer.ok());
  EXPECT_TRUE(timer->pending());
  EXPECT_TRUE(runtime->Cancel(*timer));
  EXPECT_FALSE(runtime->Cancel(*timer)) << "second cancel must report nothing to cancel";
  EXPECT_FALSE(timer->pending());
  clock.Advance(absl::Seconds(2));
  ASSERT_TRUE(runtime->Sync().ok());
  EXPECT_EQ(runs.load(), 0);
  EXPECT_EQ(token.use_count(), 1) << "the cancelled task still holds its captures";
}

TEST(RuntimeTest, CancelAfterRunReportsFalse) {
  ManualClock clock;
  auto runtime = MakeRuntime({.clock = &clock});
  std::atomic<int> runs{0};
  auto timer = runtime->Schedule(absl::Milliseconds(5), [&] { ++runs; });
  ASSERT_TRUE(timer.ok());
  clock.Advance(absl::Milliseconds(5));
  ASSERT_TRUE(runtime->Sync().ok());
  EXPECT_EQ(runs.load(), 1);
  EXPECT_FALSE(runtime->Cancel(*timer));
}

TEST(RuntimeTest, TimersMayScheduleAndCancelFromTheControlThread) {
  ManualClock clock;
  auto runtime = MakeRuntime({.clock = &clock});
  Log log;
  std::shared_ptr<TimerHandle> victim = std::make_shared<TimerHandle>();
  auto v = runtime->Schedule(absl::Seconds(3), [&] { log.Add("victim"); });
  ASSERT_TRUE(v.ok());
  *victim = *v;
  ASSERT_TRUE(runtime
                  ->Schedule(absl::Seconds(1),
                             [&, victim] {
                               log.Add("first");
                               EXPECT_TRUE(runtime->Cancel(*victim));
                               auto next =
                                   runtime->Schedule(absl::Seconds(1), [&] { log.Add("chained"); });
                               EXPECT_TRUE(next.ok());
                             })
                  .ok());
  clock.Advance(absl::Seconds(1));
  ASSERT_TRUE(runtime->Sync().ok());
  clock.Advance(absl::Seconds(5));
  ASSERT_TRUE(runtime->Sync().ok());
  EXPECT_THAT(log.entries(), ElementsAre("first", "chained"));
}

TEST(RuntimeTest, SteadyClockTimersRunAfterTheirDelayAndMeasureLag) {
  auto runtime = MakeRuntime();
  std::promise<Instant> fired;
  const Instant scheduled = Clock::Steady()->Now();
  ASSERT_TRUE(
      runtime->Schedule(absl::Milliseconds(20), [&] { fired.set_value(Clock::Steady()->Now()); })
          .ok());
  auto future = fired.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_GE(future.get() - scheduled, std::chrono::milliseconds(20)) << "timer fired early";
  LoopStats stats = runtime->Stats();
  EXPECT_EQ(stats.lag_samples, 1u);
  EXPECT_GE(stats.max_lag, absl::ZeroDuration());
  EXPECT_EQ(stats.max_lag, stats.last_lag);
}

TEST(RuntimeTest, LagIsMeasuredAgainstTheDeadline) {
  ManualClock clock;
  auto runtime = MakeRuntime({.clock = &clock});
  ASSERT_TRUE(runtime->Schedule(absl::Milliseconds(10), [] {}).ok());
  // The loop only learns of the time when the clock jumps, here 250 ms past the deadline.
  clock.Advance(absl::Milliseconds(260));
  ASSERT_TRUE(runtime->Sync().ok());
  LoopStats stats = runtime->Stats();
  EXPECT_EQ(stats.lag_samples, 1u);
  EXPECT_EQ(stats.last_lag, absl::Milliseconds(250));
  EXPECT_GE(stats.p99_lag, absl::Milliseconds(250));
  EXPECT_LE(stats.p99_lag, absl::Milliseconds(500));
}

TEST(RuntimeTest, ExceptionsFromTasksAreCaughtAndCounted) {
  auto runtime = MakeRuntime();
  ASSERT_TRUE(runtime->Post([] { throw std::runtime_error("boom"); }).ok());
  std::atomic<bool> after{false};
  ASSERT_TRUE(runtime->Post([&] { after = true; }).ok());
  ASSERT_TRUE(runtime->Sync().ok());
  EXPECT_TRUE(after.load());
  EXPECT_EQ(runtime->Stats().callback_exceptions, 1u);
}

TEST(RuntimeTest, OffloadRunsOffTheControlThreadAndCompletesOnIt) {
  auto runtime = MakeRuntime();
  std::promise<std::pair<bool, int>> result;
  std::atomic<bool> job_on_control{true};
  ASSERT_TRUE(runtime
                  ->OffloadThen<int>(
                      [&] {
                        job_on_control = runtime->InControlThread();
                        return 42;
                      },
                      [&](absl::StatusOr<int> r) {
                        result.set_value({runtime->InControlThread(), r.ok() ? *r : -1});
                      })
                  .ok());
  auto future = result.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto [done_on_control, value] = future.get();
  EXPECT_FALSE(job_on_control.load());
  EXPECT_TRUE(done_on_control);
  EXPECT_EQ(value, 42);
}

TEST(RuntimeTest, OffloadJobThatThrowsDeliversAnInternalError) {
  auto runtime = MakeRuntime();
  std::promise<absl::Status> result;
  ASSERT_TRUE(runtime
                  ->OffloadThen<int>([]() -> int { throw std::runtime_error("decode failed"); },
                                     [&](absl::StatusOr<int> r) {
                                       // A fresh Status for the other thread: see
                                       // tests/tsan.supp on sharing a Status rep.
                                       result.set_value(absl::Status(
                                           r.status().code(), std::string(r.status().message())));
                                     })
                  .ok());
  auto future = result.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  absl::Status status = future.get();
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(status.message(), HasSubstr("decode failed"));
  EXPECT_EQ(runtime->Stats().callback_exceptions, 1u);
}

TEST(RuntimeTest, FullOffloadQueueIsResourceExhausted) {
  auto runtime = MakeRuntime({.offload_threads = 1, .offload_queue_capacity = 2});
  internal::Notification release;
  internal::Notification started;
  ASSERT_TRUE(runtime
                  ->Offload([&] {
                    started.Notify();
                    release.WaitForNotification();
                  })
                  .ok());
  started.WaitForNotification();  // the only worker is busy; the queue is empty
  EXPECT_TRUE(runtime->Offload([] {}).ok());
  EXPECT_TRUE(runtime->Offload([] {}).ok());
  absl::Status full = runtime->Offload([] {});
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("capacity 2"));
  EXPECT_EQ(runtime->Stats().offload_rejected, 1u);
  release.Notify();
}

TEST(RuntimeTest, ShutdownRunPendingRunsEverythingPostedBefore) {
  auto runtime = MakeRuntime();
  internal::Notification gate;
  std::atomic<int> ran{0};
  ASSERT_TRUE(runtime->Post([&] { gate.WaitForNotification(); }).ok());
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(runtime->Post([&] { ++ran; }).ok());
  std::atomic<int> jobs{0};
  std::atomic<int> completions{0};
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(runtime
                    ->OffloadThen<int>([&] { return ++jobs; },
                                       [&](absl::StatusOr<int> r) {
                                         if (r.ok()) ++completions;
                                       })
                    .ok());
  }
  std::thread releaser([&] { gate.Notify(); });
  ASSERT_TRUE(runtime->Shutdown(ShutdownMode::kRunPending).ok());
  releaser.join();
  EXPECT_EQ(ran.load(), 50);
  EXPECT_EQ(jobs.load(), 10);
  EXPECT_EQ(completions.load(), 10);
  EXPECT_EQ(runtime->Post([] {}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(runtime->Schedule(absl::Seconds(1), [] {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(runtime->Offload([] {}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(runtime->Sync().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(runtime->Shutdown().ok()) << "Shutdown is idempotent";
}

TEST(RuntimeTest, ShutdownDropPendingDestroysTasksAndCancelsJobsVisibly) {
  ManualClock clock;
  auto runtime = MakeRuntime({.clock = &clock, .offload_threads = 1});
  internal::Notification gate;
  internal::Notification busy;
  ASSERT_TRUE(runtime
                  ->Offload([&] {
                    busy.Notify();
                    gate.WaitForNotification();
                  })
                  .ok());
  busy.WaitForNotification();
  // Block the control thread too, so that posted tasks are still queued at Shutdown.
  internal::Notification loop_gate;
  BlockUntil(*runtime, loop_gate);

  std::atomic<int> ran{0};
  auto token = std::make_shared<int>(1);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(runtime->Post([&ran, token] { ++ran; }).ok());
  std::atomic<int> cancelled{0};
  std::atomic<int> job_runs{0};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(runtime
                    ->OffloadThen<int>([&] { return ++job_runs; },
                                       [&](absl::StatusOr<int> r) {
                                         if (r.status().code() == absl::StatusCode::kCancelled) {
                                           ++cancelled;
                                         }
                                       })
                    .ok());
  }
  auto timer = runtime->Schedule(absl::Seconds(1), [&ran] { ++ran; });
  ASSERT_TRUE(timer.ok());

  std::thread releaser([&] {
    // Let Shutdown close the queue first; then free the loop and the worker.
    while (runtime->Post([] {}).ok()) std::this_thread::yield();
    loop_gate.Notify();
    gate.Notify();
  });
  ASSERT_TRUE(runtime->Shutdown(ShutdownMode::kDropPending).ok());
  releaser.join();
  EXPECT_EQ(ran.load(), 0);
  EXPECT_EQ(job_runs.load(), 0);
  EXPECT_EQ(cancelled.load(), 3) << "every dropped job's completion must learn of it";
  EXPECT_EQ(token.use_count(), 1) << "dropped tasks must be destroyed";
  EXPECT_FALSE(timer->pending()) << "a dropped timer must not look pending";
  EXPECT_FALSE(runtime->Cancel(*timer));
}

TEST(RuntimeTest, ShutdownFromTheControlThreadIsRefused) {
  auto runtime = MakeRuntime();
  std::promise<absl::Status> status;
  ASSERT_TRUE(runtime->Post([&] { status.set_value(runtime->Shutdown()); }).ok());
  EXPECT_EQ(status.get_future().get().code(), absl::StatusCode::kFailedPrecondition);
  std::promise<absl::Status> sync;
  ASSERT_TRUE(runtime->Post([&] { sync.set_value(runtime->Sync()); }).ok());
  EXPECT_EQ(sync.get_future().get().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RuntimeTest, PostIsSafeFromManyThreadsAndLosesNothing) {
  // Property: every task posted by any thread before Shutdown runs exactly once.
  auto runtime = MakeRuntime();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 5000;
  std::atomic<int> ran{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) ASSERT_TRUE(runtime->Post([&] { ++ran; }).ok());
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(runtime->Shutdown().ok());
  EXPECT_EQ(ran.load(), kThreads * kPerThread);
}

TEST(RuntimeTest, CancelRacingWithFireRunsTheTaskAtMostOnce) {
  // Property: for each timer, either Cancel returns true and the task never runs, or Cancel
  // returns false and the task runs exactly once.
  auto runtime = MakeRuntime();
  constexpr int kTimers = 2000;
  std::vector<std::atomic<int>> runs(kTimers);
  std::vector<TimerHandle> handles;
  for (int i = 0; i < kTimers; ++i) {
    auto h = runtime->Schedule(absl::Microseconds(i % 50), [&runs, i] { ++runs[i]; });
    ASSERT_TRUE(h.ok());
    handles.push_back(*h);
  }
  std::vector<bool> cancelled(kTimers);
  for (int i = 0; i < kTimers; ++i) cancelled[i] = runtime->Cancel(handles[i]);
  // Wait until every timer is out of the pending state (run or cancelled).
  for (int i = 0; i < kTimers; ++i) {
    for (int spins = 0; handles[i].pending() && spins < 10'000; ++spins) {
      ASSERT_TRUE(runtime->Sync().ok());
    }
  }
  ASSERT_TRUE(runtime->Shutdown().ok());
  for (int i = 0; i < kTimers; ++i) {
    EXPECT_EQ(runs[i].load(), cancelled[i] ? 0 : 1) << "timer " << i;
  }
}

TEST(RuntimeTest, TheControlThreadIdIsForgottenAfterShutdown) {
  // A thread created after Shutdown often gets the old control thread's id; it must not be
  // mistaken for the control thread (which would refuse Shutdown and abort the destructor).
  auto runtime = MakeRuntime();
  ASSERT_TRUE(runtime->Shutdown().ok());
  for (int i = 0; i < 20; ++i) {
    std::thread([&] {
      EXPECT_FALSE(runtime->InControlThread());
      EXPECT_TRUE(runtime->Shutdown().ok());
    }).join();
  }
  std::thread([&] { runtime.reset(); }).join();  // destroyed on a fresh thread: no abort
  EXPECT_EQ(runtime, nullptr);
}

TEST(RuntimeTest, ShutdownFromAnOffloadJobIsRefused) {
  auto runtime = MakeRuntime();
  std::promise<absl::Status> status;
  ASSERT_TRUE(runtime->Offload([&] { status.set_value(runtime->Shutdown()); }).ok());
  auto future = status.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(future.get().code(), absl::StatusCode::kFailedPrecondition);
}

// Destroying it cancels another timer, as an RAII owner of a timer would.
struct CancelsOnDestruction {
  Runtime* runtime;
  std::shared_ptr<TimerHandle> other;
  ~CancelsOnDestruction() {
    if (other) runtime->Cancel(*other);
  }
};

TEST(RuntimeTest, ATaskWhoseDestructorCancelsAnotherTimerIsSafeAtShutdown) {
  ManualClock clock;
  auto runtime = MakeRuntime({.clock = &clock});
  auto other = std::make_shared<TimerHandle>();
  auto b = runtime->Schedule(absl::Hours(1), [] {});
  ASSERT_TRUE(b.ok());
  *other = *b;
  auto owner = std::make_shared<CancelsOnDestruction>(CancelsOnDestruction{runtime.get(), other});
  auto a = runtime->Schedule(absl::Hours(1), [owner] {});
  ASSERT_TRUE(a.ok());
  owner.reset();
  ASSERT_TRUE(runtime->Sync().ok());
  ASSERT_TRUE(runtime->Shutdown().ok());  // tears down the wheel holding both timers
  EXPECT_FALSE(a->pending());
  EXPECT_FALSE(other->pending());
}

TEST(RuntimeTest, ATimerCancelledAsShutdownDropsItsRemovalStillReleasesItsTask) {
  auto runtime = MakeRuntime();
  internal::Notification loop_gate;
  BlockUntil(*runtime, loop_gate);
  auto token = std::make_shared<int>(1);
  auto timer = runtime->Schedule(absl::Hours(1), [token] {});
  ASSERT_TRUE(timer.ok());
  EXPECT_TRUE(runtime->Cancel(*timer));  // its removal waits behind the gate, then is dropped
  std::thread releaser([&] {
    while (runtime->Post([] {}).ok()) std::this_thread::yield();
    loop_gate.Notify();
  });
  ASSERT_TRUE(runtime->Shutdown(ShutdownMode::kDropPending).ok());
  releaser.join();
  EXPECT_EQ(token.use_count(), 1) << "the cancelled timer's task outlived the runtime's loop";
}

TEST(RuntimeTest, EmptyCallablesAreInvalidArguments) {
  auto runtime = MakeRuntime();
  EXPECT_EQ(runtime->Post(nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runtime->Schedule(absl::Seconds(1), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runtime->Offload(nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runtime->OffloadThen<int>(nullptr, [](absl::StatusOr<int>) {}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runtime->OffloadThen<int>([] { return 1; }, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(runtime->Sync().ok()) << "the loop survived";
}

TEST(RuntimeTest, AnInfiniteDelayIsAcceptedAndNeverFires) {
  ManualClock clock;
  auto runtime = MakeRuntime({.clock = &clock});
  std::atomic<bool> ran{false};
  auto timer = runtime->Schedule(absl::InfiniteDuration(), [&] { ran = true; });
  ASSERT_TRUE(timer.ok());
  clock.Advance(absl::Hours(24 * 365 * 10));
  ASSERT_TRUE(runtime->Sync().ok());
  EXPECT_FALSE(ran.load());
  EXPECT_TRUE(timer->pending());
  EXPECT_TRUE(runtime->Cancel(*timer));
}

TEST(RuntimeTest, TelemetryIsReachableFromTheRuntime) {
  auto runtime = MakeRuntime();
  std::atomic<int> spans{0};
  runtime->telemetry().Subscribe([&](const Span&) { ++spans; });
  { SpanScope span(runtime->telemetry(), runtime->clock(), "keel.test"); }
  EXPECT_EQ(spans.load(), 1);
  EXPECT_EQ(runtime->name(), "keel");
}

}  // namespace
}  // namespace keel
