// keel::Keeper<W> beside the worker a user would otherwise write, in the same run: how fast a
// crashed worker is back with its state, what a call's round trip costs, and what a commit
// costs as the state grows.
//
// Every keeper here runs on one keel::Runtime created with default options (steady clock,
// two offload threads), with no listeners. Rows:
//
// Restart (one thread, wall time, fixed iterations; counters p50_ns, p99_ns, p999_ns, max_ns):
//   BM_Keeper_Restart        one iteration is one crash and recovery: the bench thread arms a
//                            flag and casts; the cast's handler sees the flag, disarms it,
//                            reads steady_clock and throws. keel ends the incarnation (the
//                            message is not applied), starts a new one from the last committed
//                            state (a new W, OnRecover returns kUnchanged) and delivers the
//                            cast again, first; the first handler of the new incarnation reads
//                            steady_clock on entry. The latency is the difference, both reads
//                            on the worker thread: everything keel does between a throw and
//                            the next handler (unwinding, recording the crash, the warning it
//                            logs, restart intensity, a new W, OnRecover, taking the message).
//                            A call then waits until the redelivered cast was handled (so the
//                            time columns are one crash + redelivery + one call's round trip).
//                            restart_window is 1 ns, so every crash is the first restart in its
//                            window (no backoff by design; backoff_initial and backoff_max are
//                            0 anyway), and max_restarts and poison_after never trip. keel logs
//                            one warning per crash; this row installs a log sink that counts
//                            the lines and drops them (a service routes them to its own
//                            logging), so the latency includes formatting the line but no I/O.
//   BM_Keeper_RestartLogOff  the same with keel's log level set to kOff: what the warning costs.
// Both rows check that every crash was restarted and every cast applied exactly once (the run
// fails otherwise); counter log_lines_per_crash says what was logged.
//
// Round trip (wall time; 1 and 2 caller threads sharing one worker):
//   BM_Keeper_Call       Keeper::Call(1, 10 s) on a worker whose state is {int64 count}; the
//                        handler returns the state {count + 1} (committed: one small
//                        allocation and a pointer publish) and replies the new count.
//   BM_PlainWorker_Call  the peer: a std::thread taking requests from a std::deque under a
//                        std::mutex and std::condition_variable; each request carries its
//                        own waiter (mutex, condition variable, done flag, reply) on the
//                        caller's stack; the worker adds 1 to its count in place and replies
//                        the new count. No timeout, no crash handling, no commit.
//   BM_Keeper_CallRead / BM_PlainWorker_CallRead
//                        the same with 0 to add: keel's handler returns kUnchanged (nothing
//                        is committed), the peer adds 0. The difference between the Call and
//                        CallRead rows is what a commit adds to a round trip.
// All return the count, which goes to DoNotOptimize. Round trips are two thread wake-ups, so
// their wall time depends on the scheduler and on whatever else runs on the machine; two
// counters (thread 0 reads the process's figures before and after its loop, divided by all
// threads' calls) say where the time goes:
//   cpu_ns_per_call  CPU time of the whole process (every thread: callers, worker, keel's
//                    control thread and offload pool) per call
//   waits_per_call   voluntary context switches of the whole process per call: how many times
//                    a thread went to sleep waiting (a caller for its reply, the worker for
//                    its next message, an offload thread for its next job)
//
// Commit cost as the state grows (one thread, manual time; argument: blob size in bytes, 1 KB,
// 1 MB, 100 MB). The state is {shared_ptr<const std::string> blob, int64 count}; the blob is
// built once before the runs. One iteration is one cast, handled and committed on the worker
// thread. Per batch, the bench thread first casts a gate message whose handler blocks the
// worker, then queues the batch's casts, opens the gate (the clock starts) and makes one call,
// which is handled after the batch (the clock stops when it returns). So the time per
// iteration is the worker's own cost per message (take it from the mailbox, run the handler,
// commit), handled back to back, without the bench thread's posting competing for the
// mailbox; it includes, once per batch, waking the worker and the call's round trip.
//   BM_Keeper_Commit        the cast returns {same blob, count + 1}: the blob is shared, the
//                           commit publishes a pointer to a new small state. Batches of 1024
//                           at every size. The time must not grow with the size.
//   BM_CopyOnCommit_Commit  the peer: what committing costs when each commit copies the state,
//                           as a naive design does: the cast returns {a copy of the blob,
//                           count + 1} (the old copy is freed when the new state replaces it).
//                           Batches of 64 MB / size messages (1024 for 1 KB, 64 for 1 MB, 1
//                           for 100 MB), so that a batch takes at most about 100 ms.
// Both rows check the count after each batch (the run fails if a cast was lost).
//
// The development machine is a 2-vCPU VM: the bench thread, the worker thread and the
// runtime's threads (control thread, offload pool that runs listener dispatch) share two cores.
// There, a wake-up that lands on the other, idle vCPU costs tens of µs (the hypervisor has to
// run it again), one on the same vCPU a few µs; which one a round trip gets depends on where
// the scheduler put the threads, so the Call rows' wall times jump between about 3 µs and
// 60 µs from run to run, for keel and the peer alike. Run under `taskset -c 0` (all threads,
// keel's included, on one CPU), every hand-off is a same-CPU switch and the rows repeat within
// a few percent. waits_per_call repeats within a few percent either way; cpu_ns_per_call
// moves with the wall time.
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <latch>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "keel/keeper.h"
#include "keel/logging.h"
#include "keel/runtime.h"

namespace {

constexpr absl::Duration kCallTimeout = absl::Seconds(10);

keel::Runtime* runtime = nullptr;  // created in main() before any benchmark runs

// The options of every keeper here: no backoff, no give-up, no dead letters.
keel::KeeperOptions BenchOptions(const char* name) {
  keel::KeeperOptions options;
  options.name = name;
  options.max_restarts = 1'000'000;
  options.restart_window = absl::Nanoseconds(1);
  options.backoff_initial = absl::ZeroDuration();
  options.backoff_max = absl::ZeroDuration();
  options.backoff_jitter = 0.0;
  options.poison_after = 1'000'000;
  return options;
}

template <class W>
std::unique_ptr<keel::Keeper<W>> StartKeeper(
    typename W::Args args, const char* name, typename keel::Keeper<W>::Factory make = nullptr,
    keel::Placement placement = keel::Placement::kOwnThread) {
  keel::KeeperOptions options = BenchOptions(name);
  options.placement = placement;
  auto keeper = keel::Keeper<W>::Start(*runtime, std::move(args), std::move(options), make);
  if (!keeper.ok()) {
    std::fprintf(stderr, "keeper_bench: cannot start keeper %s: %s\n", name,
                 keeper.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(keeper);
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// --- Restart ----------------------------------------------------------------------------

// Shared by every incarnation of a Crasher and the bench thread. The bench thread writes
// `armed` before the Cast that the worker reads it in (the keeper's mailbox mutex orders
// them); the worker writes the rest before replying to the Call that the bench thread then
// reads them after (the reply's mutex orders them).
struct CrashProbe {
  bool armed = false;
  int64_t threw_at_ns = 0;      // steady_clock just before the throw
  int64_t recovered_at_ns = 0;  // steady_clock on entry to a new incarnation's first handler
  int recovered = 0;            // first handlers of incarnations after the first
};

struct Crasher {
  struct State {
    int64_t count = 0;
  };
  using Args = int64_t;
  struct CastMsg {
    bool may_crash = false;
  };
  using CallMsg = std::monostate;
  using Reply = int64_t;

  explicit Crasher(CrashProbe* p) : probe(p) {}

  State OnFirstStart(const Args& start) { return State{start}; }
  keel::Next<State> OnRecover(const State&, const keel::Crash&) { return keel::kUnchanged; }
  keel::Next<State> HandleCast(const State& s, const CastMsg& m) {
    const int64_t entered_at = NowNs();
    if (!handled_any && probe->threw_at_ns != 0) {  // the first handler after a crash
      probe->recovered_at_ns = entered_at;
      ++probe->recovered;
    }
    handled_any = true;
    if (m.may_crash && probe->armed) {
      probe->armed = false;
      probe->threw_at_ns = NowNs();
      throw std::runtime_error("injected crash");
    }
    return State{s.count + 1};
  }
  keel::CallOutcome<State, Reply> HandleCall(const State& s, const CallMsg&) {
    handled_any = true;
    return {keel::kUnchanged, s.count};
  }

  CrashProbe* probe;
  bool handled_any = false;  // by this incarnation
};

// Log lines keel wrote during the restart rows. relaxed: a count read after the runs' last
// call returned (whose reply orders it after the worker's writes).
std::atomic<int64_t> log_lines{0};

void RestartRow(benchmark::State& state, bool log_off) {
  keel::SetLogSink(
      [](keel::LogLevel, std::string_view) { log_lines.fetch_add(1, std::memory_order_relaxed); });
  if (log_off) keel::SetLogLevel(keel::LogLevel::kOff);
  const int64_t lines_before = log_lines.load(std::memory_order_relaxed);

  CrashProbe probe;
  auto keeper =
      StartKeeper<Crasher>(0, "crasher", [&probe] { return std::make_unique<Crasher>(&probe); });
  std::vector<int64_t> latencies_ns;
  latencies_ns.reserve(state.max_iterations);
  int64_t expected = 0;
  for (auto _ : state) {
    probe.armed = true;
    (void)keeper->Cast({.may_crash = true});
    absl::StatusOr<int64_t> count = keeper->Call({}, kCallTimeout);
    ++expected;
    if (!count.ok() || *count != expected || probe.recovered != expected) {
      state.SkipWithError(
          absl::StrCat("crash ", expected, ": count ",
                       count.ok() ? absl::StrCat(*count) : count.status().ToString(),
                       ", recoveries ", probe.recovered)
              .c_str());
      break;
    }
    latencies_ns.push_back(probe.recovered_at_ns - probe.threw_at_ns);
  }
  const keel::KeeperStats stats = keeper->Stats();
  keeper.reset();
  if (log_off) keel::SetLogLevel(keel::LogLevel::kWarn);
  keel::SetLogSink(nullptr);
  if (latencies_ns.empty()) return;
  if (stats.crashes != latencies_ns.size() || stats.restarts != latencies_ns.size() ||
      stats.dead_letters != 0) {
    state.SkipWithError(absl::StrCat("stats: ", stats.crashes, " crashes, ", stats.restarts,
                                     " restarts, ", stats.dead_letters, " dead letters after ",
                                     latencies_ns.size(), " injected crashes")
                            .c_str());
    return;
  }
  std::sort(latencies_ns.begin(), latencies_ns.end());
  auto quantile = [&](double q) {
    const size_t rank = static_cast<size_t>(q * static_cast<double>(latencies_ns.size() - 1));
    return static_cast<double>(latencies_ns[rank]);
  };
  state.counters["p50_ns"] = quantile(0.50);
  state.counters["p99_ns"] = quantile(0.99);
  state.counters["p999_ns"] = quantile(0.999);
  state.counters["max_ns"] = static_cast<double>(latencies_ns.back());
  state.counters["log_lines_per_crash"] =
      static_cast<double>(log_lines.load(std::memory_order_relaxed) - lines_before) /
      static_cast<double>(latencies_ns.size());
  state.SetItemsProcessed(static_cast<int64_t>(latencies_ns.size()));
}

void BM_Keeper_Restart(benchmark::State& state) { RestartRow(state, /*log_off=*/false); }
void BM_Keeper_RestartLogOff(benchmark::State& state) { RestartRow(state, /*log_off=*/true); }

constexpr int64_t kCrashes = 20'000;
BENCHMARK(BM_Keeper_Restart)->Iterations(kCrashes)->UseRealTime();
BENCHMARK(BM_Keeper_RestartLogOff)->Iterations(kCrashes)->UseRealTime();

// --- Round trip -------------------------------------------------------------------------

struct Tally {
  struct State {
    int64_t count = 0;
  };
  using Args = int64_t;
  using CallMsg = int64_t;  // add
  using Reply = int64_t;    // the count after

  State OnFirstStart(const Args& start) { return State{start}; }
  keel::Next<State> OnRecover(const State&, const keel::Crash&) { return keel::kUnchanged; }
  keel::CallOutcome<State, Reply> HandleCall(const State& s, const CallMsg& add) {
    if (add == 0) return {keel::kUnchanged, s.count};
    const int64_t after = s.count + add;
    return {State{after}, after};
  }
};

// The peer: a worker thread with a mailbox, as written by hand.
class PlainWorker {
 public:
  PlainWorker() : thread_([this] { Run(); }) {}
  ~PlainWorker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

  // Adds `add` to the count on the worker thread and returns the count after.
  int64_t Call(int64_t add) {
    Request request;
    request.add = add;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(&request);
    }
    cv_.notify_one();
    std::unique_lock<std::mutex> lock(request.mu);
    request.cv.wait(lock, [&] { return request.done; });
    return request.reply;
  }

 private:
  struct Request {
    int64_t add = 0;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    int64_t reply = 0;
  };

  void Run() {
    for (;;) {
      Request* request;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        request = queue_.front();
        queue_.pop_front();
      }
      count_ += request->add;
      // Notified under the lock: the caller cannot return (and destroy the request) before
      // this thread lets go of request->mu.
      std::lock_guard<std::mutex> lock(request->mu);
      request->reply = count_;
      request->done = true;
      request->cv.notify_one();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request*> queue_;  // guarded by mu_
  bool stop_ = false;           // guarded by mu_
  int64_t count_ = 0;           // worker thread only
  std::thread thread_;          // last: starts once the members above exist
};

keel::Keeper<Tally>* tally = nullptr;  // created in main()
// The same worker as turns on the runtime's offload pool (Placement::kExecutor).
keel::Keeper<Tally>* pooled_tally = nullptr;  // created in main()
PlainWorker* plain_worker = nullptr;          // created in main()

// What the whole process has used so far: CPU time (all threads) and voluntary context
// switches.
struct ProcessUsage {
  double cpu_ns = 0;
  double waits = 0;
};

ProcessUsage ProcessUsageNow() {
  ProcessUsage usage;
  timespec cpu{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
  usage.cpu_ns = static_cast<double>(cpu.tv_sec) * 1e9 + static_cast<double>(cpu.tv_nsec);
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  usage.waits = static_cast<double>(ru.ru_nvcsw);
  return usage;
}

// Thread 0: measures the process's usage over its loop and reports it per call.
class UsagePerCall {
 public:
  explicit UsagePerCall(const benchmark::State& state)
      : active_(state.thread_index() == 0), start_(active_ ? ProcessUsageNow() : ProcessUsage{}) {}
  void Report(benchmark::State& state) const {
    if (!active_ || state.iterations() == 0) return;
    const ProcessUsage end = ProcessUsageNow();
    const double calls = static_cast<double>(state.iterations()) * state.threads();
    state.counters["cpu_ns_per_call"] = (end.cpu_ns - start_.cpu_ns) / calls;
    state.counters["waits_per_call"] = (end.waits - start_.waits) / calls;
  }

 private:
  const bool active_;
  const ProcessUsage start_;
};

void KeeperCallRow(benchmark::State& state, int64_t add, keel::Keeper<Tally>* keeper = tally) {
  const UsagePerCall usage(state);
  for (auto _ : state) {
    absl::StatusOr<int64_t> count = keeper->Call(add, kCallTimeout);
    if (!count.ok()) {
      state.SkipWithError(count.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(*count);
  }
  usage.Report(state);
  state.SetItemsProcessed(state.iterations());
}

void PlainCallRow(benchmark::State& state, int64_t add) {
  const UsagePerCall usage(state);
  for (auto _ : state) {
    int64_t count = plain_worker->Call(add);
    benchmark::DoNotOptimize(count);
  }
  usage.Report(state);
  state.SetItemsProcessed(state.iterations());
}

void BM_Keeper_Call(benchmark::State& state) { KeeperCallRow(state, 1); }
void BM_PlainWorker_Call(benchmark::State& state) { PlainCallRow(state, 1); }
void BM_KeeperOnPool_Call(benchmark::State& state) { KeeperCallRow(state, 1, pooled_tally); }
void BM_Keeper_CallRead(benchmark::State& state) { KeeperCallRow(state, 0); }
void BM_PlainWorker_CallRead(benchmark::State& state) { PlainCallRow(state, 0); }

BENCHMARK(BM_Keeper_Call)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_PlainWorker_Call)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_KeeperOnPool_Call)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_Keeper_CallRead)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_PlainWorker_CallRead)->Threads(1)->Threads(2)->UseRealTime();

// --- Commit cost as the state grows ------------------------------------------------------

// The blobs, one per size, built in main() before any benchmark runs.
std::vector<std::shared_ptr<const std::string>>* blobs = nullptr;

std::shared_ptr<const std::string> BlobOfSize(int64_t size) {
  for (const auto& blob : *blobs) {
    if (static_cast<int64_t>(blob->size()) == size) return blob;
  }
  std::fprintf(stderr, "keeper_bench: no blob of %lld bytes\n", static_cast<long long>(size));
  std::exit(1);
}

template <bool kCopyBlob>
struct BlobHolder {
  struct State {
    std::shared_ptr<const std::string> blob;
    int64_t count = 0;
  };
  using Args = std::shared_ptr<const std::string>;
  struct CastMsg {
    std::latch* gate = nullptr;  // set: wait for it, change nothing
  };
  using CallMsg = std::monostate;
  using Reply = int64_t;  // the count

  State OnFirstStart(const Args& blob) { return State{blob, 0}; }
  keel::Next<State> OnRecover(const State&, const keel::Crash&) { return keel::kUnchanged; }
  keel::Next<State> HandleCast(const State& s, const CastMsg& m) {
    if (m.gate != nullptr) {
      m.gate->wait();
      return keel::kUnchanged;
    }
    if constexpr (kCopyBlob) {
      return State{std::make_shared<const std::string>(*s.blob), s.count + 1};
    } else {
      return State{s.blob, s.count + 1};
    }
  }
  keel::CallOutcome<State, Reply> HandleCall(const State& s, const CallMsg&) {
    return {keel::kUnchanged, s.count};
  }
};

template <bool kCopyBlob>
void CommitRow(benchmark::State& state, int64_t batch) {
  const int64_t size = state.range(0);
  auto keeper = StartKeeper<BlobHolder<kCopyBlob>>(BlobOfSize(size), "blob");
  int64_t expected = 0;
  while (state.KeepRunningBatch(batch)) {
    std::latch gate(1);
    (void)keeper->Cast({.gate = &gate});
    for (int64_t i = 0; i < batch; ++i) (void)keeper->Cast({});
    const auto start = std::chrono::steady_clock::now();
    gate.count_down();
    absl::StatusOr<int64_t> count = keeper->Call({}, absl::Seconds(60));
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    expected += batch;
    if (!count.ok() || *count != expected) {
      state.SkipWithError(
          absl::StrCat("after ", expected,
                       " casts: ", count.ok() ? absl::StrCat(*count) : count.status().ToString())
              .c_str());
      break;
    }
  }
  state.counters["batch"] = static_cast<double>(batch);
  state.SetItemsProcessed(state.iterations());
}

constexpr int64_t kKeeperBatch = 1024;
constexpr int64_t kCopyBatchBytes = int64_t{64} << 20;

void BM_Keeper_Commit(benchmark::State& state) { CommitRow<false>(state, kKeeperBatch); }
void BM_CopyOnCommit_Commit(benchmark::State& state) {
  CommitRow<true>(state, std::clamp<int64_t>(kCopyBatchBytes / state.range(0), 1, kKeeperBatch));
}

constexpr int64_t kBlobSizes[] = {int64_t{1} << 10, int64_t{1} << 20, int64_t{100} << 20};
BENCHMARK(BM_Keeper_Commit)
    ->Arg(kBlobSizes[0])
    ->Arg(kBlobSizes[1])
    ->Arg(kBlobSizes[2])
    ->UseManualTime();
BENCHMARK(BM_CopyOnCommit_Commit)
    ->Arg(kBlobSizes[0])
    ->Arg(kBlobSizes[1])
    ->Arg(kBlobSizes[2])
    ->UseManualTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  auto created = keel::Runtime::Create();
  if (!created.ok()) {
    std::fprintf(stderr, "keeper_bench: %s\n", created.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<keel::Runtime> owned_runtime = *std::move(created);
  runtime = owned_runtime.get();
  auto owned_blobs = std::make_unique<std::vector<std::shared_ptr<const std::string>>>();
  for (int64_t size : kBlobSizes) {
    owned_blobs->push_back(std::make_shared<const std::string>(static_cast<size_t>(size), 'b'));
  }
  blobs = owned_blobs.get();
  auto owned_tally = StartKeeper<Tally>(0, "tally");
  tally = owned_tally.get();
  auto owned_pooled = StartKeeper<Tally>(0, "pooled-tally", nullptr, keel::Placement::kExecutor);
  pooled_tally = owned_pooled.get();
  auto owned_plain = std::make_unique<PlainWorker>();
  plain_worker = owned_plain.get();

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  plain_worker = nullptr;
  owned_plain.reset();
  tally = nullptr;
  owned_tally.reset();  // before the runtime
  pooled_tally = nullptr;
  owned_pooled.reset();
  blobs = nullptr;
  owned_blobs.reset();
  runtime = nullptr;
  owned_runtime.reset();
  return 0;
}
