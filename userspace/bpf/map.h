// Typed access to a BPF map through its fd.
#pragma once

#include <bpf/bpf.h>

#include <algorithm>
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

  // Every element, read with BPF_MAP_LOOKUP_BATCH (chunk elements a
  // syscall): what the GC and recovery scan. Hash maps may show an element
  // twice or miss one changed during the scan, as get_next_key does.
  // False if the kernel refused batching (the caller falls back to for_each).
  bool for_each_batch(const std::function<void(const K&, const V&)>& fn, uint32_t chunk = 4096) const {
    std::vector<K> keys(chunk);
    std::vector<V> values(chunk);
    K out_batch{};
    bool first = true;
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    for (;;) {
      uint32_t count = chunk;
      int rc = bpf_map_lookup_batch(fd_.get(), first ? nullptr : &out_batch, &out_batch, keys.data(),
                                    values.data(), &count, &opts);
      if (rc != 0 && rc != -ENOENT) {
        if (first) return false;
        return true;  // the map changed under the scan: what was read stands
      }
      for (uint32_t i = 0; i < count; ++i) fn(keys[i], values[i]);
      if (rc == -ENOENT) return true;
      first = false;
    }
  }
  // for_each_batch, or for_each where batching is not available.
  void scan(const std::function<void(const K&, const V&)>& fn) const {
    if (!for_each_batch(fn)) for_each(fn);
  }
  // The keys, by BPF_MAP_DELETE_BATCH in chunks; missing keys are skipped.
  // Returns how many were deleted.
  size_t erase_many(const std::vector<K>& keys) {
    size_t deleted = 0, i = 0;
    while (i < keys.size()) {
      uint32_t done = 0;
      uint32_t n = static_cast<uint32_t>(std::min<size_t>(keys.size() - i, 4096));
      Status st = erase_batch(keys.data() + i, n, &done);
      deleted += std::min<uint32_t>(done, n);
      i += std::min<uint32_t>(done, n);
      if (st.ok()) continue;
      if (i < keys.size()) {
        if (erase(keys[i])) ++deleted;  // the key the batch stopped at (ENOENT: gone already)
        ++i;
      }
    }
    return deleted;
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
