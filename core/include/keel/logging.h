// Logging: where keel's own log lines go.
//
// keel logs through spdlog internally (warnings about failed refreshes, a callback that
// threw, a loop that lags). By default lines at `kWarn` and above go to stderr. A service
// routes them into its own logging by installing a sink:
//
//   keel::SetLogSink([](keel::LogLevel level, std::string_view message) {
//     my_logger.Log(ToMyLevel(level), message);
//   });
//   keel::SetLogLevel(keel::LogLevel::kInfo);
//
// The environment variable `KEEL_LOG_LEVEL` (trace, debug, info, warn, error, off) sets the
// initial level. keel's test main turns logging off unless that variable is set.
//
// Thread safety: all functions are thread-safe. The sink may be called from any keel thread
// (control thread, offload pool, reclaimer), one line at a time; it must not throw (what it
// throws is swallowed), should not block for long, and must not call SetLogSink (it would
// wait for itself).
#ifndef KEEL_LOGGING_H_
#define KEEL_LOGGING_H_

#include <functional>
#include <string_view>

namespace keel {

enum class LogLevel { kTrace, kDebug, kInfo, kWarn, kError, kOff };

using LogSink = std::function<void(LogLevel level, std::string_view message)>;

// Sends keel's log lines to `sink`; an empty sink restores the default (stderr).
void SetLogSink(LogSink sink);

// Lines below `level` are dropped before they are formatted.
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();

// Parses "trace", "debug", "info", "warn", "error" or "off" (any case); false otherwise.
bool ParseLogLevel(std::string_view text, LogLevel* level);

}  // namespace keel

#endif  // KEEL_LOGGING_H_
