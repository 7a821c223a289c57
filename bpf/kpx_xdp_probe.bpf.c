// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Compile-and-load check of the shared library at XDP: the same parse,
 * rewrite, checksum and bounce code the tc programs use, built against
 * struct xdp_md (KPX_CTX_XDP). The uplink programs of the north-south issue
 * start from here. It translates one configured address:port to another
 * (no conntrack): enough to run it with BPF_PROG_TEST_RUN and check the
 * rewritten frame and its checksums.
 */
#define KPX_CTX_XDP 1
#include "lib/common.h"
#include "lib/ctx.h"
#include "lib/csum.h"
#include "lib/nat.h"
#include "lib/parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader (the test). */
const volatile __be32 probe_from_addr = 0;
const volatile __be16 probe_from_port = 0;
const volatile __be32 probe_to_addr = 0;
const volatile __be16 probe_to_port = 0;
const volatile __u8 probe_bounce = 0;

SEC("xdp")
int kpx_xdp_probe(struct xdp_md *ctx)
{
	struct pkt4 p;

	if (parse_pkt4(ctx, &p) != PARSE_OK || p.is_fragment)
		return XDP_PASS;
	if (p.ip->daddr != probe_from_addr || p.dport != probe_from_port)
		return XDP_PASS;
	if (nat_rewrite_dst(ctx, &p, probe_to_addr, probe_to_port, 0, 0))
		return XDP_DROP;
	return probe_bounce ? nat_bounce(ctx) : XDP_PASS;
}
