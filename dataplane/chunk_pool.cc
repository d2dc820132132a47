#include "dataplane/chunk_pool.hh"

#include <rte_errno.h>
#include <rte_mempool.h>

#include <cstring>

#include "storage/chunk.hh"

namespace linecap::dataplane {

namespace {

Error pool_error(const std::string& what, unsigned count, unsigned chunk_kb, int err) {
    return make_error("chunk pool (" + std::to_string(count) + " x " + std::to_string(chunk_kb) +
                      " KiB): " + what + ": " + rte_strerror(err));
}

void touch_chunk(rte_mempool* mp, void*, void* obj, unsigned) { std::memset(obj, 0, mp->elt_size); }

}  // namespace

Result<ChunkPool> make_chunk_pool(const std::string& name, unsigned count, unsigned chunk_kb,
                                  int socket) {
    size_t elt = sizeof(storage::Chunk) + size_t(chunk_kb) * 1024;
    ChunkPool cp;
    cp.pool = rte_mempool_create_empty(name.c_str(), count, static_cast<unsigned>(elt), 0, 0,
                                       socket, RTE_MEMPOOL_F_NO_IOVA_CONTIG);
    if (!cp.pool) return pool_error("create", count, chunk_kb, rte_errno);
    // The stack driver is a plugin EAL loads from its driver directory;
    // when it is missing, the default ring is used (see the header).
    cp.lifo = rte_mempool_set_ops_byname(cp.pool, "stack", nullptr) == 0;
    if (!cp.lifo) {
        int rc = rte_mempool_set_ops_byname(cp.pool, "ring_mp_mc", nullptr);
        if (rc != 0) {
            rte_mempool_free(cp.pool);
            return pool_error("no mempool driver", count, chunk_kb, -rc);
        }
    }
    int n = rte_mempool_populate_default(cp.pool);
    if (n < 0 || static_cast<unsigned>(n) != count) {
        int err = n < 0 ? -n : ENOMEM;
        rte_mempool_free(cp.pool);
        return pool_error("populate", count, chunk_kb, err);
    }
    if (!cp.lifo) rte_mempool_obj_iter(cp.pool, touch_chunk, nullptr);
    return cp;
}

}  // namespace linecap::dataplane
