// Read cost of keel::Leader's role accessors beside the raw atomic loads they are made of, in
// the same run.
//
// The subject is a real Leader, elected before the benchmarks start: one keel::Runtime
// (steady clock), a MemoryLeaseStore on the steady clock, ttl 10 s, heartbeat 2 s, safety
// margin 2 s, so its control thread renews the lease (and rewrites the believed deadline
// beside the role word) every 2 s while the readers run. Rows (threads 1 and 2, wall time;
// each passes the value read to DoNotOptimize):
//   BM_Leader_IsLeader           Leader::IsLeader(): an inline acquire load of the role word
//                                through the Leader's reference to it, `& 1`
//   BM_Leader_Term               Leader::Term(): the same load, `>> 1`
//   BM_Leader_HoldsLease         Leader::HoldsLease(): an out-of-line call; the acquire load,
//                                then the runtime's clock (a virtual Now(), steady_clock)
//                                against the believed deadline (a relaxed load)
//   BM_RawAtomic_<Op>            the peer, the floor: the same computation on a raw
//                                std::atomic<uint64_t> (and, for HoldsLease, a deadline
//                                std::atomic<int64_t> and std::chrono::steady_clock::now()),
//                                acquire, reached the way Leader reaches its word: a global
//                                pointer to an object holding a reference to a heap atomic
//   BM_RawAtomicRelaxed_<Op>     the same with a relaxed load (what the acquire costs: on x86
//                                both are a plain mov; the acquire only restrains the compiler)
// Rows of one operation form one group in scripts/bench_table.py (the Leader row first, so
// that it is the subject the ratios are taken against).
// Each Leader row checks, after its loop, that the leader still leads (otherwise the row fails
// and the binary exits 1: the rows would have measured a follower).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "keel/leader.h"
#include "keel/memory_lease_store.h"
#include "keel/runtime.h"

namespace {

constexpr absl::Duration kElectionTimeout = absl::Seconds(10);

// Elected in main() before any benchmark runs.
keel::Leader* leader = nullptr;

// The peer's layout mirrors Leader's: the words live on the heap (in Leader::Core there), and
// the reader holds references to them (Leader::word_).
struct RawWords {
  std::atomic<uint64_t> word{0};        // term << 1 | leading, as Leader's
  std::atomic<int64_t> deadline_ns{0};  // steady-clock ns, as Leader::Core::deadline_ns
};
struct RawReader {
  const std::atomic<uint64_t>& word;
  const std::atomic<int64_t>& deadline_ns;
};
RawReader* raw = nullptr;  // built in main()

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool demoted_during_run = false;  // main() then exits 1

// Fails the row when the leader was demoted during the run (thread 0 checks).
void CheckStillLeading(benchmark::State& state) {
  if (state.thread_index() != 0 || leader->IsLeader()) return;
  demoted_during_run = true;
  std::fprintf(stderr, "leader_bench: the leader was demoted during a run\n");
  state.SkipWithError("the leader was demoted during the run");
}

void BM_Leader_IsLeader(benchmark::State& state) {
  for (auto _ : state) {
    bool leading = leader->IsLeader();
    benchmark::DoNotOptimize(leading);
  }
  state.SetItemsProcessed(state.iterations());
  CheckStillLeading(state);
}

void BM_Leader_Term(benchmark::State& state) {
  for (auto _ : state) {
    int64_t term = leader->Term();
    benchmark::DoNotOptimize(term);
  }
  state.SetItemsProcessed(state.iterations());
  CheckStillLeading(state);
}

void BM_Leader_HoldsLease(benchmark::State& state) {
  for (auto _ : state) {
    bool holds = leader->HoldsLease();
    benchmark::DoNotOptimize(holds);
  }
  state.SetItemsProcessed(state.iterations());
  CheckStillLeading(state);
}

void BM_RawAtomic_IsLeader(benchmark::State& state) {
  for (auto _ : state) {
    // acquire: as Leader::IsLeader(); here it pairs with the release store in main().
    bool leading = (raw->word.load(std::memory_order_acquire) & 1) != 0;
    benchmark::DoNotOptimize(leading);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RawAtomicRelaxed_IsLeader(benchmark::State& state) {
  for (auto _ : state) {
    // relaxed: the floor without the ordering; the value is never rewritten during the run.
    bool leading = (raw->word.load(std::memory_order_relaxed) & 1) != 0;
    benchmark::DoNotOptimize(leading);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RawAtomic_Term(benchmark::State& state) {
  for (auto _ : state) {
    // acquire: as Leader::Term(); pairs with the release store in main().
    int64_t term = static_cast<int64_t>(raw->word.load(std::memory_order_acquire) >> 1);
    benchmark::DoNotOptimize(term);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RawAtomicRelaxed_Term(benchmark::State& state) {
  for (auto _ : state) {
    // relaxed: the floor without the ordering; the value is never rewritten during the run.
    int64_t term = static_cast<int64_t>(raw->word.load(std::memory_order_relaxed) >> 1);
    benchmark::DoNotOptimize(term);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RawAtomic_HoldsLease(benchmark::State& state) {
  for (auto _ : state) {
    // acquire: as Leader::HoldsLease(); pairs with the release store in main(), after which
    // the deadline (stored before it) may be read relaxed.
    bool holds = (raw->word.load(std::memory_order_acquire) & 1) != 0 &&
                 SteadyNowNs() < raw->deadline_ns.load(std::memory_order_relaxed);
    benchmark::DoNotOptimize(holds);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RawAtomicRelaxed_HoldsLease(benchmark::State& state) {
  for (auto _ : state) {
    // relaxed: the floor without the ordering; the values are never rewritten during the run.
    bool holds = (raw->word.load(std::memory_order_relaxed) & 1) != 0 &&
                 SteadyNowNs() < raw->deadline_ns.load(std::memory_order_relaxed);
    benchmark::DoNotOptimize(holds);
  }
  state.SetItemsProcessed(state.iterations());
}

// Per operation: the Leader row first (the subject of its group in bench_table.py).
BENCHMARK(BM_Leader_IsLeader)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_RawAtomic_IsLeader)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_RawAtomicRelaxed_IsLeader)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_Leader_Term)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_RawAtomic_Term)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_RawAtomicRelaxed_Term)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_Leader_HoldsLease)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_RawAtomic_HoldsLease)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_RawAtomicRelaxed_HoldsLease)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  auto runtime = keel::Runtime::Create({.name = "leader-bench"});
  if (!runtime.ok()) {
    std::fprintf(stderr, "leader_bench: %s\n", runtime.status().ToString().c_str());
    return 1;
  }
  auto store = std::make_shared<keel::MemoryLeaseStore>();
  auto started = keel::Leader::Start(**runtime, store,
                                     {.election = "leader-bench",
                                      .node_id = "bench",
                                      .ttl = absl::Seconds(10),
                                      .heartbeat_interval = absl::Seconds(2),
                                      .safety_margin = absl::Seconds(2)});
  if (!started.ok()) {
    std::fprintf(stderr, "leader_bench: %s\n", started.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<keel::Leader> owned = std::move(*started);
  const auto give_up =
      std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(kElectionTimeout);
  while (!owned->IsLeader() && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!owned->IsLeader() || !owned->HoldsLease()) {
    std::fprintf(stderr, "leader_bench: the only node was not elected within %s\n",
                 absl::FormatDuration(kElectionTimeout).c_str());
    return 1;
  }
  leader = owned.get();

  auto words = std::make_unique<RawWords>();
  // relaxed: published by the release store of `word` below.
  words->deadline_ns.store(SteadyNowNs() + int64_t{3600} * 1'000'000'000,
                           std::memory_order_relaxed);
  // release: publishes the deadline; pairs with the acquire loads in the BM_RawAtomic_* rows
  // (the benchmark threads start after it anyway).
  words->word.store(static_cast<uint64_t>(owned->Term()) << 1 | 1, std::memory_order_release);
  RawReader reader{words->word, words->deadline_ns};
  raw = &reader;

  benchmark::AddCustomContext("leader_term", std::to_string(owned->Term()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  raw = nullptr;
  leader = nullptr;
  (void)owned->Stop();
  owned.reset();
  return demoted_during_run ? 1 : 0;
}
