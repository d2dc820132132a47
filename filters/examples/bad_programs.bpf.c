/* Programs that --bpf-object must refuse, each for one reason, plus one
 * that is fine. Used by tests/filters/bpf_object_test.cc. */
#include "linecap_bpf.h"

/* A kernel helper, declared the way libbpf's bpf_helper_defs.h does. */
static unsigned long long (*bpf_ktime_get_ns)(void) = (void *)5;
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

/* A BTF-defined array map, as libbpf's bpf_helpers.h macros spell it. */
struct {
	int (*type)[2]; /* BPF_MAP_TYPE_ARRAY */
	int (*max_entries)[1];
	int *key;
	long *value;
} counts __attribute__((section(".maps"), used));

long seen; /* global data: lives in a .bss map */

LINECAP_PROGRAM(uses_helper)
{
	return (bpf_ktime_get_ns() & 1) && pkt->caplen > 0;
}

LINECAP_PROGRAM(uses_map)
{
	int key = 0;
	long *v = bpf_map_lookup_elem(&counts, &key);
	if (v)
		*v += 1;
	return 1;
}

LINECAP_PROGRAM(uses_global)
{
	seen += pkt->caplen;
	return 1;
}

__attribute__((noinline)) static int longer_than(const struct linecap_packet *pkt, unsigned n)
{
	return pkt->caplen > n;
}

LINECAP_PROGRAM(uses_subprog)
{
	return longer_than(pkt, 100) + longer_than(pkt, 200);
}

LINECAP_PROGRAM(accept_all)
{
	return pkt->caplen != 0;
}
