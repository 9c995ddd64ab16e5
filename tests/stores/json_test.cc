#include "json.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace keel::internal {
namespace {

using ::testing::HasSubstr;

// A Txn response of etcd's JSON gateway (/v3/kv/txn) whose compare succeeded and whose one
// operation read a key.
constexpr std::string_view kTxnResponse =
    R"({"header":{"cluster_id":"3249","revision":"2","raft_term":"2"},"succeeded":true,)"
    R"("responses":[{"response_range":{"kvs":[{"key":"a2Vl","create_revision":"2",)"
    R"("value":"bjE=","lease":"2324035534747510021"}],"count":"1"}}]})";

// An error response of the gateway (gRPC code 5 is NOT_FOUND).
constexpr std::string_view kErrorResponse =
    R"({"error":"etcdserver: requested lease not found","message":"etcdserver: requested )"
    R"(lease not found","code":5})";

// Parses `text`, failing the test when it is rejected.
JsonValue Parse(std::string_view text, JsonLimits limits = {}) {
  absl::StatusOr<JsonValue> parsed = ParseJson(text, limits);
  EXPECT_TRUE(parsed.ok()) << parsed.status() << " for " << text;
  return parsed.ok() ? *std::move(parsed) : JsonValue();
}

// The message ParseJson rejects `text` with, failing the test when it is accepted or the code
// is not InvalidArgument.
std::string ErrorFor(std::string_view text, JsonLimits limits = {}) {
  absl::StatusOr<JsonValue> parsed = ParseJson(text, limits);
  EXPECT_FALSE(parsed.ok()) << "accepted: " << text;
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  return std::string(parsed.status().message());
}

// The decoded string of a document that is one string literal.
std::string DecodedString(std::string_view literal) {
  const JsonValue value = Parse(literal);
  EXPECT_TRUE(value.is_string()) << literal;
  return value.string();
}

std::string Nested(int depth, std::string_view inner = "1") {
  return std::string(depth, '[') + std::string(inner) + std::string(depth, ']');
}

TEST(JsonTest, ReadsAnEtcdTxnResponse) {
  const JsonValue body = Parse(kTxnResponse);
  ASSERT_TRUE(body.is_object());
  EXPECT_TRUE(body.BoolOr("succeeded", false));

  const JsonValue* revision = body.Path({"header", "revision"});
  ASSERT_NE(revision, nullptr);
  EXPECT_TRUE(revision->is_string());
  EXPECT_EQ(revision->AsInt64(), 2);
  EXPECT_EQ(body.Path({"header", "cluster_id"})->AsInt64(), 3249);

  const JsonValue* responses = body.Find("responses");
  ASSERT_NE(responses, nullptr);
  ASSERT_EQ(responses->items().size(), 1u);
  const JsonValue* range = responses->items()[0].Find("response_range");
  ASSERT_NE(range, nullptr);
  EXPECT_EQ(range->Find("count")->AsInt64(), 1);
  const JsonValue* kvs = range->Find("kvs");
  ASSERT_NE(kvs, nullptr);
  ASSERT_TRUE(kvs->is_array());
  ASSERT_EQ(kvs->items().size(), 1u);
  const JsonValue& kv = kvs->items()[0];
  EXPECT_EQ(kv.Find("key")->string(), "a2Vl");
  EXPECT_EQ(kv.Find("value")->string(), "bjE=");
  EXPECT_EQ(kv.Find("create_revision")->AsInt64(), 2);
  EXPECT_EQ(kv.Find("lease")->AsInt64(), int64_t{2324035534747510021});
  EXPECT_EQ(kv.Find("mod_revision"), nullptr);
}

TEST(JsonTest, AMissingBooleanReadsAsFalse) {
  // protobuf's JSON mapping leaves out fields at their default value: a failed Txn has no
  // "succeeded" at all.
  const JsonValue body = Parse(R"({"header":{"revision":"7"},"responses":[]})");
  EXPECT_EQ(body.Find("succeeded"), nullptr);
  EXPECT_FALSE(body.BoolOr("succeeded", false));
  EXPECT_TRUE(body.BoolOr("succeeded", true));
  EXPECT_FALSE(Parse(R"({"succeeded":false})").BoolOr("succeeded", true));
  // A member of another type is not a boolean either.
  EXPECT_FALSE(Parse(R"({"succeeded":"true"})").BoolOr("succeeded", false));
  EXPECT_TRUE(body.Find("responses")->items().empty());
}

TEST(JsonTest, ReadsAnEtcdErrorResponse) {
  const JsonValue body = Parse(kErrorResponse);
  EXPECT_EQ(body.Find("error")->string(), "etcdserver: requested lease not found");
  const JsonValue* code = body.Find("code");
  ASSERT_NE(code, nullptr);
  EXPECT_TRUE(code->is_number());
  EXPECT_EQ(code->AsInt64(), 5);
  EXPECT_EQ(body.Find("header"), nullptr);
}

TEST(JsonTest, ReadsEveryValueType) {
  const JsonValue body =
      Parse(R"({"null":null,"true":true,"false":false,"number":-12.5e-1,"string":"s",)"
            R"("array":[1,"two",[],{}],"object":{"inner":null}})");
  ASSERT_EQ(body.kind(), JsonValue::Kind::kObject);
  EXPECT_EQ(body.Find("null")->kind(), JsonValue::Kind::kNull);
  EXPECT_TRUE(body.Find("null")->is_null());
  EXPECT_TRUE(body.Find("true")->is_bool());
  EXPECT_TRUE(body.Find("true")->bool_or(false));
  EXPECT_FALSE(body.Find("false")->bool_or(true));
  EXPECT_TRUE(body.Find("number")->is_number());
  EXPECT_EQ(body.Find("number")->number_text(), "-12.5e-1");
  EXPECT_EQ(body.Find("number")->AsDouble(), -1.25);
  EXPECT_TRUE(body.Find("string")->is_string());
  EXPECT_EQ(body.Find("string")->string(), "s");
  const JsonValue* array = body.Find("array");
  ASSERT_TRUE(array->is_array());
  ASSERT_EQ(array->items().size(), 4u);
  EXPECT_EQ(array->items()[0].AsInt64(), 1);
  EXPECT_EQ(array->items()[1].string(), "two");
  EXPECT_TRUE(array->items()[2].is_array());
  EXPECT_TRUE(array->items()[2].items().empty());
  EXPECT_TRUE(array->items()[3].is_object());
  EXPECT_TRUE(array->items()[3].members().empty());
  EXPECT_TRUE(body.Path({"object", "inner"})->is_null());
}

TEST(JsonTest, AcceptsAScalarAsTheWholeDocument) {
  EXPECT_TRUE(Parse("null").is_null());
  EXPECT_TRUE(Parse("true").bool_or(false));
  EXPECT_FALSE(Parse("false").bool_or(true));
  EXPECT_EQ(Parse("0").AsInt64(), 0);
  EXPECT_EQ(Parse(R"("x")").string(), "x");
  EXPECT_EQ(Parse(" \t\r\n 42 \t\r\n ").AsInt64(), 42);
}

TEST(JsonTest, KeepsObjectMembersInDocumentOrder) {
  const JsonValue body = Parse(R"({"b":1, "a":2, "c":{"z":0,"y":1}})");
  ASSERT_EQ(body.members().size(), 3u);
  EXPECT_EQ(body.members()[0].first, "b");
  EXPECT_EQ(body.members()[1].first, "a");
  EXPECT_EQ(body.members()[2].first, "c");
  EXPECT_EQ(body.members()[1].second.AsInt64(), 2);
  EXPECT_EQ(body.Find("c")->members()[0].first, "z");
}

TEST(JsonTest, PathStopsAtAMissingStepOrANonObject) {
  const JsonValue body = Parse(R"({"a":{"b":{"c":true}},"list":[{"b":1}]})");
  EXPECT_TRUE(body.Path({"a", "b", "c"})->bool_or(false));
  EXPECT_EQ(body.Path({}), &body);
  EXPECT_EQ(body.Path({"a", "x", "c"}), nullptr);
  EXPECT_EQ(body.Path({"a", "b", "c", "d"}), nullptr);
  EXPECT_EQ(body.Path({"list", "b"}), nullptr);
}

TEST(JsonTest, AccessorsOfAnotherTypeGiveEmptyValues) {
  const JsonValue number = Parse("12");
  EXPECT_EQ(number.string(), "");
  EXPECT_TRUE(number.items().empty());
  EXPECT_TRUE(number.members().empty());
  EXPECT_EQ(number.Find("x"), nullptr);
  EXPECT_TRUE(number.bool_or(true));
  EXPECT_FALSE(number.BoolOr("x", false));
  const JsonValue text = Parse(R"("12")");
  EXPECT_EQ(text.number_text(), "");
  EXPECT_EQ(text.AsDouble(), std::nullopt);
  EXPECT_EQ(Parse("[1]").Find("0"), nullptr);
  EXPECT_EQ(Parse("{}").items().size(), 0u);
  const JsonValue null;
  EXPECT_TRUE(null.is_null());
  EXPECT_EQ(null.AsInt64(), std::nullopt);
}

TEST(JsonTest, ValuesCanBeCopied) {
  const JsonValue body = Parse(kTxnResponse);
  const JsonValue copy = body;  // NOLINT(performance-unnecessary-copy-initialization)
  EXPECT_EQ(copy.Path({"header", "revision"})->AsInt64(), 2);
  EXPECT_NE(copy.Find("header"), body.Find("header"));
}

TEST(JsonTest, AsInt64AcceptsIntegersAndStringsOfDecimalDigits) {
  EXPECT_EQ(Parse("0").AsInt64(), 0);
  EXPECT_EQ(Parse("-0").AsInt64(), 0);
  EXPECT_EQ(Parse("-17").AsInt64(), -17);
  EXPECT_EQ(Parse(R"("-17")").AsInt64(), -17);
  EXPECT_EQ(Parse(R"("0042")").AsInt64(), 42);
  EXPECT_EQ(Parse("9223372036854775807").AsInt64(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(Parse("-9223372036854775808").AsInt64(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(Parse(R"("9223372036854775807")").AsInt64(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(Parse(R"("-9223372036854775808")").AsInt64(), std::numeric_limits<int64_t>::min());
}

TEST(JsonTest, AsInt64GivesNulloptOutsideTheInt64Range) {
  EXPECT_EQ(Parse("9223372036854775808").AsInt64(), std::nullopt);
  EXPECT_EQ(Parse("-9223372036854775809").AsInt64(), std::nullopt);
  EXPECT_EQ(Parse(R"("9223372036854775808")").AsInt64(), std::nullopt);
  EXPECT_EQ(Parse(R"("-9223372036854775809")").AsInt64(), std::nullopt);
  EXPECT_EQ(Parse(R"("18446744073709551616")").AsInt64(), std::nullopt);
  EXPECT_EQ(Parse("99999999999999999999999999999").AsInt64(), std::nullopt);
}

TEST(JsonTest, AsInt64RejectsFractionsExponentsAndOtherStrings) {
  for (const std::string_view text :
       {"1.0", "1e3", "-1E0", "true", "null", "[1]", R"({"a":1})", R"("")", R"("-")", R"("+1")",
        R"(" 1")", R"("1 ")", R"("1.5")", R"("0x10")", R"("12a")", R"("--1")"}) {
    EXPECT_EQ(Parse(text).AsInt64(), std::nullopt) << text;
  }
}

TEST(JsonTest, AsDoubleReadsNumbersOnly) {
  EXPECT_EQ(Parse("1").AsDouble(), 1.0);
  EXPECT_EQ(Parse("-0.5").AsDouble(), -0.5);
  EXPECT_EQ(Parse("2.5E+2").AsDouble(), 250.0);
  EXPECT_EQ(Parse("1e-2").AsDouble(), 0.01);
  EXPECT_EQ(Parse("1e400").AsDouble(), std::nullopt);
  EXPECT_EQ(Parse("-1e400").AsDouble(), std::nullopt);
  EXPECT_EQ(Parse("1e-400").AsDouble(), std::nullopt);
  EXPECT_EQ(Parse("0e999999").AsDouble(), 0.0);
  EXPECT_EQ(Parse(R"("1.5")").AsDouble(), std::nullopt);
}

TEST(JsonTest, DecodesTheShortEscapes) {
  EXPECT_EQ(DecodedString(R"("\"\\\/\b\f\n\r\t")"), "\"\\/\b\f\n\r\t");
  EXPECT_EQ(DecodedString(R"("a\nb")"), "a\nb");
  EXPECT_EQ(DecodedString(R"("")"), "");
}

TEST(JsonTest, DecodesUnicodeEscapesToUtf8) {
  EXPECT_EQ(DecodedString(R"("\u0041")"), "A");
  EXPECT_EQ(DecodedString(R"("\u00e9\u00E9")"), "\xc3\xa9\xc3\xa9");  // é é
  EXPECT_EQ(DecodedString(R"("\u20ac")"), "\xe2\x82\xac");            // €
  EXPECT_EQ(DecodedString(R"("\uffff")"), "\xef\xbf\xbf");            // U+FFFF
  EXPECT_EQ(DecodedString(R"("\ud83d\ude00")"), "\xf0\x9f\x98\x80");  // U+1F600
  EXPECT_EQ(DecodedString(R"("\uDBFF\uDFFF")"), "\xf4\x8f\xbf\xbf");  // U+10FFFF
  EXPECT_EQ(DecodedString(R"("\u0000")"), std::string(1, '\0'));
  EXPECT_EQ(DecodedString(R"("x\u0000y")"), std::string("x\0y", 3));
}

TEST(JsonTest, PassesRawUtf8Through) {
  const std::string text = "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf\"";
  EXPECT_EQ(DecodedString(text), text.substr(1, text.size() - 2));
}

TEST(JsonTest, RejectsLoneSurrogates) {
  EXPECT_THAT(ErrorFor(R"("\ud800")"), HasSubstr("lone high surrogate \\ud800"));
  EXPECT_THAT(ErrorFor(R"("\ud800")"), HasSubstr("at byte 1"));
  EXPECT_THAT(ErrorFor(R"("ab\udc00")"), HasSubstr("lone low surrogate \\udc00"));
  EXPECT_THAT(ErrorFor(R"("ab\udc00")"), HasSubstr("at byte 3"));
  EXPECT_THAT(ErrorFor(R"("\ud800\u0041")"), HasSubstr("lone high surrogate"));
  EXPECT_THAT(ErrorFor(R"("\ud800\ud800")"), HasSubstr("lone high surrogate"));
  EXPECT_THAT(ErrorFor(R"("\ud800x")"), HasSubstr("lone high surrogate"));
  EXPECT_THAT(ErrorFor(R"("\ud800\n")"), HasSubstr("lone high surrogate"));
  EXPECT_THAT(ErrorFor(R"("\udc00\ud800")"), HasSubstr("lone low surrogate"));
}

TEST(JsonTest, RejectsInvalidUtf8) {
  struct Case {
    std::string_view what;
    std::string text;
  };
  const Case cases[] = {
      {"a stray continuation byte", "\"a\x80\""},
      {"an overlong NUL", "\"a\xc0\x80\""},
      {"an overlong slash", "\"a\xe0\x80\xaf\""},
      {"an encoded surrogate", "\"a\xed\xa0\x80\""},
      {"a code point above U+10FFFF", "\"a\xf4\x90\x80\x80\""},
      {"a truncated sequence", "\"a\xe2\x82\""},
      {"a truncated sequence at the end", "\"a\xe2\x82"},
      {"byte 0xff", "\"a\xff\""},
      {"byte 0xf5", "\"a\xf5\x80\x80\x80\""},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(ErrorFor(c.text), HasSubstr("json: invalid UTF-8 in string at byte 2")) << c.what;
  }
  // Outside strings, no byte above 0x7F is JSON.
  EXPECT_EQ(ErrorFor("[\xc3\xa9]"), "json: expected a value at byte 1, got byte 0xc3");
}

TEST(JsonTest, RejectsEmptyInput) {
  EXPECT_EQ(ErrorFor(""), "json: expected a value at byte 0, got the end of the input");
  EXPECT_EQ(ErrorFor(" \n\t "), "json: expected a value at byte 4, got the end of the input");
}

TEST(JsonTest, RejectsTrailingGarbage) {
  EXPECT_EQ(ErrorFor("{} x"),
            "json: expected the end of the input after the value at byte 3, got 'x'");
  EXPECT_EQ(ErrorFor("1 2"),
            "json: expected the end of the input after the value at byte 2, got '2'");
  EXPECT_EQ(ErrorFor("truex"),
            "json: expected the end of the input after the value at byte 4, got 'x'");
  EXPECT_THAT(ErrorFor(std::string("{}\0", 3)), HasSubstr("at byte 2, got byte 0x00"));
  EXPECT_THAT(ErrorFor("[]]"), HasSubstr("at byte 2"));
}

TEST(JsonTest, RejectsAnUnterminatedString) {
  EXPECT_EQ(ErrorFor(R"({"a":"bc)"), "json: unterminated string (opened at byte 5) at byte 8");
  EXPECT_EQ(ErrorFor(R"(")"), "json: unterminated string (opened at byte 0) at byte 1");
  EXPECT_EQ(ErrorFor(R"("ab\)"), "json: unterminated string (opened at byte 0) at byte 4");
  EXPECT_EQ(ErrorFor(R"({"ke)"), "json: unterminated string (opened at byte 1) at byte 4");
}

TEST(JsonTest, RejectsABadEscape) {
  EXPECT_THAT(ErrorFor(R"("a\x")"), HasSubstr("invalid escape in string"));
  EXPECT_THAT(ErrorFor(R"("a\x")"), HasSubstr("at byte 2, got \\ followed by 'x'"));
  EXPECT_THAT(ErrorFor(R"("\')"), HasSubstr("at byte 1"));
  EXPECT_THAT(ErrorFor(R"("\U0041")"), HasSubstr("invalid escape"));
  EXPECT_EQ(ErrorFor(R"("\u12g4")"), "json: expected 4 hex digits after \\u in string at byte 1");
  EXPECT_EQ(ErrorFor(R"("\u12")"), "json: expected 4 hex digits after \\u in string at byte 1");
  EXPECT_EQ(ErrorFor(R"("\u)"), "json: expected 4 hex digits after \\u in string at byte 1");
}

TEST(JsonTest, RejectsLeadingZeros) {
  EXPECT_THAT(ErrorFor("01"), HasSubstr("json: leading zero in number"));
  EXPECT_THAT(ErrorFor("01"), HasSubstr("at byte 0"));
  EXPECT_THAT(ErrorFor("-012"), HasSubstr("at byte 1"));
  EXPECT_THAT(ErrorFor("[1, 00]"), HasSubstr("at byte 4"));
  EXPECT_THAT(ErrorFor(R"({"a":007})"), HasSubstr("leading zero in number"));
  // 0 alone, and 0 before a fraction or exponent, are fine.
  EXPECT_EQ(Parse("[0, -0, 0.5, 0e1]").items().size(), 4u);
}

TEST(JsonTest, RejectsMalformedNumbers) {
  EXPECT_EQ(ErrorFor("-"),
            "json: expected a digit after '-' in number at byte 1, got the end of the input");
  EXPECT_EQ(ErrorFor("-a"), "json: expected a digit after '-' in number at byte 1, got 'a'");
  EXPECT_EQ(ErrorFor("1."),
            "json: expected a digit after '.' in number at byte 2, got the end of the input");
  EXPECT_EQ(ErrorFor("1.e3"), "json: expected a digit after '.' in number at byte 2, got 'e'");
  EXPECT_EQ(ErrorFor("1e"),
            "json: expected a digit in the exponent of number at byte 2, got the end of the input");
  EXPECT_EQ(ErrorFor("1e+"),
            "json: expected a digit in the exponent of number at byte 3, got the end of the input");
  EXPECT_EQ(ErrorFor(".5"), "json: expected a value at byte 0, got '.'");
  EXPECT_EQ(ErrorFor("+1"), "json: expected a value at byte 0, got '+'");
  EXPECT_THAT(ErrorFor("0x10"), HasSubstr("after the value at byte 1, got 'x'"));
  EXPECT_THAT(ErrorFor("NaN"), HasSubstr("expected a value at byte 0"));
  EXPECT_THAT(ErrorFor("-Infinity"), HasSubstr("expected a digit after '-'"));
}

TEST(JsonTest, RejectsControlCharactersInStrings) {
  EXPECT_EQ(ErrorFor("\"a\nb\""),
            "json: unescaped control character byte 0x0a in string (write it as a \\u escape) at "
            "byte 2");
  EXPECT_THAT(ErrorFor(std::string("\"\0\"", 3)), HasSubstr("byte 0x00 in string"));
  EXPECT_THAT(ErrorFor("{\"k\t\":1}"), HasSubstr("control character byte 0x09"));
  EXPECT_THAT(ErrorFor("\"\x1f\""), HasSubstr("at byte 1"));
  // DEL (0x7F) is not a control character to JSON.
  EXPECT_EQ(DecodedString("\"\x7f\""), "\x7f");
}

TEST(JsonTest, RejectsMalformedObjects) {
  EXPECT_EQ(ErrorFor(R"({"key" 1})"), "json: expected ':' after object key at byte 7, got '1'");
  EXPECT_EQ(ErrorFor(R"({"a":1,})"), "json: expected a string key after ',' at byte 7, got '}'");
  EXPECT_EQ(ErrorFor(R"({a:1})"), "json: expected a string key or '}' at byte 1, got 'a'");
  EXPECT_EQ(ErrorFor(R"({'a':1})"), "json: expected a string key or '}' at byte 1, got byte 0x27");
  EXPECT_EQ(ErrorFor(R"({"a":1 "b":2})"),
            "json: expected ',' or '}' after an object member at byte 7, got '\"'");
  EXPECT_EQ(ErrorFor(R"({"a":})"), "json: expected a value at byte 5, got '}'");
  EXPECT_EQ(ErrorFor(R"({"a":1)"),
            "json: expected ',' or '}' after an object member at byte 6, got the end of the input");
  EXPECT_EQ(ErrorFor("{"),
            "json: expected a string key or '}' at byte 1, got the end of the input");
  EXPECT_EQ(ErrorFor(R"({"a":1]})"),
            "json: expected ',' or '}' after an object member at byte 6, got ']'");
}

TEST(JsonTest, RejectsMalformedArrays) {
  EXPECT_EQ(ErrorFor("[1,]"), "json: expected a value at byte 3, got ']'");
  EXPECT_EQ(ErrorFor("[,1]"), "json: expected a value at byte 1, got ','");
  EXPECT_EQ(ErrorFor("[1 2]"),
            "json: expected ',' or ']' after an array element at byte 3, got '2'");
  EXPECT_EQ(ErrorFor("["), "json: expected a value at byte 1, got the end of the input");
  EXPECT_EQ(ErrorFor("[1"),
            "json: expected ',' or ']' after an array element at byte 2, got the end of the input");
  EXPECT_EQ(ErrorFor("[1}"), "json: expected ',' or ']' after an array element at byte 2, got '}'");
}

TEST(JsonTest, RejectsWhatIsNotJson) {
  EXPECT_EQ(ErrorFor("tru"), "json: expected true at byte 0");
  EXPECT_EQ(ErrorFor("[nul]"), "json: expected null at byte 1");
  EXPECT_EQ(ErrorFor("True"), "json: expected a value at byte 0, got 'T'");
  EXPECT_EQ(ErrorFor("fals"), "json: expected false at byte 0");
  EXPECT_EQ(ErrorFor("\xef\xbb\xbf{}"), "json: expected a value at byte 0, got byte 0xef");
  EXPECT_EQ(ErrorFor("\f1"), "json: expected a value at byte 0, got byte 0x0c");
  EXPECT_EQ(ErrorFor("'a'"), "json: expected a value at byte 0, got byte 0x27");
  EXPECT_EQ(ErrorFor("/* c */ 1"), "json: expected a value at byte 0, got '/'");
}

TEST(JsonTest, RejectsDuplicateKeys) {
  EXPECT_EQ(ErrorFor(R"({"a":1,"a":2})"), "json: duplicate key \"a\" in object at byte 7");
  // Keys are compared decoded.
  EXPECT_EQ(ErrorFor(R"({"a":1, "\u0061":2})"), "json: duplicate key \"a\" in object at byte 8");
  // A key in an error message is escaped and shortened.
  EXPECT_EQ(ErrorFor(R"({"\u0001\"":1,"\u0001\"":2})"),
            "json: duplicate key \"\\x01\\\"\" in object at byte 14");
  const std::string long_key(100, 'k');
  EXPECT_THAT(ErrorFor("{\"" + long_key + "\":1,\"" + long_key + "\":2}"),
              HasSubstr("duplicate key \"" + std::string(40, 'k') + "...\" in object"));
  // The same key in different objects is fine.
  EXPECT_TRUE(Parse(R"({"a":{"a":1},"b":[{"a":1},{"a":2}]})").is_object());
}

TEST(JsonTest, RejectsDuplicateKeysInLargeObjects) {
  std::string text = "{";
  for (int i = 0; i < 100; ++i) text += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  const JsonValue many = Parse(text.substr(0, text.size() - 1) + "}");
  ASSERT_EQ(many.members().size(), 100u);
  EXPECT_EQ(many.Find("k99")->AsInt64(), 99);
  for (const int repeated : {0, 16, 17, 50, 99}) {
    const std::string with_duplicate = text + "\"k" + std::to_string(repeated) + "\":0}";
    EXPECT_THAT(ErrorFor(with_duplicate),
                HasSubstr("duplicate key \"k" + std::to_string(repeated) + "\" in object at byte " +
                          std::to_string(text.size())));
  }
}

TEST(JsonTest, EnforcesTheDepthLimit) {
  EXPECT_EQ(Parse(Nested(64)).items().size(), 1u);
  EXPECT_EQ(ErrorFor(Nested(65)),
            "json: nesting deeper than the limit of 64 arrays and objects at byte 64");
  JsonLimits limits;
  limits.max_depth = 2;
  EXPECT_TRUE(Parse(R"([[1], {"a":1}, []])", limits).is_array());
  EXPECT_EQ(ErrorFor(R"({"a":{"b":{}}})", limits),
            "json: nesting deeper than the limit of 2 arrays and objects at byte 10");
  EXPECT_THAT(ErrorFor("[[[]]]", limits), HasSubstr("at byte 2"));
  limits.max_depth = 0;
  EXPECT_EQ(Parse("\"scalar\"", limits).string(), "scalar");
  EXPECT_THAT(ErrorFor("[]", limits), HasSubstr("limit of 0 arrays and objects at byte 0"));
}

TEST(JsonTest, ParsesDeepNestingWithoutDeepRecursion) {
  // The parser keeps its stack on the heap; the limit, not the call stack, bounds the depth.
  JsonLimits limits;
  limits.max_depth = 2000;
  const JsonValue deep = Parse(Nested(2000), limits);
  const JsonValue* inner = &deep;
  for (int i = 0; i < 2000; ++i) {
    ASSERT_EQ(inner->items().size(), 1u);
    inner = &inner->items()[0];
  }
  EXPECT_EQ(inner->AsInt64(), 1);
  // Far past the default limit, rejected at the first bracket past it.
  EXPECT_THAT(ErrorFor(std::string(1'000'000, '[')),
              HasSubstr("limit of 64 arrays and objects at byte 64"));
}

TEST(JsonTest, EnforcesTheSizeLimit) {
  JsonLimits limits;
  limits.max_input_bytes = 10;
  EXPECT_EQ(Parse("[1,2,3,45]", limits).items().size(), 4u);
  EXPECT_EQ(ErrorFor("[1,2,3,4,5]", limits),
            "json: input of 11 bytes is over the limit of 10 bytes at byte 10");
  EXPECT_EQ(JsonLimits().max_input_bytes, size_t{16} << 20);
  EXPECT_THAT(ErrorFor(std::string((size_t{16} << 20) + 1, ' ')),
              HasSubstr("input of 16777217 bytes is over the limit of 16777216 bytes"));
}

TEST(JsonTest, JsonQuoteEscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(JsonQuote(""), R"("")");
  EXPECT_EQ(JsonQuote("plain"), R"("plain")");
  EXPECT_EQ(JsonQuote("say \"hi\" \\ /"), R"("say \"hi\" \\ /")");
  EXPECT_EQ(JsonQuote("\b\f\n\r\t"), R"("\b\f\n\r\t")");
  EXPECT_EQ(JsonQuote(std::string("\0\x01\x1f\x7f", 4)), "\"\\u0000\\u0001\\u001f\x7f\"");
  EXPECT_EQ(JsonQuote("caf\xc3\xa9 \xf0\x9f\x98\x80"), "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
}

TEST(JsonTest, JsonQuoteRoundTripsThroughParseJson) {
  std::string every_ascii_byte;
  for (int c = 0; c < 0x80; ++c) every_ascii_byte.push_back(static_cast<char>(c));
  const std::string cases[] = {
      "",
      every_ascii_byte,
      "etcdserver: requested lease not found",
      "a2Vl",
      "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf",
      std::string("nul\0in the middle", 17),
      "\\u0041 stays literal",
  };
  for (const std::string& s : cases) {
    EXPECT_EQ(DecodedString(JsonQuote(s)), s);
    // And as a key and a value of a request body.
    const JsonValue body = Parse("{" + JsonQuote(s) + ":" + JsonQuote(s) + "}");
    ASSERT_EQ(body.members().size(), 1u);
    EXPECT_EQ(body.members()[0].first, s);
    EXPECT_EQ(body.Find(s)->string(), s);
  }
}

}  // namespace
}  // namespace keel::internal
