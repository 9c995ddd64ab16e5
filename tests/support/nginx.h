// Test support, not part of keel: a real nginx on 127.0.0.1 for the HTTP fetcher's
// integration tests.
//
// `NginxServer::Start` writes an nginx.conf into a fresh temp dir, picks a free loopback port,
// starts /usr/sbin/nginx in the foreground (`daemon off; master_process off;`) and waits until
// it accepts connections. The server answers from a document root the test fills with
// `WriteFile`; a fixed set of locations (below) gives the behaviours the fetcher must handle:
// validators, caching headers, gzip, errors with Retry-After, a slow body, redirects, auth.
// The destructor stops nginx and removes the temp dir.
//
//   auto nginx = keel::testing::NginxServer::Start();
//   ASSERT_TRUE(nginx.ok()) << nginx.status();  // a missing nginx fails the test, never skips
//   ASSERT_TRUE((*nginx)->WriteFile("noetag/config.json", "{}").ok());
//   std::string url = (*nginx)->Url("/noetag/config.json");
//
// Locations every config has (paths under `/` map to files under `root()`):
//   /              static files with nginx's validators: ETag ("<mtime hex>-<size hex>") and
//                  Last-Modified (the file's mtime, to the second); conditional requests get 304.
//   /noetag/       Last-Modified only (etag off).
//   /novalidators/ neither ETag nor Last-Modified, and no Content-Length: the body goes
//                  through nginx's SSI filter, which drops all three (the file must not contain
//                  `<!--#` SSI commands). `If-Modified-Since` is ignored (if_modified_since off).
//   /maxage/       adds `Cache-Control: max-age=60` and `Age: 20` (so 40 s of freshness left).
//   /nostore/      adds `Cache-Control: no-store`.
//   /gzip/         gzip on for every type and size: `Content-Encoding: gzip` (chunked, weak
//                  ETag) for a client sending `Accept-Encoding: gzip`, the plain file otherwise.
//   /flaky/        a missing file is a 500 (`try_files $uri =500`); writing it recovers.
//   /busy          503 with `Retry-After: 120`.
//   /ratelimited   429 with `Retry-After: 30`.
//   /slow/         static files sent at 200 bytes/s (limit_rate): a 20 KB file takes ~100 s.
//   /loop          302 to itself.
//   /redirect/<p>  302 to /<p>.
//   /auth/         401 unless the request has `Authorization: Bearer s3cret`.
// `NginxOptions::extra_server_config` is appended inside the `server { }` block.
//
// Thread safety: thread-compatible. Start and the destructor fork and wait for child
// processes; call them from a thread that outlives the server (a test's main thread): nginx
// is started with PR_SET_PDEATHSIG, so it dies with that thread, and so with a killed test.
#ifndef KEEL_TESTS_SUPPORT_NGINX_H_
#define KEEL_TESTS_SUPPORT_NGINX_H_

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace keel::testing {

inline constexpr char kNginxPath[] = "/usr/sbin/nginx";
inline constexpr char kOpensslPath[] = "/usr/bin/openssl";

struct NginxOptions {
  // Serve HTTPS on the port, with a self-signed certificate for IP 127.0.0.1 (valid for two
  // days), generated with the openssl CLI into the temp dir; see `ca_file()`.
  bool tls = false;
  // nginx directives appended inside the `server { }` block (more locations, say). A broken
  // one makes Start fail with nginx's error message.
  std::string extra_server_config;
  // The nginx binary; another path is for testing the fixture's own "not found" error.
  std::string nginx_path = kNginxPath;
};

class NginxServer {
 public:
  // Starts nginx as described above. FailedPrecondition when nginx (or, with tls, openssl)
  // is not installed: "nginx not found at /usr/sbin/nginx (scripts/install-deps.sh installs
  // nginx-light)"; Unavailable when nginx exits or does not
  // accept connections within 10 s (after up to 3 tries with fresh ports when the port was
  // taken in between); Internal when the temp dir cannot be set up. Every nginx failure
  // quotes the tail of its error log.
  static absl::StatusOr<std::unique_ptr<NginxServer>> Start(NginxOptions options = {});

  NginxServer(const NginxServer&) = delete;
  NginxServer& operator=(const NginxServer&) = delete;
  // Stops nginx (SIGTERM, then SIGKILL after 5 s), reaps it, and removes the temp dir.
  ~NginxServer();

  // "http://127.0.0.1:<port><path>" ("https://" with tls); `path` should start with '/'
  // (one is inserted otherwise).
  std::string Url(std::string_view path) const;
  uint16_t port() const { return port_; }
  // The document root: `/x/y` is served from root()/x/y.
  const std::filesystem::path& root() const { return root_; }
  // The PEM file of the self-signed certificate (a client's CA bundle); "" without tls.
  std::string ca_file() const;

  // Writes root()/relative_path atomically (a staging file outside the root, then rename),
  // creating parent directories. `mtime` sets the file's modification time before the rename;
  // by default it is the time of the write. nginx's ETag is mtime (seconds) and size, so two
  // writes of the same size within one second give the same ETag: pass distinct `mtime`s
  // when a test needs the ETag to change. InvalidArgument for an empty or absolute path or
  // one with a ".." component; Internal for I/O errors.
  absl::Status WriteFile(std::string_view relative_path, std::string_view contents,
                         std::optional<absl::Time> mtime = std::nullopt);
  // Removes root()/relative_path (for /flaky/). NotFound when it does not exist.
  absl::Status RemoveFile(std::string_view relative_path);

  // The last `max_bytes` of nginx's error log, for failure messages.
  std::string ErrorLogTail(size_t max_bytes = 2048) const;
  pid_t pid() const { return pid_; }

 private:
  NginxServer() = default;
  absl::Status Launch(const NginxOptions& options);
  void Stop();

  std::filesystem::path dir_;   // the temp dir: config, logs, temp paths, staging, root
  std::filesystem::path root_;  // dir_/root
  bool tls_ = false;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace keel::testing

#endif  // KEEL_TESTS_SUPPORT_NGINX_H_
