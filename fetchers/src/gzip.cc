// Gzip and Gunzip on zlib. zlib's return codes and messages are translated to absl::Status
// here, once; nothing zlib-specific leaves this file.
#include "keel/fetchers/gzip.h"

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace keel::fetchers {
namespace {

// zlib's avail_in and avail_out are 32-bit (uInt). Each inflate/deflate call sees at most
// this many bytes of input and of output room, so inputs and outputs beyond 4 GiB take the
// same code path as the 5 MB ones in the tests.
constexpr size_t kZlibStep = size_t{1} << 20;
static_assert(kZlibStep <= std::numeric_limits<uInt>::max());

// First output allocation when the trailer gives no usable size hint; later ones double.
constexpr size_t kFirstOutputChunk = size_t{64} << 10;

// The trailer's ISIZE is trusted as the first output size only when it claims at most this
// ratio to the input. Real payloads (JSON, CSV, tables, models) stay well below it; a larger
// claim is more often garbage (a truncated download's last four bytes, a forged trailer),
// and trusting it would let a few bad bytes allocate up to the cap before failing. Streams
// that really do compress better still decompress; their output grows by doubling.
constexpr size_t kMaxTrustedSizeHintRatio = 64;

// gzip's window: 32 KB (windowBits 15), plus 16 to select the gzip wrapper (RFC 1952) and
// reject zlib (RFC 1950) and raw deflate streams.
constexpr int kGzipWindowBits = 16 + MAX_WBITS;

// Translates the return code of zlib's stream set-up (`function`) for a `role` stream.
absl::Status ZlibInitStatus(int rc, const char* function, const char* role) {
  if (rc == Z_OK) return absl::OkStatus();
  if (rc == Z_MEM_ERROR) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory allocating the gzip ", role));
  }
  return absl::InternalError(
      absl::StrCat("zlib ", function, " failed with code ", rc, " (zlib ", zlibVersion(), ")"));
}

// Owns an inflate stream; inflateEnd runs on every path out of Gunzip.
class InflateStream {
 public:
  InflateStream() = default;
  InflateStream(const InflateStream&) = delete;
  InflateStream& operator=(const InflateStream&) = delete;
  ~InflateStream() {
    if (initialized_) inflateEnd(&stream_);
  }

  absl::Status Init() {
    const int rc = inflateInit2(&stream_, kGzipWindowBits);
    initialized_ = rc == Z_OK;
    return ZlibInitStatus(rc, "inflateInit2", "decompressor");
  }

  z_stream* get() { return &stream_; }

 private:
  z_stream stream_{};
  bool initialized_ = false;
};

// Owns a deflate stream; deflateEnd runs on every path out of Gzip.
class DeflateStream {
 public:
  DeflateStream() = default;
  DeflateStream(const DeflateStream&) = delete;
  DeflateStream& operator=(const DeflateStream&) = delete;
  ~DeflateStream() {
    if (initialized_) deflateEnd(&stream_);
  }

  absl::Status Init(int level) {
    const int rc = deflateInit2(&stream_, level, Z_DEFLATED, kGzipWindowBits, /*memLevel=*/8,
                                Z_DEFAULT_STRATEGY);
    initialized_ = rc == Z_OK;
    return ZlibInitStatus(rc, "deflateInit2", "compressor");
  }

  z_stream* get() { return &stream_; }

 private:
  z_stream stream_{};
  bool initialized_ = false;
};

size_t SaturatingMul(size_t a, size_t b) {
  if (a != 0 && b > std::numeric_limits<size_t>::max() / a) {
    return std::numeric_limits<size_t>::max();
  }
  return a * b;
}

// Resizes `out` to exactly `new_size` bytes, keeping its first `used` bytes. std::string's
// own growth may round a request up to twice the old capacity, which would let a bomb
// allocate up to twice the cap; building a fresh string of the exact size keeps the bound.
absl::Status ResizeExactly(std::string& out, size_t used, size_t new_size) {
  if (new_size <= out.capacity()) {
    out.resize(new_size);
    return absl::OkStatus();
  }
  try {
    std::string grown;
    grown.reserve(new_size);
    grown.append(out.data(), used);
    grown.resize(new_size);
    out.swap(grown);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory allocating an output of ", new_size, " bytes"));
  } catch (const std::length_error&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("an output of ", new_size, " bytes exceeds std::string::max_size()"));
  }
  return absl::OkStatus();
}

// ISIZE of the last member (its payload length mod 2^32, little-endian in the last four
// bytes), used only as a first guess of the output size.
size_t TrailerSizeHint(std::string_view compressed) {
  if (compressed.size() < 18) return 0;  // 10-byte header + empty deflate + 8-byte trailer
  const auto* tail =
      reinterpret_cast<const unsigned char*>(compressed.data() + compressed.size() - 4);
  return static_cast<size_t>(tail[0]) | static_cast<size_t>(tail[1]) << 8 |
         static_cast<size_t>(tail[2]) << 16 | static_cast<size_t>(tail[3]) << 24;
}

// True when `rest` can be the start of a further member: the magic, or its first byte alone
// (a member truncated after one byte, reported as truncation rather than as garbage).
bool StartsAMember(std::string_view rest) {
  if (rest.empty() || static_cast<unsigned char>(rest[0]) != 0x1f) return false;
  return rest.size() == 1 || static_cast<unsigned char>(rest[1]) == 0x8b;
}

// Turns zlib's Z_DATA_ERROR message into one that says what was expected.
std::string DescribeDataError(const char* zlib_message, size_t member_start) {
  const absl::string_view message = zlib_message != nullptr ? zlib_message : "unknown error";
  const std::string member = absl::StrCat("the member starting at offset ", member_start);
  if (message == "incorrect data check") {
    return absl::StrCat("CRC mismatch: the CRC32 in the trailer of ", member,
                        " does not match its decompressed data");
  }
  if (message == "incorrect length check") {
    return absl::StrCat("ISIZE mismatch: the length in the trailer of ", member,
                        " does not match its decompressed size");
  }
  if (message == "header crc mismatch") {
    return absl::StrCat("header CRC mismatch in ", member);
  }
  if (message == "incorrect header check") {
    return absl::StrCat("not a gzip stream (bad magic) at ", member, ", expected 1f 8b");
  }
  if (message == "unknown compression method") {
    return absl::StrCat("unknown compression method in ", member, ", expected 8 (deflate)");
  }
  if (message == "unknown header flags set") {
    return absl::StrCat("reserved header flags set in ", member, ", expected them zero");
  }
  return absl::StrCat("invalid deflate data in ", member, ": ", message);
}

absl::Status ValidateLimits(const GunzipLimits& limits) {
  if (limits.max_compressed_bytes == 0) {
    return absl::InvalidArgumentError("GunzipLimits.max_compressed_bytes must be > 0, got 0");
  }
  if (limits.max_decompressed_bytes == 0) {
    return absl::InvalidArgumentError("GunzipLimits.max_decompressed_bytes must be > 0, got 0");
  }
  return absl::OkStatus();
}

absl::Status DecompressedCapExceeded(size_t cap) {
  return absl::ResourceExhaustedError(
      absl::StrCat("gzip stream decompresses to more than max_decompressed_bytes (", cap,
                   " bytes); refusing to continue"));
}

}  // namespace

bool LooksGzipped(std::string_view bytes) noexcept {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
         static_cast<unsigned char>(bytes[1]) == 0x8b;
}

absl::StatusOr<std::string> Gunzip(std::string_view compressed, const GunzipLimits& limits) {
  if (absl::Status valid = ValidateLimits(limits); !valid.ok()) return valid;
  if (compressed.size() > limits.max_compressed_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("gzip input of ", compressed.size(),
                                                     " bytes exceeds max_compressed_bytes (",
                                                     limits.max_compressed_bytes, " bytes)"));
  }
  if (compressed.empty()) {
    return absl::DataLossError("not a gzip stream (empty input), expected magic 1f 8b");
  }
  if (!StartsAMember(compressed)) {
    return absl::DataLossError(
        "not a gzip stream (bad magic), expected the input to start with 1f 8b");
  }

  InflateStream inflater;
  if (absl::Status init = inflater.Init(); !init.ok()) return init;
  z_stream* const zs = inflater.get();

  const size_t cap = limits.max_decompressed_bytes;
  // The output may hold one byte past the cap: producing that byte proves the cap is
  // exceeded, while a stream of exactly `cap` bytes still fits.
  const size_t room_limit = cap == std::numeric_limits<size_t>::max() ? cap : cap + 1;

  std::string out;
  size_t produced = 0;
  size_t hint = TrailerSizeHint(compressed);
  if (hint > SaturatingMul(compressed.size(), kMaxTrustedSizeHintRatio)) hint = 0;
  if (absl::Status sized = ResizeExactly(out, 0, std::min(hint, room_limit)); !sized.ok()) {
    return sized;
  }

  size_t fed = 0;           // bytes of `compressed` handed to zlib so far
  size_t member_start = 0;  // offset of the member being decompressed
  for (;;) {
    if (zs->avail_in == 0 && fed < compressed.size()) {
      const size_t step = std::min(compressed.size() - fed, kZlibStep);
      zs->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data() + fed));
      zs->avail_in = static_cast<uInt>(step);
      fed += step;
    }
    // The room may be 0: zlib still parses headers and trailers then, so an empty payload
    // allocates nothing, and the output grows only when zlib says it needs room.
    const size_t room = std::min(out.size() - produced, kZlibStep);
    zs->next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    zs->avail_out = static_cast<uInt>(room);

    const int rc = inflate(zs, Z_NO_FLUSH);
    produced += room - zs->avail_out;
    if (produced > cap) return DecompressedCapExceeded(cap);
    const size_t consumed = fed - zs->avail_in;

    switch (rc) {
      case Z_OK:
        break;
      case Z_STREAM_END: {
        const std::string_view rest = compressed.substr(consumed);
        if (rest.empty()) {
          out.resize(produced);
          return out;
        }
        if (!StartsAMember(rest)) {
          return absl::DataLossError(absl::StrCat(
              "trailing garbage: ", rest.size(), " bytes after the gzip member ending at offset ",
              consumed, " do not start a further member, expected end of input or magic 1f 8b"));
        }
        member_start = consumed;
        if (inflateReset(zs) != Z_OK) {
          return absl::InternalError("zlib inflateReset failed between gzip members");
        }
        break;
      }
      case Z_BUF_ERROR:
        // No progress was possible. Without output room, grow and retry: the cap check
        // above guarantees out.size() < room_limit here, so this always grows. With room,
        // zlib needs more input, and input is refilled whenever zlib has consumed it all:
        // the stream ends early.
        if (zs->avail_out == 0) {
          if (produced == out.size()) {
            const size_t grown = std::min(room_limit, std::max(kFirstOutputChunk, out.size() * 2));
            if (absl::Status sized = ResizeExactly(out, produced, grown); !sized.ok()) {
              return sized;
            }
          }
          break;
        }
        return absl::DataLossError(absl::StrCat(
            "truncated gzip stream after ", compressed.size(),
            " bytes: the member starting at offset ", member_start,
            " needs more input (expected the rest of the member, through its 8-byte trailer)"));
      case Z_DATA_ERROR:
        return absl::DataLossError(absl::StrCat("corrupt gzip stream near byte ", consumed, ": ",
                                                DescribeDataError(zs->msg, member_start)));
      case Z_NEED_DICT:
        return absl::DataLossError(
            absl::StrCat("corrupt gzip stream: the member starting at offset ", member_start,
                         " asks for a preset dictionary, which gzip does not allow"));
      case Z_MEM_ERROR:
        return absl::ResourceExhaustedError("out of memory inside the gzip decompressor");
      default:
        return absl::InternalError(absl::StrCat("zlib inflate failed with code ", rc, ": ",
                                                zs->msg != nullptr ? zs->msg : "no message"));
    }
  }
}

absl::StatusOr<std::string> MaybeGunzip(std::string_view bytes, const GunzipLimits& limits) {
  if (absl::Status valid = ValidateLimits(limits); !valid.ok()) return valid;
  if (LooksGzipped(bytes)) return Gunzip(bytes, limits);
  try {
    return std::string(bytes);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory copying ", bytes.size(), " bytes that are not gzipped"));
  }
}

absl::StatusOr<std::string> Gzip(std::string_view plain, int level) {
  if (level < 1 || level > 9) {
    return absl::InvalidArgumentError(absl::StrCat("gzip level must be in 1..9, got ", level));
  }
  DeflateStream deflater;
  if (absl::Status init = deflater.Init(level); !init.ok()) return init;
  z_stream* const zs = deflater.get();

  std::string out;
  size_t produced = 0;
  // deflateBound is zlib's worst case for the whole input (uLong is 64-bit on LP64), so one
  // allocation normally suffices; the loop still grows if it ever does not.
  if (absl::Status sized =
          ResizeExactly(out, 0, deflateBound(zs, static_cast<uLong>(plain.size())));
      !sized.ok()) {
    return sized;
  }

  size_t fed = 0;
  for (;;) {
    if (zs->avail_in == 0 && fed < plain.size()) {
      const size_t step = std::min(plain.size() - fed, kZlibStep);
      zs->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(plain.data() + fed));
      zs->avail_in = static_cast<uInt>(step);
      fed += step;
    }
    if (produced == out.size()) {
      if (absl::Status sized =
              ResizeExactly(out, produced, std::max(kFirstOutputChunk, out.size() * 2));
          !sized.ok()) {
        return sized;
      }
    }
    const size_t room = std::min(out.size() - produced, kZlibStep);
    zs->next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    zs->avail_out = static_cast<uInt>(room);

    const int flush = fed == plain.size() ? Z_FINISH : Z_NO_FLUSH;
    const int rc = deflate(zs, flush);
    produced += room - zs->avail_out;
    if (rc == Z_STREAM_END) {
      out.resize(produced);
      return out;
    }
    if (rc != Z_OK) {
      // Z_BUF_ERROR cannot happen: every call has output room and either input or Z_FINISH.
      return absl::InternalError(absl::StrCat("zlib deflate failed with code ", rc, ": ",
                                              zs->msg != nullptr ? zs->msg : "no message"));
    }
  }
}

}  // namespace keel::fetchers
