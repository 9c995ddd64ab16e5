// File: a fetcher that reads a remote term's bytes from a local file.
//
// The file's version is its modification time, size and a hash of its content
// ("<mtime ns>:<size>:<hash>"). A fetch first looks at the file's stamp (device, inode,
// modification and change times, size): when it matches the stamp of the value the term
// already holds, the answer is "not modified" and the file is not read. A stamp younger than
// `stamp_trust_window` (two seconds) is not trusted (a rewrite within the same clock tick
// could leave it unchanged), so such a file is read again, and the term's content hash finds
// it unchanged. Otherwise
// the file is read whole, on the runtime's offload pool (the control thread never waits for
// a disk), up to the term's size cap.
//
//   auto term = keel::RemoteTerm<Config>::Start(*runtime, {
//       .name = "pricing",
//       .fetcher = keel::fetchers::File("/etc/pricing.json"),
//       .decode = ParseConfig,
//       .refresh = absl::Seconds(10)});
//
// Writers should replace the file atomically (write a temporary file, then rename it over
// the old one). A file that changes while it is read (its size or modification time differs
// after the read) gives an Unavailable error for that fetch; the next fetch reads it again.
//
// Errors: a missing file is NotFound, an unreadable one PermissionDenied, a directory or
// anything else that is not a regular file (a FIFO, a device) InvalidArgument, a file larger than
// the cap ResourceExhausted (without reading it), other I/O errors Unavailable; each message names
// the path and the system's reason.
//
// Thread safety: the fetcher follows the Fetcher contract (control thread only).
#ifndef KEEL_FETCHERS_FILE_H_
#define KEEL_FETCHERS_FILE_H_

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "keel/fetchers/fetcher.h"

namespace keel::fetchers {

struct FileOptions {
  // The file to read. Required.
  std::string path = {};
  // A stamp (device, inode, times, size) younger than this is not trusted for the "not
  // modified" shortcut: the file is read and hashed instead. Two seconds covers filesystems
  // with whole-second timestamps; zero trusts every stamp (only for tests, or filesystems
  // with fine timestamps and writers that always rename).
  absl::Duration stamp_trust_window = absl::Seconds(2);
};

// A fetcher for the file at `options.path`. Validate() refuses an empty path and a negative
// window.
std::unique_ptr<Fetcher> File(FileOptions options);
// The same, with the default options.
std::unique_ptr<Fetcher> File(std::string path);

}  // namespace keel::fetchers

#endif  // KEEL_FETCHERS_FILE_H_
