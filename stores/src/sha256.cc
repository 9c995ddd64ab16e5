#include "sha256.h"

#include <algorithm>
#include <cstring>

namespace keel::internal {
namespace {

// FIPS 180-4 §4.2.2: the first 32 bits of the fractional parts of the cube roots of the first
// 64 primes.
constexpr uint32_t kRoundConstants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

// FIPS 180-4 §5.3.3: H(0), the first 32 bits of the fractional parts of the square roots of
// the first 8 primes.
constexpr std::array<uint32_t, 8> kInitialHash = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

constexpr size_t kBlockBytes = 64;

inline uint32_t RotateRight(uint32_t x, int n) noexcept { return (x >> n) | (x << (32 - n)); }

// The functions of FIPS 180-4 §4.1.2.
inline uint32_t Choose(uint32_t x, uint32_t y, uint32_t z) noexcept { return (x & y) ^ (~x & z); }
inline uint32_t Majority(uint32_t x, uint32_t y, uint32_t z) noexcept {
  return (x & y) ^ (x & z) ^ (y & z);
}
inline uint32_t BigSigma0(uint32_t x) noexcept {
  return RotateRight(x, 2) ^ RotateRight(x, 13) ^ RotateRight(x, 22);
}
inline uint32_t BigSigma1(uint32_t x) noexcept {
  return RotateRight(x, 6) ^ RotateRight(x, 11) ^ RotateRight(x, 25);
}
inline uint32_t SmallSigma0(uint32_t x) noexcept {
  return RotateRight(x, 7) ^ RotateRight(x, 18) ^ (x >> 3);
}
inline uint32_t SmallSigma1(uint32_t x) noexcept {
  return RotateRight(x, 17) ^ RotateRight(x, 19) ^ (x >> 10);
}

inline uint32_t LoadBigEndian32(const uint8_t* p) noexcept {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

inline void StoreBigEndian32(uint32_t x, uint8_t* p) noexcept {
  p[0] = static_cast<uint8_t>(x >> 24);
  p[1] = static_cast<uint8_t>(x >> 16);
  p[2] = static_cast<uint8_t>(x >> 8);
  p[3] = static_cast<uint8_t>(x);
}

// One step t of FIPS 180-4 §6.2.2 step 3. Instead of shifting the eight working variables
// down by one name (h = g, g = f, ..., a = T1 + T2), the caller rotates the names it passes,
// so only the two variables that change are written: `d` becomes e's successor (d + T1) and
// `h` becomes a's successor (T1 + T2).
inline void Step(uint32_t a, uint32_t b, uint32_t c, uint32_t& d, uint32_t e, uint32_t f,
                 uint32_t g, uint32_t& h, uint32_t constant_plus_word) noexcept {
  const uint32_t t1 = h + BigSigma1(e) + Choose(e, f, g) + constant_plus_word;
  const uint32_t t2 = BigSigma0(a) + Majority(a, b, c);
  d += t1;
  h = t1 + t2;
}

}  // namespace

Sha256::Sha256() noexcept { Reset(); }

void Sha256::Reset() noexcept {
  state_ = kInitialHash;
  buffered_ = 0;
  total_bytes_ = 0;
}

void Sha256::CompressBlocks(const uint8_t* blocks, size_t count) noexcept {
  uint32_t w[64];
  for (; count > 0; --count, blocks += kBlockBytes) {
    // Step 1: the message schedule.
    for (int t = 0; t < 16; ++t) w[t] = LoadBigEndian32(blocks + 4 * t);
    for (int t = 16; t < 64; ++t) {
      w[t] = SmallSigma1(w[t - 2]) + w[t - 7] + SmallSigma0(w[t - 15]) + w[t - 16];
    }
    // Step 2: the working variables.
    uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
    uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
    // Step 3: eight steps per iteration, after which the names are back in place.
    for (int t = 0; t < 64; t += 8) {
      Step(a, b, c, d, e, f, g, h, kRoundConstants[t] + w[t]);
      Step(h, a, b, c, d, e, f, g, kRoundConstants[t + 1] + w[t + 1]);
      Step(g, h, a, b, c, d, e, f, kRoundConstants[t + 2] + w[t + 2]);
      Step(f, g, h, a, b, c, d, e, kRoundConstants[t + 3] + w[t + 3]);
      Step(e, f, g, h, a, b, c, d, kRoundConstants[t + 4] + w[t + 4]);
      Step(d, e, f, g, h, a, b, c, kRoundConstants[t + 5] + w[t + 5]);
      Step(c, d, e, f, g, h, a, b, kRoundConstants[t + 6] + w[t + 6]);
      Step(b, c, d, e, f, g, h, a, kRoundConstants[t + 7] + w[t + 7]);
    }
    // Step 4: the next intermediate hash value.
    state_[0] += a;
    state_[1] += b;
    state_[2] += c;
    state_[3] += d;
    state_[4] += e;
    state_[5] += f;
    state_[6] += g;
    state_[7] += h;
  }
}

void Sha256::Update(std::string_view bytes) noexcept {
  if (bytes.empty()) return;  // and its data() may be null, which memcpy must not see
  const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data());
  size_t left = bytes.size();
  total_bytes_ += left;
  if (buffered_ > 0) {
    const size_t take = std::min(left, kBlockBytes - buffered_);
    std::memcpy(buffer_.data() + buffered_, p, take);
    buffered_ += take;
    p += take;
    left -= take;
    if (buffered_ < kBlockBytes) return;
    CompressBlocks(buffer_.data(), 1);
    buffered_ = 0;
  }
  // Whole blocks straight from the input, without copying them.
  const size_t whole = left / kBlockBytes;
  if (whole > 0) {
    CompressBlocks(p, whole);
    p += whole * kBlockBytes;
    left -= whole * kBlockBytes;
  }
  if (left > 0) {
    std::memcpy(buffer_.data(), p, left);
    buffered_ = left;
  }
}

Sha256Digest Sha256::Finish() noexcept {
  // FIPS 180-4 §5.1.1: a 1 bit, zeros up to 56 bytes into a block, then the length in bits as
  // a 64-bit big-endian integer. `buffered_` < 64 here, so the 0x80 byte always fits.
  const uint64_t total_bits = total_bytes_ * 8;
  buffer_[buffered_++] = 0x80;
  if (buffered_ > kBlockBytes - 8) {
    std::fill(buffer_.begin() + buffered_, buffer_.end(), 0);
    CompressBlocks(buffer_.data(), 1);
    buffered_ = 0;
  }
  std::fill(buffer_.begin() + buffered_, buffer_.end() - 8, 0);
  StoreBigEndian32(static_cast<uint32_t>(total_bits >> 32), buffer_.data() + kBlockBytes - 8);
  StoreBigEndian32(static_cast<uint32_t>(total_bits), buffer_.data() + kBlockBytes - 4);
  CompressBlocks(buffer_.data(), 1);

  Sha256Digest digest;
  for (int i = 0; i < 8; ++i) StoreBigEndian32(state_[i], digest.data() + 4 * i);
  Reset();
  return digest;
}

Sha256Digest Sha256Of(std::string_view bytes) noexcept {
  Sha256 hasher;
  hasher.Update(bytes);
  return hasher.Finish();
}

std::string ToHex(const Sha256Digest& digest) {
  static constexpr char kHexDigits[] = "0123456789abcdef";
  std::string hex(2 * digest.size(), '\0');
  for (size_t i = 0; i < digest.size(); ++i) {
    hex[2 * i] = kHexDigits[digest[i] >> 4];
    hex[2 * i + 1] = kHexDigits[digest[i] & 0x0f];
  }
  return hex;
}

}  // namespace keel::internal
