# -*- test-case-name: allworx.tests.lab.test_backup -*-
"""
A whole-office backup taken and restored through the admin pages of the real
server, in headless Chromium (the lab `aww`, as test_web): the backup
downloads, a mailbox message is deleted (POP3 DELE) and a setting changed
(the DHCP page), and the restore of the archive (uploaded through the page)
brings both back, after the server's services start again.
"""

import glob
import os
import tempfile

from allworx.tests.lab import test_web
from allworx.tests.lab.fixtures import wait_until
from allworx.tests.lab.test_web import SERVER

_BROWSER = test_web.BrowserTests

MESSAGE = b"From: bob@example.com\nTo: alice@example.com\nSubject: keep me safe\n\nhello\n"


class BackupBrowserTests(test_web.WebLabCase):
    """Download a backup, lose a message and a setting, restore it: both are back."""

    # test_web's browser (without its own test, which runs there).
    programs = _BROWSER.programs
    setUp, chromium, shot, field = _BROWSER.setUp, _BROWSER.chromium, _BROWSER.shot, _BROWSER.field
    submit, tap_conf, wait_text, wait_url = (_BROWSER.submit, _BROWSER.tap_conf, _BROWSER.wait_text,
                                             _BROWSER.wait_url)

    def pop3_list(self):
        """alice's messages as POP3 LIST shows them (curl from pc1): its lines."""
        done, report = self.client("pc1", ["curl", "-sS", "-m", "10", "-u", "alice:admin-demo",
                                           "pop3://%s/" % SERVER], timeout=20)
        self.assertEqual(done.returncode, 0, report)
        return [line for line in done.stdout.splitlines() if line.strip()], report

    def login(self, then):
        from selenium.webdriver.common.by import By
        d = self.driver
        d.get(self.base + then)
        self.assertIn("/login", d.current_url)
        d.find_element(By.NAME, "password").send_keys("admin-demo")
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        self.wait_url(then)

    def wait_file(self, pattern, timeout=30):
        def downloaded():
            done = [p for p in glob.glob(pattern) if not p.endswith(".crdownload")]
            return done[0] if done and os.path.getsize(done[0]) > 0 else None
        return wait_until(self, downloaded, "a download matching %s" % pattern, timeout)

    def test_backup_and_restore_through_the_page(self):
        from selenium.webdriver.common.by import By
        d = self.driver
        downloads = tempfile.mkdtemp(prefix="aww-downloads-")
        self.addCleanup(lambda: [os.remove(p) for p in glob.glob(downloads + "/*")] and None)
        d.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow",
                                                       "downloadPath": downloads})
        # A message in alice's mailbox, as the server sees it.
        box = os.path.join(self.server.data_dir, "mail", "alice", "new")
        os.makedirs(box, exist_ok=True)
        with open(os.path.join(box, "1700000000.M1Ptest"), "wb") as f:
            f.write(MESSAGE)
        listed, report = self.pop3_list()
        self.assertEqual(len(listed), 1, report)

        # The backup, downloaded through the page.
        self.login("/backup")
        self.shot("backup-00-page")
        d.find_element(By.ID, "download-backup").click()
        archive = self.wait_file(os.path.join(downloads, "allworx-*.tar.gz"))

        # The message deleted (POP3 DELE), a setting changed (the DHCP page).
        done, report = self.client("pc1", ["curl", "-sS", "-m", "10", "-u", "alice:admin-demo",
                                           "-I", "-X", "DELE", "pop3://%s/1" % SERVER], timeout=20)
        self.assertEqual(done.returncode, 0, report)
        listed, report = self.pop3_list()
        self.assertEqual(listed, [], report)
        d.get(self.base + "/dhcp")
        lease = self.field("dhcp.lease_time", "save")
        lease.clear()
        lease.send_keys("2h")
        self.submit("save")
        self.wait_text("saved")
        self.assertIn("lease_time = 2h", self.tap_conf())

        # The restore, uploaded through the page.
        d.get(self.base + "/backup")
        d.find_element(By.ID, "archive").send_keys(archive)
        d.find_element(By.CSS_SELECTOR, "#restore-archive button[type=submit]").click()
        self.wait_text("The services are restarting", timeout=60)
        self.shot("backup-01-restored")
        self.server.wait_for("services built again and started", timeout=60)
        self.server.wait_services(self.SERVICES, timeout=60)

        # Both are back: the setting, and the message as POP3 lists it.
        self.assertIn("lease_time = 1h", self.tap_conf())
        self.assertNotIn("lease_time = 2h", self.tap_conf())
        listed, report = self.pop3_list()
        self.assertEqual(len(listed), 1, report)
        done, report = self.client("pc1", ["curl", "-sS", "-m", "10", "-u", "alice:admin-demo",
                                           "pop3://%s/1" % SERVER], timeout=20)
        self.assertIn("keep me safe", done.stdout, report)
        # The state before the restore was kept; the restore is in the history.
        kept = os.listdir(os.path.join(self.server.data_dir, "backups"))
        self.assertTrue([n for n in kept if n.endswith("-pre-restore.tar.gz")], kept)
        d.get(self.base + "/history")
        if "/login" in d.current_url:
            self.login("/history")
        self.assertIn("admin (restore)", d.find_element(By.ID, "versions").text)
        self.shot("backup-02-history")


del _BROWSER     # (else collected here as well)
