// The etcd fixture: it starts a real single-member etcd on 127.0.0.1 that answers the JSON
// gateway, keeps its data (keys and their revisions) across Stop, Kill and Restart on the same
// ports, refuses connections while stopped, freezes while paused, runs side by side with a
// second one, and reports a missing binary with the install hint. Requests go through the
// fixture's blocking `Post`, independent of keel's code.
#include "support/etcd.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "support/process.h"

namespace keel::testing {
namespace {

// The string value of the first `"name":"..."` in a gateway response (etcd quotes int64s), ""
// when there is none. Enough for the flat fields these tests read.
std::string Field(const std::string& json, const std::string& name) {
  const std::string key = "\"" + name + "\":\"";
  const size_t at = json.find(key);
  if (at == std::string::npos) return "";
  const size_t begin = at + key.size();
  const size_t end = json.find('"', begin);
  return end == std::string::npos ? "" : json.substr(begin, end - begin);
}

std::string PutBody(const std::string& key, const std::string& value) {
  return absl::StrCat(R"({"key":")", EtcdServer::Base64(key), R"(","value":")",
                      EtcdServer::Base64(value), R"("})");
}

std::string RangeBody(const std::string& key) {
  return absl::StrCat(R"({"key":")", EtcdServer::Base64(key), R"("})");
}

// A GET of /version with a short timeout; the curl code (CURLE_OPERATION_TIMEDOUT when etcd
// is paused).
CURLcode QuickVersionProbe(const std::string& endpoint) {
  CURL* easy = curl_easy_init();
  const std::string url = endpoint + "/version";
  std::string body;
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_PROXY, "");
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 300L);
  curl_easy_setopt(
      easy, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t count, void* user) {
        static_cast<std::string*>(user)->append(data, size * count);
        return size * count;
      });
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &body);
  const CURLcode code = curl_easy_perform(easy);
  curl_easy_cleanup(easy);
  return code;
}

std::unique_ptr<EtcdServer> StartOrFail(EtcdOptions options = {}) {
  auto server = EtcdServer::Start(std::move(options));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

TEST(EtcdServerTest, StartsAndAnswersTheGatewayWithALeaseId) {
  std::unique_ptr<EtcdServer> etcd = StartOrFail();
  ASSERT_NE(etcd, nullptr);
  EXPECT_EQ(etcd->Endpoint(), "http://127.0.0.1:" + std::to_string(etcd->port()));
  EXPECT_GT(etcd->pid(), 0);
  EXPECT_TRUE(std::filesystem::is_directory(etcd->dir() / "data"));
  absl::StatusOr<std::string> lease = etcd->Post("/v3/lease/grant", R"({"TTL":30})");
  ASSERT_TRUE(lease.ok()) << lease.status();
  const std::string id = Field(*lease, "ID");
  EXPECT_FALSE(id.empty()) << *lease;
  EXPECT_EQ(id.find_first_not_of("0123456789"), std::string::npos) << *lease;
  EXPECT_EQ(Field(*lease, "TTL"), "30") << *lease;
}

TEST(EtcdServerTest, ShortRaftTimersAllowAOneSecondLeaseAndEtcdsDefaultsDoNot) {
  std::unique_ptr<EtcdServer> fast = StartOrFail();
  ASSERT_NE(fast, nullptr);
  absl::StatusOr<std::string> short_lease = fast->Post("/v3/lease/grant", R"({"TTL":1})");
  ASSERT_TRUE(short_lease.ok()) << short_lease.status();
  EXPECT_EQ(Field(*short_lease, "TTL"), "1") << *short_lease;

  EtcdOptions defaults;
  defaults.short_raft_timers = false;
  std::unique_ptr<EtcdServer> slow = StartOrFail(defaults);
  ASSERT_NE(slow, nullptr);
  absl::StatusOr<std::string> raised = slow->Post("/v3/lease/grant", R"({"TTL":1})");
  ASSERT_TRUE(raised.ok()) << raised.status();
  EXPECT_EQ(Field(*raised, "TTL"), "2") << "etcd's minimum TTL: " << *raised;
}

TEST(EtcdServerTest, TheReadinessKeyIsWrittenBeforeStartReturns) {
  std::unique_ptr<EtcdServer> etcd = StartOrFail();
  ASSERT_NE(etcd, nullptr);
  absl::StatusOr<std::string> range = etcd->Post("/v3/kv/range", RangeBody(kReadinessKey));
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(Field(*range, "value"), EtcdServer::Base64("ready")) << *range;
}

TEST(EtcdServerTest, AGatewayErrorCarriesItsCanonicalCodeAndTheBody) {
  std::unique_ptr<EtcdServer> etcd = StartOrFail();
  ASSERT_NE(etcd, nullptr);
  absl::StatusOr<std::string> revoke = etcd->Post("/v3/lease/revoke", R"({"ID":"12345"})");
  ASSERT_FALSE(revoke.ok());
  EXPECT_EQ(revoke.status().code(), absl::StatusCode::kNotFound) << revoke.status();
  EXPECT_TRUE(absl::StrContains(revoke.status().message(), "requested lease not found"))
      << revoke.status();
}

TEST(EtcdServerTest, AKeyWrittenSurvivesRestartWithItsCreateRevisionUnchanged) {
  std::unique_ptr<EtcdServer> etcd = StartOrFail();
  ASSERT_NE(etcd, nullptr);
  const uint16_t port = etcd->port();
  const uint16_t peer_port = etcd->peer_port();
  ASSERT_TRUE(etcd->Post("/v3/kv/put", PutBody("election/a", "one")).ok());
  absl::StatusOr<std::string> before = etcd->Post("/v3/kv/range", RangeBody("election/a"));
  ASSERT_TRUE(before.ok()) << before.status();
  const std::string create_revision = Field(*before, "create_revision");
  ASSERT_FALSE(create_revision.empty()) << *before;

  ASSERT_TRUE(etcd->Restart().ok()) << etcd->LogTail();
  EXPECT_EQ(etcd->port(), port);
  EXPECT_EQ(etcd->peer_port(), peer_port);
  absl::StatusOr<std::string> after = etcd->Post("/v3/kv/range", RangeBody("election/a"));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(Field(*after, "create_revision"), create_revision) << *after;
  EXPECT_EQ(Field(*after, "value"), EtcdServer::Base64("one")) << *after;
}

TEST(EtcdServerTest, AnAcknowledgedWriteSurvivesKill) {
  std::unique_ptr<EtcdServer> etcd = StartOrFail();
  ASSERT_NE(etcd, nullptr);
  ASSERT_TRUE(etcd->Post("/v3/kv/put", PutBody("election/b", "two")).ok());
  etcd->Kill();
  EXPECT_EQ(etcd->pid(), -1);
  ASSERT_TRUE(etcd->Restart().ok()) << etcd->LogTail();
  absl::StatusOr<std::string> after = etcd->Post("/v3/kv/range", RangeBody("election/b"));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(Field(*after, "value"), EtcdServer::Base64("two")) << *after;
}

TEST(EtcdServerTest, StopMakesTheEndpointRefuseConnectionsAndRestartBringsItBack) {
  std::unique_ptr<EtcdServer> etcd = StartOrFail();
  ASSERT_NE(etcd, nullptr);
  const uint16_t port = etcd->port();
  etcd->Stop();
  EXPECT_EQ(etcd->pid(), -1);
  EXPECT_FALSE(PortAcceptsConnections(port));
  absl::StatusOr<std::string> refused = etcd->Post("/v3/kv/range", RangeBody("x"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();

  ASSERT_TRUE(etcd->Restart().ok()) << etcd->LogTail();
  EXPECT_GT(etcd->pid(), 0);
  EXPECT_TRUE(PortAcceptsConnections(port));
  EXPECT_TRUE(etcd->Post("/v3/kv/range", RangeBody("x")).ok());
}

TEST(EtcdServerTest, PauseFreezesRequestsAndResumeAnswersThemAgain) {
  std::unique_ptr<EtcdServer> etcd = StartOrFail();
  ASSERT_NE(etcd, nullptr);
  EXPECT_EQ(QuickVersionProbe(etcd->Endpoint()), CURLE_OK);
  ASSERT_TRUE(etcd->Pause().ok());
  EXPECT_EQ(etcd->Pause().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(QuickVersionProbe(etcd->Endpoint()), CURLE_OPERATION_TIMEDOUT);
  ASSERT_TRUE(etcd->Resume().ok());
  EXPECT_EQ(etcd->Resume().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(QuickVersionProbe(etcd->Endpoint()), CURLE_OK);
  EXPECT_TRUE(etcd->Post("/v3/kv/put", PutBody("k", "v")).ok());
}

TEST(EtcdServerTest, TheDestructorStopsAPausedServerAndRemovesTheTempDir) {
  std::unique_ptr<EtcdServer> etcd = StartOrFail();
  ASSERT_NE(etcd, nullptr);
  const pid_t pid = etcd->pid();
  const uint16_t port = etcd->port();
  const std::filesystem::path dir = etcd->dir();
  ASSERT_TRUE(etcd->Pause().ok());
  etcd.reset();
  EXPECT_FALSE(PortAcceptsConnections(port));
  EXPECT_FALSE(std::filesystem::exists(dir)) << "the temp dir is removed";
  EXPECT_NE(kill(pid, 0), 0) << "etcd " << pid << " is gone";
}

TEST(EtcdServerTest, TwoServersAtOnceGetDistinctPortsAndSeparateData) {
  std::unique_ptr<EtcdServer> first = StartOrFail();
  std::unique_ptr<EtcdServer> second = StartOrFail();
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  const std::set<uint16_t> ports = {first->port(), first->peer_port(), second->port(),
                                    second->peer_port()};
  EXPECT_EQ(ports.size(), 4u);
  EXPECT_NE(first->dir(), second->dir());
  ASSERT_TRUE(first->Post("/v3/kv/put", PutBody("only-in-first", "1")).ok());
  absl::StatusOr<std::string> range = second->Post("/v3/kv/range", RangeBody("only-in-first"));
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_FALSE(absl::StrContains(*range, "\"kvs\"")) << *range;
}

TEST(EtcdServerTest, AMissingEtcdIsAFailedPreconditionNamingTheInstallScript) {
  EtcdOptions options;
  options.etcd_path = "/nonexistent/etcd";
  auto server = EtcdServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(server.status().message(),
            "etcd not found at /nonexistent/etcd (scripts/install-deps.sh installs etcd-server)");
}

TEST(EtcdServerTest, ABadFlagFailsStartWithEtcdsMessage) {
  EtcdOptions options;
  options.extra_flags = {"--no-such-flag"};
  auto server = EtcdServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(server.status().message(), "no-such-flag")) << server.status();
}

}  // namespace
}  // namespace keel::testing
