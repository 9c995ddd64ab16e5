#include "keel/fetchers/s3.h"

#include <curl/curl.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "http_request.h"

namespace keel::fetchers {
namespace {

using internal::Sv;

// SHA-256 of an empty body: the payload hash of a GET or HEAD, sent as x-amz-content-sha256
// (S3 requires the header; libcurl signs the same hash in its canonical request).
constexpr char kEmptyPayloadSha256[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
// S3's XML error documents are short; the code and message are near the start.
constexpr size_t kKeptErrorBody = 4096;
constexpr size_t kMaxKeyBytes = 1024;
constexpr size_t kMaxQuotedText = 300;

std::string Getenv(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

bool IsLowerDigitOrDash(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_islower(static_cast<unsigned char>(c)) &&
        !absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '-') {
      return false;
    }
  }
  return true;
}

// S3's rules for bucket names, loosened where S3-compatible stores and legacy buckets allow
// (upper case and '_' in path style): 3 to 255 of [A-Za-z0-9._-], starting and ending with a
// letter or digit. Virtual-host style needs a DNS label: checked separately.
bool IsBucketName(std::string_view s) {
  if (s.size() < 3 || s.size() > 255) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
      return false;
    }
  }
  return absl::ascii_isalnum(static_cast<unsigned char>(s.front())) &&
         absl::ascii_isalnum(static_cast<unsigned char>(s.back()));
}

// A bucket name that can be the first label(s) of a host name: lower case, 3 to 63, no '_'
// and no empty label.
bool IsDnsBucketName(std::string_view s) {
  if (s.size() < 3 || s.size() > 63 || !IsBucketName(s)) return false;
  for (char c : s) {
    if (absl::ascii_isupper(static_cast<unsigned char>(c)) || c == '_') return false;
  }
  return !absl::StrContains(Sv(s), "..") && !absl::StrContains(Sv(s), ".-") &&
         !absl::StrContains(Sv(s), "-.");
}

// Percent-encodes every byte of an object key but the unreserved ones and '/', as S3's
// canonical URI has it.
std::string EncodeKey(std::string_view key) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(key.size());
  for (char c : key) {
    const auto b = static_cast<unsigned char>(c);
    if (absl::ascii_isalnum(b) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[b >> 4]);
      out.push_back(kHex[b & 0xf]);
    }
  }
  return out;
}

// Text from a server, made safe to quote in a message: printable ASCII, bounded.
std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (out.size() >= kMaxQuotedText) {
      out += "...";
      break;
    }
    const auto b = static_cast<unsigned char>(c);
    out.push_back(b >= 0x20 && b < 0x7f ? c : '?');
  }
  return out;
}

// The text of the first <name>...</name> element in an S3 XML error document, "" if none.
std::string XmlElement(std::string_view xml, std::string_view name) {
  const std::string open = absl::StrCat("<", Sv(name), ">");
  const std::string close = absl::StrCat("</", Sv(name), ">");
  const size_t start = xml.find(open);
  if (start == std::string_view::npos) return "";
  const size_t from = start + open.size();
  const size_t end = xml.find(close, from);
  if (end == std::string_view::npos) return "";
  const absl::string_view text = absl::StripAsciiWhitespace(Sv(xml.substr(from, end - from)));
  return Printable(std::string_view(text.data(), text.size()));
}

// What a user should check, for the S3 error codes whose fix is not obvious from the code.
std::string_view HintFor(std::string_view code) {
  if (code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch") {
    return "check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)";
  }
  if (code == "ExpiredToken" || code == "InvalidToken" || code == "TokenRefreshRequired") {
    return "the session token (AWS_SESSION_TOKEN) has expired or is invalid; renew the "
           "credentials";
  }
  if (code == "RequestTimeTooSkewed") {
    return "this machine's clock differs from S3's by more than 15 minutes; fix the clock";
  }
  if (code == "AccessDenied") return "the credentials are valid but may not read this object";
  if (code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" ||
      code == "IllegalLocationConstraintException") {
    return "the bucket is in another region or behind another endpoint; fix region or endpoint";
  }
  return "";
}

// One place the object may be read from: a bucket and its requests (URL, region, signature).
struct Target {
  std::string bucket;
  std::string name;  // "s3://bucket/key"
  internal::HttpRequestSpec get;
  internal::HttpRequestSpec head;
};

bool IsIpLiteral(std::string_view host) {
  if (!host.empty() && host.front() == '[') return true;  // IPv6
  for (char c : host) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '.') return false;
  }
  return !host.empty();
}

// Everything S3() resolved from the options and the environment.
struct Resolved {
  std::string region;  // of the primary
  std::optional<S3Credentials> credentials;
  absl::Status credentials_status;  // why there are none, when they were read and missing
};

class S3Fetcher final : public Fetcher {
 public:
  S3Fetcher(S3Options options, Resolved resolved)
      : options_(std::move(options)),
        resolved_(std::move(resolved)),
        options_status_(Build()),
        requester_(absl::StrCat("s3 fetcher for s3://", options_.bucket, "/", options_.key)) {}

  std::string Describe() const override {
    std::string out = "s3";
    for (const S3Bucket& b : Buckets()) {
      absl::StrAppend(&out, out.size() == 2 ? " " : ", failover ", "s3://", b.bucket, "/",
                      options_.key, " (", b.region.empty() ? "?" : b.region,
                      b.endpoint.empty() ? "" : ", ", b.endpoint, ")");
    }
    return out;
  }

  absl::Status Validate() const override { return options_status_; }

  void Fetch(Runtime& runtime, const FetchRequest& request, FetchCallback done) override {
    if (!options_status_.ok()) {
      internal::AnswerWithError(done, options_status_);
      return;
    }
    auto attempt = std::make_shared<Attempt>();
    attempt->runtime = &runtime;
    attempt->request = request;
    // The ETag alone decides: S3's Last-Modified has a one-second resolution, so an object
    // replaced within the second of the last one would look unchanged to If-Modified-Since.
    attempt->request.known.last_modified.clear();
    attempt->done = std::move(done);
    TryTarget(attempt, 0);
  }

  void Cancel(Runtime& runtime) override { requester_.Cancel(runtime); }

 private:
  // One fetch across the buckets. Shared with the request callbacks, so that a cancellation
  // (which may run while this fetcher is being destroyed) touches only the attempt.
  struct Attempt {
    Runtime* runtime = nullptr;
    FetchRequest request;
    FetchCallback done;
    std::vector<absl::Status> errors;  // one per bucket tried, in order
    std::optional<RefreshDecision> hint;
    uint64_t bytes_received = 0;
  };

  // The primary, then the failover buckets, with their defaults filled in: the primary's
  // region and endpoint where a failover bucket has none.
  std::vector<S3Bucket> Buckets() const {
    std::vector<S3Bucket> buckets{S3Bucket{
        .bucket = options_.bucket, .region = resolved_.region, .endpoint = options_.endpoint}};
    for (const S3Bucket& b : options_.failover) {
      buckets.push_back(S3Bucket{.bucket = b.bucket,
                                 .region = b.region.empty() ? resolved_.region : b.region,
                                 .endpoint = b.endpoint.empty() ? options_.endpoint : b.endpoint});
    }
    return buckets;
  }

  // Checks the options and builds each target's requests; returns what is wrong.
  absl::Status Build() {
    std::vector<std::string> problems;
    if (options_.key.empty() || options_.key.size() > kMaxKeyBytes ||
        internal::HasLineBreakOrNul(options_.key)) {
      problems.push_back(absl::StrCat("key must be 1 to ", kMaxKeyBytes,
                                      " bytes without NUL, CR or LF, got ", options_.key.size(),
                                      " bytes"));
    }
    internal::CheckTimeout("connect_timeout", options_.connect_timeout, problems);
    internal::CheckTimeout("timeout", options_.timeout, problems);
    if (!options_.ca_file.empty()) internal::CheckCaFile(options_.ca_file, problems);
    if (!options_.anonymous) {
      if (!resolved_.credentials.has_value()) {
        problems.push_back(std::string(resolved_.credentials_status.message()));
      } else {
        const S3Credentials& c = *resolved_.credentials;
        // The values are never quoted: only which one is wrong.
        if (c.access_key_id.empty() || internal::HasLineBreakOrNul(c.access_key_id) ||
            absl::StrContains(Sv(c.access_key_id), ":")) {
          problems.push_back(
              "credentials: the access key id must be non-empty, without ':', CR, LF or NUL");
        }
        if (c.secret_access_key.empty() || internal::HasLineBreakOrNul(c.secret_access_key)) {
          problems.push_back(
              "credentials: the secret access key must be non-empty, without CR, LF or NUL");
        }
        if (internal::HasLineBreakOrNul(c.session_token)) {
          problems.push_back("credentials: the session token must not contain CR, LF or NUL");
        }
      }
    }
    const std::vector<S3Bucket> buckets = Buckets();
    for (size_t i = 0; i < buckets.size(); ++i) {
      AddTarget(i == 0 ? "" : absl::StrCat("failover[", i - 1, "]."), buckets[i], problems);
    }
    for (size_t i = 0; i < targets_.size(); ++i) {
      for (size_t j = 0; j < i; ++j) {
        if (targets_[i].get.url == targets_[j].get.url) {
          problems.push_back(absl::StrCat("bucket ", targets_[i].bucket, " at ",
                                          targets_[i].get.url, " is listed twice"));
        }
      }
    }
    if (problems.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("s3 fetcher: ", absl::StrJoin(problems, "; ")));
  }

  void AddTarget(const std::string& prefix, const S3Bucket& where,
                 std::vector<std::string>& problems) {
    const std::string& bucket = where.bucket;
    const std::string& region = where.region;
    const std::string& endpoint = where.endpoint;
    const size_t before = problems.size();
    if (!IsBucketName(bucket)) {
      problems.push_back(absl::StrCat(prefix,
                                      "bucket must be 3 to 255 letters, digits, '.', '-' or '_', "
                                      "starting and ending with a letter or digit, got \"",
                                      Printable(bucket), "\""));
    }
    if (!IsLowerDigitOrDash(region)) {
      problems.push_back(
          region.empty()
              ? absl::StrCat(prefix,
                             "region is required: set it in the options, or AWS_REGION or "
                             "AWS_DEFAULT_REGION")
              : absl::StrCat(prefix, "region must be lower-case letters, digits and '-', got \"",
                             Printable(region), "\""));
    }
    std::optional<internal::UrlParts> parts;
    if (!endpoint.empty()) {
      internal::CheckHttpUrl(absl::StrCat(prefix, "endpoint"), endpoint, problems);
      if (absl::StatusOr<internal::UrlParts> parsed = internal::ParseUrl(endpoint); parsed.ok()) {
        parts = *std::move(parsed);
      }
      if (parts.has_value() && !parts->path.empty() && parts->path != "/") {
        problems.push_back(
            absl::StrCat(prefix, "endpoint must have no path, got \"", endpoint, "\""));
      }
    }
    if (problems.size() != before) return;
    const bool aws = endpoint.empty();
    if (aws) {
      parts.emplace();
      parts->scheme = "https";
      parts->host = absl::StrCat("s3.", region, ".amazonaws.com");
    }
    if (!parts.has_value()) {
      problems.push_back(absl::StrCat(prefix, "endpoint \"", endpoint, "\" cannot be parsed"));
      return;
    }
    bool virtual_host = false;
    switch (options_.addressing) {
      case S3Addressing::kAuto:
        virtual_host = aws && IsDnsBucketName(bucket) && !absl::StrContains(Sv(bucket), ".");
        break;
      case S3Addressing::kPath:
        break;
      case S3Addressing::kVirtualHost:
        virtual_host = true;
        if (!IsDnsBucketName(bucket)) {
          problems.push_back(absl::StrCat(
              prefix, "bucket \"", bucket,
              "\" cannot be a host name (virtual-host addressing needs 3 to 63 lower-case "
              "letters, digits, '.' and '-')"));
        }
        if (IsIpLiteral(parts->host)) {
          problems.push_back(absl::StrCat(prefix, "endpoint ", endpoint,
                                          " is an IP address: virtual-host addressing needs a "
                                          "host name; use path addressing"));
        }
        break;
    }
    if (problems.size() != before) return;
    const std::string authority =
        absl::StrCat(virtual_host ? absl::StrCat(bucket, ".") : "", parts->host,
                     parts->port.empty() ? "" : ":", parts->port);
    Target t;
    t.bucket = bucket;
    t.name = absl::StrCat("s3://", bucket, "/", options_.key);
    t.get.url =
        absl::StrCat(parts->scheme, "://", authority, "/",
                     virtual_host ? "" : absl::StrCat(bucket, "/"), EncodeKey(options_.key));
    t.get.label =
        absl::StrCat("GET ", t.name, " (", region, ", ", parts->scheme, "://", authority, ")");
    t.get.headers.emplace_back("x-amz-content-sha256", kEmptyPayloadSha256);
    if (!options_.anonymous && resolved_.credentials.has_value()) {  // else Build() refuses
      const S3Credentials& c = *resolved_.credentials;
      if (!c.session_token.empty())
        t.get.headers.emplace_back("x-amz-security-token", c.session_token);
      t.get.aws_sigv4 = absl::StrCat("aws:amz:", region, ":s3");
      t.get.username = c.access_key_id;
      t.get.password = c.secret_access_key;
    }
    t.get.connect_timeout = options_.connect_timeout;
    t.get.timeout = options_.timeout;
    t.get.max_redirects = 0;  // S3 answers a wrong region with 301; it is an error, not a hop
    t.get.verify_tls = options_.verify_tls;
    t.get.ca_file = options_.ca_file;
    t.get.path_as_is = true;
    t.get.keep_error_body = kKeptErrorBody;
    t.head = t.get;
    t.head.head = true;
    t.head.label = absl::StrCat("HEAD", t.get.label.substr(3));
    targets_.push_back(std::move(t));
  }

  // The answer to a request as an S3 answer: an error gets S3's code, message and a hint.
  static absl::Status Explain(const internal::HttpAnswer& answer) {
    const absl::Status& status = answer.result.status;
    if (status.ok() || answer.http_status == 0) return status;
    const std::string code = XmlElement(answer.error_body, "Code");
    if (code.empty()) return status;
    std::string message = absl::StrCat(status.message(), " ", code);
    const std::string text = XmlElement(answer.error_body, "Message");
    if (!text.empty()) absl::StrAppend(&message, " (", text, ")");
    if (std::string_view hint = HintFor(code); !hint.empty()) {
      absl::StrAppend(&message, ": ", Sv(hint));
    }
    return absl::Status(status.code(), message);
  }

  void TryTarget(const std::shared_ptr<Attempt>& attempt, size_t index) {
    if (index == targets_.size()) {
      Finish(attempt);
      return;
    }
    const Target& target = targets_[index];
    const bool head = options_.head_first && !attempt->request.known.etag.empty();
    Send(attempt, index, head ? target.head : target.get, head);
  }

  void Send(const std::shared_ptr<Attempt>& attempt, size_t index,
            const internal::HttpRequestSpec& spec, bool head) {
    internal::HttpAnswerCallback callback = [this, attempt, index,
                                             head](internal::HttpAnswer answer) {
      OnAnswer(attempt, index, head, std::move(answer));
    };
    absl::Status started = requester_.Start(*attempt->runtime, spec, attempt->request, callback);
    if (!started.ok()) {
      internal::HttpAnswer refused;
      refused.result.status = std::move(started);
      callback(std::move(refused));
    }
  }

  // Runs on the control thread. On a cancellation this fetcher may be mid-destruction: only
  // the attempt is touched then.
  void OnAnswer(const std::shared_ptr<Attempt>& attempt, size_t index, bool head,
                internal::HttpAnswer answer) {
    attempt->bytes_received += answer.result.bytes_received;
    if (answer.result.status.code() == absl::StatusCode::kCancelled) {
      FetchResult cancelled;
      cancelled.status = std::move(answer.result.status);
      cancelled.bytes_received = attempt->bytes_received;
      FetchCallback done = std::move(attempt->done);
      done(std::move(cancelled));
      return;
    }
    const Target& target = targets_[index];
    if (answer.result.status.ok()) {
      const bool unchanged = answer.result.not_modified ||
                             (head && answer.result.validators.etag == attempt->request.known.etag);
      if (head && !unchanged) {
        Send(attempt, index, target.get, /*head=*/false);  // changed: now the bytes
        return;
      }
      FetchResult result = std::move(answer.result);
      if (head) {
        result.not_modified = true;
        result.body.clear();
      }
      result.served_by = target.name;
      result.bytes_received = attempt->bytes_received;
      FetchCallback done = std::move(attempt->done);
      done(std::move(result));
      return;
    }
    if (!attempt->hint.has_value()) attempt->hint = answer.result.next_refresh;
    attempt->errors.push_back(Explain(answer));
    TryTarget(attempt, index + 1);
  }

  void Finish(const std::shared_ptr<Attempt>& attempt) {
    FetchResult failed;
    failed.bytes_received = attempt->bytes_received;
    failed.next_refresh = attempt->hint;
    const absl::Status& primary = attempt->errors.front();
    if (attempt->errors.size() == 1) {
      failed.status = primary;
    } else {
      std::vector<std::string> each;
      for (const absl::Status& e : attempt->errors) each.emplace_back(e.message());
      failed.status =
          absl::Status(primary.code(), absl::StrCat("every bucket failed (", attempt->errors.size(),
                                                    ", in order): ", absl::StrJoin(each, "; ")));
    }
    FetchCallback done = std::move(attempt->done);
    done(std::move(failed));
  }

  const S3Options options_;
  const Resolved resolved_;
  std::vector<Target> targets_;  // built by Build(), before options_status_
  const absl::Status options_status_;
  // Last: destroyed first, so that a fetch it cancels finds the rest of the fetcher intact.
  internal::HttpRequester requester_;
};

}  // namespace

absl::StatusOr<S3Credentials> S3CredentialsFromEnvironment() {
  S3Credentials c{.access_key_id = Getenv("AWS_ACCESS_KEY_ID"),
                  .secret_access_key = Getenv("AWS_SECRET_ACCESS_KEY"),
                  .session_token = Getenv("AWS_SESSION_TOKEN")};
  std::vector<std::string> missing;
  if (c.access_key_id.empty()) missing.push_back("AWS_ACCESS_KEY_ID");
  if (c.secret_access_key.empty()) missing.push_back("AWS_SECRET_ACCESS_KEY");
  if (!missing.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "credentials: ", absl::StrJoin(missing, " and "), missing.size() == 1 ? " is" : " are",
        " not set (set the credentials in the environment or the options, or anonymous for a "
        "public object)"));
  }
  return c;
}

std::unique_ptr<Fetcher> S3(S3Options options) {
  Resolved resolved;
  resolved.region = options.region;
  if (resolved.region.empty()) resolved.region = Getenv("AWS_REGION");
  if (resolved.region.empty()) resolved.region = Getenv("AWS_DEFAULT_REGION");
  if (!options.anonymous) {
    if (options.credentials.has_value()) {
      resolved.credentials = options.credentials;
    } else {
      absl::StatusOr<S3Credentials> from_env = S3CredentialsFromEnvironment();
      if (from_env.ok()) {
        resolved.credentials = *std::move(from_env);
      } else {
        resolved.credentials_status = from_env.status();
      }
    }
  }
  options.credentials.reset();  // kept once, in `resolved`
  return std::make_unique<S3Fetcher>(std::move(options), std::move(resolved));
}

}  // namespace keel::fetchers
