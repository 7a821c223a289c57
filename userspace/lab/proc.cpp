#include "lab/proc.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace kpx::lab {

namespace {

Error sys(const std::string& what) { return system_error(what + ": " + std::strerror(errno)); }

// In the child between fork and exec: only async-signal-safe calls.
[[noreturn]] void child_fail(int report_fd, const char* what) {
  int e = errno;
  char buf[160];
  int n = snprintf(buf, sizeof buf, "%s: %s", what, strerror(e));
  if (n > 0) (void)!write(report_fd, buf, static_cast<size_t>(n));
  _exit(127);
}

}  // namespace

Result<pid_t> spawn(const SpawnOptions& o) {
  if (o.argv.empty()) return invalid_argument("spawn: empty argv");
  // Everything that allocates happens before fork.
  std::vector<char*> argv;
  for (const auto& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) env_store.emplace_back(*e);
  for (const auto& kv : o.env_add) env_store.push_back(kv);
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  int ns_fd = -1;
  if (!o.netns.empty()) {
    ns_fd = open(("/var/run/netns/" + o.netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) return sys("open network namespace " + o.netns);
  }
  int cg_fd = -1;
  if (!o.cgroup.empty()) {
    cg_fd = open((o.cgroup + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
    if (cg_fd < 0) {
      if (ns_fd >= 0) close(ns_fd);
      return sys("open " + o.cgroup + "/cgroup.procs");
    }
  }
  int log_fd = open(o.log_file.empty() ? "/dev/null" : o.log_file.c_str(),
                    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int report[2];
  if (log_fd < 0 || pipe2(report, O_CLOEXEC) != 0) {
    Error e = sys("open " + (o.log_file.empty() ? std::string("/dev/null") : o.log_file));
    if (ns_fd >= 0) close(ns_fd);
    if (cg_fd >= 0) close(cg_fd);
    if (log_fd >= 0) close(log_fd);
    return e;
  }
  pid_t pid = fork();
  if (pid < 0) {
    Error e = sys("fork");
    for (int fd : {ns_fd, cg_fd, log_fd, report[0], report[1]})
      if (fd >= 0) close(fd);
    return e;
  }
  if (pid == 0) {
    close(report[0]);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (o.new_session) setsid();
    if (cg_fd >= 0 && write(cg_fd, "0", 1) != 1) child_fail(report[1], "join cgroup");
    if (ns_fd >= 0 && setns(ns_fd, CLONE_NEWNET) != 0) child_fail(report[1], "enter network namespace");
    int in = open("/dev/null", O_RDONLY);
    if (in < 0 || dup2(in, 0) < 0) child_fail(report[1], "stdin");
    if (dup2(o.stdout_pipe_fd >= 0 ? o.stdout_pipe_fd : log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
      child_fail(report[1], "stdout");
    // Nothing of the parent's but stdio (and the report pipe, close-on-exec)
    // reaches the program: the daemon's API connections, sockets made in
    // other namespaces and stray files stay with the daemon.
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    execvpe(argv[0], argv.data(), envp.data());
    child_fail(report[1], "exec");
  }
  for (int fd : {ns_fd, cg_fd, log_fd, report[1]})
    if (fd >= 0) close(fd);
  // The report pipe closes on a successful exec (O_CLOEXEC) with nothing in it.
  char buf[200];
  ssize_t n = read(report[0], buf, sizeof buf);
  close(report[0]);
  if (n > 0) {
    waitpid(pid, nullptr, 0);
    return system_error("start " + o.argv[0] + ": " + std::string(buf, static_cast<size_t>(n)));
  }
  return pid;
}

Result<RunResult> run(const std::vector<std::string>& argv, const std::string& input, const std::string& netns) {
  if (argv.empty()) return invalid_argument("run: empty argv");
  int ns_fd = -1;
  if (!netns.empty()) {
    ns_fd = open(("/var/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) return sys("open network namespace " + netns);
  }
  int in[2], out[2];
  auto close_all = [&](std::initializer_list<int> fds) {
    for (int fd : fds)
      if (fd >= 0) close(fd);
  };
  if (pipe2(in, O_CLOEXEC) != 0) {
    close_all({ns_fd});
    return sys("pipe");
  }
  if (pipe2(out, O_CLOEXEC) != 0) {
    close_all({ns_fd, in[0], in[1]});
    return sys("pipe");
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    Error e = sys("fork");
    close_all({ns_fd, in[0], in[1], out[0], out[1]});
    return e;
  }
  if (pid == 0) {
    if (ns_fd >= 0 && setns(ns_fd, CLONE_NEWNET) != 0) _exit(126);
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    execvp(args[0], args.data());
    _exit(127);
  }
  if (ns_fd >= 0) close(ns_fd);
  close(in[0]);
  close(out[1]);
  // Feed stdin and drain stdout together: either side can fill its pipe.
  RunResult r;
  size_t written = 0;
  int wfd = in[1];
  if (input.empty()) {
    close(wfd);
    wfd = -1;
  } else {
    fcntl(wfd, F_SETFL, O_NONBLOCK);
  }
  for (;;) {
    pollfd p[2] = {{out[0], POLLIN, 0}, {wfd, POLLOUT, 0}};
    if (poll(p, wfd >= 0 ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (wfd >= 0 && (p[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = write(wfd, input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      if (n < 0 || written == input.size()) {
        close(wfd);
        wfd = -1;
      }
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[4096];
      ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      r.out.append(buf, static_cast<size_t>(n));
    }
  }
  if (wfd >= 0) close(wfd);
  close(out[0]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

Status run_ok(const std::vector<std::string>& argv, const std::string& input) {
  auto r = run(argv, input);
  if (!r) return r.error();
  if (r->status == 0) return {};
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  std::string out = r->out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return system_error("`" + cmd + "` failed (exit " + std::to_string(r->status) + "): " + out);
}

bool running(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return false;
  size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

void terminate(pid_t pid, int grace_ms) {
  if (pid <= 0) return;
  // Through a pidfd: once it is open, the signals reach this process even if
  // it exits and its pid is reused meanwhile; it polls readable on exit.
  int pfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pfd < 0) {
    waitpid(pid, nullptr, WNOHANG);
    return;
  }
  pollfd p{pfd, POLLIN, 0};
  if (syscall(SYS_pidfd_send_signal, pfd, SIGTERM, nullptr, 0) == 0 && poll(&p, 1, grace_ms) <= 0) {
    syscall(SYS_pidfd_send_signal, pfd, SIGKILL, nullptr, 0);
    poll(&p, 1, 5000);
  }
  close(pfd);
  waitpid(pid, nullptr, WNOHANG);  // reaps it if it is our child
}

}  // namespace kpx::lab
