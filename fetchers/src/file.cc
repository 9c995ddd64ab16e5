#include "keel/fetchers/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "content_hash.h"

namespace keel::fetchers {
namespace {

struct FileStamp {
  int64_t mtime_ns = 0;
  uint64_t size = 0;
};

absl::Status ErrnoStatus(int err, const std::string& what) {
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

FileStamp StampOf(const struct stat& st) {
  return FileStamp{int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec,
                   static_cast<uint64_t>(st.st_size)};
}

// The "<mtime ns>:<size>:" prefix of a version, which a fetch compares before reading.
std::string StampPrefix(const FileStamp& stamp) {
  return absl::StrCat(stamp.mtime_ns, ":", stamp.size, ":");
}

// Reads the file at `path` whole, on an offload thread. `known_version` is the version the
// term holds.
FetchResult ReadFile(const std::string& path, const std::string& known_version,
                     uint64_t max_bytes) {
  FetchResult result;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    result.status = ErrnoStatus(errno, absl::StrCat("cannot open ", path));
    return result;
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat before;
  if (::fstat(fd, &before) != 0) {
    result.status = ErrnoStatus(errno, absl::StrCat("cannot stat ", path));
    return result;
  }
  if (S_ISDIR(before.st_mode)) {
    result.status = absl::InvalidArgumentError(absl::StrCat(path, " is a directory, not a file"));
    return result;
  }
  FileStamp stamp = StampOf(before);
  result.modified = absl::FromUnixNanos(stamp.mtime_ns);
  if (!known_version.empty() && known_version.starts_with(StampPrefix(stamp))) {
    result.not_modified = true;
    result.validators.version = known_version;
    return result;
  }
  if (stamp.size > max_bytes) {
    result.status = absl::ResourceExhaustedError(
        absl::StrCat(path, " holds ", stamp.size, " bytes, over the cap of ", max_bytes, " bytes"));
    return result;
  }
  std::string body;
  body.resize(stamp.size);
  size_t got = 0;
  while (got < body.size()) {
    ssize_t n = ::read(fd, body.data() + got, body.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      result.status = ErrnoStatus(errno, absl::StrCat("cannot read ", path));
      return result;
    }
    if (n == 0) break;  // shorter than its size said: caught by the check below
    got += static_cast<size_t>(n);
  }
  // One more byte would mean the file grew while being read.
  char extra;
  ssize_t more = got == body.size() ? ::read(fd, &extra, 1) : 0;
  struct stat after;
  if (::fstat(fd, &after) != 0) {
    result.status = ErrnoStatus(errno, absl::StrCat("cannot stat ", path));
    return result;
  }
  FileStamp after_stamp = StampOf(after);
  if (got != body.size() || more > 0 || after_stamp.mtime_ns != stamp.mtime_ns ||
      after_stamp.size != stamp.size) {
    result.status = absl::UnavailableError(
        absl::StrCat(path,
                     " changed while it was read (replace it atomically: write a temporary file, "
                     "then rename it); the next fetch reads it again"));
    return result;
  }
  result.validators.version =
      absl::StrCat(StampPrefix(stamp), internal::HashToHex(internal::ContentHash(body)));
  result.bytes_received = body.size();
  result.body = std::move(body);
  return result;
}

class FileFetcher final : public Fetcher {
 public:
  explicit FileFetcher(std::string path) : path_(std::move(path)) {}

  std::string Describe() const override { return absl::StrCat("file ", path_); }

  absl::Status Validate() const override {
    if (path_.empty()) return absl::InvalidArgumentError("the file path is empty");
    return absl::OkStatus();
  }

  void Fetch(Runtime& runtime, const FetchRequest& request, FetchCallback done) override {
    // open/read block on the disk: the offload pool does them, the result comes back to the
    // control thread.
    auto shared_done = std::make_shared<FetchCallback>(std::move(done));
    absl::Status started = runtime.OffloadThen<FetchResult>(
        [path = path_, known = request.known.version, max = request.max_bytes] {
          return ReadFile(path, known, max);
        },
        [shared_done](absl::StatusOr<FetchResult> result) {
          if (result.ok()) {
            (*shared_done)(*std::move(result));
          } else {
            FetchResult failed;
            failed.status = result.status();
            (*shared_done)(std::move(failed));
          }
        });
    if (!started.ok()) {
      FetchResult failed;
      failed.status = started;
      (*shared_done)(std::move(failed));
    }
  }

 private:
  std::string path_;
};

}  // namespace

std::unique_ptr<Fetcher> File(std::string path) {
  return std::make_unique<FileFetcher>(std::move(path));
}

}  // namespace keel::fetchers
