#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "content_hash.h"
#include "keel/snapshot_store.h"
#include "posix_io.h"
#include "snapshot_codec.h"

namespace keel {
namespace internal {
namespace {

constexpr std::string_view kMagic = "KEELSNP1";

template <class U>
void PutInt(std::string& out, U value) {
  for (size_t i = 0; i < sizeof(U); ++i) {
    out.push_back(static_cast<char>((static_cast<uint64_t>(value) >> (8 * i)) & 0xff));
  }
}

template <class U>
U GetInt(std::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(U); ++i) {
    v |= uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  }
  return static_cast<U>(v);
}

}  // namespace

std::string EncodeSnapshot(const Snapshot& snapshot) {
  std::string out;
  out.reserve(snapshot.bytes.size() + kSnapshotOverhead);
  out.append(kMagic);
  PutInt<uint32_t>(out, snapshot.schema_version);
  PutInt<uint64_t>(out, snapshot.sequence);
  PutInt<uint64_t>(out, snapshot.bytes.size());
  out.append(snapshot.bytes);
  PutInt<uint64_t>(out, fetchers::internal::ContentHash(out));
  return out;
}

absl::StatusOr<Snapshot> DecodeSnapshot(std::string_view file, const std::string& what,
                                        uint64_t max_bytes) {
  auto corrupt = [&what](const std::string& why) {
    return absl::DataLossError(absl::StrCat("snapshot ", what, ": ", why));
  };
  constexpr size_t kHeader = 8 + 4 + 8 + 8;
  if (file.size() < kMagic.size() || file.substr(0, kMagic.size()) != kMagic) {
    return corrupt("not a keel snapshot file (bad magic)");
  }
  if (file.size() < kHeader) {
    return corrupt(absl::StrCat("truncated in its header: ", file.size(),
                                " bytes, expected at least ", kSnapshotOverhead));
  }
  Snapshot snapshot;
  snapshot.schema_version = GetInt<uint32_t>(file.substr(8));
  snapshot.sequence = GetInt<uint64_t>(file.substr(12));
  const uint64_t length = GetInt<uint64_t>(file.substr(20));
  if (length > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("snapshot ", what, ": its bytes are ", length,
                                                     " long, over the cap of ", max_bytes));
  }
  const uint64_t body_and_hash = file.size() - kHeader;
  if (body_and_hash < length || body_and_hash - length < sizeof(uint64_t)) {
    return corrupt(absl::StrCat("truncated: ", file.size(), " bytes, expected ",
                                length + kSnapshotOverhead, " for ", length, " bytes of state"));
  }
  if (body_and_hash - length > sizeof(uint64_t)) {
    return corrupt(absl::StrCat(body_and_hash - length - sizeof(uint64_t),
                                " trailing bytes after the checksum"));
  }
  const std::string_view covered = file.substr(0, kHeader + length);
  const uint64_t hash = GetInt<uint64_t>(file.substr(kHeader + length));
  if (hash != fetchers::internal::ContentHash(covered)) {
    return corrupt("checksum mismatch (the file is damaged)");
  }
  snapshot.bytes.assign(file.substr(kHeader, length));
  return snapshot;
}

}  // namespace internal

namespace {

constexpr std::string_view kSuffix = ".snap";
constexpr std::string_view kTempInfix = ".snap.tmp.";
constexpr size_t kSequenceDigits = 20;
constexpr size_t kMaxNameLength = 128;

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// What a directory entry is to the store named `name`.
enum class EntryKind { kOther, kSnapshot, kTemporary };

EntryKind Classify(std::string_view entry, const std::string& name, uint64_t* sequence) {
  if (entry.size() <= name.size() || entry.substr(0, name.size()) != name ||
      entry[name.size()] != '.') {
    return EntryKind::kOther;
  }
  std::string_view rest = entry.substr(name.size() + 1);
  if (rest.size() < kSequenceDigits) return EntryKind::kOther;
  uint64_t value = 0;
  for (size_t i = 0; i < kSequenceDigits; ++i) {
    const char c = rest[i];
    if (c < '0' || c > '9') return EntryKind::kOther;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (UINT64_MAX - digit) / 10) return EntryKind::kOther;  // over 2^64 - 1
    value = value * 10 + digit;
  }
  rest.remove_prefix(kSequenceDigits);
  if (rest == kSuffix) {
    *sequence = value;
    return EntryKind::kSnapshot;
  }
  if (rest.size() > kTempInfix.size() && rest.substr(0, kTempInfix.size()) == kTempInfix) {
    return EntryKind::kTemporary;
  }
  return EntryKind::kOther;
}

struct Listing {
  std::vector<uint64_t> sequences;  // newest first
  std::vector<std::string> temporaries;
};

absl::StatusOr<Listing> List(const std::string& directory, const std::string& name) {
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) {
    int err = errno;
    return fetchers::internal::ErrnoToStatus(
        err, absl::StrCat("cannot list the snapshot directory ", directory));
  }
  Listing listing;
  errno = 0;
  while (const dirent* entry = ::readdir(dir)) {
    uint64_t sequence = 0;
    switch (Classify(entry->d_name, name, &sequence)) {
      case EntryKind::kSnapshot:
        listing.sequences.push_back(sequence);
        break;
      case EntryKind::kTemporary:
        listing.temporaries.push_back(entry->d_name);
        break;
      case EntryKind::kOther:
        break;
    }
    errno = 0;
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) {
    return fetchers::internal::ErrnoToStatus(
        err, absl::StrCat("cannot list the snapshot directory ", directory));
  }
  std::sort(listing.sequences.begin(), listing.sequences.end(), std::greater<uint64_t>());
  return listing;
}

// The outcome of reading one snapshot file.
struct ReadOutcome {
  enum Kind { kIntact, kVanished, kSkipped, kFailed } kind;
  Snapshot snapshot;    // kIntact
  absl::Status status;  // kSkipped: why; kFailed: the I/O error
};

ReadOutcome ReadSnapshotFile(const std::string& path, uint64_t expected_sequence,
                             uint64_t max_bytes) {
  // O_NONBLOCK: a FIFO planted under a snapshot's name must not block the reader.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return {ReadOutcome::kVanished, {}, absl::OkStatus()};
    return {ReadOutcome::kFailed,
            {},
            fetchers::internal::ErrnoToStatus(err, absl::StrCat("cannot open snapshot ", path))};
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return {ReadOutcome::kFailed,
            {},
            fetchers::internal::ErrnoToStatus(err, absl::StrCat("cannot stat snapshot ", path))};
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return {ReadOutcome::kSkipped,
            {},
            absl::DataLossError(absl::StrCat("snapshot ", path, ": not a regular file"))};
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  // Saturating: a cap near 2^64 means no cap.
  const uint64_t limit = max_bytes > UINT64_MAX - internal::kSnapshotOverhead
                             ? UINT64_MAX
                             : max_bytes + internal::kSnapshotOverhead;
  if (size > limit) {
    ::close(fd);
    return {ReadOutcome::kSkipped,
            {},
            absl::ResourceExhaustedError(absl::StrCat("snapshot ", path, ": the file is ", size,
                                                      " bytes, over the cap of ", limit))};
  }
  std::string file(static_cast<size_t>(size), '\0');
  // One byte more than fstat said, to notice a file that grew (it would be refused as having
  // trailing bytes).
  file.push_back('\0');
  ssize_t got = fetchers::internal::ReadUpTo(fd, file.data(), file.size());
  int err = errno;
  ::close(fd);
  if (got < 0) {
    return {ReadOutcome::kFailed,
            {},
            fetchers::internal::ErrnoToStatus(err, absl::StrCat("cannot read snapshot ", path))};
  }
  file.resize(static_cast<size_t>(got));
  absl::StatusOr<Snapshot> decoded = internal::DecodeSnapshot(file, path, max_bytes);
  if (!decoded.ok()) return {ReadOutcome::kSkipped, {}, decoded.status()};
  if (decoded->sequence != expected_sequence) {
    return {
        ReadOutcome::kSkipped,
        {},
        absl::DataLossError(absl::StrCat("snapshot ", path, ": holds sequence ", decoded->sequence,
                                         " but its name says ", expected_sequence))};
  }
  return {ReadOutcome::kIntact, *std::move(decoded), absl::OkStatus()};
}

absl::Status ValidateOptions(const FileSnapshotOptions& options) {
  if (options.directory.empty()) {
    return absl::InvalidArgumentError("FileSnapshotOptions.directory must not be empty");
  }
  if (options.directory.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("FileSnapshotOptions.directory must not contain NUL");
  }
  const std::string& name = options.name;
  if (name.empty() || name.size() > kMaxNameLength || name[0] == '.' ||
      !std::all_of(name.begin(), name.end(), IsNameChar)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "FileSnapshotOptions.name must be 1 to %d characters of [A-Za-z0-9._-] not starting "
        "with '.', got \"%s\"",
        kMaxNameLength, absl::CHexEscape(name)));
  }
  if (options.keep < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("FileSnapshotOptions.keep must be >= 1, got ", options.keep));
  }
  if (options.max_bytes < 1) {
    return absl::InvalidArgumentError("FileSnapshotOptions.max_bytes must be >= 1, got 0");
  }
  return absl::OkStatus();
}

}  // namespace

FileSnapshotStore::FileSnapshotStore(FileSnapshotOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<FileSnapshotStore>> FileSnapshotStore::Open(
    FileSnapshotOptions options) {
  if (absl::Status valid = ValidateOptions(options); !valid.ok()) return valid;
  // The directory: created if missing (the last component only, private to the user), and
  // it must be a directory.
  if (::mkdir(options.directory.c_str(), 0700) != 0) {
    int err = errno;
    if (err != EEXIST) {
      return fetchers::internal::ErrnoToStatus(
          err, absl::StrCat("cannot create the snapshot directory ", options.directory));
    }
    struct stat st;
    if (::stat(options.directory.c_str(), &st) != 0) {
      err = errno;
      return fetchers::internal::ErrnoToStatus(
          err, absl::StrCat("cannot stat the snapshot directory ", options.directory));
    }
    if (!S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("FileSnapshotOptions.directory ", options.directory, " is not a directory"));
    }
  }
  absl::StatusOr<Listing> listing = List(options.directory, options.name);
  if (!listing.ok()) return listing.status();
  std::unique_ptr<FileSnapshotStore> store(new FileSnapshotStore(std::move(options)));
  if (!listing->sequences.empty()) store->NoteSequence(listing->sequences.front());
  return store;
}

std::string FileSnapshotStore::PathFor(uint64_t sequence) const {
  return absl::StrFormat("%s/%s.%020u%s", options_.directory, options_.name, sequence,
                         std::string(kSuffix));
}

std::optional<uint64_t> FileSnapshotStore::last_sequence() const {
  internal::MutexLock lock(&sequence_mu_);
  return last_sequence_;
}

void FileSnapshotStore::NoteSequence(uint64_t sequence) {
  internal::MutexLock lock(&sequence_mu_);
  if (!last_sequence_.has_value() || *last_sequence_ < sequence) last_sequence_ = sequence;
}

absl::Status FileSnapshotStore::Save(const Snapshot& snapshot) {
  internal::MutexLock save_lock(&save_mu_);
  if (std::optional<uint64_t> last = last_sequence();
      last.has_value() && snapshot.sequence <= *last) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot sequence must be greater than the last one (", *last, ") for ",
                     options_.name, " in ", options_.directory, ", got ", snapshot.sequence));
  }
  if (snapshot.bytes.size() > options_.max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("snapshot ", snapshot.sequence, " of ", options_.name, " is ",
                     snapshot.bytes.size(), " bytes, over the cap of ", options_.max_bytes));
  }
  if (absl::Status written = fetchers::internal::WriteFileAtomically(
          PathFor(snapshot.sequence), internal::EncodeSnapshot(snapshot), 0600);
      !written.ok()) {
    return written;
  }
  NoteSequence(snapshot.sequence);
  // Prune: the newest `keep` files stay (this one among them: none is newer), the others go
  // oldest first, so that a concurrent Load never finds an older file after a newer one
  // vanished. Best effort.
  absl::StatusOr<Listing> listing = List(options_.directory, options_.name);
  if (!listing.ok()) return absl::OkStatus();
  const size_t keep = static_cast<size_t>(options_.keep);
  for (size_t i = listing->sequences.size(); i-- > keep;) {
    (void)::unlink(PathFor(listing->sequences[i]).c_str());
  }
  // This Save's temporary file has been renamed, and no other Save runs (save_mu_, and one
  // writer per name): a temporary file left now is a killed writer's, and can never become a
  // snapshot. It goes here rather than in Open, which readers call too.
  for (const std::string& temporary : listing->temporaries) {
    (void)::unlink(absl::StrCat(options_.directory, "/", temporary).c_str());
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedSnapshot> FileSnapshotStore::Load() {
  // A concurrent Save may prune files between the listing and the reads; then the listing is
  // taken again. Bounded: each retry means that Saves completed meanwhile.
  constexpr int kAttempts = 16;
  LoadedSnapshot loaded;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    absl::StatusOr<Listing> listing = List(options_.directory, options_.name);
    if (!listing.ok()) return listing.status();
    if (!listing->sequences.empty()) NoteSequence(listing->sequences.front());
    loaded.skipped.clear();
    bool vanished = false;
    for (uint64_t sequence : listing->sequences) {
      if (vanished) break;
      ReadOutcome read = ReadSnapshotFile(PathFor(sequence), sequence, options_.max_bytes);
      switch (read.kind) {
        case ReadOutcome::kIntact:
          loaded.snapshot = std::move(read.snapshot);
          return loaded;
        case ReadOutcome::kVanished:
          // Pruned by a Save since the listing: a newer snapshot exists, list again.
          vanished = true;
          break;
        case ReadOutcome::kSkipped:
          loaded.skipped.push_back(std::move(read.status));
          break;
        case ReadOutcome::kFailed:
          return read.status;
      }
    }
    if (!vanished) break;
  }
  std::string message =
      absl::StrCat("no intact snapshot named ", options_.name, " in ", options_.directory);
  if (!loaded.skipped.empty()) {
    absl::StrAppend(&message, "; skipped ", loaded.skipped.size(), ":");
    for (const absl::Status& skipped : loaded.skipped) {
      absl::StrAppend(&message, " [", skipped.message(), "]");
    }
  }
  return absl::NotFoundError(message);
}

}  // namespace keel
