/* CaptureReader: the records of a pcap or pcapng file, by file offset.
 *
 * capq reads the blocks the index selects, and --reindex whole files,
 * through this one reader: pcap in either byte order with micro- or
 * nanosecond timestamps, pcapng of either byte order (enhanced, simple and
 * obsolete packet blocks; interface descriptions with if_tsresol and
 * if_tsoffset; other blocks skipped). Timestamps come out in nanoseconds
 * since the epoch.
 *
 * A file cut short is read to its last whole record, as libpcap does: the
 * record or block cut short and anything after it are not returned, and
 * for_each() says where the whole records end. A record whose length fields
 * cannot be right (pcap: caplen above 256 MiB or above wirelen + 256 MiB;
 * pcapng: a block length that is not a multiple of 4, under 12 bytes, or
 * whose trailing copy differs) ends the file there too.
 *
 * Reads with pread() into one buffer of a few MiB (no mmap: the file may be
 * cut while it is read), so a range of blocks costs one read per buffer.
 * Not thread-safe; one reader per thread per file.
 */
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hh"
#include "index/index_file.hh"

namespace linecap::index {

struct CaptureInterface {
    uint16_t linktype = 1;
    uint32_t snaplen = 262144;
    uint64_t ts_unit_ns = 1000;     // 0 when the unit is finer than 1 ns (then ts_div applies)
    uint64_t ts_div = 1;            // ticks per ns when ts_unit_ns is 0
    int64_t ts_offset_s = 0;        // if_tsoffset
    uint64_t ts_per_sec = 1000000;  // if_tsresol as ticks per second (10^n or 2^n)
};

struct CaptureInfo {
    CaptureFormat format = CaptureFormat::kPcapMicro;  // pcapng: kPcapng whatever the resolution
    bool swapped = false;                              // written in the other byte order
    uint64_t data_start = 0;  // first record (pcap: 24; pcapng: after SHB and leading IDBs)
    uint64_t size = 0;        // file size when opened
    std::vector<CaptureInterface> interfaces;  // pcap: one
    bool nanosecond() const;                   // any interface with a resolution finer than 1 us
};

struct Record {
    uint64_t offset;     // of the record's header or block
    uint32_t rec_bytes;  // the whole record or block
    uint32_t if_id;      // 0 for pcap
    uint64_t ts_ns;
    uint32_t caplen;
    uint32_t wirelen;
    const uint8_t* data;  // caplen bytes; valid during the callback only
};

struct FrameExtent;  // index/codec.hh

class CaptureReader {
public:
    /* Opens path and reads its file header. Errors: the open's errno (the
     * message names the file); EINVAL "not a pcap or pcapng file" for
     * anything else (capq skips such files in a directory). */
    static Result<CaptureReader> open(const std::string& path);
    /* The same on a descriptor the caller owns (not closed here). */
    static Result<CaptureReader> open_fd(int fd, const std::string& name);
    /* The most a compressed file read without its index may decompress to:
     * the stream goes whole into anonymous memory (inflate_all), so a small
     * hostile file (a frame of zeros compresses about 1000:1 with gzip and
     * far more with zstd) could otherwise take all of it. Past the limit
     * the read fails with EFBIG and a line naming it. 0 (the default): a
     * quarter of the machine's physical memory. A block read through the
     * index is held to the same bound (the index says its size).
     * Process-wide: set once
     * before readers are opened (capq --max-inflate); read by any thread. */
    static void set_inflate_limit(uint64_t bytes);
    static uint64_t inflate_limit();

    CaptureReader(CaptureReader&&) noexcept;
    CaptureReader& operator=(CaptureReader&&) noexcept;
    ~CaptureReader();

    const CaptureInfo& info() const { return info_; }
    const std::string& name() const { return name_; }

    /* Calls fn for every whole record starting in [begin, end) (end past the
     * file: to its end), in file order; begin must be a record boundary
     * (data_start or an index block's offset). fn returns false to stop.
     * Returns the offset where the whole records read end (begin if none);
     * an I/O error is an error. pcapng interface blocks met on the way are
     * added to info().interfaces; a second section header starts a new
     * interface list (sequential() becomes true). */
    Result<uint64_t> for_each(uint64_t begin, uint64_t end,
                              const std::function<bool(const Record&)>& fn);

    /* Asks the kernel to start reading [begin, end) into the page cache
     * (POSIX_FADV_WILLNEED), without waiting: for the range read next.
     * for_each() does so itself for the next window of a long range, unless
     * told not to: a caller that asks further ahead on another thread
     * (capq's ReadAhead) saves the reading thread that call. */
    void will_need(uint64_t begin, uint64_t end) const;
    void set_window_read_ahead(bool on) { window_read_ahead_ = on; }

    /* The descriptor whose offsets are the records' offsets, for asking
     * the kernel ahead from another thread (posix_fadvise); -1 for a
     * compressed file, whose offsets are those of the decompressed stream.
     * Owned by the reader (or its caller, after open_fd()). */
    int plain_fd() const { return z_ ? -1 : fd_; }

    /* Whether the file can only be read from data_start in order: a pcapng
     * file with an interface description after its first packet, or more
     * than one section. Known once for_each() has passed them. */
    bool sequential() const { return sequential_; }

    /* Compressed files (index/codec.hh: zstd, lz4 or gzip, by their magic):
     * offsets are those of the decompressed stream, info().size and
     * info().data_start included... except info().size, which stays the
     * file's size on the disk (what an index's capture_bytes describes).
     * Opening decompresses the stream's first piece (the header). Reading
     * further decompresses only the blocks use_index() names, one frame
     * each; without it, the whole file at the first read past the header,
     * into memory (memfd), read to its last whole record. */
    Codec codec() const;
    /* The index (format version 2, same codec) of this compressed file:
     * reads then decompress the frame of each block they touch. False if
     * the index does not fit the file (another codec; not compressed). */
    bool use_index(const Index& idx);
    /* A compressed file read whole, now, without an index: decompresses the
     * stream into memory, as the first read past the header would, and
     * lists its whole frames on the way (list_frames(), without a second
     * pass over the file). for_each() then reads the records from memory.
     * capq --reindex cuts its blocks at the frames, decompressing the file
     * once. A damaged stream is an error; a frame cut short at the end is
     * not listed (*cut set) and its records are not returned. EINVAL when
     * not compressed, after use_index() or after a read past the header. */
    Status inflate_listing_frames(std::vector<FrameExtent>& frames, bool* cut = nullptr);

private:
    struct Compressed;
    std::unique_ptr<Compressed> z_;  // null: not compressed
    /* fetch() for a compressed file. */
    const uint8_t* fetch_compressed(uint64_t pos, size_t n);
    bool inflate_all(std::vector<FrameExtent>* frames = nullptr, Status* damaged = nullptr,
                     bool* cut = nullptr);

    CaptureReader() = default;
    int fd_ = -1;
    bool own_fd_ = false;
    std::string name_;
    CaptureInfo info_;
    bool sequential_ = false;
    bool window_read_ahead_ = true;
    size_t leading_interfaces_ = 0;  // pcapng: IDBs before data_start
    int lengths_swapped_ = 0;        // pcap 2.3 and older: 1 maybe, 2 always (as libpcap)
    // Not zero-filled: a reader opened only to look at its header, or to
    // read one small block, allocates no more than it reads.
    std::unique_ptr<uint8_t[]> buf_;
    size_t buf_cap_ = 0;
    uint64_t buf_off_ = 0;  // file offset of buf_[0]
    size_t buf_len_ = 0;    // valid bytes in buf_
    int io_errno_ = 0;
    /* io_errno_ as words for a message (the inflate limit for EFBIG). */
    std::string io_text() const;

    /* [pos, pos + n) in the buffer, reading at most up to `upto` past n;
     * nullptr when the file ends first or a read fails (io_errno_). */
    const uint8_t* fetch(uint64_t pos, size_t n, uint64_t upto);
    /* One pcapng block at pos: fills rec and returns 1 for a packet, 2 for
     * another whole block, 0 at the end of the whole records. */
    int pcapng_block(uint64_t pos, uint64_t upto, Record& rec);
    int pcap_record(uint64_t pos, uint64_t upto, Record& rec);
};

}  // namespace linecap::index
