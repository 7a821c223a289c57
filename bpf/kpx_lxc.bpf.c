// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kpx pod-side datapath: attached with tc clsact on the host end of each
 * pod's veth.
 *   kpx_from_pod (ingress: frames the pod sends)
 *     destination certainly no frontend (classification filter) -> pass,
 *                           without touching conntrack
 *     per-CPU conntrack cache hit -> translate (hot path)
 *     source is a node-owned address -> drop (spoofing), before any state
 *     conntrack hit      -> translate to the flow's backend (the LRU entry)
 *     hairpin reply      -> restore frontend source and client destination, bounce
 *     reply of an uplink flow (a local backend answering a NodePort client)
 *                        -> restore the NodePort source and the client, send
 *                           it out (lib/uplink.h)
 *     frontend, new flow -> admission budget, pick a backend, create
 *                           conntrack, translate
 *     out of the cluster, egress masquerade on, no non-masquerade CIDR
 *                        -> conntrack as above; a new flow is SNATed to the
 *                           node with a port of the SNAT range, sent on
 *     an ICMP error about a flow this pod is the client of (an answer it
 *     refuses) or the backend of (an uplink or hairpin flow) -> translated
 *                           back (lib/icmp.h)
 *     anything else      -> pass unchanged
 *   kpx_to_pod (egress: frames delivered to the pod)
 *     an uplink flow's frame marked KPX_MARK_BIND -> bind the flow's REPLY
 *                           entry to this veth (lib/uplink.h), then as below
 *     source certainly no backend (filter) -> pass
 *     no conntrack entry (remembered per CPU as a negative cache entry) -> pass
 *     conntrack reply of a live flow -> restore the frontend as source
 *     an ICMP error about one of the pod's flows -> translated back, so
 *                           the pod sees its own datagram (lib/icmp.h)
 *     anything else       -> pass unchanged
 * Conntrack entries are bound to the veth (ifindex): the pod's FORWARD
 * entries to its ingress, the REPLY entries of its flows to its egress.
 * The kernel keeps routing: a translated frame continues with TC_ACT_OK,
 * except hairpin frames, which go straight back out to the pod they came
 * from (the node would drop a frame whose source is its own address).
 */
#include "lib/common.h"
#include "lib/conntrack.h"
#include "lib/csum.h"
#include "lib/ctx.h"
#include "lib/icmp.h"
#include "lib/lb.h"
#include "lib/maps.h"
#include "lib/nat.h"
#include "lib/parse.h"
#include "lib/reject.h"
#include "lib/uplink.h"
#include "lib/verdict.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Translate a frame of a tracked flow to its backend. */
static __always_inline int forward_translate(struct __sk_buff *skb, struct pkt4 *p, __be32 be_addr,
					     __be16 be_port, __be32 snat_addr, __be16 snat_port)
{
	if (nat_rewrite_dst(skb, p, be_addr, be_port, snat_addr, snat_port))
		return drop(KPX_CTR_DROP_REWRITE);
	return snat_addr ? nat_bounce(skb) : TC_ACT_OK;
}

/* A reply from a pod to the hairpin address: the pod answered itself
 * through its Service. Restore frontend:port as source and the pod as
 * destination, and send it back in. Sets *handled when the frame was one
 * (the verdict is returned); else the frame is not touched. */
static __attribute__((noinline)) int hairpin_reply(struct __sk_buff *skb, struct pkt4 *p, __u32 ifindex, int *handled)
{
	struct kpx_ct_value_v4 rv, fv, *ffp;
	struct kpx_ct_key_v4 rk, fk;

	*handled = 0;
	ct_key_from_pkt(&rk, p, KPX_CT_REPLY, ifindex);
	if (!ct_get(&rk, &rv) || !(rv.flags & KPX_CT_F_HAIRPIN))
		return 0;
	ffp = ct_reply_flow(&rk, &rv, &fk, &fv);
	if (!ffp)
		return 0;
	*handled = 1;
	if (p->is_fragment)
		return drop(KPX_CTR_DROP_FRAGMENT);
	ct_reply_seen(ffp, &fv, &fk, p);
	count(KPX_CTR_REVNAT);
	if (nat_rewrite_src(skb, p, rv.nat_addr, rv.nat_port, rv.snat_addr, rv.snat_port))
		return drop(KPX_CTR_DROP_REWRITE);
	return nat_bounce(skb);
}

/* A pod never sends from an address of the node's own: such a frame is
 * dropped before it can make or touch any state. */
static __always_inline int spoofed(const struct pkt4 *p)
{
	return unlikely(filter_bits(kpx_filter_slot_addr_v4(p->ip->saddr)) & KPX_FILT_NODE_ADDR) &&
	       node_addr_flags(p->ip->saddr);
}

/* Whether a frame from a pod is masqueraded: egress masquerade is on, the
 * destination is outside the cluster CIDR (a mask compare first) and in no
 * non-masquerade CIDR. */
static __always_inline int masqueraded(const struct pkt4 *p)
{
	const struct kpx_config *cfg = config();
	struct kpx_nomasq_key_v4 nk;

	if (!cfg || !(cfg->flags & KPX_CFG_F_EGRESS_MASQ))
		return 0;
	if (cidr_contains(cfg->cluster_cidr_v4, cfg->cluster_prefix_v4, p->ip->daddr))
		return 0;
	nk.prefixlen = 32;
	nk.addr = p->ip->daddr;
	return !bpf_map_lookup_elem(&kpx_nomasq_v4, &nk);
}

/* egress_new's locals, in the per-CPU scratch (ct_scratch.caller). */
struct egress_scratch {
	struct ct_new req;
	struct ct_nat nat;
	struct bpf_fib_lookup fib;
};

/*
 * A new flow of a pod out of the cluster (ip-masq-agent's semantics; the
 * caller checked the non-masquerade CIDRs): the source becomes the node's
 * address with a port of the SNAT range, and kpx sends the frame on (its
 * source is the node's own now). The FORWARD entry is on the pod's veth,
 * the REPLY entry where the replies come back (the uplink), as for an
 * uplink flow; the pod interface's admission budget is spent.
 */
static __attribute__((noinline)) int egress_new(struct __sk_buff *skb, struct pkt4 *p, __u32 ifindex,
						__u32 stale_gen)
{
	const struct kpx_config *cfg = config();
	struct ct_scratch *sc;
	__u32 zero = 0;
	int r, rc;

	/* Only a connection the pod opens: a TCP segment of a connection kpx
	 * did not see start (the pod answering a client outside the cluster
	 * that reached it without kpx) passes as it is, as netfilter's NAT
	 * would leave a connection it tracks from its first packet. */
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) != TCPF_SYN)
		return pass();
	if (p->is_fragment)
		return drop(KPX_CTR_DROP_FRAGMENT);
	if (!cfg || !cfg->node_addr_v4)
		return drop(KPX_CTR_DROP_NO_NODE_ADDR);
	_Static_assert(sizeof(struct egress_scratch) <= sizeof(((struct ct_scratch *)0)->caller), "scratch");
	sc = bpf_map_lookup_elem(&kpx_ct_scratch, &zero);
	if (!sc)
		return pass();
#define req (((struct egress_scratch *)sc->caller)->req)
#define nat (((struct egress_scratch *)sc->caller)->nat)
#define fib (((struct egress_scratch *)sc->caller)->fib)
	if (fib_route(skb, p, cfg->node_addr_v4, p->ip->daddr, 0, p->dport, &fib, &rc))
		return fib_refuse(skb, p, &fib, rc);
	if (!ct_admit(ifindex))
		return drop(KPX_CTR_DROP_CT_BUDGET);
	__builtin_memset(&req, 0, sizeof(req));
	req.be.addr = p->ip->daddr; /* no DNAT: the destination stays */
	req.be.port = p->dport;
	req.ifindex = ifindex;
	req.snat_addr = cfg->node_addr_v4;
	req.stale_gen = stale_gen;
	req.reply_ifindex = fib.ifindex;
	req.uplink = 1;
	uplink_snat_ports(cfg, &req.port_min, &req.port_span);
	r = ct_create(p, &req, &nat);
	if (r == CT_ERR_CLASH)
		return drop(KPX_CTR_DROP_CT_CLASH);
	if (r < 0)
		return drop(KPX_CTR_DROP_CT_FULL);
	count(r == CT_ADOPTED ? KPX_CTR_CT_ADOPTED : KPX_CTR_SNAT_EGRESS_NEW);
	return uplink_forward(skb, p, &nat, 0);
#undef req
#undef nat
#undef fib
}

/* A frame of a flow from this pod: to its backend (DNAT), or, for a
 * masqueraded flow out of the cluster, sent on by kpx. */
static __always_inline int pod_flow_translate(struct __sk_buff *skb, struct pkt4 *p, const struct ct_nat *n,
					      int bind)
{
	if (n->uplink)
		return uplink_forward(skb, p, n, bind);
	return forward_translate(skb, p, n->nat_addr, n->nat_port, n->snat_addr, n->snat_port);
}

/* from_pod_slow's locals, kept in the per-CPU scratch (ct_scratch.caller):
 * its frame is on the same call chain as ct_create's. */
struct slow_scratch {
	struct kpx_service_value svc;
	struct ct_new req;
	struct ct_nat nat;
	struct bpf_fib_lookup fib;
};

/* No usable conntrack entry: a reply to a hairpin flow, a new flow to a
 * frontend, or traffic kpx does not touch. */
static __attribute__((noinline)) int from_pod_slow(struct __sk_buff *skb, struct pkt4 *p, __u32 ifindex,
						   __u32 filt, __u32 stale_gen)
{
	const struct kpx_config *cfg = config();
	__be32 hairpin_addr = cfg ? cfg->hairpin_addr_v4 : 0;
	struct ct_scratch *sc;
	__u32 zero = 0;
	int ret, rc, masq = 0, found, local, pick;

	if ((filt & KPX_FILT_NODE_ADDR) && hairpin_addr && p->ip->daddr == hairpin_addr) {
		int handled;

		ret = hairpin_reply(skb, p, ifindex, &handled);
		if (handled)
			return ret;
	}
	/* A local backend answering an uplink flow. */
	if ((filt & KPX_FILT_NODE_ADDR) && uplink_reply_port(p->dport) && uplink_is_reply(p, ifindex))
		return uplink_reply(skb, p, ifindex);

	_Static_assert(sizeof(struct slow_scratch) <= sizeof(((struct ct_scratch *)0)->caller), "scratch");
	sc = bpf_map_lookup_elem(&kpx_ct_scratch, &zero);
	if (!sc)
		return pass();
#define svc (((struct slow_scratch *)sc->caller)->svc)
#define req (((struct slow_scratch *)sc->caller)->req)
#define nat (((struct slow_scratch *)sc->caller)->nat)
#define fib (((struct slow_scratch *)sc->caller)->fib)
	__builtin_memset(&req, 0, sizeof(req));
	req.ifindex = ifindex;
	req.stale_gen = stale_gen;
	found = lb_lookup_from_pod(p, filt, &svc);
	if (!found)
		return pass();
	if (!lb_source_allowed(&svc, p->ip->saddr))
		return drop(KPX_CTR_DROP_SOURCE_RANGE);
	if (p->is_fragment)
		return drop(KPX_CTR_DROP_FRAGMENT);
	/* Traffic policy Local: a ClusterIP's internal one holds for pods; a
	 * pod reaching an external address of its cluster is served by every
	 * endpoint, as kube-proxy short-circuits pod traffic to them. */
	local = found == LB_FOUND(KPX_SCOPE_CLUSTER_IP);
	/* Every new flow to a frontend spends the pod interface's budget,
	 * refused ones and those that make affinity state too. */
	if (!ct_admit(ifindex))
		return drop(KPX_CTR_DROP_CT_BUDGET);
	pick = lb_select(&svc, local, p->ip->saddr, ifindex, &req.be);
	if (pick == LB_STALE && lb_lookup_from_pod(p, filt, &svc))
		pick = lb_select(&svc, local, p->ip->saddr, ifindex, &req.be); /* freed under this packet */
	if (pick != LB_PICKED)
		return lb_refuse(skb, p, pick, 1);
	if (req.be.addr == p->ip->saddr) {
		if (!hairpin_addr)
			return drop(KPX_CTR_DROP_NO_HAIRPIN_ADDR);
		req.snat_addr = hairpin_addr;
	} else if (svc_masquerade(cfg, p->ip->saddr, 1)) {
		/* kube-proxy's masquerade (--masquerade-all, or a pod address
		 * outside the local CIDR): source NAT to the node with a port
		 * of the SNAT range, sent on by kpx as an uplink flow. A local
		 * backend's replies come on its veth, which only the kernel
		 * knows (the REPLY entry waits for the bind); a remote one's on
		 * the interface towards it. */
		req.snat_addr = cfg ? cfg->node_addr_v4 : 0;
		if (!req.snat_addr)
			return drop(KPX_CTR_DROP_NO_NODE_ADDR);
		if (fib_route(skb, p, req.snat_addr, req.be.addr, 0, req.be.port, &fib, &rc))
			return fib_refuse(skb, p, &fib, rc);
		req.reply_ifindex = (req.be.flags & KPX_BE_F_LOCAL) ? 0 : fib.ifindex;
		req.uplink = 1;
		uplink_snat_ports(cfg, &req.port_min, &req.port_span);
		masq = 1;
	}
	req.svc_id = svc.svc_id;
	ret = ct_create(p, &req, &nat);
	if (ret == CT_ERR_CLASH)
		return drop(KPX_CTR_DROP_CT_CLASH);
	if (ret < 0)
		return drop(KPX_CTR_DROP_CT_FULL);
	if (ret == CT_ADOPTED) {
		count(KPX_CTR_CT_ADOPTED);
	} else if (masq) {
		count(KPX_CTR_SNAT_SERVICE_NEW);
	} else {
		if (nat.snat_addr)
			count(KPX_CTR_HAIRPIN);
		if (nat.snat_port)
			count(KPX_CTR_CT_PORT_REMAP);
	}
	count(KPX_CTR_DNAT_NEW);
	if (nat.uplink)
		return uplink_forward(skb, p, &nat, req.reply_ifindex == 0);
	return forward_translate(skb, p, nat.nat_addr, nat.nat_port, nat.snat_addr, nat.snat_port);
#undef svc
#undef req
#undef nat
#undef fib
}

SEC("tc")
int kpx_from_pod(struct __sk_buff *skb)
{
	struct kpx_ct_key_v4 key;
	__u32 ifindex = skb->ifindex, hash, filt, res[2];
	int r, egress = 0;
	struct ct_nat n;
	struct pkt4 p;

	r = parse_pkt4(skb, &p);
	if (r != PARSE_OK) {
		if (r == PARSE_OTHER_L4 && p.proto == IPPROTO_ICMP) {
			if (spoofed(&p))
				return drop(KPX_CTR_DROP_SPOOF);
			r = icmp_error_xlate(skb, &p, ifindex, ICMP_AT_FROM_POD);
			return r >= 0 ? r : pass();
		}
		return pass_unparsed(r);
	}

	filt = filter_bits(kpx_filter_slot_addr_v4(p.ip->daddr));
	if (likely(!(filt & (KPX_FILT_FRONTEND | KPX_FILT_NODE_ADDR)))) {
		if (spoofed(&p))
			return drop(KPX_CTR_DROP_SPOOF);
		/* A local backend of a traffic-policy-Local NodePort answering its
		 * outside client (no source NAT: the reply is addressed to it). */
		if (unlikely(filter_bits(kpx_filter_slot_backend_v4(p.ip->saddr, p.sport, p.proto)) &
			     KPX_FILT_DIRECT_REPLY) &&
		    uplink_is_reply(&p, ifindex))
			return uplink_reply(skb, &p, ifindex);
		if (likely(!masqueraded(&p)))
			return pass();
		egress = 1; /* conntrack as below, its own new flows */
	}

	ct_key_from_pkt(&key, &p, KPX_CT_FORWARD, ifindex);
	hash = kpx_ct_hash_v4(&key);
	/* A cache hit needs no spoofing check: the slot holds this exact
	 * tuple, and only a frame that passed the check made its entry. (A
	 * source that becomes a node address later is stopped when the slot
	 * next goes back to the conntrack entry, within a second.) */
	if (likely(ct_cache_forward(&key, hash, &p, &n))) {
		count(KPX_CTR_DNAT_ESTABLISHED);
		return pod_flow_translate(skb, &p, &n, 0);
	}
	if (spoofed(&p))
		return drop(KPX_CTR_DROP_SPOOF);
	r = ct_forward_lookup(&p, &key, hash, &n, res);
	if (r == CT_FWD_FRAGMENT)
		return drop(KPX_CTR_DROP_FRAGMENT);
	if (r == CT_FWD_HIT) {
		count(KPX_CTR_DNAT_ESTABLISHED);
		return pod_flow_translate(skb, &p, &n, res[0]);
	}
	if (egress)
		return egress_new(skb, &p, ifindex, res[1]);
	return from_pod_slow(skb, &p, ifindex, filt, res[1]);
}

/*
 * For a frame carrying KPX_MARK_BIND: the kernel delivered an
 * uplink flow's frame (translated: node:port -> backend) to this veth, so
 * the backend is behind it. Bind the flow's REPLY entry here: a copy of the
 * waiting entry (interface 0, which stays as the reply tuple's reservation
 * while the flow lives) on this interface, and the FORWARD entry told where
 * it is. Nothing happens for a frame of no waiting flow.
 */
static __attribute__((noinline)) void uplink_bind_reply(const struct pkt4 *p, __u32 ifindex)
{
	struct ct_scratch *sc;
	__u32 zero = 0;

	/* ct_create's scratch (not on this call chain): the stack is too
	 * small for two entries beside kpx_to_pod's. */
	sc = bpf_map_lookup_elem(&kpx_ct_scratch, &zero);
	if (!sc)
		return;
#define rv (sc->tmp)
#define fv (sc->fv)
#define rk (sc->rk)
#define fk (sc->fk)
	rk.saddr = p->ip->daddr;
	rk.daddr = p->ip->saddr;
	rk.sport = p->dport;
	rk.dport = p->sport;
	rk.proto = p->proto;
	rk.dir = KPX_CT_REPLY;
	rk.pad = 0;
	rk.ifindex = 0;
	if (!ct_get(&rk, &rv) || !(rv.flags & KPX_CT_F_UPLINK))
		return;
	ct_forward_key_of_reply(&fk, &rk, &rv);
	if (!ct_get(&fk, &fv) || fv.gen != rv.gen || fv.out_ifindex != 0 || fv.nat_addr != rk.saddr ||
	    fv.nat_port != rk.sport)
		return;
	rk.ifindex = ifindex;
	if (ct_claim_reply(&rk, &rv, &fk, bpf_ktime_get_coarse_ns()))
		return;
	fv.out_ifindex = ifindex;
	if (ct_put(&fk, &fv, BPF_EXIST)) {
		ct_del(&rk);
		return;
	}
	count(KPX_CTR_CT_BOUND);
#undef rv
#undef fv
#undef rk
#undef fk
}

SEC("tc")
int kpx_to_pod(struct __sk_buff *skb)
{
	struct kpx_ct_cache_entry_v4 *cached;
	struct kpx_ct_value_v4 rv, fv, *ffp, *rp;
	struct kpx_ct_key_v4 key, fk;
	__u32 ifindex = skb->ifindex, hash, ver = 0, epoch, *verp;
	__u16 add;
	struct pkt4 p;
	int r;

	r = parse_pkt4(skb, &p);
	if (r != PARSE_OK) {
		if (r == PARSE_OTHER_L4 && p.proto == IPPROTO_ICMP) {
			r = icmp_error_xlate(skb, &p, ifindex, ICMP_AT_TO_POD);
			return r >= 0 ? r : pass();
		}
		return pass_unparsed(r);
	}

	if (unlikely(skb->mark == KPX_MARK_BIND)) {
		skb->mark = 0;
		uplink_bind_reply(&p, ifindex);
	}

	/* Replies come from a backend: anything else passes untouched. */
	if (likely(!(filter_bits(kpx_filter_slot_backend_v4(p.ip->saddr, p.sport, p.proto)) &
		     KPX_FILT_BACKEND)))
		return pass();

	ct_key_from_pkt(&key, &p, KPX_CT_REPLY, ifindex);
	hash = kpx_ct_hash_v4(&key);
	if (ct_cache_usable(&p)) {
		cached = ct_cache_get(&key, hash);
		if (likely(cached)) {
			if (!cached->nat_addr)
				return pass(); /* known: no flow has this reply tuple */
			count(KPX_CTR_REVNAT);
			if (nat_rewrite_src(skb, &p, cached->nat_addr, cached->nat_port, cached->snat_addr,
					    cached->snat_port))
				return drop(KPX_CTR_DROP_REWRITE);
			return TC_ACT_OK;
		}
	}
	epoch = ct_epoch();
	verp = ct_ver_word(hash);
	if (verp)
		ver = *verp;
	rp = ct_get(&key, &rv);
	if (!rp) {
		if (ct_cache_usable(&p))
			ct_cache_put_miss(&key, hash, ver, epoch);
		return pass();
	}
	ffp = ct_reply_flow(&key, &rv, &fk, &fv);
	if (!ffp)
		return pass();
	if (unlikely(p.is_fragment))
		return drop(KPX_CTR_DROP_FRAGMENT);
	ct_reply_seen(ffp, &fv, &fk, &p);
	add = ct_flags_of(&p);
	if ((rv.flags & add) != add)
		rp->flags |= add; /* what the server sent, for `kpx ct list` */
	if (ct_cache_usable(&p))
		ct_cache_put(&key, hash, &rv, ver, epoch);
	count(KPX_CTR_REVNAT);
	if (nat_rewrite_src(skb, &p, rv.nat_addr, rv.nat_port, rv.snat_addr, rv.snat_port))
		return drop(KPX_CTR_DROP_REWRITE);
	return TC_ACT_OK;
}
