// Clock: the source of monotonic time for everything in keel that schedules.
//
// Time is injected. Production code uses the steady clock (`Clock::Steady()`); tests use a
// `ManualClock` that moves only when the test says so, so that expiry, heartbeats, backoff
// and restarts are tested without sleeping:
//
//   keel::ManualClock clock;
//   keel::Runtime runtime({.clock = &clock});
//   runtime.Schedule(absl::Seconds(30), [] { ... });
//   clock.Advance(absl::Seconds(30));   // the runtime wakes and runs the task
//   runtime.Sync();                     // returns once it has
//
// Thread safety: both clocks are thread-safe.
//
// Time points are `keel::Instant` (a steady-clock time point). A manual clock starts at an
// arbitrary fixed instant and never moves backwards.
#ifndef KEEL_CLOCK_H_
#define KEEL_CLOCK_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "keel/internal/sync.h"

namespace keel {

using Instant = std::chrono::steady_clock::time_point;

// `t + d` for an abseil duration; saturates instead of overflowing.
Instant AddDuration(Instant t, absl::Duration d) noexcept;
// `b - a` as an abseil duration.
inline absl::Duration Elapsed(Instant a, Instant b) noexcept { return absl::FromChrono(b - a); }

class Clock {
 public:
  virtual ~Clock() = default;

  // The process-wide steady clock. Never null; lives forever.
  static Clock* Steady() noexcept;

  // The current instant. Thread-safe, never blocks.
  virtual Instant Now() const noexcept = 0;

  // How long a thread must really wait for this clock to reach `deadline`: zero when it has,
  // nullopt when the clock does not move by itself (a manual clock), in which case the
  // waiter relies on `Watch` to be woken.
  virtual std::optional<std::chrono::nanoseconds> RealWaitUntil(
      Instant deadline) const noexcept = 0;

  // Registers `on_jump`, called (on the thread that moves the clock) after each time the
  // clock is moved by hand. Returns an id for `Unwatch`. The steady clock never calls it.
  using WatchId = uint64_t;
  virtual WatchId Watch(std::function<void()> on_jump) = 0;
  // Removes a watcher; after it returns the callback is not running and will not run.
  virtual void Unwatch(WatchId id) = 0;
};

// A clock that moves only when `Advance` or `Set` is called. Thread-safe.
class ManualClock final : public Clock {
 public:
  ManualClock();
  explicit ManualClock(Instant start);

  Instant Now() const noexcept override;
  std::optional<std::chrono::nanoseconds> RealWaitUntil(Instant deadline) const noexcept override;
  WatchId Watch(std::function<void()> on_jump) override;
  void Unwatch(WatchId id) override;

  // Moves the clock forward by `d` (negative durations are ignored) and calls the watchers.
  void Advance(absl::Duration d);
  // Moves the clock to `t` if it is later than now, and calls the watchers.
  void Set(Instant t);

 private:
  void NotifyWatchers();

  // Nanoseconds since the steady origin. Advance/Set store with release; Now() loads with
  // acquire, so a thread that sees the new time also sees what the mover wrote before it.
  std::atomic<int64_t> now_ns_;
  internal::Mutex watchers_mu_;
  WatchId next_watch_id_ ABSL_GUARDED_BY(watchers_mu_) = 1;
  absl::flat_hash_map<WatchId, std::function<void()>> watchers_ ABSL_GUARDED_BY(watchers_mu_);
  // Held while watchers run, so that Unwatch can wait for a running callback.
  internal::Mutex notify_mu_;
};

}  // namespace keel

#endif  // KEEL_CLOCK_H_
