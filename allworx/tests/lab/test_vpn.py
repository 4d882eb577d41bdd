"""
Integration test of the WireGuard engine (SPEC 16) with wireguard-go, in
network namespaces of its own (`awxvpn-PID-a`, `-b`, `-c`): two offices'
vpn services (allworx.routing.vpn.service, driven directly, without the
rest of the server), each in its namespace, joined over a veth pair with
documentation addresses (198.51.100.1 and .2), peers from their configs.
A pings B's LAN across the tunnel and back; `get=1` shows the handshake
and the bytes; an intruder in a third namespace (203.0.113.2) with a key
neither office knows does not get in, and A's log says it dropped the
handshake (wireguard-go's verbose output, read by the service). Needs root; fails and says why
without it. Namespaces and wireguard-go processes are removed by their own
names and PIDs.
"""

import os
import shutil
import subprocess

from twisted.internet import defer, reactor, utils
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.office import Office
from allworx.routing.vpn import golog
from allworx.routing.vpn.netlink import TunnelLinks
from allworx.routing.vpn.peers import Peer, Tunnel, changes
from allworx.routing.vpn.service import UserspaceEngine, VpnService
from allworx.tests.confs import NETWORK, PW_HASH
from allworx.tests.nsnetlink import iproute_in
from allworx.vpnkeys import ensure_server_key, generate_private_key, public_key

TAG = "%d" % (os.getpid() % 10000000)
NS = {side: "awxvpn-%s-%s" % (TAG, side) for side in "abc"}
IFNAME = {side: "awv%s%s" % (TAG, side) for side in "abc"}      # <= 11 characters

OFFICE = NETWORK + """
[dns]
primary = 203.0.113.1

[web]
admin_password = {pw}

[user alice]
full_name = Alice Archer
extension = {ext}
password = {pw}

[vpn]
enabled = yes
interface = {ifname}
address = {tunnel}/24
"""

SITE = """
[site {name}]
public_key = {key}
address = {address}
networks = {networks}
"""


def run(*argv):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise AssertionError("%s failed (exit %d): %s" % (" ".join(argv), done.returncode,
                                                          done.stderr.strip()))
    return done.stdout


def ns_run(side, *argv):
    return run("ip", "netns", "exec", NS[side], *argv)


def links_in(side):
    return TunnelLinks(iproute_in(NS[side]))


class TunnelTests(unittest.TestCase):

    timeout = 120

    def setUp(self):
        if os.geteuid() != 0:
            self.fail("this test needs root (network namespaces, TUN devices)")
        for program in ("ip", "ping", "wireguard-go"):
            if shutil.which(program) is None:
                self.fail("this test needs %s on PATH" % program)
        self.addCleanup(self._remove_namespaces)
        self._remove_namespaces()
        for side in "abc":
            run("ip", "netns", "add", NS[side])
            ns_run(side, "ip", "link", "set", "lo", "up")
        # A <-> B over the "internet" (198.51.100.0/24); C (the intruder) <-> A (203.0.113.0/24).
        self._veth("a", "198.51.100.1/24", "b", "198.51.100.2/24", "ab")
        self._veth("a", "203.0.113.1/24", "c", "203.0.113.2/24", "ac")
        # Each office's LAN address (on lo: this kernel has no dummy links), what the other reaches.
        for side, lan in (("a", "192.168.2.254/32"), ("b", "192.168.3.254/32")):
            ns_run(side, "ip", "addr", "add", lan, "dev", "lo")
        self.data = {side: os.path.abspath(self.mktemp()) for side in "ab"}
        # The keys, as `allworx vpn pubkey` makes them before the first start.
        self.keys = {side: ensure_server_key(self.data[side])[0] for side in "ab"}
        self.public = {side: public_key(k) for side, k in self.keys.items()}
        self.services = []

    def _veth(self, a, a_addr, b, b_addr, tag):
        ia, ib = "v%s%s%s" % (TAG, tag, a), "v%s%s%s" % (TAG, tag, b)
        run("ip", "link", "add", ia, "netns", NS[a], "type", "veth", "peer", "name", ib,
            "netns", NS[b])
        for side, name, addr in ((a, ia, a_addr), (b, ib, b_addr)):
            ns_run(side, "ip", "addr", "add", addr, "dev", name)
            ns_run(side, "ip", "link", "set", name, "up")

    def _remove_namespaces(self):
        present = run("ip", "netns", "list")
        for name in NS.values():
            if any(line.split()[0] == name for line in present.splitlines() if line.strip()):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def office(self, side):
        if side == "a":
            text = OFFICE.format(pw=PW_HASH, ext="101", ifname=IFNAME["a"], tunnel="192.168.99.1")
            text += SITE.format(name="branch", key=self.public["b"], address="192.168.99.2",
                                networks="192.168.3.0/24")
            text += "endpoint = 198.51.100.2:51820\n"
        else:
            text = OFFICE.format(pw=PW_HASH, ext="201", ifname=IFNAME["b"], tunnel="192.168.99.2")
            text = text.replace("192.168.2.254/24", "192.168.3.254/24")
            text += SITE.format(name="main", key=self.public["a"], address="192.168.99.1",
                                networks="192.168.2.0/24")
        return Office(parse_config(text), data_dir=self.data[side])

    @defer.inlineCallbacks
    def start(self, side):
        office = self.office(side)
        svc = VpnService(office, reactor, links_factory=lambda: links_in(side),
                         userspace_argv=("ip", "netns", "exec", NS[side], "wireguard-go"))
        self.services.append(svc)
        self.addCleanup(svc.stopService)
        yield svc.startService()
        status = office.status.get("vpn")
        self.assertEqual(status and status.state, "up", status)
        self.assertEqual(svc.engine.kind, "wireguard-go")
        return svc

    @defer.inlineCallbacks
    def state(self, *services):
        """The peers, addresses and routes of each side, for assertion messages."""
        out = []
        for svc in services:
            side = "a" if svc.office.config.vpn.interface == IFNAME["a"] else "b"
            peers = yield svc.peers()
            out.append("%s peers: %s" % (side, peers))
            out.append(ns_run(side, "ip", "-br", "addr"))
            out.append(ns_run(side, "ip", "route"))
        return "\n".join(out)

    @defer.inlineCallbacks
    def ping(self, side, address, count=3, deadline=15):
        """
        Ping until `count` replies or `deadline` seconds: the first packet
        may wait for a handshake (a retry comes 5 s after an initiation that
        found the other side not yet listening).
        """
        out, err, code = yield utils.getProcessOutputAndValue(
            "ip", ["netns", "exec", NS[side], "ping", "-c", str(count), "-w", str(deadline),
                   "-i", "0.3", address], env=os.environ)
        return code, (out + err).decode("utf-8", "replace")

    def warning_about(self, address, ifname, deadline=15):
        """Fires with the first warning about `address` that `ifname`'s engine logs."""
        d = defer.Deferred()

        def observe(event):
            if (event.get("address") == address and event.get("ifname") == ifname
                    and not d.called):
                d.callback(event)

        def late():
            if not d.called:
                d.errback(AssertionError("no warning about a handshake from %s within %d s"
                                         % (address, deadline)))
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        timer = reactor.callLater(deadline, late)
        self.addCleanup(lambda: timer.cancel() if timer.active() else None)
        return d

    @defer.inlineCallbacks
    def test_offices_reach_each_other_and_a_stranger_does_not(self):
        a = yield self.start("a")
        b = yield self.start("b")
        self.assertEqual(a.public_key, self.public["a"])

        code, report = yield self.ping("a", "192.168.3.254")
        state = yield self.state(a, b)
        self.assertEqual(code, 0, "A could not ping B's LAN over the tunnel:\n%s\n%s"
                         % (report, state))
        code, report = yield self.ping("b", "192.168.2.254")
        self.assertEqual(code, 0, "B could not ping A's LAN over the tunnel:\n" + report)

        [peer] = yield a.peers()
        self.assertEqual(peer["public_key"], self.public["b"])
        self.assertGreater(peer["last_handshake"], 0, peer)
        self.assertGreater(peer["rx_bytes"], 0, peer)
        self.assertGreater(peer["tx_bytes"], 0, peer)
        self.assertEqual(peer["endpoint"], "198.51.100.2:51820")
        [peer] = yield b.peers()
        self.assertEqual(peer["endpoint"], "198.51.100.1:51820")     # learnt from A

        # The intruder: wireguard-go in C with a key neither office knows, dialling A.
        # A's log says it dropped the handshake (wireguard-go's verbose line, read by golog).
        warned = self.warning_about("203.0.113.2", IFNAME["a"])
        count = golog.UnknownKeyCount()
        self.patch(golog, "UNKNOWN_KEY_HANDSHAKES", count)
        intruder = UserspaceEngine(reactor, IFNAME["c"],
                                   ("ip", "netns", "exec", NS["c"], "wireguard-go"))
        self.addCleanup(intruder.stop)
        yield intruder.start()
        stranger = Tunnel(generate_private_key(), 51820, (
            Peer("site main", self.public["a"], (_net("192.168.99.0/24"), _net("192.168.2.0/24")),
                 ("203.0.113.1", 51820), 1),))
        yield intruder.apply(changes(None, stranger), replace_peers=True)
        links = links_in("c")
        self.addCleanup(links.close)
        links.set_address(IFNAME["c"], _iface("192.168.99.66/24"))
        code, report = yield self.ping("c", "192.168.2.254", count=1, deadline=3)
        self.assertNotEqual(code, 0, "the stranger got in:\n" + report)
        [theirs] = yield intruder.peers()
        self.assertEqual((theirs["last_handshake_time_sec"], theirs["rx_bytes"]), (0, 0), theirs)
        self.assertGreater(theirs["tx_bytes"], 0, "the stranger never tried: %s" % theirs)
        peers = yield a.peers()
        self.assertEqual([p["public_key"] for p in peers], [self.public["b"]])
        event = yield warned
        self.assertEqual(formatEvent(event),
                         "vpn: a handshake from an unknown key at 203.0.113.2 was dropped")
        self.assertEqual(event["endpoint"], "203.0.113.2:51820")
        self.assertGreaterEqual(count.count, 1)

        # A live change: B is taken off A; A's LAN is no longer reached from B.
        a.office.replace_text(a.office.document_text().split("[site branch]")[0])
        yield a._lock.run(lambda: None)
        peers = yield a.peers()
        self.assertEqual(peers, [])
        code, report = yield self.ping("b", "192.168.2.254", count=1, deadline=2)
        self.assertNotEqual(code, 0, "B still reaches A after it was removed:\n" + report)


def _net(text):
    import ipaddress
    return ipaddress.IPv4Network(text)


def _iface(text):
    import ipaddress
    return ipaddress.IPv4Interface(text)
