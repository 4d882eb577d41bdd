# -*- test-case-name: allworx.tests.lab.test_dhcp -*-
"""
DHCP benchmark: completed DISCOVER-OFFER-REQUEST-ACK exchanges per second,
allworx against Kea (kea-dhcp4, memfile) and dnsmasq, with the same pool,
driven by perfdhcp (Debian package kea-admin). Run as root:

    .venv/bin/python -m bench.dhcp [--seconds 4] [--rates 1000,2000,...]

Addresses. The office is the lab's documentation range 192.168.2.0/24,
kept inside two namespaces of its own joined by a veth pair, with no route
out: awdb-srv (the server under test, lan0 192.168.2.254/24) and awdb-cli
(perfdhcp, eth0 192.168.2.253/24). perfdhcp acts as a relay agent on the LAN
(giaddr 192.168.2.253). All three servers get the same pool, 192.168.2.1 -
192.168.2.240 (192.168.2.251, handed out as router and DNS server, and the
two above stay outside it). allworx gets it as a real office does, from
`[dhcp] range = 1-240` in tap.conf. (Pools larger than a /24, up to the
whole LAN subnet, are the unit tests' business: test rules forbid other
address ranges here.)

Clients. Fresh MACs would exhaust 240 addresses in a fraction of a second,
so perfdhcp simulates 200 distinct clients (-R 200) and picks among them:
after the first exchanges clients come back, each server finds their lease
and re-offers the address, and the REQUEST renews the lease with a new
expiry. Every exchange is still the full DISCOVER-OFFER-REQUEST-ACK, and
allworx still journals each ACK's lease (the new expiry) and waits for its
fsync before sending the ACK, renewal or not (one group commit for the ACKs
of a reactor turn). Kea appends each renewal to its memfile lease file
without fsync. dnsmasq rewrites its whole lease file and fsyncs it after
each lease change, in its one thread (strace: an ftruncate and an fsync per
ACK), which is what bounds its figure. 200 clients leave the pool headroom
for offers still outstanding.

The per-client limit. allworx limits each client (MAC) to `[dhcp]
client_rate` packets a second, bursts of three times that, against a
misbehaving or hostile host (default 10). At 20,000 exchanges a second each
of the 200 simulated clients sends 200 packets a second on average, far
beyond what a real device sends, so the bench's tap.conf sets `client_rate
= 400` (bursts of 1,200): the limiter runs on every packet, so its cost stays
in the figure, and no client of the load reaches it. Kea and dnsmasq
have no such limit. Nothing is patched: the server is the product as
configured by that tap.conf (the LAN-bound socket, the decisions, the lease
journal with its fsync before each ACK). dnsmasq runs with --no-ping (by
default it pings each address before offering it and then manages a handful
of exchanges a second; neither Kea nor allworx probe) and --quiet-dhcp
(allworx logs at most 20 lease lines a second, Kea only warnings). Nothing
else changes between them.

Memory: each server's peak resident memory (VmHWM of its process tree, the
highest over its steps) is printed beside its figure. `--profile DIR` (or
$ALLWORX_BENCH_PROFILE) keeps a py-spy flame graph of allworx under load
(dhcp-allworx.svg: its last step).

For each server the rate is stepped up; the figure is the highest number of
completed 4-way exchanges per second (ACKs received / seconds) with under
0.1% of the DISCOVERs and REQUESTs unanswered. Each step starts the server
afresh with an empty lease store.

Durability: allworx is killed with SIGKILL halfway through a perfdhcp run,
then each client's ACKs (perfdhcp's lease list) are checked against the
journal: every ACKed (address, MAC) must be in the replayed journal, and
each client must have at least as many bind records on disk as ACKs it
received, renewals included (the run is kept short of the journal's
compaction threshold so that every record is still there to count).
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench import common
from bench.common import netns_down, nsx, sh

PREFIX = "awdb"
SRV, CLI = PREFIX + "-srv", PREFIX + "-cli"
# The lab's LAN range, in the benchmark's own namespaces (see the module docstring).
NETWORK = "192.168.2.0"
SERVER_IP, RELAY_IP, PREFIXLEN = "192.168.2.254", "192.168.2.253", 24
NETMASK = "255.255.255.0"
ROUTER_IP = "192.168.2.251"          # handed out as router and DNS server; nothing answers
HOSTS = (1, 240)                     # the pool as host numbers (allworx's range)
POOL = ("192.168.2.1", "192.168.2.240")  # the same pool as addresses (Kea, dnsmasq)
CLIENTS = 200                        # perfdhcp -R: distinct clients, fewer than the pool
CLIENT_RATE = 400                    # [dhcp] client_rate in allworx's tap.conf
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PERFDHCP = "/usr/sbin/perfdhcp"
MAX_DROP = 0.001
# perfdhcp's threads: "multi" reads replies in a thread of its own, and its
# UDP socket gets a 4 MB receive buffer (bench/rcvbuf.c, preloaded; the
# default 208 KB holds some 100 replies). Otherwise a burst of ACKs (allworx
# sends those of one journal commit together; a commit waits for its fsync,
# which the machine's other work can stretch to tens of milliseconds) fills
# perfdhcp's socket: the server has answered every request and perfdhcp
# counts some as unanswered. The step lines show both sides' socket overflows.
THREAD_MODE = "multi"
ROW = "DHCP 4-way exchanges/s, durable (perfdhcp)"
GOAL = 1.5                           # allworx / Kea

ALLWORX_CONF = """\
[system]
domain = example.com
data_dir = {data}
[lan]
interface = lan0
address = {server}/{prefixlen}
gateway = {router}
[wan]
mode = disabled
[security]
mode = lan-only
[dhcp]
range = {first}-{last}
lease_time = 1h
client_rate = {client_rate}
[dns]
primary = {router}
[web]
admin_password = $argon2id$v=19$m=65536,t=3,p=4$ERLlCFcNeGK550IgXEvC6g$wjiY1y6LH8GV9JTqJGT4odM/ewS7TCrb4fLs23rAQ64
"""


def down():
    """Remove the benchmark's namespaces (and with them the veth pair)."""
    netns_down(SRV, CLI)


def up():
    common.two_namespaces(SRV, CLI, "%s/%d" % (SERVER_IP, PREFIXLEN), "%s/%d" % (RELAY_IP, PREFIXLEN))


# ---------------------------------------------------------------- the servers

def serve_allworx(conf_path):
    """
    In the server namespace: the allworx DHCP service alone, as tap.conf
    configures it (pool, lease time, per-client rate: module docstring).
    """
    sys.path.insert(0, ROOT)
    from twisted.internet import reactor
    from twisted.logger import FileLogObserver, formatEventAsClassicLogText, globalLogBeginner
    from allworx.config import load_config
    from allworx.office import Office
    from allworx.protocols.dhcp.service import DhcpService

    log_file = open(conf_path + ".log", "a")
    globalLogBeginner.beginLoggingTo([FileLogObserver(log_file, formatEventAsClassicLogText)])
    office = Office(load_config(conf_path))
    svc = DhcpService(office)
    svc.startService()
    print("status", office.status["dhcp"].state, office.status["dhcp"].detail, flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)

    def counters():
        from allworx.protocols.dhcp import metrics
        print("counters", json.dumps(metrics.COUNTS), "commit", metrics.COMMIT.collect()[0]
              .samples[-2:], flush=True)
    reactor.addSystemEventTrigger("after", "shutdown", counters)
    signal.signal(signal.SIGTERM, lambda *a: reactor.callFromThread(reactor.stop))
    reactor.run()


class Server:
    """One DHCP server under test, started fresh in the server namespace."""

    name = None

    def __init__(self, scratch):
        self.dir = os.path.join(scratch, self.name)
        self.proc = None
        self.peak_mb = 0.0   # the highest peak RSS over the steps (MB, process tree)

    def note_memory(self):
        """Read the running server's peak RSS (before stopping it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.peak_mb = max(self.peak_mb, common.peak_rss_mb(self.proc.pid))

    def start(self):
        if os.path.exists(self.dir):
            shutil.rmtree(self.dir)
        os.makedirs(self.dir)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", SRV] + self.argv(), cwd=ROOT,
            stdout=open(os.path.join(self.dir, "out.log"), "w"), stderr=subprocess.STDOUT,
            env=dict(os.environ, KEA_PIDFILE_DIR=self.dir, KEA_LOCKFILE_DIR=self.dir),
            start_new_session=True)
        self.wait_ready()

    def wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("%s exited: %s" % (self.name, self.output()[-2000:]))
            listening = nsx(SRV, "ss", "-lunH", "sport", "= :67").stdout
            if listening.strip():
                time.sleep(0.3)
                return
            time.sleep(0.05)
        raise SystemExit("%s did not listen on port 67: %s" % (self.name, self.output()[-2000:]))

    def output(self):
        with open(os.path.join(self.dir, "out.log")) as f:
            return f.read()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


class Allworx(Server):
    name = "allworx"

    def argv(self):
        conf = os.path.join(self.dir, "tap.conf")
        with open(conf, "w") as f:
            f.write(ALLWORX_CONF.format(data=os.path.join(self.dir, "data"), server=SERVER_IP,
                                        prefixlen=PREFIXLEN, router=ROUTER_IP,
                                        first=HOSTS[0], last=HOSTS[1],
                                        client_rate=CLIENT_RATE))
        return [sys.executable, "-m", "bench.dhcp", "--serve", conf]

    def leases(self):
        path = os.path.join(self.dir, "data", "dhcp", "leases.journal")
        with open(path, "rb") as f:
            return sum(1 for _ in f)


class Kea(Server):
    name = "kea"

    def argv(self):
        conf = os.path.join(self.dir, "kea-dhcp4.json")
        with open(conf, "w") as f:
            json.dump({"Dhcp4": {
                "interfaces-config": {"interfaces": ["lan0"], "dhcp-socket-type": "udp"},
                "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 0,
                                   "name": os.path.join(self.dir, "leases4.csv")},
                "valid-lifetime": 3600,
                "subnet4": [{"id": 1, "subnet": "%s/%d" % (NETWORK, PREFIXLEN),
                             "pools": [{"pool": "%s - %s" % POOL}],
                             "option-data": [
                                 {"name": "routers", "data": ROUTER_IP},
                                 {"name": "domain-name-servers", "data": ROUTER_IP},
                                 {"name": "domain-name", "data": "example.com"}]}],
                "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                             "output_options": [{"output": os.path.join(self.dir, "kea.log")}]}],
            }}, f)
        return ["kea-dhcp4", "-c", conf]


class Dnsmasq(Server):
    name = "dnsmasq"

    def argv(self):
        return ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
                "--interface=lan0", "--bind-interfaces", "--pid-file=",
                "--dhcp-range=%s,%s,%s,1h" % (POOL + (NETMASK,)),
                "--dhcp-option=option:router," + ROUTER_IP,
                "--dhcp-option=option:dns-server," + ROUTER_IP,
                "--domain=example.com", "--no-ping",
                "--quiet-dhcp",
                "--dhcp-leasefile=%s" % os.path.join(self.dir, "dnsmasq.leases")]


# ---------------------------------------------------------------- the load

def build_rcvbuf_shim():
    """bench/rcvbuf.c compiled once into a temp dir (again when the source is newer)."""
    source = os.path.join(ROOT, "bench", "rcvbuf.c")
    library = os.path.join(tempfile.gettempdir(), "allworx-bench-rcvbuf.so")
    if not os.path.exists(library) or os.path.getmtime(library) < os.path.getmtime(source):
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise SystemExit("no C compiler: install build-essential (make deps)")
        sh([cc, "-O2", "-Wall", "-shared", "-fPIC", "-o", library + ".new", source, "-ldl"])
        os.rename(library + ".new", library)
    return library


def perfdhcp(rate, seconds):
    """One perfdhcp run at `rate`: (ACKs per second, drop ratio, raw output)."""
    out = nsx(CLI, "env", "LD_PRELOAD=" + build_rcvbuf_shim(), PERFDHCP,
              "-4", "-r", str(rate), "-p", str(seconds), "-R", str(CLIENTS),
              "-g", THREAD_MODE, "-l", RELAY_IP, "-d", "1", "-W", "1000000", SERVER_IP,
              check=False, timeout=seconds + 30)
    text = out.stdout + out.stderr
    sections = re.split(r"\*\*\*Statistics for: ", text)
    stats = {}
    for part in sections[1:]:
        name = part.split("*")[0].strip()
        fields = dict(re.findall(r"^(sent packets|received packets|drops): (\d+)", part, re.M))
        stats[name] = {k: int(v) for k, v in fields.items()}
    do, ra = stats.get("DISCOVER-OFFER"), stats.get("REQUEST-ACK")
    if not do or not ra:
        raise SystemExit("perfdhcp output not understood:\n" + text[-3000:])
    sent = do.get("sent packets", 0) + ra.get("sent packets", 0)
    unanswered = (do.get("sent packets", 0) - do.get("received packets", 0)
                  + ra.get("sent packets", 0) - ra.get("received packets", 0))
    return ra.get("received packets", 0) / seconds, max(0, unanswered) / max(1, sent), text


def udp_counters():
    """The UDP counters (/proc/net/snmp) of both namespaces: {(ns, name): value}."""
    out = {}
    for ns in (SRV, CLI):
        lines = [l.split() for l in nsx(ns, "cat", "/proc/net/snmp").stdout.splitlines()
                 if l.startswith("Udp:")]
        out.update({(ns, k): int(v) for k, v in zip(lines[0][1:], lines[1][1:])})
    return out


def where_lost(before, after):
    """
    Where a step's packets went: requests the server's host took in and
    replies it sent, and datagrams dropped for a full socket buffer on each
    side (the client's is perfdhcp's own: it falls behind reading a burst).
    """
    d = {k: after[k] - before.get(k, 0) for k in after}
    return ("server in %d, out %d, socket overflows: server %d, perfdhcp %d"
            % (d[(SRV, "InDatagrams")], d[(SRV, "OutDatagrams")],
               d[(SRV, "RcvbufErrors")], d[(CLI, "RcvbufErrors")]))


def measure(server, rates, seconds, verbose, tries=2):
    """
    The highest completed exchange rate with under MAX_DROP unanswered,
    stepping up through `rates` (below the first, halving, if even that
    fails), then bisecting twice between the last pass and the first failure.
    A failed step is tried `tries` times: the machine may be busy.
    """
    def step(rate):
        for attempt in range(tries):
            server.start()
            try:
                # A flame graph of allworx only: the peers are not Python.
                profile = (common.Flame(server.proc.pid, "dhcp-allworx", seconds)
                           if server.name == "allworx" else contextlib.nullcontext())
                before = udp_counters()
                with profile:
                    done, drops, _ = perfdhcp(rate, seconds)
                after = udp_counters()
                server.note_memory()
            finally:
                server.stop()
            ok = drops < MAX_DROP
            if verbose:
                print("  %-8s offered %6d/s: %8.1f exchanges/s, %.3f%% unanswered%s  [%s]"
                      % (server.name, rate, done, drops * 100, "" if ok else "  (over 0.1%)",
                         where_lost(before, after)), flush=True)
            if ok:
                return done
        return None

    best, passed, failed = 0.0, None, None
    rate = rates[0]
    while rate >= 50 and passed is None:
        done = step(rate)
        if done is not None:
            best, passed = done, rate
        else:
            failed = rate
        rate //= 2
    if passed is None:
        return best
    for rate in rates:
        if rate <= passed:
            continue
        if failed is not None and rate >= failed:
            break
        done = step(rate)
        if done is None:
            failed = rate
            break
        best, passed = max(best, done), rate
    # Two bisections between the last rate that passed and the first that failed.
    for _ in range(2):
        if failed is None or failed - passed < 100:
            break
        rate = (passed + failed) // 2
        done = step(rate)
        if done is None:
            failed = rate
        else:
            best, passed = max(best, done), rate
    return best


def durability(scratch, rate, seconds):
    """
    kill -9 allworx halfway through a perfdhcp run, then check perfdhcp's
    ACKs against the journal. Clients repeat (-R), so most ACKs renew a lease
    already on disk: besides every ACKed (address, MAC) being in the replayed
    journal, each client must have at least as many bind records as ACKs it
    received, since every ACK, renewals included, waits for its own record's
    fsync. Returns a dict: acks, clients, records, missing (ACKed leases not
    in the journal), unrecorded (ACKs beyond their client's bind records).
    """
    import collections
    import threading
    sys.path.insert(0, ROOT)
    from allworx.protocols.dhcp.journal import COMPACT_MINIMUM, decode_record, replay

    # Stay short of the journal's compaction, which would fold the records
    # into one line per lease and leave nothing to count.
    rate = max(50, min(rate, COMPACT_MINIMUM // seconds))
    server = Allworx(scratch)
    server.start()
    timer = threading.Timer(seconds / 2, lambda: os.killpg(server.proc.pid, signal.SIGKILL))
    timer.start()
    try:
        out = nsx(CLI, PERFDHCP, "-4", "-r", str(rate), "-p", str(seconds), "-R", str(CLIENTS),
                  "-g", "single", "-l", RELAY_IP, "-x", "l", SERVER_IP, check=False,
                  timeout=seconds + 30)
    finally:
        timer.join()
        server.proc.wait()
        server.proc = None
    acked = out.stdout.partition("***Leases for REQUEST-ACK***")[2]
    acks = collections.Counter()      # (address, MAC) -> ACKs perfdhcp received
    for line in acked.strip().splitlines()[1:]:   # after the header line
        fields = line.split(",")
        if len(fields) < 2 or not fields[1].count(".") == 3:
            break
        mac = ":".join(fields[0][i:i + 2] for i in range(2, 14, 2))
        acks[(fields[1], mac)] += 1
    with open(os.path.join(server.dir, "data", "dhcp", "leases.journal"), "rb") as f:
        lines = f.readlines()
    on_disk = {(ip, lease.mac) for ip, lease in replay(lines)[0].items()}
    records = collections.Counter()   # (address, MAC) -> bind records on disk
    for line in lines:
        record = decode_record(line)
        if record is not None and record["op"] == "bind":
            records[(record["ip"], record["mac"])] += 1
    return {"acks": sum(acks.values()), "clients": len(acks),
            "records": sum(records.values()),
            "missing": sum(1 for key in acks if key not in on_disk),
            "unrecorded": sum(max(0, n - records[key]) for key, n in acks.items())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4, help="length of each step")
    parser.add_argument("--rates", default="1000,2000,3000,4000,5000,6000,7000,8000,10000,12000,"
                                           "14000,16000,18000,20000",
                        help="offered exchange rates to step through")
    parser.add_argument("--servers", default="allworx,kea,dnsmasq")
    parser.add_argument("--no-durability", action="store_true",
                        help="skip the kill -9 check of allworx's lease journal")
    parser.add_argument("--profile", metavar="DIR",
                        help="keep a py-spy flame graph of allworx under load in DIR")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.serve:
        return serve_allworx(args.serve)
    if args.profile:
        os.environ[common.PROFILE_ENV] = os.path.abspath(args.profile)
    if os.geteuid() != 0:
        raise SystemExit("the DHCP benchmark needs root (network namespaces)")
    for program in (PERFDHCP, "kea-dhcp4", "dnsmasq"):
        if shutil.which(program) is None:
            raise SystemExit("missing %s (Debian packages kea-admin, kea-dhcp4-server, dnsmasq)"
                             % program)
    rates = [int(r) for r in args.rates.split(",")]
    load_start = common.load()
    scratch = tempfile.mkdtemp(prefix="allworx-bench-dhcp-")
    classes = {"allworx": Allworx, "kea": Kea, "dnsmasq": Dnsmasq}
    results, memory = {}, {}
    try:
        up()
        for name in args.servers.split(","):
            server = classes[name](scratch)
            results[name] = measure(server, rates, args.seconds, not args.quiet)
            memory[name] = server.peak_mb
        if "allworx" in results and not args.no_durability:
            checked = durability(scratch, max(500, int(results["allworx"])), args.seconds)
    finally:
        down()
        shutil.rmtree(scratch, ignore_errors=True)
    print("DHCP 4-way exchanges/s (perfdhcp, %d clients, pool %s-%s of %s/%d, allworx "
          "client_rate = %d, under 0.1%% unanswered, %ds steps; load average %s at start, "
          "%s at end):" % (CLIENTS, POOL[0], POOL[1], NETWORK, PREFIXLEN, CLIENT_RATE,
                           args.seconds, load_start, common.load()))
    for name, rate in results.items():
        print("  %-8s %8.0f   peak memory %.1f MB" % (name, rate, memory[name]))
    if "allworx" in results and not args.no_durability:
        print("  allworx kill -9 mid-run: %(acks)d ACKs to %(clients)d clients, %(records)d bind "
              "records in the journal; %(missing)d ACKed leases missing, %(unrecorded)d ACKs "
              "without their own record" % checked)
    base = results.get("allworx")
    for name, rate in results.items():
        if name != "allworx" and base is not None:
            print("  allworx / %-8s %.2f" % (name, base / rate if rate else float("inf")))
            print("  " + common.memory_line("DHCP", memory["allworx"], name, memory[name]))
    if base is not None and "kea" in results:
        note = "" if args.no_durability else "kill -9: %(missing)d ACKed leases missing" % checked
        common.result(ROW, base, results["kea"], "Kea", "exchanges/s", GOAL,
                      allworx_mb=memory["allworx"], peer_mb=memory["kea"], note=note)
    if "allworx" in results and not args.no_durability and (
            checked["missing"] or checked["unrecorded"]):
        print("FAILED: allworx ACKed leases that are not on disk", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
