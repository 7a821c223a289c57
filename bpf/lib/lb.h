/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Frontend lookup and backend selection. */
#ifndef KPX_BPF_LB_H
#define KPX_BPF_LB_H

#include "common.h"
#include "maps.h"
#include "parse.h"

/*
 * The frontend of scope `scope` for the packet's destination, copied into
 * *svc. The copy is checked against the key (kpx_service_check): a value
 * read while userspace replaced it, or while the kernel reused its element
 * for another key, fails the check and is read once more. Returns 0 when
 * there is no (consistent) frontend.
 */
static __always_inline int lb_lookup_key(__be32 addr, __be16 port, __u8 proto, __u8 scope,
					 struct kpx_service_value *svc)
{
	struct kpx_service_key_v4 key = {
		.addr = addr,
		.port = port,
		.proto = proto,
		.scope = scope,
	};
	int attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		struct kpx_service_value *v = bpf_map_lookup_elem(&kpx_svc_v4, &key);

		if (!v)
			return 0;
		__builtin_memcpy(svc, v, sizeof(*svc));
		if (svc->check == kpx_service_check(&key, svc))
			return 1;
	}
	return 0;
}

static __always_inline int lb_lookup_service(const struct pkt4 *p, __u8 scope, struct kpx_service_value *svc)
{
	return lb_lookup_key(p->ip->daddr, p->dport, p->proto, scope, svc);
}

/* The NodePort frontend for a packet to one of the node's addresses: the
 * one on that address (--nodeport-addresses), else the one on every node
 * address (address 0). */
static __always_inline int lb_lookup_nodeport_key(__be32 addr, __be16 port, __u8 proto,
						  struct kpx_service_value *svc)
{
	return lb_lookup_key(addr, port, proto, KPX_SCOPE_NODE_PORT, svc) ||
	       lb_lookup_key(0, port, proto, KPX_SCOPE_NODE_PORT, svc);
}

static __always_inline int lb_lookup_nodeport(const struct pkt4 *p, struct kpx_service_value *svc)
{
	return lb_lookup_nodeport_key(p->ip->daddr, p->dport, p->proto, svc);
}

/* Whether a new flow from saddr may reach the frontend: always, unless its
 * loadBalancerSourceRanges (KPX_SVC_F_SOURCE_RANGES) exclude saddr. */
static __always_inline int lb_source_allowed(const struct kpx_service_value *svc, __be32 saddr)
{
	struct kpx_src_range_key_v4 k;

	if (!(svc->flags & KPX_SVC_F_SOURCE_RANGES))
		return 1;
	k.prefixlen = 64;
	k.svc_id = bpf_htonl(svc->svc_id);
	k.addr = saddr;
	return bpf_map_lookup_elem(&kpx_lb_src_v4, &k) != 0;
}

/* The node-address flags of addr (enum kpx_node_addr_flags), 0 for an
 * address the node does not own. Only asked when the filter slot says it
 * may be one. */
static __always_inline __u32 node_addr_flags(__be32 addr)
{
	__u32 *f = bpf_map_lookup_elem(&kpx_node_addr_v4, &addr);

	return f ? *f : 0;
}

/*
 * The frontend a pod's packet is for: the scopes the classification filter
 * says the destination address has frontends of, ClusterIP first; a NodePort
 * when the destination is one of this node's addresses (as kube-proxy
 * captures NodePorts on local addresses only; another node's NodePort is
 * that node's to translate). Returns LB_FOUND(scope) of the one found, 0
 * for none.
 */
#define LB_FOUND(scope) ((scope) + 1)
static __always_inline int lb_lookup_from_pod(const struct pkt4 *p, __u32 filt,
					      struct kpx_service_value *svc)
{
	if ((filt & KPX_FILT_CLUSTER_IP) && lb_lookup_service(p, KPX_SCOPE_CLUSTER_IP, svc))
		return LB_FOUND(KPX_SCOPE_CLUSTER_IP);
	if ((filt & KPX_FILT_NODE_ADDR) && (node_addr_flags(p->ip->daddr) & KPX_NODE_ADDR_F_NODEPORT) &&
	    lb_lookup_nodeport(p, svc))
		return LB_FOUND(KPX_SCOPE_NODE_PORT);
	if ((filt & KPX_FILT_EXTERNAL_IP) && lb_lookup_service(p, KPX_SCOPE_EXTERNAL_IP, svc))
		return LB_FOUND(KPX_SCOPE_EXTERNAL_IP);
	if ((filt & KPX_FILT_LOAD_BALANCER) && lb_lookup_service(p, KPX_SCOPE_LOAD_BALANCER, svc))
		return LB_FOUND(KPX_SCOPE_LOAD_BALANCER);
	return 0;
}

/* Backend slot `slot` into *be (and its id into *idp when given): 0 when
 * the slot or the backend is gone. */
static __always_inline int lb_backend_id_at(__u32 slot, struct kpx_backend_value_v4 *be, __u32 *idp)
{
	struct kpx_backend_value_v4 *b;
	__u32 *id;

	id = bpf_map_lookup_elem(&kpx_svc_be, &slot);
	if (!id || !*id)
		return 0;
	b = bpf_map_lookup_elem(&kpx_be_v4, id);
	if (!b)
		return 0;
	__builtin_memcpy(be, b, sizeof(*be));
	if (idp)
		*idp = *id;
	return be->addr != 0;
}

static __always_inline int lb_backend_at(__u32 slot, struct kpx_backend_value_v4 *be)
{
	return lb_backend_id_at(slot, be, 0);
}

/*
 * The frontend a frame arriving from outside the node is for: an external
 * IP or a load balancer IP the filter says the destination may have (as
 * kube-proxy matches them before NodePorts), else a NodePort when the
 * destination is a node address NodePorts are served on (addr_flags: its
 * node_addr_flags).
 */
static __always_inline int lb_lookup_uplink(const struct pkt4 *p, __u32 filt, __u32 addr_flags,
					    struct kpx_service_value *svc)
{
	if ((filt & KPX_FILT_EXTERNAL_IP) && lb_lookup_service(p, KPX_SCOPE_EXTERNAL_IP, svc))
		return 1;
	if ((filt & KPX_FILT_LOAD_BALANCER) && lb_lookup_service(p, KPX_SCOPE_LOAD_BALANCER, svc))
		return 1;
	return (addr_flags & KPX_NODE_ADDR_F_NODEPORT) && lb_lookup_nodeport(p, svc);
}

/* What lb_select found for a new flow. */
enum lb_select_result {
	LB_PICKED = 0,
	LB_EMPTY,    /* no endpoints at all: refuse (kube-proxy's REJECT) */
	LB_NO_LOCAL, /* traffic policy Local, none on this node: drop (kube-proxy's DROP) */
	LB_STALE,    /* the slots read were freed under this packet: read the frontend again */
	LB_NONE,     /* nothing to pick and nothing to refuse with: drop */
};

struct lb_scan {
	__u32 base;
	__u32 id;
	__u32 found; /* index of id in the set, or count when absent */
};

static long lb_scan_step(__u32 i, void *data)
{
	struct lb_scan *s = data;
	__u32 slot = s->base + i;
	__u32 *id = bpf_map_lookup_elem(&kpx_svc_be, &slot);

	if (id && *id == s->id) {
		s->found = i;
		return 1;
	}
	return 0;
}

/*
 * sessionAffinity ClientIP: the backend the client's last new flow to this
 * frontend went to, when that was within the timeout and it is still in the
 * set [base, base+count) (at the index it had, else found by a scan: the
 * set's order changes when others join or leave). Refreshes the entry.
 */
static __always_inline int lb_affine(const struct kpx_service_value *svc, const struct kpx_affinity_key_v4 *ak,
				     __u32 base, __u32 count, __u64 now, struct kpx_backend_value_v4 *be)
{
	__u64 timeout = (__u64)(svc->affinity_timeout_s ? svc->affinity_timeout_s : KPX_DEFAULT_AFFINITY_TIMEOUT_S) *
			1000000000ull;
	struct kpx_affinity_value *av = bpf_map_lookup_elem(&kpx_affinity_v4, ak);
	struct lb_scan scan;
	__u32 slot, *id;

	if (!av || now - av->last_used_ns > timeout)
		return 0;
	scan.base = base;
	scan.id = av->backend_id;
	scan.found = count;
	slot = base + av->slot_hint;
	id = av->slot_hint < count ? bpf_map_lookup_elem(&kpx_svc_be, &slot) : 0;
	if (id && *id == scan.id)
		scan.found = av->slot_hint;
	else
		bpf_loop(count, lb_scan_step, &scan, 0);
	if (scan.found >= count || !lb_backend_at(base + scan.found, be))
		return 0;
	av->slot_hint = scan.found;
	av->last_used_ns = now;
	return 1;
}

/* A backend picked at random from the set [base, base+count), remembered
 * for the client when `ak` is given (sessionAffinity). */
static __always_inline int lb_pick_in(__u32 base, __u32 count, const struct kpx_affinity_key_v4 *ak, __u64 now,
				      struct kpx_backend_value_v4 *be)
{
	struct kpx_affinity_value av = {.last_used_ns = now};
	__u32 i = bpf_get_prandom_u32() % count;

	if (!lb_backend_id_at(base + i, be, &av.backend_id))
		return 0;
	if (ak) {
		av.slot_hint = i;
		bpf_map_update_elem(&kpx_affinity_v4, ak, &av, BPF_ANY);
	}
	return 1;
}

/*
 * A backend for a new flow to `svc`: from the local set when the frontend's
 * traffic policy Local applies to this client (`local`: a ClusterIP's
 * internal policy always; a NodePort's, external IP's or load balancer
 * IP's external one for clients outside the cluster only), else from the
 * cluster set; with sessionAffinity ClientIP, the client's (its address
 * and the interface its frames arrive on) backend of its last new flow, while that is fresh and still in the
 * set. A Service whose sets are both empty has no endpoints anywhere, which
 * kube-proxy rejects; one that has some, but not here, under policy Local,
 * it drops. Out of line: its locals (the affinity key and scan) stay off
 * the callers' frames, which share the 512-byte stack with reject's.
 */
static __attribute__((noinline)) int lb_select(const struct kpx_service_value *svc, int local, __be32 client,
					       __u32 ifindex, struct kpx_backend_value_v4 *be)
{
	__u32 base = svc->slot_base, count = svc->backend_count;
	struct kpx_affinity_key_v4 key, *ak = 0;
	__u64 now = 0;

	if (svc->backend_count == 0 && svc->local_count == 0)
		return (svc->flags & KPX_SVC_F_REJECT_EMPTY) ? LB_EMPTY : LB_NONE;
	if (local && (svc->flags & KPX_SVC_F_LOCAL_ONLY)) {
		if (svc->local_count == 0)
			return LB_NO_LOCAL;
		base += svc->backend_count;
		count = svc->local_count;
	} else if (count == 0) {
		return LB_NONE;
	}
	if (count > KPX_MAX_BACKENDS_PER_SERVICE)
		return LB_NONE;
	if (svc->flags & KPX_SVC_F_AFFINITY) {
		key.svc_id = svc->svc_id;
		key.ifindex = ifindex;
		key.client = client;
		key.pad = 0;
		ak = &key;
		now = bpf_ktime_get_coarse_ns();
		if (lb_affine(svc, ak, base, count, now, be))
			return LB_PICKED;
	}
	return lb_pick_in(base, count, ak, now, be) ? LB_PICKED : LB_STALE;
}

#endif
