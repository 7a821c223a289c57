// Kubeconfig and in-cluster configuration, the rotating bearer token, and the
// client's TLS set-up (against `openssl s_server` on 127.0.0.1).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "net/ports.h"
#include "k8s/bearer_token.h"
#include "k8s/client.h"
#include "k8s/config.h"
#include "support/scoped.h"

namespace kpx::k8s {
namespace {

namespace fs = std::filesystem;

// A directory under /tmp removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "kpx-kubeconfig-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  fs::path operator/(const std::string& rel) const { return path_ / rel; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const fs::path& p, const std::string& content) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::trunc);
  out << content;
}

// "hello" -> "aGVsbG8=" (the tests' -data fields).
constexpr const char* kCaPem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
constexpr const char* kCaPemBase64 =
    "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";

constexpr const char* kTwoContexts = R"(apiVersion: v1
kind: Config
current-context: b
clusters:
- name: ca
  cluster:
    server: https://a.example:6443
- name: cb
  cluster:
    server: https://b.example:6443/
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=
contexts:
- name: a
  context: {cluster: ca, user: ua}
- name: b
  context:
    cluster: cb
    user: ub
    namespace: kube-system
users:
- name: ua
  user: {token: tok-a}
- name: ub
  user:
    token: tok-b
)";

TEST(Base64, DecodesWithAndWithoutPaddingAndRejectsGarbage) {
  EXPECT_EQ(*decode_base64("aGVsbG8="), "hello");
  EXPECT_EQ(*decode_base64("aGVsbG8"), "hello");
  EXPECT_EQ(*decode_base64("aGVs\nbG8h"), "hello!");
  EXPECT_EQ(*decode_base64(""), "");
  EXPECT_EQ(*decode_base64(kCaPemBase64), kCaPem);
  EXPECT_FALSE(decode_base64("a").ok());
  EXPECT_FALSE(decode_base64("aGVs*G8=").ok());
  EXPECT_FALSE(decode_base64("aG=VsbG8").ok());
}

TEST(Kubeconfig, CurrentContextPicksItsClusterAndUser) {
  TempDir dir;
  write_file(dir / "config", kTwoContexts);
  auto c = load_kubeconfig((dir / "config").string());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->server, "https://b.example:6443");  // trailing slash dropped
  EXPECT_EQ(c->token, "tok-b");
  EXPECT_EQ(c->ca_data, kCaPem);
  EXPECT_TRUE(c->ca_file.empty());
  EXPECT_FALSE(c->insecure_skip_tls_verify);
  EXPECT_NE(c->source.find((dir / "config").string()), std::string::npos);
  EXPECT_NE(c->source.find("context b"), std::string::npos);
}

TEST(Kubeconfig, RelativePathsResolveAgainstTheKubeconfigDirectory) {
  TempDir dir;
  write_file(dir / "sub/config", R"(current-context: x
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: ca.crt
contexts:
- name: x
  context: {cluster: c, user: u}
users:
- name: u
  user:
    tokenFile: secrets/token
    client-certificate: ../certs/client.crt
    client-key: /etc/kpx/client.key
)");
  auto c = load_kubeconfig((dir / "sub/config").string());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->ca_file, (dir / "sub/ca.crt").string());
  EXPECT_EQ(c->token_file, (dir / "sub/secrets/token").string());
  EXPECT_EQ(c->client_cert_file, (dir / "certs/client.crt").string());
  EXPECT_EQ(c->client_key_file, "/etc/kpx/client.key");
  EXPECT_TRUE(c->token.empty());
}

TEST(Kubeconfig, DataFieldsAreBase64) {
  TempDir dir;
  write_file(dir / "config", R"(current-context: x
clusters:
- name: c
  cluster: {server: "https://10.0.0.1", insecure-skip-tls-verify: false}
contexts:
- name: x
  context: {cluster: c, user: u}
users:
- name: u
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
)");
  auto c = load_kubeconfig((dir / "config").string());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->client_cert_data, "cert");
  EXPECT_EQ(c->client_key_data, "key");
}

TEST(Kubeconfig, InsecureSkipTlsVerify) {
  TempDir dir;
  write_file(dir / "config", R"(current-context: x
clusters:
- name: c
  cluster: {server: "https://10.0.0.1:6443", insecure-skip-tls-verify: true}
contexts:
- name: x
  context: {cluster: c}
)");
  auto c = load_kubeconfig((dir / "config").string());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE(c->insecure_skip_tls_verify);
  EXPECT_TRUE(c->token.empty());  // no user: no credentials
}

// Each broken kubeconfig gives an error that names the file and the part.
TEST(Kubeconfig, ErrorsNameTheFileAndTheMissingPiece) {
  struct Case {
    const char* name;
    const char* yaml;
    const char* expected;
  };
  const Case cases[] = {
      {"no current-context", "clusters: []\n", "no current-context"},
      {"missing context", "current-context: nope\ncontexts:\n- name: x\n  context: {cluster: c}\n",
       "context \"nope\""},
      {"missing cluster", "current-context: x\ncontexts:\n- name: x\n  context: {cluster: gone}\n",
       "cluster \"gone\""},
      {"missing server",
       "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: "
       "{}\n",
       "has no server"},
      {"missing user",
       "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: who}\nclusters:\n- name: c\n"
       "  cluster: {server: 'https://h'}\n",
       "user \"who\""},
      {"bad base64",
       "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n"
       "  cluster: {server: 'https://h', certificate-authority-data: '!!!'}\n",
       "certificate-authority-data is not valid base64"},
      {"certificate without key",
       "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n"
       "  cluster: {server: 'https://h'}\nusers:\n- name: u\n  user: {client-certificate: c.crt}\n",
       "no client-key"},
      {"exec plugin",
       "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n"
       "  cluster: {server: 'https://h'}\nusers:\n- name: u\n  user: {exec: {command: aws}}\n",
       "\"exec\""},
      {"CA and insecure",
       "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n"
       "  cluster: {server: 'https://h', certificate-authority: ca.crt, insecure-skip-tls-verify: true}\n",
       "insecure-skip-tls-verify"},
      {"not YAML", "current-context: [x\n", "not a valid kubeconfig"},
      {"not a URL",
       "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n"
       "  cluster: {server: 'h:6443'}\n",
       "not an http:// or https:// URL"},
  };
  TempDir dir;
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.name);
    fs::path p = dir / "config";
    write_file(p, tc.yaml);
    auto c = load_kubeconfig(p.string());
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.error().kind, ErrorKind::kInvalidArgument);
    EXPECT_NE(c.error().message.find(p.string()), std::string::npos) << c.error().message;
    EXPECT_NE(c.error().message.find(tc.expected), std::string::npos) << c.error().message;
  }
  auto missing = load_kubeconfig((dir / "absent").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find((dir / "absent").string()), std::string::npos);
}

TEST(LoadClientConfig, FlagThenEnvironmentThenHomeThenInCluster) {
  TempDir dir;
  auto kubeconfig = [](const std::string& server) {
    return "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n"
           "  cluster: {server: '" +
           server + "'}\n";
  };
  write_file(dir / "flag.yaml", kubeconfig("https://flag"));
  write_file(dir / "env.yaml", kubeconfig("https://env"));
  write_file(dir / "home/.kube/config", kubeconfig("https://home"));
  write_file(dir / "sa/token", "sa-token\n");
  write_file(dir / "sa/ca.crt", kCaPem);

  ConfigEnvironment env;
  env.kubeconfig_flag = (dir / "flag.yaml").string();
  env.kubeconfig_env = ":" + (dir / "env.yaml").string() + ":" + (dir / "other.yaml").string();
  env.home = (dir / "home").string();
  env.service_host = "10.96.0.1";
  env.service_port = "443";
  env.service_account_dir = (dir / "sa").string();

  EXPECT_EQ(load_client_config(env)->server, "https://flag");
  env.kubeconfig_flag.clear();
  EXPECT_EQ(load_client_config(env)->server, "https://env");  // the first path of the list
  env.kubeconfig_env.clear();
  EXPECT_EQ(load_client_config(env)->server, "https://home");
  env.home = (dir / "nohome").string();
  auto in_cluster = load_client_config(env);
  ASSERT_TRUE(in_cluster.ok()) << in_cluster.error().message;
  EXPECT_EQ(in_cluster->server, "https://10.96.0.1:443");
  env.service_host.clear();
  auto nothing = load_client_config(env);
  ASSERT_FALSE(nothing.ok());
  EXPECT_NE(nothing.error().message.find("KUBERNETES_SERVICE_HOST"), std::string::npos);
}

TEST(InCluster, TokenAndCaFromTheServiceAccountDirectory) {
  TempDir dir;
  write_file(dir / "token", "t0k3n\n");
  write_file(dir / "ca.crt", kCaPem);
  auto c = in_cluster_config("10.96.0.1", "443", dir.path().string());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->server, "https://10.96.0.1:443");
  EXPECT_EQ(c->token_file, (dir / "token").string());
  EXPECT_EQ(c->ca_file, (dir / "ca.crt").string());
  EXPECT_TRUE(c->token.empty());  // read from the file, which rotates
  EXPECT_EQ(c->source, "in-cluster");

  auto v6 = in_cluster_config("fd00:10:96::1", "6443", dir.path().string());
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->server, "https://[fd00:10:96::1]:6443");

  fs::remove(dir / "token");
  auto no_token = in_cluster_config("10.96.0.1", "443", dir.path().string());
  ASSERT_FALSE(no_token.ok());
  EXPECT_NE(no_token.error().message.find((dir / "token").string()), std::string::npos);
  EXPECT_FALSE(in_cluster_config("", "443", dir.path().string()).ok());
}

TEST(BearerTokenFile, IsReReadWhenOldAndAfterInvalidate) {
  TempDir dir;
  const fs::path file = dir / "token";
  write_file(file, "one\n");
  auto token = BearerToken::from_file(file.string(), std::chrono::hours(1));
  EXPECT_EQ(*token.get(), "one");
  write_file(file, "two");
  EXPECT_EQ(*token.get(), "one");   // not yet due
  EXPECT_TRUE(token.invalidate());  // a 401
  EXPECT_EQ(*token.get(), "two");

  auto every_time = BearerToken::from_file(file.string(), std::chrono::seconds(0));
  EXPECT_EQ(*every_time.get(), "two");
  write_file(file, "three");
  EXPECT_EQ(*every_time.get(), "three");
  fs::remove(file);
  auto kept = every_time.get();  // a failed re-read keeps the last good token
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, "three");

  auto missing = BearerToken::from_file((dir / "absent").string());
  EXPECT_FALSE(missing.get().ok());

  auto fixed = BearerToken::fixed("static");
  EXPECT_FALSE(fixed.invalidate());
  EXPECT_EQ(*fixed.get(), "static");
}

TEST(ClientCreate, RefusesBrokenTlsMaterialAndUrls) {
  ClientConfig bad_ca;
  bad_ca.server = "https://127.0.0.1:6443";
  bad_ca.ca_data = "not a certificate";
  auto c1 = Client::create(bad_ca);
  ASSERT_FALSE(c1.ok());
  EXPECT_NE(c1.error().message.find("certificate authority"), std::string::npos) << c1.error().message;

  ClientConfig missing_ca = bad_ca;
  missing_ca.ca_data.clear();
  missing_ca.ca_file = "/nonexistent/ca.crt";
  auto c2 = Client::create(missing_ca);
  ASSERT_FALSE(c2.ok());
  EXPECT_NE(c2.error().message.find("/nonexistent/ca.crt"), std::string::npos);

  ClientConfig missing_token;
  missing_token.server = "http://127.0.0.1:1";
  missing_token.token_file = "/nonexistent/token";
  EXPECT_FALSE(Client::create(missing_token).ok());

  ClientConfig not_http;
  not_http.server = "ftp://127.0.0.1";
  EXPECT_FALSE(Client::create(not_http).ok());

  ClientConfig plain;
  plain.server = "http://127.0.0.1:1";
  EXPECT_TRUE(Client::create(plain).ok());
}

TEST(ClientCreate, ConnectionRefusedIsAnErrorWithoutHttpCode) {
  ClientConfig plain;
  plain.server = "http://127.0.0.1:1";
  auto client = Client::create(plain);
  ASSERT_TRUE(client.ok());
  auto v = (*client)->version();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code, 0);
  EXPECT_NE(v.error().to_string().find("GET /version"), std::string::npos) << v.error().to_string();
}

// ---- TLS against openssl s_server ----------------------------------------


bool connectable(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

// A CA, a server certificate for 127.0.0.1 and a client certificate signed
// by it, another CA that signed nothing, and a directory s_server serves.
class TlsFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string d = dir_.path().string();
    std::string script =
        "set -e; cd " + d +
        "; openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=kpx-test-ca"
        " 2>/dev/null"
        "; openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 2 -subj /CN=other"
        " 2>/dev/null"
        "; printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext"
        "; openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=apiserver "
        "2>/dev/null"
        "; openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2"
        " -extfile san.ext 2>/dev/null"
        "; openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=kpx 2>/dev/null"
        "; openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2"
        " 2>/dev/null"
        "; mkdir www; printf '{\"gitVersion\":\"v1.99.0-tls\"}' > www/version";
    ASSERT_EQ(kpx::testing::sh(script), 0);
  }

  // s_server answering GET /version from www/; with require_client_cert it
  // refuses clients without a certificate of the CA.
  uint16_t start_server(bool require_client_cert) {
    uint16_t port = net::free_loopback_port();
    std::string d = dir_.path().string();
    std::string cmd = "cd " + d +
                      "/www && exec openssl s_server -quiet -WWW -accept 127.0.0.1:" + std::to_string(port) +
                      " -cert ../server.crt -key ../server.key" +
                      (require_client_cert ? " -Verify 1 -CAfile ../ca.crt" : "") + " >/dev/null 2>&1";
    procs_.spawn({"sh", "-c", cmd});
    for (int i = 0; i < 200 && !connectable(port); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return port;
  }

  ClientConfig config(uint16_t port) const {
    ClientConfig c;
    c.server = "https://127.0.0.1:" + std::to_string(port);
    c.ca_file = (dir_ / "ca.crt").string();
    return c;
  }

  TempDir dir_;
  kpx::testing::ScopedProcesses procs_;
};

TEST_F(TlsFixture, VerifiesTheServerAgainstTheClusterCa) {
  uint16_t port = start_server(false);
  auto good = Client::create(config(port));
  ASSERT_TRUE(good.ok()) << good.error().message;
  auto v = (*good)->version();
  ASSERT_TRUE(v.ok()) << v.error().to_string();
  EXPECT_EQ((*v)["gitVersion"], "v1.99.0-tls");

  // A server certificate of another CA is refused...
  ClientConfig wrong = config(port);
  wrong.ca_file = (dir_ / "other.crt").string();
  auto refused = Client::create(wrong);
  ASSERT_TRUE(refused.ok()) << refused.error().message;
  auto r = (*refused)->version();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, 0);

  // ... unless verification is off.
  ClientConfig insecure = config(port);
  insecure.ca_file.clear();
  insecure.insecure_skip_tls_verify = true;
  auto loose = Client::create(insecure);
  ASSERT_TRUE(loose.ok());
  EXPECT_TRUE((*loose)->version().ok());
}

TEST_F(TlsFixture, PresentsTheClientCertificate) {
  uint16_t port = start_server(true);
  ClientConfig with_cert = config(port);
  with_cert.client_cert_file = (dir_ / "client.crt").string();
  with_cert.client_key_file = (dir_ / "client.key").string();
  auto client = Client::create(with_cert);
  ASSERT_TRUE(client.ok()) << client.error().message;
  auto v = (*client)->version();
  ASSERT_TRUE(v.ok()) << v.error().to_string();

  auto anonymous = Client::create(config(port));
  ASSERT_TRUE(anonymous.ok());
  EXPECT_FALSE((*anonymous)->version().ok());

  ClientConfig mismatched = with_cert;
  mismatched.client_key_file = (dir_ / "server.key").string();
  auto bad = Client::create(mismatched);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("does not match"), std::string::npos) << bad.error().message;
}

}  // namespace
}  // namespace kpx::k8s
