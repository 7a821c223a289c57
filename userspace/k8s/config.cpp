#include "k8s/config.h"

#include <yaml-cpp/yaml.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

namespace kpx::k8s {

namespace fs = std::filesystem;

namespace {

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

bool is_regular_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

// Reads one kubeconfig: the YAML tree and the helpers that turn its fields
// into ClientConfig values, with errors that name the file and the field.
class KubeconfigReader {
 public:
  explicit KubeconfigReader(std::string path) : path_(std::move(path)), dir_(fs::path(path_).parent_path()) {}

  Result<ClientConfig> read() {
    try {
      return read_unchecked();
    } catch (const YAML::Exception& e) {
      // yaml-cpp reports syntax errors and wrong node types by throwing.
      return fail(std::string("not a valid kubeconfig: ") + e.what());
    }
  }

 private:
  Result<ClientConfig> read_unchecked() {
    std::ifstream in(path_);
    if (!in) return fail("cannot be read");
    YAML::Node root = YAML::Load(in);
    if (!root.IsMap()) return fail("not a valid kubeconfig: expected a YAML mapping at the top");

    std::string context_name = scalar(root, "current-context");
    if (context_name.empty()) return fail("no current-context is set");
    YAML::Node context = named(root, "contexts", "context", context_name);
    if (!context) return fail("context \"" + context_name + "\" (the current-context) is not in contexts");

    std::string cluster_name = scalar(context, "cluster");
    if (cluster_name.empty()) return fail("context \"" + context_name + "\" names no cluster");
    YAML::Node cluster = named(root, "clusters", "cluster", cluster_name);
    if (!cluster)
      return fail("cluster \"" + cluster_name + "\" (of context \"" + context_name +
                  "\") is not in clusters");

    ClientConfig c;
    c.source = "kubeconfig " + path_ + ", context " + context_name;
    const std::string where_cluster = "cluster \"" + cluster_name + "\"";
    c.server = scalar(cluster, "server");
    if (c.server.empty()) return fail(where_cluster + " has no server");
    if (c.server.rfind("https://", 0) != 0 && c.server.rfind("http://", 0) != 0)
      return fail(where_cluster + ": server \"" + c.server + "\" is not an http:// or https:// URL");
    while (c.server.size() > 8 && c.server.back() == '/') c.server.pop_back();
    c.ca_file = file_path(scalar(cluster, "certificate-authority"));
    auto ca = data(cluster, "certificate-authority-data", where_cluster);
    if (!ca) return ca.error();
    c.ca_data = std::move(*ca);
    c.insecure_skip_tls_verify = flag(cluster, "insecure-skip-tls-verify");
    if (c.insecure_skip_tls_verify && (!c.ca_file.empty() || !c.ca_data.empty()))
      return fail(where_cluster +
                  ": a certificate authority and insecure-skip-tls-verify are both set (as kubectl, "
                  "kpx refuses the combination)");

    std::string user_name = scalar(context, "user");
    if (user_name.empty()) return c;  // no credentials: the server decides
    YAML::Node user = named(root, "users", "user", user_name);
    if (!user)
      return fail("user \"" + user_name + "\" (of context \"" + context_name + "\") is not in users");
    const std::string where_user = "user \"" + user_name + "\"";
    c.token = scalar(user, "token");
    c.token_file = file_path(scalar(user, "tokenFile"));
    c.client_cert_file = file_path(scalar(user, "client-certificate"));
    c.client_key_file = file_path(scalar(user, "client-key"));
    auto cert = data(user, "client-certificate-data", where_user);
    if (!cert) return cert.error();
    c.client_cert_data = std::move(*cert);
    auto key = data(user, "client-key-data", where_user);
    if (!key) return key.error();
    c.client_key_data = std::move(*key);

    bool has_cert = !c.client_cert_file.empty() || !c.client_cert_data.empty();
    bool has_key = !c.client_key_file.empty() || !c.client_key_data.empty();
    if (has_cert != has_key)
      return fail(where_user + " has a client " +
                  (has_cert ? "certificate but no client-key" : "key but no client-certificate"));
    if (c.token.empty() && c.token_file.empty() && !has_cert) {
      for (const char* unsupported : {"exec", "auth-provider", "username"})
        if (user[unsupported])
          return fail(where_user + " authenticates with \"" + unsupported +
                      "\", which kpx does not support (use token, tokenFile or a client certificate)");
    }
    return c;
  }

  Error fail(const std::string& what) const { return invalid_argument("kubeconfig " + path_ + ": " + what); }

  // A string field; "" when absent or null.
  static std::string scalar(const YAML::Node& map, const char* key) {
    YAML::Node n = map[key];
    if (!n || n.IsNull()) return "";
    if (!n.IsScalar()) throw YAML::Exception(n.Mark(), std::string("field \"") + key + "\" must be a string");
    return n.as<std::string>();
  }

  static bool flag(const YAML::Node& map, const char* key) {
    YAML::Node n = map[key];
    if (!n || n.IsNull()) return false;
    return n.as<bool>();
  }

  // The inner mapping of the entry named `name` in list `list_key`:
  // contexts: [{name: x, context: {...}}]. Null when not found.
  static YAML::Node named(const YAML::Node& root, const char* list_key, const char* inner_key,
                          const std::string& name) {
    YAML::Node list = root[list_key];
    if (!list || !list.IsSequence()) return YAML::Node(YAML::NodeType::Undefined);
    for (const auto& entry : list) {
      if (!entry.IsMap() || scalar(entry, "name") != name) continue;
      YAML::Node inner = entry[inner_key];
      // An entry without its mapping still exists: everything in it is unset.
      return inner && inner.IsMap() ? inner : YAML::Node(YAML::NodeType::Map);
    }
    return YAML::Node(YAML::NodeType::Undefined);
  }

  std::string file_path(const std::string& p) const {
    if (p.empty() || fs::path(p).is_absolute()) return p;
    return (dir_ / p).lexically_normal().string();
  }

  Result<std::string> data(const YAML::Node& map, const char* key, const std::string& where) const {
    std::string text = scalar(map, key);
    if (text.empty()) return std::string();
    auto decoded = decode_base64(text);
    if (!decoded) return fail(where + ": " + key + " is not valid base64");
    return decoded;
  }

  std::string path_;
  fs::path dir_;
};

}  // namespace

Result<std::string> decode_base64(const std::string& text) {
  static constexpr auto kTable = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(chars[i])] = static_cast<int8_t>(i);
    return t;
  }();
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  size_t padding = 0;
  for (char ch : text) {
    if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') continue;
    if (ch == '=') {
      ++padding;
      continue;
    }
    int v = kTable[static_cast<unsigned char>(ch)];
    if (v < 0 || padding > 0) return invalid_argument("invalid base64");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // Leftover bits: 0 (complete), 2 (one '=' short) or 4 (two); 6 is impossible.
  if (bits == 6 || padding > 2) return invalid_argument("invalid base64");
  return out;
}

ConfigEnvironment ConfigEnvironment::from_process(const std::string& kubeconfig_flag) {
  ConfigEnvironment env;
  env.kubeconfig_flag = kubeconfig_flag;
  env.kubeconfig_env = env_or_empty("KUBECONFIG");
  env.home = env_or_empty("HOME");
  env.service_host = env_or_empty("KUBERNETES_SERVICE_HOST");
  env.service_port = env_or_empty("KUBERNETES_SERVICE_PORT");
  return env;
}

Result<ClientConfig> load_client_config(const std::string& kubeconfig_flag) {
  return load_client_config(ConfigEnvironment::from_process(kubeconfig_flag));
}

Result<ClientConfig> load_client_config(const ConfigEnvironment& env) {
  if (!env.kubeconfig_flag.empty()) return load_kubeconfig(env.kubeconfig_flag);
  if (!env.kubeconfig_env.empty()) {
    std::stringstream list(env.kubeconfig_env);
    std::string first;
    while (std::getline(list, first, ':') && first.empty()) {
    }
    if (!first.empty()) return load_kubeconfig(first);
  }
  if (!env.home.empty()) {
    std::string home_config = (fs::path(env.home) / ".kube" / "config").string();
    if (is_regular_file(home_config)) return load_kubeconfig(home_config);
  }
  if (!env.service_host.empty())
    return in_cluster_config(env.service_host, env.service_port, env.service_account_dir);
  return invalid_argument(
      "no API server configuration: no --kubeconfig, no $KUBECONFIG, no ~/.kube/config, and not in a pod "
      "($KUBERNETES_SERVICE_HOST is unset)");
}

Result<ClientConfig> load_kubeconfig(const std::string& path) {
  if (!is_regular_file(path)) return invalid_argument("kubeconfig " + path + ": no such file");
  return KubeconfigReader(path).read();
}

Result<ClientConfig> in_cluster_config(const std::string& host, const std::string& port,
                                       const std::string& service_account_dir) {
  if (host.empty() || port.empty())
    return invalid_argument(
        "in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both be set");
  ClientConfig c;
  c.source = "in-cluster";
  // An IPv6 address needs brackets in a URL.
  c.server = "https://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + port;
  c.token_file = (fs::path(service_account_dir) / "token").string();
  if (!is_regular_file(c.token_file))
    return invalid_argument("in-cluster configuration: no service account token at " + c.token_file);
  std::string ca = (fs::path(service_account_dir) / "ca.crt").string();
  if (!is_regular_file(ca)) return invalid_argument("in-cluster configuration: no cluster CA at " + ca);
  c.ca_file = ca;
  return c;
}

}  // namespace kpx::k8s
