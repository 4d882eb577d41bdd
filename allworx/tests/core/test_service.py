"""Tests for allworx.service and allworx.servicebase: composition and bind reports."""

import errno
import os
import socket

from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from allworx.config import parse_config
from allworx.eventlog import EventRing
from allworx.interfaces import (
    ICalls, ICheckSync, IConnectionLog, IFetchStatus, ILeaseTable, ILogEvents, IMailQueue,
    IMailStore, IPhoneBook, IRegistrations, IRogueServers, IZoneSource)
from allworx.servicebase import ListeningService, OfficeService, why_not
from allworx.office import Office
from allworx.service import NAMES, AllworxService
from allworx.tests.confs import MINIMAL


class RecordingService(service.Service):
    """A child that records start and stop."""

    log = []

    def __init__(self, name="recording"):
        self.setName(name)

    def startService(self):
        service.Service.startService(self)
        RecordingService.log.append("start")

    def stopService(self):
        service.Service.stopService(self)
        RecordingService.log.append("stop")


class CompositionTests(unittest.TestCase):

    def office(self):
        config = parse_config(MINIMAL).with_data_dir(self.mktemp())
        return Office(config)

    def test_children_started_and_stopped(self):
        top = AllworxService(self.office(), children=[RecordingService("mine")])
        RecordingService.log = []
        top.startService()
        d = top.stopService()
        self.assertEqual(RecordingService.log, ["start", "stop"])
        return d

    def test_restart_around_builds_the_services_anew(self):
        """A restore's swap runs with every service stopped; new ones start after, even if it fails."""
        reactor = MemoryReactorClock()
        old = RecordingService("mine")
        top = AllworxService(self.office(), children=[old], reactor=reactor)
        top.startService()
        self.addCleanup(top.stopService)
        built = []

        def build():
            built.append(RecordingService("mine"))
            return built[-1:]
        top.build = build
        seen = []

        def work():
            seen.append((old.running, list(top)))
            raise OSError("the swap failed")
        d = top.restart_around(work)
        self.failureResultOf(d, OSError)
        self.assertEqual(seen, [(0, [])])
        self.assertEqual(list(top), built)
        self.assertTrue(built[0].running)

    def test_ready_only_once_the_reactor_runs(self):
        """twistd starts services before the reactor: "ready" waits for it (and its signal handlers)."""
        reactor = MemoryReactorClock()
        top = AllworxService(self.office(), children=[RecordingService("mine")], reactor=reactor)
        top.startService()
        self.addCleanup(top.stopService)
        self.successResultOf(top.started)
        self.assertFalse(top.ready)
        reactor.run()
        self.assertTrue(top.ready)

    def test_log_events_observed_while_running(self):
        """The server's recent log events (the Logs page's) are kept from start to stop."""
        top = AllworxService(self.office(), children=[RecordingService("mine")])
        top.events = ring = EventRing()
        log = Logger(namespace="allworx.protocols.dns.server")
        log.info("before the start")
        top.startService()
        log.info("while running")
        d = top.stopService()
        log.info("after the stop")
        messages = [e["message"] for e in ring.events(limit=100)[0]]
        self.assertIn("while running", messages)
        self.assertNotIn("before the start", messages)
        self.assertNotIn("after the stop", messages)
        return d

    def test_every_protocol_has_a_child_in_start_order(self):
        top = AllworxService(self.office())
        self.assertEqual([s.name for s in top], list(NAMES))
        self.assertEqual(list(NAMES), ["network", "firewall", "vpn", "dhcp", "dns", "ntp", "mail",
                                       "sip", "provisioning", "ldap", "web"])

    def test_wiring(self):
        """What each service is handed comes from the service that owns it."""
        top = AllworxService(self.office())
        dhcp, firewall, mail, web = (top.getServiceNamed(n) for n in ("dhcp", "firewall", "mail", "web"))
        self.assertIs(firewall.leases, dhcp.leases)
        self.assertIs(top.getServiceNamed("dns").leases, dhcp.leases)
        provisioning = top.getServiceNamed("provisioning")
        self.assertIs(provisioning.provisioner.leases, dhcp.leases)
        self.assertIs(provisioning.provisioner.phonebook, top.phonebook)
        ldap, sip = top.getServiceNamed("ldap"), top.getServiceNamed("sip")
        throttles = {id(t) for t in (web.ctx.throttle, ldap.factory.throttle, mail.throttle,
                                     mail.smtp_factory.throttle, mail.pop3.factory.throttle,
                                     sip.registrations.throttle)}
        self.assertEqual(len(throttles), 1, "one login throttle for every protocol")
        self.assertIs(web.ctx.throttle, top.logins)
        self.assertEqual(top.logins.store.path,
                         os.path.join(top.office.config.system.data_dir, "lockouts.json"))
        views = web.ctx.views
        self.assertIs(views.leases, dhcp.leases)
        self.assertIs(views.rogues, dhcp.rogues)
        self.assertIs(views.connections, firewall.connections)
        self.assertIs(views.mail_store, mail.store)
        self.assertIs(views.mail_queue, mail.queue)
        self.assertIs(views.fetch, mail.fetch)
        self.assertIs(views.logs, top.events)
        verifyObject(ILogEvents, views.logs)
        for name, interface in (("leases", ILeaseTable), ("rogues", IRogueServers),
                                ("connections", IConnectionLog), ("zone", IZoneSource),
                                ("mail_store", IMailStore), ("mail_queue", IMailQueue),
                                ("fetch", IFetchStatus), ("registrations", IRegistrations),
                                ("calls", ICalls)):
            verifyObject(interface, getattr(views, name))

    def test_one_phone_book(self):
        """SPEC 19: one phone book under data_dir, the registrar's and check-sync's and the web's."""
        top = AllworxService(self.office())
        dhcp, sip, web = (top.getServiceNamed(n) for n in ("dhcp", "sip", "web"))
        verifyObject(IPhoneBook, top.phonebook)
        self.assertEqual(top.phonebook.directory,
                         os.path.join(top.office.config.system.data_dir, "phones"))
        self.assertIs(web.ctx.views.phones, top.phonebook)
        self.assertIs(sip.registrations.checker.phonebook, top.phonebook)
        self.assertIs(sip.checksync.phonebook, top.phonebook)
        self.assertIs(sip.checksync.leases, dhcp.leases)
        self.assertIs(web.ctx.views.checksync, sip.checksync)
        verifyObject(ICheckSync, web.ctx.views.checksync)

    def test_sightings_written_before_a_restore_and_at_stop(self):
        reactor = MemoryReactorClock()
        top = AllworxService(self.office(), children=[RecordingService("mine")], reactor=reactor)
        top.build = lambda: [RecordingService("mine")]
        from allworx.phonebook import PhoneBook
        top.phonebook = book = PhoneBook(top.office.config.system.data_dir, reactor,
                                         defer_to_thread=lambda fn, *a: defer.succeed(fn(*a)))
        top.startService()
        book.sighted("001565abcdef", "192.168.2.37", "yealink", "001565abcdef.cfg")
        seen = os.path.join(book.directory, "seen.json")
        self.successResultOf(top.restart_around(lambda: self.assertTrue(os.path.exists(seen))))
        os.unlink(seen)
        book.sighted("0004f2000002", "192.168.2.38", None, "0004f2000002.cfg")
        self.successResultOf(top.stopService())
        self.assertTrue(os.path.exists(seen))


class FakePort:
    stopped = False

    def stopListening(self):
        self.stopped = True
        return defer.succeed(None)


class ListeningTests(unittest.TestCase):

    def setUp(self):
        self.office = Office(parse_config(MINIMAL))

    def denied(self):
        e = socket.error(errno.EACCES, "Permission denied")
        raise error.CannotListenError("", 53, e)

    def test_reports_each_port(self):
        port = FakePort()
        svc = ListeningService("dns", self.office, [
            ("udp 53", 53, self.denied), ("udp 5353", 5353, lambda: port)])
        svc.startService()
        status = self.office.status["dns"]
        self.assertEqual(status.state, "degraded")
        self.assertIn("listening on udp 5353", status.detail)
        self.assertIn("port 53 needs root or CAP_NET_BIND_SERVICE", status.detail)
        svc.stopService()
        self.assertTrue(port.stopped)

    def test_all_failed_is_down(self):
        svc = ListeningService("dns", self.office, [("udp 53", 53, self.denied)])
        svc.startService()
        self.assertEqual(self.office.status["dns"].state, "down")

    def test_why_not(self):
        self.assertIn("already in use", why_not(OSError(errno.EADDRINUSE, "x"), 25))
        self.assertIn("not available", why_not(OSError(errno.EADDRNOTAVAIL, "x"), 25))


class BrokenService(service.Service):
    name = "broken"

    def startService(self):
        raise RuntimeError("no such interface")


class LateFailure(service.Service):
    """A child whose start fails later, asynchronously (like a ruleset refused)."""

    name = "late"

    def __init__(self):
        self.pending = defer.Deferred()

    def startService(self):
        service.Service.startService(self)
        return self.pending


class IsolationTests(unittest.TestCase):

    def top(self, children):
        config = parse_config(MINIMAL).with_data_dir(self.mktemp())
        return AllworxService(Office(config), children=children)

    def test_one_failure_does_not_stop_the_rest(self):
        top = self.top([BrokenService(), RecordingService("mine")])
        RecordingService.log = []
        top.startService()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(top.office.status["broken"].state, "down")
        self.assertIn("no such interface", top.office.status["broken"].detail)
        self.assertEqual(RecordingService.log, ["start"])
        return top.stopService()

    def test_asynchronous_start_is_waited_on_and_its_failure_reported(self):
        late = LateFailure()
        top = self.top([late, RecordingService("mine")])
        top.startService()
        self.assertNoResult(top.started)
        late.pending.errback(RuntimeError("iptables-restore refused the ruleset"))
        self.successResultOf(top.started)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(top.office.status["late"].state, "down")
        self.assertIn("iptables-restore refused", top.office.status["late"].detail)
        return top.stopService()


class FollowingService(ListeningService):
    """Listens on [ldap] port while [ldap] enabled (any section would do)."""

    def __init__(self, office):
        ListeningService.__init__(self, "follow", office)
        self.bound = []

    def bound_settings(self, config):
        return config.ldap

    def disabled_reason(self, config):
        return None if config.ldap.enabled else "off in [ldap]"

    def build_listeners(self, config):
        port = config.ldap.port

        def listen():
            self.bound.append(port)
            return FakePort()
        return [("tcp %d" % port, port, listen)]


class FollowingTests(unittest.TestCase):

    def setUp(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(MINIMAL)
        from allworx.config import load_config
        self.office = Office(load_config(path))
        self.svc = FollowingService(self.office)
        self.svc.startService()

    def test_rebinds_only_when_its_settings_change(self):
        self.assertEqual(self.svc.bound, [389])
        self.office.update_settings("dhcp", {"range": "1-50"})
        self.assertEqual(self.svc.bound, [389])
        self.office.update_settings("ldap", {"port": "10389"})
        self.assertEqual(self.svc.bound, [389, 10389])
        self.assertIn("10389", self.office.status["follow"].detail)

    def test_disable_and_enable_live(self):
        old = self.svc.ports[0]
        self.office.update_settings("ldap", {"enabled": "no"})
        self.assertTrue(old.stopped)
        self.assertEqual(self.office.status["follow"].state, "disabled")
        self.assertEqual(self.svc.ports, [])
        self.office.update_settings("ldap", {"enabled": "yes"})
        self.assertEqual(self.office.status["follow"].state, "up")

    def test_stopped_service_ignores_changes(self):
        self.svc.stopService()
        self.office.update_settings("ldap", {"port": "10389"})
        self.assertEqual(self.svc.bound, [389])


class Ping:
    """An event for the subscription tests."""


class OfficeServiceTests(unittest.TestCase):
    """The base owns its subscriptions: on while running, gone once stopped."""

    def setUp(self):
        self.office = Office(parse_config(MINIMAL))
        self.seen = []
        self.child = OfficeService("child", self.office)
        self.child.follow(Ping, self.seen.append)
        self.child.config_changed = lambda event: self.seen.append("config")

    def test_subscribed_only_while_running(self):
        self.office.emit(Ping())
        self.assertEqual(self.seen, [])
        self.child.startService()
        event = Ping()
        self.office.emit(event)
        self.assertEqual(self.seen, [event])
        self.child.stopService()
        self.office.emit(Ping())
        self.assertEqual(self.seen, [event])

    def test_follow_while_running_subscribes_at_once(self):
        self.child.startService()
        later = []
        self.child.follow(Ping, later.append)
        self.office.emit(Ping())
        self.assertEqual(len(later), 1)
        self.child.stopService()
        self.office.emit(Ping())
        self.assertEqual(len(later), 1)

    def test_restart_does_not_double_subscribe(self):
        self.child.startService()
        self.child.stopService()
        self.child.startService()
        self.office.emit(Ping())
        self.assertEqual(len(self.seen), 1)

    def test_config_changes_reach_the_hook(self):
        self.child.startService()
        self.office.update_settings("dns", {"primary": "203.0.113.2"})
        self.assertEqual(self.seen, ["config"])
