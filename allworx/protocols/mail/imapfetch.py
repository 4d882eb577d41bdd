# -*- test-case-name: allworx.tests.mail.test_imapfetch -*-
"""
FETCH's responses, written as the transport takes them.

twisted's own FETCH spends several reactor turns on each message (a
scheduled step per item, a pull producer per literal, small writes to the
TLS layer). Here each message's whole response (`* n FETCH (...)` with its
literals) is made at once, from one read of its file, and the responses of
several messages go to the transport in one write.

`FetchWriter` is a streaming producer on the session's transport: it stops
when the transport pauses it (its buffer is full) and goes on when resumed,
and gives the reactor back after `BATCH` octets a turn, so other sessions
are served between. The messages are read one at a time, as they are
written: a FETCH of a mailbox of any size holds about one batch in memory.

Literal items (BODY[...] of whole messages, parts, texts and headers,
RFC822, RFC822.TEXT, RFC822.HEADER) are made here, with partial fetches cut
to the octets asked (RFC 3501 6.4.5: answered `BODY[...]<origin>`); a part
the message does not have is NIL. Headers (HEADER, HEADER.FIELDS[.NOT],
n.MIME) are the message's own octets, found in its bytes (`_locate` walks
the MIME tree by its boundaries), ending with the header's blank line, as
Dovecot sends them. Every other item is twisted's `spew_*`, written into the
message's response.
"""

import email.parser
import email.policy

from twisted.logger import Logger

from allworx.protocols.mail.imapmessage import Message, _split, header_end

log = Logger()

WRITE = 64 * 1024          # octets gathered before one write to the transport
BATCH = 256 * 1024         # octets written a reactor turn before letting others go


def _literal(data):
    return b"{%d}\r\n" % len(data), data


def _label(part):
    """
    The item's name in the response: BODY[...] with a partial fetch's origin only; header
    field names as asked (the parser made them upper case), as Dovecot answers.
    """
    header = part.header
    if header is not None and header.fields:
        numbers = b"".join(b"%d." % (n + 1) for n in part.part)
        label = b"BODY[%sHEADER.FIELDS%s (%s)]" % (numbers, b".NOT" if header.negate else b"",
                                                  b" ".join(header.fields))
    else:
        label = part.getBytes()
        if part.partialBegin is not None:
            label = label[:label.rindex(b"<")]
    if part.partialBegin is not None:
        label += b"<%d>" % part.partialBegin
    return label


_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def _entity(data, start, end, default):
    """(start, body start, end, content type, boundary or None) of the entity at data[start:end]."""
    body = header_end(data, start, end)
    head = _HEADERS.parsebytes(data[start:body])
    head.set_default_type(default)
    ctype = head.get_content_type()
    boundary = head.get_boundary() if ctype.startswith("multipart/") else None
    if boundary is not None:
        boundary = boundary.encode("ascii", "surrogateescape")
    return start, body, end, ctype, boundary


def _delimiter(data, delim, at, end):
    found = data.find(b"\r\n" + delim, at, end)
    return None if found < 0 else found + 2


def _children(data, body, end, boundary):
    """[(start, end)] of a multipart body's parts (RFC 2046 5.1.1: a delimiter's CRLF is its own)."""
    delim = b"--" + boundary
    spans, opened = [], None
    line = body if data.startswith(delim, body, end) else _delimiter(data, delim, body, end)
    while line is not None:
        eol = data.find(b"\r\n", line, end)
        stop = end if eol < 0 else eol
        tail = data[line + len(delim):stop]
        closing = tail.startswith(b"--")
        if not (tail[2:] if closing else tail).strip(b" \t"):
            if opened is not None:
                spans.append((opened, max(opened, line - 2)))
            opened = None if closing or eol < 0 else eol + 2
            if closing:
                break
        line = _delimiter(data, delim, stop, end)
    if opened is not None:
        spans.append((opened, end))
    return spans


def _locate(data, numbers):
    """
    The entity of the message's part by its (0-based) numbers (RFC 3501 6.4.5), or None when
    it has none such: a multipart's parts, a message/rfc822's enclosed message, and part 1 of
    a message that is not multipart is the message itself.
    """
    ent = _entity(data, 0, len(data), "text/plain")
    message = True
    for n in numbers:
        start, body, end, ctype, boundary = ent
        if ctype == "message/rfc822" and not message:
            ent = start, body, end, ctype, boundary = _entity(data, body, end, "text/plain")
            message = True
        if boundary is not None:
            spans = _children(data, body, end, boundary)
            if n >= len(spans):
                return None
            default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
            ent = _entity(data, spans[n][0], spans[n][1], default)
        elif not (message and n == 0):
            return None
        message = False
    return ent


def _fields(block, names, negate):
    """The header block's fields named (or, negate, not named), as they are, and the blank line."""
    wanted = {n.strip(b'"').lower() for n in names}
    out, keep, at, size = [], False, 0, len(block)
    while at < size:
        eol = block.find(b"\r\n", at)
        after = size if eol < 0 else eol + 2
        line = block[at:after]
        if line == b"\r\n":
            break
        if line[:1] not in (b" ", b"\t"):           # not a folded line: a field of its own
            colon = line.find(b":")
            keep = colon > 0 and (line[:colon].rstrip(b" \t").lower() in wanted) != negate
        if keep:
            out.append(line)
        at = after
    if out and not out[-1].endswith(b"\r\n"):
        out.append(b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def _header_section(data, part):
    """The octets of HEADER, HEADER.FIELDS[.NOT] or MIME of the part asked, None when no such part."""
    if part.part:
        ent = _locate(data, part.part)
        if ent is None:
            return None
        start, body, end, ctype = ent[:4]
        if part.mime is not None:
            return data[start:body]
        if ctype != "message/rfc822":
            return b""                   # only an enclosed message has a header (Dovecot: empty)
        block = data[body:header_end(data, body, end)]
    else:
        block = data[:header_end(data)]
    if part.header is not None and part.header.fields:
        block = _fields(block, part.header.fields, part.header.negate)
    return block


def _subpart(msg, numbers):
    """The message's part by its (0-based) numbers, or None when it has no such part."""
    for n in numbers:
        if msg.isMultipart():
            try:
                msg = msg.getSubPart(n)
            except IndexError:
                return None
        elif n > 0:
            return None
    return msg


class FetchWriter:
    """One FETCH command's responses, for the messages `pairs` ([(sequence number, uid)])."""

    def __init__(self, server, tag, pairs, query, uid):
        self.server = server
        self.transport = server.transport
        self.tag = tag
        self.pairs = iter(pairs)
        self.query = query
        self.uid = uid and not any(p.type == "uid" for p in query)
        self.paused = False
        self.done = False
        self.running = False
        self.call = None
        self.gone = 0

    def start(self):
        self.transport.registerProducer(self, True)
        self._produce()

    # ------------------------------------------------------------ IPushProducer

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        self._produce()

    def stopProducing(self):
        self.done = True
        self._cancel()

    def _cancel(self):
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None

    # ------------------------------------------------------------ writing

    def _produce(self):
        if self.running or self.done:
            return
        self._cancel()
        self.running = True
        try:
            self._batch()
        finally:
            self.running = False

    def _batch(self):
        out, gathered, written = [], 0, 0
        view = self.server.view
        while not self.paused and not self.done:
            pair = next(self.pairs, None)
            if pair is None:
                if out:
                    self.transport.write(b"".join(out))
                return self._finish()
            number, u = pair
            name = view.name_at(u) if view is not None else None
            if name is None:
                continue
            try:
                response = self.message(number, Message(view.folder, u, name))
            except KeyError:        # its file went (expunged elsewhere) since the message set was made
                self.gone += 1
                continue
            except Exception:
                # nothing of this message written: the responses so far stand, then NO
                log.failure("imap: FETCH of message {uid} failed", uid=u)
                if out:
                    self.transport.write(b"".join(out))
                return self._finish(failed=True)
            out.extend(response)
            gathered += sum(len(b) for b in response)
            if gathered >= WRITE:
                self.transport.write(b"".join(out))
                written += gathered
                out, gathered = [], 0
                if written >= BATCH:
                    break
        if out:
            self.transport.write(b"".join(out))
        if not self.done and not self.paused:
            self.call = self.server.factory.reactor.callLater(0, self._produce)

    def _finish(self, failed=False):
        self.done = True
        server = self.server
        self.transport.unregisterProducer()
        if server.gone:
            return
        server.setTimeout(server._fetch_timeout)
        if failed:
            server.sendNegativeResponse(self.tag, b"[SERVERBUG] the server could not fetch that")
        elif self.gone:
            server.sendNegativeResponse(self.tag, b"[EXPUNGEISSUED] some of the messages were "
                                                  b"expunged meanwhile")
        else:
            server.sendPositiveResponse(self.tag, b"FETCH completed")
        server._unblock()

    # ------------------------------------------------------------ one message

    def message(self, number, msg):
        """[bytes] of the message's untagged FETCH response."""
        out = [b"* %d FETCH (" % number]
        write = out.append
        first = True
        for part in self.query:
            if not first:
                write(b" ")
            first = False
            kind = part.type
            if kind == "body":
                self.body(part, msg, out)
            elif kind == "rfc822":
                write(b"RFC822 ")
                out.extend(_literal(msg.data()))
            elif kind == "rfc822text":
                write(b"RFC822.TEXT ")
                out.extend(_literal(_split(msg.data())[1]))
            elif kind == "rfc822header":
                write(b"RFC822.HEADER ")
                out.extend(_literal(_split(msg.data())[0]))
            else:
                getattr(self.server, "spew_" + kind)(number, msg, write, None)
        if self.uid:
            write(b" UID %d" % msg.uid)
        write(b")\r\n")
        return out

    def body(self, part, msg, out):
        if part.header is not None or part.mime is not None:
            data = _header_section(msg.data(), part)
        else:
            target = _subpart(msg, part.part)
            if target is None:
                data = None
            elif not (part.text or part.empty):
                # BODY (the structure): twisted's
                self.server.spew_body(part, None, msg, out.append, None)
                return
            elif part.part or part.text:
                data = target.getBodyFile().read()
            else:
                data = msg.data()
        if data is None:
            out.append(_label(part) + b" NIL")
            return
        if part.partialBegin is not None:
            data = data[part.partialBegin:part.partialBegin + part.partialLength]
        out.append(_label(part) + b" ")
        out.extend(_literal(data))
