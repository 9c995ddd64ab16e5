// keel's RCU runtime: per-thread registration with liburcu (memb flavour, automatic; qsbr
// flavour, through QsbrThread) and the reclaimer thread that destroys retired values after a
// grace period of each flavour in use.
//
// The two flavours live side by side: liburcu-memb and liburcu-qsbr export distinct
// `urcu_memb_*` / `urcu_qsbr_*` symbols and keep separate registries and grace-period
// counters. A value may be read through either, so the reclaimer waits for both.
#include "keel/config.h"
#if KEEL_RCU_INLINE_READS && !defined(_LGPL_SOURCE)
#define _LGPL_SOURCE  // liburcu's read side inlined here too, as in the guards
#endif
#include <pthread.h>
#include <urcu/urcu-memb.h>
#include <urcu/urcu-qsbr.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "keel/internal/rcu_read.h"
#include "keel/qsbr.h"
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
// ThreadSanitizer cannot see. Every read section's end (memb) and every quiescent state,
// offline transition and unregistration (qsbr) is a release on this address, and the end of
// every grace period an acquire on it, which is exactly the ordering liburcu provides: a read
// section that ended before synchronize_rcu returned happens-before the reclamation.
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
//
// Invariant (QSBR): a batch waits for a QSBR grace period whenever a QSBR reader might have
// loaded one of its pointers. QsbrThread's constructor sets `qsbr_readers_` under `mu_`
// before its thread can read; the reclaimer reads it under `mu_` when it takes the batch. A
// pointer is retired (under `mu_`) after it was unpublished, so if the reclaimer took the
// batch before a reader's registration set the flag, the unpublish happens-before that
// reader's first load, which therefore cannot return the retired pointer. (A flag in an
// atomic would need seq_cst fences on both sides of this store-buffering pattern, against
// the reader's acquire load; the mutex is already taken on both sides.)
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

  // Called by QsbrThread's constructor, after liburcu registered the thread and before it can
  // read: from now on every batch also waits for a QSBR grace period.
  void NoteQsbrReader() {
    std::lock_guard<std::mutex> lock(mu_);
    qsbr_readers_ = true;
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
  // (The README says that a child of such a fork cannot use keel.) Likewise when the forking
  // thread is an online QSBR reader: the batch's QSBR grace period would wait for it.
  //
  // QSBR in the child: liburcu keeps the parent's QSBR registrations, and a thread that was
  // online at the fork stays online there forever. When the forking thread is not a QSBR
  // reader, no QSBR reader exists in the child, so the child's reclaimer stops waiting for
  // QSBR grace periods until the child constructs a QsbrThread of its own (which, if a parent
  // thread was online at the fork, stalls reclamation: qsbr.h says so).
  void PrepareFork() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!RcuInReadSection() && !qsbr_state.online) {
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
    if (qsbr_state.owner == nullptr) qsbr_readers_ = false;
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
      bool wait_for_qsbr;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !pending_.empty(); });
        batch.swap(pending_);
        batch_in_flight_ = true;
        wait_for_qsbr = qsbr_readers_;  // see the invariant above
      }
      // Every reader that could have loaded a pointer in `batch` entered its read section
      // before the pointer was unpublished; the grace period waits for all of them to leave.
      urcu_memb_synchronize_rcu();
      // Likewise every online QSBR reader that could have loaded one: the QSBR grace period
      // waits until each has announced a quiescent state or gone offline.
      if (wait_for_qsbr) urcu_qsbr_synchronize_rcu();
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
  bool qsbr_readers_ = false;        // guarded by mu_: a QsbrThread was constructed
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

// QSBR. keel's `qsbr_state` mirrors liburcu's per-thread state so that misuse that liburcu
// would turn into a silent state change (Quiescent() on an offline thread brings it online;
// Online() on an online thread is a quiescent state) is a no-op instead.

void QsbrRegister(const QsbrThread* thread) noexcept {
  if (qsbr_state.owner != nullptr) {
    Log().critical(
        "keel::QsbrThread constructed on a thread that already has one; aborting (one "
        "QsbrThread per thread)");
    std::abort();
  }
  urcu_qsbr_register_thread();  // the thread is online from here
  qsbr_state.owner = thread;
  qsbr_state.online = true;
  Reclaimer::Get().NoteQsbrReader();
}

void QsbrUnregister(const QsbrThread* thread) noexcept {
  if (qsbr_state.owner != thread) {
    Log().critical(
        "keel::QsbrThread destroyed on a thread other than the one that constructed it; "
        "aborting (it would unregister the wrong thread)");
    std::abort();
  }
  KEEL_TSAN_READ_END();
  urcu_qsbr_unregister_thread();  // takes the thread offline first
  qsbr_state.owner = nullptr;
  qsbr_state.online = false;
}

void QsbrQuiescent() noexcept {
  if (!qsbr_state.online) return;
  KEEL_TSAN_READ_END();
  urcu_qsbr_quiescent_state();
}

void QsbrOffline() noexcept {
  if (!qsbr_state.online) return;
  KEEL_TSAN_READ_END();
  urcu_qsbr_thread_offline();
  qsbr_state.online = false;
}

void QsbrOnline() noexcept {
  if (qsbr_state.online || qsbr_state.owner == nullptr) return;
  urcu_qsbr_thread_online();
  qsbr_state.online = true;
}

void QsbrCheckFailed(const char* what) noexcept {
  std::fprintf(stderr, "keel: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

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
  if (internal::qsbr_state.online) {
    return absl::FailedPreconditionError(
        "RcuSynchronize called on an online QSBR thread; the QSBR grace period would wait for "
        "this thread. Take it offline first (QsbrThread::OfflineScope)");
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
