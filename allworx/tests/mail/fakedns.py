"""A fake twisted.names resolver for the inbound mail checks' tests (no network)."""

import socket

from twisted.internet import defer
from twisted.names import dns, error


class FakeResolver:
    """
    Answers from `records`: {(name, type): [value, ...]} with type "TXT",
    "A", "AAAA", "MX" ((preference, host)) or "PTR"; a name in `servfail`
    fails with SERVFAIL, one in `silent` never answers (its Deferred stays
    pending), any other missing name is NXDOMAIN. `asked` records each question.
    """

    def __init__(self, records=None, servfail=(), silent=()):
        self.records = {}
        for (name, rtype), values in (records or {}).items():
            self.add(name, rtype, *values)
        self.servfail = {n.lower() for n in servfail}
        self.silent = {n.lower() for n in silent}
        self.asked = []
        self.pending = []

    def add(self, name, rtype, *values):
        self.records.setdefault((name.lower().rstrip("."), rtype), []).extend(values)

    def _payload(self, rtype, value):
        if rtype == "TXT":
            if isinstance(value, str):
                value = value.encode()
            return dns.Record_TXT(*[value[i:i + 255] for i in range(0, len(value), 255)] or [b""])
        if rtype == "A":
            return dns.Record_A(value)
        if rtype == "AAAA":
            return dns.Record_AAAA(value)
        if rtype == "MX":
            return dns.Record_MX(value[0], value[1])
        return dns.Record_PTR(value)

    def _answer(self, name, rtype):
        name = name.decode() if isinstance(name, bytes) else name
        key = name.lower().rstrip(".")
        self.asked.append((key, rtype))
        if key in self.servfail:
            return defer.fail(error.DNSServerError("SERVFAIL"))
        if key in self.silent:
            d = defer.Deferred()
            self.pending.append(d)
            return d
        values = self.records.get((key, rtype))
        if values is None:
            if any(k[0] == key for k in self.records):
                return defer.succeed(([], [], []))      # the name exists, no such data
            return defer.fail(error.DNSNameError(key))
        code = getattr(dns, rtype)
        answers = [dns.RRHeader(name=key, type=code, payload=self._payload(rtype, v))
                   for v in values]
        return defer.succeed((answers, [], []))

    def lookupText(self, name, timeout=None):
        return self._answer(name, "TXT")

    def lookupAddress(self, name, timeout=None):
        return self._answer(name, "A")

    def lookupIPV6Address(self, name, timeout=None):
        return self._answer(name, "AAAA")

    def lookupMailExchange(self, name, timeout=None):
        return self._answer(name, "MX")

    def lookupPointer(self, name, timeout=None):
        return self._answer(name, "PTR")


def packed6(text):
    return socket.inet_pton(socket.AF_INET6, text)
