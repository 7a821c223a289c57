// List continue tokens: opaque to clients (base64url of JSON, like the real
// server's), naming the snapshot revision and the last key returned. They
// expire after a time, when their revision is compacted (checked by the
// store), or all at once on demand (a fault).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "apiserver/api_status.h"
#include "apiserver/store.h"

namespace kpx::apiserver {

struct ContinuePoint {
  uint64_t rv;
  ObjectKey after;
};

class ContinueTokens {
 public:
  explicit ContinueTokens(std::chrono::milliseconds ttl) : ttl_ms_(ttl.count()) {}

  std::string issue(const ResourceType& t, uint64_t rv, const ObjectKey& last) const;
  // 400 BadRequest when malformed, 410 Expired when too old or expired by a fault.
  ApiResult<ContinuePoint> redeem(const ResourceType& t, const std::string& token) const;

  void expire_all() { ++epoch_; }
  void set_ttl(std::chrono::milliseconds ttl) { ttl_ms_ = ttl.count(); }

 private:
  std::atomic<int64_t> ttl_ms_;
  std::atomic<uint64_t> epoch_{0};
};

std::string base64url_encode(const std::string& in);
bool base64url_decode(const std::string& in, std::string* out);

}  // namespace kpx::apiserver
