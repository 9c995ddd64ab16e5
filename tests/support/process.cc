// Test support: child processes for tests and benchmarks (see process.h).
#include "support/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace keel::testing {
namespace {

constexpr auto kPollPeriod = std::chrono::milliseconds(10);
constexpr int kSetupFailedExitCode = 126;
constexpr int kExecFailedExitCode = 127;

// Debian's abseil has its own string_view; StrCat takes it, not std::string_view.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A descriptor Spawn opened, closed when Spawn returns (never in the child, which execs or
// calls _exit before any destructor runs).
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  const int fd_;
};

// Opens `path` for a child's output: appended to, created 0644 if missing, closed at exec (the
// child's dup2 copies are not).
int OpenForAppend(const std::filesystem::path& path) {
  return open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

}  // namespace

absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, const SpawnOptions& options) {
  if (args.empty()) {
    return absl::InvalidArgumentError("Spawn: expected the program's path in args[0], got no args");
  }
  if (options.stdout_path.empty() == (options.stdout_fd < 0)) {
    return absl::InvalidArgumentError(
        "Spawn: expected exactly one of SpawnOptions::stdout_path and stdout_fd");
  }
  // Everything the child needs is prepared here: between fork and exec it may only make
  // async-signal-safe calls (the parent may have other threads, and one may hold malloc's lock).
  std::vector<char*> argv;
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  ScopedFd stdout_file(options.stdout_path.empty() ? -1 : OpenForAppend(options.stdout_path));
  if (!options.stdout_path.empty() && stdout_file.get() < 0) {
    return ErrnoError(absl::StrCat("open ", options.stdout_path.string()), errno);
  }
  ScopedFd stderr_file(options.stderr_path.empty() ? -1 : OpenForAppend(options.stderr_path));
  if (!options.stderr_path.empty() && stderr_file.get() < 0) {
    return ErrnoError(absl::StrCat("open ", options.stderr_path.string()), errno);
  }
  ScopedFd null_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (null_fd.get() < 0) return ErrnoError("open /dev/null", errno);
  const int out_fd = options.stdout_path.empty() ? options.stdout_fd : stdout_file.get();
  const int err_fd = options.stderr_path.empty() ? out_fd : stderr_file.get();

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(kSetupFailedExitCode);  // the parent died before prctl
    // dup2 clears FD_CLOEXEC on the copies; every other descriptor closes here or at exec.
    if (dup2(null_fd.get(), STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
        dup2(err_fd, STDERR_FILENO) < 0) {
      _exit(kSetupFailedExitCode);
    }
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0) {  // Linux 5.9; older kernels: one by one
      for (int fd = 3; fd < 1024; ++fd) close(fd);
    }
    // A fork inherits the forking thread's signal mask, and exec keeps it: the program starts
    // with nothing blocked, as from a shell.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(argv[0], argv.data());
    _exit(kExecFailedExitCode);
  }
  const int fork_errno = errno;
  if (pid < 0) return ErrnoError("fork", fork_errno);
  return pid;
}

absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args,
                            const std::filesystem::path& log_path) {
  SpawnOptions options;
  options.stdout_path = log_path;
  return Spawn(args, options);
}

std::optional<int> WaitForChange(pid_t pid, int wait_options, absl::Duration timeout) {
  const bool forever = timeout == absl::InfiniteDuration();
  const auto deadline = forever
                            ? std::chrono::steady_clock::time_point::max()
                            : std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, wait_options | (forever ? 0 : WNOHANG));
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;  // not our child any more: nothing to wait for
    if (forever) continue;                   // EINTR
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(kPollPeriod);
  }
}

std::optional<int> WaitForExit(pid_t pid, absl::Duration timeout) {
  return WaitForChange(pid, 0, timeout);
}

int StopProcess(pid_t pid, int signal, absl::Duration timeout) {
  kill(pid, signal);
  kill(pid, SIGCONT);
  if (std::optional<int> status = WaitForExit(pid, timeout); status.has_value()) return *status;
  return KillAndReap(pid);
}

int KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  return *WaitForExit(pid, absl::InfiniteDuration());  // blocks: never nullopt
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(status),
                        WCOREDUMP(status) ? " (core dumped)" : "");
  }
  if (WIFSTOPPED(status)) return absl::StrCat("stopped by signal ", WSTOPSIG(status));
  if (WIFCONTINUED(status)) return "continued";
  return absl::StrCat("wait status ", status);
}

absl::StatusOr<std::vector<uint16_t>> PickFreePorts(int count) {
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  absl::Status status;
  for (int i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      status = ErrnoError("socket", errno);
      break;
    }
    fds.push_back(fd);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      status = ErrnoError("bind 127.0.0.1:0", errno);
      break;
    }
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) close(fd);
  if (!status.ok()) return status;
  return ports;
}

absl::StatusOr<uint16_t> PickFreePort() {
  absl::StatusOr<std::vector<uint16_t>> ports = PickFreePorts(1);
  if (!ports.ok()) return ports.status();
  return ports->front();
}

bool PortAcceptsConnections(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  const bool connected = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return connected;
}

absl::Status ErrnoError(std::string_view what, int err) {
  return absl::InternalError(
      absl::StrCat(Sv(what), ": ", std::error_code(err, std::generic_category()).message()));
}

std::string FileTail(const std::filesystem::path& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream all;
  all << in.rdbuf();
  std::string text = all.str();
  if (text.size() > max_bytes) text = "..." + text.substr(text.size() - max_bytes);
  return text;
}

}  // namespace keel::testing
