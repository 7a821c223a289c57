/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing: Ethernet + IPv4 + the TCP/UDP ports, with every read
 * bounds-checked against data_end.
 *
 * Outcomes (what the programs do with them is in kpx_lxc.bpf.c):
 *  PARSE_OK          IPv4 TCP/UDP, ports read (first fragment included)
 *  PARSE_NOT_IPV4    not an IPv4 frame, or too short for an Ethernet header
 *  PARSE_BAD_IP      IPv4 header invalid: IHL < 5, version != 4, or
 *                    tot_len smaller than the header or larger than the frame
 *  PARSE_OTHER_L4    valid IPv4, protocol is neither TCP nor UDP
 *  PARSE_FRAGMENT    a non-first fragment: no L4 header to read
 *  PARSE_TRUNC_L4    TCP/UDP whose header the frame does not hold
 * IP options (IHL > 5) are legal and skipped.
 */
#ifndef KPX_BPF_PARSE_H
#define KPX_BPF_PARSE_H

#include "common.h"
#include "ctx.h"

enum parse_result {
	PARSE_OK = 0,
	PARSE_NOT_IPV4,
	PARSE_BAD_IP,
	PARSE_OTHER_L4,
	PARSE_FRAGMENT,
	PARSE_TRUNC_L4,
};

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct pkt4 {
	struct ethhdr *eth;
	struct iphdr *ip;
	__u8 *l4;          /* TCP/UDP header, valid for the ports (and TCP flags) */
	__u32 l4_off;      /* from the start of the frame */
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;    /* TCP only: the byte holding FIN..CWR */
	__u8 is_fragment;  /* first fragment of a fragmented datagram */
};

/* TCP flag bits of tcp_flags (byte 13 of the TCP header). */
#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10

/* Bytes of headers the parser may need in the linear area. */
#define KPX_MAX_HDR (ETH_HLEN + 60 + sizeof(struct tcphdr))

static __always_inline int parse_pkt4(struct kpx_ctx *ctx, struct pkt4 *p)
{
	void *data = ctx_data(ctx);
	void *data_end = ctx_data_end(ctx);
	struct iphdr *ip;
	__u32 ihl_len, l4_need;

	p->eth = data;
	if ((void *)(p->eth + 1) > data_end)
		return PARSE_NOT_IPV4;
	if (p->eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;

	ip = (void *)(p->eth + 1);
	if ((void *)(ip + 1) > data_end) {
		/* Headers may sit partly outside the linear area: pull them in
		 * once (never on the common path, where they are linear). */
		__u32 len = ctx_len(ctx);

		if (len < ETH_HLEN + sizeof(*ip))
			return PARSE_BAD_IP;
		if (ctx_pull(ctx, len < KPX_MAX_HDR ? len : KPX_MAX_HDR))
			return PARSE_BAD_IP;
		data = ctx_data(ctx);
		data_end = ctx_data_end(ctx);
		p->eth = data;
		ip = (void *)(p->eth + 1);
		if ((void *)(ip + 1) > data_end)
			return PARSE_BAD_IP;
	}
	p->ip = ip;

	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_BAD_IP;
	ihl_len = ip->ihl * 4;
	if (bpf_ntohs(ip->tot_len) < ihl_len || bpf_ntohs(ip->tot_len) > ctx_len(ctx) - ETH_HLEN)
		return PARSE_BAD_IP;

	p->proto = ip->protocol;
	p->l4_off = ETH_HLEN + ihl_len;
	p->is_fragment = 0;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP ? PARSE_FRAGMENT : PARSE_OTHER_L4;
	if (ip->frag_off & bpf_htons(IP_MF))
		p->is_fragment = 1;

	if (p->proto == IPPROTO_TCP)
		l4_need = sizeof(struct tcphdr);
	else if (p->proto == IPPROTO_UDP)
		l4_need = sizeof(struct udphdr);
	else
		return PARSE_OTHER_L4;

	if (bpf_ntohs(ip->tot_len) < ihl_len + l4_need)
		return PARSE_TRUNC_L4;
	if (data + p->l4_off + l4_need > data_end) {
		if (ctx_pull(ctx, p->l4_off + l4_need))
			return PARSE_TRUNC_L4;
		data = ctx_data(ctx);
		data_end = ctx_data_end(ctx);
		p->eth = data;
		p->ip = (void *)(p->eth + 1);
		if ((void *)(p->ip + 1) > data_end)
			return PARSE_TRUNC_L4;
	}

	/* Bound the variable offset for the verifier: IHL is at most 15. */
	{
		__u32 off = p->l4_off & 0x7f;
		__u8 *l4 = data + off;

		if ((void *)(l4 + sizeof(struct udphdr)) > data_end)
			return PARSE_TRUNC_L4;
		p->l4 = l4;
		p->sport = *(__be16 *)l4;
		p->dport = *(__be16 *)(l4 + 2);
		p->tcp_flags = 0;
		if (p->proto == IPPROTO_TCP) {
			if ((void *)(l4 + sizeof(struct tcphdr)) > data_end)
				return PARSE_TRUNC_L4;
			p->tcp_flags = l4[13];
		}
	}
	return PARSE_OK;
}

#endif
