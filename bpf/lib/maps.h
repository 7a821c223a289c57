/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The kpx maps, defined from the one list in kpx/abi.h (KPX_MAPS) and
 * pinned by name under the instance's bpffs directory so that every program
 * of an instance, the CLI and a restarted agent share them. */
#ifndef KPX_BPF_MAPS_H
#define KPX_BPF_MAPS_H

#include "common.h"

#define KPX_BPF_MAP(_name, _type, _key, _value, _max)       \
	struct {                                             \
		__uint(type, BPF_MAP_TYPE_##_type);          \
		__uint(max_entries, _max);                   \
		__uint(map_flags, KPX_MAP_FLAGS_##_type);    \
		__type(key, _key);                           \
		__type(value, _value);                       \
		__uint(pinning, LIBBPF_PIN_BY_NAME);         \
	} _name SEC(".maps");

KPX_MAPS(KPX_BPF_MAP)

#undef KPX_BPF_MAP

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

/* The classification filter's bits for slot (see enum kpx_filter_bits). */
static __always_inline __u32 filter_bits(__u32 slot)
{
	__u32 word = slot >> 3;
	__u64 *w = bpf_map_lookup_elem(&kpx_filter, &word);

	return w ? (__u32)(*w >> ((slot & 7) * 8)) & 0xff : 0;
}

#endif
