"""
Tests for allworx.config.incremental (a change's Config built from the one
before) and the edit notes of allworx.inifile it reads: the same Config and
the same errors as reading the whole document, at a cost that does not grow
with the office.
"""

import random

from twisted.python.monkey import MonkeyPatcher
from twisted.trial import unittest

from allworx import office as O
from allworx.config import ConfigErrors, checks, incremental, load_config, parse_config
from allworx.inifile import Entry, IniDocument, Section
from allworx.tests.confs import MINIMAL, PW_HASH


def old_render(doc):
    """How the document was rendered before blocks were kept: the reference."""
    out = list(doc.preamble)
    for s in doc.sections:
        if out and out[-1].strip():
            out.append("")
        out.extend(s.lines())
    return "\n".join(out) + "\n"


def orders(config):
    """Each record kind's names in the order the Config keeps them."""
    return {kind: list(getattr(config, kind)) for kind in (
        "users", "aliases", "hosts", "records", "forwards", "groups")}


class RenderTests(unittest.TestCase):

    def test_same_text_as_line_by_line(self):
        rnd = random.Random(7)
        for _ in range(300):
            doc = IniDocument()
            doc.preamble = rnd.choice([[], [""], ["# notes"], ["# a", ""], ["", "# b"]])
            for n in range(rnd.randint(0, 5)):
                items = []
                for k in range(rnd.randint(0, 3)):
                    items.append(rnd.choice([Entry("k%d" % k, "v"), "", "# c", "  ", ";x"]))
                doc.sections.append(Section("s%d" % n, items=items))
            self.assertEqual(doc.render(), old_render(doc))
            if doc.sections:        # an edit, then rendered again
                s = doc.sections[rnd.randrange(len(doc.sections))]
                s.set("new", "1")
                s.items.append(rnd.choice(["", "# end"]))
                s.edited()
                self.assertEqual(doc.render(), old_render(doc))
            self.assertEqual(IniDocument.parse(doc.render()).render(), doc.render())


class EditNotesTests(unittest.TestCase):

    def setUp(self):
        self.doc = IniDocument.parse("[a]\nx = 1\n\n[b]\ny = 2\n\n[c]\nz = 3\n")

    def test_a_copy_notes_what_it_made_its_own_added_and_removed(self):
        doc = self.doc.copy()
        self.assertEqual(doc.edits(self.doc), ([], []))
        b = doc.section("b")
        new = doc.ensure_section("d")
        doc.remove_section("c")
        self.assertEqual(doc.edits(self.doc), ([b, new], ["c"]))
        self.assertIsNone(doc.edits(doc))           # not a copy of itself
        self.assertIsNone(self.doc.edits(None))     # parsed: nothing known

    def test_find_reads_without_making_its_own(self):
        doc = self.doc.copy()
        found = doc.find("b")
        self.assertIs(found, self.doc.sections[1])
        self.assertFalse(doc.mine(found))
        self.assertEqual(doc.edits(self.doc), ([], []))

    def test_a_change_past_the_methods_makes_the_edits_unknown(self):
        doc = self.doc.copy()
        doc.sections.append(Section("e"))
        self.assertIsNone(doc.edits(self.doc))
        doc = self.doc.copy()
        doc.untrack()
        self.assertIsNone(doc.edits(self.doc))

    def test_own_finds_the_place_after_appends_and_removals(self):
        doc = self.doc.copy()
        doc.ensure_section("d")
        doc.remove_section("a")
        c = doc.section("c")
        self.assertEqual([s.name for s in doc.sections], ["b", "c", "d"])
        self.assertIs(doc.sections[1], c)
        self.assertTrue(doc.mine(c))
        self.assertFalse(self.doc.mine(self.doc.sections[2]))     # shared: the origin's stays
        self.assertEqual(self.doc.render(), "[a]\nx = 1\n\n[b]\ny = 2\n\n[c]\nz = 3\n")

    def test_lines_given_again_when_asked(self):
        doc = self.doc.copy()
        doc.section("a").set("w", "0")
        doc.renumber_later()
        self.assertEqual(doc.find("c").line, 7)         # not given yet
        doc.number()
        self.assertEqual(doc.find("c").line, 8)
        self.assertEqual(doc.find("c").get("z").line, 9)


BASE = MINIMAL + "".join("\n[alias a%d]\nto = bob\n" % n for n in range(6)) + \
    "".join("\n[host h%d]\nmac = 52:54:00:00:00:%02x\naddress = 192.168.2.%d\n" % (n, n, 100 + n)
            for n in range(4))


class SameAsAWholeReadTests(unittest.TestCase):
    """Random changes, right and wrong, give what reading the whole file gives."""

    def office(self, name, whole):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# notes\n" + BASE)
        office = O.Office(load_config(path))
        if whole:
            real = office._apply

            def apply_whole(doc, *a, **kw):
                doc.untrack()
                return real(doc, *a, **kw)
            office._apply = apply_whole
        return office

    def change(self, rnd):
        n = rnd.randrange(9)
        kind = rnd.choice(["alias", "host"])
        if kind == "alias":
            values = {"to": rnd.choice(["bob", "alice bob", "nobody", "a1", "a%d" % n, ""])}
        else:
            values = {"mac": "52:54:00:00:01:%02x" % rnd.randrange(3),
                      "address": rnd.choice(["192.168.2.%d" % (100 + rnd.randrange(6)),
                                             "10.0.0.1", ""])}
        return rnd.choice([
            ("put_record", (kind, "%s%d" % (kind[0], n), values)),
            ("put_record", (kind, "%s%d" % (kind[0], n), values), {"create": True}),
            ("delete_record", (kind, "%s%d" % (kind[0], n))),
            ("patch_record", (kind, "%s%d" % (kind[0], n), values)),
            ("update_settings", ("dhcp", {"range": rnd.choice(["1-50", "10-20", "1-999"])})),
            ("update_settings", ("system", {"hostname": rnd.choice(["box", "a1", "h1"])})),
            ("put_record", ("user", "u%d" % n, {"password": PW_HASH, "extension": str(
                200 + rnd.randrange(3))})),
        ])

    def outcome(self, office, call):
        name, args = call[0], call[1]
        kwargs = call[2] if len(call) > 2 else {}
        try:
            getattr(office, name)(*args, **kwargs)
        except ConfigErrors as e:
            return ("refused", [x.as_dict() for x in e.errors])
        except KeyError as e:
            return ("missing", str(e))
        return "done"

    def test_random_changes(self):
        rnd = random.Random(22)
        used = []
        real = incremental._from_previous

        def counting(*args):
            config = real(*args)
            used.append(config is not None)
            return config
        self.patch(incremental, "_from_previous", counting)
        for round_ in range(8):
            quick, whole = self.office("quick", False), self.office("whole", True)
            for step in range(25):
                call = self.change(rnd)
                got = self.outcome(quick, call)
                self.assertEqual(got, self.outcome(whole, call), (round_, step, call))
                self.assertEqual(quick.document_text(), whole.document_text())
                self.assertEqual(quick.config, whole.config)
                self.assertEqual(orders(quick.config), orders(whole.config))
                again = parse_config(quick.document_text())
                self.assertEqual(again, quick.config)
                self.assertEqual(orders(again), orders(quick.config))
        self.assertGreater(used.count(True), 50)        # the quick way was taken


class CostTests(unittest.TestCase):
    """A one-record change reads one section and walks none of the others."""

    def change_at(self, size):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(MINIMAL + "".join("\n[alias a%d]\nto = bob\n" % n for n in range(size)))
        office = O.Office(load_config(path))
        office.put_record("alias", "a0", {"to": "alice"})      # the first change
        read, kinds = [], []
        real_read, real_kind = checks._read_section, Section.kind

        def kind(section):
            kinds.append(section.name)
            return real_kind.fget(section)
        patches = MonkeyPatcher(
            (checks, "_read_section",
             lambda section, *rest: read.append(section.name) or real_read(section, *rest)),
            (checks, "config_from_document", None),     # never called: it would fail
            (incremental, "config_from_document", None),
            (Section, "kind", property(kind)))
        patches.runWithPatches(office.put_record, "alias", "a1", {"to": "alice bob"})
        self.assertEqual(office.config.aliases["a1"].to, ("alice", "bob"))
        return read, len(kinds)

    def test_does_not_grow(self):
        small = self.change_at(10)
        big = self.change_at(1000)
        self.assertEqual(small[0], ["alias a1", "alias a1"])    # built, then read back
        self.assertEqual(big[0], small[0])
        self.assertEqual(big[1], small[1])

    def test_plain_pins_of_a_hand_edited_file_hashed_at_the_first_change(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(MINIMAL.replace("[user bob]", "[user bob]\nvoicemail_pin = 2468"))
        office = O.Office(load_config(path))
        office.put_record("alias", "x", {"to": "bob"})
        with open(path) as f:
            self.assertNotIn("2468", f.read())
