// Test support, not part of keel: a real S3-compatible server on 127.0.0.1 for the S3
// fetcher's integration tests.
//
// `S3Server::Start` starts s3rver 3.7.1 (an S3 server on the local file system, from npm) under
// node, through keel's launcher tests/support/s3rver_launch.js, on a free loopback port with its
// data in a fresh temp dir and the buckets the options name, and waits until it is listening.
// s3rver alone accepts any signature; the launcher checks AWS Signature Version 4 as S3 does
// in front of it, so a client that signs wrongly fails here as it would against S3:
//   - a credential scope naming another region: 400 AuthorizationHeaderMalformed, whose
//     message and <Region> name the server's region;
//   - another access key id: 403 InvalidAccessKeyId;
//   - x-amz-date more than 15 minutes off: 403 RequestTimeTooSkewed;
//   - no x-amz-content-sha256 header: 400 InvalidRequest; a request without a body must send
//     the SHA-256 of the empty string (or UNSIGNED-PAYLOAD): 400 XAmzContentSHA256Mismatch;
//   - host or an x-amz-* header left out of SignedHeaders: 403 AccessDenied;
//   - a wrong signature (secret, canonical request): 403 SignatureDoesNotMatch, with the
//     <StringToSign> and <CanonicalRequest> the server computed, for debugging.
// The canonical request takes the path exactly as sent and the query string sorted and
// RFC 3986-encoded. libcurl 7.88's CURLOPT_AWS_SIGV4 signs the query as it is in the URL, so a
// URL with query parameters must already have them sorted and encoded ("list-type=2&prefix=a%2F").
// Requests without an Authorization header are served anonymously (s3rver has no ACLs); a body
// is not hashed to compare with x-amz-content-sha256. Errors are S3's XML error documents
// (Content-Type: application/xml). s3rver answers GET, HEAD, conditional requests
// (If-None-Match: 304), 404 NoSuchKey / NoSuchBucket, PUT (ETag: the quoted MD5 of the body) and
// DELETE; it keeps the Content-Type, Content-Encoding, Cache-Control and x-amz-meta-* headers
// of a PUT.
//
// Addressing: path style at `Endpoint()` ("http://127.0.0.1:<port>/<bucket>/<key>"), and
// virtual-host style at "http://<bucket>.s3.localhost:<port>/<key>" (libcurl resolves every
// *.localhost name to the loopback address itself; no DNS or /etc/hosts entry is needed).
//
// Faults, through an admin route of the launcher (never counted, delayed or failed itself):
// `SetFailure` answers requests with an S3 error (503 SlowDown, 500 InternalError), `SetDelay`
// holds every answer (for timeouts), `ClearFaults` ends both. `Stop` and `Restart` (same port,
// same data) make a failover: a stopped server refuses connections. Faults do not survive a
// Stop. The destructor stops the server and removes the temp dir.
//
//   auto s3 = keel::testing::S3Server::Start({.buckets = {"primary"}});
//   ASSERT_TRUE(s3.ok()) << s3.status();  // a missing node or s3rver fails, never skips
//   absl::StatusOr<std::string> etag = (*s3)->Put("primary", "config/app.json", "{}");
//   std::string url = (*s3)->ObjectUrl("primary", "config/app.json");
//   // GET `url` with CURLOPT_AWS_SIGV4 = (*s3)->CurlAwsSigV4(), CURLOPT_USERNAME = key id,
//   // CURLOPT_PASSWORD = secret, and the header "x-amz-content-sha256: " + kEmptyPayloadSha256.
//
// Thread safety: thread-compatible. Start, Stop, Restart and the destructor fork and wait for
// child processes; call them from a thread that outlives the server (a test's main thread):
// node is started with PR_SET_PDEATHSIG, so it dies with that thread, and so with a killed
// test. Put, Delete, the fault setters, RequestCount and the accessors block on a request and
// may be called from any thread while no Start, Stop or Restart runs.
#ifndef KEEL_TESTS_SUPPORT_S3RVER_H_
#define KEEL_TESTS_SUPPORT_S3RVER_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace keel::testing {

inline constexpr char kNodePath[] = "/usr/bin/node";
// The s3rver release the launcher is written for (scripts/install-deps.sh installs it).
inline constexpr char kS3rverVersion[] = "3.7.1";
// The SHA-256 of the empty string: the x-amz-content-sha256 of a GET, HEAD or DELETE.
inline constexpr char kEmptyPayloadSha256[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// Every member has an initializer, so that designated initializers may leave any out (gcc's
// -Wmissing-field-initializers).
struct S3ServerOptions {
  // Buckets created at every start (S3 names: 3 to 63 of a-z 0-9 '.' '-'); more may be made
  // with a signed PUT /<bucket>.
  std::vector<std::string> buckets = {};
  // The region the server expects in the credential scope.
  std::string region = "us-east-1";
  // The one key pair the server accepts.
  std::string access_key_id = "S3RVER";
  std::string secret_access_key = "S3RVER";
  // The node binary; another path is for testing the fixture's own "not found" error.
  std::string node_path = kNodePath;
  // The s3rver package directory; empty: s3rver in npm's global modules (lib/node_modules
  // beside node's bin/, /usr/local/lib/node_modules, /usr/lib/node_modules, then wherever
  // `npm root -g` says).
  std::string s3rver_dir = {};
};

class S3Server {
 public:
  // `SetFailure`'s count for "every request until ClearFaults".
  static constexpr int kEveryRequest = -1;

  // Starts s3rver as described above. FailedPrecondition when node or s3rver 3.7.1 is not
  // installed: "node not found at /usr/bin/node (scripts/install-deps.sh installs nodejs, npm
  // and s3rver 3.7.1)"; InvalidArgument for a bad bucket name or an empty region or key;
  // Unavailable when the server exits or is not listening within 10 s (after up to 3 tries
  // with fresh ports when the port was taken in between), quoting the tail of its log;
  // Internal when the temp dir cannot be set up.
  static absl::StatusOr<std::unique_ptr<S3Server>> Start(S3ServerOptions options = {});

  S3Server(const S3Server&) = delete;
  S3Server& operator=(const S3Server&) = delete;
  // Stops the server (as `Stop`) and removes the temp dir.
  ~S3Server();

  // "http://127.0.0.1:<port>": path-style requests, "<Endpoint()>/<bucket>/<key>".
  std::string Endpoint() const;
  // "http://s3.localhost:<port>": its host prefixed with "<bucket>." is a bucket
  // (virtual-host style); without a prefix, requests are path style.
  std::string VirtualHostEndpoint() const;
  // "http://127.0.0.1:<port>/<bucket>/<EncodeKey(key)>".
  std::string ObjectUrl(std::string_view bucket, std::string_view key) const;
  // "http://<bucket>.s3.localhost:<port>/<EncodeKey(key)>".
  std::string VirtualHostObjectUrl(std::string_view bucket, std::string_view key) const;
  // An object key as it goes in a URL path: every byte but A-Z a-z 0-9 - _ . ~ and '/' as %XX.
  static std::string EncodeKey(std::string_view key);
  // "aws:amz:<region>:s3", the value of libcurl's CURLOPT_AWS_SIGV4 for this server.
  std::string CurlAwsSigV4() const;

  uint16_t port() const { return port_; }
  const std::string& region() const { return options_.region; }
  const std::string& access_key_id() const { return options_.access_key_id; }
  const std::string& secret_access_key() const { return options_.secret_access_key; }
  // The temp dir: data/ (s3rver's store, kept across Stop and Restart) and s3rver.log.
  const std::filesystem::path& dir() const { return dir_; }
  // node's process id, or -1 while the server is stopped.
  pid_t pid() const { return pid_; }

  // Stops the server: SIGTERM, SIGKILL after 5 s, then reaps it. Connections are refused
  // until `Restart`; the data is kept. A no-op when it is not running.
  void Stop();
  // Stops the server if it runs, then starts it again on the same port with the same data and
  // no faults, and waits until it listens, as `Start`. Unavailable, quoting the log, when it
  // exits (the port taken by someone else in between, say) or is not listening within 10 s.
  absl::Status Restart();

  // Stores `bytes` as `key` in `bucket` with a signed PUT (libcurl, blocking up to 10 s) and
  // returns the object's ETag as the server sent it, quotes included. `headers` are extra
  // request headers, "Name: value" (e.g. "Content-Encoding: gzip", "Content-Type: text/plain";
  // without one, Content-Type is application/octet-stream). InvalidArgument for an empty
  // bucket or key; Unavailable when the server does not answer (stopped, or delayed past the
  // 10 s); otherwise a non-2xx answer as a canonical code (403 PermissionDenied, 404 NotFound,
  // 5xx Unavailable or Internal) with the method, URL, status and S3 error code in the message.
  absl::StatusOr<std::string> Put(std::string_view bucket, std::string_view key,
                                  std::string_view bytes,
                                  const std::vector<std::string>& headers = {});
  // Removes `key` from `bucket` with a signed DELETE (S3 answers 204 whether or not it
  // existed). Errors as for `Put`.
  absl::Status Delete(std::string_view bucket, std::string_view key);

  // Answers the next `count` requests (every request with kEveryRequest) with `http_status`
  // (400 to 599) and an S3 error document with code `code` ("SlowDown", "InternalError",
  // letters and digits), signed or not, before any other check. Replaces an earlier failure.
  // InvalidArgument for a status or code out of range; Unavailable when the server is stopped.
  absl::Status SetFailure(int http_status, std::string_view code, int count = kEveryRequest);
  // Holds every request `delay` (whole milliseconds) before handling it; ZeroDuration() ends
  // the delay. A client that hangs up meanwhile gets nothing. Unavailable when stopped.
  absl::Status SetDelay(absl::Duration delay);
  // Ends any failure and delay. Unavailable when the server is stopped.
  absl::Status ClearFaults();
  // The requests the server has received since it last started, admin requests aside
  // (failed and delayed ones included). Unavailable when the server is stopped.
  absl::StatusOr<int64_t> RequestCount() const;

  // The last `max_bytes` of the server's log (stdout and stderr of every run), for failure
  // messages.
  std::string LogTail(size_t max_bytes = 4096) const;

 private:
  S3Server() = default;
  // Starts node with the launcher on port_ and waits until it listens.
  absl::Status Launch();
  // GETs the admin route "/__keel/<route>" and returns the JSON answer.
  absl::StatusOr<std::string> Admin(std::string_view route) const;

  S3ServerOptions options_;
  std::string s3rver_dir_;     // the s3rver package found at Start
  std::filesystem::path dir_;  // the temp dir
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace keel::testing

#endif  // KEEL_TESTS_SUPPORT_S3RVER_H_
