// Internal to keel::fetchers: the content hash that tells whether fetched bytes changed.
//
// A 64-bit non-cryptographic hash over 8-byte words, written for speed on large values (a
// 64 MB body hashes in a few tens of milliseconds on the offload pool). It detects changes;
// it does not authenticate: an adversary who controls the source can make two bodies collide,
// but such a source can send any bytes anyway. Stable across processes and builds, so it may
// be written to disk.
#ifndef KEEL_FETCHERS_SRC_CONTENT_HASH_H_
#define KEEL_FETCHERS_SRC_CONTENT_HASH_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace keel::fetchers::internal {

// The hash of `bytes`; the length is mixed in, so a prefix hashes differently.
uint64_t ContentHash(std::string_view bytes) noexcept;

// `hash` as 16 lower-case hex digits.
std::string HashToHex(uint64_t hash);

}  // namespace keel::fetchers::internal

#endif  // KEEL_FETCHERS_SRC_CONTENT_HASH_H_
