// libcurl transfers on the runtime's control thread: they complete there, run without
// blocking timers, honour libcurl's own timeouts, and are cancelled (never silently lost) by
// RemoveTransfer and Shutdown. Peers are real: a file:// URL and a TCP listener on
// 127.0.0.1 that accepts connections and never answers.
#include "keel/internal/transfers.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>

#include "gtest/gtest.h"
#include "keel/runtime.h"

namespace keel {
namespace {

using internal::TransferResult;

// A TCP listener on 127.0.0.1 that never accepts nor answers: the kernel completes the
// handshake from the backlog, so a client connects, sends its request and waits.
class SilentServer {
 public:
  SilentServer() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(fd_, 16) != 0) {
      ADD_FAILURE() << "cannot listen on 127.0.0.1";
      return;
    }
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~SilentServer() {
    if (fd_ >= 0) close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/"; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

size_t AppendBody(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

// An easy handle with its body buffer; cleaned up by the test after `done`.
struct Easy {
  explicit Easy(const std::string& url) : handle(curl_easy_init()) {
    curl_easy_setopt(handle, CURLOPT_URL, url.c_str());
    curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, &AppendBody);
    curl_easy_setopt(handle, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
  }
  ~Easy() { curl_easy_cleanup(handle); }
  CURL* handle;
  std::string body;
};

std::unique_ptr<Runtime> MakeRuntime() {
  auto runtime = Runtime::Create({.name = "transfers"});
  EXPECT_TRUE(runtime.ok()) << runtime.status();
  return std::move(*runtime);
}

// Runs `f` on the control thread and returns what it returns.
template <class F>
auto OnLoop(Runtime& runtime, F f) {
  std::promise<decltype(f())> result;
  EXPECT_TRUE(runtime.Post([&] { result.set_value(f()); }).ok());
  return result.get_future().get();
}

TEST(TransfersTest, AFileTransferCompletesOnTheControlThread) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("keel_transfer_" + std::to_string(getpid()));
  { std::ofstream(path) << "price=42\n"; }
  auto runtime = MakeRuntime();
  Easy easy("file://" + path.string());
  std::promise<std::pair<TransferResult, bool>> finished;
  absl::Status added = OnLoop(*runtime, [&] {
    return internal::AddTransfer(*runtime, easy.handle, [&](TransferResult r) {
      finished.set_value({r, runtime->InControlThread()});
    });
  });
  ASSERT_TRUE(added.ok()) << added;
  auto future = finished.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto [result, on_loop] = future.get();
  EXPECT_EQ(result.curl_code, CURLE_OK);
  EXPECT_FALSE(result.cancelled);
  EXPECT_TRUE(on_loop);
  EXPECT_EQ(easy.body, "price=42\n");
  EXPECT_EQ(OnLoop(*runtime, [&] { return internal::RunningTransfers(*runtime); }), 0u);
  std::filesystem::remove(path);
}

TEST(TransfersTest, AHangingTransferDoesNotBlockTimersAndLibcurlTimeoutsFire) {
  SilentServer server;
  auto runtime = MakeRuntime();
  Easy easy(server.url());
  curl_easy_setopt(easy.handle, CURLOPT_TIMEOUT_MS, 300L);
  std::promise<TransferResult> finished;
  ASSERT_TRUE(OnLoop(*runtime, [&] {
                return internal::AddTransfer(*runtime, easy.handle,
                                             [&](TransferResult r) { finished.set_value(r); });
              }).ok());
  // While the transfer waits for an answer, timers still run on time.
  std::promise<void> timer_ran;
  ASSERT_TRUE(runtime->Schedule(absl::Milliseconds(20), [&] { timer_ran.set_value(); }).ok());
  ASSERT_EQ(timer_ran.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(OnLoop(*runtime, [&] { return internal::RunningTransfers(*runtime); }), 1u);
  auto future = finished.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  TransferResult result = future.get();
  EXPECT_EQ(result.curl_code, CURLE_OPERATION_TIMEDOUT);
  EXPECT_FALSE(result.cancelled);
}

// Counts completions of one transfer and remembers whether the last was a cancellation.
struct Completions {
  std::atomic<int> calls{0};
  std::atomic<bool> cancelled{false};

  absl::Status Start(Runtime& runtime, Easy& easy) {
    return OnLoop(runtime, [&] {
      return internal::AddTransfer(runtime, easy.handle, [this](TransferResult r) {
        ++calls;
        cancelled = r.cancelled;
      });
    });
  }
};

TEST(TransfersTest, RemoveTransferCancelsItAtOnce) {
  SilentServer server;
  auto runtime = MakeRuntime();
  Easy easy(server.url());
  Completions done;
  ASSERT_TRUE(done.Start(*runtime, easy).ok());
  EXPECT_TRUE(OnLoop(*runtime, [&] { return internal::RemoveTransfer(*runtime, easy.handle); }));
  EXPECT_EQ(done.calls.load(), 1);
  EXPECT_TRUE(done.cancelled.load());
  EXPECT_FALSE(OnLoop(*runtime, [&] { return internal::RemoveTransfer(*runtime, easy.handle); }));
  EXPECT_EQ(done.calls.load(), 1) << "done must run exactly once";
}

TEST(TransfersTest, ShutdownCancelsRunningTransfersVisibly) {
  SilentServer server;
  auto runtime = MakeRuntime();
  Easy easy(server.url());
  Completions done;
  ASSERT_TRUE(done.Start(*runtime, easy).ok());
  ASSERT_TRUE(runtime->Shutdown().ok());
  EXPECT_EQ(done.calls.load(), 1);
  EXPECT_TRUE(done.cancelled.load());
}

TEST(TransfersTest, TransfersAreAddedOnTheControlThreadOnly) {
  auto runtime = MakeRuntime();
  Easy easy("file:///dev/null");
  absl::Status off_loop = internal::AddTransfer(*runtime, easy.handle, [](TransferResult) {});
  EXPECT_EQ(off_loop.code(), absl::StatusCode::kFailedPrecondition);
  absl::Status twice = OnLoop(*runtime, [&] {
    absl::Status first = internal::AddTransfer(*runtime, easy.handle, [](TransferResult) {});
    if (!first.ok()) return first;
    return internal::AddTransfer(*runtime, easy.handle, [](TransferResult) {});
  });
  EXPECT_EQ(twice.code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(runtime->Shutdown().ok());  // the first one is completed or cancelled
}

}  // namespace
}  // namespace keel
