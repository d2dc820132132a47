/* Mempool: the owner of an rte_mempool (the mbuf pool, the chunk pool).
 * rte_mempool_free() runs when it goes; whoever holds it must outlive every
 * port queue, worker and writer that takes from the pool. Control thread. */
#pragma once

#include <rte_mempool.h>

#include <memory>

namespace linecap::dataplane {

struct MempoolFree {
    void operator()(rte_mempool* mp) const { rte_mempool_free(mp); }
};
using Mempool = std::unique_ptr<rte_mempool, MempoolFree>;

}  // namespace linecap::dataplane
