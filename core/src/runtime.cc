#include "keel/runtime.h"

#include <curl/curl.h>
#include <pthread.h>

#include <algorithm>
#include <array>
#include <bit>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "keel/internal/sync.h"
#include "keel/internal/transfers.h"
#include "keel/timer_wheel.h"
#include "log.h"

namespace keel {
namespace internal {

struct TimerState {
  enum : int { kPending, kRunning, kDone, kCancelled, kDropped };
  // pending -> running -> done on the control thread; pending -> cancelled by Cancel (any
  // thread); pending -> dropped at shutdown. Exactly one CAS wins the way out of pending:
  // acq_rel so the winner sees the task as the scheduler left it.
  std::atomic<int> state{kPending};
  Instant deadline;
  TimerId wheel_id = kInvalidTimerId;  // control thread only
  absl::AnyInvocable<void()>
      task;  // written before Schedule hands it over; then control thread only
};

namespace {

constexpr int64_t kNanosPerTick = 1'000'000;  // the wheel ticks in milliseconds
constexpr int kMaxPollMs = 1000;              // the loop re-checks at least once a second

// Ticks never round a deadline down, so a timer never fires early.
// Unsigned arithmetic: an infinite delay (INT64_MAX ns) rounds up without overflowing.
uint64_t DeadlineTick(Instant t) {
  const int64_t ns = t.time_since_epoch().count();
  if (ns <= 0) return 0;
  return (static_cast<uint64_t>(ns) + (kNanosPerTick - 1)) / kNanosPerTick;
}
uint64_t NowTick(Instant t) {
  const int64_t ns = t.time_since_epoch().count();
  return ns <= 0 ? 0 : static_cast<uint64_t>(ns / kNanosPerTick);
}

// The wheel's payload. Destroying an entry whose timer is still pending (the wheel torn down
// at shutdown, or its insertion task dropped) marks the timer dropped; an entry whose timer
// was cancelled but whose removal never ran (refused or dropped at shutdown) ends the same
// way. Either way the task is destroyed here, on the control thread.
struct TimerEntry {
  std::shared_ptr<TimerState> state;

  explicit TimerEntry(std::shared_ptr<TimerState> s) : state(std::move(s)) {}
  TimerEntry(TimerEntry&&) noexcept = default;
  TimerEntry& operator=(TimerEntry&&) noexcept = default;
  ~TimerEntry() {
    if (state == nullptr) return;
    int expected = TimerState::kPending;
    if (state->state.compare_exchange_strong(expected, TimerState::kDropped,
                                             std::memory_order_acq_rel) ||
        expected == TimerState::kCancelled) {
      state->task = nullptr;
    }
  }
};

// The runtime whose offload pool runs the current thread, if any.
thread_local const void* current_pool_owner = nullptr;

template <class F>
bool RunGuarded(const char* what, const std::string& runtime_name, F&& f) noexcept {
  try {
    f();
    return true;
  } catch (const std::exception& e) {
    Log().error("runtime {}: a {} threw: {}", runtime_name, what, e.what());
  } catch (...) {
    Log().error("runtime {}: a {} threw a non-exception", runtime_name, what);
  }
  return false;
}

void CurlGlobalInit() {
  static const CURLcode code = curl_global_init(CURL_GLOBAL_DEFAULT);
  (void)code;
}

}  // namespace

// The offload pool: a bounded queue and a few threads.
class OffloadPool {
 public:
  struct Job {
    absl::AnyInvocable<void()> run;
    absl::AnyInvocable<void()> on_drop;  // may be empty
  };

  OffloadPool(int threads, size_t capacity, std::string name, const void* owner)
      : capacity_(capacity), name_(std::move(name)), owner_(owner) {
    workers_.reserve(threads);
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this, i] { Work(i); });
  }

  // False when the queue is full or the pool is stopping; the job is then untouched.
  bool TryPush(Job& job, bool* full) {
    std::lock_guard<std::mutex> lock(mu_);
    *full = false;
    if (stopping_) return false;
    if (queue_.size() >= capacity_) {
      *full = true;
      return false;
    }
    queue_.push_back(std::move(job));
    cv_.notify_one();
    return true;
  }

  // Stops taking jobs. With run_pending the queued jobs still run; otherwise they are
  // dropped now (their on_drop runs on this thread) and only running jobs finish.
  void Close(bool run_pending) {
    std::deque<Job> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      if (!run_pending) dropped.swap(queue_);
    }
    cv_.notify_all();
    for (Job& job : dropped) {
      if (job.on_drop) job.on_drop();
    }
  }

  // Waits for the workers to finish (after Close).
  void Join() {
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }

  uint64_t jobs_run() const { return jobs_run_.load(std::memory_order_relaxed); }
  uint64_t exceptions() const { return exceptions_.load(std::memory_order_relaxed); }

 private:
  void Work(int index) {
    current_pool_owner = owner_;
    pthread_setname_np(pthread_self(), absl::StrCat(name_.substr(0, 10), "-off", index).c_str());
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and nothing left to run
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      if (!RunGuarded("offload job", name_, job.run)) {
        exceptions_.fetch_add(1, std::memory_order_relaxed);
      }
      jobs_run_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  const size_t capacity_;
  const std::string name_;
  const void* const owner_;  // the runtime, for InPoolThread
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;  // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> jobs_run_{0};
  std::atomic<uint64_t> exceptions_{0};
};

class RuntimeImpl {
 public:
  explicit RuntimeImpl(RuntimeOptions options)
      : options_(std::move(options)),
        clock_(options_.clock != nullptr ? options_.clock : Clock::Steady()),
        wheel_(std::make_unique<TimerWheel<TimerEntry>>(NowTick(clock_->Now()))) {}

  absl::Status Start() {
    CurlGlobalInit();
    multi_ = curl_multi_init();
    if (multi_ == nullptr) return absl::InternalError("curl_multi_init failed");
    watch_id_ = clock_->Watch([this] { Wake(); });
    pool_ = std::make_unique<OffloadPool>(options_.offload_threads,
                                          static_cast<size_t>(options_.offload_queue_capacity),
                                          options_.name, this);
    thread_ = std::thread([this] { Loop(); });
    started_.WaitForNotification();
    return absl::OkStatus();
  }

  ~RuntimeImpl() {
    if (multi_ != nullptr) curl_multi_cleanup(multi_);
  }

  // --- any thread ---

  // How a posted task is treated at shutdown.
  enum class PostKind {
    kUser,        // refused once Shutdown began; dropped by kDropPending
    kSync,        // refused once Shutdown began; always runs (its waiter must wake)
    kCompletion,  // accepted until the loop is gone; always runs (offload completions)
  };

  absl::Status Post(absl::AnyInvocable<void()> task, PostKind kind) {
    if (!task) return absl::InvalidArgumentError("the task is empty");
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (kind == PostKind::kCompletion ? queue_finished_ : closed_) {
      return absl::FailedPreconditionError(
          absl::StrCat("runtime ", options_.name, " is shut down; the task was not run"));
    }
    queue_.push_back({std::move(task), kind != PostKind::kUser});
    // Under the lock: once the task is queued it may run and let another thread destroy the
    // runtime, which first takes this lock (Shutdown), so Wake never touches a freed runtime.
    Wake();
    return absl::OkStatus();
  }

  void Wake() {
    // seq_cst pairs with the loop's store of false before it drains the queue: either the
    // loop sees the new work on its next drain, or this exchange sees false and wakes it.
    if (!wake_pending_.exchange(true)) curl_multi_wakeup(multi_);
  }

  absl::StatusOr<TimerHandle> ScheduleAt(Instant deadline, absl::AnyInvocable<void()> task) {
    if (!task) return absl::InvalidArgumentError("the timer's task is empty");
    auto state = std::make_shared<TimerState>();
    state->deadline = deadline;
    state->task = std::move(task);
    TimerHandle handle(state);
    TimerEntry entry(std::move(state));
    if (InControlThread() && !stopping_loop_) {
      Insert(std::move(entry));
    } else {
      // If this task is dropped unrun, the entry it owns marks the timer dropped.
      absl::Status posted =
          Post([this, entry = std::move(entry)]() mutable { Insert(std::move(entry)); },
               PostKind::kUser);
      if (!posted.ok()) return posted;
    }
    return handle;
  }

  bool Cancel(const std::shared_ptr<TimerState>& state) {
    if (state == nullptr) return false;
    int expected = TimerState::kPending;
    if (!state->state.compare_exchange_strong(expected, TimerState::kCancelled,
                                              std::memory_order_acq_rel)) {
      return false;
    }
    // Free the wheel slot and the task on the control thread. If the runtime is shutting
    // down, the wheel is torn down anyway.
    if (InControlThread()) {
      Remove(*state);
    } else {
      (void)Post([this, state] { Remove(*state); }, PostKind::kUser);
    }
    return true;
  }

  absl::Status Offload(absl::AnyInvocable<void()> run, absl::AnyInvocable<void()> on_drop) {
    OffloadPool::Job job{std::move(run), std::move(on_drop)};
    bool full = false;
    if (pool_->TryPush(job, &full)) return absl::OkStatus();
    if (full) {
      offload_rejected_.fetch_add(1, std::memory_order_relaxed);
      return absl::ResourceExhaustedError(
          absl::StrCat("runtime ", options_.name, ": offload queue is full (capacity ",
                       options_.offload_queue_capacity, "); the job was not run"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("runtime ", options_.name, " is shut down; the job was not run"));
  }

  absl::Status Sync(absl::Duration timeout) {
    if (InControlThread()) {
      return absl::FailedPreconditionError("Sync must not be called on the control thread");
    }
    auto done = std::make_shared<internal::Notification>();
    absl::Status posted = Post(
        [this, done] {
          RunDueTimers();
          done->Notify();
        },
        PostKind::kSync);
    if (!posted.ok()) return posted;
    if (!done->WaitForNotificationWithTimeout(timeout)) {
      return absl::DeadlineExceededError(absl::StrCat("runtime ", options_.name,
                                                      ": Sync did not complete within ",
                                                      absl::FormatDuration(timeout)));
    }
    return absl::OkStatus();
  }

  absl::Status Shutdown(ShutdownMode mode) {
    if (InControlThread()) {
      return absl::FailedPreconditionError(
          "Shutdown must not be called on the runtime's own control thread");
    }
    if (InPoolThread()) {
      return absl::FailedPreconditionError(
          "Shutdown must not be called from the runtime's own offload pool (it would wait for "
          "itself)");
    }
    std::lock_guard<std::mutex> shutdown_lock(shutdown_mu_);
    if (joined_) return absl::OkStatus();
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      closed_ = true;
    }
    // release: pairs with the acquire in DrainQueue; tasks not yet started are then dropped.
    drop_pending_.store(mode == ShutdownMode::kDropPending, std::memory_order_release);
    // Jobs not yet started are dropped now, or left to run; their completions are queued.
    pool_->Close(mode == ShutdownMode::kRunPending);
    stop_requested_.store(true, std::memory_order_release);  // pairs with the loop's acquire
    Wake();
    thread_.join();
    clock_->Unwatch(watch_id_);
    joined_ = true;
    return absl::OkStatus();
  }

  // The id is cleared when the loop ends: a later thread may reuse it.
  bool InControlThread() const noexcept {
    return control_thread_id_.load(std::memory_order_acquire) == std::this_thread::get_id();
  }

  bool InPoolThread() const noexcept { return current_pool_owner == this; }

  void NoteException() { callback_exceptions_.fetch_add(1, std::memory_order_relaxed); }

  LoopStats Stats() const {
    LoopStats s;
    s.iterations = iterations_.load(std::memory_order_relaxed);
    s.tasks_run = tasks_run_.load(std::memory_order_relaxed);
    s.timers_run = timers_run_.load(std::memory_order_relaxed);
    s.offload_jobs_run = pool_ ? pool_->jobs_run() : 0;
    s.offload_rejected = offload_rejected_.load(std::memory_order_relaxed);
    s.callback_exceptions =
        callback_exceptions_.load(std::memory_order_relaxed) + (pool_ ? pool_->exceptions() : 0);
    s.timers_pending = timers_pending_.load(std::memory_order_relaxed);
    s.lag_samples = lag_samples_.load(std::memory_order_relaxed);
    s.last_lag = absl::Nanoseconds(last_lag_ns_.load(std::memory_order_relaxed));
    s.max_lag = absl::Nanoseconds(max_lag_ns_.load(std::memory_order_relaxed));
    if (s.lag_samples > 0) {
      s.mean_lag = absl::Nanoseconds(lag_sum_ns_.load(std::memory_order_relaxed) /
                                     static_cast<int64_t>(s.lag_samples));
      const uint64_t rank = s.lag_samples - s.lag_samples / 100;  // the p99 sample, 1-based
      uint64_t seen = 0;
      for (size_t i = 0; i < lag_histogram_.size(); ++i) {
        seen += lag_histogram_[i].load(std::memory_order_relaxed);
        if (seen >= rank) {
          s.p99_lag = absl::Nanoseconds(i == 0 ? 1 : (int64_t{1} << std::min<size_t>(i, 62)));
          break;
        }
      }
    }
    return s;
  }

  // --- transfers: control thread only ---

  absl::Status AddTransfer(CURL* easy, absl::AnyInvocable<void(TransferResult)> done) {
    if (!InControlThread()) {
      return absl::FailedPreconditionError("transfers are added on the control thread only");
    }
    if (stopping_loop_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "runtime ", options_.name, " is shutting down; the transfer was not started"));
    }
    if (easy == nullptr || !done)
      return absl::InvalidArgumentError("no easy handle or no callback");
    if (transfers_.contains(easy)) {
      return absl::InvalidArgumentError("this easy handle is already running on the runtime");
    }
    const CURLMcode rc = curl_multi_add_handle(multi_, easy);
    if (rc != CURLM_OK) {
      return absl::InternalError(
          absl::StrCat("curl_multi_add_handle failed: ", curl_multi_strerror(rc)));
    }
    transfers_.emplace(easy, std::move(done));
    return absl::OkStatus();
  }

  bool RemoveTransfer(CURL* easy) {
    auto it = transfers_.find(easy);
    if (it == transfers_.end()) return false;
    auto done = std::move(it->second);
    transfers_.erase(it);
    curl_multi_remove_handle(multi_, easy);
    TransferResult result;
    result.curl_code = CURLE_ABORTED_BY_CALLBACK;
    result.cancelled = true;
    RunTransferDone(done, result);
    return true;
  }

  size_t RunningTransfers() const { return transfers_.size(); }

  const RuntimeOptions& options() const { return options_; }
  Clock& clock() const { return *clock_; }
  Telemetry& telemetry() { return telemetry_; }

 private:
  struct Posted {
    absl::AnyInvocable<void()> task;
    bool always_run;  // kSync and kCompletion: run even when Shutdown drops pending work
  };

  // --- control thread only ---

  void Loop() {
    control_thread_id_.store(std::this_thread::get_id(), std::memory_order_release);
    pthread_setname_np(pthread_self(), options_.name.substr(0, 15).c_str());
    started_.Notify();
    for (;;) {
      iterations_.fetch_add(1, std::memory_order_relaxed);
      wake_pending_.store(false);  // seq_cst: see Wake()
      if (stop_requested_.load(std::memory_order_acquire)) break;
      DrainQueue();
      RunDueTimers();
      int running = 0;
      curl_multi_perform(multi_, &running);
      CompleteTransfers();
      if (stop_requested_.load(std::memory_order_acquire)) break;
      curl_multi_poll(multi_, nullptr, 0, PollTimeoutMs(), nullptr);
    }
    FinishShutdown();
  }

  int PollTimeoutMs() {
    std::optional<uint64_t> next = wheel_->NextDeadline();
    if (!next.has_value()) return kMaxPollMs;
    const Instant at{std::chrono::nanoseconds(static_cast<int64_t>(
        std::min<uint64_t>(*next, INT64_MAX / kNanosPerTick) * kNanosPerTick))};
    std::optional<std::chrono::nanoseconds> wait = clock_->RealWaitUntil(at);
    if (!wait.has_value()) return kMaxPollMs;  // manual clock: woken by its watcher
    const int64_t ms = (wait->count() + kNanosPerTick - 1) / kNanosPerTick;
    return static_cast<int>(std::clamp<int64_t>(ms, 0, kMaxPollMs));
  }

  // Runs (or, when dropping at shutdown, destroys) the tasks queued so far.
  void DrainQueue() {
    std::deque<Posted> batch;
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      batch.swap(queue_);
    }
    for (Posted& p : batch) {
      const bool dropping = drop_pending_.load(std::memory_order_acquire);
      if (!dropping || p.always_run) {
        if (!RunGuarded("task", options_.name, p.task)) {
          callback_exceptions_.fetch_add(1, std::memory_order_relaxed);
        }
        tasks_run_.fetch_add(1, std::memory_order_relaxed);
      }
      p.task = nullptr;  // destroyed here, on the control thread, in order
    }
  }

  void Insert(TimerEntry entry) {
    TimerState& state = *entry.state;
    if (wheel_ == nullptr) return;  // shutting down: the entry marks the timer dropped
    if (state.state.load(std::memory_order_acquire) != TimerState::kPending) {
      state.task = nullptr;  // cancelled before it reached the wheel
      return;
    }
    state.wheel_id = wheel_->Schedule(DeadlineTick(state.deadline), std::move(entry));
    timers_pending_.store(wheel_->size(), std::memory_order_relaxed);
  }

  void Remove(TimerState& state) {
    if (wheel_ == nullptr) {  // being torn down at shutdown
      state.task = nullptr;
      return;
    }
    if (state.wheel_id != kInvalidTimerId) wheel_->Cancel(state.wheel_id);
    state.wheel_id = kInvalidTimerId;
    state.task = nullptr;
    timers_pending_.store(wheel_->size(), std::memory_order_relaxed);
  }

  void RunDueTimers() {
    wheel_->Advance(NowTick(clock_->Now()), [this](TimerId, TimerEntry&& entry) {
      std::shared_ptr<TimerState> state = std::move(entry.state);
      state->wheel_id = kInvalidTimerId;
      int expected = TimerState::kPending;
      if (!state->state.compare_exchange_strong(expected, TimerState::kRunning,
                                                std::memory_order_acq_rel)) {
        return;  // cancelled; its removal task finds nothing to do
      }
      RecordLag(clock_->Now() - state->deadline);
      if (!RunGuarded("timer", options_.name, state->task)) {
        callback_exceptions_.fetch_add(1, std::memory_order_relaxed);
      }
      state->task = nullptr;
      state->state.store(TimerState::kDone, std::memory_order_release);
      timers_run_.fetch_add(1, std::memory_order_relaxed);
    });
    timers_pending_.store(wheel_->size(), std::memory_order_relaxed);
  }

  // Delivers the transfers libcurl has finished.
  void CompleteTransfers() {
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      CURL* easy = msg->easy_handle;
      const CURLcode code = msg->data.result;
      auto it = transfers_.find(easy);
      if (it == transfers_.end()) continue;
      auto done = std::move(it->second);
      transfers_.erase(it);
      curl_multi_remove_handle(multi_, easy);  // msg is invalid from here on
      TransferResult result;
      result.curl_code = static_cast<int>(code);
      RunTransferDone(done, result);
    }
  }

  void RunTransferDone(absl::AnyInvocable<void(TransferResult)>& done, TransferResult result) {
    if (!RunGuarded("transfer completion", options_.name, [&] { done(result); })) {
      NoteException();
    }
  }

  void RecordLag(std::chrono::nanoseconds lag) {
    const int64_t ns = std::max<int64_t>(lag.count(), 0);
    lag_samples_.fetch_add(1, std::memory_order_relaxed);
    lag_sum_ns_.fetch_add(ns, std::memory_order_relaxed);
    last_lag_ns_.store(ns, std::memory_order_relaxed);
    if (ns > max_lag_ns_.load(std::memory_order_relaxed)) {
      max_lag_ns_.store(ns, std::memory_order_relaxed);  // only the control thread writes
    }
    const size_t bucket = ns == 0 ? 0 : static_cast<size_t>(std::bit_width(uint64_t(ns)));
    lag_histogram_[std::min(bucket, lag_histogram_.size() - 1)].fetch_add(
        1, std::memory_order_relaxed);
  }

  void FinishShutdown() {
    stopping_loop_ = true;
    // 1. Tasks posted before Shutdown (closed_ keeps new ones out); drop_pending_ says
    // whether they run.
    DrainQueue();
    // 2. The pool finishes (Shutdown closed it); completions land in our queue, always_run.
    pool_->Join();
    // 3. Those completions (and anything internal) run; then the queue closes for good.
    for (;;) {
      DrainQueue();
      std::lock_guard<std::mutex> lock(queue_mu_);
      if (queue_.empty()) {
        queue_finished_ = true;
        break;
      }
    }
    // 4. Transfers still running are removed; their owners learn it.
    while (!transfers_.empty()) RemoveTransfer(transfers_.begin()->first);
    // 5. Pending timers are destroyed unrun (TimerEntry marks them dropped). wheel_ is null
    // first: a task's destructor that cancels another timer must not reach the wheel.
    std::unique_ptr<TimerWheel<TimerEntry>> wheel = std::move(wheel_);
    wheel.reset();
    timers_pending_.store(0, std::memory_order_relaxed);
    // A later thread may get this thread's id.
    control_thread_id_.store(std::thread::id(), std::memory_order_release);
  }

  const RuntimeOptions options_;
  Clock* const clock_;
  Telemetry telemetry_;
  CURLM* multi_ = nullptr;
  Clock::WatchId watch_id_ = 0;
  std::unique_ptr<OffloadPool> pool_;
  std::thread thread_;
  internal::Notification started_;
  std::atomic<std::thread::id> control_thread_id_{};

  std::mutex queue_mu_;
  std::deque<Posted> queue_;     // guarded by queue_mu_
  bool closed_ = false;          // guarded by queue_mu_: no new user work
  bool queue_finished_ = false;  // guarded by queue_mu_: nothing at all
  std::atomic<bool> wake_pending_{false};
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> drop_pending_{false};

  std::mutex shutdown_mu_;
  bool joined_ = false;  // guarded by shutdown_mu_

  // Control thread only.
  std::unique_ptr<TimerWheel<TimerEntry>> wheel_;
  absl::flat_hash_map<CURL*, absl::AnyInvocable<void(TransferResult)>> transfers_;
  bool stopping_loop_ = false;

  // Relaxed counters for Stats(): written by the control thread, read anywhere.
  std::atomic<uint64_t> iterations_{0};
  std::atomic<uint64_t> tasks_run_{0};
  std::atomic<uint64_t> timers_run_{0};
  std::atomic<uint64_t> offload_rejected_{0};
  std::atomic<uint64_t> callback_exceptions_{0};
  std::atomic<size_t> timers_pending_{0};
  std::atomic<uint64_t> lag_samples_{0};
  std::atomic<int64_t> lag_sum_ns_{0};
  std::atomic<int64_t> last_lag_ns_{0};
  std::atomic<int64_t> max_lag_ns_{0};
  std::array<std::atomic<uint64_t>, 64> lag_histogram_{};
};

RuntimeImpl& ImplOf(Runtime& runtime) { return *runtime.impl_; }

absl::Status AddTransfer(Runtime& runtime, void* easy,
                         absl::AnyInvocable<void(TransferResult)> done) {
  return ImplOf(runtime).AddTransfer(static_cast<CURL*>(easy), std::move(done));
}

bool RemoveTransfer(Runtime& runtime, void* easy) {
  RuntimeImpl& impl = ImplOf(runtime);
  return impl.InControlThread() && impl.RemoveTransfer(static_cast<CURL*>(easy));
}

size_t RunningTransfers(Runtime& runtime) { return ImplOf(runtime).RunningTransfers(); }

}  // namespace internal

bool TimerHandle::pending() const noexcept {
  return state_ != nullptr &&
         state_->state.load(std::memory_order_acquire) == internal::TimerState::kPending;
}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(RuntimeOptions options) {
  if (options.offload_threads < 1 || options.offload_threads > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("offload_threads must be between 1 and 64, got ", options.offload_threads));
  }
  if (options.offload_queue_capacity < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("offload_queue_capacity must be > 0, got ", options.offload_queue_capacity));
  }
  if (options.name.empty()) return absl::InvalidArgumentError("name must not be empty");
  auto impl = std::make_unique<internal::RuntimeImpl>(std::move(options));
  absl::Status started = impl->Start();
  if (!started.ok()) return started;
  return std::unique_ptr<Runtime>(new Runtime(std::move(impl)));
}

Runtime::Runtime(std::unique_ptr<internal::RuntimeImpl> impl) : impl_(std::move(impl)) {}

Runtime::~Runtime() {
  if (impl_->InControlThread() || impl_->InPoolThread()) {
    internal::Log().critical(
        "runtime {} destroyed on its own control thread or offload pool; aborting (a thread "
        "cannot join itself)",
        impl_->options().name);
    std::abort();
  }
  (void)impl_->Shutdown(ShutdownMode::kRunPending);
}

absl::Status Runtime::Post(absl::AnyInvocable<void()> task) {
  return impl_->Post(std::move(task), internal::RuntimeImpl::PostKind::kUser);
}

absl::StatusOr<TimerHandle> Runtime::Schedule(absl::Duration after,
                                              absl::AnyInvocable<void()> task) {
  if (after < absl::ZeroDuration()) after = absl::ZeroDuration();
  return impl_->ScheduleAt(AddDuration(clock().Now(), after), std::move(task));
}

absl::StatusOr<TimerHandle> Runtime::ScheduleAt(Instant deadline, absl::AnyInvocable<void()> task) {
  return impl_->ScheduleAt(deadline, std::move(task));
}

bool Runtime::Cancel(const TimerHandle& timer) { return impl_->Cancel(timer.state_); }

absl::Status Runtime::Offload(absl::AnyInvocable<void()> job) {
  if (!job) return absl::InvalidArgumentError("the offload job is empty");
  return impl_->Offload(std::move(job), nullptr);
}

absl::Status Runtime::OffloadWithCompletion(absl::AnyInvocable<absl::Status()> job,
                                            absl::AnyInvocable<void(absl::Status)> done) {
  if (!job || !done) return absl::InvalidArgumentError("the offload job or completion is empty");
  auto shared_done = std::make_shared<absl::AnyInvocable<void(absl::Status)>>(std::move(done));
  internal::RuntimeImpl* impl = impl_.get();
  auto deliver = [impl, shared_done](absl::Status status) {
    // always_run: completions are delivered even when Shutdown drops pending tasks.
    (void)impl->Post(
        [shared_done, status = std::move(status)]() mutable { (*shared_done)(std::move(status)); },
        internal::RuntimeImpl::PostKind::kCompletion);
  };
  return impl_->Offload(
      [job = std::move(job), deliver, impl]() mutable {
        absl::Status status;
        bool threw = true;
        try {
          status = job();
          threw = false;
        } catch (const std::exception& e) {
          status = absl::InternalError(absl::StrCat("offload job threw: ", e.what()));
        } catch (...) {
          status = absl::InternalError("offload job threw a non-exception");
        }
        if (threw) {
          impl->NoteException();
          internal::Log().error("runtime {}: {}", impl->options().name,
                                std::string(status.message()));
        }
        deliver(std::move(status));
      },
      [deliver] { deliver(absl::CancelledError("runtime shut down before the job ran")); });
}

absl::Status Runtime::Sync(absl::Duration timeout) { return impl_->Sync(timeout); }

absl::Status Runtime::Shutdown(ShutdownMode mode) { return impl_->Shutdown(mode); }

bool Runtime::InControlThread() const noexcept { return impl_->InControlThread(); }

bool Runtime::InOffloadPool() const noexcept { return impl_->InPoolThread(); }

Clock& Runtime::clock() const noexcept { return impl_->clock(); }

Telemetry& Runtime::telemetry() noexcept { return impl_->telemetry(); }

const std::string& Runtime::name() const noexcept { return impl_->options().name; }

LoopStats Runtime::Stats() const { return impl_->Stats(); }

}  // namespace keel
