"""Tests for the allworx command: check and passwd."""

import io

from twisted.trial import unittest

from allworx import cli
from allworx.passwords import parse_sip_digest, sip_digest, verify_password
from allworx.tests.confs import MINIMAL


class FakeStdin(io.StringIO):
    def isatty(self):
        return False


class CheckTests(unittest.TestCase):

    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_ok(self):
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.check([self.write(MINIMAL)], out, err), 0)
        self.assertIn("ok", out.getvalue())

    def test_errors_printed_with_line(self):
        path = self.write(MINIMAL.replace("range", "x") + "\n[dhcp]\nrnage = 1-5\n")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.check([path], out, err), 1)
        self.assertIn("[dhcp] rnage: unknown key; did you mean 'range'?", err.getvalue())
        self.assertIn("line ", err.getvalue())
        self.assertIn("1 error(s)", err.getvalue())

    def test_missing_file(self):
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.check(["/nonexistent/tap.conf"], out, err), 1)
        self.assertIn("cannot read", err.getvalue())


class PasswdTests(unittest.TestCase):

    def test_hash_from_stdin(self):
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.passwd([], FakeStdin("s3cret\n"), out, err), 0)
        self.assertTrue(verify_password(out.getvalue().strip(), "s3cret"))
        self.assertFalse(verify_password(out.getvalue().strip(), "wrong"))

    def test_sip_digest_lines(self):
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.passwd(["--sip", "101@example.com"], FakeStdin("pw\n"), out, err), 0)
        lines = out.getvalue().splitlines()
        self.assertTrue(lines[0].startswith("password = $argon2"))
        self.assertEqual(lines[1], "sip_digest = " + sip_digest("101", "example.com", "pw"))
        digest = parse_sip_digest(lines[1].split(" = ", 1)[1])
        self.assertEqual(len(digest["MD5"]), 32)

    def test_empty_refused(self):
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.passwd([], FakeStdin("\n"), out, err), 1)
        self.assertIn("empty", err.getvalue())

    def test_bad_digest_text(self):
        self.assertRaises(ValueError, parse_sip_digest, "md5:xyz")
        self.assertRaises(ValueError, parse_sip_digest, "sha1:" + "0" * 40)
