"""
Tests for allworx.tests.lab.fixtures: a test that cannot have its lab fails
(never skips), lab prefixes are claimed per process, and a client's report
carries its exit status and stderr. None of these build a lab.
"""

import subprocess

from twisted.trial import unittest

from allworx.lab import processes
from allworx.tests.lab.fixtures import claim_lab, client_report, start_lab


class StartLabPreconditionTests(unittest.TestCase):
    """Without root, `ip netns` or a program, start_lab fails the test with the reason."""

    def failure_of_start_lab(self, **kw):
        """The message start_lab fails this test with (it must neither skip nor build)."""
        try:
            start_lab(self, prefix="awz", **kw)
        except unittest.SkipTest as e:
            self.fail("start_lab skipped the test instead of failing it: %s" % (e,))
        except self.failureException as e:
            return str(e)
        self.fail("start_lab built a lab")

    def test_not_root(self):
        self.patch(processes.os, "geteuid", lambda: 1000)
        self.assertIn("allworx lab needs root", self.failure_of_start_lab())

    def test_missing_program(self):
        self.patch(processes, "is_root", lambda: True)
        message = self.failure_of_start_lab(programs=("allworx-no-such-client",))
        self.assertIn("allworx-no-such-client (Debian package ?)", message)

    def test_missing_program_names_its_package(self):
        self.patch(processes, "is_root", lambda: True)
        self.patch(processes.shutil, "which", lambda program: None)
        self.assertIn("swaks (Debian package swaks)",
                      self.failure_of_start_lab(programs=("swaks",)))

    def test_ip_netns_does_not_work(self):
        self.patch(processes, "is_root", lambda: True)
        self.patch(processes, "missing_programs", lambda programs: [])

        def refused(argv, **kw):
            raise subprocess.CalledProcessError(1, argv, stderr="mount --make-shared failed")
        self.patch(processes.subprocess, "run", refused)
        self.assertIn("`ip netns` does not work here", self.failure_of_start_lab())


class ClaimTests(unittest.TestCase):
    """Side-by-side test processes get different prefixes."""

    def test_claims_are_exclusive(self):
        first, claim1 = claim_lab("awq")
        self.addCleanup(claim1.close)
        second, claim2 = claim_lab("awq")
        self.addCleanup(claim2.close)
        self.assertEqual((first.prefix, second.prefix), ("awq", "awq1"))
        claim1.close()
        third, claim3 = claim_lab("awq")
        claim3.close()
        self.assertEqual(third.prefix, "awq")

    def test_factory_makes_the_lab(self):
        made = []

        def factory(prefix):
            made.append(prefix)
            return prefix
        lab, claim = claim_lab("awq", factory=factory)
        claim.close()
        self.assertEqual((lab, made), ("awq", ["awq"]))


class ClientReportTests(unittest.TestCase):
    """What an assertion message shows of a client run in the lab."""

    def test_exit_status_stdout_and_stderr(self):
        done = subprocess.CompletedProcess(
            ["ip", "netns", "exec", "awm-inet", "swaks", "--server", "203.0.113.2", "-tls"], 2,
            stdout="", stderr="*** TLS not available: requires Net::SSLeay.  Exiting\n")
        report = client_report(done)
        self.assertIn("[awm-inet] swaks --server 203.0.113.2 -tls", report)
        self.assertIn("exit status 2", report)
        self.assertIn("--- stdout\n(nothing)", report)
        self.assertIn("--- stderr\n*** TLS not available: requires Net::SSLeay.", report)

    def test_long_output_keeps_its_end(self):
        done = subprocess.CompletedProcess(["dig"], 0, stdout=b"x" * 10000 + b"the end",
                                           stderr=None)
        report = client_report(done)
        self.assertIn("[...]", report)
        self.assertIn("the end", report)
        self.assertLess(len(report), 3200)
