// Fuzzes the HTTP cache rules with arbitrary header values, statuses and policies. Properties
// checked:
//   1. Nothing crashes, whatever the headers and the policy.
//   2. DecideRefresh's delay is within [min_interval, max_interval] whenever
//      min_interval <= max_interval, and is min_interval otherwise; the reason is never empty.
//   3. ParseCacheControl: a max-age is never both present and marked malformed, and lies in
//      [0, 2^31] seconds.
//   4. ParseAge and ParseRetryAfter never return a negative duration.
//   5. Round trip: ParseHttpDate(FormatHttpDate(t)) == t for any whole second t in the years
//      1970..9999, and any date ParseHttpDate accepts in the years 1..9999 formats and parses
//      back to itself.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "keel/fetchers/http_cache.h"

namespace {

// 9999-12-31T23:59:59Z in seconds since the epoch.
constexpr int64_t kLastSecondOfYear9999 = 253402300799;
constexpr int kStatuses[] = {200, 304, 429, 503};

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "http_cache_fuzzer: property violated: %s\n", what);
    std::abort();
  }
}

absl::Duration ConsumeDuration(FuzzedDataProvider& provider) {
  switch (provider.ConsumeIntegralInRange(0, 7)) {
    case 0:
      return absl::InfiniteDuration();
    case 1:
      return -absl::InfiniteDuration();
    case 2:
      return absl::Milliseconds(provider.ConsumeIntegral<int64_t>());
    default:
      return absl::Seconds(provider.ConsumeIntegralInRange<int64_t>(-10, 100000));
  }
}

// A header value: usually arbitrary bytes, sometimes a well-formed date near `now` so that
// the date arithmetic is reached.
std::string ConsumeHeader(FuzzedDataProvider& provider, absl::Time now) {
  if (provider.ConsumeIntegralInRange(0, 3) == 0) {
    return keel::fetchers::FormatHttpDate(
        now + absl::Seconds(provider.ConsumeIntegralInRange<int64_t>(-100000, 100000)));
  }
  return provider.ConsumeRandomLengthString(128);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace keel::fetchers;  // NOLINT: a harness reads better with short names
  FuzzedDataProvider provider(data, size);

  const absl::Time stamp =
      absl::FromUnixSeconds(provider.ConsumeIntegralInRange<int64_t>(0, kLastSecondOfYear9999));
  const std::optional<absl::Time> round_trip = ParseHttpDate(FormatHttpDate(stamp));
  Check(round_trip.has_value() && *round_trip == stamp, "FormatHttpDate does not round-trip");

  const absl::Time now =
      absl::FromUnixSeconds(provider.ConsumeIntegralInRange<int64_t>(0, kLastSecondOfYear9999)) +
      absl::Milliseconds(provider.ConsumeIntegralInRange(0, 999));
  RefreshPolicy policy;
  policy.interval = ConsumeDuration(provider);
  policy.min_interval = ConsumeDuration(provider);
  policy.max_interval = ConsumeDuration(provider);
  policy.honor_cache_headers = provider.ConsumeIntegralInRange(0, 7) != 0;
  const int status = provider.ConsumeBool() ? provider.PickValueInArray(kStatuses)
                                            : provider.ConsumeIntegral<int>();
  const std::string cache_control = provider.ConsumeRandomLengthString(256);
  const std::string age = provider.ConsumeRandomLengthString(32);
  const std::string expires = ConsumeHeader(provider, now);
  const std::string date = ConsumeHeader(provider, now);
  const std::string retry_after = ConsumeHeader(provider, now);

  const ResponseTiming response{.status = status,
                                .cache_control = cache_control,
                                .age = age,
                                .expires = expires,
                                .date = date,
                                .retry_after = retry_after};
  const RefreshDecision decision = DecideRefresh(response, policy, now);
  if (policy.min_interval <= policy.max_interval) {
    Check(policy.min_interval <= decision.delay && decision.delay <= policy.max_interval,
          "delay outside [min_interval, max_interval]");
  } else {
    Check(decision.delay == policy.min_interval, "inverted bounds: delay is not min_interval");
  }
  Check(!decision.reason.empty(), "empty reason");

  const CacheControl parsed = ParseCacheControl(cache_control);
  if (parsed.max_age) {
    Check(!parsed.max_age_malformed, "max-age both present and malformed");
    Check(*parsed.max_age >= absl::ZeroDuration() &&
              *parsed.max_age <= absl::Seconds(int64_t{1} << 31),
          "max-age outside [0, 2^31] seconds");
  }
  if (std::optional<absl::Duration> parsed_age = ParseAge(age)) {
    Check(*parsed_age >= absl::ZeroDuration(), "negative Age");
  }
  if (std::optional<absl::Duration> retry = ParseRetryAfter(retry_after, now)) {
    Check(*retry >= absl::ZeroDuration(), "negative Retry-After");
  }

  for (const std::string* text : {&expires, &date, &retry_after, &cache_control}) {
    const std::optional<absl::Time> t = ParseHttpDate(*text);
    if (!t) continue;
    Check(absl::ToUnixSeconds(*t) * absl::Seconds(1) == *t - absl::UnixEpoch(),
          "ParseHttpDate returned a fractional second");
    if (absl::ToCivilYear(*t, absl::UTCTimeZone()).year() >= 1) {
      Check(ParseHttpDate(FormatHttpDate(*t)) == t, "a parsed date does not round-trip");
    }
  }
  return 0;
}
