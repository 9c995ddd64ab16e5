// Test support: a real etcd on 127.0.0.1 (see etcd.h).
#include "support/etcd.h"

#include <curl/curl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <optional>
#include <system_error>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace keel::testing {
namespace {

constexpr int kPortAttempts = 3;
constexpr absl::Duration kReadyTimeout = absl::Seconds(15);
constexpr absl::Duration kStopTimeout = absl::Seconds(5);
constexpr absl::Duration kSignalTimeout = absl::Seconds(5);
constexpr absl::Duration kPostTimeout = absl::Seconds(10);
// One readiness probe; etcd holds a write without a leader for seconds, so probes are cut short.
constexpr absl::Duration kProbeTimeout = absl::Seconds(1);
constexpr auto kPollPeriod = std::chrono::milliseconds(10);

// Debian's abseil has its own string_view; StrCat takes it, not std::string_view.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

size_t AppendToString(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

struct HttpResult {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
};

// A blocking request to 127.0.0.1 (a POST when `post_body` is set), ignoring any proxy
// settings in the environment.
HttpResult Http(const std::string& url, const std::optional<std::string_view>& post_body,
                absl::Duration timeout) {
  HttpResult result;
  CURL* easy = curl_easy_init();
  if (easy == nullptr) {
    result.code = CURLE_FAILED_INIT;
    return result;
  }
  curl_slist* headers = nullptr;
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_PROXY, "");
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(std::max<int64_t>(1, absl::ToInt64Milliseconds(timeout))));
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &AppendToString);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &result.body);
  if (post_body.has_value()) {
    headers = curl_slist_append(headers, "Content-Type: application/json");
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(post_body->size()));
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, post_body->data());
  }
  result.code = curl_easy_perform(easy);
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &result.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(easy);
  return result;
}

// The gateway's error body carries the gRPC code: {"error":"...","code":5,"message":"..."}.
// gRPC codes are absl's canonical codes; without one, the HTTP status decides.
absl::StatusCode ErrorCode(long http_status, std::string_view body) {
  constexpr std::string_view kCodeField = "\"code\":";
  const size_t at = body.find(kCodeField);
  if (at != std::string_view::npos) {
    std::string_view rest = body.substr(at + kCodeField.size());
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    int code = 0;
    const auto [end, error] = std::from_chars(rest.data(), rest.data() + rest.size(), code);
    if (error == std::errc() && code > 0 && code <= 16) return static_cast<absl::StatusCode>(code);
  }
  switch (http_status) {
    case 400:
      return absl::StatusCode::kInvalidArgument;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 429:
      return absl::StatusCode::kResourceExhausted;
    case 503:
      return absl::StatusCode::kUnavailable;
    case 504:
      return absl::StatusCode::kDeadlineExceeded;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdServer>> EtcdServer::Start(EtcdOptions options) {
  if (access(options.etcd_path.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("etcd not found at ", options.etcd_path,
                     " (scripts/install-deps.sh installs etcd-server)"));
  }
  std::unique_ptr<EtcdServer> server(new EtcdServer());
  server->options_ = std::move(options);
  const std::string dir = MakeTempDir("keel-etcd");
  if (dir.empty()) return ErrnoError("cannot create a temp dir keel-etcd.XXXXXX", errno);
  server->dir_ = dir;
  absl::Status launched;
  for (int attempt = 1; attempt <= kPortAttempts; ++attempt) {
    absl::StatusOr<std::vector<uint16_t>> ports = PickFreePorts(2);
    if (!ports.ok()) return ports.status();
    server->port_ = (*ports)[0];
    server->peer_port_ = (*ports)[1];
    // This attempt's log and data only (etcd binds before it creates the data dir, but a
    // half-made member must not be mistaken for one to restart).
    std::error_code ignored;
    std::filesystem::remove(server->dir_ / "etcd.log", ignored);
    std::filesystem::remove_all(server->dir_ / "data", ignored);
    launched = server->Launch();
    if (launched.ok()) return server;
    // Only a port taken between PickFreePorts and etcd's bind is worth another try.
    if (!absl::StrContains(server->LogTail(8192), "address already in use")) break;
  }
  return launched;
}

absl::Status EtcdServer::Launch() {
  const std::string client_url = Endpoint();
  const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer_port_);
  std::vector<std::string> args = {options_.etcd_path, "--name", "keel-test", "--data-dir",
                                   (dir_ / "data").string(), "--listen-client-urls", client_url,
                                   "--advertise-client-urls", client_url, "--listen-peer-urls",
                                   peer_url, "--initial-advertise-peer-urls", peer_url,
                                   "--initial-cluster", absl::StrCat("keel-test=", peer_url),
                                   // etcd 3.4 defaults to the deprecated capnslog logger.
                                   "--logger=zap", "--log-outputs=stderr"};
  if (options_.short_raft_timers) {
    args.push_back("--heartbeat-interval=10");
    args.push_back("--election-timeout=100");
  }
  args.insert(args.end(), options_.extra_flags.begin(), options_.extra_flags.end());
  absl::StatusOr<pid_t> pid = Spawn(args, dir_ / "etcd.log");
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  paused_ = false;

  const std::string ready_body = absl::StrCat(R"({"key":")", Base64(kReadinessKey),
                                              R"(","value":")", Base64("ready"), R"("})");
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(kReadyTimeout);
  bool answers_version = false;
  std::string last_problem = "no answer to GET /version";
  for (;;) {
    std::optional<int> exited = WaitForExit(pid_, absl::ZeroDuration());
    if (exited.has_value()) {
      pid_ = -1;
      return absl::UnavailableError(absl::StrCat("etcd exited (", DescribeWaitStatus(*exited),
                                                 ") before it was ready on ", client_url,
                                                 "; its log says: ", LogTail()));
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      Stop();
      return absl::UnavailableError(absl::StrCat("etcd was not ready on ", client_url, " within ",
                                                 absl::FormatDuration(kReadyTimeout), " (",
                                                 last_problem, "); its log says: ", LogTail()));
    }
    const absl::Duration probe_timeout =
        std::min(kProbeTimeout, absl::FromChrono(deadline - now) + absl::Milliseconds(1));
    if (!answers_version) {
      HttpResult version = Http(client_url + "/version", std::nullopt, probe_timeout);
      answers_version = version.code == CURLE_OK && version.status == 200 &&
                        absl::StrContains(version.body, "etcdserver");
    }
    if (answers_version) {
      HttpResult put = Http(client_url + "/v3/kv/put", ready_body, probe_timeout);
      if (put.code == CURLE_OK && put.status == 200) return absl::OkStatus();
      last_problem = put.code != CURLE_OK
                         ? absl::StrCat("POST /v3/kv/put: ", curl_easy_strerror(put.code))
                         : absl::StrCat("POST /v3/kv/put: HTTP ", put.status, " ", put.body);
    }
    std::this_thread::sleep_for(kPollPeriod);
  }
}

void EtcdServer::Stop() {
  if (pid_ <= 0) return;
  StopProcess(pid_, SIGTERM, kStopTimeout);
  pid_ = -1;
  paused_ = false;
}

void EtcdServer::Kill() {
  if (pid_ <= 0) return;
  KillAndReap(pid_);
  pid_ = -1;
  paused_ = false;
}

absl::Status EtcdServer::Restart() {
  Stop();
  return Launch();
}

absl::Status EtcdServer::Pause() {
  if (pid_ <= 0) return absl::FailedPreconditionError("cannot pause etcd: it is not running");
  if (paused_) return absl::FailedPreconditionError("cannot pause etcd: it is already paused");
  if (kill(pid_, SIGSTOP) != 0) return ErrnoError("kill SIGSTOP", errno);
  // waitpid reports the child's stop (WUNTRACED), so Pause returns once it has stopped.
  const std::optional<int> status = WaitForChange(pid_, WUNTRACED, kSignalTimeout);
  if (!status.has_value()) {
    return absl::DeadlineExceededError("etcd did not stop within 5s of SIGSTOP");
  }
  if (*status == -1) return ErrnoError("waitpid", errno);
  if (!WIFSTOPPED(*status)) {
    pid_ = -1;
    return absl::UnavailableError(absl::StrCat("etcd exited (", DescribeWaitStatus(*status),
                                               ") instead of pausing; its log says: ", LogTail()));
  }
  paused_ = true;
  return absl::OkStatus();
}

absl::Status EtcdServer::Resume() {
  if (pid_ <= 0) return absl::FailedPreconditionError("cannot resume etcd: it is not running");
  if (!paused_) return absl::FailedPreconditionError("cannot resume etcd: it is not paused");
  if (kill(pid_, SIGCONT) != 0) return ErrnoError("kill SIGCONT", errno);
  const std::optional<int> status = WaitForChange(pid_, WCONTINUED, kSignalTimeout);
  if (!status.has_value()) {
    return absl::DeadlineExceededError("etcd did not continue within 5s of SIGCONT");
  }
  if (*status == -1) return ErrnoError("waitpid", errno);
  if (!WIFCONTINUED(*status)) {  // without WUNTRACED, waitpid reports no stop: it exited
    pid_ = -1;
    paused_ = false;
    return absl::UnavailableError(absl::StrCat("etcd exited (", DescribeWaitStatus(*status),
                                               ") instead of resuming; its log says: ", LogTail()));
  }
  paused_ = false;
  return absl::OkStatus();
}

EtcdServer::~EtcdServer() {
  Stop();
  std::error_code ignored;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
}

std::string EtcdServer::Endpoint() const { return absl::StrCat("http://127.0.0.1:", port_); }

absl::StatusOr<std::string> EtcdServer::Post(std::string_view path,
                                             std::string_view json_body) const {
  const std::string url =
      absl::StrCat(Endpoint(), path.empty() || path.front() != '/' ? "/" : "", Sv(path));
  HttpResult result = Http(url, json_body, kPostTimeout);
  if (result.code != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat("POST ", url, ": ", curl_easy_strerror(result.code)));
  }
  if (result.status < 200 || result.status > 299) {
    return absl::Status(ErrorCode(result.status, result.body),
                        absl::StrCat("POST ", url, ": HTTP ", result.status, " ", result.body));
  }
  return std::move(result.body);
}

std::string EtcdServer::Base64(std::string_view bytes) { return absl::Base64Escape(Sv(bytes)); }

std::string EtcdServer::LogTail(size_t max_bytes) const {
  std::string tail = FileTail(dir_ / "etcd.log", max_bytes);
  return tail.empty() ? "(empty)" : tail;
}

}  // namespace keel::testing
