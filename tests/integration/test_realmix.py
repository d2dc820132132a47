#!/usr/bin/env python3
"""bench/realmix.py, the full-size mix with real payloads that the
compression benchmarks replay: its output is well formed (tcpdump and
tshark read it, checksums correct), frames are 1514 bytes of data or
60-byte ACKs (all 1514 with --data-only), the plain flows' payloads are the
source capture's TCP streams as tshark reassembles them (not the
generator's own parser), the encrypted flows carry TLS records, and the
encrypted share is what was asked. Then a --compress lz4 capture of the
mix reads back identical through lz4 -dc | tcpdump and through capq. Small
and quick; no timing is asserted.
"""

import json
import os
import shutil
import subprocess
import unittest

import capdtest
from capdtest import CapdTestCase

CAPQ = os.path.join(capdtest.BUILD_DIR, "query", "capq")
REALMIX = os.path.join(capdtest.REPO, "bench", "realmix.py")
DEMO = os.path.join(capdtest.DATA_DIR, "demo", "web-mix.pcap")
TLS_RECORD = 5 + 16401


def run(cmd, stdin=None, timeout=120):
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)


def tshark_rows(path, fields, extra=()):
    # HTTP's dissector judges the payload, which a plain flow cuts out of a
    # stream of requests and responses at any byte; the frames are what is
    # checked here.
    p = run(["tshark", "-n", "-r", path, "--disable-protocol", "http",
             "-o", "tcp.desegment_tcp_streams:FALSE",
             "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE", "-T", "fields", "-E", "separator=|"] +
            list(extra) + [a for f in fields for a in ("-e", f)], timeout=300)
    assert p.returncode == 0, p.stderr.decode("utf-8", "replace")
    return [line.split("|") for line in p.stdout.decode().splitlines()]


def tshark_streams(path):
    """The TCP payload streams of a capture as tshark reassembles them: per
    connection in tshark's stream order, the direction of its first packet
    first, each direction's payloads ordered by relative sequence number."""
    conns = {}
    for stream, src, sport, seq, payload in tshark_rows(
            path, ["tcp.stream", "ip.src", "tcp.srcport", "tcp.seq", "tcp.payload"]):
        if not stream:
            continue  # not TCP
        c = conns.setdefault(int(stream), {})
        d = c.setdefault((src, sport), [])
        if payload:
            d.append((int(seq), bytes.fromhex(payload.replace(":", ""))))
    out = []
    for stream in sorted(conns):
        for segs in conns[stream].values():  # dicts keep first-seen order
            if segs:
                out.append(b"".join(p for _, p in sorted(segs, key=lambda x: x[0])))
    return out


class RealMix(CapdTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for tool in ("lz4", "tcpdump", "tshark"):
            if not shutil.which(tool):
                raise unittest.SkipTest(f"{tool} not installed")
        if not os.access(CAPQ, os.X_OK):
            raise unittest.SkipTest(f"capq not built at {CAPQ}")

    def generate(self, name, *args):
        out = self.path(name)
        p = run(["python3", REALMIX, "-o", out, "--source", DEMO, "--max-stream-ratio", "0",
                 "--stats"] + list(args))
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))
        return out, json.loads(p.stdout)

    def test_well_formed_real_payloads(self):
        path, st = self.generate("mix.pcap", "--encrypted", "50", "--mb", "2")
        # tcpdump reads every frame and finds every checksum correct.
        p = run(["tcpdump", "-nn", "-v", "-r", path])
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))
        text = p.stdout.decode()
        self.assertEqual(text.count("proto TCP"), st["frames"])
        self.assertEqual(text.count("cksum"), st["frames"])
        self.assertEqual(text.count("(correct)"), st["frames"])
        rows = tshark_rows(path, ["frame.len", "frame.cap_len", "ip.src", "ip.dst", "tcp.len",
                                  "ip.checksum.status", "tcp.checksum.status",
                                  "_ws.malformed"])
        self.assertEqual(len(rows), st["frames"])
        sizes = {}
        for flen, caplen, src, dst, tlen, ipsum, tcpsum, malformed in rows:
            self.assertEqual(flen, caplen)
            for a in (src, dst):
                self.assertTrue(a.startswith("198.18.") or a.startswith("198.19."), a)
            sizes[(int(flen), int(tlen))] = sizes.get((int(flen), int(tlen)), 0) + 1
            # tshark finds both checksums good (1) and nothing malformed.
            self.assertEqual((ipsum, tcpsum, malformed), ("1", "1", ""))
        self.assertEqual(sizes, {(1514, 1460): st["data_frames"], (60, 0): st["ack_frames"]})
        self.assertGreater(st["ack_frames"], 0)
        # Half of the payload encrypted, to one segment.
        self.assertLessEqual(abs(st["encrypted_payload_bytes"] - st["plain_payload_bytes"]), 1460)

        # Plain flows carry slices of the source's streams, back to back.
        source = b"".join(tshark_streams(DEMO))
        self.assertEqual(len(source), st["source_bytes"])
        ring = source + source
        plain = enc = 0
        for flow in tshark_streams(path):
            if flow[:5] == b"\x17\x03\x03\x40\x11":
                enc += len(flow)
                # TLS application data records, one after another.
                for off in range(0, len(flow), TLS_RECORD):
                    self.assertEqual(flow[off:off + 5], b"\x17\x03\x03\x40\x11")
            else:
                plain += len(flow)
                self.assertLessEqual(len(flow), len(source))
                self.assertTrue(flow in ring, f"a plain flow's {len(flow)} bytes are not "
                                f"a slice of the source's streams")
        self.assertEqual(plain, st["plain_payload_bytes"])
        self.assertEqual(enc, st["encrypted_payload_bytes"])

    def test_data_only_is_all_full_frames(self):
        path, st = self.generate("full.pcap", "--encrypted", "80", "--mb", "1", "--data-only")
        self.assertEqual(st["ack_frames"], 0)
        lens = [int(r[0]) for r in tshark_rows(path, ["frame.len"])]
        self.assertEqual(len(lens), st["frames"])
        self.assertEqual(set(lens), {1514})
        share = st["encrypted_payload_bytes"] / (st["encrypted_payload_bytes"] +
                                                 st["plain_payload_bytes"])
        self.assertAlmostEqual(share, 0.8, delta=1460 / st["plain_payload_bytes"])
        # The same seed writes the same file.
        again, _ = self.generate("again.pcap", "--encrypted", "80", "--mb", "1", "--data-only")
        with open(path, "rb") as a, open(again, "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_null_frames_replays_every_frame(self):
        """null:1514,frames=MIX (how bench/capbench.py replays the mix):
        every frame of the file comes round, not the one burst of mbufs a
        per-lcore cache would hand out again and again."""
        path, st = self.generate("full.pcap", "--encrypted", "50", "--mb", "1", "--data-only")
        want = {r.data for r in self.assertWhole(path).records}
        self.assertEqual(len(want), st["frames"])
        out = self.path("null.pcap")
        r = self.capd(["-q", "-i", f"null:1514,rate=50000,frames={path}", "-c", "20000",
                       "-w", out])
        self.assertCapdOk(r)
        got = [rec.data for rec in self.assertWhole(out).records]
        self.assertEqual(len(got), 20000)
        # Every packet is one of the file's frames, unpadded, and all of them
        # appear.
        self.assertEqual(set(got), want)

    def test_lz4_capture_reads_back_identical(self):
        path, st = self.generate("mix.pcap", "--encrypted", "50", "--mb", "2")
        plain_dir, lz4_dir = self.path("plain"), self.path("lz4")
        for d, extra in ((plain_dir, []), (lz4_dir, ["--compress", "lz4",
                                                     "--compress-block", "64K"])):
            os.makedirs(d)
            r = self.capd(["-q", "-i", f"pcap:{path}", "-w", os.path.join(d, "a.pcap"),
                           "--stats-json", os.path.join(d, "stats.json")] + extra)
            self.assertCapdOk(r)
        plain = os.path.join(plain_dir, "a.pcap")
        packed = os.path.join(lz4_dir, "a.pcap.lz4")
        with open(os.path.join(lz4_dir, "stats.json")) as f:
            w = json.load(f)["writers"][0]
        self.assertEqual(w["compress"], "lz4")
        self.assertEqual(w["bytes_out"], os.path.getsize(packed))
        self.assertEqual(w["bytes_in"], os.path.getsize(plain))
        # lz4 -dc gives the uncompressed capture's bytes, which tcpdump reads
        # as it reads the generated mix.
        raw = run(["lz4", "-dcq", packed])
        self.assertEqual(raw.returncode, 0)
        with open(plain, "rb") as f:
            self.assertEqual(raw.stdout, f.read())
        want = run(["tcpdump", "-nn", "-tt", "-v", "-r", path])
        got = run(["tcpdump", "-nn", "-tt", "-v", "-r", "-"], stdin=raw.stdout)
        self.assertEqual(got.returncode, 0)
        self.assertEqual(got.stdout, want.stdout)
        self.assertEqual(got.stdout.decode().count("\n    "), st["frames"])
        # capq through the index of the compressed file: the whole capture,
        # the encrypted flows and one plain flow, as tcpdump -r finds them.
        for expr in ("", "tcp port 443", "host 198.18.0.9 and tcp port 80"):
            with self.subTest(expr=expr):
                q = run([CAPQ, "-r", packed, "-w", "-", expr])
                self.assertEqual(q.returncode, 0, q.stderr.decode("utf-8", "replace"))
                got = run(["tcpdump", "-nn", "-tt", "-v", "-r", "-"], stdin=q.stdout)
                want = run(["tcpdump", "-nn", "-tt", "-v", "-r", path] + ([expr] if expr else []))
                self.assertEqual(got.returncode, 0)
                self.assertGreater(len(want.stdout), 0)
                self.assertEqual(got.stdout, want.stdout)


if __name__ == "__main__":
    capdtest.main()
