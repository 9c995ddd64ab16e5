// The type-independent part of RemoteTerm<T>: the update pipeline, the schedule, the status,
// listeners and the last-known-good copy.
//
// Ownership of state (DESIGN.md, "one owner per piece of state"):
//   - the pipeline and schedule members (in_flight_, waiters, timer_, published_, rng_, ...)
//     are touched only on the runtime's control thread;
//   - status_ is written on the control thread and read anywhere, under status_mu_;
//   - listeners_ is changed anywhere under listeners_mu_;
//   - stopped_ is set under publish_mu_, which the control thread holds while it publishes and
//     calls listeners, so that after Stop() returns nothing is published or reported.
// An update is one pass through: StartFetch → OnFetched → (offload: Process) → OnProcessed →
// Finish. attempt_ numbers the passes; a callback from an older pass (possible only after
// Stop) is ignored.
#include "keel/remote_term.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "content_hash.h"
#include "keel/fetchers/gzip.h"
#include "keel/internal/sync.h"
#include "keel/telemetry.h"
#include "last_known_good.h"
#include "log.h"

namespace keel {

std::string_view TermStateName(TermState state) noexcept {
  switch (state) {
    case TermState::kInitializing:
      return "initializing";
    case TermState::kFresh:
      return "fresh";
    case TermState::kStale:
      return "stale";
    case TermState::kFailed:
      return "failed";
  }
  return "unknown";
}

namespace internal {
namespace {

// One caller waiting for an outcome: RefreshNow, a blocking Start, or Stop. Resolved once;
// later resolutions are ignored. Thread-safe.
class Waiter {
 public:
  void Resolve(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (resolved_) return;
    status_ = std::move(status);
    resolved_ = true;
    cv_.notify_all();
  }
  // The outcome, or nullopt when `timeout` (real time) passed first.
  std::optional<absl::Status> Wait(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    auto resolved = [this] { return resolved_; };
    if (timeout == absl::InfiniteDuration()) {
      cv_.wait(lock, resolved);
    } else if (!cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), resolved)) {
      return std::nullopt;
    }
    return status_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool resolved_ = false;
  absl::Status status_;
};

// Rides in a task posted to the control thread on behalf of a waiter: if the runtime destroys
// the task unrun (Shutdown(kDropPending)), the waiter hears Cancelled instead of waiting out
// its timeout. The task calls Release() once it has handed the waiter on.
class ResolveIfDropped {
 public:
  explicit ResolveIfDropped(std::shared_ptr<Waiter> waiter) : waiter_(std::move(waiter)) {}
  ResolveIfDropped(ResolveIfDropped&& other) noexcept : waiter_(std::move(other.waiter_)) {}
  ResolveIfDropped& operator=(ResolveIfDropped&&) = delete;
  ~ResolveIfDropped() {
    if (waiter_ != nullptr) {
      waiter_->Resolve(absl::CancelledError("the runtime shut down before the request ran"));
    }
  }
  std::shared_ptr<Waiter> Release() { return std::move(waiter_); }

 private:
  std::shared_ptr<Waiter> waiter_;
};

// What the offload pool made of fetched (or saved) bytes.
struct Processed {
  absl::Status status;
  bool unchanged = false;  // the inflated bytes hash to the published value's hash
  std::shared_ptr<const void> value;
  uint64_t hash = 0;
  uint64_t decoded_bytes = 0;
  bool refused = false;  // decode or validate refused these bytes for good (status says why)
};

// Bytes that decode or validate refused, so that the same bytes fetched again (a retry, or a
// server without validators) fail at once instead of being decoded again.
struct Refusal {
  uint64_t hash;
  absl::Status error;
};

std::string DurationText(absl::Duration d) { return absl::FormatDuration(d); }

absl::Status CheckOptions(const TermCoreOptions& o) {
  auto invalid = [&o](std::string message) {
    return absl::InvalidArgumentError(
        absl::StrCat("remote term '", o.name, "': ", std::move(message)));
  };
  if (o.name.empty()) return absl::InvalidArgumentError("remote term: name must not be empty");
  if (o.fetcher == nullptr) return invalid("fetcher is required");
  if (!o.decode) return invalid("decode is required");
  // Delays are whole milliseconds (the timer wheel's tick): anything shorter would be zero.
  const absl::Duration tick = absl::Milliseconds(1);
  if (o.refresh < tick || o.refresh == absl::InfiniteDuration()) {
    return invalid(
        absl::StrCat("refresh must be >= 1ms and finite, got ", DurationText(o.refresh)));
  }
  if (o.min_refresh < tick || o.min_refresh > o.refresh) {
    return invalid(absl::StrCat("min_refresh must be in [1ms, refresh = ", DurationText(o.refresh),
                                "], got ", DurationText(o.min_refresh)));
  }
  if (o.max_refresh < o.refresh) {
    return invalid(absl::StrCat("max_refresh must be >= refresh = ", DurationText(o.refresh),
                                ", got ", DurationText(o.max_refresh)));
  }
  if (!(o.jitter >= 0.0 && o.jitter < 1.0)) {
    return invalid(absl::StrCat("jitter must be in [0, 1), got ", o.jitter));
  }
  if (o.backoff_initial < tick || o.backoff_initial == absl::InfiniteDuration()) {
    return invalid(absl::StrCat("backoff_initial must be >= 1ms and finite, got ",
                                DurationText(o.backoff_initial)));
  }
  if (o.backoff_max < o.backoff_initial || o.backoff_max == absl::InfiniteDuration()) {
    return invalid(absl::StrCat(
        "backoff_max must be finite and >= backoff_initial = ", DurationText(o.backoff_initial),
        ", got ", DurationText(o.backoff_max)));
  }
  if (o.startup_timeout <= absl::ZeroDuration()) {
    return invalid(
        absl::StrCat("startup_timeout must be > 0, got ", DurationText(o.startup_timeout)));
  }
  if (o.max_fetched_bytes == 0) return invalid("max_fetched_bytes must be > 0");
  if (o.max_decoded_bytes == 0) return invalid("max_decoded_bytes must be > 0");
  absl::Status fetcher;
  try {
    fetcher = o.fetcher->Validate();
  } catch (const std::exception& e) {
    fetcher = absl::InternalError(absl::StrCat("the fetcher's Validate() threw: ", e.what()));
  } catch (...) {
    fetcher = absl::InternalError("the fetcher's Validate() threw");
  }
  if (!fetcher.ok()) {
    return absl::Status(fetcher.code(),
                        absl::StrCat("remote term '", o.name, "': ", fetcher.message()));
  }
  return absl::OkStatus();
}

// Inflates, hashes, decodes and validates `body`. Runs on the offload pool; `decode` is
// called by one job at a time (the pipeline runs one update at a time).
Processed ProcessBytes(
    const std::string& body, const TermCoreOptions& options, std::optional<uint64_t> published_hash,
    const std::optional<Refusal>& refusal,
    absl::AnyInvocable<absl::StatusOr<std::shared_ptr<const void>>(std::string_view)>& decode,
    const std::atomic<bool>& stopped) {
  Processed out;
  if (body.size() > options.max_fetched_bytes) {
    out.status = absl::ResourceExhaustedError(absl::StrCat(
        "fetched ", body.size(), " bytes, over the cap of ", options.max_fetched_bytes));
    return out;
  }
  std::string inflated_storage;
  std::string_view bytes = body;
  if (fetchers::LooksGzipped(body)) {
    fetchers::GunzipLimits limits;
    limits.max_compressed_bytes = static_cast<size_t>(options.max_fetched_bytes);
    limits.max_decompressed_bytes = static_cast<size_t>(options.max_decoded_bytes);
    absl::StatusOr<std::string> inflated = fetchers::Gunzip(body, limits);
    if (!inflated.ok()) {
      out.status = inflated.status();
      return out;
    }
    inflated_storage = *std::move(inflated);
    bytes = inflated_storage;
  } else if (body.size() > options.max_decoded_bytes) {
    out.status = absl::ResourceExhaustedError(absl::StrCat(
        "the value is ", body.size(), " bytes, over the cap of ", options.max_decoded_bytes));
    return out;
  }
  out.decoded_bytes = bytes.size();
  out.hash = fetchers::internal::ContentHash(bytes);
  if (published_hash.has_value() && *published_hash == out.hash) {
    out.unchanged = true;
    return out;
  }
  if (refusal.has_value() && refusal->hash == out.hash) {
    out.status = absl::Status(
        refusal->error.code(),
        absl::StrCat("the same bytes as the last refused value: ", refusal->error.message()));
    return out;
  }
  // acquire: pairs with the release store in Stop(); a term stopped before this point does
  // not run its hooks (one already running finishes; its result is discarded).
  if (stopped.load(std::memory_order_acquire)) {
    out.status = absl::CancelledError("the term was stopped");
    return out;
  }
  absl::StatusOr<std::shared_ptr<const void>> value;
  try {
    value = decode(bytes);
  } catch (const std::exception& e) {
    value = absl::InternalError(absl::StrCat("decode or validate threw: ", e.what()));
  } catch (...) {
    value = absl::InternalError("decode or validate threw a non-standard exception");
  }
  if (!value.ok()) {
    out.status = value.status();
    // The same bytes would be refused again: remember them (see Refusal). Not for errors
    // that may pass on a retry (an exception such as bad_alloc, a resource limit).
    switch (out.status.code()) {
      case absl::StatusCode::kInvalidArgument:
      case absl::StatusCode::kFailedPrecondition:
      case absl::StatusCode::kOutOfRange:
      case absl::StatusCode::kDataLoss:
        out.refused = true;
        break;
      default:
        break;
    }
    return out;
  }
  if (*value == nullptr) {
    out.status = absl::InternalError("decode returned no value");
    return out;
  }
  out.value = *std::move(value);
  return out;
}

}  // namespace

class TermCore : public std::enable_shared_from_this<TermCore> {
 public:
  TermCore(Runtime& runtime, TermCoreOptions options)
      : runtime_(runtime),
        options_(std::move(options)),
        source_(Describe(*options_.fetcher)),
        rng_(std::random_device{}()) {
    status_.name = options_.name;
    status_.source = source_;
  }

  // Waiters left behind (a fetcher that dropped its callback at shutdown) hear Cancelled.
  ~TermCore() {
    absl::Status cancelled = Cancelled();
    for (auto* list : {&current_waiters_, &next_waiters_}) {
      for (auto& w : *list) w->Resolve(cancelled);
    }
    if (startup_waiter_ != nullptr) startup_waiter_->Resolve(cancelled);
  }

  // --- any thread ---

  // Queues the first fetch; `startup` (may be null) is told the first attempt's outcome.
  absl::Status Begin(std::shared_ptr<Waiter> startup) {
    return runtime_.Post(
        [self = shared_from_this(), startup = ResolveIfDropped(std::move(startup))]() mutable {
          self->startup_waiter_ = startup.Release();
          self->RequestFetch(nullptr);
        });
  }

  // Stops the term: after this returns no fetch starts, nothing is published, no listener
  // or span runs, and no decode or validate hook starts (one already running finishes on the
  // offload pool; its result is discarded).
  void Stop() {
    {
      MutexLock lock(&publish_mu_);
      // release: pairs with the acquire loads in stopped() and in the offload jobs.
      stopped_.store(true, std::memory_order_release);
    }
    if (runtime_.InControlThread()) {
      CancelWork();
      return;
    }
    // The timer, the fetch and the attempt's span are the control thread's: wait until it
    // has dealt with them. Every control-thread step checks stopped() first, and this task
    // runs after any step already queued, so nothing of this term runs after it. If the
    // runtime no longer takes tasks, it has dropped its timers and cancelled its transfers.
    auto cancelled = std::make_shared<Waiter>();
    absl::Status posted =
        runtime_.Post([self = shared_from_this(), done = ResolveIfDropped(cancelled)]() mutable {
          self->CancelWork();
          done.Release()->Resolve(absl::OkStatus());
        });
    if (posted.ok()) (void)cancelled->Wait(absl::InfiniteDuration());
  }

  void Refresh() {
    (void)runtime_.Post([self = shared_from_this()] { self->RequestFetch(nullptr); });
  }

  absl::Status RefreshNow(absl::Duration timeout) {
    if (runtime_.InControlThread() || runtime_.InOffloadPool()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "remote term '", options_.name,
          "': RefreshNow on the runtime's control thread or offload pool would wait for "
          "itself; use Refresh()"));
    }
    auto waiter = std::make_shared<Waiter>();
    absl::Status posted =
        runtime_.Post([self = shared_from_this(), request = ResolveIfDropped(waiter)]() mutable {
          self->RequestFetch(request.Release());
        });
    if (!posted.ok()) {
      return absl::CancelledError(
          absl::StrCat("remote term '", options_.name, "': the runtime is shutting down"));
    }
    std::optional<absl::Status> outcome = waiter->Wait(timeout);
    if (!outcome.has_value()) {
      return absl::DeadlineExceededError(
          absl::StrCat("remote term '", options_.name, "': no outcome within ",
                       DurationText(timeout), "; the fetch goes on"));
    }
    return *std::move(outcome);
  }

  TermStatus Status() const {
    Instant now = runtime_.Now();
    MutexLock lock(&status_mu_);
    TermStatus s = status_;
    if (s.last_success.has_value()) s.age = Elapsed(*s.last_success, now);
    return s;
  }

  uint64_t AddListener(ErasedListener listener) {
    MutexLock lock(&listeners_mu_);
    uint64_t id = next_listener_id_++;
    listeners_.emplace(id, std::make_shared<const ErasedListener>(std::move(listener)));
    return id;
  }

  void RemoveListener(uint64_t id) {
    {
      MutexLock lock(&listeners_mu_);
      listeners_.erase(id);
    }
    // Wait out a notification round that may have copied the listener before the erase; on
    // the control thread such a round is the caller itself.
    if (!runtime_.InControlThread()) MutexLock lock(&publish_mu_);
  }

  const std::string& name() const { return options_.name; }
  absl::Duration startup_timeout() const { return options_.startup_timeout; }

 private:
  // What keel knows about the published value.
  struct Published {
    fetchers::Validators validators;
    std::optional<absl::Time> modified;
    std::optional<uint64_t> hash;
    std::string version;
  };

  enum class Outcome { kUpdated, kNotModified, kFailed };

  // The fields of an update in flight, for its status and span.
  struct Attempt {
    std::unique_ptr<SpanScope> span;
    uint64_t bytes_received = 0;
    uint64_t bytes_decoded = 0;
    // The source's own schedule for the next fetch (cache headers, Retry-After).
    std::optional<fetchers::RefreshDecision> hint;
    // The fetch itself failed (the source answered with an error): its hint is a Retry-After.
    // After a failure in keel's pipeline (decode, validate, caps), the hint was meant for a
    // success and backoff applies instead.
    bool source_failed = false;
    // Where the fetch was answered (FetchResult::served_by).
    std::string served_by;
  };

  bool stopped() const {
    // acquire: pairs with the release store in Stop().
    return stopped_.load(std::memory_order_acquire);
  }

  absl::Status Cancelled() const {
    return absl::CancelledError(absl::StrCat("remote term '", options_.name, "' was stopped"));
  }

  // The fetcher's Describe(), Fetch() and Cancel() are user code: what they throw is caught.
  static std::string Describe(const fetchers::Fetcher& fetcher) {
    try {
      return fetcher.Describe();
    } catch (...) {
      return "<a fetcher whose Describe() threw>";
    }
  }

  // --- control thread ---

  void CancelWork() {
    if (timer_.has_value()) runtime_.Cancel(*timer_);
    timer_.reset();
    if (in_flight_) {
      try {
        options_.fetcher->Cancel(runtime_);
      } catch (const std::exception& e) {
        Log().error("remote term '{}': the fetcher's Cancel() threw: {}", options_.name, e.what());
      } catch (...) {
        Log().error("remote term '{}': the fetcher's Cancel() threw", options_.name);
      }
    }
    absl::Status cancelled = Cancelled();
    if (attempt_state_.span != nullptr) {
      attempt_state_.span->SetOutcome("failed");
      attempt_state_.span->AddAttribute("error", cancelled.ToString());
      attempt_state_.span.reset();  // emits, now rather than whenever the core goes
    }
    for (auto* list : {&current_waiters_, &next_waiters_}) {
      for (auto& w : *list) w->Resolve(cancelled);
      list->clear();
    }
    if (startup_waiter_ != nullptr) startup_waiter_->Resolve(cancelled);
    startup_waiter_.reset();
  }

  void RequestFetch(std::shared_ptr<Waiter> waiter) {
    if (stopped()) {
      if (waiter != nullptr) waiter->Resolve(Cancelled());
      return;
    }
    if (in_flight_) {
      follow_up_ = true;
      if (waiter != nullptr) next_waiters_.push_back(std::move(waiter));
      return;
    }
    if (waiter != nullptr) current_waiters_.push_back(std::move(waiter));
    StartFetch();
  }

  void StartFetch() {
    if (timer_.has_value()) runtime_.Cancel(*timer_);
    timer_.reset();
    in_flight_ = true;
    uint64_t attempt = ++attempt_;
    attempt_state_ = Attempt{};
    attempt_state_.span =
        std::make_unique<SpanScope>(runtime_.telemetry(), runtime_.clock(), "keel.term.update");
    attempt_state_.span->AddAttribute("term", options_.name);
    attempt_state_.span->AddAttribute("source", source_);

    fetchers::FetchRequest request;
    request.known = published_.validators;
    request.max_bytes = options_.max_fetched_bytes;
    request.policy.interval = options_.refresh;
    request.policy.min_interval = options_.min_refresh;
    request.policy.max_interval = options_.max_refresh;
    request.policy.honor_cache_headers = options_.honor_cache_headers;
    request.wall_now = absl::Now();
    {
      MutexLock lock(&status_mu_);
      status_.next_refresh.reset();
      status_.next_refresh_reason = "fetching";
    }
    // Set when the fetcher answers: a fetcher that throws after answering, or answers after
    // throwing, is answered once. Control thread only, as the callback.
    auto answered = std::make_shared<bool>(false);
    try {
      options_.fetcher->Fetch(
          runtime_, request,
          [self = shared_from_this(), attempt, answered](fetchers::FetchResult result) {
            if (*answered) return;
            *answered = true;
            self->OnFetched(attempt, std::move(result));
          });
    } catch (const std::exception& e) {
      if (!*answered) {
        *answered = true;
        Fail(attempt, absl::InternalError(absl::StrCat("the fetcher's Fetch() threw: ", e.what())));
      }
    } catch (...) {
      if (!*answered) {
        *answered = true;
        Fail(attempt, absl::InternalError("the fetcher's Fetch() threw"));
      }
    }
  }

  void OnFetched(uint64_t attempt, fetchers::FetchResult result) {
    if (stopped() || attempt != attempt_) return;
    attempt_state_.bytes_received = result.bytes_received;
    attempt_state_.served_by = result.served_by;
    attempt_state_.hint = std::move(result.next_refresh);
    if (!result.status.ok()) {
      attempt_state_.source_failed = true;
      Fail(attempt, std::move(result.status));
      return;
    }
    if (result.not_modified && !has_value_) {
      Fail(attempt, absl::InvalidArgumentError(
                        "the source answered \"not modified\" but the term holds no value (a "
                        "fetcher that answers not_modified to a request without validators)"));
      return;
    }
    if (result.not_modified) {
      // A source may send fresh validators with its "not modified" (a new Date-based
      // Last-Modified, say); keep what it sent, else what we had.
      if (!result.validators.etag.empty()) published_.validators.etag = result.validators.etag;
      if (!result.validators.last_modified.empty()) {
        published_.validators.last_modified = result.validators.last_modified;
      }
      Finish(Outcome::kNotModified, absl::OkStatus());
      return;
    }
    // A rollback is refused before anything is decoded.
    if (!options_.allow_older && result.modified.has_value() && published_.modified.has_value() &&
        *result.modified < *published_.modified) {
      Fail(attempt, absl::FailedPreconditionError(absl::StrCat(
                        "the source's value (modified ", absl::FormatTime(*result.modified),
                        ") is older than the published one (modified ",
                        absl::FormatTime(*published_.modified),
                        "); not installed (set allow_older to accept rollbacks)")));
      return;
    }
    auto body = std::make_shared<std::string>(std::move(result.body));
    auto meta = std::make_shared<fetchers::FetchResult>(std::move(result));
    absl::Status started = runtime_.OffloadThen<Processed>(
        [self = shared_from_this(), body, published_hash = published_.hash, refusal = refusal_] {
          return ProcessBytes(*body, self->options_, published_hash, refusal, self->options_.decode,
                              self->stopped_);
        },
        [self = shared_from_this(), attempt, body, meta](absl::StatusOr<Processed> processed) {
          if (!processed.ok()) {
            Processed failed;
            failed.status = processed.status();
            processed = std::move(failed);
          }
          self->OnProcessed(attempt, *std::move(processed), std::move(*body), std::move(*meta));
        });
    if (!started.ok()) {
      Fail(attempt, absl::UnavailableError(absl::StrCat(
                        "cannot hand the bytes to the offload pool: ", started.message())));
    }
  }

  void OnProcessed(uint64_t attempt, Processed processed, std::string raw,
                   fetchers::FetchResult meta) {
    if (stopped() || attempt != attempt_) {
      // A large value is freed on the pool, not here, where it would delay every timer.
      if (processed.value != nullptr) {
        (void)runtime_.Offload([value = std::move(processed.value)]() mutable { value.reset(); });
      }
      return;
    }
    attempt_state_.bytes_decoded = processed.decoded_bytes;
    if (processed.refused) refusal_ = Refusal{processed.hash, processed.status};
    if (!processed.status.ok()) {
      Fail(attempt, std::move(processed.status));
      return;
    }
    if (processed.unchanged) {
      // Same content under new validators (a server without ETags, a touched file): keep the
      // validators so that the next request can be conditional.
      published_.validators = meta.validators;
      published_.modified = meta.modified.has_value() ? meta.modified : published_.modified;
      published_.version = VersionOf(published_.validators, processed.hash);
      {
        MutexLock lock(&status_mu_);
        status_.version = published_.version;
        status_.modified = published_.modified;
      }
      Finish(Outcome::kNotModified, absl::OkStatus());
      return;
    }
    Published next;
    next.validators = std::move(meta.validators);
    next.modified = meta.modified;
    next.hash = processed.hash;
    next.version = VersionOf(next.validators, processed.hash);
    if (!Install(std::move(processed.value), std::move(next), /*from_disk=*/false)) return;
    SaveThenFinish(attempt, std::move(raw));
  }

  static std::string VersionOf(const fetchers::Validators& v, uint64_t hash) {
    if (!v.version.empty()) return v.version;
    if (!v.etag.empty()) return v.etag;
    return absl::StrCat("hash:", fetchers::internal::HashToHex(hash));
  }

  // Publishes `value` and calls the listeners. False when the term was stopped (nothing
  // published).
  bool Install(std::shared_ptr<const void> value, Published published, bool from_disk) {
    MutexLock lock(&publish_mu_);
    if (stopped()) return false;
    options_.publish(value);
    has_value_ = true;
    published_ = std::move(published);
    refusal_.reset();
    {
      // The status agrees with Read() from here on; Finish completes it (the attempt's
      // counters, the schedule) once the disk copy is saved.
      MutexLock status_lock(&status_mu_);
      Instant now = runtime_.Now();
      status_.version = published_.version;
      status_.modified = published_.modified;
      status_.from_disk = from_disk;
      status_.last_update = now;
      ++status_.updates;
      if (!from_disk) {
        status_.last_success = now;
        status_.last_error = absl::OkStatus();
        status_.consecutive_failures = 0;
      }
      status_.state = from_disk ? TermState::kStale : TermState::kFresh;
    }
    std::vector<std::shared_ptr<const ErasedListener>> listeners;
    {
      MutexLock listeners_lock(&listeners_mu_);
      listeners.reserve(listeners_.size());
      for (const auto& [id, listener] : listeners_) listeners.push_back(listener);
    }
    for (const auto& listener : listeners) {
      try {
        (*listener)(value);
      } catch (const std::exception& e) {
        Log().warn("remote term '{}': a change listener threw: {}", options_.name, e.what());
      } catch (...) {
        Log().warn("remote term '{}': a change listener threw", options_.name);
      }
    }
    return true;
  }

  // A failed attempt: before giving up on a term that has no value, try the disk copy once.
  void Fail(uint64_t attempt, absl::Status error) {
    if (!has_value_ && !disk_copy_tried_ && !options_.last_known_good_path.empty()) {
      disk_copy_tried_ = true;
      LoadLastKnownGood(attempt, std::move(error));
      return;
    }
    Finish(Outcome::kFailed, std::move(error));
  }

  // Ends the attempt: status, span, schedule, waiters, then a coalesced follow-up fetch.
  void Finish(Outcome outcome, absl::Status error) {
    Instant now = runtime_.Now();
    uint32_t failures;
    {
      MutexLock lock(&status_mu_);
      status_.last_attempt = now;
      status_.bytes_received += attempt_state_.bytes_received;
      if (outcome == Outcome::kFailed) {
        status_.last_error = error;
        ++status_.consecutive_failures;
        ++status_.failures;
      } else {
        status_.last_error = absl::OkStatus();
        status_.consecutive_failures = 0;
        status_.last_success = now;
        status_.from_disk = false;
        status_.served_by = attempt_state_.served_by;
        if (outcome == Outcome::kNotModified) ++status_.not_modified;
      }
      failures = status_.consecutive_failures;
      status_.state = !has_value_         ? (outcome == Outcome::kFailed ? TermState::kFailed
                                                                         : TermState::kInitializing)
                      : status_.from_disk ? TermState::kStale
                      : outcome == Outcome::kFailed ? TermState::kStale
                                                    : TermState::kFresh;
    }
    if (outcome == Outcome::kFailed) {
      Log().warn("remote term '{}' ({}): update failed ({} in a row): {}", options_.name, source_,
                 failures, error.ToString());
    }

    fetchers::RefreshDecision next = NextDelay(outcome, failures);
    ScheduleNext(next, now);

    if (attempt_state_.span != nullptr) {
      SpanScope& span = *attempt_state_.span;
      span.SetOutcome(outcome == Outcome::kUpdated       ? "updated"
                      : outcome == Outcome::kNotModified ? "not_modified"
                                                         : "failed");
      span.AddAttribute("bytes_received", absl::StrCat(attempt_state_.bytes_received));
      span.AddAttribute("bytes_decoded", absl::StrCat(attempt_state_.bytes_decoded));
      span.AddAttribute("version", published_.version);
      span.AddAttribute("next_refresh", next.reason);
      if (!attempt_state_.served_by.empty()) {
        span.AddAttribute("served_by", attempt_state_.served_by);
      }
      if (!error.ok()) span.AddAttribute("error", error.ToString());
      attempt_state_.span.reset();  // emits
    }

    absl::Status outcome_status = outcome == Outcome::kFailed ? error : absl::OkStatus();
    for (auto& w : current_waiters_) w->Resolve(outcome_status);
    current_waiters_.clear();
    if (startup_waiter_ != nullptr) {
      startup_waiter_->Resolve(has_value_ ? absl::OkStatus() : outcome_status);
      startup_waiter_.reset();
    }

    in_flight_ = false;
    if (follow_up_ && !stopped()) {
      follow_up_ = false;
      current_waiters_ = std::move(next_waiters_);
      next_waiters_.clear();
      StartFetch();
    }
  }

  // The delay before the next fetch, and why.
  fetchers::RefreshDecision NextDelay(Outcome outcome, uint32_t failures) {
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    if (outcome == Outcome::kFailed) {
      // backoff_initial * 2^(failures - 1), capped; the doubling stops at the cap, so it
      // cannot overflow.
      absl::Duration backoff = options_.backoff_initial;
      for (uint32_t i = 1; i < failures && backoff < options_.backoff_max; ++i) backoff *= 2;
      backoff = std::min(backoff, options_.backoff_max);
      // Whole milliseconds, the timer wheel's tick, so that the status's next_refresh is
      // the instant the timer fires.
      fetchers::RefreshDecision next{
          absl::Trunc(backoff * (1.0 - options_.jitter * unit(rng_)), absl::Milliseconds(1)),
          absl::StrCat("backoff ", DurationText(backoff), " after ", failures,
                       failures == 1 ? " failure" : " failures")};
      // The source said when to come back (Retry-After on a 429 or 503): not sooner than
      // that, and not sooner than the backoff either (a "Retry-After: 0" does not make keel
      // hammer a failing server).
      if (attempt_state_.source_failed && attempt_state_.hint.has_value() &&
          options_.honor_cache_headers) {
        absl::Duration asked =
            std::clamp(attempt_state_.hint->delay, options_.min_refresh, options_.max_refresh);
        if (asked >= next.delay) next = {asked, attempt_state_.hint->reason};
      }
      return next;
    }
    fetchers::RefreshDecision base{options_.refresh, "interval"};
    if (attempt_state_.hint.has_value() && options_.honor_cache_headers) {
      base = *attempt_state_.hint;
    }
    absl::Duration delay = absl::Trunc(
        base.delay * (1.0 + options_.jitter * (2.0 * unit(rng_) - 1.0)), absl::Milliseconds(1));
    delay = std::clamp(delay, options_.min_refresh, options_.max_refresh);
    return {delay, std::move(base.reason)};
  }

  void ScheduleNext(const fetchers::RefreshDecision& next, Instant now) {
    if (stopped()) return;
    if (timer_.has_value()) runtime_.Cancel(*timer_);
    absl::StatusOr<TimerHandle> timer =
        runtime_.Schedule(next.delay, [self = shared_from_this()] { self->RequestFetch(nullptr); });
    MutexLock lock(&status_mu_);
    if (timer.ok()) {
      timer_ = *timer;
      status_.next_refresh = AddDuration(now, next.delay);
      status_.next_refresh_reason = next.reason;
    } else {
      timer_.reset();
      status_.next_refresh.reset();
      status_.next_refresh_reason = std::string(timer.status().message());
    }
  }

  // --- last-known-good copy ---

  // Saves the bytes just published, then finishes the attempt: the attempt's outcome (and a
  // RefreshNow waiting for it) comes after the copy is on disk. A failed save is logged and
  // shown in the status; the update itself stands.
  void SaveThenFinish(uint64_t attempt, std::string raw) {
    if (options_.last_known_good_path.empty()) {
      Finish(Outcome::kUpdated, absl::OkStatus());
      return;
    }
    auto copy = std::make_shared<LastKnownGood>();
    copy->validators = published_.validators;
    copy->modified = published_.modified;
    copy->body = std::move(raw);
    absl::Status started = runtime_.OffloadThen<absl::Status>(
        [path = options_.last_known_good_path, copy] { return WriteLastKnownGood(path, *copy); },
        [self = shared_from_this(), attempt](absl::StatusOr<absl::Status> written) {
          self->OnSaved(attempt, written.ok() ? *written : written.status());
        });
    if (!started.ok()) OnSaved(attempt, started);
  }

  void OnSaved(uint64_t attempt, absl::Status status) {
    if (stopped() || attempt != attempt_) return;
    if (!status.ok()) {
      Log().warn("remote term '{}': cannot save the last-known-good copy: {}", options_.name,
                 status.ToString());
    }
    {
      MutexLock lock(&status_mu_);
      status_.last_known_good_error = status;
    }
    Finish(Outcome::kUpdated, absl::OkStatus());
  }

  void LoadLastKnownGood(uint64_t attempt, absl::Status fetch_error_in) {
    // Shared by the completion and the error path below: the completion is built (and owns
    // its captures) before OffloadThen can fail.
    auto fetch_error = std::make_shared<absl::Status>(std::move(fetch_error_in));
    struct Loaded {
      absl::Status status;
      LastKnownGood copy;
      Processed processed;
    };
    absl::Status started = runtime_.OffloadThen<Loaded>(
        [self = shared_from_this()] {
          Loaded loaded;
          absl::StatusOr<LastKnownGood> copy = ReadLastKnownGood(
              self->options_.last_known_good_path, self->options_.max_fetched_bytes);
          if (!copy.ok()) {
            loaded.status = copy.status();
            return loaded;
          }
          loaded.copy = *std::move(copy);
          loaded.processed = ProcessBytes(loaded.copy.body, self->options_, std::nullopt,
                                          std::nullopt, self->options_.decode, self->stopped_);
          loaded.status = loaded.processed.status;
          loaded.copy.body.clear();
          return loaded;
        },
        [self = shared_from_this(), attempt, fetch_error](absl::StatusOr<Loaded> loaded) {
          self->OnLastKnownGoodLoaded(attempt, std::move(loaded), *fetch_error);
        });
    if (!started.ok()) {
      disk_copy_tried_ = false;  // not tried: the next failure tries again
      Finish(Outcome::kFailed, *fetch_error);
    }
  }

  template <class Loaded>
  void OnLastKnownGoodLoaded(uint64_t attempt, absl::StatusOr<Loaded> loaded,
                             absl::Status fetch_error) {
    if (stopped() || attempt != attempt_) return;
    absl::Status status = loaded.ok() ? loaded->status : loaded.status();
    if (!status.ok()) {
      // A missing copy is the normal first start; anything else is worth a warning.
      if (!absl::IsNotFound(status)) {
        Log().warn("remote term '{}': the last-known-good copy is unusable: {}", options_.name,
                   status.ToString());
      }
      MutexLock lock(&status_mu_);
      status_.last_known_good_error = status;
    } else {
      Published published;
      published.validators = std::move(loaded->copy.validators);
      published.modified = loaded->copy.modified;
      published.hash = loaded->processed.hash;
      published.version = VersionOf(published.validators, loaded->processed.hash);
      Log().info(
          "remote term '{}': the source failed ({}); starting from the last-known-good "
          "copy, version {}",
          options_.name, fetch_error.ToString(), published.version);
      if (!Install(std::move(loaded->processed.value), std::move(published), /*from_disk=*/true)) {
        return;
      }
    }
    Finish(Outcome::kFailed, std::move(fetch_error));
  }

  Runtime& runtime_;
  TermCoreOptions options_;
  const std::string source_;

  // Control thread only.
  bool in_flight_ = false;
  bool follow_up_ = false;
  uint64_t attempt_ = 0;
  Attempt attempt_state_;
  std::vector<std::shared_ptr<Waiter>> current_waiters_;  // told this attempt's outcome
  std::vector<std::shared_ptr<Waiter>> next_waiters_;     // told the follow-up's outcome
  std::shared_ptr<Waiter> startup_waiter_;
  std::optional<TimerHandle> timer_;
  Published published_;
  std::optional<Refusal> refusal_;
  bool has_value_ = false;
  bool disk_copy_tried_ = false;
  std::mt19937_64 rng_;

  Mutex publish_mu_;
  std::atomic<bool> stopped_{false};

  mutable Mutex status_mu_;
  TermStatus status_ ABSL_GUARDED_BY(status_mu_);

  Mutex listeners_mu_;
  uint64_t next_listener_id_ ABSL_GUARDED_BY(listeners_mu_) = 1;
  std::map<uint64_t, std::shared_ptr<const ErasedListener>> listeners_
      ABSL_GUARDED_BY(listeners_mu_);
};

absl::StatusOr<std::shared_ptr<TermCore>> StartTermCore(Runtime& runtime, TermCoreOptions options) {
  absl::Status valid = CheckOptions(options);
  if (!valid.ok()) return valid;
  bool blocking = options.startup == TermStartup::kBlocking;
  if (blocking && (runtime.InControlThread() || runtime.InOffloadPool())) {
    return absl::FailedPreconditionError(
        absl::StrCat("remote term '", options.name,
                     "': a blocking Start on the runtime's control thread or offload pool would "
                     "wait for itself; use startup = TermStartup::kLazy"));
  }
  auto core = std::make_shared<TermCore>(runtime, std::move(options));
  std::shared_ptr<Waiter> startup = blocking ? std::make_shared<Waiter>() : nullptr;
  absl::Status begun = core->Begin(startup);
  if (!begun.ok()) {
    core->Stop();
    return absl::Status(begun.code(), absl::StrCat("remote term '", core->name(),
                                                   "': cannot start: ", begun.message()));
  }
  if (!blocking) return core;
  std::optional<absl::Status> first = startup->Wait(core->startup_timeout());
  if (!first.has_value()) {
    core->Stop();
    return absl::DeadlineExceededError(absl::StrCat("remote term '", core->name(),
                                                    "': no value within the startup timeout of ",
                                                    DurationText(core->startup_timeout())));
  }
  if (!first->ok()) {
    core->Stop();
    return absl::Status(first->code(), absl::StrCat("remote term '", core->name(),
                                                    "': first fetch failed: ", first->message()));
  }
  return core;
}

void StopTermCore(TermCore& core) { core.Stop(); }
void RefreshTermCore(TermCore& core) { core.Refresh(); }
absl::Status RefreshTermCoreNow(TermCore& core, absl::Duration timeout) {
  return core.RefreshNow(timeout);
}
TermStatus TermCoreStatus(const TermCore& core) { return core.Status(); }
uint64_t AddTermListener(TermCore& core, ErasedListener listener) {
  return core.AddListener(std::move(listener));
}
void RemoveTermListener(TermCore& core, uint64_t id) { core.RemoveListener(id); }

}  // namespace internal
}  // namespace keel
