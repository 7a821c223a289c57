// --config: kube-proxy's KubeProxyConfiguration documents (as kubeadm writes
// them, tests/fixtures/kube-proxy/) keep their meaning in kpx: defaults for
// zero values, the mode's section, the one-line warnings.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "agent/options.h"

namespace kpx::agent {
namespace {

const std::string kFixtures = std::string(KPX_SOURCE_DIR) + "/tests/fixtures/kube-proxy/";

// A config file of this text, removed when this goes.
struct TempConfig {
  std::string path;
  explicit TempConfig(const std::string& text) {
    char p[] = "/tmp/kpx-kube-proxy-config-XXXXXX";
    int fd = mkstemp(p);
    close(fd);
    path = p;
    std::ofstream(path) << text;
  }
  ~TempConfig() { std::remove(path.c_str()); }
};

const char* kHead = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

Result<ConfigFileReport> load_text(const std::string& body, Options& o) {
  TempConfig c(kHead + body);
  return load_config_file(c.path, o);
}

TEST(ConfigFile, KubeadmDefaultsKeepKpxDefaultsAndWarnOfNothing) {
  Options o;
  const Options defaults;
  auto r = load_config_file(kFixtures + "kubeadm.yaml", o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(o.kubeconfig, "/var/lib/kube-proxy/kubeconfig.conf");
  EXPECT_EQ(o.cluster_cidr, "10.244.0.0/16");
  // Zero values are kube-proxy's defaults.
  EXPECT_EQ(o.healthz_bind_address, "0.0.0.0:10256");
  EXPECT_EQ(o.metrics_bind_address, "127.0.0.1:10249");
  EXPECT_EQ(o.min_sync_period, defaults.min_sync_period);
  EXPECT_EQ(o.api_qps, 5);
  EXPECT_EQ(o.api_burst, 10);
  EXPECT_EQ(o.conntrack_max_per_core, 32768u);
  EXPECT_EQ(o.conntrack_min, 131072u);
  EXPECT_EQ(o.tcp_established_timeout.count(), 0) << "kpx's datapath default";
  EXPECT_EQ(o.tcp_close_wait_timeout.count(), 0);
  EXPECT_EQ(o.udp_timeout.count(), 0);
  EXPECT_EQ(o.udp_stream_timeout.count(), 0);
  EXPECT_FALSE(o.bind_address_hard_fail) << "kube-proxy's default: a bind error is logged and retried";
  EXPECT_FALSE(o.masquerade_all);
  EXPECT_EQ(o.detect_local_mode, "");
  EXPECT_TRUE(o.nodeport_addresses.empty());
  EXPECT_EQ(o.verbosity, 0);
  EXPECT_EQ(r->not_honoured_line(), "") << "kubeadm's zero values are all defaults";
  EXPECT_EQ(r->strict_decoding_line(), "");
}

TEST(ConfigFile, TunedNftablesDocumentTakesTheModesSectionAndNamesWhatKpxIgnoresInOneLine) {
  Options o;
  auto r = load_config_file(kFixtures + "tuned-nftables.yaml", o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  // mode nftables: nftables.minSyncPeriod and nftables.masqueradeAll, not iptables'.
  EXPECT_EQ(o.min_sync_period.count(), 250);
  EXPECT_EQ(o.sync_period.count(), 60000) << "nftables.syncPeriod";
  EXPECT_TRUE(o.masquerade_all);
  EXPECT_EQ(o.api_qps, 20);
  EXPECT_EQ(o.api_burst, 40);
  EXPECT_EQ(o.hostname_override, "worker-3");
  EXPECT_EQ(o.healthz_bind_address, "0.0.0.0:10256") << "the default port appended";
  EXPECT_EQ(o.metrics_bind_address, "0.0.0.0:10249");
  EXPECT_EQ(o.nodeport_addresses, (std::vector<std::string>{"primary", "192.168.10.0/24"}));
  EXPECT_EQ(o.detect_local_mode, "InterfaceNamePrefix");
  EXPECT_EQ(o.pod_interface_name_prefix, "veth");
  EXPECT_EQ(o.conntrack_max_per_core, 65536u);
  EXPECT_EQ(o.conntrack_min, 262144u);
  EXPECT_EQ(o.tcp_established_timeout.count(), 12 * 3600);
  EXPECT_EQ(o.tcp_close_wait_timeout.count(), 3600) << "CLOSE_WAIT: kpx's half-closed state";
  EXPECT_EQ(o.udp_timeout.count(), 45);
  EXPECT_EQ(o.udp_stream_timeout.count(), 120) << "udpStreamTimeout: replied UDP flows";
  EXPECT_TRUE(o.bind_address_hard_fail);
  EXPECT_EQ(o.verbosity, 2);
  const std::string line = r->not_honoured_line();
  EXPECT_EQ(line.find('\n'), std::string::npos);
  for (const char* f : {"mode=nftables", "nftables.masqueradeBit=15",
                        "conntrack.tcpBeLiberal=true"})
    EXPECT_NE(line.find(f), std::string::npos) << f << " in: " << line;
  // Defaults, other modes' sections, and what kpx honours are not named.
  for (const char* f : {"iptables.", "configSyncPeriod", "oomScoreAdj", "contentType", "bindAddress", "qps",
                        "udpStreamTimeout", "udpTimeout", "syncPeriod=1m0s"})
    EXPECT_EQ(line.find(f), std::string::npos) << f << " in: " << line;
  EXPECT_EQ(r->strict_decoding_line(), "");
}

TEST(ConfigFile, IptablesModeIgnoresTheNftablesSection) {
  Options o;
  auto r = load_text(
      "mode: iptables\niptables:\n  minSyncPeriod: 2s\n  masqueradeAll: false\n"
      "nftables:\n  minSyncPeriod: 50ms\n  masqueradeAll: true\n",
      o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(o.min_sync_period.count(), 2000);
  EXPECT_FALSE(o.masquerade_all) << "kube-proxy's iptables mode reads iptables.masqueradeAll";
  // ipvs: sync periods from ipvs, masqueradeAll from iptables.
  Options v;
  ASSERT_TRUE(
      load_text("mode: ipvs\nipvs:\n  minSyncPeriod: 3s\n  scheduler: lc\niptables:\n  masqueradeAll: true\n"
                "  minSyncPeriod: 9s\n",
                v)
          .ok());
  EXPECT_EQ(v.min_sync_period.count(), 3000);
  EXPECT_TRUE(v.masquerade_all);
}

TEST(ConfigFile, UnknownAndDuplicateFieldsAreOneWarningAsKubeProxysLenientDecoding) {
  // kube-proxy decodes v1alpha1 strictly first, and on a strict error
  // (unknown or duplicate field) decodes leniently, logs it and goes on.
  Options o;
  auto r = load_text(
      "clusterCIDR: 10.1.0.0/16\nfoo: bar\nconntrack:\n  tcpFinTimeout: 5s\n"
      "clusterCIDR: 10.2.0.0/16\nminSyncPeriod: 5s\n",
      o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(o.cluster_cidr, "10.2.0.0/16") << "the last one counts";
  EXPECT_EQ(o.min_sync_period, Options{}.min_sync_period) << "top-level minSyncPeriod is not v1alpha1's";
  EXPECT_EQ(r->unknown, (std::vector<std::string>{"foo", "conntrack.tcpFinTimeout", "minSyncPeriod"}));
  EXPECT_EQ(r->duplicates, (std::vector<std::string>{"clusterCIDR"}));
  const std::string line = r->strict_decoding_line();
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_NE(line.find("unknown field \"conntrack.tcpFinTimeout\""), std::string::npos) << line;
  EXPECT_NE(line.find("duplicate field \"clusterCIDR\""), std::string::npos) << line;
}

TEST(ConfigFile, WrongTypesKindAndVersionAreErrorsNamingTheField) {
  Options o;
  struct Case {
    std::string text, want;
  };
  for (const Case& c : std::vector<Case>{
           {std::string(kHead) + "iptables:\n  minSyncPeriod: soon\n",
            "iptables.minSyncPeriod: expected a duration"},
           {std::string(kHead) + "clientConnection:\n  qps: fast\n",
            "clientConnection.qps: expected a number"},
           {std::string(kHead) + "conntrack:\n  maxPerCore: many\n",
            "conntrack.maxPerCore: expected an integer"},
           {std::string(kHead) + "nodePortAddresses: primary\n", "nodePortAddresses: expected a list"},
           {std::string(kHead) + "conntrack: 5\n", "conntrack: expected an object"},
           {std::string(kHead) + "detectLocalMode: Magic\n", "detectLocalMode: unknown mode Magic"},
           {"kind: KubeletConfiguration\n", "expected KubeProxyConfiguration"},
           {"kind: KubeProxyConfiguration\n", "apiVersion is missing"},
           {"apiVersion: kubeproxy.config.k8s.io/v1beta9\nkind: KubeProxyConfiguration\n",
            "apiVersion kubeproxy"},
           {"bindAddress: ::\n", "--config"},
       }) {
    TempConfig f(c.text);
    auto r = load_config_file(f.path, o);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.error().message.find(c.want), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find(f.path), std::string::npos) << r.error().message;
  }
  EXPECT_FALSE(load_config_file("/nonexistent/kpx.conf", o).ok());
}

TEST(ConfigFile, ZeroQpsMeansKubeProxysDefaultAndNegativeNoLimit) {
  Options o;
  ASSERT_TRUE(load_text("clientConnection:\n  qps: 0\n  burst: 0\n", o).ok());
  EXPECT_EQ(o.api_qps, 5);
  EXPECT_EQ(o.api_burst, 10);
  ASSERT_TRUE(load_text("clientConnection:\n  qps: -1\n", o).ok());
  EXPECT_LT(o.api_qps, 0);
}

}  // namespace
}  // namespace kpx::agent
