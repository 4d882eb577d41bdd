# -*- test-case-name: allworx.tests.mail.test_imapsearch -*-
"""
SEARCH (RFC 3501 6.4.4) over the selected folder.

twisted's own SEARCH compared bytes with text (SUBJECT, FROM, HEADER and the
dates answered BAD), lost its place in a folder of more than five messages,
left out the untagged SEARCH response when nothing matched, and could not take
a literal (so no search for anything but ASCII). Here:

- `parse` reads the keys (atoms, quoted strings, literals, parenthesized lists)
  into a tree, with a clear error for a key it does not know or an argument
  missing; CHARSET may be US-ASCII or UTF-8 (others: NO [BADCHARSET]).
- Strings match as Dovecot matches them: a substring, after RFC 2047 words
  are decoded and both sides decomposed and case-folded (so `cafe` finds
  `Café`). Address fields are matched in their written form (`Name
  <user@domain>`); BODY looks in every part's decoded text (base64 and
  quoted-printable undone, the part's charset applied), TEXT in the
  header as well. SINCE/BEFORE/ON use the internal date, SENT* the Date
  field (a message without one counts as sent in 1970), both by day only.
- There is no \\Recent here: RECENT and NEW match nothing, OLD everything.
- `Search` looks at the messages a batch at a time (at most `BUDGET`
  seconds a reactor turn), reading a file only when a key needs its content.
"""

import base64
import binascii
import calendar
import email.utils
import re
import time
import unicodedata

from twisted.mail import imap4

from allworx.protocols.mail import imapmime
from allworx.protocols.mail.imapfolders import MONTHS
from allworx.protocols.mail.imapmessage import Message
from allworx.protocols.mail.mimetext import addresses, mime_token

BUDGET = 0.01

_FLAG_KEYS = {b"ANSWERED": ("R", True), b"UNANSWERED": ("R", False), b"DELETED": ("T", True),
              b"UNDELETED": ("T", False), b"DRAFT": ("D", True), b"UNDRAFT": ("D", False),
              b"FLAGGED": ("F", True), b"UNFLAGGED": ("F", False), b"SEEN": ("S", True),
              b"UNSEEN": ("S", False)}
_HEADER_KEYS = {b"BCC": b"bcc", b"CC": b"cc", b"FROM": b"from", b"TO": b"to"}
_DATE_KEYS = {b"BEFORE": ("internal", "before"), b"ON": ("internal", "on"),
              b"SINCE": ("internal", "since"), b"SENTBEFORE": ("sent", "before"),
              b"SENTON": ("sent", "on"), b"SENTSINCE": ("sent", "since")}
_MONTHS = {name: i + 1 for i, name in enumerate(MONTHS)}     # not the locale's names
_SET = re.compile(rb"^[0-9*:,]+$")
_ENCODED = re.compile(rb"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN = re.compile(rb"(\?=)[ \t\r\n]+(?==\?)")
_FIELD = re.compile(rb"\r\n(?![ \t])")
_FOLD = re.compile(rb"\r?\n[ \t]")


class SearchError(Exception):
    """The keys do not read: the reason (answered BAD)."""


class Literal(bytes):
    """A literal's octets among a command's text (a string, never a key or a parenthesis)."""


# ---------------------------------------------------------------- reading the keys

def tokens(pieces):
    """[bytes | Literal | list] of a command's text pieces and literals, parentheses nested."""
    stack = [[]]
    for piece in pieces:
        if isinstance(piece, Literal):
            stack[-1].append(piece)
            continue
        at, size = 0, len(piece)
        while at < size:
            c = piece[at:at + 1]
            if c in (b" ", b"\t"):
                at += 1
            elif c == b"(":
                stack.append([])
                at += 1
            elif c == b")":
                if len(stack) == 1:
                    raise SearchError("a ) without its (")
                done = stack.pop()
                stack[-1].append(done)
                at += 1
            elif c == b'"':
                out, at = bytearray(), at + 1
                while at < size and piece[at:at + 1] != b'"':
                    if piece[at:at + 1] == b"\\":
                        at += 1
                    out += piece[at:at + 1]
                    at += 1
                if at >= size:
                    raise SearchError("a quoted string without its closing quote")
                stack[-1].append(Literal(bytes(out)))
                at += 1
            else:
                end = at
                while end < size and piece[end:end + 1] not in (b" ", b"\t", b"(", b")", b'"'):
                    end += 1
                stack[-1].append(piece[at:end])
                at = end
    if len(stack) != 1:
        raise SearchError("a ( without its )")
    return stack[0]


def _text(value):
    """Decomposed and case-folded text, as the comparison sees it."""
    return unicodedata.normalize("NFKD", value).casefold()


def _date(token):
    m = re.match(rb"^(\d{1,2})-([A-Za-z]{3})-(\d{4})$", token or b"")
    if m is None or m.group(2).upper() not in _MONTHS:
        raise SearchError("a date must read like 7-Dec-2026, not %r" % (token,))
    try:
        return calendar.timegm((int(m.group(3)), _MONTHS[m.group(2).upper()], int(m.group(1)),
                                0, 0, 0)) // 86400
    except (ValueError, OverflowError):
        raise SearchError("no such date: %r" % (token,))


def _string(items, key):
    if not items or isinstance(items[0], list):
        raise SearchError("%s needs a string" % key.decode("ascii", "replace"))
    value = items.pop(0)
    try:
        return _text(value.decode("utf-8"))
    except UnicodeDecodeError:
        raise SearchError("%s: the string is not UTF-8" % key.decode("ascii", "replace"))


def _set(token, uid):
    if isinstance(token, list) or isinstance(token, Literal) or not _SET.match(token):
        raise SearchError("not a message set: %r" % (token,))
    try:
        return ("set", imap4.parseIdList(token), uid)
    except (imap4.IllegalIdentifierError, ValueError):
        raise SearchError("not a message set: %r" % (token,))


def _key(items):
    """One key (and its arguments) taken from the front of items."""
    if not items:
        raise SearchError("a search key is missing")
    token = items.pop(0)
    if isinstance(token, list):
        return _all_of(list(token))
    if isinstance(token, Literal):
        raise SearchError("a string where a search key was expected")
    key = token.upper()
    if key == b"ALL":
        return ("all",)
    if key in _FLAG_KEYS:
        return ("flag",) + _FLAG_KEYS[key]
    if key == b"SUBJECT":
        return ("header", b"subject", _string(items, key))
    if key in _HEADER_KEYS:
        return ("address", _HEADER_KEYS[key], _string(items, key))
    if key == b"HEADER":
        if not items or isinstance(items[0], list):
            raise SearchError("HEADER needs a field name")
        name = items.pop(0).lower()
        return ("header", name, _string(items, key))
    if key in (b"BODY", b"TEXT"):
        return (key.lower().decode(), _string(items, key))
    if key in (b"LARGER", b"SMALLER"):
        size = items.pop(0) if items else b""
        if isinstance(size, list) or not size.isdigit():
            raise SearchError("%s needs a number" % key.decode())
        return (key.lower().decode(), int(size))
    if key in _DATE_KEYS:
        value = items.pop(0) if items else None
        return ("date",) + _DATE_KEYS[key] + (_date(value if not isinstance(value, list) else None),)
    if key in (b"KEYWORD", b"UNKEYWORD"):
        if not items or isinstance(items[0], list):
            raise SearchError("%s needs a keyword" % key.decode())
        name = items.pop(0).decode("utf-8", "replace")
        return ("keyword", name, key == b"KEYWORD")
    if key in (b"RECENT", b"NEW"):
        return ("none",)
    if key == b"OLD":
        return ("all",)
    if key == b"NOT":
        return ("not", _key(items))
    if key == b"OR":
        first = _key(items)
        return ("or", first, _key(items))
    if key == b"UID":
        if not items:
            raise SearchError("UID needs a message set")
        return _set(items.pop(0), True)
    if _SET.match(token):
        return _set(token, False)
    raise SearchError("unknown search key %r" % token.decode("ascii", "replace")[:40])


def _all_of(items):
    if not items:
        raise SearchError("a search key is missing")
    keys = []
    while items:
        keys.append(_key(items))
    return keys[0] if len(keys) == 1 else ("and", keys)


def parse(pieces):
    """
    (charset, tree) of SEARCH's arguments; pieces are the command's text and its
    literals (Literal), in order.
    """
    items = tokens(pieces)
    charset = None
    if items and not isinstance(items[0], list) and not isinstance(items[0], Literal) \
            and items[0].upper() == b"CHARSET":
        items.pop(0)
        if not items or isinstance(items[0], list):
            raise SearchError("CHARSET needs a name")
        charset = items.pop(0).upper()
    return charset, _all_of(items)


# ---------------------------------------------------------------- one message

def _decode_words(raw):
    """A header value's text, unfolded (a fold is one space): RFC 2047 words decoded, the rest
    read as UTF-8."""
    raw = _BETWEEN.sub(rb"\1", _FOLD.sub(b" ", raw))
    out, at = [], 0
    for m in _ENCODED.finditer(raw):
        out.append(raw[at:m.start()].decode("utf-8", "replace"))
        charset, kind, text = m.group(1).split(b"*")[0], m.group(2).upper(), m.group(3)
        try:
            if kind == b"B":
                octets = base64.b64decode(text + b"=" * (-len(text) % 4))
            else:
                octets = binascii.a2b_qp(text.replace(b"_", b" "), header=True)
            out.append(octets.decode(charset.decode("ascii"), "replace"))
        except (LookupError, ValueError, binascii.Error):
            out.append(m.group(0).decode("ascii", "replace"))
        at = m.end()
    out.append(raw[at:].decode("utf-8", "replace"))
    return "".join(out).replace("\r", "").replace("\n", "")


def _addresses_written(raw):
    """An address field as Dovecot writes it for searching: `Name <user@domain>, ...`."""
    out, in_group = [], False
    for name, route, mailbox, domain in addresses(raw):
        if domain is None:
            if not in_group:
                out.append((mailbox or b'""') + b": ")
            elif out:
                out[-1] = out[-1].rstrip(b", ") + b";"
            in_group = not in_group
            continue
        text = name or b""
        if route or mailbox or domain:
            text += (b" " if name else b"") + b"<" + (route + b":" if route else b"") + \
                (mailbox or b'""') + (b"@" + domain if domain else b"") + b">"
        out.append(text + b", ")
    return b"".join(out).rstrip(b", ")


def _body_texts(data, part):
    """The decoded text of every text part's body (enclosed messages' parts too)."""
    if part.kind == imapmime.MULTIPART or part.kind == imapmime.MESSAGE:
        for child in part.children:
            yield from _body_texts(data, child)
        return
    content = part.content()
    if part.kind != imapmime.TEXT or (content.type is not None and content.subtype is None):
        return                          # as Dovecot: only text/... (or untyped) bodies are searched
    octets = data[part.body:part.end]
    encoding = b"7bit"
    for name, value in part.fields if part.mime else ():
        if name == b"content-transfer-encoding":
            encoding = (mime_token(value) or b"?").lower()    # the last one counts
    if encoding not in (b"7bit", b"8bit", b"binary", b"base64", b"quoted-printable"):
        return                          # an encoding not known: not searched, as Dovecot
    try:
        if encoding == b"base64":
            clean = re.sub(rb"[^A-Za-z0-9+/]", b"", octets)
            octets = base64.b64decode(clean[:len(clean) - (len(clean) % 4 == 1)] + b"==")
        elif encoding == b"quoted-printable":
            octets = binascii.a2b_qp(octets)
    except (ValueError, binascii.Error):
        pass
    charset = "utf-8"
    for name, value in content.params or ():
        if name.lower() == b"charset":
            charset = value.decode("ascii", "replace")
    if charset.lower() in ("us-ascii", "ascii"):
        charset = "utf-8"
    try:
        yield octets.decode(charset, "replace")
    except LookupError:
        yield octets.decode("utf-8", "replace")


class _Message:
    """What the keys ask of one message, each read once and only when asked."""

    def __init__(self, folder, seq, uid, name):
        self.folder, self.seq, self.uid, self.name = folder, seq, uid, name
        self.message = Message(folder, uid, name)     # its file read at the first need
        self._tree = self._head = self._headers = self._bodies = self._all_headers = None

    def flags(self):
        return self.folder.flags.get(self.name, "")

    def _load(self):
        return self.message.data()

    def size(self):
        return len(self._load())

    def internal_day(self):
        self._load()
        return int(self.message._date or 0) // 86400

    def tree(self):
        if self._tree is None:
            self._tree = self._head = imapmime.parse(self._load())
        return self._tree

    def head(self):
        """The root part with its header fields: for header keys the header alone is read."""
        if self._head is None:
            self._head = imapmime.parse_header(self._load())
        return self._head

    def headers(self):
        """[(lower-case name, text)] of the message's header, decoded."""
        if self._headers is None:
            self._headers = [(name, _text(_decode_words(value))) for name, value in self.head().fields]
        return self._headers

    def addresses(self, name):
        """The address field's texts as its addresses are written (FROM, TO, CC, BCC)."""
        return [_text(_decode_words(_addresses_written(_FOLD.sub(b" ", value))))
                for n, value in self.head().fields if n == name]

    def header_texts(self):
        """Every part's header (enclosed messages' too), field by field, decoded: for TEXT."""
        if self._all_headers is None:
            data, found, stack = self._load(), [], [self.tree()]
            while stack:
                part = stack.pop()
                stack.extend(part.children)
                block = data[part.start:part.body]
                found.extend(_text(_decode_words(field)) for field in _FIELD.split(block) if field)
            self._all_headers = found
        return self._all_headers

    def bodies(self):
        if self._bodies is None:
            self._bodies = [_text(t) for t in _body_texts(self._load(), self.tree())]
        return self._bodies

    def sent_day(self):
        value = self.head().field(b"date")
        if value is None:
            return 0
        try:
            parsed = email.utils.parsedate_tz(value.decode("ascii", "replace"))
        except (TypeError, ValueError):
            parsed = None
        if not parsed:
            return 0
        try:
            return calendar.timegm(parsed[:3] + (0, 0, 0)) // 86400
        except (ValueError, OverflowError):
            return 0


def matches(node, m, last_seq, last_uid):
    kind = node[0]
    if kind == "all":
        return True
    if kind == "none":
        return False
    if kind == "and":
        return all(matches(n, m, last_seq, last_uid) for n in node[1])
    if kind == "or":
        return matches(node[1], m, last_seq, last_uid) or matches(node[2], m, last_seq, last_uid)
    if kind == "not":
        return not matches(node[1], m, last_seq, last_uid)
    if kind == "flag":
        return (node[1] in m.flags()) == node[2]
    if kind == "keyword":
        letter = m.folder.keywords.letter(node[1])
        return (letter is not None and letter in m.flags()) == node[2]
    if kind == "set":
        return (m.uid if node[2] else m.seq) in node[1]
    if kind == "header":
        name, needle = node[1], node[2]
        return any(n == name and needle in value for n, value in m.headers())
    if kind == "address":
        return any(node[2] in text for text in m.addresses(node[1]))
    if kind == "body":
        return any(node[1] in text for text in m.bodies())
    if kind == "text":
        needle = node[1]
        return any(needle in t for t in m.header_texts()) or any(needle in t for t in m.bodies())
    if kind == "larger":
        return m.size() > node[1]
    if kind == "smaller":
        return m.size() < node[1]
    if kind == "date":
        day = m.internal_day() if node[1] == "internal" else m.sent_day()
        return {"before": day < node[3], "on": day == node[3], "since": day >= node[3]}[node[2]]
    raise AssertionError(kind)


def _last(node, last_seq, last_uid):
    """Give every message set of the tree its "*" (the last sequence number or UID)."""
    if node[0] == "set":
        try:
            node[1].last = last_uid if node[2] else last_seq
        except ValueError:
            pass                        # given already
    elif node[0] == "and":
        for n in node[1]:
            _last(n, last_seq, last_uid)
    elif node[0] in ("or", "not"):
        for n in node[1:]:
            _last(n, last_seq, last_uid)


class Search:
    """One SEARCH over a view: `run()` fires with the matching sequence numbers (or UIDs)."""

    def __init__(self, view, tree, uid, reactor, done, alive=lambda: True):
        self.view, self.tree, self.uid, self.reactor, self.done = view, tree, uid, reactor, done
        self.alive = alive
        self.seq = list(view.seq)
        _last(tree, len(self.seq), self.seq[-1] if self.seq else 0)
        self.at = 0
        self.found = []
        self.call = None

    def run(self):
        self.call = None
        if not self.alive():
            return                      # the session ended meanwhile
        folder = self.view.folder
        last_uid = self.seq[-1] if self.seq else 0
        start = time.monotonic()
        while self.at < len(self.seq):
            u = self.seq[self.at]
            self.at += 1
            name = self.view.name_at(u)
            if name is None:
                continue
            try:
                hit = matches(self.tree, _Message(folder, self.at, u, name), len(self.seq), last_uid)
            except (KeyError, OSError):
                continue                # its file went meanwhile
            if hit:
                self.found.append(u if self.uid else self.at)
            if time.monotonic() - start > BUDGET and self.at < len(self.seq):
                self.call = self.reactor.callLater(0, self.run)
                return
        self.done(self.found)


# ---------------------------------------------------------------- the command

_COMMAND = re.compile(rb"^\S+\s+(?:UID\s+)?SEARCH(?:\s+(.*))?$", re.I | re.S)
_LITERAL = re.compile(rb"\{(\d{1,20})\}$")
MAX_LITERAL = 64 * 1024


def command(server, tag, line, uid):
    """SEARCH's line from `server` (an ImapServer): its literals read, then the search run."""
    if server.state != "select" or server.view is None:
        return server.sendBadResponse(tag, b"SEARCH needs a selected mailbox")
    rest = _COMMAND.match(line)
    _more(server, tag, [], (rest.group(1) or b"") if rest else b"", uid)


def _more(server, tag, pieces, text, uid):
    literal = _LITERAL.search(text)
    if literal is None:
        pieces.append(text)
        return _run(server, tag, pieces, uid)
    size = int(literal.group(1))
    if size > MAX_LITERAL:
        return server.sendBadResponse(tag, b"literal over %d octets" % MAX_LITERAL)
    pieces.append(text[:literal.start()])

    def got(result):
        octets, after = result
        pieces.append(Literal(octets))
        _more(server, tag, pieces, after, uid)
    server._stringLiteral(size).addCallback(got)


def _run(server, tag, pieces, uid):
    try:
        charset, tree = parse(pieces)
    except SearchError as e:
        return server.sendBadResponse(tag, str(e).encode("utf-8", "replace")[:200])
    if charset not in (None, b"US-ASCII", b"UTF-8"):
        return server.sendNegativeResponse(tag, b"[BADCHARSET (US-ASCII UTF-8)] not a charset "
                                                b"searched here")
    server.blocked = server.blocked if server.blocked is not None else []

    def done(found):
        if server.gone:
            return
        server.sendUntaggedResponse(b"SEARCH" + b"".join(b" %d" % n for n in found))
        server.sendPositiveResponse(tag, b"SEARCH completed")
        server._unblock()
    Search(server.view, tree, uid, server.factory.reactor, done, lambda: not server.gone).run()
