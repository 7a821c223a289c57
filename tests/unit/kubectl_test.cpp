// The fake API server against the real kubectl (v1.32): discovery, create
// from YAML, get (its Table and -o json), watch, delete, errors. These tests
// need /usr/bin/kubectl and fail (never skip) without it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "apiserver/apiserver.h"
#include "apiserver/store.h"
#include "cli/cli.h"
#include "support/scoped.h"

namespace kpx::apiserver {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kKubectl = "/usr/bin/kubectl";
const std::string kFixtures = std::string(KPX_SOURCE_DIR) + "/tests/fixtures/apiserver";

struct KubectlRun {
  int status = -1;
  std::string out, err;
};

class KubectlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access(kKubectl, X_OK), 0)
        << kKubectl << " is missing or not executable: the kubectl compatibility tests need the real kubectl "
        << "(v1.32) and do not skip without it";
    char tmpl[] = "/tmp/kpx-kubectl-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    server_.reset();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  void start(Options o = {}) {
    o.listen = "127.0.0.1:0";
    auto s = ApiServer::start(o);
    ASSERT_TRUE(s.ok()) << s.error().message;
    server_ = std::move(*s);
    url_ = server_->url();
  }

  // kubectl with no kubeconfig of the user's, its own discovery cache, and
  // the fake server.
  KubectlRun kubectl(const std::string& args, const std::string& url = "") {
    std::string cmd = "KUBECONFIG=/dev/null " + std::string(kKubectl) + " --server " +
                      (url.empty() ? url_ : url) + " --cache-dir " + dir_ + "/cache " + args + " 2>" + dir_ +
                      "/stderr";
    KubectlRun r;
    r.out = testing::sh_out(cmd, &r.status);
    std::ifstream f(dir_ + "/stderr");
    std::stringstream ss;
    ss << f.rdbuf();
    r.err = ss.str();
    return r;
  }

  std::unique_ptr<ApiServer> server_;
  std::string url_;
  std::string dir_;
};

TEST_F(KubectlTest, CreateGetDelete) {
  start();
  auto r = kubectl("create --validate=false -f " + kFixtures + "/service.yaml");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "service/web created\n");
  r = kubectl("create --validate=false -f " + kFixtures + "/endpointslice.yaml");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "endpointslice.discovery.k8s.io/web-abc12 created\n");

  r = kubectl("get services -A -o json");
  ASSERT_EQ(r.status, 0) << r.err;
  Json list = Json::parse(r.out, nullptr, false);
  ASSERT_TRUE(list.is_object()) << r.out;
  ASSERT_EQ(list["items"].size(), 1u) << r.out;
  Json svc = list["items"][0];
  EXPECT_EQ(svc["kind"], "Service");
  EXPECT_EQ(svc["metadata"]["name"], "web");
  EXPECT_EQ(svc["metadata"]["namespace"], "default");
  EXPECT_EQ(svc["spec"]["clusterIP"], "10.96.0.10");
  EXPECT_EQ(svc["spec"]["ports"][0]["port"], 80);
  EXPECT_EQ(svc["spec"]["ports"][0]["targetPort"], 8080);
  EXPECT_FALSE(svc["metadata"]["uid"].get<std::string>().empty());

  // The Table kubectl asks for, printed as its columns.
  r = kubectl("get services -A");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("NAMESPACE"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("CLUSTER-IP"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("10.96.0.10"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("80/TCP"), std::string::npos) << r.out;

  r = kubectl("get endpointslices -A");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("default     web-abc12   IPv4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("10.244.1.5,10.244.2.7"), std::string::npos) << r.out;

  r = kubectl("get endpointslices -n default -l kubernetes.io/service-name=web -o json");
  ASSERT_EQ(r.status, 0) << r.err;
  Json slices = Json::parse(r.out, nullptr, false);
  ASSERT_EQ(slices["items"].size(), 1u) << r.out;
  EXPECT_EQ(slices["items"][0]["endpoints"][1]["conditions"]["terminating"], true);

  r = kubectl("delete -f " + kFixtures + "/endpointslice.yaml");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "endpointslice.discovery.k8s.io \"web-abc12\" deleted\n");
  r = kubectl("delete service web -n default");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "service \"web\" deleted\n");

  r = kubectl("get services -A -o json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(Json::parse(r.out, nullptr, false)["items"].empty()) << r.out;
  const ResourceType* services = find_resource("", "v1", "services");
  EXPECT_FALSE(server_->store().get(*services, ObjectKey{"default", "web"}).ok());
}

TEST_F(KubectlTest, ErrorsComeBackAsKubectlPrintsThem) {
  start();
  auto r = kubectl("get service nope -n default");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("Error from server (NotFound): services \"nope\" not found"), std::string::npos)
      << r.err;
  ASSERT_EQ(kubectl("create --validate=false -f " + kFixtures + "/service.yaml").status, 0);
  r = kubectl("create --validate=false -f " + kFixtures + "/service.yaml");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("Error from server (AlreadyExists)"), std::string::npos) << r.err;
}

TEST_F(KubectlTest, LabelAndWatch) {
  Options o;
  o.max_watch_timeout = 2s;  // kubectl get -w ends when the server ends the watch
  start(o);
  ASSERT_EQ(kubectl("create --validate=false -f " + kFixtures + "/service.yaml").status, 0);
  KubectlRun watched;
  std::thread watcher([&] { watched = kubectl("get services -A --watch-only --output-watch-events"); });
  // Change things once kubectl's watch is open.
  for (int i = 0; i < 100 && server_->store().open_watches() == 0; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(server_->store().open_watches(), 1);
  auto r = kubectl("label service web -n default tier=frontend");  // a JSON merge patch
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "service/web labeled\n");
  EXPECT_EQ(kubectl("delete service web -n default").status, 0);
  watcher.join();
  EXPECT_EQ(watched.status, 0) << watched.err;
  std::istringstream lines(watched.out);
  std::string header, first, second;
  std::getline(lines, header);
  std::getline(lines, first);
  std::getline(lines, second);
  EXPECT_EQ(header.rfind("EVENT", 0), 0u) << watched.out;
  EXPECT_EQ(first.rfind("MODIFIED   default     web", 0), 0u) << watched.out;
  EXPECT_EQ(second.rfind("DELETED    default     web", 0), 0u) << watched.out;
}

TEST_F(KubectlTest, DeletePodWaitsUntilTheKubeletRemovesIt) {
  start();
  std::string manifest = dir_ + "/pods.yaml";
  std::ofstream(manifest) << R"(apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: default, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: echo, image: kpx}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: echo, image: kpx}]}
)";
  auto r = kubectl("create --validate=false -f " + manifest);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "pod/web-0 created\npod/web-1 created\n");
  const ResourceType* pods = find_resource("", "v1", "pods");
  auto terminating = [&](const std::string& name) {
    auto p = server_->store().get(*pods, ObjectKey{"default", name});
    return p.ok() && (**p)["metadata"].contains("deletionTimestamp");
  };

  // --wait=false: answered at once, the Pod left terminating.
  r = kubectl("delete pod web-1 -n default --wait=false");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "pod \"web-1\" deleted\n");
  EXPECT_TRUE(terminating("web-1"));

  // kubectl waits for the Pod to be gone...
  std::atomic<bool> done = false;
  KubectlRun waited;
  std::thread deleter([&] {
    waited = kubectl("delete pod web-0 -n default --timeout=30s");
    done = true;
  });
  for (int i = 0; i < 250 && !terminating("web-0"); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(terminating("web-0"));
  r = kubectl("get pods -n default");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("Terminating"), std::string::npos) << r.out;
  std::this_thread::sleep_for(500ms);
  EXPECT_FALSE(done) << "kubectl delete returned while the Pod was still terminating: " << waited.out;
  // ...until it is removed with grace period 0 (as the kubelet does once the
  // containers are gone; here kubectl --force sends the same DeleteOptions).
  r = kubectl("delete pod web-0 -n default --grace-period=0 --force");
  EXPECT_EQ(r.status, 0) << r.err;
  deleter.join();
  EXPECT_EQ(waited.status, 0) << waited.err;
  EXPECT_EQ(waited.out, "pod \"web-0\" deleted\n");
  EXPECT_FALSE(server_->store().get(*pods, ObjectKey{"default", "web-0"}).ok());
  EXPECT_TRUE(terminating("web-1"));
}

// ---- the `kpx apiserver` command ---------------------------------------------------

// `kpx apiserver ...` in the background with its stdout on a pipe; SIGTERM on
// destruction.
class KpxProcess {
 public:
  explicit KpxProcess(const std::vector<std::string>& args) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], STDOUT_FILENO);
      std::vector<char*> argv{const_cast<char*>(KPX_BINARY)};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(KPX_BINARY, argv.data());
      _exit(127);
    }
    close(fds[1]);
    out_ = fds[0];
  }
  ~KpxProcess() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) close(out_);
  }

  // The first line of stdout ("" on timeout).
  std::string first_line(std::chrono::milliseconds timeout) {
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (line.find('\n') == std::string::npos) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{out_, POLLIN, 0};
      if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) return "";
      char c[256];
      ssize_t n = read(out_, c, sizeof c);
      if (n <= 0) return "";
      line.append(c, static_cast<size_t>(n));
    }
    return line.substr(0, line.find('\n'));
  }

  // SIGTERM, then the exit status (-1 if it did not exit within 5 s).
  int terminate() {
    kill(pid_, SIGTERM);
    for (int i = 0; i < 250; ++i) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        reaped_ = true;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      }
      std::this_thread::sleep_for(20ms);
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool reaped_ = false;
};

TEST_F(KubectlTest, KpxApiserverCommandServesKubectl) {
  KpxProcess p({"apiserver", "--listen", "127.0.0.1:0", "--bookmark-interval-ms", "1000"});
  std::string line = p.first_line(5s);
  ASSERT_EQ(line.rfind("listening on 127.0.0.1:", 0), 0u) << "got: '" << line << "'";
  std::string url = "http://" + line.substr(std::string("listening on ").size());
  auto r = kubectl("get namespaces", url);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("kube-system"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Active"), std::string::npos) << r.out;
  EXPECT_EQ(p.terminate(), 0);
}

TEST_F(KubectlTest, KpxApiserverAllocatesClusterIpsAndNodePorts) {
  KpxProcess p({"apiserver", "--listen", "127.0.0.1:0", "--service-cluster-ip-range", "10.97.0.0/24",
                "--service-node-port-range", "31000-31009"});
  std::string line = p.first_line(5s);
  ASSERT_EQ(line.rfind("listening on 127.0.0.1:", 0), 0u) << "got: '" << line << "'";
  std::string url = "http://" + line.substr(std::string("listening on ").size());
  std::ofstream(dir_ + "/svc.yaml") << "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n"
                                       "spec: {type: NodePort, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n";
  auto r = kubectl("create --validate=false -f " + dir_ + "/svc.yaml", url);
  ASSERT_EQ(r.status, 0) << r.err;
  r = kubectl("get service web -o jsonpath={.spec.clusterIP}", url);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("10.97.0.", 0), 0u) << r.out;
  r = kubectl("get service web -o jsonpath={.spec.ports[0].nodePort}", url);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("3100", 0), 0u) << r.out;
  EXPECT_EQ(r.out.size(), 5u) << r.out;
  EXPECT_EQ(p.terminate(), 0);
}

TEST(KpxApiserverCommand, RefusesABadServiceRange) {
  for (auto [flag, value, message] : std::vector<std::array<const char*, 3>>{
           {"--service-cluster-ip-range", "10.96.0.0/33", "invalid service cluster IP range '10.96.0.0/33'"},
           {"--service-node-port-range", "32767-30000", "invalid service node port range '32767-30000'"}}) {
    std::vector<const char*> args = {"kpx", "apiserver", flag, value};
    std::ostringstream out, err;
    int rc = cli::run(static_cast<int>(args.size()), args.data(), out, err);
    EXPECT_EQ(rc, 2) << flag;
    EXPECT_NE(err.str().find(message), std::string::npos) << err.str();
  }
}

TEST(KpxApiserverCommand, RefusesNonLoopbackAddresses) {
  std::vector<const char*> args = {"kpx", "apiserver", "--listen", "0.0.0.0:6443"};
  std::ostringstream out, err;
  int rc = cli::run(static_cast<int>(args.size()), args.data(), out, err);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.str().find("not a loopback address"), std::string::npos) << err.str();
  EXPECT_EQ(out.str(), "");
}

}  // namespace
}  // namespace kpx::apiserver
