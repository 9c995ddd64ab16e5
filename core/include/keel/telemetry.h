// Telemetry: spans that keel emits for its units of work, for a service to export.
//
// Every component reports what it did as a span: a name, a start and stop instant, an
// outcome, and string attributes (a term update is `keel.term.update` with outcome
// `updated`, `not_modified` or `failed` and its byte counts). A service subscribes once and
// forwards spans to its metrics or tracing system:
//
//   runtime->telemetry().Subscribe([](const keel::Span& span) {
//     metrics.Observe(span.name, span.outcome, span.stop - span.start);
//   });
//
// Components build spans with `SpanScope`, which emits on destruction:
//
//   keel::SpanScope span(telemetry, clock, "keel.term.update");
//   span.AddAttribute("term", name);
//   ...
//   span.SetOutcome("updated");
//
// Thread safety: thread-safe. Listeners are called on the thread that emits (the control
// thread, an offload thread, or a caller's thread), possibly concurrently; a listener must be
// thread-safe itself. What a listener throws is caught, counted and logged.
//
// Costs: with no listener, Emit is one pinned load; SpanScope checks HasListeners() first and
// skips building attributes when nobody listens.
#ifndef KEEL_TELEMETRY_H_
#define KEEL_TELEMETRY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "keel/clock.h"
#include "keel/internal/sync.h"
#include "keel/rcu_cell.h"

namespace keel {

struct Span {
  std::string name;
  Instant start;
  Instant stop;
  std::string outcome;
  std::vector<std::pair<std::string, std::string>> attributes;

  // The attribute's value, or "" when absent.
  std::string_view Attribute(std::string_view key) const;
};

using SpanListener = std::function<void(const Span&)>;

class Telemetry {
 public:
  using SubscriptionId = uint64_t;

  Telemetry() = default;
  Telemetry(const Telemetry&) = delete;
  Telemetry& operator=(const Telemetry&) = delete;

  // Adds a listener; spans emitted after this returns reach it. Any thread.
  SubscriptionId Subscribe(SpanListener listener);
  // Removes a listener: spans emitted after this returns do not reach it (an Emit already
  // under way may still call it once). Unknown ids are ignored. Any thread.
  void Unsubscribe(SubscriptionId id);

  // Calls every listener with `span`. Never throws. Any thread; must not hold a read guard
  // (listeners may block).
  void Emit(const Span& span) noexcept;

  // True when at least one listener is subscribed. Wait-free.
  bool HasListeners() const noexcept;

  // How many times a listener threw. Relaxed counter.
  uint64_t ListenerExceptionsRelaxed() const noexcept {
    return listener_exceptions_.load(std::memory_order_relaxed);
  }

 private:
  using Listeners = std::vector<std::pair<SubscriptionId, std::shared_ptr<const SpanListener>>>;

  internal::Mutex write_mu_;  // serialises Subscribe/Unsubscribe (copy, modify, publish)
  SubscriptionId next_id_ ABSL_GUARDED_BY(write_mu_) = 1;
  RcuCell<Listeners> listeners_;
  std::atomic<uint64_t> listener_exceptions_{0};
};

// Builds one span and emits it when destroyed. Thread-compatible: one thread owns a scope.
class SpanScope {
 public:
  SpanScope(Telemetry& telemetry, const Clock& clock, std::string name);
  SpanScope(const SpanScope&) = delete;
  SpanScope& operator=(const SpanScope&) = delete;
  ~SpanScope();

  // The outcome reported when the scope ends ("ok" unless set).
  void SetOutcome(std::string outcome) { span_.outcome = std::move(outcome); }
  // Adds an attribute; a no-op when nobody listens.
  void AddAttribute(std::string key, std::string value);
  // Whether anyone will see this span (attributes are dropped otherwise).
  bool active() const noexcept { return active_; }

 private:
  Telemetry& telemetry_;
  const Clock& clock_;
  bool active_;
  Span span_;
};

}  // namespace keel

#endif  // KEEL_TELEMETRY_H_
