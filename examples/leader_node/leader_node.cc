// leader_node: joins an election and runs a leader-only job, fenced by the term.
//
//   leader_node --store=etcd --endpoints=http://127.0.0.1:2379 --name=report --node=n1
//               --ttl=2s --heartbeat=500ms --file=/tmp/report.log
//   leader_node --store=memory --node=a,b,c --run-for=10s      # three nodes in one process
//
// The leader-only job appends "<term> <node> <decided ns>" lines to a shared file every
// --work interval, where "decided" is the instant the node decided to write, right before it
// checked `HoldsLease()`. The file plays the part of a downstream store that fences: under an
// exclusive flock it reads the highest term written so far and refuses a write with a lower
// one (printed as a "fenced" event with its decided_ns). A correct leader decides only while
// it holds its lease; only a pause between its decision and its write can bring a stale
// write to the fence, and the fence refuses it.
//
// stdout: one JSON object per line and event, flushed at once: start, elected, demoted,
// leader (the leader this node sees changed), cluster (live members changed), fenced, stop.
// Times are CLOCK_MONOTONIC nanoseconds ("*_ns"), comparable between processes on one host.
// SIGTERM or SIGINT stops the node gracefully (it resigns); --run-for bounds the run.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "keel/etcd_lease_store.h"
#include "keel/leader.h"
#include "keel/memory_lease_store.h"
#include "keel/runtime.h"

namespace {

struct Flags {
  std::string store = "memory";
  std::vector<std::string> endpoints = {"http://127.0.0.1:2379"};
  std::string name = "leader-node";
  std::vector<std::string> nodes = {"node-1"};
  absl::Duration ttl = absl::Seconds(2);
  absl::Duration heartbeat = absl::Milliseconds(500);
  absl::Duration margin = absl::ZeroDuration();  // zero: (ttl - heartbeat) / 2
  absl::Duration work = absl::Milliseconds(100);
  absl::Duration run_for = absl::ZeroDuration();          // zero: until SIGTERM / SIGINT
  absl::Duration request_timeout = absl::ZeroDuration();  // zero: heartbeat / 2
  std::string file;
};

int Usage(const std::string& problem) {
  std::fprintf(stderr,
               "leader_node: %s\n"
               "usage: leader_node [--store=memory|etcd] [--endpoints=URL[,URL...]] "
               "[--name=ELECTION] [--node=ID[,ID...]] [--ttl=2s] [--heartbeat=500ms] "
               "[--margin=D] [--work=100ms] [--file=PATH] [--run-for=D] "
               "[--request-timeout=D]\n",
               problem.c_str());
  return 2;
}

int64_t MonoNs(keel::Instant t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
int64_t NowNs() { return MonoNs(std::chrono::steady_clock::now()); }

std::mutex out_mu;
void Emit(const std::string& json) {
  std::lock_guard<std::mutex> lock(out_mu);
  std::fputs(json.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

std::string Quote(const std::string& s) {
  return absl::StrCat("\"", s, "\"");
}  // ids: [A-Za-z0-9._-]

// The fenced append: returns the highest term in the file before this write, or -1 when the
// write went through. Errors go to stderr and count as not written.
int64_t FencedAppend(const std::string& path, int64_t term, const std::string& node,
                     int64_t decided_ns) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::fprintf(stderr, "leader_node: open %s: %s\n", path.c_str(), std::strerror(errno));
    return -2;
  }
  int64_t result = -1;
  if (::flock(fd, LOCK_EX) == 0) {
    // The last line holds the highest term (every accepted write is >= the one before it).
    const off_t size = ::lseek(fd, 0, SEEK_END);
    const off_t from = size > 4096 ? size - 4096 : 0;
    std::string tail(static_cast<size_t>(size - from), '\0');
    const ssize_t got = ::pread(fd, tail.data(), tail.size(), from);
    int64_t highest = 0;
    if (got > 0) {
      tail.resize(static_cast<size_t>(got));
      while (!tail.empty() && tail.back() == '\n') tail.pop_back();
      const size_t nl = tail.rfind('\n');
      const std::string last = nl == std::string::npos ? tail : tail.substr(nl + 1);
      (void)absl::SimpleAtoi(last.substr(0, last.find(' ')), &highest);
    }
    if (term < highest) {
      result = highest;
    } else {
      const std::string line = absl::StrCat(term, " ", node, " ", decided_ns, "\n");
      if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
        std::fprintf(stderr, "leader_node: write %s: %s\n", path.c_str(), std::strerror(errno));
        result = -2;
      }
    }
    ::flock(fd, LOCK_UN);
  }
  ::close(fd);
  return result;
}

struct Node {
  std::string id;
  std::unique_ptr<keel::Runtime> runtime;
  std::unique_ptr<keel::Leader> leader;
  // The leader as the tick sees it: published (release) once Start returned; the first tick
  // may run before that (acquire: pairs with the store in main).
  std::atomic<keel::Leader*> published{nullptr};
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> fenced{0};
};

keel::LeaderCallbacks Callbacks(Node* node, const Flags& flags) {
  keel::LeaderCallbacks cb;
  const std::string id = node->id;
  cb.on_elected = [id](const keel::Election& e) {
    Emit(absl::StrCat("{\"event\":\"elected\",\"node\":", Quote(id), ",\"term\":", e.term,
                      ",\"at_ns\":", MonoNs(e.at), ",\"deadline_ns\":", MonoNs(e.lease_deadline),
                      "}"));
  };
  cb.on_demoted = [id](const keel::Demotion& d) {
    Emit(absl::StrCat("{\"event\":\"demoted\",\"node\":", Quote(id), ",\"term\":", d.term,
                      ",\"cause\":", Quote(std::string(keel::DemotionCauseName(d.cause))),
                      ",\"at_ns\":", MonoNs(d.at), ",\"deadline_ns\":", MonoNs(d.lease_deadline),
                      "}"));
  };
  cb.on_leader_changed = [id](const std::string& leader, int64_t term) {
    Emit(absl::StrCat("{\"event\":\"leader\",\"node\":", Quote(id), ",\"leader\":", Quote(leader),
                      ",\"term\":", term, ",\"mono_ns\":", NowNs(), "}"));
  };
  cb.on_cluster_changed = [id](const std::vector<keel::LeaderMember>& members) {
    std::vector<std::string> ids;
    for (const auto& m : members) ids.push_back(Quote(m.node));
    Emit(absl::StrCat("{\"event\":\"cluster\",\"node\":", Quote(id), ",\"members\":[",
                      absl::StrJoin(ids, ","), "],\"mono_ns\":", NowNs(), "}"));
  };
  const std::string file = flags.file;
  const absl::Duration work = flags.work;
  cb.on_leader_tick = [node, file, work](const keel::LeaderTick& tick) {
    if (file.empty()) return absl::InfiniteDuration();
    // Checked right before acting: false once the believed lease has run out, even if the
    // control thread has not demoted yet (just after a pause).
    keel::Leader* leader = node->published.load(std::memory_order_acquire);
    if (leader == nullptr) return absl::Milliseconds(1);
    const int64_t decided = NowNs();
    if (!leader->HoldsLease()) return work;
    const int64_t refused = FencedAppend(file, tick.term, node->id, decided);
    if (refused == -1) {
      node->writes.fetch_add(1, std::memory_order_relaxed);
    } else if (refused >= 0) {
      node->fenced.fetch_add(1, std::memory_order_relaxed);
      Emit(absl::StrCat("{\"event\":\"fenced\",\"node\":", Quote(node->id), ",\"term\":", tick.term,
                        ",\"highest\":", refused, ",\"mono_ns\":", NowNs(), "}"));
    }
    return work;
  };
  return cb;
}

bool ParseFlag(const std::string& arg, Flags& f, std::string& problem) {
  const size_t eq = arg.find('=');
  if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
    problem = absl::StrCat("expected --flag=value, got '", arg, "'");
    return false;
  }
  const std::string key = arg.substr(2, eq - 2);
  const std::string value = arg.substr(eq + 1);
  auto duration = [&](absl::Duration& out) {
    if (!absl::ParseDuration(value, &out) || out < absl::ZeroDuration()) {
      problem = absl::StrCat("--", key, " wants a duration like 2s or 500ms, got '", value, "'");
      return false;
    }
    return true;
  };
  if (key == "store") {
    if (value != "memory" && value != "etcd") {
      problem = absl::StrCat("--store must be memory or etcd, got '", value, "'");
      return false;
    }
    f.store = value;
  } else if (key == "endpoints") {
    f.endpoints = absl::StrSplit(value, ',', absl::SkipEmpty());
  } else if (key == "name") {
    f.name = value;
  } else if (key == "node") {
    f.nodes = absl::StrSplit(value, ',', absl::SkipEmpty());
  } else if (key == "file") {
    f.file = value;
  } else if (key == "ttl") {
    return duration(f.ttl);
  } else if (key == "heartbeat") {
    return duration(f.heartbeat);
  } else if (key == "margin") {
    return duration(f.margin);
  } else if (key == "work") {
    return duration(f.work);
  } else if (key == "run-for") {
    return duration(f.run_for);
  } else if (key == "request-timeout") {
    return duration(f.request_timeout);
  } else {
    problem = absl::StrCat("unknown flag --", key);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string problem;
    if (!ParseFlag(argv[i], flags, problem)) return Usage(problem);
  }
  if (flags.nodes.empty()) return Usage("--node names no node");
  if (flags.store == "etcd" && flags.nodes.size() != 1) {
    return Usage("with --store=etcd, run one node per process");
  }
  if (flags.margin == absl::ZeroDuration()) flags.margin = (flags.ttl - flags.heartbeat) / 2;
  if (flags.request_timeout == absl::ZeroDuration()) flags.request_timeout = flags.heartbeat / 2;
  if (flags.work <= absl::ZeroDuration()) flags.work = absl::Milliseconds(100);

  // Signals are taken by sigtimedwait below; every thread started from here inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::shared_ptr<keel::LeaseStore> store;
  if (flags.store == "etcd") {
    auto etcd = keel::EtcdLeaseStore::Create({.endpoints = flags.endpoints,
                                              .connect_timeout = flags.request_timeout,
                                              .request_timeout = flags.request_timeout});
    if (!etcd.ok()) return Usage(std::string(etcd.status().message()));
    store = *etcd;
  } else {
    store = std::make_shared<keel::MemoryLeaseStore>();
  }

  std::vector<std::unique_ptr<Node>> nodes;
  for (const std::string& id : flags.nodes) {
    auto node = std::make_unique<Node>();
    node->id = id;
    auto runtime = keel::Runtime::Create({.name = id, .offload_threads = 1});
    if (!runtime.ok()) {
      std::fprintf(stderr, "leader_node: %s\n", runtime.status().ToString().c_str());
      return 1;
    }
    node->runtime = std::move(*runtime);
    Emit(absl::StrCat("{\"event\":\"start\",\"node\":", Quote(id), ",\"pid\":", ::getpid(),
                      ",\"store\":", Quote(flags.store), ",\"election\":", Quote(flags.name),
                      ",\"mono_ns\":", NowNs(), "}"));
    keel::LeaderOptions options{.election = flags.name,
                                .node_id = id,
                                .ttl = flags.ttl,
                                .heartbeat_interval = flags.heartbeat,
                                .safety_margin = flags.margin};
    auto leader = keel::Leader::Start(*node->runtime, store, options, Callbacks(node.get(), flags));
    if (!leader.ok()) {
      std::fprintf(stderr, "leader_node: %s\n", leader.status().ToString().c_str());
      return 2;
    }
    node->leader = std::move(*leader);
    node->published.store(node->leader.get(), std::memory_order_release);
    nodes.push_back(std::move(node));
  }

  timespec wait{};
  const bool bounded = flags.run_for > absl::ZeroDuration();
  if (bounded) wait = absl::ToTimespec(flags.run_for);
  int got = -1;
  do {
    got = bounded ? sigtimedwait(&signals, nullptr, &wait) : sigwaitinfo(&signals, nullptr);
  } while (got < 0 && errno == EINTR);

  for (auto& node : nodes) {
    (void)node->leader->Stop(absl::Seconds(5));
    Emit(absl::StrCat("{\"event\":\"stop\",\"node\":", Quote(node->id),
                      ",\"writes\":", node->writes.load(), ",\"fenced\":", node->fenced.load(),
                      ",\"mono_ns\":", NowNs(), "}"));
  }
  for (auto& node : nodes) {
    node->leader.reset();
    node->runtime.reset();
  }
  return 0;
}
