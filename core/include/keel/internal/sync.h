// Internal to keel: a mutex and a notification on std::mutex, and a spin lock, with abseil's
// thread-safety annotations.
//
// Why not absl::Mutex: the abseil that Debian ships is not built with ThreadSanitizer, so the
// ordering absl::Mutex and absl::Notification provide is invisible to TSan and every use shows
// up as a false data race in keel's TSan runs. std::mutex is intercepted by TSan; these
// wrappers keep clang's -Wthread-safety checks (ABSL_GUARDED_BY) working on top of it.
#ifndef KEEL_INTERNAL_SYNC_H_
#define KEEL_INTERNAL_SYNC_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace keel::internal {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  std::mutex& native() ABSL_LOCK_RETURNED(this) { return mu_; }

 private:
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }

 private:
  Mutex* const mu_;
};

// A condition variable for Mutex: waits with the caller's MutexLock held (so that clang's
// analysis sees the guarded reads after the wait as locked). Predicates read guarded state:
// write them as `[&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { ... }` (they run with `mu` held).
class CondVar {
 public:
  template <class Predicate>
  void Wait(Mutex* mu, Predicate ready) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->native(), std::adopt_lock);
    cv_.wait(lock, ready);
    lock.release();  // still held, by the caller's MutexLock
  }
  // False when `timeout` (real time) passed first; an infinite timeout waits forever.
  template <class Predicate>
  bool WaitFor(Mutex* mu, absl::Duration timeout, Predicate ready)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (timeout >= kForever) {  // also keeps wait_for clear of overflow
      Wait(mu, std::move(ready));
      return true;
    }
    std::unique_lock<std::mutex> lock(mu->native(), std::adopt_lock);
    const bool met = cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), ready);
    lock.release();
    return met;
  }
  void NotifyAll() { cv_.notify_all(); }

  // Timeouts this long (or infinite) wait without a deadline.
  static constexpr absl::Duration kForever = absl::Hours(24 * 365 * 100);

 private:
  std::condition_variable cv_;
};

// A test-and-test-and-set spin lock, for critical sections of a few hundred nanoseconds that
// never block or call user code (the idempotency store's shards). Uncontended, it costs one
// atomic exchange to lock and one store to unlock, against two atomic read-modify-writes and
// a function call each for std::mutex. A waiter spins on a plain load (no cache-line
// ping-pong), pausing, and yields the CPU after a short spin, so that a holder that was
// preempted gets to run. TSan sees its acquire/release pairs as it sees any atomics.
class ABSL_LOCKABLE SpinLock {
 public:
  SpinLock() = default;
  SpinLock(const SpinLock&) = delete;
  SpinLock& operator=(const SpinLock&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    // acquire: pairs with the release in Unlock; the last holder's writes happen-before the
    // critical section that follows.
    if (!locked_.exchange(true, std::memory_order_acquire)) return;
    LockSlow();
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    locked_.store(false, std::memory_order_release);  // release: pairs with Lock's acquire
  }

 private:
  void LockSlow() {
    int spins = 0;
    do {
      // relaxed: only a hint that the lock may be free; the exchange above acquires.
      while (locked_.load(std::memory_order_relaxed)) {
        if (spins < kSpinsBeforeYield) {
          ++spins;
#if defined(__x86_64__) || defined(__i386__)
          __builtin_ia32_pause();
#endif
        } else {
          std::this_thread::yield();
        }
      }
    } while (locked_.exchange(true, std::memory_order_acquire));
  }

  static constexpr int kSpinsBeforeYield = 100;
  std::atomic<bool> locked_{false};
};

class ABSL_SCOPED_LOCKABLE SpinLockHolder {
 public:
  explicit SpinLockHolder(SpinLock* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  SpinLockHolder(const SpinLockHolder&) = delete;
  SpinLockHolder& operator=(const SpinLockHolder&) = delete;
  ~SpinLockHolder() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }

 private:
  SpinLock* const mu_;
};

// A one-shot event: Notify once, wait any number of times from any thread.
class Notification {
 public:
  // Notifies under the lock: a waiter that wakes may destroy the notification at once.
  void Notify() {
    std::lock_guard<std::mutex> lock(mu_);
    notified_ = true;
    cv_.notify_all();
  }
  bool HasBeenNotified() {
    std::lock_guard<std::mutex> lock(mu_);
    return notified_;
  }
  void WaitForNotification() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return notified_; });
  }
  // False when `timeout` passed first. An infinite timeout waits forever.
  bool WaitForNotificationWithTimeout(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (timeout == absl::InfiniteDuration()) {
      cv_.wait(lock, [this] { return notified_; });
      return true;
    }
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return notified_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool notified_ = false;
};

}  // namespace keel::internal

#endif  // KEEL_INTERNAL_SYNC_H_
