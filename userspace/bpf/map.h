// Typed access to a BPF map through its fd.
#pragma once

#include <bpf/bpf.h>

#include <cerrno>
#include <functional>
#include <optional>
#include <vector>

#include "bpf/fd.h"
#include "status/status.h"

namespace kpx::bpf {

template <typename K, typename V>
class Map {
 public:
  Map() = default;
  explicit Map(UniqueFd fd) : fd_(std::move(fd)) {}
  int fd() const { return fd_.get(); }

  std::optional<V> lookup(const K& k) const {
    V v{};
    if (bpf_map_lookup_elem(fd_.get(), &k, &v) != 0) return std::nullopt;
    return v;
  }
  Status update(const K& k, const V& v, uint64_t flags = BPF_ANY) {
    if (int rc = bpf_map_update_elem(fd_.get(), &k, &v, flags); rc != 0)
      return errno_error("bpf map update", rc);
    return {};
  }
  // True if the key was there.
  bool erase(const K& k) { return bpf_map_delete_elem(fd_.get(), &k) == 0; }

  // Every key, then each value looked up. Entries deleted meanwhile are
  // skipped. The callback sees a consistent element each time.
  void for_each(const std::function<void(const K&, const V&)>& fn) const {
    for (const K& k : keys()) {
      if (auto v = lookup(k)) fn(k, *v);
    }
  }
  std::vector<K> keys() const {
    std::vector<K> out;
    K cur{}, next{};
    const K* prev = nullptr;
    while (bpf_map_get_next_key(fd_.get(), prev, &next) == 0) {
      out.push_back(next);
      cur = next;
      prev = &cur;
    }
    return out;
  }

 private:
  UniqueFd fd_;
};

}  // namespace kpx::bpf
