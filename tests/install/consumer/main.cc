// A user of the installed keel package: starts a runtime, publishes and reads an RCU cell,
// round-trips gzip, starts a remote term on a static source, and claims and replays an
// idempotency key. Prints "consumer ok" and exits 0 when everything behaves.
#include <cstdio>
#include <future>
#include <string>
#include <string_view>
#include <variant>

#include "keel/fetchers/gzip.h"
#include "keel/fetchers/static_source.h"
#include "keel/idempotency.h"
#include "keel/rcu_cell.h"
#include "keel/remote_term.h"
#include "keel/runtime.h"

int main() {
  auto runtime = keel::Runtime::Create({.name = "consumer"});
  if (!runtime.ok()) {
    std::fprintf(stderr, "runtime: %s\n", runtime.status().ToString().c_str());
    return 1;
  }
  keel::RcuCell<int> cell;
  std::promise<void> done;
  auto timer = (*runtime)->Schedule(absl::Milliseconds(1), [&] {
    cell.Emplace(42);
    done.set_value();
  });
  if (!timer.ok()) return 1;
  done.get_future().wait();
  auto guard = cell.Read();
  if (!guard || *guard != 42) return 1;
  auto packed = keel::fetchers::Gzip("hello");
  if (!packed.ok()) return 1;
  auto unpacked = keel::fetchers::Gunzip(*packed);
  if (!unpacked.ok() || *unpacked != "hello") return 1;

  auto term = keel::RemoteTerm<std::string>::Start(
      **runtime, {.name = "greeting",
                  .fetcher = keel::fetchers::Static("hello"),
                  .decode = [](std::string_view bytes) -> absl::StatusOr<std::string> {
                    return std::string(bytes);
                  }});
  if (!term.ok() || *(*term)->Read() != "hello") return 1;
  term->reset();

  auto tracker = keel::IdempotencyTracker::Create(**runtime);
  if (!tracker.ok()) return 1;
  auto first = (*tracker)->Track("key-1", "fp");
  if (!first.ok() || !std::holds_alternative<keel::Claim>(*first)) return 1;
  if (!std::get<keel::Claim>(*first).Complete({.status = 201}).ok()) return 1;
  auto retry = (*tracker)->Track("key-1", "fp");
  if (!retry.ok() || std::get<keel::Replay>(*retry).response->status != 201) return 1;
  std::printf("consumer ok\n");
  return 0;
}
