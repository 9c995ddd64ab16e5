// Fuzzes the decoder of FileSnapshotStore's files (stores/src/snapshot_codec.h) with arbitrary
// bytes, and with valid files cut or flipped. Properties checked:
//   1. Decoding never crashes and fails only with DataLoss or ResourceExhausted.
//   2. An OK snapshot encodes back to exactly the input bytes (the format has one spelling)
//      and its bytes are within the cap.
//   3. Round trip: a snapshot built from the input's pieces decodes to the same fields, every
//      proper prefix of its encoding is DataLoss, and one flipped bit anywhere is refused.
//   4. The cap is exact: a snapshot whose bytes are longer than the cap is ResourceExhausted.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "fuzzer/FuzzedDataProvider.h"
#include "keel/snapshot_store.h"
#include "snapshot_codec.h"

namespace {

constexpr uint64_t kCap = 4096;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "snapshot_fuzzer: property violated: %s\n", what);
    std::abort();
  }
}

bool Refused(const absl::Status& status) {
  return status.code() == absl::StatusCode::kDataLoss ||
         status.code() == absl::StatusCode::kResourceExhausted;
}

bool SameFields(const keel::Snapshot& a, const keel::Snapshot& b) {
  return a.schema_version == b.schema_version && a.sequence == b.sequence && a.bytes == b.bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using keel::Snapshot;
  using keel::internal::DecodeSnapshot;
  using keel::internal::EncodeSnapshot;
  const std::string what = "fuzz-input";
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  auto decoded = DecodeSnapshot(input, what, kCap);
  if (decoded.ok()) {
    Check(EncodeSnapshot(*decoded) == input, "an accepted snapshot does not re-encode to itself");
    Check(decoded->bytes.size() <= kCap, "accepted bytes are over the cap");
  } else {
    Check(Refused(decoded.status()), "an unexpected error code");
  }

  FuzzedDataProvider provider(data, size);
  Snapshot snapshot;
  snapshot.schema_version = provider.ConsumeIntegral<uint32_t>();
  snapshot.sequence = provider.ConsumeIntegral<uint64_t>();
  const size_t flip_at = provider.ConsumeIntegral<size_t>();
  const uint8_t flip_bit = provider.ConsumeIntegralInRange<uint8_t>(0, 7);
  snapshot.bytes = provider.ConsumeRemainingBytesAsString();
  const std::string encoded = EncodeSnapshot(snapshot);
  Check(encoded.size() == snapshot.bytes.size() + keel::internal::kSnapshotOverhead,
        "the encoding's overhead is not kSnapshotOverhead");

  auto round = DecodeSnapshot(encoded, what, kCap);
  if (snapshot.bytes.size() > kCap) {
    Check(round.status().code() == absl::StatusCode::kResourceExhausted,
          "bytes over the cap were not ResourceExhausted");
  } else {
    Check(round.ok() && SameFields(*round, snapshot), "a valid snapshot did not round-trip");
  }
  for (size_t cut = 0; cut < encoded.size(); cut += 1 + encoded.size() / 64) {
    auto prefix = DecodeSnapshot(std::string_view(encoded).substr(0, cut), what, UINT64_MAX);
    Check(!prefix.ok() && prefix.status().code() == absl::StatusCode::kDataLoss,
          "a truncated snapshot was accepted");
  }
  std::string flipped = encoded;
  flipped[flip_at % flipped.size()] ^= static_cast<char>(1u << flip_bit);
  auto bad = DecodeSnapshot(flipped, what, UINT64_MAX);
  Check(!bad.ok() && bad.status().code() == absl::StatusCode::kDataLoss,
        "a snapshot with a flipped bit was accepted");
  return 0;
}
