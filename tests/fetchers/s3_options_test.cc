// The S3 fetcher's options, without a server: what Validate() refuses and says, where the
// region and credentials come from (options, then the environment), and that the secret and
// session token never appear in Describe() or an error message.
#include <cstdlib>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "keel/fetchers/s3.h"
#include "keel/internal/sync.h"
#include "keel/runtime.h"

namespace keel::fetchers {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSecret[] = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRET";
constexpr char kToken[] = "FwoGZXIvYXdzEXAMPLETOKEN";

// Sets or clears the AWS variables for one test and restores them after.
class ScopedAwsEnvironment {
 public:
  ScopedAwsEnvironment() {
    for (const char* name : kNames) {
      const char* value = std::getenv(name);
      saved_.emplace_back(name,
                          value == nullptr ? std::nullopt : std::optional<std::string>(value));
      unsetenv(name);
    }
  }
  ~ScopedAwsEnvironment() {
    for (const auto& [name, value] : saved_) {
      if (value.has_value()) {
        setenv(name, value->c_str(), 1);
      } else {
        unsetenv(name);
      }
    }
  }
  void Set(const char* name, const char* value) { setenv(name, value, 1); }

 private:
  static constexpr const char* kNames[] = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                           "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"};
  std::vector<std::pair<const char*, std::optional<std::string>>> saved_;
};

S3Options Valid() {
  S3Options o;
  o.bucket = "keel-config";
  o.key = "rules/v2.json";
  o.region = "us-east-1";
  o.credentials = S3Credentials{
      .access_key_id = "AKIDEXAMPLE", .secret_access_key = kSecret, .session_token = kToken};
  return o;
}

absl::Status ValidateOf(S3Options options) { return S3(std::move(options))->Validate(); }

TEST(S3OptionsTest, AcceptsAMinimalConfigurationAndDescribesEveryBucket) {
  ScopedAwsEnvironment env;
  S3Options o = Valid();
  o.failover = {
      {.bucket = "keel-config-eu", .region = "eu-west-1", .endpoint = ""},
      {.bucket = "keel-config-mirror", .region = "", .endpoint = "http://127.0.0.1:9000"}};
  std::unique_ptr<Fetcher> f = S3(o);
  EXPECT_TRUE(f->Validate().ok()) << f->Validate();
  EXPECT_EQ(f->Describe(),
            "s3 s3://keel-config/rules/v2.json (us-east-1), failover "
            "s3://keel-config-eu/rules/v2.json (eu-west-1), failover "
            "s3://keel-config-mirror/rules/v2.json (us-east-1, http://127.0.0.1:9000)");
}

TEST(S3OptionsTest, RefusesBadNamesKeysEndpointsAndTimeoutsSayingWhatWasExpected) {
  ScopedAwsEnvironment env;
  struct Case {
    std::string what;
    S3Options options;
    std::string expected;
  };
  std::vector<Case> cases;
  auto with = [](auto change) {
    S3Options o = Valid();
    change(o);
    return o;
  };
  cases.push_back({"short bucket", with([](S3Options& o) { o.bucket = "ab"; }),
                   "bucket must be 3 to 255 letters"});
  cases.push_back(
      {"bucket with a slash", with([](S3Options& o) { o.bucket = "a/b/c"; }), "got \"a/b/c\""});
  cases.push_back({"empty key", with([](S3Options& o) { o.key = ""; }), "key must be 1 to 1024"});
  cases.push_back(
      {"key with a newline", with([](S3Options& o) { o.key = "a\nb"; }), "without NUL, CR or LF"});
  cases.push_back(
      {"long key", with([](S3Options& o) { o.key = std::string(1025, 'k'); }), "got 1025 bytes"});
  cases.push_back({"region with capitals", with([](S3Options& o) { o.region = "US-EAST-1"; }),
                   "region must be lower-case letters, digits and '-', got \"US-EAST-1\""});
  cases.push_back({"endpoint scheme", with([](S3Options& o) { o.endpoint = "ftp://127.0.0.1"; }),
                   "endpoint must be an http:// or https:// URL"});
  cases.push_back({"endpoint path",
                   with([](S3Options& o) { o.endpoint = "http://127.0.0.1:9000/prefix"; }),
                   "endpoint must have no path"});
  cases.push_back({"virtual host on an IP", with([](S3Options& o) {
                     o.endpoint = "http://127.0.0.1:9000";
                     o.addressing = S3Addressing::kVirtualHost;
                   }),
                   "is an IP address: virtual-host addressing needs a host name"});
  cases.push_back({"virtual host with a capital bucket", with([](S3Options& o) {
                     o.bucket = "Legacy_Bucket";
                     o.addressing = S3Addressing::kVirtualHost;
                   }),
                   "cannot be a host name"});
  cases.push_back({"zero timeout", with([](S3Options& o) { o.timeout = absl::ZeroDuration(); }),
                   "timeout must be > 0 and finite"});
  cases.push_back({"bad failover", with([](S3Options& o) {
                     o.failover = {{.bucket = "x", .region = "", .endpoint = ""}};
                   }),
                   "failover[0].bucket must be 3 to 255"});
  cases.push_back({"same bucket twice", with([](S3Options& o) {
                     o.failover = {{.bucket = o.bucket, .region = "", .endpoint = ""}};
                   }),
                   "is listed twice"});
  cases.push_back({"empty secret",
                   with([](S3Options& o) { o.credentials->secret_access_key = ""; }),
                   "the secret access key must be non-empty"});
  for (const Case& c : cases) {
    const absl::Status status = ValidateOf(c.options);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.what << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr(c.expected)) << c.what;
    EXPECT_THAT(status.message(), HasSubstr("s3 fetcher: ")) << c.what;
  }
}

TEST(S3OptionsTest, TakesTheRegionFromTheOptionsThenAwsRegionThenAwsDefaultRegion) {
  ScopedAwsEnvironment env;
  S3Options o = Valid();
  o.region = "";
  absl::Status none = ValidateOf(o);
  EXPECT_EQ(none.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.message(), HasSubstr("region is required: set it in the options, or "
                                        "AWS_REGION or AWS_DEFAULT_REGION"));

  env.Set("AWS_DEFAULT_REGION", "ap-south-1");
  EXPECT_THAT(S3(o)->Describe(), HasSubstr("(ap-south-1)"));
  env.Set("AWS_REGION", "eu-central-1");
  EXPECT_THAT(S3(o)->Describe(), HasSubstr("(eu-central-1)"));
  o.region = "us-west-2";
  EXPECT_THAT(S3(o)->Describe(), HasSubstr("(us-west-2)"));
  // A failover bucket without a region uses the primary's.
  o.failover = {{.bucket = "keel-config-b", .region = "", .endpoint = ""}};
  EXPECT_THAT(S3(o)->Describe(), HasSubstr("s3://keel-config-b/rules/v2.json (us-west-2)"));
}

TEST(S3OptionsTest, ReadsCredentialsFromTheEnvironmentAndNamesTheMissingVariables) {
  ScopedAwsEnvironment env;
  S3Options o = Valid();
  o.credentials.reset();
  absl::StatusOr<S3Credentials> none = S3CredentialsFromEnvironment();
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(),
              HasSubstr("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"));
  absl::Status refused = ValidateOf(o);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"));

  env.Set("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE");
  absl::Status half = ValidateOf(o);
  EXPECT_THAT(half.message(), HasSubstr("AWS_SECRET_ACCESS_KEY is not set"));
  EXPECT_THAT(half.message(), Not(HasSubstr("AWS_ACCESS_KEY_ID")));

  env.Set("AWS_SECRET_ACCESS_KEY", kSecret);
  env.Set("AWS_SESSION_TOKEN", kToken);
  absl::StatusOr<S3Credentials> read = S3CredentialsFromEnvironment();
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->access_key_id, "AKIDEXAMPLE");
  EXPECT_EQ(read->secret_access_key, kSecret);
  EXPECT_EQ(read->session_token, kToken);
  EXPECT_TRUE(ValidateOf(o).ok());

  // Anonymous requests need no credentials at all.
  ScopedAwsEnvironment cleared;
  o.anonymous = true;
  EXPECT_TRUE(ValidateOf(o).ok()) << ValidateOf(o);
}

TEST(S3OptionsTest, NeverQuotesTheSecretOrTheTokenInDescribeOrErrors) {
  ScopedAwsEnvironment env;
  S3Options o = Valid();
  o.credentials->secret_access_key = absl::StrCat(kSecret, "\r\n");
  o.credentials->session_token = absl::StrCat(kToken, "\n");
  std::unique_ptr<Fetcher> f = S3(o);
  const absl::Status status = f->Validate();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("secret access key must be non-empty, without CR"));
  EXPECT_THAT(status.message(), HasSubstr("session token must not contain CR, LF or NUL"));
  for (const std::string& text : {std::string(status.message()), f->Describe()}) {
    EXPECT_THAT(text, AllOf(Not(HasSubstr(kSecret)), Not(HasSubstr(kToken)))) << text;
  }
}

TEST(S3OptionsTest, AFetchWithInvalidOptionsFailsWithTheValidateError) {
  ScopedAwsEnvironment env;
  S3Options o = Valid();
  o.bucket = "no";
  std::unique_ptr<Fetcher> f = S3(o);
  auto runtime = Runtime::Create({.name = "s3-options"});
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  internal::Notification done;
  absl::Status got;
  ASSERT_TRUE((*runtime)
                  ->Post([&] {
                    f->Fetch(**runtime, FetchRequest{}, [&](FetchResult r) {
                      got = r.status;
                      done.Notify();
                    });
                  })
                  .ok());
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(got, f->Validate());
}

}  // namespace
}  // namespace keel::fetchers
