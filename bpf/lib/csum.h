/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Checksum updates after a rewrite.
 *
 * The IPv4 header checksum is updated in place (RFC 1624): it never depends
 * on the skb's checksum state. TCP/UDP checksums go through
 * bpf_l4_csum_replace, because only the kernel knows the skb's ip_summed:
 * with CHECKSUM_PARTIAL (offloaded, the usual case on a veth) the field
 * holds the pseudo-header sum and must only follow address changes, not
 * port changes; the helper does the right thing for each state. UDP uses
 * BPF_F_MARK_MANGLED_0 so that a zero ("no checksum") stays zero and a
 * computed zero is sent as 0xffff.
 */
#ifndef KPX_BPF_CSUM_H
#define KPX_BPF_CSUM_H

#include "common.h"

static __always_inline __u32 csum_fold32(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

/* Update the IPv4 header checksum for a 32-bit field changing from -> to. */
static __always_inline void ip_csum_replace4(__sum16 *check, __be32 from, __be32 to)
{
	__u32 s = (__u16)~*check;

	s += (~from & 0xffff) + (~from >> 16);
	s += (to & 0xffff) + (to >> 16);
	*check = (__sum16)~csum_fold32(s);
}

static __always_inline __u32 l4_csum_off(const struct pkt4 *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
						    : offsetof(struct udphdr, check));
}

static __always_inline __u64 l4_csum_flags(const struct pkt4 *p)
{
	return p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* The L4 checksum follows an address change (pseudo-header). */
static __always_inline int l4_csum_addr(struct __sk_buff *skb, const struct pkt4 *p,
					__be32 from, __be32 to)
{
	return bpf_l4_csum_replace(skb, l4_csum_off(p), from, to,
				   BPF_F_PSEUDO_HDR | sizeof(__u32) | l4_csum_flags(p));
}

/* The L4 checksum follows a port change. */
static __always_inline int l4_csum_port(struct __sk_buff *skb, const struct pkt4 *p,
					__be16 from, __be16 to)
{
	if (from == to)
		return 0;
	return bpf_l4_csum_replace(skb, l4_csum_off(p), from, to,
				   sizeof(__u16) | l4_csum_flags(p));
}

#endif
