// Internal to keel: a strict JSON reader (RFC 8259) for the etcd v3 lease store, and
// JsonQuote for the request bodies it sends.
//
// The lease store talks to etcd's JSON gateway (/v3/kv/txn, /v3/lease/grant, ...), whose
// responses are small JSON documents shaped by protobuf's JSON mapping: int64 fields come as
// strings of decimal digits ("revision":"2"), fields at their default value are left out (a
// missing "succeeded" means false), and keys and values are base64 strings. ParseJson reads
// such a document into a JsonValue tree; the accessors answer "absent or of another type" with
// nullptr, an empty value or a fallback rather than an error, so that reading a response is a
// chain of lookups with one check at the end:
//
//   absl::StatusOr<JsonValue> body = ParseJson(text);
//   if (!body.ok()) return body.status();
//   const bool succeeded = body->BoolOr("succeeded", false);
//   const JsonValue* revision = body->Path({"header", "revision"});
//   const std::optional<int64_t> rev = revision ? revision->AsInt64() : std::nullopt;
//   if (!rev) return absl::DataLossError("etcd: no header.revision in the response");
//   if (const JsonValue* responses = body->Find("responses")) {
//     for (const JsonValue& response : responses->items()) { ... }
//   }
//
// Strictness: exactly the grammar of RFC 8259 §2-§8 and nothing more. One value, with only
// space, tab, CR and LF around it; no byte order mark, comments, trailing commas, single
// quotes, NaN/Infinity, leading zeros or '+' in numbers, or raw control characters (below
// 0x20) in strings. The input must be valid UTF-8 (RFC 3629: no overlong forms, no encoded
// surrogates, nothing above U+10FFFF); \uXXXX escapes are decoded to UTF-8, a surrogate pair
// to one code point, and a lone surrogate is rejected. An object may not repeat a key
// (RFC 8259 leaves that to the reader; a repeated key in a server's response is an error, not
// something to resolve silently). "\u0000" is accepted and gives a NUL byte in the string.
//
// Errors: every rejection, malformed input and exceeded limit alike, is InvalidArgument
// (the text is the argument; the lease store turns it into its own code at its boundary). The
// message starts with "json: ", says what was expected, and names the 0-based byte offset in
// the input where the problem was found: "json: expected ':' after object key at byte 17".
// Bytes from the input appear in messages only escaped (\xNN) and shortened.
//
// Limits (JsonLimits): the nesting depth (default 64 arrays/objects) and the input size
// (default 16 MiB). The parser is iterative (its stack of open arrays and objects is on the
// heap), but copying and destroying a JsonValue recurse once per level, so the depth limit is
// also what bounds that recursion: keep it in the hundreds at most. etcd's responses nest 6
// deep.
//
// Thread safety: thread-compatible. A JsonValue is immutable after ParseJson returns it; const
// methods may be called from any number of threads at once. ParseJson and JsonQuote share no
// state.
//
// Costs: ParseJson is one pass over the input; a JsonValue is 40 bytes plus its heap storage
// (strings above 15 bytes, the arrays and objects), so a document of many small values takes
// up to about 20 times its size in memory: "[0,0,0,...]" of 16 MiB (the default limit) peaks
// at about 330 MiB and parses in 0.9 s (gcc 12 -O2; a quick timing, not a bench/ benchmark).
// A caller reading small responses should set a smaller max_input_bytes. Find() is a linear
// scan of the object's members (etcd's objects have a handful).
// Accessors are noexcept and allocate nothing.
#ifndef KEEL_STORES_SRC_JSON_H_
#define KEEL_STORES_SRC_JSON_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace keel::internal {

// Bounds on what ParseJson accepts.
struct JsonLimits {
  // The deepest nesting of arrays and objects: a scalar is at depth 0, "[]" and "{}" at depth
  // 1, "[[1]]" at depth 2. 0 allows only a scalar document.
  int max_depth = 64;
  // The largest input, in bytes.
  size_t max_input_bytes = size_t{16} << 20;
};

// One JSON value: null, a boolean, a number (kept as its text), a string (decoded), an array
// or an object (members in document order, keys unique). A default-constructed JsonValue is
// null. Copyable and movable; ParseJson is the only way to build anything but null.
class JsonValue {
 public:
  enum class Kind : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };
  // An object member: its key (decoded) and its value.
  using Member = std::pair<std::string, JsonValue>;

  JsonValue() noexcept = default;

  // The value's type.
  Kind kind() const noexcept { return static_cast<Kind>(data_.index()); }
  bool is_null() const noexcept { return kind() == Kind::kNull; }
  bool is_bool() const noexcept { return kind() == Kind::kBool; }
  bool is_number() const noexcept { return kind() == Kind::kNumber; }
  bool is_string() const noexcept { return kind() == Kind::kString; }
  bool is_array() const noexcept { return kind() == Kind::kArray; }
  bool is_object() const noexcept { return kind() == Kind::kObject; }

  // The boolean, or `fallback` when this is not a boolean.
  bool bool_or(bool fallback) const noexcept;

  // The number's text exactly as it appeared in the input ("-1.5e3"); empty when this is not
  // a number.
  std::string_view number_text() const noexcept;

  // The value as an int64: a number without fraction or exponent ("42", "-7"), or a string of
  // decimal digits with an optional leading '-' ("2324035534747510021", as etcd sends int64
  // fields). nullopt for anything else, including "1.0", "1e3", "+1", " 1", "" and values
  // outside [INT64_MIN, INT64_MAX].
  std::optional<int64_t> AsInt64() const noexcept;

  // A number as the nearest double. nullopt when this is not a number or when it is outside a
  // double's range: too large ("1e400") or rounding to zero but not zero ("1e-400").
  std::optional<double> AsDouble() const noexcept;

  // The decoded string (UTF-8; may hold NUL bytes from "\u0000"); empty when this is not a
  // string.
  const std::string& string() const noexcept;

  // An array's elements in order; empty when this is not an array.
  const std::vector<JsonValue>& items() const noexcept;

  // An object's members in document order; empty when this is not an object.
  const std::vector<Member>& members() const noexcept;

  // The value of an object's member named `key` (compared byte for byte with the decoded
  // key), or nullptr when this is not an object or has no such member. The pointer is valid
  // as long as this value is neither destroyed nor assigned to.
  const JsonValue* Find(std::string_view key) const noexcept;

  // Follows `keys` through nested objects: Path({"header", "revision"}) is
  // Find("header")->Find("revision"), with nullptr as soon as a step is missing or not an
  // object. Path({}) is this value.
  const JsonValue* Path(std::initializer_list<std::string_view> keys) const noexcept;

  // The boolean member `key` of an object, or `fallback` when there is no such member or it
  // is not a boolean (protobuf's JSON mapping leaves false booleans out).
  bool BoolOr(std::string_view key, bool fallback) const noexcept;

 private:
  friend class JsonParser;

  // A number's text, kept apart from a string's contents by type.
  struct NumberText {
    std::string text;
  };
  // Alternatives in the order of Kind.
  using Data = std::variant<std::monostate, bool, NumberText, std::string, std::vector<JsonValue>,
                            std::vector<Member>>;

  explicit JsonValue(Data data) noexcept : data_(std::move(data)) {}

  Data data_;
};

// Parses `text` as one JSON document (RFC 8259) within `limits`. Errors are InvalidArgument
// with the byte offset of the problem (see the file comment). Any thread.
absl::StatusOr<JsonValue> ParseJson(std::string_view text, JsonLimits limits = {});

// `s` as a JSON string literal, quotes included: '"' and '\' escaped with a backslash, control
// characters (below 0x20) as \b \f \n \r \t or \u00XX, every other byte copied as it is, so
// UTF-8 passes through. `s` must be valid UTF-8 for the result to be valid JSON;
// ParseJson(JsonQuote(s))->string() == s for any valid UTF-8 `s`. Any thread.
std::string JsonQuote(std::string_view s);

}  // namespace keel::internal

#endif  // KEEL_STORES_SRC_JSON_H_
