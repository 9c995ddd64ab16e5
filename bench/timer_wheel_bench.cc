// keel::TimerWheel beside std::multimap and std::priority_queue, the two usual ways to keep
// timers ordered.
//
// Every benchmark keeps N timers pending (N = 2^10 and 2^20), with deadlines drawn
// uniformly from 1 ms .. 1 day ahead (1 tick = 1 ms, as in keel's runtime).
//  - *_ScheduleCancel: each iteration cancels one random pending timer and schedules a new
//    one, as when a reply arrives before its timeout and the next request arms another.
//  - *_ScheduleExpire: each iteration moves time to the earliest deadline, fires that timer
//    and schedules a new one from its callback, as a periodic re-arm does.
// One item = one timer scheduled and one cancelled or fired.
//
// The peers are used the way a careful user would: the multimap keeps iterators for O(1)
// erase and reuses its nodes (extract / insert); the priority queue, which cannot cancel,
// uses lazy deletion (a cancelled timer's slot gets a new generation, a popped entry of an
// old generation is a tombstone and is dropped), pops the tombstones that reach the top in
// the iteration that finds them, and compacts itself when tombstones outnumber live timers.
// Random numbers come from a fixed seed and are drawn before the timed loop.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <queue>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "keel/timer_wheel.h"

namespace {

constexpr uint64_t kMaxDelayTicks = 24 * 3600 * 1000;  // one day of 1 ms ticks
constexpr size_t kRandomCount = size_t{1} << 16;       // precomputed draws, cycled
constexpr size_t kRandomMask = kRandomCount - 1;

// Precomputed random draws for one benchmark run.
struct Draws {
  std::vector<uint64_t> delays;   // uniform in [1, kMaxDelayTicks]
  std::vector<uint32_t> victims;  // uniform in [0, n)
  std::vector<uint64_t> initial;  // the n starting delays
};

Draws MakeDraws(size_t n) {
  std::mt19937_64 rng(0x6b65656c);  // fixed seed: every peer sees the same numbers
  std::uniform_int_distribution<uint64_t> delay(1, kMaxDelayTicks);
  std::uniform_int_distribution<uint32_t> victim(0, static_cast<uint32_t>(n - 1));
  Draws draws;
  draws.delays.resize(kRandomCount);
  draws.victims.resize(kRandomCount);
  draws.initial.resize(n);
  for (uint64_t& d : draws.initial) d = delay(rng);
  for (size_t i = 0; i < kRandomCount; ++i) {
    draws.delays[i] = delay(rng);
    draws.victims[i] = victim(rng);
  }
  return draws;
}

// ---------------------------------------------------------------------------------------
// keel::TimerWheel

void BM_TimerWheel_ScheduleCancel(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const Draws draws = MakeDraws(n);
  keel::TimerWheel<uint64_t> wheel;
  wheel.Reserve(n);
  std::vector<keel::TimerId> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = wheel.Schedule(draws.initial[i], i);
  size_t k = 0;
  for (auto _ : state) {
    const uint32_t victim = draws.victims[k & kRandomMask];
    const bool cancelled = wheel.Cancel(ids[victim]);
    benchmark::DoNotOptimize(cancelled);
    ids[victim] = wheel.Schedule(draws.delays[k & kRandomMask], k);
    benchmark::DoNotOptimize(ids[victim]);
    ++k;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_TimerWheel_ScheduleExpire(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const Draws draws = MakeDraws(n);
  keel::TimerWheel<uint64_t> wheel;
  wheel.Reserve(n + 1);
  for (size_t i = 0; i < n; ++i) wheel.Schedule(draws.initial[i], i);
  size_t k = 0;
  uint64_t sink = 0;
  int64_t fired = 0;
  auto rearm = [&](keel::TimerId, uint64_t&& payload) {
    sink += payload;
    wheel.Schedule(wheel.now() + draws.delays[k++ & kRandomMask], payload);
  };
  for (auto _ : state) {
    // Wake at NextDeadline() until a timer fires: some wakeups are cascade points only.
    size_t batch = 0;
    while (batch == 0) batch = wheel.Advance(*wheel.NextDeadline(), rearm);
    fired += static_cast<int64_t>(batch);
    benchmark::DoNotOptimize(sink);
  }
  state.SetItemsProcessed(fired);
}

// ---------------------------------------------------------------------------------------
// std::multimap<deadline, payload>, cancelled through stored iterators.

using Multimap = std::multimap<uint64_t, uint64_t>;

void BM_Multimap_ScheduleCancel(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const Draws draws = MakeDraws(n);
  Multimap timers;
  std::vector<Multimap::iterator> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = timers.emplace(draws.initial[i], i);
  size_t k = 0;
  for (auto _ : state) {
    const uint32_t victim = draws.victims[k & kRandomMask];
    Multimap::node_type node = timers.extract(ids[victim]);  // cancel, keeping the node
    node.key() = draws.delays[k & kRandomMask];
    node.mapped() = k;
    ids[victim] = timers.insert(std::move(node));  // schedule into the reused node
    benchmark::DoNotOptimize(ids[victim]);
    ++k;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_Multimap_ScheduleExpire(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const Draws draws = MakeDraws(n);
  Multimap timers;
  for (size_t i = 0; i < n; ++i) timers.emplace(draws.initial[i], i);
  size_t k = 0;
  uint64_t sink = 0;
  for (auto _ : state) {
    Multimap::node_type node = timers.extract(timers.begin());  // the earliest fires
    const uint64_t now = node.key();
    sink += node.mapped();
    node.key() = now + draws.delays[k++ & kRandomMask];  // re-armed into the same node
    timers.insert(std::move(node));
    benchmark::DoNotOptimize(sink);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// ---------------------------------------------------------------------------------------
// std::priority_queue (min-heap on deadline) with lazy deletion.

struct HeapEntry {
  uint64_t deadline;
  uint32_t slot;        // index of the timer in the generation table
  uint32_t generation;  // live iff equal to the table's current generation for `slot`
  uint64_t payload;
};

struct LaterDeadline {
  bool operator()(const HeapEntry& a, const HeapEntry& b) const { return a.deadline > b.deadline; }
};

// std::priority_queue plus the compaction every lazy-deletion user ends up writing: drop
// the tombstones and re-heapify once they outnumber the live entries (amortized O(1)).
class TimerHeap : public std::priority_queue<HeapEntry, std::vector<HeapEntry>, LaterDeadline> {
 public:
  void Reserve(size_t entries) { c.reserve(entries); }
  template <class IsLive>
  void Compact(IsLive is_live) {
    std::erase_if(c, [&](const HeapEntry& e) { return !is_live(e); });
    std::make_heap(c.begin(), c.end(), comp);
  }
};

void BM_PriorityQueue_ScheduleCancel(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const Draws draws = MakeDraws(n);
  TimerHeap heap;
  heap.Reserve(2 * n + 1);
  std::vector<uint32_t> generation(n, 0);
  auto is_live = [&](const HeapEntry& e) { return generation[e.slot] == e.generation; };
  for (size_t i = 0; i < n; ++i) {
    heap.push({draws.initial[i], static_cast<uint32_t>(i), 0, i});
  }
  size_t k = 0;
  size_t tombstones = 0;
  int64_t tombstones_popped = 0;
  for (auto _ : state) {
    const uint32_t victim = draws.victims[k & kRandomMask];
    ++generation[victim];  // cancel: the heap entry becomes a tombstone
    ++tombstones;
    heap.push({draws.delays[k & kRandomMask], victim, generation[victim], k});
    while (!is_live(heap.top())) {  // a tombstone on top is discarded now
      heap.pop();
      --tombstones;
      ++tombstones_popped;
    }
    if (tombstones > n) {
      heap.Compact(is_live);
      tombstones = 0;
    }
    benchmark::DoNotOptimize(heap.top());
    ++k;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["tombstone_pops"] = benchmark::Counter(static_cast<double>(tombstones_popped),
                                                        benchmark::Counter::kAvgIterations);
}

void BM_PriorityQueue_ScheduleExpire(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const Draws draws = MakeDraws(n);
  TimerHeap heap;
  heap.Reserve(n + 1);
  for (size_t i = 0; i < n; ++i) {
    heap.push({draws.initial[i], static_cast<uint32_t>(i), 0, i});
  }
  size_t k = 0;
  uint64_t sink = 0;
  for (auto _ : state) {
    HeapEntry fired = heap.top();  // no cancels here, so no tombstones
    heap.pop();
    sink += fired.payload;
    fired.deadline += draws.delays[k++ & kRandomMask];
    heap.push(fired);
    benchmark::DoNotOptimize(sink);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

BENCHMARK(BM_TimerWheel_ScheduleCancel)->Arg(1 << 10)->Arg(1 << 20);
BENCHMARK(BM_Multimap_ScheduleCancel)->Arg(1 << 10)->Arg(1 << 20);
BENCHMARK(BM_PriorityQueue_ScheduleCancel)->Arg(1 << 10)->Arg(1 << 20);
BENCHMARK(BM_TimerWheel_ScheduleExpire)->Arg(1 << 10)->Arg(1 << 20);
BENCHMARK(BM_Multimap_ScheduleExpire)->Arg(1 << 10)->Arg(1 << 20);
BENCHMARK(BM_PriorityQueue_ScheduleExpire)->Arg(1 << 10)->Arg(1 << 20);

}  // namespace

BENCHMARK_MAIN();
