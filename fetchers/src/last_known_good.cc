#include "last_known_good.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "content_hash.h"
#include "posix_io.h"

namespace keel::internal {
namespace {

constexpr std::string_view kMagic = "KEELLKG1";
// Room for everything but the body: magic, three u32 lengths, the time, the body length and
// the hash, plus generous validators.
constexpr uint64_t kMaxOverhead = uint64_t{1} << 20;

template <class U>
void PutInt(std::string& out, U value) {
  for (size_t i = 0; i < sizeof(U); ++i) {
    out.push_back(static_cast<char>((static_cast<uint64_t>(value) >> (8 * i)) & 0xff));
  }
}

void PutField(std::string& out, std::string_view field) {
  PutInt<uint32_t>(out, static_cast<uint32_t>(field.size()));
  out.append(field);
}

// Reads fields front to back; every read checks the bytes left.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : left_(bytes) {}

  template <class U>
  bool Int(U* value) {
    if (left_.size() < sizeof(U)) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(U); ++i) {
      v |= uint64_t{static_cast<unsigned char>(left_[i])} << (8 * i);
    }
    *value = static_cast<U>(v);
    left_.remove_prefix(sizeof(U));
    return true;
  }

  bool Bytes(uint64_t n, std::string_view* out) {
    if (left_.size() < n) return false;
    *out = left_.substr(0, n);
    left_.remove_prefix(n);
    return true;
  }

  bool Field(std::string* out) {
    uint32_t n;
    std::string_view bytes;
    if (!Int(&n) || !Bytes(n, &bytes)) return false;
    out->assign(bytes);
    return true;
  }

  size_t left() const { return left_.size(); }

 private:
  std::string_view left_;
};

}  // namespace

std::string EncodeLastKnownGood(const LastKnownGood& copy) {
  std::string out;
  out.reserve(copy.body.size() + 64 + copy.validators.etag.size() +
              copy.validators.last_modified.size() + copy.validators.version.size());
  out.append(kMagic);
  PutField(out, copy.validators.etag);
  PutField(out, copy.validators.last_modified);
  PutField(out, copy.validators.version);
  out.push_back(copy.modified.has_value() ? 1 : 0);
  PutInt<int64_t>(out, copy.modified.has_value() ? absl::ToUnixNanos(*copy.modified) : 0);
  PutInt<uint64_t>(out, copy.body.size());
  out.append(copy.body);
  PutInt<uint64_t>(out, fetchers::internal::ContentHash(out));
  return out;
}

absl::StatusOr<LastKnownGood> DecodeLastKnownGood(std::string_view bytes, const std::string& what,
                                                  uint64_t max_body_bytes) {
  auto corrupt = [&what](const char* why) {
    return absl::DataLossError(absl::StrCat("last-known-good copy ", what, ": ", why));
  };
  if (bytes.size() < kMagic.size() || bytes.substr(0, kMagic.size()) != kMagic) {
    return corrupt("not a keel last-known-good file (bad magic)");
  }
  if (bytes.size() < kMagic.size() + sizeof(uint64_t)) return corrupt("truncated");
  std::string_view covered = bytes.substr(0, bytes.size() - sizeof(uint64_t));
  Reader reader(bytes.substr(kMagic.size()));
  LastKnownGood copy;
  uint8_t has_modified;
  int64_t modified_ns;
  uint64_t body_size;
  std::string_view body;
  if (!reader.Field(&copy.validators.etag) || !reader.Field(&copy.validators.last_modified) ||
      !reader.Field(&copy.validators.version) || !reader.Int(&has_modified) ||
      !reader.Int(&modified_ns) || !reader.Int(&body_size)) {
    return corrupt("truncated in its header");
  }
  if (has_modified > 1) return corrupt("bad modification-time flag");
  if (body_size > max_body_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("last-known-good copy ", what,
                                                     ": the body is ", body_size,
                                                     " bytes, over the cap of ", max_body_bytes));
  }
  uint64_t hash;
  if (!reader.Bytes(body_size, &body) || !reader.Int(&hash)) {
    return corrupt("truncated in its body");
  }
  if (reader.left() != 0) return corrupt("trailing bytes after the checksum");
  if (hash != fetchers::internal::ContentHash(covered)) return corrupt("checksum mismatch");
  if (has_modified == 1) copy.modified = absl::FromUnixNanos(modified_ns);
  copy.body.assign(body);
  return copy;
}

absl::Status WriteLastKnownGood(const std::string& path, const LastKnownGood& copy) {
  // Mode 0600: the body may have been fetched with credentials.
  return fetchers::internal::WriteFileAtomically(path, EncodeLastKnownGood(copy), 0600);
}

absl::StatusOr<LastKnownGood> ReadLastKnownGood(const std::string& path, uint64_t max_body_bytes) {
  // O_NONBLOCK: a FIFO planted at the path must not block an offload thread.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    return fetchers::internal::ErrnoToStatus(err, absl::StrCat("cannot open ", path));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return fetchers::internal::ErrnoToStatus(err, absl::StrCat("cannot stat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::DataLossError(
        absl::StrCat("last-known-good copy ", path, " is not a regular file"));
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  // Saturating: a cap of UINT64_MAX means no cap.
  uint64_t limit =
      max_body_bytes > UINT64_MAX - kMaxOverhead ? UINT64_MAX : max_body_bytes + kMaxOverhead;
  if (size > limit) {
    ::close(fd);
    return absl::ResourceExhaustedError(
        absl::StrCat("last-known-good copy ", path, " is ", size, " bytes, over the cap"));
  }
  std::string bytes(size, '\0');
  ssize_t got = fetchers::internal::ReadUpTo(fd, bytes.data(), bytes.size());
  int err = errno;
  ::close(fd);
  if (got < 0) return fetchers::internal::ErrnoToStatus(err, absl::StrCat("cannot read ", path));
  bytes.resize(static_cast<size_t>(got));
  return DecodeLastKnownGood(bytes, path, max_body_bytes);
}

}  // namespace keel::internal
