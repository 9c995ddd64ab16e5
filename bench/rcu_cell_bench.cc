// Read cost of an RcuCell beside its peers, in the same run:
//   BM_RawAtomic_Read         a raw std::atomic<const Value*> acquire load (no reclamation:
//                             the floor; unsafe if anyone ever frees the value)
//   BM_RcuCell_Read           keel's guard: RCU read section + pointer load
//   BM_RcuCell_ReadQsbr       keel's QSBR guard (keel/qsbr.h): the pointer loads alone; each
//                             thread announces a quiescent state every 1024 reads, and that
//                             call's cost is included in the row
//   BM_QsbrThread_Quiescent   the quiescent-state announcement alone, no grace period waiting
//   BM_RcuCell_Pin            keel's long-hold path: a shared_ptr copy under a read section
//   BM_AtomicSharedPtr_Read   std::atomic<std::shared_ptr<const Value>>::load
//   BM_SharedMutex_Read       std::shared_mutex (shared) + shared_ptr copy
// Each reads one field of the value and passes it to DoNotOptimize. Threads: 1 and 2.
// The *_WhilePublishing variants run a writer thread that republishes every 10 ms (the
// value is small here; the issue on remote terms adds the 64 MB case).
#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "benchmark/benchmark.h"
#include "keel/qsbr.h"
#include "keel/rcu_cell.h"

namespace {

struct Value {
  explicit Value(int64_t v) : price(v) {}
  int64_t price;
  char padding[56] = {};
};

// One instance of each peer, shared by the benchmark threads.
Value* const raw_value = new Value(1);
std::atomic<const Value*> raw_pointer{raw_value};
keel::RcuCell<Value> cell(std::make_shared<const Value>(1));
std::atomic<std::shared_ptr<const Value>> atomic_shared{std::make_shared<const Value>(1)};
std::shared_mutex shared_mu;
std::shared_ptr<const Value> mutex_guarded = std::make_shared<const Value>(1);

void BM_RawAtomic_Read(benchmark::State& state) {
  for (auto _ : state) {
    // acquire: what a reader of a published pointer needs at minimum.
    const Value* v = raw_pointer.load(std::memory_order_acquire);
    benchmark::DoNotOptimize(v->price);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RcuCell_Read(benchmark::State& state) {
  for (auto _ : state) {
    auto guard = cell.Read();
    benchmark::DoNotOptimize(guard->price);
  }
  state.SetItemsProcessed(state.iterations());
}

// How many QSBR reads a benchmark thread makes between two quiescent-state announcements.
// The loop has the shape of a request loop: a request makes kReadsPerQuiescentState reads,
// then the thread announces a quiescent state. The row includes that call (amortized, about
// 1/1024 of BM_QsbrThread_Quiescent). A countdown tested on every iteration instead would add
// its own decrement and branch to each read, which a request loop does not pay per read.
constexpr int kReadsPerQuiescentState = 1024;

// Reads through a QsbrGuard, announcing a quiescent state every kReadsPerQuiescentState reads.
// The QsbrThread is a local: the thread is unregistered (offline) when the run ends.
void ReadQsbrLoop(benchmark::State& state) {
  keel::QsbrThread qsbr;
  while (state.KeepRunningBatch(kReadsPerQuiescentState)) {
    for (int i = 0; i < kReadsPerQuiescentState; ++i) {
      auto guard = cell.ReadQsbr(qsbr);
      benchmark::DoNotOptimize(guard->price);
    }
    qsbr.Quiescent();
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RcuCell_ReadQsbr(benchmark::State& state) { ReadQsbrLoop(state); }

void BM_QsbrThread_Quiescent(benchmark::State& state) {
  keel::QsbrThread qsbr;
  for (auto _ : state) qsbr.Quiescent();
  state.SetItemsProcessed(state.iterations());
}

void BM_RcuCell_Pin(benchmark::State& state) {
  for (auto _ : state) {
    auto pinned = cell.Pin();
    benchmark::DoNotOptimize(pinned->price);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_AtomicSharedPtr_Read(benchmark::State& state) {
  for (auto _ : state) {
    std::shared_ptr<const Value> v = atomic_shared.load(std::memory_order_acquire);
    benchmark::DoNotOptimize(v->price);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_SharedMutex_Read(benchmark::State& state) {
  for (auto _ : state) {
    std::shared_ptr<const Value> v;
    {
      std::shared_lock<std::shared_mutex> lock(shared_mu);
      v = mutex_guarded;
    }
    benchmark::DoNotOptimize(v->price);
  }
  state.SetItemsProcessed(state.iterations());
}

// Runs `publish` every 10 ms on a background thread while the benchmark body reads.
class Publisher {
 public:
  template <class F>
  explicit Publisher(F publish)
      : thread_([this, publish] {
          int64_t i = 2;
          while (!stop_.load(std::memory_order_relaxed)) {
            publish(i++);
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
        }) {}
  ~Publisher() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

void BM_RcuCell_Read_WhilePublishing(benchmark::State& state) {
  std::unique_ptr<Publisher> publisher;
  if (state.thread_index() == 0) {
    publisher = std::make_unique<Publisher>([](int64_t i) { cell.Emplace(i); });
  }
  for (auto _ : state) {
    auto guard = cell.Read();
    benchmark::DoNotOptimize(guard->price);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RcuCell_ReadQsbr_WhilePublishing(benchmark::State& state) {
  std::unique_ptr<Publisher> publisher;
  if (state.thread_index() == 0) {
    publisher = std::make_unique<Publisher>([](int64_t i) { cell.Emplace(i); });
  }
  ReadQsbrLoop(state);
}

void BM_AtomicSharedPtr_Read_WhilePublishing(benchmark::State& state) {
  std::unique_ptr<Publisher> publisher;
  if (state.thread_index() == 0) {
    publisher = std::make_unique<Publisher>(
        [](int64_t i) { atomic_shared.store(std::make_shared<const Value>(i)); });
  }
  for (auto _ : state) {
    std::shared_ptr<const Value> v = atomic_shared.load(std::memory_order_acquire);
    benchmark::DoNotOptimize(v->price);
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_RawAtomic_Read)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_RcuCell_Read)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_RcuCell_ReadQsbr)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_QsbrThread_Quiescent);
BENCHMARK(BM_RcuCell_Pin)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_AtomicSharedPtr_Read)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_SharedMutex_Read)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_RcuCell_Read_WhilePublishing)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_RcuCell_ReadQsbr_WhilePublishing)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_AtomicSharedPtr_Read_WhilePublishing)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
