// The healthCheckNodePort server over real sockets on 127.0.0.1: the bytes
// kube-proxy (v1.32, pkg/proxy/healthcheck/service_health.go) answers with,
// listeners that follow the synced Services, counts that change in place,
// and a port in use that is reported once and taken when it frees.
#include "agent/service_health.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "log/log.h"
#include "support/raw_http.h"

namespace kpx::agent {
namespace {

using namespace std::chrono_literals;
using testing::RawConnection;
using testing::raw_exchange;

const std::string kRequest = "GET /healthz HTTP/1.1\r\nHost: 10.0.0.11\r\nConnection: close\r\n\r\n";

// A port nothing listens on just now.
uint16_t free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// The Date header's value varies: "Date: *".
std::string without_date(std::string raw) {
  size_t at = raw.find("\r\nDate: ");
  if (at == std::string::npos) return raw;
  size_t end = raw.find("\r\n", at + 2);
  return raw.replace(at + 8, end - at - 8, "*");
}

// kube-proxy's template, dedented (tabs) and trimmed of its newlines.
std::string body(const std::string& ns, const std::string& name, int n, bool healthy) {
  return "{\n\t\"service\": {\n\t\t\"namespace\": \"" + ns + "\",\n\t\t\"name\": \"" + name +
         "\"\n\t},\n\t\"localEndpoints\": " + std::to_string(n) +
         ",\n\t\"serviceProxyHealthy\": " + (healthy ? "true" : "false") + "\n}";
}

std::string response(const std::string& status, const std::string& ns, const std::string& name, int n, bool healthy) {
  const std::string b = body(ns, name, n, healthy);
  return "HTTP/1.1 " + status +
         "\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
         "X-Load-Balancing-Endpoint-Weight: " +
         std::to_string(n) + "\r\nDate: *\r\nContent-Length: " + std::to_string(b.size()) +
         "\r\nConnection: close\r\n\r\n" + b;
}

class ServiceHealthTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServiceHealthServer> start(std::chrono::milliseconds retry = 5s) {
    return std::make_unique<ServiceHealthServer>(std::vector<uint32_t>{htonl(INADDR_LOOPBACK)},
                                                 [this] { return healthy_.load(); }, retry);
  }
  std::string get(uint16_t port, const std::string& request = kRequest) {
    return without_date(raw_exchange(port, request));
  }
  std::atomic<bool> healthy_{true};
};

TEST(ServiceHealthResponse, IsKubeProxysTemplateByteForByte) {
  auto r = service_health_response("default", "web", 2, true);
  EXPECT_EQ(r.code, 200);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_FALSE(r.cache_control);
  EXPECT_EQ(r.headers, (std::vector<std::pair<std::string, std::string>>{
                           {"X-Content-Type-Options", "nosniff"}, {"X-Load-Balancing-Endpoint-Weight", "2"}}));
  EXPECT_EQ(r.body,
            "{\n"
            "\t\"service\": {\n"
            "\t\t\"namespace\": \"default\",\n"
            "\t\t\"name\": \"web\"\n"
            "\t},\n"
            "\t\"localEndpoints\": 2,\n"
            "\t\"serviceProxyHealthy\": true\n"
            "}");
  EXPECT_EQ(service_health_response("default", "web", 0, true).code, 503);
  // Endpoints, but the proxy is behind: 503, the count still told.
  auto late = service_health_response("default", "web", 3, false);
  EXPECT_EQ(late.code, 503);
  EXPECT_EQ(late.body, body("default", "web", 3, false));
  // Go's %q.
  EXPECT_NE(service_health_response("a\"b", "c\\d\n", 1, true).body.find("\"a\\\"b\""), std::string::npos);
  EXPECT_NE(service_health_response("a\"b", "c\\d\n", 1, true).body.find("\"c\\\\d\\n\""), std::string::npos);
}

TEST_F(ServiceHealthTest, AnswersAnyRequestAsKubeProxyDoes) {
  auto hs = start();
  const uint16_t port = free_port();
  hs->sync({{"default/web", {port, 2}}});
  EXPECT_EQ(get(port), response("200 OK", "default", "web", 2, true));
  // Any method, any path.
  EXPECT_EQ(get(port, "POST /anything?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            response("200 OK", "default", "web", 2, true));
  hs->sync({{"default/web", {port, 0}}});
  EXPECT_EQ(get(port), response("503 Service Unavailable", "default", "web", 0, true));
  hs->sync({{"default/web", {port, 1}}});
  healthy_ = false;
  EXPECT_EQ(get(port), response("503 Service Unavailable", "default", "web", 1, false))
      << "an unhealthy proxy fails every health check";
  healthy_ = true;
  EXPECT_EQ(get(port), response("200 OK", "default", "web", 1, true));
}

TEST_F(ServiceHealthTest, CountsChangeInPlaceOnAnOpenConnection) {
  auto hs = start();
  const uint16_t port = free_port();
  hs->sync({{"default/web", {port, 1}}});
  RawConnection c(port);
  ASSERT_TRUE(c.connected());
  c.send_request("GET", "/");
  auto r = c.read_response();
  EXPECT_EQ(r.code, 200);
  EXPECT_EQ(r.headers["x-load-balancing-endpoint-weight"], "1");
  EXPECT_EQ(r.json()["localEndpoints"], 1);
  hs->sync({{"default/web", {port, 4}}});
  // The same listener (the kept-alive connection) tells the new count.
  c.send_request("GET", "/");
  r = c.read_response();
  EXPECT_EQ(r.code, 200);
  EXPECT_EQ(r.headers["x-load-balancing-endpoint-weight"], "4");
  EXPECT_EQ(r.json()["localEndpoints"], 4);
  hs->sync({{"default/web", {port, 0}}});
  c.send_request("GET", "/");
  r = c.read_response();
  EXPECT_EQ(r.code, 503);
  EXPECT_EQ(r.json()["localEndpoints"], 0);
  EXPECT_EQ(r.json()["serviceProxyHealthy"], true);
}

TEST_F(ServiceHealthTest, ListenersOpenAndCloseWithTheSyncedServices) {
  auto hs = start();
  const uint16_t p1 = free_port(), p2 = free_port(), p3 = free_port();
  ASSERT_TRUE(p1 != p2 && p2 != p3 && p1 != p3);
  auto listening = [](uint16_t p) { return RawConnection(p).connected(); };
  hs->sync({});
  EXPECT_TRUE(hs->served().empty());
  hs->sync({{"a/one", {p1, 1}}, {"b/two", {p2, 0}}});
  EXPECT_EQ(get(p1), response("200 OK", "a", "one", 1, true));
  EXPECT_EQ(get(p2), response("503 Service Unavailable", "b", "two", 0, true));
  EXPECT_EQ(hs->served().size(), 2u);
  // one goes, two moves to another port (its old one closes), three comes
  // on the port one left.
  hs->sync({{"b/two", {p3, 2}}, {"c/three", {p1, 5}}});
  EXPECT_FALSE(listening(p2));
  EXPECT_EQ(get(p3), response("200 OK", "b", "two", 2, true));
  EXPECT_EQ(get(p1), response("200 OK", "c", "three", 5, true));
  auto served = hs->served();
  ASSERT_EQ(served.size(), 2u);
  EXPECT_EQ(served["b/two"].port, p3);
  EXPECT_TRUE(served["c/three"].listening);
  hs->sync({});
  EXPECT_FALSE(listening(p1));
  EXPECT_FALSE(listening(p3));
  EXPECT_TRUE(hs->served().empty());
  hs->sync({{"a/one", {p1, 1}}});
  hs->stop();
  EXPECT_FALSE(listening(p1)) << "stop() closes everything";
  hs->sync({{"a/one", {p1, 1}}});
  EXPECT_FALSE(listening(p1)) << "and nothing opens after it";
}

TEST_F(ServiceHealthTest, EveryAddressWhenNodePortAddressesAreUnset) {
  ServiceHealthServer hs(std::nullopt, [] { return true; });
  const uint16_t port = free_port();
  hs.sync({{"default/web", {port, 1}}});
  EXPECT_EQ(get(port), response("200 OK", "default", "web", 1, true)) << "0.0.0.0 includes 127.0.0.1";
}

TEST_F(ServiceHealthTest, APortInUseIsReportedOnceAndTakenWhenItFrees) {
  std::vector<std::string> errors;
  std::mutex mu;
  struct RestoreLog {
    ~RestoreLog() { log::set_sink({}); }
  } restore;
  log::set_sink([&](log::Level level, std::string_view m) {
    std::lock_guard lk(mu);
    if (level == log::Level::kError) errors.emplace_back(m);
  });
  // Someone else holds the port.
  int holder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(holder, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(holder, 1), 0);
  socklen_t len = sizeof a;
  getsockname(holder, reinterpret_cast<sockaddr*>(&a), &len);
  const uint16_t taken = ntohs(a.sin_port), other = free_port();

  auto hs = start(20ms);
  hs->sync({{"default/web", {taken, 1}}, {"default/other", {other, 1}}});
  auto served = hs->served();
  EXPECT_FALSE(served["default/web"].listening);
  EXPECT_TRUE(served["default/other"].listening) << "one Service's port does not hold up another's";
  EXPECT_EQ(get(other), response("200 OK", "default", "other", 1, true));
  std::this_thread::sleep_for(100ms);  // a few retries
  hs->sync({{"default/web", {taken, 2}}, {"default/other", {other, 1}}});
  {
    std::lock_guard lk(mu);
    ASSERT_EQ(errors.size(), 1u) << "reported once, not at every retry";
    EXPECT_NE(errors[0].find("health check node port " + std::to_string(taken) + " of Service default/web on 127.0.0.1"),
              std::string::npos)
        << errors[0];
    EXPECT_NE(errors[0].find("in use"), std::string::npos) << errors[0];
  }
  close(holder);
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    up = hs->served()["default/web"].listening;
    if (!up) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(up) << "retried until the port freed";
  EXPECT_EQ(get(taken), response("200 OK", "default", "web", 2, true)) << "with the count synced meanwhile";
}

}  // namespace
}  // namespace kpx::agent
