// Test support, not part of keel: child processes for the tests and benchmarks that drive real
// programs (nginx, etcd, examples/leader_node) on 127.0.0.1.
//
// `Spawn` forks and execs a program with stdin from /dev/null and stdout and stderr appended to
// files (or stdout into a pipe the caller reads). The child dies with the thread that spawned it
// (PR_SET_PDEATHSIG), so a killed test or benchmark leaves no server behind; it inherits no
// descriptor but those three and starts with an empty signal mask. `WaitForExit`, `StopProcess`
// and `KillAndReap` end and reap it; `PickFreePorts` finds loopback ports for a server to bind.
//
//   absl::StatusOr<uint16_t> port = keel::testing::PickFreePort();
//   ...
//   absl::StatusOr<pid_t> pid =
//       keel::testing::Spawn({"/usr/sbin/nginx", "-c", config}, dir / "error.log");
//   ASSERT_TRUE(pid.ok()) << pid.status();
//   ...
//   keel::testing::StopProcess(*pid, SIGTERM, absl::Seconds(5));  // SIGKILL after 5 s
//
// Exit codes of a child that never ran the program: 126 when it could not set itself up (its
// parent died before it asked to die with it, or a dup2 failed), 127 when exec failed (not an
// executable, say). A wait status is what waitpid(2) stores; `DescribeWaitStatus` words it.
//
// Thread safety: thread-safe (no shared state), with two rules from the kernel: spawn from a
// thread that outlives the child (PR_SET_PDEATHSIG fires when that thread exits, so a test's
// main thread, not a short-lived helper), and let one thread only wait for a given child.
#ifndef KEEL_TESTS_SUPPORT_PROCESS_H_
#define KEEL_TESTS_SUPPORT_PROCESS_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace keel::testing {

// Where a spawned child's stdout and stderr go. Exactly one of `stdout_path` and `stdout_fd`.
// Every member has an initializer, so that designated initializers may leave any out (gcc's
// -Wmissing-field-initializers).
struct SpawnOptions {
  // The file the child's stdout is appended to (created with mode 0644 if missing).
  std::filesystem::path stdout_path = {};
  // The file its stderr is appended to; empty: wherever stdout goes, through the same
  // descriptor, so the two streams interleave in the order they were written.
  std::filesystem::path stderr_path = {};
  // A descriptor (above 2) for the child's stdout instead of `stdout_path`: the write end of a
  // pipe the caller reads, say. The caller keeps its copy, and should close it after Spawn so
  // that the read end sees EOF once the child is gone.
  int stdout_fd = -1;
};

// Starts the program at the path `args[0]` (no $PATH search) with arguments `args`, stdin from
// /dev/null, and stdout and stderr as `options` say (see the file comment for what else the
// child gets). Returns once the child is forked, not once it runs the program: an exec failure
// shows as exit code 127. InvalidArgument for empty `args` or options without exactly one
// stdout; Internal when a file cannot be opened or fork fails. Between fork and exec the child
// makes async-signal-safe calls only, so other threads may run meanwhile.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, const SpawnOptions& options);
// The same with stdout and stderr both appended to `log_path`: a server's log.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args,
                            const std::filesystem::path& log_path);

// Waits up to `timeout` for the child `pid` to exit and reaps it: its wait status, or nullopt if
// it still runs (a stopped child still runs). ZeroDuration() looks once; InfiniteDuration()
// blocks until it exits. -1 when `pid` is not (or no longer) a child of this process, so there
// is nothing to wait for. Polls every 10 ms.
std::optional<int> WaitForExit(pid_t pid, absl::Duration timeout);
// As WaitForExit, for any change waitpid(2) reports with `wait_options` besides an exit:
// WUNTRACED adds a stop (SIGSTOP's effect), WCONTINUED a continue (SIGCONT's). Test the status
// with WIFSTOPPED and WIFCONTINUED: only an exit reaps the child. On -1, errno says why.
std::optional<int> WaitForChange(pid_t pid, int wait_options, absl::Duration timeout);

// Sends `signal` to the child `pid`, and SIGCONT so that a stopped child gets it too; waits up
// to `timeout` for it to exit, then SIGKILLs it. Reaps it either way; returns its wait status.
int StopProcess(pid_t pid, int signal, absl::Duration timeout);
// SIGKILLs the child `pid` (stopped or not) and reaps it, blocking until it is gone; its wait
// status, -1 when it is not a child of this process.
int KillAndReap(pid_t pid);

// "exit code 1", "killed by signal 9", "stopped by signal 19", "continued", for messages.
std::string DescribeWaitStatus(int status);

// `count` distinct TCP ports on 127.0.0.1 that nobody listens on right now: binds port 0 that
// many times (every socket open at once, so the ports differ), reads the ports, closes the
// sockets. Another process may take a port before the server binds it, so a caller retries
// with fresh ports when the server says "address already in use". Internal on socket errors.
absl::StatusOr<std::vector<uint16_t>> PickFreePorts(int count);
// One such port.
absl::StatusOr<uint16_t> PickFreePort();
// True when something accepts TCP connections on 127.0.0.1:`port` now.
bool PortAcceptsConnections(uint16_t port);

// Internal, "<what>: <strerror(err)>": a failed system call.
absl::Status ErrnoError(std::string_view what, int err);

// The last `max_bytes` of the file at `path` ("..." then the tail when it is longer), "" when it
// cannot be read: a child's log, for failure messages.
std::string FileTail(const std::filesystem::path& path, size_t max_bytes);

}  // namespace keel::testing

#endif  // KEEL_TESTS_SUPPORT_PROCESS_H_
