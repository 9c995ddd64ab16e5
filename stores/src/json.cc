#include "json.h"

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "quote_for_message.h"

namespace keel::internal {
namespace {

// Objects with up to this many members are checked for a repeated key by a linear scan; larger
// ones also keep a hash set of their keys, so that a hostile object is not quadratic.
constexpr size_t kLinearKeyCheckMembers = 16;

bool IsWhitespace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsPrintableAscii(unsigned char c) { return c >= 0x20 && c <= 0x7e; }

// One byte for a message: 'a' when printable, byte 0x0a otherwise.
std::string DescribeByte(unsigned char c) {
  if (IsPrintableAscii(c) && c != '\'') return std::string{'\'', static_cast<char>(c), '\''};
  return absl::StrCat("byte 0x", absl::Hex(c, absl::kZeroPad2));
}

// The length of the well-formed UTF-8 sequence (RFC 3629 §4) at the start of `s`, whose first
// byte is 0x80 or above; 0 when it is not well formed (a stray continuation byte, an overlong
// form, an encoded surrogate, a code point above U+10FFFF, or a truncated sequence).
size_t Utf8SequenceLength(std::string_view s) {
  const unsigned char lead = static_cast<unsigned char>(s[0]);
  size_t length = 0;
  // The range of the second byte; the others are 0x80-0xBF.
  unsigned char low = 0x80;
  unsigned char high = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead == 0xe0) {
    length = 3;
    low = 0xa0;  // not overlong
  } else if ((lead >= 0xe1 && lead <= 0xec) || lead == 0xee || lead == 0xef) {
    length = 3;
  } else if (lead == 0xed) {
    length = 3;
    high = 0x9f;  // not a surrogate
  } else if (lead == 0xf0) {
    length = 4;
    low = 0x90;  // not overlong
  } else if (lead >= 0xf1 && lead <= 0xf3) {
    length = 4;
  } else if (lead == 0xf4) {
    length = 4;
    high = 0x8f;  // not above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < length) return 0;
  const unsigned char second = static_cast<unsigned char>(s[1]);
  if (second < low || second > high) return 0;
  for (size_t i = 2; i < length; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80 || c > 0xbf) return 0;
  }
  return length;
}

// Appends code point `cp` (at most U+10FFFF, not a surrogate) as UTF-8.
void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// The value of four hex digits at the start of `s`, or nullopt.
std::optional<uint32_t> ParseHex4(std::string_view s) {
  if (s.size() < 4) return std::nullopt;
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) {
    const char c = s[i];
    uint32_t digit;
    if (c >= '0' && c <= '9') {
      digit = static_cast<uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<uint32_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      digit = static_cast<uint32_t>(c - 'A' + 10);
    } else {
      return std::nullopt;
    }
    value = value << 4 | digit;
  }
  return value;
}

bool IsHighSurrogate(uint32_t cp) { return cp >= 0xd800 && cp <= 0xdbff; }
bool IsLowSurrogate(uint32_t cp) { return cp >= 0xdc00 && cp <= 0xdfff; }

// `s` as an int64 when it is decimal digits with an optional leading '-' and in range.
std::optional<int64_t> ParseDecimalInt64(std::string_view s) {
  const bool negative = !s.empty() && s.front() == '-';
  if (negative) s.remove_prefix(1);
  if (s.empty()) return std::nullopt;
  const uint64_t limit = negative ? uint64_t{1} << 63 : (uint64_t{1} << 63) - 1;
  uint64_t magnitude = 0;
  for (const char c : s) {
    if (!IsDigit(c)) return std::nullopt;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (magnitude > (limit - digit) / 10) return std::nullopt;
    magnitude = magnitude * 10 + digit;
  }
  // Modular conversion (C++20): 2^63 negated is INT64_MIN.
  return negative ? static_cast<int64_t>(uint64_t{0} - magnitude) : static_cast<int64_t>(magnitude);
}

// An empty T for the accessors to return a reference to; built on first use and never
// destroyed (no static object with a non-trivial destructor).
template <typename T>
const T& Empty() noexcept {
  static const T* const empty = new T();
  return *empty;
}

}  // namespace

// ParseJson's state. Iterative: open arrays and objects are frames on a heap stack, so the
// depth limit bounds memory, not the call stack.
class JsonParser {
 public:
  JsonParser(std::string_view text, const JsonLimits& limits) : text_(text), limits_(limits) {}

  absl::StatusOr<JsonValue> Parse();

 private:
  // An array or object whose closing bracket has not been read yet.
  struct Frame {
    bool is_object = false;
    std::vector<JsonValue> items;            // an array's elements so far
    std::vector<JsonValue::Member> members;  // an object's members so far
    std::string key;                         // the key of the member whose value is being read
    std::unordered_set<std::string> keys;    // members' keys, once there are more than
                                             // kLinearKeyCheckMembers of them
  };

  bool AtEnd() const { return pos_ >= text_.size(); }
  void SkipWhitespace() {
    while (!AtEnd() && IsWhitespace(text_[pos_])) ++pos_;
  }
  // What is at the current position, for a message.
  std::string Got() const {
    return AtEnd() ? "the end of the input" : DescribeByte(static_cast<unsigned char>(text_[pos_]));
  }
  // "json: <what> at byte <offset>[, got <got>]".
  static absl::Status Error(size_t offset, std::string_view what, std::string_view got = {}) {
    std::string message = absl::StrCat("json: ", std::string(what), " at byte ", offset);
    if (!got.empty()) absl::StrAppend(&message, ", got ", std::string(got));
    return absl::InvalidArgumentError(message);
  }

  // Reads a scalar (string, number, true, false, null) at the current position, which is not
  // whitespace, '[' or '{'.
  absl::Status ParseScalar(JsonValue* out);
  // Reads a string literal; the current byte is its opening quote.
  absl::Status ParseString(std::string* out);
  // Reads one escape sequence into `out`; the current byte is its backslash.
  absl::Status ParseEscape(size_t string_start, std::string* out);
  // Reads a number; the current byte is '-' or a digit.
  absl::Status ParseNumber(JsonValue* out);
  // Reads an object member's key and the ':' after it into frame->key, checking that the
  // object has no member with that key yet.
  absl::Status ParseKey(Frame* frame, bool after_comma);
  // Adds `value` to the innermost open array or object.
  static void Add(Frame* frame, JsonValue value);

  const std::string_view text_;
  const JsonLimits limits_;
  size_t pos_ = 0;
};

absl::StatusOr<JsonValue> JsonParser::Parse() {
  if (text_.size() > limits_.max_input_bytes) {
    return Error(limits_.max_input_bytes,
                 absl::StrCat("input of ", text_.size(), " bytes is over the limit of ",
                              limits_.max_input_bytes, " bytes"));
  }
  const size_t max_depth = static_cast<size_t>(std::max(limits_.max_depth, 0));
  std::vector<Frame> stack;
  for (;;) {
    // A value is expected here.
    SkipWhitespace();
    if (AtEnd()) return Error(pos_, "expected a value", Got());
    JsonValue value;
    const char c = text_[pos_];
    if (c == '[' || c == '{') {
      if (stack.size() >= max_depth) {
        return Error(pos_, absl::StrCat("nesting deeper than the limit of ", max_depth,
                                        " arrays and objects"));
      }
      ++pos_;
      const bool is_object = c == '{';
      SkipWhitespace();
      if (!AtEnd() && text_[pos_] == (is_object ? '}' : ']')) {
        ++pos_;
        value = is_object ? JsonValue(JsonValue::Data(std::in_place_index<5>))
                          : JsonValue(JsonValue::Data(std::in_place_index<4>));
      } else {
        stack.emplace_back();
        stack.back().is_object = is_object;
        if (is_object) {
          if (absl::Status status = ParseKey(&stack.back(), /*after_comma=*/false); !status.ok()) {
            return status;
          }
        }
        continue;
      }
    } else if (absl::Status status = ParseScalar(&value); !status.ok()) {
      return status;
    }

    // A complete value: add it to the innermost open container, and close the containers that
    // end here, until one continues (a value is expected again) or the document ends.
    for (;;) {
      if (stack.empty()) {
        SkipWhitespace();
        if (!AtEnd()) return Error(pos_, "expected the end of the input after the value", Got());
        return value;
      }
      Frame& frame = stack.back();
      Add(&frame, std::move(value));
      SkipWhitespace();
      if (!AtEnd() && text_[pos_] == ',') {
        ++pos_;
        if (frame.is_object) {
          if (absl::Status status = ParseKey(&frame, /*after_comma=*/true); !status.ok()) {
            return status;
          }
        }
        break;
      }
      if (!AtEnd() && text_[pos_] == (frame.is_object ? '}' : ']')) {
        ++pos_;
        value = frame.is_object
                    ? JsonValue(JsonValue::Data(std::in_place_index<5>, std::move(frame.members)))
                    : JsonValue(JsonValue::Data(std::in_place_index<4>, std::move(frame.items)));
        stack.pop_back();
        continue;
      }
      return Error(pos_,
                   frame.is_object ? "expected ',' or '}' after an object member"
                                   : "expected ',' or ']' after an array element",
                   Got());
    }
  }
}

void JsonParser::Add(Frame* frame, JsonValue value) {
  if (!frame->is_object) {
    frame->items.push_back(std::move(value));
    return;
  }
  frame->members.emplace_back(std::move(frame->key), std::move(value));
  if (frame->members.size() <= kLinearKeyCheckMembers) return;
  if (frame->keys.empty()) {
    for (const JsonValue::Member& member : frame->members) frame->keys.insert(member.first);
  } else {
    frame->keys.insert(frame->members.back().first);
  }
}

absl::Status JsonParser::ParseKey(Frame* frame, bool after_comma) {
  SkipWhitespace();
  const size_t key_start = pos_;
  if (AtEnd() || text_[pos_] != '"') {
    return Error(pos_,
                 after_comma ? "expected a string key after ','" : "expected a string key or '}'",
                 Got());
  }
  std::string key;
  if (absl::Status status = ParseString(&key); !status.ok()) return status;
  const bool repeated =
      frame->members.size() <= kLinearKeyCheckMembers
          ? std::any_of(frame->members.begin(), frame->members.end(),
                        [&key](const JsonValue::Member& member) { return member.first == key; })
          : frame->keys.count(key) != 0;
  if (repeated) {
    return Error(key_start, absl::StrCat("duplicate key ", QuoteForMessage(key), " in object"));
  }
  SkipWhitespace();
  if (AtEnd() || text_[pos_] != ':') return Error(pos_, "expected ':' after object key", Got());
  ++pos_;
  frame->key = std::move(key);
  return absl::OkStatus();
}

absl::Status JsonParser::ParseScalar(JsonValue* out) {
  const char c = text_[pos_];
  if (c == '"') {
    std::string decoded;
    if (absl::Status status = ParseString(&decoded); !status.ok()) return status;
    *out = JsonValue(JsonValue::Data(std::in_place_index<3>, std::move(decoded)));
    return absl::OkStatus();
  }
  if (c == '-' || IsDigit(c)) return ParseNumber(out);
  for (const std::string_view literal : {"true", "false", "null"}) {
    if (c != literal.front()) continue;
    if (text_.substr(pos_, literal.size()) != literal) {
      return Error(pos_, absl::StrCat("expected ", std::string(literal)));
    }
    pos_ += literal.size();
    if (literal == "null") {
      *out = JsonValue();
    } else {
      *out = JsonValue(JsonValue::Data(std::in_place_index<1>, literal == "true"));
    }
    return absl::OkStatus();
  }
  return Error(pos_, "expected a value", Got());
}

absl::Status JsonParser::ParseString(std::string* out) {
  const size_t start = pos_;
  ++pos_;  // the opening quote
  for (;;) {
    // A run of bytes that stand for themselves.
    size_t run_end = pos_;
    while (run_end < text_.size()) {
      const unsigned char c = static_cast<unsigned char>(text_[run_end]);
      if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
      ++run_end;
    }
    out->append(text_.data() + pos_, run_end - pos_);
    pos_ = run_end;
    if (AtEnd()) {
      return Error(pos_, absl::StrCat("unterminated string (opened at byte ", start, ")"));
    }
    const unsigned char c = static_cast<unsigned char>(text_[pos_]);
    if (c == '"') {
      ++pos_;
      return absl::OkStatus();
    }
    if (c == '\\') {
      if (absl::Status status = ParseEscape(start, out); !status.ok()) return status;
    } else if (c < 0x20) {
      return Error(pos_, absl::StrCat("unescaped control character ", DescribeByte(c),
                                      " in string (write it as a \\u escape)"));
    } else {
      const size_t length = Utf8SequenceLength(text_.substr(pos_));
      if (length == 0) return Error(pos_, "invalid UTF-8 in string", DescribeByte(c));
      out->append(text_.data() + pos_, length);
      pos_ += length;
    }
  }
}

absl::Status JsonParser::ParseEscape(size_t string_start, std::string* out) {
  const size_t escape_start = pos_;
  if (pos_ + 1 >= text_.size()) {
    return Error(text_.size(),
                 absl::StrCat("unterminated string (opened at byte ", string_start, ")"));
  }
  const char kind = text_[pos_ + 1];
  pos_ += 2;
  switch (kind) {
    case '"':
    case '\\':
    case '/':
      out->push_back(kind);
      return absl::OkStatus();
    case 'b':
      out->push_back('\b');
      return absl::OkStatus();
    case 'f':
      out->push_back('\f');
      return absl::OkStatus();
    case 'n':
      out->push_back('\n');
      return absl::OkStatus();
    case 'r':
      out->push_back('\r');
      return absl::OkStatus();
    case 't':
      out->push_back('\t');
      return absl::OkStatus();
    case 'u':
      break;
    default:
      return Error(escape_start,
                   "invalid escape in string (expected one of \\\" \\\\ \\/ \\b \\f \\n \\r "
                   "\\t \\uXXXX)",
                   absl::StrCat("\\ followed by ", DescribeByte(static_cast<unsigned char>(kind))));
  }
  const std::optional<uint32_t> unit = ParseHex4(text_.substr(pos_));
  if (!unit) return Error(escape_start, "expected 4 hex digits after \\u in string");
  pos_ += 4;
  uint32_t cp = *unit;
  const std::string_view written = text_.substr(escape_start, 6);
  if (IsLowSurrogate(cp)) {
    return Error(escape_start, absl::StrCat("lone low surrogate ", std::string(written),
                                            " in string (not after a high surrogate)"));
  }
  if (IsHighSurrogate(cp)) {
    const std::string_view next = text_.substr(pos_);
    const std::optional<uint32_t> low = next.size() >= 6 && next[0] == '\\' && next[1] == 'u'
                                            ? ParseHex4(next.substr(2))
                                            : std::nullopt;
    if (!low || !IsLowSurrogate(*low)) {
      return Error(escape_start,
                   absl::StrCat("lone high surrogate ", std::string(written),
                                " in string (expected a \\uDC00-\\uDFFF escape after it)"));
    }
    pos_ += 6;
    cp = 0x10000 + ((cp - 0xd800) << 10) + (*low - 0xdc00);
  }
  AppendUtf8(cp, out);
  return absl::OkStatus();
}

absl::Status JsonParser::ParseNumber(JsonValue* out) {
  const size_t start = pos_;
  if (text_[pos_] == '-') {
    ++pos_;
    if (AtEnd() || !IsDigit(text_[pos_])) {
      return Error(pos_, "expected a digit after '-' in number", Got());
    }
  }
  if (text_[pos_] == '0') {
    ++pos_;
    if (!AtEnd() && IsDigit(text_[pos_])) {
      return Error(pos_ - 1, "leading zero in number (write 0, 0.x or a digit 1-9 first)");
    }
  } else {
    while (!AtEnd() && IsDigit(text_[pos_])) ++pos_;
  }
  if (!AtEnd() && text_[pos_] == '.') {
    ++pos_;
    if (AtEnd() || !IsDigit(text_[pos_])) {
      return Error(pos_, "expected a digit after '.' in number", Got());
    }
    while (!AtEnd() && IsDigit(text_[pos_])) ++pos_;
  }
  if (!AtEnd() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
    ++pos_;
    if (!AtEnd() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
    if (AtEnd() || !IsDigit(text_[pos_])) {
      return Error(pos_, "expected a digit in the exponent of number", Got());
    }
    while (!AtEnd() && IsDigit(text_[pos_])) ++pos_;
  }
  *out = JsonValue(
      JsonValue::Data(std::in_place_index<2>,
                      JsonValue::NumberText{std::string(text_.substr(start, pos_ - start))}));
  return absl::OkStatus();
}

bool JsonValue::bool_or(bool fallback) const noexcept {
  const bool* value = std::get_if<bool>(&data_);
  return value != nullptr ? *value : fallback;
}

std::string_view JsonValue::number_text() const noexcept {
  const NumberText* number = std::get_if<NumberText>(&data_);
  return number != nullptr ? std::string_view(number->text) : std::string_view();
}

std::optional<int64_t> JsonValue::AsInt64() const noexcept {
  if (const NumberText* number = std::get_if<NumberText>(&data_)) {
    return ParseDecimalInt64(number->text);
  }
  if (const std::string* text = std::get_if<std::string>(&data_)) return ParseDecimalInt64(*text);
  return std::nullopt;
}

std::optional<double> JsonValue::AsDouble() const noexcept {
  const NumberText* number = std::get_if<NumberText>(&data_);
  if (number == nullptr) return std::nullopt;
  const char* const end = number->text.data() + number->text.size();
  double value = 0;
  const std::from_chars_result result = std::from_chars(number->text.data(), end, value);
  if (result.ec != std::errc() || result.ptr != end) return std::nullopt;
  return value;
}

const std::string& JsonValue::string() const noexcept {
  const std::string* text = std::get_if<std::string>(&data_);
  return text != nullptr ? *text : Empty<std::string>();
}

const std::vector<JsonValue>& JsonValue::items() const noexcept {
  const std::vector<JsonValue>* items = std::get_if<std::vector<JsonValue>>(&data_);
  return items != nullptr ? *items : Empty<std::vector<JsonValue>>();
}

const std::vector<JsonValue::Member>& JsonValue::members() const noexcept {
  const std::vector<Member>* members = std::get_if<std::vector<Member>>(&data_);
  return members != nullptr ? *members : Empty<std::vector<Member>>();
}

const JsonValue* JsonValue::Find(std::string_view key) const noexcept {
  for (const Member& member : members()) {
    if (member.first == key) return &member.second;
  }
  return nullptr;
}

const JsonValue* JsonValue::Path(std::initializer_list<std::string_view> keys) const noexcept {
  const JsonValue* value = this;
  for (const std::string_view key : keys) {
    value = value->Find(key);
    if (value == nullptr) return nullptr;
  }
  return value;
}

bool JsonValue::BoolOr(std::string_view key, bool fallback) const noexcept {
  const JsonValue* value = Find(key);
  return value != nullptr ? value->bool_or(fallback) : fallback;
}

absl::StatusOr<JsonValue> ParseJson(std::string_view text, JsonLimits limits) {
  return JsonParser(text, limits).Parse();
}

std::string JsonQuote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppend(&out, "\\u00", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

}  // namespace keel::internal
