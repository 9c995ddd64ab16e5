// IdempotencyHttp: the Idempotency-Key protocol for any HTTP server, a request view in and a
// decision out.
//
// An HTTP server that wants POST and PATCH to be safe to retry follows the IETF draft "The
// Idempotency-Key HTTP Header Field": the client sends a key of its choosing with the request,
// the server runs the first request with that key and answers every retry with what became of
// it. IdempotencyHttp is that protocol on top of an IdempotencyTracker, independent of any
// server framework: an adapter turns the framework's request into an HttpRequestView, asks
// Decide() whether to run the handler, and sends what it is told to send. It reads and checks
// the key, scopes it by the caller's identity, method and route (two callers with the same
// key never see each other's responses), fingerprints the payload (a retry with another body
// is refused), and writes the error answers as `application/problem+json`.
//
//   auto http = keel::IdempotencyHttp::Create(*runtime, *tracker, {});  // once, at start
//   ...
//   keel::IdempotencyHttp::Decision decision = http->Decide(request_view);
//   if (auto* proceed = std::get_if<keel::IdempotencyHttp::Proceed>(&decision)) {
//     keel::IdempotentResponse response = Handle(request);  // may throw: the key halts
//     Send(http->Finish(*proceed, std::move(response)).reply);
//   } else {
//     Send(std::get<keel::HttpReply>(decision));  // 4xx/5xx problem, or a replay
//   }
//
// What Decide answers (status, then headers beyond Content-Type/Content-Language):
//
//   | request                                          | answer                               |
//   |--------------------------------------------------|--------------------------------------|
//   | method neither requires nor accepts a key        | Proceed, untracked (key ignored)     |
//   | method accepts a key, none sent                  | Proceed, untracked                   |
//   | method requires a key, none sent                 | 400 problem                          |
//   | two Idempotency-Key lines, a list, a malformed   | 400 problem (detail says what was    |
//   |   or over-long key                               |   expected)                          |
//   | canonicaliser refuses the body                   | 400 problem                          |
//   | key free (first request, or the entry expired)   | Proceed with a Claim                 |
//   | same key, another payload (checked first)        | 422 problem, Expires                 |
//   | same key, first request still running            | 409 problem, Retry-After, Expires    |
//   | same key, first request completed                | the stored status, headers and body, |
//   |                                                  |   Idempotent-Replayed: true, Expires |
//   | same key, first request halted (threw, dropped   | 500 problem, Expires                 |
//   |   its claim, or its lease ran out)               |                                      |
//   | the tracker is full (max_entries)                | 503 problem, Retry-After             |
//
// Halted entries: the 500 is the tracker's default (HaltedEntries::kReplayFailure: the
// outcome of the first request is unknown, so a retry is told so until the entry expires).
// For a fresh run instead, create the tracker with `on_halted = HaltedEntries::kReleaseKey`:
// the tracker then claims the key again and Decide answers Proceed; this layer adds no policy
// of its own. Likewise, a handler that hits a transient failure and wants retries to run again
// calls `proceed.claim->Abort()` instead of Finish(). The 500's detail quotes the halt reason
// (keel's own, or the one given to Claim::Halt), so a reason must not hold secrets.
//
// Decisions beyond the draft:
//   - Keys are honoured only on the methods listed in the options (POST and PATCH require one;
//     none merely accept one by default). On other methods the header is ignored, not
//     checked: a client library that sends a key with every request does not get its GETs
//     refused or replayed. Method names are case-sensitive (RFC 9110 §9.1).
//   - The stored key is `<scope>:<key>`, where <scope> is 64 lower-case hex digits of a
//     SHA-256 over the length-prefixed identity, method and route. The length prefixes make
//     the split unforgeable (identity "ab" with route "/c" is another scope than identity "a"
//     with route "b/c"); the hash bounds the length whatever the identity, and keeps
//     identities out of the store. Anonymous callers (identity "") share one scope.
//   - The fingerprint is the raw 32-byte SHA-256 over the length-prefixed method, route and
//     (canonicalised) body, stable across processes and builds, as a shared store needs.
//   - Every answer about an existing entry (409, 422, 500, a replay, and Finish's reply)
//     carries `Expires`: the entry's expiry on the runtime clock, converted to wall time
//     (`wall_now() + (expires - runtime.Now())`), as an IMF-fixdate truncated to the second.
//     It replaces any `Expires` header of the handler's response; `Idempotent-Replayed`
//     headers of the handler's response are dropped too.
//   - Problem bodies are one-line JSON objects with "type", "title", "status" and "detail",
//     in that order; the titles of 400, 409 and 422 are the draft's. Text that does not come
//     from keel (a halt reason, the type base) is JSON-escaped, and invalid UTF-8 in it is
//     replaced by U+FFFD, so the body is always valid JSON.
//   - Retry-After of a 409 is the whole seconds until the first request's lease deadline,
//     rounded up, at least 1: by then the key is answerable (completed, or halted or free by
//     the tracker's lease policy).
//
// Thread safety: thread-safe. Decide and Finish may be called from any thread, concurrently;
// the options' callbacks are called concurrently from those threads and must be thread-safe.
//
// Lifetime: the runtime and the tracker must outlive this object, and this object must outlive
// the Proceed values it returned.
//
// Costs: per tracked request, one pass of SHA-256 over the (canonical) body and a few dozen
// bytes for the scope, one Track (one shard lock), and a handful of small allocations for the
// answer. A replay shares the stored body (no copy); Finish copies the handler's body once,
// since one copy is stored and the other sent.
#ifndef KEEL_IDEMPOTENCY_HTTP_H_
#define KEEL_IDEMPOTENCY_HTTP_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "keel/idempotency.h"
#include "keel/idempotency_key.h"
#include "keel/runtime.h"

namespace keel {

// A request as the idempotency layer sees it. The views need only live for the call.
struct HttpRequestView {
  // The request method, case-sensitive ("POST").
  std::string_view method;
  // The route the handler serves: a template ("/orders/{id}") or the path, as the server
  // prefers. Part of both the key's scope and the fingerprint.
  std::string_view route;
  // The header lines (name, raw value); names are matched case-insensitively.
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  std::string_view body;
  // The authenticated caller ("" for anonymous callers, who all share one scope).
  std::string_view identity;
};

// What to send: a problem, a replay, or the handler's response. Never has a null body.
struct HttpReply {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  // Shared with the tracker's stored response for a replay; never null.
  std::shared_ptr<const std::string> body;
};

struct IdempotencyHttpOptions {
  // Methods whose requests must carry a key (400 without one).
  std::vector<std::string> methods_requiring_key = {"POST", "PATCH"};
  // Methods whose requests are tracked when they carry a key, and run untracked otherwise.
  // Must not overlap methods_requiring_key.
  std::vector<std::string> methods_accepting_key = {};
  // How the key is read: its longest length, and whether a bare token is accepted besides the
  // draft's quoted string. `key.max_length + 65` must fit the tracker's max_key_bytes.
  IdempotencyKeyOptions key = {};
  // Turns a body into the bytes fingerprinted, so that equivalent payloads (JSON with other key
  // order or whitespace, say) count as the same request; null fingerprints the body as is. A
  // non-OK status is a 400 whose detail is the status message; an exception is a 500.
  std::function<absl::StatusOr<std::string>(std::string_view body)> canonicalise_body = nullptr;
  // The problem "type" URIs are this followed by a name: "idempotency-key-missing",
  // "idempotency-key-invalid", "request-body-invalid" (400), "idempotency-key-reused" (422),
  // "request-in-flight" (409), "request-halted" (500), "idempotency-store-full" (503), and
  // "internal-error" (500: the canonicaliser threw, or the tracker failed unexpectedly). The
  // default is a placeholder under the reserved `.invalid` domain, which points at nobody's
  // page; set it to the service's own documentation.
  std::string problem_type_base = "https://keel.invalid/problems/";
  // Retry-After of a 503 when the tracker is full; rounded up to whole seconds, at least 1.
  absl::Duration retry_after_when_full = absl::Seconds(1);
  // The wall clock for Expires; null means absl::Now(). Tests fix it for byte-exact dates.
  std::function<absl::Time()> wall_now = nullptr;
};

class IdempotencyHttp {
 public:
  // Run the handler. With a claim, the caller must settle it: Finish() (or claim->Abort() to
  // let a retry run again); a claim destroyed unsettled halts its key, and retries get a 500.
  struct Proceed {
    // Empty when the request is not tracked: its method takes no key, or accepts one and
    // came without. Otherwise claim->key() is the scoped key.
    std::optional<Claim> claim;
    // The key the client sent, decoded; empty when untracked.
    std::string key;
  };
  using Decision = std::variant<Proceed, HttpReply>;

  // Finish's result: what to send, and whether it was stored for retries.
  struct Finished {
    HttpReply reply;
    // OK, or why the response was not stored (the claim's FailedPrecondition: its lease ran
    // out and the entry was given up, or it was already settled). The reply is sent anyway:
    // the handler did run.
    absl::Status stored;
  };

  // A layer on `tracker`, which runs on `runtime` (the same runtime: expiries are on its
  // clock). InvalidArgument, naming the option, for an empty method name, a method in both
  // lists, a key.max_length of 0 or too long for the tracker's max_key_bytes once scoped, a
  // tracker max_fingerprint_bytes under 32, or a negative or infinite retry_after_when_full.
  static absl::StatusOr<IdempotencyHttp> Create(Runtime& runtime, IdempotencyTracker& tracker,
                                                IdempotencyHttpOptions options = {});

  IdempotencyHttp(IdempotencyHttp&&) = default;
  IdempotencyHttp& operator=(IdempotencyHttp&&) = default;

  // Decides what to do with `request`; see the table in the header comment. Calls
  // canonicalise_body (tracked requests only) and wall_now. Any thread.
  Decision Decide(const HttpRequestView& request) const;

  // Settles `proceed` with the handler's `response` and returns what to send: for a tracked
  // request, the response is stored for retries (Claim::Complete) and the reply carries
  // Expires (the entry's new expiry); an untracked response passes through as is. Call once
  // per Proceed; a second call passes the response through with `stored`
  // FailedPrecondition. A call after claim->Abort(), or after the claim's lease ran out, sends
  // the response without storing it (`stored` FailedPrecondition, no Expires), less any
  // Expires and Idempotent-Replayed headers of the handler's, as for every tracked request.
  // Any thread.
  Finished Finish(Proceed& proceed, IdempotentResponse response) const;

  // The key under which a request is tracked: 64 hex digits of the scope's SHA-256, ':' and
  // `key` (see the header comment). Any thread.
  static std::string ScopedKey(std::string_view identity, std::string_view method,
                               std::string_view route, std::string_view key);
  // The 32-byte fingerprint of a request whose body is already canonical. Any thread.
  static std::string Fingerprint(std::string_view method, std::string_view route,
                                 std::string_view canonical_body);

 private:
  IdempotencyHttp(Runtime& runtime, IdempotencyTracker& tracker, IdempotencyHttpOptions options);

  HttpReply Problem(int status, std::string_view type_name, std::string_view title,
                    std::string_view detail) const;
  // Adds the Expires header for an entry that expires at `expires` on the runtime clock.
  void AddExpires(HttpReply& reply, Instant expires) const;
  absl::Time WallNow() const;

  Runtime* runtime_;
  IdempotencyTracker* tracker_;
  IdempotencyHttpOptions options_;
};

}  // namespace keel

#endif  // KEEL_IDEMPOTENCY_HTTP_H_
