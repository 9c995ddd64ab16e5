// Runtime: keel's control thread, its timers, and a small offload pool.
//
// Each `keel::Runtime` owns one control thread that runs an event loop on libcurl's multi
// interface (`curl_multi_poll`, woken by `curl_multi_wakeup` when work is posted): posted
// tasks, a hierarchical timer wheel with millisecond resolution, and the network transfers
// of fetchers and lease stores, all without blocking. CPU-heavy work (decompression, user
// decode hooks, snapshot I/O) goes to the offload pool so that the loop stays on time. The
// loop measures its own lag (how late timers run) and reports it in `Stats()`.
//
//   auto runtime = keel::Runtime::Create({.name = "pricing"});
//   if (!runtime.ok()) return runtime.status();
//   (*runtime)->Post([] { ... });                                  // on the control thread
//   auto timer = (*runtime)->Schedule(absl::Seconds(5), [] { ... });
//   (*runtime)->Cancel(*timer);
//   (*runtime)->OffloadThen<int>([] { return Crunch(); },          // on the pool
//                                [](absl::StatusOr<int> r) { ... }); // then on the loop
//
// Thread safety: thread-safe; every method may be called from any thread unless it says
// otherwise. Tasks, timers and offload completions run on the control thread, one at a time,
// in order: tasks in the order posted; timers in deadline order, first-scheduled first among
// equal deadlines. A task must not block: it delays every timer and transfer behind it.
//
// Time: all deadlines are on the runtime's `Clock` (steady by default). With a
// `ManualClock`, timers fire only when the test moves the clock; `Sync()` then waits until
// everything due has run.
//
// Shutdown: `Shutdown(mode)` (or the destructor, with kRunPending) stops accepting work,
// then runs (kRunPending) or destroys unrun (kDropPending) the tasks already posted and the
// offload jobs already queued, destroys pending timers without running them, delivers every
// offload completion (CancelledError for a dropped job), and joins the threads. It is
// deterministic: nothing posted before Shutdown is silently lost, nothing posted after runs.
//
// Exceptions thrown by tasks, timers and jobs are caught on the thread that ran them,
// counted in `Stats().callback_exceptions`, and logged; the runtime carries on.
#ifndef KEEL_RUNTIME_H_
#define KEEL_RUNTIME_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "keel/clock.h"
#include "keel/telemetry.h"

namespace keel {

struct RuntimeOptions {
  // Names the control thread (first 15 bytes) and the runtime's log lines.
  std::string name = "keel";
  // Time source; nullptr means Clock::Steady(). Must outlive the runtime.
  Clock* clock = nullptr;
  // Threads in the offload pool, 1 to 64.
  int offload_threads = 2;
  // Offload jobs that may wait in the queue; past it, Offload returns ResourceExhausted.
  int offload_queue_capacity = 1024;
};

enum class ShutdownMode {
  kRunPending,   // run posted tasks and queued offload jobs, then stop
  kDropPending,  // destroy them unrun (offload completions get CancelledError), then stop
};

class Runtime;
namespace internal {
struct TimerState;
class RuntimeImpl;
RuntimeImpl& ImplOf(Runtime& runtime);  // for keel's internal headers
}  // namespace internal

// A scheduled timer. Copyable; the default-constructed handle refers to nothing.
class TimerHandle {
 public:
  TimerHandle() = default;
  // True when this handle refers to a timer (pending, run, or cancelled).
  bool valid() const noexcept { return state_ != nullptr; }
  // True while the timer has neither run, started running, nor been cancelled or dropped.
  bool pending() const noexcept;

 private:
  friend class Runtime;
  friend class internal::RuntimeImpl;
  explicit TimerHandle(std::shared_ptr<internal::TimerState> state) : state_(std::move(state)) {}
  std::shared_ptr<internal::TimerState> state_;
};

// Figures the loop measures about itself. All counters since the runtime started.
struct LoopStats {
  uint64_t iterations = 0;        // loop turns (wakeups)
  uint64_t tasks_run = 0;         // posted tasks run
  uint64_t timers_run = 0;        // timers run
  uint64_t offload_jobs_run = 0;  // offload jobs run on the pool
  uint64_t offload_rejected = 0;  // Offload calls refused because the queue was full
  uint64_t callback_exceptions = 0;
  size_t timers_pending = 0;
  // Lag: how long after its deadline a timer started, on the runtime's clock.
  uint64_t lag_samples = 0;
  absl::Duration last_lag;
  absl::Duration max_lag;
  absl::Duration mean_lag;
  absl::Duration p99_lag;  // upper bound of the histogram bucket (powers of two) holding p99
};

class Runtime {
 public:
  // Starts the control thread and the offload pool. InvalidArgument for bad options,
  // Internal when libcurl or a thread cannot be set up.
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(RuntimeOptions options = {});

  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;
  // Shutdown(kRunPending) if not done yet. Must not run on the control thread or the offload
  // pool (it aborts with a message: a thread cannot join itself).
  ~Runtime();

  // Runs `task` on the control thread, after the tasks posted before it. FailedPrecondition
  // (and `task` destroyed unrun) once Shutdown has begun; InvalidArgument for an empty task
  // (here and in Schedule, Offload and OffloadThen).
  absl::Status Post(absl::AnyInvocable<void()> task);

  // Runs `task` on the control thread once `after` (clamped to >= 0) has passed on the
  // runtime's clock: never early, late by the loop's lag. FailedPrecondition after Shutdown.
  absl::StatusOr<TimerHandle> Schedule(absl::Duration after, absl::AnyInvocable<void()> task);
  // The same, at an instant of the runtime's clock.
  absl::StatusOr<TimerHandle> ScheduleAt(Instant deadline, absl::AnyInvocable<void()> task);

  // Cancels a timer. True when it will never run (its task is destroyed soon, on the control
  // thread); false when it already ran, is running, was cancelled, or was dropped.
  bool Cancel(const TimerHandle& timer);

  // Runs `job` on the offload pool. ResourceExhausted when the queue is full,
  // FailedPrecondition after Shutdown; in both cases `job` is destroyed unrun.
  absl::Status Offload(absl::AnyInvocable<void()> job);

  // Runs `job` on the offload pool, then `done` on the control thread with its result
  // (InternalError when the job threw; CancelledError when Shutdown(kDropPending) dropped
  // it). On an error return, neither runs.
  template <class R>
  absl::Status OffloadThen(absl::AnyInvocable<R()> job,
                           absl::AnyInvocable<void(absl::StatusOr<R>)> done);

  // Waits until the loop has run every task posted before the call and every timer due on
  // the clock at the call. For tests with a ManualClock: Advance, then Sync. Not on the
  // control thread (FailedPrecondition); DeadlineExceeded after `timeout`; FailedPrecondition
  // after Shutdown.
  absl::Status Sync(absl::Duration timeout = absl::InfiniteDuration());

  // Stops the runtime as described above and joins its threads. Idempotent; a second call
  // returns at once. FailedPrecondition when called on the control thread or from a job on
  // the runtime's own offload pool (either would wait for itself).
  absl::Status Shutdown(ShutdownMode mode = ShutdownMode::kRunPending);

  // True on this runtime's control thread.
  bool InControlThread() const noexcept;
  // True on one of this runtime's offload-pool threads (inside an offload job).
  bool InOffloadPool() const noexcept;

  Clock& clock() const noexcept;
  Instant Now() const noexcept { return clock().Now(); }
  Telemetry& telemetry() noexcept;
  const std::string& name() const noexcept;

  // A consistent-enough copy of the loop's counters (each read relaxed).
  LoopStats Stats() const;

 private:
  explicit Runtime(std::unique_ptr<internal::RuntimeImpl> impl);
  friend internal::RuntimeImpl& internal::ImplOf(Runtime& runtime);

  // Type-erased OffloadThen: `job` returns OK or the error `done` must see.
  absl::Status OffloadWithCompletion(absl::AnyInvocable<absl::Status()> job,
                                     absl::AnyInvocable<void(absl::Status)> done);

  std::unique_ptr<internal::RuntimeImpl> impl_;
};

template <class R>
absl::Status Runtime::OffloadThen(absl::AnyInvocable<R()> job,
                                  absl::AnyInvocable<void(absl::StatusOr<R>)> done) {
  if (!job || !done) return absl::InvalidArgumentError("the offload job or completion is empty");
  // The result travels from the pool thread to the control thread in `slot`; the runtime's
  // queue hand-off orders the write before the read.
  auto slot = std::make_shared<std::optional<R>>();
  return OffloadWithCompletion(
      [job = std::move(job), slot]() mutable -> absl::Status {
        slot->emplace(job());
        return absl::OkStatus();
      },
      [done = std::move(done), slot](absl::Status status) mutable {
        if (status.ok()) {
          done(std::move(**slot));
        } else {
          done(std::move(status));
        }
      });
}

}  // namespace keel

#endif  // KEEL_RUNTIME_H_
