// Test main for keel's suites: keel's log output is off unless KEEL_LOG_LEVEL asks for it,
// so tests are quiet by default.
#include <cstdlib>

#include "gtest/gtest.h"
#include "keel/logging.h"

int main(int argc, char** argv) {
  if (std::getenv("KEEL_LOG_LEVEL") == nullptr) keel::SetLogLevel(keel::LogLevel::kOff);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
