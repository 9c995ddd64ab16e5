#include "keel/memory_lease_store.h"

#include <string_view>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace keel {
namespace {

using internal::MutexLock;

std::string LeaderKey(const std::string& election) { return absl::StrCat(election, "/leader"); }
std::string MembersPrefix(const std::string& election) {
  return absl::StrCat(election, "/members/");
}

// Posts `done(value)` to the runtime's control thread. When the runtime no longer accepts
// work, `done` is destroyed unrun with it (the contract in keel/lease_store.h).
template <class Done, class Value>
void Answer(Runtime& runtime, Done done, Value value) {
  (void)runtime.Post(
      [done = std::move(done), value = std::move(value)]() mutable { done(std::move(value)); });
}

absl::Status LeaseNotFound(LeaseId lease) {
  return absl::NotFoundError(absl::StrCat("lease ", lease, " not found (lapsed or revoked)"));
}

}  // namespace

MemoryLeaseStore::MemoryLeaseStore(Clock* clock)
    : clock_(clock != nullptr ? clock : Clock::Steady()) {}

void MemoryLeaseStore::EraseRecordsLocked(LeaseId lease) {
  for (auto r = records_.begin(); r != records_.end();) {
    if (r->second.lease == lease) {
      records_.erase(r++);
    } else {
      ++r;
    }
  }
  ++revision_;  // etcd counts the deletion of a lease's keys as one write
}

void MemoryLeaseStore::ExpireLocked() {
  const Instant now = clock_->Now();
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (now >= it->second.deadline) {
      const LeaseId gone = it->first;
      leases_.erase(it++);
      EraseRecordsLocked(gone);
    } else {
      ++it;
    }
  }
}

absl::Status MemoryLeaseStore::CheckAvailableLocked() {
  if (available_) return absl::OkStatus();
  return absl::UnavailableError("memory lease store: unavailable (SetAvailable(false))");
}

ElectionView MemoryLeaseStore::ViewLocked(const std::string& election) {
  ElectionView view;
  if (auto it = records_.find(LeaderKey(election)); it != records_.end()) {
    view.leader = LeaderRecord{it->second.value, it->second.create_revision, it->second.lease};
  }
  const std::string prefix = MembersPrefix(election);
  for (auto it = records_.lower_bound(prefix);
       it != records_.end() && std::string_view(it->first).substr(0, prefix.size()) == prefix;
       ++it) {
    uint64_t heartbeat = 0;
    (void)absl::SimpleAtoi(it->second.value, &heartbeat);
    view.members.push_back(MemberRecord{it->first.substr(prefix.size()), heartbeat});
  }
  return view;
}

void MemoryLeaseStore::Grant(Runtime& runtime, absl::Duration ttl, Done<LeaseId> done) {
  absl::StatusOr<LeaseId> result;
  {
    MutexLock lock(&mu_);
    ExpireLocked();
    if (auto s = CheckAvailableLocked(); !s.ok()) {
      result = s;
    } else if (ttl <= absl::ZeroDuration()) {
      result = absl::InvalidArgumentError(
          absl::StrCat("lease ttl must be > 0, got ", absl::FormatDuration(ttl)));
    } else {
      const LeaseId id = next_lease_++;
      leases_[id] = Lease{ttl, AddDuration(clock_->Now(), ttl)};
      result = id;
    }
  }
  Answer(runtime, std::move(done), std::move(result));
}

void MemoryLeaseStore::KeepAlive(Runtime& runtime, LeaseId lease, DoneStatus done) {
  absl::Status result;
  {
    MutexLock lock(&mu_);
    ExpireLocked();
    result = CheckAvailableLocked();
    if (result.ok()) {
      auto it = leases_.find(lease);
      if (it == leases_.end()) {
        result = LeaseNotFound(lease);
      } else {
        it->second.deadline = AddDuration(clock_->Now(), it->second.ttl);
      }
    }
  }
  Answer(runtime, std::move(done), std::move(result));
}

void MemoryLeaseStore::Revoke(Runtime& runtime, LeaseId lease, DoneStatus done) {
  absl::Status result;
  {
    MutexLock lock(&mu_);
    ExpireLocked();
    result = CheckAvailableLocked();
    if (result.ok() && leases_.erase(lease) > 0) EraseRecordsLocked(lease);
  }
  Answer(runtime, std::move(done), std::move(result));
}

void MemoryLeaseStore::Heartbeat(Runtime& runtime, const std::string& election,
                                 const std::string& node, LeaseId lease, uint64_t heartbeat,
                                 Done<ElectionView> done) {
  absl::StatusOr<ElectionView> result;
  {
    MutexLock lock(&mu_);
    ExpireLocked();
    if (auto s = CheckAvailableLocked(); !s.ok()) {
      result = s;
    } else if (!leases_.contains(lease)) {
      result = LeaseNotFound(lease);
    } else {
      Record& record = records_[absl::StrCat(MembersPrefix(election), node)];
      ++revision_;
      if (record.create_revision == 0) record.create_revision = revision_;
      record.value = absl::StrCat(heartbeat);
      record.lease = lease;
      result = ViewLocked(election);
    }
  }
  Answer(runtime, std::move(done), std::move(result));
}

void MemoryLeaseStore::Campaign(Runtime& runtime, const std::string& election,
                                const std::string& node, LeaseId lease, Done<LeaderRecord> done) {
  absl::StatusOr<LeaderRecord> result;
  {
    MutexLock lock(&mu_);
    ExpireLocked();
    if (auto s = CheckAvailableLocked(); !s.ok()) {
      result = s;
    } else if (!leases_.contains(lease)) {
      result = LeaseNotFound(lease);
    } else {
      const std::string key = LeaderKey(election);
      auto it = records_.find(key);
      if (it == records_.end()) {
        ++revision_;
        it = records_.emplace(key, Record{node, revision_, lease}).first;
      }
      result = LeaderRecord{it->second.value, it->second.create_revision, it->second.lease};
    }
  }
  Answer(runtime, std::move(done), std::move(result));
}

void MemoryLeaseStore::Resign(Runtime& runtime, const std::string& election, int64_t term,
                              DoneStatus done) {
  absl::Status result;
  {
    MutexLock lock(&mu_);
    ExpireLocked();
    result = CheckAvailableLocked();
    if (result.ok()) {
      auto it = records_.find(LeaderKey(election));
      if (it != records_.end() && it->second.create_revision == term) {
        records_.erase(it);
        ++revision_;
      }
    }
  }
  Answer(runtime, std::move(done), std::move(result));
}

void MemoryLeaseStore::SetAvailable(bool available) {
  MutexLock lock(&mu_);
  available_ = available;
}

ElectionView MemoryLeaseStore::View(const std::string& election) {
  MutexLock lock(&mu_);
  ExpireLocked();
  return ViewLocked(election);
}

size_t MemoryLeaseStore::LeaseCount() {
  MutexLock lock(&mu_);
  ExpireLocked();
  return leases_.size();
}

int64_t MemoryLeaseStore::Revision() {
  MutexLock lock(&mu_);
  return revision_;
}

}  // namespace keel
