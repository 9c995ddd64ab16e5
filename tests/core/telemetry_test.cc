#include "keel/telemetry.h"

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace keel {
namespace {

Span NamedSpan(std::string name) {
  Span span;
  span.name = std::move(name);
  return span;
}

TEST(TelemetryTest, ListenersReceiveSpansWithTimesOutcomeAndAttributes) {
  ManualClock clock;
  Telemetry telemetry;
  std::vector<Span> seen;
  telemetry.Subscribe([&](const Span& s) { seen.push_back(s); });
  {
    SpanScope span(telemetry, clock, "keel.term.update");
    span.AddAttribute("term", "pricing");
    clock.Advance(absl::Milliseconds(12));
    span.SetOutcome("updated");
  }
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].name, "keel.term.update");
  EXPECT_EQ(seen[0].outcome, "updated");
  EXPECT_EQ(seen[0].stop - seen[0].start, std::chrono::milliseconds(12));
  EXPECT_EQ(seen[0].Attribute("term"), "pricing");
  EXPECT_EQ(seen[0].Attribute("missing"), "");
}

TEST(TelemetryTest, OutcomeDefaultsToOk) {
  ManualClock clock;
  Telemetry telemetry;
  std::string outcome;
  telemetry.Subscribe([&](const Span& s) { outcome = s.outcome; });
  { SpanScope span(telemetry, clock, "x"); }
  EXPECT_EQ(outcome, "ok");
}

TEST(TelemetryTest, UnsubscribedListenersStopReceiving) {
  ManualClock clock;
  Telemetry telemetry;
  int a = 0, b = 0;
  auto id_a = telemetry.Subscribe([&](const Span&) { ++a; });
  telemetry.Subscribe([&](const Span&) { ++b; });
  telemetry.Emit(NamedSpan("one"));
  telemetry.Unsubscribe(id_a);
  telemetry.Unsubscribe(9999);  // unknown ids are ignored
  telemetry.Emit(NamedSpan("two"));
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 2);
}

TEST(TelemetryTest, AThrowingListenerIsCountedAndDoesNotStopOthers) {
  Telemetry telemetry;
  int after = 0;
  telemetry.Subscribe([](const Span&) { throw std::runtime_error("listener bug"); });
  telemetry.Subscribe([&](const Span&) { ++after; });
  telemetry.Emit(NamedSpan("x"));
  EXPECT_EQ(after, 1);
  EXPECT_EQ(telemetry.ListenerExceptionsRelaxed(), 1u);
}

TEST(TelemetryTest, WithoutListenersScopesAreInactiveAndDropAttributes) {
  ManualClock clock;
  Telemetry telemetry;
  EXPECT_FALSE(telemetry.HasListeners());
  SpanScope span(telemetry, clock, "x");
  EXPECT_FALSE(span.active());
  span.AddAttribute("k", "v");  // no effect, no crash
}

}  // namespace
}  // namespace keel
