/* Classic BPF, run side: libpcap's bpf_filter() for the programs the
 * translator cannot express in eBPF (they loop). Workers, per packet
 * (cbpf_to_ebpf.hh). */
#include <pcap/pcap.h>

#include "filters/cbpf_to_ebpf.hh"

namespace linecap::filters {

uint32_t classic_run(std::span<const ClassicInsn> prog, const uint8_t* data, uint32_t wirelen,
                     uint32_t caplen) {
    return bpf_filter(reinterpret_cast<const bpf_insn*>(prog.data()), data, wirelen, caplen);
}

}  // namespace linecap::filters
