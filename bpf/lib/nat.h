/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Address and port rewrites. Header fields are written directly (the
 * verifier unclones the skb first); checksums are updated in place, or
 * through the kernel helper for CHECKSUM_COMPLETE skbs (see csum.h). Helper
 * calls come last: they invalidate the packet pointers.
 */
#ifndef KPX_BPF_NAT_H
#define KPX_BPF_NAT_H

#include "common.h"
#include "csum.h"
#include "parse.h"

/* Rewrite the destination to addr:port and, when snat_addr is not 0, the
 * source address to snat_addr. Returns 0, or -1 if a helper failed. */
static __always_inline int nat_rewrite_dst(struct __sk_buff *skb, struct pkt4 *p, __be32 addr,
					   __be16 port, __be32 snat_addr)
{
	__be32 old_daddr = p->ip->daddr, old_saddr = p->ip->saddr;
	__be16 old_dport = p->dport;

	p->ip->daddr = addr;
	ip_csum_replace4(&p->ip->check, old_daddr, addr);
	if (snat_addr) {
		p->ip->saddr = snat_addr;
		ip_csum_replace4(&p->ip->check, old_saddr, snat_addr);
	}
	*(__be16 *)(p->l4 + 2) = port;

	if (l4_csum_update(skb, p,
			   csum_diff32(old_daddr, addr) + (snat_addr ? csum_diff32(old_saddr, snat_addr) : 0),
			   csum_diff16(old_dport, port)) == 0)
		return 0;
	if (l4_csum_addr(skb, p, old_daddr, addr))
		return -1;
	if (snat_addr && l4_csum_addr(skb, p, old_saddr, snat_addr))
		return -1;
	return l4_csum_port(skb, p, old_dport, port);
}

/* Rewrite the source to addr:port and, when dnat_addr is not 0, the
 * destination address to dnat_addr (the reverse of nat_rewrite_dst). */
static __always_inline int nat_rewrite_src(struct __sk_buff *skb, struct pkt4 *p, __be32 addr,
					   __be16 port, __be32 dnat_addr)
{
	__be32 old_saddr = p->ip->saddr, old_daddr = p->ip->daddr;
	__be16 old_sport = p->sport;

	p->ip->saddr = addr;
	ip_csum_replace4(&p->ip->check, old_saddr, addr);
	if (dnat_addr) {
		p->ip->daddr = dnat_addr;
		ip_csum_replace4(&p->ip->check, old_daddr, dnat_addr);
	}
	*(__be16 *)p->l4 = port;

	if (l4_csum_update(skb, p,
			   csum_diff32(old_saddr, addr) + (dnat_addr ? csum_diff32(old_daddr, dnat_addr) : 0),
			   csum_diff16(old_sport, port)) == 0)
		return 0;
	if (l4_csum_addr(skb, p, old_saddr, addr))
		return -1;
	if (dnat_addr && l4_csum_addr(skb, p, old_daddr, dnat_addr))
		return -1;
	return l4_csum_port(skb, p, old_sport, port);
}

/* Send a rewritten frame back out of the interface it came in on, towards
 * the pod that sent it (hairpin): swap the MACs, redirect to egress. */
static __always_inline int nat_bounce(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u8 tmp[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
	return bpf_redirect(skb->ifindex, 0);
}

#endif
