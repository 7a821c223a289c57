// The agent's /metrics text, parsed as a Prometheus scraper would: kube-
// proxy's names, types, help texts, label sets and buckets, and kpx's own;
// network programming latency as kube-proxy measures it; the count of
// Service ports with a Local policy and no local endpoints.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agent/metrics.h"
#include "agent/sync_loop.h"

namespace kpx::agent {
namespace {

struct Sample {
  std::map<std::string, std::string> labels;
  double value = 0;
};
struct Family {
  std::string type, help;
  std::map<std::string, std::vector<Sample>> series;  // by sample name (_bucket, _sum, ...)
};

// The text exposition format, strictly: every sample belongs to the family
// declared just before it.
std::map<std::string, Family> parse(const std::string& text) {
  std::map<std::string, Family> out;
  std::istringstream in(text);
  std::string line, current;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) {
      auto sp = line.find(' ', 7);
      current = line.substr(7, sp - 7);
      out[current].help = line.substr(sp + 1);
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      auto sp = line.find(' ', 7);
      EXPECT_EQ(line.substr(7, sp - 7), current) << "TYPE without its HELP: " << line;
      out[current].type = line.substr(sp + 1);
      continue;
    }
    if (line.empty()) continue;
    Sample s;
    size_t name_end = line.find_first_of("{ ");
    std::string name = line.substr(0, name_end);
    size_t at = name_end;
    if (line[at] == '{') {
      size_t close = line.find('}', at);
      std::string labels = line.substr(at + 1, close - at - 1);
      for (size_t p = 0; p < labels.size();) {
        size_t eq = labels.find('=', p);
        size_t q2 = labels.find('"', eq + 2);
        s.labels[labels.substr(p, eq - p)] = labels.substr(eq + 2, q2 - eq - 2);
        p = q2 + 2;  // past '",'
      }
      at = close + 1;
    }
    s.value = std::stod(line.substr(at + 1));
    EXPECT_EQ(name.rfind(current, 0), 0u) << name << " outside its family " << current;
    out[current].series[name].push_back(s);
  }
  return out;
}

std::set<std::string> label_names(const Family& f) {
  std::set<std::string> names;
  for (const auto& [n, samples] : f.series)
    for (const auto& s : samples)
      for (const auto& [k, v] : s.labels)
        if (k != "le") names.insert(k);
  return names;
}

std::vector<std::string> bounds(const Family& f, const std::string& name) {
  std::vector<std::string> out;
  for (const auto& s : f.series.at(name + "_bucket")) out.push_back(s.labels.at("le"));
  return out;
}

double bucket(const Family& f, const std::string& name, const std::string& le) {
  for (const auto& s : f.series.at(name + "_bucket"))
    if (s.labels.at("le") == le) return s.value;
  ADD_FAILURE() << name << " has no bucket " << le;
  return -1;
}

TEST(Metrics, KubeProxyFamiliesWithTheirTypesHelpAndLabels) {
  Metrics m;
  m.healthz_answers.inc(200);
  m.livez_answers.inc(503);
  auto fams = parse(m.render({{"dnat_new", 7}}));
  struct Want {
    const char* name;
    const char* type;
    const char* help;
    std::set<std::string> labels;
  };
  const std::vector<Want> want = {
      {"kubeproxy_sync_proxy_rules_duration_seconds",
       "histogram",
       "SyncProxyRules latency in seconds",
       {"ip_family"}},
      {"kubeproxy_sync_full_proxy_rules_duration_seconds",
       "histogram",
       "SyncProxyRules latency in seconds for full resyncs",
       {"ip_family"}},
      {"kubeproxy_sync_partial_proxy_rules_duration_seconds",
       "histogram",
       "SyncProxyRules latency in seconds for partial resyncs",
       {"ip_family"}},
      {"kubeproxy_network_programming_duration_seconds",
       "histogram",
       "In Cluster Network Programming Latency in seconds",
       {"ip_family"}},
      {"kubeproxy_sync_proxy_rules_last_timestamp_seconds",
       "gauge",
       "The last time proxy rules were successfully synced",
       {"ip_family"}},
      {"kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
       "gauge",
       "The last time a sync of proxy rules was queued",
       {"ip_family"}},
      {"kubeproxy_sync_proxy_rules_endpoint_changes_pending",
       "gauge",
       "Pending proxy rules Endpoint changes",
       {}},
      {"kubeproxy_sync_proxy_rules_endpoint_changes_total",
       "counter",
       "Cumulative proxy rules Endpoint changes",
       {}},
      {"kubeproxy_sync_proxy_rules_service_changes_pending",
       "gauge",
       "Pending proxy rules Service changes",
       {}},
      {"kubeproxy_sync_proxy_rules_service_changes_total",
       "counter",
       "Cumulative proxy rules Service changes",
       {}},
      {"kubeproxy_sync_proxy_rules_no_local_endpoints_total",
       "gauge",
       "Number of services with a Local traffic policy and no endpoints",
       {"ip_family", "traffic_policy"}},
      {"kubeproxy_proxy_healthz_total", "counter", "Cumulative proxy healthz HTTP status", {"code"}},
      {"kubeproxy_proxy_livez_total", "counter", "Cumulative proxy livez HTTP status", {"code"}},
  };
  for (const auto& w : want) {
    SCOPED_TRACE(w.name);
    ASSERT_TRUE(fams.count(w.name));
    const Family& f = fams.at(w.name);
    EXPECT_EQ(f.type, w.type);
    EXPECT_EQ(f.help, std::string("[ALPHA] ") + w.help) << "kube-proxy's registry marks its ALPHA metrics";
    EXPECT_EQ(label_names(f), w.labels);
    for (const auto& [n, samples] : f.series)
      for (const auto& s : samples)
        if (s.labels.count("ip_family")) {
          EXPECT_EQ(s.labels.at("ip_family"), "IPv4");
        }
  }
  const Family& no_local = fams.at("kubeproxy_sync_proxy_rules_no_local_endpoints_total");
  std::set<std::string> policies;
  for (const auto& s : no_local.series.at("kubeproxy_sync_proxy_rules_no_local_endpoints_total"))
    policies.insert(s.labels.at("traffic_policy"));
  EXPECT_EQ(policies, (std::set<std::string>{"internal", "external"}));
  EXPECT_EQ(fams.at("kubeproxy_proxy_healthz_total")
                .series.at("kubeproxy_proxy_healthz_total")[0]
                .labels.at("code"),
            "200");
  // kpx's own keep their names, without kube-proxy's stability marker.
  for (const char* own :
       {"kpx_sync_errors_total", "kpx_rejected_objects_total", "kpx_services", "kpx_attached_interfaces",
        "kpx_conntrack_gc_deleted_total", "kpx_datapath_packets_total"}) {
    ASSERT_TRUE(fams.count(own)) << own;
    EXPECT_EQ(fams.at(own).help.find("[ALPHA]"), std::string::npos) << own;
  }
  EXPECT_EQ(fams.at("kpx_datapath_packets_total").series.at("kpx_datapath_packets_total")[0].value, 7);
}

TEST(Metrics, CodeCountersAppearOnceAnswered) {
  Metrics m;
  auto fams = parse(m.render({}));
  EXPECT_FALSE(fams.count("kubeproxy_proxy_healthz_total")) << "a CounterVec without children writes nothing";
  m.healthz_answers.inc(200);
  m.healthz_answers.inc(200);
  m.healthz_answers.inc(503);
  fams = parse(m.render({}));
  std::map<std::string, double> by_code;
  for (const auto& s : fams.at("kubeproxy_proxy_healthz_total").series.at("kubeproxy_proxy_healthz_total"))
    by_code[s.labels.at("code")] = s.value;
  EXPECT_EQ(by_code, (std::map<std::string, double>{{"200", 2}, {"503", 1}}));
}

TEST(Metrics, KubeProxysBuckets) {
  Metrics m;
  auto fams = parse(m.render({}));
  const std::vector<std::string> sync = {"0.001", "0.002", "0.004",  "0.008", "0.016", "0.032",
                                         "0.064", "0.128", "0.256",  "0.512", "1.024", "2.048",
                                         "4.096", "8.192", "16.384", "+Inf"};
  for (const char* name :
       {"kubeproxy_sync_proxy_rules_duration_seconds", "kubeproxy_sync_full_proxy_rules_duration_seconds",
        "kubeproxy_sync_partial_proxy_rules_duration_seconds"})
    EXPECT_EQ(bounds(fams.at(name), name), sync) << name;
  // MergeBuckets(Linear(0.25, 0.25, 2), Linear(1, 1, 59), Linear(60, 5, 12), Linear(120, 30, 7)) after a 0.
  std::vector<std::string> programming = {"0", "0.25", "0.5"};
  for (int s = 1; s <= 59; ++s) programming.push_back(std::to_string(s));
  for (int s = 60; s <= 115; s += 5) programming.push_back(std::to_string(s));
  for (int s = 120; s <= 300; s += 30) programming.push_back(std::to_string(s));
  programming.push_back("+Inf");
  const std::string np = "kubeproxy_network_programming_duration_seconds";
  EXPECT_EQ(bounds(fams.at(np), np), programming);
  EXPECT_EQ(programming.size(), 82u);
}

TEST(Metrics, ObservationsAreCumulativeAndSplitByKind) {
  Metrics m;
  m.sync_duration.observe(0.003);
  m.sync_duration.observe(0.5);
  m.sync_full_duration.observe(0.5);
  m.sync_partial_duration.observe(0.003);
  m.network_programming.observe(1.5);
  m.network_programming.observe(70);
  m.service_changes += 3;
  m.endpoint_changes_pending = 2;
  m.no_local_endpoints_internal = 4;
  auto fams = parse(m.render({}));
  const std::string sync = "kubeproxy_sync_proxy_rules_duration_seconds";
  EXPECT_EQ(bucket(fams.at(sync), sync, "0.002"), 0);
  EXPECT_EQ(bucket(fams.at(sync), sync, "0.004"), 1);
  EXPECT_EQ(bucket(fams.at(sync), sync, "0.512"), 2);
  EXPECT_EQ(bucket(fams.at(sync), sync, "+Inf"), 2);
  EXPECT_EQ(fams.at(sync).series.at(sync + "_count")[0].value, 2);
  EXPECT_DOUBLE_EQ(fams.at(sync).series.at(sync + "_sum")[0].value, 0.503);
  EXPECT_EQ(fams.at(sync).series.at(sync + "_sum")[0].labels.at("ip_family"), "IPv4");
  const std::string full = "kubeproxy_sync_full_proxy_rules_duration_seconds";
  EXPECT_EQ(bucket(fams.at(full), full, "0.256"), 0);
  EXPECT_EQ(bucket(fams.at(full), full, "0.512"), 1);
  const std::string np = "kubeproxy_network_programming_duration_seconds";
  EXPECT_EQ(bucket(fams.at(np), np, "1"), 0);
  EXPECT_EQ(bucket(fams.at(np), np, "2"), 1);
  EXPECT_EQ(bucket(fams.at(np), np, "65"), 1);
  EXPECT_EQ(bucket(fams.at(np), np, "70"), 2);
  EXPECT_EQ(fams.at("kubeproxy_sync_proxy_rules_service_changes_total")
                .series.at("kubeproxy_sync_proxy_rules_service_changes_total")[0]
                .value,
            3);
  EXPECT_EQ(fams.at("kubeproxy_sync_proxy_rules_endpoint_changes_pending")
                .series.at("kubeproxy_sync_proxy_rules_endpoint_changes_pending")[0]
                .value,
            2);
  for (const auto& s : fams.at("kubeproxy_sync_proxy_rules_no_local_endpoints_total")
                           .series.at("kubeproxy_sync_proxy_rules_no_local_endpoints_total"))
    EXPECT_EQ(s.value, s.labels.at("traffic_policy") == "internal" ? 4 : 0);
}

TEST(ProgrammingLatency, OnlyTriggerTimesAfterTheStartAndNotOfDeletedSlices) {
  using namespace std::chrono;
  using Clock = ProgrammingStarts::Clock;
  const Clock::time_point start = Clock::from_time_t(1714557600);
  ProgrammingStarts p(start);
  p.add("default/web", start + seconds(2));
  p.add("default/web", start + seconds(3));
  p.add("default/db", start + seconds(1));
  // A trigger from before the agent started is not measured (kube-proxy
  // does the same): it would measure the agent's absence.
  p.add("default/db", start - seconds(600));
  EXPECT_EQ(p.pending(), 3u);
  // A slice of db deleted: its Service's pending times go (kube-proxy's
  // EndpointsChangeTracker), web's stay.
  p.forget("default/db");
  EXPECT_EQ(p.pending(), 2u);

  Histogram h(network_programming_buckets());
  auto taken = p.take();
  EXPECT_EQ(p.pending(), 0u);
  // The sync that took them failed: still pending, with what came meanwhile.
  p.add("default/db", start + seconds(4));
  p.put_back(std::move(taken));
  ASSERT_EQ(p.pending(), 3u);
  ProgrammingStarts::observe(h, start + seconds(5), p.take());
  EXPECT_EQ(h.count(), 3u);
  EXPECT_DOUBLE_EQ(h.sum(), 3.0 + 2.0 + 1.0);
  const std::string text = h.render("x");
  EXPECT_NE(text.find("x_bucket{le=\"1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_bucket{le=\"2\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_bucket{le=\"3\"} 3\n"), std::string::npos) << text;

  // A trigger time ahead of this node's clock counts as 0, not negative.
  Histogram skew({1});
  ProgrammingStarts::observe(skew, start, {{"default/web", {start + seconds(30)}}});
  EXPECT_DOUBLE_EQ(skew.sum(), 0.0);
  EXPECT_EQ(skew.count(), 1u);
}

dataplane::Frontend frontend(const std::string& svc, const std::string& port, bool local_only, int cluster,
                             int local) {
  dataplane::Frontend fe;
  fe.service = svc;
  fe.port_name = port;
  if (local_only) fe.flags |= dataplane::kLocalOnly;
  for (int i = 0; i < cluster; ++i) fe.cluster.push_back({net::IpAddr::from_v4(htonl(0x0af40100 + i)), 8080});
  for (int i = 0; i < local; ++i) fe.local.push_back({net::IpAddr::from_v4(htonl(0x0af40100 + i)), 8080});
  return fe;
}

dataplane::FrontendKey key(uint32_t ip, uint16_t port, dataplane::Scope scope,
                           net::Proto proto = net::Proto::kTcp) {
  return {net::IpAddr::from_v4(htonl(ip)), port, proto, scope};
}

TEST(NoLocalEndpoints, CountsServicePortsWithALocalPolicyAndEndpointsElsewhereOnly) {
  using dataplane::Scope;
  NoLocalEndpointsCounter c;
  // internalTrafficPolicy Local, endpoints on other nodes only: internal.
  c.add(key(0x0a600001, 80, Scope::kClusterIP), frontend("default/a", "http", true, 2, 0));
  // Its second port counts apart; the same port over TCP and UDP too.
  c.add(key(0x0a600001, 53, Scope::kClusterIP), frontend("default/a", "dns", true, 2, 0));
  c.add(key(0x0a600001, 53, Scope::kClusterIP, net::Proto::kUdp), frontend("default/a", "dns", true, 2, 0));
  // externalTrafficPolicy Local: the NodePort and a load balancer IP of one
  // Service port count once.
  c.add(key(0, 30080, Scope::kNodePort), frontend("default/b", "http", true, 1, 0));
  c.add(key(0xcb007101, 80, Scope::kLoadBalancer), frontend("default/b", "http", true, 1, 0));
  // Not counted: a local endpoint here; a Cluster policy; no endpoints at
  // all (rejected, as kube-proxy counts only Services with endpoints).
  c.add(key(0x0a600003, 80, Scope::kClusterIP), frontend("default/c", "http", true, 2, 1));
  c.add(key(0x0a600004, 80, Scope::kClusterIP), frontend("default/d", "http", false, 2, 0));
  c.add(key(0x0a600005, 80, Scope::kClusterIP), frontend("default/e", "http", true, 0, 0));
  c.add(key(0, 30081, Scope::kNodePort), frontend("default/e", "http", true, 0, 0));
  EXPECT_EQ(c.internal(), 3u);
  EXPECT_EQ(c.external(), 1u);
}

}  // namespace
}  // namespace kpx::agent
