/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Checksum updates after a rewrite (RFC 1624 incremental updates).
 *
 * The IPv4 header checksum never depends on the skb's checksum state. The
 * TCP/UDP checksum does: with CHECKSUM_PARTIAL (offloaded, the usual case on
 * a veth) the field holds the folded pseudo-header sum, not inverted, and
 * must follow address changes only, not port changes; with CHECKSUM_NONE or
 * UNNECESSARY it is the full checksum and follows both. kpx reads the state
 * from the kernel's sk_buff (bpf_cast_to_kern_ctx, which the verifier turns
 * into a register move) and updates the field inline: on this machine's
 * kernel a helper call costs more than the rest of the hot path. With
 * CHECKSUM_COMPLETE the kernel's skb->csum must follow too, which only the
 * helper can do, so that state goes through bpf_l4_csum_replace.
 * UDP checksum 0 means "none" and stays 0; a computed 0 is sent as 0xffff.
 * At XDP (KPX_CTX_XDP) there is no skb: the field is the full checksum.
 */
#ifndef KPX_BPF_CSUM_H
#define KPX_BPF_CSUM_H

#include <bpf/bpf_core_read.h>

#include "common.h"
#include "ctx.h"
#include "parse.h"

enum { KPX_CSUM_NONE = 0, KPX_CSUM_UNNECESSARY = 1, KPX_CSUM_COMPLETE = 2, KPX_CSUM_PARTIAL = 3 };

#ifdef KPX_CTX_XDP
static __always_inline __u8 ctx_ip_summed(struct xdp_md *ctx)
{
	return KPX_CSUM_NONE;
}
#else
/* The kernel's skb, for ip_summed only (CO-RE: the offset comes from the
 * running kernel's BTF). */
struct sk_buff {
	__u8 ip_summed : 2;
} __attribute__((preserve_access_index));

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

static __always_inline __u8 ctx_ip_summed(struct __sk_buff *skb)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);

	return BPF_CORE_READ_BITFIELD(kskb, ip_summed);
}
#endif

static __always_inline __u32 csum_fold32(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

/* One's-complement difference of a 32-bit / 16-bit field changing from -> to. */
static __always_inline __u32 csum_diff32(__be32 from, __be32 to)
{
	return (~from & 0xffff) + (~from >> 16) + (to & 0xffff) + (to >> 16);
}

static __always_inline __u32 csum_diff16(__be16 from, __be16 to)
{
	return (__u16)~from + (__u32)to;
}

/* Update the IPv4 header checksum for a 32-bit field changing from -> to. */
static __always_inline void ip_csum_replace4(__sum16 *check, __be32 from, __be32 to)
{
	*check = (__sum16)~csum_fold32((__u16)~*check + csum_diff32(from, to));
}

static __always_inline __u32 l4_csum_off(const struct pkt4 *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
						    : offsetof(struct udphdr, check));
}

/*
 * Apply an L4 checksum change: `pseudo` is the summed difference of the
 * pseudo-header fields (addresses), `ports` that of the ports. Must run
 * before any helper that invalidates p's packet pointers. Returns -1 when
 * the caller must use the helpers instead (CHECKSUM_COMPLETE).
 */
static __always_inline int l4_csum_update(struct kpx_ctx *ctx, const struct pkt4 *p, __u32 pseudo,
					  __u32 ports)
{
	void *data_end = ctx_data_end(ctx);
	__u8 state = ctx_ip_summed(ctx);
	__sum16 *check;
	__u32 s;

	if (state == KPX_CSUM_COMPLETE)
		return -1;
	check = (__sum16 *)(p->l4 + (p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
							     : offsetof(struct udphdr, check)));
	if ((void *)(check + 1) > data_end)
		return -1;
	if (p->proto == IPPROTO_UDP && *check == 0)
		return 0; /* no checksum */
	if (state == KPX_CSUM_PARTIAL)
		s = csum_fold32((__u32)*check + pseudo);
	else
		s = (__u16)~csum_fold32((__u16)~*check + pseudo + ports);
	if (p->proto == IPPROTO_UDP && s == 0)
		s = 0xffff;
	*check = (__sum16)s;
	return 0;
}

#ifdef KPX_CTX_XDP
/* Never reached at XDP (no CHECKSUM_COMPLETE state there). */
static __always_inline int l4_csum_addr(struct xdp_md *ctx, const struct pkt4 *p, __be32 from, __be32 to)
{
	return -1;
}

static __always_inline int l4_csum_port(struct xdp_md *ctx, const struct pkt4 *p, __be16 from, __be16 to)
{
	return -1;
}
#else
static __always_inline __u64 l4_csum_flags(const struct pkt4 *p)
{
	return p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* Helper path (CHECKSUM_COMPLETE): the L4 checksum follows an address change. */
static __always_inline int l4_csum_addr(struct __sk_buff *skb, const struct pkt4 *p,
					__be32 from, __be32 to)
{
	if (from == to)
		return 0;
	return bpf_l4_csum_replace(skb, l4_csum_off(p), from, to,
				   BPF_F_PSEUDO_HDR | sizeof(__u32) | l4_csum_flags(p));
}

/* Helper path (CHECKSUM_COMPLETE): the L4 checksum follows a port change. */
static __always_inline int l4_csum_port(struct __sk_buff *skb, const struct pkt4 *p,
					__be16 from, __be16 to)
{
	if (from == to)
		return 0;
	return bpf_l4_csum_replace(skb, l4_csum_off(p), from, to,
				   sizeof(__u16) | l4_csum_flags(p));
}
#endif

#endif
