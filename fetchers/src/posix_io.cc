#include "posix_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace keel::fetchers::internal {

absl::Status ErrnoToStatus(int err, const std::string& what) {
  std::string message = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::UnavailableError(message);
  }
}

ssize_t ReadUpTo(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(got);
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes, mode_t mode) {
  // A fresh temporary name next to the target, so that two writers (two processes, or an
  // object and its successor) never write into the same file. mkstemp creates it with mode
  // 0600; any other mode is set before a byte is written.
  std::string tmp = path + ".tmp.XXXXXX";
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    int err = errno;
    return ErrnoToStatus(err, absl::StrCat("cannot create a temporary file next to ", path));
  }
  auto fail = [&](const std::string& what) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return ErrnoToStatus(err, absl::StrCat(what, " ", tmp));
  };
  if (mode != 0600 && ::fchmod(fd, mode) != 0) return fail("cannot set the permissions of");
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("cannot write");
    done += static_cast<size_t>(n);
  }
  // The data must be on disk before the rename makes it the file: otherwise a power cut could
  // leave a renamed but empty file.
  if (::fsync(fd) != 0) return fail("cannot flush");
  int closed = ::close(fd);
  fd = -1;
  if (closed != 0) return fail("cannot close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(absl::StrCat("cannot rename to ", path, ":"));
  }
  // And the rename itself must reach the disk: flush the directory (best effort; some
  // filesystems refuse fsync on a directory).
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? std::string(".") : path.substr(0, slash + 1);
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    (void)::fsync(dir_fd);
    ::close(dir_fd);
  }
  return absl::OkStatus();
}

}  // namespace keel::fetchers::internal
