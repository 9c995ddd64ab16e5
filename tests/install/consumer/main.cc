// A user of the installed keel package: starts a runtime, publishes and reads an RCU cell,
// round-trips gzip. Prints "consumer ok" and exits 0 when everything behaves.
#include <cstdio>
#include <future>

#include "keel/fetchers/gzip.h"
#include "keel/rcu_cell.h"
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
  std::printf("consumer ok\n");
  return 0;
}
