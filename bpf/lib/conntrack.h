/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking for translated flows (LRU hash, two entries a flow).
 *
 * Timeouts are evaluated lazily: an entry idle longer than its state's
 * timeout is treated as absent and overwritten by the next new flow. The
 * last-seen stamp is written at most once a second, so an established flow
 * does not dirty its entry's cache line on every packet.
 */
#ifndef KPX_BPF_CONNTRACK_H
#define KPX_BPF_CONNTRACK_H

#include "common.h"
#include "maps.h"
#include "parse.h"

static __always_inline void ct_key_from_pkt(struct kpx_ct_key_v4 *k, const struct pkt4 *p,
					    __u8 dir)
{
	k->saddr = p->ip->saddr;
	k->daddr = p->ip->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->dir = dir;
	k->pad = 0;
}

/* The ct flags a packet adds: TCP state bits, nothing for UDP. */
static __always_inline __u16 ct_flags_of(const struct pkt4 *p)
{
	__u16 f = 0;

	if (p->proto != IPPROTO_TCP)
		return 0;
	f |= (p->tcp_flags & TCPF_SYN) ? KPX_CT_F_SYN : KPX_CT_F_ESTABLISHED;
	if (p->tcp_flags & TCPF_FIN)
		f |= KPX_CT_F_FIN;
	if (p->tcp_flags & TCPF_RST)
		f |= KPX_CT_F_RST;
	return f;
}

static __always_inline __u32 cfg_or(__u32 v, __u32 dflt)
{
	return v ? v : dflt;
}

static __always_inline __u64 ct_timeout_ns(const struct kpx_ct_value_v4 *ct, __u8 proto)
{
	const struct kpx_config *cfg = config();
	__u32 s;

	if (proto == IPPROTO_TCP) {
		if (ct->flags & (KPX_CT_F_FIN | KPX_CT_F_RST))
			s = cfg_or(cfg ? cfg->tcp_closing_timeout_s : 0, KPX_DEFAULT_TCP_CLOSING_TIMEOUT_S);
		else if (ct->flags & KPX_CT_F_ESTABLISHED)
			s = cfg_or(cfg ? cfg->tcp_established_timeout_s : 0,
				   KPX_DEFAULT_TCP_ESTABLISHED_TIMEOUT_S);
		else
			s = cfg_or(cfg ? cfg->tcp_syn_timeout_s : 0, KPX_DEFAULT_TCP_SYN_TIMEOUT_S);
	} else {
		s = cfg_or(cfg ? cfg->udp_timeout_s : 0, KPX_DEFAULT_UDP_TIMEOUT_S);
	}
	return (__u64)s * KPX_NSEC_PER_SEC;
}

/*
 * Account a packet to a FORWARD entry. Returns 0 when the entry no longer
 * describes this packet's flow and a new one must be made: it timed out, or
 * a fresh SYN reuses the tuple of a connection that completed or closed.
 */
static __always_inline int ct_forward_usable(struct kpx_ct_value_v4 *ct, const struct pkt4 *p)
{
	__u16 add = ct_flags_of(p);
	__u64 now, idle;

	if ((p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN &&
	    (ct->flags & (KPX_CT_F_ESTABLISHED | KPX_CT_F_FIN | KPX_CT_F_RST)))
		return 0;
	now = bpf_ktime_get_coarse_ns();
	idle = now - ct->last_seen_ns;
	if (unlikely(idle > KPX_NSEC_PER_SEC)) {
		if (idle > ct_timeout_ns(ct, p->proto))
			return 0;
		ct->last_seen_ns = now;
	}
	if ((ct->flags & add) != add)
		ct->flags |= add;
	return 1;
}

/* Account a packet to a REPLY entry. Replies never expire on their own:
 * their FORWARD entry decides, and rewrites them when the flow is remade. */
static __always_inline void ct_reply_seen(struct kpx_ct_value_v4 *ct, const struct pkt4 *p)
{
	__u16 add = ct_flags_of(p);
	__u64 now = bpf_ktime_get_coarse_ns();

	if (now - ct->last_seen_ns > KPX_NSEC_PER_SEC)
		ct->last_seen_ns = now;
	if ((ct->flags & add) != add)
		ct->flags |= add;
}

/*
 * Create both entries of a new flow: FORWARD keyed by the client's packet,
 * REPLY keyed by the backend's answer (to the client, or to the hairpin
 * address when the source is NATed).
 */
static __always_inline int ct_create(const struct pkt4 *p, const struct kpx_backend_value_v4 *be,
				     __u32 svc_id, __be32 snat_addr)
{
	struct kpx_ct_key_v4 key;
	struct kpx_ct_value_v4 val = {};
	__u64 now = bpf_ktime_get_coarse_ns();

	ct_key_from_pkt(&key, p, KPX_CT_FORWARD);
	val.nat_addr = be->addr;
	val.nat_port = be->port;
	val.snat_addr = snat_addr;
	val.svc_id = svc_id;
	val.flags = ct_flags_of(p) | (snat_addr ? KPX_CT_F_HAIRPIN : 0);
	val.last_seen_ns = now;
	val.created_ns = now;
	if (bpf_map_update_elem(&kpx_ct_v4, &key, &val, BPF_ANY))
		return -1;

	key.saddr = be->addr;
	key.daddr = snat_addr ? snat_addr : p->ip->saddr;
	key.sport = be->port;
	key.dport = p->sport;
	key.dir = KPX_CT_REPLY;
	val.nat_addr = p->ip->daddr;
	val.nat_port = p->dport;
	val.snat_addr = snat_addr ? p->ip->saddr : 0;
	val.flags = snat_addr ? KPX_CT_F_HAIRPIN : 0;
	if (bpf_map_update_elem(&kpx_ct_v4, &key, &val, BPF_ANY))
		return -1;
	return 0;
}

#endif
