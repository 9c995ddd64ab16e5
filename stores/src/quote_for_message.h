// Internal to keel::stores: quoting untrusted bytes inside an error message, shared by the
// parsers whose errors quote their input (the Idempotency-Key parser, the JSON reader).
#ifndef KEEL_STORES_SRC_QUOTE_FOR_MESSAGE_H_
#define KEEL_STORES_SRC_QUOTE_FOR_MESSAGE_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace keel::internal {

// At most `max_bytes` of `s` in double quotes: `"` and `\` escaped with a backslash, other
// bytes outside 0x20-0x7E as \xNN, "..." when shortened. Any thread.
inline std::string QuoteForMessage(std::string_view s, size_t max_bytes = 40) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < max_bytes; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c >= 0x20 && c <= 0x7e) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    }
  }
  if (s.size() > max_bytes) out += "...";
  out += "\"";
  return out;
}

}  // namespace keel::internal

#endif  // KEEL_STORES_SRC_QUOTE_FOR_MESSAGE_H_
