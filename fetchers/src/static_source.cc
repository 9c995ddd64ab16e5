#include "keel/fetchers/static_source.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace keel::fetchers {

class StaticFetcher final : public Fetcher {
 public:
  explicit StaticFetcher(std::shared_ptr<StaticSource> source) : source_(std::move(source)) {}

  std::string Describe() const override { return "static"; }

  absl::Status Validate() const override {
    if (source_ == nullptr) return absl::InvalidArgumentError("the static source is null");
    return absl::OkStatus();
  }

  void Fetch(Runtime& runtime, const FetchRequest& request, FetchCallback done) override {
    source_->Start(this, runtime, request, std::move(done));
  }

  void Cancel(Runtime& runtime) override {
    (void)runtime;
    source_->Cancel(this);
  }

 private:
  std::shared_ptr<StaticSource> source_;
};

StaticSource::StaticSource(std::string bytes) : bytes_(std::move(bytes)) {}

void StaticSource::Set(std::string bytes) {
  internal::MutexLock lock(&mu_);
  bytes_ = std::move(bytes);
  ++generation_;
  failure_ = absl::OkStatus();
}

void StaticSource::SetModified(std::optional<absl::Time> modified) {
  internal::MutexLock lock(&mu_);
  modified_ = modified;
}

void StaticSource::Fail(absl::Status error) {
  internal::MutexLock lock(&mu_);
  failure_ = error.ok() ? absl::InternalError("StaticSource::Fail called with OK") : error;
}

void StaticSource::Recover() {
  internal::MutexLock lock(&mu_);
  failure_ = absl::OkStatus();
}

void StaticSource::SuggestNextRefresh(std::optional<RefreshDecision> decision) {
  internal::MutexLock lock(&mu_);
  next_refresh_ = std::move(decision);
}

void StaticSource::Hold() {
  internal::MutexLock lock(&mu_);
  holding_ = true;
}

void StaticSource::StopHolding() {
  {
    internal::MutexLock lock(&mu_);
    holding_ = false;
  }
  Release();
}

void StaticSource::Release() {
  std::vector<Held> held;
  {
    internal::MutexLock lock(&mu_);
    held.swap(held_);
  }
  for (Held& h : held) {
    FetchResult result = Answer(h.request);
    // The callback runs on the fetch's control thread, as the Fetcher contract requires. A
    // runtime that no longer accepts tasks destroys the callback unrun (and with it whatever
    // it keeps alive), which is what a term that stopped expects.
    (void)h.runtime->Post([done = std::move(h.done), result = std::move(result)]() mutable {
      done(std::move(result));
    });
  }
}

size_t StaticSource::HeldFetches() const {
  internal::MutexLock lock(&mu_);
  return held_.size();
}

bool StaticSource::AwaitHeldFetch(uint64_t n, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_.native());
  return fetch_started_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] {
    // The lock is held (through native()); the analysis cannot see that.
    return [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return fetches_ >= n && !held_.empty(); }();
  });
}

uint64_t StaticSource::fetches() const {
  internal::MutexLock lock(&mu_);
  return fetches_;
}

std::string StaticSource::version() const {
  internal::MutexLock lock(&mu_);
  return absl::StrCat("static:", generation_);
}

FetchResult StaticSource::Answer(const FetchRequest& request) {
  internal::MutexLock lock(&mu_);
  FetchResult result;
  result.next_refresh = next_refresh_;
  if (!failure_.ok()) {
    result.status = failure_;
    return result;
  }
  result.validators.version = absl::StrCat("static:", generation_);
  result.modified = modified_;
  if (request.known.version == result.validators.version) {
    result.not_modified = true;
    return result;
  }
  if (bytes_.size() > request.max_bytes) {
    result.status = absl::ResourceExhaustedError(absl::StrCat(
        "static source holds ", bytes_.size(), " bytes, over the cap of ", request.max_bytes));
    return result;
  }
  result.body = bytes_;
  result.bytes_received = bytes_.size();
  return result;
}

void StaticSource::Start(const void* fetcher, Runtime& runtime, const FetchRequest& request,
                         FetchCallback done) {
  {
    internal::MutexLock lock(&mu_);
    ++fetches_;
    if (holding_) {
      held_.push_back(Held{fetcher, &runtime, request, std::move(done)});
      fetch_started_.notify_all();
      return;
    }
    fetch_started_.notify_all();
  }
  done(Answer(request));
}

void StaticSource::Cancel(const void* fetcher) {
  std::vector<Held> cancelled;
  {
    internal::MutexLock lock(&mu_);
    for (auto it = held_.begin(); it != held_.end();) {
      if (it->fetcher == fetcher) {
        cancelled.push_back(std::move(*it));
        it = held_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (Held& h : cancelled) {
    FetchResult result;
    result.status = absl::CancelledError("the static fetch was cancelled");
    h.done(std::move(result));
  }
}

std::unique_ptr<Fetcher> Static(std::shared_ptr<StaticSource> source) {
  return std::make_unique<StaticFetcher>(std::move(source));
}

std::unique_ptr<Fetcher> Static(std::string bytes) {
  return Static(std::make_shared<StaticSource>(std::move(bytes)));
}

}  // namespace keel::fetchers
