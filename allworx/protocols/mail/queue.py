# -*- test-case-name: allworx.tests.mail.test_queue -*-
"""
The outbound mail queue: messages for other domains, kept on disk under
`data_dir/queue` until each recipient is delivered or given up on.

An entry is two files, `ID.eml` (the message, LF line ends, DKIM-signed by
the `signer` as it enters when its From is ours) and `ID.json` (envelope,
delivery state, the DKIM selectors it carries); the JSON file is written
last, so an entry exists only when both are on disk. Delivery tries each domain's servers (see
`relay.py`); a temporary failure is retried with exponential backoff
(`retry_delay`) for up to five days; a permanent failure, or the end of those
five days, sends the sender a DSN bounce, except for a bounce (null sender),
which is only logged. Implements `IMailQueue`: the mail service's `queue`,
which the admin pages are given.
"""

import json
import os

import attr
from prometheus_client import Counter, Gauge
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from allworx.atomicfile import ensure_directory
from allworx.interfaces import IMailQueue
from allworx.protocols.mail.aliases import split_address
from allworx.protocols.mail.dsn import build_bounce
from allworx.protocols.mail.durable import PendingFile
from allworx.protocols.mail.relay import Outcome
from allworx.protocols.mail.store import DELIVERED

log = Logger()

QUEUED = Counter("allworx_mail_queued_total", "Messages put in the outbound queue")
BOUNCED = Counter("allworx_mail_bounced_total", "Recipients given up on (a bounce was sent or, for a bounce, dropped)")
QUEUE_LENGTH = Gauge("allworx_mail_queue_length", "Messages waiting in the outbound queue")

FIRST_RETRY = 300           # 5 minutes
MAX_RETRY = 4 * 3600        # then every 4 hours at most
GIVE_UP_AFTER = 5 * 86400   # 5 days
MAX_PARALLEL = 8
MAX_ENTRIES = 10000         # beyond this, new outbound mail is refused for now (452)


class QueueFull(Exception):
    """The outbound queue holds MAX_ENTRIES messages: no more until some leave."""


def retry_delay(attempts):
    """Seconds to wait after the `attempts`-th failed attempt: 5m, 10m, 20m ... at most 4h."""
    if attempts < 1:
        return 0
    return min(MAX_RETRY, FIRST_RETRY * 2 ** min(attempts - 1, 20))


@attr.s(slots=True)
class QueueEntry:
    """One queued message: its envelope and where delivery stands."""

    id = attr.ib()
    sender = attr.ib()
    recipients = attr.ib(converter=list)    # still to deliver
    created = attr.ib()
    attempts = attr.ib(default=0)
    next_attempt = attr.ib(default=0.0)
    last_error = attr.ib(default="")
    dkim = attr.ib(default=(), converter=tuple)    # the DKIM selectors it was signed with
    busy = attr.ib(default=False, eq=False)

    def to_json(self):
        return json.dumps({"id": self.id, "sender": self.sender, "recipients": self.recipients,
                           "created": self.created, "attempts": self.attempts,
                           "next_attempt": self.next_attempt,
                           "last_error": self.last_error, "dkim": list(self.dkim)}).encode()

    @classmethod
    def from_json(cls, data):
        d = json.loads(data)
        # An entry written before DKIM signing has no "dkim": unsigned.
        return cls(d["id"], d["sender"], d["recipients"], d["created"], d.get("attempts", 0),
                   d.get("next_attempt", 0.0), d.get("last_error", ""),
                   [s for s in d.get("dkim", ()) if isinstance(s, str)])

    def as_dict(self):
        """The entry as the pages and the API show it."""
        return {"id": self.id, "sender": self.sender, "recipients": list(self.recipients),
                "attempts": self.attempts, "next_attempt": self.next_attempt,
                "last_error": self.last_error, "created": self.created}


@implementer(IMailQueue)
class OutboundQueue:
    """The persistent queue and its delivery loop."""

    def __init__(self, office, writer, reactor, relay, store=None, signer=None):
        self.office = office
        self.signer = signer        # a DkimSigner, or None: sent as given
        self.writer = writer
        self.reactor = reactor
        self.relay = relay
        self.store = store
        self._entries = {}
        self._timers = {}
        self._running = 0
        self._waiting = []
        self.started = False
        self.max_entries = MAX_ENTRIES

    # ------------------------------------------------------------ places

    @property
    def directory(self):
        return os.path.join(self.office.config.system.data_dir, "queue")

    def _paths(self, queue_id):
        return (os.path.join(self.directory, queue_id + ".eml"),
                os.path.join(self.directory, queue_id + ".json"))

    def _ensure(self):
        ensure_directory(os.path.join(self.directory, "tmp"))

    # ------------------------------------------------------------ entering

    def prepare(self, sender, recipients, data, queue_id):
        """(entry, files to write) for a new message; `admit` it once written."""
        if len(self._entries) >= self.max_entries:
            raise QueueFull("the outbound queue is full (%d messages)" % len(self._entries))
        self._ensure()
        selectors = ()
        if self.signer is not None:
            data, selectors = self.signer.sign(data)
        entry = QueueEntry(queue_id, sender, list(recipients), self.reactor.seconds(),
                           dkim=selectors)
        eml, meta = self._paths(queue_id)
        tmp = os.path.join(self.directory, "tmp")
        files = [PendingFile(os.path.join(tmp, queue_id + ".eml"), eml, data),
                 PendingFile(os.path.join(tmp, queue_id + ".json"), meta, entry.to_json())]
        return entry, files

    def admit(self, entry):
        """A written entry joins the queue and is tried at once."""
        QUEUED.inc()
        self._entries[entry.id] = entry
        QUEUE_LENGTH.set(len(self._entries))
        log.info("queued {id} from <{sender}> to {recipients}", id=entry.id,
                 sender=entry.sender, recipients=", ".join(entry.recipients))
        if self.started:
            self._schedule(entry, 0)

    def load(self):
        """Read the queue from disk (at start); drops halves of unfinished writes."""
        self._ensure()
        names = os.listdir(self.directory)
        ids = {n[:-5] for n in names if n.endswith(".json")}
        for name in names:
            if name.endswith(".eml") and name[:-4] not in ids:
                log.warn("removing unfinished queue file {name}", name=name)
                os.unlink(os.path.join(self.directory, name))
        for queue_id in sorted(ids):
            eml, meta = self._paths(queue_id)
            try:
                with open(meta, "rb") as f:
                    entry = QueueEntry.from_json(f.read())
                if not os.path.exists(eml):
                    raise ValueError("its message file is missing")
            except (OSError, ValueError, KeyError) as e:
                log.error("queue entry {id} is unreadable and was set aside: {error}",
                          id=queue_id, error=str(e))
                os.rename(meta, meta + ".bad")
                continue
            self._entries[entry.id] = entry
        QUEUE_LENGTH.set(len(self._entries))
        return len(self._entries)

    def start(self):
        """Begin delivering: each entry at its next attempt time."""
        self.started = True
        now = self.reactor.seconds()
        for entry in self._entries.values():
            self._schedule(entry, max(0, entry.next_attempt - now))

    def stop(self):
        self.started = False
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()

    # ------------------------------------------------------------ IMailQueue

    def entries(self):
        """The queued messages, oldest first, as dicts."""
        return [e.as_dict() for e in sorted(self._entries.values(), key=lambda e: (e.created, e.id))]

    def retry(self, queue_id):
        """Try one message again now; KeyError if it is not queued."""
        entry = self._entries[queue_id]
        self._schedule(entry, 0)

    def remove(self, queue_id):
        """Drop a message from the queue without a bounce; KeyError if absent."""
        entry = self._entries[queue_id]
        self._cancel(entry.id)
        self._drop(entry)
        log.info("queue entry {id} removed by the administrator", id=queue_id)

    def selectors_in_use(self):
        """The DKIM selectors the queued messages were signed with."""
        return {s for e in self._entries.values() for s in e.dkim}

    def __len__(self):
        return len(self._entries)

    # ------------------------------------------------------------ delivering

    def _cancel(self, queue_id):
        timer = self._timers.pop(queue_id, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _schedule(self, entry, delay):
        self._cancel(entry.id)
        self._timers[entry.id] = self.reactor.callLater(delay, self._due, entry.id)

    def _due(self, queue_id):
        self._timers.pop(queue_id, None)
        entry = self._entries.get(queue_id)
        if entry is None or entry.busy:
            return
        if self._running >= MAX_PARALLEL:
            self._waiting.append(queue_id)
            return
        self._running += 1
        entry.busy = True
        d = self.attempt(entry)
        d.addErrback(lambda f: log.failure("queue entry {id} failed", f, id=queue_id))
        d.addBoth(self._finished, entry)

    def _finished(self, _, entry):
        entry.busy = False
        self._running -= 1
        while self._waiting and self._running < MAX_PARALLEL:
            self._due(self._waiting.pop(0))

    @defer.inlineCallbacks
    def attempt(self, entry):
        """One delivery attempt of every recipient still waiting; updates or ends the entry."""
        eml, _ = self._paths(entry.id)
        try:
            with open(eml, "rb") as f:
                data = f.read()
        except OSError as e:
            log.error("queue entry {id} dropped: its message cannot be read: {error}",
                      id=entry.id, error=str(e))
            self._drop(entry)
            return
        by_domain = {}
        for rcpt in entry.recipients:
            by_domain.setdefault(split_address(rcpt)[1], []).append(rcpt)
        outcomes = {}
        for domain, rcpts in sorted(by_domain.items()):
            try:
                result = yield self.relay.deliver(domain, entry.sender, rcpts, data)
            except Exception as e:
                result = {r: Outcome("temporary", "4.3.0", "internal error: %s" % e) for r in rcpts}
            outcomes.update(result)
        if entry.id not in self._entries:
            return  # removed meanwhile
        now = self.reactor.seconds()
        entry.attempts += 1
        failed, waiting, errors = [], [], []
        for rcpt in entry.recipients:
            o = outcomes.get(rcpt)
            if o is None or o.kind == "temporary":
                waiting.append(rcpt)
                errors.append("%s: %s" % (rcpt, o.text if o else "not tried"))
            elif o.kind == "permanent":
                failed.append((rcpt, o.status, o.text))
            else:
                log.info("{id} delivered to {rcpt}: {text}", id=entry.id, rcpt=rcpt, text=o.text)
                DELIVERED.labels("remote").inc()
        expired = bool(waiting) and now - entry.created >= GIVE_UP_AFTER
        if expired:
            failed += [(r, (outcomes.get(r).status if outcomes.get(r) else "4.4.7"),
                        "gave up after 5 days: %s" % (outcomes[r].text if r in outcomes else "not tried"))
                       for r in waiting]
            waiting = []
        if failed:
            yield self._bounce(entry, failed, data, expired)
        entry.recipients = waiting
        entry.last_error = "; ".join(errors)[:1000]
        if not waiting:
            self._drop(entry)
            return
        delay = retry_delay(entry.attempts)
        entry.next_attempt = now + delay
        log.info("{id} deferred for {count} recipient(s), next try in {delay}s: {error}",
                 id=entry.id, count=len(waiting), delay=delay, error=entry.last_error)
        _, meta = self._paths(entry.id)
        yield self.writer.write([PendingFile(os.path.join(self.directory, "tmp", entry.id + ".json"),
                                             meta, entry.to_json())])
        if self.started and entry.id in self._entries:
            self._schedule(entry, delay)

    def _bounce(self, entry, failed, data, expired):
        BOUNCED.inc(len(failed))
        for rcpt, status, text in failed:
            log.warn("{id} to {rcpt} failed for good: {status} {text}", id=entry.id,
                     rcpt=rcpt, status=status, text=text)
        if not entry.sender:
            log.warn("{id} is itself a bounce: no bounce is sent for it", id=entry.id)
            return defer.succeed(None)
        config = self.office.config
        host = "%s.%s" % (config.system.hostname, config.system.domain)
        message = build_bounce(host, entry.id, entry.sender, failed, data,
                               self.reactor.seconds(), expired)
        d = self.store.deliver([entry.sender], message, sender="")
        d.addErrback(lambda f: log.error("bounce for {id} to <{sender}> not delivered: {error}",
                                         id=entry.id, sender=entry.sender, error=str(f.value)))
        return d

    def _drop(self, entry):
        """The entry leaves the queue: its files go; a retired DKIM selector may go with it."""
        self._entries.pop(entry.id, None)
        self._delete_files(entry.id)
        QUEUE_LENGTH.set(len(self._entries))
        if entry.dkim and self.signer is not None:
            self.signer.entry_left(entry.dkim)

    def _delete_files(self, queue_id):
        for path in self._paths(queue_id):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
