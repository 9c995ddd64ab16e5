// RemoteTerm<T> on the static and file fetchers, with a manual clock: startup, the update
// pipeline's failures (each keeps the last good value), the schedule (interval, source hints,
// backoff), coalescing, status, listeners, telemetry and the last-known-good copy.
#include "keel/remote_term.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <latch>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "keel/clock.h"
#include "keel/fetchers/file.h"
#include "keel/fetchers/gzip.h"
#include "keel/fetchers/static_source.h"
#include "keel/runtime.h"
#include "keel/telemetry.h"
#include "support/span_log.h"

namespace keel {
namespace {

using fetchers::StaticSource;
using ::testing::HasSubstr;

// Decodes "v<anything>" into the string; anything else is InvalidArgument.
absl::StatusOr<std::string> DecodeV(std::string_view bytes) {
  if (bytes.empty() || bytes[0] != 'v') {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a 'v' prefix, got '", std::string(bytes.substr(0, 20)), "'"));
  }
  return std::string(bytes);
}

class RemoteTermTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto runtime = Runtime::Create({.name = "term-test", .clock = &clock_});
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    runtime_ = *std::move(runtime);
    spans_ = std::make_unique<testing::SpanLog>(runtime_->telemetry(), "keel.term.update");
  }
  void TearDown() override {
    spans_.reset();
    runtime_.reset();
  }

  // Options on `source` with exact timing (no jitter) and the test's decode.
  RemoteTermOptions<std::string> Options(std::shared_ptr<StaticSource> source) {
    RemoteTermOptions<std::string> o;
    o.name = "greeting";
    o.fetcher = fetchers::Static(std::move(source));
    o.decode = DecodeV;
    o.refresh = absl::Seconds(10);
    o.min_refresh = absl::Seconds(1);
    o.max_refresh = absl::Minutes(10);
    o.jitter = 0;
    o.backoff_initial = absl::Seconds(1);
    o.backoff_max = absl::Seconds(5);
    o.startup_timeout = absl::Seconds(10);
    return o;
  }

  // `options` with the test's decode, counting its calls in `decodes`.
  static RemoteTermOptions<std::string> CountingDecodes(RemoteTermOptions<std::string> options,
                                                        std::shared_ptr<std::atomic<int>> decodes) {
    options.decode = [decodes](std::string_view bytes) {
      ++*decodes;
      return DecodeV(bytes);
    };
    return options;
  }

  std::unique_ptr<RemoteTerm<std::string>> StartOk(RemoteTermOptions<std::string> options) {
    auto term = RemoteTerm<std::string>::Start(*runtime_, std::move(options));
    EXPECT_TRUE(term.ok()) << term.status();
    return term.ok() ? *std::move(term) : nullptr;
  }

  static std::string ValueOf(const RemoteTerm<std::string>& term) {
    auto guard = term.Read();
    return guard ? *guard : "<empty>";
  }

  // Moves the clock and waits until everything then due ran on the control thread.
  void Advance(absl::Duration d) {
    clock_.Advance(d);
    ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  }

  absl::Duration UntilNextRefresh(const RemoteTerm<std::string>& term) {
    TermStatus s = term.status();
    EXPECT_TRUE(s.next_refresh.has_value());
    return s.next_refresh.has_value() ? Elapsed(clock_.Now(), *s.next_refresh)
                                      : absl::InfiniteDuration();
  }

  ManualClock clock_;
  std::unique_ptr<Runtime> runtime_;
  std::unique_ptr<testing::SpanLog> spans_;
};

TEST_F(RemoteTermTest, BlockingStartReturnsWithTheFirstValuePublished) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(ValueOf(*term), "v1");
  EXPECT_EQ(*term->Pin(), "v1");
  TermStatus s = term->status();
  EXPECT_EQ(s.state, TermState::kFresh);
  EXPECT_EQ(s.name, "greeting");
  EXPECT_EQ(s.source, "static");
  EXPECT_EQ(s.version, "static:1");
  EXPECT_EQ(s.updates, 1u);
  EXPECT_EQ(s.bytes_received, 2u);
  EXPECT_TRUE(s.last_error.ok());
  EXPECT_EQ(s.age, absl::ZeroDuration());
  Advance(absl::Seconds(3));
  EXPECT_EQ(term->status().age, absl::Seconds(3));
}

TEST_F(RemoteTermTest, BlockingStartReturnsTheFirstFetchErrorWhenThereIsNoValue) {
  auto source = std::make_shared<StaticSource>("v1");
  source->Fail(absl::NotFoundError("no such object"));
  auto term = RemoteTerm<std::string>::Start(*runtime_, Options(source));
  ASSERT_FALSE(term.ok());
  EXPECT_EQ(term.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(term.status().message(), HasSubstr("greeting"));
  EXPECT_THAT(term.status().message(), HasSubstr("no such object"));
}

TEST_F(RemoteTermTest, BlockingStartReturnsTheDecodeError) {
  auto term =
      RemoteTerm<std::string>::Start(*runtime_, Options(std::make_shared<StaticSource>("garbage")));
  ASSERT_FALSE(term.ok());
  EXPECT_EQ(term.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(term.status().message(), HasSubstr("expected a 'v' prefix"));
}

TEST_F(RemoteTermTest, BlockingStartGivesUpAtItsTimeoutAndStopsTheTerm) {
  auto source = std::make_shared<StaticSource>("v1");
  source->Hold();
  auto options = Options(source);
  options.startup_timeout = absl::Milliseconds(50);
  auto term = RemoteTerm<std::string>::Start(*runtime_, std::move(options));
  ASSERT_FALSE(term.ok());
  EXPECT_EQ(term.status().code(), absl::StatusCode::kDeadlineExceeded);
  // The stopped term cancelled its held fetch; releasing the source publishes nothing.
  ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  EXPECT_EQ(source->HeldFetches(), 0u);
}

TEST_F(RemoteTermTest, StartRefusesInvalidOptionsSayingWhatWasExpected) {
  auto source = std::make_shared<StaticSource>("v1");
  auto expect_invalid = [&](auto mutate, std::string_view needle) {
    auto options = Options(source);
    mutate(options);
    auto term = RemoteTerm<std::string>::Start(*runtime_, std::move(options));
    ASSERT_FALSE(term.ok()) << needle;
    EXPECT_EQ(term.status().code(), absl::StatusCode::kInvalidArgument) << term.status();
    EXPECT_THAT(term.status().message(), HasSubstr(needle));
  };
  using O = RemoteTermOptions<std::string>;
  expect_invalid([](O& o) { o.name = ""; }, "name must not be empty");
  expect_invalid([](O& o) { o.fetcher = nullptr; }, "fetcher is required");
  expect_invalid([](O& o) { o.decode = nullptr; }, "decode is required");
  expect_invalid([](O& o) { o.refresh = absl::Milliseconds(-5); }, "refresh must be >= 1ms");
  expect_invalid([](O& o) { o.refresh = absl::Microseconds(500); }, "refresh must be >= 1ms");
  expect_invalid([](O& o) { o.min_refresh = absl::Minutes(1); }, "min_refresh must be in");
  expect_invalid([](O& o) { o.min_refresh = absl::ZeroDuration(); }, "min_refresh must be in");
  expect_invalid([](O& o) { o.max_refresh = absl::Seconds(2); }, "max_refresh must be >=");
  expect_invalid([](O& o) { o.jitter = 1.0; }, "jitter must be in [0, 1)");
  expect_invalid([](O& o) { o.jitter = std::nan(""); }, "jitter must be in [0, 1)");
  expect_invalid([](O& o) { o.backoff_initial = absl::ZeroDuration(); }, "backoff_initial");
  expect_invalid([](O& o) { o.backoff_max = absl::Milliseconds(10); }, "backoff_max");
  expect_invalid([](O& o) { o.startup_timeout = absl::ZeroDuration(); }, "startup_timeout");
  expect_invalid([](O& o) { o.max_fetched_bytes = 0; }, "max_fetched_bytes");
  expect_invalid([](O& o) { o.fetcher = fetchers::File(""); }, "file path is empty");
  expect_invalid(
      [](O& o) {
        o.fetcher = fetchers::File({.path = "/x", .stamp_trust_window = absl::Seconds(-1)});
      },
      "stamp_trust_window must be >= 0");
}

TEST_F(RemoteTermTest, BlockingStartOnTheControlThreadIsRefused) {
  auto source = std::make_shared<StaticSource>("v1");
  absl::Status status;
  internal::Notification done;
  ASSERT_TRUE(runtime_
                  ->Post([&] {
                    status = RemoteTerm<std::string>::Start(*runtime_, Options(source)).status();
                    done.Notify();
                  })
                  .ok());
  done.WaitForNotification();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("kLazy"));
}

TEST_F(RemoteTermTest, LazyStartReturnsAtOnceAndReadsAreEmptyUntilTheFirstValue) {
  auto source = std::make_shared<StaticSource>("v1");
  source->Hold();
  auto options = Options(source);
  options.startup = TermStartup::kLazy;
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  EXPECT_FALSE(term->Read());
  EXPECT_EQ(term->Pin(), nullptr);
  EXPECT_EQ(term->status().state, TermState::kInitializing);
  EXPECT_EQ(term->status().version, "");
  ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());  // the first fetch has started
  ASSERT_EQ(source->HeldFetches(), 1u);
  source->Release();
  spans_->Await(1);
  EXPECT_EQ(ValueOf(*term), "v1");
  EXPECT_EQ(term->status().state, TermState::kFresh);
}

TEST_F(RemoteTermTest, EveryFailureKeepsTheLastGoodValueAndTheStatusSaysWhy) {
  auto source = std::make_shared<StaticSource>("v1");
  auto options = Options(source);
  options.max_fetched_bytes = 1000;
  options.max_decoded_bytes = 2000;
  options.validate = [](const std::string& v) {
    return v == "v-invalid" ? absl::FailedPreconditionError("v-invalid is refused")
                            : absl::OkStatus();
  };
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);

  struct Case {
    std::string bytes;
    absl::StatusCode code;
    std::string needle;
  };
  std::string bomb = *fetchers::Gzip(std::string(1 << 20, 'v'));
  std::string gz = *fetchers::Gzip("v-zipped");
  std::vector<Case> cases = {
      {"garbage", absl::StatusCode::kInvalidArgument, "expected a 'v' prefix"},
      {"v-invalid", absl::StatusCode::kFailedPrecondition, "v-invalid is refused"},
      {std::string(1001, 'v'), absl::StatusCode::kResourceExhausted, "cap of 1000"},
      {bomb, absl::StatusCode::kResourceExhausted, ""},
      {gz.substr(0, gz.size() - 5), absl::StatusCode::kDataLoss, ""},
  };
  uint32_t failures = 0;
  for (const Case& c : cases) {
    source->Set(c.bytes);
    absl::Status outcome = term->RefreshNow();
    EXPECT_EQ(outcome.code(), c.code) << outcome;
    EXPECT_THAT(outcome.message(), HasSubstr(c.needle));
    EXPECT_EQ(ValueOf(*term), "v1");
    TermStatus s = term->status();
    EXPECT_EQ(s.state, TermState::kStale);
    EXPECT_EQ(s.last_error, outcome);
    EXPECT_EQ(s.consecutive_failures, ++failures);
    EXPECT_EQ(s.version, "static:1");
  }
  source->Set(gz);
  EXPECT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(ValueOf(*term), "v-zipped");
  EXPECT_EQ(term->status().state, TermState::kFresh);
  EXPECT_EQ(term->status().consecutive_failures, 0u);
}

TEST_F(RemoteTermTest, RefusedBytesFetchedAgainAreNotDecodedAgain) {
  auto source = std::make_shared<StaticSource>("v1");
  auto decodes = std::make_shared<std::atomic<int>>(0);
  auto options = CountingDecodes(Options(source), decodes);
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  source->Set("garbage");
  EXPECT_EQ(term->RefreshNow().code(), absl::StatusCode::kInvalidArgument);
  source->Set("garbage");  // a new version of the same bad bytes
  absl::Status again = term->RefreshNow();
  EXPECT_EQ(again.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(again.message(), HasSubstr("the same bytes as the last refused value"));
  EXPECT_EQ(decodes->load(), 2);  // the first value and the first "garbage"
  source->Set("v2");
  EXPECT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(decodes->load(), 3);
}

TEST_F(RemoteTermTest, ADecodeHookThatThrowsFailsTheUpdateOnly) {
  auto source = std::make_shared<StaticSource>("v1");
  auto options = Options(source);
  options.decode = [](std::string_view bytes) -> absl::StatusOr<std::string> {
    if (bytes == "vthrow") throw std::runtime_error("parser exploded");
    return std::string(bytes);
  };
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  source->Set("vthrow");
  absl::Status outcome = term->RefreshNow();
  EXPECT_EQ(outcome.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(outcome.message(), HasSubstr("parser exploded"));
  EXPECT_EQ(ValueOf(*term), "v1");
}

// A user fetcher with scripted answers; it can throw from Fetch or answer "not modified".
class ScriptedFetcher final : public fetchers::Fetcher {
 public:
  enum class Step { kThrow, kNotModified, kValue };
  explicit ScriptedFetcher(std::vector<Step> steps) : steps_(std::move(steps)) {}
  std::string Describe() const override { return "scripted"; }
  void Fetch(Runtime&, const fetchers::FetchRequest&, fetchers::FetchCallback done) override {
    Step step = next_ < steps_.size() ? steps_[next_] : Step::kValue;
    ++next_;
    fetchers::FetchResult result;
    switch (step) {
      case Step::kThrow:
        throw std::runtime_error("scripted failure");
      case Step::kNotModified:
        result.not_modified = true;
        break;
      case Step::kValue:
        result.body = absl::StrCat("v", next_);
        result.validators.version = absl::StrCat("scripted:", next_);
        break;
    }
    done(std::move(result));
  }

 private:
  std::vector<Step> steps_;
  size_t next_ = 0;
};

TEST_F(RemoteTermTest, AFetcherThatThrowsFailsThatAttemptAndTheTermCarriesOn) {
  using Step = ScriptedFetcher::Step;
  auto options = Options(std::make_shared<StaticSource>());
  options.fetcher = std::make_unique<ScriptedFetcher>(std::vector<Step>{Step::kThrow});
  options.startup = TermStartup::kLazy;
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  Span failed = spans_->Await(1);
  EXPECT_EQ(failed.outcome, "failed");
  EXPECT_THAT(std::string(failed.Attribute("error")), HasSubstr("scripted failure"));
  EXPECT_EQ(term->status().state, TermState::kFailed);
  EXPECT_TRUE(term->RefreshNow().ok());  // not wedged: the next fetch runs
  EXPECT_EQ(ValueOf(*term), "v2");
}

TEST_F(RemoteTermTest, NotModifiedWithoutAValueIsAnErrorNotAnEmptyStart) {
  using Step = ScriptedFetcher::Step;
  auto options = Options(std::make_shared<StaticSource>());
  options.fetcher = std::make_unique<ScriptedFetcher>(std::vector<Step>{Step::kNotModified});
  auto term = RemoteTerm<std::string>::Start(*runtime_, std::move(options));
  ASSERT_FALSE(term.ok());
  EXPECT_EQ(term.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(term.status().message(), HasSubstr("holds no value"));
}

TEST_F(RemoteTermTest, APipelineFailureAfterASuccessfulFetchBacksOffDespiteCacheHeaders) {
  // A body the term refuses, served with "max-age=0": the hint was meant for a good body, so
  // the term backs off instead of refetching the bad body at min_refresh forever.
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  source->SuggestNextRefresh(fetchers::RefreshDecision{absl::ZeroDuration(), "max-age 0s"});
  source->Set("garbage");
  EXPECT_FALSE(term->RefreshNow().ok());
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(1));
  EXPECT_THAT(term->status().next_refresh_reason, HasSubstr("backoff"));
  source->Set("garbage!");
  EXPECT_FALSE(term->RefreshNow().ok());
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(2));
}

TEST_F(RemoteTermTest, ARetryAfterShorterThanTheBackoffDoesNotShortenIt) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  source->SuggestNextRefresh(fetchers::RefreshDecision{absl::ZeroDuration(), "retry-after 0s"});
  source->Fail(absl::UnavailableError("HTTP 503"));
  for (absl::Duration expected : {absl::Seconds(1), absl::Seconds(2), absl::Seconds(4)}) {
    EXPECT_FALSE(term->RefreshNow().ok());
    EXPECT_EQ(UntilNextRefresh(*term), expected);
  }
}

TEST_F(RemoteTermTest, BlockingCallsFromTheOffloadPoolAreRefused) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  absl::Status refresh, start;
  internal::Notification done;
  ASSERT_TRUE(runtime_
                  ->Offload([&] {
                    refresh = term->RefreshNow();
                    start = RemoteTerm<std::string>::Start(*runtime_, Options(source)).status();
                    done.Notify();
                  })
                  .ok());
  done.WaitForNotification();
  EXPECT_EQ(refresh.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(start.code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RemoteTermTest, AfterTheDestructorReturnsNoHookOrSpanRuns) {
  // Property: destroying a term while its update waits for the offload pool means its decode
  // hook never starts and no span is emitted later.
  auto source = std::make_shared<StaticSource>("v1");
  auto decodes = std::make_shared<std::atomic<int>>(0);
  auto options = CountingDecodes(Options(source), decodes);
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  // Occupy both offload threads so that the next decode waits in the queue.
  internal::Notification release;
  std::latch busy(2);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(runtime_
                    ->Offload([&] {
                      busy.count_down();
                      release.WaitForNotification();
                    })
                    .ok());
  }
  busy.wait();
  source->Set("v2");
  term->Refresh();
  ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());  // fetched; the decode job is queued
  size_t spans_before = spans_->size();
  term.reset();
  release.Notify();
  ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  ASSERT_TRUE(runtime_->Shutdown().ok());  // every queued job and completion has run
  EXPECT_EQ(decodes->load(), 1);
  EXPECT_EQ(spans_->size(), spans_before + 1);  // the stopped attempt's own span, at Stop
}

TEST_F(RemoteTermTest, AnUnchangedSourceIsNotModifiedAndNothingIsRepublished) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  std::atomic<int> changes{0};
  term->OnChange([&](const std::shared_ptr<const std::string>&) { ++changes; });
  const std::string* before = term->Read().get();

  EXPECT_TRUE(term->RefreshNow().ok());  // same version: the source says "not modified"
  source->Set("v1");                     // new version, same bytes: the content hash says so
  EXPECT_TRUE(term->RefreshNow().ok());

  EXPECT_EQ(changes.load(), 0);
  EXPECT_EQ(term->Read().get(), before);
  TermStatus s = term->status();
  EXPECT_EQ(s.updates, 1u);
  EXPECT_EQ(s.not_modified, 2u);
  EXPECT_EQ(s.state, TermState::kFresh);
  Span unchanged = spans_->Await(3);
  EXPECT_EQ(unchanged.outcome, "not_modified");
  EXPECT_EQ(unchanged.Attribute("bytes_received"), "2");
  // The first "not modified" downloaded nothing.
  EXPECT_EQ(spans_->Await(2).Attribute("bytes_received"), "0");
  // The validators moved on: the next fetch is conditional on the new version.
  EXPECT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(spans_->Await(4).Attribute("bytes_received"), "0");
}

TEST_F(RemoteTermTest, AValueOlderThanThePublishedOneIsNotInstalled) {
  auto source = std::make_shared<StaticSource>("v-new");
  absl::Time t1 = absl::FromUnixSeconds(1'700'000'000);
  source->SetModified(t1);
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  source->Set("v-old");
  source->SetModified(t1 - absl::Hours(1));
  absl::Status outcome = term->RefreshNow();
  EXPECT_EQ(outcome.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(outcome.message(), HasSubstr("older than the published one"));
  EXPECT_EQ(ValueOf(*term), "v-new");
  EXPECT_EQ(term->status().modified, t1);
}

TEST_F(RemoteTermTest, AllowOlderInstallsARollback) {
  auto source = std::make_shared<StaticSource>("v-new");
  absl::Time t1 = absl::FromUnixSeconds(1'700'000'000);
  source->SetModified(t1);
  auto options = Options(source);
  options.allow_older = true;
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  source->Set("v-old");
  source->SetModified(t1 - absl::Hours(1));
  EXPECT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(ValueOf(*term), "v-old");
}

TEST_F(RemoteTermTest, RefreshesAtTheIntervalOnTheRuntimeClock) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(10));
  EXPECT_EQ(term->status().next_refresh_reason, "interval");
  source->Set("v2");
  Advance(absl::Seconds(9));
  EXPECT_EQ(source->fetches(), 1u);
  Advance(absl::Seconds(1));
  EXPECT_EQ(source->fetches(), 2u);
  spans_->Await(2);
  EXPECT_EQ(ValueOf(*term), "v2");
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(10));
}

TEST_F(RemoteTermTest, JitterSpreadsTheIntervalWithinItsBounds) {
  auto source = std::make_shared<StaticSource>("v1");
  auto options = Options(source);
  options.jitter = 0.2;
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  absl::Duration lo = absl::InfiniteDuration(), hi = absl::ZeroDuration();
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(term->RefreshNow().ok());
    absl::Duration d = UntilNextRefresh(*term);
    EXPECT_GE(d, absl::Seconds(8));
    EXPECT_LE(d, absl::Seconds(12));
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  EXPECT_GT(hi - lo, absl::Milliseconds(500)) << "the delays do not vary";
}

TEST_F(RemoteTermTest, BackoffDoublesUpToItsCapAndResetsAfterASuccess) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  source->Fail(absl::UnavailableError("connection refused"));
  std::vector<absl::Duration> delays;
  for (int i = 0; i < 5; ++i) {
    absl::Duration next = UntilNextRefresh(*term);
    Advance(next);  // the scheduled fetch runs and fails
    delays.push_back(UntilNextRefresh(*term));
  }
  EXPECT_THAT(delays, ::testing::ElementsAre(absl::Seconds(1), absl::Seconds(2), absl::Seconds(4),
                                             absl::Seconds(5), absl::Seconds(5)));
  EXPECT_EQ(term->status().consecutive_failures, 5u);
  EXPECT_THAT(term->status().next_refresh_reason, HasSubstr("backoff 5s after 5 failures"));
  EXPECT_EQ(term->status().state, TermState::kStale);
  EXPECT_EQ(ValueOf(*term), "v1");

  source->Recover();
  Advance(absl::Seconds(5));
  EXPECT_EQ(term->status().state, TermState::kFresh);
  EXPECT_EQ(term->status().consecutive_failures, 0u);
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(10));
  // The next failure starts the backoff over.
  source->Fail(absl::UnavailableError("down again"));
  Advance(absl::Seconds(10));
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(1));
}

TEST_F(RemoteTermTest, BackoffJitterOnlyShortensTheDelay) {
  auto source = std::make_shared<StaticSource>("v1");
  auto options = Options(source);
  options.jitter = 0.5;
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  source->Fail(absl::UnavailableError("down"));
  for (int i = 0; i < 6; ++i) {
    Advance(UntilNextRefresh(*term));
    absl::Duration cap = std::min(absl::Seconds(1) * (1 << i), absl::Seconds(5));
    absl::Duration d = UntilNextRefresh(*term);
    EXPECT_GE(d, cap / 2) << i;
    EXPECT_LE(d, cap) << i;
  }
}

TEST_F(RemoteTermTest, TheSourcesScheduleIsHonouredWithinTheBounds) {
  auto source = std::make_shared<StaticSource>("v1");
  source->SuggestNextRefresh(fetchers::RefreshDecision{absl::Seconds(40), "max-age 60s - age 20s"});
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(40));
  EXPECT_EQ(term->status().next_refresh_reason, "max-age 60s - age 20s");

  source->SuggestNextRefresh(fetchers::RefreshDecision{absl::Hours(3), "max-age 3h"});
  ASSERT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(UntilNextRefresh(*term), absl::Minutes(10));  // max_refresh

  source->SuggestNextRefresh(fetchers::RefreshDecision{absl::ZeroDuration(), "no-cache"});
  ASSERT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(1));  // min_refresh

  // A failure with the source's Retry-After waits that long instead of backing off.
  source->SuggestNextRefresh(fetchers::RefreshDecision{absl::Seconds(120), "retry-after 120s"});
  source->Fail(absl::UnavailableError("HTTP 503"));
  EXPECT_FALSE(term->RefreshNow().ok());
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(120));
}

TEST_F(RemoteTermTest, IgnoringCacheHeadersKeepsTheInterval) {
  auto source = std::make_shared<StaticSource>("v1");
  source->SuggestNextRefresh(fetchers::RefreshDecision{absl::Seconds(40), "max-age"});
  auto options = Options(source);
  options.honor_cache_headers = false;
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(10));
  source->Fail(absl::UnavailableError("HTTP 503"));
  EXPECT_FALSE(term->RefreshNow().ok());
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(1));  // backoff, not the hint
}

TEST_F(RemoteTermTest, RefreshRequestsWhileAFetchRunsCoalesceIntoOneMoreFetch) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  source->Hold();
  term->Refresh();
  ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  ASSERT_EQ(source->HeldFetches(), 1u);
  for (int i = 0; i < 5; ++i) term->Refresh();
  ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  EXPECT_EQ(source->fetches(), 2u);  // the startup fetch and the held one
  source->Set("v2");
  source->Release();  // answers the held fetch; the follow-up starts and is held again
  spans_->Await(2);
  ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  EXPECT_EQ(source->fetches(), 3u);
  source->Release();
  spans_->Await(3);
  ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  EXPECT_EQ(source->fetches(), 3u);
  EXPECT_EQ(ValueOf(*term), "v2");
}

TEST_F(RemoteTermTest, RefreshNowWaitsForAFetchThatStartedAfterTheCall) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  source->Hold();
  term->Refresh();  // a fetch that started before the change below
  ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  std::atomic<bool> returned{false};
  absl::Status outcome;
  std::thread waiter([&] {
    outcome = term->RefreshNow(absl::Seconds(10));
    returned = true;
  });
  // Whether RefreshNow's request lands before or after the held fetch ends, its own fetch
  // starts after that one and is held too: the third fetch.
  source->Release();
  ASSERT_TRUE(source->AwaitHeldFetch(3, absl::Seconds(10)));
  EXPECT_EQ(source->fetches(), 3u);
  EXPECT_FALSE(returned.load());
  source->Set("v2");
  source->Release();
  waiter.join();
  EXPECT_TRUE(outcome.ok()) << outcome;
  EXPECT_EQ(ValueOf(*term), "v2");
}

TEST_F(RemoteTermTest, RefreshNowTimesOutWithoutStoppingTheFetch) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  source->Hold();
  source->Set("v2");
  absl::Status outcome = term->RefreshNow(absl::Milliseconds(20));
  EXPECT_EQ(outcome.code(), absl::StatusCode::kDeadlineExceeded);
  source->Release();
  spans_->Await(2);
  EXPECT_EQ(ValueOf(*term), "v2");
}

TEST_F(RemoteTermTest, RefreshNowOnTheControlThreadIsRefused) {
  auto term = StartOk(Options(std::make_shared<StaticSource>("v1")));
  ASSERT_NE(term, nullptr);
  absl::Status status;
  internal::Notification done;
  ASSERT_TRUE(runtime_
                  ->Post([&] {
                    status = term->RefreshNow();
                    done.Notify();
                  })
                  .ok());
  done.WaitForNotification();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RemoteTermTest, ListenersSeeEachNewValueOnTheControlThreadUntilRemoved) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  std::vector<std::string> seen;
  std::atomic<bool> on_control_thread{true};
  auto id = term->OnChange([&](const std::shared_ptr<const std::string>& v) {
    if (!runtime_->InControlThread()) on_control_thread = false;
    seen.push_back(*v);
  });
  term->OnChange([](const std::shared_ptr<const std::string>&) {
    throw std::runtime_error("a listener that throws");
  });
  source->Set("v2");
  ASSERT_TRUE(term->RefreshNow().ok());
  source->Set("v3");
  ASSERT_TRUE(term->RefreshNow().ok());
  term->RemoveListener(id);
  source->Set("v4");
  ASSERT_TRUE(term->RefreshNow().ok());
  EXPECT_THAT(seen, ::testing::ElementsAre("v2", "v3"));
  EXPECT_TRUE(on_control_thread.load());
  EXPECT_EQ(ValueOf(*term), "v4");
}

TEST_F(RemoteTermTest, EachUpdateEmitsOneSpanWithItsOutcomeAndByteCounts) {
  auto source = std::make_shared<StaticSource>(*fetchers::Gzip("v-compressed-value"));
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  Span updated = spans_->Await(1);
  EXPECT_EQ(updated.outcome, "updated");
  EXPECT_EQ(updated.Attribute("term"), "greeting");
  EXPECT_EQ(updated.Attribute("bytes_received"),
            absl::StrCat(fetchers::Gzip("v-compressed-value")->size()));
  EXPECT_EQ(updated.Attribute("bytes_decoded"), "18");
  EXPECT_EQ(updated.Attribute("version"), "static:1");
  EXPECT_EQ(updated.Attribute("next_refresh"), "interval");

  source->Fail(absl::PermissionDeniedError("token expired"));
  EXPECT_FALSE(term->RefreshNow().ok());
  Span failed = spans_->Await(2);
  EXPECT_EQ(failed.outcome, "failed");
  EXPECT_THAT(std::string(failed.Attribute("error")), HasSubstr("token expired"));
  EXPECT_EQ(spans_->size(), 2u);
}

TEST_F(RemoteTermTest, DestroyingATermStopsItsFetches) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  term.reset();
  Advance(absl::Minutes(30));
  EXPECT_EQ(source->fetches(), 1u);
}

TEST_F(RemoteTermTest, DestroyingATermWithAFetchInFlightPublishesNothingLater) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(Options(source));
  ASSERT_NE(term, nullptr);
  std::atomic<int> changes{0};
  term->OnChange([&](const std::shared_ptr<const std::string>&) { ++changes; });
  source->Hold();
  source->Set("v2");
  term->Refresh();
  ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  term.reset();
  source->Release();
  ASSERT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
  EXPECT_EQ(changes.load(), 0);
}

TEST_F(RemoteTermTest, ManyTermsRunSideBySideOnOneRuntime) {
  std::vector<std::shared_ptr<StaticSource>> sources;
  std::vector<std::unique_ptr<RemoteTerm<std::string>>> terms;
  for (int i = 0; i < 20; ++i) {
    sources.push_back(std::make_shared<StaticSource>(absl::StrCat("v", i)));
    auto options = Options(sources.back());
    options.name = absl::StrCat("term-", i);
    options.refresh = absl::Seconds(10 + i);
    options.max_refresh = absl::Minutes(10);
    terms.push_back(StartOk(std::move(options)));
    ASSERT_NE(terms.back(), nullptr);
  }
  for (int i = 0; i < 20; ++i) sources[i]->Set(absl::StrCat("v", i, "-next"));
  Advance(absl::Seconds(10 + 9));
  spans_->Await(20 + 10);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(ValueOf(*terms[i]), i <= 9 ? absl::StrCat("v", i, "-next") : absl::StrCat("v", i))
        << i;
    EXPECT_EQ(terms[i]->status().name, absl::StrCat("term-", i));
  }
}

class LastKnownGoodTest : public RemoteTermTest {
 protected:
  void SetUp() override {
    RemoteTermTest::SetUp();
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("keel-lkg-", getpid(), "-",
                        ::testing::UnitTest::GetInstance()->random_seed(), "-", counter_++);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "greeting.lkg").string();
  }
  void TearDown() override {
    RemoteTermTest::TearDown();
    std::filesystem::remove_all(dir_);
  }

  RemoteTermOptions<std::string> WithCopy(std::shared_ptr<StaticSource> source) {
    auto o = Options(std::move(source));
    o.last_known_good_path = path_;
    return o;
  }

  // An update's outcome comes after its copy is saved: the copy exists once Start returns.
  void AwaitCopy(const RemoteTerm<std::string>& term) {
    ASSERT_TRUE(std::filesystem::exists(path_));
    ASSERT_TRUE(term.status().last_known_good_error.ok()) << term.status().last_known_good_error;
  }

  static inline int counter_ = 0;
  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(LastKnownGoodTest, ATermStartsStaleFromItsDiskCopyWhenTheSourceIsDown) {
  {
    auto source = std::make_shared<StaticSource>(*fetchers::Gzip("v-saved"));
    auto term = StartOk(WithCopy(source));
    ASSERT_NE(term, nullptr);
    AwaitCopy(*term);
  }
  auto down = std::make_shared<StaticSource>("v-unused");
  down->Fail(absl::UnavailableError("connection refused"));
  auto term = StartOk(WithCopy(down));
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(ValueOf(*term), "v-saved");
  TermStatus s = term->status();
  EXPECT_EQ(s.state, TermState::kStale);
  EXPECT_TRUE(s.from_disk);
  EXPECT_EQ(s.version, "static:1");
  EXPECT_EQ(s.last_error.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(s.last_success.has_value());

  down->Set("v-live");
  ASSERT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(ValueOf(*term), "v-live");
  EXPECT_EQ(term->status().state, TermState::kFresh);
  EXPECT_FALSE(term->status().from_disk);
}

TEST_F(LastKnownGoodTest, TheDiskCopysValidatorsMakeTheFirstFetchConditional) {
  auto source = std::make_shared<StaticSource>("v-saved");
  {
    auto term = StartOk(WithCopy(source));
    ASSERT_NE(term, nullptr);
    AwaitCopy(*term);
  }
  // Same source, same version: after a failed start from disk, the source answers "not
  // modified" and the disk copy becomes fresh without a download.
  source->Fail(absl::UnavailableError("blip"));
  auto term = StartOk(WithCopy(source));
  ASSERT_NE(term, nullptr);
  source->Recover();
  ASSERT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(term->status().state, TermState::kFresh);
  EXPECT_EQ(term->status().not_modified, 1u);
  EXPECT_EQ(ValueOf(*term), "v-saved");
}

TEST_F(LastKnownGoodTest, ACorruptOrTruncatedCopyIsRefusedAndTheStartFails) {
  {
    auto term = StartOk(WithCopy(std::make_shared<StaticSource>("v-saved")));
    ASSERT_NE(term, nullptr);
    AwaitCopy(*term);
  }
  std::string bytes;
  {
    std::ifstream in(path_, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto down = std::make_shared<StaticSource>("v");
  down->Fail(absl::UnavailableError("connection refused"));
  for (std::string broken :
       {bytes.substr(0, bytes.size() - 3), bytes.substr(0, 10), std::string("not a copy at all")}) {
    std::ofstream(path_, std::ios::binary | std::ios::trunc) << broken;
    auto term = RemoteTerm<std::string>::Start(*runtime_, WithCopy(down));
    ASSERT_FALSE(term.ok());
    EXPECT_EQ(term.status().code(), absl::StatusCode::kUnavailable) << term.status();
  }
  size_t body = bytes.find("v-saved");
  ASSERT_NE(body, std::string::npos);
  bytes[body + 3] ^= 0x20;  // one flipped bit in the body
  std::ofstream(path_, std::ios::binary | std::ios::trunc) << bytes;
  auto options = WithCopy(down);
  options.startup = TermStartup::kLazy;
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  spans_->Await(5);  // the saving term, three failed starts, then this one
  TermStatus s = term->status();
  EXPECT_EQ(s.state, TermState::kFailed);
  EXPECT_EQ(s.last_known_good_error.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.last_known_good_error.message(), HasSubstr("checksum"));
}

TEST_F(LastKnownGoodTest, EachUpdateReplacesTheCopy) {
  auto source = std::make_shared<StaticSource>("v1");
  auto term = StartOk(WithCopy(source));
  ASSERT_NE(term, nullptr);
  AwaitCopy(*term);
  // Owner-only (the bytes may have been fetched with credentials), and no temporary left.
  EXPECT_EQ(std::filesystem::status(path_).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_),
                          std::filesystem::directory_iterator()),
            1);
  source->Set("v2");
  ASSERT_TRUE(term->RefreshNow().ok());
  term.reset();
  ASSERT_TRUE(runtime_->Shutdown().ok());  // the save finishes before shutdown returns
  auto runtime = Runtime::Create({.clock = &clock_});
  ASSERT_TRUE(runtime.ok());
  auto down = std::make_shared<StaticSource>("v");
  down->Fail(absl::UnavailableError("down"));
  auto restarted = RemoteTerm<std::string>::Start(**runtime, WithCopy(down));
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  EXPECT_EQ(ValueOf(**restarted), "v2");
  restarted->reset();
}

class FileFetcherTest : public RemoteTermTest {
 protected:
  void SetUp() override {
    RemoteTermTest::SetUp();
    dir_ = std::filesystem::temp_directory_path() / absl::StrCat("keel-file-", getpid());
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "value.txt").string();
  }
  void TearDown() override {
    RemoteTermTest::TearDown();
    std::filesystem::remove_all(dir_);
  }
  // Replaces the file atomically, with modification time `mtime_s` (Unix seconds).
  void Write(const std::string& contents, int64_t mtime_s) {
    std::string tmp = path_ + ".tmp";
    std::ofstream(tmp, std::ios::binary | std::ios::trunc) << contents;
    struct timespec times[2] = {{mtime_s, 0}, {mtime_s, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, tmp.c_str(), times, 0), 0);
    std::filesystem::rename(tmp, path_);
  }
  RemoteTermOptions<std::string> FileOptions() {
    auto o = Options(std::make_shared<StaticSource>());
    o.fetcher = fetchers::File(path_);
    return o;
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(FileFetcherTest, VersionIsMtimeSizeAndHashAndAnUntouchedFileIsNotRead) {
  Write("v1", 1000);
  auto options = FileOptions();
  // The test's file was just written, so its change time is recent: trust it anyway.
  options.fetcher = fetchers::File({.path = path_, .stamp_trust_window = absl::ZeroDuration()});
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(ValueOf(*term), "v1");
  std::string version = term->status().version;
  std::vector<std::string> parts = absl::StrSplit(version, ':');
  ASSERT_EQ(parts.size(), 3u) << version;
  EXPECT_EQ(parts[1], "2");
  EXPECT_EQ(parts[2].size(), 16u);
  ASSERT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(spans_->Await(2).outcome, "not_modified");
  EXPECT_EQ(spans_->Await(2).Attribute("bytes_received"), "0");

  Write("v2", 2000);
  ASSERT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(ValueOf(*term), "v2");
  EXPECT_EQ(term->status().modified, absl::FromUnixSeconds(2000));
  // Touched without a change: read, but found unchanged by its hash.
  Write("v2", 3000);
  ASSERT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(spans_->Await(4).outcome, "not_modified");
  EXPECT_EQ(spans_->Await(4).Attribute("bytes_received"), "2");
}

TEST_F(FileFetcherTest, FileErrorsHaveTheirCodesAndNameThePath) {
  auto missing = RemoteTerm<std::string>::Start(*runtime_, FileOptions());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(path_));

  std::filesystem::create_directories(path_);
  auto directory = RemoteTerm<std::string>::Start(*runtime_, FileOptions());
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kInvalidArgument);
  std::filesystem::remove(path_);

  Write(std::string(5000, 'v'), 1000);
  auto options = FileOptions();
  options.max_fetched_bytes = 4096;
  auto big = RemoteTerm<std::string>::Start(*runtime_, std::move(options));
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(big.status().message(), HasSubstr("5000 bytes"));
}

TEST_F(FileFetcherTest, AFreshlyWrittenFileIsReadAgainUntilItsStampCanBeTrusted) {
  Write("v1", 1000);
  auto term = StartOk(FileOptions());  // the default two-second window
  ASSERT_NE(term, nullptr);
  ASSERT_TRUE(term->RefreshNow().ok());
  Span again = spans_->Await(2);
  EXPECT_EQ(again.outcome, "not_modified");           // the content hash says so
  EXPECT_EQ(again.Attribute("bytes_received"), "2");  // but the file was read
}

TEST_F(FileFetcherTest, ASameSizeRewriteWithTheSameMtimeIsSeen) {
  Write("v1", 1000);
  auto options = FileOptions();
  options.fetcher = fetchers::File({.path = path_, .stamp_trust_window = absl::ZeroDuration()});
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  Write("v2", 1000);  // same size, same mtime: a new inode (rename) and change time
  ASSERT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(ValueOf(*term), "v2");
}

TEST_F(FileFetcherTest, AFifoIsRefusedWithoutBlocking) {
  ASSERT_EQ(::mkfifo(path_.c_str(), 0600), 0);
  auto term = RemoteTerm<std::string>::Start(*runtime_, FileOptions());
  ASSERT_FALSE(term.ok());
  EXPECT_EQ(term.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(term.status().message(), HasSubstr("not a regular file"));
}

TEST_F(FileFetcherTest, AFileThatDisappearsLeavesTheLastGoodValue) {
  Write("v1", 1000);
  auto term = StartOk(FileOptions());
  ASSERT_NE(term, nullptr);
  std::filesystem::remove(path_);
  EXPECT_EQ(term->RefreshNow().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ValueOf(*term), "v1");
  EXPECT_EQ(term->status().state, TermState::kStale);
}

}  // namespace
}  // namespace keel
