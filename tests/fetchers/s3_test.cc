// The S3 fetcher against real S3-compatible servers on 127.0.0.1 (tests/support/s3rver.h: npm
// s3rver behind a SigV4 check that answers as S3 does): a term reads an object, sees it change,
// costs zero body bytes while it does not (304, or HEAD first), fails over to the next bucket
// in order when the primary stops and comes back to it, refuses an older copy from a lagging
// replica, and reports bad credentials, clock skew, a wrong region, missing keys, 5xx and
// timeouts as distinct errors that never quote the secret. The test thread waits with bounded
// waits; the only sleep is the one second that makes two objects' Last-Modified differ.
#include "keel/fetchers/s3.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "keel/fetchers/gzip.h"
#include "keel/internal/sync.h"
#include "keel/logging.h"
#include "keel/remote_term.h"
#include "keel/runtime.h"
#include "support/eventually.h"
#include "support/s3rver.h"

namespace keel {
namespace {

using ::keel::fetchers::FetchRequest;
using ::keel::fetchers::FetchResult;
using ::keel::fetchers::S3Addressing;
using ::keel::fetchers::S3Bucket;
using ::keel::fetchers::S3Credentials;
using ::keel::fetchers::S3Options;
using ::keel::testing::S3Server;
using ::keel::testing::S3ServerOptions;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kWait = absl::Seconds(30);
constexpr char kKey[] = "config/rules v1+é.json";  // a space, a '+' and UTF-8: encoded and signed

class S3Test : public ::testing::Test {
 protected:
  void SetUp() override {
    auto primary = S3Server::Start(S3ServerOptions{.buckets = {"alpha"}, .region = "us-east-1"});
    ASSERT_TRUE(primary.ok()) << primary.status();
    primary_ = *std::move(primary);
    auto secondary = S3Server::Start(S3ServerOptions{.buckets = {"beta"}, .region = "eu-west-1"});
    ASSERT_TRUE(secondary.ok()) << secondary.status();
    secondary_ = *std::move(secondary);
    auto runtime = Runtime::Create({.name = "s3-test"});
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    runtime_ = *std::move(runtime);
  }
  void TearDown() override {
    runtime_.reset();
    secondary_.reset();
    primary_.reset();
  }

  S3Credentials Credentials() const {
    return S3Credentials{.access_key_id = primary_->access_key_id(),
                         .secret_access_key = primary_->secret_access_key(),
                         .session_token = ""};
  }

  // The primary bucket alpha on the first server; with `failover`, bucket beta on the second.
  S3Options Options(bool failover = false) const {
    S3Options o;
    o.bucket = "alpha";
    o.key = kKey;
    o.region = primary_->region();
    o.endpoint = primary_->Endpoint();
    o.credentials = Credentials();
    o.connect_timeout = absl::Seconds(2);
    o.timeout = absl::Seconds(5);
    if (failover) {
      o.failover = {S3Bucket{
          .bucket = "beta", .region = secondary_->region(), .endpoint = secondary_->Endpoint()}};
    }
    return o;
  }

  std::string Put(S3Server& server, const std::string& bucket, const std::string& body,
                  const std::vector<std::string>& headers = {}) {
    absl::StatusOr<std::string> etag = server.Put(bucket, kKey, body, headers);
    EXPECT_TRUE(etag.ok()) << etag.status();
    return etag.ok() ? *etag : "";
  }

  RemoteTermOptions<std::string> TermOptions(S3Options options) {
    RemoteTermOptions<std::string> o;
    o.name = "s3-term";
    o.fetcher = fetchers::S3(std::move(options));
    o.decode = [](std::string_view bytes) -> absl::StatusOr<std::string> {
      return std::string(bytes);
    };
    o.refresh = absl::Hours(1);  // fetches happen when the test asks
    o.startup_timeout = absl::Seconds(20);
    return o;
  }

  std::unique_ptr<RemoteTerm<std::string>> StartTerm(S3Options options) {
    auto term = RemoteTerm<std::string>::Start(*runtime_, TermOptions(std::move(options)));
    EXPECT_TRUE(term.ok()) << term.status();
    return term.ok() ? *std::move(term) : nullptr;
  }

  static std::string ValueOf(const RemoteTerm<std::string>& term) {
    auto guard = term.Read();
    return guard ? *guard : "<empty>";
  }

  // One fetch through a bare fetcher, on the control thread.
  FetchResult Fetch(fetchers::Fetcher& fetcher, fetchers::Validators known = {},
                    uint64_t max_bytes = uint64_t{16} << 20) {
    internal::Notification arrived;
    FetchResult result;
    FetchRequest request;
    request.known = std::move(known);
    request.max_bytes = max_bytes;
    EXPECT_TRUE(runtime_
                    ->Post([&] {
                      fetcher.Fetch(*runtime_, request, [&](FetchResult r) {
                        result = std::move(r);
                        arrived.Notify();
                      });
                    })
                    .ok());
    if (!arrived.WaitForNotificationWithTimeout(kWait)) {
      ADD_FAILURE() << "no answer within " << kWait;
      result.status = absl::DeadlineExceededError("the test's wait ran out");
    }
    return result;
  }
  FetchResult Fetch(S3Options options, fetchers::Validators known = {},
                    uint64_t max_bytes = uint64_t{16} << 20) {
    std::unique_ptr<fetchers::Fetcher> fetcher = fetchers::S3(std::move(options));
    return Fetch(*fetcher, std::move(known), max_bytes);
  }

  std::unique_ptr<S3Server> primary_;
  std::unique_ptr<S3Server> secondary_;
  std::unique_ptr<Runtime> runtime_;
};

TEST_F(S3Test, ATermReadsTheObjectSeesItChangeAndReportsItsEtagAsVersion) {
  const std::string v1 = Put(*primary_, "alpha", R"({"limit": 1})");
  auto term = StartTerm(Options());
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(ValueOf(*term), R"({"limit": 1})");
  TermStatus s = term->status();
  EXPECT_EQ(s.version, v1);
  EXPECT_EQ(s.served_by, absl::StrCat("s3://alpha/", kKey));
  EXPECT_TRUE(s.modified.has_value());

  const std::string v2 = Put(*primary_, "alpha", R"({"limit": 2})");
  ASSERT_NE(v1, v2);
  ASSERT_TRUE(term->RefreshNow(kWait).ok()) << term->status().last_error;
  EXPECT_EQ(ValueOf(*term), R"({"limit": 2})");
  EXPECT_EQ(term->status().version, v2);
  EXPECT_EQ(term->status().updates, 2u);
}

TEST_F(S3Test, AnUnchangedObjectCostsOneRequestAndZeroBodyBytes) {
  const std::string etag = Put(*primary_, "alpha", std::string(10000, 'x'));
  auto term = StartTerm(Options());
  ASSERT_NE(term, nullptr);
  const uint64_t after_first = term->status().bytes_received;
  EXPECT_EQ(after_first, 10000u);
  absl::StatusOr<int64_t> before = primary_->RequestCount();
  ASSERT_TRUE(before.ok()) << before.status();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(term->RefreshNow(kWait).ok());
  absl::StatusOr<int64_t> after = primary_->RequestCount();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(*after - *before, 3) << "one request per refresh";
  TermStatus s = term->status();
  EXPECT_EQ(s.not_modified, 3u);
  EXPECT_EQ(s.updates, 1u);
  EXPECT_EQ(s.bytes_received, after_first) << "a 304 carries no body";
  EXPECT_EQ(s.state, TermState::kFresh);

  // The bare fetcher: a conditional GET is a 304 with zero body bytes.
  FetchResult r = Fetch(Options(), {.etag = etag, .last_modified = "", .version = etag});
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_TRUE(r.not_modified);
  EXPECT_EQ(r.bytes_received, 0u);
  EXPECT_TRUE(r.body.empty());
  EXPECT_EQ(r.validators.version, etag);
}

TEST_F(S3Test, HeadFirstGetsTheBytesOnlyWhenTheEtagChanged) {
  const std::string v1 = Put(*primary_, "alpha", "first");
  S3Options o = Options();
  o.head_first = true;
  FetchResult unchanged = Fetch(o, {.etag = v1, .last_modified = "", .version = v1});
  ASSERT_TRUE(unchanged.status.ok()) << unchanged.status;
  EXPECT_TRUE(unchanged.not_modified);
  EXPECT_EQ(unchanged.bytes_received, 0u);

  const std::string v2 = Put(*primary_, "alpha", "second");
  FetchResult changed = Fetch(o, {.etag = v1, .last_modified = "", .version = v1});
  ASSERT_TRUE(changed.status.ok()) << changed.status;
  EXPECT_FALSE(changed.not_modified);
  EXPECT_EQ(changed.body, "second");
  EXPECT_EQ(changed.validators.etag, v2);

  auto term = StartTerm(o);  // no ETag yet: a plain GET, then HEADs
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(ValueOf(*term), "second");
  ASSERT_TRUE(term->RefreshNow(kWait).ok());
  EXPECT_EQ(term->status().not_modified, 1u);
  EXPECT_EQ(term->status().bytes_received, 6u);
}

TEST_F(S3Test, FailsOverInOrderWhenThePrimaryStopsAndReturnsWhenItIsBack) {
  Put(*primary_, "alpha", "same");
  Put(*secondary_, "beta", "same");
  auto term = StartTerm(Options(/*failover=*/true));
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(term->status().served_by, absl::StrCat("s3://alpha/", kKey));

  primary_->Stop();
  ASSERT_TRUE(term->RefreshNow(kWait).ok()) << term->status().last_error;
  TermStatus s = term->status();
  EXPECT_EQ(s.state, TermState::kFresh);
  EXPECT_EQ(s.served_by, absl::StrCat("s3://beta/", kKey));
  EXPECT_EQ(s.not_modified, 1u) << "the same object in the failover bucket is not modified";
  EXPECT_EQ(ValueOf(*term), "same");

  Put(*secondary_, "beta", "changed while the primary was down");
  ASSERT_TRUE(term->RefreshNow(kWait).ok());
  EXPECT_EQ(ValueOf(*term), "changed while the primary was down");

  ASSERT_TRUE(primary_->Restart().ok());
  Put(*primary_, "alpha", "primary again");
  ASSERT_TRUE(term->RefreshNow(kWait).ok()) << term->status().last_error;
  EXPECT_EQ(term->status().served_by, absl::StrCat("s3://alpha/", kKey));
  EXPECT_EQ(ValueOf(*term), "primary again");
}

TEST_F(S3Test, ANotFoundOrFailingPrimaryAlsoFailsOverAndEveryErrorIsListedWhenAllFail) {
  Put(*secondary_, "beta", "from beta");
  FetchResult r = Fetch(Options(/*failover=*/true));  // no object in alpha: NoSuchKey
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.body, "from beta");
  EXPECT_EQ(r.served_by, absl::StrCat("s3://beta/", kKey));

  ASSERT_TRUE(secondary_->SetFailure(503, "SlowDown").ok());
  FetchResult all = Fetch(Options(/*failover=*/true));
  EXPECT_EQ(all.status.code(), absl::StatusCode::kNotFound) << "the primary's code: " << all.status;
  EXPECT_THAT(all.status.message(), HasSubstr("every bucket failed (2, in order)"));
  EXPECT_THAT(all.status.message(), HasSubstr("GET s3://alpha/"));
  EXPECT_THAT(all.status.message(), HasSubstr("HTTP 404 NoSuchKey"));
  EXPECT_THAT(all.status.message(), HasSubstr("GET s3://beta/"));
  EXPECT_THAT(all.status.message(), HasSubstr("HTTP 503 SlowDown"));
}

TEST_F(S3Test, AnOlderCopyInALaggingFailoverBucketIsNotInstalled) {
  Put(*secondary_, "beta", "old copy");
  absl::SleepFor(absl::Milliseconds(1100));  // Last-Modified has a one-second resolution
  Put(*primary_, "alpha", "new copy");
  auto term = StartTerm(Options(/*failover=*/true));
  ASSERT_NE(term, nullptr);
  EXPECT_EQ(ValueOf(*term), "new copy");

  primary_->Stop();
  absl::Status refreshed = term->RefreshNow(kWait);
  EXPECT_EQ(refreshed.code(), absl::StatusCode::kFailedPrecondition) << refreshed;
  EXPECT_THAT(refreshed.message(), HasSubstr("is older than the published one"));
  EXPECT_EQ(ValueOf(*term), "new copy");
  EXPECT_EQ(term->status().state, TermState::kStale);
  EXPECT_EQ(term->status().updates, 1u);
}

TEST_F(S3Test, BadCredentialsAreAClearPermissionErrorThatNeverQuotesTheSecret) {
  Put(*primary_, "alpha", "x");
  std::vector<std::string> logged;
  internal::Mutex log_mu;
  const LogLevel level = GetLogLevel();
  SetLogLevel(LogLevel::kTrace);
  SetLogSink([&](LogLevel, std::string_view line) {
    internal::MutexLock lock(&log_mu);
    logged.emplace_back(line);
  });

  S3Options wrong_secret = Options();
  wrong_secret.credentials->secret_access_key = "not-the-secret-0123456789";
  FetchResult r = Fetch(wrong_secret);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied) << r.status;
  EXPECT_THAT(r.status.message(), HasSubstr("HTTP 403 SignatureDoesNotMatch"));
  EXPECT_THAT(r.status.message(), HasSubstr("check the credentials"));

  S3Options wrong_key = Options();
  wrong_key.credentials->access_key_id = "AKIDUNKNOWN";
  FetchResult k = Fetch(wrong_key);
  EXPECT_EQ(k.status.code(), absl::StatusCode::kPermissionDenied) << k.status;
  EXPECT_THAT(k.status.message(), HasSubstr("HTTP 403 InvalidAccessKeyId"));

  // Through a term, whose failures are logged: neither the log nor the status has the secret.
  RemoteTermOptions<std::string> o = TermOptions(wrong_secret);
  o.startup_timeout = absl::Seconds(10);
  auto term = RemoteTerm<std::string>::Start(*runtime_, std::move(o));
  EXPECT_EQ(term.status().code(), absl::StatusCode::kPermissionDenied) << term.status();
  SetLogSink(nullptr);
  SetLogLevel(level);
  EXPECT_THAT(std::string(term.status().message()), Not(HasSubstr("not-the-secret")));
  EXPECT_THAT(std::string(r.status.message()), Not(HasSubstr("not-the-secret")));
  internal::MutexLock lock(&log_mu);
  EXPECT_FALSE(logged.empty()) << "the failed update is logged";
  for (const std::string& line : logged) EXPECT_THAT(line, Not(HasSubstr("not-the-secret")));
}

TEST_F(S3Test, ClockSkewWrongRegionMissingKeysAndServerErrorsAreDistinct) {
  Put(*primary_, "alpha", "x");
  S3Options wrong_region = Options();
  wrong_region.region = "ap-southeast-2";
  FetchResult region = Fetch(wrong_region);
  EXPECT_EQ(region.status.code(), absl::StatusCode::kFailedPrecondition) << region.status;
  EXPECT_THAT(region.status.message(), HasSubstr("AuthorizationHeaderMalformed"));
  EXPECT_THAT(region.status.message(), HasSubstr("fix region or endpoint"));

  S3Options missing = Options();
  missing.key = "no/such/key.json";
  FetchResult no_key = Fetch(missing);
  EXPECT_EQ(no_key.status.code(), absl::StatusCode::kNotFound) << no_key.status;
  EXPECT_THAT(no_key.status.message(), HasSubstr("HTTP 404 NoSuchKey"));

  S3Options no_bucket = Options();
  no_bucket.bucket = "gamma";
  FetchResult nb = Fetch(no_bucket);
  EXPECT_EQ(nb.status.code(), absl::StatusCode::kNotFound) << nb.status;
  EXPECT_THAT(nb.status.message(), HasSubstr("NoSuchBucket"));

  ASSERT_TRUE(primary_->SetFailure(500, "InternalError").ok());
  FetchResult internal_error = Fetch(Options());
  EXPECT_EQ(internal_error.status.code(), absl::StatusCode::kUnavailable) << internal_error.status;
  EXPECT_THAT(internal_error.status.message(), HasSubstr("HTTP 500 InternalError"));

  ASSERT_TRUE(primary_->SetFailure(403, "RequestTimeTooSkewed").ok());
  FetchResult skew = Fetch(Options());
  EXPECT_EQ(skew.status.code(), absl::StatusCode::kPermissionDenied) << skew.status;
  EXPECT_THAT(skew.status.message(), HasSubstr("fix the clock"));
  ASSERT_TRUE(primary_->ClearFaults().ok());

  ASSERT_TRUE(primary_->SetDelay(absl::Seconds(3)).ok());
  S3Options quick = Options();
  quick.timeout = absl::Milliseconds(500);
  FetchResult timeout = Fetch(quick);
  EXPECT_EQ(timeout.status.code(), absl::StatusCode::kDeadlineExceeded) << timeout.status;
  ASSERT_TRUE(primary_->ClearFaults().ok());

  primary_->Stop();
  FetchResult refused = Fetch(Options());
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kUnavailable) << refused.status;
}

TEST_F(S3Test, GzipObjectsAreInflatedByTheTerm) {
  const std::string plain(20000, 'g');
  absl::StatusOr<std::string> gz = fetchers::Gzip(plain);
  ASSERT_TRUE(gz.ok()) << gz.status();
  Put(*primary_, "alpha", *gz, {"Content-Encoding: gzip"});
  auto term = StartTerm(Options());
  ASSERT_NE(term, nullptr);
  EXPECT_TRUE(ValueOf(*term) == plain) << "got " << ValueOf(*term).size() << " bytes";
  EXPECT_EQ(term->status().bytes_received, gz->size());

  // A gzip object stored without Content-Encoding is recognised by its magic bytes.
  const std::string other(30000, 'h');
  absl::StatusOr<std::string> gz2 = fetchers::Gzip(other);
  ASSERT_TRUE(gz2.ok());
  Put(*primary_, "alpha", *gz2);
  ASSERT_TRUE(term->RefreshNow(kWait).ok()) << term->status().last_error;
  EXPECT_TRUE(ValueOf(*term) == other) << "got " << ValueOf(*term).size() << " bytes";
}

TEST_F(S3Test, VirtualHostAddressingReachesTheBucketByName) {
  Put(*primary_, "alpha", "by host name");
  S3Options o = Options();
  o.endpoint = primary_->VirtualHostEndpoint();
  o.addressing = S3Addressing::kVirtualHost;
  FetchResult r = Fetch(o);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.body, "by host name");
}

TEST_F(S3Test, ObjectsOverTheTermsCapAreRefusedWithoutDownloadingThem) {
  Put(*primary_, "alpha", std::string(100000, 'b'));
  // With head_first and a value held, the HEAD's Content-Length refuses it: no GET at all.
  S3Options head_first = Options();
  head_first.head_first = true;
  absl::StatusOr<int64_t> before = primary_->RequestCount();
  ASSERT_TRUE(before.ok());
  FetchResult r =
      Fetch(head_first, {.etag = "\"older\"", .last_modified = "", .version = ""}, 1000);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kResourceExhausted) << r.status;
  EXPECT_EQ(r.bytes_received, 0u);
  absl::StatusOr<int64_t> after = primary_->RequestCount();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after - *before, 1) << "the HEAD only";
  for (bool head_first : {false, true}) {
    S3Options o = Options();
    o.head_first = head_first;
    RemoteTermOptions<std::string> t = TermOptions(o);
    t.max_fetched_bytes = 1000;
    auto term = RemoteTerm<std::string>::Start(*runtime_, std::move(t));
    EXPECT_EQ(term.status().code(), absl::StatusCode::kResourceExhausted) << term.status();
    EXPECT_THAT(term.status().message(), HasSubstr("exceeds the cap of 1000 bytes"));
  }
}

TEST_F(S3Test, CancellingAFetchStopsItWithoutTryingTheFailoverBuckets) {
  Put(*primary_, "alpha", "slow");
  Put(*secondary_, "beta", "fast");
  ASSERT_TRUE(primary_->SetDelay(absl::Seconds(20)).ok());
  std::unique_ptr<fetchers::Fetcher> fetcher = fetchers::S3(Options(/*failover=*/true));
  internal::Notification arrived;
  FetchResult result;
  ASSERT_TRUE(runtime_
                  ->Post([&] {
                    fetcher->Fetch(*runtime_, FetchRequest{}, [&](FetchResult r) {
                      result = std::move(r);
                      arrived.Notify();
                    });
                  })
                  .ok());
  // The request is held by the primary; cancel it from the control thread.
  ASSERT_TRUE(testing::Eventually([&] {
    absl::StatusOr<int64_t> n = primary_->RequestCount();
    return n.ok() && *n >= 2;  // the Put, then the fetch
  }));
  ASSERT_TRUE(runtime_->Post([&] { fetcher->Cancel(*runtime_); }).ok());
  ASSERT_TRUE(arrived.WaitForNotificationWithTimeout(kWait));
  EXPECT_EQ(result.status.code(), absl::StatusCode::kCancelled) << result.status;
  absl::StatusOr<int64_t> beta_requests = secondary_->RequestCount();
  ASSERT_TRUE(beta_requests.ok());
  EXPECT_EQ(*beta_requests, 1) << "only the Put: a cancelled fetch does not fail over";
  ASSERT_TRUE(primary_->ClearFaults().ok());
}

}  // namespace
}  // namespace keel
