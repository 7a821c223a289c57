// Loading kube-proxy's rules into a network namespace and removing them,
// with the tools kube-proxy itself runs: iptables (-N/-C/-I) and
// iptables-restore as pkg/util/iptables calls them (iptables-nft, or
// iptables-legacy), nft -f - as knftables does.
#include "kube_proxy_rules.h"

#include <algorithm>
#include <sstream>
#include <unordered_set>

#include "kube_proxy_service_ports.h"
#include "lab/proc.h"

namespace kpx::bench {
namespace {

using Clock = std::chrono::steady_clock;

// The tail of a tool's output, enough to read the error.
std::string tail(const std::string& s, size_t n = 2000) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

// "iptables-restore: line 42 failed": that line of the input, to show it.
std::string failed_line(const std::string& output, const std::string& input) {
  auto at = output.find("line ");
  if (at == std::string::npos) return "";
  size_t line = std::strtoul(output.c_str() + at + 5, nullptr, 10);
  if (line == 0) return "";
  std::istringstream in(input);
  std::string text;
  for (size_t i = 0; i < line && std::getline(in, text); ++i) {
  }
  return "\n  line " + std::to_string(line) + ": " + text;
}

Result<lab::RunResult> run_in(const std::string& netns, const std::vector<std::string>& argv,
                              const std::string& input = "") {
  if (netns.empty())
    return invalid_argument("kube-proxy rules: no network namespace named (never the caller's own)");
  auto r = lab::run(argv, input, netns);
  if (!r) return system_error("network namespace " + netns + ": " + argv[0] + ": " + r.error().message);
  if (r->status == 127)
    return system_error(argv[0] + " not found (scripts/setup installs iptables and nftables)");
  return r;
}

Status run_ok_in(const std::string& netns, const std::vector<std::string>& argv,
                 const std::string& input = "") {
  auto r = run_in(netns, argv, input);
  if (!r) return r.error();
  if (r->status != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    return system_error("network namespace " + netns + ": `" + cmd + "` exited " + std::to_string(r->status) +
                        ": " + tail(r->out) + failed_line(r->out, input));
  }
  return {};
}

// pkg/util/iptables: lock wait 5 s, polling every 100 ms.
const std::vector<std::string> kWait = {"-w", "5", "-W", "100000"};

// The iptables tool of a mode: "iptables", "iptables-legacy-restore", ...
std::string tool(KubeProxyMode mode, const char* suffix = "") {
  return std::string(mode == KubeProxyMode::kIptablesLegacy ? "iptables-legacy" : "iptables") + suffix;
}

std::vector<std::string> iptables(KubeProxyMode mode, const std::string& table,
                                  std::initializer_list<std::string> args,
                                  const std::vector<std::string>& rest = {}) {
  std::vector<std::string> argv = {tool(mode)};
  argv.insert(argv.end(), kWait.begin(), kWait.end());
  argv.insert(argv.end(), {"-t", table});
  argv.insert(argv.end(), args);
  argv.insert(argv.end(), rest.begin(), rest.end());
  return argv;
}

// EnsureChain: -N, where "already exists" (exit 1) is fine.
Status ensure_chain(const std::string& netns, KubeProxyMode mode, const std::string& table,
                    const std::string& chain) {
  auto r = run_in(netns, iptables(mode, table, {"-N", chain}));
  if (!r) return r.error();
  if (r->status != 0 && r->out.find("exists") == std::string::npos)
    return system_error("network namespace " + netns + ": " + tool(mode) + " -t " + table + " -N " + chain +
                        ": " + tail(r->out));
  return {};
}

Status ensure_jumps(const std::string& netns, KubeProxyMode mode) {
  // The canary chains iptables.Monitor() creates beside the sync.
  for (const char* t : {"mangle", "nat", "filter"})
    KPX_TRY(ensure_chain(netns, mode, t, "KUBE-PROXY-CANARY"));
  for (const IptablesJump& j : iptables_jumps()) {
    KPX_TRY(ensure_chain(netns, mode, j.table, j.target));
    // EnsureRule(Prepend): -C, and -I if the rule is not there.
    auto check = run_in(netns, iptables(mode, j.table, {"-C", j.chain}, j.args));
    if (!check) return check.error();
    if (check->status != 0) KPX_TRY(run_ok_in(netns, iptables(mode, j.table, {"-I", j.chain}, j.args)));
  }
  return {};
}

// What iptables-restore --noflush needs to take kpx's KUBE-* chains out of
// one table as iptables-save shows it: flush them, delete the rules of the
// built-in chains that jump to them, delete them. "" if there are none.
std::string teardown_of(const std::string& table, const std::string& saved) {
  std::vector<std::string> chains, jumps;
  std::istringstream in(saved);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(":KUBE-", 0) == 0) {
      chains.push_back(line.substr(1, line.find(' ') - 1));
    } else if (line.rfind("-A ", 0) == 0 && line.rfind("-A KUBE-", 0) != 0 &&
               (line.find(" -j KUBE-") != std::string::npos || line.find(" -g KUBE-") != std::string::npos)) {
      jumps.push_back("-D " + line.substr(3));
    }
  }
  if (chains.empty() && jumps.empty()) return "";
  std::string out = "*" + table + "\n";
  for (const auto& c : chains) out += ":" + c + " - [0:0]\n";
  for (const auto& j : jumps) out += j + "\n";
  for (const auto& c : chains) out += "-X " + c + "\n";
  return out + "COMMIT\n";
}

}  // namespace

const char* to_string(KubeProxyMode m) {
  switch (m) {
    case KubeProxyMode::kIptables:
      return "iptables";
    case KubeProxyMode::kIptablesLegacy:
      return "iptables-legacy";
    case KubeProxyMode::kNftables:
      return "nftables";
  }
  return "?";
}

Result<KubeProxyLoad> load_kube_proxy_rules(const std::string& netns, KubeProxyMode mode,
                                            const std::string& rules, const KubeProxyNode& node) {
  KubeProxyLoad load;
  load.bytes = rules.size();
  if (mode == KubeProxyMode::kNftables) {
    const auto t0 = Clock::now();
    KPX_TRY(run_ok_in(netns, {"nft", "-f", "-"}, rules));
    load.restore = Clock::now() - t0;
    return load;
  }
  const auto t0 = Clock::now();
  KPX_TRY(ensure_jumps(netns, mode));
  // NewProxier() sets route_localnet for NodePorts on 127.0.0.1.
  if (kube_proxy::localhost_node_ports(node))
    KPX_TRY(run_ok_in(netns, {"sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1"}));
  const auto t1 = Clock::now();
  std::vector<std::string> argv = {tool(mode, "-restore")};
  argv.insert(argv.end(), kWait.begin(), kWait.end());
  argv.insert(argv.end(), {"--noflush", "--counters"});
  KPX_TRY(run_ok_in(netns, argv, rules));
  load.jumps = t1 - t0;
  load.restore = Clock::now() - t1;
  return load;
}

Status remove_kube_proxy_rules(const std::string& netns, KubeProxyMode mode) {
  if (mode == KubeProxyMode::kNftables)
    return run_ok_in(netns, {"nft", "-f", "-"}, "add table ip kube-proxy\ndelete table ip kube-proxy\n");
  for (const char* table : {"nat", "filter", "mangle"}) {
    auto saved = run_in(netns, {tool(mode, "-save"), "-t", table});
    if (!saved) return saved.error();
    if (saved->status != 0) continue;  // no such table: nothing of ours there
    const std::string teardown = teardown_of(table, saved->out);
    if (teardown.empty()) continue;
    std::vector<std::string> argv = {tool(mode, "-restore")};
    argv.insert(argv.end(), kWait.begin(), kWait.end());
    argv.push_back("--noflush");
    KPX_TRY(run_ok_in(netns, argv, teardown));
  }
  return {};
}

KubeProxyRuleCounts count_rules(KubeProxyMode mode, const std::string& rules) {
  KubeProxyRuleCounts c;
  std::unordered_set<std::string_view> chains;
  std::string_view text(rules);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (is_iptables(mode)) {
      if (line.starts_with(':'))
        ++c.chains;
      else if (line.starts_with("-A "))
        ++c.rules;
      continue;
    }
    constexpr std::string_view kChain = "add chain ip kube-proxy ";
    if (line.starts_with(kChain)) {
      std::string_view name = line.substr(kChain.size());
      chains.insert(name.substr(0, name.find(' ')));
    } else if (line.starts_with("add rule ")) {
      ++c.rules;
    } else if (line.starts_with("add element ")) {
      ++c.elements;
    }
  }
  if (mode == KubeProxyMode::kNftables) c.chains = chains.size();
  return c;
}

}  // namespace kpx::bench
