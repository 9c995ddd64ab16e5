// Test support, not part of keel: reads the JSON event lines that examples/leader_node prints
// and the shared file its leader-only job appends to, and checks a whole run of several
// leader_node processes for the properties a leader election promises.
//
// A leader_node line is one flat JSON object whose values are strings, integers, or (for
// "members") an array of strings; `ParseLeaderEvent` reads exactly that shape and nothing
// more. `CheckLeaderRun` builds every leadership of every process, [elected.at_ns, end), where
// end is min(demoted.at_ns, demoted.deadline_ns) when the leadership was demoted (a paused
// node could not act past its believed deadline), else the time the test killed the process,
// else the process's stop event; then it checks that
//   1. no two leaderships overlap in time;
//   2. the terms of successive leaderships grow strictly (a node never leads twice on one
//      term, not even after the store came back with its record);
//   3. the shared file's terms never decrease from one line to the next, and every line was
//      decided inside a leadership of its writer with that term;
//   4. every "fenced" event (a write the fence refused) was decided inside a leadership of
//      its writer with that term: only a pause between a correct decision and the write may
//      bring a stale write to the fence, which must then refuse it.
//
//   std::vector<keel::testing::LeaderProcessLog> logs = ...;  // one per process started
//   std::vector<std::string> problems = keel::testing::CheckLeaderRun(logs, shared_lines);
//   EXPECT_THAT(problems, ::testing::IsEmpty());
#ifndef KEEL_TESTS_SUPPORT_LEADER_LOG_H_
#define KEEL_TESTS_SUPPORT_LEADER_LOG_H_

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace keel::testing {

// One event line of leader_node; fields an event does not carry stay empty or 0.
struct LeaderEvent {
  std::string event;  // start, elected, demoted, leader, cluster, fenced, stop
  std::string node;
  int64_t term = 0;
  std::string cause;                 // demoted
  std::string leader;                // leader
  std::vector<std::string> members;  // cluster
  int64_t at_ns = 0;                 // elected, demoted
  int64_t deadline_ns = 0;           // elected, demoted
  int64_t mono_ns = 0;               // start, leader, cluster, fenced, stop
  int64_t pid = 0;                   // start
  int64_t highest = 0;               // fenced
  int64_t decided_ns = 0;            // fenced
  std::string line;                  // as printed
};

// Parses one line as leader_node prints it; nullopt when it is not a JSON object of that shape
// or lacks "event" or "node".
inline std::optional<LeaderEvent> ParseLeaderEvent(std::string_view line) {
  size_t i = 0;
  auto skip = [&] {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
  };
  auto eat = [&](char c) {
    skip();
    if (i >= line.size() || line[i] != c) return false;
    ++i;
    return true;
  };
  // Ids and causes are [A-Za-z0-9._-]; an escape is accepted only for '"' and '\\'.
  auto string = [&]() -> std::optional<std::string> {
    if (!eat('"')) return std::nullopt;
    std::string out;
    while (i < line.size() && line[i] != '"') {
      if (line[i] == '\\') {
        if (++i >= line.size() || (line[i] != '"' && line[i] != '\\')) return std::nullopt;
      } else if (static_cast<unsigned char>(line[i]) < 0x20) {
        return std::nullopt;
      }
      out.push_back(line[i++]);
    }
    if (i >= line.size()) return std::nullopt;
    ++i;
    return out;
  };
  auto integer = [&]() -> std::optional<int64_t> {
    skip();
    const size_t start = i;
    if (i < line.size() && line[i] == '-') ++i;
    while (i < line.size() && line[i] >= '0' && line[i] <= '9') ++i;
    int64_t value = 0;
    const auto [end, error] = std::from_chars(line.data() + start, line.data() + i, value);
    if (error != std::errc() || end != line.data() + i) return std::nullopt;
    return value;
  };

  LeaderEvent e;
  e.line = std::string(line);
  if (!eat('{')) return std::nullopt;
  skip();
  if (i < line.size() && line[i] == '}') return std::nullopt;  // no "event"
  for (;;) {
    std::optional<std::string> key = string();
    if (!key || !eat(':')) return std::nullopt;
    skip();
    if (i >= line.size()) return std::nullopt;
    if (line[i] == '"') {
      std::optional<std::string> value = string();
      if (!value) return std::nullopt;
      if (*key == "event") e.event = *value;
      if (*key == "node") e.node = *value;
      if (*key == "cause") e.cause = *value;
      if (*key == "leader") e.leader = *value;
    } else if (line[i] == '[') {
      ++i;
      skip();
      if (i < line.size() && line[i] == ']') {
        ++i;
      } else {
        for (;;) {
          std::optional<std::string> member = string();
          if (!member) return std::nullopt;
          e.members.push_back(*member);
          if (eat(',')) continue;
          if (!eat(']')) return std::nullopt;
          break;
        }
      }
      if (*key != "members") return std::nullopt;
    } else {
      std::optional<int64_t> value = integer();
      if (!value) return std::nullopt;
      if (*key == "term") e.term = *value;
      if (*key == "at_ns") e.at_ns = *value;
      if (*key == "deadline_ns") e.deadline_ns = *value;
      if (*key == "mono_ns") e.mono_ns = *value;
      if (*key == "pid") e.pid = *value;
      if (*key == "highest") e.highest = *value;
      if (*key == "decided_ns") e.decided_ns = *value;
    }
    if (eat(',')) continue;
    if (!eat('}')) return std::nullopt;
    break;
  }
  skip();
  if (i != line.size() || e.event.empty() || e.node.empty()) return std::nullopt;
  return e;
}

// The complete lines of a file (each ended by '\n'); a last line still being written is left
// out. Empty when the file does not exist.
inline std::vector<std::string> ReadCompleteLines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  const size_t last_newline = text.rfind('\n');
  if (last_newline == std::string::npos) return {};
  text.resize(last_newline);
  return absl::StrSplit(text, '\n');
}

// The events of one leader_node output file; lines that do not parse go to `bad_lines`.
inline std::vector<LeaderEvent> ReadLeaderLog(const std::string& path,
                                              std::vector<std::string>* bad_lines = nullptr) {
  std::vector<LeaderEvent> events;
  for (const std::string& line : ReadCompleteLines(path)) {
    std::optional<LeaderEvent> e = ParseLeaderEvent(line);
    if (e.has_value()) {
      events.push_back(*std::move(e));
    } else if (bad_lines != nullptr) {
      bad_lines->push_back(line);
    }
  }
  return events;
}

// The last `max_lines` lines of a file, for failure messages.
inline std::string TailOfFile(const std::string& path, size_t max_lines = 20) {
  std::vector<std::string> lines = ReadCompleteLines(path);
  const size_t from = lines.size() > max_lines ? lines.size() - max_lines : 0;
  std::string out;
  for (size_t k = from; k < lines.size(); ++k) absl::StrAppend(&out, "  ", lines[k], "\n");
  return out;
}

// One leader_node process of a run: its events, and when the test SIGKILLed it (after the
// kill was reaped: the process cannot have acted later).
struct LeaderProcessLog {
  std::string label;  // names the process in problems, e.g. its output file
  std::vector<LeaderEvent> events;
  std::optional<int64_t> killed_ns;
};

// One leadership of one process: [begin_ns, end_ns).
struct Leadership {
  std::string process;
  std::string node;
  int64_t term = 0;
  int64_t begin_ns = 0;
  int64_t end_ns = 0;
  std::string ended_by;  // "demoted <cause>", "killed", "stop"
};

// Every leadership in `logs`, sorted by begin; what cannot be built goes to `problems`.
inline std::vector<Leadership> Leaderships(const std::vector<LeaderProcessLog>& logs,
                                           std::vector<std::string>& problems) {
  std::vector<Leadership> all;
  for (const LeaderProcessLog& log : logs) {
    std::optional<Leadership> open;
    for (const LeaderEvent& e : log.events) {
      if (e.event == "elected") {
        if (open.has_value()) {
          problems.push_back(absl::StrCat(log.label, ": elected for term ", e.term,
                                          " while leading term ", open->term));
        }
        open = Leadership{log.label, e.node, e.term, e.at_ns, 0, ""};
      } else if (e.event == "demoted") {
        if (!open.has_value() || open->term != e.term) {
          problems.push_back(absl::StrCat(log.label, ": demoted from term ", e.term,
                                          " it was not elected for: ", e.line));
          continue;
        }
        open->end_ns = std::min(e.at_ns, e.deadline_ns);
        open->ended_by = absl::StrCat("demoted ", e.cause);
        all.push_back(*open);
        open.reset();
      } else if (e.event == "stop" && open.has_value()) {
        open->end_ns = e.mono_ns;
        open->ended_by = "stop";
        all.push_back(*open);
        open.reset();
      }
    }
    if (open.has_value()) {
      if (log.killed_ns.has_value()) {
        open->end_ns = *log.killed_ns;
        open->ended_by = "killed";
        all.push_back(*open);
      } else {
        problems.push_back(absl::StrCat(log.label, ": the leadership of term ", open->term,
                                        " never ended (no demoted, stop or kill)"));
      }
    }
  }
  std::sort(all.begin(), all.end(),
            [](const Leadership& a, const Leadership& b) { return a.begin_ns < b.begin_ns; });
  return all;
}

inline std::string Describe(const Leadership& l) {
  return absl::StrCat(l.node, " (", l.process, ") term ", l.term, " [", l.begin_ns, ", ", l.end_ns,
                      ") ended by ", l.ended_by);
}

// Checks properties 1 to 4 above over every process of a run and the shared file's lines
// ("<term> <node> <decided ns>"); returns the problems found, empty when there are none.
inline std::vector<std::string> CheckLeaderRun(const std::vector<LeaderProcessLog>& logs,
                                               const std::vector<std::string>& shared_lines) {
  std::vector<std::string> problems;
  const std::vector<Leadership> leaderships = Leaderships(logs, problems);

  // 1 and 2, over leaderships sorted by their beginning.
  for (size_t k = 0; k < leaderships.size(); ++k) {
    const Leadership& l = leaderships[k];
    if (l.end_ns < l.begin_ns) {
      problems.push_back(absl::StrCat("a leadership ends before it begins: ", Describe(l)));
    }
    if (k == 0) continue;
    for (size_t j = 0; j < k; ++j) {
      if (leaderships[j].end_ns > l.begin_ns) {
        problems.push_back(absl::StrCat("two leaderships overlap by ",
                                        leaderships[j].end_ns - l.begin_ns,
                                        " ns: ", Describe(leaderships[j]), " and ", Describe(l)));
      }
    }
    const Leadership& before = leaderships[k - 1];
    if (l.term <= before.term) {
      problems.push_back(absl::StrCat("terms must grow from one leadership to the next: ",
                                      Describe(before), " then ", Describe(l)));
    }
  }

  // 3.
  int64_t highest = 0;
  for (size_t n = 0; n < shared_lines.size(); ++n) {
    const std::string& line = shared_lines[n];
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    int64_t term = 0;
    int64_t at_ns = 0;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &term) ||
        !absl::SimpleAtoi(parts[2], &at_ns)) {
      problems.push_back(
          absl::StrCat("shared file line ", n + 1, " is not '<term> <node> <ns>': '", line, "'"));
      continue;
    }
    if (term < highest) {
      problems.push_back(absl::StrCat("shared file line ", n + 1, " has term ", term,
                                      " after term ", highest, ": '", line, "'"));
    }
    highest = std::max(highest, term);
    const bool inside = std::any_of(leaderships.begin(), leaderships.end(), [&](const auto& l) {
      return l.node == parts[1] && l.term == term && l.begin_ns <= at_ns && at_ns < l.end_ns;
    });
    if (!inside) {
      std::string mine;
      for (const Leadership& l : leaderships) {
        if (l.node == parts[1] && l.term == term) absl::StrAppend(&mine, " ", Describe(l), ";");
      }
      problems.push_back(absl::StrCat("shared file line ", n + 1, " '", line,
                                      "' was written outside its writer's leadership:",
                                      mine.empty() ? " none with that term" : mine));
    }
  }

  // 4.
  for (const LeaderProcessLog& log : logs) {
    for (const LeaderEvent& e : log.events) {
      if (e.event != "fenced") continue;
      const bool inside = std::any_of(leaderships.begin(), leaderships.end(), [&](const auto& l) {
        return l.node == e.node && l.term == e.term && l.begin_ns <= e.decided_ns &&
               e.decided_ns < l.end_ns;
      });
      if (!inside) {
        problems.push_back(absl::StrCat(log.label, ": a write decided outside the node's ",
                                        "leadership reached the fence: ", e.line));
      }
    }
  }
  return problems;
}

}  // namespace keel::testing

#endif  // KEEL_TESTS_SUPPORT_LEADER_LOG_H_
