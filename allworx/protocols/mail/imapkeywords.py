# -*- test-case-name: allworx.tests.mail.test_imapkeywords -*-
"""
IMAP keywords ($Forwarded, $Junk, $NotJunk, $label1, $MDNSent...) kept as
Dovecot keeps them in a Maildir: a message's keywords are the letters a-z
after its system flags in the file name (`:2,FSab`), and each folder's
`dovecot-keywords` file names the letters (`0 $Forwarded` is a, `1 $Junk`
b, ...). A Maildir moved from Dovecot keeps its keywords here and one moved
to Dovecot keeps them there.

A folder holds at most 26 keywords, as there; while it has room,
PERMANENTFLAGS ends with \\* (a client may make new ones). A keyword is
matched without regard to case and kept as first written; what is not an
atom, or begins with a backslash, is no keyword (STORE and APPEND answer
BAD). A new keyword is written to the file (atomically, fsynced) before any
message has its letter.
"""

import os
import re

from allworx.atomicfile import write_atomically

FILE = "dovecot-keywords"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ATOM = re.compile(r"^[^\x00-\x20\x7f-\uffff(){%*\"\\\]]+$")


def valid(name):
    """True for a name that can be a keyword (an atom, not a system flag)."""
    return bool(_ATOM.match(name)) and len(name) <= 128


class Keywords:
    """The keywords of the folder at `path`, read from its file at the first need."""

    def __init__(self, path):
        self.path = path
        self._names = None          # [name], the index is the letter's

    @property
    def names(self):
        if self._names is None:
            self._names = self._read()
        return self._names

    def _read(self):
        names = [None] * len(LETTERS)
        try:
            with open(os.path.join(self.path, FILE), encoding="utf-8", errors="replace") as f:
                for line in f:
                    index, _, name = line.rstrip("\n").partition(" ")
                    if index.isdigit() and int(index) < len(LETTERS) and valid(name):
                        names[int(index)] = name
        except FileNotFoundError:
            pass
        while names and names[-1] is None:
            names.pop()
        return names

    def full(self):
        return len([n for n in self.names if n is not None]) >= len(LETTERS)

    def letter(self, name, make=False):
        """The keyword's letter, or None; with `make`, a new letter for a new keyword (None if full)."""
        lower = name.lower()
        for i, known in enumerate(self.names):
            if known is not None and known.lower() == lower:
                return LETTERS[i]
        if not make or not valid(name):
            return None
        names = list(self.names)
        free = names.index(None) if None in names else len(names)
        if free >= len(LETTERS):
            return None
        if free == len(names):
            names.append(name)
        else:
            names[free] = name
        write_atomically(os.path.join(self.path, FILE),
                         "".join("%d %s\n" % (i, n) for i, n in enumerate(names) if n is not None))
        self._names = names
        return LETTERS[free]

    def name(self, letter):
        i = LETTERS.find(letter)
        if i < 0 or i >= len(self.names):
            return None
        return self.names[i]

    def all(self):
        """The folder's keywords, in letter order."""
        return [n for n in self.names if n is not None]


def flag_lines(system, keywords, writeable):
    """The untagged FLAGS and PERMANENTFLAGS lines of a folder (system: its system flags)."""
    flags = " ".join(list(system) + keywords.all()).encode("utf-8", "replace")
    permanent = (flags + (b"" if keywords.full() else b" \\*")) if writeable else b""
    return [b"FLAGS (%s)" % flags, b"OK [PERMANENTFLAGS (%s)] flags kept" % permanent.strip()]
