/* The chunk pool: the 1 MiB buffers workers fill with records and writers
 * empty (storage/chunk.hh says who owns a chunk when).
 *
 * Cold side (control thread): make_chunk_pool() creates the pool once at
 * start-up; the pipeline frees it after every worker and writer has stopped.
 *
 * The pool hands chunks out last-in-first-out (DPDK's "stack" mempool
 * driver): the chunk a writer just returned is the next one a worker takes,
 * so a capture that keeps k chunks in flight touches about k chunks, warm in
 * the cache and in the TLB, however many bytes it writes. A first-in-first-out
 * ring (rte_mempool's default) would walk the whole pool in turn and, without
 * hugepages, make every page of it resident (VmRSS counts EAL's memfd).
 * If the stack driver cannot be loaded, the pool falls back to the default
 * ring and touches every chunk once at creation, so the resident size is
 * reached at start and stays flat; `lifo` in the result says which.
 *
 * Hot side: workers rte_mempool_get() one chunk at a time, writers
 * rte_mempool_put_bulk() what they wrote; both lock-free per call except the
 * stack driver's short spinlock, taken once per 1 MiB chunk.
 */
#pragma once

#include <cstddef>
#include <string>

#include "common/result.hh"

struct rte_mempool;

namespace linecap::dataplane {

struct ChunkPool {
    rte_mempool* pool = nullptr;
    bool lifo = false;  // false: the FIFO fallback, touched at creation
};

/* Creates `count` chunks of `chunk_kb` KiB of record space each on `socket`.
 * Needs the EAL. The caller frees the pool with rte_mempool_free(). */
[[nodiscard]] Result<ChunkPool> make_chunk_pool(const std::string& name, unsigned count,
                                                unsigned chunk_kb, int socket);

}  // namespace linecap::dataplane
