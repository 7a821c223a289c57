/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * One context for tc and XDP. The library (parse, rewrite, checksum,
 * redirect) is written against `kpx_ctx` and the ctx_* accessors below; an
 * entry file picks the hook by defining KPX_CTX_XDP (XDP, struct xdp_md)
 * or not (tc, struct __sk_buff) before including any of bpf/lib.
 *
 * What differs between the hooks:
 *  - tc can pull non-linear headers into the linear area; XDP sees the
 *    frame as the driver gave it (the first buffer of a multi-buffer frame)
 *    and a header beyond it is treated as truncated.
 *  - tc knows the skb's checksum state (csum.h); at XDP the L4 checksum is
 *    always the full checksum (no offload state exists yet).
 *  - the verdicts: TC_ACT_OK / TC_ACT_SHOT / bpf_redirect vs XDP_PASS /
 *    XDP_DROP / XDP_TX (bounce out of the interface it came in on).
 */
#ifndef KPX_BPF_CTX_H
#define KPX_BPF_CTX_H

#include "common.h"

#ifdef KPX_CTX_XDP

#define kpx_ctx xdp_md
#define KPX_PASS XDP_PASS
#define KPX_DROP XDP_DROP

static __always_inline void *ctx_data(const struct xdp_md *ctx)
{
	return (void *)(long)ctx->data;
}

static __always_inline void *ctx_data_end(const struct xdp_md *ctx)
{
	return (void *)(long)ctx->data_end;
}

static __always_inline __u32 ctx_len(const struct xdp_md *ctx)
{
	return ctx->data_end - ctx->data;
}

/* XDP cannot pull: a header outside the first buffer is out of reach. */
static __always_inline int ctx_pull(struct xdp_md *ctx, __u32 len)
{
	return -1;
}

static __always_inline __u32 ctx_ifindex(const struct xdp_md *ctx)
{
	return ctx->ingress_ifindex;
}

/* The L4 checksum field holds the full checksum. */
static __always_inline int ctx_csum_partial(struct xdp_md *ctx)
{
	return 0;
}

static __always_inline int ctx_csum_needs_helper(struct xdp_md *ctx)
{
	return 0;
}

/* Send the (rewritten) frame back out of the interface it arrived on. */
static __always_inline int ctx_bounce(struct xdp_md *ctx)
{
	return XDP_TX;
}

#else /* tc */

#define kpx_ctx __sk_buff
#define KPX_PASS TC_ACT_OK
#define KPX_DROP TC_ACT_SHOT

static __always_inline void *ctx_data(const struct __sk_buff *ctx)
{
	return (void *)(long)ctx->data;
}

static __always_inline void *ctx_data_end(const struct __sk_buff *ctx)
{
	return (void *)(long)ctx->data_end;
}

static __always_inline __u32 ctx_len(const struct __sk_buff *ctx)
{
	return ctx->len;
}

static __always_inline int ctx_pull(struct __sk_buff *ctx, __u32 len)
{
	return bpf_skb_pull_data(ctx, len);
}

/* tc ingress: the interface the frame arrived on; tc egress: the one it
 * leaves by. */
static __always_inline __u32 ctx_ifindex(const struct __sk_buff *ctx)
{
	return ctx->ifindex;
}

static __always_inline int ctx_bounce(struct __sk_buff *ctx)
{
	return bpf_redirect(ctx->ifindex, 0);
}

#endif /* KPX_CTX_XDP */

#endif
