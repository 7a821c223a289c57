// kpx-bench datapath, the uplink cases: kpx_from_uplink
// (bpf/kpx_uplink.bpf.c) under BPF_PROG_TEST_RUN on NodePort traffic, in a
// network namespace of the bench's own that looks like a lab node, against
// the floor the pod cases use for their one-run cases (the empty tc
// program, one call per frame), with the same Service counts as the pod
// cases.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "bpf/object.h"
#include "bpf/pinned_maps.h"
#include "dataplane/dataplane.h"
#include "prog_run.h"

namespace kpx::bench {

// Per case, per Service count: one value per round (the median over the
// round's frames, ns per frame).
struct UplinkResults {
  std::map<std::string, std::map<uint32_t, std::vector<double>>> cases;
  std::map<uint32_t, uint32_t> prefill_flows;
  uint32_t frames = 0;
};

// The source ports kpx_from_uplink gives the flows it masquerades.
struct SnatRange {
  uint16_t min = 0, max = 0;
};

class UplinkBench {
 public:
  // The node namespace, a pin directory (kpx-bench-<pid>-uplink) with
  // kpx_lxc and kpx_uplink on its maps, the node's addresses and two
  // NodePorts (one to a backend on another node, one to a local pod),
  // through dataplane::Dataplane as the agent writes them.
  static Result<std::unique_ptr<UplinkBench>> create(uint32_t frames);
  ~UplinkBench();

  // One round at n Services: the ClusterIP Services and the conntrack
  // prefill made n, then every case on `frames` frames, interleaved.
  Status measure(uint32_t n, UplinkResults& res);

 private:
  UplinkBench() = default;
  Status set_services(uint32_t n);
  Status set_prefill(uint32_t flows);
  // The established cases' flows opened (their FORWARD keys added to made)
  // and checked; the source ports they were given (remote, local).
  Result<std::pair<uint16_t, uint16_t>> open_established(std::vector<kpx_ct_key_v4>& made);

  uint32_t frames_ = 0;
  BenchNetns netns_{"-node"};
  BenchPinDir pin_{"-uplink"};
  std::optional<bpf::LxcObject> lxc_;
  std::optional<bpf::UplinkObject> uplink_;
  std::optional<bpf::PinnedMaps> maps_;
  std::optional<dataplane::Dataplane> dp_;  // holds &*maps_
  std::optional<Counters> ctrs_;
  std::unique_ptr<kpx_floor, FloorDeleter> empty_;  // the empty tc program, a reference
  uint32_t up_if_ = 0, veth_ = 0;
  uint32_t ct_room_ = 0;
  SnatRange snat_;
  uint32_t cur_services_ = 0, cur_prefill_ = 0;
};

// The uplink's part of the table (stderr style of the pod cases), and of
// the JSON.
void print_uplink_table(const UplinkResults& res, const std::vector<uint32_t>& counts, std::ostream& out);
nlohmann::json uplink_json(const UplinkResults& res, const std::vector<uint32_t>& counts);

}  // namespace kpx::bench
