// Env-style Service discovery: the kubelet's variables for a namespace's
// Services, checked against the documented example and the kubelet's rules.
#include "lab/service_env.h"

#include <gtest/gtest.h>

namespace kpx::lab {
namespace {

using apiserver::Json;
using Lines = std::vector<std::string>;

Json service(const std::string& name, const std::string& ip, Json ports) {
  Json spec = {{"ports", ports}};
  if (!ip.empty()) spec["clusterIP"] = ip;
  return {{"metadata", {{"name", name}, {"namespace", "default"}}}, {"spec", spec}};
}

TEST(ServiceEnv, TheDocumentedRedisMasterExample) {
  // kubernetes.io, "Service" / "Environment variables": Service redis-master,
  // TCP port 6379, cluster IP 10.0.0.11.
  auto env = service_env({service("redis-master", "10.0.0.11", {{{"port", 6379}, {"protocol", "TCP"}}})});
  EXPECT_EQ(env, (Lines{"REDIS_MASTER_SERVICE_HOST=10.0.0.11", "REDIS_MASTER_SERVICE_PORT=6379",
                        "REDIS_MASTER_PORT=tcp://10.0.0.11:6379", "REDIS_MASTER_PORT_6379_TCP=tcp://10.0.0.11:6379",
                        "REDIS_MASTER_PORT_6379_TCP_PROTO=tcp", "REDIS_MASTER_PORT_6379_TCP_PORT=6379",
                        "REDIS_MASTER_PORT_6379_TCP_ADDR=10.0.0.11"}));
}

TEST(ServiceEnv, NamedPortsAndProtocols) {
  auto env = service_env({service("kube-dns", "10.96.0.10",
                                  {{{"name", "dns"}, {"port", 53}, {"protocol", "UDP"}},
                                   {{"name", "dns-tcp"}, {"port", 53}, {"protocol", "TCP"}},
                                   {{"name", "metrics"}, {"port", 9153}}}) });
  EXPECT_EQ(env, (Lines{"KUBE_DNS_SERVICE_HOST=10.96.0.10",
                        "KUBE_DNS_SERVICE_PORT=53",
                        "KUBE_DNS_SERVICE_PORT_DNS=53",
                        "KUBE_DNS_SERVICE_PORT_DNS_TCP=53",
                        "KUBE_DNS_SERVICE_PORT_METRICS=9153",
                        "KUBE_DNS_PORT=udp://10.96.0.10:53",
                        "KUBE_DNS_PORT_53_UDP=udp://10.96.0.10:53",
                        "KUBE_DNS_PORT_53_UDP_PROTO=udp",
                        "KUBE_DNS_PORT_53_UDP_PORT=53",
                        "KUBE_DNS_PORT_53_UDP_ADDR=10.96.0.10",
                        "KUBE_DNS_PORT_53_TCP=tcp://10.96.0.10:53",
                        "KUBE_DNS_PORT_53_TCP_PROTO=tcp",
                        "KUBE_DNS_PORT_53_TCP_PORT=53",
                        "KUBE_DNS_PORT_53_TCP_ADDR=10.96.0.10",
                        "KUBE_DNS_PORT_9153_TCP=tcp://10.96.0.10:9153",
                        "KUBE_DNS_PORT_9153_TCP_PROTO=tcp",
                        "KUBE_DNS_PORT_9153_TCP_PORT=9153",
                        "KUBE_DNS_PORT_9153_TCP_ADDR=10.96.0.10"}));
}

TEST(ServiceEnv, ServicesWithoutAClusterIpAreSkippedAndOrderIsByName) {
  Json ports = {{{"port", 80}}};
  Json external = service("ext", "", ports);
  external["spec"]["type"] = "ExternalName";
  auto env = service_env({service("web", "10.96.0.20", ports), service("db", "None", ports), external,
                          service("pending", "", ports), service("api", "10.96.0.21", ports)});
  ASSERT_EQ(env.size(), 14u);
  EXPECT_EQ(env[0], "API_SERVICE_HOST=10.96.0.21");
  EXPECT_EQ(env[7], "WEB_SERVICE_HOST=10.96.0.20");
  for (const auto& line : env) {
    EXPECT_EQ(line.find("DB_"), std::string::npos) << line;
    EXPECT_EQ(line.find("EXT_"), std::string::npos) << line;
    EXPECT_EQ(line.find("PENDING_"), std::string::npos) << line;
  }
  EXPECT_TRUE(service_env({}).empty());
  EXPECT_TRUE(service_env({Json("not an object"), Json::object()}).empty());
}

}  // namespace
}  // namespace kpx::lab
