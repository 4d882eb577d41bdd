# -*- test-case-name: allworx.tests.core.test_diagnostics -*-
"""
Tests of allworx.diagnostics: the target checks (no target can become an
option or a second argument), the lines streamed from a fake child as they
come, the summaries, DNS and TCP on fakes, the concurrency and time caps.
"""

import ipaddress
import types

from hypothesis import assume, given, settings, strategies as st
from twisted.internet import defer, error
from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns
from twisted.names import error as dns_error
from twisted.python.failure import Failure
from twisted.trial import unittest

from allworx import diagnostics
from allworx.diagnostics import Busy, Check, Diagnostics, Invalid, Unavailable, parse_request

SHELL_AND_SPACE = set(" \t\r\n\x00;|&$`'\"\\<>(){}*?!#~=,/%")


class FakeProcess:
    """What spawnProcess gives back: records the signals sent."""

    def __init__(self, proto, path, argv, env):
        self.proto, self.path, self.argv, self.env = proto, path, argv, env
        self.signals = []

    def signalProcess(self, name):
        self.signals.append(name)

    def out(self, data, fd=1):
        self.proto.childDataReceived(fd, data)

    def exit(self, code=0):
        reason = error.ProcessDone(0) if code == 0 else error.ProcessTerminated(exitCode=code)
        self.proto.processEnded(Failure(reason))


def config(enabled=True, port=53, primary="203.0.113.1", secondary=None):
    ip = lambda text: ipaddress.ip_address(text) if text else None     # noqa: E731
    return types.SimpleNamespace(dns=types.SimpleNamespace(
        enabled=enabled, port=port, primary=ip(primary), secondary=ip(secondary)))


class FakeResolver:
    """Answers from a table {(server, name, type): records or an exception}; records the asks."""

    def __init__(self, answers, clock, delay=0.002):
        self.answers, self.clock, self.delay = answers, clock, delay
        self.asked = []

    def __call__(self, server, port):
        self.server = (server, port)
        return self

    def query(self, query, timeout=None):
        key = (self.server[0], query.name.name.decode(), query.type)
        self.asked.append(key + (self.server[1],))
        found = self.answers.get(key, dns_error.DNSNameError("nxdomain"))
        d = defer.Deferred()

        def fire():
            if isinstance(found, Exception):
                d.errback(found)
            else:
                d.callback((found, [], []))
        self.clock.callLater(self.delay, fire)
        return d


def a_record(name, ip, ttl=300):
    return dns.RRHeader(name, dns.A, ttl=ttl, payload=dns.Record_A(ip, ttl))


class Harness:
    """A Diagnostics on a MemoryReactorClock with a fake spawn, resolver and connect."""

    def __init__(self, conf=None, answers=None, **kw):
        self.clock = MemoryReactorClock()
        self.processes = []
        self.connects = []
        self.resolver = FakeResolver(answers or {}, self.clock)
        self.conf = conf or config()
        self.diag = Diagnostics(self.clock, lambda: self.conf, spawn=self.spawn,
                                connect=lambda *a: self.connects.append(a),
                                resolver=self.resolver,
                                which=lambda name, path=None: "/usr/bin/" + name, **kw)
        self.lines = []

    def spawn(self, proto, path, argv, env=None):
        p = FakeProcess(proto, path, argv, env)
        self.processes.append(p)
        return p

    def start(self, kind, **body):
        run = self.diag.start(parse_request(kind, body), self.lines.append)
        self.summaries = []
        run.done.addCallback(self.summaries.append)
        return run


class ValidationTests(unittest.TestCase):

    def test_names_and_addresses_accepted(self):
        for target in ("example.com", "www.example.com.", "a", "xn--bcher-kva.example", "192.0.2.1",
                       "2001:db8::1", "::1", "a-b.c-d.e", "1host.example", "x" * 63 + ".com"):
            self.assertEqual(parse_request("ping", {"target": target}).target, target)

    def test_bad_targets_refused_naming_the_key(self):
        for target in ("-c", "--help", "-x.com", "a-.com", "a b", "a;reboot", "$(id)", "a..b",
                       "", None, 42, ["a"], "x" * 64 + ".com", "a." * 130 + "b", "1.2.3",
                       "192.0.2.1 -f", "a\nb", "a,b", "exa_mple.com", "-1"):
            with self.assertRaises(Invalid, msg=repr(target)) as caught:
                parse_request("traceroute", {"target": target})
            self.assertEqual([k for k, _ in caught.exception.errors], ["target"], target)

    def test_every_mistake_at_once(self):
        with self.assertRaises(Invalid) as caught:
            parse_request("tcp", {"target": "-p", "port": 70000})
        self.assertEqual([k for k, _ in caught.exception.errors], ["target", "port"])
        with self.assertRaises(Invalid) as caught:
            parse_request("dns", {"target": "example.com", "server": "ns1; rm", "type": "ANY"})
        self.assertEqual([k for k, _ in caught.exception.errors], ["server", "type"])

    def test_ports(self):
        for port, ok in ((443, True), ("22", True), (1, True), (65535, True), (0, False),
                         (True, False), ("-1", False), ("22 -v", False), (None, False), (2.5, False)):
            if ok:
                self.assertEqual(parse_request("tcp", {"target": "h", "port": port}).port, int(port))
            else:
                self.assertRaises(Invalid, parse_request, "tcp", {"target": "h", "port": port})

    def test_unknown_kind(self):
        self.assertRaises(Invalid, parse_request, "nmap", {"target": "h"})

    def test_argv_puts_the_target_alone_after_double_dash(self):
        self.assertEqual(diagnostics.argv_for(Check("ping", "192.0.2.1")),
                         ["ping", "-n", "-c", "4", "-W", "2", "--", "192.0.2.1"])
        self.assertEqual(diagnostics.argv_for(Check("traceroute", "example.com")),
                         ["traceroute", "-n", "-w", "2", "-q", "1", "-m", "20", "--", "example.com"])

    @settings(max_examples=400, deadline=None)
    @given(st.sampled_from(["ping", "traceroute"]), st.text(max_size=80))
    def test_no_text_becomes_an_option_or_a_second_argument(self, kind, text):
        try:
            check = parse_request(kind, {"target": text})
        except Invalid:
            return
        argv = diagnostics.argv_for(check)
        self.assertEqual(argv[-2:], ["--", check.target])
        self.assertEqual(argv[:-2], [kind] + list(diagnostics.PROGRAMS[kind][1]))
        self.assertFalse(check.target.startswith("-"))
        self.assertRegex(check.target, r"\A[A-Za-z0-9.:-]+\Z")
        self.assertFalse(SHELL_AND_SPACE & set(check.target))

    @settings(max_examples=200, deadline=None)
    @given(st.ip_addresses(), st.text(max_size=20))
    def test_addresses_but_no_scope(self, address, scope):
        self.assertEqual(parse_request("ping", {"target": str(address)}).target, str(address))
        if address.version == 6:
            self.assertRaises(Invalid, parse_request, "ping", {"target": "%s%%%s" % (address, scope)})

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40))
    def test_a_leading_dash_is_always_refused(self, rest):
        self.assertRaises(Invalid, parse_request, "ping", {"target": "-" + rest})

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
                    min_size=1, max_size=5))
    def test_rfc1123_names_accepted(self, labels):
        assume(not labels[-1].isdigit())
        name = ".".join(labels)
        self.assertEqual(parse_request("ping", {"target": name}).target, name)


class ProgramTests(unittest.TestCase):

    def test_lines_stream_as_they_come_then_the_summary(self):
        h = Harness()
        h.start("ping", target="192.0.2.1")
        p, = h.processes
        self.assertEqual((p.path, p.argv[-2:]), ("/usr/bin/ping", ["--", "192.0.2.1"]))
        self.assertEqual(p.env["LC_ALL"], "C")
        self.assertEqual(h.lines, ["$ ping -n -c 4 -W 2 -- 192.0.2.1"])
        p.out(b"PING 192.0.2.1 (192.0.2.1) 56(84) bytes of data.\n64 bytes from 192.0.2.1: ic")
        self.assertEqual(h.lines[1:], ["PING 192.0.2.1 (192.0.2.1) 56(84) bytes of data."])
        p.out(b"mp_seq=1 ttl=64 time=0.312 ms\n")
        self.assertEqual(h.lines[-1], "64 bytes from 192.0.2.1: icmp_seq=1 ttl=64 time=0.312 ms")
        self.assertEqual(h.summaries, [])           # still going
        p.out(b"\n--- 192.0.2.1 ping statistics ---\n4 packets transmitted, 4 received, "
              b"0% packet loss, time 3004ms\nrtt min/avg/max/mdev = 0.250/0.300/0.350/0.040 ms")
        p.exit(0)
        self.assertEqual(h.summaries, ["4 sent, 4 received, 0% loss, avg 0.3 ms"])
        self.assertEqual(h.lines[-2:], ["rtt min/avg/max/mdev = 0.250/0.300/0.350/0.040 ms",
                                        "4 sent, 4 received, 0% loss, avg 0.3 ms"])
        self.assertEqual(h.diag.running, [])

    def test_ping_that_fails(self):
        h = Harness()
        h.start("ping", target="nowhere.example")
        p, = h.processes
        p.out(b"ping: nowhere.example: Name or service not known\n", fd=2)
        p.exit(2)
        self.assertEqual(h.summaries, ["ping failed (exit 2): ping: nowhere.example: "
                                       "Name or service not known"])

    def test_ping_with_loss(self):
        h = Harness()
        h.start("ping", target="192.0.2.9")
        h.processes[0].out(b"4 packets transmitted, 0 received, 100% packet loss, time 3070ms\n")
        h.processes[0].exit(1)
        self.assertEqual(h.summaries, ["4 sent, 0 received, 100% loss"])

    def test_traceroute_reached_and_not(self):
        h = Harness()
        h.start("traceroute", target="example.com")
        h.processes[0].out(b"traceroute to example.com (192.0.2.80), 20 hops max, 60 byte packets\n"
                           b" 1  192.168.2.254  0.3 ms\n 2  *\n 3  192.0.2.80  5.1 ms\n")
        h.processes[0].exit(0)
        self.assertEqual(h.summaries, ["reached in 3 hops"])
        self.assertEqual(h.lines[2:4], [" 1  192.168.2.254  0.3 ms", " 2  *"])
        h.start("traceroute", target="192.0.2.99")
        h.processes[1].out(b"traceroute to 192.0.2.99 (192.0.2.99), 20 hops max, 60 byte packets\n"
                           b" 1  192.168.2.254  0.3 ms\n 2  *\n")
        h.processes[1].exit(0)
        self.assertEqual(h.summaries, ["not reached in 2 hops (last answer from 192.168.2.254)"])

    def test_missing_program(self):
        h = Harness()
        h.diag.which = lambda name, path=None: None
        self.assertRaises(Unavailable, h.start, "traceroute", target="example.com")
        self.assertEqual((h.processes, h.diag.running), ([], []))

    def test_spawn_failure_ends_the_run(self):
        h = Harness()

        def broken(*a, **kw):
            raise OSError("no such file")
        h.diag.spawn = broken
        h.start("ping", target="192.0.2.1")
        self.assertEqual(h.summaries, ["could not start: no such file"])
        self.assertEqual(h.diag.running, [])


class CapTests(unittest.TestCase):

    def test_two_at_once_then_busy(self):
        h = Harness()
        h.start("ping", target="192.0.2.1")
        h.start("traceroute", target="192.0.2.2")
        self.assertRaises(Busy, h.start, "ping", target="192.0.2.3")
        self.assertEqual(len(h.processes), 2)
        h.processes[0].exit(0)
        h.start("ping", target="192.0.2.3")
        self.assertEqual(len(h.processes), 3)

    def test_time_cap_stops_the_child(self):
        h = Harness(time_cap=30)
        h.start("traceroute", target="192.0.2.2")
        p, = h.processes
        h.clock.advance(29)
        self.assertEqual((p.signals, h.summaries), ([], []))
        h.clock.advance(1)
        self.assertEqual(p.signals, ["TERM"])
        self.assertEqual(h.summaries, ["stopped after 30 s (the time allowed for one run)"])
        self.assertEqual(h.diag.running, [])
        h.clock.advance(diagnostics.KILL_AFTER)
        self.assertEqual(p.signals, ["TERM", "KILL"])
        p.out(b" 9  192.0.2.2  1 ms\n")           # what it says while dying is not sent
        p.exit(0)
        self.assertEqual(h.lines[-1], h.summaries[0])

    def test_stop_and_cancel_end_the_child(self):
        h = Harness()
        run = h.start("ping", target="192.0.2.1")
        run.stop("stopped: the client went away")
        self.assertEqual(h.processes[0].signals, ["TERM"])
        self.assertEqual(h.summaries, ["stopped: the client went away"])
        run = h.start("ping", target="192.0.2.1")
        run.done.cancel()
        self.assertEqual(h.processes[1].signals, ["TERM"])
        self.assertEqual(h.diag.running, [])
        self.assertEqual(h.clock.getDelayedCalls().__len__(), 2)   # the two KILLs to come
        run.stop()                                                  # twice: nothing more
        self.assertEqual(h.processes[1].signals, ["TERM"])


class DnsTests(unittest.TestCase):

    def test_own_resolver_then_each_forwarder(self):
        answers = {("127.0.0.1", "example.com", dns.A): [a_record("example.com", "192.0.2.80")],
                   ("203.0.113.1", "example.com", dns.A): [a_record("example.com", "192.0.2.80")],
                   ("203.0.113.1", "example.com", dns.AAAA): [],
                   ("127.0.0.1", "example.com", dns.AAAA): []}
        h = Harness(config(port=5353, secondary="203.0.113.7"), answers)
        h.diag.resolver.answers[("203.0.113.7", "example.com", dns.A)] = \
            dns_error.DNSQueryTimeoutError("silent")
        h.start("dns", target="example.com")
        h.clock.pump([0.002] * 10)
        self.assertEqual([a[:2] + (a[3],) for a in h.resolver.asked], [
            ("127.0.0.1", "example.com", 5353), ("127.0.0.1", "example.com", 5353),
            ("203.0.113.1", "example.com", 53), ("203.0.113.1", "example.com", 53),
            ("203.0.113.7", "example.com", 53)])      # silent: its AAAA is not asked
        self.assertEqual(h.lines[0], "the server's resolver (127.0.0.1): A example.com: "
                                     "A 192.0.2.80 (ttl 300) in 2 ms")
        self.assertIn("the server's resolver (127.0.0.1): AAAA example.com: no AAAA records",
                      h.lines[1])
        self.assertIn("forwarder secondary (203.0.113.7): A example.com: no answer (timed out)",
                      h.lines[4])
        self.assertEqual(h.summaries, ["resolved in 2 ms"])

    def test_nxdomain_and_a_given_server(self):
        h = Harness(config(enabled=False))
        h.start("dns", target="nowhere.example", server="192.0.2.53")
        h.clock.pump([0.002] * 5)
        self.assertEqual(h.lines[0], "the server's resolver is switched off ([dns] enabled = no)")
        self.assertEqual({a[0] for a in h.resolver.asked}, {"192.0.2.53"})
        self.assertEqual(h.summaries, ["not resolved by server: no such name (NXDOMAIN)"])

    def test_an_address_is_looked_up_backwards(self):
        ptr = dns.RRHeader("80.2.0.192.in-addr.arpa", dns.PTR, ttl=60,
                           payload=dns.Record_PTR("www.example.com", 60))
        h = Harness(config(primary=None), {("127.0.0.1", "80.2.0.192.in-addr.arpa", dns.PTR): [ptr]})
        h.start("dns", target="192.0.2.80")
        h.clock.pump([0.002] * 3)
        self.assertIn("PTR www.example.com (ttl 60)", h.lines[0])
        self.assertEqual(h.summaries, ["resolved in 2 ms"])

    def test_no_server_at_all(self):
        h = Harness(config(enabled=False, primary=None))
        h.start("dns", target="example.com")
        self.assertEqual(h.summaries, ["no DNS server to ask (no resolver and no forwarders)"])


class TcpTests(unittest.TestCase):

    def connected(self, h):
        host, port, factory, timeout = h.connects[-1]
        p = factory.buildProtocol(None)
        transport = types.SimpleNamespace(closed=False)
        transport.loseConnection = lambda: setattr(transport, "closed", True)
        p.makeConnection(transport)
        return transport

    def test_connected_in(self):
        h = Harness()
        h.start("tcp", target="192.0.2.25", port=25)
        self.assertEqual(h.connects[0][:2] + (h.connects[0][3],), ("192.0.2.25", 25, 5))
        h.clock.advance(0.0012)
        transport = self.connected(h)
        self.assertTrue(transport.closed)
        self.assertEqual(h.lines, ["connecting to 192.0.2.25 port 25", "connected in 1.2 ms"])

    def test_refused(self):
        h = Harness()
        h.start("tcp", target="192.0.2.25", port=26)
        h.clock.advance(0.0005)
        h.connects[0][2].clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))
        self.assertEqual(h.summaries, ["not connected after 0.5 ms: Connection was refused by "
                                       "other side."])

    def test_a_name_is_resolved_first(self):
        h = Harness(answers={("127.0.0.1", "mail.example.com", dns.A):
                             [a_record("mail.example.com", "192.0.2.25")]})
        h.start("tcp", target="mail.example.com", port=587)
        h.clock.advance(0.002)
        self.assertEqual(h.connects[0][:2], ("192.0.2.25", 587))
        self.connected(h)
        self.assertEqual(h.lines[:2], ["looking up mail.example.com through the server's resolver",
                                       "mail.example.com is 192.0.2.25"])
        self.assertEqual(h.summaries, ["connected in 0 ms"])

    def test_a_name_without_address(self):
        h = Harness()
        h.start("tcp", target="nowhere.example", port=80)
        h.clock.pump([0.002] * 3)
        self.assertEqual(h.connects, [])
        self.assertEqual(h.summaries, ["not connected: nowhere.example has no address"])
