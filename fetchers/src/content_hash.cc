#include "content_hash.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace keel::fetchers::internal {
namespace {

// Odd 64-bit multipliers with well-spread bits (from the golden ratio and from sqrt(3)).
constexpr uint64_t kMulA = 0x9e3779b97f4a7c15ULL;
constexpr uint64_t kMulB = 0xbb67ae8584caa73bULL;

inline uint64_t Mix(uint64_t x) noexcept {
  x ^= x >> 32;
  x *= kMulA;
  x ^= x >> 29;
  x *= kMulB;
  x ^= x >> 32;
  return x;
}

inline uint64_t Load64(const char* p) noexcept {
  uint64_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
}

}  // namespace

uint64_t ContentHash(std::string_view bytes) noexcept {
  // Four independent lanes keep the multipliers busy in parallel; each absorbs one word per
  // round with a rotate-multiply step, and the lanes are mixed together at the end.
  uint64_t lane[4] = {kMulA, kMulB, kMulA ^ kMulB, ~kMulA};
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left >= 32) {
    for (int i = 0; i < 4; ++i) {
      uint64_t w = Load64(p + 8 * i);
      lane[i] = (lane[i] ^ w) * kMulA;
      lane[i] = (lane[i] << 31) | (lane[i] >> 33);
    }
    p += 32;
    left -= 32;
  }
  uint64_t h = bytes.size() * kMulB;
  for (uint64_t l : lane) h = Mix(h ^ l);
  while (left >= 8) {
    h = Mix(h ^ Load64(p));
    p += 8;
    left -= 8;
  }
  if (left > 0) {
    uint64_t tail = 0;
    std::memcpy(&tail, p, left);
    h = Mix(h ^ tail ^ (uint64_t{left} << 56));
  }
  return Mix(h);
}

std::string HashToHex(uint64_t hash) { return absl::StrFormat("%016x", hash); }

}  // namespace keel::fetchers::internal
