/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The kpx maps, pinned by name under the instance's bpffs directory so that
 * every program of an instance, the CLI and a restarted agent share them. */
#ifndef KPX_BPF_MAPS_H
#define KPX_BPF_MAPS_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KPX_MAX_SERVICES);
	__type(key, struct kpx_service_key_v4);
	__type(value, struct kpx_service_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_svc_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KPX_MAX_SERVICE_BACKENDS);
	__type(key, struct kpx_backend_slot_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_svc_be SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KPX_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct kpx_backend_value_v4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_be_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KPX_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct kpx_revnat_value_v4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_revnat_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KPX_MAX_CONNTRACK);
	__type(key, struct kpx_ct_key_v4);
	__type(value, struct kpx_ct_value_v4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_ct_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KPX_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kpx_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KPX_CT_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct kpx_ct_cache_entry_v4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_ct_cache_v4 SEC(".maps");

static __always_inline void count(enum kpx_counter reason)
{
	__u32 key = reason;
	__u64 *v = bpf_map_lookup_elem(&kpx_counters, &key);

	if (v)
		*v += 1; /* per-CPU: no atomic needed */
}

static __always_inline const struct kpx_config *config(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&kpx_config, &key);
}

#endif
