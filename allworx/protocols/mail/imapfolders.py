# -*- test-case-name: allworx.tests.mail.test_imap -*-
"""
The IMAP commands about folders (imap.py's server mixes them in): NAMESPACE,
CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST and LSUB (with the
special-use attributes always, and the extended LIST's `(SPECIAL-USE)` and
`(SUBSCRIBED)` selection and `RETURN (...)` options), STATUS and APPEND
(answered with APPENDUID).
"""

import calendar
import os
import re

from twisted.logger import Logger
from twisted.mail import imap4

from allworx.protocols.mail.imapstore import SEPARATOR, SPECIAL_USE, FolderError, check_name, letters_of

log = Logger()


_DATE_TIME = re.compile(rb"^ ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([-+])(\d\d)(\d\d)$")
MONTHS = [b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV", b"DEC"]


def internal_date(text):
    """APPEND's date-time (RFC 3501 `07-Dec-2026 10:00:00 +0100`) in seconds (BAD if it is not one)."""
    m = _DATE_TIME.match(text)
    if m is None or m.group(2).upper() not in MONTHS:
        raise imap4.IllegalClientResponse("not a date-time: %r" % text[:40])
    day, _, year, hour, minute, second, sign, zh, zm = m.groups()
    try:
        when = calendar.timegm((int(year), MONTHS.index(m.group(2).upper()) + 1, int(day),
                                int(hour), int(minute), int(second)))
    except (ValueError, OverflowError):
        raise imap4.IllegalClientResponse("not a date-time: %r" % text[:40])
    return when - (1 if sign == b"+" else -1) * (int(zh) * 3600 + int(zm) * 60)


def _quote(name):
    return b'"' + name.encode("ascii").replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _pattern(ref, pattern):
    """A compiled regex for an IMAP LIST reference and pattern."""
    text = ref + pattern
    out = []
    for c in text:
        out.append(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c))
    return re.compile("^" + "".join(out) + "$", re.S)


class FolderCommands:
    """Folder commands for an IMAP4Server with `user`, `factory.mailboxes` and `_run`."""

    def _name(self, raw):
        try:
            name = raw.decode("ascii")
        except UnicodeDecodeError:
            raise FolderError("mailbox names are modified UTF-7")
        return "INBOX" if name.upper() == "INBOX" else name

    def _guarded(self, tag, work, *args):
        try:
            text = work(*args)
        except (FolderError, imap4.IllegalClientResponse) as e:
            return self.sendNegativeResponse(tag, str(e).encode("utf-8", "replace"))
        except OSError as e:
            log.warn("imap: {user}: {error}", user=self.user, error=str(e))
            return self.sendNegativeResponse(tag, b"[SERVERBUG] the server could not do that")
        self.sendPositiveResponse(tag, text)

    def do_NAMESPACE(self, tag):
        self.sendUntaggedResponse(b'NAMESPACE (("" "/")) NIL NIL')
        self.sendPositiveResponse(tag, b"NAMESPACE completed")

    auth_NAMESPACE = select_NAMESPACE = (do_NAMESPACE,)

    def do_CREATE(self, tag, name):
        def work():
            n = self._name(name).rstrip(SEPARATOR)
            self.factory.mailboxes.create(self.user, n)
            return b"CREATE completed"
        self._guarded(tag, work)

    auth_CREATE = select_CREATE = (do_CREATE, imap4.IMAP4Server.arg_finalastring)

    def do_DELETE(self, tag, name):
        def work():
            self.factory.mailboxes.delete(self.user, self._name(name))
            return b"DELETE completed"
        self._guarded(tag, work)

    auth_DELETE = select_DELETE = (do_DELETE, imap4.IMAP4Server.arg_finalastring)

    def do_RENAME(self, tag, old, new):
        def work():
            boxes, was, now = self.factory.mailboxes, self._name(old), self._name(new)
            boxes.rename(self.user, was, now)
            subs = boxes.subscriptions(self.user)       # the subscriptions follow the names
            moved = {n for n in subs if n == was or n.startswith(was + SEPARATOR)}
            if moved:
                boxes.save_subscriptions(self.user, (subs - moved) | {now + n[len(was):] for n in moved})
            return b"RENAME completed"
        self._guarded(tag, work)

    auth_RENAME = select_RENAME = (do_RENAME, imap4.IMAP4Server.arg_astring,
                                   imap4.IMAP4Server.arg_finalastring)

    def do_SUBSCRIBE(self, tag, name, add=True):
        def work():
            boxes = self.factory.mailboxes
            subs = boxes.subscriptions(self.user)
            n = self._name(name)
            check_name(n)
            boxes.save_subscriptions(self.user, subs | {n} if add else subs - {n})
            return b"done"
        self._guarded(tag, work)

    def do_UNSUBSCRIBE(self, tag, name):
        self.do_SUBSCRIBE(tag, name, add=False)

    auth_SUBSCRIBE = select_SUBSCRIBE = (do_SUBSCRIBE, imap4.IMAP4Server.arg_finalastring)
    auth_UNSUBSCRIBE = select_UNSUBSCRIBE = (do_UNSUBSCRIBE, imap4.IMAP4Server.arg_finalastring)

    def do_LIST(self, tag, line, command=b"LIST"):
        def work():
            words = imap4.parseNestedParens(line)
            select = []
            if words and isinstance(words[0], list):
                select = [w.upper() for w in words.pop(0) if isinstance(w, bytes)]
            returns = []
            if len(words) >= 4 and isinstance(words[2], bytes) and words[2].upper() == b"RETURN":
                returns = [w.upper() for w in words[3] if isinstance(w, bytes)]
                words = words[:2]
            if len(words) != 2:
                raise imap4.IllegalClientResponse("LIST needs a reference and a pattern")
            ref, patterns = words
            if isinstance(ref, list):
                raise imap4.IllegalClientResponse("bad reference")
            patterns = patterns if isinstance(patterns, list) else [patterns]
            self._list(command, self._name(ref) if ref else "",
                       [self._name(p) if p else "" for p in patterns], select, returns)
            return command + b" completed"
        self._guarded(tag, work)

    def _list(self, command, ref, patterns, select, returns):
        boxes = self.factory.mailboxes
        if patterns == [""]:
            return self.sendUntaggedResponse(command + b' (\\Noselect) "/" ""')
        names = boxes.names(self.user)
        subscribed = boxes.subscriptions(self.user)
        matches = [_pattern(ref, p) for p in patterns]
        for name in names:
            if not any(m.match(name) or (name == "INBOX" and m.match("inbox")) for m in matches):
                continue
            if command == b"LSUB" or b"SUBSCRIBED" in select:
                if name not in subscribed:
                    continue
            if b"SPECIAL-USE" in select and name not in SPECIAL_USE:
                continue
            attrs = []
            if command == b"LIST":
                children = any(n.startswith(name + SEPARATOR) for n in names)
                attrs.append("\\HasChildren" if children else "\\HasNoChildren")
                if name in SPECIAL_USE:
                    attrs.append(SPECIAL_USE[name])
                if name in subscribed and (b"SUBSCRIBED" in select or b"SUBSCRIBED" in returns):
                    attrs.append("\\Subscribed")
            self.sendUntaggedResponse(b"%s (%s) \"/\" %s" % (command, " ".join(attrs).encode(),
                                                              _quote(name)))

    def do_LSUB(self, tag, line):
        self.do_LIST(tag, line, b"LSUB")

    auth_LIST = select_LIST = (do_LIST, imap4.IMAP4Server.arg_line)
    auth_LSUB = select_LSUB = (do_LSUB, imap4.IMAP4Server.arg_line)

    def do_STATUS(self, tag, name, items):
        def work():
            n = self._name(name)
            folder = self.factory.mailboxes.folder(self.user, n)
            if folder is None:
                raise FolderError("no such mailbox")
            status = folder.status()
            wanted = [i.upper().decode("ascii", "replace") for i in items if isinstance(i, bytes)]
            if any(w not in status for w in wanted):
                raise imap4.IllegalClientResponse("unknown STATUS item")
            self.sendUntaggedResponse(b"STATUS %s (%s)" % (_quote(n), " ".join(
                "%s %d" % (w, status[w]) for w in wanted).encode()))
            return b"STATUS completed"
        self._guarded(tag, work)

    auth_STATUS = select_STATUS = (do_STATUS, imap4.IMAP4Server.arg_astring,
                                   imap4.IMAP4Server.arg_plist)

    def do_APPEND(self, tag, name, flags, date, message):
        when = internal_date(date) if date else None

        def work():
            n = self._name(name)
            folder = self.factory.mailboxes.folder(self.user, n)
            if folder is None:
                raise FolderError("[TRYCREATE] no such mailbox")
            message.seek(0)
            data = message.read()
            letters = letters_of([f.decode("ascii", "replace") for f in flags or ()
                                  if isinstance(f, bytes)], folder.keywords)
            d = folder.add(data, letters)

            def added(uid):
                if when is not None:        # its internal date: the file's time, as Dovecot's
                    os.utime(os.path.join(folder.storage.path, "cur", "%s:2,%s" % (
                        folder.by_uid[uid], letters)), (when, when))
                self.factory.mailboxes.filed(self.user, None, folder.name, data)
                return b"[APPENDUID %d %d] APPEND completed" % (folder.uidvalidity, uid)
            return d.addCallback(added)
        self._run(tag, work)

    auth_APPEND = select_APPEND = (do_APPEND, imap4.IMAP4Server.arg_astring,
                                   imap4.IMAP4Server.opt_plist, imap4.IMAP4Server.opt_datetime,
                                   imap4.IMAP4Server.arg_literal)
