# -*- test-case-name: allworx.tests.mail.test_imap -*-
"""
The IMAP server (RFC 3501, SPEC 17) on `[imap] port` (STARTTLS) and
`imaps_port` (TLS from the start): twisted.mail.imap4's protocol over the
folders of imapstore.py, with what it lacks here:

- IDLE (RFC 2177) that reports changes while idling; UIDPLUS (RFC 4315:
  APPENDUID, COPYUID, UID EXPUNGE), MOVE (RFC 6851), NAMESPACE (one personal
  namespace, "" and "/"), SPECIAL-USE (RFC 6154) in LIST and with the
  extended LIST's selection and RETURN options, UNSELECT, APPENDLIMIT;
- every session of a folder is told of the others' changes and of
  deliveries, POP3 and the phone (through the store): EXISTS and FETCH
  FLAGS with any command's answer, EXPUNGE where RFC 3501 allows it (not
  during FETCH, STORE or SEARCH), and at once while idling;
- no login of any kind before TLS (LOGINDISABLED), through the mail
  service's checker and shared login throttle; AUTHENTICATE PLAIN;
- bounds: lines, literals (APPEND up to `[mail] max_message_size`,
  `NO [TOOBIG]`), nesting, sessions per user, the per-address limit; an
  unknown command or one in the wrong state gets BAD, never a traceback;
- peers on the WAN refused unless `[imap] wan = yes`;
- a message fetched without PEEK becomes \\Seen (a voicemail so read is heard).
"""

import base64
import binascii
import re

from prometheus_client import Counter
from twisted.cred import credentials, error as cred_error, portal as cred_portal
from twisted.internet import defer, interfaces, protocol
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

from allworx.guards import PEER_FULL, LockedOut, LoginThrottle, PeerLimit, login_name, until_text
from allworx.protocols.mail import imapsearch
from allworx.protocols.mail.imapfetch import FetchWriter
from allworx.protocols.mail.imapkeywords import flag_lines
from allworx.protocols.mail.imapmessage import SelectedMailbox
from allworx.protocols.mail.imapfolders import FolderCommands
from allworx.protocols.mail.imapstore import (SYSTEM_FLAGS, FolderError, Mailboxes, flags_of,
                                              letters_of)
from allworx.protocols.mail.imapview import View
from allworx.servicebase import PortsService

log = Logger()

MAX_PER_PEER = 50           # IMAP clients keep several connections each
MAX_CONNECTIONS = 2000
MAX_SESSIONS_PER_USER = 30
MAX_LINE = 64 * 1024
MAX_LITERAL = 64 * 1024     # any literal but APPEND's message
MAX_DEPTH = 16              # parentheses

IMAP_LOGINS = Counter("allworx_mail_imap_logins_total", "IMAP logins, by result", ["result"])

_LITERAL = re.compile(rb"\{(\d{1,20})\}$")
_ASYNC_COMMANDS = {b"APPEND", b"COPY", b"MOVE", b"LOGIN"}


class TooManySessions(cred_error.LoginDenied):
    """The user has as many IMAP sessions as allowed."""


def _depth(line):
    depth = deepest = 0
    for c in line:
        if c == 0x28:
            depth += 1
            deepest = max(deepest, depth)
        elif c == 0x29:
            depth -= 1
    return deepest



@implementer(cred_portal.IRealm)
class ImapRealm:
    """Gives a user name; counts each user's sessions."""

    def __init__(self):
        self.sessions = {}

    def requestAvatar(self, avatarId, mind, *interfaces_):
        user = avatarId.decode() if isinstance(avatarId, bytes) else avatarId
        if self.sessions.get(user, 0) >= MAX_SESSIONS_PER_USER:
            raise TooManySessions("too many sessions")
        self.sessions[user] = self.sessions.get(user, 0) + 1

        def logout():
            left = self.sessions.get(user, 1) - 1
            if left > 0:
                self.sessions[user] = left
            else:
                self.sessions.pop(user, None)
        return imap4.IAccount, user, logout


class ImapServer(FolderCommands, imap4.IMAP4Server):
    """twisted's IMAP4Server with the office's rules (see the module docstring)."""

    IDENT = b"allworx IMAP4rev1 ready"
    MAX_LENGTH = MAX_LINE
    _literalStringLimit = MAX_LITERAL
    user = None
    view = None
    idling = None
    gone = False
    _admitted = False
    _expunges_ok = True
    _fetch_timeout = None

    # ------------------------------------------------------------ connection

    def connectionMade(self):
        f = self.factory
        self.ctx = f.tls_options
        peer = getattr(self.transport.getPeer(), "host", "?")
        self.peer_ip = peer
        refusal = f.peers.refusal(peer)
        if refusal is not None:
            log.warn("imap: refused {peer}: {why}", peer=peer, why=f.peers.why(refusal, peer))
            self.sendLine(b"* BYE [UNAVAILABLE] too many connections"
                          + (b" from your address" if refusal == PEER_FULL else b""))
            self.transport.loseConnection()
            return
        f.peers.admit(peer)
        self._admitted = True
        if not f.office.is_lan_peer(peer) and not f.office.config.imap.wan:
            log.info("imap: refused {peer}: not served on the WAN", peer=peer)
            self.sendLine(b"* BYE IMAP is not offered on the WAN here")
            self.transport.loseConnection()
            return
        imap4.IMAP4Server.connectionMade(self)

    def connectionLost(self, reason):
        self.gone = True
        self._leave()
        if self._admitted:
            self._admitted = False
            self.factory.peers.release(self.peer_ip)
        imap4.IMAP4Server.connectionLost(self, reason)

    def timeoutConnection(self):
        self._leave()
        self.sendLine(b"* BYE autologout; idle for too long")
        self.transport.loseConnection()
        self.state = "timeout"

    def secure(self):
        return self.startedTLS or interfaces.ISSLTransport.providedBy(self.transport)

    def capabilities(self):
        cap = {}
        if not self.secure():
            if self.ctx is not None and self.canStartTLS:
                cap[b"STARTTLS"] = None
            cap[b"LOGINDISABLED"] = None
        elif self.state == "unauth":
            cap[b"AUTH"] = [b"PLAIN"]
        for name in (b"IDLE", b"NAMESPACE", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"UNSELECT",
                     b"CHILDREN"):
            cap[name] = None
        cap[b"APPENDLIMIT"] = [b"%d" % self.factory.office.config.mail.max_message_size]
        return cap

    # ------------------------------------------------------------ lines

    def lineLengthExceeded(self, line):
        log.info("imap: line of over {limit} bytes from {peer}, hanging up", limit=self.MAX_LENGTH,
                 peer=self.peer_ip)
        self.sendLine(b"* BYE line too long")
        self.transport.loseConnection()

    def parse_command(self, line):
        words = line.split(None, 3)
        if len(words) < 2:
            return imap4.IMAP4Server.parse_command(self, line)
        tag, command = words[0], words[1].upper()
        if not command.isalpha() or not command.isascii() or len(command) > 20:
            return self.sendBadResponse(tag, b"unknown command")
        if command == b"UID" and len(words) > 2:
            command = words[2].upper()
        self._expunges_ok = command not in (b"FETCH", b"STORE", b"SEARCH")
        if _depth(line) > MAX_DEPTH:
            return self.sendBadResponse(tag, b"too deeply nested")
        literal = _LITERAL.search(line)
        if literal is not None:
            size = int(literal.group(1))
            limit = self.factory.office.config.mail.max_message_size
            if command == b"APPEND" and size > limit:
                return self.sendNegativeResponse(tag, b"[TOOBIG] message over %d octets" % limit)
            if command != b"APPEND" and size > MAX_LITERAL:
                return self.sendBadResponse(tag, b"literal over %d octets" % MAX_LITERAL)
        if command == b"SEARCH":
            return imapsearch.command(self, tag, line, uid=words[1].upper() == b"UID")
        return imap4.IMAP4Server.parse_command(self, line)

    def _fileLiteral(self, size):
        if size > self.factory.office.config.mail.max_message_size:
            raise imap4.IllegalClientResponse("message too big")
        return imap4.IMAP4Server._fileLiteral(self, size)

    def _bad_input(self, failure, tag):
        """A command's arguments could not be understood (or made twisted's code fail): BAD."""
        if failure.check(imap4.IllegalOperation, imap4.IllegalMailboxEncoding):
            return self.sendNegativeResponse(tag, str(failure.value).encode("utf-8", "replace")[:200])
        if failure.check(imap4.IllegalClientResponse):
            return self.sendBadResponse(tag, str(failure.value).encode("utf-8", "replace")[:200])
        log.info("imap: {peer} sent a command not understood: {why}", peer=self.peer_ip,
                 why=str(failure.value)[:200])
        self.sendBadResponse(tag, b"command not understood")

    # twisted's own error paths for argument parsing and SEARCH log
    # tracebacks for what is only bad input; these answer BAD instead.
    _IMAP4Server__ebDispatch = _bad_input
    _IMAP4Server__ebSearch = _bad_input

    def _respond(self, state, tag, message):
        if tag and state in (b"OK", b"NO", b"BAD") and self.view is not None:
            for line in self.view.changes(self._expunges_ok):
                imap4.IMAP4Server._respond(self, line, None, None)
        imap4.IMAP4Server._respond(self, state, tag, message)

    def mailbox_changed(self):
        """The selected folder changed (told by the view): report it now if idling."""
        if self.idling is not None and self.view is not None:
            for line in self.view.changes(True):
                self.sendUntaggedResponse(line)

    def _run(self, tag, work, *args):
        """Run `work` (returning a Deferred of the tagged OK text); commands after it wait."""
        self.blocked = []
        d = defer.maybeDeferred(work, *args)

        def failed(failure):
            if failure.check(FolderError, KeyError):
                self.sendNegativeResponse(tag, str(failure.value).strip("'").encode("utf-8", "replace"))
            else:
                log.failure("imap: a command failed", failure)
                self.sendNegativeResponse(tag, b"[SERVERBUG] the server could not do that")
        d.addCallbacks(lambda text: self.sendPositiveResponse(tag, text), failed)
        d.addBoth(lambda _: None if self.gone else self._unblock())
        return d

    # ------------------------------------------------------------ login

    def do_STARTTLS(self, tag):
        if self.secure():
            return self.sendBadResponse(tag, b"TLS is already on")
        if self.ctx is None or not self.canStartTLS:
            return self.sendNegativeResponse(tag, b"TLS is not available")
        self.sendPositiveResponse(tag, b"begin TLS negotiation now")
        self.clearLineBuffer()      # nothing sent in the clear counts after this
        self.transport.startTLS(self.ctx)
        self.startedTLS = True

    unauth_STARTTLS = (do_STARTTLS,)

    def do_LOGIN(self, tag, user, password):
        if not self.secure():
            return self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] use STARTTLS first")
        self._log_in(tag, user, password)

    unauth_LOGIN = (do_LOGIN, imap4.IMAP4Server.arg_astring, imap4.IMAP4Server.arg_finalastring)

    def do_AUTHENTICATE(self, tag, mechanism):
        if not self.secure():
            return self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] use STARTTLS first")
        if mechanism.upper() != b"PLAIN":
            return self.sendNegativeResponse(tag, b"unsupported mechanism")
        self.sendContinuationRequest(None)
        self.parseState = "pending"
        self._pendingLiteral = defer.Deferred()
        self._pendingLiteral.addCallback(self._plain, tag)

    unauth_AUTHENTICATE = (do_AUTHENTICATE, imap4.IMAP4Server.arg_atom)

    def _plain(self, line, tag):
        if line.strip() == b"*":
            return self.sendBadResponse(tag, b"authentication cancelled")
        try:
            parts = base64.b64decode(line.strip(), validate=True).split(b"\0")
        except (binascii.Error, ValueError):
            return self.sendBadResponse(tag, b"not base64")
        if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):
            return self.sendBadResponse(tag, b"malformed PLAIN response")
        self._log_in(tag, parts[1], parts[2])

    def _log_in(self, tag, user, password):
        f = self.factory
        name = login_name(f.office.config, user)
        creds = credentials.UsernamePassword(user, password)

        def check():
            return f.portal.login(creds, self, imap4.IAccount)

        def done(result):
            f.throttle.succeeded(self.peer_ip, name)
            _, avatar, logout = result
            if self.gone:
                logout()
                return None
            try:
                f.mailboxes.ensure_user(avatar)
            except (KeyError, OSError) as e:
                logout()
                log.error("imap: no mailbox for {user}: {error}", user=avatar, error=str(e))
                raise FolderError("[UNAVAILABLE] mailbox not available")
            self.user, self._onLogout, self.state = avatar, logout, "auth"
            self.setTimeout(self.POSTAUTH_TIMEOUT)
            IMAP_LOGINS.labels("ok").inc()
            log.info("imap: {user} logged in from {peer}", user=avatar, peer=self.peer_ip)
            return b"[CAPABILITY " + b" ".join(self.listCapabilities()) + b"] logged in"

        def refused(failure):
            if failure.check(LockedOut):
                IMAP_LOGINS.labels("locked").inc()
                raise FolderError("[AUTHENTICATIONFAILED] too many failed logins, %s"
                                  % until_text(failure.value.until))
            if failure.check(TooManySessions):
                f.throttle.succeeded(self.peer_ip, name)
                IMAP_LOGINS.labels("limit").inc()
                raise FolderError("[LIMIT] too many sessions for this user")
            if failure.check(cred_error.LoginDenied, cred_error.LoginFailed):
                f.throttle.failed(self.peer_ip, name)
                IMAP_LOGINS.labels("refused").inc()
                log.info("imap: failed login from {peer}", peer=self.peer_ip)
                raise FolderError("[AUTHENTICATIONFAILED] wrong user name or password")
            return failure

        def login():
            return f.throttle.attempt(self.peer_ip, name, check).addCallbacks(done, refused)
        self._run(tag, login)

    # ------------------------------------------------------------ the selected folder

    def _leave(self):
        if self.view is not None:
            self.view.close(self.factory.mailboxes)
        self.view = self.mbox = None
        if self.state == "select":
            self.state = "auth"

    def _select(self, tag, name, writeable, command):
        self._leave()

        def work():
            n = self._name(name)
            folder = self.factory.mailboxes.folder(self.user, n)
            if folder is None:
                raise FolderError("no such mailbox")
            view = View(folder, self, writeable)
            for line in flag_lines(SYSTEM_FLAGS, folder.keywords, writeable):
                self.sendUntaggedResponse(line)
            self.sendUntaggedResponse(b"%d EXISTS" % len(view.seq))
            self.sendUntaggedResponse(b"0 RECENT")
            if folder.status()["UNSEEN"]:           # RFC 3501 6.3.1: the first unseen message
                self.sendUntaggedResponse(b"OK [UNSEEN %d] first unseen" % folder.first_unseen)
            self.sendUntaggedResponse(b"OK [UIDVALIDITY %d] UIDs valid" % folder.uidvalidity)
            self.sendUntaggedResponse(b"OK [UIDNEXT %d] predicted next UID" % folder.uidnext)
            self.view, self.mbox, self.state = view, SelectedMailbox(view), "select"
            return b"[%s] %s completed" % (b"READ-WRITE" if writeable else b"READ-ONLY", command)
        self._guarded(tag, work)

    auth_SELECT = select_SELECT = (_select, imap4.IMAP4Server.arg_astring, 1, b"SELECT")
    auth_EXAMINE = select_EXAMINE = (_select, imap4.IMAP4Server.arg_astring, 0, b"EXAMINE")

    def do_UNSELECT(self, tag):
        self._leave()
        self.sendPositiveResponse(tag, b"UNSELECT completed")

    select_UNSELECT = (do_UNSELECT,)

    def do_CLOSE(self, tag):
        view = self.view
        if view.writeable:
            view.folder.expunge([view.name_at(u) for u in view.seq
                                 if "T" in view.folder.flags.get(view.name_at(u) or "", "")])
        self._leave()
        self.sendPositiveResponse(tag, b"CLOSE completed")

    select_CLOSE = (do_CLOSE,)

    def do_EXPUNGE(self, tag, messages=None, uid=0):
        view = self.view
        if not view.writeable:
            return self.sendNegativeResponse(tag, b"the mailbox is read-only")
        uids = set(u for _, u in self.mbox.select(messages, 1)) if messages is not None else None
        names = []
        for u in view.seq:
            name = view.name_at(u)
            if name and "T" in view.folder.flags.get(name, "") and (uids is None or u in uids):
                names.append(name)
        view.folder.expunge(names)
        self._expunges_ok = True
        self.sendPositiveResponse(tag, b"EXPUNGE completed")

    select_EXPUNGE = (do_EXPUNGE,)

    def do_CHECK(self, tag):
        self.sendPositiveResponse(tag, b"CHECK completed")

    select_CHECK = (do_CHECK,)

    def do_IDLE(self, tag):
        self.sendContinuationRequest(b"idling")
        self.idling = tag
        self.parseState = "idle"
        self.mailbox_changed()

    auth_IDLE = select_IDLE = (do_IDLE,)

    def parse_idle(self, line):
        tag, self.idling = self.idling, None
        self.parseState = "command"
        if line.strip().upper() != b"DONE":
            return self.sendBadResponse(tag, b"expected DONE")
        self._expunges_ok = True
        self.sendPositiveResponse(tag, b"IDLE terminated")

    def do_FETCH(self, tag, messages, query, uid=0):
        view = self.view
        if view.writeable and any(p.type in ("rfc822", "rfc822text") or
                                  (p.type == "body" and not getattr(p, "peek", False) and
                                   (p.header or p.text or p.mime or p.empty or p.part))
                                  for p in query):
            changes = []
            for _, u in self.mbox.select(messages, uid):
                name = view.name_at(u)
                letters = view.folder.flags.get(name or "", "S")
                if "S" not in letters:
                    changes.append((name, letters + "S"))
            if changes:
                view.folder.set_flags_of(changes)
        if not query:
            return self.sendPositiveResponse(tag, b"FETCH completed")
        self.blocked = self.blocked if self.blocked is not None else []
        self._fetch_timeout = self.setTimeout(None)
        FetchWriter(self, tag, self.mbox.select(messages, uid), query, uid).start()

    select_FETCH = (do_FETCH, imap4.IMAP4Server.arg_seqset, imap4.IMAP4Server.arg_fetchatt)

    def do_STORE(self, tag, messages, mode, flags, uid=0):
        if not self.view.writeable:
            return self.sendNegativeResponse(tag, b"the mailbox is read-only")
        imap4.IMAP4Server.do_STORE(self, tag, messages, mode, flags, uid)

    select_STORE = (do_STORE, imap4.IMAP4Server.arg_seqset, imap4.IMAP4Server.arg_atom,
                    imap4.IMAP4Server.arg_flaglist)

    def do_COPY(self, tag, messages, name, uid=0, move=False):
        view = self.view
        if move and not view.writeable:
            return self.sendNegativeResponse(tag, b"the mailbox is read-only")

        @defer.inlineCallbacks
        def work():
            target = self.factory.mailboxes.folder(self.user, self._name(name))
            if target is None:
                raise FolderError("[TRYCREATE] no such mailbox")
            pairs = []
            for _, u in self.mbox.select(messages, uid):
                source = view.name_at(u)
                if source is None:
                    continue
                with view.folder.storage.open(source) as f:
                    data = f.read()
                new = yield target.add(data, letters_of(flags_of(     # keywords by name
                    view.folder.flags.get(source, ""), view.folder.keywords), target.keywords))
                pairs.append((u, new, source))
                self.factory.mailboxes.filed(self.user, view.folder.name, target.name, data)
            code = b""
            if pairs:
                code = b"[COPYUID %d %s %s] " % (target.uidvalidity,
                                                 b",".join(b"%d" % p[0] for p in pairs),
                                                 b",".join(b"%d" % p[1] for p in pairs))
            if not move:
                return code + b"COPY completed"
            if code:
                self.sendUntaggedResponse(b"OK " + code.strip())
            view.folder.expunge([p[2] for p in pairs])
            self._expunges_ok = True
            return b"MOVE completed"
        self._run(tag, work)

    def do_MOVE(self, tag, messages, name, uid=0):
        self.do_COPY(tag, messages, name, uid, move=True)

    select_COPY = (do_COPY, imap4.IMAP4Server.arg_seqset, imap4.IMAP4Server.arg_finalastring)
    select_MOVE = (do_MOVE, imap4.IMAP4Server.arg_seqset, imap4.IMAP4Server.arg_finalastring)

    def do_UID(self, tag, command, line):
        command = command.upper()
        if command == b"EXPUNGE":
            try:
                messages, rest = self.arg_seqset(line)
            except imap4.IllegalClientResponse as e:
                return self.sendBadResponse(tag, str(e).encode())
            return self.do_EXPUNGE(tag, messages, uid=1)
        if command not in (b"COPY", b"FETCH", b"STORE", b"SEARCH", b"MOVE"):
            return self.sendBadResponse(tag, b"unknown UID command")
        self.dispatchCommand(tag, command, line, uid=1)

    select_UID = (do_UID, imap4.IMAP4Server.arg_atom, imap4.IMAP4Server.arg_line)


class ImapFactory(protocol.ServerFactory):
    """IMAP sessions over the mail store, with the mail service's checker and throttle."""

    protocol = ImapServer
    noisy = False

    def __init__(self, office, store, checker, reactor, tls_options=None, throttle=None,
                 peer_limit=None, scheduler=None):
        self.office = office
        self.reactor = reactor
        self._tls_options = tls_options
        self.tls_source = None      # a callable giving the current TLS options, when set
        self.throttle = throttle if throttle is not None else LoginThrottle(reactor)
        self.peers = peer_limit if peer_limit is not None else PeerLimit(
            MAX_PER_PEER, cap=MAX_CONNECTIONS)
        self.mailboxes = Mailboxes(store, reactor)
        self.realm = ImapRealm()
        self.portal = cred_portal.Portal(self.realm, [checker])
        self.scheduler = scheduler

    @property
    def tls_options(self):
        """The TLS options for STARTTLS: the mail service's current ones (certificates reload)."""
        return self.tls_source() if self.tls_source is not None else self._tls_options

    @tls_options.setter
    def tls_options(self, value):
        self._tls_options = value

    def buildProtocol(self, addr):
        p = self.protocol(contextFactory=self.tls_options, scheduler=self.scheduler)
        p.factory = self
        return p


def make_imap_service(mail):
    """The "imap" child of the mail service: `[imap] port` (STARTTLS) and `imaps_port`."""
    factory = ImapFactory(mail.office, mail.store, mail.checker, mail.reactor,
                          throttle=mail.throttle)
    factory.tls_source = lambda: mail.tls_options

    def spec(config):
        if not config.imap.enabled:
            return None
        out = [("imap tcp/%d" % config.imap.port, config.imap.port, factory, None)]
        if mail.tls_options is not None:
            out.append(("imaps tcp/%d" % config.imap.imaps_port, config.imap.imaps_port,
                        factory, mail.tls_options))
        return tuple(out)

    svc = PortsService("imap", mail.office, mail.reactor, spec, "turned off in [imap]")
    svc.factory = factory
    return svc
