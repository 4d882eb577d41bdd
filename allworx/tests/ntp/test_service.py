"""Tests for allworx.protocols.ntp.service: the SNTP reply, LAN-only answers, the service."""

import struct

from hypothesis import given, settings, strategies as st
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.office import Office
from allworx.protocols.ntp import service as ntp
from allworx.tests.confs import MINIMAL, with_sections

NOW = 1_700_000_000.25
SYNCED = ntp.ClockState.of(True, 0.01)
LOCAL = ntp.ClockState.of(False, 1.0)


def client_request(version=4, mode=3, transmit=0x1122334455667788, poll=6):
    return ntp.PACKET.pack((version << 3) | mode, 0, poll, 0, 0, 0, b"\0" * 4, 0, 0, 0, transmit)


class FakeTransport:
    def __init__(self):
        self.sent = []

    def write(self, data, addr):
        self.sent.append((data, addr))


class AnswerTests(unittest.TestCase):

    def test_reply_fields(self):
        reply = ntp.answer(client_request(), NOW, NOW + 0.001, SYNCED)
        (first, stratum, poll, precision, delay, dispersion, refid, ref, orig, recv,
         xmit) = ntp.PACKET.unpack(reply)
        self.assertEqual((first >> 6, (first >> 3) & 7, first & 7), (0, 4, 4))
        self.assertEqual((stratum, poll, precision), (2, 6, -20))
        self.assertEqual(orig, 0x1122334455667788)
        self.assertAlmostEqual(ntp.from_ntp(recv), NOW, places=6)
        self.assertAlmostEqual(ntp.from_ntp(xmit), NOW + 0.001, places=6)
        self.assertAlmostEqual(ntp.from_ntp(ref), int(NOW), places=6)
        self.assertEqual(dispersion, int(0.01 * 65536))

    def test_unsynchronised_is_local_clock(self):
        reply = ntp.answer(client_request(version=3), NOW, NOW, LOCAL)
        self.assertEqual(reply[1], 10)
        self.assertEqual(reply[12:16], b"LOCL")
        self.assertEqual((reply[0] >> 3) & 7, 3)

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

    def test_system_clock_state(self):
        state = ntp.system_clock_state()
        self.assertIn(state.stratum, (2, 10))


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


class UdpReactor(MemoryReactorClock):
    """MemoryReactorClock with listenUDP (which it lacks)."""

    def listenUDP(self, port, proto, interface="", maxPacketSize=8192):
        reactor = self

        class Port:
            def stopListening(self):
                del reactor.udpPorts[port]
        self.udpPorts[port] = proto
        return Port()


class ServiceTests(unittest.TestCase):

    def test_listens_on_configured_port_and_follows_changes(self):
        office = Office(parse_config(with_sections("[ntp]\nport = 10123\n")))
        reactor = UdpReactor()
        reactor.udpPorts = {}
        svc = ntp.NtpService(office, reactor, lambda: SYNCED)
        svc.startService()
        self.assertEqual(list(reactor.udpPorts), [10123])
        self.assertEqual(office.status["ntp"].state, "up")
        office.update_settings("ntp", {"enabled": "no"})
        self.assertEqual(office.status["ntp"].state, "disabled")
        office.update_settings("ntp", {"enabled": "yes", "port": "10124"})
        self.assertEqual(office.status["ntp"].state, "up")
        self.assertIn("10124", office.status["ntp"].detail)
        self.assertEqual(list(reactor.udpPorts), [10124])
        svc.stopService()
