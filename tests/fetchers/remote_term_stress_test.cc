// Readers on every core while a remote term is republished through its whole pipeline.
//
// Property checked: a reader always sees a whole value (every word of its payload matches its
// sequence number, and the value has not been destroyed: its destructor poisons it), and the
// sequence numbers one reader sees never go backwards, because updates are published in the
// order they were fetched. Pinned values stay whole after later updates. Bounded: at most
// kUpdates updates or kTimeBudget of real time, whichever comes first.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "keel/fetchers/static_source.h"
#include "keel/remote_term.h"
#include "keel/runtime.h"

namespace keel {
namespace {

constexpr int kUpdates = 400;
constexpr auto kTimeBudget = std::chrono::seconds(8);
constexpr uint64_t kPoison = 0xdeadbeefdeadbeefULL;

struct Value {
  explicit Value(uint64_t s) : seq(s), payload(512, s) {}
  ~Value() {
    // Poison: a reader that sees a destroyed value sees a mismatch.
    seq = kPoison;
    std::fill(payload.begin(), payload.end(), kPoison - 1);
  }
  Value(Value&& other) noexcept : seq(other.seq), payload(std::move(other.payload)) {}

  bool Whole() const {
    if (seq == kPoison || payload.size() != 512) return false;
    for (uint64_t w : payload) {
      if (w != seq) return false;
    }
    return true;
  }

  uint64_t seq;
  std::vector<uint64_t> payload;
};

TEST(RemoteTermStressTest, ReadersAlwaysSeeWholeValuesInPublicationOrder) {
  auto runtime = Runtime::Create({.name = "term-stress"});
  ASSERT_TRUE(runtime.ok());
  auto source = std::make_shared<fetchers::StaticSource>("1");
  RemoteTermOptions<Value> options;
  options.name = "stress";
  options.fetcher = fetchers::Static(source);
  options.decode = [](std::string_view bytes) -> absl::StatusOr<Value> {
    uint64_t seq;
    if (!absl::SimpleAtoi(std::string(bytes), &seq)) return absl::InvalidArgumentError("seq");
    return Value(seq);
  };
  options.refresh = absl::Hours(1);
  auto term = RemoteTerm<Value>::Start(**runtime, std::move(options));
  ASSERT_TRUE(term.ok()) << term.status();

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> torn{0}, backwards{0}, reads{0};
  int readers = std::max(2u, std::thread::hardware_concurrency());
  std::latch reading(readers);  // every reader has read once before the updates start
  std::vector<std::thread> threads;
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&, r] {
      uint64_t last = 0, count = 0;
      std::shared_ptr<const Value> pinned;
      bool first = true;
      while (!stop.load(std::memory_order_relaxed)) {
        {
          auto guard = (*term)->Read();
          if (!guard || !guard->Whole()) {
            ++torn;
          } else {
            if (guard->seq < last) ++backwards;
            last = guard->seq;
          }
        }
        if (first) {
          reading.count_down();
          first = false;
        }
        if (r % 2 == 1 && ++count % 64 == 0) {
          if (pinned != nullptr && !pinned->Whole()) ++torn;
          pinned = (*term)->Pin();
        }
        ++count;
      }
      reads += count;
    });
  }

  reading.wait();
  auto deadline = std::chrono::steady_clock::now() + kTimeBudget;
  int updates = 0;
  for (int i = 2; i < kUpdates + 2 && std::chrono::steady_clock::now() < deadline; ++i) {
    source->Set(absl::StrCat(i));
    absl::Status outcome = (*term)->RefreshNow(absl::Seconds(10));
    ASSERT_TRUE(outcome.ok()) << outcome;
    ++updates;
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_EQ(backwards.load(), 0u);
  EXPECT_GT(updates, 20);
  EXPECT_GT(reads.load(), 1000u);
  EXPECT_EQ((*term)->status().updates, static_cast<uint64_t>(updates) + 1);
  term->reset();
}

}  // namespace
}  // namespace keel
