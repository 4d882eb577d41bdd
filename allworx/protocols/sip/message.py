# -*- test-case-name: allworx.tests.sip.test_message -*-
"""
SIP messages (RFC 3261 section 7, 20, 25) as values: parsing from bytes and
serializing back, with no sockets.

The parser accepts what the RFC's grammar and RFC 4475's torture tests
demand of a tolerant receiver: compact header names, header folding
(continuation lines), any case in header names, several values of a
multi-value header in one line or spread over several lines, arbitrary
whitespace around the colon. It refuses, with `SipParseError` naming the
problem, what cannot be served: no start line, a bad version, a missing
mandatory header, a Content-Length larger than the body (UDP) or not a
number, a message larger than `MAX_MESSAGE`.

Headers are kept as an ordered list of (canonical name, value) so that
relaying a message keeps everything the phones put in it.
"""

import itertools
import re

import attr

from allworx.protocols.sip.headervalues import (
    NameAddr, SipParseError, SipUri, Via, format_params, header_tag, parse_cseq, parse_params,
    split_hostport)

# What importers read from here (the header values are re-exported from headervalues).
__all__ = ["MAX_MESSAGE", "MAX_HEADERS", "COMPACT", "MULTI", "MANDATORY_REQUEST", "REASONS",
           "canonical", "split_commas", "SipMessage", "Request", "Response", "header_end", "parse",
           "make_response", "NameAddr", "SipParseError", "SipUri", "Via", "format_params",
           "header_tag", "parse_cseq", "parse_params", "split_hostport"]

MAX_MESSAGE = 65535
MAX_HEADERS = 200

COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
    "v": "Via", "o": "Event", "u": "Allow-Events", "r": "Refer-To",
    "x": "Session-Expires", "a": "Accept-Contact", "b": "Referred-By",
    "j": "Reject-Contact", "d": "Request-Disposition",
}

_SPECIAL = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version", "max-forwards": "Max-Forwards",
    "record-route": "Record-Route",
}

# Headers whose comma-separated values are separate entries (RFC 3261 7.3.1).
MULTI = frozenset(["Via", "Route", "Record-Route", "Contact", "Allow", "Supported",
                   "Require", "Proxy-Require", "Unsupported", "Allow-Events"])

MANDATORY_REQUEST = ("Via", "From", "To", "Call-ID", "CSeq")

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 183: "Session Progress",
    200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout", 413: "Request Entity Too Large", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event",
    500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
    513: "Message Too Large", 603: "Decline",
}

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_STATUS = re.compile(r"^SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?$", re.I)
_REQUEST = re.compile(r"^(\S+) (\S+) SIP/2\.0$", re.I)


_METHOD_NAMES = {m: m for m in ("REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO",
                                 "SUBSCRIBE", "NOTIFY", "REFER", "PRACK", "UPDATE", "MESSAGE", "PUBLISH")}
_CANONICAL = {}
_VALID_NAMES = {}     # header names as written (before the colon) already checked


def canonical(name):
    """The canonical spelling of a header name (compact and any case accepted)."""
    hit = _CANONICAL.get(name)
    if hit is not None:
        return hit
    out = _canonical(name)
    if len(_CANONICAL) < 4096:
        _CANONICAL[name] = out
    return out


def _canonical(name):
    low = name.strip().lower()
    if low in COMPACT:
        return COMPACT[low]
    if low in _SPECIAL:
        return _SPECIAL[low]
    return "-".join(p[:1].upper() + p[1:] for p in low.split("-"))


def split_commas(value):
    """Split a header value at commas that are outside quotes and <...>."""
    if "," not in value:
        return [value.strip()] if value.strip() else []
    if '"' not in value and "<" not in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    out, cur, quote, angle, i = [], [], False, False, 0
    while i < len(value):
        ch = value[i]
        if quote:
            if ch == "\\" and i + 1 < len(value):
                cur.append(value[i:i + 2])
                i += 2
                continue
            if ch == '"':
                quote = False
        elif ch == '"':
            quote = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            out.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    last = "".join(cur).strip()
    if last or not out:
        out.append(last)
    return [v for v in out if v]


@attr.s(slots=True)
class SipMessage:
    """Common part of requests and responses: ordered headers and a body."""

    headers = attr.ib(factory=list)   # [(canonical name, value)]
    body = attr.ib(default=b"")
    # Canonical name -> first value, made from `headers` when first asked (or
    # by `parse`) and dropped by every change made through the methods below:
    # a message's headers are read a dozen times on its way through the core.
    # Change `headers` only through them (or `replace_first`).
    _first = attr.ib(default=None, init=False, eq=False, repr=False)

    def get(self, name, default=None):
        """The first value of a header, or `default`."""
        first = self._first
        if first is None:
            first = self._first = {}
            for k, v in self.headers:
                if k not in first:
                    first[k] = v
        hit = first.get(name)
        if hit is None:
            hit = first.get(_CANONICAL.get(name) or canonical(name))
            if hit is None:
                return default
        return hit

    def replace_first(self, name, value):
        """Put `value` in place of the first value of header `name` (canonical; it must be there)."""
        headers = self.headers
        for i, (k, _) in enumerate(headers):
            if k == name:
                headers[i] = (name, value)
                break
        else:
            raise KeyError(name)
        if self._first is not None:
            self._first[name] = value

    def get_all(self, name):
        name = canonical(name)
        return [v for k, v in self.headers if k == name]

    def set(self, name, value):
        """Replace every value of a header with one value (in place of the first)."""
        name = canonical(name)
        out, done = [], False
        for k, v in self.headers:
            if k == name:
                if not done:
                    out.append((k, value))
                    done = True
            else:
                out.append((k, v))
        if not done:
            out.append((name, value))
        self.headers = out
        self._first = None

    def remove(self, name):
        name = canonical(name)
        self.headers = [(k, v) for k, v in self.headers if k != name]
        self._first = None

    def add(self, name, value, first=False):
        """Add a value; `first` puts it before the existing ones of that name (Via)."""
        name = canonical(name)
        self._first = None
        if first:
            for i, (k, _) in enumerate(self.headers):
                if k == name:
                    self.headers.insert(i, (name, value))
                    return
            self.headers.insert(0, (name, value))
        else:
            self.headers.append((name, value))

    def pop_first(self, name):
        """Remove and return the first value of a header (None if absent)."""
        name = canonical(name)
        for i, (k, v) in enumerate(self.headers):
            if k == name:
                del self.headers[i]
                self._first = None
                return v
        return None

    @property
    def call_id(self):
        return self.get("Call-ID", "")

    @property
    def cseq(self):
        """(number, METHOD) from CSeq."""
        return parse_cseq(self.get("CSeq", ""))

    @property
    def vias(self):
        return self.get_all("Via")

    @property
    def top_via(self):
        return Via.parse(self.get("Via", ""))

    @property
    def from_tag(self):
        return header_tag(self.get("From", ""))

    @property
    def to_tag(self):
        return header_tag(self.get("To", ""))

    def to_bytes(self):
        """The message on the wire, with a Content-Length that matches the body."""
        body = self.body
        lines = [self.start_line()]
        lines += [f"{k}: {v}" for k, v in self.headers if k != "Content-Length"]
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        return "\r\n".join(lines).encode("utf-8") + body


@attr.s(slots=True)
class Request(SipMessage):
    """A SIP request: method, Request-URI, headers, body."""

    method = attr.ib(default="OPTIONS", kw_only=True)
    uri = attr.ib(default="", kw_only=True)
    # Bytes it arrived in (0 when made here), and whether the sender proved
    # who it is (digest, or a registered phone's own address): the core
    # bounds what it answers an unproven sender over UDP by the size.
    size = attr.ib(default=0, kw_only=True, eq=False, repr=False)
    authenticated = attr.ib(default=False, kw_only=True, eq=False, repr=False)
    # The name of the user who proved it (set by the registrar's admission of an INVITE).
    caller = attr.ib(default=None, kw_only=True, eq=False, repr=False)
    # The [site] whose server sent it, trusted by its tunnel address (sites.py).
    site = attr.ib(default=None, kw_only=True, eq=False, repr=False)

    def start_line(self):
        return "%s %s SIP/2.0" % (self.method, self.uri)

    is_request = True


@attr.s(slots=True)
class Response(SipMessage):
    """A SIP response: status code, reason, headers, body."""

    code = attr.ib(default=200, kw_only=True)
    reason = attr.ib(default="", kw_only=True)

    def start_line(self):
        return "SIP/2.0 %d %s" % (self.code, self.reason or REASONS.get(self.code, "Unknown"))

    is_request = False


def _split_head(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    return head, body, bool(sep)


def header_end(buffer):
    """Index just past the blank line ending the header block, or -1 (stream framing)."""
    a = buffer.find(b"\r\n\r\n")
    b = buffer.find(b"\n\n")
    cands = [x + 4 for x in [a] if x >= 0] + [x + 2 for x in [b] if x >= 0]
    return min(cands) if cands else -1


def _unfold(text):
    """The start line and the header lines of any line ends, continuation lines joined."""
    raw_lines = text.split("\n")
    lines = [raw_lines[0]]
    for line in raw_lines[1:]:
        if line[-1:] == "\r":
            line = line[:-1]
        if line[:1] in (" ", "\t"):
            if len(lines) == 1:
                raise SipParseError("continuation line before any header")
            lines[-1] += " " + line.strip()
        elif line and not line.isspace():
            lines.append(line)
    return lines


class _Folded(Exception):
    """A header line starts with white space: the block must be unfolded first."""


def _read_headers(lines):
    """
    ([(name, value)], [Content-Length values], {name: first value}, (names
    of multi-value headers present with no value)) of `lines` (the start
    line first, then the header lines). Raises _Folded at a continuation line.
    """
    if len(lines) > MAX_HEADERS + 1:
        lines = [line for line in lines if line and not line.isspace()]
        if len(lines) > MAX_HEADERS + 1:
            raise SipParseError("more than %d header lines" % MAX_HEADERS)
    headers = []
    append = headers.append
    lengths = []
    first = {}          # the message's index of first values (SipMessage.get)
    empty = ()          # multi-value headers present with no value
    valid, multi = _VALID_NAMES, MULTI
    for line in itertools.islice(lines, 1, None):
        name, sep, value = line.partition(":")
        cname = valid.get(name)
        if cname is None:
            if line[:1] in (" ", "\t"):
                raise _Folded()
            stripped = name.strip()
            if not sep or not stripped or not _TOKEN.match(stripped):
                if not line or line.isspace():
                    continue        # a blank line (of white space other than SP and HTAB)
                raise SipParseError("bad header line %r" % line[:80])
            cname = canonical(stripped)
            if len(valid) < 4096:
                valid[name] = cname
        value = value.strip()
        if cname == "Content-Length":
            lengths.append(value)
        elif cname in multi:
            if "," in value:
                values = split_commas(value)
                for v in values:
                    append((cname, v))
                if not values:
                    empty += (cname,)
                elif cname not in first:
                    first[cname] = values[0]
            elif value:
                append((cname, value))
                if cname not in first:
                    first[cname] = value
            else:
                empty += (cname,)
        else:
            append((cname, value))
            if cname not in first:
                first[cname] = value
    return headers, lengths, first, empty


def parse(data, stream=False):
    """
    A `Request` or `Response` from one datagram (or one framed stream
    message when `stream` is true: Content-Length is then required).
    Raises SipParseError naming what is wrong.
    """
    if len(data) > MAX_MESSAGE:
        raise SipParseError("message larger than %d bytes" % MAX_MESSAGE)
    size = len(data)
    data = data.lstrip(b"\r\n")
    head, body, complete = _split_head(data)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("header is not UTF-8")
    lines = text.split("\r\n")
    if text.count("\n") != len(lines) - 1:
        lines = _unfold(text)           # bare LF line ends
    start = lines[0].strip()
    if not start:
        raise SipParseError("no start line")
    try:
        headers, lengths, first, empty = _read_headers(lines)
    except _Folded:
        lines = _unfold(text)           # continuation lines (RFC 3261 7.3.1)
        headers, lengths, first, empty = _read_headers(lines)
    m = _STATUS.match(start) if start[:4].upper() == "SIP/" else None
    if m:
        msg = Response(headers, code=int(m.group(1)), reason=(m.group(2) or "").strip())
    else:
        m = _REQUEST.match(start)
        if not m:
            raise SipParseError("bad start line %r" % start[:80])
        method, uri = m.group(1), m.group(2)
        known = _METHOD_NAMES.get(method)       # one string a method (Timer J's keys hold it)
        if known is not None:
            method = known
        elif not _TOKEN.match(method):
            raise SipParseError("bad method %r" % method[:20])
        if ":" not in uri:
            raise SipParseError("bad Request-URI %r" % uri[:80])
        msg = Request(headers, method=method, uri=uri, size=size)
    if lengths:
        if len(lengths) > 1 and len(set(lengths)) > 1:
            raise SipParseError("conflicting Content-Length headers")
        if not lengths[0].isdigit() or len(lengths[0]) > 8:
            raise SipParseError("bad Content-Length %r" % lengths[0])
        n = int(lengths[0])
        if n > len(body):
            raise SipParseError("Content-Length %d larger than the body (%d)" % (n, len(body)))
        body = body[:n]                     # Content-Length is written afresh by to_bytes
    elif stream:
        raise SipParseError("Content-Length missing on a stream transport")
    msg.body = body
    msg._first = first
    for name in MANDATORY_REQUEST:
        if name not in first and name not in empty:
            raise SipParseError("missing %s header" % name)
    cseq = msg.cseq  # validates
    if msg.is_request and cseq[1] != msg.method.upper():
        raise SipParseError("CSeq method differs from the request's")
    mf = msg.get("Max-Forwards")
    if mf is not None and (not mf.isdigit() or int(mf) > 255):
        raise SipParseError("bad Max-Forwards %r" % mf)
    return msg


_COPIED = frozenset(("Via", "From", "To", "Call-ID", "CSeq"))
_COPIED_WITH_ROUTES = _COPIED | {"Record-Route"}      # 1xx but 100, and 2xx


def make_response(request, code, reason=None, to_tag=None, extra=()):
    """A response to `request` copying Via, From, To, Call-ID, CSeq (RFC 3261 8.2.6)."""
    copied = _COPIED_WITH_ROUTES if 100 < code < 300 else _COPIED
    headers = [kv for kv in request.headers if kv[0] in copied]
    if to_tag is not None and code != 100:
        for i, (k, v) in enumerate(headers):
            if k == "To" and "tag=" not in v.lower():
                headers[i] = (k, "%s;tag=%s" % (v, to_tag))
    resp = Response(headers, code=code, reason=reason or REASONS.get(code, "Unknown"))
    for k, v in extra:
        resp.add(k, v)
    return resp
