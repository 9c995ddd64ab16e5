// Internal to keel::stores: the file format of FileSnapshotStore (keel/snapshot_store.h),
// exposed for its tests and fuzzer.
//
// Format, all integers little-endian:
//   "KEELSNP1"             8 bytes, magic and format version
//   u32 schema_version
//   u64 sequence
//   u64 length + bytes
//   u64 content hash of everything above (fetchers/src/content_hash.h)
#ifndef KEEL_STORES_SRC_SNAPSHOT_CODEC_H_
#define KEEL_STORES_SRC_SNAPSHOT_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "keel/snapshot_store.h"

namespace keel::internal {

// Bytes in a snapshot file besides the snapshot's own bytes.
inline constexpr uint64_t kSnapshotOverhead = 8 + 4 + 8 + 8 + 8;

// The snapshot as file bytes.
std::string EncodeSnapshot(const Snapshot& snapshot);

// Parses file bytes: DataLoss for anything but one whole, intact snapshot (bad magic, short,
// trailing bytes, checksum mismatch), ResourceExhausted when its bytes are longer than
// `max_bytes`. `what` names the file in messages. Does not check the sequence against a file
// name.
absl::StatusOr<Snapshot> DecodeSnapshot(std::string_view file, const std::string& what,
                                        uint64_t max_bytes);

}  // namespace keel::internal

#endif  // KEEL_STORES_SRC_SNAPSHOT_CODEC_H_
