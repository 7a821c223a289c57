#include "dataplane/service_writer.h"

namespace kpx::dataplane {

Status ServiceWriter::set(const net::ServiceAddr& svc, std::vector<net::BackendAddr> backends) {
  auto dp = Dataplane::recover(maps_);
  if (!dp) return dp.error();
  return dp->upsert(cluster_ip_key(svc), frontend_of(std::move(backends)));
}

Result<bool> ServiceWriter::remove(const net::ServiceAddr& svc) {
  auto dp = Dataplane::recover(maps_);
  if (!dp) return dp.error();
  return dp->remove(cluster_ip_key(svc));
}

std::vector<ServiceEntry> ServiceWriter::list() const {
  std::vector<ServiceEntry> out;
  auto dp = Dataplane::recover(maps_);
  if (!dp) return out;
  for (const auto& [key, st] : dp->frontends()) {
    if (key.scope != Scope::kClusterIP || !key.addr.v4()) continue;  // the CLI programs ClusterIPs
    out.push_back({{*key.addr.v4(), key.port, key.proto}, st.svc_id, st.slot_base, st.cluster()});
  }
  return out;
}

}  // namespace kpx::dataplane
