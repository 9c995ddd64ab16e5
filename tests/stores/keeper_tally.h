// Tally: the test worker of the keeper snapshot tests, shared with the child process that
// keeper_snapshot_test kills (keeper_snapshot_child.cc), and its codecs (schemas 1 to 3).
#ifndef KEEL_TESTS_STORES_KEEPER_TALLY_H_
#define KEEL_TESTS_STORES_KEEPER_TALLY_H_

#include <atomic>
#include <charconv>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "keel/keeper.h"
#include "keel/snapshot.h"

namespace keel::testing {

// What every incarnation (and every keeper of one test) reports.
struct Probe {
  std::atomic<int> first_starts{0};
  std::mutex mu;
  std::vector<Crash> causes;  // what OnRecover was told
  std::atomic<int> fail_recovers{0};
};

struct Tally {
  struct State {
    int64_t count = 0;
    int64_t sum = 0;
    bool operator==(const State&) const = default;
  };
  using Args = int64_t;            // the first sum
  using CastMsg = int64_t;         // a value to add
  using CallMsg = std::monostate;  // read
  using Reply = State;

  explicit Tally(std::shared_ptr<Probe> p) : probe(std::move(p)) {}

  State OnFirstStart(const Args& start) {
    ++probe->first_starts;
    return State{0, start};
  }
  Next<State> OnRecover(const State&, const Crash& crash) {
    {
      std::lock_guard<std::mutex> lock(probe->mu);
      probe->causes.push_back(crash);
    }
    if (probe->fail_recovers.fetch_sub(1) > 0) throw std::runtime_error("recovery failed");
    return kUnchanged;
  }
  Next<State> HandleCast(const State& s, const int64_t& add) {
    if (add < 0) throw std::runtime_error("negative");
    return State{s.count + 1, s.sum + add};
  }
  CallOutcome<State, Reply> HandleCall(const State& s, const std::monostate&) {
    return {kUnchanged, s};
  }

  std::shared_ptr<Probe> probe;
};

inline absl::StatusOr<int64_t> ParseInt(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return absl::DataLossError(absl::StrCat("not a number: '", std::string(text), "'"));
  }
  return value;
}

// Schema 1: "count sum". Schema 2: "v2|count|sum". Schema 3: "v3|sum|count".
inline std::string Encode(uint32_t schema, const Tally::State& s) {
  switch (schema) {
    case 1:
      return absl::StrCat(s.count, " ", s.sum);
    case 2:
      return absl::StrCat("v2|", s.count, "|", s.sum);
    default:
      return absl::StrCat("v3|", s.sum, "|", s.count);
  }
}

inline absl::StatusOr<Tally::State> Decode(uint32_t schema, const std::string& bytes) {
  std::vector<std::string> parts =
      schema == 1 ? absl::StrSplit(bytes, ' ') : absl::StrSplit(bytes, '|');
  const size_t want = schema == 1 ? 2 : 3;
  if (parts.size() != want || (schema > 1 && parts[0] != absl::StrCat("v", schema))) {
    return absl::DataLossError(absl::StrCat("not a schema ", schema, " tally: '", bytes, "'"));
  }
  const size_t first = schema == 1 ? 0 : 1;
  absl::StatusOr<int64_t> a = ParseInt(parts[first]);
  absl::StatusOr<int64_t> b = ParseInt(parts[first + 1]);
  if (!a.ok()) return a.status();
  if (!b.ok()) return b.status();
  return schema == 3 ? Tally::State{*b, *a} : Tally::State{*a, *b};
}

inline KeeperSnapshots<Tally::State> Codec(std::shared_ptr<SnapshotStore> store, uint32_t schema) {
  KeeperSnapshots<Tally::State> codec;
  codec.store = std::move(store);
  codec.schema_version = schema;
  codec.encode = [schema](const Tally::State& s) -> absl::StatusOr<std::string> {
    return Encode(schema, s);
  };
  codec.decode = [schema](const std::string& bytes) { return Decode(schema, bytes); };
  return codec;
}

// Upgrades one step by decoding the old schema and encoding the next.
inline absl::StatusOr<std::string> UpgradeStep(uint32_t from, std::string bytes) {
  absl::StatusOr<Tally::State> old = Decode(from, bytes);
  if (!old.ok()) return old.status();
  return Encode(from + 1, *old);
}

}  // namespace keel::testing

#endif  // KEEL_TESTS_STORES_KEEPER_TALLY_H_
