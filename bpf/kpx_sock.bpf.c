// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kpx socket-level load balancing: cgroup v2 socket hooks for clients on
 * the node itself (kube-proxy's OUTPUT chain: the kubelet, node agents,
 * hostNetwork pods). A connection is translated once, when it is made,
 * instead of every packet:
 *   connect4     a TCP or UDP socket connecting to a frontend (ClusterIP,
 *                external IP, load balancer IP, a NodePort on a node
 *                address or 127.0.0.1) connects to a backend instead
 *   sendmsg4     an unconnected UDP datagram to a frontend goes to a backend
 *   recvmsg4     a datagram from a backend this socket was sent to reads as
 *                coming from the frontend (DNS clients check the source)
 *   getpeername4 a socket connected through a frontend names the frontend
 *   *6           pass (IPv6 comes with the dual-stack issue)
 *   iter/udp     run by the agent when Services lose UDP backends: a UDP
 *                socket connected through a frontend to a backend it lost
 *                is destroyed (bpf_sock_destroy), so a client holding a
 *                connected socket (a DNS resolver's) gets an error and
 *                connects again instead of talking to a gone pod forever
 * Only sockets of the node's network namespace are touched (the config's
 * netns cookie), unless --socket-lb=all. What a socket was translated from
 * is kept in its own socket storage, so no other socket, pod or process
 * can change or evict it.
 */
#include "lib/common.h"
#include "lib/lb.h"
#include "lib/maps.h"

#ifndef ECONNREFUSED
#define ECONNREFUSED 111
#endif

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SOCK_REV_SLOTS 4
#define KPX_SOCK_STREAM 1 /* the kernel's SOCK_STREAM, SOCK_DGRAM */
#define KPX_SOCK_DGRAM 2

/* Per socket: the frontends it reached and the backends they became (an
 * unconnected UDP socket may send to several; the oldest is replaced). */
struct sock_rev {
	struct {
		__be32 fe_addr, be_addr;
		__be16 fe_port, be_port;
		__u32 svc_id; /* whose backend: the UDP reaper's match */
	} e[SOCK_REV_SLOTS];
	__u32 next;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_rev);
	__uint(pinning, LIBBPF_PIN_BY_NAME); /* a restarted agent's programs keep the sockets' */
} kpx_sock_rev SEC(".maps");

/* Whether this socket is the hooks' to translate. */
static __always_inline int sock_ours(struct bpf_sock_addr *ctx)
{
	const struct kpx_config *cfg = config();
	__u64 want;

	if (!cfg)
		return 0;
	if (cfg->flags & KPX_CFG_F_SOCK_LB_ALL)
		return 1;
	want = ((__u64)cfg->sock_netns_cookie_hi << 32) | cfg->sock_netns_cookie_lo;
	return want && bpf_get_netns_cookie(ctx) == want;
}

/* The frontend at addr:port/proto, in kube-proxy's order: ClusterIP,
 * external IP, load balancer IP, then a NodePort on a node address (or on
 * 127.0.0.1, which the every-address NodePort covers). */
static __always_inline int sock_frontend(__be32 addr, __be16 port, __u8 proto, struct kpx_service_value *svc,
					 int *cluster_ip)
{
	__u32 filt = filter_bits(kpx_filter_slot_addr_v4(addr));

	*cluster_ip = 0;
	if ((filt & KPX_FILT_CLUSTER_IP) && lb_lookup_key(addr, port, proto, KPX_SCOPE_CLUSTER_IP, svc)) {
		*cluster_ip = 1;
		return 1;
	}
	if ((filt & KPX_FILT_EXTERNAL_IP) && lb_lookup_key(addr, port, proto, KPX_SCOPE_EXTERNAL_IP, svc))
		return 1;
	if ((filt & KPX_FILT_LOAD_BALANCER) && lb_lookup_key(addr, port, proto, KPX_SCOPE_LOAD_BALANCER, svc))
		return 1;
	if (addr == bpf_htonl(0x7f000001))
		return lb_lookup_key(0, port, proto, KPX_SCOPE_NODE_PORT, svc);
	if ((filt & KPX_FILT_NODE_ADDR) && (node_addr_flags(addr) & KPX_NODE_ADDR_F_NODEPORT))
		return lb_lookup_nodeport_key(addr, port, proto, svc);
	return 0;
}

static __always_inline __u8 sock_proto(struct bpf_sock_addr *ctx)
{
	if (ctx->type == KPX_SOCK_STREAM)
		return IPPROTO_TCP;
	if (ctx->type == KPX_SOCK_DGRAM)
		return IPPROTO_UDP;
	return 0;
}

/* Who a socket's client is for sessionAffinity (lb_select; kpx_affinity_v4
 * in abi.h): the node's address for the node's own sockets, as kube-proxy
 * sees them; a pod's network namespace for its sockets (--socket-lb all),
 * whose address is not bound yet at connect(). */
static __always_inline void sock_client(struct bpf_sock_addr *ctx, __be32 *client, __u32 *aff_if)
{
	const struct kpx_config *cfg = config();
	__u64 cookie = bpf_get_netns_cookie(ctx);
	__u64 node = cfg ? ((__u64)cfg->sock_netns_cookie_hi << 32) | cfg->sock_netns_cookie_lo : 0;

	if (cfg && cookie == node) {
		*client = cfg->node_addr_v4;
		*aff_if = 0;
	} else {
		*client = (__be32)cookie;
		*aff_if = KPX_AFF_IF_NETNS;
	}
}

/*
 * A call to a frontend lb_select found no backend for fails at once, with
 * what the call would get from kube-proxy's rules: a Service without
 * endpoints is REJECTed with an ICMP port unreachable, so connect() fails
 * with ECONNREFUSED (TCP; UDP's connect sends nothing under kube-proxy, and
 * fails here with the error its first send would read); a datagram sent
 * with sendto() is dropped in OUTPUT, so the call fails with EPERM, as
 * under policy Local without a local endpoint (where TCP would retry its SYN
 * until it times out: kpx fails it at once).
 */
static __always_inline int sock_refuse(int pick, int connect)
{
	if (pick == LB_EMPTY) {
		count(KPX_CTR_REJECT);
		if (connect)
			bpf_set_retval(-ECONNREFUSED);
		return 0;
	}
	count(pick == LB_NO_LOCAL ? KPX_CTR_DROP_NO_LOCAL : KPX_CTR_DROP_NO_BACKEND);
	return 0;
}

/* connect4 and sendmsg4: a frontend becomes one of its backends (the node's
 * own traffic is not held to externalTrafficPolicy Local: any endpoint, as
 * kube-proxy sends it; a ClusterIP with internalTrafficPolicy Local, its
 * local endpoints). 1: let the call go on; 0 fails it (sock_refuse). */
static __always_inline int sock_translate(struct bpf_sock_addr *ctx, int connect)
{
	struct kpx_backend_value_v4 be;
	struct kpx_service_value svc;
	struct sock_rev *rev;
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	__u8 proto = sock_proto(ctx);
	int cluster_ip, pick;
	__u32 i, aff_if;
	__be32 client;

	if (!proto || !sock_ours(ctx) || !sock_frontend(addr, port, proto, &svc, &cluster_ip))
		return 1;
	sock_client(ctx, &client, &aff_if);
	pick = lb_select(&svc, cluster_ip, client, aff_if, &be);
	if (pick == LB_STALE && sock_frontend(addr, port, proto, &svc, &cluster_ip))
		pick = lb_select(&svc, cluster_ip, client, aff_if, &be); /* freed under this call */
	if (pick != LB_PICKED)
		return sock_refuse(pick, connect);
	rev = bpf_sk_storage_get(&kpx_sock_rev, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (rev) {
		i = rev->next % SOCK_REV_SLOTS;
		rev->e[i].fe_addr = addr;
		rev->e[i].fe_port = port;
		rev->e[i].be_addr = be.addr;
		rev->e[i].be_port = be.port;
		rev->e[i].svc_id = svc.svc_id;
		rev->next = i + 1;
	}
	ctx->user_ip4 = be.addr;
	ctx->user_port = be.port;
	count(KPX_CTR_SOCK_LB);
	return 1;
}

/* recvmsg4 and getpeername4: a backend this socket reached through a
 * frontend reads as the frontend. */
static __always_inline int sock_restore(struct bpf_sock_addr *ctx)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	struct sock_rev *rev;
	__u32 i;

	rev = bpf_sk_storage_get(&kpx_sock_rev, ctx->sk, 0, 0);
	if (!rev)
		return 1;
	for (i = 0; i < SOCK_REV_SLOTS; i++) {
		if (rev->e[i].be_addr == addr && rev->e[i].be_port == port && addr) {
			ctx->user_ip4 = rev->e[i].fe_addr;
			ctx->user_port = rev->e[i].fe_port;
			return 1;
		}
	}
	return 1;
}

SEC("cgroup/connect4")
int kpx_sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock_translate(ctx, 1);
}

SEC("cgroup/sendmsg4")
int kpx_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_translate(ctx, 0);
}

SEC("cgroup/recvmsg4")
int kpx_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock_restore(ctx);
}

SEC("cgroup/getpeername4")
int kpx_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock_restore(ctx);
}

SEC("cgroup/connect6")
int kpx_sock_connect6(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/sendmsg6")
int kpx_sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/recvmsg6")
int kpx_sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/getpeername6")
int kpx_sock_getpeername6(struct bpf_sock_addr *ctx)
{
	return 1;
}

/* ---- UDP sockets connected to a lost backend ---------------------------
 * The kernel's own layouts, as far as used, relocated by CO-RE against the
 * running kernel's BTF (libbpf finds each field by name, inside anonymous
 * unions too). */
struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned short skc_family;
	volatile unsigned char skc_state;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct udp_sock;

struct bpf_iter_meta;

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

#define KPX_AF_INET 2
#define KPX_TCP_ESTABLISHED 1 /* a connected UDP socket's state */

/* What the Services lost, filled by the agent before each run. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct kpx_sock_lost_key);
	__type(value, __u8);
	__uint(max_entries, KPX_SOCK_LOST_MAX);
} kpx_sock_lost SEC(".maps");

/* Sockets destroyed by the runs so far (the agent reads the difference). */
__u64 kpx_sock_reaped;

/* Runs over the UDP sockets of the network namespace the iterator was
 * made in. Only a socket kpx connected (its kpx_sock_rev names the peer
 * as a backend of the frontend it asked for) and whose Service lost that
 * backend is destroyed: a socket connected to a pod's address by hand is
 * its owner's business, as kube-proxy leaves such flows' conntrack. */
SEC("iter/udp")
int kpx_sock_udp_reap(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	struct kpx_sock_lost_key key = {};
	struct sock_rev *rev;
	__be32 daddr;
	__be16 dport;
	__u32 i;

	if (!sk || sk->__sk_common.skc_family != KPX_AF_INET || sk->__sk_common.skc_state != KPX_TCP_ESTABLISHED)
		return 0;
	rev = bpf_sk_storage_get(&kpx_sock_rev, sk, 0, 0);
	if (!rev)
		return 0;
	daddr = sk->__sk_common.skc_daddr;
	dport = sk->__sk_common.skc_dport;
	for (i = 0; i < SOCK_REV_SLOTS; i++) {
		if (rev->e[i].be_addr != daddr || rev->e[i].be_port != dport || !daddr)
			continue;
		key.svc_id = rev->e[i].svc_id;
		key.addr = daddr;
		key.port = dport;
		if (!bpf_map_lookup_elem(&kpx_sock_lost, &key))
			continue;
		if (bpf_sock_destroy(&sk->__sk_common) == 0) {
			__sync_fetch_and_add(&kpx_sock_reaped, 1);
			count(KPX_CTR_SOCK_UDP_DESTROYED);
		}
		break;
	}
	return 0;
}
