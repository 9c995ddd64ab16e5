#include "keel/logging.h"

#include <cctype>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "log.h"
#include "spdlog/sinks/base_sink.h"
#include "spdlog/sinks/stdout_color_sinks.h"

namespace keel {
namespace {

spdlog::level::level_enum ToSpd(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace:
      return spdlog::level::trace;
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarn:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
    case LogLevel::kOff:
      return spdlog::level::off;
  }
  return spdlog::level::warn;
}

LogLevel FromSpd(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
      return LogLevel::kTrace;
    case spdlog::level::debug:
      return LogLevel::kDebug;
    case spdlog::level::info:
      return LogLevel::kInfo;
    case spdlog::level::warn:
      return LogLevel::kWarn;
    case spdlog::level::err:
    case spdlog::level::critical:
      return LogLevel::kError;
    default:
      return LogLevel::kOff;
  }
}

// keel's one sink: forwards each line to the user's sink when one is installed, else to
// stderr. base_sink serialises sink_it_ with its mutex; Replace takes the same mutex, so a
// sink is never swapped while a line is being written.
class DispatchSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  DispatchSink() : stderr_(std::make_shared<spdlog::sinks::stderr_color_sink_mt>()) {
    stderr_->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [keel] [%l] %v");
  }

  void Replace(LogSink sink) {
    std::lock_guard<std::mutex> lock(mutex_);
    user_ = std::move(sink);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (!user_) {
      stderr_->log(msg);
      return;
    }
    try {
      user_(FromSpd(msg.level), std::string_view(msg.payload.data(), msg.payload.size()));
    } catch (...) {
      // A throwing sink must not take keel down; the line is lost.
    }
  }
  void flush_() override {
    if (!user_) stderr_->flush();
  }

 private:
  std::shared_ptr<spdlog::sinks::sink> stderr_;
  LogSink user_;
};

struct LoggerHolder {
  LoggerHolder() : sink(std::make_shared<DispatchSink>()) {
    logger = std::make_shared<spdlog::logger>("keel", sink);
    LogLevel level = LogLevel::kWarn;
    if (const char* env = std::getenv("KEEL_LOG_LEVEL")) ParseLogLevel(env, &level);
    logger->set_level(ToSpd(level));
  }
  std::shared_ptr<DispatchSink> sink;
  std::shared_ptr<spdlog::logger> logger;
};

LoggerHolder& Holder() {
  static LoggerHolder* const holder = new LoggerHolder();  // never destroyed: used at exit
  return *holder;
}

}  // namespace

namespace internal {
spdlog::logger& Log() { return *Holder().logger; }
}  // namespace internal

void SetLogSink(LogSink sink) { Holder().sink->Replace(std::move(sink)); }

void SetLogLevel(LogLevel level) { Holder().logger->set_level(ToSpd(level)); }

LogLevel GetLogLevel() { return FromSpd(Holder().logger->level()); }

bool ParseLogLevel(std::string_view text, LogLevel* level) {
  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "trace")
    *level = LogLevel::kTrace;
  else if (lower == "debug")
    *level = LogLevel::kDebug;
  else if (lower == "info")
    *level = LogLevel::kInfo;
  else if (lower == "warn" || lower == "warning")
    *level = LogLevel::kWarn;
  else if (lower == "error")
    *level = LogLevel::kError;
  else if (lower == "off")
    *level = LogLevel::kOff;
  else
    return false;
  return true;
}

}  // namespace keel
