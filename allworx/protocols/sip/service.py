# -*- test-case-name: allworx.tests.sip.test_service -*-
"""
The "sip" child: SIP over UDP and TCP on `[sip] port`, LAN side only.

`build_core` assembles the parts around the `SipCore` (core.py): the
registrar, the call router (calls.py), the voicemail user agent (ua.py) and
message waiting (mwi.py), the last three given the mail store they deliver
to and read from. Sockets stay thin: `SipDatagram` and `SipStream` only
frame bytes. `SipService` listens on the port, follows the office live
(re-binding only when the port or the switch changes) and hands
`MailboxChanged` to message waiting.
"""

import os

from twisted.internet import defer, error, protocol
from twisted.logger import Logger

from allworx.guards import PeerLimit
from allworx.office import MailboxChanged
from allworx.protocols.sip.attendant import Attendant
from allworx.protocols.sip.calls import CallRouter
from allworx.protocols.sip.core import ERRORS, Destination, SipCore
from allworx.protocols.sip.history import CallHistory
from allworx.protocols.sip.message import MAX_MESSAGE, header_end
from allworx.protocols.sip.mwi import MessageWaiting
from allworx.protocols.sip.outside import OutsideCalls
from allworx.protocols.sip.registrar import Registrar
from allworx.protocols.sip.trunk import TrunkManager
from allworx.protocols.sip.ua import VoicemailAgent
from allworx.protocols.voice.music import MusicSource
from allworx.protocols.voice.relay import RelaySession
from allworx.servicebase import ListeningService

log = Logger()

# ---------------------------------------------------------------- transports

class SipDatagram(protocol.DatagramProtocol):
    """UDP: each datagram is one message."""

    def __init__(self, core):
        self.core = core

    def datagramReceived(self, data, addr):
        if len(data) > MAX_MESSAGE:
            ERRORS.labels("oversized").inc()
            return
        self.core.receive(data, Destination("UDP", addr[0], addr[1]))


class SipStream(protocol.Protocol):
    """TCP: messages framed by the blank line and Content-Length."""

    def __init__(self, core, factory):
        self.core = core
        self.factory = factory
        self.buffer = b""

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.peer = (peer.host, peer.port)
        self.factory.connections[self.peer] = self

    def connectionLost(self, reason):
        self.factory.connections.pop(self.peer, None)
        self.factory.peers.release(self.admitted_host)

    def dataReceived(self, data):
        self.buffer += data
        while True:
            self.buffer = self.buffer.lstrip(b"\r\n")
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
            self.core.receive(message, Destination("TCP", self.peer[0], self.peer[1], self))


MAX_CONNECTIONS = 1000
MAX_CONNECTIONS_PER_HOST = 16


class SipStreamFactory(protocol.ServerFactory):
    """
    Makes SipStream connections and remembers them by peer: each host holds
    at most its share, under a cap in all that keeps room for other hosts (a
    connection beyond them is closed at once: SIP has nothing to say before
    a request).
    """

    def __init__(self, core, peer_limit=None):
        self.core = core
        self.connections = {}
        self.peers = peer_limit if peer_limit is not None else PeerLimit(
            MAX_CONNECTIONS_PER_HOST, cap=MAX_CONNECTIONS)

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


# ---------------------------------------------------------------- the service

class SipService(ListeningService):
    """
    The "sip" child: UDP and TCP on `[sip] port` when enabled. The parts read
    the other `[sip]` settings (voicemail_timeout, voicemail_number,
    rtp_ports) from the office at each use, so a change applies from the
    next call on without touching the sockets.
    """

    def __init__(self, office, mail_store, reactor=None, throttle=None):
        if reactor is None:
            from twisted.internet import reactor
        ListeningService.__init__(self, "sip", office)
        self.reactor = reactor
        self.mail_store = mail_store
        self.core = build_core(office, reactor, mail_store, throttle=throttle)
        self.registrations = self.core.registrar
        self.calls = self.core.calls
        self.voicemail = self.core.ua
        self.trunks = TrunkManager(self.core, office, reactor.resolve)
        self.call_history = CallHistory(
            os.path.join(office.config.system.data_dir, "calls.jsonl"), clock=reactor)
        self.core.outside = OutsideCalls(
            self.core, office, reactor, self.trunks, self._relay_session, self.call_history,
            music=lambda pt: MusicSource(pt, self.voicemail.voicemail_dir))
        self.core.calls.history = self.call_history
        self.udp = None
        self.tcp_factory = SipStreamFactory(self.core)
        self.core.connections_get = lambda host, port: self.tcp_factory.connections.get((host, port))
        self.core.send_raw = self._send_raw
        self.follow(MailboxChanged, self.core.mwi.mailbox_changed)

    def _send_raw(self, data, dest):
        if dest.transport == "TCP":
            conn = dest.conn or self.tcp_factory.connections.get((dest.host, dest.port))
            if conn is not None and conn.transport is not None:
                conn.transport.write(data)
            else:
                log.debug("no TCP connection to {peer}; message dropped", peer="%s:%d" % (dest.host, dest.port))
            return
        if self.udp is not None and self.udp in self.ports:
            try:
                self.udp.write(data, (dest.host, dest.port))
            except OSError as e:
                log.debug("SIP send to {peer} failed: {error}", peer="%s:%d" % (dest.host, dest.port), error=str(e))

    def _relay_session(self):
        """An RTP relay session for an outside call (LAN side, WAN side), or None without ports."""
        config = self.office.config
        wan = self.office.wan_ip
        try:
            return RelaySession(self.reactor, str(config.lan_ip), str(wan) if wan else "0.0.0.0",
                                config.sip.rtp_ports)
        except (OSError, error.CannotListenError) as e:
            log.warn("no RTP relay for an outside call: {error}", error=str(e))
            return None

    # ------------------------------------------------------------ the base's hooks

    def disabled_reason(self, config):
        return None if config.sip.enabled else "phones disabled in [sip]"

    def bound_settings(self, config):
        """Only the switch and the port decide what listens."""
        return (config.sip.enabled, config.sip.port)

    def build_listeners(self, config):
        port = config.sip.port
        proto = SipDatagram(self.core)

        def udp():
            self.udp = self.reactor.listenUDP(port, proto)
            return self.udp
        return [("udp %d" % port, port, udp),
                ("tcp %d" % port, port, lambda: self.reactor.listenTCP(port, self.tcp_factory))]

    def config_changed(self, event):
        # The other [sip] settings need nothing here: the parts read them
        # from the office at each use (see the class's docstring).
        if event.touches("user"):
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
        self.core.outside.stop()
        unregistered = defer.maybeDeferred(self.trunks.stop)

        def close(_):
            closed = self.call_history.close()
            d = ListeningService.stopService(self)
            self.udp = None
            return defer.gatherResults([defer.maybeDeferred(lambda: d), defer.maybeDeferred(
                lambda: closed)], consumeErrors=True)
        # The trunks' unregistrations go out while the socket is still open.
        return unregistered.addBoth(close)


def build_core(office, clock, mail_store, listen_udp=None, throttle=None):
    """
    A SipCore with registrar, call router, voicemail user agent and message
    waiting plugged in. `mail_store` (IMailStore) takes voicemail; None means
    this server has no mailboxes: unanswered calls get the phones' answer.
    `listen_udp` opens the RTP ports of voicemail calls; by default the
    clock's, which is then a reactor. `throttle` is the login throttle digest
    failures count in (the registrar's own by default).
    """
    core = SipCore(office, clock)
    core.registrar = Registrar(office, clock, throttle=throttle)
    core.ua = VoicemailAgent(core, office, clock, mail_store, listen_udp or clock.listenUDP)
    core.calls = CallRouter(core, office, clock, mail_store)
    core.attendant = Attendant(core, office, clock)
    core.registrar.calls = core.calls
    core.mwi = MessageWaiting(core, office, clock, mail_store)
    return core
