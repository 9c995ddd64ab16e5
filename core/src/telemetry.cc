#include "keel/telemetry.h"

#include <exception>

#include "log.h"

namespace keel {

std::string_view Span::Attribute(std::string_view key) const {
  for (const auto& [k, v] : attributes) {
    if (k == key) return v;
  }
  return {};
}

Telemetry::SubscriptionId Telemetry::Subscribe(SpanListener listener) {
  internal::MutexLock lock(&write_mu_);
  const SubscriptionId id = next_id_++;
  auto current = listeners_.Pin();
  auto next = std::make_shared<Listeners>(current ? *current : Listeners{});
  next->emplace_back(id, std::make_shared<const SpanListener>(std::move(listener)));
  listeners_.Publish(std::move(next));
  return id;
}

void Telemetry::Unsubscribe(SubscriptionId id) {
  internal::MutexLock lock(&write_mu_);
  auto current = listeners_.Pin();
  if (!current) return;
  auto next = std::make_shared<Listeners>();
  for (const auto& entry : *current) {
    if (entry.first != id) next->push_back(entry);
  }
  listeners_.Publish(next->empty() ? nullptr : std::move(next));
}

bool Telemetry::HasListeners() const noexcept {
  auto guard = listeners_.Read();
  return guard && !guard->empty();
}

void Telemetry::Emit(const Span& span) noexcept {
  // Pinned, not guarded: listeners run outside any read section.
  auto listeners = listeners_.Pin();
  if (!listeners) return;
  for (const auto& [id, listener] : *listeners) {
    try {
      (*listener)(span);
    } catch (const std::exception& e) {
      listener_exceptions_.fetch_add(1, std::memory_order_relaxed);
      internal::Log().warn("telemetry listener {} threw on span {}: {}", id, span.name, e.what());
    } catch (...) {
      listener_exceptions_.fetch_add(1, std::memory_order_relaxed);
      internal::Log().warn("telemetry listener {} threw a non-exception on span {}", id, span.name);
    }
  }
}

SpanScope::SpanScope(Telemetry& telemetry, const Clock& clock, std::string name)
    : telemetry_(telemetry), clock_(clock), active_(telemetry.HasListeners()) {
  span_.name = std::move(name);
  span_.start = clock_.Now();
  span_.outcome = "ok";
}

SpanScope::~SpanScope() {
  if (!active_) return;
  span_.stop = clock_.Now();
  telemetry_.Emit(span_);
}

void SpanScope::AddAttribute(std::string key, std::string value) {
  if (active_) span_.attributes.emplace_back(std::move(key), std::move(value));
}

}  // namespace keel
