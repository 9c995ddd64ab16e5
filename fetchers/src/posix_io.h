// Internal to keel::fetchers: the POSIX file helpers the file fetcher, the last-known-good
// copy and keel::stores' file snapshot store share.
#ifndef KEEL_FETCHERS_SRC_POSIX_IO_H_
#define KEEL_FETCHERS_SRC_POSIX_IO_H_

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace keel::fetchers::internal {

// `errno` value `err` as a status naming `what`: NotFound for a missing path,
// PermissionDenied for EACCES/EPERM, Unavailable otherwise (I/O errors may pass).
absl::Status ErrnoToStatus(int err, const std::string& what);

// Reads up to `n` bytes into `buf`, retrying after EINTR and short reads: the count read (less
// than `n` only at end of file), or -1 with errno set.
ssize_t ReadUpTo(int fd, char* buf, size_t n);

// Replaces the file at `path` with `bytes` atomically: writes a fresh "<path>.tmp.XXXXXX"
// (mkstemp: O_EXCL, never follows a planted symlink) with permissions `mode`, flushes it to
// disk, renames it over `path` and flushes the directory (best effort). A crash, a kill or a
// power cut leaves the old file or the new one, never a mix; concurrent writers never mix
// their bytes (the last rename wins). On failure the temporary file is removed; one left by a
// killed process keeps its "<path>.tmp." prefix so that readers can recognise it.
// Blocking (write + two fsyncs): offload pool or a worker thread only.
absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes, mode_t mode);

}  // namespace keel::fetchers::internal

#endif  // KEEL_FETCHERS_SRC_POSIX_IO_H_
