# -*- test-case-name: allworx.tests.dns.test_service -*-
"""
Forwarding to the ISP's DNS servers (`[dns] primary`, `secondary`).

`ServerSelection` decides which server to ask: the primary while it answers;
after it stays silent, the secondary; and every `probe_interval` seconds the
primary is asked again alongside, so the resolver goes back to it as soon as
it answers. `ForwardingResolver` is the IResolver for the end of the chain:
each query goes out from a fresh UDP socket on a random port with a random ID
and EDNS0, and only a reply from the server asked, with that ID and the same
question, counts (anything else is dropped, as a spoofing attempt or a stray
would be). A truncated reply is asked again over TCP. Identical questions in
flight share one upstream query.

twisted.names.client.Resolver also randomises IDs and ports, but it matches a
reply by ID and address only, starts every query at the first server (so a
dead primary costs each query its timeout) and folds NXDOMAIN into an error
without the SOA a negative cache needs; hence this small client.
"""

import secrets
import struct

from twisted.internet import defer, error as net_error, protocol
from twisted.logger import Logger
from twisted.python import failure
from twisted.names import dns, error
from twisted.names.common import ResolverBase

from allworx.protocols.dns.cache import NegativeAnswer

log = Logger()

EDNS_SIZE = 1232
MAX_IN_FLIGHT = 500       # distinct questions out at once (each holds a socket)
FULL_LOG_EVERY = 10.0     # seconds between warnings that the limit was hit


class ServerSelection:
    """
    Which forwarder to ask (pure: times are arguments). `servers` is a tuple
    of (host, port), primary first.
    """

    def __init__(self, servers, probe_interval=30.0):
        self.servers = tuple(servers)
        self.probe_interval = probe_interval
        self.active = 0
        self._next_probe = None

    @property
    def current(self):
        """The server asked first now, (host, port)."""
        return self.servers[self.active] if self.servers else None

    def plan(self, now):
        """(servers to try in turn, a server to probe alongside the first or None)."""
        order = self.servers[self.active:] + self.servers[:self.active]
        probe = None
        if self.active != 0 and self._next_probe is not None and now >= self._next_probe:
            probe = self.servers[0]
            self._next_probe = now + self.probe_interval
        return order, probe

    def timed_out(self, server, now):
        """`server` did not answer in time; True when the active server changed."""
        if server == self.current and len(self.servers) > 1:
            self.active = (self.active + 1) % len(self.servers)
            if self.active != 0:
                self._next_probe = now + self.probe_interval
            return True
        return False

    def answered(self, server, now):
        """`server` answered; the primary answering takes over again. True on change."""
        if server == self.servers[0] and self.active != 0:
            self.active = 0
            self._next_probe = None
            return True
        return False


def random_id():
    """A query ID no one off the path can guess (RFC 5452)."""
    return secrets.randbits(16)


def random_port():
    """A source port from the whole unprivileged range (RFC 5452)."""
    return 1024 + secrets.randbelow(65536 - 1024)


def make_query(query, query_id):
    """The wire bytes of a recursive query with EDNS0 (size EDNS_SIZE)."""
    m = dns._EDNSMessage(id=query_id, recDes=True, maxSize=EDNS_SIZE, dnssecOK=False)
    m.queries = [query]
    return m.toStr()


def decode_reply(data):
    """A reply's Message, or None when it does not parse or its counts lie."""
    m = dns.Message()
    try:
        m.fromStr(data)
    except Exception:
        return None
    if struct.unpack("!HHHH", data[4:12]) != (len(m.queries), len(m.answers),
                                              len(m.authority), len(m.additional)):
        return None
    return m


def matches(message, query_id, query):
    """Is `message` the reply to our query `query` with ID `query_id`?"""
    if not message.answer or message.id != query_id or len(message.queries) != 1:
        return False
    q = message.queries[0]
    return (q.name.name.lower() == query.name.name.lower() and q.type == query.type
            and q.cls == query.cls)


class _Exchange(protocol.DatagramProtocol):
    """One query to one server from its own random port; fires `done` once."""

    noisy = False

    def __init__(self, server, query, query_id, done):
        self.server = server
        self.query = query
        self.query_id = query_id
        self.done = done

    def startProtocol(self):
        self.transport.write(make_query(self.query, self.query_id), self.server)

    def datagramReceived(self, data, addr):
        if addr != self.server or self.done.called:
            return
        m = decode_reply(data)
        if m is not None and matches(m, self.query_id, self.query):
            self.done.callback((self.server, m))


class ForwardingResolver(ResolverBase):
    """
    The forwarders as an IResolver. `on_answer(query, rcode, answers,
    authority, additional)` sees every upstream answer (the cache keeps them).
    """

    def __init__(self, servers, reactor, timeout=2.0, on_answer=None, probe_interval=30.0,
                 max_in_flight=MAX_IN_FLIGHT):
        ResolverBase.__init__(self)
        self.selection = ServerSelection(servers, probe_interval)
        self.reactor = reactor
        self.timeout = timeout
        self.on_answer = on_answer
        self.max_in_flight = max_in_flight
        self._waiting = {}
        self._full_logged = None
        self.forwarded = 0

    def _lookup(self, name, cls, type, timeout):
        if isinstance(name, str):
            name = name.encode("ascii", "replace")
        query = dns.Query(name, type, cls)
        key = (name.lower(), type, cls)
        if key in self._waiting:
            d = defer.Deferred()
            self._waiting[key].append(d)
            return d
        if len(self._waiting) >= self.max_in_flight:
            now = self.reactor.seconds()
            if self._full_logged is None or now - self._full_logged >= FULL_LOG_EVERY:
                self._full_logged = now
                log.warn("dns: {count} questions already out to the forwarders (the most "
                         "allowed); answering SERVFAIL to more until some come back",
                         count=len(self._waiting))
            return defer.fail(error.DNSServerError("too many questions in flight"))
        self._waiting[key] = []
        d = self._resolve(query)

        def share(result):
            for waiter in self._waiting.pop(key, ()):
                if isinstance(result, failure.Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)
            return result
        d.addBoth(share)
        return d

    @defer.inlineCallbacks
    def _resolve(self, query):
        order, probe = self.selection.plan(self.reactor.seconds())
        if not order:
            raise error.DNSServerError("no DNS servers to forward to")
        for server in order:
            extra = [probe] if probe is not None and probe != server else []
            probe = None
            result = yield self._ask([server] + extra, query)
            if result is None:
                if self.selection.timed_out(server, self.reactor.seconds()):
                    log.warn("dns: forwarder {server} did not answer within {timeout} s; "
                             "asking {other} from now on", server=server[0],
                             timeout=self.timeout, other=self.selection.current[0])
                continue
            answered, message = result
            if self.selection.answered(answered, self.reactor.seconds()):
                log.info("dns: forwarder {server} answers again", server=answered[0])
            if message.trunc:
                message = yield self._ask_tcp(answered, query)
                if message is None:
                    continue
            if message.rCode in (dns.ESERVER, dns.EREFUSED, dns.ENOTIMP, dns.EFORMAT):
                continue
            self.forwarded += 1
            for rr in message.answers + message.authority + message.additional:
                rr.auth = False  # the forwarder's authority is not ours to claim
            answers = [rr for rr in message.answers if rr.type != dns.OPT]
            authority = list(message.authority)
            additional = [rr for rr in message.additional if rr.type != dns.OPT]
            if self.on_answer is not None:
                self.on_answer(query, message.rCode, answers, authority, additional)
            if message.rCode == dns.ENAME:
                raise NegativeAnswer(query.name.name, authority)
            if message.rCode != dns.OK:
                raise error.DNSServerError(query.name.name)
            return (answers, authority, additional)
        raise error.DNSServerError("no forwarder answered for %r" % query.name.name)

    def _ask(self, servers, query):
        """Ask `servers` at once; fires with (server, message) or None after the timeout."""
        done = defer.Deferred()
        ports = []
        for server in servers:
            exchange = _Exchange(server, query, random_id(), done)
            for _ in range(20):
                try:
                    ports.append(self.reactor.listenUDP(random_port(), exchange))
                    break
                except net_error.CannotListenError:
                    continue
        timer = self.reactor.callLater(self.timeout, lambda: done.called or done.callback(None))

        def finish(result):
            if timer.active():
                timer.cancel()
            for port in ports:
                port.stopListening()
            return result
        done.addBoth(finish)
        return done

    def _ask_tcp(self, server, query):
        """Ask `server` over TCP (after a truncated reply); (message) or None."""
        done = defer.Deferred()
        exchange = _StreamExchange(query, random_id(), done)
        factory = protocol.ClientFactory.forProtocol(lambda: exchange)
        factory.clientConnectionFailed = lambda connector, reason: (
            done.called or done.callback(None))
        connector = self.reactor.connectTCP(server[0], server[1], factory,
                                            timeout=self.timeout)
        timer = self.reactor.callLater(self.timeout * 2,
                                       lambda: done.called or done.callback(None))

        def finish(result):
            if timer.active():
                timer.cancel()
            connector.disconnect()
            return result
        done.addBoth(finish)
        return done


class _StreamExchange(protocol.Protocol):
    """One query over TCP (two-byte length framing); fires `done` with the reply or None."""

    def __init__(self, query, query_id, done):
        self.query = query
        self.query_id = query_id
        self.done = done
        self._buffer = b""

    def connectionMade(self):
        wire = make_query(self.query, self.query_id)
        self.transport.write(struct.pack("!H", len(wire)) + wire)

    def dataReceived(self, data):
        self._buffer += data
        if len(self._buffer) < 2:
            return
        (size,) = struct.unpack("!H", self._buffer[:2])
        if len(self._buffer) < 2 + size or self.done.called:
            return
        m = decode_reply(self._buffer[2:2 + size])
        self.done.callback(m if m is not None and matches(m, self.query_id, self.query)
                           else None)
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.callback(None)
