"""Tests for DNSBL lookups (allworx.protocols.mail.dnsbl) and greylisting (greylist)."""

import json
import os

from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from allworx.protocols.mail import dnsbl, greylist
from allworx.protocols.mail.dnsbl import Dnsbl, Listing
from allworx.protocols.mail.greylist import Greylist
from allworx.tests.mail.fakedns import FakeResolver

IP = "198.51.100.66"
NAME = "66.100.51.198.bl.example"


class DnsblTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.dns = FakeResolver()
        self.bl = Dnsbl(self.clock)

    def check(self, zones=("bl.example",), ip=IP):
        return self.bl.check(self.dns, zones, ip)

    def test_query_names(self):
        self.assertEqual(dnsbl.query_name("192.0.2.1", "zen.example."), "1.2.0.192.zen.example")
        self.assertEqual(dnsbl.query_name("2001:db8::1", "bl.example"),
                         "1.0.0.0." + "0.0.0.0." * 5 + "8.b.d.0.1.0.0.2.bl.example")

    def test_listed_with_reason(self):
        self.dns.add(NAME, "A", "127.0.0.2")
        self.dns.add(NAME, "TXT", "spam source, see https://bl.example/66")
        self.assertEqual(self.successResultOf(self.check()),
                         Listing("bl.example", "127.0.0.2", "spam source, see https://bl.example/66"))

    def test_reason_cannot_break_the_reply_or_the_log(self):
        self.dns.add(NAME, "A", "127.0.0.2")
        self.dns.add(NAME, "TXT", "listed\r\n250 2.0.0 OK\x00" + "x" * 500)
        reason = self.successResultOf(self.check()).reason
        self.assertEqual(reason[:20], "listed 250 2.0.0 OK ")
        self.assertEqual(len(reason), 200)

    def test_zone_error_code_is_logged(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.dns.add(NAME, "A", "127.255.255.254")
        self.assertIsNone(self.successResultOf(self.check()))
        self.assertTrue([e for e in events if e.get("answer") == "127.255.255.254"
                         and e.get("zone") == "bl.example"], events)

    def test_listed_without_reason(self):
        self.dns.add(NAME, "A", "127.0.0.4")
        self.assertEqual(self.successResultOf(self.check()), Listing("bl.example", "127.0.0.4", ""))

    def test_not_listed(self):
        self.assertIsNone(self.successResultOf(self.check()))

    def test_zone_error_codes_are_not_listings(self):
        self.dns.add(NAME, "A", "127.255.255.254")
        self.assertIsNone(self.successResultOf(self.check()))
        self.assertFalse(dnsbl.is_listing("127.255.255.252"))
        self.assertFalse(dnsbl.is_listing("10.0.0.2"))
        self.assertTrue(dnsbl.is_listing("127.0.0.10"))

    def test_a_silent_zone_is_skipped_after_two_seconds(self):
        self.dns.silent.add(NAME)
        self.dns.add("66.100.51.198.other.example", "A", "127.0.0.3")
        d = self.check(zones=("bl.example", "other.example"))
        self.assertNoResult(d)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertEqual(self.successResultOf(d).zone, "other.example")
        self.flushLoggedErrors()

    def test_servfail_skipped(self):
        self.dns.servfail.add(NAME)
        self.assertIsNone(self.successResultOf(self.check()))

    def test_first_zone_in_order_wins(self):
        self.dns.add(NAME, "A", "127.0.0.2")
        self.dns.add("66.100.51.198.other.example", "A", "127.0.0.3")
        listing = self.successResultOf(self.check(zones=("other.example", "bl.example")))
        self.assertEqual(listing.zone, "other.example")

    def test_cached_for_a_while(self):
        self.dns.add(NAME, "A", "127.0.0.2")
        self.successResultOf(self.check())
        asked = len(self.dns.asked)
        self.successResultOf(self.check())
        self.assertEqual(len(self.dns.asked), asked)
        self.clock.advance(dnsbl.CACHE_TTL + 1)
        self.successResultOf(self.check())
        self.assertGreater(len(self.dns.asked), asked)

    def test_cache_is_bounded(self):
        self.patch(dnsbl, "CACHE_SIZE", 3)
        for n in range(5):
            self.successResultOf(self.check(ip="192.0.2.%d" % n))
        self.assertEqual(len(self.bl.cache), 3)


class GreylistTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.path = os.path.join(self.mktemp() + "-dir", "greylist.json")
        os.makedirs(os.path.dirname(self.path))
        self.writes = []
        self.grey = self.make()

    def write(self, path, text):
        self.writes.append(path)
        with open(path, "w") as f:
            f.write(text)

    def make(self):
        return Greylist(self.path, self.clock, write=self.write)

    def test_first_attempt_waits_then_retry_passes(self):
        self.assertEqual(self.grey.check(IP, "a@x.example", "alice@example.com"), greylist.DELAY)
        self.clock.advance(100)
        self.assertEqual(self.grey.check(IP, "a@x.example", "alice@example.com"), 200)
        self.clock.advance(200)
        self.assertIsNone(self.grey.check(IP, "a@x.example", "alice@example.com"))
        self.clock.advance(86400)
        self.assertIsNone(self.grey.check(IP, "A@X.example", "alice@example.com"))

    def test_another_server_of_the_same_network_retries(self):
        self.grey.check("198.51.100.1", "a@x.example", "alice@example.com")
        self.clock.advance(greylist.DELAY)
        self.assertIsNone(self.grey.check("198.51.100.2", "a@x.example", "alice@example.com"))

    def test_a_late_retry_starts_again(self):
        self.grey.check(IP, "a@x.example", "alice@example.com")
        self.clock.advance(greylist.WINDOW + 1)
        self.assertEqual(self.grey.check(IP, "a@x.example", "alice@example.com"), greylist.DELAY)

    def test_other_triplets_wait(self):
        self.grey.check(IP, "a@x.example", "alice@example.com")
        self.clock.advance(greylist.DELAY)
        self.grey.check(IP, "a@x.example", "alice@example.com")
        self.assertEqual(self.grey.check(IP, "b@x.example", "alice@example.com"), greylist.DELAY)

    def test_auto_whitelist(self):
        for n in range(greylist.AUTO_WHITELIST):
            self.grey.check(IP, "s%d@x.example" % n, "alice@example.com")
            self.clock.advance(greylist.DELAY)
            self.assertIsNone(self.grey.check(IP, "s%d@x.example" % n, "alice@example.com"))
        self.assertIsNone(self.grey.check(IP, "new@x.example", "bob@example.com"))

    def test_state_is_saved_in_batches_and_reloaded(self):
        for n in range(50):
            self.grey.check(IP, "s%d@x.example" % n, "alice@example.com")
        self.assertEqual(self.writes, [])
        self.clock.advance(greylist.SAVE_EVERY)
        self.assertEqual(self.writes, [self.path])
        with open(self.path) as f:
            self.assertEqual(len(json.load(f)["triplets"]), 50)
        self.clock.advance(greylist.DELAY)
        again = self.make()
        self.assertIsNone(again.check(IP, "s7@x.example", "alice@example.com"))

    def test_saved_state_is_bounded(self):
        self.patch(greylist, "MAX_TRIPLETS", 10)
        for n in range(30):
            self.clock.advance(1)
            self.grey.check(IP, "s%d@x.example" % n, "alice@example.com")
        self.successResultOf(self.grey.save())
        with open(self.path) as f:
            kept = json.load(f)["triplets"]
        self.assertEqual(len(kept), 10)
        self.assertIn("198.51.100.0/24 s29@x.example alice@example.com", kept)

    def test_stop_writes_what_changed(self):
        self.grey.check(IP, "a@x.example", "alice@example.com")
        self.grey.stop()
        self.assertTrue(os.path.exists(self.path))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_damaged_file_starts_empty(self):
        with open(self.path, "w") as f:
            f.write("{not json")
        self.assertEqual(self.make().triplets, {})
