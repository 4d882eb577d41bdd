# -*- test-case-name: allworx.tests.core.test_eventlog -*-
"""
The server's recent structured log events, kept in memory for the Logs page
and `GET /api/v1/logs` (SPEC 20): an `EventRing` is a twisted.logger
observer (the server adds it to the global log publisher while it runs)
that keeps the last events, bounded by count and by size, each as

    {"id": sequence number, "time": epoch seconds, "service": "dhcp" ...,
     "level": "debug" | "info" | "warn" | "error" | "critical",
     "message": the formatted text, "fields": {name: JSON-safe value}}

Services are named as the config sections (`service_of`); the fields are
the event's own keys without twisted's `log_*` ones, made JSON-safe and
bounded, and without anything named like a secret (`SECRET`), which the
message is formatted without as well. It implements ILogEvents.
"""

import collections
import re
import threading
import time

from twisted.logger import LogLevel, formatEvent
from zope.interface import implementer

from allworx.interfaces import ILogEvents

MAX_EVENTS = 5000
MAX_BYTES = 4 * 1024 * 1024     # the ring's estimated size, messages and fields together
MAX_MESSAGE = 2000              # characters of one message
MAX_VALUE = 300                 # characters of one field's text
MAX_FIELDS = 30
MAX_LIMIT = 1000

LEVELS = ("debug", "info", "warn", "error", "critical")
LEVEL_RANK = {name: n for n, name in enumerate(LEVELS)}
# What people write for a level, as the names above.
LEVEL_ALIASES = {"warning": "warn", "err": "error", "fatal": "critical", "crit": "critical"}

# The services, named as the config sections; everything else is "server".
SERVICES = ("dhcp", "dns", "mail", "imap", "sip", "web", "firewall", "network", "ntp", "ldap",
            "vpn", "provisioning")
OTHER = "server"

# Logger namespaces (module names) -> service, the longest prefix first.
NAMESPACES = (
    ("allworx.protocols.mail.imap", "imap"),
    ("allworx.protocols.mail", "mail"),
    ("allworx.protocols.dns", "dns"),
    ("allworx.protocols.dhcp", "dhcp"),
    ("allworx.protocols.sip", "sip"),
    ("allworx.protocols.voice", "sip"),
    ("allworx.protocols.web", "web"),
    ("allworx.protocols.ldap", "ldap"),
    ("allworx.protocols.ntp", "ntp"),
    ("allworx.protocols.provisioning", "provisioning"),
    ("allworx.routing.firewall", "firewall"),
    ("allworx.routing.network", "network"),
    ("allworx.routing.wanclient", "network"),
    ("allworx.routing.vpn", "vpn"),
)
# Names the shared pieces give a service in their events (`service=`, a
# guard's `label`, a status name) -> the service.
ALIASES = dict({s: s for s in SERVICES}, pop3="mail", smtp="mail", submission="mail",
               queue="mail", fetch="mail", imaps="imap", wireguard="vpn", wan="network",
               lan="network", admin="web", sites="web")

# Field names whose values are never kept (nor put in the message).
SECRET = re.compile(r"passw|secret|(^|_)pins?($|_)|token|key|digest|credential|cookie|"
                    r"authoriz|nonce", re.IGNORECASE)
HIDDEN = "(hidden)"
# Keys of legacy (twisted.python.log) events that are not the event's own facts.
LEGACY = frozenset(("message", "isError", "system", "time", "format", "failure", "why"))


def level_name(level):
    """A LogLevel (or a name) as one of LEVELS; unknown: "info"."""
    name = getattr(level, "name", level)
    name = LEVEL_ALIASES.get(str(name).lower(), str(name).lower())
    return name if name in LEVEL_RANK else "info"


def parse_level(text):
    """A level the user wrote (`warning`, `ERROR`), as one of LEVELS; ValueError if none."""
    name = LEVEL_ALIASES.get(text.strip().lower(), text.strip().lower())
    if name not in LEVEL_RANK:
        raise ValueError("%r is not a level: one of %s" % (text, ", ".join(LEVELS)))
    return name


def _alias(value):
    if not isinstance(value, str):
        return None
    word = value.strip().lower().split(" ", 1)[0] if value.strip() else ""
    return ALIASES.get(word)


def service_of(event):
    """The service an event belongs to: by its logger's namespace, else what it names."""
    namespace = event.get("log_namespace") or ""
    for prefix, service in NAMESPACES:
        if namespace.startswith(prefix):     # imap: imap.py, imapstore.py ...
            return service
    for key in ("service", "label"):
        found = _alias(event.get(key))
        if found:
            return found
    system = event.get("log_system")
    if isinstance(system, str):
        for prefix, service in NAMESPACES:
            if system.startswith(prefix):
                return service
    return OTHER


def is_secret(name):
    return bool(SECRET.search(str(name)))


def safe_value(value):
    """A field's value as JSON: numbers, booleans, None kept; text bounded; others as repr."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        try:
            value = str(value) if _plain_str(value) else repr(value)
        except Exception:
            value = "<%s>" % type(value).__name__
    return value if len(value) <= MAX_VALUE else value[:MAX_VALUE - 3] + "..."


def _plain_str(value):
    # Addresses and the like read better as their text than as a repr.
    return type(value).__module__ in ("ipaddress", "pathlib") or hasattr(value, "exploded")


def fields_of(event):
    """The event's own keys, JSON-safe, secrets left out."""
    out = {}
    legacy = "log_legacy" in event or "isError" in event
    for key in sorted(event, key=str):
        if not isinstance(key, str) or key.startswith("log_") or (legacy and key in LEGACY):
            continue
        if is_secret(key):
            continue
        if len(out) >= MAX_FIELDS:
            break
        out[key] = safe_value(event[key])
    return out


def message_of(event):
    """The formatted message (secrets masked), with a failure's type and reason; bounded."""
    masked = dict(event)
    for key in event:
        if isinstance(key, str) and not key.startswith("log_") and is_secret(key):
            masked[key] = HIDDEN
    try:
        text = formatEvent(masked)
    except Exception:
        text = str(event.get("log_format") or "")
    failure = event.get("log_failure")
    if failure is not None:
        try:
            text = "%s: %s: %s" % (text, failure.type.__name__, failure.getErrorMessage())
        except Exception:
            pass
    text = text or ""
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


def _size(record):
    return 120 + len(record["message"]) + sum(len(k) + len(str(v))
                                              for k, v in record["fields"].items())


@implementer(ILogEvents)
class EventRing:
    """
    The last `max_events` log events (and at most about `max_bytes`),
    newest last; a twisted.logger observer. Thread-safe: events logged in
    threads arrive here from them.
    """

    def __init__(self, max_events=MAX_EVENTS, max_bytes=MAX_BYTES, clock=time.time):
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.clock = clock
        self._ring = collections.deque()
        self._bytes = 0
        self._next_id = 1
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._ring)

    @property
    def size(self):
        """The ring's estimated size in bytes."""
        return self._bytes

    def __call__(self, event):
        try:
            record = self.record(event)
        except Exception:
            return      # an observer must never raise into the logging system
        with self._lock:
            record["id"] = self._next_id
            self._next_id += 1
            size = _size(record)
            self._ring.append((record, size))
            self._bytes += size
            while self._ring and (len(self._ring) > self.max_events
                                  or self._bytes > self.max_bytes):
                _, dropped = self._ring.popleft()
                self._bytes -= dropped

    def record(self, event):
        """One event as it is kept (without its id)."""
        when = event.get("log_time")
        if not isinstance(when, (int, float)):
            when = self.clock()
        return {"time": float(when), "service": service_of(event),
                "level": level_name(event.get("log_level", LogLevel.info)),
                "message": message_of(event), "fields": fields_of(event)}

    def events(self, service=None, level=None, since=None, limit=100, before=None):
        """
        (events, next): newest first, at most `limit`; `service` one name or
        a collection of names; `level` the least level; `since` an epoch
        time; `before` an event id (an earlier answer's `next`, which is the
        id of its oldest event when older ones match, else None).
        """
        services = None
        if service is not None:
            services = {service} if isinstance(service, str) else set(service)
        least = LEVEL_RANK[parse_level(level)] if level is not None else 0
        limit = max(1, min(int(limit), MAX_LIMIT))
        before = int(before) if before is not None else None
        with self._lock:
            kept = [record for record, _ in self._ring]
        out = []
        more = False
        for record in reversed(kept):
            if before is not None and record["id"] >= before:
                continue
            if since is not None and record["time"] < since:
                continue
            if services is not None and record["service"] not in services:
                continue
            if LEVEL_RANK[record["level"]] < least:
                continue
            if len(out) == limit:
                more = True
                break
            out.append(dict(record, fields=dict(record["fields"])))
        return out, (out[-1]["id"] if more else None)
