// The nginx fixture: it starts a real nginx on 127.0.0.1, serves what the test writes with the
// documented behaviour of each standard location, stops it (the port is closed afterwards),
// and reports a broken config as an error that quotes nginx. Requests go through a blocking
// libcurl call on the test thread, independent of keel's fetcher.
#include "support/nginx.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "support/process.h"

namespace keel::testing {
namespace {

struct Response {
  long status = 0;
  std::string headers;  // raw header block, lowercased
  std::string body;
};

size_t Append(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

// A blocking GET; `ca_file` trusts a self-signed certificate.
Response Get(const std::string& url, const std::vector<std::string>& headers = {},
             const std::string& ca_file = "") {
  Response response;
  CURL* easy = curl_easy_init();
  curl_slist* list = nullptr;
  for (const std::string& h : headers) list = curl_slist_append(list, h.c_str());
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(easy, CURLOPT_PROXY, "");
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &Append);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &response.headers);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Append);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &response.body);
  if (!ca_file.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, ca_file.c_str());
  const CURLcode code = curl_easy_perform(easy);
  EXPECT_EQ(code, CURLE_OK) << url << ": " << curl_easy_strerror(code);
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &response.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(easy);
  absl::AsciiStrToLower(&response.headers);
  return response;
}

std::unique_ptr<NginxServer> StartOrFail(NginxOptions options = {}) {
  auto server = NginxServer::Start(std::move(options));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

TEST(NginxServerTest, StartsServesAFileAndStopsWithItsPortClosed) {
  std::unique_ptr<NginxServer> nginx = StartOrFail();
  ASSERT_NE(nginx, nullptr);
  const uint16_t port = nginx->port();
  const std::filesystem::path dir = nginx->root().parent_path();
  ASSERT_TRUE(nginx->WriteFile("dir/hello.txt", "hello\n").ok());
  EXPECT_EQ(nginx->Url("/dir/hello.txt"),
            "http://127.0.0.1:" + std::to_string(port) + "/dir/hello.txt");
  Response response = Get(nginx->Url("/dir/hello.txt"));
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "hello\n");
  EXPECT_TRUE(absl::StrContains(response.headers, "etag: \"")) << response.headers;
  EXPECT_TRUE(absl::StrContains(response.headers, "last-modified: ")) << response.headers;
  EXPECT_TRUE(PortAcceptsConnections(port));
  nginx.reset();
  EXPECT_FALSE(PortAcceptsConnections(port));
  EXPECT_FALSE(std::filesystem::exists(dir)) << "the temp dir is removed";
}

TEST(NginxServerTest, ABrokenExtraConfigFailsStartWithNginxsMessage) {
  NginxOptions options;
  options.extra_server_config = "no_such_directive on;";
  auto server = NginxServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(server.status().message(), "unknown directive")) << server.status();
  EXPECT_TRUE(absl::StrContains(server.status().message(), "no_such_directive")) << server.status();
}

TEST(NginxServerTest, AMissingNginxIsAFailedPreconditionNamingTheInstallScript) {
  NginxOptions options;
  options.nginx_path = "/nonexistent/nginx";
  auto server = NginxServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(server.status().message(),
            "nginx not found at /nonexistent/nginx (scripts/install-deps.sh installs nginx-light)");
}

TEST(NginxServerTest, WriteFileRejectsPathsOutsideTheRoot) {
  std::unique_ptr<NginxServer> nginx = StartOrFail();
  ASSERT_NE(nginx, nullptr);
  EXPECT_EQ(nginx->WriteFile("../escape", "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(nginx->WriteFile("/etc/escape", "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(nginx->WriteFile("", "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(nginx->RemoveFile("missing").code(), absl::StatusCode::kNotFound);
}

TEST(NginxServerTest, AnExplicitMtimeSetsLastModifiedAndChangesTheEtag) {
  std::unique_ptr<NginxServer> nginx = StartOrFail();
  ASSERT_NE(nginx, nullptr);
  ASSERT_TRUE(nginx->WriteFile("v.txt", "one", absl::FromUnixSeconds(1000000000)).ok());
  Response first = Get(nginx->Url("/v.txt"));
  EXPECT_TRUE(absl::StrContains(first.headers, "last-modified: sun, 09 sep 2001 01:46:40 gmt"))
      << first.headers;
  ASSERT_TRUE(nginx->WriteFile("v.txt", "two", absl::FromUnixSeconds(1000000001)).ok());
  Response second = Get(nginx->Url("/v.txt"));
  EXPECT_EQ(second.body, "two");
  EXPECT_TRUE(absl::StrContains(first.headers, "etag: \"3b9aca00-3\"")) << first.headers;
  EXPECT_TRUE(absl::StrContains(second.headers, "etag: \"3b9aca01-3\"")) << second.headers;
}

TEST(NginxServerTest, StandardLocationsBehaveAsDocumented) {
  std::unique_ptr<NginxServer> nginx = StartOrFail();
  ASSERT_NE(nginx, nullptr);
  for (const char* dir : {"noetag", "novalidators", "maxage", "nostore", "gzip", "auth"}) {
    ASSERT_TRUE(nginx->WriteFile(std::string(dir) + "/f.txt", std::string(4096, 'a')).ok());
  }
  ASSERT_TRUE(nginx->WriteFile("target.txt", "target").ok());

  Response noetag = Get(nginx->Url("/noetag/f.txt"));
  EXPECT_FALSE(absl::StrContains(noetag.headers, "etag:")) << noetag.headers;
  EXPECT_TRUE(absl::StrContains(noetag.headers, "last-modified:")) << noetag.headers;

  Response novalidators = Get(nginx->Url("/novalidators/f.txt"));
  EXPECT_EQ(novalidators.body, std::string(4096, 'a'));
  EXPECT_FALSE(absl::StrContains(novalidators.headers, "etag:")) << novalidators.headers;
  EXPECT_FALSE(absl::StrContains(novalidators.headers, "last-modified:")) << novalidators.headers;
  EXPECT_FALSE(absl::StrContains(novalidators.headers, "content-length:")) << novalidators.headers;

  Response maxage = Get(nginx->Url("/maxage/f.txt"));
  EXPECT_TRUE(absl::StrContains(maxage.headers, "cache-control: max-age=60")) << maxage.headers;
  EXPECT_TRUE(absl::StrContains(maxage.headers, "age: 20")) << maxage.headers;

  Response nostore = Get(nginx->Url("/nostore/f.txt"));
  EXPECT_TRUE(absl::StrContains(nostore.headers, "cache-control: no-store")) << nostore.headers;

  Response gzip = Get(nginx->Url("/gzip/f.txt"), {"Accept-Encoding: gzip"});
  EXPECT_TRUE(absl::StrContains(gzip.headers, "content-encoding: gzip")) << gzip.headers;
  ASSERT_GE(gzip.body.size(), 2u);
  EXPECT_EQ(static_cast<unsigned char>(gzip.body[0]), 0x1f);
  EXPECT_EQ(static_cast<unsigned char>(gzip.body[1]), 0x8b);
  EXPECT_EQ(Get(nginx->Url("/gzip/f.txt")).body, std::string(4096, 'a'));

  EXPECT_EQ(Get(nginx->Url("/flaky/f.txt")).status, 500);
  ASSERT_TRUE(nginx->WriteFile("flaky/f.txt", "ok").ok());
  EXPECT_EQ(Get(nginx->Url("/flaky/f.txt")).body, "ok");

  Response busy = Get(nginx->Url("/busy"));
  EXPECT_EQ(busy.status, 503);
  EXPECT_TRUE(absl::StrContains(busy.headers, "retry-after: 120")) << busy.headers;
  Response ratelimited = Get(nginx->Url("/ratelimited"));
  EXPECT_EQ(ratelimited.status, 429);
  EXPECT_TRUE(absl::StrContains(ratelimited.headers, "retry-after: 30")) << ratelimited.headers;

  Response loop = Get(nginx->Url("/loop"));
  EXPECT_EQ(loop.status, 302);
  EXPECT_TRUE(absl::StrContains(loop.headers, "location: " + nginx->Url("/loop"))) << loop.headers;
  Response redirect = Get(nginx->Url("/redirect/target.txt"));
  EXPECT_EQ(redirect.status, 302);
  EXPECT_TRUE(absl::StrContains(redirect.headers, "location: " + nginx->Url("/target.txt")))
      << redirect.headers;

  EXPECT_EQ(Get(nginx->Url("/auth/f.txt")).status, 401);
  EXPECT_EQ(Get(nginx->Url("/auth/f.txt"), {"Authorization: Bearer wrong"}).status, 401);
  EXPECT_EQ(Get(nginx->Url("/auth/f.txt"), {"Authorization: Bearer s3cret"}).status, 200);
}

TEST(NginxServerTest, ServesHttpsWithItsSelfSignedCertificate) {
  NginxOptions options;
  options.tls = true;
  std::unique_ptr<NginxServer> nginx = StartOrFail(options);
  ASSERT_NE(nginx, nullptr);
  ASSERT_FALSE(nginx->ca_file().empty());
  EXPECT_TRUE(nginx->Url("/x").starts_with("https://127.0.0.1:"));
  ASSERT_TRUE(nginx->WriteFile("secure.txt", "tls").ok());
  EXPECT_EQ(Get(nginx->Url("/secure.txt"), {}, nginx->ca_file()).body, "tls");
}

}  // namespace
}  // namespace keel::testing
