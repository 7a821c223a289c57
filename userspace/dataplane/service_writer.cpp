#include "dataplane/service_writer.h"

namespace kpx::dataplane {

Status ServiceWriter::set(const net::ServiceAddr& svc, std::vector<net::BackendAddr> backends) {
  auto dp = Dataplane::recover(maps_);
  if (!dp) return dp.error();
  return dp->upsert(svc, std::move(backends));
}

Result<bool> ServiceWriter::remove(const net::ServiceAddr& svc) {
  auto dp = Dataplane::recover(maps_);
  if (!dp) return dp.error();
  return dp->remove(svc);
}

std::vector<ServiceEntry> ServiceWriter::list() const {
  std::vector<ServiceEntry> out;
  auto dp = Dataplane::recover(maps_);
  if (!dp) return out;
  for (const auto& [svc, st] : dp->services()) out.push_back({svc, st.svc_id, st.slot_base, st.backends});
  return out;
}

}  // namespace kpx::dataplane
