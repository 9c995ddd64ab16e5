// keel-httplib-orders: an order service on cpp-httplib whose POST /orders is safe to retry,
// through keel's Idempotency-Key layer (keel_httplib.h). Each POST that runs creates an order
// with the next number; a retry with the same key and body gets the same order back
// (Idempotent-Replayed: true), whatever the number of retries.
//
// Usage: keel-httplib-orders [PORT]   (default 8080; 0 picks a free port). It listens on
// 127.0.0.1 only, prints one line when it is ready, and stops on SIGINT or SIGTERM.
//
//   curl -i http://127.0.0.1:8080/orders -H 'Idempotency-Key: "order-1"' -H 'X-User: alice'
//        -H 'Content-Type: application/json' -d '{"sku":"A-1","qty":2}'
//   (run it twice: the second answer is the first one, replayed)
//   curl -i http://127.0.0.1:8080/orders   (untracked: the number of orders so far)
#include <httplib.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "keel/idempotency.h"
#include "keel/idempotency_http.h"
#include "keel/runtime.h"
#include "keel_httplib.h"

namespace {

constexpr char kHost[] = "127.0.0.1";  // loopback only: this example is not meant to be exposed

// The caller's identity. A real service takes it from a verified credential (the subject of a
// checked token); this example trusts an X-User header so that curl can play two users.
std::string UserOf(const httplib::Request& req) { return req.get_header_value("X-User"); }

}  // namespace

int main(int argc, char** argv) {
  int port = 8080;
  if (argc > 2 || (argc == 2 && (!absl::SimpleAtoi(argv[1], &port) || port < 0 || port > 65535))) {
    std::fprintf(stderr, "usage: %s [PORT]  (0 to 65535, default 8080; 0 picks a free port)\n",
                 argv[0]);
    return 2;
  }

  // SIGINT and SIGTERM are blocked here, before any thread starts, so that every thread
  // inherits the mask and only the waiter below receives them (with sigwait: stopping the
  // server is not async-signal-safe, so it must not happen in a signal handler).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto runtime = keel::Runtime::Create({.name = "orders"});
  if (!runtime.ok()) {
    std::fprintf(stderr, "cannot start the runtime: %s\n", runtime.status().ToString().c_str());
    return 1;
  }
  // The lease must exceed the slowest handler: a claim that outlives it is given up.
  auto tracker = keel::IdempotencyTracker::Create(
      **runtime, {.lease = absl::Seconds(30), .retention = absl::Hours(24)});
  if (!tracker.ok()) {
    std::fprintf(stderr, "cannot create the tracker: %s\n", tracker.status().ToString().c_str());
    return 1;
  }
  auto layer = keel::IdempotencyHttp::Create(**runtime, **tracker);
  if (!layer.ok()) {
    std::fprintf(stderr, "cannot create the layer: %s\n", layer.status().ToString().c_str());
    return 1;
  }

  std::atomic<int64_t> orders{0};
  keel_httplib::IdempotentOptions options;
  options.route = "/orders";
  options.identity = UserOf;
  options.on_exception = [](const httplib::Request& req, std::exception_ptr error) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    std::fprintf(stderr, "%s %s: the handler failed (%s); the key is halted\n", req.method.c_str(),
                 req.path.c_str(), what.c_str());
  };
  options.on_not_stored = [](const httplib::Request& req, const absl::Status& status) {
    std::fprintf(stderr, "%s %s: the response was sent but not stored: %s\n", req.method.c_str(),
                 req.path.c_str(), status.ToString().c_str());
  };

  httplib::Server server;
  // Creates an order. Not idempotent by itself: each run takes a new number.
  server.Post("/orders", keel_httplib::Idempotent(
                             *layer,
                             [&orders](const httplib::Request&, httplib::Response& res) {
                               const int64_t id = orders.fetch_add(1) + 1;
                               res.status = 201;
                               res.set_header("Location", absl::StrCat("/orders/", id));
                               res.set_content(absl::StrCat(R"({"order":)", id, "}\n"),
                                               "application/json");
                             },
                             options));
  // GET takes no key: the layer lets it through untracked.
  server.Get("/orders", keel_httplib::Idempotent(
                            *layer,
                            [&orders](const httplib::Request&, httplib::Response& res) {
                              res.set_content(absl::StrCat(R"({"orders":)", orders.load(), "}\n"),
                                              "application/json");
                            },
                            options));

  const int bound =
      port == 0 ? server.bind_to_any_port(kHost) : (server.bind_to_port(kHost, port) ? port : -1);
  if (bound < 0) {
    std::fprintf(stderr, "cannot listen on %s:%d\n", kHost, port);
    return 1;
  }

  std::atomic<bool> listen_returned{false};
  std::thread stopper([&] {
    int signal = 0;
    sigwait(&stop_signals, &signal);
    // stop() acts only once the server runs; a signal that comes before waits for it.
    while (!server.is_running() && !listen_returned.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    server.stop();
  });

  std::printf(
      "keel-httplib-orders: listening on http://%s:%d (POST /orders with an "
      "Idempotency-Key header; SIGINT or SIGTERM stops)\n",
      kHost, bound);
  std::fflush(stdout);
  const bool listened = server.listen_after_bind();
  listen_returned.store(true);
  // Wakes the waiter if listening ended by itself; after a signal, this one stays blocked and
  // pending on the waiter, and is discarded when it exits.
  pthread_kill(stopper.native_handle(), SIGTERM);
  stopper.join();
  return listened ? 0 : 1;
}
