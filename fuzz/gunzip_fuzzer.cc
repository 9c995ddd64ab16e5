// Fuzzes Gunzip with arbitrary bytes under a small output cap. Properties checked:
//   1. Gunzip never crashes and fails only with DataLoss or ResourceExhausted.
//   2. An OK output is at most the cap, and the input looked gzipped.
//   3. Round trip: Gzip of an OK output gunzips back to the same bytes.
//   4. The cap is exact: the same input with the cap set to the output's size succeeds, and
//      with one byte less it is ResourceExhausted.
//   5. MaybeGunzip agrees with Gunzip on gzipped input and returns other input unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "keel/fetchers/gzip.h"

namespace {

constexpr size_t kOutputCap = size_t{1} << 20;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "gunzip_fuzzer: property violated: %s\n", what);
    std::abort();
  }
}

bool IsExpectedFailure(const absl::Status& status) {
  return status.code() == absl::StatusCode::kDataLoss ||
         status.code() == absl::StatusCode::kResourceExhausted;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using keel::fetchers::GunzipLimits;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const GunzipLimits limits{.max_decompressed_bytes = kOutputCap};

  absl::StatusOr<std::string> plain = keel::fetchers::Gunzip(input, limits);

  absl::StatusOr<std::string> maybe = keel::fetchers::MaybeGunzip(input, limits);
  if (keel::fetchers::LooksGzipped(input)) {
    Check(maybe.status() == plain.status(), "MaybeGunzip and Gunzip disagree on status");
    Check(!plain.ok() || *maybe == *plain, "MaybeGunzip and Gunzip disagree on output");
  } else {
    Check(maybe.ok() && *maybe == input, "MaybeGunzip changed bytes that are not gzipped");
  }

  if (!plain.ok()) {
    Check(IsExpectedFailure(plain.status()), "Gunzip failed with an unexpected code");
    return 0;
  }
  Check(plain->size() <= kOutputCap, "Gunzip output exceeds max_decompressed_bytes");
  Check(keel::fetchers::LooksGzipped(input), "Gunzip accepted input without the magic");

  const int level = static_cast<int>(size % 9) + 1;
  absl::StatusOr<std::string> recompressed = keel::fetchers::Gzip(*plain, level);
  Check(recompressed.ok(), "Gzip failed on a Gunzip output");
  absl::StatusOr<std::string> round_trip = keel::fetchers::Gunzip(*recompressed, limits);
  Check(round_trip.ok() && *round_trip == *plain, "Gzip then Gunzip is not the identity");

  if (!plain->empty()) {
    absl::StatusOr<std::string> exact =
        keel::fetchers::Gunzip(input, {.max_decompressed_bytes = plain->size()});
    Check(exact.ok() && *exact == *plain, "a cap equal to the output size rejected it");
    absl::StatusOr<std::string> below =
        keel::fetchers::Gunzip(input, {.max_decompressed_bytes = plain->size() - 1});
    // A cap of 0 is an invalid limit, not a cap that is exceeded.
    Check(plain->size() == 1 ? below.status().code() == absl::StatusCode::kInvalidArgument
                             : below.status().code() == absl::StatusCode::kResourceExhausted,
          "a cap one below the output size did not reject it");
  }
  return 0;
}
