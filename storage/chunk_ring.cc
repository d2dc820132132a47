#include "storage/chunk_ring.hh"

#include <rte_errno.h>

namespace linecap::storage {

Result<std::unique_ptr<ChunkRing>> ChunkRing::create(const std::string& name, unsigned count,
                                                     int socket) {
    rte_ring* r = rte_ring_create(name.c_str(), count, socket,
                                  RING_F_SP_ENQ | RING_F_SC_DEQ | RING_F_EXACT_SZ);
    if (!r) return make_error("ring " + name + ": " + rte_strerror(rte_errno));
    return std::unique_ptr<ChunkRing>(new ChunkRing(r));
}

ChunkRing::~ChunkRing() { rte_ring_free(ring_); }

}  // namespace linecap::storage
