/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Address and port rewrites, for tc and XDP (ctx.h). Header fields are
 * written directly (at tc the verifier unclones the skb first); checksums
 * are updated in place, or through the kernel helper for CHECKSUM_COMPLETE
 * skbs (see csum.h). Helper calls come last: they invalidate the packet
 * pointers.
 */
#ifndef KPX_BPF_NAT_H
#define KPX_BPF_NAT_H

#include "common.h"
#include "csum.h"
#include "ctx.h"
#include "parse.h"

/*
 * Rewrite one end of the packet to addr:port (the destination when dst,
 * else the source) and, where addr2 / port2 are not 0, the other end's
 * address / port. dst is a constant at every call, so the choice folds
 * away. Returns 0, or -1 if a helper failed.
 */
static __always_inline int nat_rewrite(struct kpx_ctx *ctx, struct pkt4 *p, const int dst,
				       __be32 addr, __be16 port, __be32 addr2, __be16 port2)
{
	__be32 *a = dst ? &p->ip->daddr : &p->ip->saddr;
	__be32 *a2 = dst ? &p->ip->saddr : &p->ip->daddr;
	__be16 *pt = (__be16 *)(p->l4 + (dst ? 2 : 0));
	__be16 *pt2 = (__be16 *)(p->l4 + (dst ? 0 : 2));
	__be32 old_a = *a, old_a2 = *a2;
	__be16 old_p = *pt, old_p2 = *pt2;
	__u32 pseudo, ports;

	*a = addr;
	ip_csum_replace4(&p->ip->check, old_a, addr);
	pseudo = csum_diff32(old_a, addr);
	*pt = port;
	ports = csum_diff16(old_p, port);
	if (addr2) {
		*a2 = addr2;
		ip_csum_replace4(&p->ip->check, old_a2, addr2);
		pseudo += csum_diff32(old_a2, addr2);
	}
	if (port2) {
		*pt2 = port2;
		ports += csum_diff16(old_p2, port2);
	}

	if (l4_csum_update(ctx, p, pseudo, ports) == 0)
		return 0;
	if (l4_csum_addr(ctx, p, old_a, addr))
		return -1;
	if (addr2 && l4_csum_addr(ctx, p, old_a2, addr2))
		return -1;
	if (port2 && l4_csum_port(ctx, p, old_p2, port2))
		return -1;
	return l4_csum_port(ctx, p, old_p, port);
}

/* Destination to addr:port; source address / port to saddr / sport unless 0. */
static __always_inline int nat_rewrite_dst(struct kpx_ctx *ctx, struct pkt4 *p, __be32 addr,
					   __be16 port, __be32 saddr, __be16 sport)
{
	return nat_rewrite(ctx, p, 1, addr, port, saddr, sport);
}

/* Source to addr:port; destination address / port to daddr / dport unless 0
 * (the reverse of nat_rewrite_dst). */
static __always_inline int nat_rewrite_src(struct kpx_ctx *ctx, struct pkt4 *p, __be32 addr,
					   __be16 port, __be32 daddr, __be16 dport)
{
	return nat_rewrite(ctx, p, 0, addr, port, daddr, dport);
}

/* Send a rewritten frame back out of the interface it came in on, towards
 * the pod that sent it (hairpin): swap the MACs, bounce. */
static __always_inline int nat_bounce(struct kpx_ctx *ctx)
{
	void *data = ctx_data(ctx);
	void *data_end = ctx_data_end(ctx);
	struct ethhdr *eth = data;
	__u8 tmp[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return KPX_DROP;
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
	return ctx_bounce(ctx);
}

#endif
