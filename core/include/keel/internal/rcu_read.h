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

// Slow path of RcuReadEnter: registers the thread (or, when torn down, registers it for this
// section only) and enters the read section. Returns true when the section is transient.
bool RcuReadEnterSlow() noexcept;
// Leaves a transient section and unregisters the thread again.
void RcuReadExitTransient() noexcept;

#if KEEL_RCU_INLINE_READS
inline void RcuLockRegistered() noexcept { urcu_memb_read_lock(); }
inline void RcuUnlockRegistered() noexcept { urcu_memb_read_unlock(); }
#else
void RcuLockRegistered() noexcept;
void RcuUnlockRegistered() noexcept;
#endif

// Enters a read-side critical section, registering the calling thread on first use.
// Returns the value to pass to RcuReadExit. Wait-free after the first call on a thread.
inline bool RcuReadEnter() noexcept {
  if (__builtin_expect(rcu_thread_state != kRcuRegistered, 0)) return RcuReadEnterSlow();
  RcuLockRegistered();
  return false;
}

// Leaves the section entered by the matching RcuReadEnter, on the same thread.
inline void RcuReadExit(bool transient) noexcept {
  if (__builtin_expect(transient, 0)) {
    RcuReadExitTransient();
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
