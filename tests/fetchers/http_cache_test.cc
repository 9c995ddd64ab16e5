#include "keel/fetchers/http_cache.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace keel::fetchers {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

absl::Time Utc(int year, int month, int day, int hour, int minute, int second) {
  return absl::FromCivil(absl::CivilSecond(year, month, day, hour, minute, second),
                         absl::UTCTimeZone());
}

// The manual clock of every test: Sat, 01 Jun 2024 12:00:00 GMT.
const absl::Time kNow = Utc(2024, 6, 1, 12, 0, 0);

const RefreshPolicy kPolicy{.interval = absl::Seconds(60),
                            .min_interval = absl::Seconds(10),
                            .max_interval = absl::Seconds(3600)};

struct CacheControlCase {
  std::string_view what;
  std::string_view header;
  std::optional<absl::Duration> max_age;
  bool max_age_malformed = false;
  bool no_cache = false;
  bool no_store = false;
  bool must_revalidate = false;
  bool has_problems = false;
};

TEST(ParseCacheControlTest, ReadsDirectivesLenientlyAndIgnoresWhatIsMalformed) {
  const std::optional<absl::Duration> none;
  const CacheControlCase cases[] = {
      {"an empty header has no directives", "", none},
      {"max-age is read", "max-age=60", absl::Seconds(60)},
      {"directive names are case-insensitive", "MAX-AGE=60, No-Store", absl::Seconds(60), false,
       false, true},
      {"a quoted max-age is accepted", "max-age=\"60\"", absl::Seconds(60)},
      {"whitespace around elements and = is allowed", " \t max-age = 60 ,\tno-cache ",
       absl::Seconds(60), false, true},
      {"empty list elements are skipped", ",, max-age=5 ,,", absl::Seconds(5)},
      {"unknown directives are ignored", "public, x-custom=\"a,b\", max-age=7", absl::Seconds(7)},
      {"a comma inside a quoted value does not split", "private=\"a, max-age=9\", max-age=8",
       absl::Seconds(8)},
      {"s-maxage is ignored", "s-maxage=100", none},
      {"a duplicated max-age with the same value is kept", "max-age=30, max-age=30",
       absl::Seconds(30)},
      {"conflicting max-age values are ignored", "max-age=30, max-age=60", none, true, false, false,
       false, true},
      {"a valid and a malformed max-age are ignored", "max-age=30, max-age=abc", none, true, false,
       false, false, true},
      {"a non-numeric max-age is ignored", "max-age=abc", none, true, false, false, false, true},
      {"a negative max-age is ignored", "max-age=-5", none, true, false, false, false, true},
      {"an empty max-age is ignored", "max-age=", none, true, false, false, false, true},
      {"a max-age without a value is ignored", "max-age", none, true, false, false, false, true},
      {"a max-age with trailing junk is ignored", "max-age=60s", none, true, false, false, false,
       true},
      {"a huge max-age saturates at 2^31 seconds", "max-age=99999999999999999999",
       absl::Seconds(int64_t{1} << 31)},
      {"semicolons are malformed directives", ";;;", none, false, false, false, false, true},
      {"an unbalanced quote is malformed", "max-age=\"60", none, true, false, false, false, true},
      {"an unbalanced quote swallows the rest of the list", "x=\"a, no-store", none, false, false,
       false, false, true},
      {"no-cache with field names counts as no-cache", "no-cache=\"Set-Cookie, Foo\"", none, false,
       true},
      {"must-revalidate is read", "must-revalidate, max-age=0", absl::ZeroDuration(), false, false,
       false, true},
      {"bytes outside ASCII are malformed", "max-age=6\xff", none, true, false, false, false, true},
  };
  for (const CacheControlCase& c : cases) {
    SCOPED_TRACE(c.what);
    const CacheControl parsed = ParseCacheControl(c.header);
    EXPECT_EQ(parsed.max_age, c.max_age);
    EXPECT_EQ(parsed.max_age_malformed, c.max_age_malformed);
    EXPECT_EQ(parsed.no_cache, c.no_cache);
    EXPECT_EQ(parsed.no_store, c.no_store);
    EXPECT_EQ(parsed.must_revalidate, c.must_revalidate);
    EXPECT_EQ(!parsed.problems.empty(), c.has_problems);
  }
}

TEST(ParseCacheControlTest, ProblemsQuoteAShortenedEscapedExcerpt) {
  const CacheControl parsed = ParseCacheControl(std::string(1000, ';') + "\n");
  ASSERT_EQ(parsed.problems.size(), 1u);
  EXPECT_LT(parsed.problems[0].size(), 100u);
  EXPECT_THAT(parsed.problems[0], Not(HasSubstr("\n")));
}

TEST(ParseCacheControlTest, KeepsAFewProblemsAndCountsTheRest) {
  const CacheControl parsed = ParseCacheControl(";, ;, ;, ;, ;, ;, ;, ;, ;, ;, max-age=5");
  ASSERT_EQ(parsed.problems.size(), 9u);
  EXPECT_EQ(parsed.problems.back(), "and 2 more problems");
  EXPECT_EQ(parsed.max_age, absl::Seconds(5));
}

TEST(ParseAgeTest, AcceptsDeltaSecondsOnly) {
  EXPECT_EQ(ParseAge("20"), absl::Seconds(20));
  EXPECT_EQ(ParseAge(" 0 "), absl::ZeroDuration());
  EXPECT_EQ(ParseAge("99999999999999999999"), absl::Seconds(int64_t{1} << 31));
  for (std::string_view garbage : {"", " ", "-1", "1.5", "abc", "20, 20", "+3", "0x10"}) {
    SCOPED_TRACE(garbage);
    EXPECT_EQ(ParseAge(garbage), std::nullopt);
  }
}

struct DateCase {
  std::string_view what;
  std::string_view text;
  std::optional<absl::Time> time;
};

TEST(ParseHttpDateTest, ReadsTheThreeFormsAndRejectsDatesThatDoNotExist) {
  const absl::Time k1994 = Utc(1994, 11, 6, 8, 49, 37);
  const std::optional<absl::Time> none;
  const DateCase cases[] = {
      {"IMF-fixdate is read", "Sun, 06 Nov 1994 08:49:37 GMT", k1994},
      {"the RFC 850 form is read", "Sunday, 06-Nov-94 08:49:37 GMT", k1994},
      {"the asctime form is read", "Sun Nov  6 08:49:37 1994", k1994},
      {"asctime accepts a two-digit day", "Sun Nov 16 08:49:37 1994", Utc(1994, 11, 16, 8, 49, 37)},
      {"names are case-insensitive", "SUN, 06 nov 1994 08:49:37 GMT", k1994},
      {"surrounding whitespace is allowed", "  Sun, 06 Nov 1994 08:49:37 GMT\t", k1994},
      {"an RFC 850 year below 70 is in the 2000s", "Friday, 01-Mar-24 00:00:00 GMT",
       Utc(2024, 3, 1, 0, 0, 0)},
      {"29 Feb of a leap year exists", "Thu, 29 Feb 2024 00:00:00 GMT", Utc(2024, 2, 29, 0, 0, 0)},
      {"29 Feb 2000 exists", "Tue, 29 Feb 2000 12:00:00 GMT", Utc(2000, 2, 29, 12, 0, 0)},
      {"a leap second rolls over", "Sat, 31 Dec 2016 23:59:60 GMT", Utc(2017, 1, 1, 0, 0, 0)},
      {"29 Feb of a common year does not exist", "Wed, 29 Feb 2023 00:00:00 GMT", none},
      {"29 Feb 1900 does not exist", "Thu, 29 Feb 1900 00:00:00 GMT", none},
      {"30 Feb does not exist", "Fri, 30 Feb 2024 00:00:00 GMT", none},
      {"31 Apr does not exist", "Wed, 31 Apr 2024 00:00:00 GMT", none},
      {"day 00 does not exist", "Sun, 00 Nov 1994 08:49:37 GMT", none},
      {"hour 25 does not exist", "Sun, 06 Nov 1994 25:49:37 GMT", none},
      {"hour 24 does not exist", "Sun, 06 Nov 1994 24:00:00 GMT", none},
      {"minute 60 does not exist", "Sun, 06 Nov 1994 08:60:37 GMT", none},
      {"a one-digit IMF day is malformed", "Sun, 6 Nov 1994 08:49:37 GMT", none},
      {"a zone other than GMT is malformed", "Sun, 06 Nov 1994 08:49:37 UTC", none},
      {"an unknown month is malformed", "Sun, 06 Foo 1994 08:49:37 GMT", none},
      {"an unknown day name is malformed", "Sux, 06 Nov 1994 08:49:37 GMT", none},
      {"trailing bytes are malformed", "Sun, 06 Nov 1994 08:49:37 GMTx", none},
      {"a truncated date is malformed", "Sun, 06 Nov 1994 08:49", none},
      {"zero is malformed", "0", none},
      {"an empty value is malformed", "", none},
      {"seconds since the epoch are malformed", "784111777", none},
      {"two joined dates are malformed",
       "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT", none},
  };
  for (const DateCase& c : cases) {
    SCOPED_TRACE(c.what);
    EXPECT_EQ(ParseHttpDate(c.text), c.time);
  }
}

TEST(FormatHttpDateTest, WritesAnImfFixdateWithATwoDigitDay) {
  EXPECT_EQ(FormatHttpDate(Utc(1994, 11, 6, 8, 49, 37)), "Sun, 06 Nov 1994 08:49:37 GMT");
  EXPECT_EQ(FormatHttpDate(Utc(2024, 2, 29, 0, 0, 0)), "Thu, 29 Feb 2024 00:00:00 GMT");
  EXPECT_EQ(FormatHttpDate(absl::UnixEpoch()), "Thu, 01 Jan 1970 00:00:00 GMT");
  EXPECT_EQ(FormatHttpDate(Utc(1994, 11, 6, 8, 49, 37) + absl::Milliseconds(999)),
            "Sun, 06 Nov 1994 08:49:37 GMT");
}

TEST(FormatHttpDateTest, ClampsTimesOutsideFourDigitYears) {
  EXPECT_EQ(FormatHttpDate(absl::InfiniteFuture()), "Fri, 31 Dec 9999 23:59:59 GMT");
  EXPECT_EQ(FormatHttpDate(absl::InfinitePast()), "Mon, 01 Jan 0001 00:00:00 GMT");
}

TEST(FormatHttpDateTest, RoundTripsThroughParseHttpDate) {
  const absl::Time times[] = {absl::UnixEpoch(), kNow, Utc(2000, 2, 29, 23, 59, 59),
                              Utc(9999, 12, 31, 23, 59, 59), Utc(2038, 1, 19, 3, 14, 8)};
  for (absl::Time t : times) {
    SCOPED_TRACE(FormatHttpDate(t));
    EXPECT_EQ(ParseHttpDate(FormatHttpDate(t)), t);
  }
}

TEST(ParseRetryAfterTest, ReadsDelaySecondsOrADateRelativeToNow) {
  EXPECT_EQ(ParseRetryAfter("120", kNow), absl::Seconds(120));
  EXPECT_EQ(ParseRetryAfter(" 0 ", kNow), absl::ZeroDuration());
  EXPECT_EQ(ParseRetryAfter(FormatHttpDate(kNow + absl::Seconds(90)), kNow), absl::Seconds(90));
  EXPECT_EQ(ParseRetryAfter(FormatHttpDate(kNow - absl::Hours(1)), kNow), absl::ZeroDuration());
  for (std::string_view garbage : {"", "-5", "soon", "1.5", "30, 30"}) {
    SCOPED_TRACE(garbage);
    EXPECT_EQ(ParseRetryAfter(garbage, kNow), std::nullopt);
  }
}

struct DecideCase {
  std::string_view what;
  ResponseTiming response;
  absl::Duration delay;
  std::string_view reason_part;
};

TEST(DecideRefreshTest, FollowsTheCacheRulesInOrder) {
  const std::string in_90s = FormatHttpDate(kNow + absl::Seconds(90));
  const std::string in_2h = FormatHttpDate(kNow + absl::Hours(2));
  const std::string an_hour_ago = FormatHttpDate(kNow - absl::Hours(1));
  const std::string now_date = FormatHttpDate(kNow);
  const std::string rfc850_in_5m = "Saturday, 01-Jun-24 12:05:00 GMT";
  const std::string asctime_in_5m = "Sat Jun  1 12:05:00 2024";
  const DecideCase cases[] = {
      {"no headers give the interval", {}, absl::Seconds(60), "no cache headers: interval"},
      {"max-age gives the delay",
       {.cache_control = "max-age=300"},
       absl::Seconds(300),
       "max-age 300s"},
      {"Age is subtracted from max-age",
       {.cache_control = "max-age=300", .age = "20"},
       absl::Seconds(280),
       "max-age 300s - age 20s"},
      {"an Age past max-age gives zero, raised to the minimum",
       {.cache_control = "max-age=30", .age = "100"},
       absl::Seconds(10),
       "raised to min 10s"},
      {"a malformed Age gives the interval",
       {.cache_control = "max-age=300", .age = "abc"},
       absl::Seconds(60),
       "malformed age: interval"},
      {"a malformed max-age gives the interval",
       {.cache_control = "max-age=abc"},
       absl::Seconds(60),
       "malformed max-age: interval"},
      {"a malformed max-age hides Expires",
       {.cache_control = "max-age=-1", .expires = in_90s},
       absl::Seconds(60),
       "malformed max-age: interval"},
      {"max-age wins over Expires",
       {.cache_control = "max-age=300", .expires = in_90s},
       absl::Seconds(300),
       "max-age 300s"},
      {"no-store gives the interval",
       {.cache_control = "no-store, max-age=300"},
       absl::Seconds(60),
       "no-store: interval"},
      {"no-cache gives the interval",
       {.cache_control = "max-age=300, NO-CACHE"},
       absl::Seconds(60),
       "no-cache: interval"},
      {"garbage Cache-Control gives the interval",
       {.cache_control = ";;;"},
       absl::Seconds(60),
       "no cache headers: interval"},
      {"a max-age above the maximum is cut",
       {.cache_control = "max-age=99999999999999999999"},
       absl::Seconds(3600),
       "cut to max 3600s"},
      {"max-age=0 is raised to the minimum",
       {.cache_control = "max-age=0"},
       absl::Seconds(10),
       "raised to min 10s"},
      {"an IMF-fixdate Expires counts from now",
       {.expires = in_90s},
       absl::Seconds(90),
       "expires 90s from now"},
      {"an RFC 850 Expires counts from now",
       {.expires = rfc850_in_5m},
       absl::Seconds(300),
       "expires"},
      {"an asctime Expires counts from now",
       {.expires = asctime_in_5m},
       absl::Seconds(300),
       "expires"},
      {"Expires counts from Date when present",
       {.expires = in_90s, .date = an_hour_ago},
       absl::Seconds(3600),
       "after date"},
      {"Expires minus Date minus Age",
       {.age = "30", .expires = in_90s, .date = now_date},
       absl::Seconds(60),
       "expires 90s after date - age 30s"},
      {"a malformed Date is ignored",
       {.expires = in_90s, .date = "yesterday"},
       absl::Seconds(90),
       "from now"},
      {"an Expires in the past is raised to the minimum",
       {.expires = an_hour_ago},
       absl::Seconds(10),
       "raised to min"},
      {"Expires 0 means already expired",
       {.expires = "0"},
       absl::Seconds(10),
       "invalid expires: already expired"},
      {"a garbage Expires means already expired",
       {.expires = "next tuesday"},
       absl::Seconds(10),
       "invalid expires"},
      {"a far Expires is cut to the maximum",
       {.expires = in_2h},
       absl::Seconds(3600),
       "cut to max"},
      {"Retry-After seconds on 429",
       {.status = 429, .retry_after = "30"},
       absl::Seconds(30),
       "retry-after 30s"},
      {"Retry-After seconds on 503",
       {.status = 503, .retry_after = "30"},
       absl::Seconds(30),
       "retry-after 30s"},
      {"a Retry-After date on 429",
       {.status = 429, .retry_after = in_90s},
       absl::Seconds(90),
       "retry-after 90s"},
      {"a Retry-After date on 503",
       {.status = 503, .retry_after = in_90s},
       absl::Seconds(90),
       "retry-after 90s"},
      {"Retry-After wins over no-store on 503",
       {.status = 503, .cache_control = "no-store", .retry_after = "30"},
       absl::Seconds(30),
       "retry-after"},
      {"Retry-After is ignored on 200",
       {.status = 200, .retry_after = "30"},
       absl::Seconds(60),
       "no cache headers: interval"},
      {"a garbage Retry-After falls through to the cache rules",
       {.status = 429, .cache_control = "max-age=120", .retry_after = "later"},
       absl::Seconds(120),
       "max-age 120s"},
      {"a short Retry-After is raised to the minimum",
       {.status = 429, .retry_after = "1"},
       absl::Seconds(10),
       "raised to min 10s"},
      {"a long Retry-After is cut to the maximum",
       {.status = 503, .retry_after = "86400"},
       absl::Seconds(3600),
       "cut to max 3600s"},
      {"a 304 follows the same rules",
       {.status = 304, .cache_control = "max-age=200"},
       absl::Seconds(200),
       "max-age 200s"},
  };
  for (const DecideCase& c : cases) {
    SCOPED_TRACE(c.what);
    const RefreshDecision decision = DecideRefresh(c.response, kPolicy, kNow);
    EXPECT_EQ(decision.delay, c.delay) << decision.reason;
    EXPECT_THAT(decision.reason, HasSubstr(c.reason_part));
  }
}

TEST(DecideRefreshTest, IgnoresEveryHeaderWhenCacheHeadersAreNotHonored) {
  RefreshPolicy policy = kPolicy;
  policy.honor_cache_headers = false;
  const ResponseTiming response{
      .status = 429, .cache_control = "max-age=300", .expires = "0", .retry_after = "30"};
  const RefreshDecision decision = DecideRefresh(response, policy, kNow);
  EXPECT_EQ(decision.delay, absl::Seconds(60));
  EXPECT_THAT(decision.reason, HasSubstr("interval"));
}

TEST(DecideRefreshTest, ClampsTheIntervalItself) {
  RefreshPolicy policy = kPolicy;
  policy.interval = absl::Seconds(1);
  EXPECT_EQ(DecideRefresh({}, policy, kNow).delay, absl::Seconds(10));
  policy.interval = absl::Hours(5);
  EXPECT_EQ(DecideRefresh({}, policy, kNow).delay, absl::Seconds(3600));
}

TEST(DecideRefreshTest, LetsTheFloorWinWhenTheBoundsAreInverted) {
  const RefreshPolicy policy{.interval = absl::Seconds(60),
                             .min_interval = absl::Seconds(100),
                             .max_interval = absl::Seconds(50)};
  EXPECT_EQ(DecideRefresh({.cache_control = "max-age=75"}, policy, kNow).delay, absl::Seconds(100));
}

TEST(DecideRefreshTest, AlwaysGivesAReason) {
  const ResponseTiming responses[] = {
      {}, {.cache_control = "max-age=1"}, {.expires = "0"}, {.status = 503, .retry_after = "1"}};
  for (const ResponseTiming& response : responses) {
    EXPECT_THAT(DecideRefresh(response, kPolicy, kNow).reason, Not(IsEmpty()));
  }
}

}  // namespace
}  // namespace keel::fetchers
