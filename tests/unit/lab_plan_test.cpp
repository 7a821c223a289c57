// The lab's pure parts: names and addresses (plan.h) and manifest decoding
// (manifest.h). Everything that touches namespaces is in tests/e2e/lab_test.cpp.
#include <gtest/gtest.h>

#include "lab/manifest.h"
#include "lab/plan.h"

namespace kpx::lab {
namespace {

TEST(LabPlan, NamesAndAddressesFollowFromTheLabNameAndNodeCount) {
  LabPlan p = plan_lab("demo", 3);
  EXPECT_EQ(p.fabric_ns, "kpxlab-demo-fabric");
  EXPECT_EQ(p.internet_ns, "kpxlab-demo-inet");
  ASSERT_EQ(p.nodes.size(), 3u);
  EXPECT_EQ(p.nodes[2].name, "node3");
  EXPECT_EQ(p.nodes[2].netns, "kpxlab-demo-node3");
  EXPECT_EQ(p.nodes[2].ip, "10.0.0.13");
  EXPECT_EQ(p.nodes[2].pod_cidr, "10.244.3.0/24");
  EXPECT_EQ(p.nodes[2].pod_gateway, "10.244.3.1");
  EXPECT_EQ(p.nodes[2].pin_dir, "/sys/fs/bpf/kpx-demo-node3");
  EXPECT_EQ(p.pod_netns("kube-system", "coredns"), "kpxlab-demo-pod-kube-system.coredns");
  EXPECT_NE(p.pod_netns("a-b", "c"), p.pod_netns("a", "b-c"));
  EXPECT_LE(p.pod_netns("default", std::string(253, 'x')).size(), 200u);
  EXPECT_EQ(p.state_dir(), "/run/kpx-lab/demo");
  EXPECT_EQ(p.cgroup_name(), "kpx-lab-demo");
  EXPECT_EQ(p.node("node2")->index, 2);
  EXPECT_EQ(p.node("node4"), nullptr);
}

TEST(LabPlan, RefusesNamesThatCouldPrefixAnotherLabsAndOutOfRangeSizes) {
  EXPECT_TRUE(validate_name("lab1"));
  for (const char* bad : {"", "1lab", "Lab", "a-b", "a_b", "abcdefghijklm", "a/b"})
    EXPECT_FALSE(validate_name(bad)) << bad;
  EXPECT_FALSE(validate(LabSpec{"ok", 0, 3}));
  EXPECT_FALSE(validate(LabSpec{"ok", kMaxNodes + 1, 3}));
  EXPECT_FALSE(validate(LabSpec{"ok", 2, -1}));
  EXPECT_TRUE(validate(LabSpec{"ok", 2, 0}));
}

TEST(LabManifests, DecodesMultiDocumentYamlWithTypedScalars) {
  auto objs = parse_manifests(R"(
apiVersion: v1
kind: Service
metadata: {name: web, labels: {version: "1.0", on: "true"}}
spec:
  ports:
  - port: 80
    targetPort: http
  clusterIP: null
---
# a comment-only document is skipped
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: a}}
- {apiVersion: v1, kind: Pod, metadata: {name: b, namespace: team}}
)");
  ASSERT_TRUE(objs) << objs.error().message;
  ASSERT_EQ(objs->size(), 3u);
  const auto& svc = (*objs)[0];
  EXPECT_EQ(svc["spec"]["ports"][0]["port"], 80);
  EXPECT_TRUE(svc["spec"]["ports"][0]["port"].is_number_integer());
  EXPECT_EQ(svc["spec"]["ports"][0]["targetPort"], "http");
  EXPECT_TRUE(svc["spec"]["clusterIP"].is_null());
  EXPECT_EQ(svc["metadata"]["labels"]["version"], "1.0") << "quoted scalars stay strings";
  EXPECT_EQ(svc["metadata"]["labels"]["on"], "true");
  EXPECT_EQ(*collection_path(svc), "/api/v1/namespaces/default/services");
  EXPECT_EQ(*collection_path((*objs)[2]), "/api/v1/namespaces/team/pods");
  EXPECT_EQ(describe((*objs)[1]), "pod/a");
}

TEST(LabManifests, RejectsWhatTheLabDoesNotServeWithAClearError) {
  auto bad_yaml = parse_manifests("kind: [unclosed");
  ASSERT_FALSE(bad_yaml);
  EXPECT_NE(bad_yaml.error().message.find("invalid YAML"), std::string::npos);
  auto no_kind = parse_manifests("apiVersion: v1\nmetadata: {name: x}\n");
  ASSERT_FALSE(no_kind);
  EXPECT_NE(no_kind.error().message.find("document 1"), std::string::npos);
  auto deploy = parse_manifests("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n");
  ASSERT_TRUE(deploy);
  auto path = collection_path((*deploy)[0]);
  ASSERT_FALSE(path);
  EXPECT_NE(path.error().message.find("kind 'Deployment' is not served"), std::string::npos);
  auto wrong_version = parse_manifests("apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: x}\n");
  ASSERT_TRUE(wrong_version);
  EXPECT_FALSE(collection_path((*wrong_version)[0]));
  EXPECT_EQ(*collection_path(nlohmann::json{{"apiVersion", "v1"}, {"kind", "Namespace"}}), "/api/v1/namespaces");
}

}  // namespace
}  // namespace kpx::lab
