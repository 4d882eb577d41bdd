"""Tests for the allworx command: check and passwd."""

import io
import os

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


class UnlockTests(unittest.TestCase):
    """`allworx unlock`: the running server takes the request from its data dir."""

    def setUp(self):
        from twisted.internet import defer, task
        from allworx.guards import LoginThrottle
        from allworx.lockoutfile import LockoutFile
        base = self.mktemp()
        os.makedirs(base)
        self.data = os.path.join(base, "data")
        self.conf = os.path.join(base, "tap.conf")
        with open(self.conf, "w") as f:
            f.write(MINIMAL)
        self.now = 1_700_000_000.0
        clock = task.Clock()
        clock.advance(self.now)
        self.clock = clock
        # The running server's throttle, on the same data dir.
        self.store = LockoutFile(self.data, lambda f, *a: defer.maybeDeferred(f, *a))
        self.server = LoginThrottle(clock, store=self.store)
        for _ in range(5):
            self.server.failed("192.168.2.50", "alice")
            self.server.failed("192.168.2.60", "alice")

    def run_cli(self, *argv, server_running=True):
        out, err = io.StringIO(), io.StringIO()
        sleep = (lambda seconds: self.server.poll()) if server_running else (lambda seconds: None)
        code = cli.unlock(list(argv) + ["-c", self.conf, "--data-dir", self.data, "--wait", "1"],
                          out, err, sleep=sleep, now=lambda: self.now)
        return code, out.getvalue(), err.getvalue()

    def test_lists_the_lock_outs(self):
        code, out, err = self.run_cli()
        self.assertEqual(code, 0, err)
        self.assertEqual(out.splitlines(), [
            "alice at 192.168.2.50: locked until 2023-11-14 22:28:20 UTC after 5 failures",
            "alice at 192.168.2.60: locked until 2023-11-14 22:28:20 UTC after 5 failures"])

    def test_unlocks_a_user_at_a_source_in_the_running_server(self):
        code, out, err = self.run_cli("101", "192.168.2.50")     # the extension names alice
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, "unlocked alice at 192.168.2.50 (was locked until "
                              "2023-11-14 22:28:20 UTC after 5 failures)\n")
        self.assertEqual([l.source for l in self.server.lockouts()], ["192.168.2.60"])
        code, out, err = self.run_cli("alice")
        self.assertIn("unlocked alice at 192.168.2.60", out)
        self.assertEqual(self.server.lockouts(), [])
        self.assertEqual(self.store.read(now=self.now), [])
        self.assertEqual(self.run_cli("alice")[1], "alice: no lock-out in force; failed logins forgotten\n")

    def test_unlocks_a_source(self):
        for n in range(20):
            self.server.failed("192.168.2.70", "guess%d" % n)
        code, out, err = self.run_cli("--source", "192.168.2.70")
        self.assertEqual(code, 0, err)
        self.assertIn("unlocked source 192.168.2.70 (every user who failed there)", out)
        self.assertEqual(self.server.locked_for("192.168.2.70"), 0)
        self.assertEqual(len(self.server.lockouts()), 2)

    def test_a_request_waits_for_a_server_that_is_not_running(self):
        code, out, err = self.run_cli("alice", server_running=False)
        self.assertEqual(code, 0)
        self.assertIn("the server has not taken the request for alice", err)
        self.assertEqual(len(self.server.lockouts()), 2)
        from allworx.guards import LoginThrottle
        restarted = LoginThrottle(self.clock, store=self.store)
        self.assertEqual(restarted.lockouts(), [])

    def test_bad_input(self):
        code, out, err = self.run_cli("alice", "192.168.2.x")
        self.assertEqual(code, 2)
        self.assertEqual(err, "allworx unlock: '192.168.2.x' is not an IP address\n")
        code, out, err = self.run_cli("alice", "192.168.2.50", "--source", "192.168.2.60")
        self.assertEqual(code, 2)
        self.assertIn("two different sources", err)
        self.assertEqual(len(self.server.lockouts()), 2)
        self.assertFalse(os.path.exists(self.store.requests) and os.listdir(self.store.requests))

    def test_no_data_dir(self):
        out, err = io.StringIO(), io.StringIO()
        missing = os.path.join(self.data, "nowhere")
        code = cli.unlock(["alice", "-c", self.conf, "--data-dir", missing], out, err)
        self.assertEqual(code, 1)
        self.assertIn("there is no data directory %s" % missing, err.getvalue())
        self.assertFalse(os.path.exists(missing))

    def test_dispatched_from_main(self):
        self.assertIs(cli.COMMANDS["unlock"], cli.unlock)
