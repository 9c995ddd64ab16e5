// keel's RCU runtime: per-thread registration with liburcu (memb flavour) and the reclaimer
// thread that destroys retired values after a grace period.
#include "keel/config.h"
#if KEEL_RCU_INLINE_READS && !defined(_LGPL_SOURCE)
#define _LGPL_SOURCE  // liburcu's read side inlined here too, as in the guards
#endif
#include <pthread.h>
#include <urcu/urcu-memb.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <new>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "keel/internal/rcu_read.h"
#include "keel/rcu_cell.h"
#include "log.h"

#if defined(__SANITIZE_THREAD__)
#define KEEL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KEEL_TSAN 1
#endif
#endif

#ifdef KEEL_TSAN
// liburcu's grace period is built on sys_membarrier and per-thread counters that
// ThreadSanitizer cannot see. Every read section's end is a release on this address and the
// end of every grace period an acquire on it, which is exactly the ordering liburcu provides:
// a read section that ended before synchronize_rcu returned happens-before the reclamation.
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
namespace {
char tsan_grace_period_sync;
}
#define KEEL_TSAN_READ_END() __tsan_release(&tsan_grace_period_sync)
#define KEEL_TSAN_GRACE_PERIOD_END() __tsan_acquire(&tsan_grace_period_sync)
#else
#define KEEL_TSAN_READ_END() ((void)0)
#define KEEL_TSAN_GRACE_PERIOD_END() ((void)0)
#endif

namespace keel {
namespace internal {
namespace {

// Unregisters the thread from liburcu when it exits. Created on a thread's first read.
struct ThreadRegistration {
  ~ThreadRegistration() {
    if (rcu_thread_state == kRcuRegistered) {
      urcu_memb_unregister_thread();
      rcu_thread_state = kRcuTornDown;
    }
  }
};
thread_local ThreadRegistration thread_registration;

// Set while the reclaimer destroys values: RcuSynchronize from a destructor would wait on
// itself.
thread_local bool in_reclaimer = false;

// The reclaimer: one thread, started on the first retire, that takes every value retired so
// far as a batch, waits for one grace period, and destroys the batch.
class Reclaimer {
 public:
  static Reclaimer& Get() {
    static Reclaimer* const reclaimer = new Reclaimer();  // never destroyed: used at exit
    return *reclaimer;
  }

  void Retire(void* ptr, void (*destroy)(void*)) {
    std::unique_lock<std::mutex> lock(mu_);
    pending_.push_back({ptr, destroy});
    ++retired_;
    EnsureThreadLocked();
    lock.unlock();
    cv_.notify_one();
  }

  // Waits until everything retired before the call is destroyed.
  bool WaitReclaimed(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t target = retired_;
    if (reclaimed_ >= target) return true;
    EnsureThreadLocked();
    cv_.notify_one();
    auto done = [&] { return reclaimed_ >= target; };
    if (timeout == absl::InfiniteDuration()) {
      done_cv_.wait(lock, done);
      return true;
    }
    return done_cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), done);
  }

  RcuReclaimStats Stats() {
    RcuReclaimStats stats;
    std::lock_guard<std::mutex> lock(mu_);
    stats.retired = retired_;
    stats.reclaimed = reclaimed_;
    stats.grace_periods = grace_periods_;
    return stats;
  }

  // fork(): the child has no reclaimer thread; it starts a new one on its next retire.
  // PrepareFork holds mu_ across the fork, so the queue and counters are consistent in the
  // child. The condition variables, though, still count the parent's reclaimer thread as a
  // waiter, and signalling them in the child would wait forever for a thread that does not
  // exist there: the child gets fresh ones.
  //
  // A batch in flight (taken from the queue, waiting out its grace period or being destroyed)
  // would vanish with the reclaimer thread, and liburcu's grace-period lock might go with it,
  // so PrepareFork waits for the batch to finish first. Not when the forking thread holds a
  // read section itself: the grace period would wait for it, so the fork would never happen.
  // (The README says that a child of such a fork cannot use keel.)
  void PrepareFork() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!RcuInReadSection()) {
      done_cv_.wait(lock, [this] { return !batch_in_flight_; });
    }
    lock.release();  // mu_ stays locked across the fork
  }
  void ParentAfterFork() { mu_.unlock(); }
  void ChildAfterFork() {
    new (&cv_) std::condition_variable();
    new (&done_cv_) std::condition_variable();
    thread_running_ = false;
    batch_in_flight_ = false;
    mu_.unlock();
  }

 private:
  struct Retired {
    void* ptr;
    void (*destroy)(void*);
  };

  Reclaimer() {
    pthread_atfork([] { Get().PrepareFork(); }, [] { Get().ParentAfterFork(); },
                   [] { Get().ChildAfterFork(); });
  }

  void EnsureThreadLocked() {
    if (thread_running_) return;
    thread_running_ = true;
    std::thread([this] { Run(); }).detach();  // lives for the process
  }

  void Run() {
    std::vector<Retired> batch;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !pending_.empty(); });
        batch.swap(pending_);
        batch_in_flight_ = true;
      }
      // Every reader that could have loaded a pointer in `batch` entered its read section
      // before the pointer was unpublished; the grace period waits for all of them to leave.
      urcu_memb_synchronize_rcu();
      KEEL_TSAN_GRACE_PERIOD_END();
      in_reclaimer = true;
      for (const Retired& r : batch) r.destroy(r.ptr);
      in_reclaimer = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        reclaimed_ += batch.size();
        ++grace_periods_;
        batch_in_flight_ = false;
      }
      batch.clear();
      done_cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;       // pending_ became non-empty
  std::condition_variable done_cv_;  // reclaimed_ grew
  std::vector<Retired> pending_;     // guarded by mu_
  uint64_t retired_ = 0;             // guarded by mu_
  uint64_t reclaimed_ = 0;           // guarded by mu_
  uint64_t grace_periods_ = 0;       // guarded by mu_
  bool thread_running_ = false;      // guarded by mu_
  bool batch_in_flight_ = false;     // guarded by mu_: a batch is between swap and reclaimed
};

}  // namespace

// Read sections held by a thread whose registration was torn down (see RcuReadEnterSlow).
thread_local int transient_depth = 0;

void RcuReadEnterSlow() noexcept {
  if (rcu_thread_state == kRcuTornDown) {
    // The thread is exiting and keel's registration is gone (a read from a later
    // thread_local destructor): register while it holds sections.
    if (transient_depth++ == 0) urcu_memb_register_thread();
    urcu_memb_read_lock();
    return;
  }
  urcu_memb_register_thread();
  rcu_thread_state = kRcuRegistered;
  (void)&thread_registration;  // constructs the thread_local so its destructor unregisters
  urcu_memb_read_lock();
}

void RcuReadExitSlow() noexcept {
  urcu_memb_read_unlock();
  KEEL_TSAN_READ_END();
  if (--transient_depth == 0) urcu_memb_unregister_thread();
}

#if !KEEL_RCU_INLINE_READS
void RcuLockRegistered() noexcept { urcu_memb_read_lock(); }
void RcuUnlockRegistered() noexcept {
  KEEL_TSAN_READ_END();
  urcu_memb_read_unlock();
}
#endif

bool RcuInReadSection() noexcept {
  return rcu_thread_state != kRcuUnregistered && urcu_memb_read_ongoing();
}

void RcuRetire(void* ptr, void (*destroy)(void*)) noexcept {
  Reclaimer::Get().Retire(ptr, destroy);
}

}  // namespace internal

absl::Status RcuSynchronize(absl::Duration timeout) {
  if (internal::in_reclaimer) {
    return absl::FailedPreconditionError(
        "RcuSynchronize called from a value's destructor on the reclaimer thread; it would "
        "wait for itself");
  }
  if (internal::RcuInReadSection()) {
    return absl::FailedPreconditionError(
        "RcuSynchronize called while holding a read guard; the grace period would never end. "
        "Release the guard (or pin the value) first");
  }
  if (!internal::Reclaimer::Get().WaitReclaimed(timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("RcuSynchronize: retired values were not reclaimed within ",
                     absl::FormatDuration(timeout), "; a thread may be holding a read guard"));
  }
  return absl::OkStatus();
}

RcuReclaimStats GetRcuReclaimStats() noexcept { return internal::Reclaimer::Get().Stats(); }

}  // namespace keel
