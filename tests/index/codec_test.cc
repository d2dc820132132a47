#include "index/codec.hh"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "index/builder.hh"
#include "index/capture_reader.hh"
#include "index/index_file.hh"

namespace linecap::index {
namespace {

const Codec kCodecs[] = {Codec::kZstd, Codec::kLz4, Codec::kGzip};

TEST(Codec, ParsesCodecsAndLevels) {
    EXPECT_EQ(parse_codec("zstd")->codec, Codec::kZstd);
    EXPECT_EQ(parse_codec("zstd")->level, 1);
    EXPECT_EQ(parse_codec("zstd:19")->level, 19);
    EXPECT_EQ(parse_codec("lz4")->codec, Codec::kLz4);
    EXPECT_EQ(parse_codec("gzip")->level, 6);
    EXPECT_EQ(parse_codec("gzip:1")->level, 1);
    EXPECT_EQ(parse_codec("none")->codec, Codec::kNone);
    for (const char* bad : {"xz", "zstd:0", "zstd:20", "zstd:", "zstd:x", "gzip:10", "lz4:1", "",
                            "ZSTD", "zstd:1:2", "none:1"}) {
        auto r = parse_codec(bad);
        EXPECT_FALSE(r.ok()) << bad;
        if (!r.ok()) {
            EXPECT_EQ(r.error().find('\n'), std::string::npos) << bad;
        }
    }
}

/* Bytes that compress somewhat, like packets: repeated headers, varied
 * payload. */
std::string sample(size_t n, uint32_t seed) {
    std::string s(n, '\0');
    uint32_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        s[i] = (i % 64 < 40) ? char(i % 64) : char(x >> 24);
    }
    return s;
}

TEST(Codec, EachBlockIsOneFrameThatDecompressesAlone) {
    for (Codec c : kCodecs) {
        SCOPED_TRACE(codec_name(c));
        BlockCompressor comp({c, c == Codec::kLz4 ? 0 : 1});
        ASSERT_TRUE(comp.ok());
        BlockDecompressor dec(c);
        std::string file;
        std::vector<std::pair<size_t, size_t>> frames;
        std::vector<std::string> blocks;
        for (uint32_t i = 0; i < 5; i++) {
            std::string b = sample(1000 + i * 70000, i);
            std::vector<uint8_t> out(comp.bound(b.size()));
            size_t z = comp.compress(b.data(), b.size(), out.data(), out.size());
            ASSERT_GT(z, 0u);
            EXPECT_EQ(sniff_codec(out.data(), z), c);
            frames.push_back({file.size(), z});
            file.append(reinterpret_cast<char*>(out.data()), z);
            blocks.push_back(b);
        }
        // Any block alone, in any order.
        for (int i = 4; i >= 0; i--) {
            std::vector<uint8_t> got(blocks[i].size());
            auto r = dec.decompress(file.data() + frames[i].first, frames[i].second, got.data(),
                                    got.size());
            ASSERT_TRUE(r.ok()) << r.error();
            EXPECT_EQ(*r, blocks[i].size());
            EXPECT_EQ(std::memcmp(got.data(), blocks[i].data(), got.size()), 0);
            // Cut short: an error, never a short block.
            auto cut = dec.decompress(file.data() + frames[i].first, frames[i].second - 1,
                                      got.data(), got.size());
            EXPECT_FALSE(cut.ok());
        }
        // The whole file as one stream, as zstdcat, lz4cat and zcat read it.
        char t[] = "/tmp/linecap-codec-XXXXXX";
        int fd = mkstemp(t);
        ASSERT_GE(fd, 0);
        unlink(t);
        ASSERT_EQ(write(fd, file.data(), file.size()), ssize_t(file.size()));
        std::string all;
        ASSERT_TRUE(decompress_stream(fd, c, [&](const uint8_t* p, size_t n) {
                        all.append(reinterpret_cast<const char*>(p), n);
                        return true;
                    }).ok());
        std::string want;
        for (auto& b : blocks) want += b;
        EXPECT_EQ(all, want);
        // Cut in the middle of the last frame: the earlier frames whole.
        ASSERT_EQ(ftruncate(fd, off_t(frames[4].first + frames[4].second / 2)), 0);
        all.clear();
        bool cut = false;
        (void)decompress_stream(
            fd, c,
            [&](const uint8_t* p, size_t n) {
                all.append(reinterpret_cast<const char*>(p), n);
                return true;
            },
            &cut);
        EXPECT_GE(all.size(), want.size() - blocks[4].size());
        EXPECT_EQ(
            all.compare(0, want.size() - blocks[4].size(), want, 0, want.size() - blocks[4].size()),
            0);
        close(fd);
    }
}

/* list_frames(): every whole frame, where it lies in the file and in the
 * stream, including one whose output is larger than the decoder's buffer;
 * a frame cut short at the end is not listed. */
TEST(Codec, ListFramesFindsEachWholeFrame) {
    for (Codec c : kCodecs) {
        SCOPED_TRACE(codec_name(c));
        BlockCompressor comp({c, c == Codec::kLz4 ? 0 : 1});
        ASSERT_TRUE(comp.ok());
        std::string file;
        std::vector<FrameExtent> want;
        uint64_t raw = 0;
        const size_t sizes[] = {24, 70000, 3u << 20, 1, 150000};
        for (size_t i = 0; i < std::size(sizes); i++) {
            // The large one compresses to little and decompresses to more
            // than the decoder's output buffer: several calls per frame.
            std::string b =
                sizes[i] > (1u << 20) ? std::string(sizes[i], 'x') : sample(sizes[i], uint32_t(i));
            std::vector<uint8_t> out(comp.bound(b.size()));
            size_t z = comp.compress(b.data(), b.size(), out.data(), out.size());
            ASSERT_GT(z, 0u);
            want.push_back(FrameExtent{file.size(), z, raw, b.size()});
            file.append(reinterpret_cast<char*>(out.data()), z);
            raw += b.size();
        }
        char t[] = "/tmp/linecap-frames-XXXXXX";
        int fd = mkstemp(t);
        ASSERT_GE(fd, 0);
        unlink(t);
        ASSERT_EQ(write(fd, file.data(), file.size()), ssize_t(file.size()));
        std::vector<FrameExtent> got;
        bool cut = true;
        ASSERT_TRUE(list_frames(fd, c, got, &cut).ok());
        EXPECT_FALSE(cut);
        ASSERT_EQ(got.size(), want.size());
        for (size_t i = 0; i < got.size(); i++) {
            SCOPED_TRACE(i);
            EXPECT_EQ(got[i].offset, want[i].offset);
            EXPECT_EQ(got[i].bytes, want[i].bytes);
            EXPECT_EQ(got[i].raw_offset, want[i].raw_offset);
            EXPECT_EQ(got[i].raw_bytes, want[i].raw_bytes);
        }
        // Cut in the last frame: the others, and the cut said.
        ASSERT_EQ(ftruncate(fd, off_t(want.back().offset + want.back().bytes / 2)), 0);
        ASSERT_TRUE(list_frames(fd, c, got, &cut).ok());
        EXPECT_TRUE(cut);
        ASSERT_EQ(got.size(), want.size() - 1);
        EXPECT_EQ(got.back().offset + got.back().bytes, want.back().offset);
        close(fd);
    }
}

/* A pcap record: 16-byte header, then the frame. */
void add_record(std::string& s, uint32_t sec, uint32_t n) {
    uint8_t frame[60] = {};
    std::memset(frame, 0x02, 12);
    frame[12] = 0x08;
    frame[14] = 0x45;
    frame[22] = 64;
    frame[23] = 17;
    frame[26] = 198;
    frame[27] = 18;
    frame[28] = uint8_t(n >> 8);
    frame[29] = uint8_t(n);
    frame[30] = 198;
    frame[31] = 19;
    uint32_t h[4] = {sec, 0, 60, 60};
    s.append(reinterpret_cast<char*>(h), 16);
    s.append(reinterpret_cast<char*>(frame), 60);
}

/* What capd writes: the header a frame, each block a frame, the index
 * (version 2) saying where; the reader decompresses only the blocks. */
TEST(Codec, IndexPointsIntoTheFramesAndTheReaderReadsThem) {
    for (Codec c : kCodecs) {
        SCOPED_TRACE(codec_name(c));
        BlockCompressor comp({c, c == Codec::kLz4 ? 0 : 1});
        std::string hdr(24, '\0');
        uint32_t h32[6] = {0xa1b2c3d4, 0x00040002, 0, 0, 262144, 1};
        std::memcpy(hdr.data(), h32, 24);
        IndexBuilder b(1u << 30);
        uint16_t lt = 1;
        b.begin(CaptureFormat::kPcapMicro, std::span<const uint16_t>(&lt, 1), 24);
        b.set_codec(c);
        std::string file;
        std::vector<uint8_t> out(comp.bound(1 << 20));
        auto frame = [&](const std::string& raw) {
            size_t z = comp.compress(raw.data(), raw.size(), out.data(), out.size());
            file.append(reinterpret_cast<char*>(out.data()), z);
            return z;
        };
        frame(hdr);
        uint64_t stream = 24;
        uint32_t n = 0;
        for (int blk = 0; blk < 4; blk++) {
            std::string raw;
            for (int k = 0; k < 100 + blk; k++) add_record(raw, 1000 + blk, n++);
            b.add_records(reinterpret_cast<const uint8_t*>(raw.data()), raw.size(), stream);
            stream += raw.size();
            uint64_t at = file.size();
            size_t z = frame(raw);
            b.end_block(at, uint32_t(z));
        }
        std::string live = b.serialize_live(file.size() - 1);  // the last frame not yet whole
        std::string bytes = b.serialize(file.size());
        auto idx = Index::from_bytes(bytes, file.size());
        ASSERT_TRUE(idx.ok()) << idx.error();
        EXPECT_EQ(idx->header().version, 4u);  // compressed flow groups
        EXPECT_EQ(idx->codec(), c);
        ASSERT_EQ(idx->blocks().size(), 4u);
        ASSERT_EQ(idx->stored().size(), 4u);
        auto lidx = Index::from_bytes(live, file.size());
        ASSERT_TRUE(lidx.ok()) << lidx.error();
        EXPECT_EQ(lidx->blocks().size(), 3u);
        EXPECT_EQ(lidx->header().capture_bytes, idx->stored()[2].offset + idx->stored()[2].bytes);

        char t[] = "/tmp/linecap-codec-XXXXXX";
        int fd = mkstemp(t);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(write(fd, file.data(), file.size()), ssize_t(file.size()));
        close(fd);
        auto rd = CaptureReader::open(t);
        ASSERT_TRUE(rd.ok()) << rd.error();
        EXPECT_EQ(rd->codec(), c);
        EXPECT_EQ(rd->info().data_start, 24u);
        ASSERT_TRUE(rd->use_index(*idx));
        // Block 2 alone: its records, in order.
        const BlockEntry& e = idx->blocks()[2];
        std::vector<uint32_t> seen;
        auto r = rd->for_each(e.offset, e.offset + e.bytes, [&](const Record& rec) {
            seen.push_back(uint32_t(rec.data[28]) << 8 | rec.data[29]);
            EXPECT_EQ(rec.ts_ns, 1002ull * 1000000000ull);
            return true;
        });
        ASSERT_TRUE(r.ok()) << r.error();
        ASSERT_EQ(seen.size(), 102u);
        EXPECT_EQ(seen[0], 201u);
        // Without the index: the whole stream.
        auto rd2 = CaptureReader::open(t);
        ASSERT_TRUE(rd2.ok());
        size_t count = 0;
        ASSERT_TRUE(rd2->for_each(24, ~0ull,
                                  [&](const Record&) {
                                      count++;
                                      return true;
                                  })
                        .ok());
        EXPECT_EQ(count, size_t(n));
        unlink(t);
    }
}

/* capq --max-inflate: a compressed file read without its index may
 * decompress to at most the limit (EFBIG past it, with a line naming the
 * option); with none given (0), a quarter of physical memory, which a
 * small file stays far under. */
TEST(Codec, TheInflateLimitHoldsAndDefaultsToAQuarterOfMemory) {
    BlockCompressor comp({Codec::kGzip, 1});
    std::string hdr(24, '\0');
    uint32_t h32[6] = {0xa1b2c3d4, 0x00040002, 0, 0, 262144, 1};
    std::memcpy(hdr.data(), h32, 24);
    std::string raw;
    // 2.3 MB: past the first piece of the stream (up to 1 MiB), which
    // opening holds.
    for (uint32_t n = 0; n < 30000; n++) add_record(raw, 1000, n);
    std::string file;
    std::vector<uint8_t> out(comp.bound(raw.size()));
    for (const std::string* part : {&hdr, &raw}) {
        size_t z = comp.compress(part->data(), part->size(), out.data(), out.size());
        ASSERT_GT(z, 0u);
        file.append(reinterpret_cast<char*>(out.data()), z);
    }
    char t[] = "/tmp/linecap-codec-XXXXXX";
    int fd = mkstemp(t);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, file.data(), file.size()), ssize_t(file.size()));
    close(fd);
    auto records = [&](std::string* error) {
        auto rd = CaptureReader::open(t);
        if (!rd.ok()) return size_t(0);
        size_t count = 0;
        auto r = rd->for_each(24, ~0ull, [&](const Record&) {
            count++;
            return true;
        });
        if (!r.ok()) *error = r.error();
        return count;
    };
    std::string error;
    CaptureReader::set_inflate_limit(3 << 19);
    EXPECT_EQ(CaptureReader::inflate_limit(), 3u << 19);
    EXPECT_LT(records(&error), 30000u);
    EXPECT_NE(error.find("--max-inflate"), std::string::npos) << error;
    CaptureReader::set_inflate_limit(0);
    const uint64_t quarter =
        uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE)) / 4;
    EXPECT_EQ(CaptureReader::inflate_limit(), quarter);
    error.clear();
    EXPECT_EQ(records(&error), 30000u);
    EXPECT_EQ(error, "");
    unlink(t);
}

/* Blocks cut before their frames are made (capd --compress-threads): the
 * index of blocks whose frames are known is the one end_block() gives;
 * a block still waiting for its frame is in no live index, and a write
 * failure drops it with every block after it. */
TEST(Codec, BlocksCutBeforeTheirFrames) {
    uint16_t lt = 1;
    auto fill = [&](IndexBuilder& b, int blk, uint32_t& n, uint64_t& stream) {
        std::string raw;
        for (int k = 0; k < 10 + blk; k++) add_record(raw, 1000 + blk, n++);
        b.add_records(reinterpret_cast<const uint8_t*>(raw.data()), raw.size(), stream);
        stream += raw.size();
    };
    const uint64_t frame_at[4] = {30, 130, 260, 400};  // made-up frames, 100 + 10 k bytes
    IndexBuilder at_once(1u << 30), later(1u << 30);
    for (IndexBuilder* b : {&at_once, &later}) {
        b->begin(CaptureFormat::kPcapMicro, std::span<const uint16_t>(&lt, 1), 24);
        b->set_codec(Codec::kLz4);
    }
    uint32_t n1 = 0, n2 = 0;
    uint64_t s1 = 24, s2 = 24;
    for (int blk = 0; blk < 4; blk++) {
        fill(at_once, blk, n1, s1);
        at_once.end_block(frame_at[blk], 100 + 10 * blk);
    }
    // All four cut first, then their frames in order, the live index
    // growing with each frame only.
    for (int blk = 0; blk < 4; blk++) {
        fill(later, blk, n2, s2);
        later.cut_block();
    }
    for (int blk = 0; blk < 4; blk++) {
        auto live = Index::from_bytes(later.serialize_live(1000), 1000);
        ASSERT_TRUE(live.ok()) << live.error();
        EXPECT_EQ(live->blocks().size(), size_t(blk));
        EXPECT_EQ(later.stored_end(1000),
                  blk ? live->blocks().back().offset + live->blocks().back().bytes : 24u);
        later.store_block(frame_at[blk], 100 + 10 * blk);
    }
    EXPECT_EQ(later.serialize(430), at_once.serialize(430));

    // A failure with two blocks waiting: truncate_stored() keeps the two
    // whose frames are on the disk and drops the rest.
    IndexBuilder cut(1u << 30);
    cut.begin(CaptureFormat::kPcapMicro, std::span<const uint16_t>(&lt, 1), 24);
    cut.set_codec(Codec::kLz4);
    uint32_t n3 = 0;
    uint64_t s3 = 24;
    for (int blk = 0; blk < 4; blk++) {
        fill(cut, blk, n3, s3);
        cut.cut_block();
    }
    fill(cut, 4, n3, s3);  // a fifth block being filled
    cut.store_block(frame_at[0], 100);
    cut.store_block(frame_at[1], 110);
    cut.truncate_stored(frame_at[1] + 110);
    auto idx = Index::from_bytes(cut.serialize(frame_at[1] + 110), frame_at[1] + 110);
    ASSERT_TRUE(idx.ok()) << idx.error();
    ASSERT_EQ(idx->blocks().size(), 2u);
    ASSERT_EQ(idx->stored().size(), 2u);
    EXPECT_EQ(idx->header().packets, 10u + 11u);
    EXPECT_EQ(cut.end(), idx->blocks()[1].offset + idx->blocks()[1].bytes);
}

/* An uncompressed capture's index with plain flows stays version 1, and a
 * compressed one's version 2 (capq --index-version 1). */
TEST(Codec, UncompressedIndexStaysVersionOne) {
    IndexBuilder b;
    b.set_compact_flows(false);
    uint16_t lt = 1;
    b.begin(CaptureFormat::kPcapMicro, std::span<const uint16_t>(&lt, 1), 24);
    std::string raw;
    for (uint32_t i = 0; i < 10; i++) add_record(raw, 5, i);
    b.add_records(reinterpret_cast<const uint8_t*>(raw.data()), raw.size(), 24);
    auto idx = Index::from_bytes(b.serialize(24 + raw.size()), 24 + raw.size());
    ASSERT_TRUE(idx.ok()) << idx.error();
    EXPECT_EQ(idx->header().version, 1u);
    EXPECT_EQ(idx->codec(), Codec::kNone);
    EXPECT_TRUE(idx->stored().empty());
    b.set_codec(Codec::kZstd);
    b.end_block(24, 10);
    auto z = Index::from_bytes(b.serialize(24 + 10), 24 + 10);
    ASSERT_TRUE(z.ok()) << z.error();
    EXPECT_EQ(z->header().version, 2u);
}

}  // namespace
}  // namespace linecap::index
