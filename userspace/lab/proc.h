// Processes the lab starts and the commands it runs: argv only (no shell),
// optionally inside a network namespace and a cgroup, detached from the
// caller's session when they must outlive it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "status/status.h"

namespace kpx::lab {

struct SpawnOptions {
  std::vector<std::string> argv;
  std::string netns;         // a /var/run/netns name to enter ("": stay)
  std::string cgroup;        // a cgroup v2 directory to join ("": stay)
  std::vector<std::string> env_add;  // "K=V", on top of the inherited environment
  std::string log_file;      // stdout and stderr appended here ("": /dev/null)
  bool new_session = false;  // setsid(): survives the caller's terminal
  int stdout_pipe_fd = -1;   // if >= 0, stdout goes to this fd instead (stderr to the log)
};

// fork + exec; the child never returns. Returns the child's pid.
Result<pid_t> spawn(const SpawnOptions& o);

struct RunResult {
  int status = -1;  // exit code, or 128+signal
  std::string out;  // stdout and stderr together
};
// Runs argv to completion with `input` on its stdin, inside network
// namespace `netns` if one is named.
Result<RunResult> run(const std::vector<std::string>& argv, const std::string& input = "",
                      const std::string& netns = "");
// run() that fails with the command's output when it exits non-zero.
Status run_ok(const std::vector<std::string>& argv, const std::string& input = "");

// Whether pid exists and has not exited: a zombie (waiting for a parent,
// often init, to reap it) counts as gone.
bool running(pid_t pid);
// SIGTERM, wait up to grace_ms, then SIGKILL (through a pidfd, so a reused
// pid is never hit); reaps it if it is our child.
void terminate(pid_t pid, int grace_ms);

}  // namespace kpx::lab
