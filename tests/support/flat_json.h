// Test support: a strict reader of flat JSON objects (RFC 8259, one object whose values are
// strings or integers, no nesting), as keel's problem+json bodies are, for tests and fuzz
// harnesses that check those bodies. Not part of keel.
#ifndef KEEL_TESTS_SUPPORT_FLAT_JSON_H_
#define KEEL_TESTS_SUPPORT_FLAT_JSON_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keel::testing {

// True when `s` is well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or code
// points past U+10FFFF).
inline bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    uint32_t code;
    if (c >= 0xc2 && c <= 0xdf) {
      length = 2;
      code = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      length = 3;
      code = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      length = 4;
      code = c & 0x07;
    } else {
      return false;
    }
    if (i + length > s.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      const unsigned char t = static_cast<unsigned char>(s[i + k]);
      if ((t & 0xc0) != 0x80) return false;
      code = (code << 6) | (t & 0x3f);
    }
    if ((length == 3 && code < 0x800) || (length == 4 && code < 0x10000) || code > 0x10ffff ||
        (code >= 0xd800 && code <= 0xdfff)) {
      return false;
    }
    i += length;
  }
  return true;
}

inline void AppendUtf8(std::string& out, uint32_t code) {
  if (code < 0x80) {
    out.push_back(static_cast<char>(code));
  } else if (code < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (code >> 6)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3f)));
  } else if (code < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (code >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (code >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3f)));
  }
}

// Parses `text` as one flat JSON object (RFC 8259) whose values are strings or integers, and
// returns its members in order, strings decoded, integers as written; nullopt when it is not
// exactly that (bad escapes, raw control characters, invalid UTF-8, nesting, trailing bytes).
inline std::optional<std::vector<std::pair<std::string, std::string>>> ParseFlatJson(
    std::string_view text) {
  if (!IsValidUtf8(text)) return std::nullopt;
  size_t i = 0;
  auto skip_space = [&] {
    while (i < text.size() &&
           (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) {
      ++i;
    }
  };
  auto hex4 = [&](uint32_t& code) {
    if (i + 4 > text.size()) return false;
    code = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = text[i++];
      uint32_t digit;
      if (h >= '0' && h <= '9') {
        digit = static_cast<uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        digit = static_cast<uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        digit = static_cast<uint32_t>(h - 'A' + 10);
      } else {
        return false;
      }
      code = code * 16 + digit;
    }
    return true;
  };
  auto parse_string = [&]() -> std::optional<std::string> {
    if (i >= text.size() || text[i] != '"') return std::nullopt;
    ++i;
    std::string out;
    for (;;) {
      if (i >= text.size()) return std::nullopt;
      const unsigned char c = static_cast<unsigned char>(text[i]);
      if (c == '"') break;
      if (c < 0x20) return std::nullopt;
      if (c != '\\') {
        out.push_back(static_cast<char>(c));
        ++i;
        continue;
      }
      if (++i >= text.size()) return std::nullopt;
      const char e = text[i++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out.push_back(e);
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          uint32_t code;
          if (!hex4(code)) return std::nullopt;
          if (code >= 0xdc00 && code <= 0xdfff) return std::nullopt;  // a lone low surrogate
          if (code >= 0xd800 && code <= 0xdbff) {
            uint32_t low;
            if (i + 2 > text.size() || text[i] != '\\' || text[i + 1] != 'u') return std::nullopt;
            i += 2;
            if (!hex4(low) || low < 0xdc00 || low > 0xdfff) return std::nullopt;
            code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
          }
          AppendUtf8(out, code);
          break;
        }
        default:
          return std::nullopt;
      }
    }
    ++i;  // the closing quote
    return out;
  };
  auto parse_integer = [&]() -> std::optional<std::string> {
    const size_t start = i;
    if (i < text.size() && text[i] == '-') ++i;
    if (i >= text.size() || text[i] < '0' || text[i] > '9') return std::nullopt;
    if (text[i] == '0' && i + 1 < text.size() && text[i + 1] >= '0' && text[i + 1] <= '9') {
      return std::nullopt;
    }
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    return std::string(text.substr(start, i - start));
  };

  std::vector<std::pair<std::string, std::string>> members;
  skip_space();
  if (i >= text.size() || text[i] != '{') return std::nullopt;
  ++i;
  skip_space();
  if (i < text.size() && text[i] == '}') {
    ++i;
  } else {
    for (;;) {
      skip_space();
      std::optional<std::string> name = parse_string();
      if (!name) return std::nullopt;
      skip_space();
      if (i >= text.size() || text[i] != ':') return std::nullopt;
      ++i;
      skip_space();
      std::optional<std::string> value =
          (i < text.size() && text[i] == '"') ? parse_string() : parse_integer();
      if (!value) return std::nullopt;
      members.emplace_back(*std::move(name), *std::move(value));
      skip_space();
      if (i >= text.size()) return std::nullopt;
      if (text[i] == ',') {
        ++i;
        continue;
      }
      if (text[i] != '}') return std::nullopt;
      ++i;
      break;
    }
  }
  skip_space();
  if (i != text.size()) return std::nullopt;
  return members;
}

}  // namespace keel::testing

#endif  // KEEL_TESTS_SUPPORT_FLAT_JSON_H_
