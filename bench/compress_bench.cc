/* compress_bench: what capd's writer core does with --compress, alone:
 * the record bytes of a pcap file cut into blocks of whole records of
 * --block bytes, each compressed as one frame (index/codec.hh), on one
 * core. Prints one JSON object per codec: input GB/s, ratio, and the
 * time to decompress one block (what capq pays per block it reads).
 *
 *   compress_bench [--block BYTES] [--seconds S] [--codecs zstd:1,lz4,gzip:6]
 *                  [--threads N] [--dump-records FILE] PCAP...
 *
 * --threads N: the compression on N threads at once, each with its own
 * contexts, thread k taking blocks k, k + N, ... of the same blocks (what
 * capd's --compress-threads helpers do for one writer); gb_per_s is then
 * the input all of them compressed per second together.
 *
 * --dump-records writes the record bytes measured (every file's records,
 * back to back) so that bench/compress_bench.py can time the codecs'
 * command-line tools on the same bytes. Best of 3 runs of at least
 * --seconds each (default 1).
 */
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "index/codec.hh"

using namespace linecap::index;

namespace {

double now_s() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

/* The records of a pcap file (after its 24-byte header), and where each
 * starts. pcapng is not read here. */
bool read_records(const char* path, std::string& out, std::vector<size_t>& starts) {
    FILE* f = std::fopen(path, "rb");
    if (!f) return false;
    std::string b;
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) b.append(buf, n);
    std::fclose(f);
    if (b.size() < 24) return false;
    uint32_t magic;
    std::memcpy(&magic, b.data(), 4);
    if (magic != 0xa1b2c3d4 && magic != 0xa1b23c4d) return false;  // native order only
    size_t at = 24;
    while (at + 16 <= b.size()) {
        uint32_t caplen;
        std::memcpy(&caplen, b.data() + at + 8, 4);
        if (at + 16 + caplen > b.size()) break;
        starts.push_back(out.size());
        out.append(b, at, 16 + caplen);
        at += 16 + caplen;
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    size_t block = 256 << 10;
    double seconds = 1.0;
    std::string codecs = "lz4,zstd:1,zstd:3,gzip:1,gzip:6";
    const char* dump = nullptr;
    unsigned threads = 1;
    std::vector<const char*> files;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--block" && i + 1 < argc)
            block = std::strtoull(argv[++i], nullptr, 0);
        else if (a == "--seconds" && i + 1 < argc)
            seconds = std::atof(argv[++i]);
        else if (a == "--codecs" && i + 1 < argc)
            codecs = argv[++i];
        else if (a == "--threads" && i + 1 < argc)
            threads = std::max(1, std::atoi(argv[++i]));
        else if (a == "--dump-records" && i + 1 < argc)
            dump = argv[++i];
        else
            files.push_back(argv[i]);
    }
    std::string recs;
    std::vector<size_t> starts;
    for (const char* f : files)
        if (!read_records(f, recs, starts)) {
            std::fprintf(stderr, "compress_bench: %s: not a native-order pcap file\n", f);
            return 1;
        }
    if (recs.empty()) {
        std::fprintf(stderr, "compress_bench: no records\n");
        return 1;
    }
    if (dump) {
        FILE* o = std::fopen(dump, "wb");
        if (!o || std::fwrite(recs.data(), 1, recs.size(), o) != recs.size()) return 1;
        std::fclose(o);
    }
    // Blocks of whole records, as the writer cuts them.
    std::vector<std::pair<size_t, size_t>> blocks;
    size_t from = 0;
    for (size_t s : starts) {
        if (s - from >= block) {
            blocks.push_back({from, s - from});
            from = s;
        }
    }
    blocks.push_back({from, recs.size() - from});
    size_t pos = 0;
    while (pos < codecs.size()) {
        size_t comma = codecs.find(',', pos);
        std::string name =
            codecs.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        pos = comma == std::string::npos ? codecs.size() : comma + 1;
        auto spec = parse_codec(name);
        if (!spec) {
            std::fprintf(stderr, "compress_bench: %s\n", spec.error().c_str());
            return 1;
        }
        BlockCompressor comp(*spec);
        std::vector<uint8_t> out(comp.bound(block + (1 << 20)) + (1 << 20));
        double best = 0;
        uint64_t zbytes = 0;
        if (threads > 1) {
            // Each thread its own contexts and output, blocks k, k + N, ...
            std::vector<std::unique_ptr<BlockCompressor>> comps;
            std::vector<std::vector<uint8_t>> outs(threads, out);
            for (unsigned k = 0; k < threads; k++)
                comps.push_back(std::make_unique<BlockCompressor>(*spec));
            for (int run = 0; run < 3; run++) {
                std::vector<uint64_t> in(threads, 0);
                std::vector<double> took(threads, 0);
                std::vector<std::thread> ts;
                for (unsigned k = 0; k < threads; k++)
                    ts.emplace_back([&, k] {
                        double t0 = now_s(), t = t0;
                        do {
                            for (size_t b = k; b < blocks.size(); b += threads) {
                                auto [off, len] = blocks[b];
                                if (comps[k]->compress(recs.data() + off, len, outs[k].data(),
                                                       outs[k].size()) == 0)
                                    std::abort();
                                in[k] += len;
                            }
                            t = now_s();
                        } while (t - t0 < seconds);
                        took[k] = t - t0;
                    });
                double total = 0, longest = 0;
                for (unsigned k = 0; k < threads; k++) {
                    ts[k].join();
                    total += double(in[k]);
                    longest = std::max(longest, took[k]);
                }
                best = std::max(best, total / longest);
            }
        }
        for (int run = 0; run < 3 && threads == 1; run++) {
            double t0 = now_s(), t = t0;
            uint64_t in = 0;
            do {
                zbytes = 0;
                for (auto [off, len] : blocks) {
                    size_t z = comp.compress(recs.data() + off, len, out.data(), out.size());
                    if (z == 0) return 1;
                    zbytes += z;
                    in += len;
                }
                t = now_s();
            } while (t - t0 < seconds);
            best = std::max(best, double(in) / (t - t0));
        }
        // What capq pays per block it needs: one frame decompressed (from
        // memory; the disk read is the frame's size on top). Every block
        // once, in order, best of 3 passes; the mean per block.
        std::vector<std::pair<size_t, size_t>> frames;  // (offset in zall, bytes)
        std::vector<uint8_t> zall;
        for (auto [off, len] : blocks) {
            size_t z = comp.compress(recs.data() + off, len, out.data(), out.size());
            if (z == 0) return 1;
            frames.push_back({zall.size(), z});
            zall.insert(zall.end(), out.begin(), out.begin() + ptrdiff_t(z));
        }
        zbytes = zall.size();  // one pass's frames, also with --threads
        BlockDecompressor dec(spec->codec);
        double best_read = 1e9;
        for (int run = 0; run < 3; run++) {
            double t0 = now_s();
            for (size_t b = 0; b < blocks.size(); b++) {
                auto made = dec.decompress(zall.data() + frames[b].first, frames[b].second,
                                           out.data(), out.size());
                if (!made || *made != blocks[b].second) return 1;
            }
            best_read = std::min(best_read, (now_s() - t0) / double(blocks.size()));
        }
        std::printf(
            "{\"codec\": \"%s\", \"threads\": %u, \"block\": %zu, \"in_bytes\": %zu, "
            "\"out_bytes\": %llu, "
            "\"ratio\": %.3f, \"gb_per_s\": %.3f, \"packets\": %zu, \"blocks\": %zu, "
            "\"read_block_us\": %.1f}\n",
            name.c_str(), threads, block, recs.size(), (unsigned long long)zbytes,
            double(recs.size()) / double(zbytes), best / 1e9, starts.size(), blocks.size(),
            best_read * 1e6);
    }
    return 0;
}
