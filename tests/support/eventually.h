// Eventually(pred): waits, bounded, for a condition that another thread makes true.
#ifndef KEEL_TESTS_SUPPORT_EVENTUALLY_H_
#define KEEL_TESTS_SUPPORT_EVENTUALLY_H_

#include <chrono>
#include <functional>
#include <thread>

namespace keel::testing {

// Polls `pred` every millisecond for up to 10 s; false if it never held.
inline bool Eventually(const std::function<bool()>& pred) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace keel::testing

#endif  // KEEL_TESTS_SUPPORT_EVENTUALLY_H_
