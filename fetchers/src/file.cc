#include "keel/fetchers/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "content_hash.h"
#include "posix_io.h"

namespace keel::fetchers {
namespace {

struct FileStamp {
  int64_t mtime_ns = 0;
  uint64_t size = 0;
  // A rename (the atomic way to replace a file) changes the inode; an in-place write changes
  // the ctime. Both catch a same-size rewrite within one mtime tick.
  uint64_t dev = 0;
  uint64_t ino = 0;
  int64_t ctime_ns = 0;
};

FileStamp StampOf(const struct stat& st) {
  return FileStamp{int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec,
                   static_cast<uint64_t>(st.st_size), static_cast<uint64_t>(st.st_dev),
                   static_cast<uint64_t>(st.st_ino),
                   int64_t{st.st_ctim.tv_sec} * 1000000000 + st.st_ctim.tv_nsec};
}

bool SameStamp(const FileStamp& a, const FileStamp& b) {
  return a.mtime_ns == b.mtime_ns && a.size == b.size && a.dev == b.dev && a.ino == b.ino &&
         a.ctime_ns == b.ctime_ns;
}

// The full stamp, kept in the validators' last_modified field (a file has no HTTP date), which
// the term hands back with the next request; "" when the stamp is too recent to trust: a file
// changed within `window` of now may change again within the same timestamp tick (coarse
// kernel clocks, whole seconds on some filesystems) without any field of its stamp changing.
std::string StampValidator(const FileStamp& stamp, absl::Time now, absl::Duration window) {
  absl::Time changed = absl::FromUnixNanos(std::max(stamp.mtime_ns, stamp.ctime_ns));
  if (now - changed < window) return "";
  return absl::StrCat("stamp:", stamp.dev, ":", stamp.ino, ":", stamp.mtime_ns, ":", stamp.ctime_ns,
                      ":", stamp.size);
}

// Reads the file at `path` whole, on an offload thread. `known` are the validators of the
// value the term holds.
FetchResult ReadFile(const FileOptions& options, const Validators& known, uint64_t max_bytes) {
  const std::string& path = options.path;
  FetchResult result;
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    result.status = internal::ErrnoToStatus(err, absl::StrCat("cannot open ", path));
    return result;
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat before;
  if (::fstat(fd, &before) != 0) {
    int err = errno;
    result.status = internal::ErrnoToStatus(err, absl::StrCat("cannot stat ", path));
    return result;
  }
  if (S_ISDIR(before.st_mode)) {
    result.status = absl::InvalidArgumentError(absl::StrCat(path, " is a directory, not a file"));
    return result;
  }
  if (!S_ISREG(before.st_mode)) {
    result.status = absl::InvalidArgumentError(
        absl::StrCat(path, " is not a regular file (a FIFO, socket or device)"));
    return result;
  }
  FileStamp stamp = StampOf(before);
  result.modified = absl::FromUnixNanos(stamp.mtime_ns);
  const std::string validator = StampValidator(stamp, absl::Now(), options.stamp_trust_window);
  if (!validator.empty() && known.last_modified == validator) {
    result.not_modified = true;
    result.validators = known;
    return result;
  }
  if (stamp.size > max_bytes) {
    result.status = absl::ResourceExhaustedError(
        absl::StrCat(path, " holds ", stamp.size, " bytes, over the cap of ", max_bytes, " bytes"));
    return result;
  }
  std::string body;
  body.resize(stamp.size);
  ssize_t read = internal::ReadUpTo(fd, body.data(), body.size());
  if (read < 0) {
    int err = errno;
    result.status = internal::ErrnoToStatus(err, absl::StrCat("cannot read ", path));
    return result;
  }
  // Shorter than its size said: caught by the check below.
  size_t got = static_cast<size_t>(read);
  // One more byte would mean the file grew while being read.
  char extra;
  ssize_t more = got == body.size() ? ::read(fd, &extra, 1) : 0;
  struct stat after;
  if (::fstat(fd, &after) != 0) {
    int err = errno;
    result.status = internal::ErrnoToStatus(err, absl::StrCat("cannot stat ", path));
    return result;
  }
  if (got != body.size() || more > 0 || !SameStamp(StampOf(after), stamp)) {
    result.status = absl::UnavailableError(
        absl::StrCat(path,
                     " changed while it was read (replace it atomically: write a temporary file, "
                     "then rename it); the next fetch reads it again"));
    return result;
  }
  result.validators.version = absl::StrCat(stamp.mtime_ns, ":", stamp.size, ":",
                                           internal::HashToHex(internal::ContentHash(body)));
  result.validators.last_modified = validator;
  result.bytes_received = body.size();
  result.body = std::move(body);
  return result;
}

class FileFetcher final : public Fetcher {
 public:
  explicit FileFetcher(FileOptions options) : options_(std::move(options)) {}

  std::string Describe() const override { return absl::StrCat("file ", options_.path); }

  absl::Status Validate() const override {
    if (options_.path.empty()) return absl::InvalidArgumentError("the file path is empty");
    if (options_.stamp_trust_window < absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat("stamp_trust_window must be >= 0, got ",
                       absl::FormatDuration(options_.stamp_trust_window)));
    }
    return absl::OkStatus();
  }

  void Fetch(Runtime& runtime, const FetchRequest& request, FetchCallback done) override {
    // open/read block on the disk: the offload pool does them, the result comes back to the
    // control thread.
    auto shared_done = std::make_shared<FetchCallback>(std::move(done));
    absl::Status started = runtime.OffloadThen<FetchResult>(
        [options = options_, known = request.known, max = request.max_bytes] {
          return ReadFile(options, known, max);
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
  FileOptions options_;
};

}  // namespace

std::unique_ptr<Fetcher> File(FileOptions options) {
  return std::make_unique<FileFetcher>(std::move(options));
}

std::unique_ptr<Fetcher> File(std::string path) {
  return File(FileOptions{.path = std::move(path)});
}

}  // namespace keel::fetchers
