// Fetcher: where a remote term's bytes come from, behind one small interface.
//
// A remote term asks its fetcher for the current bytes of its source, passing what it knows
// about the value it already has (validators such as an ETag), and the fetcher answers once:
// new bytes, "not modified", or an error. keel ships `Static` (tests), `File` and `Http`
// (keel/fetchers/static_source.h, file.h, http.h); a user writes another source by implementing
// `Fetch`:
//
//   class MyFetcher final : public keel::fetchers::Fetcher {
//    public:
//     std::string Describe() const override { return "my-store:pricing"; }
//     void Fetch(keel::Runtime& runtime, const keel::fetchers::FetchRequest& request,
//                keel::fetchers::FetchCallback done) override {
//       // Start non-blocking work (a libcurl transfer, or runtime.OffloadThen for blocking
//       // I/O) and call done(...) exactly once, on the control thread.
//     }
//   };
//
// The term does the rest: the size caps on what the fetcher returns, gunzip, the content-hash
// check that turns an unchanged body into "not modified", decode, validate, publish, status,
// telemetry, and the schedule (a fetcher may suggest the next refresh, as HTTP caching does).
//
// Thread safety: a term calls `Fetch` and `Cancel` on its runtime's control thread only, and
// never starts a second fetch on the same fetcher before the first one's callback has run.
// A fetcher instance belongs to one term.
//
// Lifetime: a fetcher is destroyed on the control thread, or on any thread when no fetch is
// running (a term keeps itself, and so its fetcher, alive until its fetch's callback has run).
#ifndef KEEL_FETCHERS_FETCHER_H_
#define KEEL_FETCHERS_FETCHER_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "keel/fetchers/http_cache.h"
#include "keel/runtime.h"

namespace keel::fetchers {

// What a source said about a value, so that the next fetch can ask "has it changed?". All
// fields are opaque to the term, which stores them with the published value (and in the
// last-known-good copy on disk) and hands them back in the next request.
struct Validators {
  // An HTTP entity tag, exactly as the server sent it (quotes and W/ included); "" if none.
  std::string etag;
  // An HTTP Last-Modified value, exactly as sent; "" if none.
  std::string last_modified;
  // A fetcher-defined version: File's "mtime+size+hash", S3's ETag. Shown in the term's
  // status; "" when the source has none (the term then shows the content hash).
  std::string version;
};

// One fetch, as the term asks for it.
struct FetchRequest {
  // The validators of the value the term holds (its published value, or its last-known-good
  // copy); empty when it holds none. A fetcher that can ask conditionally should.
  Validators known;
  // The most bytes the fetcher may return in `FetchResult::body`. A source that sends more
  // must be cut off as soon as the cap is passed (not downloaded in full), and the fetch
  // fails with ResourceExhausted. The term sets it from its max_fetched_bytes.
  uint64_t max_bytes = uint64_t{256} << 20;
  // The term's refresh policy, for fetchers whose source says when to ask again.
  RefreshPolicy policy;
  // The wall-clock time when the fetch starts, for date headers (HTTP's Expires,
  // Retry-After). The term sets it; the default is the time the request was built.
  absl::Time wall_now = absl::Now();
};

// What one fetch found.
struct FetchResult {
  // OK when the fetch succeeded (new bytes, or not modified). Otherwise an error with a
  // canonical code and a message that names the source: Unavailable (cannot reach it, 5xx),
  // NotFound, PermissionDenied, DeadlineExceeded (timeout), ResourceExhausted (over
  // max_bytes, 429), DataLoss (a short or corrupt body), InvalidArgument (a bad answer).
  absl::Status status;
  // True when the source said the value has not changed since `FetchRequest::known`; then
  // `body` is empty and nothing is downloaded.
  bool not_modified = false;
  // The bytes as the source holds them (gzip stays compressed: the term inflates it).
  std::string body;
  // The validators of `body` (or, when not modified, the source's current ones).
  Validators validators;
  // When the source last changed the value (HTTP Last-Modified, a file's mtime), if known.
  // The term refuses a value whose time is older than the one it publishes.
  std::optional<absl::Time> modified;
  // When the source says when to ask again (HTTP caching, Retry-After): the delay and why.
  // The term uses it instead of its interval (or its backoff, after a failure).
  std::optional<RefreshDecision> next_refresh;
  // Which of the fetcher's places answered, when it has several (S3's failover buckets:
  // "s3://bucket/key"); "" when there is only one. The term's status shows it.
  std::string served_by;
  // Bytes received from the source, headers excluded (an error page's body included): 0 for
  // "not modified".
  uint64_t bytes_received = 0;
};

using FetchCallback = absl::AnyInvocable<void(FetchResult)>;

class Fetcher {
 public:
  virtual ~Fetcher() = default;

  // A short description of the source for logs and status, such as
  // "http https://cdn.example/pricing.json.gz" or "file /etc/pricing.json".
  virtual std::string Describe() const = 0;

  // Checks the fetcher's options; a term's Start calls it once and refuses to start with its
  // error (InvalidArgument, saying what was expected). Any thread. The default accepts.
  virtual absl::Status Validate() const { return absl::OkStatus(); }

  // Starts one fetch. Called on the control thread of `runtime`; must not block (network
  // I/O through libcurl on the control thread, blocking I/O through runtime.Offload*).
  // Calls `done` exactly once, on the control thread, possibly before returning.
  virtual void Fetch(Runtime& runtime, const FetchRequest& request, FetchCallback done) = 0;

  // Abandons the fetch in progress, if any: `done` then runs with CancelledError (now or
  // soon, on the control thread) or not at all if it already ran. Called on the control
  // thread when the term stops. The default does nothing: the fetch runs to its end.
  virtual void Cancel(Runtime& runtime) { (void)runtime; }
};

}  // namespace keel::fetchers

#endif  // KEEL_FETCHERS_FETCHER_H_
