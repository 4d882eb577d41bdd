# -*- test-case-name: allworx.tests.mail.test_dnsbl -*-
"""
Greylisting (`[mail] greylist = yes`): the first attempt of an unknown
(client network, sender, recipient) triplet is deferred with 451; a retry
after DELAY seconds and within WINDOW is accepted, and the triplet is then
known for LIFETIME. A client network (/24, or /64 for IPv6) whose triplets
passed AUTO_WHITELIST times is let through at once. The state is kept in
`data_dir/mail/greylist.json`, bounded (MAX_TRIPLETS), replaced atomically
by `save`, which runs at most every SAVE_EVERY seconds (not per message)
and at stop. Time is the injected clock's.
"""

import ipaddress
import json

from twisted.internet import defer, threads
from twisted.logger import Logger

from allworx.atomicfile import write_atomically

log = Logger()

DELAY = 300.0
WINDOW = 2 * 86400.0
LIFETIME = 35 * 86400.0
AUTO_WHITELIST = 5
MAX_TRIPLETS = 20000
MAX_CLIENTS = 5000
SAVE_EVERY = 60.0


def network(ip):
    address = ipaddress.ip_address(ip)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network("%s/%d" % (address, prefix), strict=False))


def _threaded_write(path, text):
    return threads.deferToThread(write_atomically, path, text)


class Greylist:
    """Triplets ({key: [first seen, passed (0/1), last seen]}) and clients ({net: [passes, last]})."""

    def __init__(self, path, clock, write=_threaded_write):
        self.path = path
        self.clock = clock
        self.write = write
        self.triplets = {}
        self.clients = {}
        self._save_call = None
        self.load()

    def load(self):
        try:
            with open(self.path) as f:
                state = json.load(f)
            self.triplets = {str(k): list(v) for k, v in state.get("triplets", {}).items()}
            self.clients = {str(k): list(v) for k, v in state.get("clients", {}).items()}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, AttributeError, OSError) as e:
            log.warn("greylist: {path} unreadable ({error}): starting empty", path=self.path,
                     error=str(e))

    def check(self, ip, sender, recipient):
        """None when the message may come in now, else the seconds to wait before a retry."""
        now = self.clock.seconds()
        net = network(ip)
        client = self.clients.get(net)
        if client is not None and client[0] >= AUTO_WHITELIST and now - client[1] < LIFETIME:
            client[1] = now
            self._dirty()
            return None
        key = "%s %s %s" % (net, (sender or "").lower(), recipient.lower())
        entry = self.triplets.get(key)
        if entry is None or (not entry[1] and now - entry[0] > WINDOW) or \
                (entry[1] and now - entry[2] > LIFETIME):
            self.triplets[key] = [now, 0, now]
            self._dirty()
            return DELAY
        if not entry[1]:
            if now - entry[0] < DELAY:
                return entry[0] + DELAY - now
            entry[1] = 1
            count = self.clients.setdefault(net, [0, now])
            count[0] += 1
            count[1] = now
        entry[2] = now
        self._dirty()
        return None

    # ------------------------------------------------------------ persistence

    def _dirty(self):
        if self._save_call is None or not self._save_call.active():
            self._save_call = self.clock.callLater(SAVE_EVERY, self.save)

    def _prune(self):
        now = self.clock.seconds()
        self.triplets = {k: v for k, v in self.triplets.items()
                         if now - (v[2] if v[1] else v[0]) < (LIFETIME if v[1] else WINDOW)}
        self.clients = {k: v for k, v in self.clients.items() if now - v[1] < LIFETIME}
        for table, limit in ((self.triplets, MAX_TRIPLETS), (self.clients, MAX_CLIENTS)):
            if len(table) > limit:
                for key in sorted(table, key=lambda k: table[k][-1])[:len(table) - limit]:
                    del table[key]

    def save(self):
        """Write the state now (pruned and bounded); a Deferred."""
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        d = defer.maybeDeferred(self.write, self.path, self._state())

        def failed(f):
            log.warn("greylist: could not write {path}: {error}", path=self.path,
                     error=f.getErrorMessage())
        return d.addErrback(failed)

    def _state(self):
        self._prune()
        return json.dumps({"version": 1, "triplets": self.triplets, "clients": self.clients},
                          separators=(",", ":"))

    def stop(self):
        """At shutdown: what changed since the last save is written now, in this thread."""
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
            self._save_call = None
            try:
                write_atomically(self.path, self._state())
            except OSError as e:
                log.warn("greylist: could not write {path}: {error}", path=self.path, error=str(e))
