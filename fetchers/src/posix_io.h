// Internal to keel::fetchers: the POSIX file helpers the file fetcher and the last-known-good
// copy share.
#ifndef KEEL_FETCHERS_SRC_POSIX_IO_H_
#define KEEL_FETCHERS_SRC_POSIX_IO_H_

#include <sys/types.h>

#include <cstddef>
#include <string>

#include "absl/status/status.h"

namespace keel::fetchers::internal {

// `errno` value `err` as a status naming `what`: NotFound for a missing path,
// PermissionDenied for EACCES/EPERM, Unavailable otherwise (I/O errors may pass).
absl::Status ErrnoToStatus(int err, const std::string& what);

// Reads up to `n` bytes into `buf`, retrying after EINTR and short reads: the count read (less
// than `n` only at end of file), or -1 with errno set.
ssize_t ReadUpTo(int fd, char* buf, size_t n);

}  // namespace keel::fetchers::internal

#endif  // KEEL_FETCHERS_SRC_POSIX_IO_H_
