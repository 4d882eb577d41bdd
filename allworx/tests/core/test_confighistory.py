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


class DeltaStorageTests(unittest.TestCase):
    """Versions kept as deltas: each kept version reads back exactly, whatever wrote it."""

    def setUp(self):
        self.dir = self.mktemp()

    def files(self):
        return sorted(n for n in os.listdir(self.dir) if n.endswith(".conf"))

    def test_random_changes_read_back_exactly(self):
        import random
        rnd = random.Random(22)
        history = ConfigHistory(self.dir, keep=7)
        lines = ["[section %d]\nkey = %d\n" % (n, n) for n in range(40)]
        kept = {}
        for step in range(120):
            op = rnd.randrange(5)
            at = rnd.randrange(len(lines) + 1)
            if op == 0 and len(lines) > 1:
                del lines[min(at, len(lines) - 1)]
            elif op == 1:
                lines.insert(at, "[new %d]\nvalue = \u00e9%d\r\n" % (step, rnd.randrange(99)))
            elif op == 2:
                lines = ["# rewritten %d\n" % step + line for line in lines]   # large change
            elif op == 3:
                pass                                                      # same text again
            else:
                lines[min(at, len(lines) - 1)] += "x = %d\n" % step
            text = "".join(lines)
            kept[history.record(text, ["s"], "a", "api")["id"]] = text
            # A fresh reader (the server restarted) sees the same.
            for reader in (history, ConfigHistory(self.dir, keep=7)):
                ids = [e["id"] for e in reader.entries()]
                self.assertEqual(ids, list(range(step + 1, max(0, step + 1 - 7), -1)))
                for number in ids:
                    self.assertEqual(reader.text(number), kept[number])
            self.assertLessEqual(len(self.files()), 7 + history.full_every)
            for name in self.files():
                self.assertEqual(os.stat(os.path.join(self.dir, name)).st_mode & 0o777, 0o600)
        self.assertRaises(KeyError, history.text, 1)
        # The index: one entry a line (each line made once, by json's C encoder).
        with open(os.path.join(self.dir, "index.json")) as f:
            lines = f.read().splitlines()
        self.assertEqual((lines[0], lines[-1], len(lines)), ("[", "]", 7 + 2))
        self.assertEqual([json.loads(line.rstrip(","))["id"] for line in lines[1:-1]],
                         list(range(114, 121)))

    def test_history_of_whole_files_from_an_earlier_release_reads(self):
        os.makedirs(self.dir)
        texts = {n: "[dhcp]\nlease_time = %d\n" % (600 + n) for n in range(3, 6)}
        for n, text in texts.items():
            with open(os.path.join(self.dir, "%06d.conf" % n), "w") as f:
                f.write(text)
        with open(os.path.join(self.dir, "index.json"), "w") as f:
            json.dump([{"id": n, "time": 1700000000 + n, "actor": "cli", "via": "cli",
                        "sections": ["dhcp"]} for n in texts], f)
        history = ConfigHistory(self.dir, keep=4)
        for n, text in texts.items():
            self.assertEqual(history.text(n), text)
        self.assertEqual(history.latest_text(), texts[5])
        self.assertIn("+lease_time = 605", history.diff(5))
        newer = texts[5] + "[alias x]\nto = y\n"
        history.record(newer, ["alias"], "admin", "web")
        history.record(newer.replace("to = y", "to = z"), ["alias"], "admin", "web")
        self.assertEqual([e["id"] for e in history.entries()], [7, 6, 5, 4])
        again = ConfigHistory(self.dir, keep=4)
        self.assertEqual(again.text(4), texts[4])
        self.assertEqual(again.text(6), newer)
        self.assertEqual(again.text(7), newer.replace("to = y", "to = z"))
        self.assertNotIn("000003.conf", self.files())

    def test_a_small_change_writes_what_it_touches(self):
        """Bytes written for a one-line change do not grow with tap.conf."""
        def written(size):
            directory = os.path.join(self.dir, str(size))
            history = ConfigHistory(directory)
            text = "".join("[user u%05d]\nfull_name = User %d\n" % (n, n) for n in range(size))
            history.record(text, ["user"], "a", "api")
            counts = []
            for n in range(30):
                text = text.replace("= User %d\n" % (n % 10), "= User %d\n" % (n % 10 + 100))
                history.record(text, ["user"], "a", "api")
                counts.append(sum(os.path.getsize(os.path.join(directory, name))
                                  for name in os.listdir(directory)
                                  if name.endswith(".conf") and int(name[:6]) == n + 2))
            return counts
        small, large = written(10), written(10000)
        # Most changes are a delta of the same size; a whole copy at most every FULL_EVERY.
        # (The delta's offsets take a few more digits in the larger file.)
        self.assertLessEqual(sorted(large)[len(large) // 2] - sorted(small)[len(small) // 2], 8)
        self.assertLess(sorted(large)[len(large) // 2], 100)
        self.assertLessEqual(sum(1 for c in large if c > 1000), 30 // ConfigHistory(self.dir).full_every + 1)
