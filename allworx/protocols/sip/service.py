# -*- test-case-name: allworx.tests.sip.test_service -*-
"""
The "sip" child: SIP over UDP and TCP on `[sip] port` and TLS on `[sip]
tls_port` (LAN side only unless `[sip] wan = yes`).

`build_core` assembles the parts around the `SipCore` (core.py): the
registrar, the call router (calls.py), the voicemail user agent (ua.py) and
message waiting (mwi.py), the last three given the mail store they deliver
to and read from. Sockets stay thin: `SipDatagram` and `SipStream` only
frame bytes (RFC 5626 keep-alives: a CRLF CRLF ping on a stream is
answered with a CRLF pong). `SipService` listens on the ports, follows the
office live (re-binding only when a port or the switch changes), hands
`MailboxChanged` to message waiting, and opens the connections a message
over TCP or TLS needs when none is up (to a provider, or a phone on the LAN):
one per peer, made again on demand, read by the same `SipStream`.

TLS listens always (LAN phones may use it too); the firewall opens
`tls_port` to the WAN only with `[sip] wan = yes`, and the core refuses
what comes from the WAN otherwise. The certificate is the server's one
(`allworx.certificates`, the one every TLS port presents, renewed in place),
handed in as `tls_options` by the wiring; without one, TLS does not listen. A trunk over
TLS checks the provider's certificate against the system's trust store and
its registrar's (or outbound proxy's) name.
"""

import os

from twisted.internet import defer, error, protocol, ssl
from twisted.logger import Logger

from allworx.dscp import SIP, mark
from allworx.guards import PeerLimit
from allworx.office import MailboxChanged
from allworx.protocols.sip.attendant import Attendant
from allworx.protocols.sip.calls import CallRouter
from allworx.protocols.sip.checksync import CheckSync
from allworx.protocols.sip.core import ERRORS, Destination, SipCore
from allworx.protocols.sip.history import CallHistory
from allworx.protocols.sip.message import MAX_MESSAGE, header_end
from allworx.protocols.sip.mwi import MessageWaiting
from allworx.protocols.sip.nat import KeepAlive
from allworx.protocols.sip.outside import OutsideCalls
from allworx.protocols.sip.registrar import Registrar
from allworx.protocols.sip.sites import SiteCalls
from allworx.protocols.sip.trunk import TrunkManager
from allworx.protocols.sip.ua import VoicemailAgent
from allworx.protocols.voice.music import MusicSource
from allworx.protocols.voice.relay import RelaySession
from allworx.servicebase import ListeningService

log = Logger()

# ---------------------------------------------------------------- transports

MAX_UDP_HOSTS = 4096        # hosts remembered as checked for UDP sends

class SipDatagram(protocol.DatagramProtocol):
    """UDP: each datagram is one message."""

    def __init__(self, core):
        self.core = core

    def datagramReceived(self, data, addr):
        if len(data) > MAX_MESSAGE:
            ERRORS.labels("oversized").inc()
            return
        self.core.receive(data, Destination("UDP", addr[0], addr[1]))


PING, PONG = b"\r\n\r\n", b"\r\n"     # RFC 5626 section 3.5.1


class SipStream(protocol.Protocol):
    """TCP or TLS (the factory's `transport`): messages framed by the blank line and Content-Length."""

    admitted_host = None        # the host counted in the factory's PeerLimit (accepted connections)

    def __init__(self, core, factory):
        self.core = core
        self.factory = factory
        self.buffer = b""

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.peer = (peer.host, peer.port)
        self.factory.connections[self.peer] = self
        for data in self.factory.take_pending():
            self.transport.write(data)

    def connectionLost(self, reason):
        if self.factory.connections.get(self.peer) is self:
            del self.factory.connections[self.peer]
        if self.admitted_host is not None:
            self.factory.peers.release(self.admitted_host)

    def _keep_alives(self):
        """Take the CRLFs before a message: a ping is answered; False while one may be half here."""
        while self.buffer[:2] == PONG:
            if self.buffer[:4] == PING:
                self.transport.write(PONG)
                self.buffer = self.buffer[4:]
            elif PING.startswith(self.buffer):
                return False
            else:
                self.buffer = self.buffer[2:]
        self.buffer = self.buffer.lstrip(b"\r\n")
        return True

    def dataReceived(self, data):
        self.buffer += data
        while True:
            if not self._keep_alives():
                return
            end = header_end(self.buffer)
            if end < 0:
                if len(self.buffer) > MAX_MESSAGE:
                    ERRORS.labels("oversized").inc()
                    self.transport.loseConnection()
                return
            length = 0
            for line in self.buffer[:end].split(b"\n"):
                name, sep, value = line.partition(b":")
                if sep and name.strip().lower() in (b"content-length", b"l"):
                    value = value.strip()
                    if not value.isdigit() or len(value) > 8:
                        self.transport.loseConnection()
                        return
                    length = int(value)
            if end + length > MAX_MESSAGE:
                ERRORS.labels("oversized").inc()
                self.transport.write(b"SIP/2.0 513 Message Too Large\r\nContent-Length: 0\r\n\r\n")
                self.transport.loseConnection()
                return
            if len(self.buffer) < end + length:
                return
            message, self.buffer = self.buffer[:end + length], self.buffer[end + length:]
            self.core.receive(message, Destination(self.factory.transport, self.peer[0],
                                                   self.peer[1], self))


MAX_CONNECTIONS = 1000
MAX_CONNECTIONS_PER_HOST = 16
CONNECT_TIMEOUT = 10


class SipStreamFactory(protocol.ServerFactory):
    """
    Makes SipStream connections and remembers them by peer: each host holds
    at most its share, under a cap in all that keeps room for other hosts (a
    connection beyond them is closed at once: SIP has nothing to say before
    a request).
    """

    def __init__(self, core, peer_limit=None, transport="TCP"):
        self.core = core
        self.transport = transport
        self.connections = {}
        self.peers = peer_limit if peer_limit is not None else PeerLimit(
            MAX_CONNECTIONS_PER_HOST, cap=MAX_CONNECTIONS)

    def take_pending(self):
        return ()

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        refusal = self.peers.refusal(host)
        if refusal is not None:
            ERRORS.labels("connections").inc()
            log.warn("SIP over TCP from {host} refused: {why}", host=host,
                     why=self.peers.why(refusal, host))
            return None
        self.peers.admit(host)
        stream = SipStream(self.core, self)
        stream.admitted_host = host
        return stream


MAX_PENDING = 32        # messages kept for a connection being made


class SipClientFactory(protocol.ClientFactory):
    """
    One connection we open to `dest`: it joins the connections of the
    listening factory of its transport (`server`), so answers and later
    messages use it; what waits for it is sent when it is up, or dropped
    when it cannot be made.
    """

    def __init__(self, core, server, dest, done):
        self.core = core
        self.transport = server.transport
        self.connections = server.connections
        self.dest = dest
        self.done = done            # called once the attempt is over, either way
        self.pending = []

    def buildProtocol(self, addr):
        self.done(self)
        return SipStream(self.core, self)

    def take_pending(self):
        pending, self.pending = self.pending, []
        return pending

    def clientConnectionFailed(self, connector, reason):
        self.done(self)
        log.info("SIP over {transport} to {peer}: no connection ({why}); {n} message(s) dropped",
                 transport=self.transport, peer="%s:%d" % (self.dest.host, self.dest.port),
                 why=reason.getErrorMessage(), n=len(self.pending))
        self.pending = []


# ---------------------------------------------------------------- the service

class SipService(ListeningService):
    """
    The "sip" child: UDP and TCP on `[sip] port` when enabled. The parts read
    the other `[sip]` settings (voicemail_timeout, voicemail_number,
    rtp_ports) from the office at each use, so a change applies from the
    next call on without touching the sockets.
    """

    def __init__(self, office, mail_store, reactor=None, throttle=None, tls_options=None,
                 phonebook=None, leases=None):
        if reactor is None:
            from twisted.internet import reactor
        ListeningService.__init__(self, "sip", office)
        self.reactor = reactor
        self.mail_store = mail_store
        self.core = build_core(office, reactor, mail_store, throttle=throttle,
                               phonebook=phonebook, leases=leases)
        self.registrations = self.core.registrar
        self.checksync = self.core.checksync        # ICheckSync (SPEC 19)
        self.calls = self.core.calls
        self.voicemail = self.core.ua
        self.trunks = TrunkManager(self.core, office, reactor.resolve)
        self.call_history = CallHistory(
            os.path.join(office.config.system.data_dir, "calls.jsonl"), clock=reactor)
        self.core.outside = OutsideCalls(
            self.core, office, reactor, self.trunks, self._relay_session, self.call_history,
            music=lambda pt: MusicSource(pt, self.voicemail.voicemail_dir))
        self.core.calls.history = self.call_history
        self.core.calls.media.factory = self._relay_session
        self.udp = None
        self.udp_hosts = set()      # hosts the UDP port's address checks passed
        self.tls_options = tls_options or (lambda: None)
        self.tcp_factory = SipStreamFactory(self.core)
        self.tls_factory = SipStreamFactory(self.core, self.tcp_factory.peers, transport="TLS")
        self.streams = {"TCP": self.tcp_factory, "TLS": self.tls_factory}
        self.connecting = {}        # (transport, host, port) -> SipClientFactory
        self.core.connections_get = self._connection
        self.core.send_raw = self._send_raw
        self.follow(MailboxChanged, self.core.mwi.mailbox_changed)

    def _connection(self, host, port):
        """A TCP or TLS connection with that peer, if one is up."""
        return (self.tcp_factory.connections.get((host, port))
                or self.tls_factory.connections.get((host, port)))

    def _send_raw(self, data, dest):
        factory = self.streams.get(dest.transport)
        if factory is not None:
            conn = dest.conn or factory.connections.get((dest.host, dest.port))
            if conn is not None and conn.transport is not None:
                conn.transport.write(data)
            else:
                self._connect(dest, data)
            return
        if self.udp is not None and self.udp in self.ports:
            addr = (dest.host, dest.port)
            sock = getattr(self.udp, "socket", None)
            if sock is not None and dest.host in self.udp_hosts:
                # A host the port's checks passed before (they parse the address up
                # to four times a datagram): straight to the socket. A failure goes
                # the port's way below, which says it as before.
                try:
                    sock.sendto(data, addr)
                    return
                except OSError:
                    pass
            try:
                self.udp.write(data, addr)
            except OSError as e:
                log.debug("SIP send to {peer} failed: {error}", peer="%s:%d" % addr, error=str(e))
                return
            if sock is not None:
                if len(self.udp_hosts) >= MAX_UDP_HOSTS:
                    self.udp_hosts.clear()
                self.udp_hosts.add(dest.host)

    def _connect(self, dest, data):
        """Open a connection to `dest` for `data` (a provider, or a LAN phone; TLS to providers only)."""
        key = (dest.transport, dest.host, dest.port)
        pending = self.connecting.get(key)
        if pending is not None:
            if len(pending.pending) < MAX_PENDING:
                pending.pending.append(data)
            return
        trunk = self.trunks.is_provider(dest.host)
        lan = self.office.is_lan_peer(dest.host)
        options = None
        if dest.transport == "TLS" and trunk is not None:
            options = self._client_tls(trunk, dest.host)
        if (trunk is None and not lan) or (dest.transport == "TLS" and options is None):
            log.debug("no {transport} connection to {peer}; message dropped",
                      transport=dest.transport, peer="%s:%d" % (dest.host, dest.port))
            return
        factory = SipClientFactory(self.core, self.streams[dest.transport], dest,
                                   lambda f: self.connecting.pop(key, None))
        factory.pending.append(data)
        self.connecting[key] = factory
        log.info("SIP: connecting over {transport} to {peer}", transport=dest.transport,
                 peer="%s:%d" % (dest.host, dest.port))
        if dest.transport == "TLS":
            mark(self.reactor.connectSSL(dest.host, dest.port, factory, options,
                                         timeout=CONNECT_TIMEOUT), SIP)
        else:
            mark(self.reactor.connectTCP(dest.host, dest.port, factory, timeout=CONNECT_TIMEOUT), SIP)

    def _client_tls(self, trunk, host):
        """TLS options checking a provider's certificate for its configured name, or None."""
        name = (trunk.outbound_proxy or trunk.registrar)[0]
        try:
            return ssl.optionsForClientTLS(name)
        except Exception as e:
            log.warn("trunk {trunk}: no TLS to {host} ({error})", trunk=trunk.name, host=host,
                     error=str(e))
            return None

    def _relay_session(self, inside_on_wan=False):
        """
        An RTP relay session for an outside call (LAN side, WAN side), or None
        without ports; both sides on the WAN address for a remote phone's call.
        """
        config = self.office.config
        wan = str(self.office.wan_ip) if self.office.wan_ip else "0.0.0.0"
        try:
            return RelaySession(self.reactor, wan if inside_on_wan else str(config.lan_ip), wan,
                                config.sip.rtp_ports)
        except (OSError, error.CannotListenError) as e:
            log.warn("no RTP relay for an outside call: {error}", error=str(e))
            return None

    # ------------------------------------------------------------ the base's hooks

    def disabled_reason(self, config):
        return None if config.sip.enabled else "phones disabled in [sip]"

    def bound_settings(self, config):
        """Only the switch and the ports decide what listens."""
        return (config.sip.enabled, config.sip.port, config.sip.tls_port)

    def build_listeners(self, config):
        port = config.sip.port
        proto = SipDatagram(self.core)

        def udp():
            self.udp = mark(self.reactor.listenUDP(port, proto), SIP)
            return self.udp
        listeners = [("udp %d" % port, port, udp),
                     ("tcp %d" % port, port,
                      lambda: mark(self.reactor.listenTCP(port, self.tcp_factory), SIP))]
        options = self.tls_options()
        if options is None:
            log.warn("SIP: no certificate, so no TLS on port {port}", port=config.sip.tls_port)
        else:
            tls_port = config.sip.tls_port
            listeners.append(("tls %d" % tls_port, tls_port, lambda: mark(self.reactor.listenSSL(
                tls_port, self.tls_factory, options), SIP)))
        return listeners

    def config_changed(self, event):
        # The other [sip] settings need nothing here: the parts read them
        # from the office at each use (see the class's docstring).
        self.checksync.config_changed(event)    # first: it notes the phones' contacts
        if event.touches("user", "phone"):
            self.registrations.forget_removed()
        if event.touches("trunk", "sip"):
            self.trunks.config_changed(event.old, event.new)

    # ------------------------------------------------------------ life

    def startService(self):
        self.voicemail.start()
        self.core.attendant.start()
        ListeningService.startService(self)
        self.trunks.start()

    def stopService(self):
        self.voicemail.stop()
        self.core.keepalive.stop()
        self.checksync.stop()
        self.core.outside.stop()
        self.core.sites.stop()
        unregistered = defer.maybeDeferred(self.trunks.stop)

        def close(_):
            closed = self.call_history.close()
            d = ListeningService.stopService(self)
            self.udp = None
            return defer.gatherResults([defer.maybeDeferred(lambda: d), defer.maybeDeferred(
                lambda: closed)], consumeErrors=True)
        # The trunks' unregistrations go out while the socket is still open.
        return unregistered.addBoth(close)


def build_core(office, clock, mail_store, listen_udp=None, throttle=None, phonebook=None,
               leases=None):
    """
    A SipCore with registrar, call router, voicemail user agent, message
    waiting and check-sync plugged in. `mail_store` (IMailStore) takes
    voicemail; None means this server has no mailboxes: unanswered calls get
    the phones' answer. `listen_udp` opens the RTP ports of voicemail calls;
    by default the clock's, which is then a reactor. `throttle` is the login
    throttle digest failures count in (the registrar's own by default).
    `phonebook` (IPhoneBook) holds the provisioned phones' own secrets, which
    the registrar accepts besides the users' passwords; `leases`
    (ILeaseTable) tells check-sync where a phone is.
    """
    core = SipCore(office, clock)
    core.registrar = Registrar(office, clock, throttle=throttle, phonebook=phonebook)
    core.ua = VoicemailAgent(core, office, clock, mail_store, listen_udp or clock.listenUDP)
    core.calls = CallRouter(core, office, clock, mail_store)
    core.sites = SiteCalls(core, office, clock)
    core.attendant = Attendant(core, office, clock)
    core.registrar.calls = core.calls
    core.mwi = MessageWaiting(core, office, clock, mail_store)
    core.keepalive = KeepAlive(core, core.registrar, clock)
    core.checksync = CheckSync(core, core.registrar, office, clock, phonebook, leases)
    return core
