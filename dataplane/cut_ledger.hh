/* CutLedger: what one worker's flow table left out of each flow (cut past
 * its cutoff, or a duplicate) since the worker took its current chunk, as
 * one CutNote per flow (storage/chunk.hh), written after the chunk's
 * records when the chunk is handed over. The writer gives the notes to the
 * index of the file the chunk went to (index format version 3), so the
 * index records for each flow how much was cut, without the cut packets
 * ever being copied.
 *
 * Open addressing on the flow table's hash (FlowPacket::hash), kProbe slots
 * at most, keyed by the flow table's key and the interface. A flow cut for
 * a long time costs one note per chunk, not one per packet; a chunk carries
 * at most kSlots notes (80 KiB).
 *
 * Thread: the owning worker only. Memory: fixed, inside the object (about
 * 115 KiB); nothing is allocated. Cost: add() is a probe of a few slots, a
 * 48-byte compare and two adds; a flow's first cut packet of a chunk also
 * copies its first 112 bytes (the note's head). seal() copies the notes.
 */
#pragma once

#include <cstdint>
#include <cstring>

#include "dataplane/flow_table.hh"
#include "storage/chunk.hh"

namespace linecap::dataplane {

class CutLedger {
public:
    static constexpr uint32_t kSlots = 512;
    static constexpr uint32_t kProbe = 8;

    /* Chunk bytes that n notes need after the records (8-alignment
     * included). */
    static constexpr uint32_t reserve_for(uint32_t n) {
        return n ? n * uint32_t(sizeof(storage::CutNote)) + 7 : 0;
    }

    uint32_t count() const { return count_; }
    /* Chunk bytes the notes so far need: the worker keeps them free. */
    uint32_t reserve() const { return reserve_; }

    /* Adds one packet left out (dup: a duplicate, else cut) to its flow's
     * note. `room`: the chunk's bytes not taken by records and their
     * starts. Returns false, changing nothing, when the flow needs a new
     * note and there is no free slot within kProbe or room is short of
     * reserve_for(count() + 1): the caller hands the chunk over (seal())
     * and adds again. A packet of no flow (!p.ok) is ignored (true). */
    bool add(const FlowPacket& p, const uint8_t* frame, uint32_t caplen, uint32_t wirelen,
             uint64_t ts, uint32_t if_id, bool dup, uint32_t room) {
        if (!p.ok) return true;
        Slot* free = nullptr;
        uint32_t free_at = 0;
        for (uint32_t k = 0; k < kProbe; k++) {
            const uint32_t at = (uint32_t(p.hash) + k) & (kSlots - 1);
            Slot& s = slots_[at];
            if (!s.used) {
                free = &s;
                free_at = at;
                break;
            }
            if (s.hash == p.hash && s.if_id == if_id &&
                std::memcmp(&s.key, &p.key, sizeof(p.key)) == 0) {
                count_packet(s.note, wirelen, ts, dup);
                return true;
            }
        }
        if (!free || room < reserve_for(count_ + 1)) return false;
        free->key = p.key;
        free->hash = p.hash;
        free->if_id = if_id;
        free->used = true;
        storage::CutNote& n = free->note;
        n.first_ns = n.last_ns = ts;
        n.cut_packets = n.dup_packets = 0;
        n.cut_bytes = n.dup_bytes = 0;
        n.if_id = static_cast<uint16_t>(if_id);
        n.head_len = static_cast<uint16_t>(caplen < sizeof(n.head) ? caplen : sizeof(n.head));
        n.reserved = 0;
        std::memcpy(n.head, frame, n.head_len);
        count_packet(n, wirelen, ts, dup);
        used_[count_++] = static_cast<uint16_t>(free_at);
        reserve_ = reserve_for(count_);
        return true;
    }

    /* Writes the notes after c's records (c.notes(), c.cuts) and empties
     * the ledger. c takes no record after this. */
    void seal(storage::Chunk& c) {
        storage::CutNote* out = c.notes();
        for (uint32_t i = 0; i < count_; i++) {
            Slot& s = slots_[used_[i]];
            out[i] = s.note;
            s.used = false;
        }
        c.cuts = static_cast<uint16_t>(count_);
        count_ = 0;
        reserve_ = 0;
    }

private:
    struct Slot {
        FlowPacket::Key key;
        uint64_t hash;
        uint32_t if_id;
        bool used;
        storage::CutNote note;
    };
    static void count_packet(storage::CutNote& n, uint32_t wirelen, uint64_t ts, bool dup) {
        if (ts < n.first_ns) n.first_ns = ts;
        if (ts > n.last_ns) n.last_ns = ts;
        if (dup) {
            n.dup_packets++;
            n.dup_bytes += wirelen;
        } else {
            n.cut_packets++;
            n.cut_bytes += wirelen;
        }
    }

    uint32_t count_ = 0;
    uint32_t reserve_ = 0;
    uint16_t used_[kSlots];
    Slot slots_[kSlots] = {};
};

}  // namespace linecap::dataplane
