// The S3 fixture: it starts a real S3-compatible server on 127.0.0.1 with the buckets asked
// for, stores what Put sends and serves it to GETs signed by libcurl's CURLOPT_AWS_SIGV4
// (path and virtual-host style, conditional requests), rejects what S3 rejects (wrong secret,
// key id, region, clock, missing payload hash), fails and delays on demand, keeps its data
// across Stop and Restart while refusing connections in between, and reports a missing node
// with the install hint. Requests go through blocking libcurl calls on the test thread,
// independent of keel's fetcher.
#include "support/s3rver.h"

#include <curl/curl.h>

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "support/process.h"

namespace keel::testing {
namespace {

struct Response {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string headers;  // raw header block, lowercased
  std::string body;
};

// How a test GET is signed: the server's credentials unless a field overrides them.
struct Signing {
  bool sign = true;
  std::string access_key_id = {};
  std::string secret_access_key = {};
  std::string region = {};
  bool send_payload_hash = true;  // "x-amz-content-sha256: <SHA-256 of the empty string>"
};

size_t Append(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

// A blocking GET of `url`, signed for `server` as `signing` says, with extra `headers`.
Response Get(const S3Server& server, const std::string& url, const Signing& signing = {},
             const std::vector<std::string>& headers = {}, long timeout_ms = 10000) {
  Response response;
  CURL* easy = curl_easy_init();
  curl_slist* list = nullptr;
  if (signing.send_payload_hash) {
    list = curl_slist_append(list,
                             absl::StrCat("x-amz-content-sha256: ", kEmptyPayloadSha256).c_str());
  }
  for (const std::string& h : headers) list = curl_slist_append(list, h.c_str());
  const std::string region = signing.region.empty() ? server.region() : signing.region;
  const std::string provider = absl::StrCat("aws:amz:", region, ":s3");
  const std::string key_id =
      signing.access_key_id.empty() ? server.access_key_id() : signing.access_key_id;
  const std::string secret =
      signing.secret_access_key.empty() ? server.secret_access_key() : signing.secret_access_key;
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(easy, CURLOPT_PROXY, "");
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &Append);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &response.headers);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Append);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &response.body);
  if (signing.sign) {
    curl_easy_setopt(easy, CURLOPT_AWS_SIGV4, provider.c_str());
    curl_easy_setopt(easy, CURLOPT_USERNAME, key_id.c_str());
    curl_easy_setopt(easy, CURLOPT_PASSWORD, secret.c_str());
  }
  response.code = curl_easy_perform(easy);
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &response.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(easy);
  absl::AsciiStrToLower(&response.headers);
  return response;
}

// The value of header `name` (lower case) in a lowercased header block, "" when absent.
std::string Header(const Response& response, const std::string& name) {
  const std::string prefix = "\r\n" + name + ": ";
  const size_t at = response.headers.find(prefix);
  if (at == std::string::npos) return "";
  const size_t begin = at + prefix.size();
  return response.headers.substr(begin, response.headers.find("\r\n", begin) - begin);
}

std::string ErrorCode(const Response& response) {
  const size_t begin = response.body.find("<Code>");
  const size_t end = response.body.find("</Code>");
  if (begin == std::string::npos || end == std::string::npos) return "";
  return response.body.substr(begin + 6, end - begin - 6);
}

std::unique_ptr<S3Server> StartOrFail(S3ServerOptions options = {}) {
  auto server = S3Server::Start(std::move(options));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

TEST(S3ServerTest, StartsWithTwoBucketsAndServesAPutObjectToASignedGet) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha", "beta"}});
  ASSERT_NE(s3, nullptr);
  const std::string port = std::to_string(s3->port());
  EXPECT_EQ(s3->Endpoint(), "http://127.0.0.1:" + port);
  EXPECT_EQ(s3->VirtualHostEndpoint(), "http://s3.localhost:" + port);
  EXPECT_EQ(s3->region(), "us-east-1");
  EXPECT_EQ(s3->CurlAwsSigV4(), "aws:amz:us-east-1:s3");
  EXPECT_EQ(s3->ObjectUrl("alpha", "dir/a b+c.json"),
            "http://127.0.0.1:" + port + "/alpha/dir/a%20b%2Bc.json");

  const std::string bytes = "{\"flag\":true}\n";
  absl::StatusOr<std::string> etag = s3->Put("alpha", "dir/a b+c.json", bytes);
  ASSERT_TRUE(etag.ok()) << etag.status();
  EXPECT_EQ(*etag, "\"9613fef66612639e38c56b68961f707a\"") << "the quoted MD5 of the body";
  Response got = Get(*s3, s3->ObjectUrl("alpha", "dir/a b+c.json"));
  ASSERT_EQ(got.code, CURLE_OK) << curl_easy_strerror(got.code);
  EXPECT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.body, bytes);
  EXPECT_EQ(Header(got, "etag"), *etag);
  EXPECT_EQ(Header(got, "content-type"), "application/octet-stream");

  const std::string odd_key = "\xc3\xbc/__keel/x~y (1)&z=%.txt";  // "ü/__keel/x~y (1)&z=%.txt"
  ASSERT_TRUE(s3->Put("alpha", odd_key, "odd").ok());
  EXPECT_EQ(Get(*s3, s3->ObjectUrl("alpha", odd_key)).body, "odd");
  EXPECT_EQ(Get(*s3, s3->VirtualHostObjectUrl("alpha", odd_key)).body, "odd");

  absl::StatusOr<std::string> in_beta = s3->Put("beta", "other", "b");
  ASSERT_TRUE(in_beta.ok()) << in_beta.status();
  EXPECT_EQ(Get(*s3, s3->ObjectUrl("beta", "other")).body, "b");
  Response missing = Get(*s3, s3->ObjectUrl("beta", "dir/a b+c.json"));
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(ErrorCode(missing), "NoSuchKey") << missing.body;
  Response no_bucket = Get(*s3, s3->ObjectUrl("gamma", "x"));
  EXPECT_EQ(no_bucket.status, 404);
  EXPECT_EQ(ErrorCode(no_bucket), "NoSuchBucket") << no_bucket.body;
}

TEST(S3ServerTest, PutKeepsContentEncodingAndDeleteRemovesTheObject) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha"}});
  ASSERT_NE(s3, nullptr);
  absl::StatusOr<std::string> etag =
      s3->Put("alpha", "z.json", "not really gzip",
              {"Content-Encoding: gzip", "Content-Type: application/json"});
  ASSERT_TRUE(etag.ok()) << etag.status();
  Response got = Get(*s3, s3->ObjectUrl("alpha", "z.json"));
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(Header(got, "content-encoding"), "gzip");
  EXPECT_EQ(Header(got, "content-type"), "application/json");
  const std::string big(3 << 20, 'x');  // past libcurl's threshold for Expect: 100-continue
  ASSERT_TRUE(s3->Put("alpha", "big", big).ok());
  EXPECT_EQ(Get(*s3, s3->ObjectUrl("alpha", "big")).body.size(), big.size());
  ASSERT_TRUE(s3->Delete("alpha", "z.json").ok());
  EXPECT_EQ(Get(*s3, s3->ObjectUrl("alpha", "z.json")).status, 404);
  absl::StatusOr<std::string> no_bucket = s3->Put("gamma", "k", "v");
  EXPECT_EQ(no_bucket.status().code(), absl::StatusCode::kNotFound) << no_bucket.status();
  EXPECT_TRUE(absl::StrContains(no_bucket.status().message(), "NoSuchBucket"))
      << no_bucket.status();
  EXPECT_EQ(s3->Put("alpha", "", "v").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(S3ServerTest, AGetSignedWithAWrongSecretIsSignatureDoesNotMatch) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha"}});
  ASSERT_NE(s3, nullptr);
  ASSERT_TRUE(s3->Put("alpha", "k", "v").ok());
  Response got = Get(*s3, s3->ObjectUrl("alpha", "k"), {.secret_access_key = "not-the-secret"});
  EXPECT_EQ(got.status, 403);
  EXPECT_EQ(ErrorCode(got), "SignatureDoesNotMatch") << got.body;
  EXPECT_EQ(Header(got, "content-type"), "application/xml");
  EXPECT_TRUE(absl::StrContains(got.body, "<CanonicalRequest>GET\n/alpha/k\n")) << got.body;
}

TEST(S3ServerTest, AnUnknownKeyIdIsInvalidAccessKeyId) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha"}});
  ASSERT_NE(s3, nullptr);
  Response got = Get(*s3, s3->ObjectUrl("alpha", "k"), {.access_key_id = "AKIDNOTKNOWN"});
  EXPECT_EQ(got.status, 403);
  EXPECT_EQ(ErrorCode(got), "InvalidAccessKeyId") << got.body;
}

TEST(S3ServerTest, AnotherKeyPairIsAcceptedWhenConfigured) {
  std::unique_ptr<S3Server> s3 = StartOrFail(
      {.buckets = {"alpha"}, .access_key_id = "AKIDKEEL", .secret_access_key = "keel-secret"});
  ASSERT_NE(s3, nullptr);
  ASSERT_TRUE(s3->Put("alpha", "k", "v").ok());
  EXPECT_EQ(Get(*s3, s3->ObjectUrl("alpha", "k")).body, "v");
  Response default_key = Get(*s3, s3->ObjectUrl("alpha", "k"),
                             {.access_key_id = "S3RVER", .secret_access_key = "S3RVER"});
  EXPECT_EQ(default_key.status, 403);
  EXPECT_EQ(ErrorCode(default_key), "InvalidAccessKeyId") << default_key.body;
}

TEST(S3ServerTest, AWrongRegionIsAuthorizationHeaderMalformedNamingTheServersRegion) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha"}, .region = "eu-west-3"});
  ASSERT_NE(s3, nullptr);
  ASSERT_TRUE(s3->Put("alpha", "k", "v").ok());
  Response got = Get(*s3, s3->ObjectUrl("alpha", "k"), {.region = "us-east-1"});
  EXPECT_EQ(got.status, 400);
  EXPECT_EQ(ErrorCode(got), "AuthorizationHeaderMalformed") << got.body;
  EXPECT_TRUE(absl::StrContains(got.body, "<Region>eu-west-3</Region>")) << got.body;
  EXPECT_EQ(Get(*s3, s3->ObjectUrl("alpha", "k")).status, 200);
}

TEST(S3ServerTest, AMissingPayloadHashIsInvalidRequestAndAnUnsignedGetIsAnonymous) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha"}});
  ASSERT_NE(s3, nullptr);
  ASSERT_TRUE(s3->Put("alpha", "k", "v").ok());
  Response no_hash = Get(*s3, s3->ObjectUrl("alpha", "k"), {.send_payload_hash = false});
  EXPECT_EQ(no_hash.status, 400);
  EXPECT_EQ(ErrorCode(no_hash), "InvalidRequest") << no_hash.body;
  Response wrong_hash = Get(*s3, s3->ObjectUrl("alpha", "k"), {.send_payload_hash = false},
                            {absl::StrCat("x-amz-content-sha256: ", std::string(64, 'a'))});
  EXPECT_EQ(wrong_hash.status, 400);
  EXPECT_EQ(ErrorCode(wrong_hash), "XAmzContentSHA256Mismatch") << wrong_hash.body;
  Response anonymous = Get(*s3, s3->ObjectUrl("alpha", "k"), {.sign = false});
  EXPECT_EQ(anonymous.status, 200);
  EXPECT_EQ(anonymous.body, "v");
}

TEST(S3ServerTest, ARequestDatedFarFromNowIsRequestTimeTooSkewed) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha"}});
  ASSERT_NE(s3, nullptr);
  const std::string date =
      absl::FormatTime("%Y%m%dT%H%M%SZ", absl::Now() - absl::Minutes(20), absl::UTCTimeZone());
  Response got =
      Get(*s3, s3->ObjectUrl("alpha", "k"), {.sign = false},
          {absl::StrCat("x-amz-date: ", date),
           absl::StrCat("Authorization: AWS4-HMAC-SHA256 Credential=S3RVER/", date.substr(0, 8),
                        "/us-east-1/s3/aws4_request, SignedHeaders=host;"
                        "x-amz-content-sha256;x-amz-date, Signature=",
                        std::string(64, '0'))});
  EXPECT_EQ(got.status, 403);
  EXPECT_EQ(ErrorCode(got), "RequestTimeTooSkewed") << got.body;
}

TEST(S3ServerTest, IfNoneMatchWithTheCurrentEtagIs304WithAnEmptyBody) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha"}});
  ASSERT_NE(s3, nullptr);
  absl::StatusOr<std::string> etag = s3->Put("alpha", "cfg", "version 1");
  ASSERT_TRUE(etag.ok()) << etag.status();
  Response same = Get(*s3, s3->ObjectUrl("alpha", "cfg"), {}, {"If-None-Match: " + *etag});
  EXPECT_EQ(same.status, 304);
  EXPECT_EQ(same.body, "");
  absl::StatusOr<std::string> changed = s3->Put("alpha", "cfg", "version 2");
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_NE(*changed, *etag);
  Response newer = Get(*s3, s3->ObjectUrl("alpha", "cfg"), {}, {"If-None-Match: " + *etag});
  EXPECT_EQ(newer.status, 200);
  EXPECT_EQ(newer.body, "version 2");
  EXPECT_EQ(Header(newer, "etag"), *changed);
}

TEST(S3ServerTest, AVirtualHostStyleUrlReachesTheBucket) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha", "beta"}});
  ASSERT_NE(s3, nullptr);
  ASSERT_TRUE(s3->Put("beta", "dir/k", "in beta").ok());
  const std::string url = s3->VirtualHostObjectUrl("beta", "dir/k");
  EXPECT_EQ(url, absl::StrCat("http://beta.s3.localhost:", s3->port(), "/dir/k"));
  Response got = Get(*s3, url);
  ASSERT_EQ(got.code, CURLE_OK) << curl_easy_strerror(got.code);
  EXPECT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.body, "in beta");
  EXPECT_EQ(Get(*s3, s3->VirtualHostObjectUrl("alpha", "dir/k")).status, 404);
  EXPECT_EQ(Get(*s3, s3->VirtualHostEndpoint() + "/beta/dir/k").body, "in beta")
      << "s3.localhost without a bucket is path style";
}

TEST(S3ServerTest, StopRefusesConnectionsAndRestartBringsTheObjectBack) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha"}});
  ASSERT_NE(s3, nullptr);
  absl::StatusOr<std::string> etag = s3->Put("alpha", "k", "kept");
  ASSERT_TRUE(etag.ok()) << etag.status();
  const uint16_t port = s3->port();
  s3->Stop();
  EXPECT_EQ(s3->pid(), -1);
  EXPECT_FALSE(PortAcceptsConnections(port));
  EXPECT_EQ(Get(*s3, s3->ObjectUrl("alpha", "k")).code, CURLE_COULDNT_CONNECT);
  EXPECT_EQ(s3->Put("alpha", "k", "x").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s3->ClearFaults().code(), absl::StatusCode::kUnavailable);

  ASSERT_TRUE(s3->Restart().ok()) << s3->LogTail();
  EXPECT_EQ(s3->port(), port);
  Response got = Get(*s3, s3->ObjectUrl("alpha", "k"));
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body, "kept");
  EXPECT_EQ(Header(got, "etag"), *etag);
}

TEST(S3ServerTest, APrimaryAndASecondaryRunSideBySideAndStopApart) {
  std::unique_ptr<S3Server> primary = StartOrFail({.buckets = {"primary"}});
  std::unique_ptr<S3Server> secondary = StartOrFail({.buckets = {"secondary"}});
  ASSERT_NE(primary, nullptr);
  ASSERT_NE(secondary, nullptr);
  EXPECT_NE(primary->port(), secondary->port());
  ASSERT_TRUE(primary->Put("primary", "k", "from primary").ok());
  ASSERT_TRUE(secondary->Put("secondary", "k", "from secondary").ok());
  primary->Stop();
  EXPECT_EQ(Get(*primary, primary->ObjectUrl("primary", "k")).code, CURLE_COULDNT_CONNECT);
  EXPECT_EQ(Get(*secondary, secondary->ObjectUrl("secondary", "k")).body, "from secondary");
  const std::filesystem::path dir = primary->dir();
  primary.reset();
  EXPECT_FALSE(std::filesystem::exists(dir)) << "the temp dir is removed";
}

TEST(S3ServerTest, SetFailureAnswersSlowDownUntilClearFaults) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha"}});
  ASSERT_NE(s3, nullptr);
  ASSERT_TRUE(s3->Put("alpha", "k", "v").ok());
  ASSERT_TRUE(s3->SetFailure(503, "SlowDown").ok());
  for (int i = 0; i < 2; ++i) {
    Response got = Get(*s3, s3->ObjectUrl("alpha", "k"));
    EXPECT_EQ(got.status, 503);
    EXPECT_EQ(ErrorCode(got), "SlowDown") << got.body;
    EXPECT_EQ(Header(got, "content-type"), "application/xml");
  }
  EXPECT_EQ(s3->Put("alpha", "k", "w").status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(s3->ClearFaults().ok());
  Response recovered = Get(*s3, s3->ObjectUrl("alpha", "k"));
  EXPECT_EQ(recovered.status, 200);
  EXPECT_EQ(recovered.body, "v");

  ASSERT_TRUE(s3->SetFailure(500, "InternalError", 1).ok());
  Response once = Get(*s3, s3->ObjectUrl("alpha", "k"));
  EXPECT_EQ(once.status, 500);
  EXPECT_EQ(ErrorCode(once), "InternalError") << once.body;
  EXPECT_EQ(Get(*s3, s3->ObjectUrl("alpha", "k")).status, 200) << "a count of 1 fails one request";
  EXPECT_EQ(s3->SetFailure(200, "Fine").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s3->SetFailure(503, "Slow Down").code(), absl::StatusCode::kInvalidArgument);
}

TEST(S3ServerTest, SetDelayHoldsAnswersPastAClientTimeout) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha"}});
  ASSERT_NE(s3, nullptr);
  ASSERT_TRUE(s3->Put("alpha", "k", "v").ok());
  ASSERT_TRUE(s3->SetDelay(absl::Seconds(3)).ok());
  Response timed_out = Get(*s3, s3->ObjectUrl("alpha", "k"), {}, {}, /*timeout_ms=*/200);
  EXPECT_EQ(timed_out.code, CURLE_OPERATION_TIMEDOUT);
  ASSERT_TRUE(s3->ClearFaults().ok()) << "the admin route is not delayed";
  Response got = Get(*s3, s3->ObjectUrl("alpha", "k"), {}, {}, /*timeout_ms=*/2000);
  EXPECT_EQ(got.code, CURLE_OK) << curl_easy_strerror(got.code);
  EXPECT_EQ(got.body, "v");
}

TEST(S3ServerTest, RequestCountCountsEveryRequestButTheAdminRoute) {
  std::unique_ptr<S3Server> s3 = StartOrFail({.buckets = {"alpha"}});
  ASSERT_NE(s3, nullptr);
  absl::StatusOr<int64_t> before = s3->RequestCount();
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(*before, 0);
  ASSERT_TRUE(s3->Put("alpha", "k", "v").ok());
  ASSERT_TRUE(s3->SetFailure(503, "SlowDown", 1).ok());
  EXPECT_EQ(Get(*s3, s3->ObjectUrl("alpha", "k")).status, 503);
  EXPECT_EQ(Get(*s3, s3->ObjectUrl("alpha", "k")).status, 200);
  absl::StatusOr<int64_t> after = s3->RequestCount();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(*after, 3);
}

TEST(S3ServerTest, ABadBucketNameIsInvalidArgument) {
  auto server = S3Server::Start({.buckets = {"Upper_Case"}});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << server.status();
}

TEST(S3ServerTest, AMissingNodeIsAFailedPreconditionNamingTheInstallScript) {
  auto server = S3Server::Start({.buckets = {"alpha"}, .node_path = "/nonexistent/node"});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(server.status().message(),
            "node not found at /nonexistent/node (scripts/install-deps.sh installs nodejs, npm "
            "and s3rver 3.7.1)");
}

TEST(S3ServerTest, AMissingS3rverIsAFailedPreconditionNamingTheInstallScript) {
  auto server = S3Server::Start({.buckets = {"alpha"}, .s3rver_dir = "/nonexistent/s3rver"});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(server.status().message(), "scripts/install-deps.sh"))
      << server.status();
}

}  // namespace
}  // namespace keel::testing
