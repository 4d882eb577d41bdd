# -*- test-case-name: allworx.tests.lab.test_network -*-
"""
WAN DHCP client benchmark: how long from starting a client until it holds a
lease (DISCOVER, OFFER, REQUEST, ACK), allworx's WanDhcpClient against ISC
dhclient and busybox udhcpc, all on the same interface and MAC against the
same dnsmasq. Run as root:

    .venv/bin/python bench/wan_dhcp.py [--runs 20]

It builds two namespaces of its own, awnb-cli (wan0) and awnb-isp (eth0,
203.0.113.1/24, dnsmasq serving 203.0.113.10-50), joined by a veth pair, and
removes them at the end. Every run starts from nothing (no saved lease, no
lease file) so each client goes through INIT and SELECTING; the MAC is the
same every time, so dnsmasq offers the same address at once (its ping check
of new addresses happens once, in the warm-up run, not measured).

Two figures per client, medians over the runs:
- process: wall time from starting the process until it reports the lease
  (what an operator waits; includes the interpreter's start for allworx);
- exchange: for allworx, the time inside the process from `start()` to
  `dhcp_bound` (the protocol itself). dhclient and udhcpc have no separate
  figure: their start-up is a few milliseconds.
None of the clients configures the interface (hook scripts are /bin/true),
so only the protocol is timed. allworx checks a new address by ARP before
using it (RFC 2131 4.4.1: two probes, 1 s); dhclient and plain udhcpc do not
check, `udhcpc -a` (listed as udhcpc-a) does (one ARP ping, up to 2 s), so
that is the like-for-like peer.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PREFIX = "awnb"
CLI, ISP = PREFIX + "-cli", PREFIX + "-isp"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")

DRIVER = r"""
import sys, time
from twisted.internet import reactor
from allworx.routing.wanclient.client import WanDhcpClient

class Listener:
    def dhcp_state_changed(self, state):
        pass
    def dhcp_lost(self, reason):
        pass
    def dhcp_bound(self, lease, renewed=False):
        print("bound %s %.6f" % (lease.address, time.monotonic() - started), flush=True)
        client.stop()
        reactor.stop()

def go():
    global client, started
    mac = open("/sys/class/net/wan0/address").read().strip()
    client = WanDhcpClient("wan0", mac, Listener(), reactor, sys.argv[1])
    started = time.monotonic()
    client.start()

reactor.callWhenRunning(go)
reactor.callLater(30, reactor.stop)
reactor.run()
"""


def sh(*argv, check=True, **kw):
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


def in_ns(ns, *argv):
    return ["ip", "netns", "exec", ns] + list(argv)


def build(tmp):
    teardown()
    for ns in (CLI, ISP):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "link", "add", "awnb-a", "netns", CLI, "type", "veth", "peer", "name", "awnb-b",
       "netns", ISP)
    sh("ip", "-n", CLI, "link", "set", "awnb-a", "name", "wan0")
    sh("ip", "-n", ISP, "link", "set", "awnb-b", "name", "eth0")
    sh("ip", "-n", CLI, "link", "set", "wan0", "address", "02:a1:00:00:71:fe", "up")
    sh("ip", "-n", ISP, "addr", "add", "203.0.113.1/24", "dev", "eth0")
    sh("ip", "-n", ISP, "link", "set", "eth0", "up")
    dnsmasq = subprocess.Popen(in_ns(
        ISP, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
        "--interface=eth0", "--bind-interfaces", "--dhcp-authoritative",
        "--dhcp-range=203.0.113.10,203.0.113.50,255.255.255.0,120s",
        "--dhcp-option=option:router,203.0.113.1",
        "--dhcp-leasefile=" + os.path.join(tmp, "dnsmasq.leases"),
        "--pid-file=" + os.path.join(tmp, "dnsmasq.pid"), "--user=root"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return dnsmasq


def teardown():
    for ns in (CLI, ISP):
        sh("ip", "netns", "del", ns, check=False)


def run_allworx(tmp):
    lease = os.path.join(tmp, "allworx-lease.json")
    if os.path.exists(lease):
        os.unlink(lease)
    start = time.monotonic()
    out = sh(*in_ns(CLI, PYTHON, "-c", DRIVER, lease), cwd=ROOT, timeout=40).stdout
    wall = time.monotonic() - start
    line = [l for l in out.splitlines() if l.startswith("bound")]
    if not line:
        raise RuntimeError("allworx client got no lease:\n" + out)
    return wall, float(line[0].split()[2])


def run_dhclient(tmp):
    lf, pf = os.path.join(tmp, "dhclient.leases"), os.path.join(tmp, "dhclient.pid")
    for path in (lf, pf):
        if os.path.exists(path):
            os.unlink(path)
    start = time.monotonic()
    # -1: one attempt; the foreground process returns once bound (then the
    # daemon it left is stopped by its pid file, without a release).
    sh(*in_ns(CLI, "dhclient", "-1", "-4", "-sf", "/bin/true", "-lf", lf, "-pf", pf, "wan0"),
       timeout=40)
    wall = time.monotonic() - start
    deadline = time.monotonic() + 5    # the daemon writes its pid file just after
    while time.monotonic() < deadline:
        try:
            with open(pf) as f:
                pid = int(f.read().strip())
            break
        except (FileNotFoundError, ValueError):
            time.sleep(0.01)
    else:
        raise RuntimeError("dhclient left no pid file")
    os.kill(pid, 9)
    return wall, None


def run_udhcpc(tmp, arp=False):
    start = time.monotonic()
    sh(*in_ns(CLI, "udhcpc", "-i", "wan0", "-n", "-q", "-f", "-s", "/bin/true",
              *(["-a"] if arp else [])), timeout=40)
    return time.monotonic() - start, None


def run_udhcpc_arp(tmp):
    return run_udhcpc(tmp, arp=True)


CLIENTS = (("allworx", run_allworx), ("dhclient", run_dhclient), ("udhcpc", run_udhcpc),
           ("udhcpc-a", run_udhcpc_arp))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench/wan_dhcp.py needs root (network namespaces)")
    for program in ("dnsmasq", "dhclient", "udhcpc"):
        if shutil.which(program) is None:
            sys.exit("needs %s" % program)
    tmp = tempfile.mkdtemp(prefix="awnb-")
    dnsmasq = build(tmp)
    results = {}
    try:
        for name, run in CLIENTS:
            run(tmp)    # warm-up: dnsmasq's first offer waits for its ping check
        for name, run in CLIENTS:
            results[name] = [run(tmp) for _ in range(args.runs)]
    finally:
        dnsmasq.terminate()
        dnsmasq.wait(5)
        teardown()
        shutil.rmtree(tmp, ignore_errors=True)
    print("WAN DHCP acquisition, median of %d runs (seconds)" % args.runs)
    ours = statistics.median(w for w, _ in results["allworx"])
    exchange = statistics.median(i for _, i in results["allworx"])
    for name, _ in CLIENTS:
        walls = [w for w, _ in results[name]]
        inner = [i for _, i in results[name] if i is not None]
        extra = ("  exchange %.4f" % statistics.median(inner)) if inner else ""
        print("  %-9s process %.4f (min %.4f, max %.4f)%s" % (
            name, statistics.median(walls), min(walls), max(walls), extra))
    for name, _ in CLIENTS[1:]:
        theirs = statistics.median(w for w, _ in results[name])
        print("  allworx/%s: process %.2f, exchange (in the running server) %.2f"
              % (name, ours / theirs, exchange / theirs))


if __name__ == "__main__":
    main()
