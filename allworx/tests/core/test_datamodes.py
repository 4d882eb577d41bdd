"""
Issue 21, item 8: secrets at rest. tap.conf is written 0600 on every write;
what the server keeps under data_dir (mail, the queue, fetch ledgers,
voicemail, the lease journal, state files, the TLS key) is created 0600 in
0700 directories; only the web roots are open to others, and data_dir itself
lets others pass through to them (0711) without listing it.
"""

import ipaddress
import os
import stat

from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from allworx.atomicfile import JsonStateFile
from allworx.config import load_config
from allworx.office import Office
from allworx.passwords import is_hashed, verify_pin
from allworx.protocols.dhcp.journal import LeaseJournal
from allworx.protocols.dhcp.pool import Lease
from allworx.protocols.dhcp.service import DhcpService
from allworx.protocols.mail.fetch import FetchLedger
from allworx.protocols.mail.service import MailService
from allworx.protocols.voice import greeting
from allworx.protocols.voice.greeting import PromptLibrary
from allworx.protocols.voice.voicemail import store_greeting
from allworx.protocols.web.sites import ensure_site_dirs, site_dirs
from allworx.service import AllworxService
from allworx.tests.confs import PIN_HASH
from allworx.tests.mailtesting import MAIL_CONF, PlainChecker, sync_thread


def _umask(testcase, mask):
    old = os.umask(mask)
    testcase.addCleanup(os.umask, old)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class TapConfModeTests(unittest.TestCase):

    def setUp(self):
        _umask(self, 0o022)
        self.path = os.path.abspath(self.mktemp())
        with open(self.path, "w") as f:
            f.write(MAIL_CONF)
        os.chmod(self.path, 0o644)
        self.office = Office(load_config(self.path))

    def test_every_write_is_0600(self):
        self.office.update_settings("dhcp", {"range": "1-50"})
        self.assertEqual(mode_of(self.path), 0o600)
        os.chmod(self.path, 0o664)
        self.office.delete_record("alias", "everyone")
        self.assertEqual(mode_of(self.path), 0o600)
        self.office.replace_text(self.office.document_text())
        self.assertEqual(mode_of(self.path), 0o600)


class PinAtRestTests(unittest.TestCase):
    """A PIN typed into tap.conf works, and the server's next write stores its hash."""

    def test_plain_pin_hashed_at_the_next_write(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(MAIL_CONF.replace(PIN_HASH, "4321"))
        office = Office(load_config(path))
        self.assertEqual(office.config.users["alice"].voicemail_pin, "4321")
        self.assertTrue(verify_pin(office.config.users["alice"].voicemail_pin, "4321"))
        office.update_settings("dhcp", {"range": "1-50"})
        with open(path) as f:
            text = f.read()
        self.assertNotIn("4321", text)
        stored = load_config(path).users["alice"].voicemail_pin
        self.assertTrue(is_hashed(stored))
        self.assertEqual(office.config.users["alice"].voicemail_pin, stored)
        self.assertTrue(verify_pin(stored, "4321"))
        self.assertFalse(verify_pin(stored, "1234"))

    def test_hashed_in_the_write_that_moves_the_old_admin_password(self):
        # The first change through the API of an old config both moves
        # [web] admin_password and hashes a PIN typed as digits.
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(MAIL_CONF.replace(PIN_HASH, "4321"))
        office = Office(load_config(path))
        office.patch_record("user", "bob", {"full_name": "Robert"}, actor=("admin", "api"))
        with open(path) as f:
            text = f.read()
        self.assertIn("full_name = Robert", text)
        self.assertNotIn("4321", text)
        self.assertTrue(verify_pin(load_config(path).users["alice"].voicemail_pin, "4321"))

    def test_verify_pin(self):
        self.assertTrue(verify_pin(PIN_HASH, "1234"))
        self.assertFalse(verify_pin(PIN_HASH, "12345"))
        self.assertTrue(verify_pin("2345", "2345"))
        self.assertFalse(verify_pin("2345", "234"))
        self.assertFalse(verify_pin(None, ""))
        self.assertFalse(verify_pin("", ""))


class DataDirModeTests(unittest.TestCase):
    """Start what writes under data_dir, make each kind of file, and walk the tree."""

    def setUp(self):
        _umask(self, 0o022)
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.data = os.path.join(base, "data")
        path = os.path.join(base, "tap.conf")
        with open(path, "w") as f:
            f.write(MAIL_CONF)
        self.office = Office(load_config(path), data_dir=self.data)

    @defer.inlineCallbacks
    def test_modes_after_a_server_like_start(self):
        config = self.office.config
        top = AllworxService(self.office, children=[])
        yield top.startService()
        self.addCleanup(top.stopService)
        ensure_site_dirs(config)
        mail = MailService(self.office, MemoryReactorClock(), PlainChecker({}), sync_thread)
        mail.startService()
        self.addCleanup(mail.stopService)
        # Mail for a user and for the outside (carol's forward: the queue).
        yield mail.store.deliver(["alice", "carol"], b"Subject: hi\n\nhello\n")
        FetchLedger(os.path.join(self.data, "fetch", "alice-pop.isp.example"), {"1"}).write()
        clock = task.Clock()
        journal = LeaseJournal(DhcpService.journal_path(config), clock, sync_thread)
        self.addCleanup(lambda: journal._fd is not None and os.close(journal._fd))
        journal.load(1_700_000_000)
        d = journal.bound(Lease("02:00:00:00:00:01", ipaddress.IPv4Address("192.168.2.10"),
                                1_700_003_600, hostname="pc"))
        clock.advance(0)
        yield d
        voicemail = os.path.join(self.data, "voicemail")
        store_greeting(os.path.join(voicemail, "greetings"), "alice", b"\0\0" * 800)
        self.patch(greeting.shutil, "which", lambda name: "/usr/bin/" + name)
        self.patch(greeting.subprocess, "run", _fake_espeak)
        self.assertGreater(PromptLibrary(os.path.join(voicemail, "prompts")).render(), 0)
        yield JsonStateFile(os.path.join(self.data, "network-applied.json"), "test",
                            sync_thread).save({"routes": []})

        seen = {"file": 0, "dir": 0}
        public = [os.path.realpath(p) for p in site_dirs(config)]
        wrong = []
        self.assertEqual(mode_of(self.data), 0o711)
        for root, dirs, files in os.walk(self.data):
            if any(os.path.realpath(root).startswith(p) for p in public):
                continue
            for name in dirs:
                path = os.path.join(root, name)
                if os.path.realpath(path) in public:
                    if mode_of(path) != 0o755:
                        wrong.append((path, oct(mode_of(path))))
                    continue
                seen["dir"] += 1
                if mode_of(path) != 0o700:
                    wrong.append((path, oct(mode_of(path))))
            for name in files:
                seen["file"] += 1
                path = os.path.join(root, name)
                if mode_of(path) != 0o600:
                    wrong.append((path, oct(mode_of(path))))
        self.assertEqual(wrong, [])
        names = set()
        for root, dirs, files in os.walk(self.data):
            names.update(os.path.relpath(os.path.join(root, n), self.data) for n in dirs + files)
        for expected in ("mail/alice/new", "queue/tmp", "tls/ca.key", "tls/server.pem", "dhcp/leases.journal",
                         "voicemail/greetings", "voicemail/prompts", "network-applied.json",
                         "fetch/alice-pop.isp.example"):
            self.assertTrue(any(n == expected or n.startswith(expected + "/") for n in names),
                            (expected, sorted(names)))
        self.assertGreater(seen["file"], 8)


def _fake_espeak(argv, **kwargs):
    """espeak-ng writing its WAV file, without running it."""
    from allworx.protocols.voice.wav import to_wav
    with open(argv[argv.index("-w") + 1], "wb") as f:
        f.write(to_wav(b"\0\0" * 160))
