"""Tests for the allworx command: check, passwd, unlock, and the command itself (help, version, errors)."""

import io
import os

from twisted.trial import unittest

from allworx import cli
from allworx.config import parse_config
from allworx.passwords import is_hashed, parse_sip_digest, sip_digest, verify_password, verify_pin
from allworx.tests.confs import ADMIN_USERS, MINIMAL, PIN_HASH, with_sections


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

    def check(self, path):
        out, err = io.StringIO(), io.StringIO()
        return cli.check([path], out, err), out.getvalue(), err.getvalue()

    def test_warns_when_others_may_read_it(self):
        path = self.write(ADMIN_USERS)
        for mode, who in ((0o644, "its group and others read"), (0o604, "others read"),
                          (0o660, "its group read or change"), (0o602, "others change")):
            os.chmod(path, mode)
            code, out, err = self.check(path)
            self.assertEqual(code, 0)                       # a warning, not an error
            self.assertIn("ok", out)
            self.assertEqual(err, "%s: warning: mode %04o lets %s it, and it holds "
                             "password hashes and SIP digests: chmod 600 %s\n"
                             % (path, mode, who, path))
        os.chmod(path, 0o600)
        self.assertEqual(self.check(path), (0, out, ""))

    def test_warns_about_a_pin_not_yet_hashed(self):
        path = self.write(MINIMAL.replace(PIN_HASH, "1234"))
        os.chmod(path, 0o600)
        code, out, err = self.check(path)
        self.assertEqual(code, 0)
        self.assertIn("[user alice] voicemail_pin: stored as typed; the server writes it hashed", err)

    def test_warns_about_the_old_admin_password(self):
        path = self.write(MINIMAL)
        os.chmod(path, 0o600)
        code, out, err = self.check(path)
        self.assertEqual(code, 0)
        self.assertIn("warning: [web] admin_password is obsolete: admins are users with "
                      "admin = yes; the first change through the admin pages or API moves it "
                      "(it becomes [user admin] with admin = yes and the same password)", err)
        path = self.write(ADMIN_USERS)
        os.chmod(path, 0o600)
        self.assertEqual(self.check(path)[2], "")

    def test_metrics_token_accepted_and_checked(self):
        path = self.write(ADMIN_USERS + "\n[web]\nmetrics_token = 0123456789abcdef0123\n")
        os.chmod(path, 0o600)
        self.assertEqual(self.check(path)[0], 0)
        path = self.write(ADMIN_USERS + "\n[web]\nmetrics_token = short\n")
        code, out, err = self.check(path)
        self.assertEqual(code, 1)
        self.assertIn("[web] metrics_token: expected 16 to 200 visible characters", err)
        self.assertNotIn("short", err.replace("metrics_token = short", ""))

    def test_no_admin_at_all_is_an_error(self):
        path = self.write(ADMIN_USERS.replace("admin = yes\n", ""))
        code, out, err = self.check(path)
        self.assertEqual(code, 1)
        self.assertIn("[web]: no admin: give a user `admin = yes`", err)

    def test_a_value_with_a_control_character(self):
        path = self.write(MINIMAL.replace("full_name = Bob Baker", "full_name = Bob\x00Baker"))
        code, out, err = self.check(path)
        self.assertEqual(code, 1)
        self.assertIn("[user bob] full_name: a NUL character (U+0000) is not allowed in a value", err)


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

    def test_sip_target_with_a_line_break_refused(self):
        for target in ("101@example.com\n[record injected]", "101\n@example.com",
                       "1x1@example.com", "101@exa mple.com", "101"):
            out, err = io.StringIO(), io.StringIO()
            self.assertEqual(cli.passwd(["--sip", target], FakeStdin("pw\n"), out, err), 2, target)
            self.assertEqual(out.getvalue(), "")
            self.assertIn("--sip takes EXTENSION@DOMAIN", err.getvalue())

    def test_printed_lines_are_values_of_their_keys(self):
        """What passwd prints, pasted into a [user] section, reads back as printed."""
        out, err = io.StringIO(), io.StringIO()
        password = "p\x1bw [x]\t= #;"
        self.assertEqual(cli.passwd(["--sip", "103@example.com"], FakeStdin(password + "\n"), out, err), 0)
        carol = parse_config(with_sections("[user carol]\nextension = 103\n" + out.getvalue())).users["carol"]
        self.assertTrue(verify_password(carol.password, password))
        self.assertEqual(dict(carol.sip_digest), parse_sip_digest(sip_digest("103", "example.com", password)))

    def test_pin(self):
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.passwd(["--pin"], FakeStdin("4321\n"), out, err), 0)
        line = out.getvalue()
        self.assertTrue(line.startswith("voicemail_pin = $argon2"), line)
        alice = parse_config(MINIMAL.replace("voicemail_pin = " + PIN_HASH + "\n", line)).users["alice"]
        self.assertTrue(is_hashed(alice.voicemail_pin))
        self.assertTrue(verify_pin(alice.voicemail_pin, "4321"))

    def test_pin_must_be_digits(self):
        for pin in ("12", "12ab", "1234\x00", "\u0661\u0662\u0663\u0664"):
            out, err = io.StringIO(), io.StringIO()
            self.assertEqual(cli.passwd(["--pin"], FakeStdin(pin + "\n"), out, err), 1, pin)
            self.assertEqual(out.getvalue(), "")
            self.assertIn("expected 4 to 10 digits", err.getvalue())

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
        self.assertIn("unlocked source 192.168.2.70 (every login from it)", out)
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


class TtyStdin(io.StringIO):
    def isatty(self):
        return True


class MainTests(unittest.TestCase):
    """`allworx` itself: help in every form, the version, and its errors."""

    OPTIONS = {"check": ["PATH"], "passwd": ["--sip", "--pin"],
               "unlock": ["USER", "SOURCE", "--source", "--config", "--data-dir", "--wait"],
               "vpn": ["pubkey", "--config", "--data-dir"],
               "lab": ["up", "down", "status", "exec", "call", "--prefix", "--state-root",
                       "--wan-lease", "--forward-admin", "HOST", "PHONE", "--hold"]}

    def run_main(self, argv):
        """main(argv) with argparse's own stdout and stderr caught too."""
        out, err = io.StringIO(), io.StringIO()
        self.patch(cli.sys, "stdout", out)
        self.patch(cli.sys, "stderr", err)
        return cli.main(argv), out.getvalue(), err.getvalue()

    def test_help_in_every_form(self):
        for argv in (["--help"], ["-h"], ["help"]):
            code, out, err = self.run_main(argv)
            self.assertEqual((code, err), (0, ""), argv)
            for command, options in self.OPTIONS.items():
                self.assertIn("allworx %s" % command, out, argv)
                for option in options:
                    self.assertIn(option, out, (argv, command))
            self.assertIn("--version", out)
            self.assertIn("examples:", out)
            self.assertIn("(default: 120)", out)

    def test_a_commands_help(self):
        for command, options in self.OPTIONS.items():
            for argv in ([command, "--help"], [command, "-h"], ["help", command]):
                code, out, err = self.run_main(argv)
                self.assertEqual((code, err), (0, ""), argv)
                self.assertIn("usage: allworx %s" % command, out, argv)
                self.assertIn("examples:\n  allworx %s" % command, out, argv)
                if command != "lab":
                    for option in options:
                        self.assertIn(option, out, argv)

    def test_a_lab_actions_help(self):
        code, out, err = self.run_main(["lab", "up", "--help"])
        self.assertEqual((code, err), (0, ""))
        self.assertIn("--wan-lease SECONDS", out)
        self.assertIn("(default: 120)", out)
        code, out, err = self.run_main(["help", "lab", "exec"])
        self.assertEqual(code, 0)
        self.assertIn("one of server, lan, pc1", out)

    def test_version(self):
        import allworx
        self.assertEqual(self.run_main(["--version"]), (0, "allworx %s\n" % allworx.__version__, ""))

    def test_unknown_command_with_a_suggestion(self):
        self.assertEqual(self.run_main(["chek"]),
                         (2, "", "allworx: unknown command 'chek' (did you mean 'check'?)\n"))
        self.assertEqual(self.run_main(["passwrd", "--pin"])[2],
                         "allworx: unknown command 'passwrd' (did you mean 'passwd'?)\n")
        self.assertEqual(self.run_main(["help", "unlok"])[2],
                         "allworx: unknown command 'unlok' (did you mean 'unlock'?)\n")

    def test_unknown_command_without_a_suggestion(self):
        code, out, err = self.run_main(["xyz"])
        self.assertEqual((code, out), (2, ""))
        first, hint = err.splitlines()
        self.assertEqual(first, "allworx: unknown command 'xyz'")
        self.assertIn("allworx --help", hint)
        code, out, err = self.run_main(["--verbose"])
        self.assertEqual(code, 2)
        self.assertIn("allworx: unknown option '--verbose'", err)

    def test_no_command(self):
        code, out, err = self.run_main([])
        self.assertEqual(code, 2)
        self.assertIn("usage: allworx check PATH", err)
        self.assertIn("allworx --help", err)

    def test_a_bad_option_is_named(self):
        for argv, bad in ((["check", "--bogus"], "--bogus"), (["check", "--bogus", "x"], "--bogus"),
                          (["passwd", "--pn"], "--pn"), (["unlock", "--nope"], "--nope"),
                          (["vpn", "pubkey", "-x"], "-x"), (["lab", "up", "--bogus"], "--bogus")):
            code, out, err = self.run_main(argv)
            self.assertEqual(code, 2, argv)
            self.assertIn("allworx %s: error: unrecognized arguments: %s" % (argv[0], bad),
                          err, argv)
        code, out, err = self.run_main(["passwd", "--sip", "101@example.com", "--pin"])
        self.assertEqual(code, 2)
        self.assertIn("not allowed with argument --sip", err)

    def test_abbreviations_and_negative_numbers_still_parse(self):
        args = cli._unlock_parser().parse_args(["--wai", "-1", "-cx.conf", "--config=y.conf"])
        self.assertEqual((args.wait, args.config), (-1.0, "y.conf"))

    def test_entry_point_runs(self):
        """setup.cfg's console script, and `python -m allworx.cli`, run this tree's main."""
        import configparser
        import subprocess
        import sys
        import allworx
        root = os.path.dirname(os.path.dirname(os.path.abspath(allworx.__file__)))
        setup = configparser.ConfigParser()
        setup.read(os.path.join(root, "setup.cfg"))
        script = setup["options.entry_points"]["console_scripts"].strip()
        self.assertEqual(script, "allworx = allworx.cli:entry")
        env = dict(os.environ, PYTHONPATH=root)
        for code in ("import sys; sys.argv = ['allworx', '--version']; "
                     "from allworx.cli import entry; entry()", None):
            argv = [sys.executable, "-c", code] if code else [
                sys.executable, "-m", "allworx.cli", "--version"]
            done = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True,
                                  timeout=60)
            self.assertEqual((done.returncode, done.stdout),
                             (0, "allworx %s\n" % allworx.__version__), done.stderr)
        done = subprocess.run([sys.executable, "-m", "allworx.cli", "chek"], env=env, cwd=root,
                              capture_output=True, text=True, timeout=60)
        self.assertEqual((done.returncode, done.stderr),
                         (2, "allworx: unknown command 'chek' (did you mean 'check'?)\n"))


class PasswdPromptTests(unittest.TestCase):
    """Ctrl-D or Ctrl-C at the terminal's prompt: a quiet exit 1."""

    def cancelled_by(self, exception, at_second=False):
        answers = iter(["s3cret"] if at_second else [])

        def getpass(prompt):
            for answer in answers:
                return answer
            raise exception()
        self.patch(cli.getpass, "getpass", getpass)
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.passwd([], TtyStdin(), out, err), 1)
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(err.getvalue().strip(), "allworx passwd: cancelled")

    def test_eof(self):
        self.cancelled_by(EOFError)

    def test_ctrl_c(self):
        self.cancelled_by(KeyboardInterrupt)

    def test_at_the_second_prompt(self):
        self.cancelled_by(EOFError, at_second=True)
        self.cancelled_by(KeyboardInterrupt, at_second=True)

    def test_ctrl_c_reading_stdin(self):
        class Interrupted(FakeStdin):
            def readline(self):
                raise KeyboardInterrupt()
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.passwd(["--pin"], Interrupted(), out, err), 1)
        self.assertEqual(err.getvalue(), "allworx passwd: cancelled\n")

    def test_typed_twice_still_works(self):
        self.patch(cli.getpass, "getpass", lambda prompt: "s3cret words")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.passwd([], TtyStdin(), out, err), 0)
        self.assertTrue(verify_password(out.getvalue().strip(), "s3cret words"))
