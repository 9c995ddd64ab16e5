// Differential fuzzer: keel::TimerWheel against a std::multimap on a manual tick counter.
//
// The input drives schedule (deadlines in the past, within a slot, within the levels, in
// the overflow range, anywhere in uint64), cancel (live, stale or made-up ids), and advance
// (to the past, by small and huge steps, to NextDeadline()). `fire` callbacks themselves
// schedule and cancel, as keel's runtime does. The oracle keys timers by deadline, equal
// deadlines in schedule order; timers scheduled from `fire` at or before now() wait in a
// separate map until the next Advance. Any divergence aborts with a message.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "keel/timer_wheel.h"

namespace {

[[noreturn]] void Fail(const char* condition, int line) {
  std::fprintf(stderr, "timer_wheel_fuzzer: divergence at line %d: %s\n", line, condition);
  std::abort();
}

#define TW_CHECK(condition)                       \
  do {                                            \
    if (!(condition)) Fail(#condition, __LINE__); \
  } while (0)

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

uint64_t SaturatingAdd(uint64_t a, uint64_t b) { return b > kMax - a ? kMax : a + b; }

struct Entry {
  uint64_t seq;
  keel::TimerId id;
};
using Oracle = std::multimap<uint64_t, Entry>;  // deadline -> timer; equal keys by seq

// Inserts keeping equal deadlines in seq order (a timer deferred from `fire` may join the
// pending map after timers scheduled later).
Oracle::iterator OracleInsert(Oracle& oracle, uint64_t deadline, Entry entry) {
  auto [lo, hi] = oracle.equal_range(deadline);
  auto pos = hi;
  while (pos != lo && std::prev(pos)->second.seq > entry.seq) --pos;
  return oracle.insert(pos, {deadline, entry});  // inserted just before `pos`
}

class Harness {
 public:
  explicit Harness(FuzzedDataProvider& input)
      : input_(input), wheel_(StartTick(input)), now_(wheel_.now()) {}

  void Run() {
    for (int op = 0; op < 3000 && input_.remaining_bytes() > 0; ++op) {
      switch (input_.ConsumeIntegralInRange<int>(0, 9)) {
        case 0:
        case 1:
        case 2:
        case 3:
          Schedule();
          break;
        case 4:
        case 5:
          Cancel();
          break;
        default:
          Advance();
          break;
      }
      CheckOutside();
    }
    // Drain: everything still pending fires, in order, at its own tick.
    while (std::optional<uint64_t> next = wheel_.NextDeadline()) {
      const size_t before = wheel_.size();
      AdvanceTo(std::max(*next, now_), /*reentrant=*/false);
      CheckOutside();
      TW_CHECK(wheel_.size() <= before);
    }
    TW_CHECK(pending_.empty() && deferred_.empty());
  }

 private:
  static uint64_t StartTick(FuzzedDataProvider& input) {
    switch (input.ConsumeIntegralInRange<int>(0, 3)) {
      case 0:
        return 0;
      case 1:
        return input.ConsumeIntegralInRange<uint64_t>(0, uint64_t{1} << 40);
      case 2:  // just before a 2^36 block boundary
        return (uint64_t{1} << 36) * input.ConsumeIntegralInRange<uint64_t>(1, 1000) -
               input.ConsumeIntegralInRange<uint64_t>(1, 5000);
      default:
        return input.ConsumeIntegral<uint64_t>();
    }
  }

  uint64_t ConsumeDeadline(uint64_t base) {
    switch (input_.ConsumeIntegralInRange<int>(0, 6)) {
      case 0:  // the past or now
        return base - std::min(base, input_.ConsumeIntegralInRange<uint64_t>(0, 200));
      case 1:
        return SaturatingAdd(base, input_.ConsumeIntegralInRange<uint64_t>(0, 70));
      case 2:
        return SaturatingAdd(base, input_.ConsumeIntegralInRange<uint64_t>(0, 5000));
      case 3:
        return SaturatingAdd(base, input_.ConsumeIntegralInRange<uint64_t>(0, uint64_t{1} << 30));
      case 4:  // overflow range: a few blocks of 2^36 ahead
        return SaturatingAdd(base,
                             (uint64_t{1} << 36) * input_.ConsumeIntegralInRange<uint64_t>(0, 70) +
                                 input_.ConsumeIntegralInRange<uint64_t>(0, 100));
      case 5:
        return SaturatingAdd(base, input_.ConsumeIntegralInRange<uint64_t>(0, uint64_t{1} << 50));
      default:
        return input_.ConsumeIntegral<uint64_t>();
    }
  }

  void Schedule() {
    const uint64_t deadline = ConsumeDeadline(wheel_.now());
    // Inside `fire`, a deadline at or before now() waits for the next Advance.
    const bool deferred = in_fire_ && deadline <= wheel_.now();
    const uint64_t seq = next_seq_++;
    const keel::TimerId id = wheel_.Schedule(deadline, std::make_unique<uint64_t>(seq));
    TW_CHECK(id != keel::kInvalidTimerId);
    TW_CHECK(live_.find(id) == live_.end());
    Oracle& oracle = deferred ? deferred_ : pending_;
    live_[id] = Location{deferred, OracleInsert(oracle, deadline, Entry{seq, id})};
    issued_.push_back(id);
    TW_CHECK(wheel_.Contains(id));
  }

  void Cancel() {
    keel::TimerId id;
    if (!issued_.empty() && input_.ConsumeIntegralInRange<int>(0, 7) != 0) {
      id = issued_[input_.ConsumeIntegralInRange<size_t>(0, issued_.size() - 1)];
    } else {
      id = input_.ConsumeIntegral<uint64_t>();
    }
    const auto it = live_.find(id);
    const bool live = it != live_.end();
    TW_CHECK(wheel_.Contains(id) == live);
    TW_CHECK(wheel_.Cancel(id) == live);
    if (live) {
      cancelled_any_ = true;
      (it->second.deferred ? deferred_ : pending_).erase(it->second.where);
      live_.erase(it);
    }
    TW_CHECK(!wheel_.Contains(id));
    TW_CHECK(!wheel_.Cancel(id));
  }

  void Advance() {
    uint64_t to;
    switch (input_.ConsumeIntegralInRange<int>(0, 5)) {
      case 0:  // the past: a no-op
        to = now_ - std::min(now_, input_.ConsumeIntegralInRange<uint64_t>(0, 100));
        break;
      case 1:
        to = SaturatingAdd(now_, input_.ConsumeIntegralInRange<uint64_t>(0, 130));
        break;
      case 2:
        to = SaturatingAdd(now_, input_.ConsumeIntegralInRange<uint64_t>(0, uint64_t{1} << 20));
        break;
      case 3:
        to = SaturatingAdd(now_, input_.ConsumeIntegralInRange<uint64_t>(0, uint64_t{1} << 40));
        break;
      case 4: {
        const std::optional<uint64_t> next = wheel_.NextDeadline();
        to = next.has_value() ? std::max(*next, now_) : now_;
        break;
      }
      default:
        to = input_.ConsumeIntegral<uint64_t>();
        break;
    }
    AdvanceTo(to, /*reentrant=*/true);
  }

  void AdvanceTo(uint64_t to, bool reentrant) {
    const uint64_t call_now = now_;
    // Timers deferred by an earlier Advance's callbacks are due from this call on.
    for (auto it = deferred_.begin(); it != deferred_.end(); it = deferred_.erase(it)) {
      live_[it->second.id] = Location{false, OracleInsert(pending_, it->first, it->second)};
    }
    size_t expected = 0;
    uint64_t last_now = call_now;
    // Sometimes in bounded steps: at most `limit` timers fire, the rest at the next call.
    const size_t limit = reentrant && input_.ConsumeIntegralInRange<int>(0, 3) == 0
                             ? input_.ConsumeIntegralInRange<size_t>(1, 4)
                             : std::numeric_limits<size_t>::max();
    auto fire = [&](keel::TimerId id, std::unique_ptr<uint64_t>&& p) {
      TW_CHECK(to >= call_now);
      TW_CHECK(!pending_.empty());
      const auto first = pending_.begin();
      TW_CHECK(first->second.id == id);
      TW_CHECK(first->first <= to);
      TW_CHECK(p != nullptr && *p == first->second.seq);
      TW_CHECK(wheel_.now() == std::max(call_now, first->first));
      TW_CHECK(wheel_.now() >= last_now);
      last_now = wheel_.now();
      live_.erase(id);
      pending_.erase(first);
      ++expected;
      TW_CHECK(!wheel_.Contains(id));
      TW_CHECK(!wheel_.Cancel(id));
      TW_CHECK(wheel_.size() == pending_.size() + deferred_.size());
      TW_CHECK(wheel_.Advance(kMax, [](keel::TimerId, std::unique_ptr<uint64_t>&&) {
        Fail("nested Advance fired", __LINE__);
      }) == 0);
      if (!reentrant) return;
      in_fire_ = true;
      const int actions = input_.ConsumeIntegralInRange<int>(0, 3) == 0
                              ? input_.ConsumeIntegralInRange<int>(1, 3)
                              : 0;
      for (int i = 0; i < actions; ++i) {
        if (input_.ConsumeBool()) {
          Schedule();
        } else {
          Cancel();
        }
      }
      in_fire_ = false;
    };
    const size_t fired = limit == std::numeric_limits<size_t>::max()
                             ? wheel_.Advance(to, fire)
                             : wheel_.Advance(to, fire, limit);
    TW_CHECK(fired == expected);
    TW_CHECK(fired <= limit);
    if (to >= call_now && fired == limit) {
      // Possibly cut short: time stops at the last batch (or reaches `to` when nothing was
      // left), and whatever is still due fires at the next call.
      TW_CHECK(wheel_.now() == to || wheel_.now() == last_now);
      now_ = wheel_.now();
    } else if (to >= call_now) {
      now_ = to;
      TW_CHECK(pending_.empty() || pending_.begin()->first > to);
    } else {
      TW_CHECK(fired == 0);
    }
    TW_CHECK(wheel_.now() == now_);
  }

  // Checks made between operations.
  void CheckOutside() {
    TW_CHECK(wheel_.now() == now_);
    const size_t total = pending_.size() + deferred_.size();
    TW_CHECK(wheel_.size() == total);
    TW_CHECK(wheel_.empty() == (total == 0));
    const std::optional<uint64_t> next = wheel_.NextDeadline();
    TW_CHECK(next.has_value() == (total != 0));
    if (total == 0) return;
    uint64_t earliest = kMax;
    if (!pending_.empty()) earliest = pending_.begin()->first;
    if (!deferred_.empty()) earliest = std::min(earliest, deferred_.begin()->first);
    TW_CHECK(*next <= earliest);
    // Only a cancelled earliest timer leaves a stale (lower) bound behind.
    if (!cancelled_any_) TW_CHECK(*next == earliest);
    if (earliest > now_) TW_CHECK(*next > now_);
  }

  struct Location {
    bool deferred;
    Oracle::iterator where;
  };

  FuzzedDataProvider& input_;
  keel::TimerWheel<std::unique_ptr<uint64_t>> wheel_;
  uint64_t now_;
  uint64_t next_seq_ = 0;
  bool in_fire_ = false;
  bool cancelled_any_ = false;
  Oracle pending_;   // fires at the next Advance that reaches its deadline
  Oracle deferred_;  // scheduled from `fire` at or before now(): joins pending_ next Advance
  std::unordered_map<keel::TimerId, Location> live_;
  std::vector<keel::TimerId> issued_;  // every id handed out, live or stale
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  Harness harness(input);
  harness.Run();
  return 0;
}
