"""tap.conf's history: each change kept with who, when and what; a revert is a change too."""

import json
import os

from twisted.trial import unittest

from allworx.config import ConfigErrors
from allworx.confighistory import ConfigHistory
from allworx.tests.webhelpers import office_on_disk


class HistoryTests(unittest.TestCase):
    def setUp(self):
        self.office = office_on_disk(self)
        self.dir = os.path.join(self.office.config.system.data_dir, "config-history")
        self.clock = [1700000000.0]
        self.history = ConfigHistory(self.dir, keep=5, now=lambda: self.clock[0])
        self.office.keep_history(self.history)

    def test_first_version_kept_at_start(self):
        [entry] = self.history.entries()
        self.assertEqual((entry["id"], entry["actor"], entry["via"]), (1, "file", "file"))
        self.assertEqual(self.history.text(1), self.office.document_text())
        self.assertEqual(self.history.diff(1), "")
        # Attached again with the file unchanged: nothing new.
        self.office.keep_history(self.history)
        self.assertEqual(len(self.history.entries()), 1)

    def test_change_recorded_with_actor_and_sections(self):
        self.clock[0] += 60
        with self.office.acting("admin", "web"):
            self.office.update_settings("dhcp", {"lease_time": "3600"})
        entry = self.history.entries()[0]
        self.assertEqual(entry["id"], 2)
        # The first change through the pages also moves [web] admin_password
        # to [user admin] (SPEC 10), in the same version.
        self.assertEqual((entry["actor"], entry["via"], entry["sections"]),
                         ("admin", "web", ["dhcp", "user", "web"]))
        self.assertEqual(entry["time"], "2023-11-14T22:14:20Z")
        diff = self.history.diff(2)
        self.assertIn("+lease_time = 3600", diff)
        self.assertIn("tap.conf (version 1)", diff)
        with open(os.path.join(self.dir, "index.json")) as f:
            self.assertEqual(len(json.load(f)), 2)
        self.assertEqual(os.stat(os.path.join(self.dir, "000002.conf")).st_mode & 0o777, 0o600)

    def test_actor_argument_and_default(self):
        self.office.put_record("host", "nas", {"mac": "02:00:00:00:00:99", "address": "192.168.2.99"},
                                actor=("cli", "cli"))
        self.office.delete_record("host", "nas")
        newest, before = self.history.entries()[:2]
        self.assertEqual((before["actor"], before["via"], before["sections"]),
                         ("cli", "cli", ["host"]))
        self.assertEqual((newest["actor"], newest["via"]), ("server", "server"))

    def test_refused_change_is_not_recorded(self):
        self.assertRaises(ConfigErrors, self.office.update_settings, "web", {"admin_port": "0"})
        self.assertEqual(len(self.history.entries()), 1)

    def test_keeps_the_last_n(self):
        for seconds in range(600, 608):
            self.office.update_settings("dhcp", {"lease_time": str(seconds)})
        ids = [e["id"] for e in self.history.entries()]
        self.assertEqual(ids, [9, 8, 7, 6, 5])
        self.assertFalse(os.path.exists(os.path.join(self.dir, "000001.conf")))
        self.assertEqual(self.history.diff(5), "")      # the oldest kept has no "before"
        self.assertRaises(KeyError, self.history.text, 1)

    def test_hand_edit_between_runs_is_a_version(self):
        self.office.update_settings("dhcp", {"lease_time": "7200"})
        with open(self.office.path) as f:
            text = f.read()
        with open(self.office.path, "w") as f:
            f.write(text.replace("lease_time = 7200", "lease_time = 600"))
        from allworx.config import load_config
        from allworx.office import Office
        again = Office(load_config(self.office.path), data_dir=self.office.config.system.data_dir)
        history = ConfigHistory(self.dir)
        again.keep_history(history)
        entry = history.entries()[0]
        self.assertEqual((entry["actor"], entry["sections"]), ("file", ["dhcp"]))

    def test_revert(self):
        original = self.office.document_text()
        self.office.update_settings("dhcp", {"lease_time": "3600"})
        self.office.replace_text(self.history.text(1), actor=("admin", "api"))
        self.assertEqual(self.office.document_text(), original)
        self.assertEqual(self.office.config.dhcp.lease_time, 86400)
        entry = self.history.entries()[0]
        self.assertEqual((entry["id"], entry["actor"], entry["sections"]), (3, "admin", ["dhcp"]))
        self.assertIn("-lease_time = 3600", self.history.diff(3))

    def test_unreadable_index_starts_afresh(self):
        with open(os.path.join(self.dir, "index.json"), "w") as f:
            f.write("{not json")
        history = ConfigHistory(self.dir)
        self.assertEqual(history.entries(), [])
        self.assertIsNone(history.latest_text())
