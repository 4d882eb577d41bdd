"""
Issue 21, item 1: no value can add lines, keys or sections to tap.conf. Every
key's reader refuses what the file cannot hold in a value, and the office
reads back the text it is about to write and refuses any change whose file
would not give the model it meant; refused changes leave the file
byte-for-byte as it was.
"""

import os

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from allworx import office as O
from allworx.config import (
    RECORD_SECTIONS, SETTINGS_SECTIONS, ConfigErrors, check_value_text, keys_of, load_config,
    parse_config, parse_digits)
from allworx.config import values as V
from allworx.tests.confs import MINIMAL, with_sections

INJECTED = "\n[record injected]\na = 1.2.3.4"

# Every way text can break a line for str.splitlines, which reads the file.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


class ValueTextTests(unittest.TestCase):
    """`check_value_text` and every key's reader."""

    def refused(self, text):
        return str(self.assertRaises(ValueError, check_value_text, text))

    def test_line_breaks_named(self):
        for ch in LINE_BREAKS:
            self.assertEqual(self.refused("a%sb" % ch),
                             "a line break (U+%04X) is not allowed in a value" % ord(ch))

    def test_other_controls_named(self):
        self.assertEqual(self.refused("a\0b"), "a NUL character (U+0000) is not allowed in a value")
        for ch in "\x01\x1b\x7f\x9b":
            self.assertEqual(self.refused(ch),
                             "the control character U+%04X is not allowed in a value" % ord(ch))
        self.assertIn("U+202E", self.refused("evil\u202etxt"))
        self.assertIn("U+D800", self.refused("x\ud800"))

    def test_comment_start_named(self):
        self.assertIn("' #' is not allowed in a value", self.refused("Bob # the boss"))
        self.assertIn("'\\t;'", self.refused("a\t;b"))

    def test_what_a_value_may_hold(self):
        for text in ("Zo\u00eb M\u00fcller-\u00c5str\u00f6m", "v=spf1 mx -all", "a\tb", "#1 fan",
                     "x=1; y", "[not a section]", "\u65e5\u672c", "\U0001f4de", "C#"):
            check_value_text(text)

    def test_every_key_refuses_a_line_break(self):
        """Whatever a key's type, its reader refuses a value that breaks the line."""
        for sections in (SETTINGS_SECTIONS, RECORD_SECTIONS):
            for name, cls in sections.items():
                for f in keys_of(cls):
                    e = self.assertRaises(ValueError, f.metadata["parse"], "1" + INJECTED)
                    self.assertIn("line break", str(e), (name, f.name))

    def test_the_file_reader_names_section_key_and_character(self):
        text = MINIMAL.replace("full_name = Bob Baker", "full_name = Bob\x1bBaker")
        [e] = self.assertRaises(ConfigErrors, parse_config, text).errors
        self.assertEqual((e.section, e.key), ("user bob", "full_name"))
        self.assertIn("U+001B", str(e))

    def test_digits_are_ascii_digits(self):
        # str.isdigit() is true for these; a phone cannot dial them.
        for text in ("\u0661\u0660\u0661", "\u00b2\u00b3", "10\u2082"):
            self.assertRaises(ValueError, parse_digits(2, 8), text)

    def test_pin_value(self):
        self.assertEqual(V.parse_pin("1234"), "1234")
        self.assertEqual(V.parse_pin("$argon2id$v=19$x"), "$argon2id$v=19$x")
        for bad in ("123", "12345678901", "12a4", "\u0661\u0662\u0663\u0664"):
            self.assertRaises(ValueError, V.parse_pin, bad)


class OfficeTestBase(unittest.TestCase):
    """An office on a real tap.conf in the test's temp dir."""

    def setUp(self):
        self.path = os.path.abspath(self.mktemp())
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w") as f:
            f.write("# our office\n" + with_sections("[record www2]\ntxt = hello\n"))
        self.office = O.Office(load_config(self.path))

    def raw(self):
        with open(self.path, "rb") as f:
            return f.read()

    def refused(self, change, *args):
        """Run a change that must fail: the file and the live config stay as they were."""
        before, config = self.raw(), self.office.config
        e = self.assertRaises(ConfigErrors, change, *args)
        self.assertEqual(self.raw(), before)
        self.assertIs(self.office.config, config)
        return e.errors


class OfficeInjectionTests(OfficeTestBase):

    def test_settings_value_with_a_new_section(self):
        [e] = self.refused(self.office.update_settings, "lan", {"interface": "lan0" + INJECTED})
        self.assertEqual((e.section, e.key, e.message),
                         ("lan", "interface", "a line break (U+000A) is not allowed in a value"))

    def test_several_sections_at_once(self):
        [e] = self.refused(self.office.update_sections, {
            "system": {"hostname": "srv"}, "lan": {"interface": "lan0\r" + INJECTED}})
        self.assertEqual((e.section, e.key), ("lan", "interface"))
        self.assertIn("U+000D", e.message)

    def test_record_values(self):
        for change, args in (
                (self.office.patch_record, ("user", "bob", {"full_name": "Bob" + INJECTED})),
                (self.office.patch_record, ("record", "www2", {"txt": "hi" + INJECTED})),
                (self.office.put_record, ("record", "x", {"txt": "a\u2028[record y]\u2028a = 1.2.3.4"})),
                (self.office.put_record, ("alias", "x", {"to": "alice\0bob"}))):
            errors = self.refused(change, *args)
            [e] = [e for e in errors if e.key]
            self.assertEqual(e.section, "%s %s" % args[:2])
            self.assertEqual(e.key, list(args[2])[0])
            self.assertIn("is not allowed in a value", e.message, args)

    def test_a_comment_in_a_value_is_refused_not_cut(self):
        [e] = self.refused(self.office.patch_record, "user", "bob", {"full_name": "Bob ; boss"})
        self.assertEqual(e.key, "full_name")
        self.assertIn("start of a comment", e.message)

    def test_record_name_with_a_line_break(self):
        for name in ("carol\n", "carol\n[record injected]", " carol"):
            [e] = self.refused(self.office.put_record, "alias", name, {"to": "alice"})
            self.assertIn("is not a valid alias name", e.message)

    def test_read_back_catches_what_the_readers_let_through(self):
        """Without the readers' check, the office's read-back still refuses the change."""
        self.patch(V, "check_value_text", lambda text: None)
        # The last section: the injected one would be read back whole.
        errors = self.refused(self.office.patch_record, "record", "www2", {"txt": "hi" + INJECTED})
        self.assertEqual(sorted((e.section, e.key, e.message) for e in errors), [
            ("record injected", None, "would appear in tap.conf when read back"),
            ("record www2", "txt", "would read back from tap.conf as 'hi', not as given")])
        # Elsewhere the keys after it would land in the new section.
        errors = self.refused(self.office.patch_record, "user", "bob", {"full_name": "Bob" + INJECTED})
        self.assertIn(("record injected", "the file written would not read back: unknown key"),
                      [(e.section, e.message) for e in errors])
        [e] = self.refused(self.office.patch_record, "user", "bob", {"full_name": "Bob # boss"})
        self.assertEqual((e.section, e.key), ("user bob", "full_name"))
        self.assertIn("would read back from tap.conf as 'Bob'", e.message)

    def test_text_that_cannot_be_utf8_is_refused(self):
        text = self.office.document_text() + "# \ud800\n"
        [e] = self.refused(self.office.replace_text, text)
        self.assertIn("UTF-8", e.message)

    def test_an_accepted_change_reads_back_the_same(self):
        self.office.patch_record("user", "bob", {"full_name": "Bob [the boss] =#1;ok"})
        self.assertEqual(load_config(self.path), self.office.config)
        self.assertEqual(self.office.config.users["bob"].full_name, "Bob [the boss] =#1;ok")


# Text as an attacker or a careless script sends it: controls, line breaks,
# the file's own syntax, and any unicode.
SYNTAX = st.sampled_from(list(LINE_BREAKS) + ["\0", "\t", "\x1b", "\x7f", "[", "]", "=", ":",
                                              "#", ";", " ", " #", " ;", "[record x]", "a = 1",
                                              "\u202e", "\ud800", "\ufeff"])
VALUES = st.lists(st.one_of(SYNTAX, st.text(max_size=8)), max_size=8).map("".join)


class OfficeValueProperty(OfficeTestBase):

    @settings(max_examples=150, deadline=None)
    @given(kind_key=st.sampled_from([("user", "bob", "full_name"), ("record", "www2", "txt"),
                                     ("alias", "sales", "to"), ("lan", None, "interface")]),
           value=VALUES)
    def test_refused_or_read_back_exactly(self, kind_key, value):
        """Any text set through the office: refused with the file unchanged, or on disk as given."""
        kind, name, key = kind_key
        before = self.raw()
        try:
            if name is None:
                self.office.update_settings(kind, {key: value})
            else:
                self.office.patch_record(kind, name, {key: value})
        except ConfigErrors:
            self.assertEqual(self.raw(), before)
            return
        reread = load_config(self.path)
        self.assertEqual(reread, self.office.config)
        section = getattr(reread, kind) if name is None else reread.records[name] if kind == "record" \
            else reread.users[name] if kind == "user" else reread.aliases[name]
        stored = getattr(section, key)
        if key == "to":
            self.assertEqual(stored, tuple(value.replace(",", " ").split()))
        else:
            self.assertEqual(stored, value.strip())
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
