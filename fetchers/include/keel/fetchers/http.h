// Http: a fetcher that GETs a remote term's bytes from an http:// or https:// URL.
//
// Each fetch is one GET through libcurl on the runtime's control thread, never blocking it.
// It asks conditionally when the term holds a value (`If-None-Match` with the ETag,
// `If-Modified-Since` with the Last-Modified value), so an unchanged source costs one request
// and zero body bytes (304). The response's caching headers (`Cache-Control: max-age` minus
// `Age`, `Expires`, `no-store`/`no-cache`, and `Retry-After` on 429 and 503) suggest the next
// refresh through DecideRefresh (http_cache.h), within the term's policy. The body is capped
// at the term's `max_bytes` while it arrives: a `Content-Length` over the cap stops the
// transfer before any body byte, a body without one is cut at the first chunk past the cap.
//
//   auto term = keel::RemoteTerm<Config>::Start(*runtime, {
//       .name = "pricing",
//       .fetcher = keel::fetchers::Http({
//           .url = "https://cdn.example/pricing.json.gz",
//           .headers = {{"Authorization", "Bearer " + token}}}),
//       .decode = ParseConfig});
//
// Gzip: with `request_gzip` the request says `Accept-Encoding: gzip`, and a gzip body stays
// compressed in `FetchResult::body` (it starts with 1f 8b): the term inflates it with its own
// cap on the decompressed size. libcurl's own decoding is off, since it has no such cap. A
// `Content-Encoding` other than gzip or identity is InvalidArgument, and a gzip one on a body
// without the gzip magic is DataLoss.
//
// Results: 200 (and 203) is the body with its validators (`version` is the ETag) and
// `modified` from Last-Modified; 304 is `not_modified` (only to a conditional request, else
// InvalidArgument). Other statuses are errors whose message reads "GET <url>: HTTP 500":
// 404 and 410 NotFound; 401 and 403 PermissionDenied; 429 ResourceExhausted and 503 Unavailable,
// both with `next_refresh` when they carry a valid Retry-After; other 5xx Unavailable; other
// 4xx, 3xx (a redirect not followed) and other 2xx FailedPrecondition. Transport errors:
// timeouts DeadlineExceeded; DNS, connect, send and receive failures Unavailable; a TLS
// certificate that fails verification FailedPrecondition (retrying cannot fix it; the
// certificate or `ca_file` must change); too many redirects, or a redirect to another
// protocol, FailedPrecondition; a body cut short DataLoss; a body over the cap
// ResourceExhausted. `bytes_received` counts every body byte that arrived, an error page's
// included. Transport messages quote libcurl's text ("GET <url>: SSL peer certificate
// or SSH remote key was not OK (SSL certificate problem: self-signed certificate)").
//
// Redirects: followed up to `max_redirects`, over http and https only, and over https only
// when the URL is https (a redirect from https to http is FailedPrecondition). libcurl sends the
// configured headers to every hop, except `Authorization` and `Cookie`, which it drops when a
// redirect changes the host, port or scheme. libcurl also honours the standard proxy environment
// variables (`https_proxy`, `no_proxy`, ...).
//
// Thread safety: thread-compatible, per the Fetcher contract: Fetch and Cancel on the
// runtime's control thread; Describe and Validate from any thread.
//
// Lifetime: destroy the fetcher on the control thread, or on any thread when no fetch is
// running (before the first Fetch, or after the last callback ran). Destroying it on the
// control thread while a fetch runs cancels that fetch (its callback runs at once, with
// CancelledError). Destroying it on another thread while a fetch runs breaks the contract;
// keel then logs an error, cancels the transfer on the control thread and drops its callback
// unrun, so no memory is touched after it is freed, but the owner loses its answer.
#ifndef KEEL_FETCHERS_HTTP_H_
#define KEEL_FETCHERS_HTTP_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "keel/fetchers/fetcher.h"

namespace keel::fetchers {

struct HttpOptions {
  // The http:// or https:// URL to GET, with a host. No credentials in it (`user:pass@`):
  // the URL appears in logs and error messages; send them in a header instead.
  std::string url = {};
  // Extra request headers, such as {"Authorization", "Bearer ..."}: names are RFC 9110
  // tokens, values have no CR, LF or NUL. `If-None-Match`, `If-Modified-Since` and
  // `Accept-Encoding` are keel's (from the term's validators and `request_gzip`) and refused.
  std::vector<std::pair<std::string, std::string>> headers = {};
  // Longest wait for the TCP (and TLS) connection; > 0 and finite.
  absl::Duration connect_timeout = absl::Seconds(10);
  // Longest time for the whole transfer, redirects included; > 0 and finite.
  absl::Duration timeout = absl::Seconds(60);
  // Redirects followed, 0 to 50; one more is an error.
  int max_redirects = 5;
  // Verify the server's certificate and that it names the host. Turn off only for tests.
  bool verify_tls = true;
  // A CA bundle (PEM) to verify servers with, "" for the system's. It replaces libcurl's
  // default bundle file (CURLOPT_CAINFO); builds with a CA directory as well (Debian's
  // /etc/ssl/certs) keep trusting that one too. Must be a readable file.
  std::string ca_file = {};
  // Send `Accept-Encoding: gzip`; a gzip body is returned still compressed (see above).
  bool request_gzip = true;
};

// A fetcher for `options.url`. The options are checked by Validate() (the term calls it at
// Start); a Fetch with invalid options fails with Validate()'s error.
std::unique_ptr<Fetcher> Http(HttpOptions options);

}  // namespace keel::fetchers

#endif  // KEEL_FETCHERS_HTTP_H_
