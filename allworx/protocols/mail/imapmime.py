# -*- test-case-name: allworx.tests.mail.test_imapmime -*-
"""
A message's MIME structure, read from its own octets as Dovecot 2.3 reads it,
and what IMAP's FETCH says of it: the parts' octets (BODY[section], RFC 3501
6.4.5), BODY and BODYSTRUCTURE, and ENVELOPE (RFC 3501 7.4.2).

`parse(data)` walks the message once (data has CRLF line ends) and gives the
root `Part`: where each part's header and body are, its Content-* fields
and, for a multipart, its parts. The reading follows Dovecot's so that a
client sees the same tree from either server:

- a header ends at its blank line, at the end of the data, or at a line that
  begins with `--` and an open boundary; the CRLF just before a boundary line
  is the boundary's, even when it is the header's blank line, and it counts
  in the body of the part around the cut one;
- a boundary line is one that begins with `--` and the boundary (the
  longest of the open ones it begins with; trailing text is allowed), and a
  part ends before the CRLF that precedes it; `--boundary--` closes its
  multipart, whose epilogue runs to the enclosing boundary or the end;
- a part is MIME when it is a multipart's part or has Content-Type or
  MIME-Version; a part that is not keeps none of its Content-* fields and is
  text/plain (message/rfc822 directly inside multipart/digest); the first
  Content-Type (and Content-ID, -Description, -Transfer-Encoding, -MD5,
  -Language, -Location) counts;
- multiparts and messages nest at most `MAX_NESTED` deep (a deeper one is
  application/octet-stream) and a message has at most `MAX_PARTS` parts.

Strings are written as Dovecot writes them: quoted unless they hold CR, LF,
an 8-bit octet or more than four quote or backslash characters (then a
literal); subjects and display names "for humans" (runs of white space one
space, CR and LF dropped, a literal when anything changed).
"""

import re

from allworx.protocols.mail.mimetext import (
    ENVELOPE_FIELDS, addresses, content_type, disposition, languages, mime_token)

MAX_NESTED = 100
MAX_PARTS = 10000

_EMPTY_BODY = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
_EMPTY_STRUCTURE = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'

MULTIPART, MESSAGE, TEXT, OPAQUE = "multipart", "message", "text", "opaque"


class Part:
    """One entity: data[start:body] its header (with the blank line), data[body:end] its body."""

    __slots__ = ("start", "body", "end", "fields", "kind", "mime", "children", "_content")

    def __init__(self, start):
        self.start = self.body = self.end = start
        self.fields = []            # [(lower-case name, raw value with its folds)]
        self.kind = TEXT            # MULTIPART, MESSAGE, TEXT, OPAQUE or None (another type)
        self.mime = False
        self.children = []
        self._content = None

    def field(self, name):
        """The first value of the field, or None."""
        for n, value in self.fields:
            if n == name:
                return value
        return None

    def content(self):
        """The part's Content-* data (none unless it is MIME), read once."""
        if self._content is None:
            self._content = _Content(self.fields if self.mime else ())
        return self._content


class _Content:
    """What BODYSTRUCTURE says of a part's Content-* fields."""

    __slots__ = ("type", "subtype", "params", "id", "description", "encoding", "md5",
                 "disposition", "disposition_params", "language", "location")

    def __init__(self, fields):
        self.type = self.subtype = self.id = self.description = self.encoding = None
        self.md5 = self.disposition = self.language = self.location = None
        self.params = self.disposition_params = ()
        for name, value in fields:
            if not name.startswith(b"content-"):
                continue
            what = name[8:]
            if what == b"type" and self.type is None:
                self.type, self.subtype, self.params = content_type(value)
            elif what == b"transfer-encoding" and self.encoding is None:
                self.encoding = mime_token(value)
            elif what == b"id" and self.id is None:
                self.id = value
            elif what == b"description" and self.description is None:
                self.description = value
            elif what == b"md5" and self.md5 is None:
                self.md5 = value
            elif what == b"disposition" and not self.disposition_params:
                # as Dovecot: a later one replaces one that had no parameters
                self.disposition, self.disposition_params = disposition(value)
            elif what == b"language" and self.language is None:
                self.language = languages(value)
            elif what == b"location" and self.location is None:
                self.location = value


# ---------------------------------------------------------------- reading

_MATCHERS = {}


def _matchers(boundaries):
    """
    (a line that begins with one, a CRLF line that does, {boundary: index}) for the open
    boundaries; the longest is tried first, and of equal ones the innermost counts.
    """
    found = _MATCHERS.get(boundaries)
    if found is None:
        either = b"|".join(re.escape(b) for b in sorted(set(boundaries), key=len, reverse=True))
        found = (re.compile(b"--(" + either + b")"), re.compile(b"\n--(" + either + b")"),
                 {b: i for i, b in enumerate(boundaries)})
        if len(_MATCHERS) >= 256:
            _MATCHERS.clear()
        _MATCHERS[boundaries] = found
    return found


def _boundary_at(data, at, boundaries):
    """The index of the longest open boundary the line at `at` begins with (after --), or None."""
    first, _, index = _matchers(boundaries)
    m = first.match(data, at)
    return None if m is None else index[m.group(1)]


def _scan(data, at, boundaries):
    """
    The first boundary line from the line start `at`, or None: (the boundary's index, where the
    part ends, where the line begins, False). The CRLF between is the boundary's.
    """
    if not boundaries:
        return None
    first, later, index = _matchers(boundaries)
    m = first.match(data, at)
    if m is not None:
        return index[m.group(1)], at, at, False
    m = later.search(data, at)
    if m is None:
        return None
    k = m.start()
    return index[m.group(1)], (k - 1 if k > at and data[k - 1] == 13 else k), k + 1, False


def _header(data, part, boundaries):
    """Read the part's header fields; its body's start, and the boundary line that cut it, if one did."""
    at, size, fields = part.start, len(data), part.fields
    name = start = None
    newline = 0                                 # the length of the line end before `at`
    while at < size:
        if boundaries and data.startswith(b"--", at):
            i = _boundary_at(data, at, boundaries)
            if i is not None:                   # the CRLF before the line is the boundary's
                cut = at - newline
                if name is not None:
                    fields.append((name, data[start:cut]))
                return cut, (i, cut, at, True)
        eol = data.find(b"\n", at)
        if eol < 0:
            end = nxt = size
        else:
            nxt = eol + 1
            end = eol - 1 if eol > at and data[eol - 1] == 13 else eol
        if end == at and eol >= 0:              # the blank line
            if name is not None:
                fields.append((name, data[start:at - newline]))
            return nxt, None
        if name is None or data[at] not in (32, 9):     # not a fold: a field of its own
            if name is not None:
                fields.append((name, data[start:at - newline]))
            colon = data.find(b":", at, end)
            if colon < 0:
                name = None                     # no colon: a name alone, no value
            else:
                name = data[at:colon].rstrip(b" \t").lower()
                start = colon + 1
                while start < end and data[start] in (32, 9):
                    start += 1
                if start == end and end > colon + 1:    # all white space: skip just one
                    start = colon + 2
        newline = nxt - end
        at = nxt
    if name is not None:
        fields.append((name, data[start:size - newline]))
    return size, None


def _kind(part, digest_parent):
    """(the part's kind, its boundary or None), from its Content-Type (read once, in content())."""
    has_type = part.field(b"content-type") is not None
    part.mime = part.mime or has_type or part.field(b"mime-version") is not None
    if not has_type:
        return (MESSAGE if digest_parent else TEXT), None
    c = part.content()
    kind = c.type.lower()
    if c.subtype is None:
        return (TEXT if kind == b"text" else None), None
    if kind == b"text":
        return TEXT, None
    if kind == b"message" and c.subtype.lower() == b"rfc822":
        return MESSAGE, None
    if kind != b"multipart":
        return None, None
    for name, value in c.params or ():
        if name.lower() == b"boundary":
            return MULTIPART, value
    return MULTIPART, None


def _end(data, hit):
    """
    Where an enclosing part ends at the boundary line `hit`: before the CRLF that precedes it,
    but after it when a header was cut there (Dovecot counts that CRLF in the cut part's
    parent, and so in every part around it up to the boundary's multipart).
    """
    if hit is None:
        return len(data)
    return hit[2] if hit[3] else hit[1]


def _read(data, part, boundaries, depth, count, digest_parent=False):
    """Read the part at part.start; the boundary line that ended it (see _scan), or None at the end."""
    part.body, hit = _header(data, part, boundaries)
    part.kind, boundary = _kind(part, digest_parent)
    if hit is None and boundaries and data.startswith(b"--", part.body):
        # a boundary right after the blank line: the blank line is its CRLF (unless the
        # boundary is the part's own, which Dovecot knows of by then)
        known = boundaries + (boundary,) if boundary is not None else boundaries
        i = _boundary_at(data, part.body, known)
        if i is not None and i < len(boundaries):
            blank = part.body - (2 if data[part.body - 2] == 13 else 1)
            hit = (i, blank, part.body, True)
            part.body = blank
    if part.kind in (MULTIPART, MESSAGE) and depth >= MAX_NESTED - 1:
        part.kind, boundary = OPAQUE, None
    if hit is not None:
        if part.kind == MESSAGE:                    # an enclosed message with nothing in it
            part.children.append(Part(part.body))
        part.end = part.body
        return hit
    if part.kind == MESSAGE:
        child = Part(part.body)
        part.children.append(child)
        count[0] += 1
        hit = _read(data, child, boundaries, depth + 1, count)
        part.end = _end(data, hit)
        return hit
    if part.kind == MULTIPART and boundary is not None:
        own = boundaries + (boundary,)
        mine = len(boundaries)
        digest = part.content().subtype.lower() == b"digest"
        hit = _scan(data, part.body, own)
        while hit is not None and hit[0] == mine:
            line = hit[2]
            eol = data.find(b"\n", line)
            if eol < 0:
                hit = None
                break
            if data.startswith(b"--", line + 2 + len(boundary)) or count[0] >= MAX_PARTS:
                hit = _scan(data, eol + 1, boundaries)     # the epilogue, to the enclosing boundary
                break
            child = Part(eol + 1)
            child.mime = True
            part.children.append(child)
            count[0] += 1
            hit = _read(data, child, own, depth + 1, count, digest)
        part.end = _end(data, hit)
        return hit
    hit = _scan(data, part.body, boundaries)
    part.end = hit[1] if hit is not None else len(data)
    return hit


def parse(data):
    """The message's root Part (data with CRLF line ends)."""
    root = Part(0)
    _read(data, root, (), 0, [1])
    return root


def parse_header(data):
    """The message's root Part with its header only (enough for ENVELOPE)."""
    root = Part(0)
    root.body = _header(data, root, ())[0]
    return root


# ---------------------------------------------------------------- sections

def find(root, numbers):
    """
    The part a section's numbers (1-based) name, or None, as Dovecot finds it: a number
    picks a multipart's part; a part that is not a multipart answers to 1, once; after a
    message/rfc822 part, the next number goes into its enclosed message.
    """
    part, once = root, False
    last = len(numbers) - 1
    for k, n in enumerate(numbers):
        if part.kind == MULTIPART:
            if not 1 <= n <= len(part.children):       # none at all in an empty multipart
                return None
            part, once = part.children[n - 1], False
        elif n == 1 and not once:
            once = True
        else:
            return None
        if part.kind == MESSAGE and k < last and part.children:
            part, once = part.children[0], False
    return part


def _message(root, numbers):
    """The message (the root, or one enclosed in a message/rfc822 part) numbers name, or None."""
    if not numbers:
        return root
    part = find(root, numbers)
    if part is None or part.kind != MESSAGE or not part.children:
        return None                 # only an enclosed message has a header and a text
    return part.children[0]


def header_start(root, numbers):
    """Where the header of the message numbers name begins, or None."""
    part = _message(root, numbers)
    return None if part is None else part.start


def section(data, root, numbers, what):
    """
    The octets of BODY[numbers.what] (what: None, "TEXT", "HEADER" or "MIME"), or None when
    the message has no such part or the part no such header or text (Dovecot answers {0}).
    """
    if what is None or what == "MIME":
        part = find(root, numbers)
        if part is None:
            return None
        return data[part.body:part.end] if what is None else data[part.start:part.body]
    part = _message(root, numbers)
    if part is None:
        return None
    if what == "TEXT":
        return data[part.body:part.end]
    return data[part.start:part.body]


# ---------------------------------------------------------------- writing

def string(value):
    """An IMAP string as Dovecot writes one; NIL for None."""
    if value is None:
        return b"NIL"
    escapes = 0
    for c in value:
        if c == 34 or c == 92:
            escapes += 1
            if escapes > 4:
                return b"{%d}\r\n%s" % (len(value), value)
        elif c == 13 or c == 10 or c >= 0x80:
            return b"{%d}\r\n%s" % (len(value), value)
    if escapes:
        value = value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + value + b'"'


def string_nolf(value):
    """A string with its CR and LF left out (a folded field's value)."""
    if value is not None and (b"\r" in value or b"\n" in value):
        value = value.replace(b"\r", b"").replace(b"\n", b"")
    return string(value)


def for_humans(value):
    """A subject or display name: CR and LF dropped, white space runs one space, ends trimmed."""
    out, lwsp, changed = bytearray(), True, False
    for c in value:
        if c == 32 or c == 9:
            if c == 9 or lwsp:
                changed = True
            if not lwsp:
                out.append(32)
            lwsp = True
        elif c == 13 or c == 10:
            changed = True
        else:
            if c == 0:
                c = 0x80
            if c >= 0x80 or c == 34 or c == 92:
                changed = True
            out.append(c)
            lwsp = False
    if lwsp and out:
        out.pop()
        changed = True
    if not changed:
        return b'"' + value + b'"'
    if not out:
        return b'""'
    return b"{%d}\r\n%s" % (len(out), bytes(out))


def _params(params, text):
    if params is None:
        params = ()
    if not params and not text:
        return b"NIL"
    out, charset = [], False
    for name, value in params:
        if text and name.lower() == b"charset":
            charset = True
        out.append(string(name))
        out.append(string(value))
    if text and not charset:
        out.append(b'"charset" "us-ascii"')
    return b"(" + b" ".join(out) + b")"


def _common(c):
    """Disposition, language and location, the extension data every part has."""
    if c.disposition is None:
        disp = b"NIL"
    else:
        disp = b"(" + string(c.disposition) + b" " + _params(c.disposition_params, False) + b")"
    lang = b"NIL" if not c.language else b"(" + b" ".join(string(x) for x in c.language) + b")"
    return b" " + disp + b" " + lang + b" " + string_nolf(c.location)


def _write(data, part, extended, out):
    c = part.content()
    if part.kind == MULTIPART:
        if part.children:
            for child in part.children:
                out.append(b"(")
                _write(data, child, extended, out)
                out.append(b")")
        else:
            out.append(_EMPTY_STRUCTURE if extended else _EMPTY_BODY)
        out.append(b" " + string(c.subtype or b""))
        if extended:
            out.append(b" " + _params(c.params, False) + _common(c))
        return
    text = False
    if part.kind == MESSAGE:
        out.append(b'"message" "rfc822"')
    elif part.kind == OPAQUE or (c.type is not None and c.type.lower() == b"multipart"):
        out.append(b'"application" "octet-stream"')     # a container read as a leaf
    elif c.type is None:
        out.append(b'"text" "plain"')
        text = True
    else:
        text = c.type.lower() == b"text"
        out.append(string(c.type) + b" " + string(c.subtype or b""))
    out.append(b" %s %s %s %s %d" % (
        _params(c.params, text), string_nolf(c.id), string_nolf(c.description),
        string(c.encoding) if c.encoding else b'"7bit"', part.end - part.body))
    if text:
        out.append(b" %d" % data.count(b"\n", part.body, part.end))
    elif part.kind == MESSAGE and part.children:
        child = part.children[0]
        out.append(b" (" + envelope(child) + b") (")
        _write(data, child, extended, out)
        out.append(b") %d" % data.count(b"\n", part.body, part.end))
    if extended:
        out.append(b" " + string_nolf(c.md5) + _common(c))


def _plain_7bit(root):
    """A message of one text/plain part in us-ascii and 7bit, with nothing else said of it."""
    if root.kind != TEXT or root.children:
        return False
    c = root.content()
    if c.subtype is not None and c.subtype.lower() != b"plain":
        return False
    if c.params and (c.params[0][0].lower() != b"charset" or c.params[0][1].lower() != b"us-ascii"):
        return False
    if c.encoding is not None and c.encoding.lower() != b"7bit":
        return False
    return all(v is None for v in (c.id, c.description, c.md5, c.disposition, c.language,
                                   c.location))


def structure(data, root, extended):
    """BODYSTRUCTURE's (extended) or BODY's parenthesized list for the message."""
    if not extended and _plain_7bit(root):
        # as Dovecot: such a message's BODY is written in lower case and one form
        c = root.content()
        return b'("text" %s ("charset" "us-ascii") NIL NIL "7bit" %d %d)' % (
            string(b"plain" if c.type is None else (c.subtype or b"").lower()),
            root.end - root.body, data.count(b"\n", root.body, root.end))
    out = [b"("]
    _write(data, root, extended, out)
    out.append(b")")
    return b"".join(out)


def _address_list(found):
    if not found:
        return b"NIL"
    out = [b"("]
    for name, route, mailbox, domain in found:
        out.append(b"(%s %s %s %s)" % (b"NIL" if name is None else for_humans(name),
                                       string(route), string(mailbox), string(domain)))
    out.append(b")")
    return b"".join(out)


def envelope(part):
    """ENVELOPE's fields (without the parentheses) from the part's header."""
    strings, lists = {}, {}
    for name, value in part.fields:
        if name in ENVELOPE_FIELDS:
            if ENVELOPE_FIELDS[name]:
                lists.setdefault(name, []).extend(addresses(value))
            else:
                strings[name] = value                   # the last one counts
    sender = lists.get(b"from")
    subject = strings.get(b"subject")
    return b" ".join((
        string_nolf(strings.get(b"date")),
        b"NIL" if subject is None else for_humans(subject),
        _address_list(sender),
        _address_list(lists.get(b"sender") or sender),
        _address_list(lists.get(b"reply-to") or sender),
        _address_list(lists.get(b"to")),
        _address_list(lists.get(b"cc")),
        _address_list(lists.get(b"bcc")),
        string_nolf(strings.get(b"in-reply-to")),
        string_nolf(strings.get(b"message-id"))))
