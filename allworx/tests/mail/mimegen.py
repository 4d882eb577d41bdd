"""
Random MIME messages for comparing IMAP answers with Dovecot's (allworx.tests.lab.test_imapdovecot):
nested multiparts (mixed, alternative, digest, related) with boundaries that are prefixes of
one another, enclosed messages, parts without a Content-Type, folded and broken fields, RFC
2231 parameters, 8-bit text, lines that only look like boundaries, missing closing
boundaries, headers cut short by a boundary, and address fields of every shape. A seed
gives the same message and the same FETCH items every time.
"""

import random

WORDS = [b"alpha", b"beta", b"gamma", b"d\xc3\xa9lta", b"x", b"--", b"=?utf-8?q?caf=C3=A9?=",
         b'"quoted"', b"a\\b"]

ADDRESSES = [b"user@example.com", b'"Doe, J" <jd@example.com>', b"Name With Spaces <n@w.example>",
             b"grp: a@b, c@d;", b"undisclosed-recipients:;", b"broken", b"<@r1,@r2:x@y>",
             b"a@b (Comment Name)", b"J\xc3\xb6rg <j@x>", b"<>", b"x@[1.2.3.4]", b"two words@x"]

PARAMS = [b"charset=utf-8", b'charset="ISO-8859-1"', b'name*0="part one "; name*1="two.txt"',
          b"filename*=utf-8''%E2%82%AC.pdf", b"format=flowed (comment)", b'name="a \\"q\\" b"',
          b"x=", b"broken", b"name==?utf-8?b?w6k=?="]

LEAF_TYPES = [b"text/plain", b"text/html", b"TEXT/Plain", b"application/pdf", b"image/png", b"text",
              b"(c) text/plain", b"application/octet-stream", b";", b"multipart"]

EXTRA = [b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: 7bit",
         b"Content-Transfer-Encoding: QUOTED-PRINTABLE ", b"Content-Transfer-Encoding: 8bit (c)",
         b"Content-Transfer-Encoding: x y", b"Content-Location: http://x/y",
         b"Content-MD5: Q2hlY2s=", b"no colon line"]

SECTION_ENDS = ["", "", ".MIME", ".TEXT", ".HEADER", ".HEADER.FIELDS (From Subject)",
                ".HEADER.FIELDS.NOT (to)"]


class _Message:
    def __init__(self, seed):
        self.r = random.Random(seed)

    def words(self, most):
        return b" ".join(self.r.choice(WORDS) for _ in range(self.r.randrange(0, most)))

    def addresses(self):
        return b", ".join(self.r.choice(ADDRESSES) for _ in range(self.r.randrange(1, 4)))

    def fold(self, value):
        if self.r.random() < 0.2 and b" " in value:
            i = value.index(b" ")
            return value[:i] + b"\r\n\t" + value[i + 1:]
        return value

    def params(self, boundary=None):
        r, found = self.r, []
        if boundary is not None:
            q = r.random()
            if q < 0.5:
                found.append(b'boundary="%s"' % boundary)
            elif q < 0.8:
                found.append(b"boundary=%s" % boundary)
            elif q < 0.9 or len(boundary) < 2:
                found.append(b"Boundary=%s" % boundary)
            else:
                found.append(b"boundary*0=%s; boundary*1=%s" % (boundary[:1], boundary[1:]))
        found.extend(r.choice(PARAMS) for _ in range(r.randrange(0, 3)))
        r.shuffle(found)
        return b"".join(b"; " + p for p in found)

    def content_type(self, kind, boundary):
        r = self.r
        if kind == "multipart":
            sub = r.choice([b"mixed", b"alternative", b"digest", b"related", b"Mixed"])
            return (b"Content-Type: %s/%s%s" % (r.choice([b"multipart", b"Multipart"]), sub,
                                                self.params(boundary)), sub.lower() == b"digest")
        if kind == "message":
            return b"Content-Type: " + r.choice([b"message/rfc822", b"Message/RFC822",
                                                 b"message/rfc822 (c)"]), False
        return b"Content-Type: " + r.choice(LEAF_TYPES) + self.params(), False

    def header(self, kind, boundary, top, digest_parent):
        r, fields, digest = self.r, [], False
        if top:
            for name, chance in ((b"From", 0.8), (b"To", 0.7), (b"Cc", 0.3), (b"Bcc", 0.1),
                                 (b"Reply-To", 0.2), (b"Sender", 0.2)):
                if r.random() < chance:
                    fields.append(name + b": " + self.fold(self.addresses()))
            if r.random() < 0.8:
                fields.append(b"Subject: " + self.fold(self.words(4)))
            if r.random() < 0.6:
                fields.append(b"Date: Mon, 7 Dec 2026 10:00:00 +0000")
            if r.random() < 0.6:
                fields.append(b"Message-ID: <m%d@x>" % r.randrange(100))
            if r.random() < 0.2:
                fields.append(b"In-Reply-To: <p@x>")
            if r.random() < 0.5:
                fields.append(b"MIME-Version: 1.0")
        untyped = (kind == "text" and r.random() < 0.3
                   or kind == "message" and digest_parent and r.random() < 0.5)
        if not untyped:
            field, digest = self.content_type(kind, boundary)
            fields.append(self.fold(field))
        for _ in range(r.randrange(0, 3)):
            k = r.randrange(7)
            if k == 0:
                fields.append(b"Content-ID: <cid%d@x>" % r.randrange(9))
            elif k == 1:
                fields.append(b"Content-Description: " + self.fold(self.words(3)))
            elif k == 2:
                fields.append(b"Content-Disposition: " + r.choice([b"attachment", b"inline",
                                                                   b"Attachment"]) + self.params())
            elif k == 3:
                fields.append(b"Content-Language: " + r.choice([b"en", b"en, de-CH", b"(x)",
                                                                b"fr (c), it"]))
            elif k == 4:
                fields.append(b"X-Custom: " + r.choice(WORDS))
            else:
                fields.append(r.choice(EXTRA))
        if r.random() < 0.3:
            r.shuffle(fields)
        return fields, digest

    def body(self, boundaries):
        r, lines = self.r, []
        for _ in range(r.randrange(0, 5)):
            k = r.randrange(10)
            if k == 0 and boundaries:       # a line that begins like a boundary
                lines.append(b"--" + r.choice(boundaries) + r.choice([b"x junk", b"-", b" ", b"--x"]))
            elif k == 1:
                lines.append(b"")
            elif k == 2:
                lines.append(b"-- ")
            elif k == 3:
                lines.append(b"d\xc3\xa9j\xc3\xa0 vu")
            else:
                lines.append(self.words(5) or b"x")
        return b"\r\n".join(lines)

    def entity(self, depth, boundaries, kind=None, top=False, digest_parent=False):
        r = self.r
        if kind is None:
            q = 0.9 if depth >= 3 else r.random()
            kind = "multipart" if q < 0.35 else "message" if q < 0.5 else "text"
        boundary = None
        if kind == "multipart":
            q = r.random()
            if q < 0.15 and boundaries:
                boundary = boundaries[-1] + b"x"        # the enclosing one is a prefix of it
            elif q < 0.2 and boundaries:
                boundary = boundaries[-1]               # the same as the enclosing one
            elif q < 0.25:
                boundary = b""
            else:
                boundary = b"b%d" % r.randrange(1000)
        fields, digest = self.header(kind, boundary, top, digest_parent)
        out = b"\r\n".join(fields) + (b"\r\n" if fields else b"")
        if boundaries and r.random() < 0.05:
            return out                                  # a header cut short by the boundary
        out += b"\r\n"
        if kind == "multipart":
            inner = boundaries + [boundary]
            if r.random() < 0.3:
                out += b"preamble\r\n"
            for _ in range(r.randrange(0, 4)):
                out += b"--" + boundary + r.choice([b"", b"", b"  ", b"\t"]) + b"\r\n"
                child = "message" if digest and r.random() < 0.6 else None
                out += self.entity(depth + 1, inner, child, digest_parent=digest) + b"\r\n"
            if r.random() < 0.85:
                out += b"--" + boundary + b"--" + r.choice([b"", b"\r\nepilogue", b"\r\n"])
                if r.random() < 0.5:
                    out += b"\r\n"
            return out
        if kind == "message":
            return out + self.entity(depth + 1, boundaries, top=True)
        return out + self.body(boundaries)


def message(seed):
    """A random message (CRLF line ends), the same for the same seed."""
    m = _Message(seed)
    data = m.entity(0, [], top=True)
    if m.r.random() < 0.5 and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def items(seed):
    """FETCH items to ask of that message: its structure, envelope, and parts by number."""
    r = random.Random(seed * 7 + 1)
    found = ["BODYSTRUCTURE", "BODY", "ENVELOPE", "BODY.PEEK[]", "BODY.PEEK[TEXT]", "BODY.PEEK[HEADER]",
             "RFC822.SIZE", "RFC822.HEADER", "BODY.PEEK[]<3.20>", "BODY.PEEK[1]<2.5>",
             "BODY.PEEK[HEADER.FIELDS (Subject)]<0.4>"]
    sections = set()
    for _ in range(14):
        path = ".".join(str(r.randrange(1, 4)) for _ in range(r.randrange(1, 4)))
        sections.add(path + r.choice(SECTION_ENDS))
    return found + ["BODY.PEEK[%s]" % s for s in sorted(sections)]


# ---------------------------------------------------------------- searches

SEARCH_STRINGS = ["alpha", "ALPHA", "beta", "gamma", "caf", "café", "CAFÉ", "cafe", "déjà", "deja",
                  "jörg", "Doe, J", "<j@x>", "example", "w.example", "Name With", "missing", "grp",
                  "comment name", "a\\b", "quoted", "--", "x", "two words", "m1", "<m2", "vu", "e",
                  "undisclosed", "q", "part one", "epilogue", "preamble"]
SEARCH_FIELDS = [b"Subject", b"From", b"To", b"Cc", b"Bcc", b"Message-ID", b"X-Custom",
                 b"Content-Type", b"In-Reply-To", b"Reply-To", b"Sender", b"Date"]


def _search_key(r, depth):
    k = r.randrange(16)
    text = r.choice(SEARCH_STRINGS).encode("utf-8")
    if k == 1:
        return [b"FROM", text]
    if k == 2:
        return [r.choice([b"TO", b"CC", b"BCC"]), text]
    if k in (3, 4):
        return [(b"BODY", b"TEXT")[k - 3], text]
    if k == 5:
        return [b"HEADER", r.choice(SEARCH_FIELDS), r.choice([b"", text, text, text])]
    if k == 6:
        return [r.choice([b"LARGER", b"SMALLER"]), b"%d" % r.randrange(100, 1200)]
    if k == 7:
        return [r.choice([b"SINCE", b"BEFORE", b"ON"]), b"%d-Dec-2026" % r.randrange(1, 31)]
    if k == 8:
        return [r.choice([b"SENTSINCE", b"SENTBEFORE", b"SENTON"]),
                r.choice([b"7-Dec-2026", b"6-Dec-2026", b"8-Dec-2026", b"1-Jan-1971"])]
    if k == 9:
        return [r.choice([b"SEEN", b"UNSEEN", b"FLAGGED", b"UNFLAGGED", b"ANSWERED", b"UNDELETED",
                          b"DRAFT", b"ALL"])]
    if k == 10 and depth < 2:
        return [b"NOT"] + _search_key(r, depth + 1)
    if k == 11 and depth < 2:
        return [b"OR"] + _search_key(r, depth + 1) + _search_key(r, depth + 1)
    if k == 12 and depth < 2:
        return [b"("] + _search_key(r, depth + 1) + _search_key(r, depth + 1) + [b")"]
    return [b"SUBJECT", text]


def search(seed):
    """A random SEARCH's keys, [bytes] with ( and ) as items of their own."""
    r = random.Random(seed)
    keys = _search_key(r, 0)
    if r.random() < 0.3:
        keys += _search_key(r, 0)
    return keys


def search_lines(keys, literal_plus):
    """
    The command text for the keys: strings quoted, or as literals when they hold 8-bit octets,
    quotes or backslashes: `{n+}` inline (literal_plus) or `{n}` ending a line, the literal
    beginning the next.
    """
    lines, space = [b""], b""
    for item in keys:
        if item == b")":
            lines[-1] += item
            continue
        if any(c >= 0x80 for c in item) or b'"' in item or b"\\" in item:
            if literal_plus:
                lines[-1] += space + b"{%d+}\r\n" % len(item) + item
            else:
                lines[-1] += space + b"{%d}" % len(item)
                lines.append(item)
        elif item == b"(":
            lines[-1] += space + item
            space = b""
            continue
        elif item == b"" or any(c in item for c in b" ,<("):
            lines[-1] += space + b'"' + item + b'"'
        else:
            lines[-1] += space + item
        space = b" "
    return lines
