# -*- test-case-name: allworx.tests.sip.test_message -*-
"""
Values inside SIP header fields (RFC 3261 section 20, 25): Via, URIs,
name-addr values with their parameters, CSeq, tags; and `SipParseError`,
which names what is wrong with any of them. `message` re-exports them all.

What phones send again and again (their Via's sent-by, From/To texts,
CSeq texts) is read through small memos of plain strings and tuples.
"""

import re

import attr


class SipParseError(ValueError):
    """The bytes are not a SIP message this server can serve; the text says why."""



_CSEQ_MEMO = {}       # CSeq text -> (number, METHOD): the same few texts come again and again


_TAG_MEMO = {}        # From/To text -> its tag: read several times a message, the same text twice a REGISTER


def header_tag(value):
    """The `tag` parameter of a From or To value (None without one)."""
    try:
        return _TAG_MEMO[value]
    except KeyError:
        pass
    tag = NameAddr.parse(value).params.get("tag")
    if len(_TAG_MEMO) > 4096:
        _TAG_MEMO.clear()
    _TAG_MEMO[value] = tag
    return tag


def parse_cseq(value):
    hit = _CSEQ_MEMO.get(value)
    if hit is not None:
        return hit
    parsed = _parse_cseq(value)
    if len(_CSEQ_MEMO) > 4096:
        _CSEQ_MEMO.clear()
    _CSEQ_MEMO[value] = parsed
    return parsed


def _parse_cseq(value):
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10:
        raise SipParseError("bad CSeq %r" % value)
    number = int(parts[0])
    if number >= 2 ** 31:
        raise SipParseError("CSeq number too large")
    return number, parts[1].upper()


# ---------------------------------------------------------------- header values

def parse_params(text):
    """`;a=b;c` -> {'a': 'b', 'c': None} (names lower-cased)."""
    out = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        k, sep, v = part.partition("=")
        out[k.strip().lower()] = v.strip().strip('"') if sep else None
    return out


def format_params(params):
    return "".join(";%s" % k if v is None else ";%s=%s" % (k, v) for k, v in params.items())


_VIA = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;]+?)\s*(;.*)?$", re.I)
# Via text -> Via (frozen; a message's Via is read often). Small, so what it holds dies
# young: at 8,192 thousands of Vias a second reached the collector's older generations.
_VIA_MEMO = {}
VIA_MEMO_SIZE = 1024
_SENT_BY = {}          # sent-by text -> (host, port)


@attr.s(frozen=True, slots=True)
class Via:
    """One Via value: transport, sent-by host and port, parameters."""

    transport = attr.ib()
    host = attr.ib()
    port = attr.ib()
    params = attr.ib(factory=dict, hash=False)

    @classmethod
    def parse(cls, value):
        hit = _VIA_MEMO.get(value)
        if hit is not None:
            return hit
        return cls.remember(value, cls._parse(value))

    @staticmethod
    def remember(value, via):
        """Keep `via` as what parsing the text `value` gives; returns it."""
        if len(_VIA_MEMO) > VIA_MEMO_SIZE:
            _VIA_MEMO.clear()
        _VIA_MEMO[value] = via
        return via

    @classmethod
    def _parse(cls, value):
        value = value.strip()
        if value[:8] == "SIP/2.0/":
            # "SIP/2.0/UDP host:port;params" read without the pattern (gives what it gives).
            transport, sp, rest = value[8:].partition(" ")
            if sp and transport.isascii() and transport.isalpha() and rest \
                    and " " not in rest and "\t" not in rest:
                sent_by, _, params = rest.partition(";")
                # A phone's sent-by is the same at every message: read once, and one
                # host string for all of them (Timer J's keys hold it).
                hostport = _SENT_BY.get(sent_by)
                if hostport is None:
                    hostport = split_hostport(sent_by)
                    if len(_SENT_BY) > 4096:
                        _SENT_BY.clear()
                    _SENT_BY[sent_by] = hostport
                return cls(transport.upper(), hostport[0], hostport[1], parse_params(params))
        m = _VIA.match(value)
        if not m:
            raise SipParseError("bad Via %r" % value[:80])
        sent_by = m.group(2).strip()
        host, port = split_hostport(sent_by)
        return cls(m.group(1).upper(), host, port, parse_params(m.group(3) or ""))

    @property
    def branch(self):
        return self.params.get("branch") or ""

    def format(self):
        hp = self.host if self.port is None else "%s:%d" % (self.host, self.port)
        return "SIP/2.0/%s %s%s" % (self.transport, hp, format_params(self.params))


_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:_]+$")


def split_hostport(text):
    """`host[:port]` -> (host, port or None); raises SipParseError."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError("bad IPv6 reference %r" % text)
        host, rest = text[:end + 1], text[end + 1:]
    else:
        host, _, port = text.partition(":")
        rest = ":" + port if _ else ""
    if not host or not _HOST.match(host):
        raise SipParseError("bad host %r" % text[:80])
    if rest:
        port = rest[1:]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SipParseError("bad port %r" % text[:80])
        return host, int(port)
    return host, None


@attr.s(frozen=True, slots=True)
class SipUri:
    """A sip: URI: user, host, port, parameters."""

    user = attr.ib()
    host = attr.ib()
    port = attr.ib(default=None)
    params = attr.ib(factory=dict, hash=False)
    scheme = attr.ib(default="sip")

    @classmethod
    def parse(cls, text):
        text = text.strip()
        scheme, sep, rest = text.partition(":")
        if not sep or scheme.lower() not in ("sip", "sips"):
            raise SipParseError("not a SIP URI: %r" % text[:80])
        rest = rest.split("?", 1)[0]
        main, _, params = rest.partition(";")
        user, at, hostport = main.rpartition("@")
        if not at:
            user, hostport = "", main
        user = user.split(":", 1)[0]
        host, port = split_hostport(hostport)
        return cls(user, host, port, parse_params(params), scheme.lower())

    def format(self):
        user = self.user + "@" if self.user else ""
        hp = self.host if self.port is None else "%s:%d" % (self.host, self.port)
        return "%s:%s%s%s" % (self.scheme, user, hp, format_params(self.params))


@attr.s(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route value: display name, URI text, header parameters."""

    display = attr.ib()
    uri = attr.ib()
    params = attr.ib(factory=dict, hash=False)

    @classmethod
    def parse(cls, value):
        value = value.strip()
        if value == "*":
            return cls("", "*", {})
        lt = value.find("<")
        if lt >= 0:
            gt = value.find(">", lt)
            if gt < 0:
                raise SipParseError("unclosed < in %r" % value[:80])
            display = value[:lt].strip().strip('"')
            return cls(display, value[lt + 1:gt].strip(), parse_params(value[gt + 1:]))
        uri, _, params = value.partition(";")
        return cls("", uri.strip(), parse_params(params))

    def format(self):
        disp = '"%s" ' % self.display if self.display else ""
        return "%s<%s>%s" % (disp, self.uri, format_params(self.params))
