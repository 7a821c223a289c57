// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kpx uplink datapath: attached with tc clsact at the ingress of the node's
 * uplink (the interface towards the other nodes and the outside).
 *   kpx_from_uplink (frames arriving from outside the node)
 *     destination certainly no frontend and no node address (filter) -> pass
 *     a node address, a port that is certainly no NodePort and no port of
 *     the SNAT range (filter)                               -> pass
 *     per-CPU conntrack cache hit -> translate, send on (hot path)
 *     conntrack hit      -> translate to the flow's backend, send on
 *     reply of an uplink flow (from a backend on another node) -> restore
 *                           the NodePort source and the client, send on
 *     an external IP, a load balancer IP, or a NodePort on a node address,
 *     new flow           -> pick a backend, create
 *                           conntrack, DNAT to the backend and, with
 *                           externalTrafficPolicy Cluster, SNAT to the
 *                           node's address with a port of the SNAT range
 *                           (as kube-proxy masquerades it); with Local, a
 *                           local backend and the client's own address; send on
 *     a ClusterIP from a source kube-proxy masquerades (off-cluster by
 *     --detect-local-mode, or --masquerade-all), new flow -> as a NodePort
 *                           with traffic policy Cluster (SNAT to the node)
 *     an ICMP error about an uplink flow, from the backend's side or the
 *     client's               -> translated back, sent on (lib/icmp.h)
 *     anything else      -> pass unchanged
 * "Send on": the frame's source is now the node's own address, which the
 * kernel's forwarding path would drop, so kpx routes it (lib/fib.h). The
 * FORWARD entry is on the uplink; the REPLY entry on the uplink for a
 * backend on another node, else on the local backend's veth, bound when
 * the kernel first delivers the flow there (lib/uplink.h).
 */
#include "lib/common.h"
#include "lib/conntrack.h"
#include "lib/csum.h"
#include "lib/ctx.h"
#include "lib/fib.h"
#include "lib/icmp.h"
#include "lib/lb.h"
#include "lib/maps.h"
#include "lib/nat.h"
#include "lib/parse.h"
#include "lib/reject.h"
#include "lib/uplink.h"
#include "lib/verdict.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* uplink_slow's locals, in the per-CPU scratch (ct_scratch.caller). */
struct uplink_scratch {
	struct kpx_service_value svc;
	struct ct_new req;
	struct ct_nat nat;
	struct bpf_fib_lookup fib;
};

/* No usable conntrack entry: a reply of an uplink flow, a new flow to an
 * external IP, a load balancer IP or a NodePort, or traffic kpx does not
 * touch. */
static __attribute__((noinline)) int uplink_slow(struct __sk_buff *skb, struct pkt4 *p, __u32 ifindex, __u32 filt,
						 __u32 stale_gen)
{
	const struct kpx_config *cfg = config();
	struct ct_scratch *sc;
	__u32 zero = 0, addr_flags;
	int ret, rc, cluster_ip, pick;

	/* The replies of uplink flows come back to a node address. */
	addr_flags = (filt & KPX_FILT_NODE_ADDR) ? node_addr_flags(p->ip->daddr) : 0;
	if ((addr_flags & KPX_NODE_ADDR_F_NODE) && uplink_reply_port(p->dport) && uplink_is_reply(p, ifindex))
		return uplink_reply(skb, p, ifindex);

	_Static_assert(sizeof(struct uplink_scratch) <= sizeof(((struct ct_scratch *)0)->caller), "scratch");
	sc = bpf_map_lookup_elem(&kpx_ct_scratch, &zero);
	if (!sc)
		return pass();
#define svc (((struct uplink_scratch *)sc->caller)->svc)
#define req (((struct uplink_scratch *)sc->caller)->req)
#define nat (((struct uplink_scratch *)sc->caller)->nat)
#define fib (((struct uplink_scratch *)sc->caller)->fib)
	cluster_ip = 0;
	if (!lb_lookup_uplink(p, filt, addr_flags, &svc)) {
		/* A ClusterIP reached from outside the node (a route to the
		 * Service CIDR through it): served when kube-proxy would
		 * masquerade it (an off-cluster source, or --masquerade-all).
		 * A "local" source passes: its replies would leave the backend's
		 * node untranslated. */
		if (!(filt & KPX_FILT_CLUSTER_IP) || !svc_masquerade(cfg, p->ip->saddr, 0) ||
		    !lb_lookup_service(p, KPX_SCOPE_CLUSTER_IP, &svc))
			return pass();
		cluster_ip = 1;
	}
#define lookup_again() \
	(cluster_ip ? lb_lookup_service(p, KPX_SCOPE_CLUSTER_IP, &svc) : lb_lookup_uplink(p, filt, addr_flags, &svc))
	if (!lb_source_allowed(&svc, p->ip->saddr))
		return drop(KPX_CTR_DROP_SOURCE_RANGE);
	if (p->is_fragment)
		return drop(KPX_CTR_DROP_FRAGMENT);
	__builtin_memset(&req, 0, sizeof(req));
	/* Traffic policy Local holds for every client from outside: the
	 * external policy of an external address (this node's endpoints only,
	 * the client's address kept; a node without one drops, as kube-proxy
	 * does, and its health check node port says so), the internal one of
	 * a ClusterIP (its local endpoints, masqueraded). */
	pick = lb_select(&svc, 1, p->ip->saddr, ifindex, &req.be);
	if (pick == LB_STALE && lookup_again())
		pick = lb_select(&svc, 1, p->ip->saddr, ifindex, &req.be); /* freed under this packet */
	if (pick != LB_PICKED)
		return lb_refuse(skb, p, pick, 0);
#undef lookup_again
	if (cluster_ip || !(svc.flags & KPX_SVC_F_LOCAL_ONLY)) {
		/* Masqueraded to the node, so that replies come back here from
		 * whichever node the backend is on. */
		req.snat_addr = cfg ? cfg->node_addr_v4 : 0;
		if (!req.snat_addr)
			return drop(KPX_CTR_DROP_NO_NODE_ADDR);
	}
	/* Where the backend is: back out of the uplink (another node; its
	 * replies arrive here) or behind another interface of this node (a
	 * local pod; its REPLY entry waits for the veth). */
	if (fib_route(skb, p, req.snat_addr ? req.snat_addr : p->ip->saddr, req.be.addr, 0, req.be.port, &fib, &rc))
		return fib_refuse(skb, p, &fib, rc);
	req.reply_ifindex = fib.ifindex == ifindex ? ifindex : 0;
	req.ifindex = ifindex;
	req.stale_gen = stale_gen;
	req.svc_id = svc.svc_id;
	req.uplink = 1;
	uplink_snat_ports(cfg, &req.port_min, &req.port_span);
	ret = ct_create(p, &req, &nat);
	if (ret == CT_ERR_CLASH)
		return drop(KPX_CTR_DROP_CT_CLASH);
	if (ret < 0)
		return drop(KPX_CTR_DROP_CT_FULL);
	count(ret == CT_ADOPTED ? KPX_CTR_CT_ADOPTED : KPX_CTR_DNAT_NEW);
	if (cluster_ip && ret != CT_ADOPTED)
		count(KPX_CTR_SNAT_SERVICE_NEW);
	return uplink_forward(skb, p, &nat, req.reply_ifindex == 0);
#undef svc
#undef req
#undef nat
#undef fib
}

SEC("tc")
int kpx_from_uplink(struct __sk_buff *skb)
{
	struct kpx_ct_key_v4 key;
	__u32 ifindex = skb->ifindex, hash, filt, res[2];
	struct ct_nat n;
	struct pkt4 p;
	int r;

	r = parse_pkt4(skb, &p);
	if (r != PARSE_OK) {
		if (r == PARSE_OTHER_L4 && p.proto == IPPROTO_ICMP) {
			r = icmp_error_xlate(skb, &p, ifindex, ICMP_AT_UPLINK);
			return r >= 0 ? r : pass();
		}
		return pass_unparsed(r);
	}

	filt = filter_bits(kpx_filter_slot_addr_v4(p.ip->daddr));
	if (likely(!(filt & (KPX_FILT_FRONTEND | KPX_FILT_NODE_ADDR))))
		return pass();
	/* To a node address and no frontend: a NodePort (its port's bit; a
	 * backend bit there is a retained one of a removed NodePort's flows)
	 * or a reply of an uplink flow (a port of the SNAT range). The node's
	 * own traffic (ssh, the kubelet, ...) passes before conntrack. */
	if (!(filt & KPX_FILT_FRONTEND) && !uplink_reply_port(p.dport) &&
	    !(filter_bits(kpx_filter_slot_backend_v4(0, p.dport, p.proto)) & (KPX_FILT_NODE_PORT | KPX_FILT_BACKEND)))
		return pass();

	ct_key_from_pkt(&key, &p, KPX_CT_FORWARD, ifindex);
	hash = kpx_ct_hash_v4(&key);
	if (likely(ct_cache_forward(&key, hash, &p, &n))) {
		count(KPX_CTR_DNAT_ESTABLISHED);
		return uplink_forward(skb, &p, &n, 0);
	}
	r = ct_forward_lookup(&p, &key, hash, &n, res);
	if (r == CT_FWD_FRAGMENT)
		return drop(KPX_CTR_DROP_FRAGMENT);
	if (r == CT_FWD_HIT) {
		count(KPX_CTR_DNAT_ESTABLISHED);
		return uplink_forward(skb, &p, &n, res[0]);
	}
	return uplink_slow(skb, &p, ifindex, filt, res[1]);
}
