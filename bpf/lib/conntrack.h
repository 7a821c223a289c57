/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking for translated flows (LRU hash, two entries a flow).
 *
 * Timeouts are evaluated lazily: an entry idle longer than its state's
 * timeout is treated as absent and overwritten by the next new flow. The
 * last-seen stamp is written at most once a second, so an established flow
 * does not dirty its entry's cache line on every packet.
 */
#ifndef KPX_BPF_CONNTRACK_H
#define KPX_BPF_CONNTRACK_H

#include "common.h"
#include "maps.h"
#include "parse.h"

static __always_inline void ct_key_from_pkt(struct kpx_ct_key_v4 *k, const struct pkt4 *p,
					    __u8 dir)
{
	k->saddr = p->ip->saddr;
	k->daddr = p->ip->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->dir = dir;
	k->pad = 0;
}

/* The REPLY key of the flow a FORWARD entry describes: the backend
 * answering the client (or the hairpin address standing in for it). */
static __always_inline void ct_reply_key_of_forward(struct kpx_ct_key_v4 *rk, const struct kpx_ct_key_v4 *fk,
						    const struct kpx_ct_value_v4 *fv)
{
	rk->saddr = fv->nat_addr;
	rk->daddr = fv->snat_addr ? fv->snat_addr : fk->saddr;
	rk->sport = fv->nat_port;
	rk->dport = fk->sport;
	rk->proto = fk->proto;
	rk->dir = KPX_CT_REPLY;
	rk->pad = 0;
}

/* The FORWARD key of the flow a REPLY entry belongs to. */
static __always_inline void ct_forward_key_of_reply(struct kpx_ct_key_v4 *fk, const struct kpx_ct_key_v4 *rk,
						    const struct kpx_ct_value_v4 *rv)
{
	fk->saddr = rv->snat_addr ? rv->snat_addr : rk->daddr; /* hairpin: the original client */
	fk->daddr = rv->nat_addr;
	fk->sport = rk->dport;
	fk->dport = rv->nat_port;
	fk->proto = rk->proto;
	fk->dir = KPX_CT_FORWARD;
	fk->pad = 0;
}

/* The ct flags a packet adds: TCP state bits, nothing for UDP. */
static __always_inline __u16 ct_flags_of(const struct pkt4 *p)
{
	__u16 f = 0;

	if (p->proto != IPPROTO_TCP)
		return 0;
	f |= (p->tcp_flags & TCPF_SYN) ? KPX_CT_F_SYN : KPX_CT_F_ESTABLISHED;
	if (p->tcp_flags & TCPF_FIN)
		f |= KPX_CT_F_FIN;
	if (p->tcp_flags & TCPF_RST)
		f |= KPX_CT_F_RST;
	return f;
}

static __always_inline __u32 cfg_or(__u32 v, __u32 dflt)
{
	return v ? v : dflt;
}

static __always_inline __u64 ct_timeout_ns(const struct kpx_ct_value_v4 *ct, __u8 proto)
{
	const struct kpx_config *cfg = config();
	__u32 s;

	if (proto == IPPROTO_TCP) {
		if (ct->flags & KPX_CT_F_RST)
			s = cfg_or(cfg ? cfg->tcp_closing_timeout_s : 0, KPX_DEFAULT_TCP_CLOSING_TIMEOUT_S);
		else if (ct->flags & KPX_CT_F_FIN)
			s = cfg_or(cfg ? cfg->tcp_fin_timeout_s : 0, KPX_DEFAULT_TCP_FIN_TIMEOUT_S);
		else if (ct->flags & KPX_CT_F_ESTABLISHED)
			s = cfg_or(cfg ? cfg->tcp_established_timeout_s : 0,
				   KPX_DEFAULT_TCP_ESTABLISHED_TIMEOUT_S);
		else
			s = cfg_or(cfg ? cfg->tcp_syn_timeout_s : 0, KPX_DEFAULT_TCP_SYN_TIMEOUT_S);
	} else {
		s = cfg_or(cfg ? cfg->udp_timeout_s : 0, KPX_DEFAULT_UDP_TIMEOUT_S);
	}
	return (__u64)s * KPX_NSEC_PER_SEC;
}

/* Traffic in either direction keeps a flow alive (as the kernel's
 * conntrack): a FORWARD entry idle past its timeout still stands while its
 * REPLY entry saw a packet within the timeout (a server that streams to a
 * client that rarely speaks). Only on this rare path. */
static __always_inline int ct_reply_recent(const struct kpx_ct_value_v4 *ct, const struct pkt4 *p, __u64 now)
{
	struct kpx_ct_key_v4 fk, rk;
	struct kpx_ct_value_v4 *r;

	ct_key_from_pkt(&fk, p, KPX_CT_FORWARD);
	ct_reply_key_of_forward(&rk, &fk, ct);
	r = bpf_map_lookup_elem(&kpx_ct_v4, &rk);
	/* A stamp at or ahead of now (another CPU's clock read) is recent. */
	return r && (r->last_seen_ns >= now || now - r->last_seen_ns <= ct_timeout_ns(ct, p->proto));
}

/*
 * Account a packet to a FORWARD entry. Returns 0 when the entry no longer
 * describes this packet's flow and a new one must be made: it timed out, or
 * a fresh SYN reuses the tuple of a connection that completed or closed.
 */
static __always_inline int ct_forward_usable(struct kpx_ct_value_v4 *ct, const struct pkt4 *p)
{
	__u16 add = ct_flags_of(p);
	__u64 now, last, idle;

	if ((p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN &&
	    (ct->flags & (KPX_CT_F_ESTABLISHED | KPX_CT_F_FIN | KPX_CT_F_RST)))
		return 0;
	now = bpf_ktime_get_coarse_ns();
	/* Another CPU may have stamped the entry after this one read the clock:
	 * a stamp ahead of now means "seen just now", not a huge (unsigned,
	 * wrapped) idle time that would expire a live flow. */
	last = ct->last_seen_ns;
	idle = now > last ? now - last : 0;
	if (unlikely(idle > KPX_NSEC_PER_SEC)) {
		if (idle > ct_timeout_ns(ct, p->proto) && !ct_reply_recent(ct, p, now))
			return 0;
		ct->last_seen_ns = now;
	}
	if ((ct->flags & add) != add)
		ct->flags |= add;
	return 1;
}

/* Account a packet to a REPLY entry. Replies never expire on their own:
 * their FORWARD entry decides, and rewrites them when the flow is remade. */
static __always_inline void ct_reply_seen(struct kpx_ct_value_v4 *ct, const struct pkt4 *p)
{
	__u16 add = ct_flags_of(p);
	__u64 now = bpf_ktime_get_coarse_ns();

	if (now - ct->last_seen_ns > KPX_NSEC_PER_SEC)
		ct->last_seen_ns = now;
	if ((ct->flags & add) != add)
		ct->flags |= add;
}

/* ---- per-CPU conntrack cache (see struct kpx_ct_cache_entry_v4) ---------- */

/* The kernel's HZ (libbpf reads it from the kernel config; 0 when that is
 * not available, which turns the cache off) and the number of possible
 * CPUs (set by the loader). */
extern unsigned int CONFIG_HZ __kconfig __weak;
const volatile __u32 kpx_nr_cpus = 1;

static __always_inline __u32 ct_cache_slot(const struct kpx_ct_key_v4 *k)
{
	__u32 h = k->saddr * 0x9e3779b1u;

	h ^= k->daddr * 0x85ebca6bu;
	h ^= (((__u32)k->sport << 16) | k->dport) * 0xc2b2ae35u;
	h ^= ((__u32)k->proto << 1) | k->dir;
	h ^= h >> 16;
	h *= 0x7feb352du;
	h ^= h >> 15;
	return h & (KPX_CT_CACHE_SLOTS - 1);
}

/* Packets that change TCP state always go through the conntrack entry, and
 * so do fragments (which it drops). */
static __always_inline int ct_cache_usable(const struct pkt4 *p)
{
	return CONFIG_HZ && !(p->tcp_flags & (TCPF_SYN | TCPF_FIN | TCPF_RST)) && !p->is_fragment;
}

static __always_inline int ct_key_equal(const struct kpx_ct_key_v4 *a, const struct kpx_ct_key_v4 *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1];
}

/* The current conntrack epoch (see struct kpx_config). */
static __always_inline __u32 ct_epoch(void)
{
	const struct kpx_config *cfg = config();

	return cfg ? cfg->ct_epoch : 0;
}

/* This CPU's cached translation of key, or NULL: the slot must hold key,
 * be of the current epoch and have been synced within the last second. */
static __always_inline struct kpx_ct_cache_entry_v4 *ct_cache_get(const struct kpx_ct_key_v4 *k)
{
	__u32 slot = ct_cache_slot(k);
	struct kpx_ct_cache_entry_v4 *e = bpf_map_lookup_elem(&kpx_ct_cache_v4, &slot);

	if (!e || !ct_key_equal(&e->key, k) || e->epoch != ct_epoch())
		return 0;
	if (bpf_jiffies64() - e->synced_jiffies >= CONFIG_HZ)
		return 0;
	return e;
}

/* epoch must have been read before the conntrack entry was: an entry that
 * userspace deleted meanwhile then goes in under the old epoch, void. */
static __always_inline void ct_cache_put(const struct kpx_ct_key_v4 *k,
					 const struct kpx_ct_value_v4 *ct, __u32 epoch)
{
	__u32 slot = ct_cache_slot(k);
	struct kpx_ct_cache_entry_v4 *e = bpf_map_lookup_elem(&kpx_ct_cache_v4, &slot);

	if (!e)
		return;
	e->key = *k;
	e->nat_addr = ct->nat_addr;
	e->snat_addr = ct->snat_addr;
	e->nat_port = ct->nat_port;
	e->flags = ct->flags;
	e->svc_id = ct->svc_id;
	e->epoch = epoch;
	e->synced_jiffies = bpf_jiffies64();
}

struct ct_forget_ctx {
	const struct kpx_ct_key_v4 *key;
	__u32 slot;
};

static long ct_cache_forget_on_cpu(__u32 cpu, void *arg)
{
	struct ct_forget_ctx *c = arg;
	struct kpx_ct_cache_entry_v4 *e = bpf_map_lookup_percpu_elem(&kpx_ct_cache_v4, &c->slot, cpu);

	/* One byte store: a reader on that CPU sees the slot whole or void. */
	if (e && ct_key_equal(&e->key, c->key))
		e->key.dir = 0xff;
	return 0;
}

/* A flow's translation changed (a new flow took the tuple): void the tuple's
 * cache slot on every CPU, so none keeps translating it the old way. */
static __always_inline void ct_cache_forget(const struct kpx_ct_key_v4 *k)
{
	struct ct_forget_ctx c = {.key = k, .slot = ct_cache_slot(k)};

	if (CONFIG_HZ)
		bpf_loop(kpx_nr_cpus, ct_cache_forget_on_cpu, &c, 0);
}

/*
 * Create both entries of a new flow: FORWARD keyed by the client's packet,
 * REPLY keyed by the backend's answer (to the client, or to the hairpin
 * address when the source is NATed).
 */
/* A REPLY entry is only good while its FORWARD entry exists and still
 * sends the flow to the backend the reply comes from: a REPLY entry left by
 * a flow that ended or moved must not rewrite other traffic (a direct
 * connection to the pod, a probe from the node) to the VIP. */
static __always_inline int ct_reply_live(const struct kpx_ct_key_v4 *rk, const struct kpx_ct_value_v4 *rv)
{
	struct kpx_ct_key_v4 fk;
	struct kpx_ct_value_v4 *f;

	ct_forward_key_of_reply(&fk, rk, rv);
	f = bpf_map_lookup_elem(&kpx_ct_v4, &fk);
	return f && f->nat_addr == rk->saddr && f->nat_port == rk->sport;
}

/*
 * Create both entries of a new flow: FORWARD keyed by the client's packet,
 * REPLY keyed by the backend's answer (to the client, or to the hairpin
 * address when the source is NATed). Returns -2 when the REPLY tuple is
 * taken by another live flow (the same client port to the same backend
 * through another Service): kpx does not remap ports yet, and answering
 * one flow's replies as the other's would break both. A flow this one
 * replaces (same tuple, new backend) loses its REPLY entry.
 */
static __always_inline int ct_create(const struct pkt4 *p, const struct kpx_backend_value_v4 *be,
				     __u32 svc_id, __be32 snat_addr)
{
	struct kpx_ct_key_v4 key, rkey;
	struct kpx_ct_value_v4 val = {};
	struct kpx_ct_value_v4 *old;
	__u64 now = bpf_ktime_get_coarse_ns();

	ct_key_from_pkt(&key, p, KPX_CT_FORWARD);
	val.nat_addr = be->addr;
	val.nat_port = be->port;
	val.snat_addr = snat_addr;
	val.svc_id = svc_id;
	val.flags = ct_flags_of(p) | (snat_addr ? KPX_CT_F_HAIRPIN : 0);
	val.last_seen_ns = now;
	val.created_ns = now;
	ct_reply_key_of_forward(&rkey, &key, &val);

	old = bpf_map_lookup_elem(&kpx_ct_v4, &rkey);
	if (old && ct_reply_live(&rkey, old)) {
		struct kpx_ct_key_v4 owner;

		ct_forward_key_of_reply(&owner, &rkey, old);
		if (!ct_key_equal(&owner, &key))
			return -2;
	}
	old = bpf_map_lookup_elem(&kpx_ct_v4, &key);
	if (old && (old->nat_addr != be->addr || old->nat_port != be->port)) {
		struct kpx_ct_key_v4 stale;

		ct_reply_key_of_forward(&stale, &key, old);
		bpf_map_delete_elem(&kpx_ct_v4, &stale);
		ct_cache_forget(&stale);
	}

	if (bpf_map_update_elem(&kpx_ct_v4, &key, &val, BPF_ANY))
		return -1;
	ct_cache_forget(&key);

	val.nat_addr = p->ip->daddr;
	val.nat_port = p->dport;
	val.snat_addr = snat_addr ? p->ip->saddr : 0;
	val.flags = snat_addr ? KPX_CT_F_HAIRPIN : 0;
	if (bpf_map_update_elem(&kpx_ct_v4, &rkey, &val, BPF_ANY))
		return -1;
	ct_cache_forget(&rkey);
	return 0;
}

#endif
