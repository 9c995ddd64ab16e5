// Keeper<W>: a worker whose state survives its own crashes.
//
// A worker (an actor) owns a state and handles messages one at a time (on a thread of its
// own, or in turns on the runtime's offload pool: KeeperOptions::placement):
// calls (with a reply, awaited with a timeout), casts and plain messages (fire and forget;
// never block the sender). Its handlers do not mutate the state: they read the committed
// state and return the next one (or keel::kUnchanged). After a handler returns, the next
// state is committed: a pointer publish, not a copy. If a handler throws, the incarnation
// ends, the message is not applied, a new incarnation of the worker starts from the last
// committed state (OnRecover), and the message is delivered again (a cast or plain message,
// up to poison_after crashes, then it is dead-lettered) or its caller gets the error (a
// call). Restarts are bounded (restart intensity) and spaced by a jittered backoff; past the
// bound the worker gives up and its last state stays readable.
//
//   struct Counter {
//     using State = int64_t;
//     using Args = int64_t;   // OnFirstStart's argument
//     using CastMsg = int64_t;  // add
//     using CallMsg = std::monostate;  // read
//     using Reply = int64_t;
//     State OnFirstStart(const Args& start) { return start; }
//     keel::Next<State> OnRecover(const State&, const keel::Crash&) { return keel::kUnchanged; }
//     keel::Next<State> HandleCast(const State& n, const CastMsg& add) {
//       if (add == 13) throw std::runtime_error("unlucky");   // the count stays exact
//       return n + add;
//     }
//     keel::CallOutcome<State, Reply> HandleCall(const State& n, const CallMsg&) {
//       return {keel::kUnchanged, n};
//     }
//   };
//   auto counter = keel::Keeper<Counter>::Start(*runtime, 0);
//   (*counter)->Cast(5);
//   absl::StatusOr<int64_t> n = (*counter)->Call({}, absl::Seconds(1));
//
// The worker type W declares State, and any of the pairs (CastMsg, HandleCast),
// (InfoMsg, HandleInfo), (CallMsg + Reply, HandleCall); Keeper offers Cast, Send and Call
// for those it declares. Args and OnFirstStart(const Args&) -> State are required, and so
// is OnRecover(const State&, const Crash&) -> Next<State>. A new W is made (default
// constructed, or by the factory given to Start) for each incarnation, so members of W that
// are not the state do not survive a crash.
//
// Owned tables: large side state that must not be copied per update and need not be rolled
// back (caches, indexes) can live in tables the worker owns. A worker that declares
// `using Tables = T;` (T default-constructible), `void AdoptTables(std::unique_ptr<T>)` and
// `std::unique_ptr<T> ReleaseTables()` is handed the tables before OnFirstStart/OnRecover;
// when its incarnation ends (a crash included) the keeper takes them back, and hands them
// to the next incarnation: two pointer moves, whatever their size. Unlike the state, they
// keep whatever a crashed handler wrote to them.
//
// Epochs: each incarnation has an epoch, 1 for the first. Commit(epoch, next) lets work that
// a handler started elsewhere commit later; a commit from an older incarnation (one that has
// since crashed) is refused.
//
// Listeners: OnStateChange listeners hear committed states in version order, coalesced (a
// burst of commits may be heard as its last one), never for a handler that returned
// kUnchanged (or the committed state's own pointer); a keeper without state listeners
// spends nothing on them per commit; OnTerminate listeners hear once how the worker ended (stopped,
// or gave up with the crash that exceeded the intensity). Both run on the runtime's offload pool,
// one call at a time per keeper, never in the worker's own code: a slow listener does not slow
// the worker, and one that throws is counted (KeeperStats::listener_failures) and skipped.
//
// Placement: with kOwnThread (the default) W's code runs on the keeper's thread; with
// kExecutor, in turns on the offload pool, never two at once. Either way never on the control
// thread. If the runtime refuses turns for good (it shut down while the keeper lives), the
// worker goes on on a thread of its own, and stays there.
//
// Thread safety: thread-safe. Call, Cast, Send, Commit, state(), Stats(), TransferTo and
// Stop() may be called from any thread (Stop and TransferTo not from a job on the runtime's
// offload pool when the worker's turns or saves run there: FailedPrecondition); W's methods
// run one at a time, in the worker's own code only.
//
// Lifetime: the runtime (after TransferTo, the last target) must outlive the Keeper.
// Destroying the Keeper stops the worker (queued messages are handled first, the last state
// saved) and waits for listeners that are running, so it must not happen inside the worker's
// own handlers or, when turns or saves run on the pool, in an offload job (either aborts with
// a message), nor in its listeners (a deadlock). A listener may remove itself or others.
//
// Progress: Cast and Send take a short mutex to queue and never wait for the worker. Call
// waits for the reply up to its timeout (real time) and never spins; during a backoff it
// just waits. The worker blocks only waiting for messages or for a backoff to end.
#ifndef KEEL_KEEPER_H_
#define KEEL_KEEPER_H_

#include <algorithm>
#include <concepts>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "keel/internal/keeper_engine.h"
#include "keel/runtime.h"
#include "keel/snapshot.h"

namespace keel {

// Returned by a handler that leaves the state as it is: nothing is committed and no
// listener hears of it.
struct Unchanged {};
inline constexpr Unchanged kUnchanged{};

// What a handler commits: nothing (kUnchanged), a new state value, or a state already built
// and shared (committed by pointer, O(1) whatever its size).
template <class State>
class Next {
 public:
  Next(Unchanged) {}  // NOLINT: implicit, so that handlers `return keel::kUnchanged;`
  Next(State state)   // NOLINT: implicit, so that handlers `return new_state;`
      : next_(std::make_shared<const State>(std::move(state))) {}
  Next(std::shared_ptr<const State> state) : next_(std::move(state)) {}  // NOLINT

  bool changed() const noexcept { return next_ != nullptr; }
  std::shared_ptr<const State> Release() && { return std::move(next_); }

 private:
  std::shared_ptr<const State> next_;
};

// A call handler's result: what to commit, and the reply (delivered after the commit).
template <class State, class Reply>
struct CallOutcome {
  Next<State> next;
  Reply reply;
};

// A committed state with its incarnation and version; `state` is null before the first
// commit.
template <class State>
struct Committed {
  uint64_t epoch = 0;
  uint64_t version = 0;
  std::shared_ptr<const State> state;
};

namespace internal {
template <class W>
concept HasCast = requires(W w, const typename W::State& s, const typename W::CastMsg& m) {
  { w.HandleCast(s, m) } -> std::convertible_to<Next<typename W::State>>;
};
template <class W>
concept HasInfo = requires(W w, const typename W::State& s, const typename W::InfoMsg& m) {
  { w.HandleInfo(s, m) } -> std::convertible_to<Next<typename W::State>>;
};
// A worker with owned tables declares `using Tables = ...;` and hands them over both ways.
template <class W>
concept HasTables = requires(W w, std::unique_ptr<typename W::Tables> t) {
  w.AdoptTables(std::move(t));
  { w.ReleaseTables() } -> std::same_as<std::unique_ptr<typename W::Tables>>;
};
template <class W>
concept HasCall = requires(W w, const typename W::State& s, const typename W::CallMsg& m) {
  { w.HandleCall(s, m) } -> std::same_as<CallOutcome<typename W::State, typename W::Reply>>;
};

// A call's caller, waiting for the reply or the reason there is none.
template <class Reply>
class CallWaiter {
 public:
  void Set(absl::StatusOr<Reply> result) {
    std::lock_guard<std::mutex> lock(mu_);
    if (result_.has_value()) return;
    result_.emplace(std::move(result));
    cv_.notify_all();
  }
  // nullopt when `timeout` (real time) passed first.
  std::optional<absl::StatusOr<Reply>> Wait(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    auto ready = [&] { return result_.has_value(); };
    if (timeout >= absl::Hours(24 * 365 * 100)) {  // forever (and no wait_for overflow)
      cv_.wait(lock, ready);
    } else if (!cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), ready)) {
      return std::nullopt;
    }
    return std::move(*result_);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<absl::StatusOr<Reply>> result_;
};
}  // namespace internal

// Snapshots: how a Keeper keeps its committed state across process restarts (see
// Keeper::StartWithSnapshots). The user supplies the codec.
template <class State>
struct KeeperSnapshots {
  // Where snapshots go; shared with the caller (for example a FileSnapshotStore from
  // keel/snapshot_store.h). One keeper per store: two would refuse each other's sequences.
  std::shared_ptr<SnapshotStore> store;
  // The version of the bytes `encode` writes, >= 1. Raise it when the encoding changes, and
  // give `upgrade` a step from the previous version.
  uint32_t schema_version = 1;
  // Encodes a committed state. Runs on the offload pool (and, for the last save, on the
  // worker thread as it stops), one call at a time; may be called while the worker handles
  // the next messages (it reads an immutable committed state). An error (or exception) fails
  // that save only: it is counted (KeeperStats::snapshot_failures) and the next commit tries
  // again.
  std::function<absl::StatusOr<std::string>(const State&)> encode;
  // Decodes bytes of the current schema_version, at start. An error refuses the start.
  std::function<absl::StatusOr<State>(const std::string& bytes)> decode;
  // Turns bytes of schema version `from` into bytes of version `from` + 1; applied step by
  // step to an older snapshot before decode. May be null: an older snapshot then refuses the
  // start (as a newer one always does), with an error naming both versions.
  std::function<absl::StatusOr<std::string>(uint32_t from, std::string bytes)> upgrade;
};

// What StartWithSnapshots found in the store.
struct RestoreReport {
  bool restored = false;        // false: no snapshot, the worker started with OnFirstStart
  uint64_t sequence = 0;        // the snapshot's sequence (its keeper's commit version)
  uint32_t schema_version = 0;  // as it was stored (before upgrades)
  // The newer snapshots that were torn or corrupt and were skipped, newest first (each one is
  // also logged as a warning): lost commits a user should hear about.
  std::vector<absl::Status> skipped;
};

// W::Tables, or an empty type for workers without owned tables.
template <class W>
struct TablesOfImpl {
  struct None {};
  using type = None;
};
template <class W>
requires internal::HasTables<W>
struct TablesOfImpl<W> {
  using type = typename W::Tables;
};
template <class W>
using TablesOf = typename TablesOfImpl<W>::type;

template <class W>
class Keeper {
 public:
  using State = typename W::State;
  using Args = typename W::Args;
  using Factory = std::function<std::unique_ptr<W>()>;

  // Starts the worker (its thread, or its first turn), which makes the first incarnation and runs
  // OnFirstStart(args) on it (once: later incarnations run OnRecover). `make` makes each
  // incarnation's W (null: default construction, which W must then allow). InvalidArgument
  // for bad options.
  static absl::StatusOr<std::unique_ptr<Keeper>> Start(Runtime& runtime, Args args,
                                                       KeeperOptions options = {},
                                                       Factory make = nullptr) {
    return Launch(runtime, std::move(args), std::move(options), std::move(make), nullptr, {});
  }

  // Start, with the committed state kept across process restarts in `snapshots.store`.
  //
  // At start, the newest intact snapshot is loaded (blocking, on the calling thread), upgraded
  // to the codec's schema version and decoded; the first incarnation then runs OnRecover on
  // it with a Crash of site kRestart (OnFirstStart(args) runs only when the store has no
  // snapshot), and versions go on from the snapshot's sequence. Newer snapshots that were
  // torn or corrupt are skipped and reported (restore_report(), and a warning each).
  // After each commit the newest committed state is saved on the offload pool, one save at a
  // time (commits during a save are coalesced into the next one), as a snapshot whose
  // sequence is the commit's version; Stop (and giving up) saves the last state before
  // returning. A failing save is counted and does not stop the worker.
  //
  // Refused, with nothing started and the store untouched: a snapshot of a newer schema
  // version than the codec's, or an older one without an upgrade path (FailedPrecondition,
  // naming both versions); a snapshot that fails to upgrade or decode (its error, naming the
  // snapshot); a store that cannot be read (its error); a call on the runtime's control
  // thread (FailedPrecondition: loading blocks); a codec without encode or decode, a null
  // store or schema_version 0 (InvalidArgument).
  static absl::StatusOr<std::unique_ptr<Keeper>> StartWithSnapshots(
      Runtime& runtime, Args args, KeeperSnapshots<State> snapshots, KeeperOptions options = {},
      Factory make = nullptr) {
    const std::string prefix = absl::StrCat("keeper '", options.name, "': ");
    if (snapshots.store == nullptr || !snapshots.encode || !snapshots.decode ||
        snapshots.schema_version == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, "snapshots need a store, encode, decode and a schema_version >= 1"));
    }
    if (runtime.InControlThread()) {
      return absl::FailedPreconditionError(
          absl::StrCat(prefix,
                       "StartWithSnapshots loads from the store (blocking I/O); not on the "
                       "runtime's control thread"));
    }
    RestoreReport report;
    internal::KeeperEngine::Restored restored;
    restored.version = snapshots.store->last_sequence().value_or(0);
    absl::StatusOr<LoadedSnapshot> loaded = snapshots.store->Load();
    if (loaded.ok()) {
      report.skipped = std::move(loaded->skipped);
      for (const absl::Status& bad : report.skipped) {
        internal::LogKeeperWarning(
            absl::StrCat(prefix, "skipped a damaged snapshot: ", bad.ToString()));
      }
      Snapshot& snapshot = loaded->snapshot;
      absl::StatusOr<State> state = DecodeSnapshot(snapshots, snapshot, prefix);
      if (!state.ok()) return state.status();
      report.restored = true;
      report.sequence = snapshot.sequence;
      report.schema_version = snapshot.schema_version;
      restored.state = std::make_shared<const State>(std::move(*state));
      restored.version = std::max(restored.version, snapshot.sequence);
      restored.cause.site = CrashSite::kRestart;
      restored.cause.what =
          absl::StrCat("restored from snapshot ", snapshot.sequence, " (schema version ",
                       snapshot.schema_version, ") after a process restart");
      restored.cause.at = runtime.Now();
    } else if (absl::IsNotFound(loaded.status())) {
      // No intact snapshot: a first start. Damaged ones are in the NotFound message.
      if (restored.version > 0) {
        internal::LogKeeperWarning(absl::StrCat(
            prefix, "no intact snapshot; starting afresh: ", loaded.status().ToString()));
        report.skipped.push_back(loaded.status());
      }
    } else {
      return absl::Status(
          loaded.status().code(),
          absl::StrCat(prefix, "loading its snapshot: ", loaded.status().message()));
    }
    auto save = [store = snapshots.store, schema = snapshots.schema_version,
                 encode = snapshots.encode](const internal::ErasedState& state,
                                            uint64_t version) -> absl::Status {
      absl::StatusOr<std::string> bytes = encode(*static_cast<const State*>(state.get()));
      if (!bytes.ok()) return bytes.status();
      Snapshot snapshot;
      snapshot.schema_version = schema;
      snapshot.sequence = version;
      snapshot.bytes = std::move(*bytes);
      return store->Save(snapshot);
    };
    absl::StatusOr<std::unique_ptr<Keeper>> keeper =
        Launch(runtime, std::move(args), std::move(options), std::move(make), std::move(save),
               std::move(restored));
    if (keeper.ok()) (*keeper)->restore_report_ = std::move(report);
    return keeper;
  }

  // What StartWithSnapshots found (empty for Start). Immutable after start; any thread.
  const RestoreReport& restore_report() const { return restore_report_; }

  // Stops the worker (see Stop) and waits for running listeners.
  ~Keeper() {
    if (engine_ != nullptr) engine_->Close();  // listeners may still use engine_ until then
  }
  Keeper(const Keeper&) = delete;
  Keeper& operator=(const Keeper&) = delete;

  // Queues a cast; never waits for the worker. FailedPrecondition once stopped or given up.
  template <class M = W>
  requires internal::HasCast<M> absl::Status Cast(typename M::CastMsg message) {
    internal::KeeperEngine::Message m;
    m.kind = MessageKind::kCast;
    m.handle = [this, message = std::move(message)](const internal::ErasedState& state) {
      internal::KeeperEngine::Outcome outcome;
      outcome.next = Next<State>(instance_->HandleCast(AsState(state), message)).Release();
      return outcome;
    };
    return engine_->Post(std::move(m));
  }

  // Queues a plain message; never waits for the worker. FailedPrecondition as for Cast.
  template <class M = W>
  requires internal::HasInfo<M> absl::Status Send(typename M::InfoMsg message) {
    internal::KeeperEngine::Message m;
    m.kind = MessageKind::kInfo;
    m.handle = [this, message = std::move(message)](const internal::ErasedState& state) {
      internal::KeeperEngine::Outcome outcome;
      outcome.next = Next<State>(instance_->HandleInfo(AsState(state), message)).Release();
      return outcome;
    };
    return engine_->Post(std::move(m));
  }

  // Sends a call and waits up to `timeout` (real time) for its reply, which comes after the
  // handler's state is committed. Aborted when the handler threw (the call was not applied;
  // it is not delivered again), Unavailable when the worker gave up before handling it,
  // FailedPrecondition when it was stopped or when called from the worker's own thread,
  // DeadlineExceeded when the timeout passed first (the call stays queued and may still be
  // handled).
  template <class M = W>
  requires internal::HasCall<M> absl::StatusOr<typename M::Reply> Call(typename M::CallMsg message,
                                                                       absl::Duration timeout) {
    using Reply = typename M::Reply;
    if (engine_->InWorkerThread()) {
      return absl::FailedPreconditionError(
          "Keeper::Call from the worker's own thread would wait for itself");
    }
    auto waiter = std::make_shared<internal::CallWaiter<Reply>>();
    internal::KeeperEngine::Message m;
    m.kind = MessageKind::kCall;
    m.handle = [this, waiter, message = std::move(message)](const internal::ErasedState& state) {
      CallOutcome<State, Reply> result = instance_->HandleCall(AsState(state), message);
      internal::KeeperEngine::Outcome outcome;
      outcome.next = std::move(result.next).Release();
      outcome.after_commit = [waiter, reply = std::move(result.reply)]() mutable noexcept {
        try {
          waiter->Set(std::move(reply));
        } catch (...) {  // moving the reply threw: the caller hears that instead of waiting
          try {
            waiter->Set(absl::InternalError("the call's reply could not be delivered"));
          } catch (...) {
          }
        }
      };
      return outcome;
    };
    m.fail = [waiter](absl::Status why) { waiter->Set(std::move(why)); };
    absl::Status posted = engine_->Post(std::move(m));
    if (!posted.ok()) return posted;
    std::optional<absl::StatusOr<Reply>> reply = waiter->Wait(timeout);
    if (!reply.has_value()) {
      return absl::DeadlineExceededError(
          absl::StrCat("no reply within ", absl::FormatDuration(timeout),
                       "; the call stays queued and may still be handled"));
    }
    return std::move(*reply);
  }

  // Commits `next` as incarnation `epoch`'s (see the header comment), in mailbox order: after
  // the messages queued before it, and only if that incarnation is still current when its
  // turn comes (else it is dropped and counted in stale_commits). FailedPrecondition at once
  // when that incarnation has already ended (crashed, stopped or given up), InvalidArgument
  // for kUnchanged.
  absl::Status Commit(uint64_t epoch, Next<State> next) {
    return engine_->Commit(epoch, std::move(next).Release());
  }

  // The committed state: readable at any time, also after the worker stopped or gave up.
  Committed<State> state() const {
    Committed<State> c;
    c.state = std::static_pointer_cast<const State>(engine_->Committed(&c.epoch, &c.version));
    return c;
  }
  // The current incarnation's epoch: 0 until the first incarnation has started, then 1, 2...
  uint64_t epoch() const { return engine_->epoch(); }
  KeeperStats Stats() const { return engine_->Stats(); }

  using ListenerId = uint64_t;
  // Listeners; see the header comment. A listener added late hears the next change, not the
  // current state. RemoveListener returns once the listener is not running and will not run.
  ListenerId OnStateChange(std::function<void(const Committed<State>&)> listener) {
    std::lock_guard<std::mutex> lock(listeners_mu_);
    state_listeners_.push_back({next_listener_id_, std::move(listener)});
    engine_->AddStateListeners(1);
    return next_listener_id_++;
  }
  ListenerId OnTerminate(std::function<void(const Termination&)> listener) {
    std::lock_guard<std::mutex> lock(listeners_mu_);
    termination_listeners_.push_back({next_listener_id_, std::move(listener)});
    return next_listener_id_++;
  }
  void RemoveListener(ListenerId id) {
    // From inside a listener of this keeper, the running call is the caller's own: no wait.
    std::unique_lock<std::mutex> call_lock(calling_mu_, std::defer_lock);
    if (dispatching_ != this) call_lock.lock();  // waits for a running listener
    std::lock_guard<std::mutex> lock(listeners_mu_);
    const size_t removed =
        std::erase_if(state_listeners_, [id](const auto& l) { return l.id == id; });
    if (removed > 0) engine_->AddStateListeners(-static_cast<int>(removed));
    std::erase_if(termination_listeners_, [id](const auto& l) { return l.id == id; });
  }

  // Moves the worker to `target`, another runtime (or the same: nothing happens): from then
  // on its backoff timers, listeners, snapshot saves and, on an executor, its turns run on
  // `target`; the mailbox moves with the keeper, so no message is lost, repeated or
  // reordered, and senders need not pause. Returns once nothing of the keeper runs or is
  // queued on the previous runtime, which may then be shut down. A backoff in progress keeps
  // the time it had left, on target's clock. DeadlineExceeded when work on the previous
  // runtime (a slow listener or save) outlasts `timeout` (real time; the move itself is
  // done); FailedPrecondition from the worker's own handlers or this keeper's listeners
  // (either would wait for itself).
  absl::Status TransferTo(Runtime& target, absl::Duration timeout = absl::InfiniteDuration()) {
    if (dispatching_ == this) {
      return absl::FailedPreconditionError(
          "Keeper::TransferTo from one of its own listeners would wait for itself");
    }
    return engine_->TransferTo(target, timeout);
  }

  // Refuses new messages, lets the worker handle what is queued (a backoff in progress ends
  // at once), and joins the worker thread; DeadlineExceeded after `timeout` (real time; the
  // worker goes on stopping). FailedPrecondition from the worker's own thread.
  absl::Status Stop(absl::Duration timeout = absl::InfiniteDuration()) {
    return engine_->Stop(timeout);
  }

 private:
  explicit Keeper(Factory make) : make_(std::move(make)) {}

  static absl::StatusOr<std::unique_ptr<Keeper>> Launch(
      Runtime& runtime, Args args, KeeperOptions options, Factory make,
      absl::AnyInvocable<absl::Status(const internal::ErasedState&, uint64_t)> save,
      internal::KeeperEngine::Restored restored) {
    if (make == nullptr) {
      if constexpr (std::is_default_constructible_v<W>) {
        make = [] { return std::make_unique<W>(); };
      } else {
        return absl::InvalidArgumentError(
            "Keeper::Start: the worker type is not default-constructible; pass a factory");
      }
    }
    std::unique_ptr<Keeper> keeper(new Keeper(std::move(make)));
    Keeper* k = keeper.get();
    internal::KeeperEngine::Hooks hooks;
    hooks.first_start = [k, args = std::move(args)]() -> internal::ErasedState {
      k->MakeInstance();
      return std::make_shared<const State>(k->instance_->OnFirstStart(args));
    };
    hooks.recover = [k](const internal::ErasedState& last,
                        const Crash& crash) -> internal::ErasedState {
      k->MakeInstance();
      return std::move(k->instance_->OnRecover(*static_cast<const State*>(last.get()), crash))
          .Release();
    };
    hooks.end_incarnation = [k] { k->EndInstance(); };
    hooks.state_changed = [k](const internal::ErasedState& state, uint64_t epoch,
                              uint64_t version) {
      k->Notify(Committed<State>{epoch, version, std::static_pointer_cast<const State>(state)});
    };
    hooks.terminated = [k](const Termination& end) { k->NotifyTermination(end); };
    hooks.save = std::move(save);
    absl::StatusOr<std::unique_ptr<internal::KeeperEngine>> engine = internal::KeeperEngine::Start(
        runtime, std::move(options), std::move(hooks), std::move(restored));
    if (!engine.ok()) return engine.status();
    keeper->engine_ = std::move(*engine);
    return keeper;
  }

  // Upgrades (step by step) and decodes a loaded snapshot; errors name it.
  static absl::StatusOr<State> DecodeSnapshot(const KeeperSnapshots<State>& codec,
                                              Snapshot& snapshot, const std::string& prefix) {
    const std::string which = absl::StrCat("snapshot ", snapshot.sequence, " (schema version ",
                                           snapshot.schema_version, ")");
    if (snapshot.schema_version > codec.schema_version) {
      return absl::FailedPreconditionError(absl::StrCat(
          prefix, which, " was written by a newer codec; this one reads schema version ",
          codec.schema_version,
          " and upgrades older ones, never newer. Refusing to start "
          "rather than lose that state"));
    }
    if (snapshot.schema_version < codec.schema_version && !codec.upgrade) {
      return absl::FailedPreconditionError(absl::StrCat(
          prefix, which, " is older than the codec's schema version ", codec.schema_version,
          " and the codec has no upgrade hook. Refusing to start rather than lose that state"));
    }
    try {
      std::string bytes = std::move(snapshot.bytes);
      for (uint32_t v = snapshot.schema_version; v < codec.schema_version; ++v) {
        absl::StatusOr<std::string> up = codec.upgrade(v, std::move(bytes));
        if (!up.ok()) {
          return absl::Status(up.status().code(),
                              absl::StrCat(prefix, "upgrading ", which, " from schema version ", v,
                                           " to ", v + 1, ": ", up.status().message()));
        }
        bytes = std::move(*up);
      }
      absl::StatusOr<State> state = codec.decode(bytes);
      if (!state.ok()) {
        return absl::Status(state.status().code(), absl::StrCat(prefix, "decoding ", which, ": ",
                                                                state.status().message()));
      }
      return state;
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat(prefix, "the codec threw on ", which, ": ", e.what()));
    } catch (...) {
      return absl::InternalError(absl::StrCat(
          prefix, "the codec threw something that is not a std::exception on ", which));
    }
  }

  void MakeInstance() {
    instance_ = make_();
    if (instance_ == nullptr) throw std::logic_error("the keeper's factory returned null");
    if constexpr (internal::HasTables<W>) {
      if (tables_ == nullptr) tables_ = std::make_unique<typename W::Tables>();
      instance_->AdoptTables(std::move(tables_));  // a pointer move, whatever their size
    }
  }

  // Ends the incarnation's worker; its owned tables come back to the keeper first (what a
  // crashed handler wrote to them stays: tables are not rolled back, only the state is).
  void EndInstance() {
    if (instance_ == nullptr) return;
    if constexpr (internal::HasTables<W>) {
      std::unique_ptr<typename W::Tables> back = instance_->ReleaseTables();
      if (back != nullptr) tables_ = std::move(back);
    }
    instance_.reset();
  }

  static const State& AsState(const internal::ErasedState& state) {
    return *static_cast<const State*>(state.get());
  }

  template <class F>
  struct Listener {
    ListenerId id;
    F call;
  };

  template <class List, class Value>
  void CallEach(const List& list, const Value& value) {
    std::lock_guard<std::mutex> call_lock(calling_mu_);
    List copy;
    {
      std::lock_guard<std::mutex> lock(listeners_mu_);
      copy = list;
    }
    struct Dispatching {  // marks this thread as running this keeper's listeners
      explicit Dispatching(Keeper* k) : previous(std::exchange(dispatching_, k)) {}
      ~Dispatching() { dispatching_ = previous; }
      Keeper* previous;
    } dispatching(this);
    for (const auto& listener : copy) {
      try {
        listener.call(value);
      } catch (...) {
        engine_->CountListenerFailure();
      }
    }
  }
  void Notify(const Committed<State>& committed) { CallEach(state_listeners_, committed); }
  void NotifyTermination(const Termination& end) { CallEach(termination_listeners_, end); }

  const Factory make_;
  std::unique_ptr<W> instance_;  // the current incarnation; worker thread only
  // Owned tables between incarnations (W::Tables, when W declares it); worker thread only.
  std::unique_ptr<TablesOf<W>> tables_;

  std::mutex calling_mu_;  // held while listeners run (RemoveListener waits on it)
  std::mutex listeners_mu_;
  std::vector<Listener<std::function<void(const Committed<State>&)>>> state_listeners_;
  std::vector<Listener<std::function<void(const Termination&)>>> termination_listeners_;
  ListenerId next_listener_id_ = 1;

  RestoreReport restore_report_;
  std::unique_ptr<internal::KeeperEngine> engine_;  // last: destroyed first

  static inline thread_local Keeper* dispatching_ = nullptr;  // see CallEach
};

}  // namespace keel

#endif  // KEEL_KEEPER_H_
