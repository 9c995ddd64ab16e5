// Fuzzes keel's internal JSON reader (stores/src/json.h) with arbitrary bytes, parsed as they
// are with the default limits, so a seed file is a readable JSON document. Properties checked:
//   1. Nothing crashes, whatever the bytes.
//   2. A rejection is InvalidArgument with a message of printable ASCII that starts with
//      "json: " and names a byte offset no greater than the input's size.
//   3. An accepted document nests no deeper than the limit, and exactly its depth is the
//      smallest max_depth that accepts it (one less is rejected with the depth message); a
//      max_input_bytes one below its size rejects it.
//   4. Round trip: writing the tree back out (strings and keys with JsonQuote, numbers as
//      their text) and parsing that gives the same tree, so every decoded string is valid
//      UTF-8 that JsonQuote and ParseJson carry unchanged.
//   5. An object's keys are unique and Find(), Path() and BoolOr() read each member; AsInt64
//      of a number agrees with its text, of a string accepts only decimal digits, and AsDouble
//      agrees with AsInt64 where a double is exact.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "json.h"

namespace {

using keel::internal::JsonLimits;
using keel::internal::JsonValue;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "json_fuzzer: property violated: %s\n", what);
    std::abort();
  }
}

void CheckRejection(const absl::Status& status, size_t input_size) {
  Check(status.code() == absl::StatusCode::kInvalidArgument, "a rejection is not InvalidArgument");
  const std::string_view message(status.message().data(), status.message().size());
  Check(message.substr(0, 6) == "json: ", "an error message does not start with \"json: \"");
  for (const char c : message) {
    Check(c >= 0x20 && c <= 0x7e, "an error message holds a byte outside printable ASCII");
  }
  const size_t at = message.rfind(" at byte ");
  Check(at != std::string_view::npos, "an error message names no byte offset");
  size_t offset = 0;
  size_t digits = 0;
  for (size_t i = at + 9; i < message.size() && message[i] >= '0' && message[i] <= '9'; ++i) {
    offset = offset * 10 + static_cast<size_t>(message[i] - '0');
    ++digits;
  }
  Check(digits > 0 && offset <= input_size, "an error's byte offset is past the input");
}

// The nesting depth: 0 for a scalar, 1 + the deepest child for an array or object.
int Depth(const JsonValue& value) {
  int deepest = 0;
  for (const JsonValue& item : value.items()) deepest = std::max(deepest, Depth(item));
  for (const JsonValue::Member& member : value.members()) {
    deepest = std::max(deepest, Depth(member.second));
  }
  return value.is_array() || value.is_object() ? deepest + 1 : 0;
}

// `value` as JSON text.
void Write(const JsonValue& value, std::string* out) {
  switch (value.kind()) {
    case JsonValue::Kind::kNull:
      *out += "null";
      return;
    case JsonValue::Kind::kBool:
      *out += value.bool_or(false) ? "true" : "false";
      return;
    case JsonValue::Kind::kNumber:
      *out += value.number_text();
      return;
    case JsonValue::Kind::kString:
      *out += keel::internal::JsonQuote(value.string());
      return;
    case JsonValue::Kind::kArray:
      out->push_back('[');
      for (size_t i = 0; i < value.items().size(); ++i) {
        if (i > 0) out->push_back(',');
        Write(value.items()[i], out);
      }
      out->push_back(']');
      return;
    case JsonValue::Kind::kObject:
      out->push_back('{');
      for (size_t i = 0; i < value.members().size(); ++i) {
        if (i > 0) out->push_back(',');
        *out += keel::internal::JsonQuote(value.members()[i].first);
        out->push_back(':');
        Write(value.members()[i].second, out);
      }
      out->push_back('}');
      return;
  }
}

bool Equal(const JsonValue& a, const JsonValue& b) {
  if (a.kind() != b.kind() || a.bool_or(false) != b.bool_or(false) ||
      a.number_text() != b.number_text() || a.string() != b.string() ||
      a.items().size() != b.items().size() || a.members().size() != b.members().size()) {
    return false;
  }
  for (size_t i = 0; i < a.items().size(); ++i) {
    if (!Equal(a.items()[i], b.items()[i])) return false;
  }
  for (size_t i = 0; i < a.members().size(); ++i) {
    if (a.members()[i].first != b.members()[i].first ||
        !Equal(a.members()[i].second, b.members()[i].second)) {
      return false;
    }
  }
  return true;
}

// Property 5, over the whole tree.
void CheckValues(const JsonValue& value) {
  if (value.is_number()) {
    const std::string_view text = value.number_text();
    Check(!text.empty(), "a number has no text");
    if (const std::optional<int64_t> n = value.AsInt64()) {
      Check(std::to_string(*n) == text || (*n == 0 && text == "-0"),
            "AsInt64 disagrees with the number's text");
      if (*n >= -(int64_t{1} << 53) && *n <= (int64_t{1} << 53)) {
        Check(value.AsDouble() == static_cast<double>(*n), "AsDouble disagrees with AsInt64");
      }
    } else {
      Check(text.find_first_of(".eE") != std::string_view::npos || text.size() >= 19,
            "AsInt64 refuses a short integer");
    }
  } else {
    Check(value.number_text().empty() && !value.AsDouble(), "a non-number has a number's text");
  }
  if (value.is_string() && value.AsInt64()) {
    std::string_view digits = value.string();
    if (!digits.empty() && digits.front() == '-') digits.remove_prefix(1);
    Check(!digits.empty() && digits.find_first_not_of("0123456789") == std::string_view::npos,
          "AsInt64 accepts a string that is not decimal digits");
  }
  for (const JsonValue& item : value.items()) CheckValues(item);
  for (size_t i = 0; i < value.members().size(); ++i) {
    const JsonValue::Member& member = value.members()[i];
    Check(value.Find(member.first) == &member.second, "Find misses a member or a key repeats");
    Check(value.Path({member.first}) == &member.second, "Path of one key is not Find");
    Check(value.BoolOr(member.first, false) == member.second.bool_or(false) &&
              value.BoolOr(member.first, true) == member.second.bool_or(true),
          "BoolOr is not Find then bool_or");
    CheckValues(member.second);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const JsonLimits defaults;
  const absl::StatusOr<JsonValue> parsed = keel::internal::ParseJson(text);
  if (!parsed.ok()) {
    CheckRejection(parsed.status(), size);
    return 0;
  }

  // Property 3.
  const int depth = Depth(*parsed);
  Check(depth <= defaults.max_depth, "an accepted document nests deeper than the limit");
  JsonLimits exact;
  exact.max_depth = depth;
  Check(keel::internal::ParseJson(text, exact).ok(), "max_depth = the depth rejects it");
  if (depth > 0) {
    JsonLimits shallower;
    shallower.max_depth = depth - 1;
    const absl::StatusOr<JsonValue> refused = keel::internal::ParseJson(text, shallower);
    Check(!refused.ok(), "a max_depth below the depth accepts it");
    CheckRejection(refused.status(), size);
    Check(std::string_view(refused.status().message().data(), refused.status().message().size())
                  .find("nesting deeper than the limit") != std::string_view::npos,
          "a max_depth below the depth gives another error");
  }
  if (size > 0) {
    JsonLimits smaller;
    smaller.max_input_bytes = size - 1;
    const absl::StatusOr<JsonValue> refused = keel::internal::ParseJson(text, smaller);
    Check(!refused.ok(), "max_input_bytes below the size accepts it");
    CheckRejection(refused.status(), size);
  }

  // Property 4.
  std::string written;
  Write(*parsed, &written);
  const absl::StatusOr<JsonValue> again = keel::internal::ParseJson(written);
  Check(again.ok(), "the written-out tree does not parse");
  Check(Equal(*parsed, *again), "the written-out tree parses to another tree");

  // Property 5.
  CheckValues(*parsed);
  return 0;
}
