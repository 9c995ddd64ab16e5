// S3: a fetcher that reads a remote term's bytes from an S3 object, with failover buckets.
//
// Each fetch is a GET signed with AWS Signature Version 4 (libcurl's own signing, with the
// `x-amz-content-sha256` header S3 requires), on the runtime's control thread, never blocking
// it. The version is the object's ETag: a term that holds a value asks with `If-None-Match`
// only (not If-Modified-Since: Last-Modified has a one-second resolution, and an object
// replaced within that second must not look unchanged), so an unchanged object costs one
// request and zero body bytes (304). With `head_first` it sends a HEAD first and GETs only when the
// ETag changed, for large objects on links where a conditional GET's round trip is not enough.
//
//   auto rules = keel::RemoteTerm<Rules>::Start(*runtime, {
//       .name = "rules",
//       .fetcher = keel::fetchers::S3({
//           .bucket = "acme-config-us",
//           .key = "rules/v2.json.gz",
//           .region = "us-east-1",
//           .failover = {{.bucket = "acme-config-eu", .region = "eu-west-1"}}}),
//       .decode = ParseRules});
//
// Credentials: `credentials`, or else AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and (for
// temporary credentials) AWS_SESSION_TOKEN, read once when S3() is called. The secret and the
// session token are handed to libcurl and sent only as a signature and the
// `x-amz-security-token` header: never logged, never in Describe(), a status or an error
// message. `anonymous` sends unsigned requests, for public objects. The region is `region`,
// or else AWS_REGION, or else AWS_DEFAULT_REGION (also read at S3()).
//
// Where requests go: `endpoint` overrides AWS's regional endpoint
// (https://s3.<region>.amazonaws.com) for S3-compatible stores (MinIO, Ceph, a local test
// server). Addressing is virtual-host style (https://<bucket>.s3.<region>.amazonaws.com/<key>)
// on AWS, and path style (<endpoint>/<bucket>/<key>) with an endpoint override or a bucket
// name with dots (which a wildcard certificate cannot cover); `addressing` forces either.
// Keys are sent URI-encoded (every byte but letters, digits, `-._~` and `/`), as S3 signs them.
//
// Failover: the primary bucket first, then each of `failover` in order, each with its own
// region and, optionally, endpoint. A bucket that answers (new bytes or "not modified")
// ends the fetch; an error of any kind (403, 404, 5xx, a timeout, a refused connection) moves
// on to the next bucket. Every fetch starts again from the primary, so it serves again as soon
// as it recovers. The term's status (`TermStatus::served_by`) names the bucket that answered:
// "s3://<bucket>/<key>". When every bucket fails, the error has the primary's code and a
// message with each bucket's error in order. A bucket that holds an older object than the
// published one (a lagging replica: its Last-Modified is earlier) is not installed: the term
// refuses a value older than its own (see RemoteTermOptions::allow_older), so a term never
// flaps between replicas.
//
// Errors: each bucket's error names it ("GET s3://acme-config-us/rules/v2.json.gz
// (us-east-1, https://acme-config-us.s3.us-east-1.amazonaws.com)") and quotes S3's error
// code and message from the XML error document:
//   403 -> PermissionDenied: bad credentials (InvalidAccessKeyId, SignatureDoesNotMatch),
//          an expired session token (ExpiredToken), clock skew (RequestTimeTooSkewed: this
//          machine's clock is more than 15 minutes off), or no permission (AccessDenied);
//          the message says which and what to check.
//   404 -> NotFound: NoSuchKey or NoSuchBucket.
//   5xx -> Unavailable (InternalError, SlowDown, ServiceUnavailable); a Retry-After on a 503
//          sets the next refresh as with HTTP.
//   a timeout (connect_timeout, timeout) -> DeadlineExceeded; a refused or reset connection
//          or an unknown host -> Unavailable.
//   other 4xx and 3xx (a wrong region: PermanentRedirect, AuthorizationHeaderMalformed) ->
//          FailedPrecondition; retrying cannot help until the options change.
// Bodies are capped at the term's max_fetched_bytes while they arrive, and gzip objects (by
// their magic bytes, or `Content-Encoding: gzip`) stay compressed for the term to inflate,
// as with the Http fetcher (keel/fetchers/http.h), whose transfer S3 shares.
//
// Thread safety and lifetime: as for the Http fetcher (keel/fetchers/http.h).
#ifndef KEEL_FETCHERS_S3_H_
#define KEEL_FETCHERS_S3_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "keel/fetchers/fetcher.h"

namespace keel::fetchers {

struct S3Credentials {
  std::string access_key_id = {};
  std::string secret_access_key = {};
  // For temporary credentials (STS); "" for none.
  std::string session_token = {};
};

// The credentials in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
// NotFound naming the variables that are missing or empty (the token is optional).
absl::StatusOr<S3Credentials> S3CredentialsFromEnvironment();

enum class S3Addressing {
  kAuto,         // virtual-host style on AWS, path style with an endpoint or a dotted bucket
  kPath,         // <endpoint>/<bucket>/<key>
  kVirtualHost,  // <scheme>://<bucket>.<endpoint host>/<key>; not with an IP address
};

// A failover bucket holding a copy of the object under the same key.
struct S3Bucket {
  std::string bucket = {};
  // "" for the primary's region.
  std::string region = {};
  // "" for the primary's `endpoint` (AWS's regional endpoint when that is "" too).
  std::string endpoint = {};
};

struct S3Options {
  // The primary bucket and the object's key (1 to 1024 bytes, no NUL, CR or LF). Required.
  std::string bucket = {};
  std::string key = {};
  // The primary's region; "" for AWS_REGION, else AWS_DEFAULT_REGION. Required one way or
  // the other: lower-case letters, digits and '-'.
  std::string region = {};
  // "" for AWS (https://s3.<region>.amazonaws.com); else "http(s)://host[:port]" of an
  // S3-compatible store, without a path.
  std::string endpoint = {};
  S3Addressing addressing = S3Addressing::kAuto;
  // Tried in order after the primary, when it fails.
  std::vector<S3Bucket> failover = {};
  // HEAD first; GET only when the ETag changed.
  bool head_first = false;
  // nullopt: from the environment (see above), when S3() is called.
  std::optional<S3Credentials> credentials = {};
  // Unsigned requests (public objects); credentials are then neither needed nor read.
  bool anonymous = false;
  // Per request (each bucket, and HEAD and GET each): > 0 and finite.
  absl::Duration connect_timeout = absl::Seconds(5);
  absl::Duration timeout = absl::Seconds(60);
  // Verify the endpoint's certificate; turn off only for tests.
  bool verify_tls = true;
  // A CA bundle (PEM) for the endpoints, "" for the system's.
  std::string ca_file = {};
};

// A fetcher for the object. The options, with the environment's credentials and region, are
// checked by Validate() (the term calls it at Start, which then refuses to start with a clear
// InvalidArgument: a bad bucket name, a missing region, missing credentials naming the
// variables); a Fetch with invalid options fails with the same error.
std::unique_ptr<Fetcher> S3(S3Options options);

}  // namespace keel::fetchers

#endif  // KEEL_FETCHERS_S3_H_
