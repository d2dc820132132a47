"""capq --serve and capq --fleet-hosts: stored packets over HTTPS.

The test makes a fleet CA, a second CA, a host certificate (IP 127.0.0.1)
and client certificates with openssl in its temporary directory; capd
writes three stores from bundled captures (pcap: sources); three capq
--serve processes serve them on 127.0.0.1 (ports chosen by the kernel).

Checked: one capq --fleet-hosts over the three equals, record for record
and byte for byte, capq -r over the three stores and the merge of the
three local answers; no client certificate, or one from the other CA:
refused at the handshake, reported as unreachable; a client certificate
of the fleet CA that has expired or is a host's (serverAuth): refused, the
log naming why; a server certificate
from another CA: refused by the client; the cap (packets and bytes):
reported, the output ends at a whole record and is the head of the full
answer; a stopped server and an address nothing listens on: unreachable,
the rest answered, exit 3; file= outside the served directories (another
directory, "..", a symbolic link out, also percent-encoded): 403; a NUL:
400; bad requests: one line.
"""

import os
import re
import select
import shutil
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import capdtest  # noqa: E402
import pcaplib  # noqa: E402
from capdtest import (CAPQ, CORPUS_DIR, DATA_DIR, Server, ServeTestCase, make_ca,  # noqa: E402
                      make_cert)

TIMEOUT = 120
MIX = os.path.join(DATA_DIR, "demo", "web-mix.pcap")
SHAPES = [os.path.join(CORPUS_DIR, s) for s in
          ("802.1ad_QinQ.pcap", "bigtcp-ipv6-hbh.pcap", "icmp6-rfc8335.pcap")]


def run(cmd, timeout=TIMEOUT, **kw):
    return capdtest.run_cmd(cmd, timeout=timeout, **kw)


def records(b):
    return pcaplib.read_capture_bytes(b).records


def key(recs):
    return [(r.ts_ns, r.caplen, r.wirelen, r.data) for r in recs]


class ServeTest(ServeTestCase):
    """Stores, certificates and servers made once for the class."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        t = cls.ctmp
        make_ca(t, "otherca")
        make_cert(t, "rogue", "otherca", client=True)
        make_cert(t, "otherhost", "otherca", san="IP:127.0.0.1")
        p = cls.cpath
        cls.certs = dict(cls.certs, otherca=p("otherca.pem"), rogue=(p("rogue.pem"), p("rogue.key")),
                         otherhost=(p("otherhost.pem"), p("otherhost.key")))
        cls.stores = []
        shapes = [s for s in SHAPES if os.path.exists(s)]
        plans = [("a", [MIX], ["-C", "0.1"]),
                 ("b", [MIX], ["--writers", "2", "--workers", "2", "-C", "0.2"]),
                 ("c", [MIX] + shapes, ["--nano"])]
        for name, sources, extra in plans:
            d = p(name)
            os.mkdir(d)
            args = ["-q", "-w", os.path.join(d, "cap.pcap")] + extra
            for s in sources:
                args += ["-i", f"pcap:{s}"]
            r = capdtest.run_capd(args)
            if r.rc != 0:
                raise RuntimeError(r.describe())
            cls.stores.append(d)
        for i, d in enumerate(cls.stores):
            cls.serve(f"s{i}", [d])

    def fleet(self, addrs, expr=(), extra=(), who="client", ca="ca"):
        out = self.path("fleet.pcap")
        p = run([CAPQ, "--fleet-hosts", ",".join(addrs)] + self.tls(who, ca) +
                ["-w", out] + list(extra) + list(expr))
        data = open(out, "rb").read() if os.path.exists(out) else b""
        return p, data

    def local(self, dirs, expr=(), extra=()):
        cmd = [CAPQ]
        for d in dirs:
            cmd += ["-r", d]
        p = run(cmd + ["-w", "-"] + list(extra) + list(expr))
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    def raw_get(self, port, target, who="client", head_extra=b""):
        """One request with Python's ssl; returns (status, headers, body,
        trailers) with the chunked body decoded."""
        ctx = ssl.create_default_context(cafile=self.certs["ca"])
        if who:
            ctx.load_cert_chain(*self.certs[who])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: x\r\n" + head_extra +
                          b"\r\n")
                buf = b""
                while True:
                    try:
                        b = s.recv(65536)
                    except ssl.SSLZeroReturnError:
                        break
                    if not b:
                        break
                    buf += b
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {ln.split(b":", 1)[0].strip().lower().decode(): ln.split(b":", 1)[1].strip()
                   .decode() for ln in lines[1:] if b":" in ln}
        if headers.get("transfer-encoding") != "chunked":
            return status, headers, rest, {}
        body, trailers = b"", {}
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line, 16)
            if n == 0:
                for ln in rest.split(b"\r\n"):
                    if b":" in ln:
                        k, v = ln.split(b":", 1)
                        trailers[k.strip().lower().decode()] = v.strip().decode()
                break
            body += rest[:n]
            rest = rest[n + 2:]
        return status, headers, body, trailers

    def assertReport(self, stderr, addr, what):
        text = stderr.decode()
        self.assertRegex(text, re.escape(f"capq fleet: {addr}: ") + what, text)

    # --- the fan-out -------------------------------------------------------

    def test_fleet_equals_local_merge(self):
        addrs = [s.addr for s in self.servers]
        all_ts = sorted(r.ts_ns for r in records(self.local(self.stores)))
        mid = all_ts[len(all_ts) // 2]
        cases = [((), ()), (("tcp",), ()), (("udp", "port", "53"), ()),
                 (("host", "198.18.0.80"), ()), (("ip6",), ()),
                 (("tcp",), ("--since", f"{mid / 1e9:.9f}")),
                 ((), ("--until", f"{mid / 1e9:.9f}"))]
        for expr, extra in cases:
            with self.subTest(expr=expr, extra=extra):
                p, got = self.fleet(addrs, expr, extra)
                self.assertEqual(p.returncode, 0, p.stderr)
                want = self.local(self.stores, expr, extra)
                self.assertEqual(key(records(got)), key(records(want)))
                self.assertEqual(got, want)  # header and records, byte for byte
                # The merge of the three local answers, host order on ties.
                per = [records(self.local([d], expr, extra)) for d in self.stores]
                merged = sorted(((r.ts_ns, i, j, r) for i, rs in enumerate(per)
                                 for j, r in enumerate(rs)), key=lambda x: x[:3])
                self.assertEqual(key(records(got)), key([m[3] for m in merged]))
                for s, rs in zip(self.servers, per):
                    self.assertReport(p.stderr, s.addr, f"answered, {len(rs)} packets")
                self.assertIn(b"3 of 3 hosts answered completely", p.stderr)

    def test_unreachable_hosts_reported_rest_answered(self):
        stopped = Server(self.ctmp, "stopped", [self.stores[0]], self.certs)
        stopped.stop()
        # An address nothing listens on: a fresh socket's port, closed.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        free = f"127.0.0.1:{s.getsockname()[1]}"
        s.close()
        addrs = [self.servers[0].addr, stopped.addr, free, self.servers[1].addr]
        p, got = self.fleet(addrs, ["tcp"])
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertReport(p.stderr, stopped.addr, "unreachable: Connection refused")
        self.assertReport(p.stderr, free, "unreachable: Connection refused")
        self.assertIn(b"2 of 4 hosts answered completely", p.stderr)
        self.assertIn(b"partial", p.stderr)
        want = self.local([self.stores[0], self.stores[1]], ["tcp"])
        self.assertEqual(key(records(got)), key(records(want)))

    def test_host_lost_mid_answer_reported(self):
        # A host that sends its pcap header and two records, then dies: its
        # two packets are kept and it is reported as failed; the other host
        # answers in full; exit 3.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.certs["host"])
        ctx.load_verify_locations(self.certs["ca"])
        ctx.verify_mode = ssl.CERT_REQUIRED
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.settimeout(60)
        port = lsock.getsockname()[1]
        recs = [pcaplib.Record(ts_ns=1_000_000_000 * 1800000000 + i, caplen=60, wirelen=60,
                               data=bytes([i]) * 60) for i in range(2)]
        body = struct.pack("<IHHiIII", 0xa1b23c4d, 2, 4, 0, 0, 262144, 1)
        for r in recs:
            body += struct.pack("<IIII", r.ts_ns // 10**9, r.ts_ns % 10**9, 60, 60) + r.data

        def dying_host():
            try:
                conn, _ = lsock.accept()
                with ctx.wrap_socket(conn, server_side=True) as c:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        b = c.recv(4096)
                        if not b:
                            return
                        head += b
                    c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                              b"%x\r\n" % len(body) + body + b"\r\n")
            except OSError:
                pass

        t = threading.Thread(target=dying_host, daemon=True)
        t.start()
        try:
            dying = f"127.0.0.1:{port}"
            p, got = self.fleet([self.servers[0].addr, dying], ["ip"])
        finally:
            t.join(timeout=60)
            lsock.close()
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertReport(p.stderr, dying, "failed after 2 packets: ")
        want = records(self.local([self.stores[0]], ["ip"]))
        self.assertReport(p.stderr, self.servers[0].addr, f"answered, {len(want)} packets")
        got_recs = records(got)
        self.assertEqual(len(got_recs), len(want) + 2)
        self.assertEqual(key(got_recs[-2:]), key(recs))

    def test_no_or_foreign_client_certificate_refused(self):
        # Another CA's client certificate: refused at the handshake.
        p, got = self.fleet([self.servers[0].addr], ["tcp"], who="rogue")
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertReport(p.stderr, self.servers[0].addr, "unreachable: .*")
        self.assertEqual(records(got), [])
        self.assertRegex(self.servers[0].text().decode(), "refused at the handshake")
        # No client certificate at all.
        with self.assertRaises((ssl.SSLError, ConnectionError, IndexError, ValueError)):
            self.raw_get(self.servers[0].port, "/v1/packets?expr=tcp", who=None)
        # The server's certificate from another CA: the client refuses it.
        other = Server(self.ctmp, "otherhost", [self.stores[0]],
                       dict(self.certs, host=self.certs["otherhost"], ca=self.certs["otherca"]))
        try:
            p, _ = self.fleet([other.addr], ["tcp"])
            self.assertEqual(p.returncode, 3, p.stderr)
            self.assertReport(p.stderr, other.addr, "unreachable: TLS: server certificate")
        finally:
            other.stop()

    def test_cap_reported_wholerecords(self):
        full = records(self.local([self.stores[0]]))
        self.assertGreater(len(full), 20)
        for extra, n in ((["--max-packets", "7"], 7), (["--max-bytes", "3000"], None)):
            with self.subTest(extra=extra):
                srv = Server(self.ctmp, "capped", [self.stores[0]], self.certs, extra)
                try:
                    p, got = self.fleet([srv.addr])
                    text = srv.text().decode()
                finally:
                    srv.stop()
                self.assertEqual(p.returncode, 3, p.stderr)
                recs = self.assertWholeBytes(got)
                if n is None:
                    self.assertLessEqual(len(got), 3000)
                    n = len(recs)
                    self.assertGreater(n, 0)
                    # The next record would have passed the cap.
                    self.assertGreater(len(got) + 16 + full[n].caplen, 3000)
                self.assertEqual(len(recs), n)
                self.assertEqual(key(recs), key(full[:n]))
                self.assertReport(p.stderr, srv.addr, f"over its cap after {n} packets")
                self.assertIn(" cut packets=", text)

    def assertWholeBytes(self, b):
        recs = records(b)
        self.assertEqual(len(b), 24 + sum(16 + r.caplen for r in recs))
        return recs

    def test_cap_trailer_over_raw_http(self):
        srv = Server(self.ctmp, "capped2", [self.stores[0]], self.certs, ["--max-packets", "3"])
        try:
            st, hd, body, tr = self.raw_get(srv.port, "/v1/packets?expr=")
        finally:
            srv.stop()
        self.assertEqual(st, 200)
        self.assertEqual(tr.get("linecap-status"), "cut")
        self.assertEqual(tr.get("linecap-packets"), "3")
        self.assertEqual(len(self.assertWholeBytes(body)), 3)
        st, hd, body, tr = self.raw_get(self.servers[0].port, "/v1/packets?expr=tcp")
        self.assertEqual(tr.get("linecap-status"), "complete")
        # Store a is microsecond pcap; the server always sends nanoseconds.
        self.assertEqual(body[:4], b"\x4d\x3c\xb2\xa1")
        self.assertEqual(key(records(body)), key(records(self.local([self.stores[0]], ["tcp"]))))

    # --- requests ----------------------------------------------------------

    def test_files_outside_refused(self):
        port = self.servers[0].port
        a, b = self.stores[0], self.stores[1]
        inside = sorted(f for f in os.listdir(a) if f.endswith(".pcap") and
                        not f.startswith("."))[0]
        link = os.path.join(a, "escape.pcap")
        os.symlink(os.path.join(b, sorted(os.listdir(b))[0]), link)
        self.addCleanup(os.unlink, link)
        q = urllib.parse.quote
        for bad in ["/etc/passwd", os.path.join(b, inside), a + "/../" + os.path.basename(b) +
                    "/" + inside, link, "relative.pcap", a]:
            with self.subTest(file=bad):
                st, _, body, _ = self.raw_get(port, "/v1/packets?file=" + q(bad, safe=""))
                self.assertEqual(st, 403, body)
                self.assertEqual(body.count(b"\n"), 1)
        # One file of the store: that file's answer; a removed one: counted.
        f = os.path.join(a, inside)
        st, hd, body, tr = self.raw_get(port, "/v1/packets?expr=tcp&file=" + q(f, safe="") +
                                        "&file=" + q(os.path.join(a, "gone.pcap"), safe=""))
        self.assertEqual(st, 200)
        self.assertEqual(hd.get("linecap-missing-files"), "1")
        self.assertEqual(tr.get("linecap-status"), "complete")
        want = run([CAPQ, "-r", f, "-w", "-", "tcp"]).stdout
        self.assertEqual(key(records(body)), key(records(want)))

    def test_planted_links_refused_and_not_read(self):
        # A served directory where someone planted a directory link and a
        # file link out of it, and an index that is a link: file= is opened
        # once beneath the served directory, never through a link, and the
        # index beside it the same way (a linked one is not read: scanned).
        a, b = self.stores[0], self.stores[1]
        inside = sorted(f for f in os.listdir(a) if f.endswith(".pcap") and
                        not f.startswith("."))[0]
        idx = "." + inside + ".idx"
        self.assertTrue(os.path.exists(os.path.join(a, idx)))
        d = self.path("served")
        for sub in ("real", "real2"):
            os.makedirs(os.path.join(d, sub))
            shutil.copy(os.path.join(a, inside), os.path.join(d, sub, inside))
        shutil.copy(os.path.join(a, idx), os.path.join(d, "real", idx))
        os.symlink(os.path.join(d, "real", idx), os.path.join(d, "real2", idx))
        os.symlink(b, os.path.join(d, "linkdir"))
        os.symlink(os.path.join(b, sorted(os.listdir(b))[0]), os.path.join(d, "esc.pcap"))
        srv = Server(self.ctmp, "planted", [d], self.certs)
        self.addCleanup(srv.stop)
        q = urllib.parse.quote
        b_file = sorted(f for f in os.listdir(b) if not f.startswith("."))[0]
        for bad in [os.path.join(d, "linkdir", b_file), os.path.join(d, "esc.pcap"),
                    os.path.join(d, "linkdir")]:
            with self.subTest(file=bad):
                st, _, body, _ = self.raw_get(srv.port, "/v1/packets?file=" + q(bad, safe=""))
                self.assertEqual(st, 403, body)
                self.assertEqual(body.count(b"\n"), 1)
                self.assertIn(b"symbolic link", body)
        want = key(records(run([CAPQ, "-r", os.path.join(a, inside), "-w", "-", "tcp"]).stdout))
        for sub in ("real", "real2"):
            with self.subTest(sub=sub):
                f = os.path.join(d, sub, inside)
                st, _, body, tr = self.raw_get(srv.port, "/v1/packets?expr=tcp&file=" +
                                               q(f, safe=""))
                self.assertEqual(st, 200, body)
                self.assertEqual(tr.get("linecap-status"), "complete")
                self.assertEqual(key(records(body)), want)
        # A regular file that is no capture: one line, and the server goes on.
        with open(os.path.join(d, "real", "notes.txt"), "w") as f:
            f.write("not a capture\n")
        st, _, body, _ = self.raw_get(srv.port, "/v1/packets?file=" +
                                      q(os.path.join(d, "real", "notes.txt"), safe=""))
        self.assertEqual(st, 500, body)
        self.assertEqual(body.count(b"\n"), 1, body)
        st, _, body, _ = self.raw_get(srv.port, "/v1/packets?expr=tcp&file=" +
                                      q(os.path.join(d, "real", inside), safe=""))
        self.assertEqual(st, 200, body)
        self.assertEqual(key(records(body)), want)
        log = srv.text()
        self.assertNotIn(f"real/{inside}: ".encode(), log)
        self.assertRegex(log, re.escape(f"real2/{inside}: ").encode() + rb".*symbolic links; "
                         rb"scanning")

    def test_names_refused_without_lookup(self):
        # libpcap would resolve these through the C library (DNS); the
        # server refuses before the resolver is asked, naming the name.
        port = self.servers[0].port
        q = urllib.parse.quote
        for expr, name in [("host example.invalid", "example.invalid"),
                           ("tcp and (host 198.18.0.1 or lookup.example.invalid)",
                            "lookup.example.invalid"),
                           ("net nets.example.invalid", "nets.example.invalid")]:
            with self.subTest(expr=expr):
                st, _, body, _ = self.raw_get(port, "/v1/packets?expr=" + q(expr, safe=""))
                self.assertEqual(st, 400, body)
                self.assertEqual(body.count(b"\n"), 1, body)
                self.assertIn(f"names are not looked up here: '{name}'".encode(), body)
        # Numbers, and services and protocols by name (local tables), are fine.
        for expr in ["host 198.18.0.1", "host 2001:db8::1", "port http", "tcp port 80",
                     "ip proto \\udp"]:
            with self.subTest(expr=expr):
                st, _, body, tr = self.raw_get(port, "/v1/packets?expr=" + q(expr, safe=""))
                self.assertEqual(st, 200, body)
                self.assertEqual(tr.get("linecap-status"), "complete")
                want = self.local([self.stores[0]], [expr])
                self.assertEqual(key(records(body)), key(records(want)))

    def test_bad_requests_one_line(self):
        port = self.servers[0].port
        for target, status in [("/v1/packets?expr=tcp%20port%20bogus", 400),
                               ("/v1/packets?since=abc", 400),
                               ("/v1/packets?since=99999999999999999999999", 400),
                               ("/v1/packets?expr=%zz", 400),
                               ("/v1/packets?what=1", 400),
                               ("/v1/other", 404)]:
            with self.subTest(target=target):
                st, _, body, _ = self.raw_get(port, target)
                self.assertEqual(st, status, body)
                self.assertEqual(body.count(b"\n"), 1, body)
        st, _, body, _ = self.raw_get(port, "/v1/packets", head_extra=b"X: " + b"a" * (1 << 20) +
                                      b"\r\n")
        self.assertEqual(st, 431)
        self.assertIn(b'expr="tcp port bogus"', self.servers[0].text())
        # The fan-out checks the expression itself: one line, exit 1.
        p, _ = self.fleet([self.servers[0].addr], ["tcp", "port", "bogus"])
        self.assertEqual(p.returncode, 1)
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)

    def test_encoded_escapes_refused(self):
        # Percent-encoding is undone before the path checks: an encoded
        # ".." or "/" is the same path and refused the same way; a NUL,
        # which would cut the path the kernel sees, is refused outright.
        port = self.servers[0].port
        a, b = self.stores[0], self.stores[1]
        inside = sorted(f for f in os.listdir(b) if f.endswith(".pcap") and
                        not f.startswith("."))[0]
        up = a + "/%2E%2E/" + os.path.basename(b) + "/" + inside
        for target, status in [("/v1/packets?file=" + up.replace("/", "%2F"), 403),
                               ("/v1/packets?file=" + up, 403),
                               ("/v1/packets?file=" + a + "/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 403),
                               ("/v1/packets?file=" + a + "/" + inside + "%00.idx", 400),
                               ("/v1/packets?expr=tcp%00", 400)]:
            with self.subTest(target=target):
                st, _, body, _ = self.raw_get(port, target)
                self.assertEqual(st, status, body)
                self.assertEqual(body.count(b"\n"), 1, body)

    def test_fleet_ca_certificates_refused_when_expired_or_not_for_clients(self):
        # Signed by the fleet CA, yet no client: one whose validity ended,
        # and a server certificate (serverAuth only) offered as a client's.
        t = self.ctmp
        make_cert(t, "hostonly", "ca", san="IP:127.0.0.1")
        capdtest.openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-nodes", "-keyout", "expired.key", "-out", "expired.csr", "-subj",
                         "/CN=expired", cwd=t)
        with open(os.path.join(t, "expired.cnf"), "w") as f:
            f.write("[ca]\ndefault_ca=c\n[c]\ndatabase=expired.db\nnew_certs_dir=.\n"
                    "serial=expired.serial\ndefault_md=sha256\npolicy=p\n"
                    "unique_subject=no\n[p]\ncommonName=supplied\n[x]\n"
                    "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
        open(os.path.join(t, "expired.db"), "w").close()
        with open(os.path.join(t, "expired.serial"), "w") as f:
            f.write("1000\n")
        capdtest.openssl("ca", "-batch", "-config", "expired.cnf", "-cert", "ca.pem", "-keyfile",
                         "ca.key", "-in", "expired.csr", "-out", "expired.pem", "-notext",
                         "-extensions", "x", "-startdate", "20200101000000Z", "-enddate",
                         "20200102000000Z", cwd=t)
        self.certs["expired"] = (self.cpath("expired.pem"), self.cpath("expired.key"))
        self.certs["hostonly"] = (self.cpath("hostonly.pem"), self.cpath("hostonly.key"))
        srv = self.servers[0]
        for who in ("expired", "hostonly"):
            with self.subTest(who=who):
                before = srv.text().count(b"refused at the handshake")
                with self.assertRaises((ssl.SSLError, ConnectionError, IndexError, ValueError)):
                    self.raw_get(srv.port, "/v1/packets?expr=tcp", who=who)
                self.assertTrue(capdtest.wait_until(
                    lambda: srv.text().count(b"refused at the handshake") > before, 30),
                    srv.text())
                why = {"expired": "certificate has expired",
                       "hostonly": "unsuitable certificate purpose"}[who]
                self.assertIn(f"refused at the handshake: certificate verify failed ({why})"
                              .encode(), srv.text())
        # The fleet CA's client certificate still answers (the control).
        st, _, _, tr = self.raw_get(srv.port, "/v1/packets?expr=tcp")
        self.assertEqual(st, 200)
        self.assertEqual(tr.get("linecap-status"), "complete")

    def test_slow_client_does_not_hold_the_server(self):
        # One request at a time; a client trickles its handshake a byte a
        # second. The head deadline ends it and the next client is served.
        srv = Server(self.ctmp, "one", [self.stores[0]], self.certs, ["--max-clients", "1"])
        closed = threading.Event()

        def trickle():
            try:
                with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as c:
                    hello = b"\x16\x03\x01\x02\x00" + b"\x01" * 512
                    for b in hello[:90]:
                        c.sendall(bytes([b]))
                        readable, _, _ = select.select([c], [], [], 1)
                        if readable and c.recv(1) == b"":
                            break
                    else:
                        return
            except OSError:
                pass
            closed.set()

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        time.sleep(1)
        try:
            st, _, body, tr = self.raw_get(srv.port, "/v1/packets?expr=tcp")
        finally:
            t.join(timeout=120)
            srv.stop()
        self.assertEqual(st, 200)
        self.assertEqual(tr.get("linecap-status"), "complete")
        self.assertTrue(closed.is_set(), "the trickling client was not cut off")

    def test_option_errors_one_line(self):
        t = self.tls()
        cases = [[CAPQ, "--serve", "127.0.0.1:0"] + t,                       # no -r
                 [CAPQ, "--serve", "127.0.0.1:0", "-r", self.stores[0]],     # no TLS files
                 [CAPQ, "--serve", "127.0.0.1:0", "-r", self.stores[0], "--cert",
                  self.certs["ca"], "--key", self.certs["client"][1], "--ca", self.certs["ca"]],
                 [CAPQ, "--serve", "nowhere:1", "-r", self.stores[0]] + t,
                 [CAPQ, "--serve", "127.0.0.1:0", "-r", self.stores[0], "--max-bytes", "1Q"] + t,
                 [CAPQ, "--fleet-hosts", "127.0.0.1", "tcp"] + t,
                 [CAPQ, "--fleet-hosts", "127.0.0.1:1", "-r", self.stores[0]] + t]
        for cmd in cases:
            with self.subTest(cmd=cmd[1:]):
                p = run(cmd, timeout=30)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)


if __name__ == "__main__":
    capdtest.main()
