"""Tests for allworx.protocols.ntp.client: the sanity checks, the poll interval, failover, `[ntp] servers`."""

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from allworx.config import ConfigErrors, parse_config
from allworx.protocols.ntp import client as sntp
from allworx.protocols.ntp.wire import PACKET, to_ntp
from allworx.tests.confs import with_sections

NOW = 1_700_000_000.0
UPSTREAM = "203.0.113.1"


class FakeTransport:
    def __init__(self):
        self.sent = []

    def write(self, data, addr):
        self.sent.append((data, addr))


class UdpReactor(MemoryReactorClock):
    """MemoryReactorClock with listenUDP: the protocol gets a FakeTransport."""

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.udpPorts = {}
        self.next_port = 40000

    def listenUDP(self, port, proto, interface="", maxPacketSize=8192):
        reactor = self
        if port == 0:
            port = self.next_port = self.next_port + 1
        proto.transport = FakeTransport()

        class Port:
            def stopListening(self):
                del reactor.udpPorts[port]
        self.udpPorts[port] = proto
        return Port()


def server_reply(request, host_time, offset=0.5, stratum=1, leap=0, mode=4, origin=None,
                 refid=b"GPS\0", root_delay=0.0, root_dispersion=0.001, after=0.0):
    """
    A server's answer to `request` bytes, as a server `offset` s ahead
    answers it, `after` s (the round trip) before the host time `host_time`.
    """
    transmit = PACKET.unpack(request)[-1]
    t = host_time + offset - after / 2
    return PACKET.pack((leap << 6) | (4 << 3) | mode, stratum, 6, -20,
                       int(root_delay * 65536), int(root_dispersion * 65536), refid,
                       to_ntp(t - 10), transmit if origin is None else origin,
                       to_ntp(t), to_ntp(t))


class ReadReplyTests(unittest.TestCase):

    def setUp(self):
        self.sent = to_ntp(NOW)
        self.req = sntp.request(self.sent)

    def read(self, **kw):
        return sntp.read_reply(server_reply(self.req, NOW + 0.01, **kw), self.sent, NOW, NOW + 0.02)

    def test_request(self):
        first, stratum, *_rest, transmit = PACKET.unpack(self.req)
        self.assertEqual((first >> 6, (first >> 3) & 7, first & 7, stratum), (0, 4, 3, 0))
        self.assertEqual(transmit, self.sent)

    def test_offset_and_delay(self):
        # Sent at NOW, answered at NOW + 0.01 by a clock 0.5 s ahead, back at NOW + 0.02.
        sample = self.read(stratum=2, root_delay=0.25, root_dispersion=0.125)
        self.assertAlmostEqual(sample.offset, 0.5, places=6)
        self.assertAlmostEqual(sample.delay, 0.02, places=6)
        self.assertEqual((sample.stratum, sample.root_delay, sample.root_dispersion),
                         (2, 0.25, 0.125))
        self.assertEqual(sample.at, NOW + 0.02)

    def test_sanity_checks(self):
        for kw, words, cls in (
                (dict(mode=3), "mode 3", sntp.NotOurs),
                (dict(origin=12345), "origin timestamp", sntp.NotOurs),
                (dict(stratum=16), "stratum 16", sntp.BadReply),
                (dict(leap=3), "leap indicator 3", sntp.BadReply),
                (dict(root_dispersion=2.0), "root distance", sntp.BadReply)):
            e = self.assertRaises(sntp.BadReply, self.read, **kw)
            self.assertIsInstance(e, cls)
            self.assertIn(words, str(e))
        e = self.assertRaises(sntp.KissOfDeath, self.read, stratum=0, refid=b"RATE")
        self.assertEqual(e.code, b"RATE")
        self.assertIn("kiss-o'-death RATE", str(e))
        self.assertRaises(sntp.NotOurs, sntp.read_reply, b"\x24" * 20, self.sent, NOW, NOW)


class Upstreams:
    """A client on a fake reactor, and a way to answer its requests."""

    def __init__(self, test, names=(UPSTREAM,), resolve=None):
        self.reactor = UdpReactor()
        self.reactor.advance(NOW)
        self.changes = []
        self.client = sntp.SntpClient(self.reactor, resolve=resolve or (lambda n: defer.fail(
            OSError("no such name"))), changed=lambda: self.changes.append(1))
        self.client.start(names)
        test.addCleanup(self.client.stop)
        self.reactor.advance(0)

    @property
    def sent(self):
        return self.client.transport.sent

    def answer(self, address=UPSTREAM, port=123, after=0.01, **kw):
        """Answer the last request, `after` seconds after it was sent."""
        data, to = self.sent[-1]
        self.reactor.advance(after)
        self.client.datagramReceived(server_reply(data, self.reactor.seconds(), after=after, **kw),
                                     (address, port))


class PollTests(unittest.TestCase):

    def test_first_poll_at_once_then_every_64_s(self):
        u = Upstreams(self)
        self.assertEqual([to for _, to in u.sent], [(UPSTREAM, 123)])
        u.answer()
        up = u.client.upstreams[UPSTREAM]
        self.assertTrue(up.usable)
        u.reactor.advance(63.98)
        self.assertEqual(len(u.sent), 1)
        u.reactor.advance(0.02)
        self.assertEqual(len(u.sent), 2)

    def test_backs_off_when_stable_up_to_1024_s_and_never_faster_than_64(self):
        u = Upstreams(self)
        up = u.client.upstreams[UPSTREAM]
        intervals = []
        for _ in range(40):
            u.answer()
            intervals.append(up.poll_interval)
            before = len(u.sent)
            u.reactor.advance(up.poll_interval)
            self.assertEqual(len(u.sent), before + 1)
        self.assertEqual(intervals[:5], [64, 64, 64, 64, 128])
        self.assertEqual(max(intervals), 1024)
        self.assertEqual(intervals[-1], 1024)
        # A step in the offset starts the filter anew and stops the back-off count.
        u.answer(offset=3.0)
        self.assertEqual(up.stable, 0)
        self.assertEqual(len(up.samples), 1)
        self.assertAlmostEqual(up.sample().offset, 3.0, places=6)

    def test_least_delay_answer_gives_the_offset(self):
        u = Upstreams(self)
        up = u.client.upstreams[UPSTREAM]
        for offset, delay in ((0.50, 0.040), (0.51, 0.004), (0.52, 0.030)):
            u.answer(offset=offset, after=delay)
            u.reactor.advance(up.poll_interval)
        self.assertAlmostEqual(up.sample().offset, 0.51, places=6)
        self.assertAlmostEqual(up.sample().delay, 0.004, places=6)

    def test_failover_after_three_missed_polls(self):
        u = Upstreams(self)
        up = u.client.upstreams[UPSTREAM]
        u.answer(stratum=2)
        self.assertEqual(u.client.best()[0], up)
        for n in range(1, 4):
            u.reactor.advance(up.poll_interval)       # poll
            u.reactor.advance(sntp.REPLY_TIMEOUT)      # unanswered
            self.assertEqual(up.error, "no answer in 4 s")
            if n < 3:
                self.assertIsNotNone(u.client.best(), "after %d missed polls" % n)
        self.assertIsNone(u.client.best())
        self.assertFalse(up.usable)
        self.assertEqual(up.as_json()["reach"], "010")
        # An answer makes it usable again.
        u.reactor.advance(up.poll_interval)
        u.answer(stratum=2)
        self.assertEqual(u.client.best()[0], up)

    def test_poll_interval_halves_on_a_miss_and_backs_off_from_a_dead_server(self):
        u = Upstreams(self)
        up = u.client.upstreams[UPSTREAM]
        up.poll_exp = 9
        u.answer()
        u.reactor.advance(up.poll_interval)
        u.reactor.advance(sntp.REPLY_TIMEOUT)
        self.assertEqual(up.poll_interval, 256)
        for _ in range(12):
            polls = len(u.sent)
            u.reactor.advance(up.poll_interval)
            self.assertEqual(len(u.sent), polls + 1)
            u.reactor.advance(sntp.REPLY_TIMEOUT)
        self.assertEqual(up.reach, 0)
        self.assertEqual(up.poll_interval, 1024)

    def test_a_silent_new_server_is_polled_every_64_s_for_its_first_8_polls(self):
        u = Upstreams(self)
        up = u.client.upstreams[UPSTREAM]
        for n in range(8):
            u.reactor.advance(sntp.REPLY_TIMEOUT)
            self.assertEqual(up.poll_interval, 64 if n < 7 else 128, "after %d misses" % (n + 1))
            u.reactor.advance(up.poll_interval)
        self.assertEqual(len(u.sent), 9)

    def test_kiss_of_death(self):
        u = Upstreams(self)
        up = u.client.upstreams[UPSTREAM]
        u.answer(stratum=0, refid=b"RATE")
        self.assertEqual(up.poll_interval, 256)
        self.assertIn("RATE", up.error)
        u.reactor.advance(256)
        u.answer(stratum=0, refid=b"DENY")
        self.assertTrue(up.stopped)
        sent = len(u.sent)
        u.reactor.advance(10000)
        self.assertEqual(len(u.sent), sent)
        self.assertIn("refused us", up.as_json()["error"])

    def test_stray_and_forged_answers_ignored(self):
        u = Upstreams(self)
        up = u.client.upstreams[UPSTREAM]
        u.answer(address="198.51.100.9")            # another host
        u.answer(port=1234)                         # another port
        u.answer(origin=42)                         # not our request
        self.assertEqual(up.reach, 0)
        self.assertIsNotNone(up.pending)
        u.answer()                                  # the real one still counts
        self.assertTrue(up.usable)

    def test_unsynchronised_upstream_not_followed(self):
        u = Upstreams(self)
        up = u.client.upstreams[UPSTREAM]
        u.answer(leap=3)
        self.assertFalse(up.usable)
        self.assertIsNone(up.pending)
        self.assertIn("leap indicator 3", up.error)

    def test_names_resolved_and_best_is_lowest_stratum(self):
        names = {"a.example": "198.51.100.1", "b.example": "198.51.100.2"}
        u = Upstreams(self, names=("a.example", "b.example", "c.example"),
                      resolve=lambda n: defer.succeed(names[n]) if n in names
                      else defer.fail(OSError("no such name")))
        self.assertEqual(sorted(to for _, to in u.sent),
                         [("198.51.100.1", 123), ("198.51.100.2", 123)])
        self.assertIn("c.example does not resolve", u.client.upstreams["c.example"].error)
        for data, (address, _) in list(u.sent):
            u.reactor.advance(0.001)
            u.client.datagramReceived(
                server_reply(data, u.reactor.seconds(), stratum=3 if address.endswith(".1") else 2),
                (address, 123))
        self.assertEqual(u.client.best()[0].name, "b.example")
        self.assertEqual([s["name"] for s in u.client.status()],
                         ["a.example", "b.example", "c.example"])
        self.assertTrue(u.changes)

    def test_servers_follow_the_config(self):
        u = Upstreams(self)
        u.client.set_servers(("198.51.100.7",))
        self.assertEqual(list(u.client.upstreams), ["198.51.100.7"])
        u.reactor.advance(0)
        self.assertEqual(u.sent[-1][1], ("198.51.100.7", 123))
        u.client.stop()
        self.assertEqual(u.reactor.getDelayedCalls(), [])


class ServersKeyTests(unittest.TestCase):

    def test_parsed(self):
        c = parse_config(with_sections("[ntp]\nservers = 203.0.113.1 0.Debian.pool.ntp.org\n"))
        self.assertEqual(c.ntp.servers, ("203.0.113.1", "0.debian.pool.ntp.org"))
        self.assertEqual(parse_config(with_sections("")).ntp.servers, ())

    def test_bad_values_named(self):
        for value, words in (("203.0.113.300", "not an IPv4 address"),
                             ("ntp_server", "not a valid host name"),
                             ("a.example a.example", "twice"),
                             (" ".join("10.0.0.%d" % i for i in range(1, 10)), "at most 8")):
            e = self.assertRaises(ConfigErrors, parse_config,
                                  with_sections("[ntp]\nservers = %s\n" % value))
            self.assertIn("servers", str(e))
            self.assertIn(words, str(e))
