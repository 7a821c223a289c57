#include "lab/service_env.h"

#include <algorithm>
#include <cctype>
#include <map>

namespace kpx::lab {

namespace {

using apiserver::Json;
using apiserver::string_at;

std::string env_name(std::string s) {
  for (char& c : s) c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string host_port(const std::string& ip, const std::string& port) {
  return ip.find(':') == std::string::npos ? ip + ":" + port : "[" + ip + "]:" + port;
}

void append_service(const Json& svc, std::vector<std::string>& out) {
  const Json& spec = svc["spec"];
  std::string ip = string_at(spec, "clusterIP");
  std::string prefix = env_name(string_at(svc["metadata"], "name"));
  out.push_back(prefix + "_SERVICE_HOST=" + ip);
  const Json& ports = spec.contains("ports") && spec["ports"].is_array() ? spec["ports"] : Json::array();
  auto number = [](const Json& p) {
    return p.contains("port") && p["port"].is_number_integer() ? std::to_string(p["port"].get<int64_t>()) : "0";
  };
  if (ports.empty()) return;
  out.push_back(prefix + "_SERVICE_PORT=" + number(ports[0]));
  for (const Json& p : ports) {
    std::string name = string_at(p, "name");
    if (!name.empty()) out.push_back(prefix + "_SERVICE_PORT_" + env_name(name) + "=" + number(p));
  }
  for (size_t i = 0; i < ports.size(); ++i) {
    std::string proto = string_at(ports[i], "protocol");
    if (proto.empty()) proto = "TCP";
    std::string url = lower(proto) + "://" + host_port(ip, number(ports[i]));
    if (i == 0) out.push_back(prefix + "_PORT=" + url);
    std::string port_prefix = prefix + "_PORT_" + number(ports[i]) + "_" + proto;
    out.push_back(port_prefix + "=" + url);
    out.push_back(port_prefix + "_PROTO=" + lower(proto));
    out.push_back(port_prefix + "_PORT=" + number(ports[i]));
    out.push_back(port_prefix + "_ADDR=" + ip);
  }
}

}  // namespace

std::vector<std::string> service_env(const std::vector<Json>& services_in_namespace) {
  std::map<std::string, const Json*> by_name;
  for (const Json& svc : services_in_namespace) {
    if (!svc.is_object() || !svc.contains("spec") || !svc["spec"].is_object() || !svc.contains("metadata")) continue;
    std::string ip = string_at(svc["spec"], "clusterIP");
    if (ip.empty() || ip == "None") continue;  // as the kubelet's IsServiceIPSet
    by_name[string_at(svc["metadata"], "name")] = &svc;
  }
  std::vector<std::string> out;
  for (const auto& [name, svc] : by_name) append_service(*svc, out);
  return out;
}

}  // namespace kpx::lab
