// The cpp-httplib adapter (examples/httplib/keel_httplib.h) end to end: a real httplib::Server
// on 127.0.0.1, in this process, with wrapped handlers, driven by libcurl over loopback. Each
// test counts the handler's runs: a request with a key runs it at most once, whatever the
// retries, and the answers are the layer's (keel/idempotency_http.h) on the wire. The runtime
// clock is manual and never moves, so no lease or entry lapses while a test runs.
#include <curl/curl.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "keel/clock.h"
#include "keel/idempotency.h"
#include "keel/idempotency_http.h"
#include "keel/runtime.h"
#include "keel_httplib.h"

namespace keel {
namespace {

constexpr char kHost[] = "127.0.0.1";
constexpr char kProblemType[] = "https://keel.invalid/problems/";
constexpr char kOrder[] = R"({"sku":"A-1","qty":2})";
constexpr char kJson[] = "Content-Type: application/json";
// Long enough for a slow sanitizer build; a request that takes this long has failed.
constexpr auto kPatience = std::chrono::seconds(60);

std::string KeyHeader(const std::string& key) {
  return absl::StrCat("Idempotency-Key: \"", key, "\"");
}

// A latch of one that can also be waited on with a timeout, so that a broken run fails
// instead of hanging. Thread-safe.
class Gate {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = true;
    opened_.notify_all();
  }
  bool WaitFor(std::chrono::steady_clock::duration timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    return opened_.wait_for(lock, timeout, [this] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable opened_;
  bool open_ = false;
};

// An HTTP exchange as the client saw it.
struct HttpResult {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // in order, as received
  std::string body;

  // The values of the header lines named `name` (case-insensitive).
  std::vector<std::string> Values(const std::string& name) const {
    std::vector<std::string> values;
    for (const auto& [n, v] : headers) {
      if (absl::EqualsIgnoreCase(n, name)) values.push_back(v);
    }
    return values;
  }
  // The value of the one header line named `name`; "" when there is none or several.
  std::string Header(const std::string& name) const {
    std::vector<std::string> values = Values(name);
    return values.size() == 1 ? values[0] : "";
  }
  // The header lines other than those named in `except`.
  std::vector<std::pair<std::string, std::string>> HeadersExcept(
      std::initializer_list<const char*> except) const {
    std::vector<std::pair<std::string, std::string>> kept;
    for (const auto& header : headers) {
      if (std::none_of(except.begin(), except.end(), [&](const char* name) {
            return absl::EqualsIgnoreCase(header.first, name);
          })) {
        kept.push_back(header);
      }
    }
    return kept;
  }
};

size_t AppendBody(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

// One header line of the response; a status line starts a new response (and a new list).
size_t AppendHeader(char* data, size_t size, size_t count, void* user) {
  auto* headers = static_cast<std::vector<std::pair<std::string, std::string>>*>(user);
  absl::string_view line(data, size * count);
  if (absl::StartsWith(line, "HTTP/")) {
    headers->clear();
  } else if (const size_t colon = line.find(':'); colon != absl::string_view::npos) {
    headers->emplace_back(std::string(line.substr(0, colon)),
                          std::string(absl::StripAsciiWhitespace(line.substr(colon + 1))));
  }
  return size * count;
}

// One request on a fresh connection (closed afterwards), with no proxy. `body` is sent for
// POST; `headers` are raw lines ("Name: value").
HttpResult Send(int port, const std::string& method, const std::string& path,
                const std::vector<std::string>& headers, const std::string& body = "") {
  HttpResult result;
  CURL* easy = curl_easy_init();
  if (easy == nullptr) {
    ADD_FAILURE() << "curl_easy_init failed";
    return result;
  }
  curl_slist* list = curl_slist_append(nullptr, "Expect:");  // no 100-continue round trip
  for (const std::string& h : headers) list = curl_slist_append(list, h.c_str());
  const std::string url = absl::StrCat("http://", kHost, ":", port, path);
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_PROXY, "");
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(kPatience / std::chrono::milliseconds(1)));
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
  if (method == "POST") {
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  } else if (method != "GET") {
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &AppendHeader);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &result.headers);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &AppendBody);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &result.body);
  const CURLcode code = curl_easy_perform(easy);
  EXPECT_EQ(code, CURLE_OK) << method << " " << url << ": " << curl_easy_strerror(code);
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &result.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(easy);
  return result;
}

// An IMF-fixdate (RFC 9110 §5.6.7), or InfinitePast when `value` is not one.
absl::Time ParseImfFixdate(const std::string& value) {
  absl::Time time;
  std::string error;
  if (!absl::ParseTime("%a, %d %b %Y %H:%M:%S GMT", value, absl::UTCTimeZone(), &time, &error)) {
    return absl::InfinitePast();
  }
  return time;
}

class HttplibAdapterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_EQ(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK); }
  static void TearDownTestSuite() { curl_global_cleanup(); }

  void SetUp() override {
    auto runtime = Runtime::Create({.name = "httplib-test", .clock = &clock_});
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    runtime_ = *std::move(runtime);
    auto tracker = IdempotencyTracker::Create(
        *runtime_, {.lease = absl::Seconds(30), .retention = absl::Minutes(10)});
    ASSERT_TRUE(tracker.ok()) << tracker.status();
    tracker_ = *std::move(tracker);
    auto layer = IdempotencyHttp::Create(*runtime_, *tracker_);
    ASSERT_TRUE(layer.ok()) << layer.status();
    layer_ = std::make_unique<IdempotencyHttp>(*std::move(layer));

    // Creates an order: each run takes the next number.
    server_.Post("/orders", keel_httplib::Idempotent(
                                *layer_,
                                [this](const httplib::Request&, httplib::Response& res) {
                                  const int id = ++order_runs_;
                                  res.status = 201;
                                  res.set_header("Location", absl::StrCat("/orders/", id));
                                  res.set_content(absl::StrCat(R"({"order":)", id, "}"),
                                                  "application/json");
                                },
                                Options("/orders")));
    server_.Get("/orders", keel_httplib::Idempotent(
                               *layer_,
                               [this](const httplib::Request&, httplib::Response& res) {
                                 const int runs = ++list_runs_;
                                 res.set_content(absl::StrCat(R"({"lists":)", runs, "}"),
                                                 "application/json");
                               },
                               Options("/orders")));
    // Runs until the test opens release_.
    server_.Post("/slow", keel_httplib::Idempotent(
                              *layer_,
                              [this](const httplib::Request&, httplib::Response& res) {
                                ++slow_runs_;
                                entered_.Open();
                                if (!release_.WaitFor(kPatience)) {
                                  throw std::runtime_error("the test never released the handler");
                                }
                                res.status = 201;
                                res.set_content("slow done", "text/plain");
                              },
                              Options("/slow")));
    server_.Post("/boom", keel_httplib::Idempotent(
                              *layer_,
                              [this](const httplib::Request&, httplib::Response& res) {
                                ++boom_runs_;
                                res.status = 201;  // half-built when it throws
                                throw std::runtime_error("secret: card 4242 declined");
                              },
                              Options("/boom")));
    server_.Post("/stream", keel_httplib::Idempotent(
                                *layer_,
                                [this](const httplib::Request&, httplib::Response& res) {
                                  ++stream_runs_;
                                  res.set_content_provider("text/plain",
                                                           [](size_t, httplib::DataSink& sink) {
                                                             sink.done();
                                                             return true;
                                                           });
                                },
                                Options("/stream")));

    port_ = server_.bind_to_any_port(kHost);
    ASSERT_GT(port_, 0) << "cannot bind " << kHost;
    listener_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() acts only on a running server: wait until it runs (the socket already listens).
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    while (!server_.is_running() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    ASSERT_TRUE(server_.is_running());
  }

  void TearDown() override {
    release_.Open();
    if (listener_.joinable()) {
      server_.stop();
      listener_.join();
    }
  }

  // The options of every route: identity from X-User, exceptions recorded.
  keel_httplib::IdempotentOptions Options(std::string route) {
    keel_httplib::IdempotentOptions options;
    options.route = std::move(route);
    options.identity = [](const httplib::Request& req) { return req.get_header_value("X-User"); };
    options.on_exception = [this](const httplib::Request&, std::exception_ptr error) {
      std::string what = "(not a std::exception)";
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      std::lock_guard<std::mutex> lock(mutex_);
      exceptions_.push_back(std::move(what));
    };
    options.on_not_stored = [this](const httplib::Request&, const absl::Status& status) {
      std::lock_guard<std::mutex> lock(mutex_);
      not_stored_.push_back(status.ToString());
    };
    return options;
  }

  HttpResult Post(const std::string& path, const std::vector<std::string>& headers,
                  const std::string& body = kOrder) {
    std::vector<std::string> all = {kJson};
    all.insert(all.end(), headers.begin(), headers.end());
    return Send(port_, "POST", path, all, body);
  }

  std::vector<std::string> Exceptions() {
    std::lock_guard<std::mutex> lock(mutex_);
    return exceptions_;
  }
  std::vector<std::string> NotStored() {
    std::lock_guard<std::mutex> lock(mutex_);
    return not_stored_;
  }

  // Expects an application/problem+json answer of `status` whose type is `type_name`.
  static void ExpectProblem(const HttpResult& result, long status, const char* type_name) {
    EXPECT_EQ(result.status, status) << result.body;
    EXPECT_EQ(result.Header("Content-Type"), "application/problem+json");
    EXPECT_TRUE(absl::StrContains(result.body,
                                  absl::StrCat(R"({"type":")", kProblemType, type_name, R"(")")))
        << result.body;
    EXPECT_TRUE(absl::StrContains(result.body, absl::StrCat(R"("status":)", status, ",")))
        << result.body;
  }

  // Expects one Expires header: an IMF-fixdate retention (10 min) from now, to the second.
  static void ExpectExpires(const HttpResult& result) {
    const absl::Time expires = ParseImfFixdate(result.Header("Expires"));
    const absl::Time now = absl::Now();
    EXPECT_GE(expires, now + absl::Minutes(10) - absl::Minutes(1)) << result.Header("Expires");
    EXPECT_LE(expires, now + absl::Minutes(10)) << result.Header("Expires");
  }

  ManualClock clock_;
  std::unique_ptr<Runtime> runtime_;
  std::unique_ptr<IdempotencyTracker> tracker_;
  std::unique_ptr<IdempotencyHttp> layer_;
  std::atomic<int> order_runs_{0};
  std::atomic<int> list_runs_{0};
  std::atomic<int> slow_runs_{0};
  std::atomic<int> boom_runs_{0};
  std::atomic<int> stream_runs_{0};
  Gate entered_;
  Gate release_;
  std::mutex mutex_;
  std::vector<std::string> exceptions_;  // guarded by mutex_
  std::vector<std::string> not_stored_;  // guarded by mutex_
  // Declared last: destroyed (after TearDown stopped it) before what its handlers use.
  httplib::Server server_;
  int port_ = -1;
  std::thread listener_;
};

TEST_F(HttplibAdapterTest, AFirstPostRunsTheHandlerAndAnswers201) {
  HttpResult first = Post("/orders", {KeyHeader("first-1")});
  EXPECT_EQ(first.status, 201) << first.body;
  EXPECT_EQ(first.body, R"({"order":1})");
  EXPECT_EQ(first.Header("Content-Type"), "application/json");
  EXPECT_EQ(first.Header("Location"), "/orders/1");
  EXPECT_TRUE(first.Values("Idempotent-Replayed").empty());
  ExpectExpires(first);
  EXPECT_EQ(order_runs_.load(), 1);
  EXPECT_TRUE(NotStored().empty());
}

TEST_F(HttplibAdapterTest, ARetryWithTheSameKeyAndBodyReplaysTheFirstAnswerByteForByte) {
  HttpResult first = Post("/orders", {KeyHeader("retry-1")});
  ASSERT_EQ(first.status, 201) << first.body;
  EXPECT_EQ(order_runs_.load(), 1);

  for (int i = 0; i < 3; ++i) {
    HttpResult retry = Post("/orders", {KeyHeader("retry-1")});
    EXPECT_EQ(retry.status, first.status);
    EXPECT_EQ(retry.body, first.body);
    // Every other header line is the same, Content-Length and Content-Type included.
    EXPECT_EQ(retry.HeadersExcept({"Idempotent-Replayed", "Expires"}),
              first.HeadersExcept({"Idempotent-Replayed", "Expires"}));
    EXPECT_EQ(retry.Values("Idempotent-Replayed"), std::vector<std::string>{"true"});
    ExpectExpires(retry);
    EXPECT_EQ(order_runs_.load(), 1) << "a retry must not run the handler";
  }
}

TEST_F(HttplibAdapterTest, TheSameKeyWithAnotherBodyIsA422Problem) {
  ASSERT_EQ(Post("/orders", {KeyHeader("reused-1")}).status, 201);
  HttpResult other = Post("/orders", {KeyHeader("reused-1")}, R"({"sku":"B-2","qty":1})");
  ExpectProblem(other, 422, "idempotency-key-reused");
  ExpectExpires(other);
  EXPECT_TRUE(other.Values("Idempotent-Replayed").empty());
  EXPECT_EQ(order_runs_.load(), 1);
}

TEST_F(HttplibAdapterTest, APostWithoutAKeyIsA400AndRunsNothing) {
  HttpResult missing = Post("/orders", {});
  ExpectProblem(missing, 400, "idempotency-key-missing");
  EXPECT_TRUE(absl::StrContains(missing.body, "POST requests to /orders")) << missing.body;
  EXPECT_EQ(order_runs_.load(), 0);
}

TEST_F(HttplibAdapterTest, APostWithTwoKeysIsA400AndRunsNothing) {
  HttpResult two = Post("/orders", {KeyHeader("a"), KeyHeader("b")});
  ExpectProblem(two, 400, "idempotency-key-invalid");
  EXPECT_EQ(order_runs_.load(), 0);
  // Neither key was claimed: each alone runs the handler.
  EXPECT_EQ(Post("/orders", {KeyHeader("a")}).status, 201);
  EXPECT_EQ(Post("/orders", {KeyHeader("b")}).status, 201);
  EXPECT_EQ(order_runs_.load(), 2);
}

// Exactly one of several requests with the same key runs the handler: while it runs (blocked
// on a latch), retries sent at once from several threads are each answered 409 with
// Retry-After, and once it finishes a retry replays its answer.
TEST_F(HttplibAdapterTest, ConcurrentRetriesWhileTheFirstRunsGet409WithRetryAfterAndOnlyOneRuns) {
  constexpr int kRetries = 4;
  HttpResult first;
  std::thread first_client([&] { first = Post("/slow", {KeyHeader("slow-1")}); });
  std::vector<HttpResult> retries(kRetries);
  std::vector<std::thread> retry_clients;
  // Opens the handler's latch and joins every client, whatever the test's outcome.
  struct JoinAll {
    Gate& release;
    std::thread& first;
    std::vector<std::thread>& retries;
    ~JoinAll() {
      release.Open();
      for (std::thread& t : retries) {
        if (t.joinable()) t.join();
      }
      if (first.joinable()) first.join();
    }
  } join_all{release_, first_client, retry_clients};

  ASSERT_TRUE(entered_.WaitFor(kPatience)) << "the first request never reached the handler";
  Gate start;
  for (int i = 0; i < kRetries; ++i) {
    retry_clients.emplace_back([&, i] {
      start.WaitFor(kPatience);
      retries[i] = Post("/slow", {KeyHeader("slow-1")});
    });
  }
  start.Open();
  for (std::thread& t : retry_clients) t.join();
  retry_clients.clear();

  for (const HttpResult& retry : retries) {
    ExpectProblem(retry, 409, "request-in-flight");
    // The lease is 30 s and the runtime clock does not move.
    EXPECT_EQ(retry.Header("Retry-After"), "30");
    ExpectExpires(retry);
  }
  EXPECT_EQ(slow_runs_.load(), 1);

  release_.Open();
  first_client.join();
  EXPECT_EQ(first.status, 201) << first.body;
  EXPECT_EQ(first.body, "slow done");

  HttpResult after = Post("/slow", {KeyHeader("slow-1")});
  EXPECT_EQ(after.status, 201);
  EXPECT_EQ(after.body, "slow done");
  EXPECT_EQ(after.Header("Idempotent-Replayed"), "true");
  EXPECT_EQ(slow_runs_.load(), 1);
  EXPECT_TRUE(Exceptions().empty());
}

TEST_F(HttplibAdapterTest, AThrowingHandlerGivesA500AndItsKeyAnswersHaltedAfterwards) {
  HttpResult failed = Post("/boom", {KeyHeader("boom-1")});
  EXPECT_EQ(failed.status, 500);
  EXPECT_EQ(failed.Header("Content-Type"), "application/problem+json");
  EXPECT_EQ(failed.body, R"({"type":"about:blank","title":"Internal Server Error","status":500})");
  EXPECT_TRUE(failed.Values("Idempotent-Replayed").empty());
  EXPECT_EQ(boom_runs_.load(), 1);
  EXPECT_EQ(Exceptions(), std::vector<std::string>{"secret: card 4242 declined"});

  // The default policy (HaltedEntries::kReplayFailure): the outcome is unknown, so every
  // retry is told so, and the handler does not run again.
  for (int i = 0; i < 2; ++i) {
    HttpResult retry = Post("/boom", {KeyHeader("boom-1")});
    ExpectProblem(retry, 500, "request-halted");
    EXPECT_TRUE(absl::StrContains(retry.body, "the handler threw")) << retry.body;
    EXPECT_FALSE(absl::StrContains(retry.body, "secret")) << retry.body;
    ExpectExpires(retry);
    EXPECT_EQ(boom_runs_.load(), 1);
  }
}

TEST_F(HttplibAdapterTest, AnotherIdentityWithTheSameKeyRunsTheHandlerAgain) {
  HttpResult alice = Post("/orders", {"X-User: alice", KeyHeader("shared-1")});
  EXPECT_EQ(alice.status, 201);
  EXPECT_EQ(alice.body, R"({"order":1})");
  HttpResult bob = Post("/orders", {"X-User: bob", KeyHeader("shared-1")});
  EXPECT_EQ(bob.status, 201);
  EXPECT_EQ(bob.body, R"({"order":2})");
  EXPECT_TRUE(bob.Values("Idempotent-Replayed").empty());
  EXPECT_EQ(order_runs_.load(), 2);

  // Each one's retry replays their own answer.
  HttpResult alice_again = Post("/orders", {"X-User: alice", KeyHeader("shared-1")});
  EXPECT_EQ(alice_again.body, R"({"order":1})");
  EXPECT_EQ(alice_again.Header("Idempotent-Replayed"), "true");
  HttpResult bob_again = Post("/orders", {"X-User: bob", KeyHeader("shared-1")});
  EXPECT_EQ(bob_again.body, R"({"order":2})");
  EXPECT_EQ(order_runs_.load(), 2);
}

TEST_F(HttplibAdapterTest, AGetWithoutAKeyPassesThroughUntracked) {
  HttpResult first = Send(port_, "GET", "/orders", {});
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(first.body, R"({"lists":1})");
  EXPECT_TRUE(first.Values("Expires").empty());
  EXPECT_TRUE(first.Values("Idempotent-Replayed").empty());
  HttpResult second = Send(port_, "GET", "/orders", {});
  EXPECT_EQ(second.body, R"({"lists":2})");
  // GET takes no key: one sent anyway is ignored, not tracked.
  HttpResult keyed = Send(port_, "GET", "/orders", {KeyHeader("get-1")});
  EXPECT_EQ(keyed.status, 200);
  EXPECT_EQ(keyed.body, R"({"lists":3})");
  EXPECT_EQ(Send(port_, "GET", "/orders", {KeyHeader("get-1")}).body, R"({"lists":4})");
  EXPECT_EQ(list_runs_.load(), 4);
  EXPECT_EQ(order_runs_.load(), 0);
}

TEST_F(HttplibAdapterTest, AStreamingHandlerIsRefusedWithA500AndItsKeyHalted) {
  HttpResult refused = Post("/stream", {KeyHeader("stream-1")});
  EXPECT_EQ(refused.status, 500);
  EXPECT_EQ(refused.body, R"({"type":"about:blank","title":"Internal Server Error","status":500})");
  ASSERT_EQ(Exceptions().size(), 1u);
  EXPECT_TRUE(absl::StrContains(Exceptions()[0], "content provider")) << Exceptions()[0];

  HttpResult retry = Post("/stream", {KeyHeader("stream-1")});
  ExpectProblem(retry, 500, "request-halted");
  EXPECT_TRUE(absl::StrContains(retry.body, "the handler streamed its response")) << retry.body;
  EXPECT_EQ(stream_runs_.load(), 1);
}

}  // namespace
}  // namespace keel
