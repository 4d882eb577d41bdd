# -*- test-case-name: allworx.tests.mail.test_smtp -*-
"""
The SMTP server (port 25) and submission (587): a thin protocol around the
decisions in `policy.py` and the text rules in `smtpwire.py`.

Commands are handled strictly in order, so pipelined commands get their
replies in order even while a message is being written to disk: input is held
back until the 250 for the message has been sent, and that 250 is sent only
after the store says every copy is fsynced. STARTTLS throws away anything the
client pipelined after it; AUTH (PLAIN, LOGIN) is offered only under TLS and
is checked by the office's one twisted.cred checker, behind the shared login
throttle (after repeated failures the answer comes later; a locked login gets
454 at once, its password unchecked). Every peer, on the LAN too, holds at
most its share of connections, under a cap in all that keeps room for the
others (the shared PeerLimit); beyond them it gets 421.

It does not use twisted.mail.smtp.SMTP: that server hands every recipient's
copy to its own IMessage line by line, sends pipelined replies out of order
when delivery is asynchronous, and has no SIZE limit while receiving.
"""

import base64
import binascii
import email.utils
import itertools
import os

from prometheus_client import Counter
from twisted.cred import credentials, error as cred_error
from twisted.internet import defer, interfaces, protocol, tcp
from twisted.logger import Logger
from twisted.protocols import policies

from allworx.guards import PEER_FULL, LockedOut, LoginThrottle, PeerLimit, login_name, until_text
from allworx.protocols.mail import smtpwire
from allworx.protocols.mail.queue import QueueFull
from allworx.protocols.mail.policy import Client, recipient_verdict, sender_verdict
from allworx.protocols.mail.smtpwire import Reply
from allworx.protocols.mail.transaction import MailTransaction

log = Logger()

ACCEPTED = Counter("allworx_mail_accepted_total", "Messages accepted by SMTP (250 after DATA)", ["port"])
REFUSED = Counter("allworx_mail_refused_total", "SMTP commands refused, by reply code", ["code"])

MAX_ERRORS = 20
MAX_HELD = 64 * 1024      # pipelined input held while a reply is pending
MAX_AUTH_FAILURES = 3      # in one session, before it is closed
MAX_CONNECTIONS_PER_PEER = 20   # from one address
MAX_SESSIONS = 500              # in all
_sessions = itertools.count(1)


class SmtpServer(protocol.Protocol, policies.TimeoutMixin):
    """One SMTP conversation. The factory holds the office, the store and the checker."""

    timeOut = 300

    def __init__(self):
        self._buffer = bytearray()
        self._data = None       # bytearray while in DATA
        self._scan = 0
        self._too_big = False
        self._busy = False
        self._closed = False
        self._lost = False
        self._paused = False
        self._pending_login = None
        self.helo = None
        self.esmtp = False
        self.tls = False
        self.user = None
        self.errors = 0
        self.auth_failures = 0
        self.transaction = MailTransaction()

    # ------------------------------------------------------------ connection

    def connectionMade(self):
        f = self.factory
        self.callLater = f.reactor.callLater
        self.session = "S%d" % next(_sessions)
        peer = self.transport.getPeer()
        self.peer_ip = getattr(peer, "host", "?")
        self.from_lan = f.office.is_lan_peer(self.peer_ip)
        self.tls = interfaces.ISSLTransport.providedBy(self.transport)
        refusal = f.admit(self)
        if refusal is not None:
            log.warn("SMTP {session}: refused {peer}: {why}", session=self.session, peer=self.peer_ip,
                     why=f.peers.why(refusal, self.peer_ip))
            self._send(Reply(421, "4.7.0", "too many connections from your address, try again later"
                             if refusal == PEER_FULL else "too busy, try again later"))
            self.transport.loseConnection()
            self._closed = True
            return
        self.setTimeout(self.timeOut)
        self._send(Reply(220, "", "%s ESMTP allworx" % f.hostname))

    def connectionLost(self, reason):
        self._closed = self._lost = True
        self.setTimeout(None)
        self.factory.release(self)

    def timeoutConnection(self):
        self._send(Reply(421, "4.4.2", "%s idle too long, closing" % self.factory.hostname))
        self.transport.loseConnection()

    def _send(self, reply):
        if reply.code >= 400:
            REFUSED.labels(str(reply.code)).inc()
        write_now(self.transport, reply.line())

    def _reset(self):
        self.transaction.reset()

    @property
    def client(self):
        return Client(self.from_lan, self.user, self.factory.submission)

    # ------------------------------------------------------------ input

    def dataReceived(self, data):
        if self._closed:
            return
        self.resetTimeout()
        self._buffer += data
        self._process()
        if self._busy and len(self._buffer) > MAX_HELD and not self._paused:
            # A client that floods while its message is being written waits.
            self._paused = True
            self.transport.pauseProducing()

    def _process(self):
        while not self._busy and not self._closed:
            if self._data is not None:
                if not self._take_data():
                    return
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > smtpwire.MAX_COMMAND_LINE:
                    self._buffer.clear()
                    self._error(Reply(500, "5.5.2", "line too long"))
                return
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > smtpwire.MAX_COMMAND_LINE:
                self._error(Reply(500, "5.5.2", "line too long"))
                continue
            if self._pending_login is not None:
                self._auth_continue(line)
            else:
                self._command(line)

    def _error(self, reply):
        self._send(reply)
        self.errors += 1
        if self.errors >= MAX_ERRORS:
            self._send(Reply(421, "4.7.0", "too many errors, closing"))
            self.transport.loseConnection()
            self._closed = True

    def _command(self, line):
        try:
            verb, arg = smtpwire.split_command(line)
        except Reply as r:
            return self._error(r)
        handler = getattr(self, "do_" + verb, None)
        if handler is None:
            return self._error(Reply(502, "5.5.1", "command %s not implemented" % verb))
        try:
            result = handler(arg)
        except Reply as r:
            if r.code >= 500:
                return self._error(r)
            return self._send(r)
        if isinstance(result, defer.Deferred):
            self._wait(result)
        elif result is not None:
            self._send(result)

    def _wait(self, d):
        """Hold further input until `d` fires with the reply to send."""
        self._busy = True

        def done(reply):
            self._busy = False
            if reply is not None and not self._lost:
                self._send(reply)
            if self._paused and not self._lost:
                self._paused = False
                self.transport.resumeProducing()
            if not self._closed:
                self._process()
        d.addErrback(self._internal_error)
        d.addCallback(done)

    def _internal_error(self, failure):
        log.failure("SMTP session {session} failed", failure, session=self.session)
        return Reply(451, "4.3.0", "local error, try again later")

    # ------------------------------------------------------------ commands

    def do_HELO(self, arg):
        if not arg:
            raise Reply(501, "5.5.4", "HELO needs your host name")
        self.helo, self.esmtp = arg[:255], False
        self._reset()
        return Reply(250, "", self.factory.hostname)

    def do_EHLO(self, arg):
        if not arg:
            raise Reply(501, "5.5.4", "EHLO needs your host name")
        self.helo, self.esmtp = arg[:255], True
        self._reset()
        lines = [self.factory.hostname, "PIPELINING", "SIZE %d" % self.factory.max_size,
                 "8BITMIME", "ENHANCEDSTATUSCODES"]
        if self.factory.tls_options is not None and not self.tls:
            lines.append("STARTTLS")
        if self.tls and self.factory.checker is not None:
            lines.append("AUTH PLAIN LOGIN")
        return Reply(250, "", "\n".join(lines))

    def do_NOOP(self, arg):
        return Reply(250, "2.0.0", "OK")

    def do_RSET(self, arg):
        self._reset()
        return Reply(250, "2.0.0", "OK")

    def do_QUIT(self, arg):
        self._send(Reply(221, "2.0.0", "%s closing" % self.factory.hostname))
        self.transport.loseConnection()
        self._closed = True

    def do_VRFY(self, arg):
        return Reply(252, "2.5.2", "cannot verify, but will accept and try")

    def do_HELP(self, arg):
        return Reply(214, "2.0.0", "see RFC 5321")

    def do_STARTTLS(self, arg):
        if self.factory.tls_options is None:
            raise Reply(502, "5.5.1", "TLS is not available")
        if self.tls:
            raise Reply(503, "5.5.1", "TLS already active")
        # Commands pipelined after STARTTLS came in the clear: drop them.
        self._buffer.clear()
        self._send(Reply(220, "2.0.0", "ready to start TLS"))
        self.transport.startTLS(self.factory.tls_options)
        self.tls = True
        self.helo, self.esmtp, self.user = None, False, None
        self._reset()

    def do_AUTH(self, arg):
        if self.factory.checker is None:
            raise Reply(502, "5.5.1", "AUTH is not available")
        if not self.tls:
            raise Reply(538, "5.7.11", "encryption required: use STARTTLS first")
        if self.user:
            raise Reply(503, "5.5.1", "already authenticated")
        if self.transaction.open:
            raise Reply(503, "5.5.1", "AUTH is not allowed during a mail transaction")
        mechanism, _, initial = arg.partition(b" ")
        mechanism = mechanism.upper()
        if mechanism == b"PLAIN":
            if initial:
                return self._auth_plain(initial)
            self._pending_login = ("PLAIN",)
            return Reply(334, "", "")
        if mechanism == b"LOGIN":
            if initial:
                self._pending_login = ("LOGIN-PASS", _b64(initial))
                return Reply(334, "", "UGFzc3dvcmQ6")
            self._pending_login = ("LOGIN-USER",)
            return Reply(334, "", "VXNlcm5hbWU6")
        raise Reply(504, "5.5.4", "mechanism not supported: use PLAIN or LOGIN")

    def _auth_continue(self, line):
        state, self._pending_login = self._pending_login, None
        if line == b"*":
            return self._error(Reply(501, "5.0.0", "authentication cancelled"))
        try:
            if state[0] == "PLAIN":
                result = self._auth_plain(line)
            elif state[0] == "LOGIN-USER":
                self._pending_login = ("LOGIN-PASS", _b64(line))
                return self._send(Reply(334, "", "UGFzc3dvcmQ6"))
            else:
                result = self._check(state[1], _b64(line))
        except Reply as r:
            return self._error(r)
        self._wait(result)

    def _auth_plain(self, blob):
        parts = _b64(blob).split(b"\0")
        if len(parts) != 3:
            raise Reply(501, "5.5.2", "malformed AUTH PLAIN response")
        return self._check(parts[1], parts[2])

    def _check(self, username, password):
        throttle = self.factory.throttle
        who = login_name(self.factory.config, username)
        creds = credentials.UsernamePassword(username, password)
        d = throttle.attempt(self.peer_ip, who, lambda: self.factory.checker.requestAvatarId(creds))

        def ok(user):
            throttle.succeeded(self.peer_ip, who)
            self.user = user
            log.info("SMTP {session}: {user} authenticated from {peer}", session=self.session,
                     user=user, peer=self.peer_ip)
            return Reply(235, "2.7.0", "authentication successful")

        def refused(f):
            if f.check(LockedOut):
                until = f.value.until
                log.warn("SMTP {session}: AUTH as {user} from {peer} refused: {locked}",
                         session=self.session, user=who, peer=self.peer_ip, locked=until_text(until))
                self._count_auth_failure()
                return Reply(454, "4.7.0", "too many failed logins, %s" % until_text(until))
            f.trap(cred_error.UnauthorizedLogin, cred_error.UnhandledCredentials)
            throttle.failed(self.peer_ip, who)
            log.warn("SMTP {session}: failed AUTH from {peer}", session=self.session, peer=self.peer_ip)
            self._count_auth_failure()
            return Reply(535, "5.7.8", "authentication credentials invalid")
        return d.addCallbacks(ok, refused)

    def _count_auth_failure(self):
        self.auth_failures += 1
        if self.auth_failures >= MAX_AUTH_FAILURES:
            self.callLater(0, self.transport.loseConnection)
            self._closed = True

    def do_MAIL(self, arg):
        if self.helo is None:
            raise Reply(503, "5.5.1", "send HELO or EHLO first")
        if self.transaction.open:
            self.transaction.mail(None, None)       # the machine's 503
        path = smtpwire.parse_path(arg, b"FROM")
        if path.params and not self.esmtp:
            raise Reply(555, "5.5.4", "parameters need EHLO")
        smtpwire.check_mail_params(path.params, self.factory.max_size)
        refusal = sender_verdict(self.factory.config, self.client, path.address)
        if refusal is not None:
            raise Reply(refusal.code, refusal.status, refusal.text)
        self.transaction.mail(path.address, path.params.get("BODY"))
        return Reply(250, "2.1.0", "sender OK")

    def do_RCPT(self, arg):
        path = smtpwire.parse_path(arg, b"TO")
        if not self.transaction.open:
            self.transaction.rcpt(path.address)     # the machine's 503
        smtpwire.check_rcpt_params(path.params)
        if len(self.transaction.recipients) >= smtpwire.MAX_RECIPIENTS:
            return Reply(452, "4.5.3", "too many recipients, send the rest in another message")
        address = path.address
        if address.lower() == "postmaster":
            address = "postmaster@%s" % self.factory.config.system.domain
        refusal = recipient_verdict(self.factory.config, self.client, address)
        if refusal is not None:
            log.info("SMTP {session}: refused <{rcpt}> from {peer}: {code} {text}",
                     session=self.session, rcpt=address, peer=self.peer_ip,
                     code=refusal.code, text=refusal.text)
            raise Reply(refusal.code, refusal.status, refusal.text)
        inbound = self._inbound()
        if inbound is not None:
            return inbound.at_rcpt(self, self.transaction.sender, address).addCallback(
                self._recipient_checked, address)
        return self._recipient_checked(None, address)

    def _recipient_checked(self, refusal, address):
        if refusal is not None:
            return refusal
        self.transaction.rcpt(address)
        return Reply(250, "2.1.5", "recipient OK")

    def _inbound(self):
        """The checks on mail from the internet (inbound.py), or None: not for LAN or AUTH clients."""
        if self.user or self.from_lan:
            return None
        return self.factory.inbound

    def do_DATA(self, arg):
        self.transaction.data()
        self._data = bytearray(b"\r\n")
        self._scan = 0
        self._too_big = False
        return Reply(354, "", "end data with <CR><LF>.<CR><LF>")

    # ------------------------------------------------------------ the message

    def _take_data(self):
        """Move input into the message; True when the message ended."""
        chunk = self._buffer
        self._buffer = bytearray()
        self._data += chunk
        end = smtpwire.find_end_of_data(self._data, self._scan)
        if end < 0:
            self._scan = max(0, len(self._data) - 4)
            if len(self._data) > self.factory.max_size + 4096:
                # Keep reading to the end, but stop keeping what is read.
                self._too_big = True
                tail = self._data[-4:]
                self._data = bytearray(tail)
                self._scan = 0
            return False
        rest = self._data[end + len(smtpwire.END_OF_DATA):]
        raw = self._data[:end + 2]
        self._data = None
        self._buffer = rest + self._buffer
        self._finish(raw)
        return True

    def _finish(self, raw):
        [(sender, recipients)] = self.transaction.message_ended()
        if self._too_big or len(raw) - 2 > self.factory.max_size:
            return self._send(Reply(552, "5.3.4", "message exceeds the fixed limit of %d bytes"
                                    % self.factory.max_size))
        message = smtpwire.drop_server_headers(smtpwire.unstuff(raw))
        if smtpwire.has_long_line(message):
            return self._send(Reply(554, "5.6.0", "message has a line longer than %d characters"
                                    % smtpwire.MAX_TEXT_LINE))
        if smtpwire.hop_count(message) >= smtpwire.MAX_HOPS:
            log.warn("SMTP {session}: refused a looping message from <{sender}> ({hops} hops)",
                     session=self.session, sender=sender, hops=smtpwire.MAX_HOPS)
            return self._send(Reply(554, "5.4.6", "too many hops: mail forwarding loop"))
        inbound = self._inbound()
        if inbound is None:
            return self._wait(self._store(sender, recipients, message))
        d = inbound.at_data(self, sender, recipients, message)
        self._wait(d.addCallback(lambda outcome: outcome.reply or self._store(
            sender, recipients, outcome.message, outcome.top, outcome.junk)))

    def _store(self, sender, recipients, message, top=b"", junk=()):
        """Deliver the message (`top` above our Received header); a Deferred of the Reply."""
        f = self.factory
        protocol_name = ("ESMTP" if self.esmtp else "SMTP") + ("S" if self.tls else "") + \
            ("A" if self.user else "")
        date = email.utils.formatdate(f.reactor.seconds(), localtime=True)
        header = smtpwire.received_header(
            self.helo, self.peer_ip, f.hostname, protocol_name, recipients, date, self.session)
        if self.user or self.from_lan:
            # Like Postfix for its own clients: a message without Date or
            # Message-ID gets them here, so replies and threads work.
            for name in smtpwire.missing_origin_headers(message):
                if name == b"date":
                    header += b"Date: " + date.encode() + b"\n"
                else:
                    header += b"Message-ID: <%d.%s@%s>\n" % (
                        int(f.reactor.seconds() * 1000), os.urandom(6).hex().encode(),
                        f.hostname.encode())
        if junk:
            d = f.deliver(recipients, top + header + message, sender, junk=junk)
        else:
            d = f.deliver(recipients, top + header + message, sender)

        def stored(result):
            ACCEPTED.labels(f.label).inc()
            log.info("SMTP {session}: accepted {id} from <{sender}> for {recipients} ({size} bytes)",
                     session=self.session, id=result.id, sender=sender,
                     recipients=", ".join(recipients), size=len(message))
            return Reply(250, "2.0.0", "OK: queued as %s" % result.id)

        def full(failure):
            failure.trap(QueueFull)
            log.warn("SMTP {session}: refused a message: {error}", session=self.session,
                     error=str(failure.value))
            return Reply(452, "4.3.1", "outbound queue full, try again later")
        return d.addCallbacks(stored, full)


# Transports whose replies may go straight to the socket: a plain TCP
# connection, exactly (its TLS subclasses and wrappers are written the usual way).
DIRECT_TRANSPORTS = (tcp.Server,)


def write_now(transport, data):
    """
    Send `data` at once when the transport is a plain TCP connection with
    nothing queued: the reply leaves in this reactor turn, without the
    writer registration, the epoll changes on and off and the next turn's
    write that `transport.write` costs (about a tenth of the reactor's time
    per message under smtp-source, 7 replies a message). Whatever the socket
    does not take, and every reply while anything is queued or under TLS,
    goes through `transport.write`, so the order of replies never changes.
    """
    if type(transport) in DIRECT_TRANSPORTS and not transport.TLS and transport.connected \
            and not transport.disconnecting and not transport.dataBuffer \
            and not transport._tempDataBuffer:
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0        # would block, or the peer is gone: twisted finds out and reports it
        if sent >= len(data):
            return
        data = data[sent:]
    transport.write(data)


def _b64(data):
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Reply(501, "5.5.2", "cannot decode base64")


class SmtpFactory(protocol.ServerFactory):
    """
    Builds SmtpServer sessions for one port: `submission` asks for AUTH before
    MAIL. `deliver(recipients, message, sender, junk=())` is the store's
    deliver; `inbound` (inbound.InboundChecks, or None) checks mail from the
    internet. The
    guards (`throttle`, a LoginThrottle; `peer_limit`, a PeerLimit: each
    peer's share and the cap in all) are its own unless given, to share them
    with the other ports.
    """

    protocol = SmtpServer

    def __init__(self, office, deliver, reactor, checker=None, tls_options=None,
                 submission=False, label="smtp", throttle=None, peer_limit=None, inbound=None):
        self.office = office
        self.inbound = inbound
        self.deliver = deliver
        self.reactor = reactor
        self.checker = checker
        self.tls_options = tls_options
        self.submission = submission
        self.label = label
        self.throttle = throttle if throttle is not None else LoginThrottle(reactor)
        self.peers = peer_limit if peer_limit is not None else PeerLimit(
            MAX_CONNECTIONS_PER_PEER, cap=MAX_SESSIONS)

    @property
    def config(self):
        return self.office.config

    @property
    def hostname(self):
        c = self.office.config.system
        return "%s.%s" % (c.hostname, c.domain)

    @property
    def max_size(self):
        return self.office.config.mail.max_message_size

    @property
    def max_per_client(self):
        return self.peers.limit

    def admit(self, session):
        """
        Count a new session: None, or why it is refused (PEER_FULL: its
        client, wherever it is, holds its whole share; SERVER_BUSY: the cap).
        """
        refusal = self.peers.refusal(session.peer_ip)
        if refusal is None:
            self.peers.admit(session.peer_ip)
            session._peer_counted = True
        return refusal

    def release(self, session):
        if getattr(session, "_peer_counted", False):
            session._peer_counted = False
            self.peers.release(session.peer_ip)
