// Gzip: the decompression step of the remote-terms pipeline, with caps on both sides.
//
// A remote term's bytes may arrive gzip-compressed (RFC 1952), whatever the source says about
// it: an S3 object uploaded as `config.json.gz`, an HTTP body, a file. The pipeline detects
// gzip by its magic bytes `1f 8b` and decompresses before the decode hook runs. Compressed
// data is untrusted: a few kilobytes can expand to gigabytes (a decompression bomb), so the
// decompressed size is capped and running past the cap is an error, never an out-of-memory
// crash. Every member's CRC32 and ISIZE are checked, so a corrupt or truncated download is
// `DataLoss` rather than a silently wrong value.
//
//   keel::fetchers::GunzipLimits limits{.max_decompressed_bytes = 64 << 20};
//   absl::StatusOr<std::string> plain = keel::fetchers::MaybeGunzip(body, limits);
//   if (!plain.ok()) return plain.status();  // DataLoss, ResourceExhausted, InvalidArgument
//   Decode(*plain);
//
// Input format: one or more gzip members back to back (what `cat a.gz b.gz` produces);
// their payloads are concatenated. Anything after the last member that is not the start of
// a further member (trailing garbage, zero padding from a tape or a block device) is
// `DataLoss`: keel publishes only bytes it can vouch for.
//
// Thread safety: thread-safe. The functions share no state; each call owns its zlib stream.
//
// Costs: one pass over the input, O(input + output). Gunzip keeps about 40 KB of zlib state
// (a 32 KB window). When the last member's ISIZE claims at most 64 times the input size, the
// output is first allocated at that size, so a well-formed single-member stream is allocated
// once, exactly; otherwise the output starts at 64 KB and doubles, and the returned string's
// capacity may then be up to twice its size. Either way the output never holds more than
// `max_decompressed_bytes + 1` bytes, so a bomb costs at most the cap in memory, plus the
// time to decompress that much. Gzip keeps about 256 KB of zlib state and allocates zlib's
// worst-case bound for the output (a little more than the input) once.
#ifndef KEEL_FETCHERS_GZIP_H_
#define KEEL_FETCHERS_GZIP_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace keel::fetchers {

// True when `bytes` start with the gzip magic `1f 8b`. Never allocates.
bool LooksGzipped(std::string_view bytes) noexcept;

// Caps on a Gunzip call; both must be > 0.
struct GunzipLimits {
  // An input longer than this is ResourceExhausted before anything is decompressed.
  size_t max_compressed_bytes = size_t{256} << 20;
  // An output that would be longer than this is ResourceExhausted, reported as soon as the
  // decompressor produces byte `max_decompressed_bytes + 1`.
  size_t max_decompressed_bytes = size_t{1} << 30;
};

// Decompresses a complete gzip stream (one or more concatenated members, RFC 1952) and
// returns the concatenated payloads, after checking each member's CRC32, ISIZE and, when
// present, header CRC. Errors: InvalidArgument when a limit is 0; ResourceExhausted when the
// input or the output exceeds its cap (the message names the cap and its value) or memory
// runs out; DataLoss when the input is not a gzip stream, is corrupt, is truncated, or has
// trailing bytes that do not start a further member (the message says which, and where).
absl::StatusOr<std::string> Gunzip(std::string_view compressed, const GunzipLimits& limits = {});

// Gunzips `bytes` when they look gzipped (LooksGzipped) and otherwise returns a copy of them
// unchanged: the pipeline's "gunzip, detected by magic bytes" step. Errors as Gunzip's;
// invalid limits are InvalidArgument even for bytes that are not gzipped.
absl::StatusOr<std::string> MaybeGunzip(std::string_view bytes, const GunzipLimits& limits = {});

// Compresses `plain` into one gzip member at `level` (1 = fastest, 9 = smallest). The header
// carries no name and a zero timestamp, so equal inputs give equal outputs. Errors:
// InvalidArgument when `level` is outside 1..9; ResourceExhausted when memory runs out.
absl::StatusOr<std::string> Gzip(std::string_view plain, int level = 6);

}  // namespace keel::fetchers

#endif  // KEEL_FETCHERS_GZIP_H_
