#include "keel/logging.h"

#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "keel/telemetry.h"

namespace keel {
namespace {

Span NamedSpan(std::string name) {
  Span span;
  span.name = std::move(name);
  return span;
}

// Restores the test main's quiet defaults after a test that changes them.
class LoggingTest : public testing::Test {
 protected:
  void TearDown() override {
    SetLogSink(nullptr);
    SetLogLevel(LogLevel::kOff);
  }
};

TEST_F(LoggingTest, AnInstalledSinkReceivesKeelsLinesAtOrAboveTheLevel) {
  std::vector<std::pair<LogLevel, std::string>> lines;
  SetLogSink([&](LogLevel level, std::string_view message) {
    lines.emplace_back(level, std::string(message));
  });
  SetLogLevel(LogLevel::kWarn);
  // A throwing telemetry listener makes keel log a warning.
  Telemetry telemetry;
  telemetry.Subscribe([](const Span&) { throw std::runtime_error("listener bug"); });
  telemetry.Emit(NamedSpan("keel.test"));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].first, LogLevel::kWarn);
  EXPECT_NE(lines[0].second.find("listener bug"), std::string::npos);

  SetLogLevel(LogLevel::kError);
  telemetry.Emit(NamedSpan("keel.test"));
  EXPECT_EQ(lines.size(), 1u) << "a warning passed an error-level filter";
  EXPECT_EQ(GetLogLevel(), LogLevel::kError);
}

TEST_F(LoggingTest, AThrowingSinkIsSwallowed) {
  SetLogSink([](LogLevel, std::string_view) { throw std::runtime_error("sink bug"); });
  SetLogLevel(LogLevel::kTrace);
  Telemetry telemetry;
  telemetry.Subscribe([](const Span&) { throw 1; });
  telemetry.Emit(NamedSpan("x"));  // must not throw out of keel
  SUCCEED();
}

TEST(ParseLogLevelTest, AcceptsKnownNamesInAnyCase) {
  LogLevel level = LogLevel::kOff;
  EXPECT_TRUE(ParseLogLevel("DEBUG", &level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_TRUE(ParseLogLevel("warning", &level));
  EXPECT_EQ(level, LogLevel::kWarn);
  EXPECT_FALSE(ParseLogLevel("loud", &level));
  EXPECT_EQ(level, LogLevel::kWarn) << "a failed parse must not change the level";
}

}  // namespace
}  // namespace keel
