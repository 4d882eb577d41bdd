"""Tests for the DHCP server: options per security mode, the RFC 2131 exchanges, the service."""

import ipaddress
import os
import shutil
import tempfile

from hypothesis import given, settings, strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.office import LeaseEvent, Office
from allworx.protocols.dhcp import service as dhcp
from allworx.protocols.dhcp import codec as c
from allworx.protocols.dhcp import sockets as dhcpsockets
from allworx.protocols.dhcp.responder import (
    PROBE_MAC, clean_hostname, reply_destination, served_options)
from allworx.tests.confs import MINIMAL, with_sections

IP = ipaddress.IPv4Address
PC = "02:a1:00:00:02:01"
PC2 = "02:a1:00:00:02:02"
PRINTER = "02:00:00:00:00:50"

HOSTS = """
[host printer]
mac = 02:00:00:00:00:50
address = 192.168.2.150
"""

LAN_ONLY = MINIMAL.replace("mode = firewall-nat", "mode = lan-only").replace(
    "[lan]\ninterface = lan0\n", "[lan]\ninterface = lan0\ngateway = 192.168.2.1\n").replace(
    "primary = 203.0.113.1", "primary = 203.0.113.1\nsecondary = 203.0.113.3")


def request(kind, mac=PC, xid=1, flags=0, ciaddr="0.0.0.0", **options):
    p = c.DhcpPacket(op=c.BOOTREQUEST, xid=xid, chaddr=c.mac_to_chaddr(mac), flags=flags,
                     ciaddr=ciaddr)
    p.set(c.MESSAGE_TYPE, kind)
    for name, value in options.items():
        p.set(int(name[1:]), value)
    return p


class OptionTests(unittest.TestCase):

    def test_firewall_nat(self):
        o = served_options(parse_config(MINIMAL))
        self.assertEqual(c.unpack_option(c.SUBNET_MASK, o[c.SUBNET_MASK]), IP("255.255.255.0"))
        self.assertEqual(c.unpack_option(c.ROUTER, o[c.ROUTER]), (IP("192.168.2.254"),))
        self.assertEqual(c.unpack_option(c.DNS_SERVERS, o[c.DNS_SERVERS]), (IP("192.168.2.254"),))
        self.assertEqual(o[c.DOMAIN_NAME], b"example.com")
        self.assertEqual(c.unpack_option(c.NTP_SERVERS, o[c.NTP_SERVERS]), (IP("192.168.2.254"),))
        self.assertEqual(c.unpack_option(c.BROADCAST_ADDRESS, o[c.BROADCAST_ADDRESS]),
                         IP("192.168.2.255"))

    def test_router_mode_same_as_firewall(self):
        o = served_options(parse_config(MINIMAL.replace("firewall-nat", "router")))
        self.assertEqual(o[c.ROUTER], IP("192.168.2.254").packed)

    def test_lan_only(self):
        o = served_options(parse_config(LAN_ONLY))
        self.assertEqual(c.unpack_option(c.ROUTER, o[c.ROUTER]), (IP("192.168.2.1"),))
        self.assertEqual(c.unpack_option(c.DNS_SERVERS, o[c.DNS_SERVERS]),
                         (IP("203.0.113.1"), IP("203.0.113.3")))

    def test_ntp_disabled(self):
        o = served_options(parse_config(with_sections("[ntp]\nenabled = no\n")))
        self.assertNotIn(c.NTP_SERVERS, o)

    def test_dns_disabled_hands_out_the_isp(self):
        o = served_options(parse_config(with_sections("[dns]\nenabled = no\nprimary = 203.0.113.1\n",
                                                      MINIMAL.replace("[dns]\nprimary = 203.0.113.1\n", ""))))
        self.assertEqual(o[c.DNS_SERVERS], IP("203.0.113.1").packed)

    def test_clean_hostname(self):
        self.assertEqual(clean_hostname(b"PC1"), "pc1")
        self.assertEqual(clean_hostname(b"Bob's Laptop.local"), "bob-s-laptop")
        self.assertIsNone(clean_hostname(b"..."))
        self.assertIsNone(clean_hostname(None))
        self.assertEqual(len(clean_hostname(b"a" * 300)), 63)


class DestinationTests(unittest.TestCase):

    def reply(self, kind, yiaddr="192.168.2.1"):
        p = c.DhcpPacket(op=2, xid=1, yiaddr=yiaddr)
        p.set(c.MESSAGE_TYPE, kind)
        return p

    def test_rules(self):
        self.assertEqual(reply_destination(request(c.DISCOVER), self.reply(c.OFFER)),
                         (("192.168.2.1", 68), PC))
        self.assertEqual(reply_destination(request(c.DISCOVER, flags=c.FLAG_BROADCAST),
                                           self.reply(c.OFFER)), (("255.255.255.255", 68), None))
        self.assertEqual(reply_destination(request(c.REQUEST, ciaddr="192.168.2.7"),
                                           self.reply(c.ACK)), (("192.168.2.7", 68), None))
        self.assertEqual(reply_destination(request(c.REQUEST, ciaddr="192.168.2.7"),
                                           self.reply(c.NAK)), (("255.255.255.255", 68), None))
        relayed = request(c.DISCOVER)
        relayed.giaddr = IP("192.168.2.9")
        self.assertEqual(reply_destination(relayed, self.reply(c.OFFER)), (("192.168.2.9", 67), None))


class FakePort:
    def __init__(self, proto, interface, port):
        self.proto, self.interface, self.number = proto, interface, port
        self.sent = []
        self.stopped = False

    def write(self, data, addr):
        self.sent.append((c.decode(data), addr))

    def stopListening(self):
        self.stopped = True


class FakeRaw:
    def __init__(self, interface, server_ip):
        self.server_ip = str(server_ip)
        self.sent = []

    def send(self, payload, mac, ip, port=68):
        self.sent.append((c.decode(payload), mac, ip, port))

    def close(self):
        pass


class ManualThread:
    def __init__(self, auto=True):
        self.auto = auto
        self.calls = []

    def __call__(self, f, *args):
        if self.auto:
            return defer.maybeDeferred(f, *args)
        d = defer.Deferred()
        self.calls.append((f, args, d))
        return d

    def finish_all(self):
        while self.calls:
            f, args, d = self.calls.pop(0)
            f(*args)
            d.callback(None)


class ServiceTests(unittest.TestCase):

    def setUp(self):
        self.data_dir = self.mktemp()
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.thread = ManualThread()
        self.ports = []
        self.events = []
        self.start(with_sections(HOSTS))

    def start(self, text, fail=None):
        self.office = Office(parse_config(text), data_dir=self.data_dir)
        self.office.subscribe(LeaseEvent, self.events.append)

        def open_udp(reactor, proto, interface, port):
            if fail:
                raise OSError(13, "Permission denied")
            p = FakePort(proto, interface, port)
            self.ports.append(p)
            return p

        self.raw = None

        def open_raw(interface, ip):
            self.raw = FakeRaw(interface, ip)
            return self.raw

        self.service = dhcp.DhcpService(self.office, self.clock, open_udp, open_raw,
                                        journal_thread=self.thread)
        self.service.startService()
        self.addCleanup(self.stop)

    def stop(self):
        if self.service.running:
            self.thread.auto = True
            self.thread.finish_all()
            return self.service.stopService()

    @property
    def server_port(self):
        return [p for p in self.ports if p.number == 67][-1]

    def send(self, packet):
        self.service.server.datagram_received(c.encode(packet), ("0.0.0.0", 68))
        self.clock.advance(0)

    def dora(self, mac=PC, **options):
        self.send(request(c.DISCOVER, mac=mac, **options))
        offer = self.raw.sent[-1][0]
        self.send(request(c.REQUEST, mac=mac, o50=offer.yiaddr, o54="192.168.2.254", **options))
        return self.raw.sent[-1][0]

    def test_status_and_ports(self):
        self.assertEqual(self.office.status["dhcp"].state, "up")
        self.assertIn("192.168.2.1-192.168.2.100 on lan0", self.office.status["dhcp"].detail)
        self.assertEqual(sorted(p.number for p in self.ports), [67, 68])
        self.assertEqual({p.interface for p in self.ports}, {"lan0"})

    def test_dora(self):
        self.send(request(c.DISCOVER, o55=[1, 3, 6, 15, 42], o12="PC1"))
        offer, mac, ip, port = self.raw.sent[-1]
        self.assertEqual((offer.message_type, mac, ip, port), (c.OFFER, PC, "192.168.2.1", 68))
        self.assertEqual(offer.yiaddr, IP("192.168.2.1"))
        self.assertEqual(offer.get(c.SERVER_ID), IP("192.168.2.254"))
        self.assertEqual(offer.get(c.LEASE_TIME), 86400)
        self.assertEqual(offer.get(c.RENEWAL_TIME), 43200)
        self.assertEqual(offer.get(c.REBINDING_TIME), 75600)
        self.assertEqual(list(offer.options)[:2], [c.MESSAGE_TYPE, c.SERVER_ID])
        self.assertEqual([k for k in offer.options if k in (1, 3, 6, 15, 42, 28)], [1, 3, 6, 15, 42])
        self.assertEqual(self.events, [])
        ack = self.dora(o55=[1, 3, 6, 15, 42], o12="PC1")
        self.assertEqual((ack.message_type, ack.yiaddr), (c.ACK, IP("192.168.2.1")))
        self.assertEqual(ack.get(c.ROUTER), (IP("192.168.2.254"),))
        self.assertEqual(ack.get(c.DOMAIN_NAME), "example.com")
        self.assertEqual(self.events, [LeaseEvent("granted", PC, IP("192.168.2.1"), "pc1",
                                                  self.clock.seconds() + 86400)])
        self.assertEqual(self.service.leases.active_leases(), [
            {"mac": PC, "address": "192.168.2.1", "hostname": "pc1",
             "expires": self.clock.seconds() + 86400, "state": "bound", "vendor_class": None}])

    def test_no_prl_gets_everything(self):
        offer = (self.send(request(c.DISCOVER)), self.raw.sent[-1][0])[1]
        for code in (1, 3, 6, 15, 28, 42):
            self.assertIn(code, offer.options)

    def test_ack_waits_for_the_journal(self):
        self.thread.auto = False
        self.send(request(c.DISCOVER))
        self.send(request(c.REQUEST, o50="192.168.2.1", o54="192.168.2.254"))
        self.assertEqual(self.raw.sent[-1][0].message_type, c.OFFER)
        self.assertEqual(len(self.thread.calls), 1)
        self.thread.finish_all()
        self.assertEqual(self.raw.sent[-1][0].message_type, c.ACK)
        with open(self.service.journal.path, "rb") as f:
            self.assertIn(b"192.168.2.1", f.read())

    def test_no_ack_without_disk(self):
        """When the lease cannot be made durable, no ACK goes out."""
        self.thread.auto = False
        self.send(request(c.DISCOVER))
        self.send(request(c.REQUEST, o50="192.168.2.1", o54="192.168.2.254"))
        f, args, d = self.thread.calls.pop(0)
        d.errback(OSError(28, "No space left on device"))
        self.assertEqual(self.raw.sent[-1][0].message_type, c.OFFER)
        self.assertEqual(self.events, [])
        self.flushLoggedErrors()

    def test_broadcast_flag(self):
        self.send(request(c.DISCOVER, flags=c.FLAG_BROADCAST))
        offer, addr = self.server_port.sent[-1]
        self.assertEqual((offer.message_type, addr), (c.OFFER, ("255.255.255.255", 68)))

    def test_reservation(self):
        ack = self.dora(mac=PRINTER)
        self.assertEqual(ack.yiaddr, IP("192.168.2.150"))

    def test_nak_for_foreign_address(self):
        self.send(request(c.REQUEST, o50="10.1.1.1"))
        nak, addr = self.server_port.sent[-1]
        self.assertEqual((nak.message_type, addr), (c.NAK, ("255.255.255.255", 68)))
        self.assertIn(b"not on this LAN", nak.options[c.MESSAGE])

    def test_nak_for_taken_address(self):
        self.dora()
        self.send(request(c.REQUEST, mac=PC2, o50="192.168.2.1"))
        self.assertEqual(self.server_port.sent[-1][0].message_type, c.NAK)

    def test_init_reboot_and_renewal(self):
        self.dora()
        self.send(request(c.REQUEST, o50="192.168.2.1"))       # INIT-REBOOT
        self.assertEqual(self.raw.sent[-1][0].message_type, c.ACK)
        self.clock.advance(43200)
        self.send(request(c.REQUEST, ciaddr="192.168.2.1"))    # RENEWING: unicast
        ack, addr = self.server_port.sent[-1]
        self.assertEqual((ack.message_type, addr, ack.ciaddr), (c.ACK, ("192.168.2.1", 68),
                                                                IP("192.168.2.1")))
        self.assertEqual([e.kind for e in self.events], ["granted", "renewed", "renewed"])

    def test_other_server_chosen(self):
        self.send(request(c.DISCOVER))
        self.send(request(c.REQUEST, o50="192.168.2.1", o54="192.168.2.9"))
        self.assertEqual(self.service.leases.active_leases(), [])
        self.assertEqual(self.service.server.pool.counts()["offered"], 0)

    def test_release(self):
        self.dora()
        self.send(request(c.RELEASE, ciaddr="192.168.2.1", o54="192.168.2.254"))
        self.assertEqual(self.events[-1].kind, "released")
        self.assertEqual(self.service.leases.active_leases(), [])
        self.assertEqual(self.dora(mac=PC2).yiaddr, IP("192.168.2.2"))  # the old one waits for PC

    def test_decline(self):
        self.dora()
        self.send(request(c.DECLINE, o50="192.168.2.1", o54="192.168.2.254"))
        self.assertEqual(self.events[-1].kind, "declined")
        self.assertEqual(self.dora().yiaddr, IP("192.168.2.2"))
        self.flushLoggedErrors()

    def test_inform(self):
        self.send(request(c.INFORM, ciaddr="192.168.2.77", o55=[6, 15]))
        ack, addr = self.server_port.sent[-1]
        self.assertEqual((ack.message_type, addr), (c.ACK, ("192.168.2.77", 68)))
        self.assertNotIn(c.LEASE_TIME, ack.options)
        self.assertEqual(ack.yiaddr, IP("0.0.0.0"))
        self.assertEqual(ack.get(c.DNS_SERVERS), (IP("192.168.2.254"),))

    def test_own_probe_and_replies_ignored(self):
        self.send(request(c.DISCOVER, mac=PROBE_MAC, flags=c.FLAG_BROADCAST))
        self.assertEqual(self.server_port.sent, [])
        reply = c.DhcpPacket(op=2, xid=1)
        reply.set(c.MESSAGE_TYPE, c.OFFER)
        self.send(reply)
        self.assertEqual(self.server_port.sent, [])

    def test_expiry_event(self):
        self.dora()
        self.clock.advance(86400 + 61)
        self.assertEqual([e.kind for e in self.events], ["granted", "expired"])
        self.assertEqual(self.service.leases.active_leases(), [])

    def flood(self, count, mac=PC):
        """`count` DISCOVERs from `mac` at once: how many were answered."""
        before = len(self.server_port.sent)
        for i in range(count):
            self.send(request(c.DISCOVER, mac=mac, xid=i, flags=c.FLAG_BROADCAST))
        return len(self.server_port.sent) - before

    def test_rate_limit(self):
        """By default a client may send 10 packets a second, bursts of 30."""
        self.assertEqual(self.office.config.dhcp.client_rate, 10)
        self.assertEqual(self.flood(35), 30)
        self.clock.advance(1)
        self.assertEqual(self.flood(15), 10)
        self.assertEqual(self.flood(5, mac=PC2), 5)   # each client has its own

    def test_client_rate_from_config(self):
        """`[dhcp] client_rate` sets the rate; its burst is three seconds' worth."""
        self.stop()
        self.start(with_sections(HOSTS + "\n[dhcp]\nclient_rate = 2\n"))
        self.assertEqual(self.flood(10), 6)
        self.clock.advance(1)
        self.assertEqual(self.flood(10), 2)

    def test_client_rate_changed_live(self):
        """A config change applies the new rate at once, and 0 lifts the limit."""
        self.assertEqual(self.flood(35), 30)
        self.office.update_settings("dhcp", {"client_rate": "100"})
        self.clock.advance(1)
        self.assertEqual(self.flood(150), 100)      # a second at the new rate
        self.office.update_settings("dhcp", {"client_rate": "0"})
        self.assertEqual(self.flood(1000), 1000)
        self.office.update_settings("dhcp", {"client_rate": "1"})
        self.clock.advance(10)
        self.assertEqual(self.flood(10), 3)

    def test_exhaustion_logged(self):
        self.office.update_settings("dhcp", {"range": "1-1"})
        self.dora()
        from twisted.logger import globalLogPublisher
        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.send(request(c.DISCOVER, mac=PC2, flags=c.FLAG_BROADCAST))
        self.assertTrue(any("exhausted" in e.get("log_format", "") for e in seen))

    def test_rogue_server(self):
        self.assertEqual(self.clock.getDelayedCalls() and "probe" or "", "probe")
        self.clock.advance(3)
        probe, addr = [p for p in self.ports if p.number == 68][0].sent[-1]
        self.assertEqual((probe.mac, probe.message_type, addr),
                         (PROBE_MAC, c.DISCOVER, ("255.255.255.255", 67)))
        offer = c.DhcpPacket(op=2, xid=probe.xid, chaddr=probe.chaddr)
        offer.set(c.MESSAGE_TYPE, c.OFFER)
        offer.set(c.SERVER_ID, "192.168.2.66")
        watch = self.service.server
        watch.client_port_datagram(c.encode(offer), ("192.168.2.66", 67))
        watch.client_port_datagram(c.encode(offer), ("192.168.2.66", 67))
        self.assertEqual(len(self.service.rogues.warnings()), 1)
        self.assertIn("192.168.2.66", str(self.service.rogues.warnings()[0]))
        self.assertEqual(self.service.rogues.warnings()[0].replies, 2)
        self.assertEqual(self.office.status["dhcp"].state, "degraded")
        # Our own replies are not a rogue.
        offer.set(c.SERVER_ID, "192.168.2.254")
        watch.client_port_datagram(c.encode(offer), ("192.168.2.254", 67))
        self.assertEqual(len(self.service.rogues.warnings()), 1)
        # Quiet through two probes: the warning goes, the status is up again.
        self.clock.advance(dhcp.PROBE_INTERVAL)
        self.assertEqual(len(self.service.rogues.warnings()), 1)
        self.clock.advance(2 * dhcp.PROBE_INTERVAL)
        self.assertEqual(self.service.rogues.warnings(), [])
        self.assertEqual(self.office.status["dhcp"].state, "up")

    def test_restart_keeps_leases(self):
        self.dora()
        self.stop()
        self.events = []
        self.start(with_sections(HOSTS))
        # Listeners hear where the restored clients are.
        self.assertEqual([(e.kind, e.mac, e.address) for e in self.events],
                         [("renewed", PC, IP("192.168.2.1"))])
        # The old client renews its address; a new client does not get it.
        self.send(request(c.REQUEST, ciaddr="192.168.2.1"))
        self.assertEqual(self.server_port.sent[-1][0].message_type, c.ACK)
        self.assertEqual(self.dora(mac=PC2).yiaddr, IP("192.168.2.2"))

    def test_live_reconfiguration(self):
        self.office.update_settings("dhcp", {"range": "20-30", "lease_time": "1h"})
        ack = self.dora()
        self.assertEqual((ack.yiaddr, ack.get(c.LEASE_TIME)), (IP("192.168.2.20"), 3600))
        self.office.update_settings("security", {"mode": "lan-only"})
        self.office.update_settings("lan", {"gateway": "192.168.2.1"})
        self.assertEqual(self.dora().get(c.ROUTER), (IP("192.168.2.1"),))
        old_ports = list(self.ports)
        self.office.update_settings("dhcp", {"enabled": "no"})
        self.assertTrue(all(p.stopped for p in old_ports))
        self.assertEqual(self.office.status["dhcp"].state, "disabled")
        self.office.update_settings("dhcp", {"enabled": "yes"})
        self.assertEqual(self.office.status["dhcp"].state, "up")
        self.office.put_record("host", "pc", {"mac": PC, "address": "192.168.2.160"})
        self.assertEqual(self.dora().yiaddr, IP("192.168.2.160"))

    def test_no_permission(self):
        self.stop()
        self.start(MINIMAL, fail=True)
        self.assertEqual(self.office.status["dhcp"].state, "down")
        self.assertIn("permission denied", self.office.status["dhcp"].detail)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=600), st.integers(0, 700), st.integers(0, 255))
    def test_hostile_packets_never_crash(self, junk, where, value):
        base = bytearray(c.encode(request(c.REQUEST, o50="192.168.2.5", o12="x", o55=[1, 3])))
        base[where % len(base)] = value
        self.service.server.datagram_received(bytes(base), ("0.0.0.0", 68))
        self.service.server.datagram_received(junk, ("0.0.0.0", 68))
        self.service.server.client_port_datagram(junk, ("192.168.2.9", 67))
        self.clock.advance(0)

    def test_metric_families(self):
        from prometheus_client import generate_latest
        self.dora()
        text = generate_latest().decode()
        for needle in ('allworx_dhcp_received_total{type="DISCOVER"}',
                       'allworx_dhcp_sent_total{type="ACK"}',
                       'allworx_dhcp_lease_events_total{kind="granted"}',
                       'allworx_dhcp_leases{state="bound"} 1.0',
                       'allworx_dhcp_pool_size 100.0',
                       'allworx_dhcp_journal_commit_seconds_count',
                       'allworx_dhcp_journal_batch_records_bucket'):
            self.assertIn(needle, text)


class LogBudgetTests(unittest.TestCase):

    def test_floods_are_summarised(self):
        from twisted.logger import globalLogPublisher
        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        clock = Clock()
        budget = dhcp.LogBudget(clock, "things", per_second=3)
        self.assertEqual([budget.spend() for _ in range(5)], [True, True, True, False, False])
        clock.advance(1)
        self.assertTrue(budget.spend())
        self.assertTrue(any(e.get("count") == 2 and e.get("what") == "things" for e in seen))


class RawFrameTests(unittest.TestCase):

    def test_ip_udp_checksums(self):
        from scapy.layers.inet import IP, UDP
        payload = c.encode(request(c.DISCOVER))
        raw = dhcpsockets.ip_udp_packet("192.168.2.254", "192.168.2.7", 67, 68, payload)
        packet = IP(raw)
        self.assertEqual((packet.src, packet.dst, packet[UDP].sport, packet[UDP].dport),
                         ("192.168.2.254", "192.168.2.7", 67, 68))
        self.assertEqual(bytes(packet[UDP].payload), payload)
        ip_sum, udp_sum = packet.chksum, packet[UDP].chksum
        del packet.chksum
        del packet[UDP].chksum
        again = IP(bytes(packet))
        self.assertEqual((again.chksum, again[UDP].chksum), (ip_sum, udp_sum))


class CrashTests(unittest.TestCase):
    """kill -9 at any moment: every lease whose ACK went out is honoured after restart."""

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 9), st.booleans()), min_size=1, max_size=25))
    def test_acked_leases_survive(self, steps):
        data_dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, data_dir, True)
        clock = Clock()
        clock.advance(1_700_000_000)
        thread = ManualThread(auto=False)
        office = Office(parse_config(MINIMAL), data_dir=data_dir)
        raw = []

        def open_raw(interface, ip):
            r = FakeRaw(interface, ip)
            raw.append(r)
            return r

        svc = dhcp.DhcpService(office, clock, lambda *a: FakePort(*a[1:]), open_raw,
                               journal_thread=thread)
        svc.startService()
        for who, flush in steps:
            mac = "02:00:00:00:01:%02x" % who
            svc.server.datagram_received(c.encode(request(c.DISCOVER, mac=mac)), ("0.0.0.0", 68))
            offer = raw[-1].sent[-1][0] if raw[-1].sent else None
            if offer is not None and offer.message_type == c.OFFER:
                svc.server.datagram_received(c.encode(request(
                    c.REQUEST, mac=mac, o50=offer.yiaddr, o54="192.168.2.254")), ("0.0.0.0", 68))
            clock.advance(0)
            if flush and thread.calls:
                f, args, d = thread.calls.pop(0)
                f(*args)
                d.callback(None)
        acked = {(p.mac, p.yiaddr) for p, _, _, _ in raw[-1].sent if p.message_type == c.ACK}
        # Crash: pending writes never happen; nothing is closed.
        os.close(svc.journal._fd)
        clock2 = Clock()
        clock2.advance(clock.seconds())
        office2 = Office(parse_config(MINIMAL), data_dir=data_dir)
        svc2 = dhcp.DhcpService(office2, clock2, lambda *a: FakePort(*a[1:]), open_raw,
                                journal_thread=ManualThread())
        svc2.startService()
        self.addCleanup(svc2.stopService)
        restored = {(l["mac"], IP(l["address"])) for l in svc2.leases.active_leases()}
        self.assertLessEqual(acked, restored)
