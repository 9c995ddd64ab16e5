// Test support: a real nginx on 127.0.0.1 (see nginx.h).
#include "support/nginx.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "support/process.h"

namespace keel::testing {
namespace {

constexpr int kPortAttempts = 3;
constexpr absl::Duration kStartTimeout = absl::Seconds(10);
constexpr absl::Duration kStopTimeout = absl::Seconds(5);
constexpr absl::Duration kOpensslTimeout = absl::Seconds(60);
constexpr auto kPollPeriod = std::chrono::milliseconds(10);

// Debian's abseil has its own string_view; StrCat takes it, not std::string_view.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// True when something accepts TCP connections on 127.0.0.1:port.

// Runs a command to its end (killing it after `timeout`); its output goes to `log_path`.
absl::Status RunCommand(const std::vector<std::string>& args, const std::filesystem::path& log_path,
                        absl::Duration timeout) {
  absl::StatusOr<pid_t> pid = Spawn(args, log_path);
  if (!pid.ok()) return pid.status();
  std::optional<int> status = WaitForExit(*pid, timeout);
  if (!status.has_value()) {
    KillAndReap(*pid);
    return absl::DeadlineExceededError(
        absl::StrCat(args[0], " did not finish within ", absl::FormatDuration(timeout)));
  }
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return absl::InternalError(absl::StrCat(args[0], " failed (", DescribeWaitStatus(*status),
                                            "): ", FileTail(log_path, 2048)));
  }
  return absl::OkStatus();
}

// A path nginx reads from its config, quoted (nginx strings take backslash escapes).
std::string Quoted(const std::filesystem::path& path) {
  return absl::StrCat("\"", absl::StrReplaceAll(path.string(), {{"\\", "\\\\"}, {"\"", "\\\""}}),
                      "\"");
}

std::string NginxConfig(const std::filesystem::path& dir, uint16_t port, bool tls,
                        std::string_view extra_server_config) {
  const std::filesystem::path temp = dir / "tmp";
  std::string ssl;
  if (tls) {
    ssl = absl::StrCat("    ssl_certificate ", Quoted(dir / "cert.pem"), ";\n",
                       "    ssl_certificate_key ", Quoted(dir / "key.pem"), ";\n");
  }
  return absl::StrCat(
      "# Written by keel's test fixture (tests/support/nginx.cc).\n"
      "daemon off;\n"
      "master_process off;\n"
      "worker_processes 1;\n"
      "pid ",
      Quoted(dir / "nginx.pid"), ";\n", "lock_file ", Quoted(dir / "nginx.lock"), ";\n",
      "error_log ", Quoted(dir / "error.log"), " notice;\n",
      "events { worker_connections 256; }\n"
      "http {\n"
      "  access_log off;\n"
      "  default_type application/octet-stream;\n"
      "  client_body_temp_path ",
      Quoted(temp / "client_body"), ";\n", "  proxy_temp_path ", Quoted(temp / "proxy"), ";\n",
      "  fastcgi_temp_path ", Quoted(temp / "fastcgi"), ";\n", "  uwsgi_temp_path ",
      Quoted(temp / "uwsgi"), ";\n", "  scgi_temp_path ", Quoted(temp / "scgi"), ";\n",
      "  server {\n"
      "    listen 127.0.0.1:",
      port, tls ? " ssl" : "", ";\n", "    server_name 127.0.0.1;\n", ssl, "    root ",
      Quoted(dir / "root"), ";\n",
      R"(    location / { }
    location /noetag/ { etag off; }
    location /novalidators/ { etag off; if_modified_since off; ssi on; ssi_types *; }
    location /maxage/ { add_header Cache-Control "max-age=60"; add_header Age 20; }
    location /nostore/ { add_header Cache-Control "no-store"; }
    location /gzip/ { gzip on; gzip_types *; gzip_min_length 0; }
    location /flaky/ { try_files $uri =500; }
    location = /busy { add_header Retry-After 120 always; return 503; }
    location = /ratelimited { add_header Retry-After 30 always; return 429; }
    location /slow/ { limit_rate 200; }
    location = /loop { return 302 /loop; }
    location /redirect/ { rewrite ^/redirect/(.*)$ /$1 redirect; }
    location /auth/ { if ($http_authorization != "Bearer s3cret") { return 401; } }
)",
      Sv(extra_server_config), "\n  }\n}\n");
}

absl::Status CheckRelativePath(std::string_view relative_path) {
  const std::filesystem::path path(relative_path);
  if (relative_path.empty() || path.is_absolute()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected a path relative to the document root, got \"", Sv(relative_path), "\""));
  }
  for (const std::filesystem::path& part : path) {
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("a path under the document root must not contain \"..\", got \"",
                       Sv(relative_path), "\""));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write", errno);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<NginxServer>> NginxServer::Start(NginxOptions options) {
  if (access(options.nginx_path.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("nginx not found at ", options.nginx_path,
                     " (scripts/install-deps.sh installs nginx-light)"));
  }
  if (options.tls && access(kOpensslPath, X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "openssl not found at ", kOpensslPath, " (scripts/install-deps.sh installs openssl)"));
  }
  std::unique_ptr<NginxServer> server(new NginxServer());
  std::string pattern = (std::filesystem::temp_directory_path() / "keel-nginx-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) return ErrnoError("mkdtemp " + pattern, errno);
  server->dir_ = pattern;
  server->root_ = server->dir_ / "root";
  server->tls_ = options.tls;
  std::error_code error;
  for (const char* sub : {"root", "tmp", "staging"}) {
    std::filesystem::create_directory(server->dir_ / sub, error);
    if (error) {
      return absl::InternalError(
          absl::StrCat("cannot create ", (server->dir_ / sub).string(), ": ", error.message()));
    }
  }
  if (options.tls) {
    absl::Status generated = RunCommand(
        {kOpensslPath, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
         (server->dir_ / "key.pem").string(), "-out", (server->dir_ / "cert.pem").string()},
        server->dir_ / "openssl.log", kOpensslTimeout);
    if (!generated.ok()) {
      return absl::InternalError(
          absl::StrCat("cannot generate the TLS certificate: ", generated.message()));
    }
  }
  absl::Status launched;
  for (int attempt = 1; attempt <= kPortAttempts; ++attempt) {
    launched = server->Launch(options);
    if (launched.ok()) return server;
    // Only a port taken between PickFreePort and nginx's bind is worth another try.
    if (server->ErrorLogTail(8192).find("Address already in use") == std::string::npos) break;
  }
  return launched;
}

absl::Status NginxServer::Launch(const NginxOptions& options) {
  absl::StatusOr<uint16_t> port = PickFreePort();
  if (!port.ok()) return port.status();
  port_ = *port;
  const std::filesystem::path config = dir_ / "nginx.conf";
  const std::filesystem::path error_log = dir_ / "error.log";
  {
    std::ofstream out(config, std::ios::trunc);
    out << NginxConfig(dir_, port_, tls_, options.extra_server_config);
    if (!out.flush()) return absl::InternalError("cannot write " + config.string());
  }
  std::error_code ignored;
  std::filesystem::remove(error_log, ignored);  // the log of this attempt only
  absl::StatusOr<pid_t> pid = Spawn({options.nginx_path, "-p", dir_.string() + "/", "-c",
                                     config.string(), "-e", error_log.string()},
                                    error_log);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(kStartTimeout);
  for (;;) {
    std::optional<int> exited = WaitForExit(pid_, absl::ZeroDuration());
    if (exited.has_value()) {
      pid_ = -1;
      return absl::UnavailableError(absl::StrCat("nginx exited (", DescribeWaitStatus(*exited),
                                                 ") before accepting connections on 127.0.0.1:",
                                                 port_, "; its error log says: ", ErrorLogTail()));
    }
    if (PortAcceptsConnections(port_)) return absl::OkStatus();
    if (std::chrono::steady_clock::now() >= deadline) {
      Stop();
      return absl::UnavailableError(absl::StrCat(
          "nginx did not accept connections on 127.0.0.1:", port_, " within ",
          absl::FormatDuration(kStartTimeout), "; its error log says: ", ErrorLogTail()));
    }
    std::this_thread::sleep_for(kPollPeriod);
  }
}

void NginxServer::Stop() {
  if (pid_ <= 0) return;
  StopProcess(pid_, SIGTERM, kStopTimeout);
  pid_ = -1;
}

NginxServer::~NginxServer() {
  Stop();
  std::error_code ignored;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
}

std::string NginxServer::Url(std::string_view path) const {
  return absl::StrCat(tls_ ? "https" : "http", "://127.0.0.1:", port_,
                      path.empty() || path.front() != '/' ? "/" : "", Sv(path));
}

std::string NginxServer::ca_file() const { return tls_ ? (dir_ / "cert.pem").string() : ""; }

std::string NginxServer::ErrorLogTail(size_t max_bytes) const {
  std::string tail = FileTail(dir_ / "error.log", max_bytes);
  return tail.empty() ? "(empty)" : tail;
}

absl::Status NginxServer::WriteFile(std::string_view relative_path, std::string_view contents,
                                    std::optional<absl::Time> mtime) {
  if (absl::Status valid = CheckRelativePath(relative_path); !valid.ok()) return valid;
  const std::filesystem::path target = root_ / std::filesystem::path(relative_path);
  std::error_code error;
  std::filesystem::create_directories(target.parent_path(), error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot create ", target.parent_path().string(), ": ", error.message()));
  }
  std::string staging = (dir_ / "staging" / "file-XXXXXX").string();
  const int fd = mkstemp(staging.data());
  if (fd < 0) return ErrnoError("mkstemp " + staging, errno);
  absl::Status status = WriteAll(fd, contents);
  if (status.ok() && fchmod(fd, 0644) != 0) status = ErrnoError("fchmod", errno);
  if (status.ok() && mtime.has_value()) {
    const timespec ts = absl::ToTimespec(*mtime);
    const timespec times[2] = {ts, ts};  // atime, mtime
    if (futimens(fd, times) != 0) status = ErrnoError("futimens", errno);
  }
  if (close(fd) != 0 && status.ok()) status = ErrnoError("close", errno);
  if (status.ok() && rename(staging.c_str(), target.c_str()) != 0) {
    status = ErrnoError(absl::StrCat("rename to ", target.string()), errno);
  }
  if (!status.ok()) unlink(staging.c_str());
  return status;
}

absl::Status NginxServer::RemoveFile(std::string_view relative_path) {
  if (absl::Status valid = CheckRelativePath(relative_path); !valid.ok()) return valid;
  const std::filesystem::path target = root_ / std::filesystem::path(relative_path);
  if (unlink(target.c_str()) != 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(target.string() + " does not exist");
    return ErrnoError("unlink " + target.string(), err);
  }
  return absl::OkStatus();
}

}  // namespace keel::testing
