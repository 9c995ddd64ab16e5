#include "keel/fetchers/http.h"

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "http_request.h"

namespace keel::fetchers {
namespace {

using internal::CheckCaFile;
using internal::CheckTimeout;
using internal::HasLineBreakOrNul;
using internal::Sv;

constexpr int kMaxRedirectsLimit = 50;

// RFC 9110 §5.6.2: token = 1*tchar.
bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c))) continue;
    if (std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) return false;
  }
  return true;
}

absl::Status ValidateOptions(const HttpOptions& options) {
  std::vector<std::string> problems;
  internal::CheckHttpUrl("url", options.url, problems);
  CheckTimeout("connect_timeout", options.connect_timeout, problems);
  CheckTimeout("timeout", options.timeout, problems);
  if (options.max_redirects < 0 || options.max_redirects > kMaxRedirectsLimit) {
    problems.push_back(absl::StrCat("max_redirects must be in [0, ", kMaxRedirectsLimit, "], got ",
                                    options.max_redirects));
  }
  for (const auto& [name, value] : options.headers) {
    if (!IsToken(name)) {
      problems.push_back(absl::StrCat(
          "header names must be non-empty tokens (letters, digits, !#$%&'*+-.^_`|~), got \"",
          absl::CHexEscape(name), "\""));
      continue;
    }
    if (HasLineBreakOrNul(value)) {
      problems.push_back(absl::StrCat("the value of header ", name,
                                      " must not contain CR, LF or NUL, got \"",
                                      absl::CHexEscape(value), "\""));
    }
    if (absl::EqualsIgnoreCase(name, "If-None-Match") ||
        absl::EqualsIgnoreCase(name, "If-Modified-Since")) {
      problems.push_back(
          absl::StrCat("header ", name, " is set by keel from the term's validators; remove it"));
    } else if (absl::EqualsIgnoreCase(name, "Accept-Encoding")) {
      problems.push_back("header Accept-Encoding is set by keel; use request_gzip instead");
    }
  }
  if (!options.ca_file.empty()) CheckCaFile(options.ca_file, problems);
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("http fetcher: ", absl::StrJoin(problems, "; ")));
}

class HttpFetcher final : public Fetcher {
 public:
  explicit HttpFetcher(HttpOptions options)
      : options_(std::move(options)),
        options_status_(ValidateOptions(options_)),
        requester_(absl::StrCat("http fetcher for ", options_.url)) {
    spec_.url = options_.url;
    spec_.label = absl::StrCat("GET ", options_.url);
    spec_.headers = options_.headers;
    spec_.connect_timeout = options_.connect_timeout;
    spec_.timeout = options_.timeout;
    spec_.max_redirects = options_.max_redirects;
    spec_.verify_tls = options_.verify_tls;
    spec_.ca_file = options_.ca_file;
    spec_.request_gzip = options_.request_gzip;
  }

  std::string Describe() const override { return absl::StrCat("http ", options_.url); }

  absl::Status Validate() const override { return ValidateOptions(options_); }

  void Fetch(Runtime& runtime, const FetchRequest& request, FetchCallback done) override {
    if (!options_status_.ok()) {
      internal::AnswerWithError(done, options_status_);
      return;
    }
    internal::HttpAnswerCallback answer =
        [done = std::move(done)](internal::HttpAnswer answer) mutable {
          done(std::move(answer.result));
        };
    absl::Status started = requester_.Start(runtime, spec_, request, answer);
    if (started.ok()) return;
    internal::HttpAnswer refused;  // `answer` still holds `done`
    refused.result.status = std::move(started);
    answer(std::move(refused));
  }

  void Cancel(Runtime& runtime) override { requester_.Cancel(runtime); }

 private:
  const HttpOptions options_;
  const absl::Status options_status_;
  internal::HttpRequestSpec spec_;
  internal::HttpRequester requester_;
};

}  // namespace

std::unique_ptr<Fetcher> Http(HttpOptions options) {
  return std::make_unique<HttpFetcher>(std::move(options));
}

}  // namespace keel::fetchers
