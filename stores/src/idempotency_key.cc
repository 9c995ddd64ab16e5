#include "keel/idempotency_key.h"

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "quote_for_message.h"

namespace keel {
namespace {

// Error messages quote malformed values, shortened (keel::internal::QuoteForMessage).
using internal::QuoteForMessage;

bool IsOws(char c) { return c == ' ' || c == '\t'; }

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && IsOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsOws(s.back())) s.remove_suffix(1);
  return s;
}

// The bytes an sf-string may hold unescaped (RFC 8941 §3.3.3): printable ASCII but `"` and `\`.
bool IsPrintableAscii(unsigned char c) { return c >= 0x20 && c <= 0x7e; }

// tchar from RFC 9110 §5.6.2.
bool IsTokenChar(unsigned char c) {
  if (absl::ascii_isalnum(c)) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

// One byte for a message: 'a' when printable, 0x0a otherwise.
std::string DescribeByte(unsigned char c) {
  if (IsPrintableAscii(c) && c != '\'' && c != '\\') return absl::StrFormat("'%c'", c);
  return absl::StrFormat("0x%02x", c);
}

// What a value must look like, for messages.
const char* Expected(const IdempotencyKeyOptions& options) {
  return options.accept_bare_token ? "a quoted string (sf-string) or a token (RFC 9110 tchar)"
                                   : "a quoted string (sf-string)";
}

// The error for what follows a complete key: `rest` is not empty and `value` is the whole
// trimmed value.
absl::Status TrailingError(std::string_view rest, std::string_view value) {
  if (rest.front() == ';') {
    return absl::InvalidArgumentError(
        absl::StrCat("Idempotency-Key takes no parameters (the draft defines none), got ",
                     QuoteForMessage(value)));
  }
  if (rest.front() == ',') {
    return absl::InvalidArgumentError(absl::StrCat(
        "Idempotency-Key must hold exactly one key, got a list ", QuoteForMessage(value)));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("Idempotency-Key must end after its key, got ", DescribeByte(rest.front()),
                   " at offset ", value.size() - rest.size(), " of ", QuoteForMessage(value)));
}

absl::Status Unterminated(std::string_view value) {
  return absl::InvalidArgumentError(absl::StrCat(
      "Idempotency-Key must close its quoted string with '\"', got ", QuoteForMessage(value)));
}

absl::Status CheckLength(size_t length, std::string_view value,
                         const IdempotencyKeyOptions& options) {
  if (length == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Idempotency-Key must not be empty, got ", QuoteForMessage(value)));
  }
  if (length > options.max_length) {
    return absl::InvalidArgumentError(absl::StrCat("Idempotency-Key is ", length,
                                                   " bytes long, over the limit of ",
                                                   options.max_length, " bytes"));
  }
  return absl::OkStatus();
}

// Parses `value`, trimmed and starting with `"`, as an sf-string (RFC 8941 §4.2.5).
absl::StatusOr<std::string> ParseQuoted(std::string_view value,
                                        const IdempotencyKeyOptions& options) {
  // First pass: find the closing quote, check every byte and count the decoded length, so
  // that nothing is allocated for a value that is rejected.
  size_t decoded_length = 0;
  bool has_escapes = false;
  size_t i = 1;
  for (;;) {
    if (i >= value.size()) return Unterminated(value);
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c == '"') break;
    if (c == '\\') {
      if (i + 1 >= value.size()) return Unterminated(value);
      const unsigned char escaped = static_cast<unsigned char>(value[i + 1]);
      if (escaped != '"' && escaped != '\\') {
        return absl::InvalidArgumentError(absl::StrCat(
            "Idempotency-Key: a backslash in a quoted string must escape '\"' or '\\', got ",
            DescribeByte(escaped), " at offset ", i + 1, " of ", QuoteForMessage(value)));
      }
      has_escapes = true;
      i += 2;
    } else if (IsPrintableAscii(c)) {
      ++i;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("Idempotency-Key must hold only printable ASCII (0x20-0x7E), got ",
                       DescribeByte(c), " at offset ", i, " of ", QuoteForMessage(value)));
    }
    ++decoded_length;
  }
  const size_t closing_quote = i;
  if (closing_quote + 1 < value.size()) {
    return TrailingError(value.substr(closing_quote + 1), value);
  }
  if (absl::Status status = CheckLength(decoded_length, value, options); !status.ok()) {
    return status;
  }

  // Second pass: decode.
  const std::string_view body = value.substr(1, closing_quote - 1);
  if (!has_escapes) return std::string(body);
  std::string key;
  key.reserve(decoded_length);
  for (size_t j = 0; j < body.size(); ++j) {
    if (body[j] == '\\') ++j;  // the first pass checked that an escaped byte follows
    key.push_back(body[j]);
  }
  return key;
}

// Parses `value`, trimmed, not empty and not starting with `"`, as a bare token.
absl::StatusOr<std::string> ParseBareToken(std::string_view value,
                                           const IdempotencyKeyOptions& options) {
  size_t end = 0;
  while (end < value.size() && IsTokenChar(static_cast<unsigned char>(value[end]))) ++end;
  if (end == 0) {
    return absl::InvalidArgumentError(absl::StrCat("Idempotency-Key must be ", Expected(options),
                                                   ", got ", QuoteForMessage(value)));
  }
  if (end < value.size()) {
    const unsigned char c = static_cast<unsigned char>(value[end]);
    if (c == ';' || c == ',') return TrailingError(value.substr(end), value);
    return absl::InvalidArgumentError(absl::StrCat("Idempotency-Key must be ", Expected(options),
                                                   ", got ", DescribeByte(c), " at offset ", end,
                                                   " of ", QuoteForMessage(value)));
  }
  if (absl::Status status = CheckLength(end, value, options); !status.ok()) return status;
  return std::string(value);
}

// abseil's, on abseil's string_view (a distinct type in Debian's build).
bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return absl::EqualsIgnoreCase(absl::string_view(a.data(), a.size()),
                                absl::string_view(b.data(), b.size()));
}

}  // namespace

absl::StatusOr<std::string> ParseIdempotencyKey(std::string_view header_value,
                                                const IdempotencyKeyOptions& options) {
  const std::string_view value = TrimOws(header_value);
  if (value.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Idempotency-Key must be ", Expected(options), ", got an empty value"));
  }
  if (value.front() == '"') return ParseQuoted(value, options);
  if (options.accept_bare_token) return ParseBareToken(value, options);
  return absl::InvalidArgumentError(absl::StrCat("Idempotency-Key must be ", Expected(options),
                                                 ", got ", QuoteForMessage(value)));
}

absl::StatusOr<std::string> IdempotencyKeyFromHeaders(
    const std::vector<std::pair<std::string_view, std::string_view>>& headers,
    const IdempotencyKeyOptions& options) {
  const std::string_view* found = nullptr;
  size_t count = 0;
  for (const auto& [name, value] : headers) {
    if (!EqualsIgnoreCase(name, kIdempotencyKeyHeader)) continue;
    if (found == nullptr) found = &value;
    ++count;
  }
  if (count == 0) return absl::NotFoundError("the request has no Idempotency-Key header");
  if (count > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Idempotency-Key must appear once in a request, got ", count, " header lines"));
  }
  return ParseIdempotencyKey(*found, options);
}

}  // namespace keel
