#include "index/codec.hh"

#include <lz4frame.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace linecap::index {

Result<CodecSpec> parse_codec(const std::string& text) {
    std::string name = text, level;
    size_t colon = text.find(':');
    if (colon != std::string::npos) {
        name = text.substr(0, colon);
        level = text.substr(colon + 1);
    }
    CodecSpec s;
    int lo = 0, hi = 0;
    if (name == "zstd") {
        s = {Codec::kZstd, 1};
        lo = 1;
        hi = 19;
    } else if (name == "gzip") {
        s = {Codec::kGzip, 6};
        lo = 1;
        hi = 9;
    } else if (name == "lz4") {
        s = {Codec::kLz4, 0};
    } else if (name == "none" && colon == std::string::npos) {
        return s;
    } else {
        return make_error(EINVAL, "unknown codec '" + name + "' (zstd, lz4 or gzip)");
    }
    if (colon == std::string::npos) return s;
    if (hi == 0) return make_error(EINVAL, name + " takes no level");
    if (level.empty() || level.size() > 3 ||
        level.find_first_not_of("0123456789") != std::string::npos)
        return make_error(EINVAL, name + " level '" + level + "' is not a number");
    int v = std::stoi(level);
    if (v < lo || v > hi)
        return make_error(EINVAL, name + " level " + level + " is outside " + std::to_string(lo) +
                                      ".." + std::to_string(hi));
    s.level = v;
    return s;
}

const char* codec_name(Codec c) {
    switch (c) {
        case Codec::kZstd: return "zstd";
        case Codec::kLz4: return "lz4";
        case Codec::kGzip: return "gzip";
        default: return "none";
    }
}

const char* codec_suffix(Codec c) {
    switch (c) {
        case Codec::kZstd: return ".zst";
        case Codec::kLz4: return ".lz4";
        case Codec::kGzip: return ".gz";
        default: return "";
    }
}

Codec sniff_codec(const uint8_t* p, size_t n) {
    if (n >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd) return Codec::kZstd;
    if (n >= 4 && p[0] == 0x04 && p[1] == 0x22 && p[2] == 0x4d && p[3] == 0x18) return Codec::kLz4;
    if (n >= 2 && p[0] == 0x1f && p[1] == 0x8b) return Codec::kGzip;
    return Codec::kNone;
}

namespace {

LZ4F_preferences_t lz4_prefs(size_t n) {
    LZ4F_preferences_t p;
    std::memset(&p, 0, sizeof(p));
    p.frameInfo.blockSizeID = LZ4F_max256KB;
    p.frameInfo.blockMode = LZ4F_blockIndependent;
    p.frameInfo.contentSize = n;
    p.compressionLevel = 0;
    return p;
}

}  // namespace

BlockCompressor::BlockCompressor(CodecSpec spec) : spec_(spec) {
    switch (spec.codec) {
        case Codec::kZstd:
            zc_ = ZSTD_createCCtx();
            ok_ = zc_ &&
                  !ZSTD_isError(ZSTD_CCtx_setParameter(zc_, ZSTD_c_compressionLevel, spec.level));
            break;
        case Codec::kLz4:
            ok_ = !LZ4F_isError(LZ4F_createCompressionContext(&lc_, LZ4F_VERSION));
            break;
        case Codec::kGzip:
            gz_ = new z_stream{};
            // windowBits 15 + 16: a gzip member, as gzip writes.
            ok_ = deflateInit2(gz_, spec.level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK;
            if (!ok_) {
                delete gz_;
                gz_ = nullptr;
            }
            break;
        default: break;
    }
}

BlockCompressor::~BlockCompressor() {
    if (zc_) ZSTD_freeCCtx(zc_);
    if (lc_) LZ4F_freeCompressionContext(lc_);
    if (gz_) {
        deflateEnd(gz_);
        delete gz_;
    }
}

size_t BlockCompressor::bound(size_t n) const {
    switch (spec_.codec) {
        case Codec::kZstd: return ZSTD_compressBound(n);
        case Codec::kLz4: {
            LZ4F_preferences_t p = lz4_prefs(n);
            return LZ4F_compressFrameBound(n, &p) + LZ4F_HEADER_SIZE_MAX;
        }
        case Codec::kGzip: return deflateBound(gz_, n) + 32;
        default: return n;
    }
}

size_t BlockCompressor::compress(const void* src, size_t n, void* dst, size_t cap) {
    switch (spec_.codec) {
        case Codec::kZstd: {
            // The frame records its content size (ZSTD_compress2 knows it).
            size_t r = ZSTD_compress2(zc_, dst, cap, src, n);
            return ZSTD_isError(r) ? 0 : r;
        }
        case Codec::kLz4: {
            LZ4F_preferences_t p = lz4_prefs(n);
            uint8_t* out = static_cast<uint8_t*>(dst);
            size_t h = LZ4F_compressBegin(lc_, out, cap, &p);
            if (LZ4F_isError(h)) return 0;
            size_t b = LZ4F_compressUpdate(lc_, out + h, cap - h, src, n, nullptr);
            if (LZ4F_isError(b)) return 0;
            size_t e = LZ4F_compressEnd(lc_, out + h + b, cap - h - b, nullptr);
            if (LZ4F_isError(e)) return 0;
            return h + b + e;
        }
        case Codec::kGzip: {
            if (deflateReset(gz_) != Z_OK) return 0;
            gz_->next_in = static_cast<Bytef*>(const_cast<void*>(src));
            gz_->avail_in = static_cast<uInt>(n);
            gz_->next_out = static_cast<Bytef*>(dst);
            gz_->avail_out = static_cast<uInt>(cap);
            if (deflate(gz_, Z_FINISH) != Z_STREAM_END) return 0;
            return cap - gz_->avail_out;
        }
        default:
            if (cap < n) return 0;
            std::memcpy(dst, src, n);
            return n;
    }
}

BlockDecompressor::BlockDecompressor(Codec c) : codec_(c) {
    switch (c) {
        case Codec::kZstd: zd_ = ZSTD_createDCtx(); break;
        case Codec::kLz4: (void)LZ4F_createDecompressionContext(&ld_, LZ4F_VERSION); break;
        case Codec::kGzip:
            gz_ = new z_stream{};
            if (inflateInit2(gz_, 15 + 16) != Z_OK) {
                delete gz_;
                gz_ = nullptr;
            }
            break;
        default: break;
    }
}

BlockDecompressor::~BlockDecompressor() {
    if (zd_) ZSTD_freeDCtx(zd_);
    if (ld_) LZ4F_freeDecompressionContext(ld_);
    if (gz_) {
        inflateEnd(gz_);
        delete gz_;
    }
}

Result<size_t> BlockDecompressor::decompress(const void* src, size_t n, void* dst, size_t cap) {
    auto damaged = [&](const char* why) {
        return make_error(EBADMSG, std::string(codec_name(codec_)) + " block: " + why);
    };
    switch (codec_) {
        case Codec::kZstd: {
            if (!zd_) return damaged("no context");
            size_t r = ZSTD_decompressDCtx(zd_, dst, cap, src, n);
            if (ZSTD_isError(r)) return damaged(ZSTD_getErrorName(r));
            return r;
        }
        case Codec::kLz4: {
            if (!ld_) return damaged("no context");
            LZ4F_resetDecompressionContext(ld_);
            size_t in = n, out = cap;
            size_t r = LZ4F_decompress(ld_, dst, &out, src, &in, nullptr);
            if (LZ4F_isError(r)) return damaged(LZ4F_getErrorName(r));
            if (r != 0) return damaged("cut short or larger than expected");
            return out;
        }
        case Codec::kGzip: {
            if (!gz_ || inflateReset(gz_) != Z_OK) return damaged("no context");
            gz_->next_in = static_cast<Bytef*>(const_cast<void*>(src));
            gz_->avail_in = static_cast<uInt>(n);
            gz_->next_out = static_cast<Bytef*>(dst);
            gz_->avail_out = static_cast<uInt>(cap);
            int r = inflate(gz_, Z_FINISH);
            if (r != Z_STREAM_END) return damaged(gz_->msg ? gz_->msg : "cut short");
            return cap - gz_->avail_out;
        }
        default:
            if (n > cap) return damaged("too large");
            std::memcpy(dst, src, n);
            return n;
    }
}

Status decompress_stream(int fd, Codec c, const std::function<bool(const uint8_t*, size_t)>& sink,
                         bool* cut, uint64_t* whole_end,
                         const std::function<void(uint64_t, uint64_t)>& on_frame) {
    if (whole_end) *whole_end = 0;
    constexpr size_t kIn = 1 << 20, kOut = 1 << 20;
    std::unique_ptr<uint8_t[]> in(new uint8_t[kIn]), out(new uint8_t[kOut]);
    uint64_t pos = 0, produced = 0;
    size_t have = 0, at = 0;
    bool eof = false, in_frame = false, took = false;
    if (cut) *cut = false;
    auto refill = [&]() -> Status {
        if (at > 0) {
            std::memmove(in.get(), in.get() + at, have - at);
            have -= at;
            at = 0;
        }
        while (have < kIn && !eof) {
            ssize_t r = pread(fd, in.get() + have, kIn - have, off_t(pos));
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return make_error(errno, std::strerror(errno));
            if (r == 0) eof = true;
            have += size_t(r);
            pos += uint64_t(r);
        }
        return {};
    };
    std::unique_ptr<ZSTD_DStream, size_t (*)(ZSTD_DStream*)> zs(nullptr, ZSTD_freeDStream);
    LZ4F_dctx* ld = nullptr;
    std::unique_ptr<z_stream> gz;
    if (c == Codec::kZstd) zs.reset(ZSTD_createDStream());
    if (c == Codec::kLz4 && LZ4F_isError(LZ4F_createDecompressionContext(&ld, LZ4F_VERSION)))
        return make_error(ENOMEM, "lz4: no context");
    std::unique_ptr<LZ4F_dctx, LZ4F_errorCode_t (*)(LZ4F_dctx*)> ld_owner(
        ld, LZ4F_freeDecompressionContext);
    if (c == Codec::kGzip) {
        gz.reset(new z_stream{});
        if (inflateInit2(gz.get(), 15 + 16) != Z_OK) return make_error(ENOMEM, "gzip: no context");
    }
    struct GzEnd {
        z_stream* z;
        ~GzEnd() {
            if (z) inflateEnd(z);
        }
    } gz_end{gz.get()};
    for (;;) {
        if (Status s = refill(); !s) return s;
        if (at == have) break;  // the end of the file
        size_t made = 0;
        size_t used = 0;
        if (c == Codec::kZstd) {
            ZSTD_inBuffer ib = {in.get() + at, have - at, 0};
            ZSTD_outBuffer ob = {out.get(), kOut, 0};
            size_t r = ZSTD_decompressStream(zs.get(), &ob, &ib);
            if (ZSTD_isError(r))
                return make_error(EBADMSG, std::string("zstd: ") + ZSTD_getErrorName(r));
            in_frame = r != 0;
            used = ib.pos;
            made = ob.pos;
        } else if (c == Codec::kLz4) {
            size_t ilen = have - at, olen = kOut;
            size_t r = LZ4F_decompress(ld, out.get(), &olen, in.get() + at, &ilen, nullptr);
            if (LZ4F_isError(r))
                return make_error(EBADMSG, std::string("lz4: ") + LZ4F_getErrorName(r));
            in_frame = r != 0;
            used = ilen;
            made = olen;
        } else if (c == Codec::kGzip) {
            gz->next_in = in.get() + at;
            gz->avail_in = uInt(have - at);
            gz->next_out = out.get();
            gz->avail_out = uInt(kOut);
            int r = inflate(gz.get(), Z_NO_FLUSH);
            if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR)
                return make_error(EBADMSG, std::string("gzip: ") + (gz->msg ? gz->msg : "damaged"));
            used = (have - at) - gz->avail_in;
            made = kOut - gz->avail_out;
            in_frame = r != Z_STREAM_END;
            if (r == Z_STREAM_END) inflateReset(gz.get());  // the next member
        } else {
            return make_error(EINVAL, "not compressed");
        }
        at += used;
        produced += made;
        // A frame ends when the decoder is out of one it took bytes of
        // (its last output may come after its last input).
        took |= used > 0;
        if (!in_frame) {
            const uint64_t file_end = pos - (have - at);
            if (whole_end) *whole_end = file_end;
            if (took && on_frame) on_frame(file_end, produced);
            took = false;
        }
        if (made > 0 && !sink(out.get(), made)) return {};
        if (used == 0 && made == 0) {
            if (eof) break;  // cut in the middle of a frame
        }
    }
    if (in_frame && cut) *cut = true;
    return {};
}

Status list_frames(int fd, Codec c, std::vector<FrameExtent>& frames, bool* cut) {
    frames.clear();
    uint64_t file_at = 0, raw_at = 0;
    return decompress_stream(
        fd, c, [](const uint8_t*, size_t) { return true; }, cut, nullptr,
        [&](uint64_t file_end, uint64_t raw_end) {
            frames.push_back(FrameExtent{file_at, file_end - file_at, raw_at, raw_end - raw_at});
            file_at = file_end;
            raw_at = raw_end;
        });
}

}  // namespace linecap::index
