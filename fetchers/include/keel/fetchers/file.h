// File: a fetcher that reads a remote term's bytes from a local file.
//
// The file's version is its modification time, size and a hash of its content
// ("<mtime ns>:<size>:<hash>"). A fetch first looks at the modification time and size: when
// both match the version the term already holds, the answer is "not modified" and the file
// is not read. Otherwise the file is read whole, on the runtime's offload pool (the control
// thread never waits for a disk), up to the term's size cap.
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
// Errors: a missing file is NotFound, an unreadable one PermissionDenied, a directory
// InvalidArgument, a file larger than the cap ResourceExhausted (without reading it), other
// I/O errors Unavailable; each message names the path and the system's reason.
//
// Thread safety: the fetcher follows the Fetcher contract (control thread only).
#ifndef KEEL_FETCHERS_FILE_H_
#define KEEL_FETCHERS_FILE_H_

#include <memory>
#include <string>

#include "keel/fetchers/fetcher.h"

namespace keel::fetchers {

// A fetcher for the file at `path`. Validate() refuses an empty path.
std::unique_ptr<Fetcher> File(std::string path);

}  // namespace keel::fetchers

#endif  // KEEL_FETCHERS_FILE_H_
