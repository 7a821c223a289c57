// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The floor for kpx-bench: a tc program that does nothing, so the cost of
 * BPF_PROG_TEST_RUN itself can be subtracted from kpx's figures. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int kpx_floor(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}
