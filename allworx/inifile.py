# -*- test-case-name: allworx.tests.core.test_inifile -*-
"""
The text of tap.conf as a document: sections and keys with their line numbers,
edited in place so that a change made from the admin pages keeps the file's
comments and layout; `allworx.atomicfile.write_atomically` writes it back.

A copy shares its sections with the document it came from (copy on write):
`section`, `ensure_section` and `own` hand out a section of this document's
own before anyone edits it, so a change costs what it changes, not the size
of the file. A section names the one document that may edit it in place
(`owner`); once a document is copied, neither edits the sections they share.
A section keeps its rendered lines and what the config layer made of it
(`model`) until it is edited; `verified` says its lines are known to read
back as they are (parsed from text, or checked after an edit).

A copy also notes what was done to it (`touched`: the sections made its own
or added, `removed`: the names taken out), so that a reader can redo only
those against what it made of the document copied (`origin`); a change made
otherwise (`untrack`) leaves it to read everything. Rendering joins each
section's kept text; line numbers are given again only when asked for
(`renumber_later`, then `number` before a line is read).
"""

import itertools
import re

import attr

_SECTION = re.compile(r"^\[\s*([^\]]*?)\s*\]\s*(?:[#;].*)?$")
_ENTRY = re.compile(r"^([A-Za-z0-9_.-]+)\s*[=:]\s*(.*)$")
# Each document's own number, the `owner` of the sections it may edit in place.
_serials = itertools.count(1)


class IniSyntaxError(ValueError):
    """A line of the file that is neither a section, an entry nor a comment."""

    def __init__(self, line, text, reason):
        ValueError.__init__(self, "line %d: %s: %r" % (line, reason, text))
        self.line = line
        self.text = text
        self.reason = reason


@attr.s(slots=True)
class Entry:
    """One `key = value` of a section; `line` is 1-based (0 for a new entry)."""

    key = attr.ib()
    value = attr.ib()
    line = attr.ib(default=0)
    # The original text lines, kept while the value is unchanged.
    raw = attr.ib(default=None)


@attr.s(slots=True)
class Section:
    """A `[name]` block: its entries and the comment lines between them."""

    name = attr.ib()
    line = attr.ib(default=0)
    # Items are Entry objects or plain strings (comments, blank lines).
    items = attr.ib(factory=list)
    header = attr.ib(default=None)
    # The `serial` of the document that may edit it in place (None: none may).
    owner = attr.ib(default=None, eq=False, repr=False)
    # Its lines read back as they are (parsed from text, or checked since).
    verified = attr.ib(default=False, eq=False, repr=False)
    # Added to a copy by `ensure_section` (not one of the document copied).
    added = attr.ib(default=False, eq=False, repr=False)
    # What the config layer made of it, kept until it is edited (config.checks).
    model = attr.ib(default=None, eq=False, repr=False)
    # `line` and its entries' lines are those of the text it was parsed from
    # or last numbered in (`IniDocument.renumber`), as long as it is unedited.
    numbered = attr.ib(default=False, eq=False, repr=False)
    _lines = attr.ib(default=None, eq=False, repr=False)
    _text = attr.ib(default=None, eq=False, repr=False)
    _block = attr.ib(default=None, eq=False, repr=False)

    @property
    def kind(self):
        """`user` for `[user alice]`, `dhcp` for `[dhcp]`."""
        return self.name.split(None, 1)[0].lower() if self.name else ""

    @property
    def label(self):
        """`alice` for `[user alice]`, None for `[dhcp]`."""
        parts = self.name.split(None, 1)
        return parts[1].strip() if len(parts) > 1 else None

    def lines(self):
        """The section's text lines, header first (kept until it is edited)."""
        lines = self._lines
        if lines is None:
            lines = [self.header if self.header is not None else "[%s]" % self.name]
            for item in self.items:
                if isinstance(item, Entry):
                    if item.raw is not None:
                        lines.extend(item.raw)
                    else:
                        lines.append("%s = %s" % (item.key, item.value))
                else:
                    lines.append(item)
            self._lines = lines
        return lines

    def text(self):
        """`lines()` as one text (kept until it is edited)."""
        if self._text is None:
            self._text = "\n".join(self.lines())
        return self._text

    def block(self):
        """
        `text()` as it is rendered between other sections: with its newline,
        and a blank line after a last line that is not blank (kept).
        """
        if self._block is None:
            lines = self.lines()
            self._block = self.text() + ("\n\n" if lines[-1].strip() else "\n")
        return self._block

    def edited(self):
        """Forget what was kept about the old content (after changing `items` directly)."""
        self._lines = self._text = self._block = None
        self.model = None
        self.verified = self.numbered = False

    def clone(self):
        """
        A private copy to edit: its own entries, and what is kept about its
        content (its text, model, read back) until an edit forgets it.
        """
        items = [Entry(i.key, i.value, i.line, i.raw) if isinstance(i, Entry) else i
                 for i in self.items]
        return Section(self.name, self.line, items, self.header, verified=self.verified,
                       model=self.model, numbered=self.numbered, lines=self._lines,
                       text=self._text, block=self._block)

    def entries(self):
        return [i for i in self.items if isinstance(i, Entry)]

    def get(self, key):
        for e in self.entries():
            if e.key == key:
                return e
        return None

    def set(self, key, value):
        """Set `key`, keeping its place in the section, or append it."""
        e = self.get(key)
        if e is not None:
            if e.value != value:
                e.value = value
                e.raw = None
                self.edited()
            return
        entry = Entry(key, value)
        last = max((n for n, i in enumerate(self.items)
                    if isinstance(i, Entry)), default=-1)
        self.items.insert(last + 1, entry)
        self.edited()

    def remove(self, key):
        items = [i for i in self.items
                 if not (isinstance(i, Entry) and i.key == key)]
        if len(items) != len(self.items):
            self.items = items
            self.edited()


@attr.s(slots=True)
class IniDocument:
    """
    A parsed INI file that renders back to the same text when unchanged.

    Keys are case-sensitive and lower-case by convention; a value continues on
    the following lines that are indented (a long `to = ...` list, say).
    """

    preamble = attr.ib(factory=list)
    sections = attr.ib(factory=list)
    # `section`'s index: the list (and its length) it was built from, normalised
    # name -> the place of the first section of that name, and whether that
    # dict is this document's alone (a copy shares it until it adds a section);
    # rebuilt when the list or its length differs.
    _index = attr.ib(default=None, init=False, repr=False, eq=False)
    serial = attr.ib(factory=lambda: next(_serials), init=False, repr=False, eq=False)
    # Copied: its sections are shared with the copy, edited only as private copies.
    frozen = attr.ib(default=False, init=False, repr=False, eq=False)
    # A copy's edits (see the module's doc): the document copied, the sections
    # made its own or added, in order, and the names removed; None: not known.
    origin = attr.ib(default=None, init=False, repr=False, eq=False)
    touched = attr.ib(default=None, init=False, repr=False, eq=False)
    removed = attr.ib(default=None, init=False, repr=False, eq=False)
    # The sections' line numbers are to be given again before one is read.
    unnumbered = attr.ib(default=False, init=False, repr=False, eq=False)
    # What a reader of the document noted about it, carried to its copies
    # (allworx.config: the cross-checks it passed, with what they read).
    checked = attr.ib(factory=dict, init=False, repr=False, eq=False)

    @classmethod
    def parse(cls, text):
        """Parse `text`; raises IniSyntaxError for a line it cannot read."""
        doc = cls()
        current = None
        last_entry = None
        for n, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped[0] in "#;":
                target = current.items if current is not None else doc.preamble
                target.append(line)
                last_entry = None if not stripped else last_entry
                continue
            if line[0] in " \t" and last_entry is not None:
                last_entry.value = (last_entry.value + " " + stripped).strip()
                last_entry.raw.append(line)
                continue
            m = _SECTION.match(stripped)
            if m:
                name = " ".join(m.group(1).split())
                if not name:
                    raise IniSyntaxError(n, line, "empty section name")
                current = Section(name, n, header=line, verified=True, numbered=True,
                                  owner=doc.serial)
                doc.sections.append(current)
                last_entry = None
                continue
            m = _ENTRY.match(stripped)
            if m is None:
                raise IniSyntaxError(n, line, "expected 'key = value' or '[section]'")
            if current is None:
                raise IniSyntaxError(n, line, "a key before any [section]")
            value = _strip_comment(m.group(2))
            last_entry = Entry(m.group(1).lower(), value, n, [line])
            current.items.append(last_entry)
        return doc

    def render(self):
        """The document as text, unchanged lines kept byte for byte."""
        preamble = self.preamble
        head = "\n".join(preamble) + "\n" if preamble else ""
        sections = self.sections
        if not sections:
            return head or "\n"
        if preamble and preamble[-1].strip():
            head += "\n"
        # Each section's kept block, those this copy edited made first; a
        # block missing (None: the join fails) is made, then joined again.
        for s in self.touched or ():
            s.block()
        try:
            return _joined(head, sections)
        except TypeError:
            for s in sections:
                s.block()
            return _joined(head, sections)

    def renumber(self):
        """
        Give each section and entry the line it has in `render()`'s text
        (after edits, so later errors name the lines of the file written).
        """
        self.unnumbered = False
        n = len(self.preamble)
        last = self.preamble[-1] if self.preamble else ""
        for s in self.sections:
            if n and last.strip():
                n += 1
            lines = s._lines
            if lines is None:
                lines = s.lines()
            if s.line != n + 1 or not s.numbered:
                s.line = at = n + 1
                s.numbered = True
                for item in s.items:
                    at += 1
                    if isinstance(item, Entry):
                        item.line = at
                        at += len(item.raw) - 1 if item.raw else 0
            n += len(lines)
            last = lines[-1]

    def renumber_later(self):
        """`renumber` when a line is next read (`number`): the lines are rarely read."""
        self.unnumbered = True

    def number(self):
        """Give the lines again if `renumber_later` asked for it (before reading a line)."""
        if self.unnumbered:
            self.renumber()

    def untrack(self):
        """A change made other than by this class's methods: its edits are no longer known."""
        self.touched = self.removed = None

    def edits(self, origin):
        """
        (sections made its own or added, names removed) since this was copied
        from `origin`, or None when they are not known: not a copy of it, or
        sections added or removed past the methods (the count differs).
        """
        touched, removed = self.touched, self.removed
        if self.origin is not origin or touched is None:
            return None
        added = sum(1 for s in touched if s.added)
        if len(self.sections) != len(origin.sections) + added - len(removed):
            return None
        return touched, removed

    def find(self, name):
        """The first section called `name`, not made this document's own (to read only)."""
        want = _normal_name(name)
        sections = self.sections
        at = self.section_index()[2].get(want)
        if at is None:
            return None
        found = sections[at]
        if _normal_name(found.name) != want:
            self._index = None          # a section renamed in place: look again
            return self.find(name)
        return found

    def section_index(self):
        index = self._index
        sections = self.sections
        if index is None or index[0] is not sections or index[1] != len(sections):
            places = {}
            for n, s in enumerate(sections):
                places.setdefault(_normal_name(s.name), n)
            index = self._index = (sections, len(sections), places, True)
        return index

    def mine(self, section):
        """Whether this document may edit `section` (one of its own) in place."""
        return section.owner == self.serial and not self.frozen

    def section(self, name):
        """The first section called `name` (spacing and case of kind normalised), to edit."""
        found = self.find(name)
        if found is not None and not self.mine(found):
            found = self.own(found)
        return found

    def own(self, section):
        """`section` (one of this document's) as a private copy, safe to edit."""
        if self.mine(section):
            return section
        self._thaw()
        mine = section.clone()
        mine.owner = self.serial
        sections = self.sections
        at = self.section_index()[2].get(_normal_name(section.name))
        if at is None or sections[at] is not section:
            at = list(map(id, sections)).index(id(section))
        sections[at] = mine
        if self.touched is not None:
            self.touched.append(mine)
        return mine

    def _thaw(self):
        """Copied since: from now on this document edits copies of what it shares (a new serial)."""
        if self.frozen:
            self.frozen = False
            self.serial = next(_serials)

    def ensure_section(self, name):
        s = self.section(name)
        if s is None:
            self._thaw()
            s = Section(" ".join(name.split()), added=True, owner=self.serial)
            sections = self.sections
            index = self.section_index()
            sections.append(s)
            places = index[2] if index[3] else dict(index[2])
            places.setdefault(_normal_name(s.name), len(sections) - 1)
            self._index = (sections, len(sections), places, True)
            if self.touched is not None:
                self.touched.append(s)
        return s

    def remove_section(self, name):
        want = _normal_name(name)
        kept = [s for s in self.sections if _normal_name(s.name) != want]
        if self.removed is not None:
            self.removed.extend([want] * (len(self.sections) - len(kept)))
        self.sections = kept

    def copy(self):
        """A document to edit: its sections shared until edited (see `own`)."""
        self.frozen = True
        doc = IniDocument(list(self.preamble), list(self.sections))
        index = self._index
        if index is not None and index[0] is self.sections and index[1] == len(self.sections):
            self._index = (index[0], index[1], index[2], False)
            doc._index = (doc.sections, len(doc.sections), index[2], False)
        doc.checked = dict(self.checked)
        doc.unnumbered = self.unnumbered
        doc.origin, doc.touched, doc.removed = self, [], []
        return doc


def _joined(head, sections):
    """`head` and the sections' blocks as one text, the last without its blank line."""
    parts = [head]
    parts += [s._block for s in sections]
    parts[-1] = sections[-1].text() + "\n"
    return "".join(parts)


def _normal_name(name):
    parts = name.split(None, 1)
    if not parts:
        return ""
    return " ".join([parts[0].lower()] + parts[1:])


def _strip_comment(value):
    """Drop a trailing ` # comment` (a # not preceded by space stays, e.g. URLs)."""
    m = re.search(r"\s[#;]", value)
    if m:
        value = value[:m.start()]
    return value.strip()
