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
  using key_type = K;
  using value_type = V;
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

  // n elements in one syscall (BPF_MAP_UPDATE_BATCH; hash and array maps).
  // The kernel writes them in order and stops at the first that fails:
  // *done says how many were written (all of them on success); the failed
  // one and those after it are not in the map.
  Status update_batch(const K* keys, const V* values, uint32_t n, uint32_t* done, uint64_t flags = BPF_ANY) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = flags);
    *done = n;
    if (int rc = bpf_map_update_batch(fd_.get(), keys, values, done, &opts); rc != 0)
      return errno_error("bpf map update batch", rc);
    return {};
  }
  // The same for deletes (BPF_MAP_DELETE_BATCH): a key that is not there
  // stops the batch with ENOENT, *done keys before it deleted.
  Status erase_batch(const K* keys, uint32_t n, uint32_t* done) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    *done = n;
    if (int rc = bpf_map_delete_batch(fd_.get(), keys, done, &opts); rc != 0)
      return errno_error("bpf map delete batch", rc);
    return {};
  }

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
