// Test support, not part of keel: records the spans a runtime emits under one name, so that a
// test can wait for the n-th one (an update that finishes on another thread) and inspect it.
#ifndef KEEL_TESTS_SUPPORT_SPAN_LOG_H_
#define KEEL_TESTS_SUPPORT_SPAN_LOG_H_

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "keel/telemetry.h"

namespace keel::testing {

class SpanLog {
 public:
  SpanLog(Telemetry& telemetry, std::string name) : telemetry_(telemetry), name_(std::move(name)) {
    id_ = telemetry_.Subscribe([this](const Span& span) {
      if (span.name != name_) return;
      std::lock_guard<std::mutex> lock(mu_);
      spans_.push_back(span);
      cv_.notify_all();
    });
  }
  ~SpanLog() { telemetry_.Unsubscribe(id_); }
  SpanLog(const SpanLog&) = delete;
  SpanLog& operator=(const SpanLog&) = delete;

  // Waits (up to 20 s of real time) until `n` spans were recorded and returns the n-th; a
  // test failure (and an empty span) when they do not come.
  Span Await(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    bool reached = cv_.wait_for(lock, std::chrono::seconds(20), [&] { return spans_.size() >= n; });
    EXPECT_TRUE(reached) << "only " << spans_.size() << " '" << name_ << "' spans, expected " << n;
    return reached ? spans_[n - 1] : Span{};
  }

  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return spans_.size();
  }

 private:
  Telemetry& telemetry_;
  const std::string name_;
  Telemetry::SubscriptionId id_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Span> spans_;
};

}  // namespace keel::testing

#endif  // KEEL_TESTS_SUPPORT_SPAN_LOG_H_
