/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking for translated flows: an LRU hash, two entries a flow
 * (FORWARD, REPLY; see kpx/abi.h), both bound to an interface, both carrying
 * the flow's gen and a check word.
 *
 * Rules the code below keeps:
 *  - Every value is copied to the stack and validated (kpx_ct_check_v4 over
 *    the key and the immutable fields, gen not DEAD) before use: the kernel
 *    reuses a preallocated element without a grace period, so a pointer may
 *    meanwhile hold another flow.
 *  - Inserts use BPF_NOEXIST: of two CPUs creating one flow, the loser adopts
 *    the winner's entry; replacing a dead entry re-reads what won.
 *  - A flow that lost an entry heals: a FORWARD whose REPLY is gone re-creates
 *    it (checked once a second per flow, when the entry is stamped); a REPLY
 *    that cannot be inserted takes its FORWARD away with it.
 *  - Dead flows (RST seen, or idle past their timeout) are not clashes and
 *    never translate replies; a live clash gets another source port.
 *  - Every create, replace or delete bumps the tuple's version word, voiding
 *    its per-CPU cache slots on every CPU with one store.
 * Timeouts are evaluated lazily; last-seen is written at most once a second,
 * by either direction, on the FORWARD entry.
 */
#ifndef KPX_BPF_CONNTRACK_H
#define KPX_BPF_CONNTRACK_H

#include "common.h"
#include "maps.h"
#include "parse.h"

/* Source ports a clashing flow may be given (netfilter's NAT range for
 * unprivileged ports), and how many candidates one packet tries. */
#define KPX_PORT_MIN 1024
#define KPX_PORT_SPAN (65536 - KPX_PORT_MIN)
#define KPX_PORT_TRIES 8

static __always_inline void ct_key_from_pkt(struct kpx_ct_key_v4 *k, const struct pkt4 *p, __u8 dir,
					    __u32 ifindex)
{
	k->saddr = p->ip->saddr;
	k->daddr = p->ip->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->dir = dir;
	k->pad = 0;
	k->ifindex = ifindex;
}

/* The REPLY key of the flow a FORWARD entry describes: the backend
 * answering the client as the backend sees it (translated source). */
static __always_inline void ct_reply_key_of_forward(struct kpx_ct_key_v4 *rk, const struct kpx_ct_key_v4 *fk,
						    const struct kpx_ct_value_v4 *fv)
{
	rk->saddr = fv->nat_addr;
	rk->daddr = fv->snat_addr ? fv->snat_addr : fk->saddr;
	rk->sport = fv->nat_port;
	rk->dport = fv->snat_port ? fv->snat_port : fk->sport;
	rk->proto = fk->proto;
	rk->dir = KPX_CT_REPLY;
	rk->pad = 0;
	rk->ifindex = (fv->flags & KPX_CT_F_UPLINK) ? fv->out_ifindex : fk->ifindex;
}

/* The FORWARD key of the flow a REPLY entry belongs to. */
static __always_inline void ct_forward_key_of_reply(struct kpx_ct_key_v4 *fk, const struct kpx_ct_key_v4 *rk,
						    const struct kpx_ct_value_v4 *rv)
{
	fk->saddr = rv->snat_addr ? rv->snat_addr : rk->daddr;
	fk->daddr = rv->nat_addr;
	fk->sport = rv->snat_port ? rv->snat_port : rk->dport;
	fk->dport = rv->nat_port;
	fk->proto = rk->proto;
	fk->dir = KPX_CT_FORWARD;
	fk->pad = 0;
	fk->ifindex = (rv->flags & KPX_CT_F_UPLINK) ? rv->out_ifindex : rk->ifindex;
}

static __always_inline int ct_key_equal(const struct kpx_ct_key_v4 *a, const struct kpx_ct_key_v4 *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && a->ifindex == b->ifindex;
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

/* A FORWARD entry's timeout for its state (abi.h's rule, which the agent's
 * GC uses too). */
static __always_inline __u64 ct_timeout_ns(const struct kpx_ct_value_v4 *v, __u8 proto)
{
	return (__u64)kpx_ct_timeout_s(v, proto, config()) * KPX_NSEC_PER_SEC;
}

/* Idle time of an entry; a stamp ahead of now (another CPU's clock read) is
 * "just now", never a huge unsigned idle time. */
static __always_inline __u64 ct_idle(const struct kpx_ct_value_v4 *v, __u64 now)
{
	return now > v->last_seen_ns ? now - v->last_seen_ns : 0;
}

/* A flow is over: reset by either side, or idle past its timeout. */
static __always_inline int ct_forward_dead(const struct kpx_ct_value_v4 *fv, __u8 proto, __u64 now)
{
	return (fv->flags & KPX_CT_F_RST) || ct_idle(fv, now) > ct_timeout_ns(fv, proto);
}

/* ---- validated access ---------------------------------------------------- */

/* Look key up and copy its entry to *out if it is whole and not reaped.
 * Returns the map pointer (for the mutable fields: flags, last_seen_ns), or
 * NULL. */
static __always_inline struct kpx_ct_value_v4 *ct_get(const struct kpx_ct_key_v4 *k,
						       struct kpx_ct_value_v4 *out)
{
	struct kpx_ct_value_v4 *v = bpf_map_lookup_elem(&kpx_ct_v4, k);

	if (!v)
		return 0;
	__builtin_memcpy(out, v, sizeof(*out));
	if (out->gen == KPX_CT_GEN_DEAD || out->check != kpx_ct_check_v4(k, out))
		return 0;
	return v;
}

/* ---- versions and the per-CPU cache ---------------------------------------- */

/* The kernel's HZ (libbpf reads it from the kernel config; 0 when that is
 * not available, which turns the cache off). */
extern unsigned int CONFIG_HZ __kconfig __weak;

static __always_inline __u32 *ct_ver_word(__u32 hash)
{
	__u32 idx = hash & (KPX_CT_VER_SLOTS - 1);

	return bpf_map_lookup_elem(&kpx_ct_ver, &idx);
}

/* The tuple's entry changed: every CPU's cache slot of it is void. */
static __always_inline void ct_ver_bump(const struct kpx_ct_key_v4 *k)
{
	__u32 *w = ct_ver_word(kpx_ct_hash_v4(k));

	if (w)
		__sync_fetch_and_add(w, 1);
}

/* The current conntrack epoch (see struct kpx_config). */
static __always_inline __u32 ct_epoch(void)
{
	const struct kpx_config *cfg = config();

	return cfg ? cfg->ct_epoch : 0;
}

/* Packets that change TCP state always go through the conntrack entry, and
 * so do fragments (which it drops). */
static __always_inline int ct_cache_usable(const struct pkt4 *p)
{
	return CONFIG_HZ && !(p->tcp_flags & (TCPF_SYN | TCPF_FIN | TCPF_RST)) && !p->is_fragment;
}

/* This CPU's cached translation of key (hash = kpx_ct_hash_v4(key)), or
 * NULL: the slot must hold key, the tuple's version, the current epoch, and
 * have been synced within the last second. */
static __always_inline struct kpx_ct_cache_entry_v4 *ct_cache_get(const struct kpx_ct_key_v4 *k, __u32 hash)
{
	__u32 slot = hash & (KPX_CT_CACHE_SLOTS - 1);
	struct kpx_ct_cache_entry_v4 *e = bpf_map_lookup_elem(&kpx_ct_cache_v4, &slot);
	__u32 *ver;

	if (!e || !ct_key_equal(&e->key, k))
		return 0;
	ver = ct_ver_word(hash);
	if (!ver || e->ver != *ver || e->epoch != ct_epoch())
		return 0;
	if (bpf_jiffies64() - e->synced_jiffies >= CONFIG_HZ)
		return 0;
	return e;
}

/* ver and epoch must have been read before the conntrack entry was: an entry
 * changed meanwhile then goes in under the old version, void. */
static __always_inline void ct_cache_put(const struct kpx_ct_key_v4 *k, __u32 hash,
					 const struct kpx_ct_value_v4 *v, __u32 ver, __u32 epoch)
{
	__u32 slot = hash & (KPX_CT_CACHE_SLOTS - 1);
	struct kpx_ct_cache_entry_v4 *e = bpf_map_lookup_elem(&kpx_ct_cache_v4, &slot);

	if (!e)
		return;
	e->key = *k;
	e->nat_addr = v->nat_addr;
	e->snat_addr = v->snat_addr;
	e->nat_port = v->nat_port;
	e->snat_port = v->snat_port;
	e->svc_id = v->svc_id;
	e->ct_flags = v->flags & KPX_CT_F_UPLINK;
	e->ver = ver;
	e->epoch = epoch;
	e->synced_jiffies = bpf_jiffies64();
}

/* No entry for key: remembered in its slot as a negative entry (nat_addr 0;
 * a translation always has a backend address), so traffic from a backend
 * to a pod that is not its client (pod to pod from a Service's port) passes
 * on the next packet without a hash lookup. Sound for the same reasons as a
 * positive entry: an insert of key bumps its version word after the insert,
 * and ver was read before the lookup that missed. Only REPLY keys are ever
 * stored negative; kpx_from_pod looks up FORWARD keys only. */
static __always_inline void ct_cache_put_miss(const struct kpx_ct_key_v4 *k, __u32 hash, __u32 ver, __u32 epoch)
{
	__u32 slot = hash & (KPX_CT_CACHE_SLOTS - 1);
	struct kpx_ct_cache_entry_v4 *e = bpf_map_lookup_elem(&kpx_ct_cache_v4, &slot);

	if (!e)
		return;
	e->key = *k;
	e->nat_addr = 0;
	e->snat_addr = 0;
	e->nat_port = 0;
	e->snat_port = 0;
	e->svc_id = 0;
	e->ct_flags = 0;
	e->ver = ver;
	e->epoch = epoch;
	e->synced_jiffies = bpf_jiffies64();
}

/* ---- entry writes ---------------------------------------------------------- */

static __always_inline int ct_put(const struct kpx_ct_key_v4 *k, struct kpx_ct_value_v4 *v, __u64 flags)
{
	int r;

	v->check = kpx_ct_check_v4(k, v);
	r = bpf_map_update_elem(&kpx_ct_v4, k, v, flags);
	if (r == 0)
		ct_ver_bump(k);
	return r;
}

static __always_inline void ct_del(const struct kpx_ct_key_v4 *k)
{
	if (bpf_map_delete_elem(&kpx_ct_v4, k) == 0)
		ct_ver_bump(k);
}

/* The REPLY entry value of a flow whose FORWARD key/value are fk/fv. */
static __always_inline void ct_reply_value_of(struct kpx_ct_value_v4 *rv, const struct kpx_ct_key_v4 *fk,
					      const struct kpx_ct_value_v4 *fv)
{
	__builtin_memset(rv, 0, sizeof(*rv));
	rv->nat_addr = fk->daddr;
	rv->nat_port = fk->dport;
	rv->snat_addr = fv->snat_addr ? fk->saddr : 0;
	rv->snat_port = fv->snat_port ? fk->sport : 0;
	rv->nat_kind = fv->nat_kind;
	rv->svc_id = fv->svc_id;
	rv->gen = fv->gen;
	rv->flags = fv->flags & (KPX_CT_F_HAIRPIN | KPX_CT_F_PORT_REMAP | KPX_CT_F_UPLINK);
	rv->out_ifindex = (fv->flags & KPX_CT_F_UPLINK) ? fk->ifindex : 0;
	rv->last_seen_ns = fv->last_seen_ns;
	rv->created_ns = fv->created_ns;
}

/* Per-CPU scratch space for ct_create's two entry values: a BPF call chain
 * has 512 bytes of stack, too few for them beside the callers' frames. Not
 * pinned (no state: every use writes it before reading). */
struct ct_scratch {
	struct kpx_ct_value_v4 fv;    /* ct_create's */
	struct kpx_ct_value_v4 tmp;   /* ct_create's */
	struct kpx_ct_key_v4 fk, rk;  /* ct_create's */
	struct kpx_ct_value_v4 probe; /* ct_reply_taken's */
	__u8 caller[160];             /* the entry program's (from_pod_slow, uplink_slow) */
	__u8 icmp[128];               /* icmp_send_back's error (reject.h): the last thing on any chain */
	struct bpf_fib_lookup fwd_fib; /* uplink_forward's (uplink.h), whose callers' frames are deep */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_scratch);
} kpx_ct_scratch SEC(".maps");

/*
 * Whether the REPLY tuple rk is taken by a live flow other than the one whose
 * FORWARD key is `self`. A REPLY entry whose FORWARD is gone, points
 * elsewhere, has another gen or is over belongs to nobody. Not inlined: one
 * stack frame for the two entries it reads, off the callers' stacks.
 */
static __attribute__((noinline)) int ct_reply_taken(const struct kpx_ct_key_v4 *rk,
						     const struct kpx_ct_key_v4 *self, __u64 now)
{
	struct kpx_ct_key_v4 fk;
	struct ct_scratch *sc;
	__u32 gen, zero = 0;

	sc = bpf_map_lookup_elem(&kpx_ct_scratch, &zero);
	if (!sc || !ct_get(rk, &sc->probe))
		return 0;
	gen = sc->probe.gen;
	ct_forward_key_of_reply(&fk, rk, &sc->probe);
	if (self && ct_key_equal(&fk, self))
		return 0;
	if (!ct_get(&fk, &sc->probe) || sc->probe.gen != gen)
		return 0;
	return !ct_forward_dead(&sc->probe, rk->proto, now);
}

/*
 * Claim the REPLY entry of a new flow (BPF_NOEXIST, taking over a tuple only
 * from a flow that is over or from this tuple's own previous flow). 0 on
 * success, -2 when a live flow holds it, -1 on another failure.
 */
static __always_inline int ct_claim_reply(const struct kpx_ct_key_v4 *rk, struct kpx_ct_value_v4 *rv,
					  const struct kpx_ct_key_v4 *self, __u64 now)
{
	int r = ct_put(rk, rv, BPF_NOEXIST);

	if (r == 0)
		return 0;
	if (r != -17 /* EEXIST */)
		return -1;
	if (ct_reply_taken(rk, self, now))
		return -2;
	return ct_put(rk, rv, BPF_ANY) ? -1 : 0;
}

/* What a flow's packets become (uplink: the flow's KPX_CT_F_UPLINK, its
 * frames are sent on by kpx, lib/uplink.h). */
struct ct_nat {
	__be32 nat_addr;
	__be32 snat_addr;
	__be16 nat_port;
	__be16 snat_port;
	__u16 uplink;
	__u16 pad;
};

static __always_inline void ct_nat_of(struct ct_nat *n, const struct kpx_ct_value_v4 *fv)
{
	n->nat_addr = fv->nat_addr;
	n->nat_port = fv->nat_port;
	n->snat_addr = fv->snat_addr;
	n->snat_port = fv->snat_port;
	n->uplink = fv->flags & KPX_CT_F_UPLINK;
}

/* A source port in [min, min + span) for a flow whose natural reply tuple
 * is taken, or that is source-NATed to the node: candidates spread by the
 * tuple's hash (as netfilter's get_unique_tuple does), the first whose
 * reply tuple is free. 0 when none of them is. */
static __always_inline __be16 ct_alloc_port(struct kpx_ct_key_v4 *rk, const struct kpx_ct_key_v4 *fk,
					    __u64 now, __u32 min, __u32 span)
{
	__u32 h = kpx_ct_hash_v4(fk), i;

	if (!span)
		return 0;
	for (i = 0; i < KPX_PORT_TRIES; i++) {
		__u16 port = min + (h + i * 0x9e37u) % span;

		rk->dport = bpf_htons(port);
		if (rk->dport != fk->sport && !ct_reply_taken(rk, fk, now))
			return rk->dport;
	}
	return 0;
}

/* Remove the REPLY entry of a FORWARD entry that is being replaced, if it is
 * still that flow's (never another flow's). */
static __always_inline void ct_drop_reply_of(const struct kpx_ct_key_v4 *fk, struct kpx_ct_value_v4 *fv)
{
	struct kpx_ct_key_v4 rk;
	__u32 gen = fv->gen;

	ct_reply_key_of_forward(&rk, fk, fv);
	if (ct_get(&rk, fv) && fv->gen == gen) /* fv is the caller's scratch copy */
		ct_del(&rk);
}

enum {
	CT_CREATED = 0,
	CT_ADOPTED = 1,    /* another CPU made this flow first: its translation */
	CT_ERR_FULL = -1,  /* an insert failed */
	CT_ERR_CLASH = -2, /* no free source port */
};

/*
 * Create both entries of a new flow from the packet (FORWARD keyed by it,
 * on interface req->ifindex) to backend req->be, with the source translated
 * to req->snat_addr (hairpin) when not 0. req->stale_gen is the gen of the
 * FORWARD entry the caller found unusable (0: none). Fills *out with what
 * the packet becomes.
 */
/* What a new flow is made of (a struct: a BPF function takes 5 arguments).
 * An uplink flow (uplink set) is source-NATed to snat_addr (0: the client's
 * address kept, traffic policy Local) with a port from [port_min, port_min
 * + port_span), and its REPLY entry goes on reply_ifindex (0: the local
 * backend's veth, bound later). */
struct ct_new {
	struct kpx_backend_value_v4 be;
	__u32 ifindex;
	__u32 svc_id;
	__be32 snat_addr;
	__u32 stale_gen;
	__u32 reply_ifindex;
	__u16 port_min;
	__u16 port_span;
	__u8 uplink;
	__u8 pad[3];
};

static __attribute__((noinline)) int ct_create(const struct pkt4 *p, const struct ct_new *req,
						struct ct_nat *out)
{
	const struct kpx_backend_value_v4 *be = &req->be;
	__be32 snat_addr = req->snat_addr;
	__u32 stale_gen = req->stale_gen, ifindex = req->ifindex, svc_id = req->svc_id;
	struct kpx_ct_value_v4 *fvp, *tmpp; /* tmp: another entry's copy, then the REPLY value */
	struct kpx_ct_key_v4 *fkp, *rkp;
	__u64 now = bpf_ktime_get_coarse_ns();
	struct ct_scratch *sc;
	__u32 zero = 0;
	int r;

	sc = bpf_map_lookup_elem(&kpx_ct_scratch, &zero);
	if (!sc)
		return CT_ERR_FULL;
	fvp = &sc->fv;
	tmpp = &sc->tmp;
	fkp = &sc->fk;
	rkp = &sc->rk;
	__builtin_memset(fvp, 0, sizeof(*fvp));
#define fv (*fvp)
#define tmp (*tmpp)
#define fk (*fkp)
#define rk (*rkp)
	ct_key_from_pkt(&fk, p, KPX_CT_FORWARD, ifindex);
	fv.nat_addr = be->addr;
	fv.nat_port = be->port;
	fv.snat_addr = snat_addr;
	fv.svc_id = svc_id;
	if (req->uplink) {
		fv.flags = ct_flags_of(p) | KPX_CT_F_UPLINK;
		fv.out_ifindex = req->reply_ifindex;
	} else {
		fv.flags = ct_flags_of(p) | (snat_addr ? KPX_CT_F_HAIRPIN : 0);
	}
	fv.last_seen_ns = now;
	fv.created_ns = now;
	fv.gen = bpf_get_prandom_u32() | 1; /* never KPX_CT_GEN_DEAD */

	/* A live flow answered by the same backend to the same client port
	 * (the client's port towards another frontend): give this one another
	 * source port, so the two flows' replies stay apart. */
	ct_reply_key_of_forward(&rk, &fk, &fv);
	if (req->uplink && snat_addr) {
		/* Source NAT to the node: always a port of the SNAT range. */
		fv.snat_port = ct_alloc_port(&rk, &fk, now, req->port_min, req->port_span);
		if (!fv.snat_port)
			return CT_ERR_CLASH;
	} else if (ct_reply_taken(&rk, &fk, now)) {
		fv.snat_port = ct_alloc_port(&rk, &fk, now, KPX_PORT_MIN, KPX_PORT_SPAN);
		if (!fv.snat_port)
			return CT_ERR_CLASH;
		fv.flags |= KPX_CT_F_PORT_REMAP;
	}
	fv.nat_kind = (fv.snat_addr || fv.snat_port) ? KPX_NAT_DNAT_SNAT : KPX_NAT_DNAT;

	r = ct_put(&fk, &fv, BPF_NOEXIST);
	if (r == -17 /* EEXIST */) {
		struct kpx_ct_value_v4 *old = ct_get(&fk, &tmp);

		/* Another CPU created this flow after the caller looked: adopt. */
		if (old && tmp.gen != stale_gen && !ct_forward_dead(&tmp, p->proto, now)) {
			ct_nat_of(out, &tmp);
			return CT_ADOPTED;
		}
		/* The entry the caller found unusable (or a torn one): replace it,
		 * with its REPLY entry, then use whatever is there now (a CPU
		 * replacing it at the same time may have won). */
		if (old)
			ct_drop_reply_of(&fk, &tmp);
		if (ct_put(&fk, &fv, BPF_ANY))
			return CT_ERR_FULL;
		if (ct_get(&fk, &tmp) && tmp.gen != fv.gen) {
			ct_nat_of(out, &tmp);
			return CT_ADOPTED;
		}
	} else if (r) {
		return CT_ERR_FULL;
	}

	ct_reply_value_of(&tmp, &fk, &fv);
	r = ct_claim_reply(&rk, &tmp, &fk, now);
	if (r) {
		/* A flow without its REPLY entry would send replies out untranslated:
		 * take the FORWARD entry away again. */
		if (ct_get(&fk, &tmp) && tmp.gen == fv.gen)
			ct_del(&fk);
		return r == -2 ? CT_ERR_CLASH : CT_ERR_FULL;
	}
	ct_nat_of(out, &fv);
	return CT_CREATED;
#undef fv
#undef tmp
#undef fk
#undef rk
}

/* The once-a-second check of a FORWARD entry: re-create its REPLY entry if
 * it was evicted or lost. Not inlined: off the hot path's stack. */
static __attribute__((noinline)) int ct_heal(const struct kpx_ct_key_v4 *fk, const struct kpx_ct_value_v4 *fv)
{
	struct kpx_ct_key_v4 rk;
	struct kpx_ct_value_v4 rv;

	ct_reply_key_of_forward(&rk, fk, fv);
	if (ct_get(&rk, &rv) && rv.gen == fv->gen)
		return 0;
	/* Only into a free tuple: one another flow took meanwhile stays its. */
	ct_reply_value_of(&rv, fk, fv);
	if (ct_put(&rk, &rv, BPF_NOEXIST))
		return 0;
	count(KPX_CTR_CT_HEALED);
	return 1;
}

/* A flow was reset: no cache slot may keep translating either direction
 * (a dead flow's replies are never rewritten). */
static __always_inline void ct_flow_ended(const struct kpx_ct_key_v4 *fk, const struct kpx_ct_value_v4 *fv)
{
	struct kpx_ct_key_v4 rk;

	ct_reply_key_of_forward(&rk, fk, fv);
	ct_ver_bump(fk);
	ct_ver_bump(&rk);
}

/*
 * Account a packet to a FORWARD entry (fv: its validated copy, fp: the map
 * element). Returns 0 when the entry no longer describes this packet's flow
 * and a new one must be made: it is over and a fresh SYN reuses its tuple,
 * or it timed out. Once a second (when the stamp is renewed) the REPLY
 * entry is checked and re-created if it went missing.
 */
static __always_inline int ct_forward_usable(struct kpx_ct_value_v4 *fp, const struct kpx_ct_value_v4 *fv,
					     const struct kpx_ct_key_v4 *fk, const struct pkt4 *p)
{
	__u16 add = ct_flags_of(p);
	__u64 now;

	if ((p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN &&
	    (fv->flags & (KPX_CT_F_ESTABLISHED | KPX_CT_F_FIN | KPX_CT_F_RST)))
		return 0;
	now = bpf_ktime_get_coarse_ns();
	if (unlikely(ct_idle(fv, now) > KPX_NSEC_PER_SEC)) {
		if (ct_idle(fv, now) > ct_timeout_ns(fv, p->proto))
			return 0;
		ct_heal(fk, fv);
		fp->last_seen_ns = now;
	}
	/* The client answering the server's FIN: CLOSE_WAIT (netfilter's
	 * transition, on the flags as netfilter's is). */
	if ((fv->flags & (KPX_CT_F_FIN | KPX_CT_F_REPLY_FIN)) == KPX_CT_F_REPLY_FIN && (p->tcp_flags & TCPF_ACK))
		add |= KPX_CT_F_CLOSE_WAIT;
	if ((fv->flags & add) != add) {
		fp->flags |= add;
		if ((add & KPX_CT_F_RST) && !(fv->flags & KPX_CT_F_RST))
			ct_flow_ended(fk, fv);
		/* The server's answer to this FIN must reach the entry, not a
		 * per-CPU cache slot: void the reply tuple's. */
		if ((add & KPX_CT_F_FIN) && !(fv->flags & KPX_CT_F_FIN)) {
			struct kpx_ct_key_v4 rk;

			ct_reply_key_of_forward(&rk, fk, fv);
			ct_ver_bump(&rk);
		}
	}
	return 1;
}

/*
 * Account a reply to its flow: the FORWARD entry (ffp: element, ffv: copy)
 * learns a server's FIN or RST, or its answer to the client's FIN, and is
 * stamped once a second.
 */
static __always_inline void ct_reply_seen(struct kpx_ct_value_v4 *ffp, const struct kpx_ct_value_v4 *ffv,
					  const struct kpx_ct_key_v4 *fk, const struct pkt4 *p)
{
	__u16 add = 0;
	__u64 now;

	if (p->proto == IPPROTO_TCP) {
		if (p->tcp_flags & TCPF_FIN)
			add |= KPX_CT_F_REPLY_FIN;
		if (p->tcp_flags & TCPF_RST)
			add |= KPX_CT_F_RST;
		/* The server answering the client's FIN: CLOSE_WAIT. */
		if ((ffv->flags & (KPX_CT_F_FIN | KPX_CT_F_REPLY_FIN)) == KPX_CT_F_FIN && (p->tcp_flags & TCPF_ACK))
			add |= KPX_CT_F_CLOSE_WAIT;
		if ((ffv->flags & add) != add) {
			ffp->flags |= add;
			if ((add & KPX_CT_F_RST) && !(ffv->flags & KPX_CT_F_RST))
				ct_flow_ended(fk, ffv);
			/* The client's answer to this FIN must reach the entry. */
			if ((add & KPX_CT_F_REPLY_FIN) && !(ffv->flags & KPX_CT_F_REPLY_FIN))
				ct_ver_bump(fk);
		}
	} else if (!(ffv->flags & KPX_CT_F_REPLIED)) {
		/* UDP: answered, a stream once still active after two seconds. */
		ffp->flags |= KPX_CT_F_REPLIED;
	}
	now = bpf_ktime_get_coarse_ns();
	if (ct_idle(ffv, now) > KPX_NSEC_PER_SEC)
		ffp->last_seen_ns = now;
}

/*
 * The flow a REPLY entry (rk; rv its copy) answers, if it is live and
 * still sends to the backend the reply comes from: a REPLY entry left by a
 * flow that ended or moved must not rewrite other traffic (a direct
 * connection to the pod, a probe from the node). Fills *fk, *fv and returns the
 * FORWARD element, or NULL.
 */
static __always_inline struct kpx_ct_value_v4 *ct_reply_flow(const struct kpx_ct_key_v4 *rk,
							      const struct kpx_ct_value_v4 *rv,
							      struct kpx_ct_key_v4 *fk,
							      struct kpx_ct_value_v4 *fv)
{
	struct kpx_ct_value_v4 *f;

	ct_forward_key_of_reply(fk, rk, rv);
	f = ct_get(fk, fv);
	if (!f || fv->gen != rv->gen || fv->nat_addr != rk->saddr || fv->nat_port != rk->sport)
		return 0;
	if (ct_forward_dead(fv, rk->proto, bpf_ktime_get_coarse_ns()))
		return 0;
	return f;
}

/* ---- the FORWARD lookup of both entry programs ---------------------------- */

/* The per-CPU cache's translation of a FORWARD key (the hot path): 1 with
 * *n filled, or 0. */
static __always_inline int ct_cache_forward(const struct kpx_ct_key_v4 *key, __u32 hash, const struct pkt4 *p,
					    struct ct_nat *n)
{
	struct kpx_ct_cache_entry_v4 *c;

	if (!ct_cache_usable(p))
		return 0;
	c = ct_cache_get(key, hash);
	if (!c)
		return 0;
	n->nat_addr = c->nat_addr;
	n->snat_addr = c->snat_addr;
	n->nat_port = c->nat_port;
	n->snat_port = c->snat_port;
	n->uplink = c->ct_flags & KPX_CT_F_UPLINK;
	return 1;
}

enum { CT_FWD_NONE, CT_FWD_HIT, CT_FWD_FRAGMENT };

/*
 * The conntrack entry of a packet the per-CPU cache did not hold. Returns
 * CT_FWD_HIT with *n (and out[0]: an uplink flow whose frames must still
 * carry KPX_MARK_BIND), CT_FWD_FRAGMENT for a fragment of a tracked flow,
 * or CT_FWD_NONE with out[1] the gen of an unusable entry (0: none). The
 * caller translates: one frame less on the call chain's stack.
 */
static __attribute__((noinline)) int ct_forward_lookup(struct pkt4 *p, const struct kpx_ct_key_v4 *key,
						       __u32 hash, struct ct_nat *n, __u32 *out)
{
	struct kpx_ct_value_v4 fv, *fp;
	__u32 ver = 0, epoch, *verp;

	out[0] = 0; /* bind */
	out[1] = 0; /* stale gen */
	epoch = ct_epoch();
	verp = ct_ver_word(hash);
	if (verp)
		ver = *verp;
	fp = ct_get(key, &fv);
	if (!fp)
		return CT_FWD_NONE;
	if (!ct_forward_usable(fp, &fv, key, p)) {
		out[1] = fv.gen;
		return CT_FWD_NONE;
	}
	if (unlikely(p->is_fragment))
		return CT_FWD_FRAGMENT;
	out[0] = (fv.flags & KPX_CT_F_UPLINK) && fv.out_ifindex == 0;
	/* A flow still waiting for its backend's veth is not cached: its
	 * frames must carry the mark until the binding is made. */
	if (!out[0] && ct_cache_usable(p))
		ct_cache_put(key, hash, &fv, ver, epoch);
	ct_nat_of(n, &fv);
	return CT_FWD_HIT;
}

/* ---- admission ------------------------------------------------------------- */

/*
 * Per-interface new-flow budget: a token bucket of ct_new_burst flows,
 * refilled at ct_new_per_sec. One pod flooding new flows spends its own
 * budget only. The update is not atomic across CPUs: the budget is
 * approximate, never unbounded.
 */
static __always_inline int ct_admit(__u32 ifindex)
{
	const struct kpx_config *cfg = config();
	__u64 rate = cfg_or(cfg ? cfg->ct_new_per_sec : 0, KPX_DEFAULT_CT_NEW_PER_SEC);
	__u64 burst = (__u64)cfg_or(cfg ? cfg->ct_new_burst : 0, KPX_DEFAULT_CT_NEW_BURST) * 1000;
	__u64 now = bpf_ktime_get_coarse_ns(), tokens, elapsed;
	struct kpx_ct_budget *b = bpf_map_lookup_elem(&kpx_ct_budget, &ifindex);

	if (!b) {
		struct kpx_ct_budget nb = {.tokens_milli = burst - 1000, .last_refill_ns = now};

		bpf_map_update_elem(&kpx_ct_budget, &ifindex, &nb, BPF_NOEXIST);
		return 1;
	}
	elapsed = now > b->last_refill_ns ? now - b->last_refill_ns : 0;
	if (rate > 100000000)
		rate = 100000000;
	/* rate flows a second = rate * 1000 milli-flows per 1e9 ns; after 10 s
	 * idle the bucket is full (and the product cannot overflow). */
	if (elapsed >= 10 * KPX_NSEC_PER_SEC)
		tokens = burst;
	else
		tokens = b->tokens_milli + elapsed * rate / 1000000;
	if (tokens > burst)
		tokens = burst;
	if (tokens < 1000) {
		b->tokens_milli = tokens;
		b->last_refill_ns = now;
		return 0;
	}
	b->tokens_milli = tokens - 1000;
	b->last_refill_ns = now;
	return 1;
}

#endif
