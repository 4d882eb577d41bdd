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
to the octets asked (RFC 3501 6.4.5: answered `BODY[...]<origin>`). Parts,
headers (HEADER, HEADER.FIELDS[.NOT], n.MIME) and texts are the message's
own octets, found by `imapmime` as Dovecot finds them (a part the message
does not have is an empty literal, as there); BODY, BODYSTRUCTURE and
ENVELOPE are `imapmime`'s too. Every other item (FLAGS, INTERNALDATE,
RFC822.SIZE, UID) is twisted's `spew_*`, written into the message's
response.
"""

from twisted.logger import Logger

from allworx.protocols.mail import imapmime
from allworx.protocols.mail.imapmessage import Message, _split

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


def _fields(data, at, names, negate):
    """
    HEADER.FIELDS[.NOT]: the fields named (or, negate, not named) of the header that begins at
    `at`, as they are, and its blank line. As Dovecot, the header is read here to its blank
    line or the end of the message, boundaries or not; without a blank line, none is added.
    """
    wanted = {n.strip(b'"').lower() for n in names}
    out, keep, size = [], False, len(data)
    while at < size:
        eol = data.find(b"\r\n", at)
        after = size if eol < 0 else eol + 2
        line = data[at:after]
        if line == b"\r\n":
            out.append(line)
            break
        if line[:1] not in (b" ", b"\t"):           # not a folded line: a field of its own
            colon = line.find(b":")
            name = line[:colon] if colon >= 0 else line.rstrip(b"\r\n")   # no colon: all name
            keep = (name.rstrip(b" \t").lower() in wanted) != negate
        if keep:
            out.append(line)
        at = after
    return b"".join(out)


def _section(data, tree, part):
    """The octets of the BODY[...] item asked (b"" when the message has no such part)."""
    numbers = [n + 1 for n in part.part]
    if part.header is not None and part.header.fields:
        at = imapmime.header_start(tree, numbers)
        block = None if at is None else _fields(data, at, part.header.fields, part.header.negate)
    elif part.header is not None:
        block = imapmime.section(data, tree, numbers, "HEADER")
    elif part.mime is not None:
        block = imapmime.section(data, tree, numbers, "MIME")
    elif part.text is not None:
        block = imapmime.section(data, tree, numbers, "TEXT")
    elif numbers:
        block = imapmime.section(data, tree, numbers, None)
    else:
        block = data
    return b"" if block is None else block


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
        tree = header = None
        for part in self.query:
            if not first:
                write(b" ")
            first = False
            kind = part.type
            if kind in ("body", "bodystructure") and tree is None:
                tree = header = imapmime.parse(msg.data())
            if kind == "body":
                self.body(part, msg.data(), tree, out)
            elif kind == "bodystructure":
                write(b"BODYSTRUCTURE " + imapmime.structure(msg.data(), tree, True))
            elif kind == "envelope":
                if header is None:                  # the header alone will do
                    header = imapmime.parse_header(msg.data())
                write(b"ENVELOPE (" + imapmime.envelope(header) + b")")
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

    def body(self, part, data, tree, out):
        if not (part.empty or part.header is not None or part.text is not None
                or part.mime is not None):
            out.append(b"BODY " + imapmime.structure(data, tree, False))     # BODY: the structure
            return
        data = _section(data, tree, part)
        if part.partialBegin is not None:
            data = data[part.partialBegin:part.partialBegin + part.partialLength]
        out.append(_label(part) + b" ")
        out.extend(_literal(data))
