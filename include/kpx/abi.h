/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * kpx map ABI: the keys, values and constants shared by the BPF programs
 * (bpf/) and the C++ userspace (userspace/). Fixed-width types only; every
 * size is pinned by a static assert at the end of this file, so a change
 * that would make pinned maps of an older kpx unreadable fails to compile.
 *
 * Address-family layout: every map that holds an address is per family and
 * carries a _v4 suffix (Cilium's lb4_* / lb6_* split). IPv6 and dual-stack
 * add *_v6 maps with the same shape and 16-byte addresses; the family-free
 * maps (service_backends, counters, config) and the ids stay as they are.
 * Addresses and ports are stored in network byte order, as they appear in
 * packets, so the datapath never byte-swaps on its hot path.
 */
#ifndef KPX_ABI_H
#define KPX_ABI_H

#include <linux/types.h>

/* Map names: the pinned file names under the instance's bpffs directory. */
#define KPX_MAP_SERVICES_V4 "kpx_svc_v4"
#define KPX_MAP_SERVICE_BACKENDS "kpx_svc_be"
#define KPX_MAP_BACKENDS_V4 "kpx_be_v4"
#define KPX_MAP_REVNAT_V4 "kpx_revnat_v4"
#define KPX_MAP_CONNTRACK_V4 "kpx_ct_v4"
#define KPX_MAP_COUNTERS "kpx_counters"
#define KPX_MAP_CONFIG "kpx_config"
#define KPX_MAP_CT_CACHE_V4 "kpx_ct_cache_v4"

/* Map sizes. */
#define KPX_MAX_SERVICES 65536         /* service ports (VIP, port, proto) */
#define KPX_MAX_SERVICE_BACKENDS 1048576 /* slots over all services, 2 generations */
#define KPX_MAX_BACKENDS 262144
#define KPX_MAX_CONNTRACK 262144       /* entries, both directions */
#define KPX_MAX_BACKENDS_PER_SERVICE 65535
#define KPX_CT_CACHE_SLOTS 4096        /* per CPU, power of two */

/* Service scope: which traffic a services entry answers (later issues add
 * external scopes for NodePort/LoadBalancer; ClusterIP is internal). */
enum kpx_scope {
	KPX_SCOPE_INTERNAL = 0,
};

/* kpx_service_value.flags */
enum kpx_service_flags {
	KPX_SVC_F_NONE = 0,
};

struct kpx_service_key_v4 {
	__be32 addr;  /* service VIP */
	__be16 port;  /* service port */
	__u8 proto;   /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 scope;   /* enum kpx_scope */
};

struct kpx_service_value {
	__u32 svc_id;        /* also the revnat key */
	__u32 backend_count; /* slots 0..backend_count-1 of `generation` */
	__u32 generation;    /* which slot set of service_backends is live */
	__u32 flags;         /* enum kpx_service_flags */
	__u32 affinity_timeout_s;
	__u32 reserved;
};

/*
 * service_backends: (svc_id, generation, slot) -> backend id.
 * A change of a service's backends writes generation g+1's slots, then
 * rewrites the services value with generation g+1 and the new count (one
 * atomic element replace), then deletes generation g's slots. A packet
 * reads the services value first, so it never sees a half-written set.
 */
struct kpx_backend_slot_key {
	__u32 svc_id;
	__u32 generation;
	__u32 slot;
};

/* kpx_backend_value_v4.flags */
enum kpx_backend_flags {
	KPX_BE_F_NONE = 0,
	KPX_BE_F_TERMINATING = 1 << 0,
};

struct kpx_backend_value_v4 {
	__be32 addr;
	__be16 port;
	__u8 flags; /* enum kpx_backend_flags */
	__u8 pad;
};

/* revnat: svc_id -> the VIP and port that replies are rewritten back to. */
struct kpx_revnat_value_v4 {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

/* Conntrack direction. A translated flow has two entries: FORWARD, keyed by
 * the packet as the client sent it (client -> VIP), and REPLY, keyed by the
 * reply as the backend sends it (backend -> client, or backend -> hairpin
 * address). */
enum kpx_ct_dir {
	KPX_CT_FORWARD = 0,
	KPX_CT_REPLY = 1,
};

struct kpx_ct_key_v4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* enum kpx_ct_dir */
	__u16 pad;
};

/* kpx_ct_value_v4.flags: TCP state as far as timeouts need it, plus NAT kind. */
enum kpx_ct_flags {
	KPX_CT_F_SYN = 1 << 0,         /* a SYN was seen in this direction */
	KPX_CT_F_ESTABLISHED = 1 << 1, /* a segment without SYN was seen (handshake done) */
	KPX_CT_F_FIN = 1 << 2,
	KPX_CT_F_RST = 1 << 3,
	KPX_CT_F_HAIRPIN = 1 << 4,     /* source was NATed to the hairpin address */
};

/*
 * FORWARD entry: nat_addr/nat_port = the backend the flow is pinned to,
 * snat_addr = the hairpin source address (0 when the source is unchanged).
 * REPLY entry: nat_addr/nat_port = the service VIP and port to restore as the
 * reply's source, snat_addr = the client address to restore as the reply's
 * destination (hairpin only, else 0).
 */
struct kpx_ct_value_v4 {
	__be32 nat_addr;
	__be32 snat_addr;
	__be16 nat_port;
	__u16 flags; /* enum kpx_ct_flags */
	__u32 svc_id;
	__u64 last_seen_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_coarse_ns) */
	__u64 created_ns;
};

/*
 * conntrack cache: a per-CPU, direct-mapped exact-match cache in front of
 * the conntrack LRU (like Open vSwitch's EMC). Its lookup is an inlined
 * array access, so a cached flow's packet makes no function call at all;
 * it is a cache only: every slot is filled from a conntrack entry, void
 * after ct_epoch changes, refreshed through the LRU entry once per second
 * (keeping its last-seen time and expiry right), and TCP segments with
 * SYN, FIN or RST always go through the LRU entry.
 */
struct kpx_ct_cache_entry_v4 {
	struct kpx_ct_key_v4 key;
	__be32 nat_addr;
	__be32 snat_addr;
	__be16 nat_port;
	__u16 flags;
	__u32 epoch;
	__u64 synced_jiffies; /* when the slot was last filled from the LRU entry */
	__u32 svc_id;
	__u32 pad[5];
};

/* Per-reason counters: PERCPU_ARRAY indexed by enum kpx_counter. The
 * names (kpx_counter_names in userspace) are part of the CLI/metrics ABI. */
enum kpx_counter {
	KPX_CTR_PASS = 0,           /* not Service traffic, passed unchanged */
	KPX_CTR_PASS_NON_IPV4,      /* not IPv4 (ARP, IPv6, ...), passed unchanged */
	KPX_CTR_DNAT_NEW,           /* new flow translated to a backend */
	KPX_CTR_DNAT_ESTABLISHED,   /* conntrack hit, translated */
	KPX_CTR_REVNAT,             /* reply translated back to the VIP */
	KPX_CTR_HAIRPIN,            /* new hairpin flow (source NATed) */
	KPX_CTR_DROP_NO_BACKEND,    /* Service with no backends */
	KPX_CTR_DROP_FRAGMENT,      /* IPv4 fragment of Service traffic */
	KPX_CTR_DROP_NO_HAIRPIN_ADDR, /* hairpin needed, no hairpin address configured */
	KPX_CTR_DROP_CT_FULL,       /* conntrack insert failed */
	KPX_CTR_DROP_REWRITE,       /* a packet rewrite helper failed */
	KPX_CTR_PASS_MALFORMED,     /* truncated/invalid IPv4 not aimed at a Service, passed */
	KPX_CTR_DROP_CT_CLASH,      /* new flow's reply tuple taken by another live flow */
	KPX_CTR_MAX,
};

/* config: ARRAY with one element, updatable at run time. */
struct kpx_config {
	__be32 hairpin_snat_addr_v4; /* node-owned address for hairpin source NAT; 0 = unset */
	__u32 tcp_syn_timeout_s;     /* SYN seen, no established segment yet */
	__u32 tcp_established_timeout_s;
	__u32 tcp_closing_timeout_s; /* after RST */
	__u32 udp_timeout_s;         /* no reply seen */
	__u32 reserved_udp_stream_timeout_s; /* unused: UDP has one timeout for now */
	__u32 ct_epoch;              /* bumped by userspace after deleting conntrack entries:
				      * every per-CPU conntrack cache slot of an older epoch is void */
	__u32 tcp_fin_timeout_s;     /* FIN seen (no RST): the kernel's FIN_WAIT / CLOSE_WAIT */
	__u32 reserved[8];
};

/* Defaults, matching kube-proxy's conntrack settings and the kernel's
 * nf_conntrack defaults where kube-proxy sets none. A zero in config
 * means "use the default". */
#define KPX_DEFAULT_TCP_SYN_TIMEOUT_S 120
#define KPX_DEFAULT_TCP_ESTABLISHED_TIMEOUT_S 86400
#define KPX_DEFAULT_TCP_CLOSING_TIMEOUT_S 10
#define KPX_DEFAULT_TCP_FIN_TIMEOUT_S 120
#define KPX_DEFAULT_UDP_TIMEOUT_S 30
#define KPX_DEFAULT_UDP_STREAM_TIMEOUT_S 120

/* Sizes pinned: pinned maps outlive a kpx binary. */
#if defined(__cplusplus)
#define KPX_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define KPX_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif
KPX_STATIC_ASSERT(sizeof(struct kpx_service_key_v4) == 8, "kpx_service_key_v4 ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_service_value) == 24, "kpx_service_value ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_backend_slot_key) == 12, "kpx_backend_slot_key ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_backend_value_v4) == 8, "kpx_backend_value_v4 ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_revnat_value_v4) == 8, "kpx_revnat_value_v4 ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_ct_key_v4) == 16, "kpx_ct_key_v4 ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_ct_value_v4) == 32, "kpx_ct_value_v4 ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_config) == 64, "kpx_config ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_ct_cache_entry_v4) == 64, "kpx_ct_cache_entry_v4 ABI");
KPX_STATIC_ASSERT((KPX_CT_CACHE_SLOTS & (KPX_CT_CACHE_SLOTS - 1)) == 0, "cache slots: power of two");

#endif /* KPX_ABI_H */
