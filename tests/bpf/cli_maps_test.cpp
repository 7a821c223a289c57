// The CLI against real pinned maps: bad input leaves the maps as they were.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "support/scoped.h"

namespace kpx::cli {
namespace {

class CliMapsTest : public ::testing::Test {
 protected:
  int kpx(std::vector<const char*> args, std::string* out = nullptr) {
    args.insert(args.begin(), {"kpx", "--pin-dir", pins.path().c_str()});
    std::ostringstream o, e;
    int rc = run(static_cast<int>(args.size()), args.data(), o, e);
    if (out) *out = o.str();
    return rc;
  }
  std::string svc_json() {
    std::string out;
    EXPECT_EQ(kpx({"svc", "list", "-o", "json"}, &out), 0);
    return out;
  }
  testing::ScopedPinDir pins;
};

TEST_F(CliMapsTest, BadInputLeavesTheMapsAsTheyWere) {
  ASSERT_EQ(kpx({"svc", "set", "10.96.0.10:80/tcp", "10.244.1.2:8080", "10.244.1.3:8080"}), 0);
  const std::string before = svc_json();
  ASSERT_NE(before.find("10.244.1.3:8080"), std::string::npos);

  // One bad backend among good ones: nothing of the command is applied.
  EXPECT_EQ(kpx({"svc", "set", "10.96.0.10:80/tcp", "10.244.1.4:8080", "10.244.1.5:99999"}), 2);
  EXPECT_EQ(kpx({"svc", "set", "10.96.0.10:80/tcp", "10.244.1.4"}), 2);
  EXPECT_EQ(kpx({"svc", "del", "10.96.0.10:80/tpc"}), 2);
  EXPECT_EQ(kpx({"config", "set", "--hairpin-snat-ip", "300.1.1.1"}), 2);
  EXPECT_EQ(svc_json(), before);
  std::string cfg;
  ASSERT_EQ(kpx({"config", "show", "-o", "json"}, &cfg), 0);
  EXPECT_NE(cfg.find("\"hairpin_snat_ip\": \"\""), std::string::npos) << cfg;
}

TEST_F(CliMapsTest, SetDelListRoundTrip) {
  ASSERT_EQ(kpx({"svc", "set", "10.96.0.10:53/udp", "10.244.1.2:5353"}), 0);
  ASSERT_EQ(kpx({"svc", "set", "10.96.0.11:80", "10.244.1.2:80", "10.244.1.2:80"}), 0);  // duplicate collapses
  std::string table;
  ASSERT_EQ(kpx({"svc", "list"}, &table), 0);
  EXPECT_NE(table.find("10.96.0.10:53/UDP"), std::string::npos) << table;
  EXPECT_NE(table.find("10.96.0.11:80/TCP"), std::string::npos) << table;
  EXPECT_EQ(kpx({"svc", "del", "10.96.0.10:53/udp"}), 0);
  EXPECT_EQ(kpx({"svc", "del", "10.96.0.10:53/udp"}), 1);  // not there any more
  const std::string after = svc_json();
  EXPECT_EQ(after.find("10.96.0.10"), std::string::npos);
  EXPECT_NE(after.find("\"10.244.1.2:80\""), std::string::npos);
}

TEST_F(CliMapsTest, ConfigSetAndShow) {
  ASSERT_EQ(kpx({"config", "set", "--hairpin-snat-ip", "10.244.1.1", "--udp-timeout", "45"}), 0);
  std::string cfg;
  ASSERT_EQ(kpx({"config", "show", "-o", "json"}, &cfg), 0);
  EXPECT_NE(cfg.find("\"hairpin_snat_ip\": \"10.244.1.1\""), std::string::npos) << cfg;
  EXPECT_NE(cfg.find("\"udp_timeout_s\": 45"), std::string::npos) << cfg;
  EXPECT_NE(cfg.find("\"tcp_established_timeout_s\": 86400"), std::string::npos) << cfg;
}

TEST_F(CliMapsTest, AttachToAMissingInterfaceOrNamespaceFails) {
  EXPECT_EQ(kpx({"attach", "--dev", "kpx-no-such-if0"}), 1);
  EXPECT_EQ(kpx({"attach", "--netns", "kpx-no-such-netns", "--dev", "eth0"}), 1);
}

}  // namespace
}  // namespace kpx::cli
