// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Baselines for kpx-bench datapath.
 *   kpx_floor: a tc program that does nothing, so the cost of
 *     BPF_PROG_TEST_RUN itself can be subtracted from kpx's figures.
 *   kpx_ref_ct_insert: what any conntrack with an entry per direction pays
 *     for a new flow in the kernel's map code alone: the frame's FORWARD and
 *     REPLY keys inserted (BPF_NOEXIST) into an LRU hash of conntrack's key,
 *     value and size (the bench sizes it), nothing else. Not kpx's datapath:
 *     a reference printed beside the new-flow figure. */
#include "lib/common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int kpx_floor(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1); /* set by the bench to conntrack's size */
	__type(key, struct kpx_ct_key_v4);
	__type(value, struct kpx_ct_value_v4);
} kpx_ref_ct SEC(".maps");

/* TC_ACT_OK when both entries went in, TC_ACT_SHOT if one did not, and
 * TC_ACT_UNSPEC for a frame that is not IPv4 TCP with a 20-byte header. */
SEC("tc")
int kpx_ref_ct_insert(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *th = (void *)(ip + 1);
	struct kpx_ct_value_v4 v = {};
	struct kpx_ct_key_v4 k = {};

	if ((void *)(th + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_TCP)
		return TC_ACT_UNSPEC;
	k.saddr = ip->saddr;
	k.daddr = ip->daddr;
	k.sport = th->source;
	k.dport = th->dest;
	k.proto = IPPROTO_TCP;
	k.dir = KPX_CT_FORWARD;
	k.ifindex = skb->ifindex;
	v.gen = 1;
	if (bpf_map_update_elem(&kpx_ref_ct, &k, &v, BPF_NOEXIST))
		return TC_ACT_SHOT;
	k.saddr = ip->daddr;
	k.daddr = ip->saddr;
	k.sport = th->dest;
	k.dport = th->source;
	k.dir = KPX_CT_REPLY;
	if (bpf_map_update_elem(&kpx_ref_ct, &k, &v, BPF_NOEXIST))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
