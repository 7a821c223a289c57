// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kpx pod-side datapath: attached with tc clsact on the host end of each
 * pod's veth.
 *   kpx_from_pod (ingress: frames the pod sends)
 *     conntrack hit      -> translate to the flow's backend (hot path: the
 *                           per-CPU conntrack cache, else the LRU entry)
 *     hairpin reply      -> restore VIP source and client destination, bounce
 *     Service, new flow  -> pick a backend, create conntrack, translate
 *     anything else      -> pass unchanged
 *   kpx_to_pod (egress: frames delivered to the pod)
 *     conntrack reply hit -> restore the VIP as source
 *     anything else       -> pass unchanged
 * The kernel keeps routing: a translated frame continues with TC_ACT_OK,
 * except hairpin frames, which go straight back out to the pod they came
 * from (the node would drop a frame whose source is its own address).
 */
#include "lib/common.h"
#include "lib/conntrack.h"
#include "lib/csum.h"
#include "lib/lb.h"
#include "lib/maps.h"
#include "lib/nat.h"
#include "lib/parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What a frame the parser could not fully read becomes. Nothing kpx cannot
 * parse is translated; such frames continue unchanged and the kernel treats
 * them as it would without kpx (an invalid IPv4 header is dropped by
 * ip_rcv, a non-first fragment is reassembled or expires). */
static __always_inline int pass_unparsed(int r)
{
	switch (r) {
	case PARSE_NOT_IPV4:
		count(KPX_CTR_PASS_NON_IPV4);
		break;
	case PARSE_BAD_IP:
	case PARSE_TRUNC_L4:
		count(KPX_CTR_PASS_MALFORMED);
		break;
	default:
		count(KPX_CTR_PASS);
		break;
	}
	return TC_ACT_OK;
}

static __always_inline int drop(enum kpx_counter reason)
{
	count(reason);
	return TC_ACT_SHOT;
}

/* Translate a frame of a tracked flow to its backend. */
static __always_inline int forward_translate(struct __sk_buff *skb, struct pkt4 *p,
					     __be32 be_addr, __be16 be_port, __be32 snat_addr)
{
	if (nat_rewrite_dst(skb, p, be_addr, be_port, snat_addr))
		return drop(KPX_CTR_DROP_REWRITE);
	return snat_addr ? nat_bounce(skb) : TC_ACT_OK;
}

/* The REPLY entry of a hairpin flow this frame answers, or NULL. */
static __always_inline struct kpx_ct_value_v4 *hairpin_reply_ct(const struct pkt4 *p)
{
	struct kpx_ct_key_v4 key;
	struct kpx_ct_value_v4 *ct;

	ct_key_from_pkt(&key, p, KPX_CT_REPLY);
	ct = bpf_map_lookup_elem(&kpx_ct_v4, &key);
	return ct && (ct->flags & KPX_CT_F_HAIRPIN) && ct_reply_live(&key, ct) ? ct : 0;
}

/* A reply from a pod to the hairpin address: the pod answered itself
 * through its Service. Restore VIP:port as source and the pod as
 * destination, and send it back in. */
static __always_inline int hairpin_reply(struct __sk_buff *skb, struct pkt4 *p,
					 struct kpx_ct_value_v4 *ct)
{
	if (p->is_fragment)
		return drop(KPX_CTR_DROP_FRAGMENT);
	ct_reply_seen(ct, p);
	count(KPX_CTR_REVNAT);
	if (nat_rewrite_src(skb, p, ct->nat_addr, ct->nat_port, ct->snat_addr))
		return drop(KPX_CTR_DROP_REWRITE);
	return nat_bounce(skb);
}

/* No usable conntrack entry: a reply to a hairpin flow, a new flow to a
 * Service, or traffic kpx does not touch. */
static __attribute__((noinline)) int from_pod_slow(struct __sk_buff *skb, struct pkt4 *p)
{
	const struct kpx_config *cfg = config();
	__be32 hairpin_addr = cfg ? cfg->hairpin_snat_addr_v4 : 0;
	struct kpx_service_value *svc;
	struct kpx_backend_value_v4 *be;
	__be32 snat_addr = 0;
	__u32 svc_id;
	int ret;

	if (hairpin_addr && p->ip->daddr == hairpin_addr) {
		struct kpx_ct_value_v4 *ct = hairpin_reply_ct(p);

		if (ct)
			return hairpin_reply(skb, p, ct);
	}

	svc = lb_lookup_service(p);
	if (!svc) {
		count(KPX_CTR_PASS);
		return TC_ACT_OK;
	}
	if (p->is_fragment)
		return drop(KPX_CTR_DROP_FRAGMENT);
	svc_id = svc->svc_id;
	be = lb_pick_backend(p, svc);
	if (!be)
		return drop(KPX_CTR_DROP_NO_BACKEND);

	if (be->addr == p->ip->saddr) {
		if (!hairpin_addr)
			return drop(KPX_CTR_DROP_NO_HAIRPIN_ADDR);
		snat_addr = hairpin_addr;
		count(KPX_CTR_HAIRPIN);
	}
	ret = ct_create(p, be, svc_id, snat_addr);
	if (ret == -2)
		return drop(KPX_CTR_DROP_CT_CLASH);
	if (ret)
		return drop(KPX_CTR_DROP_CT_FULL);
	count(KPX_CTR_DNAT_NEW);
	return forward_translate(skb, p, be->addr, be->port, snat_addr);
}

SEC("tc")
int kpx_from_pod(struct __sk_buff *skb)
{
	struct kpx_ct_cache_entry_v4 *cached;
	struct kpx_ct_key_v4 key;
	struct kpx_ct_value_v4 *ct;
	struct pkt4 p;
	__u32 epoch;
	int r;

	r = parse_pkt4(skb, &p);
	if (r != PARSE_OK)
		return pass_unparsed(r);

	ct_key_from_pkt(&key, &p, KPX_CT_FORWARD);
	if (ct_cache_usable(&p)) {
		cached = ct_cache_get(&key);
		if (likely(cached)) {
			count(KPX_CTR_DNAT_ESTABLISHED);
			return forward_translate(skb, &p, cached->nat_addr, cached->nat_port,
						 cached->snat_addr);
		}
	}
	epoch = ct_epoch();
	ct = bpf_map_lookup_elem(&kpx_ct_v4, &key);
	if (ct && ct_forward_usable(ct, &p)) {
		if (unlikely(p.is_fragment))
			return drop(KPX_CTR_DROP_FRAGMENT);
		if (ct_cache_usable(&p))
			ct_cache_put(&key, ct, epoch);
		count(KPX_CTR_DNAT_ESTABLISHED);
		return forward_translate(skb, &p, ct->nat_addr, ct->nat_port, ct->snat_addr);
	}
	return from_pod_slow(skb, &p);
}

SEC("tc")
int kpx_to_pod(struct __sk_buff *skb)
{
	struct kpx_ct_cache_entry_v4 *cached;
	struct kpx_ct_key_v4 key;
	struct kpx_ct_value_v4 *ct;
	struct pkt4 p;
	__u32 epoch;
	int r;

	r = parse_pkt4(skb, &p);
	if (r != PARSE_OK)
		return pass_unparsed(r);

	ct_key_from_pkt(&key, &p, KPX_CT_REPLY);
	if (ct_cache_usable(&p)) {
		cached = ct_cache_get(&key);
		if (likely(cached)) {
			count(KPX_CTR_REVNAT);
			if (nat_rewrite_src(skb, &p, cached->nat_addr, cached->nat_port, 0))
				return drop(KPX_CTR_DROP_REWRITE);
			return TC_ACT_OK;
		}
	}
	epoch = ct_epoch();
	ct = bpf_map_lookup_elem(&kpx_ct_v4, &key);
	if (!ct || !ct_reply_live(&key, ct)) {
		count(KPX_CTR_PASS);
		return TC_ACT_OK;
	}
	if (unlikely(p.is_fragment))
		return drop(KPX_CTR_DROP_FRAGMENT);
	ct_reply_seen(ct, &p);
	if (ct_cache_usable(&p))
		ct_cache_put(&key, ct, epoch);
	count(KPX_CTR_REVNAT);
	if (nat_rewrite_src(skb, &p, ct->nat_addr, ct->nat_port, 0))
		return drop(KPX_CTR_DROP_REWRITE);
	return TC_ACT_OK;
}
