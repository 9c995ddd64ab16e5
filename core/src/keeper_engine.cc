#include "keel/internal/keeper_engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <random>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "keel/internal/sync.h"
#include "log.h"

namespace keel::internal {
namespace {

absl::Status CheckOptions(const KeeperOptions& o) {
  auto invalid = [&](std::string message) {
    return absl::InvalidArgumentError(absl::StrCat("keeper '", o.name, "': ", message));
  };
  if (o.max_restarts < 0)
    return invalid(absl::StrCat("max_restarts must be >= 0, got ", o.max_restarts));
  if (o.restart_window <= absl::ZeroDuration() || o.restart_window == absl::InfiniteDuration()) {
    return invalid(absl::StrCat("restart_window must be > 0 and finite, got ",
                                absl::FormatDuration(o.restart_window)));
  }
  if (o.backoff_initial < absl::ZeroDuration() || o.backoff_max < o.backoff_initial ||
      o.backoff_max == absl::InfiniteDuration()) {
    return invalid(absl::StrCat(
        "backoff must satisfy 0 <= backoff_initial <= backoff_max < inf, got ",
        absl::FormatDuration(o.backoff_initial), " and ", absl::FormatDuration(o.backoff_max)));
  }
  if (!(o.backoff_jitter >= 0.0 && o.backoff_jitter < 1.0)) {
    return invalid(absl::StrCat("backoff_jitter must be in [0, 1), got ", o.backoff_jitter));
  }
  if (o.executor_batch < 1)
    return invalid(absl::StrCat("executor_batch must be >= 1, got ", o.executor_batch));
  if (o.poison_after < 1)
    return invalid(absl::StrCat("poison_after must be >= 1, got ", o.poison_after));
  if (o.on_give_up == GiveUp::kEscalate && !o.escalate) {
    return invalid("on_give_up is kEscalate but no escalate hook is set");
  }
  return absl::OkStatus();
}

std::string WhatOf(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

const char* SiteName(CrashSite site) {
  switch (site) {
    case CrashSite::kFirstStart:
      return "OnFirstStart";
    case CrashSite::kRecover:
      return "OnRecover";
    case CrashSite::kHandler:
      return "a handler";
    case CrashSite::kRestart:
      return "a process restart";
  }
  return "?";
}

}  // namespace

void LogKeeperWarning(const std::string& message) { Log().warn("{}", message); }

namespace {
// The engine whose worker code runs on this thread (its own thread, or a turn on the pool).
thread_local const void* running_worker = nullptr;
// The engine whose listeners and hooks this thread is dispatching.
thread_local const void* running_dispatch = nullptr;

struct RunningWorker {
  explicit RunningWorker(const void* engine) : previous(std::exchange(running_worker, engine)) {}
  ~RunningWorker() { running_worker = previous; }
  const void* previous;
};

// A runtime the engine uses (its home), with a count of the uses in progress: offload jobs
// and timers queued or running there, and calls into it. TransferTo waits for the previous
// home's count to reach zero.
struct Home {
  explicit Home(Runtime& r) : runtime(r) {}
  Runtime& runtime;
  Mutex mu;
  CondVar cv;  // with mu: TransferTo waits for the uses to end
  int uses ABSL_GUARDED_BY(mu) = 0;
};

// One use of a home; move-only.
class HomeUse {
 public:
  explicit HomeUse(std::shared_ptr<Home> home) : home_(std::move(home)) {
    MutexLock lock(&home_->mu);
    ++home_->uses;
  }
  HomeUse(HomeUse&& other) noexcept = default;
  HomeUse& operator=(HomeUse&&) = delete;
  ~HomeUse() {
    if (home_ == nullptr) return;  // moved from
    {
      MutexLock lock(&home_->mu);
      --home_->uses;
    }
    home_->cv.NotifyAll();
  }
  HomeUse Another() const { return HomeUse(home_); }
  Runtime& runtime() const { return home_->runtime; }
  const std::shared_ptr<Home>& home() const { return home_; }

 private:
  std::shared_ptr<Home> home_;
};
}  // namespace

// The engine's state. The worker thread, backoff timers (weakly) and listener tasks hold it.
//
// Locks: `mu` guards the mailbox, the phase and the restart bookkeeping; `state_mu` guards
// the committed state, epoch and version (held for a pointer copy only); `dispatch_mu`
// guards the listener dispatch and `save_mu` the snapshot saves; `home_mu` guards which
// runtime is home (taken before a home's own lock, never the other way). Never two of the
// others at once (the constructor aside), and no user code runs under any of them.
struct KeeperEngine::Shared : std::enable_shared_from_this<KeeperEngine::Shared> {
  enum class Step { kFirstStart, kRecover, kMessages };

  Shared(Runtime& rt, KeeperOptions opts, Hooks h, Restored restored)
      : options(std::move(opts)), hooks(std::move(h)), home(std::make_shared<Home>(rt)) {
    on_pool.store(options.placement == Placement::kExecutor, std::memory_order_release);
    rng.seed(options.jitter_seed != 0 ? options.jitter_seed : std::random_device{}());
    MutexLock lock(&mu);
    SpinLockHolder state_lock(&state_mu);
    MutexLock save_lock(&save_mu);
    version = restored.version;
    saved_version = restored.version;  // already in the store (or nothing to save yet)
    if (restored.state != nullptr) {
      committed = std::move(restored.state);
      step = Step::kRecover;
      restore_cause = std::move(restored.cause);
    }
  }

  const KeeperOptions options;
  Hooks hooks;
  // kExecutor until the pool refuses turns for good (its runtime shut down): the worker then
  // goes on on a thread of its own rather than leave callers waiting.
  std::atomic<bool> on_pool{false};
  bool executor() const { return on_pool.load(std::memory_order_acquire); }

  mutable SpinLock home_mu;
  std::shared_ptr<Home> home ABSL_GUARDED_BY(home_mu);
  std::mutex transfer_mu;  // serialises TransferTo
  // Whether waiting for the worker's end here could wait for this very thread: a job on the
  // home's offload pool, when turns or saves run there too.
  bool MightWaitForItself() {
    {
      MutexLock lock(&mu);
      if (worker_done) return false;
    }
    HomeUse use = Use();
    return use.runtime().InOffloadPool() && (executor() || static_cast<bool>(hooks.save));
  }
  // A use of the current home, for a call into its runtime or a job queued there.
  HomeUse Use() {
    SpinLockHolder lock(&home_mu);
    return HomeUse(home);
  }

  Mutex mu;
  CondVar cv;  // with mu: the worker waits for work, Stop for the end
  std::deque<Message> queue ABSL_GUARDED_BY(mu);
  bool accepting ABSL_GUARDED_BY(mu) = true;
  bool stop_requested ABSL_GUARDED_BY(mu) = false;
  bool paused ABSL_GUARDED_BY(mu) = false;  // in a backoff
  bool worker_done ABSL_GUARDED_BY(mu) = false;
  Step step ABSL_GUARDED_BY(mu) = Step::kFirstStart;
  KeeperPhase phase ABSL_GUARDED_BY(mu) = KeeperPhase::kRunning;
  std::optional<TimerHandle> backoff_timer ABSL_GUARDED_BY(mu);
  std::shared_ptr<Home> backoff_home ABSL_GUARDED_BY(mu);  // where backoff_timer is
  uint64_t backoff_id ABSL_GUARDED_BY(mu) = 0;      // a timer with another id resumes nothing
  bool turn_scheduled ABSL_GUARDED_BY(mu) = false;  // kExecutor: a turn is queued or running
  bool stranded ABSL_GUARDED_BY(mu) = false;        // kExecutor: the pool refused a turn for good
  std::optional<Instant> restart_due ABSL_GUARDED_BY(mu);   // while paused
  std::deque<Instant> recent_restarts ABSL_GUARDED_BY(mu);  // within the window
  std::mt19937_64 rng ABSL_GUARDED_BY(mu);
  uint64_t handled ABSL_GUARDED_BY(mu) = 0;
  uint64_t crashes ABSL_GUARDED_BY(mu) = 0;
  uint64_t restarts ABSL_GUARDED_BY(mu) = 0;
  uint64_t dead_letters ABSL_GUARDED_BY(mu) = 0;
  std::optional<Crash> last_crash ABSL_GUARDED_BY(mu);
  std::optional<Crash> restore_cause ABSL_GUARDED_BY(mu);  // for the first incarnation
  std::mutex join_mu;                                      // serialises Stop's join
  Mutex join_guard;
  std::thread worker ABSL_GUARDED_BY(join_guard);  // kOwnThread

  mutable SpinLock state_mu;
  ErasedState committed ABSL_GUARDED_BY(state_mu);
  uint64_t epoch ABSL_GUARDED_BY(state_mu) = 0;
  uint64_t version ABSL_GUARDED_BY(state_mu) = 0;
  bool commits_open ABSL_GUARDED_BY(state_mu) = true;
  bool epoch_alive ABSL_GUARDED_BY(state_mu) = false;  // false between a crash and a restart
  // relaxed: a hint read on each commit; a listener added concurrently with a commit hears
  // the next one.
  std::atomic<int> state_listeners{0};
  uint64_t stale_commits ABSL_GUARDED_BY(state_mu) = 0;
  uint64_t listener_failures ABSL_GUARDED_BY(state_mu) = 0;

  Mutex dispatch_mu;
  CondVar dispatch_cv;  // with dispatch_mu: Close waits for the end
  bool dispatch_in_flight ABSL_GUARDED_BY(dispatch_mu) = false;
  bool dispatch_pending ABSL_GUARDED_BY(dispatch_mu) = false;  // news since the last look
  bool dispatch_closed ABSL_GUARDED_BY(dispatch_mu) = false;
  uint64_t notified_version ABSL_GUARDED_BY(dispatch_mu) = 0;
  std::optional<Termination> termination ABSL_GUARDED_BY(dispatch_mu);  // to tell
  bool termination_told ABSL_GUARDED_BY(dispatch_mu) = false;
  std::deque<DeadLetter> dead_letter_queue ABSL_GUARDED_BY(dispatch_mu);
  std::optional<Crash> escalation ABSL_GUARDED_BY(dispatch_mu);

  // Snapshots: one save at a time (offloaded, or the final one on the worker thread).
  Mutex save_mu;
  CondVar save_cv;  // with save_mu: the final save waits for an offloaded one
  bool save_in_flight ABSL_GUARDED_BY(save_mu) = false;
  bool save_pending ABSL_GUARDED_BY(save_mu) = false;  // a commit since the last look
  bool saves_closed ABSL_GUARDED_BY(save_mu) = false;  // the final save has begun
  uint64_t saved_version ABSL_GUARDED_BY(save_mu) = 0;
  uint64_t snapshots_saved ABSL_GUARDED_BY(save_mu) = 0;
  uint64_t snapshot_failures ABSL_GUARDED_BY(save_mu) = 0;
  absl::Status last_snapshot_error ABSL_GUARDED_BY(save_mu);

  // ----- the worker thread

  enum class Take { kWork, kIdle, kEnd };

  // The worker's next step, under mu: blocking (kOwnThread) waits for one; non-blocking
  // (a turn) returns kIdle when there is none, ending the turn under the same lock that Post
  // checks.
  Take TakeStep(bool block, Step* next_step, Message* message) {
    MutexLock lock(&mu);
    auto ready = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return phase == KeeperPhase::kGaveUp ||
             (!paused && (step != Step::kMessages || !queue.empty() || stop_requested));
    };
    if (block) {
      cv.Wait(&mu, ready);
    } else if (!ready()) {
      turn_scheduled = false;
      return Take::kIdle;
    }
    if (phase == KeeperPhase::kGaveUp) return Take::kEnd;
    *next_step = step;
    if (step == Step::kMessages) {
      if (queue.empty()) return Take::kEnd;  // stop requested, and everything queued handled
      *message = std::move(queue.front());
      queue.pop_front();
    }
    return Take::kWork;
  }

  void RunStep(Step next_step, Message message) {
    switch (next_step) {
      case Step::kFirstStart:
      case Step::kRecover:
        StartIncarnation(next_step);
        break;
      case Step::kMessages:
        Handle(std::move(message));
        break;
    }
  }

  // kOwnThread: the worker thread's life.
  void Run() {
    RunningWorker running(this);
    for (;;) {
      Step next_step;
      Message message;
      if (TakeStep(/*block=*/true, &next_step, &message) == Take::kEnd) break;
      RunStep(next_step, std::move(message));
    }
    Finish();
  }

  // kExecutor: one turn on the offload pool, up to executor_batch steps.
  void Turn() {
    RunningWorker running(this);
    for (int i = 0; i < options.executor_batch; ++i) {
      Step next_step;
      Message message;
      switch (TakeStep(/*block=*/false, &next_step, &message)) {
        case Take::kIdle:
          SaveAfterTurn();
          return;
        case Take::kEnd:
          Finish();  // turn_scheduled stays set: no turn after the end
          return;
        case Take::kWork:
          RunStep(next_step, std::move(message));
          break;
      }
    }
    PostTurn();       // more may be queued: yield the pool thread and come back behind other jobs
    SaveAfterTurn();  // meanwhile (saves are serialised among themselves, not with turns)
  }

  // kExecutor: queues the turn that turn_scheduled announced.
  void PostTurn() { OffloadOrEnd(&Shared::Turn, &Shared::TurnRefused); }

  // kExecutor: the pool refused the turn (full) or dropped it (a shutdown). Retried from a
  // timer in a millisecond; if the runtime refuses that too (it shut down), the worker moves
  // to a thread of its own (or, if none can be made, Stop runs what is left).
  void TurnRefused() {
    {
      // The retry, unless the runtime drops it unrun (a shutdown): then this again. Armed
      // once scheduled (a refused timer is handled below, not by the destructor).
      struct Retry {
        std::weak_ptr<Shared> weak;
        bool armed = false;
        bool ran = false;
        ~Retry() {
          if (!armed || ran) return;
          if (std::shared_ptr<Shared> self = weak.lock()) self->TurnRefused();
        }
      };
      auto retry = std::make_shared<Retry>();
      retry->weak = weak_from_this();
      HomeUse use = Use();
      absl::StatusOr<TimerHandle> timer =
          use.runtime().Schedule(absl::Milliseconds(1), [retry, job_use = use.Another()] {
            retry->ran = true;
            if (std::shared_ptr<Shared> self = retry->weak.lock()) self->PostTurn();
          });
      retry->armed = timer.ok();  // before our reference goes: the task may be gone already
      if (timer.ok()) return;
    }
    {
      MutexLock lock(&mu);
      if (worker_done || !executor()) return;           // ended, or already on its own thread
      on_pool.store(false, std::memory_order_release);  // Post and Wake now wake the thread
      turn_scheduled = false;
    }
    Log().warn(
        "keeper '{}': its runtime refuses offload jobs; the worker goes on on a thread "
        "of its own",
        options.name);
    try {
      MutexLock lock(&join_guard);
      worker = std::thread([self = shared_from_this()] { self->Run(); });
      return;
    } catch (const std::system_error&) {
    }
    {
      MutexLock lock(&mu);
      stranded = true;
    }
    cv.NotifyAll();
  }

  // Something the worker may act on happened (a backoff ended, a stop was asked for).
  void Wake() {
    cv.NotifyAll();
    {
      MutexLock lock(&mu);  // on_pool changes only under mu
      if (!executor() || turn_scheduled || worker_done) return;
      turn_scheduled = true;
    }
    PostTurn();
  }

  // The end: stopped, or gave up.
  void Finish() {
    EndIncarnation();
    FinalSave();  // before Stop returns: the last committed state is in the store
    uint64_t last_epoch, last_version;
    {
      SpinLockHolder lock(&state_mu);
      commits_open = false;
      last_epoch = epoch;
      last_version = version;
    }
    Termination end;
    {
      MutexLock lock(&mu);
      if (phase != KeeperPhase::kGaveUp) phase = KeeperPhase::kStopped;
      end.phase = phase;
      end.last_crash = phase == KeeperPhase::kGaveUp ? last_crash : std::nullopt;
    }
    end.epoch = last_epoch;
    end.version = last_version;
    {
      MutexLock lock(&dispatch_mu);
      termination = end;
    }
    ScheduleDispatch();
    {
      MutexLock lock(&mu);
      worker_done = true;
    }
    cv.NotifyAll();
  }

  void StartIncarnation(Step kind) {
    ErasedState last;
    uint64_t new_epoch;
    {
      SpinLockHolder lock(&state_mu);
      new_epoch = ++epoch;  // from here, commits of the old incarnation are stale
      epoch_alive = true;
      last = committed;
    }
    std::optional<Crash> cause;
    {
      MutexLock lock(&mu);
      cause = restore_cause.has_value() ? std::move(restore_cause) : last_crash;
      restore_cause.reset();
    }
    ErasedState next;
    try {
      next = kind == Step::kFirstStart ? hooks.first_start() : hooks.recover(last, *cause);
    } catch (...) {
      OnCrash(kind == Step::kFirstStart ? CrashSite::kFirstStart : CrashSite::kRecover,
              std::current_exception(), std::nullopt);
      return;
    }
    if (next != nullptr) (void)CommitAs(new_epoch, std::move(next));
    MutexLock lock(&mu);
    step = Step::kMessages;
    phase = KeeperPhase::kRunning;
  }

  void Handle(Message message) {
    ErasedState state;
    uint64_t current_epoch;
    {
      SpinLockHolder lock(&state_mu);
      state = committed;
      current_epoch = epoch;
    }
    if (message.commit_epoch != 0 && message.commit_epoch != current_epoch) {
      (void)CheckEpoch(message.commit_epoch);  // counts it as stale
      return;
    }
    Outcome outcome;
    try {
      outcome = message.handle(state);
    } catch (...) {
      OnCrash(CrashSite::kHandler, std::current_exception(), std::move(message));
      return;
    }
    {
      MutexLock lock(&mu);
      ++handled;  // before the reply, so that a caller's Stats() counts its own call
    }
    if (outcome.next != nullptr) (void)CommitAs(current_epoch, std::move(outcome.next));
    if (outcome.after_commit) std::move(outcome.after_commit)();
  }

  void EndIncarnation() {
    if (!hooks.end_incarnation) return;
    try {
      hooks.end_incarnation();
    } catch (...) {
      // A worker's destructor threw; the incarnation is over anyway.
    }
  }

  // A crash of the current incarnation: the message (if any) is failed, redelivered or
  // dead-lettered; then the next incarnation is planned, after a backoff, or the worker
  // gives up.
  void OnCrash(CrashSite site, std::exception_ptr error, std::optional<Message> message) {
    Crash crash;
    {
      SpinLockHolder lock(&state_mu);
      crash.epoch = epoch;
      epoch_alive = false;  // its late commits are refused from now on
    }
    crash.site = site;
    crash.what = WhatOf(error);
    Log().warn("keeper '{}': incarnation {} crashed in {}: {}", options.name, crash.epoch,
               SiteName(site), crash.what);
    EndIncarnation();

    absl::AnyInvocable<void(absl::Status) &&> fail_call;
    std::vector<Message> given_up;
    std::optional<DeadLetter> poisoned;
    bool gave_up = false;
    absl::Duration delay = absl::ZeroDuration();
    const bool has_committed = HasCommitted();
    {
      MutexLock lock(&mu);
      // Read under mu: TransferTo moves the home and the restart bookkeeping to another
      // clock under mu too, so these instants are all on one clock.
      crash.at = Use().runtime().Now();
      ++crashes;
      last_crash = crash;
      if (message.has_value()) {
        ++message->crashes;
        if (message->kind == MessageKind::kCall) {
          fail_call = std::move(message->fail);
        } else if (message->crashes >= options.poison_after) {
          poisoned = DeadLetter{
              message->kind, message->crashes,
              absl::StrCat("crashed ", message->crashes, " incarnations; the last: ", crash.what)};
          ++dead_letters;
        } else {
          queue.push_front(std::move(*message));  // delivered again, first
        }
      }
      // Restart intensity: the restarts in the window, this one included.
      const Instant window_start = AddDuration(crash.at, -options.restart_window);
      while (!recent_restarts.empty() && recent_restarts.front() <= window_start) {
        recent_restarts.pop_front();
      }
      if (static_cast<int>(recent_restarts.size()) >= options.max_restarts) {
        gave_up = true;
        phase = KeeperPhase::kGaveUp;
        accepting = false;
        for (Message& queued : queue) given_up.push_back(std::move(queued));
        queue.clear();
        for (const Message& m : given_up) dead_letters += m.kind != MessageKind::kCall ? 1 : 0;
      } else {
        recent_restarts.push_back(crash.at);
        ++restarts;
        step =
            site == CrashSite::kFirstStart && !has_committed ? Step::kFirstStart : Step::kRecover;
        phase = KeeperPhase::kRestarting;
        delay = BackoffLocked(recent_restarts.size());
        if (delay > absl::ZeroDuration() && !stop_requested) {
          paused = true;
          restart_due = AddDuration(crash.at, delay);
        }
      }
    }
    if (delay > absl::ZeroDuration() && !gave_up) ArmBackoff();
    if (fail_call) {
      std::move(fail_call)(absl::AbortedError(absl::StrCat(
          "keeper '", options.name, "': the worker crashed handling this call (", crash.what,
          "); the call was not applied, and its state is the last committed one")));
    }
    if (poisoned.has_value()) QueueDeadLetter(std::move(*poisoned));
    if (gave_up) {
      const std::string why =
          absl::StrCat("keeper '", options.name, "' gave up: more than ", options.max_restarts,
                       " restarts within ", absl::FormatDuration(options.restart_window),
                       "; last crash: ", crash.what);
      Log().error("{}", why);
      for (Message& m : given_up) {
        if (m.kind == MessageKind::kCall) {
          if (m.fail) std::move(m.fail)(absl::UnavailableError(why));
        } else {
          QueueDeadLetter(DeadLetter{m.kind, m.crashes, why});
        }
      }
      {
        SpinLockHolder lock(&state_mu);
        commits_open = false;
      }
      if (options.on_give_up == GiveUp::kEscalate) {
        MutexLock lock(&dispatch_mu);
        escalation = crash;
      }
      ScheduleDispatch();
    }
    cv.NotifyAll();
  }

  bool HasCommitted() {
    SpinLockHolder lock(&state_mu);
    return committed != nullptr;
  }

  // The delay before the n-th restart in the window (n >= 1).
  absl::Duration BackoffLocked(size_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (n <= 1) return absl::ZeroDuration();
    absl::Duration delay = options.backoff_initial;
    for (size_t i = 2; i < n && delay < options.backoff_max; ++i) delay *= 2;
    delay = std::min(delay, options.backoff_max);
    std::uniform_real_distribution<double> cut(0.0, options.backoff_jitter);
    return delay * (1.0 - cut(rng));
  }

  // Schedules the end of the backoff in progress at `due`, on the current home's clock. The
  // timer resumes only the backoff it was armed for (its id): one that was cancelled or
  // replaced (Stop, TransferTo) resumes nothing.
  void ArmBackoff() {
    std::optional<HomeUse> held;
    Instant due;
    uint64_t id;
    {
      // The id, the due instant and the home together, under mu (as TransferTo moves them).
      MutexLock lock(&mu);
      if (!paused || !restart_due.has_value()) return;  // stopped or resumed meanwhile
      id = ++backoff_id;
      due = *restart_due;
      held.emplace(Use());
    }
    HomeUse use = std::move(*held);
    // The guard resumes the worker when the timer runs, and also when the runtime drops it
    // unrun (a shutdown) or refuses it: a worker is never left paused for good. Scheduled
    // with no lock held (Resume takes `mu`).
    struct ResumeGuard {
      std::weak_ptr<Shared> weak;
      uint64_t id = 0;
      ~ResumeGuard() {
        if (std::shared_ptr<Shared> self = weak.lock()) self->Resume(id);
      }
    };
    auto guard = std::make_shared<ResumeGuard>();  // built in place: no copy to destroy
    guard->weak = weak_from_this();
    guard->id = id;
    absl::StatusOr<TimerHandle> timer = use.runtime().ScheduleAt(
        due, [guard, timer_use = use.Another()]() mutable { guard.reset(); });
    guard.reset();  // the timer's copy is the last one (none if it was refused: resumed now)
    if (!timer.ok()) return;
    bool superseded;
    {
      MutexLock lock(&mu);
      superseded = id != backoff_id || !paused;  // re-armed elsewhere, or already resumed
      if (!superseded) {
        backoff_timer = *timer;
        backoff_home = use.home();
      }
    }
    if (superseded) use.runtime().Cancel(*timer);  // a no-op if it ran
  }

  void Resume(uint64_t id) {
    {
      MutexLock lock(&mu);
      if (id != backoff_id || !paused) return;
      paused = false;
      restart_due.reset();
      backoff_timer.reset();
      backoff_home.reset();
    }
    Wake();
  }

  // ----- commits

  // OK when `as_epoch` is the current, live incarnation; else counted and refused.
  absl::Status CheckEpoch(uint64_t as_epoch) {
    SpinLockHolder lock(&state_mu);
    return CheckEpochLocked(as_epoch);
  }
  absl::Status CheckEpochLocked(uint64_t as_epoch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu) {
    if (as_epoch == epoch && as_epoch != 0 && epoch_alive && commits_open) {
      return absl::OkStatus();
    }
    ++stale_commits;
    std::string why = !commits_open       ? "the worker has ended"
                      : as_epoch != epoch ? absl::StrCat("the current incarnation is ", epoch)
                      : as_epoch == 0     ? "no incarnation has started yet"
                                          : "that incarnation crashed";
    return absl::FailedPreconditionError(absl::StrCat(
        "keeper '", options.name, "': a commit of incarnation ", as_epoch, " was refused: ", why));
  }

  // Commits `state` as `as_epoch`'s; the same pointer as the committed one changes nothing.
  absl::Status CommitAs(uint64_t as_epoch, ErasedState state) {
    ErasedState replaced;  // destroyed after the lock is released
    {
      SpinLockHolder lock(&state_mu);
      absl::Status live = CheckEpochLocked(as_epoch);
      if (!live.ok()) return live;
      if (state == committed) return absl::OkStatus();
      replaced = std::exchange(committed, std::move(state));
      ++version;
    }
    if (state_listeners.load(std::memory_order_relaxed) > 0) ScheduleDispatch();
    if (hooks.save && !executor()) ScheduleSave();  // kExecutor: after the turn
    return absl::OkStatus();
  }

  // ----- snapshots: one offloaded save at a time, of the newest committed state (coalesced)

  // Runs `run` on the offload pool; `end` instead if the pool refuses the job or drops it
  // unrun (a shutdown).
  void OffloadOrEnd(void (Shared::*run)(), void (Shared::*end)()) {
    HomeUse use = Use();  // held through the call; the job holds another
    struct Ticket {
      std::shared_ptr<Shared> self;
      void (Shared::*end)();
      bool ran = false;
      ~Ticket() {
        if (self != nullptr && !ran) (self.get()->*end)();
      }
    };
    auto ticket = std::make_shared<Ticket>();
    ticket->self = shared_from_this();
    ticket->end = end;
    absl::Status posted = use.runtime().Offload([ticket, run, job_use = use.Another()] {
      ticket->ran = true;
      (ticket->self.get()->*run)();
    });
    if (!posted.ok()) {
      ticket->ran = true;
      (this->*end)();
    }
  }

  void ScheduleSave() {
    {
      MutexLock lock(&save_mu);
      save_pending = true;  // a running save looks again before it ends
      if (save_in_flight || saves_closed) return;
      save_in_flight = true;
    }
    OffloadOrEnd(&Shared::SaveLoop, &Shared::EndSave);
  }

  // kExecutor: the save after a turn, on the turn's thread; joins a save in progress instead
  // (another turn's), which then saves the newest state too.
  void SaveAfterTurn() {
    if (!hooks.save) return;
    {
      MutexLock lock(&save_mu);
      save_pending = true;
      if (save_in_flight || saves_closed) return;
      save_in_flight = true;
    }
    SaveLoop();
  }

  void EndSave() {
    {
      MutexLock lock(&save_mu);
      save_in_flight = false;
    }
    save_cv.NotifyAll();
  }

  void SaveLoop() {
    for (;;) {
      {
        MutexLock lock(&save_mu);
        save_pending = false;
      }
      ErasedState state;
      uint64_t state_version;
      {
        SpinLockHolder lock(&state_mu);
        state = committed;
        state_version = version;
      }
      {
        MutexLock lock(&save_mu);
        const bool news = state != nullptr && state_version > saved_version;
        if (saves_closed || (!news && !save_pending)) {
          save_in_flight = false;  // cleared under the lock that ScheduleSave checks
          save_cv.NotifyAll();
          return;
        }
        if (!news) continue;
      }
      if (!SaveNow(state, state_version)) {
        EndSave();  // the next commit tries again; no retry loop against a failing store
        return;
      }
    }
  }

  // Saves `state` as `state_version`; false on an error (counted, logged, kept in Stats).
  bool SaveNow(const ErasedState& state, uint64_t state_version) {
    absl::Status saved;
    try {
      saved = hooks.save(state, state_version);
    } catch (...) {
      saved = absl::InternalError(
          absl::StrCat("the snapshot codec threw: ", WhatOf(std::current_exception())));
    }
    MutexLock lock(&save_mu);
    if (saved.ok()) {
      ++snapshots_saved;
      saved_version = std::max(saved_version, state_version);
      return true;
    }
    ++snapshot_failures;
    last_snapshot_error = saved;
    Log().warn("keeper '{}': saving the snapshot of version {} failed: {}", options.name,
               state_version, saved.ToString());
    return false;
  }

  // The worker's last save, on the worker thread as it ends: after an offloaded save in
  // progress, the newest committed state, unless it is already in the store.
  void FinalSave() {
    if (!hooks.save) return;
    {
      MutexLock lock(&save_mu);
      saves_closed = true;
      save_cv.Wait(&save_mu, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return !save_in_flight; });
      save_in_flight = true;
    }
    ErasedState state;
    uint64_t state_version;
    {
      SpinLockHolder lock(&state_mu);
      state = committed;
      state_version = version;
    }
    bool wanted;
    {
      MutexLock lock(&save_mu);
      wanted = state != nullptr && state_version > saved_version;
    }
    if (wanted) (void)SaveNow(state, state_version);
    EndSave();
  }

  // ----- listener dispatch: one offload task at a time, in version order, coalesced

  void ScheduleDispatch() {
    {
      MutexLock lock(&dispatch_mu);
      dispatch_pending = true;  // a running dispatch looks again before it ends
      if (dispatch_in_flight || dispatch_closed) return;
      dispatch_in_flight = true;
    }
    // Ends the dispatch if the task is refused or destroyed without running (a shutdown).
    OffloadOrEnd(&Shared::Dispatch, &Shared::EndDispatch);
  }

  void EndDispatch() {
    {
      MutexLock lock(&dispatch_mu);
      dispatch_in_flight = false;
    }
    dispatch_cv.NotifyAll();
  }

  void Dispatch() {
    // Ends the dispatch if a hook throws out of it (CallUser catches what listeners throw;
    // this is for what it cannot, e.g. bad_alloc copying the listener list).
    struct EndGuard {
      Shared* self;
      bool ended = false;
      ~EndGuard() {
        if (!ended) self->EndDispatch();
      }
    } end_guard{this};
    struct Dispatching {
      explicit Dispatching(const void* e) : previous(std::exchange(running_dispatch, e)) {}
      ~Dispatching() { running_dispatch = previous; }
      const void* previous;
    } dispatching(this);
    for (;;) {
      {
        MutexLock lock(&dispatch_mu);
        dispatch_pending = false;  // a commit or notice after this sets it again
      }
      ErasedState state;
      uint64_t state_epoch, state_version;
      {
        SpinLockHolder lock(&state_mu);
        state = committed;
        state_epoch = epoch;
        state_version = version;
      }
      std::optional<DeadLetter> letter;
      std::optional<Crash> escalate;
      std::optional<Termination> end;
      bool state_news = false;
      {
        MutexLock lock(&dispatch_mu);
        if (state_version > notified_version) {
          notified_version = state_version;
          state_news = true;
        } else if (!dead_letter_queue.empty()) {
          letter = std::move(dead_letter_queue.front());
          dead_letter_queue.pop_front();
        } else if (escalation.has_value()) {
          escalate = std::move(escalation);
          escalation.reset();
        } else if (termination.has_value() && !termination_told) {
          end = termination;
          termination_told = true;
        } else if (!dispatch_pending) {
          // Nothing new since the last look. Cleared under the same lock as the check, so a
          // commit after it schedules a new dispatch.
          dispatch_in_flight = false;
          end_guard.ended = true;
          dispatch_cv.NotifyAll();
          return;
        } else {
          continue;
        }
      }
      if (state_news && hooks.state_changed) {
        CallUser([&] { hooks.state_changed(state, state_epoch, state_version); });
      } else if (letter.has_value() && options.on_dead_letter) {
        CallUser([&] { options.on_dead_letter(*letter); });
      } else if (escalate.has_value()) {
        CallUser([&] { options.escalate(*escalate); });
      } else if (end.has_value() && hooks.terminated) {
        CallUser([&] { hooks.terminated(*end); });
      }
    }
  }

  // Whether anything is left to tell listeners (Close delivers it if the pool did not).
  bool UntoldNews() {
    uint64_t state_version;
    {
      SpinLockHolder lock(&state_mu);
      state_version = version;
    }
    MutexLock lock(&dispatch_mu);
    return state_version > notified_version || !dead_letter_queue.empty() ||
           escalation.has_value() || (termination.has_value() && !termination_told);
  }

  template <class F>
  void CallUser(F&& f) {
    try {
      f();
    } catch (...) {
      SpinLockHolder lock(&state_mu);
      ++listener_failures;
    }
  }

  void QueueDeadLetter(DeadLetter letter) {
    {
      MutexLock lock(&dispatch_mu);
      dead_letter_queue.push_back(std::move(letter));
    }
    ScheduleDispatch();
  }
};

absl::StatusOr<std::unique_ptr<KeeperEngine>> KeeperEngine::Start(Runtime& runtime,
                                                                  KeeperOptions options,
                                                                  Hooks hooks, Restored restored) {
  absl::Status valid = CheckOptions(options);
  if (!valid.ok()) return valid;
  if (!hooks.first_start || !hooks.recover) {
    return absl::InvalidArgumentError("keeper: the first_start and recover hooks are required");
  }
  std::unique_ptr<KeeperEngine> engine(new KeeperEngine());
  engine->shared_ =
      std::make_shared<Shared>(runtime, std::move(options), std::move(hooks), std::move(restored));
  Shared* shared = engine->shared_.get();
  if (shared->executor()) {
    shared->Wake();  // the first turn runs the first incarnation
  } else {
    MutexLock lock(&shared->join_guard);  // publishes `worker` to Stop
    shared->worker = std::thread([self = engine->shared_] { self->Run(); });
  }
  return engine;
}

KeeperEngine::~KeeperEngine() { Close(); }

void KeeperEngine::Close() {
  Shared& s = *shared_;
  if (InWorkerThread()) {
    // The worker cannot join itself; going on would free what it is running on.
    Log().critical("keeper '{}' was destroyed (or closed) from its own worker thread",
                   s.options.name);
    std::abort();
  }
  if (s.MightWaitForItself()) {
    // Stop would wait for a turn or a save queued behind this very job; not stopping would
    // free what the worker runs on.
    Log().critical(
        "keeper '{}' was destroyed (or closed) from a job on its runtime's offload pool while "
        "its worker runs there; stop it elsewhere first",
        s.options.name);
    std::abort();
  }
  (void)Stop();
  {
    MutexLock lock(&s.dispatch_mu);
    s.dispatch_cv.Wait(&s.dispatch_mu,
                       [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return !s.dispatch_in_flight; });
    if (s.dispatch_closed) return;
    // What the offload pool could not deliver (the runtime refused or dropped the task) is
    // delivered here, on the closing thread: the last state, dead letters, the escalation,
    // the termination.
    s.dispatch_in_flight = true;
  }
  if (s.UntoldNews()) {
    s.Dispatch();  // ends the dispatch when done
  } else {
    s.EndDispatch();
  }
  MutexLock lock(&s.dispatch_mu);
  s.dispatch_closed = true;
}

absl::Status KeeperEngine::Post(Message message) {
  Shared& s = *shared_;
  bool post_turn = false;
  {
    MutexLock lock(&s.mu);
    if (!s.accepting) {
      return absl::FailedPreconditionError(
          absl::StrCat("keeper '", s.options.name, "' ",
                       s.phase == KeeperPhase::kGaveUp ? "gave up" : "is stopping or stopped",
                       "; the message was not queued"));
    }
    s.queue.push_back(std::move(message));
    if (s.executor()) {  // changes only under mu
      if (s.turn_scheduled || s.worker_done) return absl::OkStatus();
      s.turn_scheduled = true;
      post_turn = true;
    }
  }
  if (post_turn) {
    s.PostTurn();
  } else {
    s.cv.NotifyAll();
  }
  return absl::OkStatus();
}

absl::Status KeeperEngine::Commit(uint64_t epoch, ErasedState state) {
  if (state == nullptr) return absl::InvalidArgumentError("a commit needs a state");
  absl::Status live = shared_->CheckEpoch(epoch);
  if (!live.ok()) return live;
  Message m;
  m.kind = MessageKind::kInfo;
  m.commit_epoch = epoch;
  m.handle = [state = std::move(state)](const ErasedState&) {
    Outcome outcome;
    outcome.next = state;
    return outcome;
  };
  return Post(std::move(m));
}

ErasedState KeeperEngine::Committed(uint64_t* epoch, uint64_t* version) const {
  SpinLockHolder lock(&shared_->state_mu);
  if (epoch != nullptr) *epoch = shared_->epoch;
  if (version != nullptr) *version = shared_->version;
  return shared_->committed;
}

uint64_t KeeperEngine::epoch() const {
  SpinLockHolder lock(&shared_->state_mu);
  return shared_->epoch;
}

KeeperStats KeeperEngine::Stats() const {
  Shared& s = *shared_;
  KeeperStats stats;
  {
    MutexLock lock(&s.mu);
    stats.phase = s.phase;
    stats.queued = s.queue.size();
    stats.handled = s.handled;
    stats.crashes = s.crashes;
    stats.restarts = s.restarts;
    stats.dead_letters = s.dead_letters;
    stats.last_crash = s.last_crash;
    stats.restart_due = s.paused ? s.restart_due : std::nullopt;
  }
  {
    MutexLock lock(&s.save_mu);
    stats.snapshots_saved = s.snapshots_saved;
    stats.snapshot_failures = s.snapshot_failures;
    stats.saved_version = s.saved_version;
    stats.last_snapshot_error = s.last_snapshot_error;
  }
  SpinLockHolder lock(&s.state_mu);
  stats.epoch = s.epoch;
  stats.version = s.version;
  stats.stale_commits = s.stale_commits;
  stats.listener_failures = s.listener_failures;
  return stats;
}

bool KeeperEngine::InWorkerThread() const noexcept { return running_worker == shared_.get(); }

absl::Status KeeperEngine::TransferTo(Runtime& target, absl::Duration timeout) {
  Shared& s = *shared_;
  if (InWorkerThread()) {
    return absl::FailedPreconditionError(
        absl::StrCat("keeper '", s.options.name, "': TransferTo from the worker's own code"));
  }
  if (running_dispatch == &s) {
    return absl::FailedPreconditionError(
        absl::StrCat("keeper '", s.options.name,
                     "': TransferTo from its own listener or hook would wait "
                     "for itself"));
  }
  if (s.Use().runtime().InOffloadPool()) {
    return absl::FailedPreconditionError(
        absl::StrCat("keeper '", s.options.name,
                     "': TransferTo from a job on its runtime's offload pool "
                     "could wait for its own thread"));
  }
  std::lock_guard<std::mutex> serial(s.transfer_mu);
  std::shared_ptr<Home> old;
  std::optional<HomeUse> timer_use;
  std::optional<TimerHandle> old_timer;
  bool rearm = false;
  {
    // From here, every new job and timer goes to `target`. The restart bookkeeping moves to
    // target's clock in the same step (under mu, as OnCrash reads the clock); a pending
    // backoff is re-armed there with the time it had left.
    MutexLock lock(&s.mu);
    {
      SpinLockHolder home_lock(&s.home_mu);
      if (&s.home->runtime == &target) return absl::OkStatus();
      old = std::exchange(s.home, std::make_shared<Home>(target));
    }
    const absl::Duration shift = Elapsed(old->runtime.Now(), target.Now());
    for (Instant& t : s.recent_restarts) t = AddDuration(t, shift);
    if (s.paused && s.restart_due.has_value()) {
      s.restart_due = AddDuration(*s.restart_due, shift);
      rearm = true;
      ++s.backoff_id;  // the old timer resumes nothing
      old_timer = std::move(s.backoff_timer);
      s.backoff_timer.reset();
      if (s.backoff_home != nullptr) timer_use.emplace(std::move(s.backoff_home));
      s.backoff_home.reset();
    }
  }
  if (old_timer.has_value() && timer_use.has_value()) timer_use->runtime().Cancel(*old_timer);
  timer_use.reset();
  if (rearm) s.ArmBackoff();
  // Jobs already queued or running on the old runtime finish there (a turn re-queues itself
  // on the new one); wait for them.
  MutexLock lock(&old->mu);
  if (!old->cv.WaitFor(&old->mu, timeout,
                       [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return old->uses == 0; })) {
    return absl::DeadlineExceededError(
        absl::StrCat("keeper '", s.options.name, "' moved to runtime '", target.name(), "', but ",
                     old->uses, " of its jobs still run on runtime '", old->runtime.name(),
                     "' after ", absl::FormatDuration(timeout)));
  }
  return absl::OkStatus();
}

void KeeperEngine::AddStateListeners(int delta) {
  shared_->state_listeners.fetch_add(delta, std::memory_order_relaxed);
}

void KeeperEngine::CountListenerFailure() {
  SpinLockHolder lock(&shared_->state_mu);
  ++shared_->listener_failures;
}

absl::Status KeeperEngine::Stop(absl::Duration timeout) {
  Shared& s = *shared_;
  if (InWorkerThread()) {
    return absl::FailedPreconditionError(
        absl::StrCat("keeper '", s.options.name, "': Stop from the worker's own thread"));
  }
  if (s.MightWaitForItself()) {
    return absl::FailedPreconditionError(
        absl::StrCat("keeper '", s.options.name,
                     "': Stop from a job on its runtime's offload pool could "
                     "wait for its own thread (the worker's turns or snapshot saves run there)"));
  }
  std::optional<TimerHandle> timer;
  std::optional<HomeUse> timer_use;  // taken under mu: the home cannot be left meanwhile
  {
    MutexLock lock(&s.mu);
    s.accepting = false;
    s.stop_requested = true;
    if (s.paused) {  // a backoff in progress: restart at once, to handle what is queued
      s.paused = false;
      ++s.backoff_id;  // the cancelled timer resumes nothing
      timer = std::move(s.backoff_timer);
      s.backoff_timer.reset();
      if (s.backoff_home != nullptr) timer_use.emplace(std::move(s.backoff_home));
      s.backoff_home.reset();
    }
  }
  if (timer.has_value() && timer_use.has_value()) timer_use->runtime().Cancel(*timer);
  timer_use.reset();
  s.Wake();
  const absl::Time deadline = absl::Now() + timeout;  // InfiniteFuture for no timeout
  for (;;) {
    {
      MutexLock lock(&s.mu);
      if (!s.cv.WaitFor(&s.mu, deadline - absl::Now(), [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return s.worker_done || s.stranded;
          })) {
        return absl::DeadlineExceededError(
            absl::StrCat("keeper '", s.options.name, "' did not stop within ",
                         absl::FormatDuration(timeout), " (a handler still runs)"));
      }
      if (s.worker_done) break;
      // kExecutor, and the runtime refuses turns (it shut down): the rest runs here.
      s.stranded = false;
    }
    s.Turn();
  }
  std::lock_guard<std::mutex> join_lock(s.join_mu);
  MutexLock lock(&s.join_guard);
  if (s.worker.joinable()) s.worker.join();
  return absl::OkStatus();
}

}  // namespace keel::internal
