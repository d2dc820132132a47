/* Captures IPv4 TCP packets whose payload starts with "GET " (the seeds'
 * `tcp[(tcp[12]>>2):4] = 0x47455420`, also when the frame carries one
 * 802.1Q tag).
 *
 *   clang -O2 -target bpf -mcpu=v2 -c http_get.bpf.c -o http_get.bpf.o
 *   capd -i af_packet:eth0 --bpf-object http_get.bpf.o -w get.pcap
 */
#include "linecap_bpf.h"

LINECAP_PROGRAM(http_get)
{
	const unsigned char *d = pkt->data;
	unsigned int caplen = pkt->caplen;
	unsigned int l3 = 14;

	if (caplen < 14)
		return 0;
	if (d[12] == 0x81 && d[13] == 0x00) { /* one 802.1Q tag */
		if (caplen < 18 || d[16] != 0x08 || d[17] != 0x00)
			return 0;
		l3 = 18;
	} else if (d[12] != 0x08 || d[13] != 0x00) {
		return 0;
	}
	if (caplen < l3 + 20)
		return 0;

	const unsigned char *ip = d + l3;
	unsigned int ihl = (ip[0] & 0x0f) * 4;
	if ((ip[0] >> 4) != 4 || ihl < 20)
		return 0;
	if (ip[9] != 6) /* TCP */
		return 0;
	if ((ip[6] & 0x1f) != 0 || ip[7] != 0) /* not the first fragment */
		return 0;

	unsigned int tcp = l3 + ihl;
	if (caplen < tcp + 20)
		return 0;
	unsigned int doff = (d[tcp + 12] >> 4) * 4;
	unsigned int payload = tcp + doff;
	if (doff < 20 || caplen < payload + 4)
		return 0;

	const unsigned char *p = d + payload;
	return p[0] == 'G' && p[1] == 'E' && p[2] == 'T' && p[3] == ' ';
}
