"""The lab ISP's time server (allworx.lab.timeserver) answers what the office's SNTP client accepts."""

import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from allworx.lab import timeserver
from allworx.protocols.ntp import client as sntp
from allworx.protocols.ntp.wire import to_ntp
from allworx.tests.ntp.test_client import FakeTransport

NOW = 1_700_000_000.0


class LabTimeServerTests(unittest.TestCase):

    def setUp(self):
        self.dir = self.mktemp()
        os.mkdir(self.dir)
        self.reactor = MemoryReactorClock()
        self.reactor.advance(NOW)
        self.server = timeserver.LabTimeServer(self.reactor, self.dir)
        self.server.transport = FakeTransport()

    def ask(self):
        sent = to_ntp(NOW)
        self.server.datagramReceived(sntp.request(sent), ("203.0.113.2", 40001))
        [(data, addr)] = self.server.transport.sent
        self.server.transport.sent = []
        self.assertEqual(addr, ("203.0.113.2", 40001))
        return sntp.read_reply(data, sent, NOW, NOW)

    def test_stratum_one_passing_the_clients_checks(self):
        sample = self.ask()
        self.assertEqual(sample.stratum, 1)
        self.assertAlmostEqual(sample.offset, 0.0, places=6)

    def test_offset_file(self):
        with open(self.dir + "/" + timeserver.OFFSET_FILE, "w") as f:
            f.write("2.5\n")
        self.assertAlmostEqual(self.ask().offset, 2.5, places=6)

    def test_garbage_ignored(self):
        self.server.datagramReceived(b"hello", ("203.0.113.2", 40001))
        self.assertEqual(self.server.transport.sent, [])
        self.assertIsNone(timeserver.reply(b"\x24" + b"\0" * 47, NOW, NOW))   # mode 4
