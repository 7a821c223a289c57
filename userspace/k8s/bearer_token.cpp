#include "k8s/bearer_token.h"

#include <fstream>
#include <sstream>

#include "log/log.h"

namespace kpx::k8s {

namespace {

Result<std::string> read_token_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return not_found("bearer token file " + path + " cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string t = ss.str();
  // Files written by hand or by kubelet may end with a newline.
  size_t end = t.find_last_not_of(" \t\r\n");
  t.erase(end == std::string::npos ? 0 : end + 1);
  size_t begin = t.find_first_not_of(" \t\r\n");
  t.erase(0, begin == std::string::npos ? t.size() : begin);
  if (t.empty()) return invalid_argument("bearer token file " + path + " is empty");
  return t;
}

}  // namespace

BearerToken BearerToken::fixed(std::string token) {
  BearerToken b;
  b.token_ = std::move(token);
  b.stale_ = false;
  return b;
}

BearerToken BearerToken::from_file(std::string path, Clock::duration max_age) {
  BearerToken b;
  b.path_ = std::move(path);
  b.max_age_ = max_age;
  return b;
}

BearerToken::BearerToken(BearerToken&& other) noexcept { *this = std::move(other); }

BearerToken& BearerToken::operator=(BearerToken&& other) noexcept {
  if (this == &other) return *this;
  std::scoped_lock lk(mu_, other.mu_);
  token_ = std::move(other.token_);
  path_ = std::move(other.path_);
  max_age_ = other.max_age_;
  read_at_ = other.read_at_;
  stale_ = other.stale_;
  return *this;
}

Result<std::string> BearerToken::get() {
  std::lock_guard lk(mu_);
  if (path_.empty()) return token_;
  auto now = Clock::now();
  if (stale_ || now - read_at_ >= max_age_) {
    auto t = read_token_file(path_);
    if (t) {
      token_ = std::move(*t);
      read_at_ = now;
      stale_ = false;
    } else if (token_.empty()) {
      return t.error();
    } else {
      log::warning(t.error().message + "; keeping the token read before");
      read_at_ = now;  // retry at the next period, not on every request
      stale_ = false;
    }
  }
  return token_;
}

bool BearerToken::invalidate() {
  std::lock_guard lk(mu_);
  if (path_.empty()) return false;
  stale_ = true;
  return true;
}

}  // namespace kpx::k8s
