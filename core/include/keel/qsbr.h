// QsbrThread: opt-in quiescent-state-based reads of RcuCell, for threads that run a loop.
//
// `RcuCell<T>::Read()` marks the start and end of every read section in thread-local state
// so that the reclaimer knows when a reader is done. A thread that runs a loop (a request
// loop, an event loop, a worker pulling from a queue) already has natural points where it
// holds no value from any cell: between two requests. QSBR (quiescent-state-based
// reclamation, liburcu's `qsbr` flavour) lets such a thread say so once per loop instead of
// once per read. The thread registers by constructing a `QsbrThread`; `ReadQsbr(qsbr)` is
// then nothing but the loads that find the value (the cell's pointer, acquire, and the
// value's address in the node it points to), with no thread-local write, no barrier and no
// liburcu call; and the thread calls `Quiescent()` between requests, or goes offline around
// blocking calls. A value retired from any cell is destroyed only after every registered
// thread has passed a quiescent state or gone offline.
//
//   keel::QsbrThread qsbr;                      // this thread now reads in QSBR mode (online)
//   for (;;) {
//     Request request;
//     {
//       keel::QsbrThread::OfflineScope idle(qsbr);   // blocking: offline, holds no guard
//       request = queue.Pop();
//     }
//     for (const Item& item : request.items) {
//       if (auto cfg = config.ReadQsbr(qsbr)) Respond(item, cfg->price_for(item.sku));
//     }
//     qsbr.Quiescent();                         // no QsbrGuard of this thread is alive here
//   }
//
// Thread safety: thread-hostile. A QsbrThread belongs to the thread that constructed it:
// every method, its destruction and every `ReadQsbr` that names it happen on that thread. At
// most one QsbrThread per thread at a time. Other threads' publishes, reads and RcuSynchronize
// calls run concurrently with it as usual.
//
// Memory ordering: `ReadQsbr()` is an acquire load that pairs with the release exchange in
// `Publish()`, as in `Read()`. A value a guard showed is destroyed only after a QSBR grace
// period that started after the value was unpublished, and such a grace period ends only once
// the thread has announced a quiescent state (or gone offline) after it started; liburcu
// issues a full barrier (`cmm_smp_mb`) before that announcement, so every access made through
// the guard happens-before the value's destruction. A `Quiescent()` with no grace period
// started since the last announcement has nothing to announce and returns without a barrier.
//
// Lifetime: a `QsbrGuard` returned by `ReadQsbr` keeps its value alive until its owning
// thread's next `Quiescent()`, `Offline()` (or `OfflineScope`), or the QsbrThread's
// destruction, whichever comes first; the guard must be destroyed before that point.
// With the build option KEEL_QSBR_GUARD_CHECKS (on in Debug builds) keel counts live guards
// per thread and aborts with a message when one is alive at those points. Retired values are
// destroyed on keel's reclaimer thread after a `memb` grace period and, once a QsbrThread has been
// constructed in the process, a QSBR grace period. `RcuSynchronize()` covers QSBR readers too.
//
// Progress: `ReadQsbr()` is wait-free (two loads). `Quiescent()` is wait-free: a load and a
// compare when no grace period is waiting, otherwise full barriers and at most one futex wake.
// `Offline()` and `Online()` issue full barriers (`Offline()` also a possible futex wake).
// Constructing and destroying a QsbrThread take liburcu's registry lock (blocking, briefly).
//
// Hazard: the reclaimer waits for every registered, online thread. A thread that blocks (I/O,
// a lock, a condition variable, sleep) while online, or that stays online and never calls
// `Quiescent()`, stalls the reclamation of every RcuCell in the process: retired values pile
// up (memory grows) and `RcuSynchronize()` waits (or times out), while reads and publishes
// keep working. Go offline around anything that blocks, and announce a quiescent state at
// least every few milliseconds. `RcuSynchronize()` is refused (FailedPrecondition) on an
// online QSBR thread. `Read()` and `Pin()` keep working on a QSBR thread, online or offline;
// use `Pin()` for a value held across a blocking call. After `fork()`, a child that keeps
// using keel may create QsbrThreads only if no thread of the parent was online in QSBR mode
// at the fork (liburcu keeps the parent's registrations, and a grace period would wait for
// threads that do not exist in the child); a child that creates none is unaffected.
//
// Costs (bench/rcu_cell_bench.cc, g++ 12 -O2, 2 cores at 2.1 GHz, medians, a quiescent state
// announced every 1024 reads and included): `ReadQsbr()` costs 0.33 ns on one thread and 0.17
// ns per read with two threads (wall time), against 0.31 / 0.16 ns for a raw acquire load of a
// pointer that is never freed (1.1x) and 2.0 / 0.95 ns for `Read()`; the same (0.34 / 0.17
// ns) with a writer republishing every 10 ms. `Quiescent()` costs 1.5 ns when no grace period
// waits (a call into keel, then liburcu's counter compare).
#ifndef KEEL_QSBR_H_
#define KEEL_QSBR_H_

#include "keel/config.h"

namespace keel {

class QsbrThread;

namespace internal {

// This thread's QSBR state, as keel tracks it. Touched only by QsbrThread's methods and, with
// KEEL_QSBR_GUARD_CHECKS, by the QSBR guards; never by a read otherwise.
struct QsbrThreadState {
  const QsbrThread* owner = nullptr;  // the thread's QsbrThread; null when not registered
  bool online = false;                // registered and online (liburcu's ctr is non-zero)
  int live_guards = 0;                // QsbrGuards alive on the thread (KEEL_QSBR_GUARD_CHECKS)
};
inline constinit thread_local QsbrThreadState qsbr_state;

// keel's out-of-line wrappers around liburcu's `urcu_qsbr_*` calls (core/src/rcu.cc).
void QsbrRegister(const QsbrThread* thread) noexcept;
void QsbrUnregister(const QsbrThread* thread) noexcept;
void QsbrQuiescent() noexcept;
void QsbrOffline() noexcept;
void QsbrOnline() noexcept;

// Guard checks, compiled in when keel is configured with KEEL_QSBR_GUARD_CHECKS (the default
// for Debug builds). A build-wide switch rather than NDEBUG: these inline functions must be
// the same in every translation unit of a program.
[[noreturn]] void QsbrCheckFailed(const char* what) noexcept;  // prints `what`, then aborts

inline void QsbrAssertNoLiveGuard() noexcept {
#if KEEL_QSBR_GUARD_CHECKS
  if (qsbr_state.live_guards != 0) {
    QsbrCheckFailed(
        "a QsbrGuard is alive at a QSBR quiescent point (Quiescent(), Offline() or "
        "~QsbrThread()); destroy every QsbrGuard first");
  }
#endif
}
inline void QsbrAssertCanRead([[maybe_unused]] const QsbrThread& thread) noexcept {
#if KEEL_QSBR_GUARD_CHECKS
  if (qsbr_state.owner != &thread) {
    QsbrCheckFailed("ReadQsbr() with a QsbrThread that is not the calling thread's");
  }
  if (!qsbr_state.online) QsbrCheckFailed("ReadQsbr() on an offline thread; call Online() first");
#endif
}
inline void QsbrGuardBegin() noexcept {
#if KEEL_QSBR_GUARD_CHECKS
  ++qsbr_state.live_guards;
#endif
}
inline void QsbrGuardEnd() noexcept {
#if KEEL_QSBR_GUARD_CHECKS
  --qsbr_state.live_guards;
#endif
}

}  // namespace internal

// Registers the calling thread as a QSBR reader for its lifetime. Not copyable, not movable;
// keep it as a local of the thread's main function, so that it is destroyed before the
// thread exits (a thread that exits still registered and online stalls reclamation forever).
class QsbrThread {
 public:
  // Registers the calling thread with liburcu's QSBR flavour; the thread starts online.
  // Blocking (liburcu's registry lock, briefly). Aborts if the calling thread already has a
  // QsbrThread.
  QsbrThread() noexcept { internal::QsbrRegister(this); }

  // Unregisters the thread (which takes it offline). Same thread as the constructor (aborts
  // otherwise); no QsbrGuard of this thread may be alive.
  ~QsbrThread() {
    internal::QsbrAssertNoLiveGuard();
    internal::QsbrUnregister(this);
  }

  QsbrThread(const QsbrThread&) = delete;
  QsbrThread& operator=(const QsbrThread&) = delete;

  // Announces that the thread holds no QSBR reference: every QsbrGuard it obtained so far is
  // gone, so the values they showed may be reclaimed. Owning thread only; no QsbrGuard of
  // this thread may be alive. Wait-free. A no-op while the thread is offline (it stays
  // offline).
  void Quiescent() noexcept {
    internal::QsbrAssertNoLiveGuard();
    internal::QsbrQuiescent();
  }

  // Takes the thread offline: until `Online()`, grace periods do not wait for it, and it
  // must not call `ReadQsbr()`. Call it before blocking. Owning thread only; no QsbrGuard of
  // this thread may be alive. A no-op when already offline.
  void Offline() noexcept {
    internal::QsbrAssertNoLiveGuard();
    internal::QsbrOffline();
  }

  // Brings the thread back online, allowing `ReadQsbr()` again. Owning thread only. A no-op
  // when already online.
  void Online() noexcept { internal::QsbrOnline(); }

  // True when the thread is online. Owning thread only.
  bool IsOnline() const noexcept { return internal::qsbr_state.online; }

  // Takes the thread offline for a scope (around a blocking call) and restores its previous
  // state at the end of the scope. Same contract as `Offline()`; owning thread only. Nests.
  class [[nodiscard]] OfflineScope {
   public:
    explicit OfflineScope(QsbrThread& thread) noexcept
        : thread_(thread), was_online_(thread.IsOnline()) {
      if (was_online_) thread_.Offline();
    }
    ~OfflineScope() {
      if (was_online_) thread_.Online();
    }
    OfflineScope(const OfflineScope&) = delete;
    OfflineScope& operator=(const OfflineScope&) = delete;

   private:
    QsbrThread& thread_;
    const bool was_online_;
  };
};

}  // namespace keel

#endif  // KEEL_QSBR_H_
