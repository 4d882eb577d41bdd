# -*- test-case-name: allworx.tests.mail.test_imapmime -*-
"""
The values of a header's fields as IMAP's BODYSTRUCTURE and ENVELOPE read
them (RFC 5322 addresses and phrases, RFC 2045 content types and their
parameters, RFC 2231 parameter continuations), read the way Dovecot 2.3
reads them so that a broken field comes out as it would there: comments
(nested, with quoted pairs) and folds are white space; a parameter that
does not read is passed over to the next `;`; an address that does not read
is given MISSING_MAILBOX / MISSING_DOMAIN, a broken angle address
SYNTAX_ERROR, a broken route INVALID_ROUTE; an address that is one word
only is taken for a mailbox without its domain.

Values are bytes, as in the message.
"""

# RFC 5322 atext: 1; letters, digits and 8-bit octets: 2; atext that is a MIME tspecial: 4
_ATEXT = bytearray(256)
for _c in b"!#$%&'*+-^_`{|}~":
    _ATEXT[_c] = 1
for _c in b"/=?":
    _ATEXT[_c] = 4
for _c in list(range(48, 58)) + list(range(65, 91)) + list(range(97, 123)) + list(range(128, 256)):
    _ATEXT[_c] = 2
_TOKEN = bytes(1 if (_ATEXT[c] & 3) or c == 46 else 0 for c in range(256))

# the ENVELOPE fields: True for those that hold addresses
ENVELOPE_FIELDS = {b"date": False, b"subject": False, b"from": True, b"sender": True,
                   b"reply-to": True, b"to": True, b"cc": True, b"bcc": True,
                   b"in-reply-to": False, b"message-id": False}


class _Reader:
    """A cursor over one field's value; methods answer -1 (broken), 0 (at the end) or 1 (more)."""

    def __init__(self, data):
        self.data = data
        self.at = 0
        self.end = len(data)
        self.comment = b""          # the last comment passed over

    def char(self):
        return self.data[self.at] if self.at < self.end else -1

    def _comment(self):
        data, level = self.data, 1
        self.at += 1
        start, text = self.at, []
        while self.at < self.end:
            c = data[self.at]
            if c == 40:
                level += 1
            elif c == 41:
                level -= 1
                if level == 0:
                    text.append(data[start:self.at])
                    self.comment = b"".join(text)
                    self.at += 1
                    return 1 if self.at < self.end else 0
            elif c == 92:
                text.append(data[start:self.at])
                start = self.at + 1
                self.at += 1
                if self.at >= self.end:
                    return -1
            self.at += 1
        return -1

    def skip(self):
        """Pass over white space, line ends and comments."""
        data = self.data
        while self.at < self.end:
            c = data[self.at]
            if c in (32, 9, 13, 10):
                self.at += 1
            elif c == 40:
                if self._comment() < 0:
                    return -1
            else:
                break
        return 1 if self.at < self.end else 0

    def _run(self, table, dots, out):
        start = self.at
        while self.at < self.end and (table[self.data[self.at]] or (dots and self.data[self.at] == 46)):
            self.at += 1
        out.append(self.data[start:self.at])
        return self.skip() if self.at < self.end else 0

    def token(self, out):
        return self._run(_TOKEN, False, out)

    def atom(self, out):
        if self.at >= self.end or not _ATEXT[self.data[self.at]]:
            return -1
        return self._run(_ATEXT, False, out)

    def dot_atom(self, out):
        if self.at >= self.end or not _ATEXT[self.data[self.at]]:
            return -1
        while True:
            ret = self._run(_ATEXT, False, out)
            if ret <= 0:
                return ret
            if self.data[self.at] != 46:
                return 1
            self.at += 1
            out.append(b".")
            ret = self.skip()
            if ret <= 0:
                return ret

    def quoted(self, out):
        data = self.data
        self.at += 1
        start = self.at
        while self.at < self.end:
            c = data[self.at]
            if c == 34:
                out.append(data[start:self.at])
                self.at += 1
                return self.skip()
            if c == 10:                                 # a fold: its CRLF goes
                cut = self.at - 1 if self.at > start and data[self.at - 1] == 13 else self.at
                out.append(data[start:cut])
                start = self.at + 1
            elif c == 92:
                self.at += 1
                if self.at >= self.end:
                    return -1
                out.append(data[start:self.at - 1])
                start = self.at
            self.at += 1
        return -1

    def phrase(self, out):
        if self.at >= self.end:
            return 0
        if self.data[self.at] == 46:
            return -1
        while True:
            if self.data[self.at] == 34:
                ret = self.quoted(out)
            else:
                ret = self._run(_ATEXT, True, out)
            if ret <= 0:
                return ret
            c = self.data[self.at]
            if not _ATEXT[c] and c not in (34, 46):
                break
            out.append(b" ")
        return self.skip()

    def domain(self, out):
        self.at += 1                                    # the @
        if self.skip() <= 0:
            return -1
        if self.data[self.at] != 91:
            return self.dot_atom(out)
        data, start = self.data, self.at
        while self.at < self.end:
            c = data[self.at]
            if c == 92:
                self.at += 1
                if self.at >= self.end:
                    break
            elif c == 93:
                self.at += 1
                out.append(data[start:self.at])
                return self.skip()
            self.at += 1
        return -1

    def param(self):
        """(1, name, value) for the next `; name=value`, (0, ...) at the end, (-1, ...) if broken."""
        if self.at >= self.end:
            return 0, None, None
        if self.data[self.at] != 59:
            return -1, None, None
        self.at += 1
        if self.skip() <= 0:
            return -1, None, None
        key = []
        if self.token(key) <= 0 or self.char() != 61:
            return -1, None, None
        self.at += 1
        value = []
        ret = self.skip()
        if ret <= 0:
            pass                                         # no value
        elif self.data[self.at] == 34:
            ret = self.quoted(value)
        elif self.data[self.at] == 61:                   # name==?utf-8?...?= as some senders write it
            start = self.at
            while self.at < self.end and self.data[self.at] not in (59, 32, 9, 13, 10):
                self.at += 1
            value.append(self.data[start:self.at])
        else:
            ret = self.token(value)
        return (-1 if ret < 0 else 1), b"".join(key), b"".join(value)


def _params(reader):
    """The parameters after a value, RFC 2231 continuations joined: [(name, value)]."""
    plain, split, index = [], [], 0
    while True:
        ret, key, value = reader.param()
        if ret == 0:
            break
        if ret < 0:
            if reader.at >= reader.end:
                break
            reader.at += 1
            continue
        star = key.find(b"*")
        if star < 0:
            plain.append((key, value))
            continue
        p = star
        if p + 1 < len(key):
            p += 1
            index = 0
            while p < len(key) and 48 <= key[p] <= 57:
                index = index * 10 + key[p] - 48
                p += 1
        extended = p < len(key) and key[p] == 42
        if extended:
            p += 1
        if p < len(key):
            plain.append((key, value))
        else:
            split.append((key[:star], index, extended, value))
    if not split:
        return plain
    split.sort(key=lambda s: (s[0], s[1]))
    i = 0
    while i < len(split):
        name = split[i][0].lower()
        j = i
        while j < len(split) and split[j][0].lower() == name:
            j += 1
        group = split[i:j]
        extended = any(s[2] for s in group)
        if [s[1] for s in group] != list(range(len(group))):
            for key, idx, ext, value in group:
                plain.append((b"%s*%d%s" % (key, idx, b"*" if ext else b""), value))
        else:
            value = [b"''"] if extended and not group[0][2] else []
            for key, idx, ext, part in group:
                value.append(part.replace(b"%", b"%25") if extended and not ext else part)
            plain.append((group[0][0] + (b"*" if extended else b""), b"".join(value)))
        i = j
    return plain


def content_type(value):
    """(type, subtype or None, [(name, value)] or None when the type itself is broken)."""
    r = _Reader(value)
    out = []
    ret = -1
    if r.skip() > 0 and r.token(out) > 0:
        if r.char() != 47:
            out = []                        # a type with more after it but no subtype: none
        else:
            r.at += 1
            if r.skip() > 0:
                out.append(b"/")
                ret = r.token(out)
    text = b"".join(out)
    slash = text.find(b"/")
    ctype, subtype = (text, None) if slash < 0 else (text[:slash], text[slash + 1:])
    return ctype, subtype, (None if ret < 0 else _params(r))


def mime_token(value):
    """The token a field holds alone (Content-Transfer-Encoding), or None."""
    r = _Reader(value)
    r.skip()
    out = []
    if r.token(out) >= 0 and r.skip() == 0 and out[0]:
        return out[0]
    return None


def disposition(value):
    """(disposition, [(name, value)]), (None, ()) when it does not read."""
    r = _Reader(value)
    r.skip()
    out = []
    if r.token(out) < 0:
        return None, ()
    return out[0], _params(r)


def languages(value):
    """Content-Language's tags, or None."""
    r = _Reader(value)
    r.skip()
    found = []
    while True:
        out = []
        if r.atom(out) < 0:
            break
        found.append(b"".join(out))
        if r.char() != 44:
            break
        r.at += 1
        r.skip()
    return found or None


# ---------------------------------------------------------------- addresses

class _Addresses:
    """RFC 5322 address-list; each address (name, route, mailbox, domain); groups begin with
    (None, None, name, None) and end with (None, None, None, None)."""

    def __init__(self, value):
        self.r = _Reader(value)
        self.found = []
        self._clear()

    def _clear(self):
        self.name = self.route = self.mailbox = self.domain = None
        self.invalid = False

    def _add(self):
        self.found.append((self.name, self.route, self.mailbox, self.domain))
        self._clear()

    def _add_fixed(self):
        if self.mailbox is None:
            self.mailbox = b"MISSING_MAILBOX"
        if not self.domain:
            self.domain = b"MISSING_DOMAIN"
        self._add()

    def _local(self, out):
        r = self.r
        ret = r.quoted(out) if r.char() == 34 else r.dot_atom(out)
        if ret < 0:
            return -1
        self.mailbox = b"".join(out)
        return ret

    def _domain(self):
        out = []
        ret = self.r.domain(out)
        if ret < 0:
            return -1
        self.domain = b"".join(out)
        return ret

    def _route(self):
        r, out = self.r, []
        while True:
            if r.at >= r.end:
                return 0
            if r.char() != 64:
                break
            if out:
                out.append(b",")
            out.append(b"@")
            ret = r.domain(out)
            if ret <= 0:
                return ret
            while r.skip() > 0 and r.char() == 44:
                r.at += 1
        self.route = b"".join(out)
        return 1

    def _angle(self):
        r = self.r
        r.at += 1                                       # the <
        if r.skip() <= 0:
            return -1
        if r.char() == 64:
            if self._route() > 0 and r.char() == 58:
                r.at += 1
            else:
                self.route = b"INVALID_ROUTE"
                if r.at >= r.end:
                    return -1
            if r.skip() <= 0:
                return -1
        if r.char() != 62:                              # <> has neither
            if self._local([]) <= 0:
                return -1
            if r.char() == 64 and self._domain() <= 0:
                return -1
        if r.char() != 62:
            return -1
        r.at += 1
        return r.skip()

    def _name_addr(self):
        r, out = self.r, []
        if r.phrase(out) <= 0 or r.char() != 60:
            return -1
        self.name = b"".join(out) or None
        if self._angle() < 0:
            self.domain = b"SYNTAX_ERROR"
            self.invalid = True
        return 1 if r.at < r.end else 0

    def _addr_spec(self):
        r = self.r
        r.comment = b""
        ret2 = -2
        out = []
        quoted = r.char() == 34
        ret = self._local(out)
        if ret <= 0:
            self.invalid = True
        if ret != 0 and r.at < r.end and r.char() == 64:
            ret2 = self._domain()
            if ret2 <= 0:
                ret = ret2
        if r.comment:
            self.name = r.comment
        elif ret2 == -2:
            # a word without @domain: a mailbox alone, unless more words follow (a name)
            out.append(b" ")
            before = len(b"".join(out))
            r.phrase(out)
            text = b"".join(out)
            if len(text) != before:
                self.mailbox = None
                self.name = text
            elif not quoted:
                self.domain = b""
            self.invalid = True
            ret = -1
        return ret

    def _mailbox(self):
        r = self.r
        start = r.at
        ret = self._name_addr()
        if ret < 0:
            r.at = start
            self._clear()
            ret = self._addr_spec()
            if self.invalid and self.name is None and self.mailbox is not None \
                    and self.domain is None:
                self.name, self.mailbox = self.mailbox, None
        self._add_fixed()
        return ret

    def _group(self):
        r, out = self.r, []
        if r.phrase(out) <= 0 or r.char() != 58:
            return -1
        r.at += 1
        ret = r.skip()
        self.mailbox = b"".join(out)
        self._add()
        if ret > 0 and r.char() != 59:
            while True:
                self._mailbox()
                if r.at >= r.end or r.char() != 44:
                    break
                r.at += 1
                if r.skip() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if r.at >= r.end or r.char() != 59:
                ret = -1
            else:
                r.at += 1
                ret = r.skip()
        self._add()
        return 0 if ret == 0 else 1

    def parse(self):
        r = self.r
        if r.skip() <= 0:
            return self.found
        while True:
            start = r.at
            ret = self._group()
            if ret < 0:
                r.at = start
                self._clear()
                ret = self._mailbox()
            if ret == 0:
                break
            if r.at >= r.end or r.char() != 44:
                break
            r.at += 1
            ret = r.skip()
            if ret <= 0:
                if ret < 0:
                    self._add_fixed()
                break
        return self.found


def addresses(value):
    """[(name, route, mailbox, domain)] of an address field, groups marked (see _Addresses)."""
    return _Addresses(value).parse()
