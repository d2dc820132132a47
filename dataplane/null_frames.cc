/* null:SIZE,frames=FILE: real frames for the synthetic source. Cold code, run
 * once after the mbuf pool is created and before any port starts. */
#include <pcap/pcap.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "dataplane/source.hh"

namespace linecap::dataplane {
namespace {

struct FillState {
    const std::vector<std::vector<uint8_t>>* frames;
    uint32_t size;
    size_t next = 0;
};

void fill_one(rte_mempool*, void* arg, void* obj, unsigned) {
    auto& st = *static_cast<FillState*>(arg);
    auto* m = static_cast<rte_mbuf*>(obj);
    const std::vector<uint8_t>& f = (*st.frames)[st.next++ % st.frames->size()];
    uint32_t room = m->buf_len > RTE_PKTMBUF_HEADROOM ? m->buf_len - RTE_PKTMBUF_HEADROOM : 0;
    uint32_t len = std::min(st.size, room);
    auto* dst = static_cast<uint8_t*>(m->buf_addr) + RTE_PKTMBUF_HEADROOM;
    uint32_t take = std::min<uint32_t>(len, static_cast<uint32_t>(f.size()));
    std::memcpy(dst, f.data(), take);
    std::memset(dst + take, 0, len - take);
}

}  // namespace

Status fill_null_frames(const SourceSpec& spec, rte_mempool* pool) {
    if (spec.kind != SourceSpec::Kind::kNull || spec.arg.empty()) return {};
    char errbuf[PCAP_ERRBUF_SIZE];
    pcap_t* p = pcap_open_offline(spec.arg.c_str(), errbuf);
    if (!p) return make_error("source '" + spec.text + "': " + errbuf);
    std::vector<std::vector<uint8_t>> frames;
    bool ethernet = pcap_datalink(p) == DLT_EN10MB;
    pcap_pkthdr* h;
    const u_char* data;
    // A few thousand distinct frames are plenty: the pool holds more mbufs
    // than that, and the mempool caches mix their order anyway.
    while (ethernet && frames.size() < 65536 && pcap_next_ex(p, &h, &data) == 1)
        frames.emplace_back(data, data + h->caplen);
    pcap_close(p);
    if (!ethernet)
        return make_error("source '" + spec.text + "': frames= needs an Ethernet capture");
    if (frames.empty()) return make_error("source '" + spec.text + "': no frame in " + spec.arg);
    FillState st{&frames, spec.size};
    rte_mempool_obj_iter(pool, fill_one, &st);
    return {};
}

}  // namespace linecap::dataplane
