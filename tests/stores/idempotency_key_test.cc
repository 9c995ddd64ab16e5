#include "keel/idempotency_key.h"

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace keel {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using Headers = std::vector<std::pair<std::string_view, std::string_view>>;

const IdempotencyKeyOptions kStrict{};
const IdempotencyKeyOptions kBareTokens{.accept_bare_token = true};

std::string MessageOf(const absl::StatusOr<std::string>& key) {
  return std::string(key.status().message());
}

// `s` between double quotes, unescaped.
std::string InQuotes(std::string_view s) {
  std::string quoted = "\"";
  quoted.append(s);
  quoted.push_back('"');
  return quoted;
}

struct Accepted {
  std::string_view what;
  std::string_view header_value;
  std::string_view key;
};

struct Rejected {
  std::string_view what;
  std::string_view header_value;
  std::string_view message_part;  // a part of the error message that says what was expected
};

void ExpectAccepted(const Accepted& c, const IdempotencyKeyOptions& options) {
  const absl::StatusOr<std::string> key = ParseIdempotencyKey(c.header_value, options);
  ASSERT_TRUE(key.ok()) << c.what << ": " << key.status();
  EXPECT_EQ(*key, c.key) << c.what;
}

void ExpectRejected(const Rejected& c, const IdempotencyKeyOptions& options) {
  const absl::StatusOr<std::string> key = ParseIdempotencyKey(c.header_value, options);
  ASSERT_FALSE(key.ok()) << c.what << ": accepted as \"" << *key << "\"";
  EXPECT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
  EXPECT_THAT(MessageOf(key), HasSubstr(c.message_part)) << c.what;
}

TEST(ParseIdempotencyKeyTest, AcceptsAQuotedKeyAndReturnsItWithoutTheQuotes) {
  const Accepted cases[] = {
      {"a UUID, as the draft's example", R"("8e03978e-40d5-43e8-bc93-6894a57f9324")",
       "8e03978e-40d5-43e8-bc93-6894a57f9324"},
      {"a single byte", R"("x")", "x"},
      {"spaces inside the quotes are part of the key", R"(" a b ")", " a b "},
      {"commas and semicolons inside the quotes are part of the key", R"("a,b;c=d")", "a,b;c=d"},
      {"every printable byte but quote and backslash",
       R"(" !#$%&'()*+,-./0123456789:;<=>?@AZ[]^_`az{|}~")",
       R"( !#$%&'()*+,-./0123456789:;<=>?@AZ[]^_`az{|}~)"},
  };
  for (const Accepted& c : cases) {
    ExpectAccepted(c, kStrict);
    ExpectAccepted(c, kBareTokens);
  }
}

TEST(ParseIdempotencyKeyTest, DecodesEscapedQuotesAndBackslashes) {
  const Accepted cases[] = {
      {"an escaped quote", R"("say \"hi\"")", R"(say "hi")"},
      {"an escaped backslash", R"("a\\b")", R"(a\b)"},
      {"a key that is only an escaped quote", R"("\"")", R"(")"},
      {"a key that is only an escaped backslash", R"("\\")", R"(\)"},
      {"an escaped backslash before the closing quote", R"("ab\\")", R"(ab\)"},
      {"escapes in a row", R"("\\\"\\")", R"(\"\)"},
  };
  for (const Accepted& c : cases) ExpectAccepted(c, kStrict);
}

TEST(ParseIdempotencyKeyTest, RejectsABackslashThatEscapesAnythingElse) {
  const Rejected cases[] = {
      {"an escaped letter", R"("a\nb")", "a backslash in a quoted string must escape"},
      {"an escaped space", R"("a\ b")", "must escape '\"' or '\\', got ' ' at offset 3"},
      {"an escaped control byte", "\"a\\\x01\"", "got 0x01 at offset 3"},
  };
  for (const Rejected& c : cases) ExpectRejected(c, kStrict);
}

TEST(ParseIdempotencyKeyTest, RejectsABareTokenUnlessConfigured) {
  ExpectRejected({"a bare UUID", "8e03978e-40d5-43e8-bc93-6894a57f9324",
                  "Idempotency-Key must be a quoted string (sf-string), got "
                  "\"8e03978e-40d5-43e8-bc93-6894a57f9324\""},
                 kStrict);
  ExpectRejected({"a bare word", "abc", "must be a quoted string (sf-string), got \"abc\""},
                 kStrict);
}

TEST(ParseIdempotencyKeyTest, AcceptsABareTokenWhenConfiguredAsTheSameKeyAsItsQuotedForm) {
  const Accepted cases[] = {
      {"a bare UUID", "8e03978e-40d5-43e8-bc93-6894a57f9324",
       "8e03978e-40d5-43e8-bc93-6894a57f9324"},
      {"every tchar", "!#$%&'*+-.^_`|~09AZaz", "!#$%&'*+-.^_`|~09AZaz"},
      {"a single byte", "x", "x"},
  };
  for (const Accepted& c : cases) {
    ExpectAccepted(c, kBareTokens);
    const std::string quoted = InQuotes(c.header_value);
    EXPECT_EQ(ParseIdempotencyKey(quoted, kBareTokens).value(), c.key) << c.what;
  }
}

TEST(ParseIdempotencyKeyTest, RejectsBareValuesThatAreNotTokens) {
  const Rejected cases[] = {
      {"a slash (an sf-token byte, but not a tchar)", "a/b",
       "must be a quoted string (sf-string) or a token (RFC 9110 tchar), got '/' at offset 1 of "
       "\"a/b\""},
      {"a colon", "a:b", "got ':' at offset 1"},
      {"a space inside", "a b", "got ' ' at offset 1"},
      {"a quote inside", "ab\"c\"", "got '\"' at offset 2"},
      {"a value that starts with a separator", "/ab", "or a token (RFC 9110 tchar), got \"/ab\""},
      {"a control byte", "ab\x7f", "got 0x7f at offset 2 of \"ab\\x7f\""},
  };
  for (const Rejected& c : cases) ExpectRejected(c, kBareTokens);
}

TEST(ParseIdempotencyKeyTest, AllowsSpacesAndTabsAroundTheValue) {
  ExpectAccepted({"spaces and tabs around a quoted key", " \t \"k 1\"\t ", "k 1"}, kStrict);
  ExpectAccepted({"spaces and tabs around a bare token", "\t k-1 \t", "k-1"}, kBareTokens);
}

TEST(ParseIdempotencyKeyTest, RejectsControlBytesInsideTheQuotesAndEscapesThemInTheMessage) {
  const Rejected cases[] = {
      {"a tab (allowed around the value, not in it)", "\"a\tb\"",
       "must hold only printable ASCII (0x20-0x7E), got 0x09 at offset 2 of \"\\\"a\\x09b\\\"\""},
      {"a line feed", "\"a\nb\"", "got 0x0a at offset 2"},
      {"a carriage return", "\"a\rb\"", "got 0x0d at offset 2"},
      {"a NUL byte", std::string_view("\"a\0b\"", 5), "got 0x00 at offset 2"},
      {"DEL", "\"a\x7f\"", "got 0x7f at offset 2"},
  };
  for (const Rejected& c : cases) {
    ExpectRejected(c, kStrict);
    const std::string message = MessageOf(ParseIdempotencyKey(c.header_value));
    for (char byte : message) {
      EXPECT_TRUE(byte >= 0x20 && byte <= 0x7e) << c.what << ": raw byte in \"" << message << "\"";
    }
  }
}

TEST(ParseIdempotencyKeyTest, RejectsBytesOutsideAscii) {
  ExpectRejected({"UTF-8 (an e with an acute accent)", "\"caf\xc3\xa9\"",
                  "must hold only printable ASCII (0x20-0x7E), got 0xc3 at offset 4"},
                 kStrict);
  ExpectRejected({"a lone 0xff byte", "\"\xff\"", "got 0xff at offset 1"}, kStrict);
  ExpectRejected({"UTF-8 in a bare token", "caf\xc3\xa9", "got 0xc3 at offset 3"}, kBareTokens);
}

TEST(ParseIdempotencyKeyTest, RejectsAnUnterminatedQuotedString) {
  const Rejected cases[] = {
      {"a lone quote", "\"", "must close its quoted string with '\"', got \"\\\"\""},
      {"no closing quote", "\"abc", "must close its quoted string with '\"'"},
      {"the closing quote escaped", R"("abc\")", "must close its quoted string"},
      {"a backslash at the very end", R"("abc\)", "must close its quoted string"},
      {"trailing whitespace is not a closing quote", "\"abc  ", "must close its quoted string"},
  };
  for (const Rejected& c : cases) {
    ExpectRejected(c, kStrict);
    ExpectRejected(c, kBareTokens);
  }
}

TEST(ParseIdempotencyKeyTest, RejectsAnythingAfterTheClosingQuote) {
  const Rejected cases[] = {
      {"a letter", R"("a"b)", "must end after its key, got 'b' at offset 3"},
      {"a second quoted string", R"("a" "b")", "must end after its key, got ' ' at offset 3"},
      {"a stray quote", R"("a"")", "must end after its key, got '\"' at offset 3"},
  };
  for (const Rejected& c : cases) {
    ExpectRejected(c, kStrict);
    ExpectRejected(c, kBareTokens);
  }
  ExpectRejected({"a quoted string after a token", R"(a"b")", "got '\"' at offset 1"}, kBareTokens);
}

// The draft defines no parameters, so keel rejects them rather than ignoring them: see the
// header's "Decisions beyond the draft".
TEST(ParseIdempotencyKeyTest, RejectsParametersAfterTheKey) {
  const Rejected cases[] = {
      {"a parameter with a value", R"("k";a=1)",
       "Idempotency-Key takes no parameters (the draft defines none), got \"\\\"k\\\";a=1\""},
      {"a boolean parameter", R"("k";a)", "takes no parameters"},
      {"two parameters", R"("k";a=1;b="x")", "takes no parameters"},
      {"an empty parameter", R"("k";)", "takes no parameters"},
  };
  for (const Rejected& c : cases) {
    ExpectRejected(c, kStrict);
    ExpectRejected(c, kBareTokens);
  }
  ExpectRejected({"a parameter after a bare token", "k;a=1", "takes no parameters"}, kBareTokens);
}

TEST(ParseIdempotencyKeyTest, RejectsAnEmptyKey) {
  ExpectRejected({"an empty quoted string", R"("")", "must not be empty, got \"\\\"\\\"\""},
                 kStrict);
  ExpectRejected({"an empty quoted string", R"("")", "must not be empty"}, kBareTokens);
  ExpectRejected({"an empty value", "", "must be a quoted string (sf-string), got an empty value"},
                 kStrict);
  ExpectRejected({"only whitespace", " \t ", "got an empty value"}, kBareTokens);
}

TEST(ParseIdempotencyKeyTest, AcceptsAKeyOfExactlyMaxLengthAndRejectsOneByteMore) {
  const std::string at_limit(255, 'k');
  const std::string over_limit(256, 'k');
  ExpectAccepted({"255 bytes", InQuotes(at_limit), at_limit}, kStrict);
  ExpectRejected({"256 bytes", InQuotes(over_limit),
                  "Idempotency-Key is 256 bytes long, over the limit of 255 bytes"},
                 kStrict);
  ExpectAccepted({"255 bytes, bare", at_limit, at_limit}, kBareTokens);
  ExpectRejected({"256 bytes, bare", over_limit, "over the limit of 255 bytes"}, kBareTokens);
}

TEST(ParseIdempotencyKeyTest, CountsTheLimitInDecodedBytes) {
  const IdempotencyKeyOptions four_bytes{.max_length = 4};
  // Six bytes between the quotes, four once decoded.
  ExpectAccepted({"escapes count once", R"("a\"b\\")", R"(a"b\)"}, four_bytes);
  ExpectRejected({"five decoded bytes", R"("a\"b\\c")", "5 bytes long, over the limit of 4 bytes"},
                 four_bytes);
  ExpectRejected({"a limit of zero rejects every key", R"("a")", "over the limit of 0 bytes"},
                 IdempotencyKeyOptions{.max_length = 0});
}

TEST(ParseIdempotencyKeyTest, ErrorMessagesQuoteAtMostFortyBytesOfTheValue) {
  const std::string long_value = "not-quoted-" + std::string(1000, 'x');
  const std::string message = MessageOf(ParseIdempotencyKey(long_value));
  EXPECT_THAT(message, HasSubstr("got \"not-quoted-" + std::string(29, 'x') + "...\""));
  EXPECT_THAT(message, Not(HasSubstr(std::string(30, 'x'))));
  EXPECT_LT(message.size(), 120u);
}

TEST(IdempotencyKeyFromHeadersTest, FindsTheHeaderAmongOthersWhateverTheCaseOfItsName) {
  for (std::string_view name : {"Idempotency-Key", "idempotency-key", "IDEMPOTENCY-KEY"}) {
    const Headers headers = {
        {"Content-Type", "application/json"}, {name, "\"k-1\""}, {"Content-Length", "2"}};
    const absl::StatusOr<std::string> key = IdempotencyKeyFromHeaders(headers);
    ASSERT_TRUE(key.ok()) << name << ": " << key.status();
    EXPECT_EQ(*key, "k-1") << name;
  }
}

TEST(IdempotencyKeyFromHeadersTest, ReturnsNotFoundWhenTheHeaderIsAbsent) {
  const Headers headers = {{"Content-Type", "application/json"},
                           {"Idempotency-Keys", "\"k\""},
                           {"X-Idempotency-Key", "\"k\""}};
  const absl::StatusOr<std::string> key = IdempotencyKeyFromHeaders(headers);
  EXPECT_EQ(key.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(IdempotencyKeyFromHeaders({}).status().code(), absl::StatusCode::kNotFound);
}

TEST(IdempotencyKeyFromHeadersTest, RejectsTheHeaderWhenItAppearsMoreThanOnce) {
  for (const Headers& headers :
       {Headers{{"Idempotency-Key", "\"a\""}, {"Idempotency-Key", "\"b\""}},
        Headers{{"Idempotency-Key", "\"a\""}, {"idempotency-key", "\"a\""}},
        Headers{{"Idempotency-Key", "\"a\""}, {"Accept", "*/*"}, {"IDEMPOTENCY-KEY", "junk"}}}) {
    const absl::StatusOr<std::string> key = IdempotencyKeyFromHeaders(headers);
    EXPECT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(MessageOf(key),
                HasSubstr("Idempotency-Key must appear once in a request, got 2 header lines"));
  }
}

TEST(IdempotencyKeyFromHeadersTest, RejectsAListInOneHeaderLine) {
  for (std::string_view list : {R"("a", "b")", R"("a","b")", R"("a",)", "a, b"}) {
    const absl::StatusOr<std::string> key =
        IdempotencyKeyFromHeaders({{"Idempotency-Key", list}}, kBareTokens);
    EXPECT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument) << list;
    EXPECT_THAT(MessageOf(key), HasSubstr("must hold exactly one key, got a list")) << list;
  }
}

TEST(IdempotencyKeyFromHeadersTest, ParsesTheOneHeaderWithTheGivenOptions) {
  const Headers headers = {{"Idempotency-Key", " abc "}};
  EXPECT_EQ(IdempotencyKeyFromHeaders(headers).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IdempotencyKeyFromHeaders(headers, kBareTokens).value(), "abc");
  EXPECT_EQ(
      IdempotencyKeyFromHeaders(headers, {.max_length = 2, .accept_bare_token = true}).status(),
      absl::InvalidArgumentError("Idempotency-Key is 3 bytes long, over the limit of 2 bytes"));
}

}  // namespace
}  // namespace keel
