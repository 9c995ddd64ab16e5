// keel's IdempotencyTracker beside the concurrent maps a user would otherwise build it on, in
// the same run, and its timer-wheel expiry beside a scan of the table.
//
// Mix rows (threads 1 and 2, wall time). One iteration is one request as a server sees it:
// Track a new key (a claim), complete the claim with a small response, then a retry Tracks the
// same key and gets the stored response back (a replay; its status goes to DoNotOptimize).
//   BM_Idempotency_Mix          keel::IdempotencyTracker (its sharded map with per-shard timer
//                               wheels: every claim also arms a timer, which the sweep
//                               moves to the expiry once the lease deadline passes)
//   BM_TbbConcurrentHashMap_Mix oneTBB concurrent_hash_map with accessors: insert-if-absent
//                               under a write accessor, find + update to completed, and the
//                               retry's insert-if-absent that finds the entry
//   BM_Libcuckoo_Mix            libcuckoo cuckoohash_map: uprase_fn (insert-if-absent, or read
//                               the entry found, in one step), update_fn, uprase_fn again
//   BM_MutexUnorderedMap_Mix    one global std::mutex around a std::unordered_map
// The peers store the same record as keel (fingerprint string, state, owner token, lease
// deadline, expiry, shared_ptr to the response, halt reason) and apply the same rules on
// lookup (fingerprint first, expired entries are claimed again, owner token and live lease
// checked on completion), read the same clock and draw owner tokens the same way; they
// remove nothing (no expiry timers, no sweep). All use the same hash (absl::Hash of the key
// bytes) and glibc's malloc (oneTBB's map is given std::allocator instead of tbb_allocator,
// which would route its nodes to tbbmalloc). Keys are 36-byte UUID-like strings, fingerprints
// 32 bytes, responses {201, one header, a 36-byte body}, all built the same way for every row.
// Each row first fills its table with 2^20 completed entries (untimed), then serves 2^19
// requests with new keys (split between the threads; fixed iteration counts, so that the
// fill is done once per row), so the table holds 1.0M to 1.5M entries during the timed part.
// The runtime's clock is a ManualClock that stands still: no lease runs out, and the
// tracker's periodic sweep never runs during the Mix rows (nothing would expire anyway).
//
// Counter bytes_per_entry (Mix rows): the heap bytes the table holds per entry beyond the key
// bytes and the response: (heap in use after the fill - before) / entries - key length - the
// heap footprint of one response (measured the same way). Heap in use is glibc's mallinfo2()
// uordblks + hblkhd, so it includes malloc's chunk headers and rounding, the map's slot or
// bucket arrays, the fingerprint's string, and for keel the wheel's timer nodes. Each row
// measures its own fill.
//
// Expire rows (one thread, ManualClock). The table holds entries claimed and completed in
// batches of 10k, one batch per second, each kept 100 s: in steady state 1M entries are live
// and, each time the clock moves one second, one batch of 10k has expired. Each iteration adds
// a new batch and moves the clock (both untimed), then removes the 10k expired entries (timed):
//   BM_Idempotency_Expire       keel's SweepNow(): the per-shard wheels hand over the expired
//                               entries (and cascade the timers of the live ones on the way);
//                               it also moves the timers of the batch whose 30 s lease deadline
//                               has just passed to their expiry (keel arms a timer at the lease
//                               deadline when a key is claimed and leaves it there when the
//                               claim completes), so each sweep handles 10k + 10k entries
//   BM_FullScan_Expire          one pass over an absl::flat_hash_map holding the same entries,
//                               erasing those whose expiry has passed (the best case for a
//                               scan: the records lie in one array, read in order)
//   BM_FullScanNodeMap_Expire   the same pass over an absl::node_hash_map (each record a
//                               separate allocation, as in keel's shards)
// Counter removed_per_iteration says what each removed (10000 on every row, or the row fails).
// Every row frees each removed entry's response and record (keel: one allocation holding the
// key and the fingerprint; the peers: key and fingerprint strings, and the node); the
// difference is in finding them: the wheels hand over 20k entries, a scan reads all 1.01M
// records.
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "keel/clock.h"
#include "keel/idempotency.h"
#include "keel/runtime.h"

#ifdef KEEL_BENCH_HAVE_TBB
#include "oneapi/tbb/concurrent_hash_map.h"
#endif
#if __has_include(<libcuckoo/cuckoohash_map.hh>)
#include <libcuckoo/cuckoohash_map.hh>
#define KEEL_BENCH_HAVE_LIBCUCKOO 1
#endif

namespace {

using keel::IdempotentResponse;
using keel::Instant;
using Response = std::shared_ptr<const IdempotentResponse>;

constexpr uint64_t kPrepopulated = uint64_t{1} << 20;
constexpr int64_t kRequests = int64_t{1} << 19;  // per Mix row, split between the threads
constexpr absl::Duration kLease = absl::Seconds(30);
constexpr absl::Duration kRetention = absl::Hours(24);

// ---------------------------------------------------------------------------------------
// Inputs, built the same way for every row.

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9;
  x = (x ^ (x >> 27)) * 0x94d049bb133111eb;
  return x ^ (x >> 31);
}

// The key (36 bytes, UUID-shaped) and fingerprint (32 bytes, as a SHA-256) of request i.
class Inputs {
 public:
  std::string_view Key(uint64_t i) {
    static constexpr char kHex[] = "0123456789abcdef";
    uint64_t a = SplitMix64(i), b = SplitMix64(i ^ 0x6b65656c6b65656c);
    int pos = 0;
    for (int d = 0; d < 32; ++d) {
      if (d == 8 || d == 12 || d == 16 || d == 20) key_[pos++] = '-';
      uint64_t& word = d < 16 ? a : b;
      key_[pos++] = kHex[word & 15];
      word >>= 4;
    }
    return std::string_view(key_, sizeof key_);
  }
  std::string_view Fingerprint(uint64_t i) {
    for (int w = 0; w < 4; ++w) {
      uint64_t x = SplitMix64(i * 4 + static_cast<uint64_t>(w) + 0x5eed);
      for (int byte = 0; byte < 8; ++byte)
        fingerprint_[w * 8 + byte] = static_cast<char>(x >> (8 * byte));
    }
    return std::string_view(fingerprint_, sizeof fingerprint_);
  }

 private:
  char key_[36];
  char fingerprint_[32];
};

IdempotentResponse MakeResponse() {
  return IdempotentResponse{
      201, {{"content-type", "application/json"}}, R"({"id":"4f3c2a","status":"created"})"};
}

// Owner tokens as keel draws them: a per-thread mt19937_64, never 0.
uint64_t Token() {
  thread_local std::mt19937_64 tokens{std::random_device{}()};
  return tokens() | 1;
}

// Heap bytes in use (glibc, all arenas): small chunks plus mmapped ones.
size_t HeapInUse() {
  struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

// The heap footprint of one stored response (make_shared block, header vector, strings).
double ResponseFootprint() {
  static const double footprint = [] {
    constexpr int kCount = 1 << 14;
    std::vector<Response> held;
    held.reserve(kCount);
    const size_t before = HeapInUse();
    for (int i = 0; i < kCount; ++i)
      held.push_back(std::make_shared<const IdempotentResponse>(MakeResponse()));
    return static_cast<double>(HeapInUse() - before) / kCount;
  }();
  return footprint;
}

// One clock for every row (keel's runtime reads it; the peers read it too).
keel::ManualClock& TheClock() {
  static keel::ManualClock* clock = new keel::ManualClock();
  return *clock;
}

std::unique_ptr<keel::Runtime> MakeRuntime() {
  absl::StatusOr<std::unique_ptr<keel::Runtime>> runtime =
      keel::Runtime::Create({.name = "idem-bench", .clock = &TheClock(), .offload_threads = 1});
  return runtime.ok() ? std::move(*runtime) : nullptr;
}

// ---------------------------------------------------------------------------------------
// The peers' record and rules (the same data and decisions as keel's map).

enum class EntryState : uint8_t { kProcessing, kCompleted, kHalted };

struct PeerRecord {
  PeerRecord() = default;
  PeerRecord(std::string_view fp, uint64_t owner_token, Instant now)
      : fingerprint(fp),
        owner(owner_token),
        lease_deadline(keel::AddDuration(now, kLease)),
        expires(keel::AddDuration(now, kRetention)) {}

  EntryState state = EntryState::kProcessing;
  std::string fingerprint;
  uint64_t owner = 0;
  Instant lease_deadline;
  Instant expires;
  Response response;
  std::string halt_reason;
};

enum class Outcome { kClaimed, kInFlight, kReplay, kHalted, kMismatch };
struct Tracked {
  Outcome outcome = Outcome::kClaimed;
  Response response;  // kReplay
};

// Makes `r` a fresh processing record for `owner` (a new entry, or one that expired).
void ClaimRecord(PeerRecord& r, std::string_view fp, uint64_t owner, Instant now) {
  r.state = EntryState::kProcessing;
  r.fingerprint.assign(fp);
  r.owner = owner;
  r.lease_deadline = keel::AddDuration(now, kLease);
  r.expires = keel::AddDuration(now, kRetention);
  r.response.reset();
  r.halt_reason.clear();
}

// Track on an entry that exists: claim it again when it expired, else say what it is.
Tracked TrackExisting(PeerRecord& r, std::string_view fp, uint64_t owner, Instant now) {
  if (r.expires <= now) {
    ClaimRecord(r, fp, owner, now);
    return {Outcome::kClaimed, nullptr};
  }
  if (r.fingerprint != fp) return {Outcome::kMismatch, nullptr};
  switch (r.state) {
    case EntryState::kProcessing:
      return {r.lease_deadline <= now ? Outcome::kHalted : Outcome::kInFlight, nullptr};
    case EntryState::kCompleted:
      return {Outcome::kReplay, r.response};
    case EntryState::kHalted:
      break;
  }
  return {Outcome::kHalted, nullptr};
}

// Complete: only the owner, while its lease lives.
bool CompleteRecord(PeerRecord& r, uint64_t owner, Response& response, Instant now) {
  if (r.expires <= now || r.owner != owner || r.state != EntryState::kProcessing ||
      r.lease_deadline <= now) {
    return false;
  }
  r.state = EntryState::kCompleted;
  r.response = std::move(response);
  r.expires = keel::AddDuration(now, kRetention);
  return true;
}

struct KeyHash {
  using is_transparent = void;
  size_t operator()(std::string_view key) const {
    return absl::Hash<absl::string_view>{}(absl::string_view(key.data(), key.size()));
  }
};
struct KeyEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};

// A peer's request: Track (claim), Complete, Track again (replay). Returns the replayed
// status, or -1 when an answer was not the expected one.
template <class Table>
int PeerRequest(Table& table, std::string_view key, std::string_view fp) {
  const uint64_t owner = Token();
  Tracked first = table.Track(key, fp, owner, TheClock().Now());
  if (first.outcome != Outcome::kClaimed) return -1;
  Response response = std::make_shared<const IdempotentResponse>(MakeResponse());
  if (!table.Complete(key, owner, response, TheClock().Now())) return -1;
  Tracked retry = table.Track(key, fp, Token(), TheClock().Now());
  if (retry.outcome != Outcome::kReplay) return -1;
  return retry.response->status;
}

// ---------------------------------------------------------------------------------------
// The tables.

class KeelTable {
 public:
  KeelTable() : runtime_(MakeRuntime()) {
    if (runtime_ == nullptr) return;
    // The sweep would find nothing to do; a year keeps it out of the measurement.
    auto tracker = keel::IdempotencyTracker::Create(
        *runtime_,
        {.lease = kLease, .retention = kRetention, .sweep_interval = absl::Hours(24 * 365)});
    if (tracker.ok()) tracker_ = std::move(*tracker);
  }
  bool ok() const { return tracker_ != nullptr; }
  size_t size() const {
    keel::IdempotencyStats s = tracker_->Stats();
    return s.processing + s.completed + s.halted;
  }

  int Request(std::string_view key, std::string_view fp) {
    if (tracker_ == nullptr) return -1;
    absl::StatusOr<keel::TrackResult> first = tracker_->Track(key, fp);
    if (!first.ok()) return -1;
    keel::Claim* claim = std::get_if<keel::Claim>(&*first);
    if (claim == nullptr || !claim->Complete(MakeResponse()).ok()) return -1;
    absl::StatusOr<keel::TrackResult> retry = tracker_->Track(key, fp);
    if (!retry.ok()) return -1;
    const keel::Replay* replay = std::get_if<keel::Replay>(&*retry);
    if (replay == nullptr) return -1;
    return replay->response->status;
  }

 private:
  std::unique_ptr<keel::Runtime> runtime_;
  std::unique_ptr<keel::IdempotencyTracker> tracker_;  // destroyed before the runtime
};

#ifdef KEEL_BENCH_HAVE_TBB
class TbbTable {
 public:
  bool ok() const { return true; }
  size_t size() const { return map_.size(); }
  int Request(std::string_view key, std::string_view fp) { return PeerRequest(*this, key, fp); }

  Tracked Track(std::string_view key, std::string_view fp, uint64_t owner, Instant now) {
    Map::accessor entry;  // a write lock on the entry, found or inserted
    if (map_.insert(entry, key)) {
      ClaimRecord(entry->second, fp, owner, now);
      return {Outcome::kClaimed, nullptr};
    }
    return TrackExisting(entry->second, fp, owner, now);
  }
  bool Complete(std::string_view key, uint64_t owner, Response& response, Instant now) {
    Map::accessor entry;
    return map_.find(entry, key) && CompleteRecord(entry->second, owner, response, now);
  }

 private:
  struct HashCompare {
    using is_transparent = void;
    size_t hash(std::string_view key) const { return KeyHash{}(key); }
    bool equal(std::string_view a, std::string_view b) const { return a == b; }
  };
  using Map = tbb::concurrent_hash_map<std::string, PeerRecord, HashCompare,
                                       std::allocator<std::pair<const std::string, PeerRecord>>>;
  Map map_;
};
#endif

#ifdef KEEL_BENCH_HAVE_LIBCUCKOO
class CuckooTable {
 public:
  bool ok() const { return true; }
  size_t size() const { return map_.size(); }
  int Request(std::string_view key, std::string_view fp) { return PeerRequest(*this, key, fp); }

  Tracked Track(std::string_view key, std::string_view fp, uint64_t owner, Instant now) {
    Tracked tracked;
    // One locked step: insert-if-absent, or `fn` on the entry found (false: keep it).
    bool inserted = map_.uprase_fn(
        key,
        [&](PeerRecord& r) {
          tracked = TrackExisting(r, fp, owner, now);
          return false;
        },
        fp, owner, now);
    if (inserted) return {Outcome::kClaimed, nullptr};
    return tracked;
  }
  bool Complete(std::string_view key, uint64_t owner, Response& response, Instant now) {
    bool completed = false;
    map_.update_fn(key,
                   [&](PeerRecord& r) { completed = CompleteRecord(r, owner, response, now); });
    return completed;
  }

 private:
  libcuckoo::cuckoohash_map<std::string, PeerRecord, KeyHash, KeyEq> map_;
};
#endif

class MutexTable {
 public:
  bool ok() const { return true; }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return map_.size();
  }
  int Request(std::string_view key, std::string_view fp) { return PeerRequest(*this, key, fp); }

  Tracked Track(std::string_view key, std::string_view fp, uint64_t owner, Instant now) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) {
      map_.emplace(std::piecewise_construct, std::forward_as_tuple(key),
                   std::forward_as_tuple(fp, owner, now));
      return {Outcome::kClaimed, nullptr};
    }
    return TrackExisting(it->second, fp, owner, now);
  }
  bool Complete(std::string_view key, uint64_t owner, Response& response, Instant now) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    return it != map_.end() && CompleteRecord(it->second, owner, response, now);
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, PeerRecord, KeyHash, KeyEq> map_;
};

// ---------------------------------------------------------------------------------------
// Mix

template <class Table>
void Mix(benchmark::State& state) {
  // Thread 0 builds the table before the loop; Google Benchmark's barrier at the loop's start
  // publishes it to the other threads, and the one at its end orders their last use before
  // thread 0 destroys it.
  static Table* table = nullptr;
  Inputs inputs;
  if (state.thread_index() == 0) {
    const double response_bytes = ResponseFootprint();
    const size_t before = HeapInUse();
    table = new Table();
    bool filled = table->ok();
    for (uint64_t i = 0; filled && i < kPrepopulated; ++i) {
      filled = table->Request(inputs.Key(i), inputs.Fingerprint(i)) == 201;
    }
    const double per_entry = static_cast<double>(HeapInUse() - before) / kPrepopulated;
    state.counters["bytes_per_entry"] = per_entry - inputs.Key(0).size() - response_bytes;
    if (!filled) state.SkipWithError("filling the table failed");
  }
  const uint64_t stride = static_cast<uint64_t>(state.threads());
  uint64_t i = kPrepopulated + static_cast<uint64_t>(state.thread_index());
  int64_t failures = 0;
  for (auto _ : state) {
    int status = table->Request(inputs.Key(i), inputs.Fingerprint(i));
    benchmark::DoNotOptimize(status);
    failures += status != 201;
    i += stride;
  }
  if (failures != 0) state.SkipWithError("a request got an unexpected answer");
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    state.counters["entries"] = static_cast<double>(table->size());
    delete table;
    table = nullptr;
  }
}

void BM_Idempotency_Mix(benchmark::State& state) { Mix<KeelTable>(state); }
#ifdef KEEL_BENCH_HAVE_TBB
void BM_TbbConcurrentHashMap_Mix(benchmark::State& state) { Mix<TbbTable>(state); }
#endif
#ifdef KEEL_BENCH_HAVE_LIBCUCKOO
void BM_Libcuckoo_Mix(benchmark::State& state) { Mix<CuckooTable>(state); }
#endif
void BM_MutexUnorderedMap_Mix(benchmark::State& state) { Mix<MutexTable>(state); }

// ---------------------------------------------------------------------------------------
// Expire

constexpr uint64_t kBatch = 10'000;
constexpr int kLiveBatches = 100;  // 1M live entries
constexpr absl::Duration kBatchInterval = absl::Seconds(1);
constexpr absl::Duration kExpireRetention = absl::Seconds(kLiveBatches);  // kLiveBatches intervals
constexpr int64_t kExpireIterations = 60;

void BM_Idempotency_Expire(benchmark::State& state) {
  std::unique_ptr<keel::Runtime> runtime = MakeRuntime();
  if (runtime == nullptr) return state.SkipWithError("no runtime");
  auto tracker = keel::IdempotencyTracker::Create(
      *runtime,
      {.lease = kLease, .retention = kExpireRetention, .sweep_interval = absl::Hours(24 * 365)});
  if (!tracker.ok()) return state.SkipWithError("no tracker");
  Inputs inputs;
  uint64_t next = 0;
  bool ok = true;
  auto add_batch = [&] {
    for (uint64_t end = next + kBatch; next < end; ++next) {
      absl::StatusOr<keel::TrackResult> tracked =
          (*tracker)->Track(inputs.Key(next), inputs.Fingerprint(next));
      keel::Claim* claim = tracked.ok() ? std::get_if<keel::Claim>(&*tracked) : nullptr;
      ok = ok && claim != nullptr && claim->Complete(MakeResponse()).ok();
    }
  };
  // Batches 0..99 at seconds 0..99: nothing has expired yet.
  for (int b = 0; b < kLiveBatches; ++b) {
    if (b > 0) TheClock().Advance(kBatchInterval);
    add_batch();
  }
  size_t removed = 0;
  for (auto _ : state) {
    state.PauseTiming();
    TheClock().Advance(kBatchInterval);  // the oldest batch expires now
    add_batch();                         // the newest batch is claimed now
    state.ResumeTiming();
    size_t swept = (*tracker)->SweepNow();
    benchmark::DoNotOptimize(swept);
    ok = ok && swept == kBatch;
    removed += swept;
  }
  keel::IdempotencyStats stats = (*tracker)->Stats();
  if (!ok || stats.completed != kBatch * kLiveBatches) {
    state.SkipWithError("a batch was not claimed, or a sweep did not remove exactly one batch");
  }
  state.SetItemsProcessed(static_cast<int64_t>(removed));
  state.counters["removed_per_iteration"] =
      static_cast<double>(removed) / static_cast<double>(state.iterations());
  state.counters["live_entries"] = static_cast<double>(stats.completed);
}

// A full scan of `Map` (an absl flat or node hash map) holding the same entries.
template <class Map>
void FullScanExpire(benchmark::State& state) {
  Map map;
  Inputs inputs;
  uint64_t next = 0;
  auto add_batch = [&] {
    const Instant now = TheClock().Now();
    for (uint64_t end = next + kBatch; next < end; ++next) {
      const uint64_t owner = Token();
      auto [it, inserted] =
          map.try_emplace(std::string(inputs.Key(next)), inputs.Fingerprint(next), owner, now);
      Response response = std::make_shared<const IdempotentResponse>(MakeResponse());
      CompleteRecord(it->second, owner, response, now);
      it->second.expires = keel::AddDuration(now, kExpireRetention);
    }
  };
  for (int b = 0; b < kLiveBatches; ++b) {
    if (b > 0) TheClock().Advance(kBatchInterval);
    add_batch();
  }
  size_t removed = 0;
  bool ok = true;
  for (auto _ : state) {
    state.PauseTiming();
    TheClock().Advance(kBatchInterval);
    add_batch();
    state.ResumeTiming();
    const Instant now = TheClock().Now();
    size_t swept = 0;
    for (auto it = map.begin(); it != map.end();) {
      if (it->second.expires <= now) {
        map.erase(it++);  // absl's erase(iterator) returns void
        ++swept;
      } else {
        ++it;
      }
    }
    benchmark::DoNotOptimize(swept);
    ok = ok && swept == kBatch;
    removed += swept;
  }
  if (!ok || map.size() != kBatch * kLiveBatches) {
    state.SkipWithError("a scan did not remove exactly one batch");
  }
  state.SetItemsProcessed(static_cast<int64_t>(removed));
  state.counters["removed_per_iteration"] =
      static_cast<double>(removed) / static_cast<double>(state.iterations());
  state.counters["live_entries"] = static_cast<double>(map.size());
}

void BM_FullScan_Expire(benchmark::State& state) {
  FullScanExpire<absl::flat_hash_map<std::string, PeerRecord, KeyHash, KeyEq>>(state);
}
void BM_FullScanNodeMap_Expire(benchmark::State& state) {
  FullScanExpire<absl::node_hash_map<std::string, PeerRecord, KeyHash, KeyEq>>(state);
}

// Fixed iteration counts: each row fills its table once (1M entries), and the whole binary
// runs in well under a minute and a half.
BENCHMARK(BM_Idempotency_Mix)->Threads(1)->Iterations(kRequests)->UseRealTime();
#ifdef KEEL_BENCH_HAVE_TBB
BENCHMARK(BM_TbbConcurrentHashMap_Mix)->Threads(1)->Iterations(kRequests)->UseRealTime();
#endif
#ifdef KEEL_BENCH_HAVE_LIBCUCKOO
BENCHMARK(BM_Libcuckoo_Mix)->Threads(1)->Iterations(kRequests)->UseRealTime();
#endif
BENCHMARK(BM_MutexUnorderedMap_Mix)->Threads(1)->Iterations(kRequests)->UseRealTime();

BENCHMARK(BM_Idempotency_Mix)->Threads(2)->Iterations(kRequests / 2)->UseRealTime();
#ifdef KEEL_BENCH_HAVE_TBB
BENCHMARK(BM_TbbConcurrentHashMap_Mix)->Threads(2)->Iterations(kRequests / 2)->UseRealTime();
#endif
#ifdef KEEL_BENCH_HAVE_LIBCUCKOO
BENCHMARK(BM_Libcuckoo_Mix)->Threads(2)->Iterations(kRequests / 2)->UseRealTime();
#endif
BENCHMARK(BM_MutexUnorderedMap_Mix)->Threads(2)->Iterations(kRequests / 2)->UseRealTime();

BENCHMARK(BM_Idempotency_Expire)->Iterations(kExpireIterations);
BENCHMARK(BM_FullScan_Expire)->Iterations(kExpireIterations);
BENCHMARK(BM_FullScanNodeMap_Expire)->Iterations(kExpireIterations);

}  // namespace

BENCHMARK_MAIN();
