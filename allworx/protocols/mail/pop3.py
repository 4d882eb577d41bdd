# -*- test-case-name: allworx.tests.mail.test_pop3 -*-
"""
The POP3 server (RFC 1939, CAPA RFC 2449, STLS RFC 2595) on `[pop3] port`
and POP3S on `pop3s_port`, over the store: twisted.mail.pop3's protocol with
the office's checker, plus what it lacks here:

- one session per mailbox at a time (a second login gets `-ERR [IN-USE]`),
  the lock taken only once the password was right and released when its
  session ends, whatever its state (a login that completes after its
  connection is gone releases it at once; a lock whose session is gone is
  released by the next login);
- peers on the WAN are refused unless `[pop3] wan = yes`;
- STLS, and USER/PASS only under TLS for WAN peers (LAN clients may log in
  in the clear, as the office's PCs always could);
- UIDs are the Maildir names, so they stay the same across sessions and
  "leave a copy on the server" works; RETR marks a message seen;
- dot-stuffing that stays right across the chunks a message is sent in;
- the shared guards: a share of connections per peer address and a cap in
  all (`-ERR [SYS/TEMP]` beyond them), and the login throttle on USER/PASS
  and AUTH (after repeated failures the answer comes later; a locked login
  gets `-ERR [AUTH] ... locked until ...` at once, its password unchecked).
  Commands sent while a login is being checked wait for its answer.

APOP is not offered (no challenge in the greeting): it needs each user's
password in the clear on the server, and the office stores only hashes.
"""

import base64
import binascii
import inspect

from prometheus_client import Counter
from twisted.cred import credentials, error as cred_error, portal as cred_portal
from twisted.internet import interfaces, protocol
from twisted.logger import Logger
from twisted.mail import pop3
from zope.interface import implementer

from allworx.guards import PEER_FULL, LockedOut, LoginThrottle, PeerLimit, login_name, until_text
from allworx.servicebase import PortsService

log = Logger()

MAX_CONNECTIONS_PER_PEER = 20
MAX_CONNECTIONS = 500       # in all (the mail service shares one limit over its ports)

POP3_LOGINS = Counter("allworx_mail_pop3_logins_total", "POP3 logins, by result", ["result"])


class MailboxInUse(cred_error.LoginDenied):
    """Another POP3 session holds this mailbox."""


class _Refused(Exception):
    """A command refused with `-ERR` and this reason (bad arguments, no such message)."""


def _printable(command):
    """A command name for the log, whatever bytes it was."""
    return command[:16].decode("ascii", "backslashreplace")


@implementer(pop3.IMailbox)
class MailboxView:
    """
    A POP3 session's view of one mailbox: the messages present at login, in
    order; deletions happen at QUIT (`sync`), as RFC 1939 says. The store's
    listing is shared, not copied: this view keeps its first `count`.
    """

    def __init__(self, store, user):
        self.store = store
        self.user = user
        listing = store.listing(user)
        self._uids = listing.uids
        self._sizes = listing.sizes
        self.count = len(listing.uids)
        self.total = listing.total
        self.deleted = set()

    def _check(self, index):
        if not 0 <= index < self.count:
            raise ValueError("no message %d" % (index + 1))

    def stat(self):
        """(messages, octets) as STAT gives them: the deleted count, as size 0."""
        return self.count, self.total - sum(self._sizes[i] for i in self.deleted)

    def listMessages(self, index=None):
        if index is None:
            sizes = self._sizes[:self.count]
            for i in self.deleted:
                sizes[i] = 0
            return sizes
        self._check(index)
        return 0 if index in self.deleted else self._sizes[index]

    def getMessage(self, index):
        self._check(index)
        if index in self.deleted:
            raise ValueError("message %d is deleted" % (index + 1))
        try:
            return self.store.open_message(self.user, self._uids[index])
        except KeyError:
            raise ValueError("message %d is gone" % (index + 1))

    def getUidl(self, index):
        self._check(index)
        return self._uids[index].encode("ascii")

    def deleteMessage(self, index):
        self._check(index)
        self.deleted.add(index)

    def undeleteMessages(self):
        self.deleted.clear()

    def retrieved(self, index):
        """RETR sent the message: it counts as read."""
        try:
            self.store.mark_seen(self.user, self._uids[index])
        except (KeyError, OSError, IndexError):
            pass

    def sync(self):
        for index in sorted(self.deleted):
            try:
                self.store.delete_message(self.user, self._uids[index])
            except KeyError:
                pass
        log.info("pop3: {user} deleted {count} message(s)", user=self.user, count=len(self.deleted))
        self.deleted.clear()


@implementer(cred_portal.IRealm)
class MailboxRealm:
    """
    Gives each user a MailboxView, one live session at a time: the `mind`
    is the session (a Pop3Server), and a lock whose session is `gone` is
    released when the next login asks.
    """

    def __init__(self, store):
        self.store = store
        self.holders = {}       # user -> the session holding the mailbox

    @property
    def in_use(self):
        return set(self.holders)

    def requestAvatar(self, avatarId, mind, *interfaces_):
        if pop3.IMailbox not in interfaces_:
            raise NotImplementedError("only POP3 mailboxes here")
        user = avatarId.decode() if isinstance(avatarId, bytes) else avatarId
        holder = self.holders.get(user)
        if holder is not None:
            if not getattr(holder, "gone", False):
                raise MailboxInUse("mailbox is in use by another session")
            log.warn("pop3: the lock on {user}'s mailbox outlived its session: released", user=user)
        view = MailboxView(self.store, user)
        token = mind if mind is not None else object()
        self.holders[user] = token

        def logout():
            if self.holders.get(user) is token:
                del self.holders[user]
        return pop3.IMailbox, view, logout


class Pop3Server(pop3.POP3):
    """twisted.mail's POP3 with the office's rules (see the module docstring)."""

    AUTH_CMDS = pop3.POP3.AUTH_CMDS + [b"STLS"]
    _admitted = False
    _login = None       # the name the login being checked is throttled under
    gone = False        # the connection has ended

    def connectionMade(self):
        f = self.factory
        self.callLater = f.reactor.callLater
        peer = getattr(self.transport.getPeer(), "host", "?")
        self.peer_ip = peer
        self.from_lan = f.office.is_lan_peer(peer)
        self.tls = interfaces.ISSLTransport.providedBy(self.transport)
        self._last = b"\n"
        self.magic = b""
        refusal = f.peers.refusal(peer)
        if refusal is not None:
            log.warn("pop3: refused {peer}: {why}", peer=peer, why=f.peers.why(refusal, peer))
            self.failResponse(b"[SYS/TEMP] too many connections from your address"
                              if refusal == PEER_FULL else b"[SYS/TEMP] too busy, try again later")
            self.transport.loseConnection()
            return
        f.peers.admit(peer)
        self._admitted = True
        if not self.from_lan and not f.office.config.pop3.wan:
            log.info("pop3: refused {peer}: not served on the WAN", peer=peer)
            self.failResponse(b"POP3 is not offered on the WAN here")
            self.transport.loseConnection()
            return
        self.successResponse(b"allworx POP3 ready")
        self.setTimeout(self.timeOut)

    def connectionLost(self, reason):
        self.gone = True
        if self._admitted:
            self._admitted = False
            self.factory.peers.release(self.peer_ip)
        pop3.POP3.connectionLost(self, reason)

    def processCommand(self, command, *args):
        # One place for every command line, those typed and those queued
        # behind a long operation (twisted's _unblock calls this, outside
        # state_COMMAND): a malformed one gets -ERR and one log line, never a
        # traceback, and never stops the commands queued after it.
        if self.blocked is not None:
            self.blocked.append((command, args))
            return None
        name = command.upper()
        try:
            return self._dispatch(name, args)
        except _Refused as e:
            return self._refuse(name, e.args[0])
        except pop3.POP3Error as e:
            return self._refuse(name, e.args[0] if e.args else b"error")
        except Exception as e:
            where = e.__traceback__
            while where.tb_next is not None:
                where = where.tb_next
            log.warn("pop3: {command} from {peer} failed: {kind}: {why} ({file}:{line})",
                     command=_printable(name), peer=self.peer_ip, kind=type(e).__name__, why=e,
                     file=where.tb_frame.f_code.co_filename.rsplit("/", 1)[-1], line=where.tb_lineno)
            self.failResponse(b"server error")
            return None

    def _dispatch(self, name, args):
        if not (name.isalpha() and len(name) <= 8):
            raise _Refused("unknown command")
        if not self.mbox and name not in self.AUTH_CMDS:
            raise _Refused("log in first (USER and PASS)")
        handler = getattr(self, "do_" + name.decode("ascii"), None)
        if handler is None:
            raise _Refused("unknown command")
        try:
            inspect.signature(handler).bind(*args)
        except TypeError:
            raise _Refused("wrong number of arguments for %s" % name.decode("ascii"))
        return handler(*args)

    def _refuse(self, name, reason):
        """-ERR with a short reason, and one line in the log."""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        reason = reason[:80]
        log.info("pop3: {command} from {peer} refused: {reason}", command=_printable(name),
                 peer=self.peer_ip, reason=reason)
        self.failResponse(reason.encode("utf-8"))

    def lineLengthExceeded(self, line):
        log.info("pop3: line of over {limit} bytes from {peer}, hanging up", limit=self.MAX_LENGTH,
                 peer=self.peer_ip)
        self.failResponse(b"line too long")
        self.transport.loseConnection()

    def _message_index(self, number):
        """The 0-based index of the message a message-number argument names."""
        index = int(number) - 1 if number.isdigit() and len(number) <= 9 else -1
        if not 0 <= index < self.mbox.count:
            raise _Refused("no such message")
        if index in self.mbox.deleted:
            raise _Refused("message %d is deleted" % (index + 1))
        return index

    def listCapabilities(self):
        caps = [b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING", b"IMPLEMENTATION allworx"]
        if not self.mbox:
            caps.append(b"USER")
            if self.factory.tls_options is not None and not self.tls:
                caps.append(b"STLS")
        return caps

    def do_STLS(self):
        if self.mbox:
            return self.failResponse(b"STLS only before login")
        if self.factory.tls_options is None or self.tls:
            return self.failResponse(b"STLS not available")
        self.successResponse(b"begin TLS negotiation")
        self.transport.startTLS(self.factory.tls_options)
        self.tls = True

    def do_APOP(self, user, digest):
        self.failResponse(b"APOP is not offered: use USER and PASS (over STLS)")

    def do_USER(self, user):
        if self.mbox:
            return self.failResponse(b"already logged in")
        return pop3.POP3.do_USER(self, user)

    def do_PASS(self, password, *words):
        if self.mbox:
            return self.failResponse(b"already logged in")
        if not self.from_lan and not self.tls:
            self._userIs = None
            return self.failResponse(b"[AUTH] use STLS before sending a password")
        if self._userIs is None:
            return self.failResponse(b"USER required before PASS")
        user, self._userIs = self._userIs, None
        self._log_in(user, credentials.UsernamePassword(user, b" ".join((password,) + words)))

    def do_AUTH(self, args=None):
        if self.mbox:
            return self.failResponse(b"already logged in")
        return pop3.POP3.do_AUTH(self, args)

    def state_AUTH(self, line):
        # The client's answer: "name response", base64.
        self.state = "COMMAND"
        try:
            parts = base64.b64decode(line).split(None, 1)
        except binascii.Error:
            return self.failResponse(b"Invalid BASE64 encoding")
        if len(parts) != 2:
            return self.failResponse(b"Invalid AUTH response")
        self._auth.username, self._auth.response = parts
        self._log_in(parts[0], self._auth)

    def _log_in(self, user, creds):
        """
        Check `creds` through the login throttle (at once, later, or refused
        unchecked), with this session as the realm's mind; commands sent
        meanwhile wait for the answer.
        """
        self._login = login_name(self.factory.office.config, user)
        self.blocked = []
        d = self.factory.throttle.attempt(self.peer_ip, self._login,
                                          lambda: self.portal.login(creds, self, pop3.IMailbox))
        d.addCallbacks(self._cbMailbox, self._ebMailbox, callbackArgs=(user,))
        d.addErrback(self._ebUnexpected)
        d.addBoth(self._unblock)

    def _cbMailbox(self, result, user):
        self.factory.throttle.succeeded(self.peer_ip, self._login)
        if self.gone:
            # The client left while its password was being checked: no
            # session holds the mailbox.
            result[2]()
            return
        POP3_LOGINS.labels("ok").inc()
        log.info("pop3: {user} logged in from {peer}{tls}", peer=self.peer_ip,
                 user=user.decode("utf-8", "replace") if isinstance(user, bytes) else user,
                 tls=" over TLS" if self.tls else "")
        return pop3.POP3._cbMailbox(self, result, user)

    def _ebMailbox(self, failure):
        if failure.check(LockedOut):
            until = failure.value.until
            POP3_LOGINS.labels("locked").inc()
            log.info("pop3: login as {user} from {peer} refused: {locked}", user=self._login,
                     peer=self.peer_ip, locked=until_text(until))
            return self.failResponse(("[AUTH] too many failed logins, %s" % until_text(until)).encode())
        if failure.check(MailboxInUse):
            self.factory.throttle.succeeded(self.peer_ip, self._login)  # the password was right
            POP3_LOGINS.labels("in-use").inc()
            return self.failResponse(b"[IN-USE] mailbox is in use by another session")
        POP3_LOGINS.labels("refused").inc()
        log.info("pop3: failed login from {peer}", peer=self.peer_ip)
        if failure.check(cred_error.LoginDenied, cred_error.LoginFailed):
            self.factory.throttle.failed(self.peer_ip, self._login)
            return self.failResponse(b"[AUTH] wrong user name or password")
        return failure

    def do_RETR(self, i):
        index = self._message_index(i)
        self._last = b"\n"
        d = pop3.POP3.do_RETR(self, b"%d" % (index + 1))
        d.addCallback(lambda r: (self.mbox.retrieved(index), r)[1])
        return d

    def do_TOP(self, i, size):
        index = self._message_index(i)
        if not size.isdigit():
            raise _Refused("bad line count")
        self._last = b"\n"
        lines = size if len(size) <= 9 else b"999999999"    # more lines than any message has
        return pop3.POP3.do_TOP(self, b"%d" % (index + 1), lines)

    def do_DELE(self, i):
        self.mbox.deleteMessage(self._message_index(i))
        self.successResponse()

    def do_STAT(self):
        # The view keeps the count and the total: no pass over every message
        # (twisted's STAT walks the sizes one reactor step at a time).
        count, octets = self.mbox.stat()
        self.successResponse(b"%d %d" % (count, octets))

    def do_LIST(self, i=None):
        if i is not None:
            i = b"%d" % (self._message_index(i) + 1)
        return pop3.POP3.do_LIST(self, i)

    def do_UIDL(self, i=None):
        if i is not None:
            i = b"%d" % (self._message_index(i) + 1)
        return pop3.POP3.do_UIDL(self, i)

    def transformChunk(self, chunk):
        if not chunk:
            return chunk
        out = chunk.replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n..")
        if chunk[:1] == b"." and self._last == b"\n":
            out = b"." + out
        self._last = chunk[-1:]
        return out


class Pop3Factory(protocol.ServerFactory):
    """
    POP3 sessions over one portal (the store's realm and the office's
    checker). The guards (`throttle`, a LoginThrottle; `peer_limit`, a
    PeerLimit) are its own unless given, to share them with other services.
    """

    protocol = Pop3Server
    noisy = False       # the protocol logs its own events

    def __init__(self, office, store, checker, reactor, tls_options=None, throttle=None,
                 peer_limit=None):
        self.office = office
        self.reactor = reactor
        self.tls_options = tls_options
        self.throttle = throttle if throttle is not None else LoginThrottle(reactor)
        self.peers = peer_limit if peer_limit is not None else PeerLimit(
            MAX_CONNECTIONS_PER_PEER, cap=MAX_CONNECTIONS)
        self.realm = MailboxRealm(store)
        self.portal = cred_portal.Portal(self.realm, [checker])

    def buildProtocol(self, addr):
        p = protocol.ServerFactory.buildProtocol(self, addr)
        p.portal = self.portal
        return p


def make_pop3_service(mail):
    """The "pop3" child of the mail service: `[pop3] port` and, with TLS, `pop3s_port`."""
    factory = Pop3Factory(mail.office, mail.store, mail.checker, mail.reactor,
                          throttle=mail.throttle, peer_limit=mail.peers)

    def spec(config):
        if not config.pop3.enabled:
            return None
        factory.tls_options = mail.tls_options
        out = [("pop3 tcp/%d" % config.pop3.port, config.pop3.port, factory, None)]
        if mail.tls_options is not None:
            out.append(("pop3s tcp/%d" % config.pop3.pop3s_port, config.pop3.pop3s_port,
                        factory, mail.tls_options))
        return tuple(out)

    svc = PortsService("pop3", mail.office, mail.reactor, spec, "turned off in [pop3]")
    svc.factory = factory
    return svc
