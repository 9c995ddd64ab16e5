#include "http_request.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "keel/fetchers/gzip.h"
#include "keel/fetchers/http_cache.h"
#include "keel/internal/transfers.h"
#include "log.h"

namespace keel::fetchers::internal {
namespace {

// The body of an error response is not kept; past this many bytes the transfer stops (the
// status line already says what happened).
constexpr uint64_t kMaxDiscardedErrorBody = uint64_t{64} << 10;
// Room reserved up front for a body whose Content-Length is known: at most this much, so a
// lying Content-Length cannot make keel allocate the whole cap before a byte arrives.
constexpr uint64_t kMaxReserve = uint64_t{64} << 20;
bool IsSuccess(int status) { return status == 200 || status == 203; }

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Milliseconds for a libcurl timeout option: rounded up, so that a positive duration never
// becomes 0 (which libcurl reads as "no timeout").
long CeilMillis(absl::Duration d) {
  const int64_t ms = absl::ToInt64Milliseconds(absl::Ceil(d, absl::Milliseconds(1)));
  return static_cast<long>(std::clamp<int64_t>(ms, 1, std::numeric_limits<long>::max()));
}

}  // namespace

bool HasLineBreakOrNul(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

absl::StatusOr<UrlParts> ParseUrl(const std::string& url) {
  CURLU* parsed = curl_url();
  if (parsed == nullptr) return absl::ResourceExhaustedError("out of memory");
  const CURLUcode set = curl_url_set(parsed, CURLUPART_URL, url.c_str(), 0);
  if (set != CURLUE_OK) {
    curl_url_cleanup(parsed);
    return absl::InvalidArgumentError(curl_url_strerror(set));
  }
  auto part = [&](CURLUPart which) -> std::string {
    char* text = nullptr;
    std::string value;
    if (curl_url_get(parsed, which, &text, 0) == CURLUE_OK && text != nullptr) value = text;
    curl_free(text);
    return value;
  };
  UrlParts parts;
  parts.scheme = absl::AsciiStrToLower(part(CURLUPART_SCHEME));
  parts.host = part(CURLUPART_HOST);
  parts.port = part(CURLUPART_PORT);
  parts.path = part(CURLUPART_PATH);
  parts.has_credentials = !part(CURLUPART_USER).empty() || !part(CURLUPART_PASSWORD).empty();
  curl_url_cleanup(parsed);
  return parts;
}

// Checks the URL with libcurl's own parser, the one the transfer will use.
void CheckHttpUrl(std::string_view what, const std::string& url,
                  std::vector<std::string>& problems) {
  const std::string expected =
      absl::StrCat(Sv(what), " must be an http:// or https:// URL with a host");
  absl::StatusOr<UrlParts> parts = ParseUrl(url);
  if (!parts.ok()) {
    problems.push_back(
        absl::StrCat(expected, ", got \"", url, "\" (", parts.status().message(), ")"));
    return;
  }
  if (parts->scheme != "http" && parts->scheme != "https") {
    problems.push_back(
        absl::StrCat(expected, ", got scheme \"", parts->scheme, "\" in \"", url, "\""));
  } else if (parts->host.empty()) {
    problems.push_back(absl::StrCat(expected, ", got no host in \"", url, "\""));
  }
  if (parts->has_credentials) {
    // Not quoted back: the point is to keep the credentials out of messages.
    problems.push_back(
        absl::StrCat(Sv(what),
                     " must not carry credentials (user:password@), since it appears in logs and "
                     "errors; send them in a header such as Authorization"));
  }
}

void CheckTimeout(std::string_view name, absl::Duration value, std::vector<std::string>& problems) {
  if (value <= absl::ZeroDuration() || value == absl::InfiniteDuration()) {
    problems.push_back(
        absl::StrCat(Sv(name), " must be > 0 and finite, got ", absl::FormatDuration(value)));
  }
}

// Opens the file to check it: a regular file that this process can read.
void CheckCaFile(const std::string& path, std::vector<std::string>& problems) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    problems.push_back(
        absl::StrCat("ca_file \"", path, "\" must be a readable file: ", std::strerror(errno)));
    return;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    problems.push_back(absl::StrCat("ca_file \"", path, "\" must be a regular file (PEM)"));
  }
  ::close(fd);
}

namespace {

// The response headers keel reads, for the last response of a transfer (redirects and 1xx
// responses reset them). Repeated lines are joined with ", ".
struct ResponseHeaders {
  std::string etag;
  std::string last_modified;
  std::string cache_control;
  std::string age;
  std::string expires;
  std::string date;
  std::string retry_after;
  std::string content_encoding;
  std::string content_length;
  std::string content_type;

  // The field for a header name, nullptr for a header keel ignores.
  std::string* Field(std::string_view name) {
    struct Entry {
      std::string_view name;
      std::string ResponseHeaders::*field;
    };
    static constexpr Entry kFields[] = {
        {"etag", &ResponseHeaders::etag},
        {"last-modified", &ResponseHeaders::last_modified},
        {"cache-control", &ResponseHeaders::cache_control},
        {"age", &ResponseHeaders::age},
        {"expires", &ResponseHeaders::expires},
        {"date", &ResponseHeaders::date},
        {"retry-after", &ResponseHeaders::retry_after},
        {"content-encoding", &ResponseHeaders::content_encoding},
        {"content-length", &ResponseHeaders::content_length},
        {"content-type", &ResponseHeaders::content_type},
    };
    for (const Entry& entry : kFields) {
      if (absl::EqualsIgnoreCase(Sv(name), Sv(entry.name))) return &(this->*entry.field);
    }
    return nullptr;
  }
};

// Why keel's own callbacks stopped a transfer.
enum class Abort {
  kNone,
  kOverCap,              // the body (or its Content-Length) passed max_bytes
  kUnsupportedEncoding,  // a Content-Encoding keel cannot hand to the term
  kErrorBodyDiscarded,   // an error response's body ran past kMaxDiscardedErrorBody
};

}  // namespace

// One request in flight: the easy handle and everything its callbacks write. The runtime's
// completion owns it (a shared_ptr captured in the AddTransfer callback); the requester only
// watches it (a weak_ptr), to cancel it. All of it is used on the control thread only.
struct HttpTransfer {
  HttpTransfer() = default;
  HttpTransfer(const HttpTransfer&) = delete;
  HttpTransfer& operator=(const HttpTransfer&) = delete;
  ~HttpTransfer() {
    if (easy != nullptr) curl_easy_cleanup(easy);  // out of the multi handle by now
    curl_slist_free_all(request_headers);
  }

  // The request.
  Runtime* runtime = nullptr;
  CURL* easy = nullptr;
  curl_slist* request_headers = nullptr;
  char error_buffer[CURL_ERROR_SIZE] = {};
  std::string url;
  std::string label;  // "GET <url>", for messages
  size_t keep_error_body = 0;
  FetchRequest request;
  bool conditional = false;
  HttpAnswerCallback done;
  // `done` has been taken (a new request may start, and the requester may go on any thread).
  // Atomic: the requester's destructor may read it on another thread after the callback ran.
  std::atomic<bool> finished{false};

  // The response, as the callbacks see it.
  int status = 0;  // of the response being received
  ResponseHeaders headers;
  std::string* last_field = nullptr;  // for obsolete folded continuation lines
  bool body_started = false;
  std::string body;
  uint64_t bytes_received = 0;
  Abort abort = Abort::kNone;
  std::optional<uint64_t> content_length;
  std::string error_body;  // the first keep_error_body bytes of an error response's body
};

namespace {

// Called at the end of a response's header block; false stops the transfer.
bool CheckHeaderBlock(HttpTransfer& t) {
  if (!IsSuccess(t.status)) return true;  // errors, 304 and redirects carry no body we keep
  const std::string encoding = absl::AsciiStrToLower(Sv(TrimOws(t.headers.content_encoding)));
  if (!encoding.empty() && encoding != "identity" && encoding != "gzip" && encoding != "x-gzip") {
    t.abort = Abort::kUnsupportedEncoding;
    return false;
  }
  uint64_t length = 0;
  if (absl::SimpleAtoi(Sv(TrimOws(t.headers.content_length)), &length)) {
    t.content_length = length;
    if (length > t.request.max_bytes) {
      t.abort = Abort::kOverCap;
      return false;
    }
    t.body.reserve(static_cast<size_t>(std::min(length, kMaxReserve)));
  }
  return true;
}

// CURLOPT_HEADERFUNCTION: one header line at a time, status lines included.
size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  HttpTransfer& t = *static_cast<HttpTransfer*>(user);
  const size_t n = size * count;
  std::string_view line(data, n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (absl::StartsWith(Sv(line), "HTTP/")) {  // a new response: a redirect's, or after a 1xx
    t.headers = ResponseHeaders();
    t.last_field = nullptr;
    t.body_started = false;
    t.content_length.reset();
    t.error_body.clear();
    t.status = 0;
    const size_t space = line.find(' ');
    int status = 0;
    if (space != std::string_view::npos &&
        absl::SimpleAtoi(Sv(line.substr(space + 1, 3)), &status)) {
      t.status = status;
    }
    return n;
  }
  if (t.body_started) return n;  // trailers after a chunked body: not keel's business
  if (line.empty()) return CheckHeaderBlock(t) ? n : 0;
  if (line.front() == ' ' || line.front() == '\t') {  // obs-fold: continues the last line
    if (t.last_field != nullptr) absl::StrAppend(t.last_field, " ", Sv(TrimOws(line)));
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  t.last_field = t.headers.Field(TrimOws(line.substr(0, colon)));
  if (t.last_field != nullptr) {
    if (!t.last_field->empty()) t.last_field->append(", ");
    absl::StrAppend(t.last_field, Sv(TrimOws(line.substr(colon + 1))));
  }
  return n;
}

// CURLOPT_WRITEFUNCTION: body bytes of the last response. Returning less than `n` stops the
// transfer with CURLE_WRITE_ERROR.
size_t OnBody(char* data, size_t size, size_t count, void* user) {
  HttpTransfer& t = *static_cast<HttpTransfer*>(user);
  const size_t n = size * count;
  t.body_started = true;
  t.bytes_received += n;
  if (!IsSuccess(t.status)) {
    if (t.error_body.size() < t.keep_error_body) {
      t.error_body.append(data, std::min(n, t.keep_error_body - t.error_body.size()));
    }
    if (t.bytes_received <= kMaxDiscardedErrorBody) return n;
    t.abort = Abort::kErrorBodyDiscarded;
    return 0;
  }
  if (n > t.request.max_bytes - t.body.size()) {  // body.size() <= max_bytes holds here
    t.abort = Abort::kOverCap;
    return 0;
  }
  t.body.append(data, n);
  return n;
}

// libcurl's result code as a canonical code. Chosen once, here, for every keel transfer.
absl::StatusCode CodeFor(CURLcode code) {
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
      return absl::StatusCode::kDeadlineExceeded;
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_QUIC_CONNECT_ERROR:
    case CURLE_PROXY:
    // A failed TLS handshake (no shared cipher, a reset, an HTTP server on the port) may be
    // the network or a server being redeployed: worth retrying.
    case CURLE_SSL_CONNECT_ERROR:
      return absl::StatusCode::kUnavailable;
    // A certificate that fails verification, or a CA bundle that cannot be used: retrying does
    // not help until someone changes the certificate or ca_file, so the term's status should
    // say "misconfigured" (FailedPrecondition), not "the source is down" (Unavailable).
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    // Too many redirects, or a redirect to a protocol other than http/https.
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return absl::StatusCode::kFailedPrecondition;
    case CURLE_PARTIAL_FILE:
    case CURLE_BAD_CONTENT_ENCODING:
      return absl::StatusCode::kDataLoss;
    case CURLE_URL_MALFORMAT:
      return absl::StatusCode::kInvalidArgument;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_FILESIZE_EXCEEDED:
      return absl::StatusCode::kResourceExhausted;
    case CURLE_ABORTED_BY_CALLBACK:
      return absl::StatusCode::kCancelled;
    default:
      return absl::StatusCode::kUnknown;
  }
}

absl::Status CurlError(const HttpTransfer& t, CURLcode code) {
  std::string message = absl::StrCat(t.label, ": ", curl_easy_strerror(code));
  const std::string_view detail(t.error_buffer, strnlen(t.error_buffer, sizeof(t.error_buffer)));
  if (!detail.empty()) absl::StrAppend(&message, " (", Sv(TrimOws(detail)), ")");
  return absl::Status(CodeFor(code), message);
}

// The canonical code for an HTTP status keel does not accept.
absl::StatusCode CodeForHttpStatus(int status) {
  if (status == 404 || status == 410) return absl::StatusCode::kNotFound;
  if (status == 401 || status == 403) return absl::StatusCode::kPermissionDenied;
  if (status == 429) return absl::StatusCode::kResourceExhausted;
  if (status >= 500) return absl::StatusCode::kUnavailable;
  return absl::StatusCode::kFailedPrecondition;
}

ResponseTiming TimingOf(const HttpTransfer& t, int status) {
  return ResponseTiming{.status = status,
                        .cache_control = t.headers.cache_control,
                        .age = t.headers.age,
                        .expires = t.headers.expires,
                        .date = t.headers.date,
                        .retry_after = t.headers.retry_after};
}

// Builds the answer to the term from a finished transfer. Moves the body out.
FetchResult ResultOf(HttpTransfer& t, keel::internal::TransferResult transfer) {
  FetchResult result;
  result.bytes_received = t.bytes_received;
  if (transfer.cancelled) {
    result.status = absl::CancelledError(
        absl::StrCat(t.label, ": cancelled (by Cancel, or the runtime shutting down)"));
    return result;
  }
  const CURLcode code = static_cast<CURLcode>(transfer.curl_code);
  if (code != CURLE_OK) {
    switch (t.abort) {
      case Abort::kOverCap:
        result.status = absl::ResourceExhaustedError(
            absl::StrCat("body of ", t.url, " exceeds the cap of ", t.request.max_bytes, " bytes",
                         t.content_length.has_value()
                             ? absl::StrCat(" (Content-Length: ", *t.content_length, ")")
                             : ""));
        return result;
      case Abort::kUnsupportedEncoding:
        result.status = absl::InvalidArgumentError(absl::StrCat(
            t.label, ": unsupported Content-Encoding ", Sv(TrimOws(t.headers.content_encoding)),
            " (keel takes gzip or identity)"));
        return result;
      case Abort::kErrorBodyDiscarded:
        break;  // the status line says what went wrong
      case Abort::kNone:
        result.status = CurlError(t, code);
        return result;
    }
  }
  long status = 0;
  curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &status);
  const int http_status = static_cast<int>(status);
  const ResponseTiming timing = TimingOf(t, http_status);
  if (IsSuccess(http_status) || http_status == 304) {
    if (http_status == 304 && !t.conditional) {
      result.status = absl::InvalidArgumentError(
          absl::StrCat(t.label, ": HTTP 304 (Not Modified) to an unconditional request"));
      return result;
    }
    result.validators.etag = std::string(TrimOws(t.headers.etag));
    result.validators.last_modified = std::string(TrimOws(t.headers.last_modified));
    if (http_status == 304) {
      // A 304 should repeat the validators; when it does not, the known ones still hold.
      if (result.validators.etag.empty()) result.validators.etag = t.request.known.etag;
      if (result.validators.last_modified.empty()) {
        result.validators.last_modified = t.request.known.last_modified;
      }
      result.not_modified = true;
    } else {
      const std::string encoding = absl::AsciiStrToLower(Sv(TrimOws(t.headers.content_encoding)));
      if ((encoding == "gzip" || encoding == "x-gzip") && !LooksGzipped(t.body)) {
        result.status = absl::DataLossError(
            absl::StrCat(t.label, ": Content-Encoding ", encoding,
                         " but the body does not start with the gzip magic 1f 8b"));
        return result;
      }
      result.body = std::move(t.body);
    }
    result.validators.version = result.validators.etag;
    result.modified = ParseHttpDate(result.validators.last_modified);
    result.next_refresh = DecideRefresh(timing, t.request.policy, t.request.wall_now);
    return result;
  }
  std::string message = absl::StrCat(t.label, ": HTTP ", http_status);
  char* effective = nullptr;
  if (curl_easy_getinfo(t.easy, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK &&
      effective != nullptr && t.url != effective) {
    absl::StrAppend(&message, " from ", effective);
  }
  if ((http_status == 429 || http_status == 503) &&
      ParseRetryAfter(t.headers.retry_after, t.request.wall_now).has_value()) {
    absl::StrAppend(&message, " (Retry-After: ", t.headers.retry_after, ")");
    result.next_refresh = DecideRefresh(timing, t.request.policy, t.request.wall_now);
  }
  result.status = absl::Status(CodeForHttpStatus(http_status), message);
  return result;
}

// Applies every option to the easy handle; the first libcurl refusal is an InternalError.
absl::Status Configure(HttpTransfer& t, const HttpRequestSpec& options) {
  CURLcode failed = CURLE_OK;
  const char* failed_option = "";
  auto set = [&](CURLoption option, const char* name, auto value) {
    if (failed != CURLE_OK) return;
    failed = curl_easy_setopt(t.easy, option, value);
    if (failed != CURLE_OK) failed_option = name;
  };
#define KEEL_SET(option, value) set(option, #option, value)
  KEEL_SET(CURLOPT_URL, t.url.c_str());
  if (options.head) {
    KEEL_SET(CURLOPT_NOBODY, 1L);
  } else {
    KEEL_SET(CURLOPT_HTTPGET, 1L);
  }
  KEEL_SET(CURLOPT_PROTOCOLS_STR, "http,https");
  // An https source never follows a redirect down to plain http (its headers, such as an
  // auth token, and the bytes would travel in clear).
  const bool secure = absl::StartsWithIgnoreCase(Sv(t.url), "https://");
  KEEL_SET(CURLOPT_REDIR_PROTOCOLS_STR, secure ? "https" : "http,https");
  KEEL_SET(CURLOPT_FOLLOWLOCATION, 1L);
  KEEL_SET(CURLOPT_MAXREDIRS, static_cast<long>(options.max_redirects));
  KEEL_SET(CURLOPT_NOSIGNAL, 1L);
  KEEL_SET(CURLOPT_CONNECTTIMEOUT_MS, CeilMillis(options.connect_timeout));
  KEEL_SET(CURLOPT_TIMEOUT_MS, CeilMillis(options.timeout));
  KEEL_SET(CURLOPT_SSL_VERIFYPEER, options.verify_tls ? 1L : 0L);
  KEEL_SET(CURLOPT_SSL_VERIFYHOST, options.verify_tls ? 2L : 0L);
  if (!options.ca_file.empty()) KEEL_SET(CURLOPT_CAINFO, options.ca_file.c_str());
  // Bytes as sent: keel inflates gzip itself, with a cap libcurl does not have.
  KEEL_SET(CURLOPT_HTTP_CONTENT_DECODING, 0L);
  KEEL_SET(CURLOPT_USERAGENT, "keel");
  KEEL_SET(CURLOPT_HTTPHEADER, t.request_headers);
  KEEL_SET(CURLOPT_HEADERFUNCTION, &OnHeader);
  KEEL_SET(CURLOPT_HEADERDATA, static_cast<void*>(&t));
  KEEL_SET(CURLOPT_WRITEFUNCTION, &OnBody);
  KEEL_SET(CURLOPT_WRITEDATA, static_cast<void*>(&t));
  KEEL_SET(CURLOPT_ERRORBUFFER, t.error_buffer);
  if (options.path_as_is) KEEL_SET(CURLOPT_PATH_AS_IS, 1L);
  if (!options.aws_sigv4.empty()) {
    KEEL_SET(CURLOPT_AWS_SIGV4, options.aws_sigv4.c_str());
    KEEL_SET(CURLOPT_USERNAME, options.username.c_str());
    KEEL_SET(CURLOPT_PASSWORD, options.password.c_str());
  }
#undef KEEL_SET
  if (failed == CURLE_OK) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(t.label, ": libcurl refused ", failed_option, ": ", curl_easy_strerror(failed)));
}

// Appends "Name: value" to the request's header list; false when out of memory.
bool AddHeader(curl_slist*& list, std::string_view name, std::string_view value) {
  // "Name:" with nothing after it would make libcurl remove the header; "Name;" sends it empty.
  const std::string line =
      value.empty() ? absl::StrCat(Sv(name), ";") : absl::StrCat(Sv(name), ": ", Sv(value));
  curl_slist* appended = curl_slist_append(list, line.c_str());
  if (appended == nullptr) return false;
  list = appended;
  return true;
}

// A validator the term hands back is sent only when it is safe on a header line: it came from
// a server or from a file on disk, and a CR or LF in it would inject headers.
bool UsableValidator(std::string_view value) {
  return !TrimOws(value).empty() && !HasLineBreakOrNul(value);
}

HttpAnswer AnswerOf(HttpTransfer& t, keel::internal::TransferResult transfer) {
  HttpAnswer answer;
  answer.result = ResultOf(t, transfer);
  if (!transfer.cancelled) {
    long status = 0;
    curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &status);
    answer.http_status = static_cast<int>(status);
  }
  answer.error_body = std::move(t.error_body);
  answer.content_type = std::string(TrimOws(t.headers.content_type));
  return answer;
}

}  // namespace

HttpRequester::HttpRequester(std::string owner) : owner_(std::move(owner)) {}

HttpRequester::~HttpRequester() {
  std::shared_ptr<HttpTransfer> running = running_.lock();
  // A finished transfer may still be held by its completion for a moment after the callback
  // ran: nothing of it needs this requester, on any thread.
  if (running == nullptr || running->finished.load(std::memory_order_acquire)) return;
  Runtime& runtime = *running->runtime;  // alive: its transfer still holds `running`
  if (runtime.InControlThread()) {
    keel::internal::RemoveTransfer(runtime, running->easy);  // done runs now, cancelled
    return;
  }
  keel::internal::Log().error(
      "{} destroyed off the control thread while a fetch runs; the fetch is cancelled and its "
      "callback dropped",
      owner_);
  (void)runtime.Post([running] {
    running->done = nullptr;
    keel::internal::RemoveTransfer(*running->runtime, running->easy);
  });
}

void HttpRequester::Cancel(Runtime& runtime) {
  std::shared_ptr<HttpTransfer> running = running_.lock();
  // RemoveTransfer runs the callback, which may destroy this requester: touch only locals.
  if (running != nullptr) keel::internal::RemoveTransfer(runtime, running->easy);
}

absl::Status HttpRequester::Start(Runtime& runtime, const HttpRequestSpec& spec,
                                  const FetchRequest& request, HttpAnswerCallback& done) {
  if (std::shared_ptr<HttpTransfer> running = running_.lock();
      running != nullptr && !running->finished.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError(
        absl::StrCat(spec.label, ": a fetch is already running on this fetcher"));
  }
  auto t = std::make_shared<HttpTransfer>();
  t->runtime = &runtime;
  t->url = spec.url;
  t->label = spec.label;
  t->keep_error_body = spec.keep_error_body;
  t->request = request;
  t->easy = curl_easy_init();
  if (t->easy == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(spec.label, ": curl_easy_init failed"));
  }
  bool listed = true;
  if (UsableValidator(request.known.etag)) {
    listed = listed && AddHeader(t->request_headers, "If-None-Match", request.known.etag);
    t->conditional = true;
  }
  if (UsableValidator(request.known.last_modified)) {
    listed =
        listed && AddHeader(t->request_headers, "If-Modified-Since", request.known.last_modified);
    t->conditional = true;
  }
  if (spec.request_gzip) {
    listed = listed && AddHeader(t->request_headers, "Accept-Encoding", "gzip");
  }
  for (const auto& [name, value] : spec.headers) {
    listed = listed && AddHeader(t->request_headers, name, value);
  }
  if (!listed) {
    return absl::ResourceExhaustedError(
        absl::StrCat(spec.label, ": out of memory for the request headers"));
  }
  if (absl::Status configured = Configure(*t, spec); !configured.ok()) return configured;
  t->done = std::move(done);
  absl::Status added =
      keel::internal::AddTransfer(runtime, t->easy, [t](keel::internal::TransferResult r) {
        t->finished.store(true, std::memory_order_release);
        HttpAnswerCallback callback = std::move(t->done);
        HttpAnswer answer = AnswerOf(*t, r);
        if (callback) callback(std::move(answer));  // empty only when the owner was destroyed
      });
  if (!added.ok()) {
    done = std::move(t->done);  // AddTransfer does not call its callback on an error
    return absl::Status(added.code(), absl::StrCat(spec.label, ": ", added.message()));
  }
  running_ = t;
  return absl::OkStatus();
}

}  // namespace keel::fetchers::internal
