/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP errors about translated flows (netfilter's RELATED handling in
 * nf_nat_icmp_reply_translation, which kube-proxy relies on): an error
 * quotes the datagram it is about as that datagram was when the error was
 * made, that is after kpx translated it. Its sender must see its own
 * datagram, so kpx translates the quote back, and the error's own addresses
 * where the flow's NAT changed them:
 *
 *  about a FORWARD datagram (the client's, client -> backend after DNAT):
 *    made by the backend (port unreachable) or by a router on the way to it
 *    (fragmentation needed, TTL exceeded). Found by the flow's REPLY entry;
 *    the quote's destination becomes the frontend again, its source the
 *    client (when it was source-NATed); the error goes to the client, from
 *    the frontend when the backend made it.
 *  about a REPLY datagram (the backend's, frontend -> client after the
 *    reverse translation): made by the client or a router on the way to it
 *    (fragmentation needed for a large answer through a NodePort). Found by
 *    the flow's FORWARD entry; the quote becomes the backend's datagram as it
 *    sent it; the error goes to the backend.
 *
 * Only destination unreachable, time exceeded and parameter problem, whose
 * quote is a datagram; only an error addressed to the quoted datagram's
 * sender. The entry is looked up on the interface the error arrives by, as
 * every conntrack lookup is, so an error sent by one pod never translates
 * for a flow of another, and nothing is written: an error keeps no flow
 * alive, makes no entry and changes none (netfilter does not refresh a
 * connection on RELATED traffic either).
 *
 * Checksums: the outer IP header's, the quoted IP header's, the quoted
 * TCP/UDP checksum when the quote holds it (updated as a full checksum, as
 * netfilter does; a receiver never verifies it) and the ICMP checksum over
 * all of it, incrementally. Bytes are written with bpf_skb_store_bytes and
 * BPF_F_RECOMPUTE_CSUM, so a CHECKSUM_COMPLETE skb's sum follows.
 */
#ifndef KPX_BPF_ICMP_H
#define KPX_BPF_ICMP_H

#include "common.h"
#include "conntrack.h"
#include "csum.h"
#include "fib.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"
#include "verdict.h"

#ifndef KPX_CTX_XDP

#define KPX_ICMP_DEST_UNREACH 3
#define KPX_ICMP_TIME_EXCEEDED 11
#define KPX_ICMP_PARAMETERPROB 12

/* Where the error arrived, which decides the entries it may match and what
 * becomes of it once translated. */
enum icmp_hook {
	ICMP_AT_TO_POD,   /* a pod's veth, towards the pod: its flows' errors to it */
	ICMP_AT_FROM_POD, /* a pod's veth, from the pod: as client or as a backend */
	ICMP_AT_UPLINK,   /* the uplink: uplink flows' errors from either side */
};

/* The ICMP header and the quoted IP header, as they sit in the frame. */
struct icmp_quote {
	__u8 type;
	__u8 code;
	__sum16 check;
	__u32 rest;
	struct iphdr ip;
};

/* icmp_error_xlate's locals, in the per-CPU scratch (ct_scratch.caller). */
struct icmp_scratch {
	struct icmp_quote q;
	__u8 l4[8];   /* the quoted ports and, for UDP, its checksum */
	__sum16 tcp_check;
	__u16 pad;
	struct bpf_fib_lookup fib;
};

/* The addresses and ports a translated error takes. */
struct icmp_xlate {
	__be32 osrc, odst;         /* the error's */
	__be32 isrc, idst;         /* the quote's */
	__be16 isport, idport;
};

/* Whether proto's checksum field is in the quote (offset from its L4 header). */
static __always_inline __u32 icmp_quote_l4_check_off(__u8 proto)
{
	return proto == IPPROTO_TCP ? offsetof(struct tcphdr, check) : offsetof(struct udphdr, check);
}

/*
 * The frame p (an ICMP message, parse_pkt4 said PARSE_OTHER_L4) at `hook`
 * on ifindex: when it is an error about a flow kpx translated, translate it
 * and return the verdict; else -1 and the frame is untouched (the caller
 * passes it). Packet pointers in p are void after a verdict.
 */
static __attribute__((noinline)) int icmp_error_xlate(struct __sk_buff *skb, struct pkt4 *p, __u32 ifindex,
						      int hook)
{
	struct kpx_ct_value_v4 *ffp;
	struct icmp_xlate x;
	struct ct_scratch *sc;
	__u32 zero = 0, icmp_off, l4_off, qlen, len = skb->len, ihl, route = 0, bounce = 0;
	__be32 osrc, odst;
	__sum16 ocheck, icheck;
	__u32 delta, pseudo, ports;
	__u16 *w;
	int found = 0, rc = 0, has_check;

	if (p->proto != IPPROTO_ICMP || (p->ip->frag_off & bpf_htons(IP_OFFSET | IP_MF)))
		return -1;
	sc = bpf_map_lookup_elem(&kpx_ct_scratch, &zero);
	if (!sc)
		return -1;
	_Static_assert(sizeof(struct icmp_scratch) <= sizeof(((struct ct_scratch *)0)->caller), "scratch");
#define s (*(struct icmp_scratch *)sc->caller)
#define rk (sc->rk)
#define fk (sc->fk)
#define rv (sc->tmp)
#define fv (sc->fv)
	osrc = p->ip->saddr;
	odst = p->ip->daddr;
	ocheck = p->ip->check;
	icmp_off = p->l4_off & 0x7f;
	if (bpf_skb_load_bytes(skb, icmp_off, &s.q, sizeof(s.q)))
		return -1;
	if (s.q.type != KPX_ICMP_DEST_UNREACH && s.q.type != KPX_ICMP_TIME_EXCEEDED &&
	    s.q.type != KPX_ICMP_PARAMETERPROB)
		return -1;
	if (s.q.ip.version != 4 || s.q.ip.ihl < 5 || (s.q.ip.frag_off & bpf_htons(IP_OFFSET)))
		return -1;
	if (s.q.ip.protocol != IPPROTO_TCP && s.q.ip.protocol != IPPROTO_UDP)
		return -1;
	/* Sent to the quoted datagram's sender, or it is no error about it. */
	if (odst != s.q.ip.saddr)
		return -1;
	ihl = (s.q.ip.ihl * 4) & 0x3c;
	l4_off = icmp_off + 8 + ihl;
	if (l4_off + sizeof(s.l4) > len)
		return -1;
	if (bpf_skb_load_bytes(skb, l4_off & 0xff, s.l4, sizeof(s.l4)))
		return -1;
	qlen = len - l4_off;

	/* The quoted datagram's tuple, the other way round: the tuple of the
	 * datagram answering it, which is how kpx keyed the flow. */
	rk.saddr = s.q.ip.daddr;
	rk.daddr = s.q.ip.saddr;
	rk.sport = *(__be16 *)(s.l4 + 2);
	rk.dport = *(__be16 *)s.l4;
	rk.proto = s.q.ip.protocol;
	rk.pad = 0;
	rk.ifindex = ifindex;

	/* About a FORWARD datagram: the flow's REPLY entry. */
	rk.dir = KPX_CT_REPLY;
	if (ct_get(&rk, &rv)) {
		__u16 up = rv.flags & KPX_CT_F_UPLINK, hp = rv.flags & KPX_CT_F_HAIRPIN;

		/* A pod's own flows (to_pod); the flows a pod or another node
		 * is the backend of, which kpx sends on (from_pod, uplink). */
		if (hook == ICMP_AT_TO_POD ? !up : (hook == ICMP_AT_UPLINK ? up : (up || hp))) {
			ffp = ct_reply_flow(&rk, &rv, &fk, &fv);
			if (ffp) {
				found = 1;
				x.idst = rv.nat_addr;
				x.idport = rv.nat_port;
				x.isrc = rv.snat_addr ? rv.snat_addr : s.q.ip.saddr;
				x.isport = rv.snat_port ? rv.snat_port : rk.dport;
				x.osrc = osrc == s.q.ip.daddr ? rv.nat_addr : osrc;
				x.odst = x.isrc;
				route = up;
				bounce = hp && hook == ICMP_AT_FROM_POD;
			}
		}
	}
	/* About a REPLY datagram: the flow's FORWARD entry, on the interface
	 * the flow came in by (the client's side). */
	if (!found && hook != ICMP_AT_TO_POD) {
		rk.dir = KPX_CT_FORWARD;
		if (ct_get(&rk, &fv) && !ct_forward_dead(&fv, rk.proto, bpf_ktime_get_coarse_ns()) &&
		    (hook == ICMP_AT_FROM_POD || (fv.flags & KPX_CT_F_UPLINK))) {
			found = 1;
			x.isrc = fv.nat_addr;
			x.isport = fv.nat_port;
			x.idst = fv.snat_addr ? fv.snat_addr : s.q.ip.daddr;
			x.idport = fv.snat_port ? fv.snat_port : rk.sport;
			x.odst = fv.nat_addr;
			x.osrc = osrc == s.q.ip.daddr && fv.snat_addr ? fv.snat_addr : osrc;
			route = fv.flags & KPX_CT_F_UPLINK;
		}
	}
	if (!found)
		return -1;

	/* Where it goes, asked before any byte changes (p's pointers). */
	if (route && fib_route(skb, p, x.osrc, x.odst, 0, 0, &s.fib, &rc))
		return drop(KPX_CTR_DROP_FIB);

	/* The outer header: addresses and its checksum (written below). */
	ip_csum_replace4(&ocheck, osrc, x.osrc);
	ip_csum_replace4(&ocheck, odst, x.odst);

	/* The quote: its L4 checksum first (a full checksum: pseudo header
	 * and ports), then ports, addresses and its IP header checksum; the
	 * ICMP checksum follows every 16-bit word that changed. */
	delta = 0;
	pseudo = csum_diff32(s.q.ip.saddr, x.isrc) + csum_diff32(s.q.ip.daddr, x.idst);
	ports = csum_diff16(*(__be16 *)s.l4, x.isport) + csum_diff16(*(__be16 *)(s.l4 + 2), x.idport);
	delta += ports;
	*(__be16 *)s.l4 = x.isport;
	*(__be16 *)(s.l4 + 2) = x.idport;
	has_check = 0;
	if (s.q.ip.protocol == IPPROTO_UDP) {
		w = (__u16 *)(s.l4 + 6);
		if (*w) {
			__u16 n = (__u16)~csum_fold32((__u16)~*w + pseudo + ports);

			n = n ? n : 0xffff;
			delta += csum_diff16(*w, n);
			*w = n;
		}
	} else if (qlen >= icmp_quote_l4_check_off(IPPROTO_TCP) + sizeof(__sum16)) {
		if (bpf_skb_load_bytes(skb, (l4_off + icmp_quote_l4_check_off(IPPROTO_TCP)) & 0x1ff, &s.tcp_check,
				       sizeof(s.tcp_check)))
			return -1;
		icheck = (__sum16)~csum_fold32((__u16)~s.tcp_check + pseudo + ports);
		delta += csum_diff16(s.tcp_check, icheck);
		s.tcp_check = icheck;
		has_check = 1;
	}
	icheck = s.q.ip.check;
	ip_csum_replace4(&s.q.ip.check, s.q.ip.saddr, x.isrc);
	ip_csum_replace4(&s.q.ip.check, s.q.ip.daddr, x.idst);
	delta += csum_diff32(s.q.ip.saddr, x.isrc) + csum_diff32(s.q.ip.daddr, x.idst) +
		 csum_diff16(icheck, s.q.ip.check);
	s.q.ip.saddr = x.isrc;
	s.q.ip.daddr = x.idst;
	s.q.check = (__sum16)~csum_fold32((__u16)~s.q.check + delta);

	/* Write: the outer check and addresses (contiguous: check, saddr,
	 * daddr), the ICMP header with the quoted IP header, the quoted L4. */
	{
		struct {
			__sum16 check;
			__be32 saddr;
			__be32 daddr;
		} __attribute__((packed)) outer = {ocheck, x.osrc, x.odst};

		if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, check), &outer, sizeof(outer),
					BPF_F_RECOMPUTE_CSUM))
			return drop(KPX_CTR_DROP_REWRITE);
	}
	if (bpf_skb_store_bytes(skb, icmp_off, &s.q, sizeof(s.q), BPF_F_RECOMPUTE_CSUM) ||
	    bpf_skb_store_bytes(skb, l4_off & 0xff, s.l4, sizeof(s.l4), BPF_F_RECOMPUTE_CSUM))
		return drop(KPX_CTR_DROP_REWRITE);
	if (has_check && bpf_skb_store_bytes(skb, (l4_off + icmp_quote_l4_check_off(IPPROTO_TCP)) & 0x1ff,
					     &s.tcp_check, sizeof(s.tcp_check), BPF_F_RECOMPUTE_CSUM))
		return drop(KPX_CTR_DROP_REWRITE);
	count(KPX_CTR_ICMP_XLATE);
	if (route)
		return fib_redirect(skb, &s.fib, rc);
	if (bounce)
		return nat_bounce(skb);
	return TC_ACT_OK;
#undef s
#undef rk
#undef fk
#undef rv
#undef fv
}

#endif /* !KPX_CTX_XDP */

#endif
