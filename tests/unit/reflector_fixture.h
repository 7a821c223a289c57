// The fake API server (`kpx apiserver` as a child process), a recorder of
// what reflector handlers saw, and the reflector test fixture: shared by
// the reflector test files.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "k8s/client.h"
#include "k8s/reflector.h"
#include "log/log.h"

namespace kpx::k8s::reflector_testing {

using nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---- the fake API server ----------------------------------------------------

// `kpx apiserver --listen 127.0.0.1:0` as a child, killed by pid at the end.
class FakeApiServer {
 public:
  explicit FakeApiServer(const std::vector<std::string>& extra_args) {
    int fds[2];
    if (pipe(fds) != 0) return;
    std::vector<std::string> argv = {KPX_BINARY, "apiserver", "--listen", "127.0.0.1:0"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(fds[1]);
    out_ = fds[0];
    // "listening on 127.0.0.1:PORT\n", within a few seconds.
    std::string line;
    auto deadline = Clock::now() + 5s;
    while (line.find('\n') == std::string::npos && Clock::now() < deadline) {
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[256];
      ssize_t n = read(out_, buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    const std::string prefix = "listening on ";
    auto at = line.find(prefix);
    if (at != std::string::npos)
      address_ = line.substr(at + prefix.size(), line.find('\n', at) - at - prefix.size());
  }

  ~FakeApiServer() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      bool reaped = false;
      for (int i = 0; i < 100 && !reaped; ++i) {
        if (waitpid(pid_, nullptr, WNOHANG) == pid_)
          reaped = true;
        else
          std::this_thread::sleep_for(20ms);
      }
      if (!reaped) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
      }
    }
    if (out_ >= 0) close(out_);
  }
  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;

  bool ok() const { return !address_.empty(); }
  std::string url() const { return "http://" + address_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string address_;
};

// What the handlers saw, for the assertions.
class Recorder {
 public:
  struct Event {
    EventType type;
    std::string name;
    json object;
  };

  ReflectorHandlers handlers() {
    return ReflectorHandlers{[this](std::vector<json> items) {
                               std::set<std::string> names;
                               for (const auto& i : items)
                                 names.insert(i["metadata"]["name"].get<std::string>());
                               std::lock_guard lk(mu_);
                               replaces_.push_back(std::move(names));
                               cv_.notify_all();
                             },
                             [this](EventType t, const json& obj) {
                               std::lock_guard lk(mu_);
                               events_.push_back({t, obj["metadata"]["name"].get<std::string>(), obj});
                               cv_.notify_all();
                             }};
  }

  bool wait(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return pred(); });
  }
  // Under the lock (for wait predicates).
  size_t count_locked(EventType t, const std::string& name) const {
    return std::count_if(events_.begin(), events_.end(),
                         [&](const Event& e) { return e.type == t && e.name == name; });
  }
  bool has_locked(EventType t, const std::string& name) const { return count_locked(t, name) > 0; }
  size_t replaces_locked() const { return replaces_.size(); }

  bool wait_event(EventType t, const std::string& name) {
    return wait([&] { return has_locked(t, name); });
  }
  size_t count(EventType t, const std::string& name) {
    std::lock_guard lk(mu_);
    return count_locked(t, name);
  }
  std::vector<std::set<std::string>> replaces() {
    std::lock_guard lk(mu_);
    return replaces_;
  }
  std::vector<Event> events() {
    std::lock_guard lk(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::set<std::string>> replaces_;
  std::vector<Event> events_;
};

// Polls cond every few ms for up to timeout.
inline bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds timeout = 10s) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return cond();
}

// Captures the log while alive.
class LogCapture {
 public:
  LogCapture() {
    log::set_sink([this](log::Level l, std::string_view m) {
      std::lock_guard lk(mu_);
      lines_.emplace_back(l, std::string(m));
    });
  }
  ~LogCapture() { log::set_sink(nullptr); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  bool contains(log::Level level, const std::string& text) {
    std::lock_guard lk(mu_);
    return std::any_of(lines_.begin(), lines_.end(), [&](const auto& l) {
      return l.first == level && l.second.find(text) != std::string::npos;
    });
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<log::Level, std::string>> lines_;
};

// kWatchCache false: the server runs as kube-apiserver --watch-cache=false
// (resourceVersion=0 lists are paged).
template <bool kWatchCache>
class ReflectorTestOf : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok()) << "kpx apiserver did not start (" << KPX_BINARY << ")";
    ClientConfig config;
    config.server = server_.url();
    auto c = Client::create(config);
    ASSERT_TRUE(c.ok()) << c.error().message;
    client_ = std::move(*c);
    options_.min_watch_timeout = options_.max_watch_timeout = 60s;
    options_.initial_backoff = 100ms;
    options_.max_backoff = 1s;
    options_.auth_error_delay = 200ms;
  }

  // POST/PUT/PATCH/DELETE that must succeed; returns the object.
  json must(const std::string& method, const std::string& path, const json& body = json()) {
    auto r = client_->send(method, path, body);
    EXPECT_TRUE(r.ok()) << method << " " << path << ": " << r.error().to_string();
    return r.ok() ? *r : json();
  }
  json create_service(const std::string& name, const json& labels = json::object(),
                      const std::string& ns = "default") {
    json svc = {{"metadata", {{"name", name}, {"labels", labels}}},
                {"spec", {{"ports", {{{"port", 80}, {"protocol", "TCP"}}}}}}};
    return must("POST", "/api/v1/namespaces/" + ns + "/services", svc);
  }
  json fault(const std::string& action) { return must("POST", "/kpx/faults/" + action); }
  int open_watches() { return must("GET", "/kpx/faults").value("openWatches", 0); }

  void start(ResourceSpec spec = services_resource()) {
    reflector_ = std::make_unique<Reflector>(*client_, std::move(spec), recorder_.handlers(), options_);
    thread_ = std::jthread([r = reflector_.get()](std::stop_token stop) { r->run(stop); });
  }
  void start_synced(ResourceSpec spec = services_resource()) {
    start(std::move(spec));
    ASSERT_TRUE(eventually([&] { return reflector_->synced(); })) << "no initial list";
  }
  void stop() {
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
  }
  void TearDown() override { stop(); }

  FakeApiServer server_{
      kWatchCache ? std::vector<std::string>{"--bookmark-interval-ms", "200"}
                  : std::vector<std::string>{"--bookmark-interval-ms", "200", "--watch-cache=false"}};
  std::unique_ptr<Client> client_;
  ReflectorOptions options_;
  Recorder recorder_;
  std::unique_ptr<Reflector> reflector_;
  std::jthread thread_;  // declared last: stopped first
};

using ReflectorTest = ReflectorTestOf<true>;
using ReflectorNoWatchCacheTest = ReflectorTestOf<false>;

}  // namespace kpx::k8s::reflector_testing
