"""Tests for allworx.inifile: parsing, faithful rendering, edits (atomic writes: test_atomicfile)."""

from twisted.trial import unittest

from allworx.inifile import IniDocument, IniSyntaxError

TEXT = """\
# a comment at the top

[system]
domain = example.com   # trailing comment
hostname = box

[alias sales]
# who gets sales mail
to = alice
    bob
"""


class ParseTests(unittest.TestCase):

    def test_round_trip(self):
        """An unchanged document renders byte for byte."""
        self.assertEqual(IniDocument.parse(TEXT).render(), TEXT)

    def test_values_and_lines(self):
        doc = IniDocument.parse(TEXT)
        system = doc.section("system")
        self.assertEqual(system.line, 3)
        self.assertEqual(system.get("domain").value, "example.com")
        self.assertEqual(system.get("domain").line, 4)
        sales = doc.section("alias  sales")
        self.assertEqual((sales.kind, sales.label), ("alias", "sales"))
        self.assertEqual(sales.get("to").value, "alice bob")

    def test_hash_inside_value_kept(self):
        doc = IniDocument.parse("[x]\nurl = pop3://a:b#c@host\n")
        self.assertEqual(doc.section("x").get("url").value, "pop3://a:b#c@host")

    def test_syntax_errors_name_the_line(self):
        e = self.assertRaises(IniSyntaxError, IniDocument.parse, "[a]\nkey value\n")
        self.assertEqual(e.line, 2)
        e = self.assertRaises(IniSyntaxError, IniDocument.parse, "key = 1\n")
        self.assertEqual(e.line, 1)
        self.assertIn("before any [section]", str(e))
        e = self.assertRaises(IniSyntaxError, IniDocument.parse, "[]\n")
        self.assertIn("empty section", str(e))


class EditTests(unittest.TestCase):

    def test_set_keeps_comments_and_order(self):
        doc = IniDocument.parse(TEXT)
        doc.section("system").set("hostname", "server")
        doc.section("system").set("admin_email", "a@example.com")
        out = doc.render()
        self.assertIn("# a comment at the top", out)
        self.assertIn("domain = example.com   # trailing comment", out)
        self.assertLess(out.index("hostname = server"), out.index("admin_email"))
        self.assertLess(out.index("admin_email"), out.index("[alias sales]"))

    def test_add_and_remove_sections(self):
        doc = IniDocument.parse(TEXT)
        doc.ensure_section("user carol").set("full_name", "Carol")
        doc.remove_section("alias sales")
        out = doc.render()
        self.assertNotIn("sales", out)
        self.assertIn("[user carol]\nfull_name = Carol\n", out)
        self.assertEqual(IniDocument.parse(out).render(), out)


class SectionIndexTests(unittest.TestCase):
    """`section` answers from an index (issue 22: a page of 10 records in a file of 3,000 sections)."""

    def doc(self, n=3000):
        return IniDocument.parse("".join("[host h%04d]\nmac = x\n" % i for i in range(n)))

    def test_lookups_do_not_rescan_the_file(self):
        import allworx.inifile as inifile
        doc = self.doc()
        doc.section("host h0000")
        calls = []
        real = inifile._normal_name
        self.patch(inifile, "_normal_name", lambda name: calls.append(name) or real(name))
        for i in range(10):
            self.assertEqual(doc.section("Host  h%04d" % (i * 7)).name, "host h%04d" % (i * 7))
        self.assertLess(len(calls), 100)

    def test_index_follows_changes(self):
        from allworx.inifile import Section
        doc = self.doc(5)
        self.assertIsNone(doc.section("host new"))
        doc.sections.insert(0, Section("host new"))
        self.assertIs(doc.section("host new"), doc.sections[0])
        doc.remove_section("host h0001")
        self.assertIsNone(doc.section("host h0001"))
        self.assertIs(doc.ensure_section("host h0009"), doc.section("host h0009"))
        doc.sections[0].name = "host renamed"
        self.assertIsNone(doc.section("host new"))
        self.assertIs(doc.section("host renamed"), doc.sections[0])

    def test_first_of_a_name_wins(self):
        doc = IniDocument.parse("[user a]\nx = 1\n[user a]\nx = 2\n")
        self.assertEqual(doc.section("user a").entries()[0].value, "1")


class CopyTests(unittest.TestCase):
    """A copy shares its sections until one is edited."""

    def test_edits_of_a_copy_stay_in_the_copy(self):
        doc = IniDocument.parse(TEXT)
        copy = doc.copy()
        self.assertIs(copy.sections[1], doc.sections[1])
        copy.section("system").set("hostname", "server")
        copy.ensure_section("alias sales").remove("to")
        copy.own(copy.sections[0]).set("domain", "example.org")
        copy.ensure_section("user bob").set("full_name", "Bob")
        self.assertEqual(doc.render(), TEXT)
        self.assertEqual(IniDocument.parse(copy.render()).section("system").get("domain").value,
                         "example.org")
        self.assertEqual(doc.section("system").get("hostname").value, "box")

    def test_renumber_gives_the_lines_of_the_text(self):
        doc = IniDocument.parse(TEXT)
        doc.section("system").set("admin_email", "a@example.com")
        doc.section("system").remove("domain")
        doc.ensure_section("user bob").set("full_name", "Bob")
        doc.renumber()
        again = IniDocument.parse(doc.render())

        def numbering(d):
            return [(s.name, s.line, [(e.key, e.line) for e in s.entries()]) for s in d.sections]
        self.assertEqual(numbering(doc), numbering(again))

    def test_kept_lines_follow_edits(self):
        doc = IniDocument.parse(TEXT)
        self.assertEqual(doc.render(), TEXT)
        section = doc.section("alias sales")
        section.items.append("# more")
        section.edited()
        section.set("to", "carol")
        self.assertTrue(doc.render().endswith("[alias sales]\n# who gets sales mail\nto = carol\n# more\n"))

    def test_a_new_section_is_found_at_once(self):
        doc = IniDocument.parse(TEXT)
        self.assertIsNone(doc.section("user bob"))
        bob = doc.ensure_section("user  bob")
        self.assertIs(doc.section("user bob"), bob)
        self.assertIs(doc.ensure_section("User bob"), bob)
        self.assertEqual(len(doc.sections), 3)
