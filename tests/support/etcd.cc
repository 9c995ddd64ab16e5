// Test support: a real etcd on 127.0.0.1 (see etcd.h).
#include "support/etcd.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
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

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

absl::Status ErrnoError(std::string_view what, int err) {
  return absl::InternalError(absl::StrCat(Sv(what), ": ", ErrnoText(err)));
}

// The last `max_bytes` of the file at `path`, "" when it cannot be read.
std::string FileTail(const std::filesystem::path& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream all;
  all << in.rdbuf();
  std::string text = all.str();
  if (text.size() > max_bytes) text = "..." + text.substr(text.size() - max_bytes);
  return text;
}

// Two distinct ports nobody listens on right now: bind port 0 on 127.0.0.1 twice (both
// sockets open at once, so the ports differ), read them, close. Another process may take one
// before etcd binds it; Start retries then.
absl::StatusOr<std::array<uint16_t, 2>> PickFreePorts() {
  std::array<int, 2> fds = {-1, -1};
  std::array<uint16_t, 2> ports = {0, 0};
  absl::Status status;
  for (size_t i = 0; i < fds.size() && status.ok(); ++i) {
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fds[i] < 0) {
      status = ErrnoError("socket", errno);
      break;
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (bind(fds[i], reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        getsockname(fds[i], reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      status = ErrnoError("bind 127.0.0.1:0", errno);
      break;
    }
    ports[i] = ntohs(addr.sin_port);
  }
  for (int fd : fds) {
    if (fd >= 0) close(fd);
  }
  if (!status.ok()) return status;
  return ports;
}

// Starts `argv[0]` with stdin from /dev/null and stdout and stderr appended to `log_path`.
// The child dies with the thread that started it (PR_SET_PDEATHSIG), so a killed test leaves
// no server behind.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args,
                            const std::filesystem::path& log_path) {
  // Everything the child needs is prepared here: between fork and exec it may only make
  // async-signal-safe calls (the parent has other threads).
  std::vector<char*> argv;
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return ErrnoError(absl::StrCat("open ", log_path.string()), errno);
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    const int err = errno;
    close(log_fd);
    return ErrnoError("open /dev/null", err);
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);  // the parent died before prctl
    // dup2 clears FD_CLOEXEC on the copies; every other descriptor closes here or at exec.
    if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
        dup2(log_fd, STDERR_FILENO) < 0) {
      _exit(126);
    }
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0) {
      for (int fd = 3; fd < 1024; ++fd) close(fd);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  const int fork_errno = errno;
  close(log_fd);
  close(null_fd);
  if (pid < 0) return ErrnoError("fork", fork_errno);
  return pid;
}

// Waits up to `timeout` for `pid` to exit; its wait status, or nullopt if it still runs.
std::optional<int> WaitForExit(pid_t pid, absl::Duration timeout) {
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;  // not our child any more: nothing to wait for
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(kPollPeriod);
  }
}

// Kills `pid` with `signal` (and SIGCONT, so a stopped process gets it), waits up to
// `timeout`, then SIGKILLs it and reaps it.
void StopProcess(pid_t pid, int signal, absl::Duration timeout) {
  kill(pid, signal);
  kill(pid, SIGCONT);
  if (WaitForExit(pid, timeout).has_value()) return;
  kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("signal ", WTERMSIG(status));
  return absl::StrCat("wait status ", status);
}

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
    absl::StatusOr<std::array<uint16_t, 2>> ports = PickFreePorts();
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
  StopProcess(pid_, SIGKILL, kStopTimeout);
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
  const auto deadline =
      std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(kSignalTimeout);
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WUNTRACED | WNOHANG);
    if (r == pid_ && WIFSTOPPED(status)) break;
    if (r == pid_) {
      pid_ = -1;
      return absl::UnavailableError(
          absl::StrCat("etcd exited (", DescribeWaitStatus(status),
                       ") instead of pausing; its log says: ", LogTail()));
    }
    if (r < 0 && errno != EINTR) return ErrnoError("waitpid", errno);
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError("etcd did not stop within 5s of SIGSTOP");
    }
    std::this_thread::sleep_for(kPollPeriod);
  }
  paused_ = true;
  return absl::OkStatus();
}

absl::Status EtcdServer::Resume() {
  if (pid_ <= 0) return absl::FailedPreconditionError("cannot resume etcd: it is not running");
  if (!paused_) return absl::FailedPreconditionError("cannot resume etcd: it is not paused");
  if (kill(pid_, SIGCONT) != 0) return ErrnoError("kill SIGCONT", errno);
  const auto deadline =
      std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(kSignalTimeout);
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WCONTINUED | WNOHANG);
    if (r == pid_ && WIFCONTINUED(status)) break;
    if (r == pid_ && !WIFSTOPPED(status)) {
      pid_ = -1;
      paused_ = false;
      return absl::UnavailableError(
          absl::StrCat("etcd exited (", DescribeWaitStatus(status),
                       ") instead of resuming; its log says: ", LogTail()));
    }
    if (r < 0 && errno != EINTR) return ErrnoError("waitpid", errno);
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError("etcd did not continue within 5s of SIGCONT");
    }
    std::this_thread::sleep_for(kPollPeriod);
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
