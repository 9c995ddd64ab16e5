// Static: a fetcher whose bytes live in memory, for tests, examples and embedded defaults.
//
// `Static("bytes")` always answers the same bytes. A `StaticSource` is a source a test
// controls while a term runs: it sets new bytes, makes the next fetches fail, suggests the
// next refresh as an HTTP server's cache headers would, and can hold fetches open to test what
// happens while one is in flight.
//
//   auto source = std::make_shared<keel::fetchers::StaticSource>("v1");
//   auto term = keel::RemoteTerm<std::string>::Start(*runtime, {
//       .name = "greeting", .fetcher = keel::fetchers::Static(source), .decode = ...});
//   source->Set("v2");                                   // the next fetch sees v2
//   source->Fail(absl::UnavailableError("down"));        // the next fetches fail
//
// Each `Set` gives the bytes a new version ("static:<n>"); a fetch whose request already
// knows the current version answers "not modified", as a conditional HTTP request would.
//
// Thread safety: `StaticSource` is thread-safe; tests call it from any thread while the
// term's control thread fetches from it.
//
// Lifetime: a held fetch keeps its callback (and so its term's internals) until Release(),
// StopHolding() or the term's destruction cancels it; release held fetches before the runtime
// shuts down, or destroy the term first. Release() needs the fetch's runtime to still exist.
#ifndef KEEL_FETCHERS_STATIC_SOURCE_H_
#define KEEL_FETCHERS_STATIC_SOURCE_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "keel/fetchers/fetcher.h"
#include "keel/internal/sync.h"

namespace keel::fetchers {

class StaticSource {
 public:
  explicit StaticSource(std::string bytes = "");

  // Replaces the bytes and gives them a new version; clears a failure set by Fail().
  void Set(std::string bytes);
  // Sets the time the bytes say they were modified (FetchResult::modified), kept across Set
  // until changed; nullopt (the default) for none.
  void SetModified(std::optional<absl::Time> modified);
  // Makes every fetch fail with `error` until the next Set() or Recover(). `error` must not
  // be OK.
  void Fail(absl::Status error);
  // Ends a failure set by Fail(), keeping the bytes.
  void Recover();
  // Suggests when to fetch next (FetchResult::next_refresh), as cache headers would; nullopt
  // for no suggestion.
  void SuggestNextRefresh(std::optional<RefreshDecision> decision);

  // Holds fetches: from now on a fetch does not answer until Release() or StopHolding(). For
  // tests of what a term does while a fetch is in flight.
  void Hold();
  // Answers the fetches held now (on their control threads) with the source's state at this
  // moment; later fetches are held again.
  void Release();
  // Stops holding, and answers the fetches held now.
  void StopHolding();
  // How many fetches are held now.
  size_t HeldFetches() const;
  // Waits (real time, up to `timeout`) until at least `n` fetches have started and one is
  // held; false on timeout. For tests that must know a fetch is in flight.
  bool AwaitHeldFetch(uint64_t n, absl::Duration timeout);

  // How many fetches have started.
  uint64_t fetches() const;
  // The version of the current bytes.
  std::string version() const;

 private:
  friend class StaticFetcher;
  // Answers one fetch now: called on the control thread by the fetcher.
  FetchResult Answer(const FetchRequest& request);
  // Called by the fetcher on the control thread: answers now, or parks the fetch when held.
  void Start(const void* fetcher, Runtime& runtime, const FetchRequest& request,
             FetchCallback done);
  // Called by the fetcher on the control thread: answers its held fetch with CancelledError.
  void Cancel(const void* fetcher);

  struct Held {
    const void* fetcher;
    Runtime* runtime;
    FetchRequest request;
    FetchCallback done;
  };

  mutable internal::Mutex mu_;
  std::condition_variable fetch_started_;  // with mu_: a fetch started or was held
  std::string bytes_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 1;
  std::optional<absl::Time> modified_ ABSL_GUARDED_BY(mu_);
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  std::optional<RefreshDecision> next_refresh_ ABSL_GUARDED_BY(mu_);
  bool holding_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Held> held_ ABSL_GUARDED_BY(mu_);
  uint64_t fetches_ ABSL_GUARDED_BY(mu_) = 0;
};

// A fetcher answering from `source`; several fetchers may share one source.
std::unique_ptr<Fetcher> Static(std::shared_ptr<StaticSource> source);
// A fetcher that always answers `bytes` (version "static:1").
std::unique_ptr<Fetcher> Static(std::string bytes);

}  // namespace keel::fetchers

#endif  // KEEL_FETCHERS_STATIC_SOURCE_H_
