# -*- test-case-name: allworx.tests.core.test_diagnostics -*-
"""
Diagnostics run from the server (SPEC 20): ping, a DNS lookup (through the
server's own resolver and straight to each forwarder, or to a server named in
the request), a TCP connect and a traceroute. Each run writes its lines as
they come to an `emit(line)` callable and ends with one summary line
("4 sent, 4 received, 0% loss, avg 0.3 ms", "resolved in 2 ms", "connected in
1.2 ms", "reached in 5 hops").

No shell is involved: a target is first checked to be a host name (RFC 1123)
or an IPv4/IPv6 address, which can never begin with "-", and it is passed
after "--" as the last element of an argv to spawnProcess. At most
`max_running` runs go at once (`Busy` beyond), and each is stopped after
`time_cap` seconds; `Run.stop()` (the client went away) ends the child.
"""

import ipaddress
import re
import shutil

import attr
from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from twisted.names import client as dns_client, dns
from twisted.names import error as dns_error

log = Logger()

KINDS = ("ping", "dns", "tcp", "traceroute")
MAX_RUNNING = 2
TIME_CAP = 60                   # seconds a run may take in all
TCP_TIMEOUT = 5                 # seconds to wait for a TCP connect
DNS_TIMEOUT = (1, 3)            # seconds per try of a DNS query
KILL_AFTER = 2                  # seconds between SIGTERM and SIGKILL
MAX_TARGET = 253
PROGRAMS = {
    "ping": ("ping", ("-n", "-c", "4", "-W", "2")),
    "traceroute": ("traceroute", ("-n", "-w", "2", "-q", "1", "-m", "20")),
}
DNS_TYPES = ("A", "AAAA", "MX", "TXT", "NS", "SOA", "CNAME", "PTR", "SRV")
# The environment of the programs: their messages in plain English, parsed below.
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "LANG": "C"}

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


class Invalid(Exception):
    """Bad input: `errors` is a list of (key, message), every mistake at once."""

    def __init__(self, errors):
        Exception.__init__(self, "; ".join("%s: %s" % e for e in errors))
        self.errors = errors


class Busy(Exception):
    """As many runs as allowed are going already."""


class Unavailable(Exception):
    """The program a diagnostic needs is not installed."""


@attr.s(frozen=True, slots=True)
class Check:
    """One diagnostic asked for, validated: kind, target, and its options."""
    kind = attr.ib()
    target = attr.ib()
    port = attr.ib(default=None)
    server = attr.ib(default=None)
    qtype = attr.ib(default=None)


def address_of(text):
    """`text` as an IPv4/IPv6 address object (without a scope: no `%eth0`), or None."""
    if not isinstance(text, str) or "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def target_problem(text):
    """Why `text` is not a host name (RFC 1123) or an IP address; None if it is one."""
    if not isinstance(text, str) or not text:
        return "a host name or an IP address is required"
    if address_of(text) is not None:
        return None
    if len(text) > MAX_TARGET:
        return "a host name is at most %d characters" % MAX_TARGET
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    if all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit():
        return None
    return ("not a host name or an IP address: a name is letters, digits and hyphens "
            "in dot-separated labels, none starting or ending with a hyphen")


def _port(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 1 <= value <= 65535:
        return value
    return None


def parse_request(kind, data):
    """
    A `Check` from the JSON object `data` for `kind`; raises Invalid naming
    every bad field (target, port, server, type).
    """
    if kind not in KINDS:
        raise Invalid([("kind", "one of %s" % ", ".join(KINDS))])
    errors = []
    target = data.get("target")
    if isinstance(target, str):
        target = target.strip()
    why = target_problem(target)
    if why:
        errors.append(("target", why))
    port = server = qtype = None
    if kind == "tcp":
        port = _port(data.get("port"))
        if port is None:
            errors.append(("port", "a port number from 1 to 65535 is required"))
    if kind == "dns":
        raw = data.get("server")
        if raw not in (None, ""):
            server = address_of(raw.strip()) if isinstance(raw, str) else None
            if server is None:
                errors.append(("server", "an IP address of a DNS server"))
        raw = data.get("type")
        if raw not in (None, ""):
            qtype = raw.strip().upper() if isinstance(raw, str) else None
            if qtype not in DNS_TYPES:
                errors.append(("type", "one of %s" % ", ".join(DNS_TYPES)))
    if errors:
        raise Invalid(errors)
    return Check(kind, target, port, str(server) if server else None, qtype)


def argv_for(check):
    """The argv of a program diagnostic: its name, options, "--", then the target alone."""
    program, options = PROGRAMS[check.kind]
    return [program] + list(options) + ["--", check.target]


def ms(seconds):
    """A duration as milliseconds text: `0.031`, `0.3`, `2`, `12.3`."""
    value = seconds * 1000.0
    if value >= 1:
        text = "%.1f" % value
        return text[:-2] if text.endswith(".0") else text
    return "%.2g" % value


class PingSummary:
    """Reads ping's lines; `summary(code, last_error)` is the line that ends the run."""

    STATS = re.compile(r"(\d+) packets transmitted, (\d+) received.*?([\d.]+)% packet loss")
    RTT = re.compile(r"= [\d.]+/([\d.]+)/")

    def __init__(self):
        self.stats = self.avg = None

    def feed(self, line):
        m = self.STATS.search(line)
        if m:
            self.stats = m.groups()
        m = self.RTT.search(line)
        if m:
            self.avg = float(m.group(1)) / 1000.0

    def summary(self, code, last_error):
        if self.stats is None:
            return "ping failed (exit %s)%s" % (code, ": " + last_error if last_error else "")
        sent, received, loss = self.stats
        text = "%s sent, %s received, %s%% loss" % (sent, received, loss)
        return text + (", avg %s ms" % ms(self.avg) if self.avg is not None else "")


class TracerouteSummary:
    """Reads traceroute's lines: the destination's address and the last hop that answered."""

    HEAD = re.compile(r"^traceroute to \S+ \(([^)]+)\)")
    HOP = re.compile(r"^\s*(\d+)\s+(\S+)")

    def __init__(self):
        self.destination = None
        self.hops = 0
        self.last = None

    def feed(self, line):
        m = self.HEAD.match(line)
        if m:
            self.destination = m.group(1)
            return
        m = self.HOP.match(line)
        if m:
            self.hops = int(m.group(1))
            if m.group(2) != "*":
                self.last = m.group(2)

    def summary(self, code, last_error):
        if self.destination is None:
            return "traceroute failed (exit %s)%s" % (code, ": " + last_error if last_error else "")
        if self.last is not None and self.last == self.destination:
            return "reached in %d hop%s" % (self.hops, "" if self.hops == 1 else "s")
        return "not reached in %d hops%s" % (
            self.hops, " (last answer from %s)" % self.last if self.last else "")


class LineProcess(protocol.ProcessProtocol):
    """A child whose stdout and stderr lines go to `on_line`; `ended` fires with its exit code."""

    def __init__(self, on_line):
        self.on_line = on_line
        self.ended = defer.Deferred()
        self.buffers = {1: b"", 2: b""}
        self.last_error = ""

    def childDataReceived(self, fd, data):
        lines = (self.buffers.get(fd, b"") + data).split(b"\n")
        self.buffers[fd] = lines.pop()
        for raw in lines:
            self._line(fd, raw)

    def _line(self, fd, raw):
        text = raw.decode("utf-8", "replace").rstrip()
        if not text:
            return
        if fd == 2:
            self.last_error = text
        self.on_line(text)

    def processEnded(self, reason):
        for fd in (1, 2):
            if self.buffers[fd]:
                self._line(fd, self.buffers[fd])
                self.buffers[fd] = b""
        code = getattr(reason.value, "exitCode", None)
        if code is None:
            code = getattr(reason.value, "signal", None) and "signal %s" % reason.value.signal
        self.ended.callback(code)


class _Connector(protocol.ClientFactory):
    """Fires `result` with None on connect (and hangs up), or with the failure's text."""

    def __init__(self, result):
        self.result = result

    def buildProtocol(self, addr):
        p = protocol.Protocol()
        result = self.result

        def made(transport):
            if not result.called:
                result.callback(None)
            transport.loseConnection()
        p.makeConnection = made
        return p

    def clientConnectionFailed(self, connector, reason):
        if not self.result.called:
            self.result.callback(reason.getErrorMessage())


def default_resolver(server, port, reactor):
    """A DNS client that asks `server` on `port` only."""
    return dns_client.Resolver(servers=[(server, port)], timeout=DNS_TIMEOUT, reactor=reactor)


def answer_text(record):
    """One resource record of an answer as `A 192.0.2.1 (ttl 300)`."""
    payload = record.payload
    kind = dns.QUERY_TYPES.get(record.type, str(record.type))
    if hasattr(payload, "dottedQuad"):
        value = payload.dottedQuad()
    elif record.type == dns.AAAA:
        value = str(ipaddress.IPv6Address(payload.address))
    elif record.type == dns.MX:
        value = "%d %s" % (payload.preference, payload.name)
    elif record.type == dns.TXT:
        value = " ".join('"%s"' % d.decode("utf-8", "replace") for d in payload.data)
    elif hasattr(payload, "name"):
        value = str(payload.name)
    else:
        value = str(payload)
    return "%s %s (ttl %s)" % (kind, value, record.ttl)


TIMED_OUT = "no answer (timed out)"
DNS_FAILURES = (
    (dns_error.DNSNameError, "no such name (NXDOMAIN)"),
    (dns_error.DNSQueryRefusedError, "refused (REFUSED)"),
    (dns_error.DNSServerError, "server failure (SERVFAIL)"),
    (dns_error.DNSQueryTimeoutError, TIMED_OUT),
    (defer.TimeoutError, TIMED_OUT),
)


def dns_failure_text(failure):
    for kind, text in DNS_FAILURES:
        if failure.check(kind):
            return text
    return failure.getErrorMessage() or failure.type.__name__


class Run:
    """
    One diagnostic going: its lines go to `emit`; `done` fires with the
    summary line once it is written (cancelling `done` is `stop()`).
    """

    def __init__(self, diagnostics, check, emit):
        self.diagnostics = diagnostics
        self.reactor = diagnostics.reactor
        self.check = check
        self.emit = emit
        self.done = defer.Deferred(canceller=lambda _: self.stop("stopped"))
        self.process = None
        self.ended = False
        self._timers = []

    def later(self, seconds, f, *args):
        call = self.reactor.callLater(seconds, f, *args)
        self._timers.append(call)
        return call

    def finish(self, summary):
        """Write the summary line and fire `done` (once)."""
        if self.ended:
            return
        self.ended = True
        for call in self._timers:
            if call.active():
                call.cancel()
        self.diagnostics.release(self)
        if not self.done.called:
            self.emit(summary)
            self.done.callback(summary)

    def stop(self, why="stopped"):
        """End the run now: the child is terminated (then killed)."""
        if self.ended:
            return
        if self.process is not None:
            _signal(self.process, "TERM")
            process = self.process
            self.reactor.callLater(KILL_AFTER, _signal, process, "KILL")
        self.finish(why)

    def expire(self):
        self.stop("stopped after %d s (the time allowed for one run)" % self.diagnostics.time_cap)

    # ---- the programs

    def run_program(self, path):
        check = self.check
        summary = PingSummary() if check.kind == "ping" else TracerouteSummary()
        argv = argv_for(check)

        def line(text):
            summary.feed(text)
            if not self.ended:
                self.emit(text)
        child = LineProcess(line)
        self.emit("$ " + " ".join(argv))
        self.process = self.diagnostics.spawn(child, path, argv, env=dict(CHILD_ENV))
        child.ended.addCallback(
            lambda code: self.finish(summary.summary(code, child.last_error)))

    # ---- TCP

    @defer.inlineCallbacks
    def run_tcp(self):
        check = self.check
        host = check.target
        if address_of(host) is None:
            self.emit("looking up %s through the server's resolver" % host)
            answers = yield self.diagnostics.addresses(host)
            if self.ended:
                return
            if not answers:
                self.finish("not connected: %s has no address" % host)
                return
            host = answers[0]
            self.emit("%s is %s" % (check.target, host))
        self.emit("connecting to %s port %d" % (host, check.port))
        result = defer.Deferred()
        began = self.reactor.seconds()
        self.diagnostics.connect(host, check.port, _Connector(result), TCP_TIMEOUT)
        why = yield result
        took = self.reactor.seconds() - began
        if why is None:
            self.finish("connected in %s ms" % ms(took))
        else:
            self.finish("not connected after %s ms: %s" % (ms(took), why))

    # ---- DNS

    def dns_servers(self):
        """(label, address, port) of each server to ask: the server's own resolver first."""
        config = self.diagnostics.config()
        out = []
        if config.dns.enabled:
            out.append(("the server's resolver", "127.0.0.1", config.dns.port))
        else:
            self.emit("the server's resolver is switched off ([dns] enabled = no)")
        if self.check.server:
            out.append(("server", self.check.server, 53))
        else:
            for key in ("primary", "secondary"):
                ip = getattr(config.dns, key)
                if ip is not None:
                    out.append(("forwarder %s" % key, str(ip), 53))
        return out

    def dns_question(self):
        check = self.check
        address = address_of(check.target)
        if check.qtype:
            name = check.target
            if check.qtype == "PTR" and address is not None:
                name = address.reverse_pointer
            return [(name, getattr(dns, check.qtype))]
        if address is not None:
            return [(address.reverse_pointer, dns.PTR)]
        return [(check.target, dns.A), (check.target, dns.AAAA)]

    @defer.inlineCallbacks
    def run_dns(self):
        first = None
        questions = self.dns_question()
        servers = self.dns_servers()
        if not servers:
            self.finish("no DNS server to ask (no resolver and no forwarders)")
            return
        for label, address, port in servers:
            for name, qtype in questions:
                began = self.reactor.seconds()
                text, ok = yield self.diagnostics.ask(address, port, name, qtype)
                if self.ended:
                    return
                took = self.reactor.seconds() - began
                self.emit("%s (%s): %s %s: %s in %s ms" % (
                    label, address, dns.QUERY_TYPES.get(qtype, qtype), name, text, ms(took)))
                if first is None:
                    first = (label, ok, took, text)
                if text == TIMED_OUT:
                    break       # a silent server: its other questions would wait as long
        label, ok, took, text = first
        if ok:
            self.finish("resolved in %s ms" % ms(took))
        else:
            self.finish("not resolved by %s: %s" % (label, text))


def _signal(process, name):
    try:
        process.signalProcess(name)
    except (error.ProcessExitedAlready, OSError):
        pass


class Diagnostics:
    """
    Starts runs, at most `max_running` at once, each for at most `time_cap`
    seconds. `config` is a callable giving the live config (its `[dns]`);
    `spawn`, `connect`, `resolver` and `which` are the reactor's and the
    system's unless given (tests give fakes).
    """

    def __init__(self, reactor, config, spawn=None, connect=None, resolver=None,
                 which=shutil.which, max_running=MAX_RUNNING, time_cap=TIME_CAP):
        self.reactor = reactor
        self.config = config
        self.spawn = spawn if spawn is not None else reactor.spawnProcess
        self.connect = connect if connect is not None else (
            lambda host, port, factory, timeout: reactor.connectTCP(host, port, factory,
                                                                    timeout=timeout))
        self.resolver = resolver if resolver is not None else (
            lambda server, port: default_resolver(server, port, reactor))
        self.which = which
        self.max_running = max_running
        self.time_cap = time_cap
        self.running = []

    def start(self, check, emit):
        """A `Run` of `check` writing to `emit`; raises Busy or Unavailable before any line."""
        path = None
        if check.kind in PROGRAMS:
            program = PROGRAMS[check.kind][0]
            path = self.which(program, path=CHILD_ENV["PATH"])
            if path is None:
                raise Unavailable("%s is not installed on the server" % program)
        if len(self.running) >= self.max_running:
            raise Busy("%d diagnostics are running already; try again when one has ended"
                       % len(self.running))
        run = Run(self, check, emit)
        self.running.append(run)
        run.later(self.time_cap, run.expire)
        log.info("diagnostics: {kind} {target}", kind=check.kind, target=check.target)
        try:
            if path is not None:
                run.run_program(path)
            elif check.kind == "tcp":
                run.run_tcp().addErrback(self._failed, run)
            else:
                run.run_dns().addErrback(self._failed, run)
        except OSError as e:
            run.finish("could not start: %s" % e)
        return run

    def _failed(self, failure, run):
        log.failure("diagnostics: {kind} failed", failure, kind=run.check.kind)
        run.finish("failed: %s" % failure.getErrorMessage())

    def release(self, run):
        if run in self.running:
            self.running.remove(run)

    def ask(self, server, port, name, qtype):
        """Fires with (text of the answer, whether it had answers); never fails."""
        try:
            resolver = self.resolver(server, port)
            d = resolver.query(dns.Query(name, qtype), timeout=DNS_TIMEOUT)
        except Exception:
            d = defer.fail()

        def answered(result):
            answers = [r for r in result[0] if r.type == qtype or r.type == dns.CNAME]
            if not answers:
                return "no %s records" % dns.QUERY_TYPES.get(qtype, qtype), False
            return ", ".join(answer_text(r) for r in answers), True
        return d.addCallbacks(answered, lambda f: (dns_failure_text(f), False))

    def addresses(self, name):
        """The A then AAAA addresses of `name` from the server's resolver (or its forwarders)."""
        config = self.config()
        if config.dns.enabled:
            server, port = "127.0.0.1", config.dns.port
        elif config.dns.primary is not None:
            server, port = str(config.dns.primary), 53
        else:
            return defer.succeed([])
        resolver = self.resolver(server, port)
        found = []

        @defer.inlineCallbacks
        def lookup():
            for qtype in (dns.A, dns.AAAA):
                try:
                    answers, _, _ = yield resolver.query(dns.Query(name, qtype), timeout=DNS_TIMEOUT)
                except Exception:
                    continue
                for r in answers:
                    if r.type == dns.A:
                        found.append(r.payload.dottedQuad())
                    elif r.type == dns.AAAA:
                        found.append(str(ipaddress.IPv6Address(r.payload.address)))
                if found:
                    break
            return found
        return lookup()
