# -*- test-case-name: allworx.tests.vpn.test_probe -*-
"""
Tests for the sites' prober (allworx.routing.vpn.probe) on a
MemoryReactorClock with fake UDP ports: what it sends (a SIP OPTIONS to
ADDRESS:5060, an SOA query for the site's domain to ADDRESS:53), which
answers count (any SIP response or DNS answer matching the request, from
the address asked), 2 s without one = not answering, a round every 30 s;
and the vpn service as IVpnPeers (peers in the interface's shape,
site_status from the prober, keys_changed applying a new device key).
"""

import os

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from allworx import config as C
from allworx.interfaces import IVpnPeers
from allworx.routing.vpn import probe as P
from allworx.tests.confs import with_sections
from allworx.tests.core.test_config_vpn import KEY1, VPN
from allworx.tests.vpn.test_service import ServiceTestBase
from allworx.vpnkeys import public_key, read_device_key, remove_device_key

BRANCH = "192.168.99.2"


class FakeUdpTransport:
    def __init__(self, port):
        self.port = port
        self.written = []
        self.closed = False

    def write(self, data, addr):
        self.written.append((data, addr))

    def getHost(self):
        return IPv4Address("UDP", "0.0.0.0", self.port)

    def stopListening(self):
        self.closed = True


class UdpReactor(MemoryReactorClock):
    """A MemoryReactorClock whose listenUDP gives fake ports and keeps each protocol."""

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.udp = []

    def listenUDP(self, port, proto, interface="", maxPacketSize=8192):
        transport = FakeUdpTransport(40000 + len(self.udp))
        self.udp.append((proto, transport))
        proto.makeConnection(transport)
        return transport


def sip_answer(request, status=b"200 OK"):
    """A response to `request` with its headers copied (as a SIP server answers)."""
    head = request.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    keep = [h for h in head if h.split(b":")[0] in (b"Via", b"From", b"To", b"Call-ID", b"CSeq")]
    return b"\r\n".join([b"SIP/2.0 " + status] + keep + [b"Content-Length: 0", b"", b""])


def dns_answer(query, rcode=dns.OK):
    m = dns.Message()
    m.fromStr(query)
    m.answer = 1
    m.rCode = rcode
    return m.toStr()


class ProberTests(unittest.TestCase):

    def setUp(self):
        self.reactor = UdpReactor()
        self.config = C.parse_config(with_sections(VPN))
        self.prober = P.SiteProber(self.reactor, lambda: self.config)

    def sent(self, n=0):
        proto, transport = self.reactor.udp[n]
        return proto, transport, {addr[1]: data for data, addr in transport.written}

    def test_sends_options_and_soa_query(self):
        self.prober.start()
        self.assertEqual(len(self.reactor.udp), 1)
        proto, transport, sent = self.sent()
        self.assertEqual([addr for _, addr in transport.written],
                         [(BRANCH, 5060), (BRANCH, 53)])
        options = sent[5060].decode("ascii")
        self.assertTrue(options.startswith("OPTIONS sip:192.168.99.2:5060 SIP/2.0\r\n"), options)
        self.assertTrue(options.endswith("Content-Length: 0\r\n\r\n"))
        headers = dict(line.split(": ", 1) for line in options.split("\r\n")[1:] if line)
        self.assertRegex(headers["Via"], r"^SIP/2.0/UDP 192\.168\.99\.1:40000;branch=z9hG4bK\w+;rport$")
        self.assertEqual(headers["Max-Forwards"], "70")
        self.assertRegex(headers["From"], r"^<sip:allworx@example\.com>;tag=\w+$")
        self.assertEqual(headers["To"], "<sip:192.168.99.2:5060>")
        self.assertEqual(headers["CSeq"], "1 OPTIONS")
        self.assertIn("Call-ID", headers)
        query = dns.Message()
        query.fromStr(sent[53])
        self.assertEqual([(q.name.name, q.type) for q in query.queries],
                         [(b"branch.example.com", dns.SOA)])
        self.assertEqual(self.prober.status(), {"branch": {"server_answers": None,
                                                           "checked_at": None}})

    def test_any_sip_response_means_answering(self):
        self.reactor.advance(1000)
        self.prober.start()
        proto, transport, sent = self.sent()
        proto.datagramReceived(sip_answer(sent[5060], b"403 Forbidden"), (BRANCH, 5060))
        self.assertEqual(self.prober.status(), {"branch": {"server_answers": True,
                                                           "checked_at": 1000}})
        self.assertTrue(transport.closed)
        self.assertEqual(self.reactor.getDelayedCalls()[0].getTime(), 1030)   # the next round

    def test_a_dns_answer_alone_means_answering(self):
        self.prober.start()
        proto, transport, sent = self.sent()
        proto.datagramReceived(dns_answer(sent[53], dns.ESERVER), (BRANCH, 53))
        self.assertTrue(self.prober.status()["branch"]["server_answers"])

    def test_silence_for_two_seconds_means_not_answering(self):
        self.prober.start()
        proto, transport, sent = self.sent()
        self.reactor.advance(1.9)
        self.assertIsNone(self.prober.status()["branch"]["server_answers"])
        self.reactor.advance(0.1)
        self.assertEqual(self.prober.status(), {"branch": {"server_answers": False,
                                                           "checked_at": 2.0}})
        self.assertTrue(transport.closed)
        proto.datagramReceived(sip_answer(sent[5060]), (BRANCH, 5060))     # too late
        self.assertFalse(self.prober.status()["branch"]["server_answers"])

    def test_answers_that_do_not_count(self):
        self.prober.start()
        proto, transport, sent = self.sent()
        other_call = sent[5060].replace(b"Call-ID: ", b"Call-ID: x")
        query = dns.Message()
        query.fromStr(sent[53])
        query.id ^= 1
        for data, addr in ((sip_answer(sent[5060]), ("192.168.99.3", 5060)),     # someone else
                           (sip_answer(other_call), (BRANCH, 5060)),            # another call
                           (sent[5060], (BRANCH, 5060)),                        # a request
                           (dns_answer(query.toStr()), (BRANCH, 53)),           # another id
                           (sent[53], (BRANCH, 53)),                            # a query
                           (b"\x00garbage", (BRANCH, 53))):
            proto.datagramReceived(data, addr)
        self.reactor.advance(2)
        self.assertFalse(self.prober.status()["branch"]["server_answers"])

    def test_a_site_without_domain_gets_options_only(self):
        self.config = C.parse_config(with_sections(VPN.replace("domain = branch.example.com\n", "")))
        self.prober.start()
        self.assertEqual([addr for _, addr in self.reactor.udp[0][1].written], [(BRANCH, 5060)])

    def test_every_30_seconds_and_live_sites(self):
        self.prober.start()
        self.reactor.advance(2)
        self.assertEqual(len(self.reactor.udp), 1)
        self.config = C.parse_config(with_sections(VPN.replace("[site branch]", "[site north]")))
        self.reactor.advance(28)
        self.assertEqual(len(self.reactor.udp), 2)
        proto, transport, sent = self.sent(1)
        proto.datagramReceived(sip_answer(sent[5060]), (BRANCH, 5060))
        # Only the sites configured now; north answered at 30 s.
        self.assertEqual(self.prober.status(), {"north": {"server_answers": True,
                                                          "checked_at": 30}})
        self.prober.stop()
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.udp), 2)

    def test_no_socket_means_not_answering(self):
        prober = P.SiteProber(MemoryReactorClock(), lambda: self.config)
        prober.start()
        self.assertFalse(prober.status()["branch"]["server_answers"])
        prober.stop()


class FakeEngine:
    kind = "wireguard-go"

    def __init__(self, found):
        self.found = found
        self.applied = []

    def peers(self):
        return defer.succeed(self.found)

    def apply(self, changes, replace_peers=False):
        self.applied.append(changes)
        return defer.succeed(None)


class ServiceAsPeersTests(ServiceTestBase):

    def setUp(self):
        ServiceTestBase.setUp(self)
        self.reactor = UdpReactor()

    def test_provides_ivpnpeers(self):
        svc = self.service(self.office(VPN))
        svc.startService()
        self.assertTrue(verifyObject(IVpnPeers, svc))

    def test_peers_in_the_interface_shape(self):
        svc = self.service(self.office(VPN))
        svc.startService()
        svc.engine = FakeEngine([
            {"public_key": KEY1, "endpoint": "198.51.100.2:51820", "allowed_ips": [],
             "last_handshake_time_sec": 1700000000, "last_handshake_time_nsec": 5,
             "rx_bytes": 10, "tx_bytes": 20, "persistent_keepalive_interval": 25},
            {"public_key": "K", "endpoint": None, "last_handshake_time_sec": 0,
             "rx_bytes": 0, "tx_bytes": 0}])
        peers = self.successResultOf(svc.peers())
        self.assertEqual(peers, [
            {"public_key": KEY1, "endpoint": "198.51.100.2:51820", "last_handshake": 1700000000,
             "rx_bytes": 10, "tx_bytes": 20},
            {"public_key": "K", "endpoint": None, "last_handshake": None, "rx_bytes": 0,
             "tx_bytes": 0}])

    def test_probes_while_running(self):
        svc = self.service(self.office(VPN))
        svc.startService()
        self.assertEqual(len(self.reactor.udp), 1)
        self.reactor.advance(2)
        self.assertEqual(svc.site_status(), {"branch": {"server_answers": False,
                                                        "checked_at": 2}})
        self.successResultOf(svc.stopService())
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.udp), 1)

    def test_keys_changed_applies_a_new_device_key(self):
        office = self.office(VPN)
        svc = self.service(office)
        svc.startService()
        old = public_key(read_device_key(self.data, "alice-phone"))
        remove_device_key(self.data, "alice-phone")
        self.wg.sent = []
        self.successResultOf(svc.keys_changed())
        new = public_key(read_device_key(self.data, "alice-phone"))
        self.assertNotEqual(old, new)
        keys = {p.public_key for p in svc.tunnel.peers}
        self.assertIn(new, keys)
        self.assertNotIn(old, keys)
        self.assertTrue(self.wg.sent)

    def test_keys_changed_while_off_does_nothing(self):
        svc = self.service(self.office(""))
        self.successResultOf(svc.keys_changed())
        self.assertFalse(os.path.exists(os.path.join(self.data, "vpn")))



class UnroutableTransport(FakeUdpTransport):
    def write(self, data, addr):
        raise OSError(101, "Network is unreachable")


class UnroutableTests(unittest.TestCase):
    def test_a_send_that_fails_is_no_answer_and_the_socket_closes(self):
        reactor = UdpReactor()
        ports = []

        def listen(port, proto, interface="", maxPacketSize=8192):
            transport = UnroutableTransport(40000)
            ports.append(transport)
            proto.makeConnection(transport)
            return transport
        reactor.listenUDP = listen
        config = C.parse_config(with_sections(VPN))
        prober = P.SiteProber(reactor, lambda: config)
        prober.start()
        reactor.advance(2)
        self.assertFalse(prober.status()["branch"]["server_answers"])
        self.assertTrue(ports[0].closed)
        prober.stop()
