// keel-demo: the main job on embedded defaults. It starts a runtime and exercises what keel
// has today, then prints a short report with the figures it measured:
//   - timers: thousands of timers on the control thread's wheel, half of them cancelled;
//     how late they ran (loop lag) and that none ran early or after cancellation;
//   - a remote term: a gzipped price table in a local file, rewritten every 100 ms (one write
//     in five invalid) while reader threads price SKUs through the term; reads per second,
//     torn reads (must be 0), the refresh outcomes (updated / not_modified / failed) and the
//     final status;
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
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "keel/fetchers/file.h"
#include "keel/fetchers/gzip.h"
#include "keel/logging.h"
#include "keel/rcu_cell.h"
#include "keel/remote_term.h"
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

// A price table: one price per SKU. Table n prices SKU i at i * 7 + n, so a reader can tell
// a whole table from a mix of two.
struct PriceTable {
  static constexpr uint64_t kSkus = 10000;

  // Parses "version N" then one "sku,price" line per SKU.
  static absl::StatusOr<PriceTable> Parse(std::string_view bytes) {
    PriceTable table;
    // (abseil's string_view, which its string functions take on every platform.)
    absl::string_view text(bytes.data(), bytes.size());
    std::vector<absl::string_view> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
    if (lines.empty() || !absl::StartsWith(lines[0], "version ") ||
        !absl::SimpleAtoi(lines[0].substr(8), &table.version)) {
      return absl::InvalidArgumentError("expected a first line 'version <n>'");
    }
    table.prices.reserve(lines.size() - 1);
    for (size_t i = 1; i < lines.size(); ++i) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(lines[i], ',');
      int64_t price;
      if (!absl::SimpleAtoi(kv.second, &price)) {
        return absl::InvalidArgumentError(absl::StrCat("line ", i + 1, ": expected sku,price"));
      }
      table.prices.push_back(price);
    }
    return table;
  }

  absl::Status Validate() const {
    if (prices.size() != kSkus) {
      return absl::FailedPreconditionError(
          absl::StrCat("expected ", kSkus, " prices, got ", prices.size()));
    }
    for (size_t i = 0; i < prices.size(); ++i) {
      if (prices[i] <= 0) {
        return absl::FailedPreconditionError(absl::StrCat("sku-", i, ": price must be > 0"));
      }
    }
    return absl::OkStatus();
  }

  bool Consistent(uint64_t sku) const {
    return prices[sku] == static_cast<int64_t>(sku * 7 + version);
  }

  uint64_t version = 0;
  std::vector<int64_t> prices;
};

std::string MakeTempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "keel-demo-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    return "";
  }
  return pattern;
}

// Writes table `version` gzipped to `path` atomically (temporary file, then rename). An
// invalid table has one negative price.
bool WriteTable(const std::string& path, uint64_t version, bool valid) {
  std::string text = absl::StrCat("version ", version, "\n");
  for (uint64_t i = 0; i < PriceTable::kSkus; ++i) {
    int64_t price = static_cast<int64_t>(i * 7 + version);
    if (!valid && i == 4242) price = -1;
    absl::StrAppend(&text, "sku-", i, ",", price, "\n");
  }
  absl::StatusOr<std::string> packed = keel::fetchers::Gzip(text);
  std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!packed.ok() || f == nullptr ||
      std::fwrite(packed->data(), 1, packed->size(), f) != packed->size() || std::fclose(f) != 0 ||
      std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::perror("writing the price table");
    return false;
  }
  return true;
}

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

  // The refresh outcomes are reported below; keel's own warnings would repeat them.
  keel::SetLogLevel(keel::LogLevel::kError);
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

  // --- remote term -------------------------------------------------------------------
  // A price table in a local file (gzipped), rewritten every 100 ms by a "publisher" thread,
  // one write in five invalid; the term refreshes every 50 ms; readers price SKUs meanwhile.
  const std::string dir = MakeTempDir();
  if (dir.empty()) return 1;
  const std::string path = dir + "/prices.csv.gz";
  uint64_t written_version = 1;
  if (!WriteTable(path, written_version, /*valid=*/true)) return 1;

  std::mutex outcomes_mu;
  std::map<std::string, int> outcomes;
  auto subscription = runtime.telemetry().Subscribe([&](const keel::Span& span) {
    if (span.name != "keel.term.update") return;
    std::lock_guard<std::mutex> lock(outcomes_mu);
    ++outcomes[span.outcome];
  });
  auto term = keel::RemoteTerm<PriceTable>::Start(
      runtime, {
                   .name = "prices",
                   .fetcher = keel::fetchers::File(path),
                   .decode = PriceTable::Parse,
                   .validate = [](const PriceTable& t) { return t.Validate(); },
                   .refresh = absl::Milliseconds(50),
                   .min_refresh = absl::Milliseconds(10),
                   .jitter = 0.2,
                   .backoff_initial = absl::Milliseconds(20),
                   .backoff_max = absl::Milliseconds(200),
                   .last_known_good_path = dir + "/prices.lkg",
               });
  if (!term.ok()) {
    std::fprintf(stderr, "cannot start the term: %s\n", term.status().ToString().c_str());
    return 1;
  }
  keel::RemoteTerm<PriceTable>& prices = **term;
  std::printf("term        '%s' from %s: %s, version %s\n", prices.status().name.c_str(),
              prices.status().source.c_str(),
              std::string(keel::TermStateName(prices.status().state)).c_str(),
              prices.status().version.c_str());

  constexpr int kReaders = 2;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0}, torn{0}, versions_seen{0};
  std::vector<std::thread> readers;
  const auto read_start = std::chrono::steady_clock::now();
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      uint64_t local = 0, bad = 0, last_version = 0, changes = 0;
      uint64_t sku = static_cast<uint64_t>(r);
      while (!stop.load(std::memory_order_relaxed)) {
        for (int i = 0; i < 1024; ++i) {
          auto table = prices.Read();
          sku = (sku + 7919) % PriceTable::kSkus;
          bad += table->Consistent(sku) ? 0 : 1;
          if (table->version != last_version) {
            last_version = table->version;
            ++changes;
          }
        }
        local += 1024;
      }
      reads += local;
      torn += bad;
      if (r == 0) versions_seen = changes;
    });
  }
  int invalid_writes = 0;
  const auto write_until = read_start + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < write_until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ++written_version;
    const bool valid = written_version % 5 != 0;
    invalid_writes += valid ? 0 : 1;
    if (!WriteTable(path, written_version, valid)) return 1;
  }
  stop = true;
  for (auto& t : readers) t.join();
  const double read_secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - read_start).count();
  // Ask for one last fetch, so that the table on disk is the one published.
  if (written_version % 5 == 0) {
    ++written_version;
    if (!WriteTable(path, written_version, true)) return 1;
  }
  absl::Status last = prices.RefreshNow(absl::Seconds(10));
  keel::TermStatus status = prices.status();
  runtime.telemetry().Unsubscribe(subscription);
  std::printf(
      "            %d readers for %.1f s while the file changed every 100 ms (%d writes,"
      " %d invalid)\n",
      kReaders, read_secs, static_cast<int>(written_version - 1), invalid_writes);
  std::printf(
      "            %.1f M reads/s in all (%.2f ns per read per thread), %llu torn, "
      "%llu versions seen by reader 0\n",
      reads.load() / read_secs / 1e6, read_secs * 1e9 * kReaders / reads.load(),
      static_cast<unsigned long long>(torn.load()),
      static_cast<unsigned long long>(versions_seen.load()));
  {
    std::lock_guard<std::mutex> lock(outcomes_mu);
    std::printf("            refresh outcomes: %d updated, %d not_modified, %d failed\n",
                outcomes["updated"], outcomes["not_modified"], outcomes["failed"]);
    Check(outcomes["updated"] >= 2, "the term picked up new versions of the file");
    Check(outcomes["not_modified"] >= 1, "unchanged files were not re-read and republished");
    Check(invalid_writes == 0 || outcomes["failed"] >= 1, "invalid tables were refused");
  }
  std::printf("            final: %s, version %s, %llu updates, last error: %s\n",
              std::string(keel::TermStateName(status.state)).c_str(), status.version.c_str(),
              static_cast<unsigned long long>(status.updates),
              status.last_error.ok() ? "none" : status.last_error.ToString().c_str());
  Check(torn.load() == 0, "no reader saw a torn or freed table");
  Check(last.ok() && prices.Read()->version == written_version,
        "the last table written is the one published");
  Check(status.state == keel::TermState::kFresh, "the term ends fresh");
  term->reset();
  std::filesystem::remove_all(dir);

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
