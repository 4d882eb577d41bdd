"""
Tests for the WAN DHCP client (allworx.routing.wanclient.client and its packets): the
state machine on task.Clock with a fake wire playing the ISP's server, the
codec and framing (fuzzed), and lease persistence.
"""

import ipaddress
import json
import os
import socket
import struct

from hypothesis import given, settings, strategies as st
from twisted.internet import defer, task
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.ipv4udp import ipv4_udp_packet, parse_ipv4_udp
from allworx.protocols.dhcp import codec as c
from allworx.protocols.dhcp.pool import LeasePool, PoolSettings
from allworx.protocols.dhcp.responder import DhcpResponder
from allworx.routing.wanclient import packets as P
from allworx.routing.wanclient.client import (
    DhcpClientCore, LeaseFile, NAK_DELAY, WanDhcpClient, choose_offer, make_client_machine)
from allworx.routing.wanclient.wire import _BPF_PORT68, PacketWire, _attach_filter
from allworx.protocols.dhcp.codec import MalformedPacket
from allworx.routing.wanclient.packets import DhcpMessage, Lease
from allworx.tests.confs import MINIMAL

IP = ipaddress.IPv4Address
MAC = "02:a1:00:00:71:fe"
MAC_B = P.mac_bytes(MAC)
SERVER = IP("203.0.113.1")
LAN = ipaddress.IPv4Network("192.168.2.0/24")


class FakeWire:
    """Records what the client sends: ("broadcast"|"unicast", message, src|dst)."""

    def __init__(self, *args):
        self.sent = []
        self.opened = self.closed = False
        self.probes = []          # (ip, "start" | "again")
        self.probing = None       # the conflict callback while a probe runs

    def start_probe(self, ip, mac, on_conflict):
        self.probes.append((ip, "start"))
        self.probing = on_conflict

    def probe_again(self):
        self.probes.append((None, "again"))

    def end_probe(self):
        self.probing = None

    def open(self):
        self.opened = True

    def close(self):
        self.closed = True

    def broadcast(self, data, src):
        self.sent.append(("broadcast", DhcpMessage.decode(data), src))

    def unicast(self, data, dst):
        self.sent.append(("unicast", DhcpMessage.decode(data), dst))

    def last(self):
        return self.sent[-1]


class FakeListener:
    def __init__(self):
        self.events = []
        self.states = []

    def dhcp_bound(self, lease, renewed=False):
        self.events.append(("renewed" if renewed else "bound", lease))

    def dhcp_lost(self, reason):
        self.events.append(("lost", reason))

    def dhcp_state_changed(self, state):
        self.states.append(state)


class FakeStore:
    def __init__(self, lease=None):
        self.lease = lease
        self.saved = []

    def load(self):
        return self.lease

    def save(self, lease):
        self.saved.append(lease)
        self.lease = lease

    def clear(self):
        self.lease = None


def reply(kind, xid, yiaddr="203.0.113.23", lease_time=120, server=SERVER, chaddr=MAC_B,
          router="203.0.113.1", mask="255.255.255.0", extra=None):
    """A server's reply as bytes, with DNS and domain options it must not take."""
    opts = {c.MESSAGE_TYPE: bytes([kind]), c.SERVER_ID: IP(server).packed,
            6: IP("203.0.113.53").packed, 15: b"isp.example"}
    if kind != c.NAK:
        opts[c.LEASE_TIME] = struct.pack("!I", lease_time)
        if mask:
            opts[c.SUBNET_MASK] = IP(mask).packed
        if router:
            opts[c.ROUTER] = IP(router).packed
    opts.update(extra or {})
    return DhcpMessage(op=c.BOOTREPLY, xid=xid, chaddr=chaddr,
                       yiaddr=IP(yiaddr) if kind != c.NAK else c.ZERO,
                       options=opts).encode()


class ClientHarness:
    """A client core and machine on a task.Clock, no sockets."""

    def __init__(self, store=None, avoid=(LAN,)):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.wire = FakeWire()
        self.listener = FakeListener()
        self.store = store or FakeStore()
        self.core = DhcpClientCore(MAC, self.clock, self.wire, self.listener, self.store,
                                   hostname="allworx", avoid=avoid, jitter=lambda: 0.0,
                                   select_window=1.0)
        self.machine = make_client_machine(self.core)

    @property
    def xid(self):
        return self.core.xid

    def to_bound(self, yiaddr="203.0.113.23", lease_time=120, **kw):
        self.machine.start()
        self.clock.advance(0)
        self.core.receive(reply(c.OFFER, self.xid, yiaddr, lease_time, **kw))
        self.clock.advance(1)
        self.core.receive(reply(c.ACK, self.xid, yiaddr, lease_time, **kw))
        assert self.core.state == "CHECKING", self.core.state
        self.clock.pump([0.5, 0.5])
        assert self.core.state == "BOUND", self.core.state


class StateMachineTests(unittest.TestCase):
    """The RFC 2131 client states, driven by a fake server and task.Clock."""

    def test_select_request_bound(self):
        h = ClientHarness()
        h.machine.start()
        self.assertEqual(h.core.state, "INIT")
        h.clock.advance(0)
        self.assertEqual(h.core.state, "SELECTING")
        how, discover, src = h.wire.last()
        self.assertEqual((how, discover.message_type, src), ("broadcast", c.DISCOVER, c.ZERO))
        params = discover.options[c.PARAMETER_REQUEST_LIST]
        self.assertEqual(set(params), {1, 3, 51, 58, 59})
        self.assertNotIn(6, params)
        self.assertNotIn(15, params)
        self.assertEqual(discover.options[c.CLIENT_ID], b"\x01" + MAC_B)
        h.core.receive(reply(c.OFFER, h.xid))
        self.assertEqual(h.core.state, "SELECTING")   # waits a moment for other offers
        h.clock.advance(1)
        self.assertEqual(h.core.state, "REQUESTING")
        how, request, src = h.wire.last()
        self.assertEqual((how, request.message_type), ("broadcast", c.REQUEST))
        self.assertEqual(request.address_option(c.REQUESTED_ADDRESS), IP("203.0.113.23"))
        self.assertEqual(request.server_id, SERVER)
        self.assertEqual(request.ciaddr, c.ZERO)
        self.assertEqual(request.xid, discover.xid)
        h.core.receive(reply(c.ACK, h.xid))
        # The final check: ARP probes for the address, then BOUND if nobody answers.
        self.assertEqual(h.core.state, "CHECKING")
        self.assertEqual(h.wire.probes, [(IP("203.0.113.23"), "start")])
        self.assertEqual(h.listener.events, [])
        h.clock.advance(0.5)
        self.assertEqual(h.wire.probes[-1], (None, "again"))
        h.clock.advance(0.5)
        self.assertEqual(h.core.state, "BOUND")
        self.assertIsNone(h.wire.probing)
        [(kind, lease)] = h.listener.events
        self.assertEqual(kind, "bound")
        self.assertEqual(lease.address, ipaddress.IPv4Interface("203.0.113.23/24"))
        self.assertEqual(lease.router, IP("203.0.113.1"))
        self.assertEqual((lease.lease_time, lease.t1, lease.t2), (120, 60, 105))
        self.assertFalse(hasattr(lease, "dns"))
        self.assertEqual(h.store.saved, [lease])
        self.assertEqual(h.listener.states,
                         ["INIT", "SELECTING", "REQUESTING", "CHECKING", "BOUND"])

    def test_default_requests_the_first_offer_at_once(self):
        h = ClientHarness()
        h.core.select_window = 0.0
        h.machine.start()
        h.clock.advance(0)
        h.core.receive(reply(c.OFFER, h.xid))
        h.clock.advance(0)
        self.assertEqual(h.core.state, "REQUESTING")

    def test_prefers_the_address_it_had(self):
        h = ClientHarness()
        h.core.preferred = IP("203.0.113.30")
        h.machine.start()
        h.clock.advance(0)
        self.assertEqual(h.wire.last()[1].address_option(c.REQUESTED_ADDRESS), IP("203.0.113.30"))
        h.core.receive(reply(c.OFFER, h.xid, "203.0.113.23", server="203.0.113.2"))
        h.core.receive(reply(c.OFFER, h.xid, "203.0.113.30"))
        # The preferred one ends the wait at once.
        self.assertEqual(h.core.state, "REQUESTING")
        request = h.wire.last()[1]
        self.assertEqual(request.address_option(c.REQUESTED_ADDRESS), IP("203.0.113.30"))
        self.assertEqual(request.server_id, SERVER)

    def test_renew_at_t1_unicast(self):
        h = ClientHarness()
        h.to_bound()                   # T1 counts from the request, a second ago
        sent = len(h.wire.sent)
        h.clock.advance(58)
        self.assertEqual(h.core.state, "BOUND")
        self.assertEqual(len(h.wire.sent), sent)
        h.clock.advance(1)
        self.assertEqual(h.core.state, "RENEWING")
        how, msg, dst = h.wire.last()
        self.assertEqual((how, dst), ("unicast", SERVER))
        self.assertEqual(msg.ciaddr, IP("203.0.113.23"))
        self.assertNotIn(c.REQUESTED_ADDRESS, msg.options)
        self.assertNotIn(c.SERVER_ID, msg.options)
        h.core.receive(reply(c.ACK, h.xid))
        self.assertEqual(h.core.state, "BOUND")
        self.assertEqual(h.listener.events[-1][0], "renewed")
        # The new lease counts from the renewal: next T1 is 60 s later.
        h.clock.advance(59)
        self.assertEqual(h.core.state, "BOUND")
        h.clock.advance(1)
        self.assertEqual(h.core.state, "RENEWING")

    def test_renew_retransmits_then_rebinds_at_t2(self):
        h = ClientHarness()
        h.to_bound()
        h.clock.advance(59)
        self.assertEqual(h.core.state, "RENEWING")
        sent = len(h.wire.sent)
        h.clock.advance(22.5)          # half of the 45 s left until T2
        self.assertEqual(len(h.wire.sent), sent + 1)
        self.assertEqual(h.wire.last()[0], "unicast")
        h.clock.advance(22.5)          # T2 (105 s)
        self.assertEqual(h.core.state, "REBINDING")
        how, msg, src = h.wire.last()
        self.assertEqual((how, src), ("broadcast", IP("203.0.113.23")))
        self.assertEqual(msg.ciaddr, IP("203.0.113.23"))
        h.core.receive(reply(c.ACK, h.xid, server="203.0.113.2"))
        self.assertEqual(h.core.state, "BOUND")
        self.assertEqual(h.core.lease.server, IP("203.0.113.2"))
        self.assertEqual(h.listener.events[-1][0], "renewed")

    def test_expiry_loses_the_lease_and_starts_over(self):
        h = ClientHarness()
        h.to_bound()
        h.clock.advance(104)
        self.assertEqual(h.core.state, "REBINDING")
        h.clock.advance(15)
        self.assertEqual(h.listener.events[-1][0], "lost")
        self.assertIn("expired", h.listener.events[-1][1])
        self.assertIsNone(h.core.lease)
        h.clock.advance(0)
        self.assertEqual(h.core.state, "SELECTING")
        discover = h.wire.last()[1]
        self.assertEqual(discover.message_type, c.DISCOVER)
        self.assertEqual(discover.address_option(c.REQUESTED_ADDRESS), IP("203.0.113.23"))

    def test_nak_while_requesting_goes_to_init(self):
        h = ClientHarness()
        h.machine.start()
        h.clock.advance(0)
        h.core.receive(reply(c.OFFER, h.xid))
        h.clock.advance(1)
        h.core.receive(reply(c.NAK, h.xid, extra={c.MESSAGE: b"wrong network"}))
        self.assertEqual(h.core.state, "INIT")
        self.assertEqual(h.listener.events, [])    # nothing was bound, nothing lost
        h.clock.advance(NAK_DELAY)
        self.assertEqual(h.core.state, "SELECTING")

    def test_nak_while_renewing_loses_the_lease(self):
        h = ClientHarness()
        h.to_bound()
        h.clock.advance(60)
        h.core.receive(reply(c.NAK, h.xid))
        self.assertEqual(h.core.state, "INIT")
        self.assertEqual(h.listener.events[-1][0], "lost")
        self.assertIn("DHCPNAK from 203.0.113.1", h.listener.events[-1][1])
        self.assertFalse([t for t in h.clock.getDelayedCalls()
                          if t.getTime() > h.clock.seconds() + NAK_DELAY])

    def test_discover_backoff(self):
        h = ClientHarness()
        h.machine.start()
        h.clock.advance(0)
        times = []
        start = h.clock.seconds()
        for _ in range(6):
            before = len(h.wire.sent)
            while len(h.wire.sent) == before:
                h.clock.advance(1)
            times.append(h.clock.seconds() - start)
        gaps = [b - a for a, b in zip([0] + times, times)]
        self.assertEqual(gaps, [4, 8, 16, 32, 64, 64])
        self.assertTrue(all(m.secs == t for (_, m, _), t in zip(h.wire.sent[1:], times)))

    def test_requesting_gives_up_after_retries(self):
        h = ClientHarness()
        h.machine.start()
        h.clock.advance(0)
        h.core.receive(reply(c.OFFER, h.xid))
        h.clock.advance(1)
        h.clock.pump([1] * (4 + 8 + 16))
        self.assertEqual(h.core.state, "REQUESTING")
        self.assertEqual(sum(1 for _, m, _ in h.wire.sent if m.message_type == c.REQUEST), 4)
        h.clock.pump([1] * 32)
        self.assertEqual(h.core.state, "SELECTING")

    def test_ignores_what_is_not_for_it(self):
        h = ClientHarness()
        h.machine.start()
        h.clock.advance(0)
        h.core.receive(reply(c.OFFER, h.xid + 1))                     # another exchange
        h.core.receive(reply(c.OFFER, h.xid, chaddr=b"\x02" * 6))     # another client
        h.core.receive(reply(c.ACK, h.xid))                           # ACK while selecting
        h.core.receive(b"\x02garbage")
        h.clock.advance(1)
        self.assertEqual(h.core.state, "SELECTING")
        self.assertEqual(h.core.offers, [])

    def test_offer_inside_the_lan_refused(self):
        h = ClientHarness()
        h.machine.start()
        h.clock.advance(0)
        h.core.receive(reply(c.OFFER, h.xid, "192.168.2.50", router="192.168.2.1"))
        self.assertEqual(h.core.offers, [])

    def test_address_in_use_is_declined(self):
        h = ClientHarness()
        h.machine.start()
        h.clock.advance(0)
        h.core.receive(reply(c.OFFER, h.xid))
        h.clock.advance(1)
        h.core.receive(reply(c.ACK, h.xid))
        h.wire.probing("02:00:00:00:00:99")
        h.wire.probing and h.wire.probing("02:00:00:00:00:98")   # a second answer: no matter
        self.assertEqual(h.core.state, "INIT")
        self.assertEqual(h.listener.events, [])     # never applied
        how, msg, src = h.wire.last()
        self.assertEqual((how, msg.message_type, src), ("broadcast", c.DECLINE, c.ZERO))
        self.assertEqual(msg.address_option(c.REQUESTED_ADDRESS), IP("203.0.113.23"))
        self.assertEqual(msg.server_id, SERVER)
        h.clock.advance(9.9)
        self.assertEqual(h.core.state, "INIT")
        h.clock.advance(0.1)
        self.assertEqual(h.core.state, "SELECTING")
        self.assertNotIn(c.REQUESTED_ADDRESS, h.wire.last()[1].options)

    def test_carrier_back_verifies_the_lease(self):
        h = ClientHarness()
        h.to_bound()
        h.clock.advance(30)
        h.machine.link_returned()
        self.assertEqual(h.core.state, "INIT-REBOOT")
        self.assertIsNotNone(h.core.lease)        # still in use while checked
        how, msg, src = h.wire.last()
        self.assertEqual((how, msg.ciaddr), ("broadcast", c.ZERO))
        self.assertEqual(msg.address_option(c.REQUESTED_ADDRESS), IP("203.0.113.23"))
        h.core.receive(reply(c.ACK, h.xid))
        self.assertEqual(h.core.state, "BOUND")
        self.assertEqual(h.listener.events[-1][0], "renewed")
        h.machine.link_returned()
        h.core.receive(reply(c.NAK, h.xid))      # another network now
        self.assertEqual(h.listener.events[-1][0], "lost")
        self.assertEqual(h.core.state, "INIT")

    def test_carrier_back_while_selecting_rediscovers_now(self):
        h = ClientHarness()
        h.machine.start()
        h.clock.pump([1] * 20)
        sent = len(h.wire.sent)
        h.machine.link_returned()
        self.assertEqual(len(h.wire.sent), sent + 1)
        self.assertEqual(h.core.state, "SELECTING")
        self.assertEqual(h.core.attempt, 0)

    def test_stop_cancels_every_timer(self):
        h = ClientHarness()
        h.to_bound()
        self.assertTrue(h.clock.getDelayedCalls())
        h.machine.stop()
        self.assertEqual(h.core.state, "STOPPED")
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.machine.stop()  # twice is fine


class InitRebootTests(unittest.TestCase):
    """A restart asks for the saved lease's address first."""

    def saved(self, clock, age=10, lease_time=120):
        return Lease(ipaddress.IPv4Interface("203.0.113.23/24"), IP("203.0.113.1"), SERVER,
                     lease_time, lease_time // 2, lease_time * 7 // 8, clock.seconds() - age)

    def test_ack_binds(self):
        h = ClientHarness()
        h.machine.start_reboot(self.saved(h.clock))
        self.assertEqual(h.core.state, "INIT-REBOOT")
        how, msg, src = h.wire.last()
        self.assertEqual((how, src, msg.message_type), ("broadcast", c.ZERO, c.REQUEST))
        self.assertEqual(msg.address_option(c.REQUESTED_ADDRESS), IP("203.0.113.23"))
        self.assertNotIn(c.SERVER_ID, msg.options)
        self.assertEqual(msg.ciaddr, c.ZERO)
        h.core.receive(reply(c.ACK, h.xid))
        self.assertEqual(h.core.state, "BOUND")
        self.assertEqual(h.listener.events[0][0], "bound")

    def test_nak_goes_to_init(self):
        h = ClientHarness()
        h.machine.start_reboot(self.saved(h.clock))
        h.core.receive(reply(c.NAK, h.xid))
        self.assertEqual(h.core.state, "INIT")
        h.clock.advance(NAK_DELAY)
        self.assertEqual(h.core.state, "SELECTING")

    def test_unanswered_keeps_a_valid_saved_lease(self):
        h = ClientHarness()
        saved = self.saved(h.clock, age=10, lease_time=3600)
        h.machine.start_reboot(saved)
        h.clock.pump([1] * (4 + 8 + 16))
        self.assertEqual(h.core.state, "BOUND")
        self.assertEqual(h.listener.events, [("bound", saved)])
        # Its T1 still counts from when it was obtained.
        h.clock.advance(saved.renew_at - h.clock.seconds())
        self.assertEqual(h.core.state, "RENEWING")

    def test_client_start_uses_the_store(self):
        clock = task.Clock()
        clock.advance(1_700_000_000)
        listener = FakeListener()
        store = FakeStore(self.saved(clock))
        client = WanDhcpClient("wan0", MAC, listener, clock, "unused", hostname="allworx",
                               wire_factory=FakeWire, store=store, jitter=lambda: 0.0)
        client.start()
        self.assertTrue(client.wire.opened)
        self.assertEqual(client.state, "INIT-REBOOT")
        client.stop()
        self.assertTrue(client.wire.closed)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_with_release(self):
        clock = task.Clock()
        clock.advance(1_700_000_000)
        store = FakeStore()
        client = WanDhcpClient("wan0", MAC, FakeListener(), clock, "unused",
                               wire_factory=FakeWire, store=store, jitter=lambda: 0.0)
        client.start()
        clock.advance(0)
        client.core.receive(reply(c.OFFER, client.core.xid))
        clock.advance(0)
        client.core.receive(reply(c.ACK, client.core.xid))
        clock.advance(1)
        self.assertEqual(client.state, "BOUND")
        client.stop(release=True)
        how, msg, dst = client.wire.last()
        self.assertEqual((how, msg.message_type, dst), ("unicast", c.RELEASE, SERVER))
        self.assertEqual(msg.ciaddr, IP("203.0.113.23"))
        self.assertEqual(msg.server_id, SERVER)
        self.assertIsNone(store.lease)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_expired_saved_lease_asks_in_discover(self):
        clock = task.Clock()
        clock.advance(1_700_000_000)
        store = FakeStore(self.saved(clock, age=500))
        client = WanDhcpClient("wan0", MAC, FakeListener(), clock, "unused",
                               wire_factory=FakeWire, store=store, jitter=lambda: 0.0)
        client.start()
        clock.advance(0)
        self.assertEqual(client.state, "SELECTING")
        msg = client.wire.last()[1]
        self.assertEqual(msg.address_option(c.REQUESTED_ADDRESS), IP("203.0.113.23"))
        client.stop()


class LeaseTests(unittest.TestCase):
    """lease_from_ack: only address, netmask, router; checked."""

    def msg(self, **kw):
        return DhcpMessage.decode(reply(c.ACK, 1, **kw))

    def test_defaults_for_t1_t2(self):
        lease = P.lease_from_ack(self.msg(lease_time=3600), 100.0)
        self.assertEqual((lease.t1, lease.t2, lease.renew_at), (1800, 3150, 1900.0))

    def test_server_times_honoured(self):
        extra = {c.RENEWAL_TIME: struct.pack("!I", 20), c.REBINDING_TIME: struct.pack("!I", 35)}
        lease = P.lease_from_ack(self.msg(extra=extra), 0.0)
        self.assertEqual((lease.t1, lease.t2), (20, 35))
        self.assertIn("lease 120s (T1 20s, T2 35s)", lease.describe())

    def test_refusals(self):
        for kw, why in [({"lease_time": 5}, "too short"),
                        ({"router": "203.0.113.23"}, "cannot be a gateway"),
                        ({"mask": "255.0.255.0"}, "not a valid mask")]:
            with self.assertRaises(ValueError) as cm:
                P.lease_from_ack(self.msg(**kw), 0.0)
            self.assertIn(why, str(cm.exception))

    def test_router_outside_a_slash_32(self):
        lease = P.lease_from_ack(self.msg(mask="255.255.255.255", router="198.51.100.1"), 0.0)
        self.assertEqual(str(lease.address), "203.0.113.23/32")
        self.assertEqual(lease.router, IP("198.51.100.1"))

    def test_missing_mask_uses_class(self):
        lease = P.lease_from_ack(self.msg(mask=None), 0.0)
        self.assertEqual(lease.address.network.prefixlen, 24)

    def test_choose_offer(self):
        a = (None, P.lease_from_ack(self.msg(yiaddr="203.0.113.20"), 0))
        b = (None, P.lease_from_ack(self.msg(yiaddr="203.0.113.30"), 0))
        self.assertIs(choose_offer([a, b]), a)
        self.assertIs(choose_offer([a, b], IP("203.0.113.30")), b)

    def test_lease_file_roundtrip(self):
        path = os.path.join(self.mktemp(), "wan-dhcp-lease.json")
        store = LeaseFile(path, defer_to_thread=lambda f, *a: defer.maybeDeferred(f, *a))
        self.assertIsNone(store.load())
        lease = P.lease_from_ack(self.msg(), 1700000000.5)
        store.save(lease)
        self.assertEqual(store.load(), lease)
        store.clear()
        self.assertIsNone(store.load())
        store.clear()
        store.save(lease)
        with open(path, "w") as f:
            f.write("{not json")
        self.assertIsNone(store.load())
        with open(path, "w") as f:
            json.dump(dict(lease.as_json(), t1=500), f)
        self.assertIsNone(store.load())


class PacketTests(unittest.TestCase):
    """The client's messages on the shared codec, and its packet socket's framing, fuzzed."""

    # Options 52 and 53 are the codec's to check: it writes the overload
    # itself and refuses a message type outside 1-8 (tests.dhcp.test_codec).
    @given(xid=st.integers(0, 2 ** 32 - 1), secs=st.integers(0, 65535),
           hostname=st.text("abcdefghijklmnopqrstuvwxyz0123456789-", max_size=40),
           options=st.dictionaries(st.integers(1, 254).filter(lambda code: code not in (52, 53)),
                                   st.binary(max_size=600), max_size=6))
    def test_roundtrip(self, xid, secs, hostname, options):
        msg = DhcpMessage(op=c.BOOTREQUEST, xid=xid, chaddr=MAC_B, secs=secs,
                          ciaddr=IP("203.0.113.23"), options=options)
        self.assertEqual(DhcpMessage.decode(msg.encode()), msg)

    @settings(max_examples=300)
    @given(st.binary(max_size=700))
    def test_garbage_raises_only_malformed(self, data):
        for parse in (DhcpMessage.decode, parse_ipv4_udp):
            try:
                parse(data)
            except MalformedPacket:
                pass

    @given(st.binary(min_size=240, max_size=600))
    def test_garbage_after_a_valid_header(self, tail):
        head = reply(c.ACK, 7)[:240]
        try:
            DhcpMessage.decode(head + tail)
        except MalformedPacket:
            pass

    def test_not_ethernet_refused(self):
        data = bytearray(reply(c.ACK, 7))
        data[1:3] = b"\x06\x06"          # htype 6 (IEEE 802), hlen 6
        e = self.assertRaises(MalformedPacket, DhcpMessage.decode, bytes(data))
        self.assertIn("not Ethernet", str(e))

    def test_wire_delivers_the_server_replies_only(self):
        # The packet socket's reading, without the socket: framed by ipv4udp.
        got = []
        wire = PacketWire("wan0", task.Clock(), got.append)
        payload = reply(c.ACK, 7)
        packet = ipv4_udp_packet(SERVER, "203.0.113.23", 67, 68, payload)
        wire.received(packet, ("wan0", 0x0800, 0))
        wire.received(packet, ("wan0", 0x0800, 4))                 # our own, outgoing
        bad = bytearray(packet)
        bad[8] ^= 1
        wire.received(bytes(bad), ("wan0", 0x0800, 0))             # bad header checksum
        wire.received(packet[:25], ("wan0", 0x0800, 0))            # short
        wire.received(ipv4_udp_packet(SERVER, "203.0.113.23", 53, 68, payload),
                      ("wan0", 0x0800, 0))                         # not from a server port
        self.assertEqual(got, [payload])

    def test_wire_broadcast_framing(self):
        wire = PacketWire("wan0", task.Clock(), lambda data: None)
        frames = []
        wire.sock = object()
        wire._send = lambda packet, mac: frames.append((packet, mac))
        wire.broadcast(b"hello", IP("203.0.113.23"))
        [(packet, mac)] = frames
        self.assertEqual(mac, b"\xff" * 6)
        d = parse_ipv4_udp(packet)
        self.assertEqual((d.src, d.dst, d.sport, d.dport, d.payload),
                         (IP("203.0.113.23"), c.BROADCAST, 68, 67, b"hello"))

    def test_overload_options(self):
        # Option 52 = 1: more options in the file field (offset 108).
        msg = bytearray(reply(c.ACK, 9, router=None, extra={c.OVERLOAD: b"\x01"}))
        msg[108:115] = bytes([3, 4, 203, 0, 113, 1, 255])
        parsed = DhcpMessage.decode(bytes(msg))
        self.assertEqual(parsed.address_option(c.ROUTER), IP("203.0.113.1"))

    def test_arp_probe_and_conflicts(self):
        ip = IP("203.0.113.23")
        probe = P.arp_probe(MAC_B, ip)
        self.assertEqual(len(probe), 28)
        self.assertIsNone(P.arp_conflict(probe, ip, MAC_B))        # our own probe
        other = P.mac_bytes("02:00:00:00:00:99")
        reply_ = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, other, ip.packed,
                             MAC_B, c.ZERO.packed)
        self.assertEqual(P.arp_conflict(reply_, ip, MAC_B), "02:00:00:00:00:99")
        self.assertEqual(P.arp_conflict(P.arp_probe(other, ip), ip, MAC_B),
                         "02:00:00:00:00:99")                      # someone probing it too
        unrelated = P.arp_probe(other, IP("203.0.113.24"))
        self.assertIsNone(P.arp_conflict(unrelated, ip, MAC_B))

    @given(st.binary(max_size=64))
    def test_arp_garbage(self, data):
        P.arp_conflict(data, IP("203.0.113.23"), MAC_B)

    def test_bpf_program_accepted_by_the_kernel(self):
        # Any socket takes SO_ATTACH_FILTER without privileges; the kernel
        # checks the program, which is what matters here.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        _attach_filter(s, _BPF_PORT68)

    def test_wire_without_privileges_says_so(self):
        # As root, the attempt runs in a child that has given root up.
        said = _open_wire() if os.geteuid() != 0 else _as_nobody(_open_wire)
        self.assertTrue(said.startswith("PermissionError: "), said)
        self.assertIn("CAP_NET_RAW", said)


def _open_wire():
    """What PacketWire.open() does here: the exception it raises, as text."""
    wire = PacketWire("wan0", task.Clock(), lambda data: None)
    try:
        wire.open()
    except Exception as e:
        return "%s: %s" % (type(e).__name__, e)
    return "opened"


def _as_nobody(function):
    """`function()` (text) run in a forked child that dropped root for uid and gid 65534."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            result = function()
        except BaseException as e:
            result = "the child failed: %r" % (e,)
        try:
            os.write(write_end, result.encode("utf-8", "replace")[:4096])
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        said = f.read().decode("utf-8", "replace")
    os.waitpid(pid, 0)
    return said


class ServerInteropTests(unittest.TestCase):
    """The WAN client's messages answered by the LAN server's responder: one codec, one T1/T2 rule."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        config = parse_config(MINIMAL)
        self.pool = LeasePool(PoolSettings.from_config(config), self.clock)
        self.server = DhcpResponder(config, self.pool)

    def exchange(self, msg):
        """The server's reply to a client message, as the client reads it."""
        outcome = self.server.handle(c.decode(msg.encode()))
        self.assertIsNotNone(outcome.reply, outcome.note)
        return DhcpMessage.decode(c.encode(outcome.reply))

    def test_discover_request_ack(self):
        offer = self.exchange(P.client_message(c.DISCOVER, 42, MAC_B, hostname="allworx"))
        self.assertEqual((offer.kind, offer.xid, offer.chaddr), ("DHCPOFFER", 42, MAC_B))
        offered = P.lease_from_ack(offer, self.clock.seconds())
        ack = self.exchange(P.client_message(
            c.REQUEST, 42, MAC_B, hostname="allworx", requested=offered.address.ip,
            server=offered.server))
        self.assertEqual(ack.kind, "DHCPACK")
        lease = P.lease_from_ack(ack, self.clock.seconds())
        self.assertEqual((str(lease.address), lease.router, lease.server),
                         ("192.168.2.1/24", IP("192.168.2.254"), IP("192.168.2.254")))
        lease_time = self.pool.settings.lease_time
        self.assertEqual(lease.lease_time, lease_time)
        # The server sent T1/T2 by the codec's rule, and the client read them back.
        self.assertEqual((ack.seconds_option(c.RENEWAL_TIME), ack.seconds_option(c.REBINDING_TIME)),
                         c.renewal_times(lease_time))
        self.assertEqual((lease.t1, lease.t2), c.renewal_times(lease_time))

    def test_client_falls_back_to_the_same_rule(self):
        offer = self.exchange(P.client_message(c.DISCOVER, 42, MAC_B))
        options = {code: value for code, value in offer.options.items()
                   if code not in (c.RENEWAL_TIME, c.REBINDING_TIME)}
        bare = DhcpMessage(op=offer.op, xid=offer.xid, chaddr=offer.chaddr, yiaddr=offer.yiaddr,
                           options=options)
        lease = P.lease_from_ack(bare, 0.0)
        self.assertEqual((lease.t1, lease.t2), c.renewal_times(self.pool.settings.lease_time))

    def test_release_frees_the_address(self):
        self.exchange(P.client_message(c.DISCOVER, 1, MAC_B))
        ack = self.exchange(P.client_message(c.REQUEST, 1, MAC_B, requested=IP("192.168.2.1"),
                                             server=IP("192.168.2.254")))
        self.assertEqual(ack.kind, "DHCPACK")
        outcome = self.server.handle(c.decode(P.client_message(
            c.RELEASE, 2, MAC_B, ciaddr=ack.yiaddr, server=IP("192.168.2.254")).encode()))
        self.assertEqual(outcome.event, "released")


EVENTS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["offer", "ack", "nak"]), st.booleans(),
              st.sampled_from(["203.0.113.23", "203.0.113.30", "192.168.2.9"]),
              st.sampled_from([10, 120, 3600])),
    st.tuples(st.just("wait"), st.floats(0, 400)),
    st.tuples(st.just("link")),
    st.tuples(st.just("conflict"))), max_size=40)


class MachineFuzzTests(unittest.TestCase):
    """Any order of replies and delays: no exception, and the lease matches the state."""

    @settings(max_examples=200, deadline=None)
    @given(saved=st.booleans(), events=EVENTS)
    def test_never_stuck_never_raises(self, saved, events):
        h = ClientHarness()
        if saved:
            h.machine.start_reboot(InitRebootTests().saved(h.clock, lease_time=3600))
        else:
            h.machine.start()
        for event in events:
            if event[0] == "wait":
                h.clock.pump([event[1] / 4] * 4)
                continue
            if event[0] == "link":
                h.machine.link_returned()
                continue
            if event[0] == "conflict":
                h.core.conflict("02:00:00:00:00:99")
                continue
            kind, ours, yiaddr, lease_time = event
            code = {"offer": c.OFFER, "ack": c.ACK, "nak": c.NAK}[kind]
            xid = h.xid if ours and h.xid is not None else 12345
            h.core.receive(reply(code, xid, yiaddr, lease_time))
            if h.core.state in ("BOUND", "RENEWING", "REBINDING"):
                self.assertIsNotNone(h.core.lease, h.core.state)
            elif h.core.state != "INIT-REBOOT":    # checking a lease after a link return
                self.assertIsNone(h.core.lease, h.core.state)
        # Something is always scheduled: the client never waits forever.
        self.assertTrue(h.clock.getDelayedCalls(), h.core.state)
        h.machine.stop()
        self.assertEqual(h.clock.getDelayedCalls(), [])
