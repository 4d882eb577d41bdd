"""
Start-up benchmark: the time from `twistd -n allworx` starting to every
configured port answering, in an office of 1,000 users, 5,000 DHCP leases
(each a DNS name) and a 100,000-message mailbox (SPEC 14; issue 22: under
2 s), and beside it each peer's own start-up in the same run: dnsmasq (DNS
and DHCP, the same leases), Kea (DHCP, the same leases), Postfix (SMTP),
Dovecot (POP3 and IMAP, the same mailbox), Kamailio (SIP), whichever are
installed.

    python -m bench.startup [--users 1000] [--leases 5000] [--messages 100000]
                            [--rounds 3] [--work /tmp/allworx-bench-startup]

"Answering" means a real answer from the LAN side (bench/office.py: the
server in its own namespace, the probes from a client namespace over a veth
pair): a DNS answer, a DHCP OFFER to a relayed DISCOVER, the SMTP, POP3 and
IMAP greetings, an answer to SIP OPTIONS, an HTTP status line from the admin
port, an LDAP bind result, an NTP reply; the TLS-only ports (465, 993, 995,
5061) accept a connection. The figure is the median of the rounds (the
first start, which makes the certificates, is printed and not counted).
Needs root.
"""

import argparse
import os
import select
import socket
import statistics
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import common, office  # noqa: E402
from bench.office import CLIENT_IP, DOMAIN, HOSTNAME, SERVER_IP  # noqa: E402
from bench.startpeers import PEERS  # noqa: E402

GOAL_S = 2.0
PROBE_EVERY = 0.01


# ---------------------------------------------------------------- the probes

def dns_query(name=HOSTNAME + "." + DOMAIN, qid=0x5151):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)


def dhcp_discover(mac=b"\x02\xaa\xbb\xcc\xdd\x01", xid=0x5eed):
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 1, xid, 0, 0, b"\0" * 4, b"\0" * 4,
                       b"\0" * 4, socket.inet_aton(CLIENT_IP), mac + b"\0" * 10, b"", b"")
    return head + b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\xff"


def sip_options(port):
    return ("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bKstart%d\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:probe@%s>;tag=1\r\nTo: <sip:%s>\r\n"
            "Call-ID: start%d@%s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n" % (
                SERVER_IP, CLIENT_IP, port, time.monotonic_ns(), CLIENT_IP, SERVER_IP,
                time.monotonic_ns(), CLIENT_IP)).encode()


NTP_REQUEST = b"\x23" + b"\0" * 47
LDAP_BIND = bytes.fromhex("300c020101600702010304008000")
HTTP_GET = b"GET /login HTTP/1.0\r\nHost: allworx\r\n\r\n"

# what -> (transport, port, first bytes to send or None, whether any bytes must come back)
ALLWORX_PORTS = {
    "dns": ("udp", 53, lambda p: dns_query()), "dhcp": ("dhcp", 67, None),
    "ntp": ("udp", 123, lambda p: NTP_REQUEST), "sip": ("udp", 5060, sip_options),
    "smtp": ("tcp", 25, None), "submission": ("tcp", 587, None), "pop3": ("tcp", 110, None),
    "imap": ("tcp", 143, None), "web": ("tcp", 8080, HTTP_GET), "corp": ("tcp", 80, HTTP_GET),
    "ldap": ("tcp", 389, LDAP_BIND), "smtps": ("connect", 465, None),
    "pop3s": ("connect", 995, None), "imaps": ("connect", 993, None),
    "sip-tls": ("connect", 5061, None),
}


class Probe:
    """One port asked until it answers: `answered` is the monotonic time it first did."""

    def __init__(self, what, kind, port, payload):
        self.what, self.kind, self.port, self.payload = what, kind, port, payload
        self.sock = None
        self.sent = 0.0
        self.state = None
        self.answered = None

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def poke(self, now):
        """(Re)send or (re)connect when due."""
        again = 0.2 if self.kind == "dhcp" else PROBE_EVERY * 5   # (DHCP: under its client rate)
        if self.answered is not None or now - self.sent < again and self.sock is not None:
            return
        self.sent = now
        if self.kind in ("udp", "dhcp"):
            if self.sock is None:
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self.sock.bind((CLIENT_IP, 67 if self.kind == "dhcp" else 0))
                self.sock.setblocking(False)
            data = dhcp_discover() if self.kind == "dhcp" else self.payload(self.sock.getsockname()[1])
            try:
                self.sock.sendto(data, (SERVER_IP, self.port))
            except OSError:
                pass
            return
        self.close()
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.connect_ex((SERVER_IP, self.port))
        self.state = "connecting"

    def wants_write(self):
        return self.kind not in ("udp", "dhcp") and self.state == "connecting"

    def writable(self, now):
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.close()
            self.sent = now - PROBE_EVERY * 4     # refused: try again soon
            return
        if self.kind == "connect":
            self.answered = now
            self.close()
            return
        if self.payload:
            self.sock.send(self.payload)
        self.state = "reading"

    def readable(self, now):
        try:
            data = self.sock.recv(4096)
        except OSError:
            data = b""
        if data:
            self.answered = now
            self.close()
        elif self.kind not in ("udp", "dhcp"):
            self.close()


def wait_answers(ports, proc, began, timeout=60.0):
    """Probe every port until each answers: {what: seconds after `began`}; raises on timeout."""
    probes = [Probe(what, kind, port, payload) for what, (kind, port, payload) in ports.items()]
    deadline = began + timeout
    try:
        while True:
            now = time.monotonic()
            waiting = [p for p in probes if p.answered is None]
            if not waiting:
                return {p.what: p.answered - began for p in probes}
            if now > deadline or (proc is not None and proc.poll() is not None):
                raise RuntimeError("not answering after %.1f s: %s%s" % (
                    now - began, ", ".join("%s (%d)" % (p.what, p.port) for p in waiting),
                    "" if proc is None or proc.poll() is None else
                    " (the server exited with %s)" % proc.returncode))
            for p in waiting:
                p.poke(now)
            live = [p for p in waiting if p.sock is not None]
            r, w, _ = select.select([p for p in live if not p.wants_write()],
                                    [p for p in live if p.wants_write()], [], PROBE_EVERY)
            now = time.monotonic()
            for p in w:
                p.writable(now)
            for p in r:
                if p.sock is not None:
                    p.readable(now)
    finally:
        for p in probes:
            p.close()


# ---------------------------------------------------------------- allworx

def allworx_round(conf, work, n):
    log = os.path.join(work, "allworx-%d.log" % n)
    proc, began = office.start_server(conf, log)
    try:
        with common.Flame(proc.pid, "startup-%d" % n, 3):
            times = wait_answers(ALLWORX_PORTS, proc, began)
        return times, common.peak_rss_mb(proc.pid)
    except RuntimeError as e:
        raise SystemExit("allworx: %s; see %s" % (e, log))
    finally:
        office.stop_server(proc)


def show(name, times):
    last = max(times, key=times.get)
    print("  %-9s every port answering after %.3f s (last: %s); %s" % (
        name, times[last], last, ", ".join("%s %.2f" % (k, v) for k, v in sorted(
            times.items(), key=lambda kv: kv[1]))), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--leases", type=int, default=5000)
    parser.add_argument("--records", type=int, default=0)
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", default="/tmp/allworx-bench-startup")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args(argv)

    pool = None if office.wide_pool_allowed(args.leases) else "10-250"
    if pool:
        print("note: tap.conf does not take a pool of %d addresses yet: the pool is host "
              "numbers %s, the journal's leases outside it are restored all the same" % (
                  args.leases, pool), flush=True)
    conf = office.build(os.path.join(args.work, "office"), args.users, args.leases, args.records,
                        args.messages, pool)
    office.up()
    try:
        office.enter_client_namespace()
        print("office: %d users, %d leases, %d-message mailbox; load %s" % (
            args.users, args.leases, args.messages, common.load()), flush=True)
        first, _ = allworx_round(conf, args.work, 0)
        show("first", first)
        rounds, peaks = [], []
        for n in range(1, args.rounds + 1):
            times, peak = allworx_round(conf, args.work, n)
            show("round %d" % n, times)
            rounds.append(max(times.values()))
            peaks.append(peak)
        allworx_s = statistics.median(rounds)
        allworx_mb = max(peaks)
        peers = {}
        if not args.no_peers:
            for peer in PEERS:
                outcome = peer.measure(args, os.path.join(args.work, peer.name), args.rounds)
                if outcome is None:
                    continue
                peers[peer.name] = outcome
                print("  %-9s %s answering after %.3f s (median of %d), peak %.1f MB" % (
                    peer.name, peer.what, outcome[0], args.rounds, outcome[1]), flush=True)
    finally:
        office.down()
    print("allworx: every port answering after %.3f s (median of %d), peak %.1f MB; load %s" % (
        allworx_s, args.rounds, allworx_mb, common.load()), flush=True)
    slowest = max(peers, key=lambda p: peers[p][0]) if peers else None
    if peers:
        print("peers: %s; together (one after another) %.3f s, %.1f MB" % (
            ", ".join("%s %.3f s" % (p, peers[p][0]) for p in peers),
            sum(v[0] for v in peers.values()), sum(v[1] for v in peers.values())), flush=True)
        print(common.memory_line("start-up", allworx_mb, "the peers together",
                                 sum(v[1] for v in peers.values())), flush=True)
    common.result("start-up to every port answering", allworx_s,
                  peers[slowest][0] if slowest else None,
                  "slowest peer (%s)" % slowest if slowest else None, "s", "< 2 s",
                  allworx_mb=allworx_mb,
                  peer_mb=sum(v[1] for v in peers.values()) if peers else None,
                  higher_is_better=False, holds=allworx_s < GOAL_S,
                  note="%d users, %d leases, %d messages" % (args.users, args.leases, args.messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
