// Internal to keel: the liburcu read-side entry points behind keel's read guards. Users never
// call these; they use `RcuCell<T>::Read()` and friends.
//
// With KEEL_RCU_INLINE_READS (the default build option) the fast path inlines liburcu's
// `memb` read lock and unlock (liburcu's _LGPL_SOURCE mode): a thread-local check, two
// thread-local stores and compiler barriers. This brings liburcu's prefixed macros (`cmm_*`,
// `caa_*`, `uatomic_*`) and LGPL inline code into the including translation unit; the README
// explains the licence note. With the option OFF, the guards call liburcu's exported
// functions through keel's out-of-line wrappers instead.
#ifndef KEEL_INTERNAL_RCU_READ_H_
#define KEEL_INTERNAL_RCU_READ_H_

#include "keel/config.h"

#if KEEL_RCU_INLINE_READS
#ifndef _LGPL_SOURCE
#define _LGPL_SOURCE
#define KEEL_DEFINED_LGPL_SOURCE_
#endif
// liburcu declares its thread-local reader state `thread_local` when compiled as C++, and
// g++ then checks for a dynamic initializer (a weak TLS init function) on every access:
// three extra loads and branches per read section. The variables are plain C `__thread`
// variables inside liburcu, so keel declares them as such: same symbol, direct %fs access.
// (If liburcu's headers were already included before this one, this has no effect.)
#include <urcu/tls-compat.h>
#if defined(URCU_TLS_STORAGE_CLASS) && defined(__GNUC__)
#undef URCU_TLS_STORAGE_CLASS
#define URCU_TLS_STORAGE_CLASS __thread
#endif
#include <urcu/urcu-memb.h>
#ifdef KEEL_DEFINED_LGPL_SOURCE_
#undef _LGPL_SOURCE
#undef KEEL_DEFINED_LGPL_SOURCE_
#endif
#endif  // KEEL_RCU_INLINE_READS

namespace keel::internal {

// This thread's registration with liburcu, as keel tracks it:
// 0: not registered yet; 1: registered (the fast path); 2: the thread is exiting and keel's
// registration was already torn down (a read from a later thread_local destructor).
enum : int { kRcuUnregistered = 0, kRcuRegistered = 1, kRcuTornDown = 2 };
inline constinit thread_local int rcu_thread_state = kRcuUnregistered;

// Slow path of RcuReadEnter: registers the thread for good (first read on the thread), or,
// when keel's registration was already torn down (thread exit), registers it for as long as
// it holds read sections; then enters the section.
void RcuReadEnterSlow() noexcept;
// Slow path of RcuReadExit (torn-down thread): leaves the section and unregisters the thread
// once its outermost section ends.
void RcuReadExitSlow() noexcept;

#if KEEL_RCU_INLINE_READS
inline void RcuLockRegistered() noexcept { urcu_memb_read_lock(); }
inline void RcuUnlockRegistered() noexcept { urcu_memb_read_unlock(); }
#else
void RcuLockRegistered() noexcept;
void RcuUnlockRegistered() noexcept;
#endif

// Enters a read-side critical section, registering the calling thread on first use.
// Wait-free after the first call on a thread.
inline void RcuReadEnter() noexcept {
  if (__builtin_expect(rcu_thread_state != kRcuRegistered, 0)) {
    RcuReadEnterSlow();
    return;
  }
  RcuLockRegistered();
}

// Leaves the section entered by the matching RcuReadEnter, on the same thread. The thread's
// state cannot change from registered while it holds a section (registration is torn down
// only by the thread's own exit), so the same test picks the same path as on entry.
inline void RcuReadExit() noexcept {
  if (__builtin_expect(rcu_thread_state != kRcuRegistered, 0)) {
    RcuReadExitSlow();
    return;
  }
  RcuUnlockRegistered();
}

// True when the calling thread is inside a read-side critical section.
bool RcuInReadSection() noexcept;

// Hands `ptr` to keel's reclaimer, which calls `destroy(ptr)` on its own thread after a
// grace period: once every read section that might still see `ptr` has ended. Never waits.
// Callable from any thread, inside a read section or not.
void RcuRetire(void* ptr, void (*destroy)(void*)) noexcept;

}  // namespace keel::internal

#endif  // KEEL_INTERNAL_RCU_READ_H_
