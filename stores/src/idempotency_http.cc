#include "keel/idempotency_http.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "keel/fetchers/http_cache.h"
#include "sha256.h"

namespace keel {
namespace {

// Domain-separation tags: a scope digest and a fingerprint never hash the same input. Changing
// either changes every stored key or fingerprint, so they carry a version.
constexpr std::string_view kScopeTag = "keel idempotency scope v1";
constexpr std::string_view kFingerprintTag = "keel idempotency fingerprint v1";
// The bytes ScopedKey adds in front of the client's key: 64 hex digits and ':'.
constexpr size_t kScopeBytes = 2 * internal::Sha256::kDigestBytes + 1;

constexpr std::string_view kProblemContentType = "application/problem+json";
constexpr std::string_view kExpiresHeader = "Expires";
constexpr std::string_view kReplayedHeader = "Idempotent-Replayed";

// Debian's abseil has its own string_view, distinct from std::string_view.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }
std::string_view StdSv(absl::string_view s) { return std::string_view(s.data(), s.size()); }

// Hashes `part` preceded by its length (8 bytes, big-endian), so that consecutive parts cannot
// be re-split: ("ab", "/c") and ("a", "b/c") hash differently.
void UpdateLengthPrefixed(internal::Sha256& hasher, std::string_view part) {
  const uint64_t length = part.size();
  char prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((length >> (8 * (7 - i))) & 0xff);
  hasher.Update(std::string_view(prefix, sizeof(prefix)));
  hasher.Update(part);
}

// abseil's, on abseil's string_view (a distinct type in Debian's build).
bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return absl::EqualsIgnoreCase(absl::string_view(a.data(), a.size()),
                                absl::string_view(b.data(), b.size()));
}

bool Contains(const std::vector<std::string>& methods, std::string_view method) {
  return std::find(methods.begin(), methods.end(), method) != methods.end();
}

// Headers this layer owns on answers about a key; the handler's own are dropped.
bool IsOwnedHeader(std::string_view name) {
  return EqualsIgnoreCase(name, kExpiresHeader) || EqualsIgnoreCase(name, kReplayedHeader);
}

// The length of the well-formed UTF-8 sequence (RFC 3629 §4) at the start of `s`, whose first
// byte is >= 0x80; 0 when it is not well formed (a stray continuation byte, an overlong form,
// a surrogate, a code point over U+10FFFF, or a truncated sequence).
size_t Utf8SequenceLength(std::string_view s) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = byte(0);
  size_t length;
  unsigned char second_low = 0x80, second_high = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) second_low = 0xa0;   // no overlong forms
    if (lead == 0xed) second_high = 0x9f;  // no surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) second_low = 0x90;   // no overlong forms
    if (lead == 0xf4) second_high = 0x8f;  // nothing over U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < length) return 0;
  if (byte(1) < second_low || byte(1) > second_high) return 0;
  for (size_t i = 2; i < length; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
  }
  return length;
}

// Appends `s` as a JSON string (RFC 8259 §7): quotes, backslashes and control characters
// escaped, well-formed UTF-8 kept, each byte of ill-formed UTF-8 replaced by U+FFFD.
void AppendJsonString(std::string& out, std::string_view s) {
  out.push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t length = Utf8SequenceLength(s.substr(i));
      if (length == 0) {
        out += "\\ufffd";
        ++i;
      } else {
        out.append(s.substr(i, length));
        i += length;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
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
        if (c < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out.push_back('"');
}

// Whole seconds for Retry-After (delta-seconds, RFC 9110 §10.2.3): rounded up, at least 1.
std::string RetryAfterSeconds(absl::Duration wait) {
  const int64_t seconds = absl::ToInt64Seconds(absl::Ceil(wait, absl::Seconds(1)));
  return absl::StrCat(std::max<int64_t>(seconds, 1));
}

absl::Status CheckOptions(const IdempotencyHttpOptions& o, const IdempotencyOptions& tracker) {
  auto invalid = [](std::string message) {
    return absl::InvalidArgumentError(absl::StrCat("idempotency http: ", message));
  };
  for (const std::string& method : o.methods_requiring_key) {
    if (method.empty()) return invalid("methods_requiring_key holds an empty method name");
    if (Contains(o.methods_accepting_key, method)) {
      return invalid(absl::StrCat("method ", method,
                                  " is in both methods_requiring_key and methods_accepting_key; "
                                  "expected it in one of them"));
    }
  }
  for (const std::string& method : o.methods_accepting_key) {
    if (method.empty()) return invalid("methods_accepting_key holds an empty method name");
  }
  if (o.key.max_length == 0) return invalid("key.max_length must be > 0");
  if (tracker.max_key_bytes < kScopeBytes + 1 ||
      o.key.max_length > tracker.max_key_bytes - kScopeBytes) {
    return invalid(absl::StrCat("key.max_length (", o.key.max_length, ") plus the ", kScopeBytes,
                                " bytes of the scope must fit the tracker's max_key_bytes (",
                                tracker.max_key_bytes, ")"));
  }
  if (tracker.max_fingerprint_bytes < internal::Sha256::kDigestBytes) {
    return invalid(absl::StrCat(
        "the tracker's max_fingerprint_bytes must be >= ", internal::Sha256::kDigestBytes,
        " (a SHA-256), got ", tracker.max_fingerprint_bytes));
  }
  if (o.retry_after_when_full < absl::ZeroDuration() ||
      o.retry_after_when_full == absl::InfiniteDuration()) {
    return invalid(absl::StrCat("retry_after_when_full must be >= 0 and finite, got ",
                                absl::FormatDuration(o.retry_after_when_full)));
  }
  return absl::OkStatus();
}

}  // namespace

IdempotencyHttp::IdempotencyHttp(Runtime& runtime, IdempotencyTracker& tracker,
                                 IdempotencyHttpOptions options)
    : runtime_(&runtime), tracker_(&tracker), options_(std::move(options)) {}

absl::StatusOr<IdempotencyHttp> IdempotencyHttp::Create(Runtime& runtime,
                                                        IdempotencyTracker& tracker,
                                                        IdempotencyHttpOptions options) {
  if (absl::Status valid = CheckOptions(options, tracker.options()); !valid.ok()) return valid;
  return IdempotencyHttp(runtime, tracker, std::move(options));
}

std::string IdempotencyHttp::ScopedKey(std::string_view identity, std::string_view method,
                                       std::string_view route, std::string_view key) {
  internal::Sha256 hasher;
  UpdateLengthPrefixed(hasher, kScopeTag);
  UpdateLengthPrefixed(hasher, identity);
  UpdateLengthPrefixed(hasher, method);
  UpdateLengthPrefixed(hasher, route);
  std::string scoped = internal::ToHex(hasher.Finish());
  scoped.reserve(kScopeBytes + key.size());
  scoped.push_back(':');
  scoped.append(key);
  return scoped;
}

std::string IdempotencyHttp::Fingerprint(std::string_view method, std::string_view route,
                                         std::string_view canonical_body) {
  internal::Sha256 hasher;
  UpdateLengthPrefixed(hasher, kFingerprintTag);
  UpdateLengthPrefixed(hasher, method);
  UpdateLengthPrefixed(hasher, route);
  UpdateLengthPrefixed(hasher, canonical_body);
  const internal::Sha256Digest digest = hasher.Finish();
  return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
}

absl::Time IdempotencyHttp::WallNow() const {
  if (options_.wall_now) {
    try {
      return options_.wall_now();
    } catch (...) {  // a user callback: keel throws nothing, so fall back to the real clock
    }
  }
  return absl::Now();
}

void IdempotencyHttp::AddExpires(HttpReply& reply, Instant expires) const {
  const absl::Duration remaining = Elapsed(runtime_->Now(), expires);
  reply.headers.emplace_back(kExpiresHeader, fetchers::FormatHttpDate(WallNow() + remaining));
}

HttpReply IdempotencyHttp::Problem(int status, std::string_view type_name, std::string_view title,
                                   std::string_view detail) const {
  std::string body = "{\"type\":";
  AppendJsonString(body, absl::StrCat(options_.problem_type_base, Sv(type_name)));
  body += ",\"title\":";
  AppendJsonString(body, title);
  absl::StrAppend(&body, ",\"status\":", status, ",\"detail\":");
  AppendJsonString(body, detail);
  body.push_back('}');
  HttpReply reply;
  reply.status = status;
  reply.headers = {{"Content-Type", std::string(kProblemContentType)}, {"Content-Language", "en"}};
  reply.body = std::make_shared<const std::string>(std::move(body));
  return reply;
}

IdempotencyHttp::Decision IdempotencyHttp::Decide(const HttpRequestView& request) const {
  const bool required = Contains(options_.methods_requiring_key, request.method);
  if (!required && !Contains(options_.methods_accepting_key, request.method)) {
    return Decision(Proceed{});
  }

  absl::StatusOr<std::string> key = IdempotencyKeyFromHeaders(request.headers, options_.key);
  if (absl::IsNotFound(key.status())) {
    if (!required) return Decision(Proceed{});
    return Problem(
        400, "idempotency-key-missing", "Idempotency-Key is missing",
        absl::StrCat(
            Sv(request.method), " requests to ", Sv(request.route),
            " must carry an Idempotency-Key header: a unique key per operation, as ",
            options_.key.accept_bare_token ? "a quoted string or a token" : "a quoted string",
            " (Idempotency-Key: \"8e03978e-40d5-43e8-bc93-6894a57f9324\")"));
  }
  if (!key.ok()) {
    return Problem(400, "idempotency-key-invalid", "Idempotency-Key is invalid",
                   StdSv(key.status().message()));
  }

  std::string canonical_storage;
  std::string_view canonical_body = request.body;
  if (options_.canonicalise_body) {
    absl::StatusOr<std::string> canonical;
    try {
      canonical = options_.canonicalise_body(request.body);
    } catch (const std::exception& e) {
      return Problem(500, "internal-error", "The request could not be checked",
                     absl::StrCat("The request body canonicaliser threw: ", e.what()));
    } catch (...) {
      return Problem(500, "internal-error", "The request could not be checked",
                     "The request body canonicaliser threw.");
    }
    if (!canonical.ok()) {
      return Problem(400, "request-body-invalid", "The request body is invalid",
                     StdSv(canonical.status().message()));
    }
    canonical_storage = *std::move(canonical);
    canonical_body = canonical_storage;
  }

  const std::string scoped_key = ScopedKey(request.identity, request.method, request.route, *key);
  const std::string fingerprint = Fingerprint(request.method, request.route, canonical_body);
  absl::StatusOr<TrackResult> tracked = tracker_->Track(scoped_key, fingerprint);
  if (!tracked.ok()) {
    const absl::Status& status = tracked.status();
    if (absl::IsResourceExhausted(status)) {
      HttpReply reply =
          Problem(503, "idempotency-store-full", "Too many requests are being tracked",
                  "The server tracks too many idempotency keys at the moment; retry later.");
      reply.headers.emplace_back("Retry-After", RetryAfterSeconds(options_.retry_after_when_full));
      return reply;
    }
    if (absl::IsInvalidArgument(status)) {
      return Problem(400, "idempotency-key-invalid", "Idempotency-Key is invalid",
                     StdSv(status.message()));
    }
    return Problem(500, "internal-error", "The request could not be checked",
                   StdSv(status.message()));
  }

  if (Claim* claim = std::get_if<Claim>(&*tracked)) {
    Proceed proceed;
    proceed.claim.emplace(std::move(*claim));
    proceed.key = *std::move(key);
    return Decision(std::move(proceed));
  }
  if (const Mismatch* mismatch = std::get_if<Mismatch>(&*tracked)) {
    HttpReply reply = Problem(
        422, "idempotency-key-reused", "Idempotency-Key is already used",
        "This Idempotency-Key was used for a request with another payload; a key must not be "
        "reused across different payloads of this operation.");
    AddExpires(reply, mismatch->expires);
    return reply;
  }
  if (const InFlight* in_flight = std::get_if<InFlight>(&*tracked)) {
    const std::string retry_after =
        RetryAfterSeconds(Elapsed(runtime_->Now(), in_flight->lease_deadline));
    HttpReply reply =
        Problem(409, "request-in-flight", "A request is outstanding for this Idempotency-Key",
                absl::StrCat("The first request with this key is still being processed; retry in ",
                             retry_after, " s."));
    reply.headers.emplace_back("Retry-After", retry_after);
    AddExpires(reply, in_flight->expires);
    return reply;
  }
  if (Replay* replay = std::get_if<Replay>(&*tracked)) {
    const IdempotentResponse& stored = *replay->response;
    HttpReply reply;
    reply.status = stored.status;
    reply.headers.reserve(stored.headers.size() + 2);
    for (const auto& header : stored.headers) {
      if (!IsOwnedHeader(header.first)) reply.headers.push_back(header);
    }
    reply.headers.emplace_back(kReplayedHeader, "true");
    AddExpires(reply, replay->expires);
    // Aliasing: the body is the stored response's, kept alive by it; nothing is copied.
    reply.body = std::shared_ptr<const std::string>(std::move(replay->response), &stored.body);
    return reply;
  }
  const Halted& halted = std::get<Halted>(*tracked);
  HttpReply reply =
      Problem(500, "request-halted", "The request with this Idempotency-Key failed",
              absl::StrCat("The first request with this key did not complete and "
                           "its outcome is unknown: ",
                           halted.reason, ". This key gives this answer until it expires."));
  AddExpires(reply, halted.expires);
  return reply;
}

IdempotencyHttp::Finished IdempotencyHttp::Finish(Proceed& proceed,
                                                  IdempotentResponse response) const {
  Finished finished;
  if (!proceed.claim.has_value()) {
    finished.reply.status = response.status;
    finished.reply.headers = std::move(response.headers);
    finished.reply.body = std::make_shared<const std::string>(std::move(response.body));
    finished.stored = proceed.key.empty()
                          ? absl::OkStatus()  // untracked: nothing to store
                          : absl::FailedPreconditionError("this Proceed was already finished");
    return finished;
  }
  std::erase_if(response.headers, [](const auto& header) { return IsOwnedHeader(header.first); });
  finished.reply.status = response.status;
  finished.reply.headers = response.headers;
  finished.reply.body = std::make_shared<const std::string>(response.body);  // one copy sent
  // Read before Complete, which restarts retention at its own (same or later) now: Expires
  // is never later than the entry's expiry.
  const Instant now = runtime_->Now();
  finished.stored = proceed.claim->Complete(std::move(response));  // the other copy stored
  proceed.claim.reset();
  if (finished.stored.ok()) {
    AddExpires(finished.reply, AddDuration(now, tracker_->options().retention));
  }
  return finished;
}

}  // namespace keel
