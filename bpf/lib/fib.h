/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Sending a frame on by kpx itself (tc): a frame whose source kpx changed to
 * one of the node's own addresses cannot go back to the kernel's forwarding
 * path (it would be dropped as a martian: a received frame claiming a local
 * source), so kpx routes it: a FIB lookup as the kernel's forwarding would
 * make it (input interface: the one the frame arrived on, which must have
 * forwarding on, as a node's interfaces do), the MACs from the neighbour
 * table, and a redirect to the egress interface.
 * When the next hop's MAC is not known yet, bpf_redirect_neigh resolves it
 * (ARP) as the kernel's own output path does.
 */
#ifndef KPX_BPF_FIB_H
#define KPX_BPF_FIB_H

#include "common.h"
#include "parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/*
 * The length the way's MTU must hold: the datagram's, or for a GSO skb (a
 * TCP sender's or GRO's aggregate, which crosses veths whole) that of each
 * segment it becomes: headers and gso_size, as the kernel's forwarding
 * checks it (skb_gso_validate_network_len). Measuring the aggregate would
 * refuse every large TSO burst of a backend on another node.
 */
static __always_inline __u32 fib_frame_len(struct __sk_buff *skb, const struct pkt4 *p)
{
	__u8 doff;
	__u32 l4h;

	if (!skb->gso_size || (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP))
		return bpf_ntohs(p->ip->tot_len);
	l4h = sizeof(struct udphdr);
	if (p->proto == IPPROTO_TCP) {
		/* Read, not dereferenced: p->l4 is no packet pointer on every
		 * path that routes (an ICMP error's). */
		if (bpf_skb_load_bytes(skb, p->l4_off + 12, &doff, 1))
			return bpf_ntohs(p->ip->tot_len);
		l4h = (doff >> 4) * 4;
	}
	return (p->l4_off - ETH_HLEN) + l4h + skb->gso_size;
}

/* Where the packet p goes once its addresses and ports are saddr:sport ->
 * daddr:dport (asked before the rewrite: a rewrite may invalidate p's
 * pointers). 0 with *fib filled
 * (fib->ifindex: the egress interface; rc in *rc: BPF_FIB_LKUP_RET_SUCCESS
 * or _NO_NEIGH), or -1 when the node has no route for it (or the MTU is
 * exceeded). */
static __always_inline int fib_route(struct __sk_buff *skb, const struct pkt4 *p, __be32 saddr, __be32 daddr,
				     __be16 sport, __be16 dport, struct bpf_fib_lookup *fib, int *rc)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->l4_protocol = p->proto;
	fib->sport = sport;
	fib->dport = dport;
	fib->tot_len = fib_frame_len(skb, p);
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = skb->ifindex;
	*rc = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
	if (*rc == BPF_FIB_LKUP_RET_SUCCESS || *rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	return -1;
}

/* Send the frame out as fib (from fib_route) says: TC_ACT_REDIRECT, or
 * TC_ACT_SHOT if the frame is too short for an Ethernet header. Invalidates
 * packet pointers. */
static __always_inline int fib_redirect(struct __sk_buff *skb, const struct bpf_fib_lookup *fib, int rc)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = {.nh_family = AF_INET, .ipv4_nh = fib->ipv4_dst};

		return bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
	}
	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	return bpf_redirect(fib->ifindex, 0);
}

#endif
