"""Tests of the phone book (SPEC 19): phones' own SIP secrets and sightings under data_dir/phones."""

import json
import os
import stat

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from allworx import phonebook
from allworx.interfaces import IPhoneBook
from allworx.phonebook import MAX_SIGHTINGS, WRITE_DELAY, PhoneBook, Sighting, new_secret


def at_once(fn, *args):
    """deferToThread's stand-in: run the work now."""
    try:
        return defer.succeed(fn(*args))
    except Exception:
        return defer.fail()


class SecretTests(unittest.TestCase):

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.clock = task.Clock()
        self.book = PhoneBook(self.dir, self.clock, defer_to_thread=at_once)
        self.path = os.path.join(self.dir, "phones", "secrets.json")

    def test_interface(self):
        self.assertTrue(verifyObject(IPhoneBook, self.book))

    def test_secret_shape(self):
        s = new_secret()
        self.assertEqual(len(s), 22)        # 128 bits in URL-safe base64, no padding
        self.assertRegex(s, r"^[A-Za-z0-9_-]{22}$")
        self.assertNotEqual(s, new_secret())

    def test_made_on_first_use_and_kept_in_any_notation(self):
        self.assertFalse(self.book.has_secret("00:15:65:ab:cd:ef"))
        s = self.book.secret("00:15:65:AB:CD:EF")
        self.assertEqual(self.book.secret("001565abcdef"), s)
        self.assertEqual(self.book.secret("0015.65ab.cdef"), s)
        self.assertTrue(self.book.has_secret("00-15-65-ab-cd-ef"))

    def test_file_is_private_and_written_before_returning(self):
        s = self.book.secret("001565abcdef")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.path)).st_mode) & 0o077, 0)
        with open(self.path) as f:
            data = json.load(f)
        self.assertEqual(data["secrets"]["001565abcdef"]["secret"], s)

    def test_survives_restart(self):
        s = self.book.secret("001565abcdef")
        again = PhoneBook(self.dir, self.clock, defer_to_thread=at_once)
        self.assertEqual(again.secret("001565abcdef"), s)

    def test_rotate(self):
        old = self.book.secret("001565abcdef")
        new = self.book.rotate("00:15:65:ab:cd:ef")
        self.assertNotEqual(old, new)
        self.assertEqual(self.book.secret("001565abcdef"), new)
        self.assertEqual(PhoneBook(self.dir, self.clock).secret("001565abcdef"), new)

    def test_the_phone_holds_the_previous_secret_until_it_fetches(self):
        old = self.book.secret("001565abcdef")
        self.assertEqual(self.book.held_secret("001565abcdef"), old)
        self.clock.advance(10)
        new = self.book.rotate("001565abcdef")
        self.assertEqual(self.book.held_secret("00:15:65:ab:cd:ef"), old)
        # Kept across a restart too.
        self.assertEqual(PhoneBook(self.dir, self.clock).held_secret("001565abcdef"), old)
        self.clock.advance(1)
        self.book.sighted("001565abcdef", "192.168.2.37", "yealink", "001565abcdef.cfg")
        self.assertEqual(self.book.held_secret("001565abcdef"), new)
        self.assertEqual(self.book.secret("001565abcdef"), new)

    def test_malformed_mac(self):
        e = self.assertRaises(ValueError, self.book.secret, "00:15:65")
        self.assertIn("MAC address", str(e))
        self.assertRaises(ValueError, self.book.rotate, "nonsense")

    def test_failed_write_changes_nothing(self):
        s = self.book.secret("001565abcdef")

        def full(path, data, mode=0o600):
            raise OSError(28, "No space left on device")
        self.patch(phonebook, "write_atomically", full)
        self.assertRaises(OSError, self.book.rotate, "001565abcdef")
        self.assertRaises(OSError, self.book.secret, "0004f2000001")
        self.assertEqual(self.book.secret("001565abcdef"), s)
        self.assertFalse(self.book.has_secret("0004f2000001"))

    def test_unreadable_file_is_kept_aside(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w") as f:
            f.write("{not json")
        book = PhoneBook(self.dir, self.clock)
        aside = [n for n in os.listdir(os.path.dirname(self.path)) if ".unreadable-" in n]
        self.assertEqual(len(aside), 1)
        self.assertFalse(book.has_secret("001565abcdef"))
        book.secret("001565abcdef")
        with open(os.path.join(os.path.dirname(self.path), aside[0])) as f:
            self.assertEqual(f.read(), "{not json")


class SightingTests(unittest.TestCase):

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.clock = task.Clock()
        self.clock.advance(1700000000)
        self.writes = []
        self.book = PhoneBook(self.dir, self.clock, defer_to_thread=self.write)
        self.path = os.path.join(self.dir, "phones", "seen.json")

    def write(self, fn, *args):
        self.writes.append(args)
        return at_once(fn, *args)

    def test_recorded(self):
        self.book.sighted("00:15:65:AB:CD:EF", "192.168.2.37", "yealink", "001565abcdef.cfg",
                          "Yealink SIP-T46S 66.86.0.15")
        s = self.book.sightings()["001565abcdef"]
        self.assertEqual(s, Sighting(mac="001565abcdef", address="192.168.2.37", model="yealink",
                                     filename="001565abcdef.cfg",
                                     user_agent="Yealink SIP-T46S 66.86.0.15",
                                     last_fetch=1700000000))

    def test_bad_model_and_mac(self):
        self.assertRaises(ValueError, self.book.sighted, "001565abcdef", "192.168.2.37", "nokia", "x")
        self.assertRaises(ValueError, self.book.sighted, "0015", "192.168.2.37", None, "x")
        self.assertEqual(self.book.sightings(), {})

    def test_writes_coalesced(self):
        for i in range(50):
            self.book.sighted("001565abcdef", "192.168.2.37", None, "001565abcdef.cfg")
            self.clock.advance(0.1)
        self.assertEqual(self.writes, [])
        self.clock.advance(WRITE_DELAY)
        self.assertEqual(len(self.writes), 1)
        self.clock.advance(WRITE_DELAY * 3)
        self.assertEqual(len(self.writes), 1)      # nothing new: nothing written
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_flush_and_restart(self):
        self.book.sighted("001565abcdef", "192.168.2.37", "yealink", "001565abcdef.cfg")
        self.clock.advance(5)
        self.book.sighted("0004f2000001", "192.168.2.38", None, "0004f2000001.cfg", "PolycomVVX")
        self.successResultOf(self.book.flush())
        self.assertEqual(len(self.writes), 1)
        self.clock.advance(WRITE_DELAY)
        self.assertEqual(len(self.writes), 1)      # the delayed write was cancelled
        again = PhoneBook(self.dir, self.clock)
        self.assertEqual(again.sightings(), self.book.sightings())
        self.assertEqual(again.sightings()["0004f2000001"].user_agent, "PolycomVVX")

    def test_bounded_oldest_dropped(self):
        book = PhoneBook(self.dir, self.clock, defer_to_thread=at_once, max_sightings=3)
        for n in range(4):
            book.sighted("00156500000%d" % n, "192.168.2.%d" % (10 + n), None, "f")
            self.clock.advance(1)
        book.sighted("001565000001", "192.168.2.11", None, "f")     # seen again: now the newest
        book.sighted("001565000009", "192.168.2.19", None, "f")
        self.assertEqual(sorted(book.sightings()), ["001565000001", "001565000003", "001565000009"])
        self.successResultOf(book.flush())
        self.assertEqual(sorted(PhoneBook(self.dir, self.clock, max_sightings=3).sightings()),
                         ["001565000001", "001565000003", "001565000009"])
        self.assertEqual(MAX_SIGHTINGS, 500)

    def test_unreadable_rows_skipped(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w") as f:
            json.dump([{"mac": "zz"}, {"mac": "001565abcdef", "address": "192.168.2.37",
                                       "model": "yealink", "filename": "a.cfg", "last_fetch": 5}], f)
        self.assertEqual(list(PhoneBook(self.dir, self.clock).sightings()), ["001565abcdef"])
