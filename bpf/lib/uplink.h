/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Uplink (north-south) flows, the parts both entry files need: a client
 * outside the node reaches a NodePort on the uplink (kpx_uplink.bpf.c); the
 * flow is source-NATed to the node's address with a port of the SNAT range,
 * so that its backend's replies come back to this node:
 *   - from a backend on another node, on the uplink (kpx_from_uplink);
 *   - from a local backend, on its veth (kpx_from_pod). Which veth that is
 *     only the kernel knows (the bridge's forwarding table): the uplink marks
 *     the flow's frames with KPX_MARK_BIND until kpx_to_pod, where the kernel
 *     delivered one, binds the flow's REPLY entry to that veth. Frames from
 *     any other interface never match it.
 * A reply is translated back (source: the NodePort address the client
 * reached; destination: the client) and sent out by kpx itself (fib.h).
 */
#ifndef KPX_BPF_UPLINK_H
#define KPX_BPF_UPLINK_H

#include "common.h"
#include "conntrack.h"
#include "fib.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"
#include "reject.h"
#include "verdict.h"

/* The SNAT port range: [*min, *min + *span). */
static __always_inline void uplink_snat_ports(const struct kpx_config *cfg, __u16 *min, __u16 *span)
{
	__u32 lo = cfg && cfg->snat_port_min ? cfg->snat_port_min : KPX_DEFAULT_SNAT_PORT_MIN;
	__u32 hi = cfg && cfg->snat_port_max ? cfg->snat_port_max : KPX_DEFAULT_SNAT_PORT_MAX;

	*min = lo;
	*span = hi >= lo ? (__u16)(hi - lo + 1) : 0;
}

/*
 * kube-proxy's masquerade decision for a new flow to a ClusterIP (its
 * LocalTrafficDetector, --masquerade-all, --detect-local-mode): source NAT
 * to the node for every flow, or for those whose source is not "local".
 * from_pod: the frame came in on a pod interface.
 */
static __always_inline int svc_masquerade(const struct kpx_config *cfg, __be32 saddr, int from_pod)
{
	if (!cfg)
		return 0;
	if (cfg->flags & KPX_CFG_F_MASQ_ALL)
		return 1;
	if (cfg->flags & KPX_CFG_F_LOCAL_IF)
		return !from_pod;
	/* No local CIDR yet (NodeCIDR before the Node's podCIDR): none. */
	if ((cfg->flags & KPX_CFG_F_LOCAL_CIDR) && cfg->local_prefix_v4)
		return !cidr_contains(cfg->local_cidr_v4, cfg->local_prefix_v4, saddr);
	return 0;
}

/* Whether a frame to a node address may be a reply of an uplink flow: its
 * destination port is one the SNAT range hands out. */
static __always_inline int uplink_reply_port(__be16 dport)
{
	const struct kpx_config *cfg = config();
	__u16 min, span;
	__u32 port = bpf_ntohs(dport);

	uplink_snat_ports(cfg, &min, &span);
	return port >= min && port < (__u32)min + span;
}

/*
 * Translate a frame of an uplink flow towards its backend and send it on.
 * bind: the flow's REPLY entry waits for the local backend's veth, so the
 * frame carries KPX_MARK_BIND there.
 */
static __attribute__((noinline)) int uplink_forward(struct __sk_buff *skb, struct pkt4 *p, const struct ct_nat *n,
						    int bind)
{
	struct ct_scratch *sc;
	__u32 zero = 0;
	int rc;

	sc = bpf_map_lookup_elem(&kpx_ct_scratch, &zero);
	if (!sc)
		return drop(KPX_CTR_DROP_FIB);
	if (fib_route(skb, p, n->snat_addr ? n->snat_addr : p->ip->saddr, n->nat_addr,
		      n->snat_port ? n->snat_port : p->sport, n->nat_port, &sc->fwd_fib, &rc))
		return fib_refuse(skb, p, &sc->fwd_fib, rc);
	if (nat_rewrite_dst(skb, p, n->nat_addr, n->nat_port, n->snat_addr, n->snat_port))
		return drop(KPX_CTR_DROP_REWRITE);
	if (bind)
		skb->mark = KPX_MARK_BIND;
	return fib_redirect(skb, &sc->fwd_fib, rc);
}

/* Whether the frame is a reply of an uplink flow arriving where that flow's
 * REPLY entry is bound. Reads only: a call to a function that may change
 * the packet voids the caller's packet pointers (the verifier), so the
 * callers ask this first and call uplink_reply only to return its verdict. */
static __attribute__((noinline)) int uplink_is_reply(const struct pkt4 *p, __u32 ifindex)
{
	struct kpx_ct_value_v4 rv;
	struct kpx_ct_key_v4 rk;

	ct_key_from_pkt(&rk, p, KPX_CT_REPLY, ifindex);
	if (!ct_get(&rk, &rv))
		return 0;
	return rv.flags & KPX_CT_F_UPLINK ? 1 : 0;
}

/* A reply of an uplink flow arriving on ifindex: translate it back (source:
 * the NodePort address the client reached; destination: the client) and
 * send it on. A frame whose flow ended meanwhile passes unchanged. */
static __attribute__((noinline)) int uplink_reply(struct __sk_buff *skb, struct pkt4 *p, __u32 ifindex)
{
	struct kpx_ct_value_v4 *ffp;
	struct ct_scratch *sc;
	__u32 zero = 0;
	int rc;

	/* ct_create's scratch (not on this call chain): the stack is too small
	 * for two entries beside the entry program's frames. */
	sc = bpf_map_lookup_elem(&kpx_ct_scratch, &zero);
	if (!sc)
		return pass();
#define rv (sc->tmp)
#define fv (sc->fv)
#define rk (sc->rk)
#define fk (sc->fk)
#define fib (sc->fwd_fib)
	ct_key_from_pkt(&rk, p, KPX_CT_REPLY, ifindex);
	if (!ct_get(&rk, &rv) || !(rv.flags & KPX_CT_F_UPLINK))
		return pass();
	ffp = ct_reply_flow(&rk, &rv, &fk, &fv);
	if (!ffp)
		return pass();
	if (p->is_fragment)
		return drop(KPX_CTR_DROP_FRAGMENT);
	ct_reply_seen(ffp, &fv, &fk, p);
	/* The client: restored when the flow was source-NATed, else the
	 * reply's own destination (traffic policy Local). */
	if (fib_route(skb, p, rv.nat_addr, rv.snat_addr ? rv.snat_addr : p->ip->daddr, rv.nat_port,
		      rv.snat_port ? rv.snat_port : p->dport, &fib, &rc))
		return fib_refuse(skb, p, &fib, rc);
	count(KPX_CTR_REVNAT);
	if (nat_rewrite_src(skb, p, rv.nat_addr, rv.nat_port, rv.snat_addr, rv.snat_port))
		return drop(KPX_CTR_DROP_REWRITE);
	return fib_redirect(skb, &fib, rc);
#undef rv
#undef fv
#undef rk
#undef fk
#undef fib
}

#endif
