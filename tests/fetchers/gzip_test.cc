#include "keel/fetchers/gzip.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

// Allocation tracking for the memory-bound tests: this binary replaces the global operator
// new, and while `g_tracking` is set it records the largest request and counts the large
// ones. The output buffer is the only large allocation Gunzip makes through operator new
// (zlib's own state comes from malloc and is about 40 KB).
namespace {
std::atomic<bool> g_tracking{false};
std::atomic<size_t> g_largest_allocation{0};
std::atomic<size_t> g_large_allocations{0};
constexpr size_t kLargeAllocation = size_t{64} << 10;

void* TrackedAllocate(size_t size) {
  if (g_tracking.load(std::memory_order_relaxed)) {
    size_t seen = g_largest_allocation.load(std::memory_order_relaxed);
    while (size > seen && !g_largest_allocation.compare_exchange_weak(seen, size)) {
    }
    if (size >= kLargeAllocation) g_large_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(size_t size) { return TrackedAllocate(size); }
void* operator new[](size_t size) { return TrackedAllocate(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace keel::fetchers {
namespace {

using ::testing::HasSubstr;

// Records the allocations made while it is alive (one tracker at a time).
class AllocationTracker {
 public:
  AllocationTracker() {
    g_largest_allocation.store(0);
    g_large_allocations.store(0);
    g_tracking.store(true);
  }
  ~AllocationTracker() { g_tracking.store(false); }
  size_t largest() const { return g_largest_allocation.load(); }
  size_t large_count() const { return g_large_allocations.load(); }
};

std::string RandomBytes(size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  return bytes;
}

// Text-like data that compresses well but not trivially.
std::string CompressibleBytes(size_t size) {
  std::string bytes;
  bytes.reserve(size);
  for (size_t line = 0; bytes.size() < size; ++line) {
    absl::StrAppend(&bytes, "sku-", line % 977, ",price=", (line * 7919) % 10007,
                    ",stock=", line % 13, "\n");
  }
  bytes.resize(size);
  return bytes;
}

std::string MustGzip(std::string_view plain, int level = 6) {
  absl::StatusOr<std::string> compressed = Gzip(plain, level);
  EXPECT_TRUE(compressed.ok()) << compressed.status();
  return compressed.ok() ? *std::move(compressed) : std::string();
}

// CRC32 (RFC 1952), bit by bit, for building headers with FHCRC by hand.
uint32_t Crc32(std::string_view bytes) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char byte : bytes) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// A member of `payload` whose header carries FEXTRA, FNAME, FCOMMENT and FHCRC.
std::string MemberWithFullHeader(std::string_view payload) {
  const std::string plain_member = MustGzip(payload);
  std::string header("\x1f\x8b\x08\x1e", 4);   // FHCRC | FEXTRA | FNAME | FCOMMENT
  header.append(plain_member, 4, 6);           // MTIME, XFL, OS
  const std::string extra = "KL\x04\x00keel";  // one subfield: id "KL", length 4
  header.push_back(static_cast<char>(extra.size()));
  header.push_back('\0');
  header += extra;
  header += std::string("config.json\0", 12);
  header += std::string("published by keel\0", 18);
  const uint32_t header_crc = Crc32(header);
  header.push_back(static_cast<char>(header_crc & 0xff));
  header.push_back(static_cast<char>((header_crc >> 8) & 0xff));
  return header + plain_member.substr(10);
}

TEST(LooksGzippedTest, IsTrueExactlyWhenTheBytesStartWithTheMagic) {
  EXPECT_FALSE(LooksGzipped(""));
  EXPECT_FALSE(LooksGzipped("\x1f"));
  EXPECT_TRUE(LooksGzipped("\x1f\x8b"));
  EXPECT_TRUE(LooksGzipped(MustGzip("hello")));
  EXPECT_FALSE(LooksGzipped("\x8b\x1f"));
  EXPECT_FALSE(LooksGzipped("{\"flag\": true}"));
}

TEST(GunzipTest, RoundTripsAnEmptyPayload) {
  const std::string compressed = MustGzip("");
  EXPECT_TRUE(LooksGzipped(compressed));
  absl::StatusOr<std::string> plain = Gunzip(compressed);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(*plain, "");
}

TEST(GunzipTest, RoundTripsASmallPayload) {
  absl::StatusOr<std::string> plain = Gunzip(MustGzip("hello, keel"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(*plain, "hello, keel");
}

TEST(GunzipTest, RoundTripsEveryLevel) {
  const std::string original = CompressibleBytes(100'000);
  for (int level = 1; level <= 9; ++level) {
    absl::StatusOr<std::string> plain = Gunzip(MustGzip(original, level));
    ASSERT_TRUE(plain.ok()) << "level " << level << ": " << plain.status();
    EXPECT_EQ(*plain, original) << "level " << level;
  }
}

TEST(GunzipTest, RoundTripsFiveMegabytesOfRandomBytes) {
  // Larger than one zlib step in both directions, so input and output are fed in chunks.
  const std::string original = RandomBytes(5 << 20, 1);
  const std::string compressed = MustGzip(original);
  absl::StatusOr<std::string> plain = Gunzip(compressed);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(*plain == original);
}

TEST(GunzipTest, RoundTripsFiveMegabytesOfCompressibleBytes) {
  const std::string original = CompressibleBytes(5 << 20);
  const std::string compressed = MustGzip(original);
  EXPECT_LT(compressed.size(), original.size() / 4);
  absl::StatusOr<std::string> plain = Gunzip(compressed);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(*plain == original);
}

TEST(GunzipTest, AllocatesTheOutputOnceForAWellFormedMember) {
  const std::string original = CompressibleBytes(5 << 20);
  const std::string compressed = MustGzip(original);
  AllocationTracker tracker;
  absl::StatusOr<std::string> plain = Gunzip(compressed);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(tracker.large_count(), 1u);
  EXPECT_EQ(tracker.largest(), original.size() + 1);  // std::string adds a terminator
}

TEST(GunzipTest, ConcatenatedMembersDecompressToTheConcatenatedPayloads) {
  const std::string big = CompressibleBytes(300'000);
  const std::string stream = MustGzip("first,") + MustGzip("") + MustGzip(big, 1) +
                             MustGzip(",last", 9) + MemberWithFullHeader("!");
  absl::StatusOr<std::string> plain = Gunzip(stream);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(*plain == "first," + big + ",last!");
}

TEST(GunzipTest, AcceptsAHeaderWithExtraFieldNameCommentAndHeaderCrc) {
  absl::StatusOr<std::string> plain = Gunzip(MemberWithFullHeader("flags=on"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(*plain, "flags=on");
}

TEST(GunzipTest, AWrongHeaderCrcIsDataLoss) {
  std::string member = MemberWithFullHeader("flags=on");
  const std::string comment("published by keel\0", 18);
  const size_t header_crc_offset = member.find(comment) + comment.size();
  member[header_crc_offset] ^= 0x01;
  absl::StatusOr<std::string> plain = Gunzip(member);
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(plain.status().message(), HasSubstr("header CRC mismatch"));
}

TEST(GunzipTest, ReservedHeaderFlagsAreDataLoss) {
  std::string member = MustGzip("x");
  member[3] = static_cast<char>(0x20);
  absl::StatusOr<std::string> plain = Gunzip(member);
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(plain.status().message(), HasSubstr("reserved header flags"));
}

TEST(GunzipTest, ACompressionMethodOtherThanDeflateIsDataLoss) {
  std::string member = MustGzip("x");
  member[2] = 7;
  absl::StatusOr<std::string> plain = Gunzip(member);
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(plain.status().message(), HasSubstr("compression method"));
}

TEST(GunzipTest, TruncatedStreamsAreDataLossAtEveryCutPoint) {
  const std::string first_member = MustGzip(CompressibleBytes(3000));
  const std::string stream = first_member + MemberWithFullHeader("tail");
  EXPECT_EQ(Gunzip("").status().code(), absl::StatusCode::kDataLoss);
  for (size_t cut = 1; cut < stream.size(); ++cut) {
    if (cut == first_member.size()) continue;  // the first member alone is complete
    absl::StatusOr<std::string> plain = Gunzip(std::string_view(stream).substr(0, cut));
    ASSERT_EQ(plain.status().code(), absl::StatusCode::kDataLoss) << "cut at " << cut;
    EXPECT_THAT(plain.status().message(),
                HasSubstr(absl::StrCat("truncated gzip stream after ", cut, " bytes")))
        << "cut at " << cut;
  }
}

TEST(GunzipTest, TruncatedLargeStreamsAreDataLoss) {
  const std::string stream = MustGzip(RandomBytes(5 << 20, 2));
  for (size_t cut = 1; cut < stream.size(); cut += stream.size() / 37) {
    absl::StatusOr<std::string> plain = Gunzip(std::string_view(stream).substr(0, cut));
    ASSERT_EQ(plain.status().code(), absl::StatusCode::kDataLoss) << "cut at " << cut;
  }
  absl::StatusOr<std::string> plain = Gunzip(std::string_view(stream).substr(0, stream.size() - 1));
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss);
}

TEST(GunzipTest, AFlippedBitAfterTheHeaderIsDataLossOrChangesNothing) {
  // The fixed header's MTIME, XFL and OS bytes are not covered by any check, so flips start
  // at the deflate data (offset 10) and run through the CRC32 and ISIZE trailer. A flip may
  // leave the output unchanged (a padding bit after the end-of-block code, or a match
  // distance moved to an identical earlier string); it must never yield different bytes.
  const std::string original = CompressibleBytes(2000);
  const std::string member = MustGzip(original);
  int data_loss = 0;
  int unchanged = 0;
  for (size_t offset = 10; offset < member.size(); ++offset) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string corrupt = member;
      corrupt[offset] = static_cast<char>(corrupt[offset] ^ (1 << bit));
      absl::StatusOr<std::string> plain = Gunzip(corrupt);
      if (plain.ok()) {
        ++unchanged;
        EXPECT_TRUE(*plain == original) << "offset " << offset << " bit " << bit;
      } else {
        ++data_loss;
        EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss)
            << "offset " << offset << " bit " << bit << ": " << plain.status();
      }
    }
  }
  EXPECT_GT(data_loss, 50 * unchanged);
}

TEST(GunzipTest, AFlippedCrcIsDataLossThatSaysCrcMismatch) {
  std::string member = MustGzip("the payload");
  member[member.size() - 8] ^= 0x40;
  absl::StatusOr<std::string> plain = Gunzip(member);
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(plain.status().message(), HasSubstr("CRC mismatch"));
}

TEST(GunzipTest, AWrongIsizeIsDataLoss) {
  std::string member = MustGzip("the payload");
  member[member.size() - 4] ^= 0x01;
  absl::StatusOr<std::string> plain = Gunzip(member);
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(plain.status().message(), HasSubstr("ISIZE mismatch"));
}

TEST(GunzipTest, BytesThatAreNotGzipAreDataLoss) {
  for (std::string_view input : {std::string_view("{\"a\": 1}"), std::string_view("\x1f\x8c"),
                                 std::string_view("\x78\x9c\x03\x00\x00\x00\x00\x01", 8)}) {
    absl::StatusOr<std::string> plain = Gunzip(input);
    EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss) << input;
    EXPECT_THAT(plain.status().message(), HasSubstr("not a gzip stream (bad magic)"));
  }
  absl::StatusOr<std::string> empty = Gunzip("");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(empty.status().message(), HasSubstr("empty input"));
}

TEST(GunzipTest, TrailingGarbageIsDataLoss) {
  const std::string member = MustGzip("value");
  absl::StatusOr<std::string> plain = Gunzip(member + "junk");
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(plain.status().message(), HasSubstr("trailing garbage: 4 bytes"));
  EXPECT_THAT(plain.status().message(), HasSubstr(absl::StrCat("offset ", member.size())));
}

TEST(GunzipTest, TrailingZeroPaddingIsDataLoss) {
  absl::StatusOr<std::string> plain = Gunzip(MustGzip("value") + std::string(512, '\0'));
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(plain.status().message(), HasSubstr("trailing garbage: 512 bytes"));
}

TEST(GunzipTest, ABombIsResourceExhaustedAndNeverAllocatesPastTheCap) {
  const std::string bomb = MustGzip(std::string(size_t{100} << 20, '\0'), 9);
  ASSERT_LT(bomb.size(), size_t{200} << 10);
  const GunzipLimits limits{.max_decompressed_bytes = size_t{10} << 20};
  AllocationTracker tracker;
  absl::StatusOr<std::string> plain = Gunzip(bomb, limits);
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plain.status().message(), HasSubstr("max_decompressed_bytes (10485760 bytes)"));
  // The output holds at most cap + 1 bytes; std::string allocates one more, a terminator.
  EXPECT_LE(tracker.largest(), limits.max_decompressed_bytes + 2);
}

TEST(GunzipTest, AMultiMemberBombIsResourceExhausted) {
  const std::string member = MustGzip(std::string(size_t{1} << 20, 'a'), 9);
  std::string bomb;
  for (int i = 0; i < 64; ++i) bomb += member;
  AllocationTracker tracker;
  absl::StatusOr<std::string> plain = Gunzip(bomb, {.max_decompressed_bytes = 10'000'000});
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_LE(tracker.largest(), 10'000'002u);
}

TEST(GunzipTest, ALyingIsizeDoesNotMakeGunzipAllocateTheCap) {
  std::string member = MustGzip(CompressibleBytes(1000));
  for (size_t i = member.size() - 4; i < member.size(); ++i) member[i] = '\xff';
  AllocationTracker tracker;
  absl::StatusOr<std::string> plain = Gunzip(member);  // default cap: 1 GiB
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(plain.status().message(), HasSubstr("ISIZE mismatch"));
  EXPECT_LT(tracker.largest(), size_t{1} << 20);
}

TEST(GunzipTest, TheDecompressedCapIsInclusive) {
  const std::string original = CompressibleBytes(70'000);
  const std::string compressed = MustGzip(original);
  absl::StatusOr<std::string> at_cap =
      Gunzip(compressed, {.max_decompressed_bytes = original.size()});
  ASSERT_TRUE(at_cap.ok()) << at_cap.status();
  EXPECT_EQ(*at_cap, original);
  absl::StatusOr<std::string> below_cap =
      Gunzip(compressed, {.max_decompressed_bytes = original.size() - 1});
  EXPECT_EQ(below_cap.status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<std::string> one_byte_cap = Gunzip(compressed, {.max_decompressed_bytes = 1});
  EXPECT_EQ(one_byte_cap.status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<std::string> empty = Gunzip(MustGzip(""), {.max_decompressed_bytes = 1});
  EXPECT_TRUE(empty.ok()) << empty.status();
}

TEST(GunzipTest, AnInputOverTheCompressedCapIsRejectedBeforeDecompressing) {
  const std::string compressed = MustGzip(CompressibleBytes(10'000));
  absl::StatusOr<std::string> over =
      Gunzip(compressed, {.max_compressed_bytes = compressed.size() - 1});
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.status().message(),
              HasSubstr(absl::StrCat("max_compressed_bytes (", compressed.size() - 1, " bytes)")));
  absl::StatusOr<std::string> at = Gunzip(compressed, {.max_compressed_bytes = compressed.size()});
  EXPECT_TRUE(at.ok()) << at.status();
  // The size check comes first: even garbage over the cap is ResourceExhausted.
  EXPECT_EQ(Gunzip("garbage", {.max_compressed_bytes = 3}).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(GunzipTest, ZeroLimitsAreInvalidArgument) {
  const std::string compressed = MustGzip("x");
  absl::StatusOr<std::string> no_input = Gunzip(compressed, {.max_compressed_bytes = 0});
  EXPECT_EQ(no_input.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_input.status().message(), HasSubstr("max_compressed_bytes must be > 0"));
  absl::StatusOr<std::string> no_output = Gunzip(compressed, {.max_decompressed_bytes = 0});
  EXPECT_EQ(no_output.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_output.status().message(), HasSubstr("max_decompressed_bytes must be > 0"));
}

TEST(MaybeGunzipTest, PassesBytesThatAreNotGzippedThroughUnchanged) {
  for (std::string_view input :
       {std::string_view(""), std::string_view("\x1f"), std::string_view("plain text")}) {
    absl::StatusOr<std::string> out = MaybeGunzip(input);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, input);
  }
}

TEST(MaybeGunzipTest, DecompressesGzippedBytes) {
  absl::StatusOr<std::string> out = MaybeGunzip(MustGzip("{\"enabled\": true}"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "{\"enabled\": true}");
}

TEST(MaybeGunzipTest, ReportsCorruptGzipAsDataLoss) {
  std::string member = MustGzip("{\"enabled\": true}");
  member[member.size() - 6] ^= 0x10;
  EXPECT_EQ(MaybeGunzip(member).status().code(), absl::StatusCode::kDataLoss);
}

TEST(MaybeGunzipTest, RejectsInvalidLimitsEvenForPlainBytes) {
  EXPECT_EQ(MaybeGunzip("plain", {.max_decompressed_bytes = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GzipTest, RejectsLevelsOutsideOneToNine) {
  for (int level : {-1, 0, 10}) {
    absl::StatusOr<std::string> out = Gzip("x", level);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << level;
    EXPECT_THAT(out.status().message(), HasSubstr(absl::StrCat("1..9, got ", level)));
  }
}

TEST(GzipTest, WritesADeterministicHeaderWithoutNameOrTimestamp) {
  const std::string first = MustGzip("same input");
  EXPECT_EQ(first, MustGzip("same input"));
  ASSERT_GE(first.size(), 10u);
  EXPECT_EQ(first.substr(0, 8), std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00", 8));
}

TEST(GunzipTest, ConcurrentCallsShareNoState) {
  // Each thread decompresses its own payload repeatedly; any shared state would show as a
  // wrong result here or as a race under ThreadSanitizer.
  std::vector<std::string> payloads;
  std::vector<std::string> members;
  for (int i = 0; i < 4; ++i) {
    payloads.push_back(RandomBytes(100'000 + i, 10 + i));
    members.push_back(MustGzip(payloads.back(), 1 + i));
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int round = 0; round < 20; ++round) {
        absl::StatusOr<std::string> plain = Gunzip(members[i]);
        if (!plain.ok() || *plain != payloads[i]) failures.fetch_add(1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace keel::fetchers
