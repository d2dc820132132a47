/* pcap:FILE sources: capture files read with libpcap at nanosecond precision.
 *
 * net_pcap would truncate timestamps to microseconds and lose the original
 * length of snaplen-cut frames, so capd reads the file itself and carries both
 * in mbuf dynamic fields. ,loop replays the file forever, shifting timestamps
 * by the file's span each round so time keeps moving forward.
 */
#include <pcap/pcap.h>
#include <rte_errno.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "dataplane/source.hh"

namespace linecap::dataplane {
namespace {

/* libpcap hands out DLT_ values; files carry LINKTYPE_ values. They differ
 * for a few historical link types (libpcap's pcap-common.c keeps the map). */
int dlt_to_linktype(int dlt) {
    switch (dlt) {
        case DLT_ATM_RFC1483: return 100;
        case DLT_RAW: return 101;
        case DLT_SLIP_BSDOS: return 102;
        case DLT_PPP_BSDOS: return 103;
        case DLT_ATM_CLIP: return 106;
        default: return dlt;
    }
}

/* How the file stores time: classic pcap in micro- or nanoseconds (32-bit
 * unsigned fields), or pcapng (64-bit, any resolution). */
enum class FileClock { kClassicMicro, kClassicNano, kPcapng };

FileClock file_clock(const std::string& path) {
    uint32_t magic = 0;
    if (FILE* f = fopen(path.c_str(), "rbe")) {
        if (fread(&magic, 4, 1, f) != 1) magic = 0;
        fclose(f);
    }
    if (magic == 0xa1b23c4d || magic == 0x4d3cb2a1) return FileClock::kClassicNano;
    if (magic == 0xa1b2c3d4 || magic == 0xd4c3b2a1) return FileClock::kClassicMicro;
    return FileClock::kPcapng;
}

/* Classic pcap files are opened at their own precision, so libpcap passes
 * the 32-bit fields through unscaled (scaling overflows on out-of-range
 * fractions found in damaged files); capd converts them itself. */
Result<pcap_t*> open_nano(const std::string& path, FileClock* clock = nullptr) {
    char errbuf[PCAP_ERRBUF_SIZE] = "";
    FileClock c = file_clock(path);
    if (clock) *clock = c;
    int precision =
        c == FileClock::kClassicMicro ? PCAP_TSTAMP_PRECISION_MICRO : PCAP_TSTAMP_PRECISION_NANO;
    pcap_t* p = pcap_open_offline_with_tstamp_precision(path.c_str(), precision, errbuf);
    if (!p) return make_error(errbuf);
    return p;
}

/* Where a pcapng file stops being well formed, looking from `from` (the end
 * of the last record libpcap returned): the offset of the first block whose
 * header is cut short or whose length is impossible. libpcap reads the
 * interface and other blocks between records itself and says only what was
 * wrong, not where. Returns `from` when the walk finds nothing wrong. */
long pcapng_damage_offset(const std::string& path, long from) {
    FILE* f = fopen(path.c_str(), "rbe");
    if (!f) return from;
    uint8_t shb[12];
    bool swapped = false;
    if (fread(shb, sizeof(shb), 1, f) == 1) {
        uint32_t bom;
        std::memcpy(&bom, shb + 8, 4);
        swapped = bom == 0x4d3c2b1a;
    }
    auto u32 = [swapped](const uint8_t* b) {
        uint32_t v;
        std::memcpy(&v, b, 4);
        return swapped ? __builtin_bswap32(v) : v;
    };
    long at = from;
    // Bounded by the file: every step moves forward by at least 12 bytes.
    while (fseek(f, at, SEEK_SET) == 0) {
        uint8_t hdr[8];
        size_t got = fread(hdr, 1, sizeof(hdr), f);
        if (got == 0) break;  // clean end of file
        uint32_t len = got == sizeof(hdr) ? u32(hdr + 4) : 0;
        if (len < 12 || len % 4 != 0 || len > (16u << 20)) break;
        uint8_t trailer[4];
        if (fseek(f, at + long(len) - 4, SEEK_SET) != 0 || fread(trailer, 4, 1, f) != 1 ||
            u32(trailer) != len)
            break;
        at += long(len);
    }
    fclose(f);
    return at;
}

class PcapFileSource final : public Source {
public:
    PcapFileSource(const SourceSpec& spec, pcap_t* p, rte_mempool* pool, const MbufFields& f)
        : path_(spec.arg), loop_(spec.loop), p_(p), pool_(pool), fields_(f) {
        name_ = spec.text;
        linktype_ = static_cast<uint16_t>(dlt_to_linktype(pcap_datalink(p)));
        snaplen_ = static_cast<uint32_t>(pcap_snapshot(p));
        source_ts_ = true;
        // Past the file header (pcap) or the section header block (pcapng).
        if (FILE* f = pcap_file(p)) offset_ = ftell(f);
    }
    ~PcapFileSource() override {
        if (p_) pcap_close(p_);
    }

    uint16_t rx_burst(uint16_t, rte_mbuf** pkts, uint16_t n) override {
        uint16_t got = 0;
        if (pending_) {
            rte_mbuf* m = to_mbuf(&pending_hdr_, pending_buf_.data());
            if (!m) return 0;
            pending_ = false;
            pkts[got++] = m;
            read_.fetch_add(1, std::memory_order_relaxed);
        }
        while (got < n && !done_) {
            struct pcap_pkthdr* h;
            const u_char* data;
            int rc = pcap_next_ex(p_, &h, &data);
            if (rc == 1) {
                struct pcap_pkthdr cut;
                if (h->caplen > kMaxRecord) {
                    // Longer than the mbuf pool may hold: keep the first
                    // kMaxRecord bytes and the wire length, as -s would.
                    cut = *h;
                    cut.caplen = kMaxRecord;
                    h = &cut;
                    truncated_.fetch_add(1, std::memory_order_relaxed);
                }
                rte_mbuf* m = to_mbuf(h, data);
                if (!m) {
                    // No mbuf: keep a copy for the next call, never lose it.
                    pending_ = true;
                    pending_hdr_ = *h;
                    pending_buf_.assign(data, data + h->caplen);
                    break;
                }
                pkts[got++] = m;
                read_.fetch_add(1, std::memory_order_relaxed);
                offset_ = pcap_file(p_) ? ftell(pcap_file(p_)) : offset_;
            } else if (rc == PCAP_ERROR_BREAK) {
                if (!loop_ || read_in_round_ == 0) {
                    done_ = true;
                    break;
                }
                reopen();
            } else {
                if (clock_ == FileClock::kPcapng) offset_ = pcapng_damage_offset(path_, offset_);
                char msg[512];
                snprintf(msg, sizeof(msg), "%s: damaged after packet %llu (byte offset %ld): %s",
                         path_.c_str(), static_cast<unsigned long long>(read_.load()), offset_,
                         pcap_geterr(p_));
                error_ = msg;
                done_ = true;
                break;
            }
        }
        return got;
    }

    bool finished(uint16_t) const override { return done_; }
    std::string error() const override { return done_ ? error_ : std::string(); }
    SourceCounters counters() const override {
        SourceCounters c;
        c.packets = read_.load(std::memory_order_relaxed);
        c.truncated = truncated_.load(std::memory_order_relaxed);
        // nombuf_ counts retries, not losses: a file source never drops.
        return c;
    }

private:
    rte_mbuf* to_mbuf(const struct pcap_pkthdr* h, const u_char* data) {
        rte_mbuf* head = rte_pktmbuf_alloc(pool_);
        if (!head) {
            nombuf_.fetch_add(1, std::memory_order_relaxed);
            return nullptr;
        }
        uint32_t left = h->caplen;
        const u_char* src = data;
        rte_mbuf* seg = head;
        for (;;) {
            uint16_t room = rte_pktmbuf_tailroom(seg);
            uint16_t take = static_cast<uint16_t>(left < room ? left : room);
            std::memcpy(rte_pktmbuf_mtod(seg, uint8_t*), src, take);
            seg->data_len = take;
            head->pkt_len += take;
            left -= take;
            src += take;
            if (left == 0) break;
            rte_mbuf* next = rte_pktmbuf_alloc(pool_);
            if (!next || rte_pktmbuf_chain(head, next) != 0) {
                if (next) rte_pktmbuf_free(next);
                rte_pktmbuf_free(head);
                nombuf_.fetch_add(1, std::memory_order_relaxed);
                return nullptr;
            }
            seg = next;
        }
        // libpcap 1.10 sign-extends the 32-bit seconds of classic pcap; the
        // format's seconds are unsigned (times after 2038 are valid).
        // libpcap 1.10 sign-extends the 32-bit fields of classic pcap; the
        // format's fields are unsigned (times after 2038 are valid), and a
        // fraction out of range is carried as it is, as tcpdump -w does.
        uint64_t ts;
        if (clock_ == FileClock::kPcapng) {
            ts = static_cast<uint64_t>(h->ts.tv_sec) * 1000000000ull +
                 static_cast<uint64_t>(h->ts.tv_usec);  // ns here
        } else {
            uint64_t sec = static_cast<uint32_t>(h->ts.tv_sec);
            uint64_t frac = static_cast<uint32_t>(h->ts.tv_usec);
            ts = sec * 1000000000ull + (clock_ == FileClock::kClassicMicro ? frac * 1000 : frac);
        }
        if (read_in_round_ == 0 && round_ == 0) first_ts_ = ts;
        last_ts_ = ts;
        *RTE_MBUF_DYNFIELD(head, fields_.ts_offset, uint64_t*) = ts + shift_;
        head->ol_flags |= fields_.ts_flag;
        // Stored plus one, so that 0 means "not set": a wire length of 0
        // (seen in damaged or fuzzed captures) is carried as it is.
        *RTE_MBUF_DYNFIELD(head, fields_.wirelen_offset, uint32_t*) = h->len + 1;
        read_in_round_++;
        return head;
    }

    void reopen() {
        pcap_close(p_);
        p_ = nullptr;
        Result<pcap_t*> p = open_nano(path_, &clock_);
        if (!p) {
            error_ = path_ + ": reopening for loop: " + p.error();
            done_ = true;
            return;
        }
        p_ = *p;
        if (FILE* f = pcap_file(p_)) offset_ = ftell(f);
        round_++;
        shift_ += (last_ts_ - first_ts_) + 1000;
        read_in_round_ = 0;
    }

    std::string path_;
    FileClock clock_ = file_clock(path_);
    bool loop_;
    pcap_t* p_;
    rte_mempool* pool_;
    MbufFields fields_;
    bool done_ = false;
    bool pending_ = false;
    struct pcap_pkthdr pending_hdr_ {};
    std::vector<u_char> pending_buf_;
    std::string error_;
    long offset_ = 24;
    uint64_t round_ = 0, read_in_round_ = 0;
    uint64_t first_ts_ = 0, last_ts_ = 0, shift_ = 0;
    std::atomic<uint64_t> read_{0};
    std::atomic<uint64_t> nombuf_{0};
    std::atomic<uint64_t> truncated_{0};
};

}  // namespace

Result<int> probe_pcap_file(const std::string& path) {
    Result<pcap_t*> p = open_nano(path);
    if (!p) return make_error("pcap:" + path + ": " + p.error());
    int lt = pcap_datalink(*p);
    pcap_close(*p);
    return lt;
}

Result<std::unique_ptr<Source>> open_pcap_file_source(const SourceSpec& spec, rte_mempool* pool,
                                                      const MbufFields& fields) {
    Result<pcap_t*> p = open_nano(spec.arg);
    if (!p) return make_error("pcap:" + spec.arg + ": " + p.error());
    return std::unique_ptr<Source>(new PcapFileSource(spec, *p, pool, fields));
}

Result<MbufFields> MbufFields::register_fields() {
    MbufFields f;
    if (rte_mbuf_dyn_rx_timestamp_register(&f.ts_offset, &f.ts_flag) != 0)
        return make_error(std::string("mbuf timestamp field: ") + rte_strerror(rte_errno));
    static const struct rte_mbuf_dynfield wirelen_desc = {"linecap_dynfield_wirelen",
                                                          sizeof(uint32_t), alignof(uint32_t), 0};
    f.wirelen_offset = rte_mbuf_dynfield_register(&wirelen_desc);
    if (f.wirelen_offset < 0)
        return make_error(std::string("mbuf wire length field: ") + rte_strerror(rte_errno));
    return f;
}

}  // namespace linecap::dataplane
