#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "k8s/objects.h"
#include "k8s/time.h"
#include "proxy/model.h"

namespace kpx::k8s {
namespace {

using json = nlohmann::json;

const std::filesystem::path kFixtures = KPX_SOURCE_DIR "/tests/fixtures/k8s-api";

json load(const std::filesystem::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

// Every serialized object of the API's round-trip data: each field filled
// with a placeholder ("ipValue", port 1, ...). kpx must read them all.
TEST(DecodeFixtures, EveryFixtureOfAKindKpxReadsDecodes) {
  ASSERT_TRUE(std::filesystem::is_directory(kFixtures)) << kFixtures;
  std::set<std::string> kinds;
  for (const auto& entry : std::filesystem::directory_iterator(kFixtures)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().string());
    json j = load(entry.path());
    std::string kind = j.value("kind", "");
    if (kind == "Service") {
      auto s = decode_service(j);
      EXPECT_TRUE(s.ok()) << s.error().message;
    } else if (kind == "EndpointSlice") {
      auto s = decode_endpoint_slice(j);
      EXPECT_TRUE(s.ok()) << s.error().message;
    } else if (kind == "Node") {
      auto n = decode_node(j);
      EXPECT_TRUE(n.ok()) << n.error().message;
    } else {
      continue;  // Endpoints: kpx reads EndpointSlices instead
    }
    kinds.insert(kind);
  }
  EXPECT_EQ(kinds, (std::set<std::string>{"Service", "EndpointSlice", "Node"}));
}

TEST(DecodeFixtures, ServiceFields) {
  auto s = decode_service(load(kFixtures / "core.v1.Service.json"));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->metadata.key(), "namespaceValue/nameValue");
  EXPECT_EQ(s->metadata.uid, "uidValue");
  EXPECT_EQ(s->metadata.resource_version, "resourceVersionValue");
  EXPECT_EQ(s->metadata.label("labelsKey"), "labelsValue");
  EXPECT_EQ(s->metadata.deletion_timestamp, "2009-01-01T01:01:01Z");
  EXPECT_EQ(s->type, "typeValue");
  EXPECT_EQ(s->cluster_ip, "clusterIPValue");
  EXPECT_EQ(s->cluster_ips, std::vector<std::string>{"clusterIPsValue"});
  EXPECT_EQ(s->ip_families, std::vector<std::string>{"ipFamiliesValue"});
  ASSERT_EQ(s->ports.size(), 1u);
  EXPECT_EQ(s->ports[0], (ServicePort{"nameValue", "protocolValue", 3, IntOrString("targetPortValue"), 5}));
  EXPECT_EQ(s->external_ips, std::vector<std::string>{"externalIPsValue"});
  EXPECT_EQ(s->session_affinity, "sessionAffinityValue");
  EXPECT_EQ(s->client_ip_timeout_seconds, 1);
  EXPECT_EQ(s->external_traffic_policy, "externalTrafficPolicyValue");
  EXPECT_EQ(s->internal_traffic_policy, "internalTrafficPolicyValue");
  EXPECT_EQ(s->health_check_node_port, 12);
  EXPECT_EQ(s->load_balancer_source_ranges, std::vector<std::string>{"loadBalancerSourceRangesValue"});
  EXPECT_EQ(s->traffic_distribution, "trafficDistributionValue");
  EXPECT_EQ(s->load_balancer_ingress, (std::vector<LoadBalancerIngress>{{"ipValue", "ipModeValue"}}));
}

TEST(DecodeFixtures, EndpointSliceFields) {
  auto s = decode_endpoint_slice(load(kFixtures / "discovery.k8s.io.v1.EndpointSlice.json"));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->metadata.key(), "namespaceValue/nameValue");
  EXPECT_EQ(s->service_name(), "");  // the fixture has no service-name label
  EXPECT_EQ(s->address_type, "addressTypeValue");
  ASSERT_EQ(s->endpoints.size(), 1u);
  const Endpoint& e = s->endpoints[0];
  EXPECT_EQ(e.addresses, std::vector<std::string>{"addressesValue"});
  EXPECT_EQ(e.conditions.ready, true);
  EXPECT_EQ(e.conditions.serving, true);
  EXPECT_EQ(e.conditions.terminating, true);
  EXPECT_EQ(e.node_name, "nodeNameValue");
  EXPECT_EQ(e.zone, "zoneValue");
  ASSERT_TRUE(e.hints.has_value());
  EXPECT_EQ(e.hints->for_zones, std::vector<std::string>{"nameValue"});
  EXPECT_EQ(e.hints->for_nodes, std::vector<std::string>{"nameValue"});
  ASSERT_EQ(s->ports.size(), 1u);
  EXPECT_EQ(s->ports[0].name, "nameValue");
  EXPECT_EQ(s->ports[0].protocol, "protocolValue");
  EXPECT_EQ(s->ports[0].port, 3);
}

TEST(DecodeFixtures, NodeFields) {
  auto n = decode_node(load(kFixtures / "core.v1.Node.json"));
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ(n->metadata.key(), "namespaceValue/nameValue");
  EXPECT_EQ(n->pod_cidr, "podCIDRValue");
  EXPECT_EQ(n->pod_cidrs, std::vector<std::string>{"podCIDRsValue"});
  ASSERT_EQ(n->addresses.size(), 1u);
  EXPECT_EQ(n->addresses[0].type, "typeValue");
  EXPECT_EQ(n->addresses[0].address, "addressValue");
  EXPECT_EQ(n->zone(), "");
}

// The placeholders decode, but are not a Service kpx can proxy: the model
// refuses it with the reasons, and does not crash.
TEST(DecodeFixtures, ServiceAndSliceFixturesAreRejectedByValidation) {
  proxy::Model model;
  auto svc = decode_service(load(kFixtures / "core.v1.Service.json"));
  ASSERT_TRUE(svc.ok());
  auto r = model.upsert_service(*svc);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->kind, "Service");
  EXPECT_EQ(r->name, "namespaceValue/nameValue");
  for (const char* part :
       {"spec.type: unsupported value 'typeValue'", "spec.clusterIP: 'clusterIPValue' is not an IP address",
        "spec.ports[0].protocol: unsupported value 'protocolValue'",
        "spec.externalIPs[0]: 'externalIPsValue' is not an IP address"})
    EXPECT_NE(r->reason.find(part), std::string::npos) << part << " not in: " << r->reason;
  EXPECT_TRUE(model.services().empty());

  auto slice = decode_endpoint_slice(load(kFixtures / "discovery.k8s.io.v1.EndpointSlice.json"));
  ASSERT_TRUE(slice.ok());
  auto rs = model.upsert_endpoint_slice(*slice);
  ASSERT_TRUE(rs.has_value());
  EXPECT_NE(rs->reason.find("addressType: unsupported value 'addressTypeValue'"), std::string::npos)
      << rs->reason;
  EXPECT_EQ(model.endpoint_slice_count(), 0u);
  EXPECT_EQ(proxy::to_string(*rs).rfind("EndpointSlice namespaceValue/nameValue rejected: ", 0), 0u);
}

TEST(DecodeService, DefaultsForMissingFields) {
  auto s = decode_service(json::parse(R"({"metadata":{"name":"web","namespace":"default"},
      "spec":{"clusterIP":"10.96.0.10","ports":[{"port":80}]}})"));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->type, "ClusterIP");
  EXPECT_EQ(s->session_affinity, "None");
  EXPECT_EQ(s->client_ip_timeout_seconds, 10800);
  EXPECT_TRUE(s->cluster_ips.empty());
  ASSERT_EQ(s->ports.size(), 1u);
  EXPECT_EQ(s->ports[0], (ServicePort{"", "TCP", 80, std::nullopt, 0}));
  EXPECT_FALSE(s->metadata.deletion_timestamp.has_value());
  EXPECT_TRUE(s->metadata.labels.empty());
}

TEST(DecodeService, NullsAndUnknownFieldsAreTolerated) {
  auto s = decode_service(json::parse(R"({"kind":"Service","apiVersion":"v1","futureField":{"x":[1]},
      "metadata":{"name":"web","namespace":"default","labels":null,"annotations":{"a":"b"}},
      "spec":{"clusterIP":"10.96.0.10","ports":[{"port":80,"protocol":null,"appProtocol":"http"}],
              "externalIPs":null,"sessionAffinityConfig":{"clientIP":null},"newThing":true},
      "status":{"loadBalancer":{}}})"));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->ports[0].protocol, "TCP");
  EXPECT_EQ(s->client_ip_timeout_seconds, 10800);
}

TEST(DecodeService, TargetPortByNumberOrName) {
  auto s = decode_service(json::parse(R"({"metadata":{"name":"web","namespace":"default"},
      "spec":{"ports":[{"name":"a","port":80,"targetPort":8080},{"name":"b","port":81,"targetPort":"http"}]}})"));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->ports[0].target_port, IntOrString(8080));
  EXPECT_EQ(s->ports[1].target_port, IntOrString("http"));
}

struct BadJson {
  const char* name;
  const char* json;
  const char* message_part;
};

void PrintTo(const BadJson& c, std::ostream* os) { *os << c.name; }

class DecodeServiceRejects : public ::testing::TestWithParam<BadJson> {};

TEST_P(DecodeServiceRejects, NamingTheObjectAndTheField) {
  auto s = decode_service(json::parse(GetParam().json));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(s.error().message.find(GetParam().message_part), std::string::npos) << s.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, DecodeServiceRejects,
    ::testing::Values(
        BadJson{"PortAsString",
                R"({"metadata":{"name":"web","namespace":"ns"},"spec":{"ports":[{"port":"80"}]}})",
                "Service ns/web: spec.ports[0].port: expected an integer, got string"},
        BadJson{"PortAsFloat",
                R"({"metadata":{"name":"web","namespace":"ns"},"spec":{"ports":[{"port":80.5}]}})",
                "Service ns/web: spec.ports[0].port: expected an integer, got number"},
        BadJson{"PortBeyondInt32",
                R"({"metadata":{"name":"web","namespace":"ns"},"spec":{"ports":[{"port":4294967376}]}})",
                "Service ns/web: spec.ports[0].port: integer 4294967376 out of range"},
        BadJson{
            "TargetPortAsBool",
            R"({"metadata":{"name":"web","namespace":"ns"},"spec":{"ports":[{"port":1,"targetPort":true}]}})",
            "Service ns/web: spec.ports[0].targetPort: expected an integer, got boolean"},
        BadJson{"LabelAsNumber", R"({"metadata":{"name":"web","namespace":"ns","labels":{"a":1}}})",
                "Service ns/web: metadata.labels[\"a\"]: expected a string, got number"},
        BadJson{"ClusterIPsNotArray",
                R"({"metadata":{"name":"web","namespace":"ns"},"spec":{"clusterIPs":"1.2.3.4"}})",
                "Service ns/web: spec.clusterIPs: expected an array, got string"},
        BadJson{"ClusterIPsItem",
                R"({"metadata":{"name":"web","namespace":"ns"},"spec":{"clusterIPs":["1.2.3.4",7]}})",
                "Service ns/web: spec.clusterIPs[1]: expected a string, got number"},
        BadJson{"SpecNotObject", R"({"metadata":{"name":"web","namespace":"ns"},"spec":[]})",
                "Service ns/web: spec: expected an object, got array"},
        BadJson{
            "TimeoutAsString",
            R"({"metadata":{"name":"web","namespace":"ns"},"spec":{"sessionAffinityConfig":{"clientIP":{"timeoutSeconds":"9"}}}})",
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: expected an integer"},
        BadJson{"NameNotString", R"({"metadata":{"name":5,"namespace":"ns"}})",
                "Service ns/(no name): metadata.name: expected a string"},
        BadJson{"NotAnObject", R"([1,2])", "Service (not an object): object: expected an object, got array"},
        BadJson{"WrongKind", R"({"kind":"Node","metadata":{"name":"n1"}})",
                "Service n1: kind is Node, expected Service"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(DecodeEndpointSlice, ConditionDefaults) {
  auto s = decode_endpoint_slice(json::parse(R"({"metadata":{"name":"web-1","namespace":"default",
      "labels":{"kubernetes.io/service-name":"web"}},"addressType":"IPv4",
      "endpoints":[{"addresses":["10.0.0.1"]},
                   {"addresses":["10.0.0.2"],"conditions":{"ready":false}},
                   {"addresses":["10.0.0.3"],"conditions":{"ready":false,"serving":true,"terminating":true}},
                   {"addresses":["10.0.0.4"],"conditions":{}}],
      "ports":[{"port":8080},{"name":"dns","protocol":"UDP","port":53},{"name":"any"}]})"));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->service_name(), "web");
  EXPECT_EQ(s->service_key(), "default/web");
  struct Want {
    bool ready, serving, terminating;
  };
  const Want want[] = {{true, true, false}, {false, false, false}, {false, true, true}, {true, true, false}};
  ASSERT_EQ(s->endpoints.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    const EndpointConditions& c = s->endpoints[i].conditions;
    EXPECT_EQ(c.is_ready(), want[i].ready);
    EXPECT_EQ(c.is_serving(), want[i].serving);
    EXPECT_EQ(c.is_terminating(), want[i].terminating);
  }
  EXPECT_FALSE(s->endpoints[0].conditions.ready.has_value());
  EXPECT_FALSE(s->endpoints[0].hints.has_value());
  ASSERT_EQ(s->ports.size(), 3u);
  EXPECT_EQ(s->ports[0].name, "");
  EXPECT_EQ(s->ports[0].protocol, "TCP");
  EXPECT_EQ(s->ports[0].port, 8080);
  EXPECT_EQ(s->ports[1].protocol, "UDP");
  EXPECT_FALSE(s->ports[2].port.has_value());
}

TEST(DecodeEndpointSlice, ErrorsNameTheField) {
  auto s = decode_endpoint_slice(json::parse(R"({"metadata":{"name":"web-1","namespace":"default"},
      "endpoints":[{"addresses":["10.0.0.1"]},{"addresses":["10.0.0.2"],"conditions":{"ready":"yes"}}]})"));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message,
            "EndpointSlice default/web-1: endpoints[1].conditions.ready: expected a boolean, got string");
}

TEST(DecodeEndpointSlice, LastChangeTriggerTimeAnnotation) {
  // As the endpoints controller writes it (UTC, RFC 3339 with nanoseconds).
  auto s = decode_endpoint_slice(json::parse(R"({"metadata":{"name":"web-1","namespace":"default",
      "labels":{"kubernetes.io/service-name":"web"},
      "annotations":{"endpoints.kubernetes.io/last-change-trigger-time":"2024-05-01T10:00:00.25Z",
                     "other":"x"}},"addressType":"IPv4"})"));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->last_change_trigger_time, "2024-05-01T10:00:00.25Z");
  ASSERT_TRUE(s->trigger_time().has_value());
  using namespace std::chrono;
  EXPECT_EQ(duration_cast<milliseconds>(s->trigger_time()->time_since_epoch()).count(), 1714557600250);

  auto none = decode_endpoint_slice(json::parse(R"({"metadata":{"name":"web-1","namespace":"default",
      "annotations":{"other":"x"}}})"));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->trigger_time().has_value());
  auto bad = decode_endpoint_slice(json::parse(R"({"metadata":{"name":"web-1","namespace":"default",
      "annotations":{"endpoints.kubernetes.io/last-change-trigger-time":"yesterday"}}})"));
  ASSERT_TRUE(bad.ok()) << "a bad timestamp only loses the latency measurement";
  EXPECT_FALSE(bad->trigger_time().has_value());
}

TEST(Rfc3339, AsTheApiWritesIt) {
  using namespace std::chrono;
  auto ms = [](const char* s) -> std::optional<int64_t> {
    auto t = parse_rfc3339(s);
    if (!t) return std::nullopt;
    return duration_cast<milliseconds>(t->time_since_epoch()).count();
  };
  EXPECT_EQ(ms("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(ms("2024-05-01T10:00:00Z"), 1714557600000);
  EXPECT_EQ(ms("2024-05-01T10:00:00.123456789Z"), 1714557600123);
  EXPECT_EQ(ms("2024-05-01T12:00:00.5+02:00"), 1714557600500);
  EXPECT_EQ(ms("2024-05-01T05:30:00-04:30"), 1714557600000);
  EXPECT_EQ(ms("2024-02-29T00:00:00Z"), 1709164800000);  // a leap day
  auto ns = parse_rfc3339("2024-05-01T10:00:00.000000001Z");
  ASSERT_TRUE(ns.has_value());
  EXPECT_EQ(duration_cast<nanoseconds>(ns->time_since_epoch()).count() % 1000000000, 1);
  for (const char* bad : {"", "2024-05-01", "2024-05-01T10:00:00", "2024-05-01 10:00:00Z", "2024-05-01T10:00:00.Z",
                          "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-05-01T24:00:00Z",
                          "2024-05-01T10:60:00Z", "2024-05-01T10:00:60Z", "2024-05-01T10:00:00Zjunk",
                          "2024-05-01T10:00:00+0200", "24-05-01T10:00:00Z"})
    EXPECT_FALSE(parse_rfc3339(bad).has_value()) << bad;
}

TEST(DecodeNode, ZoneAndAddresses) {
  auto n = decode_node(json::parse(R"({"kind":"Node","metadata":{"name":"node-a",
      "labels":{"topology.kubernetes.io/zone":"zone-1"}},
      "spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24","fd00:1::/64"]},
      "status":{"addresses":[{"type":"InternalIP","address":"192.168.1.10"},{"type":"Hostname","address":"node-a"}]}})"));
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ(n->metadata.key(), "node-a");
  EXPECT_EQ(n->zone(), "zone-1");
  EXPECT_EQ(n->pod_cidrs.size(), 2u);
  ASSERT_EQ(n->addresses.size(), 2u);
  EXPECT_EQ(n->addresses[0].type, "InternalIP");
  EXPECT_EQ(n->addresses[0].address, "192.168.1.10");
}

}  // namespace
}  // namespace kpx::k8s
