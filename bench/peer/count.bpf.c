// The peers' program: the same logic as sonde's `count` (a per-CPU counter
// indexed by the attach cookie), in C for clang, loaded by libbpf and by aya.
// Self-contained: no headers beyond what is spelled here.

typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

#define BPF_MAP_TYPE_PERCPU_ARRAY 6

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_get_attach_cookie)(void *ctx) = (void *)174;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} COUNTS SEC(".maps");

static __attribute__((always_inline)) int count(void *ctx)
{
	__u32 key = bpf_get_attach_cookie(ctx);
	__u64 *v = bpf_map_lookup_elem(&COUNTS, &key);

	if (v)
		*v += 1;
	return 0;
}

#ifndef SINGLE_ONLY
SEC("uprobe.multi")
int count_multi(void *ctx)
{
	return count(ctx);
}
#endif

SEC("uprobe")
int count_single(void *ctx)
{
	return count(ctx);
}

char LICENSE[] SEC("license") = "GPL";
