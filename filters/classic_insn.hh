/* ClassicInsn: one classic BPF instruction, layout-identical to libpcap's
 * struct bpf_insn (kept separate so that users do not pull in pcap, whose
 * struct bpf_insn clashes with linux/bpf.h, nor DPDK's headers). */
#pragma once

#include <cstdint>

namespace linecap::filters {

struct ClassicInsn {
    uint16_t code;
    uint8_t jt;
    uint8_t jf;
    uint32_t k;
};

}  // namespace linecap::filters
