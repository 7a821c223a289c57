/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP errors kpx makes itself, in place of the frame they are about:
 * "fragmentation needed" for a frame too large for the way kpx sends it on
 * (icmp_frag_needed), and refusals.
 *
 * Refusing a new flow to a Service without endpoints, as kube-proxy's
 * REJECT rule does (iptables' and nftables' default: ICMP port unreachable,
 * for TCP and UDP alike): the frame itself becomes the ICMP error, sent back
 * out of the interface it came in on, to the sender. The client's kernel
 * matches it to its socket by the embedded header: connect() fails with
 * ECONNREFUSED at once, a connected UDP socket reads ECONNREFUSED.
 *
 * Only tc (the skb helpers below); the sender is whoever is behind the
 * interface, so a spoofed source gets nothing: the error goes back where the
 * frame came from, never to the address it claims. Each error spends the
 * interface's new-flow budget (ct_admit), so a flood of frames to an empty
 * Service cannot make kpx send more errors than the budget allows.
 *
 * A frame whose L4 checksum is CHECKSUM_PARTIAL (a pod's own frame over a
 * veth) keeps that state: the kernel would complete the embedded header's
 * checksum field on a device without offload. It goes back over the veth
 * it came from, which hands it to the pod's stack as it is; an ICMP error
 * never leaves through a device that would complete it.
 */
#ifndef KPX_BPF_REJECT_H
#define KPX_BPF_REJECT_H

#include "common.h"
#include "conntrack.h"
#include "csum.h"
#include "fib.h"
#include "lb.h"
#include "maps.h"
#include "parse.h"
#include "verdict.h"

#ifndef KPX_CTX_XDP

#define REJECT_ICMP_DEST_UNREACH 3
#define REJECT_ICMP_PORT_UNREACH 3
#define REJECT_ICMP_FRAG_NEEDED 4
#ifndef IP_DF
#define IP_DF 0x4000
#endif
/* What of the offending datagram the error carries: its IP header and the
 * first 8 bytes after it (RFC 792; the ports, which is what the sender's
 * kernel matches on). */
#define REJECT_L4_BYTES 8
#define REJECT_MAX_EMB (60 + REJECT_L4_BYTES)
#define REJECT_HDRS (ETH_HLEN + sizeof(struct iphdr) + 8) /* eth | ip | icmp */

/* The error as it is written to the frame from eth on; pad puts the IP
 * header on a 4-byte boundary for bpf_csum_diff. */
struct reject_frame {
	__u16 pad;
	struct ethhdr eth;
	struct iphdr ip;
	__u8 icmp_type;
	__u8 icmp_code;
	__sum16 icmp_check;
	__u32 icmp_unused;
	__u8 emb[REJECT_MAX_EMB];
};
_Static_assert(__builtin_offsetof(struct reject_frame, ip) == 2 + ETH_HLEN, "reject_frame: no hole after eth");
_Static_assert(__builtin_offsetof(struct reject_frame, emb) == 2 + REJECT_HDRS, "reject_frame: headers packed");

static __always_inline __sum16 reject_fold(__s64 sum)
{
	return (__sum16)~csum_fold32((__u32)sum);
}

/* What icmp_send_back sends. */
struct icmp_back {
	__u8 type;
	__u8 code;
	__u8 admitted; /* the frame spent its interface's budget already */
	__u8 pad;
	__u32 ctr;     /* the counter of a sent error */
	__be32 rest;   /* the ICMP header's second word */
	__be32 saddr;  /* the error's source; 0: the frame's destination */
};

/*
 * Turn the frame `p` into the ICMP error `e` to the frame's source and send
 * it back out of the interface it arrived on, spending a token of its
 * budget unless the caller did. Returns the verdict; counts e->ctr, or the
 * drop that happened instead.
 */
static __attribute__((noinline)) int icmp_send_back(struct __sk_buff *skb, struct pkt4 *p, const struct icmp_back *e)
{
	__u32 ihl_len, emb_len, out_len, zero = 0;
	struct reject_frame *fp;
	struct ct_scratch *sc;
	__u8 tmp[ETH_ALEN];
	__s64 sum;

	/* The error is built in the per-CPU scratch: it is the last thing any
	 * call chain does, and its callers' frames leave no room for it. */
	_Static_assert(sizeof(struct reject_frame) <= sizeof(((struct ct_scratch *)0)->icmp), "scratch");
	sc = bpf_map_lookup_elem(&kpx_ct_scratch, &zero);
	if (!sc)
		return drop(KPX_CTR_DROP_REWRITE);
	fp = (struct reject_frame *)sc->icmp;
#define f (*fp)
	if (!e->admitted && !ct_admit(skb->ifindex))
		return drop(KPX_CTR_DROP_CT_BUDGET);
	ihl_len = (p->ip->ihl * 4) & 0x3c;
	if (ihl_len < sizeof(struct iphdr))
		return drop(KPX_CTR_DROP_REWRITE);
	emb_len = ihl_len + REJECT_L4_BYTES;
	__builtin_memset(&f, 0, sizeof(f));
	/* The original Ethernet header, IP header and first L4 bytes, at the
	 * place they take in the error (the parser saw them all). */
	if (bpf_skb_load_bytes(skb, 0, &f.eth, ETH_HLEN))
		return drop(KPX_CTR_DROP_REWRITE);
	if (bpf_skb_load_bytes(skb, ETH_HLEN, f.emb, emb_len))
		return drop(KPX_CTR_DROP_REWRITE);
	/* Back to the sender: the MACs swap. */
	__builtin_memcpy(tmp, f.eth.h_source, ETH_ALEN);
	__builtin_memcpy(f.eth.h_source, f.eth.h_dest, ETH_ALEN);
	__builtin_memcpy(f.eth.h_dest, tmp, ETH_ALEN);

	out_len = REJECT_HDRS + emb_len;
	f.ip.version = 4;
	f.ip.ihl = 5;
	f.ip.tos = 0xc0; /* internetwork control, as the kernel's own ICMP errors */
	f.ip.tot_len = bpf_htons(out_len - ETH_HLEN);
	f.ip.ttl = 64;
	f.ip.protocol = IPPROTO_ICMP;
	/* A refusal comes from the address the client asked for (the
	 * Service's), which is what its kernel expects it from. */
	f.ip.saddr = e->saddr ? e->saddr : ((struct iphdr *)f.emb)->daddr;
	f.ip.daddr = ((struct iphdr *)f.emb)->saddr;
	sum = bpf_csum_diff(0, 0, (__be32 *)&f.ip, sizeof(f.ip), 0);
	if (sum < 0)
		return drop(KPX_CTR_DROP_REWRITE);
	f.ip.check = reject_fold(sum);

	f.icmp_type = e->type;
	f.icmp_code = e->code;
	f.icmp_unused = e->rest;
	/* emb_len is a multiple of 4 (IHL words + 8), as bpf_csum_diff wants. */
	sum = bpf_csum_diff(0, 0, (__be32 *)&f.icmp_type, 8 + emb_len, 0);
	if (sum < 0)
		return drop(KPX_CTR_DROP_REWRITE);
	f.icmp_check = reject_fold(sum);

	/* The frame's length becomes the error's: at least every header the
	 * kernel's checksum offload may still point into, so this never falls
	 * below what bpf_skb_change_tail allows. */
	if (bpf_skb_change_tail(skb, out_len, 0))
		return drop(KPX_CTR_DROP_REWRITE);
	if (bpf_skb_store_bytes(skb, 0, &f.eth, out_len, BPF_F_INVALIDATE_HASH))
		return drop(KPX_CTR_DROP_REWRITE);
	count(e->ctr);
	return bpf_redirect(skb->ifindex, 0);
#undef f
}

/* A new flow's first frame refused: ICMP port unreachable from the frontend. */
static __always_inline int reject_port_unreachable(struct __sk_buff *skb, struct pkt4 *p, int admitted)
{
	struct icmp_back e = {.type = REJECT_ICMP_DEST_UNREACH, .code = REJECT_ICMP_PORT_UNREACH,
			      .admitted = !!admitted, .ctr = KPX_CTR_REJECT};

	return icmp_send_back(skb, p, &e);
}

/*
 * A frame kpx must send on itself is larger than the MTU of its way
 * (bpf_fib_lookup's BPF_FIB_LKUP_RET_FRAG_NEEDED, `mtu` from it): with DF,
 * as the kernel's forwarding would, ICMP fragmentation needed with that
 * MTU, from `saddr` (the node), back to its sender, which lowers its path
 * MTU and sends smaller; without DF dropped and counted (kpx does not
 * fragment). Each error spends the interface's budget, as a refusal does.
 */
static __always_inline int icmp_frag_needed(struct __sk_buff *skb, struct pkt4 *p, __u32 mtu, __be32 saddr)
{
	struct icmp_back e = {.type = REJECT_ICMP_DEST_UNREACH, .code = REJECT_ICMP_FRAG_NEEDED,
			      .ctr = KPX_CTR_FRAG_NEEDED, .rest = bpf_htonl(mtu & 0xffff), .saddr = saddr};

	if (!(p->ip->frag_off & bpf_htons(IP_DF)))
		return drop(KPX_CTR_DROP_FIB);
	return icmp_send_back(skb, p, &e);
}

/* The verdict for a frame fib_route found no way on for (fib, rc: its
 * results): fragmentation needed when it is too large, from the node's
 * address; else no route. */
static __always_inline int fib_refuse(struct __sk_buff *skb, struct pkt4 *p, const struct bpf_fib_lookup *fib, int rc)
{
	const struct kpx_config *cfg = config();

	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return icmp_frag_needed(skb, p, fib->mtu_result, cfg ? cfg->node_addr_v4 : 0);
	return drop(KPX_CTR_DROP_FIB);
}

/* The verdict for a new flow lb_select found no backend for (its result;
 * `admitted`: the flow spent its interface's budget already). */
static __always_inline int lb_refuse(struct __sk_buff *skb, struct pkt4 *p, int pick, int admitted)
{
	if (pick == LB_EMPTY)
		return reject_port_unreachable(skb, p, admitted);
	if (pick == LB_NO_LOCAL)
		return drop(KPX_CTR_DROP_NO_LOCAL);
	return drop(KPX_CTR_DROP_NO_BACKEND);
}

#endif /* !KPX_CTX_XDP */

#endif
