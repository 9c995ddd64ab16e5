// Fuzzes the decoder of a remote term's last-known-good copy (fetchers/src/last_known_good.h)
// with arbitrary bytes, and with valid copies cut or flipped. Properties checked:
//   1. Decoding never crashes and fails only with DataLoss or ResourceExhausted.
//   2. An OK copy encodes back to exactly the input bytes (the format has one spelling).
//   3. Round trip: a copy built from the input's pieces decodes to the same fields, every
//      proper prefix of its encoding is DataLoss, and one flipped bit anywhere is refused.
//   4. The body cap is exact: a copy whose body is longer than the cap is ResourceExhausted.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "fuzzer/FuzzedDataProvider.h"
#include "last_known_good.h"

namespace {

constexpr uint64_t kBodyCap = 4096;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "last_known_good_fuzzer: property violated: %s\n", what);
    std::abort();
  }
}

bool Refused(const absl::Status& status) {
  return status.code() == absl::StatusCode::kDataLoss ||
         status.code() == absl::StatusCode::kResourceExhausted;
}

bool SameFields(const keel::internal::LastKnownGood& a, const keel::internal::LastKnownGood& b) {
  return a.validators.etag == b.validators.etag &&
         a.validators.last_modified == b.validators.last_modified &&
         a.validators.version == b.validators.version && a.modified == b.modified &&
         a.body == b.body;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using keel::internal::DecodeLastKnownGood;
  using keel::internal::EncodeLastKnownGood;
  using keel::internal::LastKnownGood;
  const std::string what = "fuzz-input";
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  auto decoded = DecodeLastKnownGood(input, what, kBodyCap);
  if (decoded.ok()) {
    Check(EncodeLastKnownGood(*decoded) == input, "an accepted copy does not re-encode to itself");
    Check(decoded->body.size() <= kBodyCap, "an accepted body is over the cap");
  } else {
    Check(Refused(decoded.status()), "an unexpected error code");
  }

  FuzzedDataProvider provider(data, size);
  LastKnownGood copy;
  copy.validators.etag = provider.ConsumeRandomLengthString(64);
  copy.validators.last_modified = provider.ConsumeRandomLengthString(64);
  copy.validators.version = provider.ConsumeRandomLengthString(64);
  if (provider.ConsumeBool()) {
    copy.modified = absl::FromUnixNanos(provider.ConsumeIntegral<int64_t>());
  }
  size_t flip_at = provider.ConsumeIntegral<size_t>();
  uint8_t flip_bit = provider.ConsumeIntegralInRange<uint8_t>(0, 7);
  copy.body = provider.ConsumeRemainingBytesAsString();
  const std::string encoded = EncodeLastKnownGood(copy);

  auto round = DecodeLastKnownGood(encoded, what, kBodyCap);
  if (copy.body.size() > kBodyCap) {
    Check(round.status().code() == absl::StatusCode::kResourceExhausted,
          "a body over the cap was not ResourceExhausted");
  } else {
    Check(round.ok() && SameFields(*round, copy), "a valid copy did not round-trip");
  }
  for (size_t cut = 0; cut < encoded.size(); cut += 1 + encoded.size() / 64) {
    auto prefix = DecodeLastKnownGood(std::string_view(encoded).substr(0, cut), what, kBodyCap);
    Check(!prefix.ok() && Refused(prefix.status()), "a truncated copy was accepted");
  }
  std::string flipped = encoded;
  flipped[flip_at % flipped.size()] ^= static_cast<char>(1u << flip_bit);
  auto bad = DecodeLastKnownGood(flipped, what, uint64_t{1} << 40);
  Check(!bad.ok() && Refused(bad.status()), "a copy with a flipped bit was accepted");
  return 0;
}
