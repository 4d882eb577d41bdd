"""
Tests for the "vpn" service (allworx.routing.vpn.service): the kernel path
with fake netlink sockets, and the wireguard-go path with a fake child
process and its UAPI socket answered in memory; live changes apply only
what differs; stop undoes it.
"""

import errno
import ipaddress
import os

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from allworx import config as C
from allworx.office import Office
from allworx.routing.vpn import golog
from allworx.routing.vpn import service as S
from allworx.tests.confs import with_sections
from allworx.tests.core.test_config_vpn import KEY3, VPN
from allworx.tests.vpn.test_netlink import FakeIPRoute, FakeWireGuard, peer_of
from allworx.vpnkeys import key_hex, public_key, read_device_key, read_server_key


def net(text):
    return ipaddress.IPv4Network(text)


class FakeProcess:
    def __init__(self, proto, pid):
        self.proto = proto
        self.pid = pid
        self.signals = []

    def signalProcess(self, name):
        self.signals.append(name)


class ProcessReactor(MemoryReactorClock):
    """A MemoryReactorClock that records spawned processes."""

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.spawned = []

    def spawnProcess(self, proto, executable, args, env=None, **kw):
        process = FakeProcess(proto, 4000 + len(self.spawned))
        self.spawned.append((executable, args, env, process))
        proto.makeConnection(process)
        return process


class ServiceTestBase(unittest.TestCase):

    def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        self.reactor = ProcessReactor()
        self.ipr = FakeIPRoute()
        self.wg = FakeWireGuard()

    def office(self, text):
        return Office(C.parse_config(with_sections(text)), data_dir=self.data)

    def service(self, office, **kw):
        kw.setdefault("links_factory", lambda: S.TunnelLinks(self.ipr))
        kw.setdefault("kernel_factory",
                      lambda ifname: S.KernelWireGuard(ifname, wireguard_factory=lambda: self.wg))
        return S.VpnService(office, reactor=self.reactor, **kw)

    def change(self, office, text):
        office.replace_text(with_sections(text))


class KernelPathTests(ServiceTestBase):

    def test_disabled(self):
        office = self.office("")
        svc = self.service(office)
        svc.startService()
        self.assertEqual(office.status["vpn"].state, "disabled")
        self.assertEqual(self.ipr.calls, [])
        self.assertFalse(os.path.exists(os.path.join(self.data, "vpn")))

    def test_start(self):
        office = self.office(VPN)
        svc = self.service(office)
        svc.startService()
        status = office.status["vpn"]
        self.assertEqual((status.state, status.detail),
                         ("up", "awg0 (kernel) on port 51820: 1 site, 2 devices"))
        key = read_server_key(self.data)
        self.assertEqual(svc.public_key, public_key(key))
        phone = public_key(read_device_key(self.data, "alice-phone"))
        device = self.wg.sent[0]
        self.assertEqual(device.get_attr("WGDEVICE_A_PRIVATE_KEY"), key.encode())
        self.assertEqual([peer_of(m).get_attr("WGPEER_A_PUBLIC_KEY").decode()
                          for m in self.wg.sent[1:]][-1], phone)
        self.assertEqual(self.ipr.calls[0], ("link", "add", {"ifname": "awg0", "kind": "wireguard"}))
        self.assertIn(("addr", "replace", {"index": 7, "address": "192.168.99.1", "prefixlen": 24}),
                      self.ipr.calls)
        routes = [c[2]["dst"] for c in self.ipr.calls if c[:2] == ("route", "replace")]
        self.assertEqual(routes, ["192.168.3.0/24", "192.168.99.10/32", "192.168.99.11/32"])

    def test_live_change_sends_only_the_difference(self):
        office = self.office(VPN)
        svc = self.service(office)
        svc.startService()
        self.wg.sent, self.ipr.calls = [], []
        self.change(office, VPN.replace("networks = 192.168.3.0/24", "networks = 10.3.0.0/16")
                    + "\n[device bob-pc]\nuser = bob\naddress = 192.168.99.12\npublic_key = %s\n"
                    % KEY3)
        self.assertEqual([peer_of(m).get_attr("WGPEER_A_PUBLIC_KEY").decode() for m in self.wg.sent],
                         [office.config.sites["branch"].public_key, KEY3])
        self.assertEqual([(c[1], c[2]["dst"]) for c in self.ipr.calls if c[0] == "route"],
                         [("del", "192.168.3.0/24"), ("replace", "10.3.0.0/16"),
                          ("replace", "192.168.99.12/32")])
        self.assertEqual(office.status["vpn"].detail,
                         "awg0 (kernel) on port 51820: 1 site, 3 devices")

    def test_a_removed_device_forgets_its_key(self):
        office = self.office(VPN)
        svc = self.service(office)
        svc.startService()
        self.assertIsNotNone(read_device_key(self.data, "alice-phone"))
        self.change(office, VPN.split("[device alice-phone]")[0])
        self.assertIsNone(read_device_key(self.data, "alice-phone"))
        [removed] = self.wg.sent[-1:]
        self.assertEqual(peer_of(removed).get_attr("WGPEER_A_FLAGS"), 1)

    def test_unrelated_change_touches_nothing(self):
        office = self.office(VPN)
        svc = self.service(office)
        svc.startService()
        self.wg.sent, self.ipr.calls = [], []
        self.change(office, VPN + "\n[alias team]\nto = alice bob\n")
        self.assertEqual((self.wg.sent, self.ipr.calls), ([], []))

    def test_new_interface_starts_again(self):
        office = self.office(VPN)
        svc = self.service(office)
        svc.startService()
        self.ipr.calls = []
        self.change(office, VPN.replace("enabled = yes", "enabled = yes\ninterface = awg1"))
        self.assertEqual(self.ipr.calls[0], ("link", "del", {"index": 7}))
        self.assertIn(("link", "add", {"ifname": "awg1", "kind": "wireguard"}), self.ipr.calls)
        self.assertEqual(office.status["vpn"].detail[:4], "awg1")

    def test_stop_removes_the_interface(self):
        office = self.office(VPN)
        svc = self.service(office)
        svc.startService()
        self.successResultOf(svc.stopService())
        self.assertIn(("link", "del", {"index": 7}), self.ipr.calls)
        self.assertTrue(self.wg.closed)

    def test_no_permission(self):
        self.ipr.refuse = errno.EPERM
        office = self.office(VPN)
        self.service(office).startService()
        status = office.status["vpn"]
        self.assertEqual(status.state, "down")
        self.assertIn("awg0", status.detail)

    def test_endpoint_names_are_resolved(self):
        office = self.office(VPN.replace("198.51.100.2:51820", "branch.example.net:51820"))
        names = []

        def resolve(host):
            names.append(host)
            from twisted.internet import defer
            return defer.succeed("198.51.100.7")
        self.reactor.resolve = resolve
        self.service(office).startService()
        self.assertEqual(names, ["branch.example.net"])
        endpoint = peer_of(self.wg.sent[1]).get_attr("WGPEER_A_ENDPOINT")
        self.assertEqual(endpoint["addr"], "198.51.100.7")


class UserspacePathTests(ServiceTestBase):

    def setUp(self):
        ServiceTestBase.setUp(self)
        self.ipr.refuse = errno.EOPNOTSUPP
        self.sockets = set()
        self.requests = []

    def service(self, office, **kw):
        return ServiceTestBase.service(self, office, exists=lambda p: p in self.sockets,
                                       socket_dir="/run/test", **kw)

    def answer(self, reply=b"errno=0\n\n"):
        """Answer every UAPI connection made so far; returns the requests."""
        clients, self.reactor.unixClients[:] = list(self.reactor.unixClients), []
        for path, factory, *_ in clients:
            proto = factory.buildProtocol(None)
            transport = StringTransport()
            proto.makeConnection(transport)
            self.requests.append((path, transport.value().decode()))
            proto.dataReceived(reply)
        return clients

    def test_starts_wireguard_go_and_configures_it(self):
        office = self.office(VPN)
        svc = self.service(office)
        svc.startService()
        [(executable, args, env, process)] = self.reactor.spawned
        self.assertEqual((executable, args), ("wireguard-go", ["wireguard-go", "-f", "awg0"]))
        self.assertEqual(office.status.get("vpn"), None)
        # The socket appears, answers a get, then takes the configuration.
        self.reactor.advance(S.POLL)
        self.sockets.add("/run/test/awg0.sock")
        self.reactor.advance(S.POLL)
        self.answer()
        self.ipr.links["awg0"] = 9          # wireguard-go made its TUN
        self.answer()
        path, text = self.requests[-1]
        self.assertEqual(path, "/run/test/awg0.sock")
        self.assertTrue(text.startswith("set=1\nprivate_key=%s\nlisten_port=51820\n"
                                        "replace_peers=true\n"
                                        % key_hex(read_server_key(self.data))), text)
        self.assertEqual(office.status["vpn"].detail,
                         "awg0 (wireguard-go) on port 51820: 1 site, 2 devices")
        # Stopped by its own PID: TERM, then it ends.
        d = svc.stopService()
        self.assertEqual(process.signals, ["TERM"])
        self.assertNoResult(d)
        process.proto.processEnded(_ended())
        self.successResultOf(d)

    def test_verbose_output_becomes_a_warning_about_unknown_keys(self):
        count = golog.UnknownKeyCount()
        self.patch(golog, "UNKNOWN_KEY_HANDSHAKES", count)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        office = self.office(VPN)
        svc = self.service(office)
        svc.startService()
        [(_, _, env, process)] = self.reactor.spawned
        self.assertEqual((env["LOG_LEVEL"], env["WG_PROCESS_FOREGROUND"]), ("verbose", "1"))
        line = b"DEBUG: (awg0) 2026/12/07 03:04:56 Received invalid initiation message from "
        process.proto.outReceived(b"DEBUG: (awg0) 2026/12/07 03:04:56 UAPI listener started\n")
        process.proto.errReceived(line + b"203.0.113.2:51820\n")
        process.proto.errReceived(line + b"203.0.113.2:51820\n")
        warned = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(warned,
                         ["vpn: a handshake from an unknown key at 203.0.113.2 was dropped"])
        self.assertEqual([formatEvent(e) for e in events if "UAPI listener" in formatEvent(e)],
                         [])
        self.assertEqual(count.count, 2)
        # Its end reports what was counted since and leaves no timer behind.
        process.proto.processEnded(_ended())
        self.assertEqual(formatEvent([e for e in events if e.get("address")][-1]),
                         "vpn: 1 more handshake from an unknown key at 203.0.113.2 was dropped "
                         "in 0 s")
        self.assertEqual([c for c in self.reactor.getDelayedCalls()
                          if c.func.__name__ == "_window_ended"], [])

    def test_killed_when_it_lingers(self):
        office = self.office(VPN)
        svc = self.service(office)
        svc.startService()
        self.sockets.add("/run/test/awg0.sock")
        self.reactor.advance(S.POLL)
        self.answer()
        self.ipr.links["awg0"] = 9
        self.answer()
        process = self.reactor.spawned[0][3]
        svc.stopService()
        self.reactor.advance(S.STOP_WAIT)
        self.assertEqual(process.signals, ["TERM", "KILL"])

    def test_socket_never_appears(self):
        office = self.office(VPN)
        self.service(office).startService()
        self.reactor.advance(S.SOCKET_WAIT + 1)
        for _ in range(int(S.SOCKET_WAIT / S.POLL) + 5):
            self.reactor.advance(S.POLL)
        status = office.status["vpn"]
        self.assertEqual(status.state, "down")
        self.assertIn("did not open /run/test/awg0.sock", status.detail)
        self.assertEqual(self.reactor.spawned[0][3].signals, ["TERM"])

    def test_restarted_when_it_dies(self):
        office = self.office(VPN)
        svc = self.service(office)
        svc.startService()
        self.sockets.add("/run/test/awg0.sock")
        self.reactor.advance(S.POLL)
        self.answer()
        self.ipr.links["awg0"] = 9
        self.answer()
        self.reactor.spawned[0][3].proto.processEnded(_ended(1))
        self.assertEqual(office.status["vpn"].state, "down")
        self.assertIn("wireguard-go exited", office.status["vpn"].detail)
        self.reactor.advance(S.RESTART_AFTER)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_live_change_over_uapi(self):
        office = self.office(VPN)
        svc = self.service(office)
        svc.startService()
        self.sockets.add("/run/test/awg0.sock")
        self.reactor.advance(S.POLL)
        self.answer()
        self.ipr.links["awg0"] = 9
        self.answer()
        self.change(office, VPN.replace("enabled = yes", "enabled = yes\nport = 51999"))
        self.answer()
        self.assertEqual(self.requests[-1][1], "set=1\nlisten_port=51999\n\n")


def _ended(code=0):
    from twisted.internet.error import ProcessDone, ProcessTerminated
    from twisted.python.failure import Failure
    return Failure(ProcessDone(0) if code == 0 else ProcessTerminated(code))


class StatusWordsTests(unittest.TestCase):

    def test_count(self):
        self.assertEqual(S._count(1, "site"), "1 site")
        self.assertEqual(S._count(0, "device"), "0 devices")
