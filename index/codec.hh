/* Codecs of compressed capture files (capd --compress, capq, the index).
 *
 * A compressed capture file is a standard stream of its codec: zstd
 * frames, lz4 frames or gzip members, back to back, that zstdcat, lz4cat
 * and zcat decompress as they are. capd cuts it into independent blocks:
 * the file header is one frame, each index block of whole records
 * (index/builder.hh) one more, a pcapng file's closing statistics one
 * more; the index (format version 2, index/index_file.hh) says where each
 * block's frame starts in the file and how long it is, so that a reader
 * decompresses only the blocks it needs.
 *
 * BlockCompressor and BlockDecompressor keep their codec contexts from
 * one block to the next: no allocation per block once made. Not
 * thread-safe; one per thread. Cost: the codec's (lz4 about 2 GB/s of
 * input per core, zstd level 1 about 0.5 GB/s; bench/compress_bench).
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/result.hh"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;
struct LZ4F_cctx_s;
struct LZ4F_dctx_s;
struct z_stream_s;

namespace linecap::index {

enum class Codec : uint32_t { kNone = 0, kZstd = 1, kLz4 = 2, kGzip = 3 };

struct CodecSpec {
    Codec codec = Codec::kNone;
    int level = 0;  // zstd 1..19 (default 1), gzip 1..9 (default 6); lz4: 0
};

/* "zstd", "zstd:LEVEL", "lz4", "gzip", "gzip:LEVEL" ("none": no codec).
 * The error is one line naming what is wrong, e.g. "unknown codec 'xz'
 * (zstd, lz4 or gzip)", "zstd level 30 is outside 1..19". */
Result<CodecSpec> parse_codec(const std::string& text);
/* "zstd", "lz4", "gzip", "none". */
const char* codec_name(Codec c);
/* The file name suffix: ".zst", ".lz4", ".gz", "". */
const char* codec_suffix(Codec c);
/* The codec whose magic the first bytes of a file carry (kNone: none). */
Codec sniff_codec(const uint8_t* p, size_t n);

class BlockCompressor {
public:
    explicit BlockCompressor(CodecSpec spec);
    ~BlockCompressor();
    BlockCompressor(const BlockCompressor&) = delete;
    BlockCompressor& operator=(const BlockCompressor&) = delete;

    /* Whether the contexts could be made. */
    bool ok() const { return ok_; }
    /* The largest frame n input bytes can take. */
    size_t bound(size_t n) const;
    /* src[0, n) as one whole frame (member) into dst (cap >= bound(n)):
     * the frame's size, or 0 on a codec error. */
    size_t compress(const void* src, size_t n, void* dst, size_t cap);

private:
    CodecSpec spec_;
    bool ok_ = false;
    ZSTD_CCtx_s* zc_ = nullptr;
    LZ4F_cctx_s* lc_ = nullptr;
    z_stream_s* gz_ = nullptr;
};

class BlockDecompressor {
public:
    explicit BlockDecompressor(Codec c);
    ~BlockDecompressor();
    BlockDecompressor(const BlockDecompressor&) = delete;
    BlockDecompressor& operator=(const BlockDecompressor&) = delete;

    /* One whole frame (member) src[0, n) into dst: its decompressed size;
     * an error when the frame is damaged, cut short or larger than cap. */
    Result<size_t> decompress(const void* src, size_t n, void* dst, size_t cap);

private:
    Codec codec_;
    ZSTD_DCtx_s* zd_ = nullptr;
    LZ4F_dctx_s* ld_ = nullptr;
    z_stream_s* gz_ = nullptr;
};

/* Decompresses the whole file fd holds (frames or members back to back,
 * read with pread from offset 0) into `sink`, in pieces, until it returns
 * false or the stream ends. A stream cut short ends at the last byte that
 * could be decompressed (*cut set to true); a damaged one is an error. */
Status decompress_stream(int fd, Codec c, const std::function<bool(const uint8_t*, size_t)>& sink,
                         bool* cut = nullptr, uint64_t* whole_end = nullptr,
                         const std::function<void(uint64_t, uint64_t)>& on_frame = {});
/* whole_end (when given): the file offset just past the last whole frame
 * (member) decompressed; where a file cut in a frame is cut back to.
 * on_frame (when given): called at the end of each whole frame with the
 * file offset and the stream offset just past it. */

/* One whole frame (member) of a compressed file: where it lies in the
 * file, and the bytes of the decompressed stream it holds. */
struct FrameExtent {
    uint64_t offset = 0;  // in the file
    uint64_t bytes = 0;
    uint64_t raw_offset = 0;  // in the decompressed stream
    uint64_t raw_bytes = 0;
};

/* The whole frames of the file fd holds, in order (decompress_stream()
 * into nothing: the cost of decompressing the file once, memory per
 * frame only). A frame cut short at the end is not listed (*cut set); a
 * damaged stream is an error. capq --reindex cuts its blocks at them. */
Status list_frames(int fd, Codec c, std::vector<FrameExtent>& frames, bool* cut = nullptr);

}  // namespace linecap::index
