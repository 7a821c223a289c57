/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Verdicts with their counters, shared by the tc entry programs. */
#ifndef KPX_BPF_VERDICT_H
#define KPX_BPF_VERDICT_H

#include "common.h"
#include "maps.h"
#include "parse.h"

/* What a frame the parser could not fully read becomes. Nothing kpx cannot
 * parse is translated; such frames continue unchanged and the kernel treats
 * them as it would without kpx (an invalid IPv4 header is dropped by
 * ip_rcv, a non-first fragment is reassembled or expires). */
static __always_inline int pass_unparsed(int r)
{
	switch (r) {
	case PARSE_NOT_IPV4:
		count(KPX_CTR_PASS_NON_IPV4);
		break;
	case PARSE_BAD_IP:
	case PARSE_TRUNC_L4:
		count(KPX_CTR_PASS_MALFORMED);
		break;
	default:
		count(KPX_CTR_PASS);
		break;
	}
	return TC_ACT_OK;
}

static __always_inline int drop(enum kpx_counter reason)
{
	count(reason);
	return TC_ACT_SHOT;
}

static __always_inline int pass(void)
{
	count(KPX_CTR_PASS);
	return TC_ACT_OK;
}

#endif
