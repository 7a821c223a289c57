// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The conntrack reaper: a BPF_PROG_TYPE_SYSCALL program the agent's GC runs
 * with BPF_PROG_TEST_RUN. The GC reads the table from userspace and decides
 * which entries are dead; between that read and the delete the datapath may
 * have re-created a flow under the same key. So each entry is named with the
 * gen the GC read, and reaped only if it still holds it: the gen is swapped
 * to KPX_CT_GEN_DEAD atomically (the datapath treats such an entry as absent
 * from that instant), and only the swapper deletes it. An entry re-created in
 * between has another gen and stays.
 */
#include "lib/common.h"
#include "lib/maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define KPX_REAP_BATCH 4096

struct kpx_reap_item {
	struct kpx_ct_key_v4 key;
	__u32 gen;
};

/* The GC's list, written by userspace before each run (this object's own,
 * not pinned: a syscall program may not index its context). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KPX_REAP_BATCH);
	__type(key, __u32);
	__type(value, struct kpx_reap_item);
} kpx_reap_items SEC(".maps");

struct kpx_reap_args {
	__u32 n;      /* items 0..n-1 of kpx_reap_items */
	__u32 reaped; /* out */
};

static long reap_one(__u32 i, void *ctx)
{
	__u32 *reaped = ctx;
	struct kpx_reap_item *it = bpf_map_lookup_elem(&kpx_reap_items, &i);
	struct kpx_ct_value_v4 *v;
	struct kpx_ct_key_v4 key;
	__u32 *w, idx;

	if (!it)
		return 1;
	key = it->key;
	v = bpf_map_lookup_elem(&kpx_ct_v4, &key);
	if (!v || it->gen == KPX_CT_GEN_DEAD)
		return 0;
	if (__sync_val_compare_and_swap(&v->gen, it->gen, KPX_CT_GEN_DEAD) != it->gen)
		return 0; /* re-created since the GC read it */
	bpf_map_delete_elem(&kpx_ct_v4, &key);
	idx = kpx_ct_hash_v4(&key) & (KPX_CT_VER_SLOTS - 1);
	w = bpf_map_lookup_elem(&kpx_ct_ver, &idx);
	if (w)
		__sync_fetch_and_add(w, 1);
	*reaped += 1;
	return 0;
}

SEC("syscall")
int kpx_ct_reap(struct kpx_reap_args *args)
{
	__u32 n = args->n, reaped = 0;

	if (n > KPX_REAP_BATCH)
		n = KPX_REAP_BATCH;
	bpf_loop(n, reap_one, &reaped, 0);
	args->reaped = reaped;
	return 0;
}
