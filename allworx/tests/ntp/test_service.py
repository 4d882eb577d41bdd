"""
Tests for allworx.protocols.ntp.service: the SNTP reply and its leap/stratum
rule (SPEC 6), LAN-only answers, the service following its upstreams.
"""

import socket
import struct

from hypothesis import given, settings, strategies as st
from prometheus_client import REGISTRY
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.office import Office
from allworx.protocols.ntp import client as sntp
from allworx.protocols.ntp import service as ntp
from allworx.tests.confs import MINIMAL, with_sections
from allworx.tests.ntp.test_client import FakeTransport, UdpReactor, server_reply

NOW = 1_700_000_000.25
SYNCED_KERNEL = {"state": 0, "synchronised": True, "max_error_s": 0.01, "est_error_s": 0.001}
UNSYNCED_KERNEL = {"state": 5, "synchronised": False, "max_error_s": 16.0, "est_error_s": 16.0}
SYNCED = ntp.ClockState.from_host(SYNCED_KERNEL, NOW)
UNSYNCED = ntp.ClockState.from_host(UNSYNCED_KERNEL, NOW)


def client_request(version=4, mode=3, transmit=0x1122334455667788, poll=6):
    return ntp.PACKET.pack((version << 3) | mode, 0, poll, 0, 0, 0, b"\0" * 4, 0, 0, 0, transmit)


def fields(reply):
    (first, stratum, poll, precision, delay, dispersion, refid, ref, orig, recv,
     xmit) = ntp.PACKET.unpack(reply)
    return {"leap": first >> 6, "version": (first >> 3) & 7, "mode": first & 7,
            "stratum": stratum, "poll": poll, "precision": precision, "root_delay": delay / 65536,
            "root_dispersion": dispersion / 65536, "refid": refid, "reference": ref,
            "origin": orig, "received": ntp.from_ntp(recv), "transmit": ntp.from_ntp(xmit)}


class Upstream:
    name = "ntp.isp.example"
    address = "203.0.113.1"


class AnswerTests(unittest.TestCase):

    def test_reply_fields(self):
        got = fields(ntp.answer(client_request(), NOW, NOW + 0.001, SYNCED))
        self.assertEqual((got["version"], got["mode"], got["poll"], got["precision"]), (4, 4, 6, -20))
        self.assertEqual(got["origin"], 0x1122334455667788)
        self.assertAlmostEqual(got["received"], NOW, places=6)
        self.assertAlmostEqual(got["transmit"], NOW + 0.001, places=6)
        self.assertAlmostEqual(ntp.from_ntp(got["reference"]), int(NOW), places=6)
        self.assertAlmostEqual(got["root_dispersion"], 0.01, places=4)

    def test_unsynchronised_kernel_is_leap_3_stratum_16(self):
        got = fields(ntp.answer(client_request(version=3), NOW, NOW, UNSYNCED))
        self.assertEqual((got["leap"], got["stratum"], got["refid"], got["reference"]),
                         (3, 16, b"INIT", 0))
        self.assertEqual(got["version"], 3)
        # The kernel cannot be asked: the same, no claim.
        self.assertEqual(ntp.ClockState.from_host(None, NOW), UNSYNCED)

    def test_synchronised_kernel_is_stratum_3(self):
        got = fields(ntp.answer(client_request(), NOW, NOW, SYNCED))
        self.assertEqual((got["leap"], got["stratum"], socket.inet_ntoa(got["refid"])),
                         (0, 3, "127.127.1.1"))

    def test_upstream_is_its_stratum_plus_one_with_the_offset(self):
        sample = sntp.Sample(offset=2.5, delay=0.02, stratum=2, root_delay=0.03,
                             root_dispersion=0.04, at=NOW - 100)
        clock = ntp.ClockState.from_upstream(Upstream(), sample, NOW)
        got = fields(ntp.answer(client_request(), NOW, NOW + 0.001, clock))
        self.assertEqual((got["leap"], got["stratum"], socket.inet_ntoa(got["refid"])),
                         (0, 3, "203.0.113.1"))
        self.assertAlmostEqual(got["received"], NOW + 2.5, places=6)
        self.assertAlmostEqual(got["transmit"], NOW + 2.501, places=6)
        self.assertAlmostEqual(ntp.from_ntp(got["reference"]), NOW - 100 + 2.5, places=6)
        self.assertAlmostEqual(got["root_delay"], 0.05, places=4)
        self.assertAlmostEqual(got["root_dispersion"], 0.04 + 100 * sntp.PHI, places=4)

    def test_timestamp_conversion(self):
        self.assertEqual(ntp.to_ntp(0), ntp.NTP_EPOCH << 32)
        self.assertAlmostEqual(ntp.from_ntp(ntp.to_ntp(NOW)), NOW, places=6)

    def test_refused(self):
        for data, words in ((b"\x23" * 20, "too short"), (client_request(mode=4), "mode 4"),
                            (client_request(version=6), "version 6"),
                            (client_request(mode=5), "mode 5")):
            e = self.assertRaises(ntp.NotARequest, ntp.answer, data, NOW, NOW, SYNCED)
            self.assertIn(words, str(e))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=120))
    def test_fuzz(self, data):
        try:
            reply = ntp.answer(data, NOW, NOW, SYNCED)
        except ntp.NotARequest:
            return
        self.assertEqual(len(reply), 48)


class TimeSourceTests(unittest.TestCase):

    def test_kernel_asked_once_a_minute(self):
        reactor = MemoryReactorClock()
        asked = []
        source = ntp.TimeSource(reactor, None, lambda: asked.append(1) or UNSYNCED_KERNEL)
        for _ in range(5):
            source.state()
            reactor.advance(20)
        self.assertEqual(len(asked), 2)

    def test_the_host_clock_as_the_kernel_says(self):
        reactor = MemoryReactorClock()
        kernel = [UNSYNCED_KERNEL]
        source = ntp.TimeSource(reactor, sntp.SntpClient(reactor), lambda: kernel[0])
        status = source.status()
        self.assertEqual((status["source"], status["stratum"], status["leap"], status["upstream"],
                          status["reference_id"], status["kernel_synchronised"]),
                         ("host", 16, 3, None, "INIT", False))
        kernel[0] = SYNCED_KERNEL
        reactor.advance(ntp.KERNEL_EVERY)
        self.assertEqual((source.state().leap, source.state().stratum), (0, 3))


class ProtocolTests(unittest.TestCase):

    def setUp(self):
        self.office = Office(parse_config(MINIMAL))
        self.reactor = MemoryReactorClock()
        self.reactor.advance(NOW)
        self.proto = ntp.SntpProtocol(self.office, self.reactor, lambda: SYNCED)
        self.proto.transport = FakeTransport()

    def test_lan_client_answered(self):
        self.proto.datagramReceived(client_request(), ("192.168.2.10", 40000))
        [(reply, addr)] = self.proto.transport.sent
        self.assertEqual(addr, ("192.168.2.10", 40000))
        self.assertAlmostEqual(ntp.from_ntp(struct.unpack("!Q", reply[40:])[0]), NOW, places=6)

    def test_wan_peer_ignored(self):
        self.proto.datagramReceived(client_request(), ("203.0.113.1", 123))
        self.assertEqual(self.proto.transport.sent, [])

    def test_garbage_ignored(self):
        self.proto.datagramReceived(b"hello", ("192.168.2.10", 123))
        self.assertEqual(self.proto.transport.sent, [])

    def test_rate_limit(self):
        for _ in range(30):
            self.proto.datagramReceived(client_request(), ("192.168.2.10", 123))
        self.assertEqual(len(self.proto.transport.sent), 16)


def metric(name):
    return REGISTRY.get_sample_value(name)


class ServiceTests(unittest.TestCase):

    def start(self, sections, kernel=UNSYNCED_KERNEL):
        office = Office(parse_config(with_sections(sections)))
        reactor = UdpReactor()
        reactor.advance(NOW)
        svc = ntp.NtpService(office, reactor, kernel=lambda: kernel,
                             resolve=lambda name: defer.succeed("203.0.113.1"))
        svc.startService()
        self.addCleanup(svc.stopService)
        reactor.advance(0)
        return office, reactor, svc

    def ask(self, reactor, port=123):
        lan = reactor.udpPorts[port]
        lan.transport.sent = []
        lan.datagramReceived(client_request(), ("192.168.2.10", 40000))
        [(reply, _)] = lan.transport.sent
        return fields(reply)

    def test_listens_on_configured_port_and_follows_changes(self):
        office, reactor, svc = self.start("[ntp]\nport = 10123\n")
        self.assertEqual(list(reactor.udpPorts), [10123])
        self.assertEqual(office.status["ntp"].state, "up")
        office.update_settings("ntp", {"enabled": "no"})
        self.assertEqual(office.status["ntp"].state, "disabled")
        self.assertFalse(svc.time.status()["serving"])
        office.update_settings("ntp", {"enabled": "yes", "port": "10124"})
        self.assertEqual(office.status["ntp"].state, "up")
        self.assertIn("10124", office.status["ntp"].detail)
        self.assertEqual(list(reactor.udpPorts), [10124])

    def test_without_servers_answers_from_the_host_clock(self):
        kernel = dict(UNSYNCED_KERNEL)
        _, reactor, svc = self.start("", kernel)
        self.assertEqual(list(reactor.udpPorts), [123])     # no upstream port
        got = self.ask(reactor)
        self.assertEqual((got["leap"], got["stratum"], got["refid"]), (3, 16, b"INIT"))
        self.assertEqual((metric("allworx_ntp_stratum"), metric("allworx_ntp_leap_indicator")),
                         (16.0, 3.0))
        # Something on the host synchronises the clock: within a minute, stratum 3.
        kernel.update(SYNCED_KERNEL)
        reactor.advance(ntp.KERNEL_EVERY)
        got = self.ask(reactor)
        self.assertEqual((got["leap"], got["stratum"]), (0, 3))
        self.assertEqual((metric("allworx_ntp_stratum"), metric("allworx_ntp_leap_indicator")),
                         (3.0, 0.0))

    def test_follows_the_upstream_and_fails_over_after_three_missed_polls(self):
        office, reactor, svc = self.start("[ntp]\nservers = ntp.isp.example\n", SYNCED_KERNEL)
        [upstream_port] = [p for p in reactor.udpPorts if p != 123]
        client = reactor.udpPorts[upstream_port]
        [(request, to)] = client.transport.sent
        self.assertEqual(to, ("203.0.113.1", 123))
        reactor.advance(0.01)
        client.datagramReceived(server_reply(request, reactor.seconds(), offset=2.5, stratum=2,
                                             after=0.01), ("203.0.113.1", 123))
        got = self.ask(reactor)
        self.assertEqual((got["leap"], got["stratum"], socket.inet_ntoa(got["refid"])),
                         (0, 3, "203.0.113.1"))
        self.assertAlmostEqual(got["transmit"] - reactor.seconds(), 2.5, places=5)
        status = svc.time.status()
        self.assertEqual((status["source"], status["upstream"], status["address"],
                          status["upstream_stratum"]), ("upstream", "ntp.isp.example",
                                                        "203.0.113.1", 2))
        self.assertAlmostEqual(status["offset_s"], 2.5, places=5)
        self.assertEqual(status["servers"][0]["last_poll"], NOW)
        self.assertAlmostEqual(metric("allworx_ntp_offset_seconds"), 2.5, places=5)
        self.assertEqual(metric("allworx_ntp_upstream_stratum"), 2.0)
        self.assertEqual(metric("allworx_ntp_upstreams_usable"), 1.0)
        for _ in range(3):
            reactor.advance(64)
            reactor.advance(sntp.REPLY_TIMEOUT)
        got = self.ask(reactor)
        # The kernel says the host clock is synchronised: stratum 3, no correction.
        self.assertEqual((got["leap"], got["stratum"]), (0, 3))
        self.assertAlmostEqual(got["transmit"], reactor.seconds(), places=5)
        self.assertEqual(svc.time.status()["source"], "host")
        self.assertEqual(metric("allworx_ntp_upstreams_usable"), 0.0)
        # Removing the servers stops the polling.
        office.update_settings("ntp", {"servers": ""})
        self.assertEqual(list(reactor.udpPorts), [123])
        polls = len(client.transport.sent)
        reactor.advance(3000)
        self.assertEqual(len(client.transport.sent), polls)
        self.assertEqual([c for c in reactor.getDelayedCalls() if c.active()], [])

    def test_system_clock_state(self):
        self.assertIn(ntp.ClockState.from_host(ntp.kernel_clock(), NOW).stratum, (3, 16))
