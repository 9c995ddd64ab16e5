// Internal to keel: the spdlog logger keel's own code writes to. Not installed.
#ifndef KEEL_SRC_LOG_H_
#define KEEL_SRC_LOG_H_

#include "spdlog/spdlog.h"

namespace keel::internal {

// keel's logger, named "keel". Never null; lives for the whole process.
spdlog::logger& Log();

}  // namespace keel::internal

#endif  // KEEL_SRC_LOG_H_
