/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Service lookup and backend selection. */
#ifndef KPX_BPF_LB_H
#define KPX_BPF_LB_H

#include "common.h"
#include "maps.h"
#include "parse.h"

static __always_inline struct kpx_service_value *lb_lookup_service(const struct pkt4 *p)
{
	struct kpx_service_key_v4 key = {
		.addr = p->ip->daddr,
		.port = p->dport,
		.proto = p->proto,
		.scope = KPX_SCOPE_INTERNAL,
	};

	return bpf_map_lookup_elem(&kpx_svc_v4, &key);
}

/*
 * Pick a backend uniformly at random among the service's live slots. If the
 * slot (or its backend) vanished because userspace flipped the generation between our two
 * lookups, read the service again once: the new generation is complete.
 */
static __always_inline struct kpx_backend_value_v4 *
lb_pick_backend(const struct pkt4 *p, struct kpx_service_value *svc)
{
	struct kpx_backend_slot_key slot = {};
	__u32 *backend_id;
	int attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		__u32 count = svc->backend_count;

		if (count == 0)
			return 0;
		slot.svc_id = svc->svc_id;
		slot.generation = svc->generation;
		slot.slot = bpf_get_prandom_u32() % count;
		backend_id = bpf_map_lookup_elem(&kpx_svc_be, &slot);
		if (backend_id) {
			struct kpx_backend_value_v4 *be = bpf_map_lookup_elem(&kpx_be_v4, backend_id);

			if (be)
				return be;
		}
		svc = lb_lookup_service(p);
		if (!svc)
			return 0;
	}
	return 0;
}

#endif
