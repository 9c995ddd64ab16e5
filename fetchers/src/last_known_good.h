// Internal to keel::fetchers: the last-known-good copy of a remote term on disk.
//
// After each update a term writes the raw bytes it fetched and their validators to a file, so
// that a process that starts while the source is down can start from them (stale, but a
// value). The file is replaced atomically (written to a fresh "<path>.tmp.XXXXXX" with mode
// 0600, flushed to disk, renamed, the directory flushed), so a crash leaves the old copy or
// the new one, never a mix, and concurrent writers never mix their bytes.
//
// Format, all integers little-endian:
//   "KEELLKG1"                       8 bytes, magic and format version
//   u32 length + bytes               ETag
//   u32 length + bytes               Last-Modified
//   u32 length + bytes               the fetcher's version
//   u8 has_modified, i64 unix nanos  the source's modification time
//   u64 length + bytes               the body, as fetched (gzip stays compressed)
//   u64 content hash of everything above (content_hash.h)
// A short, oversized or corrupt file is DataLoss, with a message naming the path and the
// part that is wrong; a missing file is NotFound.
#ifndef KEEL_FETCHERS_SRC_LAST_KNOWN_GOOD_H_
#define KEEL_FETCHERS_SRC_LAST_KNOWN_GOOD_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "keel/fetchers/fetcher.h"

namespace keel::internal {

struct LastKnownGood {
  fetchers::Validators validators;
  std::optional<absl::Time> modified;
  std::string body;
};

// The copy as file bytes.
std::string EncodeLastKnownGood(const LastKnownGood& copy);
// Parses file bytes; DataLoss for anything but a whole, intact copy. `what` names the file
// in messages. A body longer than `max_body_bytes` is ResourceExhausted.
absl::StatusOr<LastKnownGood> DecodeLastKnownGood(std::string_view bytes, const std::string& what,
                                                  uint64_t max_body_bytes);

// Writes `copy` to `path` atomically (see above). Blocking: offload pool only.
absl::Status WriteLastKnownGood(const std::string& path, const LastKnownGood& copy);
// Reads the copy at `path`. Blocking: offload pool only.
absl::StatusOr<LastKnownGood> ReadLastKnownGood(const std::string& path, uint64_t max_body_bytes);

}  // namespace keel::internal

#endif  // KEEL_FETCHERS_SRC_LAST_KNOWN_GOOD_H_
