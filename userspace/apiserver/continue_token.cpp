#include "apiserver/continue_token.h"

#include <cstring>

namespace kpx::apiserver {

namespace {

constexpr const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

ApiStatus expired() {
  return expired_status(
      "The provided continue parameter is too old to display a consistent list result. You can start a new "
      "list "
      "without the continue parameter.");
}

}  // namespace

std::string base64url_encode(const std::string& in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 0x3f]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 0x3f]);
  return out;
}

bool base64url_decode(const std::string& in, std::string* out) {
  out->clear();
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const char* p = c ? std::strchr(kAlphabet, c) : nullptr;
    if (!p) {
      // Accept the standard alphabet too.
      if (c == '+')
        p = kAlphabet + 62;
      else if (c == '/')
        p = kAlphabet + 63;
      else
        return false;
    }
    acc = (acc << 6) | static_cast<uint32_t>(p - kAlphabet);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return true;
}

std::string ContinueTokens::issue(const ResourceType& t, uint64_t rv, const ObjectKey& last) const {
  std::string start = (t.namespaced ? last.ns + "/" : "") + last.name + std::string(1, '\0');
  Json j = {
      {"v", "meta.k8s.io/v1"}, {"rv", rv}, {"start", start}, {"epoch", epoch_.load()}, {"issued", now_ms()}};
  return base64url_encode(j.dump());
}

ApiResult<ContinuePoint> ContinueTokens::redeem(const ResourceType& t, const std::string& token) const {
  std::string raw;
  Json j;
  if (base64url_decode(token, &raw)) j = Json::parse(raw, nullptr, false);
  if (!j.is_object() || string_at(j, "v") != "meta.k8s.io/v1" || !j["rv"].is_number_unsigned() ||
      !j["start"].is_string() || !j["epoch"].is_number_unsigned() || !j["issued"].is_number())
    return bad_request_status(
        "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)");
  if (j["epoch"].get<uint64_t>() != epoch_.load()) return expired();
  if (now_ms() - j["issued"].get<int64_t>() > ttl_ms_.load()) return expired();
  std::string start = j["start"].get<std::string>();
  if (!start.empty() && start.back() == '\0') start.pop_back();
  ContinuePoint p{j["rv"].get<uint64_t>(), {}};
  size_t slash = start.find('/');
  if (t.namespaced) {
    if (slash == std::string::npos) return bad_request_status("continue key is not valid: bad start key");
    p.after = ObjectKey{start.substr(0, slash), start.substr(slash + 1)};
  } else {
    p.after = ObjectKey{"", start};
  }
  return p;
}

}  // namespace kpx::apiserver
