// EtcdLeaseStore: etcd v3's JSON gateway over libcurl transfers on the caller's control
// thread (keel/internal/transfers.h). One request = one POST; endpoint failover per request.
#include "keel/etcd_lease_store.h"

#include <curl/curl.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "json.h"
#include "keel/internal/sync.h"
#include "keel/internal/transfers.h"

namespace keel {
namespace {

using internal::JsonValue;

std::string Str(std::string_view s) { return std::string(s); }

// A string as the gateway's `bytes` fields take it: base64, in a JSON string.
std::string B64(std::string_view bytes) {
  return internal::JsonQuote(absl::Base64Escape(absl::string_view(bytes.data(), bytes.size())));
}

long CeilMillis(absl::Duration d) {
  return static_cast<long>(
      std::max<int64_t>(1, absl::ToInt64Milliseconds(d + absl::Nanoseconds(999999))));
}

// The key just past every key starting with `prefix` (etcd's range_end for a prefix).
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    unsigned char& last = reinterpret_cast<unsigned char&>(prefix.back());
    if (last < 0xff) {
      ++last;
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');  // every key
}

absl::StatusOr<std::string> DecodeBytes(const JsonValue* v, const char* what) {
  if (v == nullptr) return std::string();  // protobuf's JSON leaves empty bytes out
  std::string out;
  if (!v->is_string() || !absl::Base64Unescape(v->string(), &out)) {
    return absl::DataLossError(absl::StrCat("etcd answer: ", what, " is not base64"));
  }
  return out;
}

int64_t IntOr(const JsonValue* v, int64_t fallback) {
  if (v == nullptr) return fallback;
  return v->AsInt64().value_or(fallback);
}

}  // namespace

struct EtcdLeaseStore::Shared {
  EtcdLeaseStoreOptions options;
  std::atomic<size_t> preferred{0};
  std::atomic<uint64_t> failovers{0};

  // One POST, tried on each endpoint in turn from the preferred one.
  struct Request {
    std::shared_ptr<Shared> shared;
    Runtime* runtime = nullptr;
    std::string path;
    std::string body;
    absl::AnyInvocable<void(absl::StatusOr<JsonValue>)> done;
    size_t first = 0;
    size_t tried = 0;
    std::string failures;  // "endpoint: what" for each endpoint that failed
    absl::StatusCode last_code = absl::StatusCode::kUnavailable;
    // The running attempt.
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    std::string response;
    bool too_large = false;
    char error_buffer[CURL_ERROR_SIZE] = {};

    ~Request() { Cleanup(); }
    void Cleanup() {
      if (easy != nullptr) curl_easy_cleanup(easy);
      if (headers != nullptr) curl_slist_free_all(headers);
      easy = nullptr;
      headers = nullptr;
    }
  };

  static size_t OnBody(char* data, size_t size, size_t count, void* user) {
    auto* r = static_cast<Request*>(user);
    const size_t n = size * count;
    if (r->response.size() + n > r->shared->options.max_response_bytes) {
      r->too_large = true;
      return 0;  // libcurl ends the transfer with CURLE_WRITE_ERROR
    }
    r->response.append(data, n);
    return n;
  }

  static void Send(std::shared_ptr<Shared> shared, Runtime& runtime, std::string path,
                   std::string body, absl::AnyInvocable<void(absl::StatusOr<JsonValue>)> done) {
    auto r = std::make_shared<Request>();
    r->first = shared->preferred.load(std::memory_order_relaxed) % shared->options.endpoints.size();
    r->shared = std::move(shared);
    r->runtime = &runtime;
    r->path = std::move(path);
    r->body = std::move(body);
    r->done = std::move(done);
    Attempt(std::move(r));
  }

  static void Finish(const std::shared_ptr<Request>& r, absl::StatusOr<JsonValue> result) {
    auto done = std::move(r->done);
    r->Cleanup();
    if (done) done(std::move(result));
  }

  static void Attempt(std::shared_ptr<Request> r) {
    const auto& endpoints = r->shared->options.endpoints;
    if (r->tried == endpoints.size()) {
      return Finish(
          r, absl::Status(r->last_code,
                          absl::StrCat("etcd ", r->path, ": no endpoint answered: ", r->failures)));
    }
    const size_t index = (r->first + r->tried) % endpoints.size();
    const std::string& endpoint = endpoints[index];
    r->Cleanup();
    r->response.clear();
    r->too_large = false;
    r->error_buffer[0] = '\0';
    r->easy = curl_easy_init();
    if (r->easy == nullptr) return Finish(r, absl::InternalError("libcurl: curl_easy_init failed"));
    r->headers = curl_slist_append(nullptr, "Content-Type: application/json");
    const std::string url = absl::StrCat(endpoint, r->path);
    const EtcdLeaseStoreOptions& o = r->shared->options;
    CURL* e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url.c_str());
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body.c_str());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, static_cast<long>(r->body.size()));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CeilMillis(o.connect_timeout));
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, CeilMillis(o.request_timeout));
    curl_easy_setopt(e, CURLOPT_USERAGENT, "keel");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &OnBody);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, static_cast<void*>(r.get()));
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->error_buffer);
    if (!o.ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, o.ca_file.c_str());
    absl::Status added = internal::AddTransfer(
        *r->runtime, e,
        [r, index](internal::TransferResult result) { Completed(r, index, result); });
    if (!added.ok()) return Finish(r, added);
  }

  // Moves on to the next endpoint after a failure of this one.
  static void Next(std::shared_ptr<Request> r, size_t index, absl::StatusCode code,
                   std::string_view what) {
    absl::StrAppend(&r->failures, r->failures.empty() ? "" : "; ",
                    r->shared->options.endpoints[index], ": ", Str(what));
    r->last_code = code;
    ++r->tried;
    if (r->tried < r->shared->options.endpoints.size()) {
      r->shared->failovers.fetch_add(1, std::memory_order_relaxed);
    }
    Attempt(std::move(r));
  }

  static void Completed(std::shared_ptr<Request> r, size_t index, internal::TransferResult result) {
    if (result.cancelled) {
      return Finish(r, absl::CancelledError(absl::StrCat("etcd ", r->path, ": cancelled")));
    }
    const auto code = static_cast<CURLcode>(result.curl_code);
    if (code != CURLE_OK) {
      if (r->too_large) {
        return Finish(
            r, absl::DataLossError(absl::StrCat("etcd ", r->path, ": answer over ",
                                                r->shared->options.max_response_bytes, " bytes")));
      }
      const std::string what =
          absl::StrCat(curl_easy_strerror(code),
                       r->error_buffer[0] != '\0' ? absl::StrCat(" (", r->error_buffer, ")") : "");
      return Next(std::move(r), index,
                  code == CURLE_OPERATION_TIMEDOUT ? absl::StatusCode::kDeadlineExceeded
                                                   : absl::StatusCode::kUnavailable,
                  what);
    }
    long http = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &http);
    absl::StatusOr<JsonValue> json = internal::ParseJson(r->response);
    // etcd's errors: {"error": "...", "message": "...", "code": <gRPC code>}.
    if (json.ok() && json->is_object() && json->Find("code") != nullptr &&
        json->Find("error") != nullptr) {
      const int64_t grpc = IntOr(json->Find("code"), 2);
      const JsonValue* message = json->Find("message");
      const std::string text =
          message != nullptr ? message->string() : json->Find("error")->string();
      const auto status_code = static_cast<absl::StatusCode>(
          grpc >= 1 && grpc <= 16 ? grpc : static_cast<int64_t>(absl::StatusCode::kUnknown));
      if (status_code == absl::StatusCode::kUnavailable ||
          status_code == absl::StatusCode::kDeadlineExceeded) {
        // "etcdserver: no leader", "request timed out": another member may do better.
        return Next(std::move(r), index, status_code, text);
      }
      return Finish(r, absl::Status(status_code, absl::StrCat("etcd ", r->path, ": ", text)));
    }
    if (http >= 500) {
      return Next(std::move(r), index, absl::StatusCode::kUnavailable, absl::StrCat("HTTP ", http));
    }
    if (http != 200) {
      return Finish(r, absl::UnknownError(absl::StrCat("etcd ", r->path, ": HTTP ", http, ": ",
                                                       r->response.substr(0, 200))));
    }
    if (!json.ok() || !json->is_object()) {
      return Finish(r, absl::DataLossError(absl::StrCat(
                           "etcd ", r->path, ": the answer is not a JSON object: ",
                           json.ok() ? std::string() : std::string(json.status().message()))));
    }
    r->shared->preferred.store(index, std::memory_order_relaxed);
    Finish(r, std::move(json));
  }

  std::string LeaderKey(const std::string& election) const {
    return absl::StrCat(options.key_prefix, election, "/leader");
  }
  std::string MembersPrefix(const std::string& election) const {
    return absl::StrCat(options.key_prefix, election, "/members/");
  }
  std::string ElectionPrefix(const std::string& election) const {
    return absl::StrCat(options.key_prefix, election, "/");
  }

  // Reads a range answer's kvs into the election view.
  absl::StatusOr<ElectionView> ViewFrom(const std::string& election, const JsonValue* range) const {
    ElectionView view;
    if (range == nullptr) return view;
    const JsonValue* kvs = range->Find("kvs");
    if (kvs == nullptr) return view;
    const std::string leader_key = LeaderKey(election);
    const std::string members = MembersPrefix(election);
    for (const JsonValue& kv : kvs->items()) {
      auto key = DecodeBytes(kv.Find("key"), "a key");
      if (!key.ok()) return key.status();
      auto value = DecodeBytes(kv.Find("value"), "a value");
      if (!value.ok()) return value.status();
      if (*key == leader_key) {
        view.leader =
            LeaderRecord{*value, IntOr(kv.Find("create_revision"), 0), IntOr(kv.Find("lease"), 0)};
      } else if (absl::StartsWith(*key, members)) {
        const uint64_t heartbeat = static_cast<uint64_t>(std::max<int64_t>(0, [&] {
          int64_t n = 0;
          return absl::SimpleAtoi(*value, &n) ? n : 0;
        }()));
        view.members.push_back(MemberRecord{key->substr(members.size()), heartbeat});
      }
    }
    std::sort(view.members.begin(), view.members.end(),
              [](const MemberRecord& a, const MemberRecord& b) { return a.node < b.node; });
    return view;
  }
};

absl::StatusOr<std::shared_ptr<EtcdLeaseStore>> EtcdLeaseStore::Create(
    EtcdLeaseStoreOptions options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("etcd lease store: endpoints must name at least one URL");
  }
  for (const std::string& e : options.endpoints) {
    if (!absl::StartsWith(e, "http://") && !absl::StartsWith(e, "https://")) {
      return absl::InvalidArgumentError(
          absl::StrCat("etcd lease store: endpoint '", e, "' must start with http:// or https://"));
    }
    if (e.size() <= 8 || e.find_first_of(" \r\n\t") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("etcd lease store: endpoint '", e, "' is not a URL"));
    }
  }
  for (std::string& e : options.endpoints) {
    while (!e.empty() && e.back() == '/') e.pop_back();
  }
  if (options.key_prefix.empty() || options.key_prefix.back() != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "etcd lease store: key_prefix must end with '/', got '", options.key_prefix, "'"));
  }
  if (options.connect_timeout <= absl::ZeroDuration() ||
      options.request_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("etcd lease store: connect_timeout and request_timeout must be > 0, got ",
                     absl::FormatDuration(options.connect_timeout), " and ",
                     absl::FormatDuration(options.request_timeout)));
  }
  if (options.max_response_bytes < 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "etcd lease store: max_response_bytes must be >= 1024, got ", options.max_response_bytes));
  }
  auto shared = std::make_shared<Shared>();
  shared->options = std::move(options);
  return std::shared_ptr<EtcdLeaseStore>(new EtcdLeaseStore(std::move(shared)));
}

EtcdLeaseStore::EtcdLeaseStore(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}

std::string EtcdLeaseStore::CurrentEndpoint() const {
  return shared_->options.endpoints[shared_->preferred.load(std::memory_order_relaxed) %
                                    shared_->options.endpoints.size()];
}

uint64_t EtcdLeaseStore::Failovers() const {
  return shared_->failovers.load(std::memory_order_relaxed);
}

void EtcdLeaseStore::Grant(Runtime& runtime, absl::Duration ttl, Done<LeaseId> done) {
  if (ttl <= absl::ZeroDuration()) {
    (void)runtime.Post([done = std::move(done), ttl]() mutable {
      done(absl::InvalidArgumentError(
          absl::StrCat("lease ttl must be > 0, got ", absl::FormatDuration(ttl))));
    });
    return;
  }
  // Whole seconds, rounded up: the store keeps the lease at least as long as the leader
  // believes it.
  const int64_t seconds = static_cast<int64_t>(std::ceil(absl::ToDoubleSeconds(ttl)));
  Shared::Send(shared_, runtime, "/v3/lease/grant", absl::StrCat("{\"TTL\":\"", seconds, "\"}"),
               [done = std::move(done), seconds](absl::StatusOr<JsonValue> r) mutable {
                 if (!r.ok()) return done(r.status());
                 const int64_t id = IntOr(r->Find("ID"), 0);
                 const int64_t granted = IntOr(r->Find("TTL"), 0);
                 if (id == 0) return done(absl::DataLossError("etcd lease grant: no lease ID"));
                 if (granted < seconds) {
                   return done(absl::FailedPreconditionError(absl::StrCat(
                       "etcd granted a ", granted, " s lease for a ", seconds, " s request")));
                 }
                 done(id);
               });
}

void EtcdLeaseStore::KeepAlive(Runtime& runtime, LeaseId lease, DoneStatus done) {
  Shared::Send(shared_, runtime, "/v3/lease/keepalive", absl::StrCat("{\"ID\":\"", lease, "\"}"),
               [done = std::move(done), lease](absl::StatusOr<JsonValue> r) mutable {
                 if (!r.ok()) return done(r.status());
                 // A lapsed lease answers with no TTL (0).
                 if (IntOr(r->Path({"result", "TTL"}), 0) <= 0) {
                   return done(absl::NotFoundError(
                       absl::StrCat("etcd lease ", lease, " not found (lapsed or revoked)")));
                 }
                 done(absl::OkStatus());
               });
}

void EtcdLeaseStore::Revoke(Runtime& runtime, LeaseId lease, DoneStatus done) {
  Shared::Send(shared_, runtime, "/v3/lease/revoke", absl::StrCat("{\"ID\":\"", lease, "\"}"),
               [done = std::move(done)](absl::StatusOr<JsonValue> r) mutable {
                 if (!r.ok() && !absl::IsNotFound(r.status())) return done(r.status());
                 done(absl::OkStatus());
               });
}

void EtcdLeaseStore::Heartbeat(Runtime& runtime, const std::string& election,
                               const std::string& node, LeaseId lease, uint64_t heartbeat,
                               Done<ElectionView> done) {
  const std::string prefix = shared_->ElectionPrefix(election);
  const std::string body = absl::StrCat(
      "{\"success\":[{\"request_put\":{\"key\":", B64(shared_->MembersPrefix(election) + node),
      ",\"value\":", B64(absl::StrCat(heartbeat)), ",\"lease\":\"", lease,
      "\"}},{\"request_range\":{\"key\":", B64(prefix), ",\"range_end\":", B64(PrefixEnd(prefix)),
      "}}]}");
  auto shared = shared_;
  Shared::Send(shared_, runtime, "/v3/kv/txn", body,
               [done = std::move(done), shared, election](absl::StatusOr<JsonValue> r) mutable {
                 if (!r.ok()) return done(r.status());
                 const JsonValue* responses = r->Find("responses");
                 if (responses == nullptr || responses->items().size() != 2) {
                   return done(absl::DataLossError("etcd heartbeat txn: expected 2 responses"));
                 }
                 done(shared->ViewFrom(election, responses->items()[1].Find("response_range")));
               });
}

void EtcdLeaseStore::Campaign(Runtime& runtime, const std::string& election,
                              const std::string& node, LeaseId lease, Done<LeaderRecord> done) {
  const std::string key = B64(shared_->LeaderKey(election));
  const std::string range = absl::StrCat("{\"request_range\":{\"key\":", key, "}}");
  const std::string body =
      absl::StrCat("{\"compare\":[{\"key\":", key,
                   ",\"target\":\"CREATE\",\"create_revision\":\"0\",\"result\":\"EQUAL\"}],"
                   "\"success\":[{\"request_put\":{\"key\":",
                   key, ",\"value\":", B64(node), ",\"lease\":\"", lease, "\"}},", range,
                   "],\"failure\":[", range, "]}");
  auto shared = shared_;
  Shared::Send(shared_, runtime, "/v3/kv/txn", body,
               [done = std::move(done), shared, election](absl::StatusOr<JsonValue> r) mutable {
                 if (!r.ok()) return done(r.status());
                 const JsonValue* responses = r->Find("responses");
                 if (responses == nullptr || responses->items().empty()) {
                   return done(absl::DataLossError("etcd campaign txn: no responses"));
                 }
                 auto view =
                     shared->ViewFrom(election, responses->items().back().Find("response_range"));
                 if (!view.ok()) return done(view.status());
                 if (!view->leader.has_value()) {
                   // Created and gone at once (the lease lapsed in between), or deleted by a
                   // resign.
                   return done(absl::UnavailableError("etcd campaign: the leader record vanished"));
                 }
                 done(*view->leader);
               });
}

void EtcdLeaseStore::Resign(Runtime& runtime, const std::string& election, int64_t term,
                            DoneStatus done) {
  const std::string key = B64(shared_->LeaderKey(election));
  const std::string body = absl::StrCat(
      "{\"compare\":[{\"key\":", key, ",\"target\":\"CREATE\",\"create_revision\":\"", term,
      "\",\"result\":\"EQUAL\"}],\"success\":[{\"request_delete_range\":{\"key\":", key, "}}]}");
  Shared::Send(shared_, runtime, "/v3/kv/txn", body,
               [done = std::move(done)](absl::StatusOr<JsonValue> r) mutable {
                 done(r.ok() ? absl::OkStatus() : r.status());
               });
}

}  // namespace keel
