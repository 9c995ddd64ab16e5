// The Idempotency-Key request header: reading the key a client sends with a request.
//
// A client that wants a non-idempotent request (POST, PATCH) to be safe to retry sends a key
// of its choosing with it; keel's idempotency layer runs the first request with that key and
// replays its response to every retry. The IETF draft "The Idempotency-Key HTTP Header
// Field" makes the header an RFC 8941 Item whose value is a String (sf-string, RFC 8941
// §3.3.3): a double-quoted run of printable ASCII in which `"` and `\` are escaped with a
// backslash. These functions take the raw header value (or a request's header list), check
// it against that grammar and return the decoded key, or an InvalidArgument error whose
// message says what was expected, ready for the `detail` of a 400 problem+json response.
// Headers are untrusted input: any byte string is handled without crashing, and no error
// message quotes more than 40 bytes of it, with control bytes escaped.
//
//   keel::IdempotencyKeyOptions options{.accept_bare_token = true};
//   absl::StatusOr<std::string> key = keel::IdempotencyKeyFromHeaders(request_headers, options);
//   if (absl::IsNotFound(key.status())) { /* no key: 400 if the method requires one */ }
//   else if (!key.ok()) { /* 400, detail = key.status().message() */ }
//   else { /* *key is "8e03978e-40d5-43e8-bc93-6894a57f9324" for the header
//             Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324" */ }
//
// Decisions beyond the draft:
//   - Parameters (`"k";a=1`) are rejected, not ignored. The draft defines none, so a client
//     sending one expects a meaning keel does not give it; rejecting keeps a single spelling
//     per key (`"k"` and `"k";v=2` cannot be taken for different keys by the client and the
//     same key by the server) and tells the client at once instead of silently.
//   - Optional whitespace (SP, HTAB) around the value is allowed (RFC 9110 §5.5).
//   - An empty key (`""`) is rejected: it cannot tell one operation from another.
//   - The length limit counts decoded bytes: `"a\"b"` is 3 bytes long.
//   - With `accept_bare_token`, an unquoted RFC 9110 token (`abc-123`) is accepted too and
//     names the same key as its quoted form (`"abc-123"`); a value that starts with `"` is
//     always read as a quoted string, so this mode accepts everything the strict one does and
//     returns the same key for it. The token is the RFC 9110 one (tchar: letters, digits and
//     ! # $ % & ' * + - . ^ _ ` | ~), not RFC 8941's sf-token: `a/b` and `a:b` must be quoted.
//
// Thread safety: thread-safe. The functions share no state.
//
// Costs: one pass over the value and one allocation for the returned key; a rejection
// allocates a few more to build its message. Meant for the request path of an HTTP server,
// once per request.
#ifndef KEEL_IDEMPOTENCY_KEY_H_
#define KEEL_IDEMPOTENCY_KEY_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace keel {

// The header's name, as the draft spells it; names are matched case-insensitively.
inline constexpr std::string_view kIdempotencyKeyHeader = "Idempotency-Key";

// How strictly a key is read.
struct IdempotencyKeyOptions {
  // The longest key accepted, in decoded bytes (after removing the quotes and escapes).
  size_t max_length = 255;
  // When true, an unquoted RFC 9110 token (one or more tchar) is accepted as well as the
  // quoted string the draft specifies; many clients send UUIDs unquoted.
  bool accept_bare_token = false;
};

// Parses one Idempotency-Key header value and returns the decoded key: 1 to
// `options.max_length` bytes of printable ASCII (0x20-0x7E). The value is an sf-string
// (`"abc"`, `"say \"hi\""`), or a bare token when `options.accept_bare_token` is set,
// optionally surrounded by SP and HTAB. Returns InvalidArgument, with a message that says what
// was expected and quotes at most 40 bytes of the value, for anything else: a missing,
// unterminated or misplaced quote, a byte outside 0x20-0x7E inside the quotes, a backslash
// that escapes anything but `"` or `\`, parameters (`;a=1`), a list (`"a", "b"`), anything
// after the closing quote, an empty key, or a key longer than `options.max_length`. Any
// thread, any context; never throws.
absl::StatusOr<std::string> ParseIdempotencyKey(std::string_view header_value,
                                                const IdempotencyKeyOptions& options = {});

// Finds the Idempotency-Key header among a request's header lines (name, raw value), matching
// the name case-insensitively, and parses it with ParseIdempotencyKey. Returns NotFound when
// no line has that name, InvalidArgument when more than one does (the draft allows one; keel
// does not pick one of several keys) or when the one line holds a list (`"a", "b"`) or is
// otherwise malformed. The views need only live for the call. Any thread; never throws.
absl::StatusOr<std::string> IdempotencyKeyFromHeaders(
    const std::vector<std::pair<std::string_view, std::string_view>>& headers,
    const IdempotencyKeyOptions& options = {});

}  // namespace keel

#endif  // KEEL_IDEMPOTENCY_KEY_H_
