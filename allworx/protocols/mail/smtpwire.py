# -*- test-case-name: allworx.tests.mail.test_smtp -*-
"""
The text of SMTP (RFC 5321) as pure functions: command lines, paths and
their parameters, the end of DATA, dot-unstuffing and the checks a message
must pass. No sockets here; `smtp.py` is the protocol around them.

The end of DATA is only ever CRLF "." CRLF. A bare LF or CR next to a dot
(`\\n.\\n`, `\\r.\\n`, `\\r\\n.\\n`) is message content, stored with LF line
ends like every other line end; when the message is passed on, dots are
stuffed again, so such a sequence can never end a message early at the next
server (the "SMTP smuggling" attack).
"""

import re

import attr

END_OF_DATA = b"\r\n.\r\n"
MAX_COMMAND_LINE = 2048     # RFC 5321 allows 512; parameters make some longer
MAX_TEXT_LINE = 998         # RFC 5321 4.5.3.1.6 (1000 with CRLF)
MAX_RECIPIENTS = 100        # RFC 5321 4.5.3.1.8: at least 100 must be accepted
MAX_ADDRESS = 254

_ATOM = rb"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = rb"(?:" + _ATOM + rb"(?:\." + _ATOM + rb")*|\"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*\")"
_DOMAIN = rb"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?|\[[0-9.:A-Fa-f]+\])"
_MAILBOX = re.compile(rb"^" + _LOCAL + rb"@" + _DOMAIN + rb"$")
_PATH = re.compile(rb"^(FROM|TO):[ ]?<((?:@[^:<>]+:)?)([^<>\x00-\x20\x7f]*|\"[^\"\r\n]*\"@[^<>\x00-\x20\x7f]+)>(.*)$", re.I | re.S)
_PARAM = re.compile(rb"^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?$")


@attr.s(frozen=True, slots=True)
class Reply(Exception):
    """An SMTP reply to send: code, enhanced status (or ''), text."""

    code = attr.ib()
    status = attr.ib()
    text = attr.ib()

    def line(self):
        """The reply as bytes with CRLF (multi-line text becomes a multi-line reply)."""
        parts = self.text.split("\n")
        prefix = ("%s " % self.status) if self.status else ""
        out = []
        for i, part in enumerate(parts):
            sep = " " if i == len(parts) - 1 else "-"
            out.append(("%d%s%s%s\r\n" % (self.code, sep, prefix, part)).encode("utf-8"))
        return b"".join(out)


def shown(text, limit=60):
    """A client's word quoted in a reply: ASCII, and short, so the reply line
    stays within RFC 5321's 512 octets (4.5.3.1.5)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "backslashreplace")
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


def split_command(line):
    """`b'mail FROM:<a@b>'` -> ('MAIL', b'FROM:<a@b>'); raises Reply 500 for junk."""
    line = line.strip(b" \t")
    if not line:
        raise Reply(500, "5.5.2", "empty command")
    verb, _, arg = line.partition(b" ")
    if not verb.isalpha() or len(verb) > 10:
        raise Reply(500, "5.5.2", "command not recognized")
    return verb.decode("ascii").upper(), arg.strip(b" \t")


@attr.s(frozen=True, slots=True)
class Path:
    """The address of MAIL FROM or RCPT TO ('' for the null sender) and its parameters."""

    address = attr.ib()
    params = attr.ib(factory=dict)


def parse_path(arg, keyword):
    """
    Parse `FROM:<address> PARAMS` (keyword FROM) or `TO:<address> PARAMS`.
    Returns a Path; raises Reply 501/553 naming what is wrong.
    """
    m = _PATH.match(arg)
    if not m or m.group(1).upper() != keyword:
        raise Reply(501, "5.5.4", "syntax: %s:<address>" % ("MAIL FROM" if keyword == b"FROM" else "RCPT TO"))
    address = m.group(3)
    if len(address) > MAX_ADDRESS:
        raise Reply(553, "5.1.3", "address too long")
    if address == b"":
        if keyword != b"FROM":
            raise Reply(553, "5.1.3", "an empty recipient address is not allowed")
    elif not (_MAILBOX.match(address) or (keyword == b"TO" and address.lower() == b"postmaster")):
        raise Reply(553, "5.1.3", "bad address syntax: %s" % shown(address))
    params = {}
    for word in m.group(4).split():
        pm = _PARAM.match(word)
        if not pm:
            raise Reply(501, "5.5.4", "bad parameter %s" % shown(word))
        params[pm.group(1).decode("ascii").upper()] = (pm.group(2) or b"").decode("ascii")
    return Path(address.decode("ascii"), params)


def check_mail_params(params, max_size):
    """Check MAIL FROM's parameters (SIZE, BODY); raises Reply when one is refused."""
    for name, value in params.items():
        if name == "SIZE":
            if not value.isdigit():
                raise Reply(501, "5.5.4", "SIZE needs a number")
            if int(value) > max_size:
                raise Reply(552, "5.3.4", "message size exceeds fixed limit of %d bytes" % max_size)
        elif name == "BODY":
            if value.upper() not in ("7BIT", "8BITMIME"):
                raise Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
        else:
            raise Reply(555, "5.5.4", "parameter %s is not supported" % shown(name))


def check_rcpt_params(params):
    """RCPT TO takes no parameters here (no DSN extension)."""
    for name in params:
        raise Reply(555, "5.5.4", "parameter %s is not supported" % shown(name))


def find_end_of_data(buffer, start=0):
    """
    Index of the CRLF.CRLF that ends DATA in `buffer` (which starts with the
    CRLF of the DATA command itself, so an empty message is `\\r\\n.\\r\\n`),
    searching from `start`; -1 if not there yet.
    """
    return buffer.find(END_OF_DATA, start)


def unstuff(body):
    """
    The message from the raw DATA between the leading CRLF and the final
    CRLF.CRLF (`raw` begins with CRLF): lines starting with a dot lose it.
    Only CRLF separates lines here, as on the wire.
    """
    return bytes(body).replace(b"\r\n.", b"\r\n")[2:]


# Anchored at a line's start, so a search tries each line once: linear in the
# message. Unanchored, it tried every position, each reading on to the end of
# its line: a 10 MB message of lawful 990-character lines held the reactor 24 s.
_LONG_LINE = re.compile(rb"(?:\A|[\r\n])[^\r\n]{%d}" % (MAX_TEXT_LINE + 1))


def has_long_line(message):
    """True if any line of `message` (CR or LF ends one) is longer than RFC 5321 allows."""
    return _LONG_LINE.search(message) is not None


def received_header(helo, peer_ip, host, protocol, recipients, date, session):
    """The Received: header this server adds (LF line ends, folded)."""
    helo_text = helo.decode("ascii", "replace") if isinstance(helo, bytes) else (helo or "unknown")
    helo_text = re.sub(r"[^\x21-\x7e]", "?", helo_text)[:100] or "unknown"
    text = "Received: from %s ([%s])\n\tby %s (allworx) with %s id %s" % (
        helo_text, peer_ip, host, protocol, session)
    if len(recipients) == 1:
        text += "\n\tfor <%s>" % recipients[0]
    return (text + "; %s\n" % date).encode("ascii", "replace")


_HEADER_NAMES = re.compile(rb"(?im)^(message-id|date)[ \t]*:")


def missing_origin_headers(message):
    """Which of Date and Message-ID the header of `message` (CRLF or LF) lacks, lower case."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    head = message if end < 0 else message[:end + 2]
    present = {m.group(1).lower() for m in _HEADER_NAMES.finditer(head)}
    return [name for name in (b"date", b"message-id") if name not in present]


# Header fields only the server itself may write: a sender's are dropped on
# arrival (a mail claiming to be voicemail would light the phones' message
# waiting and play in the voicemail menu).
SERVER_ONLY = re.compile(rb"(?i)^x-allworx-voicemail[ \t]*:")
_SERVER_ONLY_ANYWHERE = re.compile(rb"(?im)^x-allworx-voicemail[ \t]*:")


def drop_server_headers(message):
    """`message` without the header fields only the server writes (SERVER_ONLY), with their continuations."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    head_end = len(message) if end < 0 else end + 1
    head = message[:head_end]
    if not _SERVER_ONLY_ANYWHERE.search(head):
        return message
    kept, skipping = [], False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = bool(SERVER_ONLY.match(line))
        if not skipping:
            kept.append(line)
    return b"".join(kept) + message[head_end:]


MAX_HOPS = 50               # Received: headers before a message counts as looping
_RECEIVED = re.compile(rb"(?im)^received[ \t]*:")


def hop_count(message):
    """How many Received: headers the header of `message` has (a loop shows as many)."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    head = message if end < 0 else message[:end + 2]
    return len(_RECEIVED.findall(head))
