/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * kpx map ABI, version 3: the keys, values and constants shared by the BPF
 * programs (bpf/) and the C++ userspace (userspace/). Fixed-width types
 * only; every size is pinned by a static assert at the end of this file.
 *
 * Versioning: the pinned map kpx_abi holds KPX_ABI_MAGIC and the version of
 * the kpx that created an instance's pins. A kpx that finds pins of another
 * version (or kpx maps without kpx_abi: version 1) refuses to use them and
 * names `kpx agent --cleanup`; it never reads them with this layout. A
 * change of any layout below bumps KPX_ABI_VERSION. New features use the
 * fields marked "reserved (issue N)" and add maps; they do not change a
 * layout.
 *
 * Address families: every map holding an address is per family and carries
 * a _v4 suffix (Cilium's lb4_* / lb6_* split). IPv6 (issue 16) adds *_v6
 * maps of the same shape with 16-byte addresses; the family-free maps
 * (slots, counters, config, filter, ct versions) and the ids stay as they
 * are. Addresses and ports are in network byte order, as in packets.
 *
 * KPX_MAPS below is the one list of maps: bpf/lib/maps.h defines the BPF
 * maps from it, userspace/bpf/pinned_maps.cpp opens, checks (type, key and
 * value size) and removes pins from it, and the tests iterate it.
 */
#ifndef KPX_ABI_H
#define KPX_ABI_H

#include <linux/types.h>

#define KPX_ABI_MAGIC 0x6b707841u /* "kpxA" */
#define KPX_ABI_VERSION 3u /* 3: uplink flows (issue 10), counters map of KPX_CTR_SLOTS */

/* Map sizes. */
#define KPX_MAX_SERVICES 65536           /* frontends (address, port, proto, scope) */
#define KPX_MAX_SERVICE_SLOTS 1048576    /* backend slots over all frontends, both generations */
#define KPX_MAX_BACKENDS 262144          /* backend ids 1..KPX_MAX_BACKENDS-1; 0 = none */
#define KPX_MAX_BACKENDS_PER_SERVICE 65535
#define KPX_DEFAULT_CT_ENTRIES 262144    /* entries (two a flow) when no flag sets the size */
#define KPX_MIN_CT_ENTRIES 1024
#define KPX_CT_CACHE_SLOTS 4096          /* per CPU, power of two */
#define KPX_CT_VER_SLOTS 65536           /* conntrack version words, power of two */
#define KPX_FILTER_SLOTS (1u << 20)      /* classification filter slots (8 bits each); 2^KPX_FILTER_SLOT_BITS */
#define KPX_FILTER_WORDS (KPX_FILTER_SLOTS / 8)
#define KPX_MAX_NODE_ADDRS 256
#define KPX_MAX_INTERFACES 16384         /* admission budgets (one an interface) */
#define KPX_MAX_SOURCE_RANGES 16384      /* loadBalancerSourceRanges entries over all frontends */
#define KPX_MAX_NOMASQ_CIDRS 256         /* egress nonMasqueradeCIDRs */
#define KPX_MAX_AFFINITY 65536           /* sessionAffinity ClientIP entries (LRU) */
#define KPX_DEFAULT_AFFINITY_TIMEOUT_S 10800 /* the API's default sessionAffinityConfig.clientIP.timeoutSeconds */

/*
 * Service scope: which traffic a frontend answers. The datapath takes it
 * from the hook and the address kind (the classification filter says which
 * scopes an address has frontends of), never from a constant.
 */
enum kpx_scope {
	KPX_SCOPE_CLUSTER_IP = 0,
	KPX_SCOPE_NODE_PORT = 1,     /* issue 10: address = a node address, or 0 for every one */
	KPX_SCOPE_EXTERNAL_IP = 2,   /* issue 10 */
	KPX_SCOPE_LOAD_BALANCER = 3, /* issue 10 */
	KPX_SCOPE_MAX,
};

/* kpx_service_value.flags */
enum kpx_service_flags {
	KPX_SVC_F_NONE = 0,
	KPX_SVC_F_AFFINITY = 1 << 0,      /* sessionAffinity ClientIP (issue 12) */
	KPX_SVC_F_LOCAL_ONLY = 1 << 1,    /* traffic policy Local: only the local set (issues 10, 12) */
	KPX_SVC_F_REJECT_EMPTY = 1 << 2,  /* no backends: reject (ICMP/RST, issue 12) instead of drop */
	KPX_SVC_F_MASQUERADE = 1 << 3,    /* source NAT to the node address (issue 10) */
	KPX_SVC_F_SOURCE_RANGES = 1 << 4, /* loadBalancerSourceRanges present (issue 10) */
};

struct kpx_service_key_v4 {
	__be32 addr;  /* frontend address */
	__be16 port;  /* frontend port */
	__u8 proto;   /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 scope;   /* enum kpx_scope */
};

/*
 * A frontend's backends are slots slot_base .. slot_base+backend_count-1 of
 * kpx_svc_be (the cluster set), followed by local_count slots (the local
 * set, issue 10/12). A change writes a new slot range, then replaces this
 * value (one element replace), then frees the old range. Readers copy the
 * value to the stack and check `check` (kpx_service_check), so a value seen
 * while the kernel reuses its element for another key is never used.
 */
struct kpx_service_value {
	__u32 svc_id;            /* stable id of the frontend (conntrack svc_id) */
	__u32 slot_base;
	__u32 backend_count;     /* cluster set */
	__u32 local_count;       /* local set (issues 10, 12), after the cluster set */
	__u32 flags;             /* enum kpx_service_flags */
	__u32 affinity_timeout_s; /* issue 12 */
	__u32 check;             /* kpx_service_check(key, value) */
	__u32 reserved;          /* issue 13: Maglev table id */
};

/* kpx_backend_value_v4.flags */
enum kpx_backend_flags {
	KPX_BE_F_NONE = 0,
	KPX_BE_F_TERMINATING = 1 << 0,
	KPX_BE_F_SERVING = 1 << 1,
	KPX_BE_F_LOCAL = 1 << 2, /* on this node */
};

/* kpx_be_v4: ARRAY indexed by backend id; addr 0 = no backend. */
struct kpx_backend_value_v4 {
	__be32 addr;
	__be16 port;
	__u8 flags;      /* enum kpx_backend_flags */
	__u8 reserved8;
	__be32 node_addr; /* the backend's node (issue 10: remote backends, DSR in issue 13); 0 unknown */
	__u16 zone;      /* zone id (issue 12: topology hints); 0 unknown */
	__u16 reserved16;
};

/* Conntrack direction. A translated flow has two entries: FORWARD, keyed by
 * the packet as the client sent it (client -> frontend), and REPLY, keyed by
 * the reply as the backend sends it (backend -> client, or -> the address
 * and port the client's source was translated to). */
enum kpx_ct_dir {
	KPX_CT_FORWARD = 0,
	KPX_CT_REPLY = 1,
};

/*
 * ifindex binds an entry to an interface: FORWARD entries to the interface
 * the client's packets arrive on, REPLY entries to the interface the reply is
 * looked up on (for a pod client: its own veth, at egress). A frame from
 * another interface never matches, whatever addresses it claims.
 */
struct kpx_ct_key_v4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* enum kpx_ct_dir */
	__u16 pad;
	__u32 ifindex;
};

/* kpx_ct_value_v4.flags: TCP state as far as timeouts need it. */
enum kpx_ct_flags {
	KPX_CT_F_SYN = 1 << 0,         /* a SYN was seen in this direction */
	KPX_CT_F_ESTABLISHED = 1 << 1, /* a segment without SYN was seen (handshake done) */
	KPX_CT_F_FIN = 1 << 2,         /* FORWARD: the client sent FIN */
	KPX_CT_F_RST = 1 << 3,         /* either side sent RST: the flow is over */
	KPX_CT_F_HAIRPIN = 1 << 4,     /* source was NATed to the hairpin address */
	KPX_CT_F_REPLY_FIN = 1 << 5,   /* FORWARD: the server sent FIN */
	KPX_CT_F_PORT_REMAP = 1 << 6,  /* source port reallocated (a reply tuple clash) */
	KPX_CT_F_UPLINK = 1 << 7,      /* north-south: made on an uplink (issue 10), see out_ifindex */
	KPX_CT_F_CLOSE_WAIT = 1 << 8,  /* FORWARD: one side's FIN answered (ACK) by the other side, which
					* stays open: netfilter's CLOSE_WAIT (issue 12) */
	KPX_CT_F_REPLIED = 1 << 9,     /* FORWARD, UDP: a reply was seen; with traffic more than
					* KPX_CT_UDP_STREAM_AFTER_S after the flow began, a stream:
					* udp_stream_timeout_s (netfilter's ASSURED UDP, issue 12) */
};

/* A replied UDP flow still active this long after it began is a stream
 * (netfilter's stream_ts: 2 s). */
#define KPX_CT_UDP_STREAM_AFTER_S 2

/* kpx_ct_value_v4.nat_kind */
enum kpx_nat_kind {
	KPX_NAT_DNAT = 1,       /* destination to a backend (ClusterIP and every frontend) */
	KPX_NAT_DNAT_SNAT = 2,  /* and the source: hairpin, port remap, masquerade (issue 10) */
	KPX_NAT_DSR = 3,        /* issue 13: destination only, replies bypass this node */
};

/*
 * FORWARD entry: nat_addr:nat_port = the backend the flow is pinned to;
 * snat_addr / snat_port = the source the client's packets get (0: kept).
 * REPLY entry: nat_addr:nat_port = the frontend address and port to restore
 * as the reply's source; snat_addr / snat_port = the client's address and
 * port to restore as the reply's destination (0: kept).
 * A pod's flow has both entries on the pod's veth (out_ifindex 0). An
 * uplink flow (KPX_CT_F_UPLINK: a client outside reaching a NodePort) has
 * its FORWARD entry on the uplink and its REPLY entry where the backend's
 * replies arrive: the uplink again for a backend on another node, the
 * backend's veth for a local one. FORWARD.out_ifindex names the REPLY's
 * interface (0 while a local backend's veth is not known yet: the REPLY
 * entry then waits on interface 0, which no frame has, until the flow's
 * first frame is delivered to the veth and binds it there); REPLY.out_ifindex
 * names the FORWARD's.
 * gen is unique per flow instance (both entries share it): the GC reaps an
 * entry only if it still holds the gen it read. check = kpx_ct_check_v4(key,
 * value) over the immutable fields: readers copy and validate.
 */
struct kpx_ct_value_v4 {
	__be32 nat_addr;
	__be32 snat_addr;
	__be16 nat_port;
	__be16 snat_port;
	__u16 flags;  /* enum kpx_ct_flags */
	__u8 nat_kind; /* enum kpx_nat_kind */
	__u8 reserved8;
	__u32 svc_id;
	__u32 out_ifindex; /* KPX_CT_F_UPLINK flows: the other entry's interface (below) */
	__u32 gen;
	__u32 check;
	__u64 last_seen_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_coarse_ns) */
	__u64 created_ns;
	__u32 reserved[4]; /* issue 14: per-flow packet and byte counts */
};

/* gen of an entry the GC reaped (the datapath treats it as absent). */
#define KPX_CT_GEN_DEAD 0u

/*
 * conntrack cache: a per-CPU, direct-mapped exact-match cache in front of
 * the conntrack LRU (like Open vSwitch's EMC). A slot is usable while its
 * ver equals the tuple's version word in kpx_ct_ver (bumped whenever an entry
 * of a tuple hashing there is created, replaced or deleted, by the datapath
 * or userspace), its epoch equals config.ct_epoch (bumped by bulk deletes)
 * and it was synced from the LRU entry within the last second (keeping the
 * entry's last-seen time, the expiry and the heal check right). TCP segments
 * with SYN, FIN or RST always go through the LRU entry. No loop over CPUs.
 */
struct kpx_ct_cache_entry_v4 {
	struct kpx_ct_key_v4 key;
	__be32 nat_addr;
	__be32 snat_addr;
	__be16 nat_port;
	__be16 snat_port;
	__u32 ver;
	__u32 epoch;
	__u32 svc_id;
	__u64 synced_jiffies; /* when the slot was last filled from the LRU entry */
	__u32 ct_flags;       /* the entry's KPX_CT_F_UPLINK (how the frame is sent on) */
	__u32 pad;
};

/* Per-interface new-flow admission (token bucket, refilled lazily). */
struct kpx_ct_budget {
	__u64 tokens_milli;   /* thousandths of a flow */
	__u64 last_refill_ns;
};

/*
 * Classification filter: KPX_FILTER_SLOTS slots of 8 bits, packed 8 to a
 * __u64 word of the kpx_filter ARRAY. A slot is chosen by hashing an
 * address (kpx_filter_slot_addr: the frontend and node-address bits) or a
 * backend (kpx_filter_slot_backend: the backend bit; with address 0 and a
 * NodePort's port, KPX_FILT_NODE_PORT: kpx_from_uplink's port filter for
 * frames to node addresses). Userspace sets the
 * bits of every frontend, node address and backend, and keeps them while
 * conntrack holds flows through them. A clear bit means "certainly not":
 * the datapath passes such traffic without touching conntrack; a set bit
 * may be another address's and leads to the exact lookup.
 */
enum kpx_filter_bits {
	KPX_FILT_CLUSTER_IP = 1 << KPX_SCOPE_CLUSTER_IP,
	KPX_FILT_NODE_PORT = 1 << KPX_SCOPE_NODE_PORT,
	KPX_FILT_EXTERNAL_IP = 1 << KPX_SCOPE_EXTERNAL_IP,
	KPX_FILT_LOAD_BALANCER = 1 << KPX_SCOPE_LOAD_BALANCER,
	KPX_FILT_FRONTEND = 0x0f,
	KPX_FILT_NODE_ADDR = 1 << 4, /* an address the node owns (kpx_node_addr_v4) */
	KPX_FILT_BACKEND = 1 << 5,   /* a backend address:port:proto */
	KPX_FILT_DIRECT_REPLY = 1 << 6, /* a backend of a traffic-policy-Local NodePort (or LB, ExternalIP):
					 * its replies to outside clients leave from its veth untranslated
					 * by the kernel, so kpx_from_pod looks them up */
};

/*
 * kpx_lb_src_v4: LPM trie of the source ranges of frontends with
 * KPX_SVC_F_SOURCE_RANGES (loadBalancerSourceRanges). prefixlen counts the
 * svc_id's 32 bits and then the CIDR's; a new flow to such a frontend from
 * a source no entry of its svc_id covers is dropped before any conntrack
 * entry exists.
 */
struct kpx_src_range_key_v4 {
	__u32 prefixlen; /* 32 + the CIDR's prefix length */
	__u32 svc_id;    /* big-endian in the key's bit order: written with htonl */
	__be32 addr;
};

/*
 * sessionAffinity ClientIP (issue 12): kpx_affinity_v4 (LRU) remembers the
 * backend a client's last new flow to a frontend went to. A new flow from
 * the same client within the frontend's timeout of that goes to the same
 * backend, if it is still in the set the flow picks from (found at
 * slot_hint, or by a scan of the set), and refreshes the entry, as
 * kube-proxy's `recent --set` does on each new connection. The key holds
 * the interface the client's frames arrive on, so a pod sending with
 * another pod's address makes its own entries, never the other's. Socket
 * LB (no interface): ifindex 0 with the node's address for the node's own
 * sockets, KPX_AFF_IF_NETNS with the low word of the socket's network
 * namespace cookie for a pod's (--socket-lb all). Pinned: the agent's
 * restarts keep it, and the ids it holds (svc_id, backend id) are the
 * pinned maps'.
 */
#define KPX_AFF_IF_NETNS 0xffffffffu
struct kpx_affinity_key_v4 {
	__u32 svc_id;
	__u32 ifindex;
	__be32 client;
	__u32 pad;
};

struct kpx_affinity_value {
	__u32 backend_id;
	__u32 slot_hint;     /* its index in the set it was picked from */
	__u64 last_used_ns;  /* CLOCK_MONOTONIC (bpf_ktime_get_coarse_ns) */
};

/* kpx_node_addr_v4 values */
enum kpx_node_addr_flags {
	KPX_NODE_ADDR_F_NODE = 1 << 0,    /* an address of the node's interfaces */
	KPX_NODE_ADDR_F_HAIRPIN = 1 << 1, /* the hairpin source address */
	KPX_NODE_ADDR_F_NODEPORT = 1 << 2, /* NodePorts are served on it (--nodeport-addresses) */
};

/* Per-reason counters: PERCPU_ARRAY indexed by enum kpx_counter. Their
 * names (userspace/dataplane/counters.cpp counter_name) are part of the
 * CLI and metrics interface. */
enum kpx_counter {
	KPX_CTR_PASS = 0,           /* not Service traffic, passed unchanged */
	KPX_CTR_PASS_NON_IPV4,      /* not IPv4 (ARP, IPv6, ...), passed unchanged */
	KPX_CTR_DNAT_NEW,           /* new flow translated to a backend */
	KPX_CTR_DNAT_ESTABLISHED,   /* conntrack hit, translated */
	KPX_CTR_REVNAT,             /* reply translated back to the frontend */
	KPX_CTR_HAIRPIN,            /* new hairpin flow (source NATed) */
	KPX_CTR_DROP_NO_BACKEND,    /* Service with no backends */
	KPX_CTR_DROP_FRAGMENT,      /* IPv4 fragment of Service traffic */
	KPX_CTR_DROP_NO_HAIRPIN_ADDR, /* hairpin needed, no hairpin address configured */
	KPX_CTR_DROP_CT_FULL,       /* conntrack insert failed */
	KPX_CTR_DROP_REWRITE,       /* a packet rewrite helper failed */
	KPX_CTR_PASS_MALFORMED,     /* truncated/invalid IPv4 not aimed at a Service, passed */
	KPX_CTR_DROP_CT_CLASH,      /* no free source port for a clashing reply tuple */
	KPX_CTR_DROP_SPOOF,         /* source is a node-owned address, from a pod */
	KPX_CTR_DROP_CT_BUDGET,     /* the interface's new-flow budget is spent */
	KPX_CTR_CT_HEALED,          /* a flow's missing REPLY entry was re-created */
	KPX_CTR_CT_PORT_REMAP,      /* a new flow got another source port (reply clash) */
	KPX_CTR_CT_ADOPTED,         /* a new flow adopted another CPU's entry for it */
	KPX_CTR_DROP_NO_NODE_ADDR,  /* source NAT needed, no node address configured */
	KPX_CTR_DROP_FIB,           /* no route (or MTU) for a frame kpx must send on itself */
	KPX_CTR_CT_BOUND,           /* an uplink flow's REPLY bound to its local backend's veth */
	KPX_CTR_DROP_SOURCE_RANGE,  /* a load balancer IP's source ranges exclude the client */
	KPX_CTR_SNAT_EGRESS_NEW,    /* a pod's new flow out of the cluster, source-NATed to the node */
	KPX_CTR_SNAT_SERVICE_NEW,   /* a new flow to a Service masqueraded to the node (kube-proxy's rules) */
	KPX_CTR_SOCK_LB,            /* a socket's connect/sendmsg to a frontend sent to a backend (issue 11) */
	KPX_CTR_SOCK_UDP_DESTROYED, /* a UDP socket connected to a backend its Service lost, destroyed */
	KPX_CTR_REJECT,             /* new flow to a Service without endpoints refused (ICMP port unreachable, ECONNREFUSED) */
	KPX_CTR_DROP_NO_LOCAL,      /* traffic policy Local, no endpoint on this node: dropped as kube-proxy does */
	KPX_CTR_ICMP_XLATE,         /* an ICMP error about a translated flow, translated back (bpf/lib/icmp.h) */
	KPX_CTR_FRAG_NEEDED,        /* a frame too large for kpx's way on, with DF: ICMP fragmentation needed sent back */
	KPX_CTR_MAX,
};

/* Room in the counters map: a counter added later is an entry, not a new
 * layout. */
#define KPX_CTR_SLOTS 64

/* kpx_config.flags */
enum kpx_config_flags {
	/* Pods' traffic to destinations outside the cluster CIDR and outside
	 * kpx_nomasq_v4 is source-NATed to node_addr_v4 (ip-masq-agent's job). */
	KPX_CFG_F_EGRESS_MASQ = 1 << 0,
	/* kube-proxy's masquerade of Service traffic (issue 10): every new flow
	 * to a frontend is source-NATed to node_addr_v4 (--masquerade-all). */
	KPX_CFG_F_MASQ_ALL = 1 << 1,
	/* What is "local" (kube-proxy's --detect-local-mode); a new flow to a
	 * ClusterIP from a source that is not is source-NATed to the node.
	 * LOCAL_CIDR (ClusterCIDR, NodeCIDR): a source in local_cidr_v4 (none
	 * is while local_prefix_v4 is 0: the Node's podCIDR not known yet).
	 * LOCAL_IF (InterfaceNamePrefix, BridgeInterface): a frame that came in
	 * on a pod interface, so never one from the uplink. Neither: no
	 * detection, nothing masqueraded but with MASQ_ALL. */
	KPX_CFG_F_LOCAL_CIDR = 1 << 2,
	KPX_CFG_F_LOCAL_IF = 1 << 3,
	/* issue 11: --socket-lb=all: the socket hooks serve pods too. */
	KPX_CFG_F_SOCK_LB_ALL = 1 << 4,
};

/* kpx_nomasq_v4: LPM trie of the destinations pods reach with their own
 * address when KPX_CFG_F_EGRESS_MASQ is on (ip-masq-agent's
 * nonMasqueradeCIDRs). prefixlen: the CIDR's. */
struct kpx_nomasq_key_v4 {
	__u32 prefixlen;
	__be32 addr;
};

/* config: ARRAY with one element, updatable at run time. A zero means "use
 * the default". */
struct kpx_config {
	__u32 tcp_syn_timeout_s;     /* SYN seen, no established segment yet */
	__u32 tcp_established_timeout_s;
	__u32 tcp_closing_timeout_s; /* after RST, or FIN from both sides */
	__u32 tcp_fin_timeout_s;     /* FIN from one side, not answered yet: netfilter's FIN_WAIT */
	__u32 udp_timeout_s;         /* UDP */
	__u32 udp_stream_timeout_s;  /* UDP stream (KPX_CT_F_REPLIED, active past 2 s): kube-proxy's
				      * udpStreamTimeout, the kernel's nf_conntrack_udp_timeout_stream */
	__u32 ct_epoch;              /* bumped by userspace after bulk conntrack deletes:
				      * every per-CPU cache slot of an older epoch is void */
	__u32 ct_new_per_sec;        /* per-interface admission: new flows a second (0: default) */
	__u32 ct_new_burst;          /* per-interface admission: burst (0: default) */
	__u32 flags;                 /* enum kpx_config_flags: datapath features switched on */
	__be32 hairpin_addr_v4;      /* node-owned address for hairpin source NAT; 0 = unset */
	__be32 node_addr_v4;         /* issue 10: the node's primary address (masquerade source) */
	__be32 service_cidr_v4;      /* issue 10/11: Service CIDR (0: unknown) */
	__u8 service_prefix_v4;
	__u8 cluster_prefix_v4;
	__u16 reserved16;
	__be32 cluster_cidr_v4;      /* issue 10: pod CIDR, masquerade decisions */
	__u16 nodeport_min;          /* issue 10: NodePort range (host order) */
	__u16 nodeport_max;
	__u8 hairpin_addr_v6[16];    /* issue 16 */
	__u8 node_addr_v6[16];       /* issue 16 */
	__u8 service_cidr_v6[16];    /* issue 16 */
	__u8 cluster_cidr_v6[16];    /* issue 16 */
	__u8 service_prefix_v6;      /* issue 16 */
	__u8 cluster_prefix_v6;      /* issue 16 */
	__u16 reserved16b;
	__u16 snat_port_min;         /* uplink source NAT ports (host order; 0: defaults) */
	__u16 snat_port_max;
	__be32 local_cidr_v4;        /* issue 10: KPX_CFG_F_LOCAL_CIDR's pod CIDR (cluster or node) */
	__u8 local_prefix_v4;
	__u8 local_prefix_v6;        /* issue 16 */
	__u16 reserved16c;
	__u8 local_cidr_v6[16];      /* issue 16 */
	/* issue 11: socket-level load balancing (kpx_sock.bpf.c) acts on the
	 * sockets of this network namespace (bpf_get_netns_cookie; 0: none),
	 * or of every one with KPX_CFG_F_SOCK_LB_ALL. Two halves: no padding. */
	__u32 sock_netns_cookie_lo;
	__u32 sock_netns_cookie_hi;
	/* issue 12: FIN from one side, answered, the other side open
	 * (netfilter's CLOSE_WAIT): kube-proxy's conntrack.tcpCloseWaitTimeout. */
	__u32 tcp_close_wait_timeout_s;
	__u32 reserved[21];
};

/* Issue 11: the backends Services lost over UDP, as the agent hands them to
 * kpx_sock.bpf.c's UDP socket reaper (its own map, kpx_sock_lost, filled and
 * emptied around each run: not pinned, not shared). */
#define KPX_SOCK_LOST_MAX 4096
struct kpx_sock_lost_key {
	__u32 svc_id;
	__be32 addr;
	__be16 port;
	__u16 pad;
};

/* skb->mark of an uplink flow's frames while its REPLY entry waits for the
 * local backend's veth (bpf/lib/uplink.h); cleared where it is consumed. A
 * pod cannot set it: the kernel clears the mark of frames that cross from
 * a pod's namespace into the node's. */
#define KPX_MARK_BIND 0x6b70b1d0u

/* Uplink source NAT ports: above Linux's default ephemeral range
 * (ip_local_port_range 32768-60999), so that a translated reply never
 * meets one of the node's own connections, and outside the NodePort range. */
#define KPX_DEFAULT_SNAT_PORT_MIN 61000
#define KPX_DEFAULT_SNAT_PORT_MAX 65535

/* kpx_abi: ARRAY with one element, written when the pins are created. */
struct kpx_abi_info {
	__u32 magic;          /* KPX_ABI_MAGIC */
	__u32 version;        /* KPX_ABI_VERSION of the kpx that made the pins */
	__u32 ct_max_entries; /* the conntrack map's size */
	__u32 reserved[13];
};

/* Defaults, matching kube-proxy's conntrack settings and the kernel's
 * nf_conntrack defaults where kube-proxy sets none. */
#define KPX_DEFAULT_TCP_SYN_TIMEOUT_S 120
#define KPX_DEFAULT_TCP_ESTABLISHED_TIMEOUT_S 86400
#define KPX_DEFAULT_TCP_CLOSING_TIMEOUT_S 10
#define KPX_DEFAULT_TCP_FIN_TIMEOUT_S 120          /* the kernel's nf_conntrack_tcp_timeout_fin_wait */
#define KPX_DEFAULT_TCP_CLOSE_WAIT_TIMEOUT_S 3600  /* kube-proxy's conntrack.tcpCloseWaitTimeout default */
#define KPX_DEFAULT_UDP_TIMEOUT_S 30
#define KPX_DEFAULT_UDP_STREAM_TIMEOUT_S 120
#define KPX_DEFAULT_CT_NEW_PER_SEC 20000
#define KPX_DEFAULT_CT_NEW_BURST 40000

/*
 * The one list of maps: X(name, type, key, value, max_entries). type is the
 * suffix of BPF_MAP_TYPE_*. kpx_ct_v4's size is the default; the agent sizes
 * it at creation (--conntrack-max-per-core, --conntrack-min).
 */
#define KPX_MAPS(X)                                                                              \
	X(kpx_abi, ARRAY, __u32, struct kpx_abi_info, 1)                                          \
	X(kpx_svc_v4, HASH, struct kpx_service_key_v4, struct kpx_service_value, KPX_MAX_SERVICES) \
	X(kpx_svc_be, ARRAY, __u32, __u32, KPX_MAX_SERVICE_SLOTS)                                 \
	X(kpx_be_v4, ARRAY, __u32, struct kpx_backend_value_v4, KPX_MAX_BACKENDS)                 \
	X(kpx_ct_v4, LRU_HASH, struct kpx_ct_key_v4, struct kpx_ct_value_v4, KPX_DEFAULT_CT_ENTRIES) \
	X(kpx_ct_cache_v4, PERCPU_ARRAY, __u32, struct kpx_ct_cache_entry_v4, KPX_CT_CACHE_SLOTS) \
	X(kpx_ct_ver, ARRAY, __u32, __u32, KPX_CT_VER_SLOTS)                                      \
	X(kpx_ct_budget, HASH, __u32, struct kpx_ct_budget, KPX_MAX_INTERFACES)                  \
	X(kpx_filter, ARRAY, __u32, __u64, KPX_FILTER_WORDS)                                      \
	X(kpx_node_addr_v4, HASH, __be32, __u32, KPX_MAX_NODE_ADDRS)                              \
	X(kpx_counters, PERCPU_ARRAY, __u32, __u64, KPX_CTR_SLOTS)                                \
	X(kpx_config, ARRAY, __u32, struct kpx_config, 1)                                         \
	X(kpx_lb_src_v4, LPM_TRIE, struct kpx_src_range_key_v4, __u32, KPX_MAX_SOURCE_RANGES)    \
	X(kpx_nomasq_v4, LPM_TRIE, struct kpx_nomasq_key_v4, __u32, KPX_MAX_NOMASQ_CIDRS)          \
	X(kpx_affinity_v4, LRU_HASH, struct kpx_affinity_key_v4, struct kpx_affinity_value, KPX_MAX_AFFINITY)

/* map_flags by map type (an LPM trie must not be preallocated: the kernel's
 * BPF_F_NO_PREALLOC, 1). */
#define KPX_MAP_FLAGS_ARRAY 0
#define KPX_MAP_FLAGS_HASH 0
#define KPX_MAP_FLAGS_LRU_HASH 0
#define KPX_MAP_FLAGS_PERCPU_ARRAY 0
#define KPX_MAP_FLAGS_LPM_TRIE 1u

/* ---- hashes shared by the datapath and userspace ------------------------ */

/* Always inlined: in BPF a function clang keeps out of line becomes a
 * bpf-to-bpf call, which costs about 14 ns on this kernel (return thunks),
 * as much as the rest of the established path. */
#define KPX_ABI_FN static inline __attribute__((always_inline))

KPX_ABI_FN __u32 kpx_mix32(__u32 h, __u32 v)
{
	h ^= v;
	h *= 0x9e3779b1u;
	h ^= h >> 16;
	return h;
}

KPX_ABI_FN __u32 kpx_fmix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

/* The conntrack tuple's hash: cache slot and version word (its low bits).
 * On the hot path of every translated packet, so two independent 64-bit
 * multiplications (the top half of a product depends on every input bit)
 * instead of a serial chain of mixing rounds. */
KPX_ABI_FN __u32 kpx_ct_hash_v4(const struct kpx_ct_key_v4 *k)
{
	__u64 a = ((__u64)k->saddr << 32) | k->daddr;
	__u64 b = ((__u64)(((__u32)k->sport << 16) | k->dport) << 32) |
		  (k->ifindex ^ ((__u32)k->proto << 24) ^ ((__u32)k->dir << 16));
	__u64 h = (a ^ 0x6b70785f63743476ull) * 0x9e3779b97f4a7c15ull + b * 0xc2b2ae3d27d4eb4full;
	__u32 t = (__u32)(h >> 32);

	return t ^ (t >> 16);
}

KPX_ABI_FN __u32 kpx_ct_check_v4(const struct kpx_ct_key_v4 *k, const struct kpx_ct_value_v4 *v)
{
	__u32 h = kpx_ct_hash_v4(k);

	h = kpx_mix32(h, v->nat_addr);
	h = kpx_mix32(h, v->snat_addr);
	h = kpx_mix32(h, ((__u32)v->nat_port << 16) | v->snat_port);
	h = kpx_mix32(h, ((__u32)v->nat_kind << 24) ^ v->svc_id);
	h = kpx_mix32(h, v->gen);
	h = kpx_mix32(h, v->out_ifindex);
	return kpx_fmix32(h) | 1; /* never 0: a zeroed value never checks */
}

KPX_ABI_FN __u32 kpx_service_check(const struct kpx_service_key_v4 *k,
				      const struct kpx_service_value *v)
{
	__u32 h = kpx_mix32(0x737663u, k->addr);

	h = kpx_mix32(h, ((__u32)k->port << 16) | ((__u32)k->proto << 8) | k->scope);
	h = kpx_mix32(h, v->svc_id);
	h = kpx_mix32(h, v->slot_base);
	h = kpx_mix32(h, v->backend_count);
	h = kpx_mix32(h, v->local_count);
	h = kpx_mix32(h, v->flags);
	h = kpx_mix32(h, v->affinity_timeout_s);
	return kpx_fmix32(h) | 1;
}

/* Filter slots: the top bits of one multiplication (Fibonacci hashing),
 * as cheap as a hash can be on the path every packet takes. */
#define KPX_FILTER_SLOT_BITS 20
/* A FORWARD entry's timeout in seconds for its state, with cfg's overrides
 * (cfg NULL: the defaults). The datapath's expiry and the agent's GC share
 * this one rule. proto: 6 is TCP; anything else here is UDP. */
KPX_ABI_FN __u32 kpx_ct_timeout_s(const struct kpx_ct_value_v4 *v, __u8 proto, const struct kpx_config *cfg)
{
	const __u16 both_fin = KPX_CT_F_FIN | KPX_CT_F_REPLY_FIN;
	const __u16 flags = v->flags;
	__u32 s, dflt;

	if (proto == 6) {
		if ((flags & KPX_CT_F_RST) || (flags & both_fin) == both_fin) {
			s = cfg ? cfg->tcp_closing_timeout_s : 0;
			dflt = KPX_DEFAULT_TCP_CLOSING_TIMEOUT_S;
		} else if (flags & KPX_CT_F_CLOSE_WAIT) {
			s = cfg ? cfg->tcp_close_wait_timeout_s : 0;
			dflt = KPX_DEFAULT_TCP_CLOSE_WAIT_TIMEOUT_S;
		} else if (flags & both_fin) {
			s = cfg ? cfg->tcp_fin_timeout_s : 0;
			dflt = KPX_DEFAULT_TCP_FIN_TIMEOUT_S;
		} else if (flags & KPX_CT_F_ESTABLISHED) {
			s = cfg ? cfg->tcp_established_timeout_s : 0;
			dflt = KPX_DEFAULT_TCP_ESTABLISHED_TIMEOUT_S;
		} else {
			s = cfg ? cfg->tcp_syn_timeout_s : 0;
			dflt = KPX_DEFAULT_TCP_SYN_TIMEOUT_S;
		}
	} else if ((flags & KPX_CT_F_REPLIED) &&
		   v->last_seen_ns > v->created_ns + KPX_CT_UDP_STREAM_AFTER_S * 1000000000ULL) {
		/* Replied, and still active after two seconds: a stream. */
		s = cfg ? cfg->udp_stream_timeout_s : 0;
		dflt = KPX_DEFAULT_UDP_STREAM_TIMEOUT_S;
	} else {
		s = cfg ? cfg->udp_timeout_s : 0;
		dflt = KPX_DEFAULT_UDP_TIMEOUT_S;
	}
	return s ? s : dflt;
}

KPX_ABI_FN __u32 kpx_filter_slot_addr_v4(__be32 addr)
{
	return ((__u32)addr * 0x9e3779b1u) >> (32 - KPX_FILTER_SLOT_BITS);
}

KPX_ABI_FN __u32 kpx_filter_slot_backend_v4(__be32 addr, __be16 port, __u8 proto)
{
	__u64 h = ((((__u64)addr << 32) | ((__u32)port << 8) | proto) ^ 0x6261636bull) * 0x9e3779b97f4a7c15ull;

	return (__u32)(h >> (64 - KPX_FILTER_SLOT_BITS));
}

/* Sizes pinned. */
#if defined(__cplusplus)
#define KPX_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define KPX_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif
KPX_STATIC_ASSERT(sizeof(struct kpx_service_key_v4) == 8, "kpx_service_key_v4 ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_service_value) == 32, "kpx_service_value ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_backend_value_v4) == 16, "kpx_backend_value_v4 ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_ct_key_v4) == 20, "kpx_ct_key_v4 ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_ct_value_v4) == 64, "kpx_ct_value_v4 ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_ct_cache_entry_v4) == 64, "kpx_ct_cache_entry_v4 ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_ct_budget) == 16, "kpx_ct_budget ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_config) == 256, "kpx_config ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_abi_info) == 64, "kpx_abi_info ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_src_range_key_v4) == 12, "kpx_src_range_key_v4 ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_affinity_key_v4) == 16, "kpx_affinity_key_v4 ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_affinity_value) == 16, "kpx_affinity_value ABI");
KPX_STATIC_ASSERT(sizeof(struct kpx_nomasq_key_v4) == 8, "kpx_nomasq_key_v4 ABI");
KPX_STATIC_ASSERT((KPX_CT_CACHE_SLOTS & (KPX_CT_CACHE_SLOTS - 1)) == 0, "cache slots: power of two");
KPX_STATIC_ASSERT((KPX_CT_VER_SLOTS & (KPX_CT_VER_SLOTS - 1)) == 0, "ct versions: power of two");
KPX_STATIC_ASSERT(KPX_FILTER_SLOTS == 1u << KPX_FILTER_SLOT_BITS, "filter slots");
KPX_STATIC_ASSERT(KPX_CTR_MAX <= KPX_CTR_SLOTS, "counters: room in the map");

#endif /* KPX_ABI_H */
