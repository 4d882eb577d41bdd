"""Tests for `twistd allworx`: the plugin is found, bad configs are refused."""

import os
import subprocess
import sys

from twisted.plugin import getPlugins
from twisted.application.service import IServiceMaker
from twisted.trial import unittest

from allworx import tap
from allworx.tests.confs import MINIMAL

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


class PluginTests(unittest.TestCase):

    def test_plugin_registered(self):
        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        self.assertIn("allworx", makers)
        self.assertEqual(makers["allworx"].module, "allworx.tap")

    def test_options(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(MINIMAL)
        options = tap.Options()
        options.parseOptions(["--config", path, "--data-dir", "/tmp/x"])
        self.assertEqual(options.loaded.system.domain, "example.com")
        service = tap.makeService(options)
        self.assertEqual(service.office.config.system.data_dir, "/tmp/x")
        self.assertIn("dns", [s.name for s in service])


class RefuseTests(unittest.TestCase):

    def test_bad_config_refused_with_the_check_text(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(MINIMAL.replace("mode = firewall-nat", "mode = firewal"))
        env = dict(os.environ, PYTHONPATH=ROOT)
        twistd = subprocess.run([TWISTD, "-n", "--pidfile=", "allworx", "-c", path],
                                capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
        check = subprocess.run([sys.executable, "-m", "allworx.cli", "check", path],
                               capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
        self.assertEqual(twistd.returncode, 1)
        self.assertEqual(check.returncode, 1)
        line = "line 16: [security] mode: expected one of"
        self.assertIn(line, twistd.stderr)
        self.assertIn(line, check.stderr)
        first = [l for l in check.stderr.splitlines() if line in l][0]
        self.assertIn(first, twistd.stderr)
        self.assertIn("refusing to start", twistd.stderr)
