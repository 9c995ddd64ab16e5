// RemoteTerm<T> end to end against a real nginx on 127.0.0.1 (tests/support/nginx.h): what a
// service sees when its term's source is an HTTP server. The runtime runs on a manual clock,
// so the schedule (cache headers, backoff) is checked exactly while transfers are real.
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "keel/clock.h"
#include "keel/fetchers/gzip.h"
#include "keel/fetchers/http.h"
#include "keel/remote_term.h"
#include "keel/runtime.h"
#include "keel/telemetry.h"
#include "support/nginx.h"
#include "support/span_log.h"

namespace keel {
namespace {

using ::testing::HasSubstr;
using testing::NginxServer;

class RemoteTermHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nginx = NginxServer::Start();
    ASSERT_TRUE(nginx.ok()) << nginx.status();
    nginx_ = *std::move(nginx);
    auto runtime = Runtime::Create({.name = "term-http", .clock = &clock_});
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    runtime_ = *std::move(runtime);
    spans_ = std::make_unique<testing::SpanLog>(runtime_->telemetry(), "keel.term.update");
  }
  void TearDown() override {
    spans_.reset();
    runtime_.reset();
    nginx_.reset();
  }

  RemoteTermOptions<std::string> Options(const std::string& path) {
    RemoteTermOptions<std::string> o;
    o.name = "http-term";
    o.fetcher = fetchers::Http({.url = nginx_->Url(path), .timeout = absl::Seconds(10)});
    o.decode = [](std::string_view bytes) -> absl::StatusOr<std::string> {
      return std::string(bytes);
    };
    o.refresh = absl::Seconds(30);
    o.min_refresh = absl::Seconds(1);
    o.max_refresh = absl::Minutes(10);
    o.jitter = 0;
    o.backoff_initial = absl::Seconds(1);
    o.backoff_max = absl::Seconds(8);
    o.startup_timeout = absl::Seconds(20);
    return o;
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

  absl::Duration UntilNextRefresh(const RemoteTerm<std::string>& term) {
    TermStatus s = term.status();
    EXPECT_TRUE(s.next_refresh.has_value());
    return s.next_refresh.has_value() ? Elapsed(clock_.Now(), *s.next_refresh)
                                      : absl::InfiniteDuration();
  }

  // Moves the clock so that the scheduled fetch starts, and waits for the n-th update span.
  Span AdvanceAndAwait(absl::Duration d, size_t n) {
    clock_.Advance(d);
    EXPECT_TRUE(runtime_->Sync(absl::Seconds(10)).ok());
    return spans_->Await(n);
  }

  static absl::Time At(int64_t unix_seconds) { return absl::FromUnixSeconds(unix_seconds); }

  std::unique_ptr<NginxServer> nginx_;
  ManualClock clock_;
  std::unique_ptr<Runtime> runtime_;
  std::unique_ptr<testing::SpanLog> spans_;
};

TEST_F(RemoteTermHttpTest, AnUnchangedTermDownloadsNothingAndAChangeIsPickedUp) {
  const std::string body(10000, 'a');
  ASSERT_TRUE(nginx_->WriteFile("pricing.json", body, At(1'700'000'000)).ok());
  auto term = StartOk(Options("/pricing.json"));
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(ValueOf(*term), body);
  EXPECT_EQ(spans_->Await(1).Attribute("bytes_received"), "10000");
  std::string etag = term->status().version;
  EXPECT_THAT(etag, HasSubstr("\""));  // nginx's ETag is the version

  for (size_t n = 2; n <= 4; ++n) {
    ASSERT_TRUE(term->RefreshNow().ok());
    Span span = spans_->Await(n);
    EXPECT_EQ(span.outcome, "not_modified");
    EXPECT_EQ(span.Attribute("bytes_received"), "0");
  }
  EXPECT_EQ(term->status().bytes_received, 10000u);
  EXPECT_EQ(term->status().not_modified, 3u);

  ASSERT_TRUE(nginx_->WriteFile("pricing.json", "changed", At(1'700'000'100)).ok());
  ASSERT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(spans_->Await(5).outcome, "updated");
  EXPECT_EQ(ValueOf(*term), "changed");
  EXPECT_NE(term->status().version, etag);
  EXPECT_EQ(term->status().modified, At(1'700'000'100));
}

TEST_F(RemoteTermHttpTest, LastModifiedAloneMakesTheRefreshConditional) {
  ASSERT_TRUE(nginx_->WriteFile("noetag/flags.json", "{\"a\":1}", At(1'700'000'000)).ok());
  auto term = StartOk(Options("/noetag/flags.json"));
  ASSERT_NE(term, nullptr);
  ASSERT_TRUE(term->RefreshNow().ok());
  Span span = spans_->Await(2);
  EXPECT_EQ(span.outcome, "not_modified");
  EXPECT_EQ(span.Attribute("bytes_received"), "0");
}

TEST_F(RemoteTermHttpTest, WithoutValidatorsTheContentHashKeepsAnUnchangedBodyUnpublished) {
  ASSERT_TRUE(nginx_->WriteFile("novalidators/table.csv", "sku,price\n1,2\n").ok());
  auto term = StartOk(Options("/novalidators/table.csv"));
  ASSERT_NE(term, nullptr);
  std::atomic<int> changes{0};
  term->OnChange([&](const std::shared_ptr<const std::string>&) { ++changes; });
  EXPECT_THAT(term->status().version, HasSubstr("hash:"));
  ASSERT_TRUE(term->RefreshNow().ok());
  Span span = spans_->Await(2);
  EXPECT_EQ(span.outcome, "not_modified");
  EXPECT_EQ(span.Attribute("bytes_received"), "14");  // downloaded, but not republished
  EXPECT_EQ(changes.load(), 0);
  ASSERT_TRUE(nginx_->WriteFile("novalidators/table.csv", "sku,price\n1,3\n").ok());
  ASSERT_TRUE(term->RefreshNow().ok());
  EXPECT_EQ(spans_->Await(3).outcome, "updated");
  EXPECT_EQ(changes.load(), 1);
}

TEST_F(RemoteTermHttpTest, GzipFilesAndGzipEncodingAreInflated) {
  std::string plain;
  for (int i = 0; i < 2000; ++i) absl::StrAppend(&plain, "sku-", i, ",", i * 7, "\n");
  std::string packed = *fetchers::Gzip(plain);
  ASSERT_TRUE(nginx_->WriteFile("pricing.csv.gz", packed).ok());
  auto file_term = StartOk(Options("/pricing.csv.gz"));
  ASSERT_NE(file_term, nullptr);
  EXPECT_EQ(ValueOf(*file_term), plain);
  Span span = spans_->Await(1);
  EXPECT_EQ(span.Attribute("bytes_received"), absl::StrCat(packed.size()));
  EXPECT_EQ(span.Attribute("bytes_decoded"), absl::StrCat(plain.size()));

  ASSERT_TRUE(nginx_->WriteFile("gzip/pricing.csv", plain).ok());
  auto encoded_term = StartOk(Options("/gzip/pricing.csv"));
  ASSERT_NE(encoded_term, nullptr);
  EXPECT_EQ(ValueOf(*encoded_term), plain);
  Span encoded = spans_->Await(2);
  EXPECT_LT(std::stoul(std::string(encoded.Attribute("bytes_received"))), plain.size() / 2);
}

TEST_F(RemoteTermHttpTest, MaxAgeMinusAgeSetsTheNextRefresh) {
  ASSERT_TRUE(nginx_->WriteFile("maxage/config.json", "{}").ok());
  auto term = StartOk(Options("/maxage/config.json"));
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(40));
  EXPECT_THAT(term->status().next_refresh_reason, HasSubstr("max-age"));
}

TEST_F(RemoteTermHttpTest, NoStoreRevalidatesAtTheInterval) {
  ASSERT_TRUE(nginx_->WriteFile("nostore/config.json", "{}").ok());
  auto term = StartOk(Options("/nostore/config.json"));
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(30));
  EXPECT_THAT(term->status().next_refresh_reason, HasSubstr("no-store"));
}

TEST_F(RemoteTermHttpTest, A500BacksOffThenRecoveryResetsTheSchedule) {
  ASSERT_TRUE(nginx_->WriteFile("flaky/config.json", "v1", At(1'700'000'000)).ok());
  auto term = StartOk(Options("/flaky/config.json"));
  ASSERT_NE(term, nullptr);
  ASSERT_TRUE(nginx_->RemoveFile("flaky/config.json").ok());

  Span failed = AdvanceAndAwait(absl::Seconds(30), 2);
  EXPECT_EQ(failed.outcome, "failed");
  EXPECT_THAT(std::string(failed.Attribute("error")), HasSubstr("HTTP 500"));
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(1));
  AdvanceAndAwait(absl::Seconds(1), 3);
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(2));
  AdvanceAndAwait(absl::Seconds(2), 4);
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(4));
  TermStatus s = term->status();
  EXPECT_EQ(s.state, TermState::kStale);
  EXPECT_EQ(s.consecutive_failures, 3u);
  EXPECT_EQ(s.last_error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ValueOf(*term), "v1");

  ASSERT_TRUE(nginx_->WriteFile("flaky/config.json", "v2", At(1'700'000'100)).ok());
  EXPECT_EQ(AdvanceAndAwait(absl::Seconds(4), 5).outcome, "updated");
  EXPECT_EQ(ValueOf(*term), "v2");
  EXPECT_EQ(term->status().state, TermState::kFresh);
  EXPECT_EQ(term->status().consecutive_failures, 0u);
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(30));
}

TEST_F(RemoteTermHttpTest, A503WithRetryAfterWaitsAsTheServerAsks) {
  auto options = Options("/busy");
  options.startup = TermStartup::kLazy;
  auto term = StartOk(std::move(options));
  ASSERT_NE(term, nullptr);
  Span span = spans_->Await(1);
  EXPECT_EQ(span.outcome, "failed");
  EXPECT_EQ(term->status().state, TermState::kFailed);
  EXPECT_EQ(term->status().last_error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(UntilNextRefresh(*term), absl::Seconds(120));
}

TEST_F(RemoteTermHttpTest, ABodyOverTheCapIsRefusedEarly) {
  ASSERT_TRUE(nginx_->WriteFile("big.bin", std::string(4 << 20, 'x')).ok());
  auto options = Options("/big.bin");
  options.max_fetched_bytes = 64 << 10;
  auto term = RemoteTerm<std::string>::Start(*runtime_, std::move(options));
  ASSERT_FALSE(term.ok());
  EXPECT_EQ(term.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_LT(std::stoul(std::string(spans_->Await(1).Attribute("bytes_received"))), 1u << 20);
}

TEST_F(RemoteTermHttpTest, ATruncatedGzipKeepsTheLastGoodValue) {
  std::string packed = *fetchers::Gzip(std::string(50000, 'p'));
  ASSERT_TRUE(nginx_->WriteFile("model.gz", packed, At(1'700'000'000)).ok());
  auto term = StartOk(Options("/model.gz"));
  ASSERT_NE(term, nullptr);
  ASSERT_TRUE(
      nginx_->WriteFile("model.gz", packed.substr(0, packed.size() / 2), At(1'700'000'100)).ok());
  absl::Status outcome = term->RefreshNow();
  EXPECT_EQ(outcome.code(), absl::StatusCode::kDataLoss) << outcome;
  EXPECT_EQ(ValueOf(*term), std::string(50000, 'p'));
  EXPECT_EQ(term->status().state, TermState::kStale);
}

TEST_F(RemoteTermHttpTest, ASlowServerHitsTheTimeout) {
  ASSERT_TRUE(nginx_->WriteFile("slow/config.json", std::string(20000, 's')).ok());
  auto options = Options("/slow/config.json");
  options.fetcher =
      fetchers::Http({.url = nginx_->Url("/slow/config.json"), .timeout = absl::Milliseconds(300)});
  auto start = std::chrono::steady_clock::now();
  auto term = RemoteTerm<std::string>::Start(*runtime_, std::move(options));
  ASSERT_FALSE(term.ok());
  EXPECT_EQ(term.status().code(), absl::StatusCode::kDeadlineExceeded) << term.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

}  // namespace
}  // namespace keel
