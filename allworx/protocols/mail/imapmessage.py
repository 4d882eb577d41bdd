# -*- test-case-name: allworx.tests.mail.test_imap -*-
"""
What twisted.mail.imap4's FETCH and STORE code reads: `Message` (one stored
file, sent with CRLF line ends: its flags, internal date, size and octets;
its structure, parts and headers are imapmime's) and `SelectedMailbox`, a
session's selected folder seen through its `View` (imapstore.py).
"""

import bisect
import email.utils
import io
import os

from twisted.mail import imap4
from zope.interface import implementer

from allworx.protocols.mail.imapstore import SEPARATOR, SYSTEM_FLAGS, flags_of, letters_of


def _crlf(data):
    """The message with CRLF line ends. The store keeps LF only, so one pass is the rule."""
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _read(f):
    """
    (the whole file, its mtime) with one fstat and as few reads as its size allows (a
    buffered file's read() makes more calls); a Maildir file does not change once there.
    """
    try:
        fd = f.fileno()
        st = os.fstat(fd)
    except (OSError, ValueError):
        return f.read(), 0
    parts = [os.read(fd, st.st_size)]
    got = len(parts[0])
    while got < st.st_size:
        more = os.read(fd, st.st_size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return (parts[0] if len(parts) == 1 else b"".join(parts)), st.st_mtime


def header_end(data, start=0, end=None):
    """
    Where the header of the entity at data[start:end] ends, its blank line included: the
    body's first octet (RFC 3501 6.4.5). An entity with no blank line is all header; one
    beginning with the blank line has a header of just that line.
    """
    if end is None:
        end = len(data)
    if data.startswith(b"\r\n", start, end):
        return start + 2
    at = data.find(b"\r\n\r\n", start, end)
    return end if at < 0 else at + 4


def _split(data):
    """(the header with its blank line, the body)."""
    at = header_end(data)
    return data[:at], data[at:]


@implementer(imap4.IMessage, imap4.IMessageFile)
class Message:
    """A stored message; the file is read when first needed."""

    def __init__(self, folder, uid, name):
        self.folder = folder
        self.uid = uid
        self.name = name
        self._data = None
        self._date = None

    def data(self):
        if self._data is None:
            with self.folder.storage.open(self.name) as f:
                raw, self._date = _read(f)
                self._data = _crlf(raw)
        return self._data

    def open(self):
        return io.BytesIO(self.data())

    def getUID(self):
        return self.uid

    def getFlags(self):
        return flags_of(self.folder.flags.get(self.name, ""), self.folder.keywords)

    def getInternalDate(self):
        self.data()
        return email.utils.formatdate(self._date or 0)

    def getBodyFile(self):
        return io.BytesIO(_split(self.data())[1])

    def getSize(self):
        return len(self.data())


@implementer(imap4.IMailbox)
class SelectedMailbox:
    """
    The mailbox twisted's FETCH, STORE and SEARCH work on: sequence numbers
    and UIDs from the session's view, flags written through the folder.
    """

    def __init__(self, view):
        self.view = view
        self.folder = view.folder

    # what twisted asks
    def getFlags(self):
        return list(SYSTEM_FLAGS) + self.folder.keywords.all()

    def getHierarchicalDelimiter(self):
        return SEPARATOR

    def getUIDValidity(self):
        return self.folder.uidvalidity

    def getUIDNext(self):
        return self.folder.uidnext

    def getUID(self, seq):
        return self.view.seq[seq - 1]

    def getMessageCount(self):
        return len(self.view.seq)

    def getRecentCount(self):
        return 0

    def getUnseenCount(self):
        return self.folder.status()["UNSEEN"]

    def isWriteable(self):
        return self.view.writeable

    def addListener(self, listener):
        pass

    def removeListener(self, listener):
        pass

    def requestStatus(self, names):
        status = self.folder.status()
        return {n: status[n] for n in names if n in status}

    def select(self, messages, uid):
        """
        [(seq, uid)] the message set names, in order (those expunged elsewhere too): a
        binary search of the view's UIDs a range, not a pass over the whole mailbox.
        """
        seq = self.view.seq
        try:
            messages.last = (seq[-1] if seq else max(self.folder.uidnext - 1, 0)) if uid \
                else len(seq)
        except ValueError:
            pass        # set already, by an earlier look at the same set
        spans = []
        for low, high in messages.ranges:      # "*" replaced by now: numbers only
            if uid:
                spans.append((bisect.bisect_left(seq, low), bisect.bisect_right(seq, high)))
            else:
                spans.append((max(low, 1) - 1, min(high, len(seq))))
        if len(spans) == 1:
            start, end = spans[0]
            return [(i + 1, seq[i]) for i in range(start, end)]
        wanted = sorted({i for start, end in spans for i in range(start, end)})
        return [(i + 1, seq[i]) for i in wanted]

    def fetch(self, messages, uid):
        out = []
        for number, u in self.select(messages, uid):
            name = self.view.name_at(u)
            if name is not None:
                out.append((number, Message(self.folder, u, name)))
        return out

    def store(self, messages, flags, mode, uid):
        """Set, add (mode 1) or remove (-1) flags; {seq: [flags]} of what changed."""
        letters = letters_of(flags, self.folder.keywords)
        wanted, changes = [], []
        for number, u in self.select(messages, uid):
            name = self.view.name_at(u)
            if name is None:
                continue
            old = self.folder.flags.get(name, "")
            if mode > 0:
                new = "".join(sorted(set(old) | set(letters)))
            elif mode < 0:
                new = "".join(sorted(set(old) - set(letters)))
            else:
                new = letters
            if new != old:
                changes.append((name, new))
            wanted.append((number, u, name, new))
        gone = self.folder.set_flags_of(changes) if changes else set()
        result = {}
        for number, u, name, new in wanted:
            if name not in gone:
                self.view.know(u, new)
                result[number] = flags_of(new, self.folder.keywords)
        return result
