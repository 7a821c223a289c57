// The CLI's argument handling, without root: bad input is refused with exit
// code 2 and a clear message before any map is touched.
#include "cli/cli.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

namespace kpx::cli {
namespace {

struct Run {
  int rc;
  std::string out, err;
};

Run run_cli(std::vector<const char*> args) {
  args.insert(args.begin(), "kpx");
  std::ostringstream out, err;
  int rc = run(static_cast<int>(args.size()), args.data(), out, err);
  return {rc, out.str(), err.str()};
}

// A pin dir that cannot be a bpffs directory: if input were not checked
// first, the command would fail differently (exit 1, "not a bpffs mount").
constexpr const char* kNoBpffs = "/nonexistent-kpx/pins";

TEST(Cli, MalformedServiceExits2) {
  auto r = run_cli({"--pin-dir", kNoBpffs, "svc", "set", "10.96.0.300:80/tcp", "10.244.1.2:8080"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("invalid IPv4 address '10.96.0.300'"), std::string::npos) << r.err;
}

TEST(Cli, MalformedBackendExits2) {
  auto r = run_cli({"--pin-dir", kNoBpffs, "svc", "set", "10.96.0.1:80/tcp", "10.244.1.2:8080", "10.244.1.3:0"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("invalid port '0'"), std::string::npos) << r.err;
}

TEST(Cli, UnknownProtocolExits2) {
  auto r = run_cli({"--pin-dir", kNoBpffs, "svc", "del", "10.96.0.1:80/xtp"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("invalid protocol 'xtp'"), std::string::npos) << r.err;
}

TEST(Cli, PinDirOutsideBpffsIsRefused) {
  auto r = run_cli({"--pin-dir", kNoBpffs, "svc", "list"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("is not a bpffs mount"), std::string::npos) << r.err;
  r = run_cli({"--pin-dir", "relative/dir", "svc", "list"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("must be an absolute path"), std::string::npos) << r.err;
}

TEST(Cli, UsageErrorsExit2) {
  EXPECT_EQ(run_cli({}).rc, 2);
  EXPECT_EQ(run_cli({"svc"}).rc, 2);
  EXPECT_EQ(run_cli({"svc", "frobnicate"}).rc, 2);
  EXPECT_EQ(run_cli({"svc", "list", "-o", "yaml"}).rc, 2);
  EXPECT_EQ(run_cli({"attach", "--netns", "x"}).rc, 2);  // --dev missing
  EXPECT_EQ(run_cli({"config", "set", "--udp-timeout", "0"}).rc, 2);
  EXPECT_EQ(run_cli({"lab", "probe", "10.0.0.1:80/tcp", "--count", "0"}).rc, 2);
}

TEST(Cli, MalformedHairpinAddressExits2) {
  auto r = run_cli({"--pin-dir", kNoBpffs, "config", "set", "--hairpin-snat-ip", "10.244.1"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("invalid IPv4 address"), std::string::npos) << r.err;
}

// kube-proxy's checks of --detect-local-mode, before anything is loaded.
TEST(Cli, LocalDetectionSettingsAreChecked) {
  auto r = run_cli({"agent", "--detect-local-mode", "PodCIDR", "--pin-dir", kNoBpffs});
  EXPECT_EQ(r.rc, 2);
  r = run_cli({"agent", "--detect-local-mode", "BridgeInterface", "--master", "http://127.0.0.1:1", "--pin-dir",
               kNoBpffs});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("needs --pod-bridge-interface"), std::string::npos) << r.err;
  r = run_cli({"agent", "--detect-local-mode", "InterfaceNamePrefix", "--master", "http://127.0.0.1:1", "--pin-dir",
               kNoBpffs});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("needs --pod-interface-name-prefix"), std::string::npos) << r.err;
}

TEST(Cli, HelpExits0AndNamesTheCommands) {
  auto r = run_cli({"--help"});
  EXPECT_EQ(r.rc, 0);
  for (const char* cmd : {"svc", "ct", "stats", "attach", "detach", "config"})
    EXPECT_NE(r.out.find(cmd), std::string::npos) << cmd;
}

}  // namespace
}  // namespace kpx::cli
