// Test support: a real S3-compatible server (s3rver under node) on 127.0.0.1 (see s3rver.h).
#include "support/s3rver.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "support/process.h"
#include "support/temp_dir.h"

#ifndef KEEL_S3RVER_LAUNCHER
#error "KEEL_S3RVER_LAUNCHER must be the path of tests/support/s3rver_launch.js"
#endif

namespace keel::testing {
namespace {

constexpr int kPortAttempts = 3;
constexpr absl::Duration kStartTimeout = absl::Seconds(10);
constexpr absl::Duration kStopTimeout = absl::Seconds(5);
constexpr absl::Duration kRequestTimeout = absl::Seconds(10);
constexpr absl::Duration kNpmTimeout = absl::Seconds(30);
constexpr auto kPollPeriod = std::chrono::milliseconds(10);
constexpr char kInstallHint[] = "scripts/install-deps.sh installs nodejs, npm and s3rver 3.7.1";
// The line the launcher prints once it listens; the port follows.
constexpr char kListeningLine[] = "keel-s3rver listening on 127.0.0.1:";

// Debian's abseil has its own string_view; StrCat takes it, not std::string_view.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool IsExecutable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

std::string ReadWholeFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream all;
  all << in.rdbuf();
  return all.str();
}

// The "version" of a package.json, "" when there is none. Enough for npm's own files.
std::string PackageVersion(const std::string& package_json) {
  const size_t field = package_json.find("\"version\"");
  if (field == std::string::npos) return "";
  const size_t open = package_json.find('"', package_json.find(':', field));
  if (open == std::string::npos) return "";
  const size_t close = package_json.find('"', open + 1);
  if (close == std::string::npos) return "";
  return package_json.substr(open + 1, close - open - 1);
}

// What `<npm beside node> root -g` prints (npm's global node_modules), "" when npm is missing,
// fails or takes longer than kNpmTimeout. Asked once per npm: npm takes a fraction of a second.
std::string NpmGlobalRoot(const std::string& node_path) {
  const std::string npm = (std::filesystem::path(node_path).parent_path() / "npm").string();
  static std::mutex mutex;
  static std::map<std::string, std::string>* const roots = new std::map<std::string, std::string>;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto found = roots->find(npm); found != roots->end()) return found->second;
  std::string root;
  int fds[2];
  if (IsExecutable(npm) && pipe2(fds, O_CLOEXEC) == 0) {
    absl::StatusOr<pid_t> pid =
        Spawn({node_path, npm, "root", "-g"},
              SpawnOptions{.stderr_path = "/dev/null", .stdout_fd = fds[1]});
    close(fds[1]);
    if (pid.ok()) {
      const auto deadline =
          std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(kNpmTimeout);
      std::string out;
      for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        pollfd poll_fd = {.fd = fds[0], .events = POLLIN, .revents = 0};
        const int ready = poll(&poll_fd, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) break;
        char buffer[4096];
        const ssize_t n = read(fds[0], buffer, sizeof(buffer));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;  // EOF: npm is done
        out.append(buffer, static_cast<size_t>(n));
      }
      const std::optional<int> status = WaitForExit(*pid, absl::Seconds(1));
      if (!status.has_value()) KillAndReap(*pid);
      if (status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) {
        root = std::string(absl::StripAsciiWhitespace(out));
      }
    }
    close(fds[0]);
  }
  (*roots)[npm] = root;
  return root;
}

// The s3rver package directory to use: `configured` when set, else the first of npm's usual
// global module dirs holding s3rver. FailedPrecondition when there is none, or it is not
// kS3rverVersion.
absl::StatusOr<std::string> FindS3rver(const std::string& node_path,
                                       const std::string& configured) {
  std::vector<std::string> candidates;
  if (!configured.empty()) {
    candidates.push_back(configured);
  } else {
    std::error_code error;
    const std::filesystem::path node = std::filesystem::canonical(node_path, error);
    if (!error) {  // <prefix>/bin/node -> <prefix>/lib/node_modules
      candidates.push_back(
          (node.parent_path().parent_path() / "lib" / "node_modules" / "s3rver").string());
    }
    for (const char* dir : {"/usr/local/lib/node_modules/s3rver", "/usr/lib/node_modules/s3rver"}) {
      if (std::find(candidates.begin(), candidates.end(), dir) == candidates.end()) {
        candidates.push_back(dir);
      }
    }
  }
  auto package_json = [](const std::string& dir) {
    return ReadWholeFile(std::filesystem::path(dir) / "package.json");
  };
  auto found = std::find_if(candidates.begin(), candidates.end(),
                            [&](const std::string& dir) { return !package_json(dir).empty(); });
  if (found == candidates.end() && configured.empty()) {
    const std::string root = NpmGlobalRoot(node_path);
    if (!root.empty()) {
      candidates.push_back((std::filesystem::path(root) / "s3rver").string());
      if (!package_json(candidates.back()).empty()) found = candidates.end() - 1;
    }
  }
  if (found == candidates.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "s3rver not found in ", absl::StrJoin(candidates, ", "), " (", kInstallHint, ")"));
  }
  const std::string version = PackageVersion(package_json(*found));
  if (version != kS3rverVersion) {
    return absl::FailedPreconditionError(absl::StrCat("s3rver ", kS3rverVersion, " expected at ",
                                                      *found, ", found version \"", version, "\" (",
                                                      kInstallHint, ")"));
  }
  return *found;
}

absl::Status CheckBucketName(const std::string& name) {
  const bool valid =
      name.size() >= 3 && name.size() <= 63 &&
      std::all_of(name.begin(), name.end(),
                  [](char c) {
                    return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-' || c == '.';
                  }) &&
      absl::ascii_isalnum(name.front()) && absl::ascii_isalnum(name.back());
  if (valid) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "expected a bucket name of 3 to 63 characters a-z 0-9 '.' '-', starting and ending with a "
      "letter or digit, got \"",
      name, "\""));
}

std::string Sha256Hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &size, EVP_sha256(), nullptr) != 1) {
    return "";
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < size; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return hex;
}

size_t AppendToString(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

struct HttpRequest {
  std::string method = "GET";
  std::string url = {};
  std::string_view body = {};  // sent for PUT
  std::vector<std::string> headers = {};
  // Sign with CURLOPT_AWS_SIGV4 as (provider, key id, secret); empty provider: unsigned.
  std::string aws_sigv4 = {};
  std::string access_key_id = {};
  std::string secret_access_key = {};
};

struct HttpResult {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string headers;  // the raw header block
  std::string body;
};

// A blocking request to 127.0.0.1 or *.localhost, ignoring any proxy settings in the
// environment; the path is sent as it is (no "." or ".." squashing).
HttpResult Http(const HttpRequest& request) {
  HttpResult result;
  CURL* easy = curl_easy_init();
  if (easy == nullptr) {
    result.code = CURLE_FAILED_INIT;
    return result;
  }
  curl_slist* headers = nullptr;
  for (const std::string& header : request.headers) {
    headers = curl_slist_append(headers, header.c_str());
  }
  curl_easy_setopt(easy, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_PROXY, "");
  curl_easy_setopt(easy, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(kRequestTimeout)));
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &AppendToString);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &result.headers);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &AppendToString);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &result.body);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  if (request.method == "PUT") {
    // libcurl's SigV4 hashes CURLOPT_POSTFIELDS as the payload; the method is still PUT.
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.body.size()));
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.data());
  } else if (request.method != "GET") {
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  if (!request.aws_sigv4.empty()) {
    curl_easy_setopt(easy, CURLOPT_AWS_SIGV4, request.aws_sigv4.c_str());
    curl_easy_setopt(easy, CURLOPT_USERNAME, request.access_key_id.c_str());
    curl_easy_setopt(easy, CURLOPT_PASSWORD, request.secret_access_key.c_str());
  }
  result.code = curl_easy_perform(easy);
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &result.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(easy);
  return result;
}

// The text of the first <tag>...</tag> in an S3 XML document, "" when there is none.
std::string XmlField(const std::string& xml, std::string_view tag) {
  const std::string open = absl::StrCat("<", Sv(tag), ">");
  const std::string close = absl::StrCat("</", Sv(tag), ">");
  const size_t begin = xml.find(open);
  if (begin == std::string::npos) return "";
  const size_t end = xml.find(close, begin + open.size());
  if (end == std::string::npos) return "";
  return xml.substr(begin + open.size(), end - begin - open.size());
}

// The value of the response header `name` (lower case), trimmed; "" when absent.
std::string HeaderValue(const std::string& header_block, std::string_view name) {
  std::istringstream lines(header_block);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    if (absl::AsciiStrToLower(line.substr(0, colon)) == Sv(name)) {
      return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    }
  }
  return "";
}

// A failed request as a status: Unavailable when there was no answer; else the HTTP status as a
// canonical code, with the S3 error code and message of the body.
absl::Status RequestError(const HttpRequest& request, const HttpResult& result) {
  const std::string what = absl::StrCat(request.method, " ", request.url);
  if (result.code != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(what, ": ", curl_easy_strerror(result.code)));
  }
  absl::StatusCode code = absl::StatusCode::kUnknown;
  switch (result.status) {
    case 400:
      code = absl::StatusCode::kInvalidArgument;
      break;
    case 401:
    case 403:
      code = absl::StatusCode::kPermissionDenied;
      break;
    case 404:
      code = absl::StatusCode::kNotFound;
      break;
    case 409:
    case 412:
      code = absl::StatusCode::kFailedPrecondition;
      break;
    case 429:
    case 503:
      code = absl::StatusCode::kUnavailable;
      break;
    default:
      code = result.status >= 500 ? absl::StatusCode::kInternal : absl::StatusCode::kUnknown;
  }
  const std::string s3_code = XmlField(result.body, "Code");
  if (s3_code.empty()) {
    return absl::Status(code, absl::StrCat(what, ": HTTP ", result.status, " ", result.body));
  }
  return absl::Status(code, absl::StrCat(what, ": HTTP ", result.status, " ", s3_code, ": ",
                                         XmlField(result.body, "Message")));
}

}  // namespace

absl::StatusOr<std::unique_ptr<S3Server>> S3Server::Start(S3ServerOptions options) {
  if (!IsExecutable(options.node_path)) {
    return absl::FailedPreconditionError(
        absl::StrCat("node not found at ", options.node_path, " (", kInstallHint, ")"));
  }
  absl::StatusOr<std::string> s3rver_dir = FindS3rver(options.node_path, options.s3rver_dir);
  if (!s3rver_dir.ok()) return s3rver_dir.status();
  if (access(KEEL_S3RVER_LAUNCHER, R_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("keel's launcher ", KEEL_S3RVER_LAUNCHER, " cannot be read"));
  }
  for (const std::string& bucket : options.buckets) {
    if (absl::Status valid = CheckBucketName(bucket); !valid.ok()) return valid;
  }
  if (options.region.empty() || options.access_key_id.empty() ||
      options.secret_access_key.empty() || absl::StrContains(options.access_key_id, "/")) {
    return absl::InvalidArgumentError(
        "expected a region, an access key id without '/' and a secret access key, all non-empty");
  }
  std::unique_ptr<S3Server> server(new S3Server());
  server->options_ = std::move(options);
  server->s3rver_dir_ = *std::move(s3rver_dir);
  const std::string dir = MakeTempDir("keel-s3rver");
  if (dir.empty()) return ErrnoError("cannot create a temp dir keel-s3rver.XXXXXX", errno);
  server->dir_ = dir;
  std::error_code error;
  std::filesystem::create_directory(server->dir_ / "data", error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot create ", (server->dir_ / "data").string(), ": ", error.message()));
  }
  absl::Status launched;
  for (int attempt = 1; attempt <= kPortAttempts; ++attempt) {
    absl::StatusOr<uint16_t> port = PickFreePort();
    if (!port.ok()) return port.status();
    server->port_ = *port;
    std::error_code ignored;
    std::filesystem::remove(server->dir_ / "s3rver.log", ignored);  // this attempt's log only
    launched = server->Launch();
    if (launched.ok()) return server;
    // Only a port taken between PickFreePort and the server's bind is worth another try.
    if (!absl::StrContains(server->LogTail(8192), "address already in use")) break;
  }
  return launched;
}

absl::Status S3Server::Launch() {
  std::vector<std::string> args = {options_.node_path,
                                   KEEL_S3RVER_LAUNCHER,
                                   "--module",
                                   s3rver_dir_,
                                   "--directory",
                                   (dir_ / "data").string(),
                                   "--port",
                                   absl::StrCat(port_),
                                   "--region",
                                   options_.region,
                                   "--access-key-id",
                                   options_.access_key_id,
                                   "--secret-access-key",
                                   options_.secret_access_key};
  for (const std::string& bucket : options_.buckets) {
    args.push_back("--bucket");
    args.push_back(bucket);
  }
  const std::filesystem::path log = dir_ / "s3rver.log";
  // The log of every run is kept; this run is ready once its line follows what was there.
  std::error_code ignored;
  const uintmax_t log_size =
      std::filesystem::exists(log, ignored) ? std::filesystem::file_size(log, ignored) : 0;
  absl::StatusOr<pid_t> pid = Spawn(args, log);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  const std::string ready_line = absl::StrCat(kListeningLine, port_, "\n");
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(kStartTimeout);
  for (;;) {
    std::optional<int> exited = WaitForExit(pid_, absl::ZeroDuration());
    if (exited.has_value()) {
      pid_ = -1;
      return absl::UnavailableError(absl::StrCat("s3rver exited (", DescribeWaitStatus(*exited),
                                                 ") before listening on 127.0.0.1:", port_,
                                                 "; its log says: ", LogTail()));
    }
    const std::string log_text = ReadWholeFile(log);
    if (log_text.size() > log_size &&
        log_text.find(ready_line, static_cast<size_t>(log_size)) != std::string::npos) {
      return absl::OkStatus();
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      Stop();
      return absl::UnavailableError(absl::StrCat("s3rver was not listening on 127.0.0.1:", port_,
                                                 " within ", absl::FormatDuration(kStartTimeout),
                                                 "; its log says: ", LogTail()));
    }
    std::this_thread::sleep_for(kPollPeriod);
  }
}

void S3Server::Stop() {
  if (pid_ <= 0) return;
  StopProcess(pid_, SIGTERM, kStopTimeout);
  pid_ = -1;
}

absl::Status S3Server::Restart() {
  Stop();
  return Launch();
}

S3Server::~S3Server() {
  Stop();
  std::error_code ignored;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
}

std::string S3Server::Endpoint() const { return absl::StrCat("http://127.0.0.1:", port_); }

std::string S3Server::VirtualHostEndpoint() const {
  return absl::StrCat("http://s3.localhost:", port_);
}

std::string S3Server::ObjectUrl(std::string_view bucket, std::string_view key) const {
  return absl::StrCat(Endpoint(), "/", Sv(bucket), "/", EncodeKey(key));
}

std::string S3Server::VirtualHostObjectUrl(std::string_view bucket, std::string_view key) const {
  return absl::StrCat("http://", Sv(bucket), ".s3.localhost:", port_, "/", EncodeKey(key));
}

std::string S3Server::EncodeKey(std::string_view key) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string encoded;
  for (const char c : key) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      encoded.push_back(c);
    } else {
      const auto byte = static_cast<unsigned char>(c);
      encoded.push_back('%');
      encoded.push_back(kHex[byte >> 4]);
      encoded.push_back(kHex[byte & 0xf]);
    }
  }
  return encoded;
}

std::string S3Server::CurlAwsSigV4() const {
  return absl::StrCat("aws:amz:", options_.region, ":s3");
}

absl::StatusOr<std::string> S3Server::Put(std::string_view bucket, std::string_view key,
                                          std::string_view bytes,
                                          const std::vector<std::string>& headers) {
  if (bucket.empty() || key.empty()) {
    return absl::InvalidArgumentError("Put: expected a bucket and a key, both non-empty");
  }
  HttpRequest request{.method = "PUT",
                      .url = ObjectUrl(bucket, key),
                      .body = bytes,
                      .headers = {absl::StrCat("x-amz-content-sha256: ", Sha256Hex(bytes))},
                      .aws_sigv4 = CurlAwsSigV4(),
                      .access_key_id = options_.access_key_id,
                      .secret_access_key = options_.secret_access_key};
  const bool has_content_type = std::any_of(headers.begin(), headers.end(), [](const auto& h) {
    return absl::StartsWithIgnoreCase(h, "content-type:");
  });
  // Without one, libcurl would send a form's type with the body.
  if (!has_content_type) request.headers.push_back("Content-Type: application/octet-stream");
  request.headers.insert(request.headers.end(), headers.begin(), headers.end());
  const HttpResult result = Http(request);
  if (result.code != CURLE_OK || result.status < 200 || result.status > 299) {
    return RequestError(request, result);
  }
  return HeaderValue(result.headers, "etag");
}

absl::Status S3Server::Delete(std::string_view bucket, std::string_view key) {
  if (bucket.empty() || key.empty()) {
    return absl::InvalidArgumentError("Delete: expected a bucket and a key, both non-empty");
  }
  const HttpRequest request{
      .method = "DELETE",
      .url = ObjectUrl(bucket, key),
      .headers = {absl::StrCat("x-amz-content-sha256: ", kEmptyPayloadSha256)},
      .aws_sigv4 = CurlAwsSigV4(),
      .access_key_id = options_.access_key_id,
      .secret_access_key = options_.secret_access_key};
  const HttpResult result = Http(request);
  if (result.code != CURLE_OK || result.status < 200 || result.status > 299) {
    return RequestError(request, result);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> S3Server::Admin(std::string_view route) const {
  const HttpRequest request{.url = absl::StrCat(Endpoint(), "/__keel/", Sv(route))};
  HttpResult result = Http(request);
  if (result.code != CURLE_OK || result.status != 200) return RequestError(request, result);
  return std::move(result.body);
}

absl::Status S3Server::SetFailure(int http_status, std::string_view code, int count) {
  const bool valid_code =
      !code.empty() && absl::ascii_isalpha(code.front()) &&
      std::all_of(code.begin(), code.end(), [](char c) { return absl::ascii_isalnum(c); });
  if (http_status < 400 || http_status > 599 || !valid_code || count < kEveryRequest) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetFailure: expected a status in 400..599, an S3 error code of letters and "
                     "digits and a count >= -1, got ",
                     http_status, " \"", Sv(code), "\" ", count));
  }
  return Admin(absl::StrCat("fail?status=", http_status, "&code=", Sv(code), "&count=", count))
      .status();
}

absl::Status S3Server::SetDelay(absl::Duration delay) {
  if (delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetDelay: expected a delay >= 0, got ", absl::FormatDuration(delay)));
  }
  return Admin(absl::StrCat("delay?ms=", absl::ToInt64Milliseconds(delay))).status();
}

absl::Status S3Server::ClearFaults() { return Admin("reset").status(); }

absl::StatusOr<int64_t> S3Server::RequestCount() const {
  absl::StatusOr<std::string> stats = Admin("stats");
  if (!stats.ok()) return stats.status();
  constexpr std::string_view kField = "\"requests\":";
  const size_t at = stats->find(kField);
  int64_t count = -1;
  if (at != std::string::npos) {
    const char* begin = stats->data() + at + kField.size();
    std::from_chars(begin, stats->data() + stats->size(), count);
  }
  if (count < 0) return absl::InternalError(absl::StrCat("unexpected admin answer: ", *stats));
  return count;
}

std::string S3Server::LogTail(size_t max_bytes) const {
  std::string tail = FileTail(dir_ / "s3rver.log", max_bytes);
  return tail.empty() ? "(empty)" : tail;
}

}  // namespace keel::testing
