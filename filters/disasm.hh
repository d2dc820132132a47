/* Text forms of eBPF programs, for `capd -d` and for error messages.
 * Control thread only; allocates. */
#pragma once

#include <bpf_def.h>

#include <span>
#include <string>

namespace linecap::filters {

/* One instruction, e.g. "ldxh r0, [r1+12]" or "jeq r0, #0x800, -> 7" (jump
 * targets are absolute instruction indexes, counted from 0). `index` is the
 * instruction's own position; a 16-byte lddw takes positions index and
 * index+1 and prints its full 64-bit value. */
std::string disassemble_one(std::span<const ebpf_insn> prog, size_t index);

/* The whole program, one "(NNN) insn" line per instruction, like
 * `tcpdump -d` does for classic BPF. */
std::string disassemble(std::span<const ebpf_insn> prog);

}  // namespace linecap::filters
