/* EbpfVm, run side: rte_bpf's interpreter, and the JIT's code over a burst.
 * Workers; never allocates, locks or makes a syscall (ebpf_vm.hh). The native
 * entry point itself is called inline from ebpf_vm.hh. */
#include <rte_bpf.h>

#include "filters/ebpf_vm.hh"

namespace linecap::filters {

uint64_t EbpfVm::run_interpreted_ctx(void* ctx) const noexcept { return rte_bpf_exec(bpf_, ctx); }

void EbpfVm::run_burst(const Packet* pkts, uint32_t n, uint64_t* rc) const noexcept {
    if (jit_ != nullptr) {
        for (uint32_t i = 0; i < n; i++) rc[i] = jit_(const_cast<Packet*>(&pkts[i]));
        return;
    }
    for (uint32_t i = 0; i < n; i++) rc[i] = rte_bpf_exec(bpf_, const_cast<Packet*>(&pkts[i]));
}

}  // namespace linecap::filters
