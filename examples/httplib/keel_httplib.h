// keel_httplib: keel's Idempotency-Key layer on cpp-httplib, as a handler wrapper. An example
// adapter: copy it into your project and adapt it (tested with cpp-httplib 0.11).
//
// cpp-httplib calls a handler per route with the parsed request and a response to fill in.
// Idempotent() wraps such a handler so that POST and PATCH (the layer's methods) are safe to
// retry: it turns the request into a keel::HttpRequestView, asks keel::IdempotencyHttp whether
// to run the handler, and either writes the layer's answer (a 4xx/5xx problem, or the stored
// response of the first request, replayed) or runs the handler and has the layer store what it
// answered before sending it. The handler itself knows nothing of keys.
//
//   auto runtime = keel::Runtime::Create({.name = "orders"});
//   auto tracker = keel::IdempotencyTracker::Create(**runtime, {.lease = absl::Seconds(30)});
//   auto layer = keel::IdempotencyHttp::Create(**runtime, **tracker);
//   httplib::Server server;
//   server.Post("/orders", keel_httplib::Idempotent(*layer, CreateOrder,
//                                                   {.route = "/orders", .identity = UserOf}));
//
// What the wrapped handler sees and what the client gets:
//   - Untracked requests (a method that takes no key, say GET; or one that accepts a key and
//     came without) run the handler on the server's response directly, as if it were not
//     wrapped; its exceptions reach the server as they would unwrapped.
//   - Tracked requests run the handler on a fresh httplib::Response, whose status (200 if the
//     handler set none), headers and body become the keel::IdempotentResponse that Finish
//     stores and that every retry replays. Headers the server adds when it writes the
//     response (Content-Length, Connection, Keep-Alive) are not part of it, and neither are
//     the server's default headers (Server::set_default_headers), which are on the server's
//     response already; a header of the reply replaces a default header of the same name.
//   - A handler that throws leaves its claim unsettled: the claim is destroyed while the
//     exception unwinds, which halts the key with keel's reason "the handler threw" (the
//     outcome of a half-run handler is unknown, so it must not be stored as completed, and it
//     must not be released for a silent second run either). The client gets a 500
//     `application/problem+json` body `{"type":"about:blank","title":"Internal Server Error",
//     "status":500}`, which quotes nothing of the exception, and on_exception is told.
//     Retries with that key get the layer's halted answer (a 500 problem, with Expires) until
//     the entry expires, or run again if the tracker was created with
//     `on_halted = keel::HaltedEntries::kReleaseKey`. A handler that wants retries to run again
//     after a transient failure should answer that failure (a 503, say) instead of throwing:
//     what it answers is stored and replayed like any response.
//   - A tracked handler must answer with a body (Response::set_content or Response::body),
//     not a content provider: a stream cannot be stored for replays. One that streams has its
//     key halted and the client gets the 500 above (on_exception receives a std::logic_error).
//   - When Finish cannot store the response (the claim's lease ran out first: the key was
//     halted or released, and a retry may have run the handler again), the response is sent
//     anyway and on_not_stored is told: size the tracker's lease above the slowest handler.
//   - The server's error handler (Server::set_error_handler) runs on every answer with a
//     status >= 400, the layer's problems and replays included; one that rewrites bodies makes
//     replays differ from the first answer. Leave it unset on wrapped routes, or let it keep a
//     response that has a body.
//
// Thread safety: the returned handler is thread-safe (cpp-httplib runs handlers on its pool's
// threads, concurrently); the wrapped handler and the options' callbacks are called from those
// threads, concurrently, and must be thread-safe.
//
// Lifetime: `layer` (and so its runtime and tracker) must outlive the server's last call of
// the returned handler: stop the server and let listen() return before destroying them.
//
// Costs: a tracked request copies the handler's headers into the stored response and its body
// once (Finish keeps one copy and sends the other), and a replay copies the stored body into
// the httplib::Response, which owns its body; besides, the layer's own costs
// (keel/idempotency_http.h).
#ifndef KEEL_EXAMPLES_HTTPLIB_KEEL_HTTPLIB_H_
#define KEEL_EXAMPLES_HTTPLIB_KEEL_HTTPLIB_H_

#include <httplib.h>

#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "absl/status/status.h"
#include "keel/idempotency.h"
#include "keel/idempotency_http.h"

namespace keel_httplib {

struct IdempotentOptions {
  // The route that scopes keys and enters the fingerprint: the pattern the handler is
  // registered under ("/orders/(\\d+)"), so that it names one operation. Empty: the request's
  // path (then "/orders/1" and "/orders/2" are two scopes).
  std::string route;
  // The authenticated caller, from the request (a verified token's subject, say); keys of
  // different callers never meet. Null, or "" returned: anonymous (all share one scope). An
  // exception is a 500 (as for the handler, but no key is claimed yet).
  std::function<std::string(const httplib::Request&)> identity;
  // Told when the identity callback or a tracked handler threw and the client got a 500: for
  // logging. Its own exceptions are ignored.
  std::function<void(const httplib::Request&, std::exception_ptr)> on_exception;
  // Told when a tracked handler's response was sent but not stored (Finish's `stored` status):
  // for logging. Its own exceptions are ignored.
  std::function<void(const httplib::Request&, const absl::Status&)> on_not_stored;
};

namespace internal {

// The problem+json body of a 500 that says nothing beyond the status (RFC 9457 §4.2.1).
inline constexpr std::string_view kInternalErrorBody =
    R"({"type":"about:blank","title":"Internal Server Error","status":500})";

// Writes `reply` into `res`: its headers replace any of the same names already there.
inline void WriteReply(const keel::HttpReply& reply, httplib::Response& res) {
  res.status = reply.status;
  for (const auto& header : reply.headers) res.headers.erase(header.first);
  for (const auto& [name, value] : reply.headers) res.set_header(name, value);
  res.body = *reply.body;
}

inline void WriteInternalError(httplib::Response& res) {
  res.status = 500;
  res.headers.erase("Content-Type");
  res.set_header("Content-Type", "application/problem+json");
  res.body = std::string(kInternalErrorBody);
}

// Calls a user callback for its side effect, ignoring its exceptions.
template <typename Callback, typename... Args>
void Tell(const Callback& callback, Args&&... args) noexcept {
  if (!callback) return;
  try {
    callback(std::forward<Args>(args)...);
  } catch (...) {
  }
}

}  // namespace internal

// Wraps `handler` with keel's Idempotency-Key protocol on `layer`; see the header comment.
// Register the result with the server (Post, Patch, Put, Delete, Get). Call at setup, on any
// thread.
inline httplib::Server::Handler Idempotent(keel::IdempotencyHttp& layer,
                                           httplib::Server::Handler handler,
                                           IdempotentOptions options = {}) {
  return [layer = &layer, handler = std::move(handler), options = std::move(options)](
             const httplib::Request& req, httplib::Response& res) {
    std::string identity;
    if (options.identity) {
      try {
        identity = options.identity(req);
      } catch (...) {
        internal::Tell(options.on_exception, req, std::current_exception());
        internal::WriteInternalError(res);
        return;
      }
    }
    keel::HttpRequestView view;
    view.method = req.method;
    view.route = options.route.empty() ? std::string_view(req.path) : options.route;
    view.headers.reserve(req.headers.size());
    for (const auto& [name, value] : req.headers) view.headers.emplace_back(name, value);
    view.body = req.body;
    view.identity = identity;

    keel::IdempotencyHttp::Decision decision = layer->Decide(view);
    if (const auto* reply = std::get_if<keel::HttpReply>(&decision)) {
      internal::WriteReply(*reply, res);
      return;
    }
    if (!std::get<keel::IdempotencyHttp::Proceed>(decision).claim.has_value()) {
      handler(req, res);  // untracked: exactly as unwrapped
      return;
    }

    std::optional<keel::IdempotencyHttp::Finished> finished;
    try {
      // A local of this block: if the handler throws, the claim is destroyed while the
      // exception unwinds (before the catch below), which halts the key with the reason
      // "the handler threw".
      keel::IdempotencyHttp::Proceed proceed =
          std::move(std::get<keel::IdempotencyHttp::Proceed>(decision));
      httplib::Response handled;
      handler(req, handled);
      if (handled.content_provider_) {
        (void)proceed.claim->Halt(
            "the handler streamed its response, which cannot be stored for retries");
        throw std::logic_error(
            "keel_httplib::Idempotent: a tracked handler must answer with a body, not a content "
            "provider");
      }
      keel::IdempotentResponse response;
      response.status = handled.status == -1 ? 200 : handled.status;
      response.headers.assign(handled.headers.begin(), handled.headers.end());
      response.body = std::move(handled.body);
      finished = layer->Finish(proceed, std::move(response));
    } catch (...) {
      internal::Tell(options.on_exception, req, std::current_exception());
      internal::WriteInternalError(res);
      return;
    }
    if (!finished->stored.ok()) internal::Tell(options.on_not_stored, req, finished->stored);
    internal::WriteReply(finished->reply, res);
  };
}

}  // namespace keel_httplib

#endif  // KEEL_EXAMPLES_HTTPLIB_KEEL_HTTPLIB_H_
