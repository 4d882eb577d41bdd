"""
Tests for allworx.routing.vpn.golog: wireguard-go's verbose output (lines as
v0.0.20220316 writes them, taken from a real run) into the log; handshakes
from unknown keys reported per address at most once a minute, and counted.
"""

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from allworx.routing.vpn import golog

STAMP = "2026/12/07 03:04:56 "


def verbose(message, ifname="awg0", level="DEBUG"):
    return ("%s: (%s) %s%s\n" % (level, ifname, STAMP, message)).encode()


def unknown(endpoint):
    return verbose("Received invalid initiation message from %s" % endpoint)


CHATTY = [
    "Routine: decryption worker 1 - started",
    "UAPI listener started",
    "Interface state was Down, requested Up, now Up",
    "UAPI: Updating private key",
    "peer(ZWln\u2026DuXI) - Sending handshake initiation",
    "peer(ZWln\u2026DuXI) - Received handshake response",
    "peer(ZWln\u2026DuXI) - Sending keepalive packet",
    "Device closing",
]


class CountTests(unittest.TestCase):

    def test_shown_from_the_first_one_on(self):
        count = golog.UnknownKeyCount()
        registry = CollectorRegistry()
        registry.register(count)
        self.assertNotIn(b"allworx_vpn_", generate_latest(registry))
        count.count = 3
        self.assertEqual(registry.get_sample_value("allworx_vpn_unknown_key_handshakes_total"), 3)

    def test_in_the_default_registry(self):
        self.assertIn(golog.UNKNOWN_KEY_HANDSHAKES,
                      REGISTRY._collector_to_names)      # registered at import


class OutputTests(unittest.TestCase):

    def setUp(self):
        # Counted apart: the process's own count stays 0 (no `allworx_vpn_` metric in
        # other tests' /metrics).
        self.count = golog.UnknownKeyCount()
        self.patch(golog, "UNKNOWN_KEY_HANDSHAKES", self.count)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clock = Clock()
        self.output = golog.GoOutput("awg0", self.clock)
        self.addCleanup(self.output.stop)

    def logged(self):
        return [(e["log_level"].name, formatEvent(e)) for e in self.events
                if e.get("log_namespace") == "allworx.routing.vpn.golog"]

    def test_chatty_lines_are_dropped(self):
        for line in CHATTY:
            self.output.feed(verbose(line))
        self.assertEqual(self.logged(), [])

    def test_version_errors_and_other_text(self):
        self.output.feed(verbose("Starting wireguard-go version 0.0.20220316"))
        self.output.feed(verbose("Failed to bind: address in use", level="ERROR"))
        self.output.feed("\u250c\u2500\u2500 WARNING \u2500\u2500\u2510\n".encode())
        self.output.feed(b"panic: runtime error\n")
        self.assertEqual(self.logged(), [
            ("info", "wireguard-go awg0: Starting wireguard-go version 0.0.20220316"),
            ("warn", "wireguard-go awg0: Failed to bind: address in use"),
            ("info", "wireguard-go awg0: panic: runtime error")])

    def test_lines_split_across_reads(self):
        data = unknown("203.0.113.2:51820")
        self.output.feed(data[:30])
        self.assertEqual(self.logged(), [])
        self.output.feed(data[30:])
        self.assertEqual(self.logged(), [
            ("warn", "vpn: a handshake from an unknown key at 203.0.113.2 was dropped")])

    def test_unknown_key_reported_once_a_minute_with_a_count(self):
        self.output.feed(unknown("203.0.113.2:51820"))
        [event] = [e for e in self.events if e.get("address")]
        self.assertEqual((event["address"], event["endpoint"], event["count"], event["ifname"]),
                         ("203.0.113.2", "203.0.113.2:51820", 1, "awg0"))
        # Retries within the minute (from another port too) are counted, not logged.
        for seconds, port in ((5, 51820), (5, 51820), (20, 40000)):
            self.clock.advance(seconds)
            self.output.feed(unknown("203.0.113.2:%d" % port))
        self.assertEqual(len(self.logged()), 1)
        self.assertEqual(self.count.count, 4)
        self.clock.advance(30)
        self.assertEqual(self.logged()[1:], [
            ("warn", "vpn: 3 more handshakes from an unknown key at 203.0.113.2 were dropped in 60 s")])
        # A quiet minute: nothing said, the address forgotten; the next try is reported at once.
        self.clock.advance(60)
        self.assertEqual(len(self.logged()), 2)
        self.clock.advance(200)
        self.output.feed(unknown("203.0.113.2:51820"))
        self.assertEqual(self.logged()[2:], [
            ("warn", "vpn: a handshake from an unknown key at 203.0.113.2 was dropped")])
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), self.clock.seconds() + 60)

    def test_addresses_are_reported_apart(self):
        self.output.feed(unknown("203.0.113.2:51820"))
        self.output.feed(unknown("[2001:db8::7]:51820"))
        self.output.feed(unknown("203.0.113.2:51820"))
        self.assertEqual([text for _, text in self.logged()], [
            "vpn: a handshake from an unknown key at 203.0.113.2 was dropped",
            "vpn: a handshake from an unknown key at 2001:db8::7 was dropped"])

    def test_a_flood_of_addresses_is_summed_up(self):
        reports = golog.UnknownKeyReports(self.clock, "awg0", limit=2)
        for n in range(5):
            reports.seen("198.51.100.%d:51820" % n)
        self.assertEqual([text for _, text in self.logged()], [
            "vpn: a handshake from an unknown key at 198.51.100.0 was dropped",
            "vpn: a handshake from an unknown key at 198.51.100.1 was dropped",
            "vpn: a handshake from an unknown key at other addresses was dropped"])
        self.clock.advance(60)
        self.assertEqual(self.logged()[3:], [
            ("warn", "vpn: 2 more handshakes from an unknown key at other addresses were dropped "
                     "in 60 s")])
        reports.stop()

    def test_stop_reports_what_is_counted_and_leaves_no_timer(self):
        self.output.feed(unknown("203.0.113.2:51820"))
        self.clock.advance(12)
        self.output.feed(unknown("203.0.113.2:51820"))
        self.output.feed(unknown("203.0.113.9:51820")[:-1])     # the last line, unfinished
        self.output.stop()
        self.assertEqual([text for _, text in self.logged()], [
            "vpn: a handshake from an unknown key at 203.0.113.2 was dropped",
            "vpn: a handshake from an unknown key at 203.0.113.9 was dropped",
            "vpn: 1 more handshake from an unknown key at 203.0.113.2 was dropped in 12 s"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
