#include "keel/clock.h"

#include <limits>
#include <utility>
#include <vector>

namespace keel {

Instant AddDuration(Instant t, absl::Duration d) noexcept {
  const int64_t base = t.time_since_epoch().count();
  const int64_t delta = absl::ToInt64Nanoseconds(d);  // saturates at +-inf
  int64_t sum;
  if (__builtin_add_overflow(base, delta, &sum)) {
    sum = delta > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return Instant(std::chrono::nanoseconds(sum));
}

namespace {

class SteadyClock final : public Clock {
 public:
  Instant Now() const noexcept override { return std::chrono::steady_clock::now(); }
  std::optional<std::chrono::nanoseconds> RealWaitUntil(Instant deadline) const noexcept override {
    const Instant now = Now();
    return deadline <= now ? std::chrono::nanoseconds(0) : deadline - now;
  }
  WatchId Watch(std::function<void()>) override { return 0; }
  void Unwatch(WatchId) override {}
};

}  // namespace

Clock* Clock::Steady() noexcept {
  static SteadyClock* const clock = new SteadyClock();
  return clock;
}

// A manual clock starts one day after the steady clock's origin, so that instants computed
// by subtracting short durations stay positive.
ManualClock::ManualClock() : ManualClock(Instant(std::chrono::hours(24))) {}

ManualClock::ManualClock(Instant start) : now_ns_(start.time_since_epoch().count()) {}

Instant ManualClock::Now() const noexcept {
  return Instant(std::chrono::nanoseconds(now_ns_.load(std::memory_order_acquire)));
}

std::optional<std::chrono::nanoseconds> ManualClock::RealWaitUntil(
    Instant deadline) const noexcept {
  if (deadline <= Now()) return std::chrono::nanoseconds(0);
  return std::nullopt;
}

Clock::WatchId ManualClock::Watch(std::function<void()> on_jump) {
  internal::MutexLock lock(&watchers_mu_);
  const WatchId id = next_watch_id_++;
  watchers_.emplace(id, std::move(on_jump));
  return id;
}

void ManualClock::Unwatch(WatchId id) {
  internal::MutexLock notify(&notify_mu_);  // waits for a running notification
  internal::MutexLock lock(&watchers_mu_);
  watchers_.erase(id);
}

void ManualClock::Advance(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return;
  // Saturating, so that Advance(InfiniteDuration()) cannot wrap the clock backwards; a CAS
  // loop, so that concurrent advances add up. acq_rel: pairs with the acquire in Now().
  int64_t current = now_ns_.load(std::memory_order_acquire);
  int64_t next;
  do {
    next = AddDuration(Instant(std::chrono::nanoseconds(current)), d).time_since_epoch().count();
  } while (!now_ns_.compare_exchange_weak(current, next, std::memory_order_acq_rel));
  NotifyWatchers();
}

void ManualClock::Set(Instant t) {
  const int64_t target = t.time_since_epoch().count();
  int64_t current = now_ns_.load(std::memory_order_acquire);
  while (current < target &&
         !now_ns_.compare_exchange_weak(current, target, std::memory_order_acq_rel)) {
  }
  NotifyWatchers();
}

void ManualClock::NotifyWatchers() {
  internal::MutexLock notify(&notify_mu_);
  std::vector<std::function<void()>> callbacks;
  {
    internal::MutexLock lock(&watchers_mu_);
    callbacks.reserve(watchers_.size());
    for (const auto& [id, cb] : watchers_) callbacks.push_back(cb);
  }
  for (auto& cb : callbacks) cb();
}

}  // namespace keel
