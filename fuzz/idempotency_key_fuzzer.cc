// Fuzzes the Idempotency-Key header parser with arbitrary header values and length limits.
// The last input byte chooses the options and the header name's spelling; the bytes before it
// are the header value, so a seed file is a readable value followed by one byte ("\n" gives the
// default limit of 255). Properties checked:
//   1. Nothing crashes, whatever the bytes.
//   2. An accepted key is 1 to max_length bytes of printable ASCII (0x20-0x7E); a rejection is
//      InvalidArgument with a message of bounded length made of printable ASCII only.
//   3. Round trip: quoting an accepted key per sf-string rules (RFC 8941 §4.1.6) and parsing
//      it again, strictly and with whitespace around it, gives the same key.
//   4. Bare-token mode accepts a superset of the strict mode: whatever the strict mode accepts
//      it accepts with the same key; on a value that starts with a quote the two agree
//      exactly; a key it accepts from an unquoted value is that value, trimmed, all tchar.
//   5. IdempotencyKeyFromHeaders with the header once (any case) gives what
//      ParseIdempotencyKey gives, twice gives InvalidArgument, never gives NotFound.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "keel/idempotency_key.h"

namespace {

constexpr std::string_view kNameSpellings[] = {"Idempotency-Key", "idempotency-key",
                                               "IDEMPOTENCY-KEY", "iDEMPOTENCY-kEY"};
// Longer than any message the parser writes: 40 quoted bytes, each escaped to at most four.
constexpr size_t kMaxMessageBytes = 400;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "idempotency_key_fuzzer: property violated: %s\n", what);
    std::abort();
  }
}

bool IsPrintableAscii(char c) { return c >= 0x20 && c <= 0x7e; }

bool IsTokenChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Serialises `key` as an sf-string.
std::string QuoteAsSfString(std::string_view key) {
  std::string out = "\"";
  for (char c : key) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

void CheckOutcome(const absl::StatusOr<std::string>& key,
                  const keel::IdempotencyKeyOptions& options) {
  if (key.ok()) {
    Check(!key->empty(), "an accepted key is empty");
    Check(key->size() <= options.max_length, "an accepted key is longer than max_length");
    for (char c : *key) Check(IsPrintableAscii(c), "an accepted key holds a non-printable byte");
    return;
  }
  Check(key.status().code() == absl::StatusCode::kInvalidArgument,
        "a rejection is not InvalidArgument");
  const std::string_view message(key.status().message().data(), key.status().message().size());
  Check(!message.empty() && message.size() <= kMaxMessageBytes,
        "an error message is empty or too long");
  for (char c : message) Check(IsPrintableAscii(c), "an error message holds a raw control byte");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider provider(data, size);
  // The last byte: bit 7 picks a small limit (bits 0-5) instead of the default; bits 0-1 also
  // pick the header name's spelling.
  const uint8_t config = provider.ConsumeIntegral<uint8_t>();
  const std::string value = provider.ConsumeRemainingBytesAsString();

  keel::IdempotencyKeyOptions strict;
  if (config & 0x80) strict.max_length = config & 0x3f;
  keel::IdempotencyKeyOptions bare = strict;
  bare.accept_bare_token = true;

  const absl::StatusOr<std::string> strict_key = keel::ParseIdempotencyKey(value, strict);
  const absl::StatusOr<std::string> bare_key = keel::ParseIdempotencyKey(value, bare);
  CheckOutcome(strict_key, strict);
  CheckOutcome(bare_key, bare);

  // Property 3.
  for (const absl::StatusOr<std::string>* key : {&strict_key, &bare_key}) {
    if (!key->ok()) continue;
    const std::string quoted = QuoteAsSfString(**key);
    const absl::StatusOr<std::string> again = keel::ParseIdempotencyKey(quoted, strict);
    Check(again.ok() && *again == **key, "quoting an accepted key does not parse back to it");
    const absl::StatusOr<std::string> padded =
        keel::ParseIdempotencyKey(" \t" + quoted + "\t ", strict);
    Check(padded.ok() && *padded == **key, "whitespace around a quoted key changes it");
  }

  // Property 4.
  if (strict_key.ok()) {
    Check(bare_key.ok() && *bare_key == *strict_key,
          "bare-token mode rejects or changes a key the strict mode accepts");
  }
  const std::string_view trimmed = TrimOws(value);
  if (!trimmed.empty() && trimmed.front() == '"') {
    Check(strict_key.ok() == bare_key.ok(), "the modes disagree on a quoted value");
  } else if (bare_key.ok()) {
    Check(*bare_key == trimmed, "a bare token is not the trimmed value");
    for (char c : *bare_key) Check(IsTokenChar(c), "a bare token holds a non-tchar byte");
  }

  // Property 5.
  const std::string_view name = kNameSpellings[config & 0x03];
  using Headers = std::vector<std::pair<std::string_view, std::string_view>>;
  for (const keel::IdempotencyKeyOptions* options : {&strict, &bare}) {
    const absl::StatusOr<std::string>& direct = options == &strict ? strict_key : bare_key;
    const absl::StatusOr<std::string> once =
        keel::IdempotencyKeyFromHeaders(Headers{{"Accept", "*/*"}, {name, value}}, *options);
    Check(once.status() == direct.status() && (!once.ok() || *once == *direct),
          "IdempotencyKeyFromHeaders differs from ParseIdempotencyKey on one header");
    const absl::StatusOr<std::string> twice = keel::IdempotencyKeyFromHeaders(
        Headers{{name, value}, {"Idempotency-Key", value}}, *options);
    Check(twice.status().code() == absl::StatusCode::kInvalidArgument,
          "a repeated header is not InvalidArgument");
  }
  return 0;
}
