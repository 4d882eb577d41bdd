"""Backups kept and scheduled, a restore checked whole before anything changes, revert."""

import io
import os
import tarfile

from twisted.internet import defer, task
from twisted.trial import unittest

from allworx import backupservice
from allworx.backup import BackupError
from allworx.backupservice import BackupService
from allworx.config import ConfigErrors
from allworx.confighistory import ConfigHistory
from allworx.office import ConfigChanged
from allworx.tests.webhelpers import office_on_disk, sync_thread

MESSAGE = "mail/alice/new/1700000000.M1P1"


class ServiceCase(unittest.TestCase):
    def setUp(self):
        self.office = office_on_disk(self)
        self.data = self.office.config.system.data_dir
        self.put(MESSAGE, b"Subject: keep me\n\nhello\n")
        self.put("dhcp/leases.journal", b"a lease\n")
        self.clock = task.Clock()
        self.clock.advance(1700000000)
        self.restarts = []
        self.svc = BackupService(self.office, self.clock, restart=self.restart,
                                 defer_to_thread=sync_thread, now=self.clock.seconds)
        self.office.keep_history(ConfigHistory(os.path.join(self.data, "config-history")))

    def restart(self, swap):
        self.restarts.append(swap)
        return swap()

    def put(self, name, data):
        path = os.path.join(self.data, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def exists(self, name):
        return os.path.exists(os.path.join(self.data, name))

    def archive(self):
        return io.BytesIO(b"".join(self.svc.archive_chunks()))

    def listing(self):
        return sorted(n for n in os.listdir(self.data))


class RestoreTests(ServiceCase):
    def test_restore_brings_back_data_and_config(self):
        archive = self.archive()
        os.remove(os.path.join(self.data, MESSAGE))
        self.office.update_settings("dhcp", {"lease_time": "3600"})
        answer = self.successResultOf(self.svc.restore(archive, "admin"))
        self.assertEqual((answer["restored"], answer["files"]), (True, 2))
        pre = answer["pre_restore_backup"]
        self.assertTrue(pre.endswith("-pre-restore.tar.gz"), pre)
        self.assertTrue(self.exists("backups/" + pre))
        # The swap comes after the answer, around the services' restart.
        self.assertFalse(self.exists(MESSAGE))
        self.clock.advance(backupservice.RESTART_DELAY)
        self.assertEqual(len(self.restarts), 1)
        self.assertTrue(self.exists(MESSAGE))
        self.assertEqual(self.office.config.dhcp.lease_time, 86400)
        entry = self.svc.history()[0]
        self.assertEqual((entry["actor"], entry["via"], entry["sections"]),
                         ("admin", "restore", ["dhcp"]))
        self.assertFalse([n for n in self.listing() if n.startswith(".restore-")])
        self.assertFalse(self.svc.busy)
        # The state before is a backup that restores the deleted message's absence.
        self.assertEqual([b["name"] for b in self.svc.backups()], [pre])

    def assertNothingChanged(self, before_conf, failure):
        self.assertEqual(self.office.document_text(), before_conf)
        self.assertTrue(self.exists(MESSAGE))
        self.assertFalse(self.exists("backups"))
        self.assertFalse([n for n in self.listing() if n.startswith(".restore-")])
        self.clock.advance(10)
        self.assertEqual(self.restarts, [])
        self.assertFalse(self.svc.busy)
        return failure

    def test_truncated_restores_nothing(self):
        blob = self.archive().getvalue()
        before = self.office.document_text()
        f = self.failureResultOf(self.svc.restore(io.BytesIO(blob[:len(blob) // 2]), "admin"),
                                 BackupError)
        self.assertIn("cut short", str(f.value))
        self.assertNothingChanged(before, f)

    def test_bad_config_restores_nothing(self):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as t:
            data = b"[web]\nadmin_port = 99999\n"
            info = tarfile.TarInfo("tap.conf")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        before = self.office.document_text()
        f = self.failureResultOf(self.svc.restore(out, "admin"), ConfigErrors)
        self.assertNothingChanged(before, f)

    def test_one_restore_at_a_time(self):
        archive = self.archive()
        self.successResultOf(self.svc.restore(archive, "admin"))
        f = self.failureResultOf(self.svc.restore(self.archive(), "admin"), BackupError)
        self.assertIn("already", str(f.value))
        self.clock.advance(1)
        self.assertFalse(self.svc.busy)

    def test_upload_needs_room(self):
        f = self.svc.upload_file(100)
        f.write(b"x")
        f.close()
        self.assertRaises(BackupError, self.svc.upload_file, backupservice.MAX_UPLOAD + 1)
        self.patch(backupservice, "free_space", lambda path: backupservice.SPARE + 1000)
        self.assertRaises(BackupError, self.svc.upload_file, 1001)
        self.svc.upload_file(1000).close()


class KeptTests(ServiceCase):
    def test_scheduled_and_kept(self):
        self.office.update_settings("system", {"backup_every": "1h", "backup_keep": "3"})
        self.assertEqual(self.office.config.system.backup_every, 3600)
        self.svc.startService()
        self.addCleanup(self.svc.stopService)
        self.assertEqual(self.svc.backups(), [])
        for _ in range(5):
            self.clock.advance(3600)
        names = [b["name"] for b in self.svc.backups()]
        self.assertEqual(len(names), 3)
        self.assertEqual(names[0], "allworx-20231115-031320.tar.gz")
        self.assertEqual(names, sorted(names, reverse=True))
        # Off: no more.
        self.office.update_settings("system", {"backup_every": "off"})
        self.svc.config_changed(ConfigChanged(None, None, frozenset(["system"])))
        self.clock.advance(7200)
        self.assertEqual(len(self.svc.backups()), 3)

    def test_schedule_follows_the_newest_backup(self):
        self.successResultOf(self.svc.make_backup())
        self.office.update_settings("system", {"backup_every": "2h"})
        self.clock.advance(1800)
        self.svc.startService()
        self.addCleanup(self.svc.stopService)
        self.clock.advance(5400 - 1)
        self.assertEqual(len(self.svc.backups()), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.svc.backups()), 2)

    def test_default_off(self):
        self.assertEqual(self.office.config.system.backup_every, 0)
        self.assertEqual(self.office.config.system.backup_keep, 7)
        self.svc.startService()
        self.addCleanup(self.svc.stopService)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_keys_checked(self):
        for key, value in (("backup_every", "5m"), ("backup_every", "soon"), ("backup_keep", "0")):
            self.assertRaises(ConfigErrors, self.office.update_settings, "system", {key: value})

    def test_manual_download_delete(self):
        name = self.successResultOf(self.svc.make_backup())
        self.assertEqual(name, "allworx-20231114-221320-manual.tar.gz")
        path = self.svc.backup_path(name)
        with tarfile.open(path) as t:
            self.assertIn("data/" + MESSAGE, t.getnames())
        for bad in ("../tap.conf", "x.tar.gz", "allworx-20231114-221320.tar.gz"):
            self.assertRaises(KeyError, self.svc.backup_path, bad)
        self.svc.delete_backup(name)
        self.assertEqual(self.svc.backups(), [])

    def test_backups_excluded_from_backups(self):
        self.successResultOf(self.svc.make_backup())
        with tarfile.open(fileobj=self.archive()) as t:
            self.assertFalse([n for n in t.getnames() if "backups" in n])

    def test_backups_one_after_the_other(self):
        calls = []

        def later(f, *args):
            d = defer.Deferred()
            calls.append((d, f, args))
            return d
        self.svc.defer_to_thread = later
        first, second = self.svc.make_backup("a"), self.svc.make_backup("b")
        self.assertEqual(len(calls), 1)
        d, f, args = calls.pop()
        d.callback(f(*args))
        self.assertTrue(first.called)
        self.assertEqual(len(calls), 1)
        d, f, args = calls.pop()
        d.errback(OSError("disk full"))
        self.failureResultOf(second, OSError)


class RevertTests(ServiceCase):
    def test_revert_and_version(self):
        self.office.update_settings("dhcp", {"lease_time": "3600"})
        version = self.svc.version(2)
        self.assertIn("+lease_time = 3600", version["diff"])
        self.assertEqual(version["previous"], 1)
        entry = self.svc.revert(1, ("admin", "web"))
        self.assertEqual((entry["id"], entry["actor"], entry["via"]), (3, "admin", "web"))
        self.assertEqual(self.office.config.dhcp.lease_time, 86400)
        self.assertRaises(KeyError, self.svc.revert, 99, "admin")
