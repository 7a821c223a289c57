#include "apiserver/media.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <string_view>

namespace kpx::apiserver {

namespace {

std::string trim_lower(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  std::string r(s);
  std::transform(r.begin(), r.end(), r.begin(), [](unsigned char c) { return std::tolower(c); });
  return r;
}

struct MediaRange {
  std::string type;  // "application/json"
  std::map<std::string, std::string> params;
};

MediaRange parse_range(std::string_view s) {
  MediaRange m;
  size_t semi = s.find(';');
  m.type = trim_lower(s.substr(0, semi));
  while (semi != std::string_view::npos) {
    s.remove_prefix(semi + 1);
    semi = s.find(';');
    std::string_view p = s.substr(0, semi);
    size_t eq = p.find('=');
    if (eq == std::string_view::npos) continue;
    m.params[trim_lower(p.substr(0, eq))] = std::string(trim_lower(p.substr(eq + 1)));
  }
  return m;
}

}  // namespace

Representation negotiate(const std::string& accept, bool table_ok) {
  if (trim_lower(accept).empty()) return Representation::kJson;
  std::string_view rest = accept;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    MediaRange m = parse_range(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    bool json_like = m.type == "application/json" || m.type == "*/*" || m.type == "application/*";
    if (!json_like) continue;
    auto as = m.params.find("as");
    if (as == m.params.end()) return Representation::kJson;
    if (as->second == "table" && m.params["g"] == "meta.k8s.io" && m.params["v"] == "v1" && table_ok)
      return Representation::kTable;
    // Other conversions (PartialObjectMetadata, aggregated discovery) are not
    // served: the client's next choice applies.
  }
  return Representation::kNone;
}

std::string media_type(const std::string& content_type) {
  return trim_lower(std::string_view(content_type).substr(0, content_type.find(';')));
}

http::Response json_response(int code, const Json& body) {
  http::Response r;
  r.code = code;
  r.body = to_text(body);
  return r;
}

http::Response status_response(const ApiStatus& s) {
  http::Response r = json_response(s.code, status_json(s));
  if (s.retry_after_s > 0) r.headers.emplace_back("Retry-After", std::to_string(s.retry_after_s));
  return r;
}

}  // namespace kpx::apiserver
