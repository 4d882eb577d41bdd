# -*- test-case-name: allworx.tests.mail.test_spf -*-
"""
SPF (RFC 7208): may this address send mail for that domain?

An evaluator of our own over an injected twisted.names resolver (all
lookups are Deferreds, the reactor never waits): the mechanisms all, include,
a, mx, ptr, ip4, ip6 and exists, the modifiers redirect (and exp, accepted and
not used), macros (RFC 7208 section 7), the limit of 10 lookups that cost DNS
(include, a, mx, ptr, exists, redirect), of 10 MX and PTR names each, and of
two void lookups. `check` judges MAIL FROM, or the HELO name when MAIL FROM is
empty (the null sender of bounces).

Results: pass, fail, softfail, neutral, none, permerror, temperror.
"""

import ipaddress
import re
import urllib.parse

import attr
from twisted.internet import defer

from allworx.protocols.mail import dnslookup
from allworx.protocols.mail.dnslookup import TempError

MAX_LOOKUPS = 10
MAX_VOID = 2
MAX_NAMES = 10          # MX hosts of one mx, names of one ptr
MAX_DEPTH = 10
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_MODIFIER = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$")
_MECHANISM = re.compile(r"^([+~?-]?)([A-Za-z][A-Za-z0-9_.-]*)(.*)$")
_DUAL_CIDR = re.compile(r"^(.*?)(?:/(\d+))?(?://(\d+))?$")
_MACRO = re.compile(r"%(?:\{([A-Za-z])(\d*)(r?)([.\-+,/_=]*)\}|(.)|$)")


class PermError(Exception):
    """The record is broken, or too costly to evaluate."""


@attr.s(frozen=True, slots=True)
class SpfResult:
    """The outcome: result word, identity checked ("mailfrom" | "helo"), its domain and sender."""

    result = attr.ib()
    identity = attr.ib()
    domain = attr.ib()
    sender = attr.ib()
    reason = attr.ib(default="")

    def auth_property(self):
        """The Authentication-Results property: `smtp.mailfrom=...` or `smtp.helo=...`."""
        if self.identity == "helo":
            return "smtp.helo=%s" % self.domain
        return "smtp.mailfrom=%s" % self.sender


def valid_domain(name):
    """True for a multi-label domain name fit to be asked about."""
    name = name.rstrip(".")
    labels = name.split(".")
    return (0 < len(name) <= 253 and len(labels) >= 2 and
            all(0 < len(label) <= 63 and not re.search(r"[\s\x00-\x1f\x7f]", label)
                for label in labels))


def _ip(text):
    ip = ipaddress.ip_address(text)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def reverse_name(ip):
    """The in-addr.arpa / ip6.arpa name of an address."""
    return _ip(str(ip)).reverse_pointer


class _Evaluation:
    """One check_host run with its counters (lookups are shared by includes and redirects)."""

    def __init__(self, resolver, ip, helo):
        self.resolver = resolver
        self.ip = _ip(ip)
        self.helo = helo or "unknown"
        self.lookups = 0
        self.void = 0

    # ------------------------------------------------------------ limits

    def _count(self):
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise PermError("more than %d DNS lookups" % MAX_LOOKUPS)

    def _non_void(self, answers):
        if not answers:
            self.void += 1
            if self.void > MAX_VOID:
                raise PermError("more than %d void lookups" % MAX_VOID)
        return answers

    # ------------------------------------------------------------ macros

    def expand(self, spec, domain, sender):
        """A domain-spec with its macros expanded (PermError when malformed)."""
        local, _, sender_domain = sender.rpartition("@")
        values = {"s": sender, "l": local or "postmaster", "o": sender_domain, "d": domain,
                  "p": "unknown", "h": self.helo,
                  "v": "in-addr" if self.ip.version == 4 else "ip6",
                  "i": str(self.ip) if self.ip.version == 4 else
                  ".".join(self.ip.exploded.replace(":", ""))}
        out, pos = [], 0
        for m in _MACRO.finditer(spec):
            out.append(spec[pos:m.start()])
            pos = m.end()
            letter, digits, reverse, delimiters, other = m.groups()
            if letter is None:
                if other is None or other not in "%_-":
                    raise PermError("bad macro in %r" % spec)
                out.append({"%": "%", "_": " ", "-": "%20"}[other])
                continue
            value = values.get(letter.lower())
            if value is None:
                raise PermError("unknown macro %%{%s} in %r" % (letter, spec))
            parts = re.split("[%s]" % re.escape(delimiters or "."), value)
            if reverse:
                parts.reverse()
            if digits:
                if int(digits) == 0:
                    raise PermError("macro keeps zero labels in %r" % spec)
                parts = parts[-int(digits):]
            value = ".".join(parts)
            if letter.isupper():
                value = urllib.parse.quote(value, safe="-._~")
            out.append(value)
        out.append(spec[pos:])
        name = "".join(out).rstrip(".")
        while len(name) > 253 and "." in name:
            name = name.split(".", 1)[1]
        return name

    # ------------------------------------------------------------ the record

    @defer.inlineCallbacks
    def check_host(self, domain, sender, depth=0):
        """(result word, reason) for `domain` (RFC 7208 section 4)."""
        if depth > MAX_DEPTH:
            raise PermError("includes nested too deep")
        if not valid_domain(domain):
            return "none", "no valid domain"
        records = yield dnslookup.txt(self.resolver, domain)
        spf = [r for r in records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
        if not spf:
            return "none", "no SPF record for %s" % domain
        if len(spf) > 1:
            raise PermError("%s has %d SPF records" % (domain, len(spf)))
        directives, redirect = self._parse(spf[0])
        for qualifier, name, arg, term in directives:
            matched = yield self._mechanism(name, arg, domain, sender, depth)
            if matched:
                return _QUALIFIERS[qualifier or "+"], "%s matched %s" % (domain, term)
        if redirect is not None:
            self._count()
            target = self.expand(redirect, domain, sender)
            result, reason = yield self.check_host(target, sender, depth + 1)
            if result == "none":
                raise PermError("redirect to %s, which has no SPF record" % target)
            return result, reason
        return "neutral", "%s: no mechanism matched" % domain

    def _parse(self, record):
        directives, redirect, exp = [], None, None
        for term in record.split()[1:]:
            mod = _MODIFIER.match(term)
            if mod and not re.match(r"^[+~?-]?(a|mx|ptr|ip4|ip6|include|exists|all)[:/]",
                                    term, re.I):
                name = mod.group(1).lower()
                if name in ("redirect", "exp"):
                    if (redirect if name == "redirect" else exp) is not None:
                        raise PermError("two %s modifiers" % name)
                    if name == "redirect":
                        redirect = mod.group(2)
                    else:
                        exp = mod.group(2)
                continue
            m = _MECHANISM.match(term)
            if not m or m.group(2).lower() not in _MECHANISMS:
                raise PermError("unknown term %r" % term)
            qualifier, name, arg = m.group(1), m.group(2).lower(), m.group(3)
            if arg and arg[0] not in ":/":
                raise PermError("bad term %r" % term)
            if name == "all" and arg:
                raise PermError("bad term %r" % term)
            if name in ("include", "exists", "ip4", "ip6") and not arg.startswith(":"):
                raise PermError("%s needs an argument" % name)
            directives.append((qualifier, name, arg, term))
        if any(name == "all" for _, name, _, _ in directives):
            redirect = None         # RFC 7208 6.1: ignored when there is an all
        return directives, redirect

    # ------------------------------------------------------------ mechanisms

    def _mechanism(self, name, arg, domain, sender, depth):
        if name == "all":
            return defer.succeed(True)
        if name in ("ip4", "ip6"):
            return defer.succeed(self._ip_match(name, arg[1:]))
        return getattr(self, "_m_" + name)(arg, domain, sender, depth)

    def _ip_match(self, name, text):
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise PermError("bad %s:%s" % (name, text))
        if (network.version == 4) != (name == "ip4") or "/" in text and \
                not text.rsplit("/", 1)[1].isdigit():
            raise PermError("bad %s:%s" % (name, text))
        return network.version == self.ip.version and self.ip in network

    def _target(self, arg, domain, sender):
        """(name, prefix length for the client's family) of a/mx/ptr's `[:domain][/c4][//c6]`."""
        m = _DUAL_CIDR.match(arg)
        spec, c4, c6 = m.groups()
        if spec and not spec.startswith(":"):
            raise PermError("bad argument %r" % arg)
        prefix = int(c4 if self.ip.version == 4 else c6) if (c4 if self.ip.version == 4 else c6) \
            else (32 if self.ip.version == 4 else 128)
        if (c4 and int(c4) > 32) or (c6 and int(c6) > 128):
            raise PermError("bad prefix length in %r" % arg)
        name = self.expand(spec[1:], domain, sender) if spec else domain
        return name, prefix

    def _within(self, addresses, prefix):
        network = ipaddress.ip_network("%s/%d" % (self.ip, prefix), strict=False)
        for text in addresses:
            try:
                if _ip(text) in network:
                    return True
            except ValueError:
                continue
        return False

    @defer.inlineCallbacks
    def _m_include(self, arg, domain, sender, depth):
        self._count()
        target = self.expand(arg[1:], domain, sender)
        try:
            result, _ = yield self.check_host(target, sender, depth + 1)
        except TempError:
            raise
        if result == "pass":
            return True
        if result in ("fail", "softfail", "neutral"):
            return False
        raise PermError("include:%s gave %s" % (target, result))

    @defer.inlineCallbacks
    def _m_a(self, arg, domain, sender, depth):
        self._count()
        name, prefix = self._target(arg, domain, sender)
        found = self._non_void((yield dnslookup.addresses(self.resolver, name, self.ip.version)))
        return self._within(found, prefix)

    @defer.inlineCallbacks
    def _m_mx(self, arg, domain, sender, depth):
        self._count()
        name, prefix = self._target(arg, domain, sender)
        hosts = self._non_void((yield dnslookup.mx(self.resolver, name)))
        if len(hosts) > MAX_NAMES:
            raise PermError("%s has more than %d MX records" % (name, MAX_NAMES))
        for _, host in sorted(hosts):
            found = yield dnslookup.addresses(self.resolver, host, self.ip.version)
            if self._within(found, prefix):
                return True
        return False

    @defer.inlineCallbacks
    def _m_ptr(self, arg, domain, sender, depth):
        self._count()
        target, _ = self._target(arg, domain, sender)
        target = target.lower()
        try:
            names = yield dnslookup.ptr(self.resolver, reverse_name(self.ip))
        except TempError:
            return False            # RFC 7208 5.5: a DNS error here is no match
        for host in names[:MAX_NAMES]:
            host = host.lower()
            if host != target and not host.endswith("." + target):
                continue
            try:
                found = yield dnslookup.addresses(self.resolver, host, self.ip.version)
            except TempError:
                continue
            if self._within(found, 128 if self.ip.version == 6 else 32):
                return True
        return False

    @defer.inlineCallbacks
    def _m_exists(self, arg, domain, sender, depth):
        self._count()
        name = self.expand(arg[1:], domain, sender)
        found = self._non_void((yield dnslookup.addresses_v4(self.resolver, name)))
        return bool(found)


@defer.inlineCallbacks
def check_host(resolver, ip, domain, sender, helo=None):
    """The result word and reason for one identity (RFC 7208 check_host())."""
    evaluation = _Evaluation(resolver, ip, helo)
    try:
        result = yield evaluation.check_host(domain.rstrip(".").lower(), sender)
    except PermError as e:
        return "permerror", str(e)
    except TempError as e:
        return "temperror", str(e)
    return result


@defer.inlineCallbacks
def check(resolver, ip, helo, mail_from):
    """
    The SpfResult of a message: MAIL FROM's domain, or the HELO name when
    MAIL FROM is empty (RFC 7208 2.4: the sender is then postmaster@HELO).
    """
    helo = (helo or "").strip().rstrip(".")
    if mail_from:
        local, at, domain = mail_from.rpartition("@")
        sender = mail_from if at and local else "postmaster@%s" % domain
        identity = "mailfrom"
    else:
        domain, sender, identity = helo, "postmaster@%s" % helo, "helo"
    result, reason = yield check_host(resolver, ip, domain, sender, helo)
    return SpfResult(result, identity, domain.lower(), sender, reason)
