/* Programs that try to reach memory a filter must not: each one must be
 * refused at load (verify_filter(), filters/bpf_verifier.hh) or, for
 * reads_past_caplen, must see zeros past caplen. rte_bpf 22.11's own
 * validator accepts all of them. Used by tests/filters/bpf_object_test.cc. */
#include "linecap_bpf.h"

/* Overwrites the context's data pointer, then reads through it: a read of
 * any address the program likes. */
LINECAP_PROGRAM(writes_context)
{
	struct linecap_packet *p = (struct linecap_packet *)pkt;
	p->data = (const unsigned char *)0x1000;
	return p->data[0];
}

/* Writes into the packet, which later rules and the file writer read. */
LINECAP_PROGRAM(writes_packet)
{
	if (pkt->caplen < 14)
		return 0;
	((unsigned char *)pkt->data)[12] = 0x86;
	return 1;
}

/* Reads past the 16-byte context (rte_bpf allows sizeof(rte_mbuf)). */
LINECAP_PROGRAM(reads_past_context)
{
	const unsigned long long *words = (const unsigned long long *)pkt;
	return words[3] != 0;
}

/* One bit of the packet buffer's address per packet, through the verdict. */
LINECAP_PROGRAM(leaks_address)
{
	return ((unsigned long)pkt->data >> 12) & 1;
}

/* A loop over the packet: rte_bpf refuses it with "Invalid argument". */
LINECAP_PROGRAM(loops)
{
	unsigned int sum = 0;
	for (unsigned int i = 0; i < pkt->caplen && i < 1500; i++)
		sum += pkt->data[i];
	return sum == 0x1234;
}

/* Reads byte 100 whatever caplen says: runs, but sees only the packet's
 * own bytes, and zeros past caplen. */
LINECAP_PROGRAM(reads_past_caplen)
{
	return pkt->data[100] == 0xab;
}
