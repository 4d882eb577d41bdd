"""
Scale benchmark: the cost of the office's everyday operations at 1x, 10x and
100x its size (SPEC 14, issue 22: each within 2x of its small-office figure).

    python -m bench.scale [--sizes 1,10,100] [--repeat 20] [--work /tmp/allworx-bench-scale]
                          [--only 'lease granted']

1x is 10 users, 50 DHCP leases, 20 [host] records, 1,000 messages in one
mailbox; 10x and 100x multiply each (100x: 1,000 users, 5,000 leases, 2,000
records, 100,000 messages). At each size the whole server runs (bench/office.py:
its own namespace, probed over a veth pair from a client namespace), and
each operation is timed over `--repeat` tries (the median, in ms):

- config change: `PUT /api/v1/aliases/scale` (a change written to tap.conf
  and applied live, as the pages make it), HTTPS with HTTP Basic
- lease + DNS name: a relayed DISCOVER, OFFER, REQUEST with a new host name,
  ACK, then the DNS answer for that name from the zone
- POP3: log in over POP3S, STAT, LIST 1 (the maildrop opened at log-in);
  the full LIST (one line a message) is printed beside, not compared
- IMAP: SELECT INBOX and LIST "" "*" after LOGIN over IMAPS
- the Status page (`GET /status` in a logged-in page session)
- the API's lists: `GET /api/v1/users`, `/api/v1/hosts`, `/api/v1/dhcp/leases`,
  a page of 10 (`?limit=10`: the whole list of users at 1x; the default page
  is 100, so a bigger office gets more per request, never the whole list)

The firewall's connection log is not grown: it keeps the newest 2,000
decisions whatever the office (firewall.service.LOG_SIZE). Needs root.
"""

import argparse
import base64
import http.client
import os
import socket
import ssl
import statistics
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import common, office  # noqa: E402
from bench.office import CLIENT_IP, DOMAIN, MAILBOX_USER, PASSWORD, SERVER_IP  # noqa: E402

BASE = {"users": 10, "leases": 50, "records": 20, "messages": 1000}
PAGE = 10           # the API's lists: a page of this many (the whole list of users at 1x)
GOAL = 2.0
BASIC = "Basic " + base64.b64encode(("admin:%s" % PASSWORD).encode()).decode()


def tls_context(work):
    ctx = ssl.create_default_context(cafile=os.path.join(work, "data", "tls", "ca.crt"))
    ctx.check_hostname = False
    return ctx


# ---------------------------------------------------------------- web

class Web:
    """One keep-alive HTTPS connection to the admin port."""

    def __init__(self, ctx):
        self.conn = http.client.HTTPSConnection(SERVER_IP, 8080, context=ctx, timeout=30)
        self.cookie = None

    def call(self, method, path, body=None, headers=None, basic=True):
        h = dict(headers or {})
        if basic:
            h["Authorization"] = BASIC
        if self.cookie:
            h["Cookie"] = self.cookie
        self.conn.request(method, path, body=body, headers=h)
        r = self.conn.getresponse()
        data = r.read()
        cookie = r.getheader("set-cookie")
        if cookie:
            self.cookie = cookie.split(";")[0]
        if r.status >= 400:
            raise RuntimeError("%s %s: %d %s" % (method, path, r.status, data[:300]))
        return r.status, data

    def login(self):
        import re
        from urllib.parse import urlencode
        _, page = self.call("GET", "/login", basic=False)
        csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
        self.call("POST", "/login", urlencode({"csrf": csrf, "next": "/status", "username": "admin",
                                               "password": PASSWORD}),
                  {"Content-Type": "application/x-www-form-urlencoded"}, basic=False)


# ---------------------------------------------------------------- DHCP + DNS

def _dhcp(kind, mac, xid, extra=b""):
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 1, xid, 0, 0, b"\0" * 4, b"\0" * 4,
                       b"\0" * 4, socket.inet_aton(CLIENT_IP), mac + b"\0" * 10, b"", b"")
    return head + b"\x63\x82\x53\x63" + bytes([53, 1, kind]) + extra + b"\xff"


def _options(packet):
    out, i = {}, 240
    while i < len(packet) and packet[i] != 255:
        if packet[i] == 0:
            i += 1
            continue
        out[packet[i]] = packet[i + 2:i + 2 + packet[i + 1]]
        i += 2 + packet[i + 1]
    return out


def _reply(sock, xid, kind):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(4096)
        if len(data) > 240 and struct.unpack("!I", data[4:8])[0] == xid and \
                _options(data).get(53) == bytes([kind]):
            return data
    raise RuntimeError("no DHCP %s for xid %x" % ({2: "OFFER", 5: "ACK"}[kind], xid))


def _dns_a(sock, name, qid):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    sock.sendto(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\1\0\1",
                (SERVER_IP, 53))
    sock.settimeout(5)
    while True:
        data = sock.recv(4096)
        if struct.unpack("!H", data[:2])[0] == qid:
            return struct.unpack("!H", data[6:8])[0]    # answers


class LeaseAndName:
    """A lease granted to a new client with its host name, then that name from the zone."""

    def __init__(self):
        self.dhcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.dhcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.dhcp.bind((CLIENT_IP, 67))
        self.dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.n = 0

    def __call__(self):
        self.n += 1
        n, xid = self.n, 0x70000000 + self.n + int(time.time()) % 65536 * 4096
        mac = struct.pack("!HI", 0x02ee, n + (os.getpid() << 12) % (1 << 31))
        host = "scale%d-%d" % (os.getpid() % 1000, n)
        self.dhcp.sendto(_dhcp(1, mac, xid, bytes([12, len(host)]) + host.encode()), (SERVER_IP, 67))
        offer = _reply(self.dhcp, xid, 2)
        server_id = _options(offer)[54]
        self.dhcp.sendto(_dhcp(3, mac, xid, bytes([50, 4]) + offer[16:20] + bytes([54, 4]) +
                               server_id + bytes([12, len(host)]) + host.encode()), (SERVER_IP, 67))
        _reply(self.dhcp, xid, 5)
        for _ in range(100):
            if _dns_a(self.dns, "%s.%s" % (host, DOMAIN), n & 0xffff):
                return
            time.sleep(0.005)
        raise RuntimeError("%s.%s never answered from the zone" % (host, DOMAIN))


# ---------------------------------------------------------------- POP3 and IMAP

def _lines(f, until):
    out = []
    while True:
        line = f.readline()
        if not line:
            raise RuntimeError("connection closed; got %r" % out[-3:])
        out.append(line)
        if until(line):
            return out


def pop3_session(ctx, full_list=False):
    """Log in, STAT, LIST 1 (or the whole LIST): seconds from PASS to the last answer."""
    with socket.create_connection((SERVER_IP, 995), timeout=60) as raw:
        with ctx.wrap_socket(raw) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"USER %s\r\n" % MAILBOX_USER.encode())
            f.readline()
            began = time.monotonic()
            s.sendall(b"PASS %s\r\n" % PASSWORD.encode())
            line = f.readline()
            if not line.startswith(b"+OK"):
                raise RuntimeError("POP3 PASS: %r" % line)
            s.sendall(b"STAT\r\n" + (b"LIST\r\n" if full_list else b"LIST 1\r\n"))
            f.readline()
            if full_list:
                _lines(f, lambda l: l == b".\r\n")
            else:
                f.readline()
            took = time.monotonic() - began
            s.sendall(b"QUIT\r\n")
            return took


class Imap:
    """One logged-in IMAPS session: SELECT INBOX and LIST "" "*", timed."""

    def __init__(self, ctx):
        raw = socket.create_connection((SERVER_IP, 993), timeout=60)
        self.s = ctx.wrap_socket(raw)
        self.f = self.s.makefile("rb")
        self.f.readline()
        self.tag = 0
        self.command("LOGIN %s %s" % (MAILBOX_USER, PASSWORD))

    def command(self, text):
        self.tag += 1
        tag = b"a%d" % self.tag
        self.s.sendall(tag + b" " + text.encode() + b"\r\n")
        lines = _lines(self.f, lambda l: l.startswith(tag + b" "))
        if not lines[-1].startswith(tag + b" OK"):
            raise RuntimeError("IMAP %s: %r" % (text, lines[-1]))
        return lines

    def __call__(self):
        self.command("SELECT INBOX")
        self.command('LIST "" "*"')

    def close(self):
        self.s.close()


# ---------------------------------------------------------------- the run

def timed(op, repeat, warm=2):
    for _ in range(warm):
        op()
    out = []
    for _ in range(repeat):
        began = time.monotonic()
        extra = op()
        out.append(extra if isinstance(extra, float) else time.monotonic() - began)
    return statistics.median(out) * 1000


def measure(size, args):
    sizes = {k: v * size for k, v in BASE.items()}
    work = os.path.join(args.work, "x%d" % size)
    pool = None if office.wide_pool_allowed(sizes["leases"]) else "10-250"
    conf = office.build(work, sizes["users"], sizes["leases"], sizes["records"], sizes["messages"], pool)
    proc, began = office.start_server(conf, os.path.join(work, "allworx.log"))
    try:
        from bench.startup import ALLWORX_PORTS, wait_answers
        up = max(wait_answers(ALLWORX_PORTS, proc, began).values())
        ctx = tls_context(work)
        web = Web(ctx)
        aliases = iter(range(10 ** 6))

        def change():
            web.call("PUT", "/api/v1/aliases/scale", ('{"to": "%s"}' % office.user_name(
                1 + next(aliases) % 2)).encode(), {"Content-Type": "application/json"})

        pages = Web(ctx)
        pages.login()
        imap = Imap(ctx)
        ops = [("config change applied live", change),
               ("lease granted with its DNS name", LeaseAndName()),
               ("POP3 log-in, STAT, LIST 1", lambda: pop3_session(ctx)),
               ("IMAP SELECT and LIST", imap),
               ("Status page", lambda: pages.call("GET", "/status", basic=False)),
               ("API users list", lambda: web.call("GET", "/api/v1/users?limit=%d" % PAGE)),
               ("API hosts list", lambda: web.call("GET", "/api/v1/hosts?limit=%d" % PAGE)),
               ("API leases list", lambda: web.call("GET", "/api/v1/dhcp/leases?limit=%d" % PAGE))]
        if args.only:
            ops = [(name, op) for name, op in ops if args.only.lower() in name.lower()]
            if not ops:
                raise SystemExit("--only %r names no row" % args.only)
        figures = {}
        for name, op in ops:
            with common.Flame(proc.pid, "scale-x%d-%s" % (size, name.split()[0].lower()), 5):
                figures[name] = timed(op, args.repeat)
        full_list = 0.0 if args.only else timed(lambda: pop3_session(ctx, full_list=True), 3, warm=1)
        imap.close()
        peak = common.peak_rss_mb(proc.pid)
    finally:
        office.stop_server(proc)
    print("x%-3d %s; up after %.2f s, peak %.0f MB; POP3 whole LIST %.1f ms; load %s" % (
        size, ", ".join("%d %s" % (v, k) for k, v in sizes.items()), up, peak, full_list,
        common.load()), flush=True)
    for name, ms in figures.items():
        print("      %-34s %8.2f ms" % (name, ms), flush=True)
    return figures, peak


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--work", default="/tmp/allworx-bench-scale")
    parser.add_argument("--only", default="", help="only the rows whose name holds this text")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    office.up()
    results = {}
    try:
        office.enter_client_namespace()
        for size in sizes:
            results[size] = measure(size, args)
    finally:
        office.down()
    small, large = min(sizes), max(sizes)
    if small == large:
        return 0
    for name, ms in results[large][0].items():
        base = results[small][0][name]
        common.result("scale: %s at %dx" % (name, large), ms, base, "%dx office" % small, "ms",
                      "<= 2x", allworx_mb=results[large][1], peer_mb=results[small][1],
                      holds=ms <= GOAL * base)     # the ratio printed is the growth, 100x over 1x
    return 0


if __name__ == "__main__":
    sys.exit(main())
