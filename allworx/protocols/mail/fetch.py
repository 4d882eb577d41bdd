# -*- test-case-name: allworx.tests.mail.test_fetch -*-
"""
POP3 fetching (guide 8.2): every `fetch_interval`, each `pop3_fetch` account
of each user is polled (pop3:// or pop3s://) and its messages delivered, to
that user, or for the user named admin, to whoever the message's headers name
(`multidrop.route`).

The UIDs fetched from each account are kept in `data_dir/fetch/` so nothing
is delivered twice: a message is fetched, delivered (on disk), its UID
recorded (on disk), and only then deleted at the ISP. A failure (wrong
password, server unreachable) is logged, shown in the `FetchService`'s
`status` (account -> last result) and retried with a growing delay.
"""

import email.utils
import hashlib
import json
import os
import re

import attr
from prometheus_client import Counter
from twisted.application import service
from twisted.internet import defer, protocol, ssl, threads
from twisted.logger import Logger
from twisted.mail.pop3client import POP3Client
from zope.interface import implementer

from allworx.interfaces import IFetchStatus
from allworx.protocols.mail import multidrop, smtpwire
from allworx.protocols.mail.aliases import ADMIN_USER
from allworx.atomicfile import ensure_directory, write_atomically

log = Logger()

FETCHED = Counter("allworx_mail_fetched_total", "Messages fetched from POP3 accounts")
FETCH_ERRORS = Counter("allworx_mail_fetch_errors_total", "Failed POP3 fetch polls")

FIRST_RETRY = 30
MAX_RETRY = 3600
CONNECT_TIMEOUT = 30


def retry_delay(failures, interval):
    """Seconds before the next poll after `failures` failed polls in a row (0: the interval)."""
    if failures <= 0:
        return interval
    return min(MAX_RETRY, FIRST_RETRY * 2 ** min(failures - 1, 20))


def ledger_name(user, account):
    """A file name for an account's fetched-UID record (no password in it)."""
    readable = re.sub(r"[^a-zA-Z0-9._-]", "_", "%s-%s-%s-%s" % (
        user, account.user, account.host, account.port))[:80]
    digest = hashlib.sha256(("%s\0%s" % (user, account.display)).encode()).hexdigest()[:12]
    return "%s-%s.json" % (readable, digest)


@attr.s
class FetchLedger:
    """The UIDs already delivered from one account, persisted atomically."""

    path = attr.ib()
    uids = attr.ib(factory=set)

    @classmethod
    def load(cls, path):
        try:
            with open(path, "rb") as f:
                data = json.load(f)
            return cls(path, set(data.get("uids", ())))
        except FileNotFoundError:
            return cls(path)
        except (ValueError, OSError) as e:
            raise ValueError("%s is unreadable: %s" % (path, e))

    def write(self):
        """Write the ledger durably (call in a thread)."""
        ensure_directory(os.path.dirname(self.path))
        write_atomically(self.path, json.dumps({"uids": sorted(self.uids)}), mode=0o600)


def plan(listing, seen):
    """
    From a UIDL listing [(index, uid)] and the UIDs already delivered: the
    (index, uid) pairs to fetch, and the indexes to delete once fetched ones
    are recorded (those delivered before included).
    """
    fetch = [(i, uid) for i, uid in listing if uid not in seen]
    delete_seen = [i for i, uid in listing if uid in seen]
    return fetch, delete_seen


class _FetchClient(POP3Client):
    """twisted's POP3 client, giving up on a server silent for two minutes."""

    timeout = 120


class FetchError(Exception):
    """A poll failed; the message says why in words for the status page."""


class AccountPoller:
    """Polls one account of one user; `poll()` fires with the number delivered."""

    def __init__(self, mail, user, account, status_board=None):
        self.mail = mail
        self.user = user
        self.account = account
        self.status_board = {} if status_board is None else status_board
        self.failures = 0
        self.running = False
        self.timer = None
        self._thread = getattr(mail, "defer_to_thread", None) or threads.deferToThread
        root = os.path.join(mail.office.config.system.data_dir, "fetch")
        self.ledger_path = os.path.join(root, ledger_name(user, account))

    @property
    def key(self):
        return (self.user, self.account.url)

    def status(self, **values):
        """Update this account's entry in the fetch service's `status`."""
        entry = self.status_board.setdefault(self.account.display, {
            "user": self.user, "account": self.account.display, "state": "waiting",
            "last_attempt": None, "last_success": None, "fetched": 0, "error": "",
            "next_attempt": None, "failures": 0, "multidrop": self.user == ADMIN_USER})
        entry.update(values)
        return entry

    def _connect(self):
        reactor = self.mail.reactor
        creator = protocol.ClientCreator(reactor, _FetchClient)
        host = self.account.host
        if self.account.scheme == "pop3s":
            options = ssl.optionsForClientTLS(host)
            return creator.connectSSL(host, self.account.port, options, timeout=CONNECT_TIMEOUT)
        return creator.connectTCP(host, self.account.port, timeout=CONNECT_TIMEOUT)

    @defer.inlineCallbacks
    def poll(self):
        """One poll: fetch new messages, deliver, record, delete remote; returns the count."""
        acct = self.account
        try:
            ledger = yield self._thread(FetchLedger.load, self.ledger_path)
        except ValueError as e:
            raise FetchError(str(e))
        try:
            client = yield self._connect()
        except Exception as e:
            raise FetchError("cannot connect to %s:%d: %s" % (acct.host, acct.port, _text(e)))
        try:
            if acct.scheme == "pop3":
                # Encrypt when the server offers STLS, so the password is not
                # sent in the clear; pop3s:// is the way to insist on TLS.
                caps = yield client.capabilities(useCache=False)
                if b"STLS" in caps:
                    try:
                        yield client.startTLS(ssl.CertificateOptions())
                    except Exception as e:
                        raise FetchError("STLS with %s failed: %s" % (acct.host, _text(e)))
            try:
                yield client.user(acct.user.encode("utf-8"))
                yield client.password(acct.password.encode("utf-8"))
            except Exception as e:
                raise FetchError("login as %s refused: %s" % (acct.user, _text(e)))
            uids = yield client.listUID()
            listing = [(i, uid.decode("ascii", "replace")) for i, uid in enumerate(uids)
                       if uid is not None]
            todo, delete = plan(listing, ledger.uids)
            delivered = 0
            for index, uid in todo:
                lines = yield client.retrieve(index)
                data = b"\n".join(lines) + b"\n"
                yield self._deliver(uid, data)
                ledger.uids.add(uid)
                delete.append(index)
                delivered += 1
            if todo:
                yield self._thread(ledger.write)
            for index in sorted(delete):
                yield client.delete(index)
            yield client.quit()
            # Deleted at QUIT: forget those UIDs, keep any still listed.
            deleted = set(delete)
            present = {uid for i, uid in listing if i not in deleted}
            if ledger.uids - present:
                ledger.uids &= present
                yield self._thread(ledger.write)
            return delivered
        finally:
            if client.transport is not None:
                client.transport.loseConnection()

    def _deliver(self, uid, data):
        config = self.mail.office.config
        if self.user == ADMIN_USER:
            targets = multidrop.route(config, data)
        else:
            targets = [self.user]
        host = "%s.%s" % (config.system.hostname, config.system.domain)
        received = ("Received: from %s by %s (allworx) with POP3 id %s\n\tfor %s; %s\n" % (
            self.account.host, host, uid[:70], self.user,
            email.utils.formatdate(self.mail.reactor.seconds(), localtime=True))).encode("utf-8", "replace")
        FETCHED.inc()
        log.info("fetched {uid} from {account} for {targets}", uid=uid,
                 account=self.account.display, targets=", ".join(targets))
        # Mail from outside never counts as voicemail (only the server writes that header).
        return self.mail.store.deliver(targets, received + smtpwire.drop_server_headers(data),
                                       sender="")


def _text(e):
    text = str(getattr(e, "value", e)) or e.__class__.__name__
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return " ".join(text.split())[:300]


@implementer(IFetchStatus)
class FetchService(service.Service):
    """Runs a poller per (user, account) on timers; follows config changes."""

    def __init__(self, mail):
        self.setName("fetch")
        self.mail = mail
        self.pollers = {}
        self.status = {}     # account display -> its last result, for the admin pages

    @property
    def reactor(self):
        return self.mail.reactor

    def startService(self):
        service.Service.startService(self)
        self.reconfigure()

    def stopService(self):
        service.Service.stopService(self)
        for poller in self.pollers.values():
            if poller.timer is not None and poller.timer.active():
                poller.timer.cancel()
        self.pollers.clear()

    def wanted(self, config):
        """{(user, url): (user, account)} for every configured fetch account (none when mail is off)."""
        if not config.mail.enabled:
            return {}
        return {(u.name, a.url): (u.name, a) for u in config.users.values() for a in u.pop3_fetch}

    def reconfigure(self):
        """Add pollers for new accounts (first poll soon), drop those removed."""
        if not self.running:
            return
        wanted = self.wanted(self.mail.office.config)
        for key in list(self.pollers):
            if key not in wanted:
                poller = self.pollers.pop(key)
                if poller.timer is not None and poller.timer.active():
                    poller.timer.cancel()
                self.status.pop(poller.account.display, None)
        for key, (user, account) in wanted.items():
            if key not in self.pollers:
                poller = self.pollers[key] = AccountPoller(self.mail, user, account, self.status)
                self._schedule(poller, 1)
        count = len(self.pollers)
        self.mail.office.set_status("fetch", "up" if count else "disabled",
                                    "%d POP3 account(s) fetched" % count if count
                                    else "no pop3_fetch accounts")

    def _schedule(self, poller, delay):
        poller.timer = self.reactor.callLater(delay, self.run_poll, poller)
        poller.status(next_attempt=self.reactor.seconds() + delay)

    def run_poll(self, poller):
        """Poll one account now (unless it is polling already); reschedules itself."""
        if poller.running or self.pollers.get(poller.key) is not poller:
            return defer.succeed(None)
        poller.running = True
        now = self.reactor.seconds()
        poller.status(state="polling", last_attempt=now)
        d = poller.poll()

        def ok(count):
            poller.failures = 0
            entry = poller.status(state="ok", last_success=self.reactor.seconds(), error="",
                                  failures=0)
            entry["fetched"] += count
            return self.mail.office.config.mail.fetch_interval

        def failed(f):
            poller.failures += 1
            FETCH_ERRORS.inc()
            reason = f.getErrorMessage() if f.check(FetchError) else _text(f.value)
            if not f.check(FetchError):
                log.failure("fetch from {account} failed", f, account=poller.account.display)
            log.warn("fetch for {user} from {account} failed ({failures} in a row): {reason}",
                     user=poller.user, account=poller.account.display,
                     failures=poller.failures, reason=reason)
            poller.status(state="error", error=reason, failures=poller.failures)
            return retry_delay(poller.failures, self.mail.office.config.mail.fetch_interval)

        def again(delay):
            poller.running = False
            if self.running and self.pollers.get(poller.key) is poller:
                self._schedule(poller, delay)
        return d.addCallbacks(ok, failed).addCallback(again)
