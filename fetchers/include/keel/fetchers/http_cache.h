// HTTP cache rules: how an HTTP response's caching headers set a remote term's next refresh.
//
// An HTTP source says how long its answer stays fresh (RFC 9111): `Cache-Control: max-age`
// minus `Age`, or `Expires` minus `Date`; `no-store` and `no-cache` ask for revalidation; a
// `429` or `503` may carry `Retry-After`. When the policy allows it, keel schedules the next
// fetch from these headers instead of the fixed interval, clamped between a minimum and a
// maximum so that no response can make keel hammer the server or leave the term to go stale.
// Headers are untrusted input: anything malformed or missing falls back to the configured
// interval (an invalid `Expires`, which RFC 9111 says means "already expired", gives the
// minimum). No header can stop the refreshing or crash the process.
//
//   keel::fetchers::RefreshPolicy policy{.interval = absl::Minutes(5),
//                                        .min_interval = absl::Seconds(10),
//                                        .max_interval = absl::Hours(1)};
//   keel::fetchers::ResponseTiming timing{.status = 200, .cache_control = "max-age=300",
//                                         .age = "20"};
//   keel::fetchers::RefreshDecision next = keel::fetchers::DecideRefresh(timing, policy, now);
//   // next.delay == absl::Seconds(280), next.reason == "max-age 300s - age 20s"
//
// Thread safety: thread-safe. The functions share no state.
//
// Costs: one pass over each header value. DecideRefresh allocates its reason string, and
// ParseCacheControl its problem list when a header is malformed; both are meant for the
// control thread, once per response, never for a read path.
#ifndef KEEL_FETCHERS_HTTP_CACHE_H_
#define KEEL_FETCHERS_HTTP_CACHE_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

namespace keel::fetchers {

// The response directives of a `Cache-Control` header (RFC 9111 §5.2) that keel uses.
struct CacheControl {
  // `max-age=N`; empty when absent, malformed, or given twice with different values.
  // `s-maxage` is for shared caches and is ignored.
  std::optional<absl::Duration> max_age;
  // True when a max-age directive was present but unusable (malformed or conflicting).
  bool max_age_malformed = false;
  // `no-cache`, also in its qualified form `no-cache="field"`, which keel treats as plain
  // `no-cache` (RFC 9111 §5.2.2.4 allows it).
  bool no_cache = false;
  // `no-store`.
  bool no_store = false;
  // `must-revalidate`; parsed for logs, it does not change the schedule.
  bool must_revalidate = false;
  // One line per malformed part that was ignored, for logs: at most 8 lines, then one line
  // counting the rest; each quotes at most 40 bytes of the input, with control bytes escaped.
  std::vector<std::string> problems;
};

// Parses a Cache-Control value leniently and never fails: directive names are
// case-insensitive, whitespace around elements and `=` is allowed, values may be tokens or
// quoted strings (`max-age="60"`), empty list elements and unknown directives are skipped.
// Several header lines must be joined by the caller with ", ". A max-age that is not
// delta-seconds (negative, empty, non-numeric) or that appears twice with different values
// leaves `max_age` empty, sets `max_age_malformed` and adds a problem; a max-age above 2^31
// seconds saturates to 2^31 seconds (RFC 9111 §1.2.2).
CacheControl ParseCacheControl(std::string_view value);

// Parses an `Age` value (delta-seconds, surrounding whitespace allowed, saturating at 2^31
// seconds); nullopt for anything else, including an empty value or a list.
std::optional<absl::Duration> ParseAge(std::string_view value);

// Parses an HTTP-date (RFC 9110 §5.6.7) in any of its three forms: IMF-fixdate
// ("Sun, 06 Nov 1994 08:49:37 GMT"), the obsolete RFC 850 form ("Sunday, 06-Nov-94 08:49:37
// GMT") and the asctime form ("Sun Nov  6 08:49:37 1994"). Day and month names are
// case-insensitive; the day name must be a real one but is not checked against the date.
// An RFC 850 two-digit year 70..99 means 1970..1999 and 00..69 means 2000..2069. A second of
// 60 (a leap second) is accepted and means the next minute's first second. Returns nullopt
// for anything else, including dates that do not exist (30 Feb, 29 Feb 2023, hour 24).
std::optional<absl::Time> ParseHttpDate(std::string_view value);

// Formats `t` as an IMF-fixdate with a two-digit day ("Sun, 06 Nov 1994 08:49:37 GMT"),
// truncated to the second. Times outside the years 0001..9999 are clamped to that range.
std::string FormatHttpDate(absl::Time t);

// Parses a `Retry-After` value: delta-seconds, or an HTTP-date taken relative to `now` (a
// date at or before `now` gives zero). Returns nullopt for anything else.
std::optional<absl::Duration> ParseRetryAfter(std::string_view value, absl::Time now);

// How a term refreshes. The caller's options validate it, expecting
// 0 <= min_interval <= interval <= max_interval. DecideRefresh stays defined otherwise: every
// delay it returns is max(min_interval, min(delay, max_interval)), so when min_interval >
// max_interval the floor wins.
struct RefreshPolicy {
  // The configured refresh interval, used whenever the headers do not decide.
  absl::Duration interval = absl::Minutes(1);
  // No delay DecideRefresh returns is shorter than this.
  absl::Duration min_interval = absl::ZeroDuration();
  // No delay DecideRefresh returns is longer than this.
  absl::Duration max_interval = absl::InfiniteDuration();
  // When false, headers are ignored and every delay is `interval`.
  bool honor_cache_headers = true;
};

// What a fetcher saw in a response. The views must outlive the DecideRefresh call.
struct ResponseTiming {
  // The HTTP status: 200, 304, 429, 503, ...
  int status = 200;
  // Raw header values, "" when the header is absent; repeated lines joined with ", ".
  std::string_view cache_control = {};
  std::string_view age = {};
  std::string_view expires = {};
  std::string_view date = {};
  std::string_view retry_after = {};
};

// When to fetch next, and why.
struct RefreshDecision {
  // The delay from now to the next fetch, within the policy's bounds.
  absl::Duration delay;
  // A short explanation for logs, such as "max-age 300s - age 20s" or "no-store: interval".
  std::string reason;
};

// Decides the delay before the next fetch from a response's headers, at time `now`; never
// fails. The first rule that applies wins:
//   1. `honor_cache_headers` is false: the interval.
//   2. Status 429 or 503 with a valid Retry-After: that delay (other statuses ignore it).
//   3. `no-store` or `no-cache`: the interval; keel revalidates at the configured interval,
//      with a conditional request when it has a validator (ETag, Last-Modified).
//   4. A malformed or conflicting max-age: the interval (Expires is ignored, as RFC 9111
//      §5.3 says it must be when max-age is present).
//   5. max-age: max(max-age - Age, 0).
//   6. Expires: max(Expires - (Date, or `now` when Date is absent or invalid) - Age, 0); an
//      invalid Expires such as "0" means already expired, so zero.
//   7. Otherwise the interval.
// A malformed Age in rules 5 and 6 gives the interval. The delay is then clamped to
// [min_interval, max_interval]. Call from the control thread, once per response.
RefreshDecision DecideRefresh(const ResponseTiming& response, const RefreshPolicy& policy,
                              absl::Time now);

}  // namespace keel::fetchers

#endif  // KEEL_FETCHERS_HTTP_CACHE_H_
