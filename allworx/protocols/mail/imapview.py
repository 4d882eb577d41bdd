# -*- test-case-name: allworx.tests.mail.test_imap -*-
"""
One IMAP session's view of a folder (imapstore.Folder): its own sequence
numbers and the flags it was last told, so it reports EXPUNGE, EXISTS and
FETCH FLAGS lines for what changed since.

A view starts as the folder's snapshot (`Folder.snapshot`: the UIDs in
order and their flags, made once per change of the folder and shared by
every view opened since), and copies it only when it first has to differ
from it: a SELECT of a big mailbox costs no pass over its messages.
"""

import bisect

from allworx.protocols.mail.imapkeywords import flag_lines
from allworx.protocols.mail.imapstore import SYSTEM_FLAGS, flags_of


class View:
    """
    One session's view of a folder: its sequence numbers (`seq`, UIDs,
    ascending) and the flags it was last told (`known`). `folder_changed`
    marks it stale and pokes the session; `changes` gives the lines to
    report, from the folder's changes since `told` (`gone`: UIDs expunged
    but not yet reported). `seq` and `known` are read here and elsewhere;
    they change only through `know` and `changes`.
    """

    def __init__(self, folder, session, writeable):
        self.folder = folder
        self.session = session
        self.writeable = writeable
        self._base = folder.snapshot()
        self.seq, self.known = self._base
        self.told = folder.version
        self.gone = set()
        self.keywords = folder.keywords.all()     # the keywords the session was told of
        folder.views.add(self)

    def _own(self):
        """Copy the folder's snapshot before the first change of this view's own."""
        if self.seq is self._base[0]:
            self.seq = list(self.seq)
        if self.known is self._base[1]:
            self.known = dict(self.known)

    def know(self, uid, letters):
        """The session was told this message's flags (a STORE's answer)."""
        if self.known.get(uid) != letters:
            self._own()
            self.known[uid] = letters

    def folder_changed(self):
        notify = getattr(self.session, "mailbox_changed", None)
        if notify is not None:
            notify()

    def _index(self, uid):
        i = bisect.bisect_left(self.seq, uid)
        return i if i < len(self.seq) and self.seq[i] == uid else None

    def _what_changed(self):
        """UIDs whose flags may differ from `known` (those of seq to look at); `gone` updated."""
        folder = self.folder
        since = folder.changes_since(self.told)
        self.told = folder.version
        if since is None:
            self.gone.update(uid for uid in self.seq if uid not in folder.by_uid)
            return self.seq
        flagged = set()
        for uid, gone in since:
            if gone:
                self.gone.add(uid)
            else:
                flagged.add(uid)
        return sorted(flagged)

    def changes(self, expunges=True):
        """Untagged lines (bytes) for what changed since last told, and the view made current."""
        folder = self.folder
        present = folder.by_uid
        candidates = self._what_changed()
        out = []
        if folder.keywords.all() != self.keywords:     # a session made a new one: FLAGS again
            self.keywords = folder.keywords.all()
            out.extend(flag_lines(SYSTEM_FLAGS, folder.keywords, self.writeable))
        if expunges and self.gone:
            self._own()
            for uid in sorted(self.gone, reverse=True):
                index = self._index(uid)
                if index is not None:
                    out.append(b"%d EXPUNGE" % (index + 1))
                    del self.seq[index]
                    self.known.pop(uid, None)
            self.gone.clear()
        for uid in candidates:
            name = present.get(uid)
            if name is None or folder.flags[name] == self.known.get(uid):
                continue
            index = self._index(uid)
            if index is not None:
                self._own()
                self.known[uid] = folder.flags[name]
                out.append(b"%d FETCH (UID %d FLAGS (%s))" % (
                    index + 1, uid, " ".join(flags_of(folder.flags[name], folder.keywords)).encode()))
        last = self.seq[-1] if self.seq else 0
        order = folder.order
        new = [uid for uid, _ in order[bisect.bisect_right(order, last, key=lambda e: e[0]):]]
        if new:
            self._own()
            self.seq.extend(new)
            for uid in new:
                self.known[uid] = folder.flags[present[uid]]
            out.append(b"%d EXISTS" % len(self.seq))
        return out

    def name_at(self, uid):
        """The message's file name, or None when it is gone."""
        return self.folder.by_uid.get(uid)

    def close(self, mailboxes):
        mailboxes.release(self.folder, self)
