#!/usr/bin/env python3
"""The run side of filters/ (filters/meson.build: filters_run_sources) calls
neither an allocator nor a compiler.

Workers run these objects on every packet: they must never allocate, and
nothing in them may reach libpcap's, Hyperscan's or rte_bpf's compilers,
which belong to the control thread (DESIGN.md "Filters"). This reads the
undefined symbols of the run-side archive with nm and fails naming the
object and the symbol when one of them is on the list below.

usage: check_run_side.py ARCHIVE [ARCHIVE...]
"""
import re
import subprocess
import sys

# Allocation (C and C++), and the compile-time entry points of libpcap,
# Hyperscan, rte_bpf, libbpf and the process calls of the compiling child.
FORBIDDEN = [
    r"malloc", r"calloc", r"realloc", r"posix_memalign", r"aligned_alloc",
    r"_Znwm.*", r"_Znam.*", r"_ZnwmSt11align_val_t.*",
    r"pcap_compile", r"pcap_open_dead", r"pcap_geterr",
    r"hs_compile.*", r"hs_expression_info", r"hs_alloc_scratch", r"hs_clone_scratch",
    r"hs_deserialize_database", r"hs_serialize_database",
    r"rte_bpf_load", r"rte_bpf_get_jit", r"rte_bpf_elf_load",
    r"bpf_object__.*", r"elf_.*",
    r"fork", r"pipe2?", r"waitpid", r"kill",
    r"pthread_mutex_lock", r"fprintf", r"printf", r"puts", r"write",
]
PATTERN = re.compile(r"^(?:%s)$" % "|".join(FORBIDDEN))


def undefined(archive):
    out = subprocess.run(["nm", "--undefined-only", archive], check=True,
                         capture_output=True, text=True).stdout
    member = None
    for line in out.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.endswith(":"):
            member = line[:-1]
            continue
        sym = line.split()[-1].split("@")[0]
        yield member, sym


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    bad = []
    for archive in argv[1:]:
        for member, sym in undefined(archive):
            if PATTERN.match(sym):
                bad.append(f"{archive}({member}): {sym}")
    for b in bad:
        print("run side calls " + b, file=sys.stderr)
    if bad:
        return 1
    print("run side: no allocator or compiler among the undefined symbols of",
          ", ".join(argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
