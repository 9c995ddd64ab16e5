// Differential fuzzer: keel's sharded idempotency map (internal to keel::stores) against an
// oracle on absl::flat_hash_map<std::string, Record> that applies the same rules, on instants
// the harness makes (no clock).
//
// The input first picks the map's configuration (shards, start instant) and the rules a tracker
// would pass (lease, retention >= lease, the two policies, max_entries), then drives a sequence
// of operations: TryClaim with a key from a small set and a fingerprint from a small set,
// Complete / Halt / Release with the owner's token, a stale token of an earlier claim of the
// key, or a token nobody holds, time moving by nanoseconds to years (or to a record's lease
// deadline or expiry, or to a whole millisecond, give or take a nanosecond), and Sweep. Each
// operation is made at "now" minus a jitter of up to a few milliseconds, as when concurrent callers
// read the clock before taking a shard's lock, so the instants the map sees are not monotonic.
//
// The oracle's rules (the map's header and TryClaim's comment):
//   - A record stays until a sweep removes it or its owner releases it; expiry is checked on
//     every operation, so an expired record is dead (claimable, not owned) but still counted.
//   - TryClaim claims an absent key (ResourceExhausted when max_entries records are held), or a
//     record that is expired, or whose lease lapsed under reclaim_lapsed_lease (whatever the
//     fingerprint), or that is halted under release_halted with the same fingerprint; a record
//     whose lease lapsed under the halt policy *is* halted (a sweep only writes it down: "a
//     lapsed lease reads the same whether or not a sweep has halted the entry yet"), so
//     release_halted frees it too. Otherwise the live record is returned unchanged.
//   - Complete / Halt / Release succeed only for the owner of a processing record that has not
//     expired and whose lease has not lapsed; otherwise FailedPrecondition and nothing changes.
//     Complete and Halt restart retention from their instant.
//   - Sweep(now) handles the records whose instant of interest (the lease deadline while
//     processing, else the expiry) has come, at the wheels' millisecond granularity (ticks
//     counted from the map's start): an instant's tick is rounded up, the sweep's rounded down,
//     and a sweep whose tick is behind an earlier sweep's handles nothing (the wheels never go
//     back). Of those, it removes expired records (counted as expired), removes lapsed ones
//     under reclaim_lapsed_lease (counted as lapsed), halts lapsed ones otherwise (counted as
//     lapsed, keeping their expiry), and leaves the others (checked at the sweep's own `now`).
// After every operation: the results agree (the outcome and every field of the answer, status
// codes, sweep counts), and size(), CountByState() and Events() agree with the oracle. At the end
// a sweep far in the future must empty the map. A divergence prints the operations so far and
// aborts.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "idempotency_map.h"
#include "keel/clock.h"
#include "keel/idempotency.h"

namespace {

using keel::Instant;
using keel::internal::ClaimAttempt;
using keel::internal::ClaimOutcome;
using keel::internal::ClaimRules;
using keel::internal::MapEvents;
using keel::internal::RecordState;
using keel::internal::ShardedIdempotencyMap;
using keel::internal::SweepResult;
using Response = std::shared_ptr<const keel::IdempotentResponse>;

constexpr int kMaxOps = 2000;
const std::string kKeys[] = {"a", "b", "order-42", std::string("nul\0key", 7),
                             std::string(96, 'k')};
const std::string kFingerprints[] = {"fp-1", "fp-2", "", std::string(64, 'f')};
const std::string kReasons[] = {"handler threw", "", keel::internal::kLeaseLapsedReason};

// The rules a tracker passes to each TryClaim, and the bound it gives the map at creation.
struct Rules : ClaimRules {
  size_t max_entries = 1;
};

// The oracle's record: everything the map keeps about a key.
struct IdempotencyRecord {
  RecordState state = RecordState::kProcessing;
  std::string fingerprint;
  uint64_t owner = 0;      // processing
  Instant lease_deadline;  // processing
  Instant expires;
  Response response;        // completed
  std::string halt_reason;  // halted
};

const char* OutcomeName(ClaimOutcome o) {
  switch (o) {
    case ClaimOutcome::kClaimed:
      return "claimed";
    case ClaimOutcome::kInFlight:
      return "in-flight";
    case ClaimOutcome::kReplay:
      return "replay";
    case ClaimOutcome::kHalted:
      return "halted";
    case ClaimOutcome::kMismatch:
      return "mismatch";
  }
  return "?";
}

const char* StateName(RecordState s) {
  switch (s) {
    case RecordState::kProcessing:
      return "processing";
    case RecordState::kCompleted:
      return "completed";
    case RecordState::kHalted:
      return "halted";
  }
  return "?";
}

// The oracle: the rules above, on a flat map.
class Oracle {
 public:
  Oracle(Instant start, Rules rules) : start_(start), rules_(std::move(rules)) {}

  struct Claimed {
    absl::StatusCode code = absl::StatusCode::kOk;
    bool claimed = false;
    IdempotencyRecord record;
  };

  static bool Expired(const IdempotencyRecord& r, Instant now) { return r.expires <= now; }
  static bool Lapsed(const IdempotencyRecord& r, Instant now) {
    return r.state == RecordState::kProcessing && r.lease_deadline <= now;
  }

  Claimed TryClaim(const std::string& key, const std::string& fingerprint, uint64_t owner,
                   Instant now) {
    auto it = records_.find(key);
    if (it == records_.end()) {
      if (records_.size() >= rules_.max_entries) {
        return {absl::StatusCode::kResourceExhausted, false, {}};
      }
      it = records_.try_emplace(key).first;
    } else {
      const IdempotencyRecord& r = it->second;
      const bool halted = r.state == RecordState::kHalted || Lapsed(r, now);
      const bool free = Expired(r, now) || (rules_.reclaim_lapsed_lease && Lapsed(r, now)) ||
                        (rules_.release_halted && halted && r.fingerprint == fingerprint);
      if (!free) return {absl::StatusCode::kOk, false, r};
    }
    IdempotencyRecord& r = it->second;
    r = IdempotencyRecord{};
    r.state = RecordState::kProcessing;
    r.fingerprint = fingerprint;
    r.owner = owner;
    r.lease_deadline = keel::AddDuration(now, rules_.lease);
    r.expires = keel::AddDuration(now, rules_.retention);
    return {absl::StatusCode::kOk, true, r};
  }

  // The record `owner` may settle at `now`, or null.
  IdempotencyRecord* Owned(const std::string& key, uint64_t owner, Instant now) {
    auto it = records_.find(key);
    if (it == records_.end()) return nullptr;
    IdempotencyRecord& r = it->second;
    if (Expired(r, now) || r.owner != owner || r.state != RecordState::kProcessing ||
        Lapsed(r, now)) {
      return nullptr;
    }
    return &r;
  }

  absl::StatusCode Complete(const std::string& key, uint64_t owner, Response response,
                            Instant now) {
    IdempotencyRecord* r = Owned(key, owner, now);
    if (r == nullptr) return absl::StatusCode::kFailedPrecondition;
    r->state = RecordState::kCompleted;
    r->response = std::move(response);
    r->expires = keel::AddDuration(now, rules_.retention);
    return absl::StatusCode::kOk;
  }

  absl::StatusCode Halt(const std::string& key, uint64_t owner, const std::string& reason,
                        Instant now) {
    IdempotencyRecord* r = Owned(key, owner, now);
    if (r == nullptr) return absl::StatusCode::kFailedPrecondition;
    r->state = RecordState::kHalted;
    r->halt_reason = reason;
    r->expires = keel::AddDuration(now, rules_.retention);
    return absl::StatusCode::kOk;
  }

  absl::StatusCode Release(const std::string& key, uint64_t owner, Instant now) {
    if (Owned(key, owner, now) == nullptr) return absl::StatusCode::kFailedPrecondition;
    records_.erase(key);
    return absl::StatusCode::kOk;
  }

  // Milliseconds from the start to `t`, rounded up (an instant's tick) or down (a sweep's).
  uint64_t Tick(Instant t, bool round_up) const {
    if (t <= start_) return 0;
    const uint64_t ns = static_cast<uint64_t>((t - start_).count());
    return ns / 1'000'000 + (round_up && ns % 1'000'000 != 0 ? 1 : 0);
  }
  // The instant at which a record next needs the sweep.
  static Instant NextInstant(const IdempotencyRecord& r) {
    return r.state == RecordState::kProcessing ? std::min(r.lease_deadline, r.expires) : r.expires;
  }

  SweepResult Sweep(Instant now) {
    SweepResult result;
    const uint64_t tick = Tick(now, /*round_up=*/false);
    if (tick < swept_tick_) return result;
    swept_tick_ = tick;
    for (auto it = records_.begin(); it != records_.end();) {
      IdempotencyRecord& r = it->second;
      if (Tick(NextInstant(r), /*round_up=*/true) > tick) {
        ++it;
        continue;
      }
      if (Expired(r, now) || (rules_.reclaim_lapsed_lease && Lapsed(r, now))) {
        ++(Expired(r, now) ? result.expired : result.lapsed);
        records_.erase(it++);
        continue;
      }
      if (Lapsed(r, now)) {
        r.state = RecordState::kHalted;
        r.halt_reason = keel::internal::kLeaseLapsedReason;
        ++result.lapsed;
      }
      ++it;
    }
    return result;
  }

  ShardedIdempotencyMap::Counts CountByState() const {
    ShardedIdempotencyMap::Counts counts;
    for (const auto& [key, r] : records_) {
      ++(r.state == RecordState::kProcessing  ? counts.processing
         : r.state == RecordState::kCompleted ? counts.completed
                                              : counts.halted);
    }
    return counts;
  }
  size_t size() const { return records_.size(); }
  const IdempotencyRecord* Find(const std::string& key) const {
    auto it = records_.find(key);
    return it == records_.end() ? nullptr : &it->second;
  }

 private:
  const Instant start_;
  const Rules rules_;
  uint64_t swept_tick_ = 0;  // the latest sweep's tick
  absl::flat_hash_map<std::string, IdempotencyRecord> records_;
};

class Harness {
 public:
  explicit Harness(FuzzedDataProvider& input)
      : input_(input),
        start_(Instant{} + std::chrono::milliseconds(
                               input.ConsumeIntegralInRange<int64_t>(0, int64_t{1} << 40))),
        shards_(1 << input.ConsumeIntegralInRange<int>(0, 6)),
        rules_(ConsumeRules(input)),
        map_(shards_, start_, rules_.max_entries),
        oracle_(start_, rules_),
        base_now_(start_) {
    Log(absl::StrCat(
        "config: start=Instant{}+",
        std::chrono::duration_cast<std::chrono::milliseconds>(start_ - Instant{}).count(),
        "ms shards=", shards_, " lease=", absl::FormatDuration(rules_.lease),
        " retention=", absl::FormatDuration(rules_.retention),
        " reclaim_lapsed_lease=", rules_.reclaim_lapsed_lease,
        " release_halted=", rules_.release_halted, " max_entries=", rules_.max_entries));
  }

  void Run() {
    for (int op = 0; op < kMaxOps && input_.remaining_bytes() > 0; ++op) {
      switch (input_.ConsumeIntegralInRange<int>(0, 11)) {
        case 0:
        case 1:
        case 2:
          TryClaim();
          break;
        case 3:
        case 4:
          Complete();
          break;
        case 5:
          Halt();
          break;
        case 6:
          Release();
          break;
        case 7:
        case 8:
          MoveTime();
          break;
        case 9:
          Jitter();
          break;
        default:
          Sweep();
          break;
      }
      CheckTotals();
    }
    // Far in the future every record has expired: a sweep removes them all.
    base_now_ = keel::AddDuration(base_now_, rules_.retention + absl::Hours(1));
    jitter_ = absl::ZeroDuration();
    Sweep();
    CheckTotals();
    Check(map_.size() == 0, "the map is empty after everything expired");
  }

 private:
  static Rules ConsumeRules(FuzzedDataProvider& input) {
    Rules rules;
    rules.lease = ConsumeDuration(input, absl::Milliseconds(1));
    rules.retention = rules.lease + ConsumeDuration(input, absl::ZeroDuration());
    rules.reclaim_lapsed_lease = input.ConsumeBool();
    rules.release_halted = input.ConsumeBool();
    rules.max_entries = input.ConsumeIntegralInRange<size_t>(1, 6);
    return rules;
  }

  // A duration of at least `floor`: nanoseconds to years.
  static absl::Duration ConsumeDuration(FuzzedDataProvider& input, absl::Duration floor) {
    absl::Duration d;
    switch (input.ConsumeIntegralInRange<int>(0, 4)) {
      case 0:
        d = absl::Nanoseconds(input.ConsumeIntegralInRange<int64_t>(0, 3'000'000));
        break;
      case 1:
        d = absl::Milliseconds(input.ConsumeIntegralInRange<int64_t>(0, 200));
        break;
      case 2:
        d = absl::Seconds(input.ConsumeIntegralInRange<int64_t>(0, 100));
        break;
      case 3:
        d = absl::Hours(input.ConsumeIntegralInRange<int64_t>(0, 48));
        break;
      default:  // past the wheel's 2^36 ms block now and then
        d = absl::Hours(24) * input.ConsumeIntegralInRange<int64_t>(0, 1200);
        break;
    }
    return std::max(d, floor);
  }

  Instant Now() const { return std::max(start_, keel::AddDuration(base_now_, -jitter_)); }

  std::string Describe(Instant t) const {
    return absl::StrCat(std::chrono::duration_cast<std::chrono::nanoseconds>(t - start_).count(),
                        "ns");
  }

  std::string Describe(const IdempotencyRecord& r) const {
    return absl::StrCat("{", StateName(r.state), " fp=\"", absl::CEscape(r.fingerprint),
                        "\" owner=", r.owner, " lease_deadline=", Describe(r.lease_deadline),
                        " expires=", Describe(r.expires),
                        " response=", r.response == nullptr ? "null" : "set", " halt_reason=\"",
                        absl::CEscape(r.halt_reason), "\"}");
  }

  void Log(std::string line) { log_.push_back(std::move(line)); }

  void Check(bool condition, std::string_view what) {
    if (condition) return;
    std::fprintf(stderr, "idempotency_map_fuzzer: divergence: %.*s\n",
                 static_cast<int>(what.size()), what.data());
    std::fprintf(stderr, "operations (instants relative to the start):\n");
    for (const std::string& line : log_) std::fprintf(stderr, "  %s\n", line.c_str());
    std::abort();
  }

  // The map's answer for the oracle's result: the fingerprint check first, then the state (a
  // lapsed lease under the halt policy answers as halted before a sweep says so).
  static ClaimAttempt Expected(const Oracle::Claimed& c, const std::string& fp, Instant now) {
    const IdempotencyRecord& r = c.record;
    ClaimAttempt a;
    a.expires = r.expires;
    if (c.claimed) {
      a.outcome = ClaimOutcome::kClaimed;
      a.owner = r.owner;
      a.lease_deadline = r.lease_deadline;
    } else if (r.fingerprint != fp) {
      a.outcome = ClaimOutcome::kMismatch;
      a.detail = r.fingerprint;
    } else if (r.state == RecordState::kProcessing && r.lease_deadline <= now) {
      a.outcome = ClaimOutcome::kHalted;
      a.detail = keel::internal::kLeaseLapsedReason;
    } else if (r.state == RecordState::kProcessing) {
      a.outcome = ClaimOutcome::kInFlight;
      a.owner = r.owner;
      a.lease_deadline = r.lease_deadline;
    } else if (r.state == RecordState::kCompleted) {
      a.outcome = ClaimOutcome::kReplay;
      a.response = r.response;
    } else {
      a.outcome = ClaimOutcome::kHalted;
      a.detail = r.halt_reason;
    }
    return a;
  }

  void CountAnswer(ClaimOutcome o) {
    switch (o) {
      case ClaimOutcome::kClaimed:
        ++events_.claims;
        break;
      case ClaimOutcome::kInFlight:
        ++events_.conflicts;
        break;
      case ClaimOutcome::kReplay:
        ++events_.replays;
        break;
      case ClaimOutcome::kHalted:
        ++events_.halted_answers;
        break;
      case ClaimOutcome::kMismatch:
        ++events_.mismatches;
        break;
    }
  }

  std::string Describe(const ClaimAttempt& a) const {
    return absl::StrCat("{", OutcomeName(a.outcome), " owner=", a.owner,
                        " lease_deadline=", Describe(a.lease_deadline),
                        " expires=", Describe(a.expires),
                        " response=", a.response == nullptr ? "null" : "set", " detail=\"",
                        absl::CEscape(a.detail), "\"}");
  }

  const std::string& ConsumeKey() {
    return kKeys[input_.ConsumeIntegralInRange<size_t>(0, std::size(kKeys) - 1)];
  }

  // The owner's token, a stale one from an earlier claim of `key`, or one nobody holds.
  uint64_t ConsumeToken(const std::string& key) {
    const IdempotencyRecord* r = oracle_.Find(key);
    std::vector<uint64_t>& issued = issued_[key];
    switch (input_.ConsumeIntegralInRange<int>(0, 3)) {
      case 0:
      case 1:
        if (r != nullptr) return r->owner;
        [[fallthrough]];
      case 2:
        if (!issued.empty()) {
          return issued[input_.ConsumeIntegralInRange<size_t>(0, issued.size() - 1)];
        }
        [[fallthrough]];
      default:
        return next_token_ + 1'000'000;  // never issued
    }
  }

  void TryClaim() {
    const std::string& key = ConsumeKey();
    const std::string& fp =
        kFingerprints[input_.ConsumeIntegralInRange<size_t>(0, std::size(kFingerprints) - 1)];
    const uint64_t owner = next_token_++;
    const Instant now = Now();
    ClaimRules rules = rules_;
    rules.now = now;
    Log(absl::StrCat("TryClaim key=\"", absl::CEscape(key), "\" fp=\"", absl::CEscape(fp),
                     "\" owner=", owner, " now=", Describe(now)));
    absl::StatusOr<ClaimAttempt> actual = map_.TryClaim(key, fp, owner, rules);
    Oracle::Claimed expected = oracle_.TryClaim(key, fp, owner, now);
    Check(actual.status().code() == expected.code,
          absl::StrCat("TryClaim status: map ", actual.status().ToString(), ", oracle ",
                       absl::StatusCodeToString(expected.code)));
    if (!actual.ok()) return;
    const ClaimAttempt want = Expected(expected, fp, now);
    const bool same = actual->outcome == want.outcome && actual->owner == want.owner &&
                      actual->lease_deadline == want.lease_deadline &&
                      actual->expires == want.expires && actual->response == want.response &&
                      actual->detail == want.detail;
    Check(same, absl::StrCat("TryClaim: map ", Describe(*actual), ", oracle ", Describe(want),
                             " (oracle's record ", Describe(expected.record), ")"));
    CountAnswer(want.outcome);
    if (actual->outcome == ClaimOutcome::kClaimed) issued_[key].push_back(owner);
  }

  void Complete() {
    const std::string& key = ConsumeKey();
    const uint64_t owner = ConsumeToken(key);
    const Instant now = Now();
    Response response = std::make_shared<const keel::IdempotentResponse>(
        keel::IdempotentResponse{200 + static_cast<int>(next_token_ % 100), {}, "body"});
    Log(absl::StrCat("Complete key=\"", absl::CEscape(key), "\" owner=", owner,
                     " now=", Describe(now)));
    absl::Status actual = map_.Complete(key, owner, response, now, rules_.retention);
    absl::StatusCode expected = oracle_.Complete(key, owner, response, now);
    CheckSettled("Complete", key, actual, expected);
  }

  void Halt() {
    const std::string& key = ConsumeKey();
    const uint64_t owner = ConsumeToken(key);
    const std::string& reason =
        kReasons[input_.ConsumeIntegralInRange<size_t>(0, std::size(kReasons) - 1)];
    const Instant now = Now();
    Log(absl::StrCat("Halt key=\"", absl::CEscape(key), "\" owner=", owner, " reason=\"",
                     absl::CEscape(reason), "\" now=", Describe(now)));
    absl::Status actual = map_.Halt(key, owner, reason, now, rules_.retention);
    absl::StatusCode expected = oracle_.Halt(key, owner, reason, now);
    CheckSettled("Halt", key, actual, expected);
    if (expected == absl::StatusCode::kOk) ++events_.halts;
  }

  void Release() {
    const std::string& key = ConsumeKey();
    const uint64_t owner = ConsumeToken(key);
    const Instant now = Now();
    Log(absl::StrCat("Release key=\"", absl::CEscape(key), "\" owner=", owner,
                     " now=", Describe(now)));
    absl::Status actual = map_.Release(key, owner, now);
    absl::StatusCode expected = oracle_.Release(key, owner, now);
    CheckSettled("Release", key, actual, expected);
  }

  void CheckSettled(const char* op, const std::string& key, const absl::Status& actual,
                    absl::StatusCode expected) {
    const IdempotencyRecord* r = oracle_.Find(key);
    Check(actual.code() == expected,
          absl::StrCat(op, " status: map ", actual.ToString(), ", oracle ",
                       absl::StatusCodeToString(expected), "; oracle's record ",
                       r == nullptr ? "absent" : Describe(*r)));
    Check(actual.ok() || actual.code() == absl::StatusCode::kFailedPrecondition,
          absl::StrCat(op, " failed with ", actual.ToString(), ", not FailedPrecondition"));
  }

  void MoveTime() {
    switch (input_.ConsumeIntegralInRange<int>(0, 4)) {
      case 0:
      case 1:
        base_now_ = keel::AddDuration(base_now_, ConsumeDuration(input_, absl::ZeroDuration()));
        break;
      case 2: {  // to the next whole millisecond from the start, give or take a nanosecond
        const int64_t ns = (base_now_ - start_).count();
        const int64_t whole = (ns / 1'000'000 + 1) * 1'000'000;
        base_now_ = start_ +
                    std::chrono::nanoseconds(whole + input_.ConsumeIntegralInRange<int64_t>(-1, 1));
        break;
      }
      default: {  // to a record's lease deadline or expiry, give or take a nanosecond
        const IdempotencyRecord* r = oracle_.Find(ConsumeKey());
        if (r == nullptr) break;
        Instant target = input_.ConsumeBool() ? r->lease_deadline : r->expires;
        target += std::chrono::nanoseconds(input_.ConsumeIntegralInRange<int>(-1, 1));
        base_now_ = std::max(base_now_, target);
        break;
      }
    }
    // A horizon far from Instant's limits: instants never saturate.
    base_now_ = std::min(base_now_, start_ + std::chrono::hours(24 * 365 * 50));
    Log(absl::StrCat("time: now=", Describe(base_now_)));
  }

  void Jitter() {
    jitter_ = input_.ConsumeBool()
                  ? absl::ZeroDuration()
                  : absl::Nanoseconds(input_.ConsumeIntegralInRange<int64_t>(0, 5'000'000));
    Log(absl::StrCat("jitter: operations happen ", absl::FormatDuration(jitter_), " before now"));
  }

  void Sweep() {
    const Instant now = Now();
    Log(absl::StrCat("Sweep now=", Describe(now)));
    SweepResult actual = map_.Sweep(now, rules_.reclaim_lapsed_lease);
    SweepResult expected = oracle_.Sweep(now);
    Check(actual.expired == expected.expired && actual.lapsed == expected.lapsed,
          absl::StrCat("Sweep: map expired=", actual.expired, " lapsed=", actual.lapsed,
                       ", oracle expired=", expected.expired, " lapsed=", expected.lapsed));
    events_.expirations += expected.expired;
    if (!rules_.reclaim_lapsed_lease) events_.halts += expected.lapsed;
  }

  void CheckTotals() {
    Check(map_.size() == oracle_.size(),
          absl::StrCat("size: map ", map_.size(), ", oracle ", oracle_.size()));
    ShardedIdempotencyMap::Counts actual = map_.CountByState();
    ShardedIdempotencyMap::Counts expected = oracle_.CountByState();
    Check(actual.processing == expected.processing && actual.completed == expected.completed &&
              actual.halted == expected.halted,
          absl::StrCat("counts by state: map ", actual.processing, "/", actual.completed, "/",
                       actual.halted, ", oracle ", expected.processing, "/", expected.completed,
                       "/", expected.halted, " (processing/completed/halted)"));
    const MapEvents e = map_.Events();
    Check(e.claims == events_.claims && e.replays == events_.replays &&
              e.conflicts == events_.conflicts && e.mismatches == events_.mismatches &&
              e.halts == events_.halts && e.halted_answers == events_.halted_answers &&
              e.expirations == events_.expirations,
          absl::StrCat("events: map ", e.claims, "/", e.replays, "/", e.conflicts, "/",
                       e.mismatches, "/", e.halts, "/", e.halted_answers, "/", e.expirations,
                       ", oracle ", events_.claims, "/", events_.replays, "/", events_.conflicts,
                       "/", events_.mismatches, "/", events_.halts, "/", events_.halted_answers,
                       "/", events_.expirations,
                       " (claims/replays/conflicts/mismatches/halts/halted answers/expirations)"));
  }

  FuzzedDataProvider& input_;
  const Instant start_;
  const int shards_;
  const Rules rules_;
  ShardedIdempotencyMap map_;
  MapEvents events_;  // what the map should have counted
  Oracle oracle_;
  Instant base_now_;  // moves forward only
  absl::Duration jitter_ = absl::ZeroDuration();
  uint64_t next_token_ = 1;
  absl::flat_hash_map<std::string, std::vector<uint64_t>> issued_;  // tokens of claims, per key
  std::vector<std::string> log_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  Harness harness(input);
  harness.Run();
  return 0;
}
