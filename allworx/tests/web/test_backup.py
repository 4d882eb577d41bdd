"""The backup API and pages: a streamed archive, a restore checked first, kept backups, history."""

import io
import json
import os
import tarfile

from twisted.trial import unittest

from allworx.backupservice import RESTART_DELAY, BackupService
from allworx.confighistory import ConfigHistory
from allworx.tests.webhelpers import BASIC, JSON, AdminClient, sync_thread

MESSAGE = "mail/alice/new/1700000000.M1P1"
GZIP = {b"Content-Type": [b"application/gzip"]}


class BackupWebCase(unittest.TestCase):
    def setUp(self):
        self.c = AdminClient(self)
        office = self.c.office
        self.data = office.config.system.data_dir
        path = os.path.join(self.data, MESSAGE)
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(b"Subject: keep me\n\nhello\n")
        self.restarts = []
        self.svc = BackupService(office, self.c.clock, restart=self.restart,
                                 defer_to_thread=sync_thread, now=self.c.clock.seconds)
        office.keep_history(ConfigHistory(os.path.join(self.data, "config-history")))
        self.c.ctx.views.backup = self.svc

    def restart(self, swap):
        self.restarts.append(swap)
        return swap()

    def api(self, method, url, data=None, headers=None):
        h = dict(BASIC)
        h.update(headers or {})
        r = self.c.request(method, "/api/v1" + url, data=data, headers=h)
        ctype = r.headers.getRawHeaders("content-type", [""])[0]
        r.json = json.loads(r.text) if ctype.startswith("application/json") and r.text else None
        return r


class ApiTests(BackupWebCase):
    def test_download_is_the_whole_office(self):
        r = self.api("GET", "/backup")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers.getRawHeaders("content-type"), ["application/gzip"])
        self.assertIn("attachment", r.headers.getRawHeaders("content-disposition")[0])
        with tarfile.open(fileobj=io.BytesIO(r.body)) as t:
            self.assertIn("data/" + MESSAGE, t.getnames())
            self.assertEqual(t.extractfile("tap.conf").read().decode(),
                             self.c.office.document_text())

    def test_download_needs_login(self):
        r = self.c.request("GET", "/api/v1/backup")
        self.assertEqual(r.code, 401)

    def test_restore_round_trip(self):
        archive = self.api("GET", "/backup").body
        os.remove(os.path.join(self.data, MESSAGE))
        self.c.office.update_settings("dhcp", {"lease_time": "3600"})
        r = self.api("POST", "/backup", archive, GZIP)
        self.assertEqual(r.code, 200, r.text)
        self.assertTrue(r.json["restored"])
        self.assertTrue(r.json["restarting"])
        self.c.clock.advance(RESTART_DELAY)
        self.assertTrue(os.path.exists(os.path.join(self.data, MESSAGE)))
        self.assertEqual(self.c.office.config.dhcp.lease_time, 86400)
        versions = self.api("GET", "/config/history").json["versions"]
        self.assertEqual((versions[0]["actor"], versions[0]["via"]), ("admin", "restore"))
        self.assertIn(r.json["pre_restore_backup"],
                      [b["name"] for b in self.api("GET", "/backups").json["backups"]])

    def test_damaged_restore_changes_nothing(self):
        archive = self.api("GET", "/backup").body
        before = self.c.tap_conf()
        r = self.api("POST", "/backup", archive[:len(archive) // 2], GZIP)
        self.assertEqual(r.code, 400)
        self.assertEqual(r.json["error"], "invalid archive")
        self.assertIn("cut short", r.json["reason"])
        self.c.clock.advance(5)
        self.assertEqual(self.restarts, [])
        self.assertEqual(self.c.tap_conf(), before)
        self.assertEqual(self.api("GET", "/backups").json["backups"], [])

    def test_restore_wants_an_archive(self):
        r = self.api("POST", "/backup", b"{}", JSON)
        self.assertEqual(r.code, 415)

    def test_kept_backups(self):
        name = self.api("POST", "/backups", b"{}", JSON).json["name"]
        [kept] = self.api("GET", "/backups").json["backups"]
        self.assertEqual(kept["name"], name)
        r = self.api("GET", "/backups/" + name)
        self.assertEqual(r.code, 200)
        with tarfile.open(fileobj=io.BytesIO(r.body)) as t:
            self.assertIn("tap.conf", t.getnames())
        self.assertEqual(self.api("GET", "/backups/..%2Ftap.conf").code, 404)
        self.assertEqual(self.api("DELETE", "/backups/" + name).code, 204)
        self.assertEqual(self.api("GET", "/backups/" + name).code, 404)

    def test_history_and_revert(self):
        r = self.api("PUT", "/settings/dhcp", b'{"lease_time": "3600"}', JSON)
        self.assertEqual(r.code, 200, r.text)
        versions = self.api("GET", "/config/history").json["versions"]
        self.assertEqual([v["id"] for v in versions], [2, 1])
        # (with the move of [web] admin_password to [user admin], SPEC 10)
        self.assertEqual((versions[0]["actor"], versions[0]["via"], versions[0]["sections"]),
                         ("admin", "api", ["dhcp", "user", "web"]))
        one = self.api("GET", "/config/history/2").json
        self.assertIn("+lease_time = 3600", one["diff"])
        # The version and its diff as shown: no password hash (SPEC 11).
        hashed = self.c.office.config.users["admin"].password
        self.assertIn("+password = ********", one["diff"])
        self.assertNotIn(hashed, one["diff"] + one["text"])
        with open(self.c.office.path) as f:
            self.assertIn(hashed, f.read())        # the file itself keeps it
        r = self.api("POST", "/config/history/1/revert", b"{}", JSON)
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual((r.json["reverted"], r.json["version"]["id"]), (1, 3))
        self.assertEqual(self.c.office.config.dhcp.lease_time, 86400)
        self.assertEqual(self.api("POST", "/config/history/99/revert", b"{}", JSON).code, 404)
        self.assertEqual(self.api("GET", "/config/history/x").code, 404)


class PageTests(BackupWebCase):
    def setUp(self):
        BackupWebCase.setUp(self)
        self.c.login()

    def send(self, url, action, **fields):
        token = self.c.csrf(url)
        return self.c.post(url, dict(fields, csrf=token, action=action))

    def test_backup_page(self):
        r = self.send("/backup", "backup_now")
        self.assertEqual(r.code, 303)
        page = self.c.get("/backup").text
        [kept] = self.svc.backups()
        self.assertIn('href="/api/v1/backups/%s"' % kept["name"], page)
        self.assertIn('href="/api/v1/backup"', page)
        self.assertIn("Backup %s written." % kept["name"], page)
        self.send("/backup", "delete_backup", name=kept["name"])
        self.assertEqual(self.svc.backups(), [])

    def test_schedule(self):
        r = self.send("/backup", "save", **{"system.backup_every": "1d", "system.backup_keep": "3"})
        self.assertEqual(r.code, 303)
        self.assertEqual(self.c.office.config.system.backup_every, 86400)
        r = self.send("/backup", "save", **{"system.backup_every": "5m", "system.backup_keep": "3"})
        self.assertEqual(r.code, 400)
        self.assertIn("out of range", r.text)

    def test_history_page_and_revert(self):
        self.send("/dhcp", "save", **{"dhcp.enabled": "yes", "dhcp.range": "1-100",
                                      "dhcp.lease_time": "3600"})
        self.assertEqual(self.c.office.config.dhcp.lease_time, 3600)
        page = self.c.get("/history").text
        self.assertIn("admin (web)", page)
        self.assertIn("+lease_time = 3600", page)
        r = self.send("/history", "revert", version="1")
        self.assertEqual(r.code, 303)
        self.assertEqual(self.c.office.config.dhcp.lease_time, 86400)
        self.assertIn("The configuration is version 1 again", self.c.get("/history").text)
