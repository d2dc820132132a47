/* What a linecap eBPF filter program sees. Include it from a program built
 * with `clang -O2 -target bpf -mcpu=v2 -c prog.bpf.c -o prog.bpf.o` and load
 * it with `capd --bpf-object prog.bpf.o[:FUNCTION]`.
 *
 * The program gets a pointer to the packet and returns non-zero to capture
 * it, 0 to drop it. It runs in DPDK's rte_bpf (JIT or interpreter), not in
 * the kernel: there are no maps, no helpers, no global variables and no
 * calls to other BPF functions (make helpers static __always_inline).
 *
 * The packet and this struct are read-only: capd refuses a program that
 * stores to either, reads the struct other than field by field, loops, or
 * does anything with a pointer but add an offset (filters/bpf_verifier.hh).
 * Every offset must be provably small (derived from header fields, or
 * compared with a constant or with caplen); rte_bpf's own check wants
 * constants or header fields, see filters/bpf_object.hh. The program reads
 * a private copy of the packet with zeros past caplen: compare every
 * offset with caplen, since a zero there is not packet data.
 *
 * DPDK 22.11's validator also forgets that a register holds a packet
 * pointer once a program computes "offset += pointer" rather than "pointer
 * += offset"; clang picks either order, and the loader rewrites the first
 * into the second (normalize_pointer_adds() in filters/bpf_object.hh).
 */
#ifndef LINECAP_BPF_H
#define LINECAP_BPF_H

struct linecap_packet {
	const unsigned char *data; /* first byte of the Ethernet header */
	unsigned int caplen;       /* bytes captured (readable at data) */
	unsigned int wirelen;      /* bytes on the wire */
};

#define LINECAP_PROGRAM(name) \
	__attribute__((section("linecap"), used)) int name(const struct linecap_packet *pkt)

#endif
