/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes and small definitions every kpx BPF program uses. */
#ifndef KPX_BPF_COMMON_H
#define KPX_BPF_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "kpx/abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define KPX_NSEC_PER_SEC 1000000000ULL

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Whether addr is in cidr/prefix (prefix 0: every address). */
static __always_inline int cidr_contains(__be32 cidr, __u8 prefix, __be32 addr)
{
	__u32 mask = prefix ? bpf_htonl(~0u << (32 - (prefix > 32 ? 32 : prefix))) : 0;

	return (addr & mask) == (cidr & mask);
}

#endif
