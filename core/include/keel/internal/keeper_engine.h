// Internal to keel: the type-erased engine under keel::Keeper<W> (keel/keeper.h). Users
// include keel/keeper.h, never this header.
//
// The engine owns what does not depend on the worker's types: the worker thread and its
// mailbox, the committed state (as a shared_ptr<const void>) with its epoch and version,
// crash handling (redelivery, poison messages, restart intensity and backoff), and the
// listener dispatch. Keeper<W> turns typed messages into Messages whose `handle` runs the
// worker's handler and returns what to commit.
//
// Threads: the worker thread runs the hooks and every `handle`; the control thread runs
// backoff timers (which only wake the worker thread); the offload pool runs listeners; any
// thread posts messages, reads the committed state and stops the engine.
#ifndef KEEL_INTERNAL_KEEPER_ENGINE_H_
#define KEEL_INTERNAL_KEEPER_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "keel/clock.h"
#include "keel/runtime.h"

namespace keel {

// Where an incarnation crashed.
enum class CrashSite {
  kFirstStart,  // OnFirstStart threw
  kRecover,     // OnRecover threw
  kHandler,     // a message handler threw
  kRestart,     // not a crash in this process: the state was restored from a snapshot
                // saved before the process restarted (the first incarnation's OnRecover)
};

// What ended an incarnation: the exception that escaped the worker's code (or, with site
// kRestart, the snapshot the state was restored from).
struct Crash {
  uint64_t epoch = 0;  // the incarnation that crashed
  CrashSite site = CrashSite::kHandler;
  std::string what;  // the exception's what(), or a note that it was not a std::exception
  Instant at;        // on the runtime's clock
};

// The kinds of message a worker handles.
enum class MessageKind {
  kCall,  // with a reply, awaited by its caller
  kCast,  // fire and forget
  kInfo,  // a plain message (Send)
};

// A message that crashed the worker poison_after times, handed to the dead-letter hook; or a
// message still queued when the worker gave up.
struct DeadLetter {
  MessageKind kind = MessageKind::kCast;
  int crashes = 0;         // how many incarnations it crashed
  std::string last_error;  // why it was given up
};

enum class KeeperPhase {
  kRunning,     // handling messages (or waiting for them)
  kRestarting,  // between a crash and the next incarnation (backoff)
  kStopped,     // Stop() was called, or the Keeper was destroyed
  kGaveUp,      // crashed more often than the restart intensity allows
};

// What to do when the restart intensity is exceeded.
enum class GiveUp {
  kStop,      // stop; the last committed state stays readable
  kEscalate,  // the same, and tell the `escalate` hook (the parent)
};

// Where a worker's handlers (and hooks) run. Never on the runtime's control thread: a slow
// handler must not delay timers, fetches or heartbeats.
enum class Placement {
  // A thread of the worker's own, blocked while the mailbox is empty. The lowest latency.
  kOwnThread,
  // Turns on the runtime's offload pool: no thread per worker. A turn handles up to
  // executor_batch messages, then yields the pool thread to other jobs (the next turn is
  // queued behind them). Handlers then share the pool with listeners, saves and other offload
  // jobs: a handler that blocks holds a pool thread.
  kExecutor,
};

struct KeeperOptions {
  // Names the worker in logs, errors and telemetry.
  std::string name = "keeper";
  Placement placement = Placement::kOwnThread;
  // With kExecutor: the most messages one turn handles, >= 1.
  int executor_batch = 64;
  // Restart intensity: more than max_restarts restarts within restart_window make the worker
  // give up (on_give_up). max_restarts >= 0; the window > 0.
  int max_restarts = 5;
  absl::Duration restart_window = absl::Seconds(10);
  // Backoff before a restart: none for the first restart in the window; then backoff_initial,
  // doubling per restart in the window, at most backoff_max, each cut by a random fraction of
  // up to backoff_jitter (in [0, 1)). On the runtime's clock.
  absl::Duration backoff_initial = absl::Milliseconds(10);
  absl::Duration backoff_max = absl::Seconds(1);
  double backoff_jitter = 0.2;
  // Seeds the jitter; 0 draws a random seed. Tests fix it for deterministic delays.
  uint64_t jitter_seed = 0;
  // A cast or info message that crashed poison_after incarnations is handed to
  // on_dead_letter (and counted) instead of being delivered again; >= 1. A call is never
  // delivered again: its caller gets the error at once (see Keeper::Call).
  int poison_after = 3;
  GiveUp on_give_up = GiveUp::kStop;
  // Told (on the offload pool) about dead letters; may be null. Must not block for long.
  std::function<void(const DeadLetter&)> on_dead_letter = nullptr;
  // kEscalate: told (on the offload pool) the crash that exceeded the intensity.
  std::function<void(const Crash&)> escalate = nullptr;
};

// Counters and the current phase; a consistent-enough snapshot.
struct KeeperStats {
  KeeperPhase phase = KeeperPhase::kRunning;
  uint64_t epoch = 0;               // the current (or last) incarnation, from 1
  uint64_t version = 0;             // commits so far (the first state is version 1)
  uint64_t queued = 0;              // messages waiting in the mailbox
  uint64_t handled = 0;             // messages handled without a crash
  uint64_t crashes = 0;             // incarnations that crashed (handlers, OnRecover, OnFirstStart)
  uint64_t restarts = 0;            // incarnations started after a crash
  uint64_t dead_letters = 0;        // messages given up
  uint64_t stale_commits = 0;       // commits refused because their epoch was not current
  uint64_t listener_failures = 0;   // listener calls that threw
  std::optional<Crash> last_crash;  // the latest crash, if any
  // In a backoff: when the next incarnation is due, on the runtime's clock.
  std::optional<Instant> restart_due;
  // Snapshots (Keeper::StartWithSnapshots; all zero without): saves that succeeded and
  // failed, the newest version known to be in the store (saved, or restored from), and the
  // last failure (OK when none).
  uint64_t snapshots_saved = 0;
  uint64_t snapshot_failures = 0;
  uint64_t saved_version = 0;
  absl::Status last_snapshot_error;
};

// How a worker ended, told to termination listeners once.
struct Termination {
  KeeperPhase phase = KeeperPhase::kStopped;  // kStopped or kGaveUp
  uint64_t epoch = 0;
  uint64_t version = 0;             // the last committed version, still readable
  std::optional<Crash> last_crash;  // for kGaveUp, the crash that exceeded the intensity
};

namespace internal {

using ErasedState = std::shared_ptr<const void>;

// Logs a warning through keel's logger (the typed layer is header-only).
void LogKeeperWarning(const std::string& message);

class KeeperEngine {
 public:
  // What a handler produced: a state to commit (null: unchanged), and what to do after the
  // commit (deliver a call's reply).
  struct Outcome {
    ErasedState next;
    absl::AnyInvocable<void() &&> after_commit;
  };
  struct Message {
    MessageKind kind = MessageKind::kCast;
    int crashes = 0;
    // Runs the handler on the committed state; throws what the handler throws.
    absl::AnyInvocable<Outcome(const ErasedState& state)> handle;
    // A call's caller: told why the message will not be handled. Null for casts and infos.
    absl::AnyInvocable<void(absl::Status) &&> fail;
    // Non-zero: the message is a commit of that incarnation's, dropped (and counted as a
    // stale commit) if another incarnation is current when its turn comes.
    uint64_t commit_epoch = 0;
  };
  struct Hooks {
    // Make a new worker instance and run OnFirstStart; returns the first state (non-null).
    absl::AnyInvocable<ErasedState()> first_start;
    // Make a new worker instance and run OnRecover on the last committed state; returns the
    // state to go on with (null: the committed one, unchanged).
    absl::AnyInvocable<ErasedState(const ErasedState& state, const Crash& crash)> recover;
    // Destroy the worker instance of a crashed or ended incarnation.
    absl::AnyInvocable<void()> end_incarnation;
    // Listener fan-out, on the offload pool, one call at a time, in version order.
    absl::AnyInvocable<void(const ErasedState& state, uint64_t epoch, uint64_t version)>
        state_changed;
    absl::AnyInvocable<void(const Termination& termination)> terminated;
    // Saves a committed state as `version` (a snapshot); null without snapshots. One call at
    // a time: on the offload pool after commits (coalesced), and a last one when the worker
    // ends. May block; an error is counted and the next commit tries again.
    absl::AnyInvocable<absl::Status(const ErasedState& state, uint64_t version)> save;
  };
  // Where the first incarnation starts from. With a state (restored from a snapshot), the
  // first incarnation runs `recover` on it with `cause` (site kRestart) and commits go on
  // from `version`; without one, it runs `first_start`, and versions still start past
  // `version` (a snapshot store's last sequence).
  struct Restored {
    ErasedState state;
    uint64_t version = 0;
    Crash cause;
  };

  // Starts the worker thread, which runs the first incarnation at once. InvalidArgument for
  // bad options.
  static absl::StatusOr<std::unique_ptr<KeeperEngine>> Start(Runtime& runtime,
                                                             KeeperOptions options, Hooks hooks,
                                                             Restored restored);
  // Close().
  ~KeeperEngine();
  // Moves the engine to `target`: from the call on, its timers (backoff), listener and
  // snapshot jobs and, with kExecutor, its turns run on `target`; returns once nothing of the
  // engine runs on the previous runtime or is queued there (so that runtime may be shut down).
  // The mailbox is the engine's own: no message is lost, repeated or reordered. A backoff in
  // progress keeps its remaining time, and the restart window its recent restarts, on
  // target's clock. DeadlineExceeded when jobs on the previous runtime are still running
  // after `timeout` (real time; the move itself is done). FailedPrecondition from the
  // worker's own code. Thread-safe; concurrent transfers are serialised.
  absl::Status TransferTo(Runtime& target, absl::Duration timeout = absl::InfiniteDuration());

  // Stops (as Stop with no timeout), waits for the listeners' dispatch to end (the
  // termination notice included), and lets no listener run again. Idempotent.
  void Close();
  KeeperEngine(const KeeperEngine&) = delete;
  KeeperEngine& operator=(const KeeperEngine&) = delete;

  // Queues `message`; never waits for the worker. FailedPrecondition once the worker has
  // stopped or given up (a call's `fail` is not called then: the error is returned).
  absl::Status Post(Message message);

  // Queues a commit of `state` as incarnation `epoch`'s, applied in mailbox order (after what
  // is queued, before what comes later), and only if that incarnation is still current then.
  // FailedPrecondition at once (nothing queued) when `epoch` is not the current, live
  // incarnation, or the worker has ended.
  absl::Status Commit(uint64_t epoch, ErasedState state);

  // The committed state (null before the first commit), with its epoch and version.
  ErasedState Committed(uint64_t* epoch, uint64_t* version) const;
  uint64_t epoch() const;
  KeeperStats Stats() const;
  bool InWorkerThread() const noexcept;

  // Refuses new messages, lets the worker handle what is queued, ends the incarnation and
  // joins the worker thread; DeadlineExceeded if that takes longer than `timeout` (real
  // time; the worker goes on stopping). Idempotent. Not from the worker thread.
  absl::Status Stop(absl::Duration timeout = absl::InfiniteDuration());

  // Counts a listener call that threw (the typed layer calls the listeners).
  void CountListenerFailure();
  // How many state listeners the typed layer holds: with none, commits dispatch nothing (no
  // offload task per commit). Any thread.
  void AddStateListeners(int delta);

  struct Shared;  // state shared with the worker thread, timers and listener tasks

 private:
  KeeperEngine() = default;
  std::shared_ptr<Shared> shared_;
};

}  // namespace internal
}  // namespace keel

#endif  // KEEL_INTERNAL_KEEPER_ENGINE_H_
