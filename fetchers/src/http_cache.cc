#include "keel/fetchers/http_cache.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"

namespace keel::fetchers {
namespace {

// RFC 9111 §1.2.2: a delta-seconds value too large to represent is taken as 2^31 seconds.
constexpr int64_t kMaxDeltaSeconds = int64_t{1} << 31;
// How much of a malformed piece of input a problem line quotes.
constexpr size_t kMaxQuotedBytes = 40;
// How many problem lines a parse keeps; the rest are counted in one last line.
constexpr size_t kMaxProblems = 8;

constexpr std::string_view kShortDayNames[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
constexpr std::string_view kLongDayNames[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                              "Friday", "Saturday", "Sunday"};
constexpr std::string_view kMonthNames[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// ASCII case-insensitive equality; header names and date names are ASCII.
bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return absl::ascii_tolower(static_cast<unsigned char>(x)) ==
                  absl::ascii_tolower(static_cast<unsigned char>(y));
         });
}

bool IsOws(char c) { return c == ' ' || c == '\t'; }

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && IsOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsOws(s.back())) s.remove_suffix(1);
  return s;
}

// tchar from RFC 9110 §5.6.2.
bool IsTokenChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// Quotes untrusted input for a problem line, shortened and with control bytes escaped.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < kMaxQuotedBytes; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (s.size() > kMaxQuotedBytes) out += "...";
  out += "\"";
  return out;
}

// delta-seconds = 1*DIGIT, saturating at 2^31; nullopt unless `s` is all digits.
std::optional<int64_t> ParseDeltaSeconds(std::string_view s) {
  if (s.empty()) return std::nullopt;
  int64_t seconds = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    seconds = std::min(seconds * 10 + (c - '0'), kMaxDeltaSeconds);
  }
  return seconds;
}

// Unquotes a complete quoted-string (RFC 9110 §5.6.4); nullopt when `s` is not exactly one.
std::optional<std::string> Unquote(std::string_view s) {
  if (s.size() < 2 || s.front() != '"') return std::nullopt;
  std::string out;
  for (size_t i = 1; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '"') {
      if (i + 1 != s.size()) return std::nullopt;  // bytes after the closing quote
      return out;
    }
    if (c == '\\') {
      if (++i == s.size()) return std::nullopt;
      out.push_back(s[i]);
    } else {
      out.push_back(c);
    }
  }
  return std::nullopt;  // no closing quote
}

// Splits a comma-separated list, keeping commas inside quoted strings; an unbalanced quote
// runs to the end of the input.
std::vector<std::string_view> SplitList(std::string_view s) {
  std::vector<std::string_view> elements;
  size_t start = 0;
  bool in_quotes = false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (in_quotes) {
      if (s[i] == '\\') {
        ++i;
      } else if (s[i] == '"') {
        in_quotes = false;
      }
    } else if (s[i] == '"') {
      in_quotes = true;
    } else if (s[i] == ',') {
      elements.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  elements.push_back(s.substr(start));
  return elements;
}

std::string Seconds(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return "inf";
  if (d == -absl::InfiniteDuration()) return "-inf";
  return absl::StrCat(absl::ToInt64Seconds(d), "s");
}

// Reads exactly `n` digits at `*pos`, advancing it.
std::optional<int> ReadDigits(std::string_view s, size_t* pos, size_t n) {
  if (s.size() - *pos < n) return std::nullopt;
  int value = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = s[*pos + i];
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  *pos += n;
  return value;
}

bool ReadLiteral(std::string_view s, size_t* pos, std::string_view literal) {
  if (s.substr(*pos, literal.size()) != literal) return false;
  *pos += literal.size();
  return true;
}

// Reads one of `names` (case-insensitively) at `*pos`, advancing it; returns its index.
template <size_t N>
std::optional<int> ReadName(std::string_view s, size_t* pos, const std::string_view (&names)[N]) {
  for (size_t i = 0; i < N; ++i) {
    if (EqualsIgnoreCase(s.substr(*pos, names[i].size()), names[i])) {
      *pos += names[i].size();
      return static_cast<int>(i);
    }
  }
  return std::nullopt;
}

// time-of-day = hour ":" minute ":" second.
bool ReadTimeOfDay(std::string_view s, size_t* pos, int* hour, int* minute, int* second) {
  std::optional<int> h = ReadDigits(s, pos, 2);
  if (!h || !ReadLiteral(s, pos, ":")) return false;
  std::optional<int> m = ReadDigits(s, pos, 2);
  if (!m || !ReadLiteral(s, pos, ":")) return false;
  std::optional<int> sec = ReadDigits(s, pos, 2);
  if (!sec) return false;
  *hour = *h;
  *minute = *m;
  *second = *sec;
  return true;
}

// Builds the time when the fields name a real instant; a second of 60 rolls over.
std::optional<absl::Time> MakeTime(int64_t year, int month, int day, int hour, int minute,
                                   int second) {
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 60) {
    return std::nullopt;
  }
  const absl::CivilDay civil_day(year, month, day);
  if (civil_day.year() != year || civil_day.month() != month || civil_day.day() != day) {
    return std::nullopt;  // normalised: the day does not exist in that month
  }
  return absl::FromCivil(absl::CivilSecond(year, month, day, hour, minute, second),
                         absl::UTCTimeZone());
}

// The shape shared by IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") and the obsolete
// rfc850-date ("Sunday, 06-Nov-94 08:49:37 GMT"): day name, ", ", day, month and year
// joined by `separator`, a space, the time of day, " GMT". The year as written.
struct DayMonthYearForm {
  const std::string_view (&day_names)[7];
  std::string_view separator;
  int year_digits;
};

std::optional<absl::Time> ParseDayMonthYearDate(std::string_view s, const DayMonthYearForm& form,
                                                int (*full_year)(int written)) {
  size_t pos = 0;
  if (!ReadName(s, &pos, form.day_names) || !ReadLiteral(s, &pos, ", ")) return std::nullopt;
  std::optional<int> day = ReadDigits(s, &pos, 2);
  if (!day || !ReadLiteral(s, &pos, form.separator)) return std::nullopt;
  std::optional<int> month = ReadName(s, &pos, kMonthNames);
  if (!month || !ReadLiteral(s, &pos, form.separator)) return std::nullopt;
  std::optional<int> year = ReadDigits(s, &pos, form.year_digits);
  if (!year || !ReadLiteral(s, &pos, " ")) return std::nullopt;
  int hour, minute, second;
  if (!ReadTimeOfDay(s, &pos, &hour, &minute, &second)) return std::nullopt;
  if (!ReadLiteral(s, &pos, " GMT") || pos != s.size()) return std::nullopt;
  return MakeTime(full_year(*year), *month + 1, *day, hour, minute, second);
}

// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
std::optional<absl::Time> ParseImfFixdate(std::string_view s) {
  return ParseDayMonthYearDate(s, {kShortDayNames, " ", 4}, [](int year) { return year; });
}

// rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT". Two-digit years: 70-99 are 19xx, 00-69 20xx.
std::optional<absl::Time> ParseRfc850Date(std::string_view s) {
  return ParseDayMonthYearDate(s, {kLongDayNames, "-", 2},
                               [](int year) { return year >= 70 ? 1900 + year : 2000 + year; });
}

// asctime-date: "Sun Nov  6 08:49:37 1994" (the day is two digits or a space and a digit).
std::optional<absl::Time> ParseAsctimeDate(std::string_view s) {
  size_t pos = 0;
  if (!ReadName(s, &pos, kShortDayNames) || !ReadLiteral(s, &pos, " ")) return std::nullopt;
  std::optional<int> month = ReadName(s, &pos, kMonthNames);
  if (!month || !ReadLiteral(s, &pos, " ")) return std::nullopt;
  std::optional<int> day;
  if (ReadLiteral(s, &pos, " ")) {
    day = ReadDigits(s, &pos, 1);
  } else {
    day = ReadDigits(s, &pos, 2);
  }
  if (!day || !ReadLiteral(s, &pos, " ")) return std::nullopt;
  int hour, minute, second;
  if (!ReadTimeOfDay(s, &pos, &hour, &minute, &second)) return std::nullopt;
  if (!ReadLiteral(s, &pos, " ")) return std::nullopt;
  std::optional<int> year = ReadDigits(s, &pos, 4);
  if (!year || pos != s.size()) return std::nullopt;
  return MakeTime(*year, *month + 1, *day, hour, minute, second);
}

absl::Duration Clamp(absl::Duration delay, const RefreshPolicy& policy) {
  // Not std::clamp: a policy with min_interval > max_interval must stay defined.
  return std::max(policy.min_interval, std::min(delay, policy.max_interval));
}

RefreshDecision Decide(absl::Duration delay, std::string reason, const RefreshPolicy& policy) {
  const absl::Duration clamped = Clamp(delay, policy);
  if (clamped != delay) {
    absl::StrAppend(&reason, clamped > delay ? ", raised to min " : ", cut to max ",
                    Seconds(clamped));
  }
  return RefreshDecision{clamped, std::move(reason)};
}

RefreshDecision Interval(const char* why, const RefreshPolicy& policy) {
  return Decide(policy.interval, absl::StrCat(why, ": interval"), policy);
}

}  // namespace

CacheControl ParseCacheControl(std::string_view value) {
  CacheControl result;
  size_t dropped_problems = 0;
  auto add_problem = [&](std::string problem) {
    if (result.problems.size() < kMaxProblems) {
      result.problems.push_back(std::move(problem));
    } else {
      ++dropped_problems;
    }
  };
  std::optional<int64_t> max_age_seconds;
  for (std::string_view element : SplitList(value)) {
    element = TrimOws(element);
    if (element.empty()) continue;  // "a, , b" is a valid list
    const size_t eq = element.find('=');
    const std::string_view name = TrimOws(element.substr(0, eq));
    if (!IsToken(name)) {
      add_problem(absl::StrCat("malformed directive ", Quote(element), " ignored"));
      continue;
    }
    std::optional<std::string> argument;  // absent, or the unquoted value
    bool argument_ok = true;
    if (eq != std::string_view::npos) {
      const std::string_view raw = TrimOws(element.substr(eq + 1));
      if (!raw.empty() && raw.front() == '"') {
        argument = Unquote(raw);
      } else if (IsToken(raw)) {
        argument = std::string(raw);
      }
      argument_ok = argument.has_value();
    }

    if (EqualsIgnoreCase(name, "max-age")) {
      std::optional<int64_t> seconds;
      if (argument) seconds = ParseDeltaSeconds(*argument);
      if (!seconds) {
        add_problem(
            absl::StrCat("max-age is not delta-seconds in ", Quote(element), "; max-age ignored"));
        result.max_age_malformed = true;
      } else if (max_age_seconds && *max_age_seconds != *seconds) {
        add_problem(absl::StrCat("conflicting max-age values ", *max_age_seconds, " and ", *seconds,
                                 "; max-age ignored"));
        result.max_age_malformed = true;
      } else {
        max_age_seconds = seconds;
      }
      continue;
    }
    if (!argument_ok) {
      add_problem(absl::StrCat("malformed value in ", Quote(element), "; value ignored"));
    }
    if (EqualsIgnoreCase(name, "no-cache")) {
      result.no_cache = true;
    } else if (EqualsIgnoreCase(name, "no-store")) {
      result.no_store = true;
    } else if (EqualsIgnoreCase(name, "must-revalidate")) {
      result.must_revalidate = true;
    }
  }
  if (dropped_problems > 0) {
    result.problems.push_back(absl::StrCat("and ", dropped_problems, " more problems"));
  }
  if (max_age_seconds && !result.max_age_malformed) {
    result.max_age = absl::Seconds(*max_age_seconds);
  }
  return result;
}

std::optional<absl::Duration> ParseAge(std::string_view value) {
  std::optional<int64_t> seconds = ParseDeltaSeconds(TrimOws(value));
  if (!seconds) return std::nullopt;
  return absl::Seconds(*seconds);
}

std::optional<absl::Time> ParseHttpDate(std::string_view value) {
  value = TrimOws(value);
  if (std::optional<absl::Time> t = ParseImfFixdate(value)) return t;
  if (std::optional<absl::Time> t = ParseRfc850Date(value)) return t;
  return ParseAsctimeDate(value);
}

std::string FormatHttpDate(absl::Time t) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  const absl::Time earliest = absl::FromCivil(absl::CivilSecond(1, 1, 1, 0, 0, 0), utc);
  const absl::Time latest = absl::FromCivil(absl::CivilSecond(9999, 12, 31, 23, 59, 59), utc);
  const absl::CivilSecond c = absl::ToCivilSecond(std::clamp(t, earliest, latest), utc);
  const int weekday = static_cast<int>(absl::GetWeekday(absl::CivilDay(c)));  // Monday is 0
  return absl::StrFormat("%s, %02d %s %04d %02d:%02d:%02d GMT", kShortDayNames[weekday], c.day(),
                         kMonthNames[c.month() - 1], c.year(), c.hour(), c.minute(), c.second());
}

std::optional<absl::Duration> ParseRetryAfter(std::string_view value, absl::Time now) {
  value = TrimOws(value);
  if (std::optional<int64_t> seconds = ParseDeltaSeconds(value)) return absl::Seconds(*seconds);
  std::optional<absl::Time> when = ParseHttpDate(value);
  if (!when) return std::nullopt;
  return std::max(*when - now, absl::ZeroDuration());
}

RefreshDecision DecideRefresh(const ResponseTiming& response, const RefreshPolicy& policy,
                              absl::Time now) {
  if (!policy.honor_cache_headers) return Interval("cache headers not honored", policy);

  if (response.status == 429 || response.status == 503) {
    if (std::optional<absl::Duration> retry = ParseRetryAfter(response.retry_after, now)) {
      return Decide(*retry, absl::StrCat("retry-after ", Seconds(*retry)), policy);
    }
  }

  const CacheControl cache_control = ParseCacheControl(response.cache_control);
  if (cache_control.no_store) return Interval("no-store", policy);
  if (cache_control.no_cache) return Interval("no-cache", policy);
  if (cache_control.max_age_malformed) return Interval("malformed max-age", policy);
  if (!cache_control.max_age && response.expires.empty()) {
    return Interval("no cache headers", policy);
  }

  absl::Duration age = absl::ZeroDuration();
  if (!response.age.empty()) {
    std::optional<absl::Duration> parsed = ParseAge(response.age);
    if (!parsed) return Interval("malformed age", policy);
    age = *parsed;
  }
  const std::string age_part =
      age == absl::ZeroDuration() ? "" : absl::StrCat(" - age ", Seconds(age));

  if (cache_control.max_age) {
    return Decide(std::max(*cache_control.max_age - age, absl::ZeroDuration()),
                  absl::StrCat("max-age ", Seconds(*cache_control.max_age), age_part), policy);
  }

  std::optional<absl::Time> expires = ParseHttpDate(response.expires);
  if (!expires) return Decide(absl::ZeroDuration(), "invalid expires: already expired", policy);
  std::optional<absl::Time> date = ParseHttpDate(response.date);
  const absl::Duration lifetime = *expires - (date ? *date : now);
  return Decide(
      std::max(lifetime - age, absl::ZeroDuration()),
      absl::StrCat("expires ", Seconds(lifetime), date ? " after date" : " from now", age_part),
      policy);
}

}  // namespace keel::fetchers
