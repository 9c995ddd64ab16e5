// Internal to keel::fetchers: one HTTP GET or HEAD for a fetcher, through libcurl on the
// runtime's control thread. The Http and S3 fetchers share it.
//
// An `HttpRequester` runs at most one request at a time. `Start` configures an easy handle
// from `HttpRequestSpec` and the term's `FetchRequest` (its cap, validators, refresh policy)
// and hands it to the runtime's multi handle; the answer comes back once, on the control
// thread, as an `HttpAnswer`: the `FetchResult` the Http fetcher documents (see
// keel/fetchers/http.h for the mapping of statuses and transport errors to codes), plus the
// HTTP status and the first bytes of an error response's body, for callers that read a
// service's error documents (S3's XML).
//
// Credentials: `username` and `password` (S3's key id and secret) go to libcurl's own options,
// never into the URL, a header keel logs, or a message.
//
// Lifetime: as the Http fetcher documents: destroying the requester on the control thread
// cancels its request (the callback runs at once with CancelledError); on another thread while
// a request runs, the callback is dropped unrun and an error is logged.
//
// Thread safety: Start and Cancel on the runtime's control thread only.
#ifndef KEEL_FETCHERS_SRC_HTTP_REQUEST_H_
#define KEEL_FETCHERS_SRC_HTTP_REQUEST_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "keel/fetchers/fetcher.h"
#include "keel/runtime.h"

namespace keel::fetchers::internal {

struct HttpRequestSpec {
  // The URL to request; checked by the caller (CheckHttpUrl).
  std::string url = {};
  // How messages name the request: "GET https://cdn.example/x" for the Http fetcher.
  std::string label = {};
  // HEAD instead of GET: no body; a Content-Length over the cap is still ResourceExhausted.
  bool head = false;
  // Request headers, checked by the caller (no CR, LF or NUL).
  std::vector<std::pair<std::string, std::string>> headers = {};
  absl::Duration connect_timeout = absl::Seconds(10);
  absl::Duration timeout = absl::Seconds(60);
  int max_redirects = 0;
  bool verify_tls = true;
  std::string ca_file = {};
  // Send `Accept-Encoding: gzip` (gzip bodies stay compressed either way).
  bool request_gzip = false;
  // libcurl's AWS SigV4 provider string ("aws:amz:<region>:s3"), "" to send no signature;
  // `username` and `password` are the key id and the secret.
  std::string aws_sigv4 = {};
  std::string username = {};
  std::string password = {};
  // Send the URL's path as it is, without squashing "/./" and "/../" (S3 keys may hold them).
  bool path_as_is = false;
  // Keep up to this many bytes of an error response's body in HttpAnswer::error_body.
  size_t keep_error_body = 0;
};

struct HttpAnswer {
  FetchResult result;
  // The status of the last response, 0 when none arrived (a transport error).
  int http_status = 0;
  // The first `keep_error_body` bytes of the body of an error response (not 2xx or 304).
  std::string error_body;
  // The response's Content-Type, for reading error_body.
  std::string content_type;
};

using HttpAnswerCallback = absl::AnyInvocable<void(HttpAnswer)>;

struct HttpTransfer;

class HttpRequester {
 public:
  // `owner` names the fetcher in the log line of a misuse (destroyed off the control thread).
  explicit HttpRequester(std::string owner);
  HttpRequester(const HttpRequester&) = delete;
  HttpRequester& operator=(const HttpRequester&) = delete;
  ~HttpRequester();

  // Starts the request and returns OK, having taken `done`; or returns why it could not,
  // leaving `done` with the caller. FailedPrecondition while a request started here runs.
  absl::Status Start(Runtime& runtime, const HttpRequestSpec& spec, const FetchRequest& request,
                     HttpAnswerCallback& done);

  // Cancels the running request, if any: its callback runs now with CancelledError. The
  // callback may destroy the requester's owner: touch nothing of `this` afterwards.
  void Cancel(Runtime& runtime);

 private:
  const std::string owner_;
  // The transfer of the request in progress (or of the last one): owned by the runtime's
  // completion callback, so it lives exactly as long as libcurl may use it.
  std::weak_ptr<HttpTransfer> running_;
};

// A URL as libcurl's parser (the one transfers use) reads it.
struct UrlParts {
  std::string scheme;  // lower case
  std::string host;
  std::string port;              // "" for the scheme's default
  std::string path;              // "/" when none
  bool has_credentials = false;  // user:password@ (never kept)
};
// InvalidArgument with libcurl's words when it cannot parse `url`.
absl::StatusOr<UrlParts> ParseUrl(const std::string& url);

// Option checks shared by fetchers; each appends what is wrong to `problems`.
// An http:// or https:// URL with a host and no credentials in it; `what` names the option.
void CheckHttpUrl(std::string_view what, const std::string& url,
                  std::vector<std::string>& problems);
// > 0 and finite.
void CheckTimeout(std::string_view name, absl::Duration value, std::vector<std::string>& problems);
// A regular file this process can read.
void CheckCaFile(const std::string& path, std::vector<std::string>& problems);
// No CR, LF or NUL (a header value).
bool HasLineBreakOrNul(std::string_view s);

// Answers a fetch at once with `error` (invalid options, say).
inline void AnswerWithError(FetchCallback& done, absl::Status error) {
  FetchResult failed;
  failed.status = std::move(error);
  done(std::move(failed));
}

// Debian's abseil has its own string_view; StrCat takes it, not std::string_view.
inline absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace keel::fetchers::internal

#endif  // KEEL_FETCHERS_SRC_HTTP_REQUEST_H_
