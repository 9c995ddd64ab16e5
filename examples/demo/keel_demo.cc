// keel-demo: the main job on embedded defaults. It starts a runtime and exercises what keel
// has today, then prints a short report with the figures it measured:
//   - timers: thousands of timers on the control thread's wheel, half of them cancelled;
//     how late they ran (loop lag) and that none ran early or after cancellation;
//   - an RCU cell read by reader threads while a runtime timer republishes it every 10 ms;
//     reads per second, torn reads (must be 0), values reclaimed;
//   - the offload pool: a payload gzipped and gunzipped off the control thread, the result
//     delivered back on it.
// Exit status 0 when every check holds, 1 otherwise.
//
// Usage: keel-demo [--seconds=N] (default 2, 1 to 600)
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "keel/fetchers/gzip.h"
#include "keel/rcu_cell.h"
#include "keel/runtime.h"

namespace {

struct Config {
  explicit Config(uint64_t v) : version(v), check(~v) {}
  bool Intact() const { return check == ~version; }
  uint64_t version;
  uint64_t check;
};

bool ok = true;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::printf("  FAILED: %s\n", what);
    ok = false;
  }
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

}  // namespace

int main(int argc, char** argv) {
  int seconds = 2;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--seconds=", 10) == 0) {
      seconds = std::atoi(argv[i] + 10);
    } else {
      std::fprintf(stderr, "usage: %s [--seconds=N]\n", argv[0]);
      return 2;
    }
  }
  if (seconds < 1 || seconds > 600) {
    std::fprintf(stderr, "--seconds must be between 1 and 600, got %d\n", seconds);
    return 2;
  }

  auto created = keel::Runtime::Create({.name = "keel-demo"});
  if (!created.ok()) {
    std::fprintf(stderr, "cannot start the runtime: %s\n", created.status().ToString().c_str());
    return 1;
  }
  keel::Runtime& runtime = **created;
  std::printf("keel-demo: runtime '%s' started (control thread + %d offload threads)\n\n",
              runtime.name().c_str(), keel::RuntimeOptions{}.offload_threads);

  // --- timers -------------------------------------------------------------------------
  constexpr int kTimers = 10000;
  std::atomic<int> fired{0};
  std::atomic<int> early{0};
  std::vector<std::atomic<bool>> ran(kTimers);
  std::vector<std::pair<int, keel::TimerHandle>> to_cancel;
  std::mt19937_64 rng(42);
  const auto timers_start = std::chrono::steady_clock::now();
  for (int i = 0; i < kTimers; ++i) {
    const auto delay = std::chrono::milliseconds(rng() % 500);
    const bool cancel = i % 2 == 1;
    const auto scheduled = std::chrono::steady_clock::now();
    auto handle = runtime.Schedule(absl::FromChrono(delay), [&, i, scheduled, delay] {
      ran[i] = true;
      if (std::chrono::steady_clock::now() - scheduled < delay) ++early;
      ++fired;
    });
    if (!handle.ok()) return 1;
    if (cancel) to_cancel.emplace_back(i, *handle);
  }
  std::vector<int> cancelled_ids;
  for (const auto& [i, h] : to_cancel) {
    if (runtime.Cancel(h)) cancelled_ids.push_back(i);
  }
  const int cancelled = static_cast<int>(cancelled_ids.size());
  while (fired.load() + cancelled < kTimers &&
         std::chrono::steady_clock::now() - timers_start < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  keel::LoopStats loop = runtime.Stats();
  std::printf("timers      %d scheduled over 0-500 ms, %d cancelled, %d ran\n", kTimers, cancelled,
              fired.load());
  std::printf("            loop lag: mean %.3f ms, p99 <= %.3f ms, max %.3f ms\n",
              Ms(loop.mean_lag), Ms(loop.p99_lag), Ms(loop.max_lag));
  Check(fired.load() + cancelled == kTimers, "every timer either ran or was cancelled");
  Check(early.load() == 0, "no timer ran before its delay");
  int ran_after_cancel = 0;
  for (int i : cancelled_ids) ran_after_cancel += ran[i] ? 1 : 0;
  Check(ran_after_cancel == 0, "successfully cancelled timers never ran");

  // --- RCU cell -----------------------------------------------------------------------
  keel::RcuCell<Config> config(std::make_shared<const Config>(1));
  std::atomic<uint64_t> version{1};
  std::function<void()> republish;
  std::atomic<bool> publishing{true};
  republish = [&] {
    config.Emplace(version.fetch_add(1) + 1);
    if (publishing.load()) (void)runtime.Schedule(absl::Milliseconds(10), republish);
  };
  if (!runtime.Post(republish).ok()) return 1;

  constexpr int kReaders = 2;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> torn{0};
  std::vector<std::thread> readers;
  const keel::RcuReclaimStats reclaim_before = keel::GetRcuReclaimStats();
  const auto read_start = std::chrono::steady_clock::now();
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&] {
      uint64_t local = 0;
      uint64_t bad = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        for (int i = 0; i < 1024; ++i) {
          auto cfg = config.Read();
          bad += cfg->Intact() ? 0 : 1;
        }
        local += 1024;
      }
      reads += local;
      torn += bad;
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  for (auto& t : readers) t.join();
  const double read_secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - read_start).count();
  publishing = false;
  (void)runtime.Sync();
  (void)keel::RcuSynchronize(absl::Seconds(10));
  const keel::RcuReclaimStats reclaim_after = keel::GetRcuReclaimStats();
  const uint64_t publishes = config.PublishCountRelaxed();
  std::printf("rcu cell    %d readers for %.1f s while republished every 10 ms\n", kReaders,
              read_secs);
  std::printf("            %.1f M reads/s in all (%.2f ns per read per thread), %llu torn\n",
              reads.load() / read_secs / 1e6, read_secs * 1e9 * kReaders / reads.load(),
              static_cast<unsigned long long>(torn.load()));
  std::printf(
      "            %llu publishes, %llu values reclaimed after grace periods (%llu "
      "grace periods)\n",
      static_cast<unsigned long long>(publishes),
      static_cast<unsigned long long>(reclaim_after.reclaimed - reclaim_before.reclaimed),
      static_cast<unsigned long long>(reclaim_after.grace_periods - reclaim_before.grace_periods));
  Check(torn.load() == 0, "no reader saw a torn or freed value");
  Check(publishes >= static_cast<uint64_t>(seconds) * 20, "the writer republished regularly");
  Check(reclaim_after.reclaimed > reclaim_before.reclaimed, "replaced values were reclaimed");

  // --- offload pool -------------------------------------------------------------------
  std::string payload;
  for (int i = 0; i < 20000; ++i) {
    payload.append("sku-").append(std::to_string(i)).append(",price=");
    payload.append(std::to_string(i * 7)).append("\n");
  }
  std::promise<std::pair<bool, std::string>> offloaded;
  const auto offload_start = std::chrono::steady_clock::now();
  absl::Status submitted = runtime.OffloadThen<std::string>(
      [&payload]() -> std::string {
        auto packed = keel::fetchers::Gzip(payload);
        if (!packed.ok()) return "";
        auto unpacked = keel::fetchers::Gunzip(*packed);
        return unpacked.ok()
                   ? std::to_string(packed->size()) + "/" + std::to_string(unpacked->size())
                   : "";
      },
      [&](absl::StatusOr<std::string> result) {
        offloaded.set_value({runtime.InControlThread(), result.ok() ? *result : ""});
      });
  Check(submitted.ok(), "offload accepted the job");
  auto [on_loop, sizes] = offloaded.get_future().get();
  const double offload_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - offload_start)
          .count();
  std::printf(
      "offload     gzip + gunzip of %zu bytes off the loop: compressed/plain %s in %.1f ms\n",
      payload.size(), sizes.c_str(), offload_ms);
  Check(on_loop, "the completion ran on the control thread");
  const std::string plain_size = std::to_string(payload.size());
  Check(sizes.size() > plain_size.size() && sizes.ends_with(plain_size) &&
            sizes[sizes.size() - plain_size.size() - 1] == '/',
        "the round trip kept every byte");

  // --- shutdown -----------------------------------------------------------------------
  loop = runtime.Stats();
  absl::Status shut = runtime.Shutdown();
  std::printf(
      "shutdown    %s after %llu loop turns, %llu tasks, %llu timers, %llu callback "
      "exceptions\n\n",
      shut.ok() ? "clean" : shut.ToString().c_str(),
      static_cast<unsigned long long>(loop.iterations),
      static_cast<unsigned long long>(loop.tasks_run),
      static_cast<unsigned long long>(loop.timers_run),
      static_cast<unsigned long long>(loop.callback_exceptions));
  Check(shut.ok(), "shutdown was clean");
  std::printf("keel-demo: %s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
