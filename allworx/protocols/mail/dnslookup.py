# -*- test-case-name: allworx.tests.mail.test_spf -*-
"""
DNS questions of the inbound mail checks, asked through an injected
twisted.names resolver (the mail service's `own_resolver`), never blocking.

Each function fires with a list of answers; an empty list is a *void*
lookup (NXDOMAIN, or the name exists without data of that type), which SPF
counts. Timeouts, SERVFAIL and other failures of the DNS itself fail with
`TempError` (SPF/DMARC/DKIM "temperror", never a reason to reject).
"""

import socket

from twisted.internet import defer
from twisted.names import dns, error

_VOID = (error.DNSNameError, error.AuthoritativeDomainError)   # NXDOMAIN


class TempError(Exception):
    """The DNS did not answer (timeout, SERVFAIL, refused...)."""


def _records(result, rtype):
    answers = result[0] if isinstance(result, tuple) else result
    return [rr.payload for rr in answers if rr.type == rtype]


def _failed(failure, name):
    if failure.check(*_VOID):
        return []
    if failure.check(defer.CancelledError):
        raise TempError("%s: no answer in time" % name)
    raise TempError("%s: %s" % (name, failure.getErrorMessage() or failure.type.__name__))


def _ask(method, name, rtype, convert):
    try:
        d = method(name)
    except Exception as e:       # a name the resolver refuses to ask (too long...)
        return defer.fail(TempError("%s: %s" % (name, e)))
    d.addCallbacks(lambda result: [convert(p) for p in _records(result, rtype)],
                   _failed, errbackArgs=(name,))
    return d


def txt(resolver, name):
    """The TXT records of `name`, each as one str (its strings joined)."""
    return _ask(resolver.lookupText, name, dns.TXT,
                lambda p: b"".join(p.data).decode("utf-8", "replace"))


def addresses_v4(resolver, name):
    return _ask(resolver.lookupAddress, name, dns.A, lambda p: p.dottedQuad())


def addresses_v6(resolver, name):
    return _ask(resolver.lookupIPV6Address, name, dns.AAAA,
                lambda p: socket.inet_ntop(socket.AF_INET6, p.address))


def addresses(resolver, name, version):
    """The A (version 4) or AAAA (version 6) records of `name` as text."""
    return (addresses_v4 if version == 4 else addresses_v6)(resolver, name)


def mx(resolver, name):
    """The exchanges of `name` as (preference, host) pairs."""
    return _ask(resolver.lookupMailExchange, name, dns.MX,
                lambda p: (p.preference, str(p.name).rstrip(".")))


def ptr(resolver, name):
    """The PTR names at `name` (a reverse name such as 4.3.2.1.in-addr.arpa)."""
    return _ask(resolver.lookupPointer, name, dns.PTR, lambda p: str(p.name).rstrip("."))
