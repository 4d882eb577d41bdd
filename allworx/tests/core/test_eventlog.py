# -*- test-case-name: allworx.tests.core.test_eventlog -*-
"""The ring of recent structured log events (allworx.eventlog)."""

import json

from twisted.logger import LogLevel, LogPublisher, Logger
from twisted.python import log as legacy
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from allworx.eventlog import EventRing, fields_of, parse_level, service_of
from allworx.interfaces import ILogEvents


def ring_and_logger(namespace="allworx.protocols.dhcp.service", **kw):
    ring = EventRing(**kw)
    publisher = LogPublisher(ring)
    return ring, Logger(namespace=namespace, observer=publisher)


class ServiceTests(unittest.SynchronousTestCase):

    def test_namespaces(self):
        for namespace, service in (
                ("allworx.protocols.dns.resolver", "dns"),
                ("allworx.protocols.mail.imap", "imap"),
                ("allworx.protocols.mail.imapserver", "imap"),
                ("allworx.protocols.mail.smtp", "mail"),
                ("allworx.routing.firewall.service", "firewall"),
                ("allworx.routing.network.service", "network"),
                ("allworx.routing.wanclient.dhcpclient", "network"),
                ("allworx.routing.vpn.service", "vpn"),
                ("allworx.protocols.sip.proxy", "sip"),
                ("allworx.protocols.voice.voicemail", "sip"),
                ("allworx.protocols.web.admin", "web"),
                ("allworx.protocols.ldap.service", "ldap"),
                ("allworx.protocols.ntp.service", "ntp"),
                ("allworx.protocols.provisioning.tftp", "provisioning"),
                ("allworx.protocols.dhcp.service", "dhcp"),
                ("allworx.service", "server"),
                ("twisted.internet.base", "server")):
            self.assertEqual(service_of({"log_namespace": namespace}), service, namespace)

    def test_office_status_events_name_their_service(self):
        self.assertEqual(service_of({"log_namespace": "allworx.office", "service": "dhcp"}),
                         "dhcp")
        self.assertEqual(service_of({"log_namespace": "allworx.office", "service": "pop3"}),
                         "mail")
        self.assertEqual(service_of({"log_namespace": "allworx.guards", "label": "web admin"}),
                         "web")
        self.assertEqual(service_of({"log_namespace": "allworx.office",
                                     "service": "certificates"}), "server")


class RingTests(unittest.SynchronousTestCase):

    def test_provides_the_interface(self):
        verifyObject(ILogEvents, EventRing())

    def test_event_as_kept(self):
        ring, log = ring_and_logger()
        log.warn("dhcp: {address} granted to {mac}", address="192.168.2.10",
                 mac="52:54:00:00:00:01", seconds=3600)
        (event,), cursor = ring.events()
        self.assertIsNone(cursor)
        self.assertEqual(event["service"], "dhcp")
        self.assertEqual(event["level"], "warn")
        self.assertEqual(event["message"], "dhcp: 192.168.2.10 granted to 52:54:00:00:00:01")
        self.assertEqual(event["fields"], {"address": "192.168.2.10", "mac": "52:54:00:00:00:01",
                                           "seconds": 3600})
        self.assertIsInstance(event["time"], float)
        json.dumps(event)

    def test_secrets_never_kept(self):
        ring, log = ring_and_logger("allworx.protocols.web.admin")
        log.info("login {user} with {password}", user="alice", password="hunter2",
                 voicemail_pin="1234", sip_digest="abc", api_token="t0k", dkim_key="k",
                 pin="99", shipping="ok")
        (event,), _ = ring.events()
        text = json.dumps(event)
        for secret in ("hunter2", "1234", "abc", "t0k", '"k"', '"99"'):
            self.assertNotIn(secret, text)
        self.assertEqual(event["message"], "login alice with (hidden)")
        self.assertEqual(sorted(event["fields"]), ["shipping", "user"])

    def test_fields_json_safe_and_bounded(self):
        class Thing:
            def __repr__(self):
                return "<thing>"
        fields = fields_of({"log_format": "x", "log_level": LogLevel.info, "obj": Thing(),
                            "raw": b"\xffbytes", "long": "y" * 5000, "nan": float("nan"),
                            "n": 3, "ok": True, "none": None})
        self.assertEqual(fields["obj"], "<thing>")
        self.assertEqual(fields["raw"], "\ufffdbytes")
        self.assertLess(len(fields["long"]), 400)
        self.assertEqual(fields["nan"], "nan")
        self.assertEqual((fields["n"], fields["ok"], fields["none"]), (3, True, None))
        self.assertNotIn("log_format", fields)
        json.dumps(fields, allow_nan=False)

    def test_failure_in_message(self):
        ring, log = ring_and_logger("allworx.protocols.sip.proxy")
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("call setup failed", Failure())
        (event,), _ = ring.events()
        self.assertEqual(event["level"], "critical")
        self.assertEqual(event["message"], "call setup failed: ZeroDivisionError: division by zero")
        self.assertEqual(event["service"], "sip")

    def test_legacy_events(self):
        ring = EventRing()
        publisher = LogPublisher(ring)
        observer = legacy.LogPublisher(publisher, publisher)
        observer.msg("legacy %s", "text", system="allworx.protocols.dns.server")
        (event,), _ = ring.events()
        self.assertEqual(event["service"], "dns")
        self.assertNotIn("isError", event["fields"])
        self.assertNotIn("system", event["fields"])

    def test_bounded_by_count(self):
        ring, log = ring_and_logger(max_events=10)
        for n in range(25):
            log.info("event {n}", n=n)
        self.assertEqual(len(ring), 10)
        events, _ = ring.events(limit=100)
        self.assertEqual([e["fields"]["n"] for e in events], list(range(24, 14, -1)))

    def test_bounded_by_bytes(self):
        ring, log = ring_and_logger(max_bytes=20000)
        for n in range(200):
            log.info("{text}", text="x" * 250, n=n)
        self.assertLessEqual(ring.size, 20000)
        self.assertLess(len(ring), 200)
        self.assertGreater(len(ring), 10)
        events, _ = ring.events(limit=1)
        self.assertEqual(events[0]["fields"]["n"], 199)

    def test_filters_and_paging(self):
        ring = EventRing()
        for n in range(30):
            if n % 3 == 0:
                namespace, level = "allworx.protocols.dns.server", LogLevel.error
            else:
                namespace = "allworx.protocols.dhcp.service"
                level = LogLevel.debug if n % 2 else LogLevel.info
            ring({"log_namespace": namespace, "log_level": level, "log_format": "{n}", "n": n,
                  "log_time": 1000.0 + n})
        events, cursor = ring.events(service="dns", limit=4)
        self.assertEqual([e["fields"]["n"] for e in events], [27, 24, 21, 18])
        events, cursor = ring.events(service="dns", limit=4, before=cursor)
        self.assertEqual([e["fields"]["n"] for e in events], [15, 12, 9, 6])
        events, cursor = ring.events(service="dns", limit=4, before=cursor)
        self.assertEqual([e["fields"]["n"] for e in events], [3, 0])
        self.assertIsNone(cursor)
        # A level is the least one shown.
        events, _ = ring.events(level="info", limit=100)
        self.assertNotIn("debug", {e["level"] for e in events})
        self.assertEqual(len(events), 10 + 10)
        events, _ = ring.events(level="warning", limit=100)
        self.assertEqual({e["service"] for e in events}, {"dns"})
        events, _ = ring.events(since=1025.0, limit=100)
        self.assertEqual([e["fields"]["n"] for e in events], [29, 28, 27, 26, 25])
        events, _ = ring.events(service=["dns", "dhcp"], limit=100)
        self.assertEqual(len(events), 30)

    def test_parse_level(self):
        self.assertEqual(parse_level("WARNING"), "warn")
        self.assertEqual(parse_level("critical"), "critical")
        self.assertRaises(ValueError, parse_level, "loud")

    def test_events_are_copies(self):
        ring, log = ring_and_logger()
        log.info("x {n}", n=1)
        events, _ = ring.events()
        events[0]["fields"]["n"] = 2
        self.assertEqual(ring.events()[0][0]["fields"]["n"], 1)

    def test_broken_event_does_not_raise(self):
        ring = EventRing()
        ring({"log_format": "{x!r}", "x": object(), "log_level": "nonsense",
              "log_time": "yesterday"})
        (event,), _ = ring.events()
        self.assertEqual(event["level"], "info")
