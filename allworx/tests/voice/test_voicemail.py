"""Tests of the voicemail menu state machine, the media queue and the mail it builds."""

import email
import email.policy

from twisted.internet import defer
from twisted.trial import unittest

from allworx.passwords import verify_pin
from allworx.tests.confs import PIN_HASH

from allworx.protocols.voice import g711
from allworx.protocols.voice.greeting import tone
from allworx.protocols.voice.voicemail import (
    MediaPlayer, Recorder, VoicemailMenu, voicemail_mail, wav_of)
from allworx.protocols.voice.wav import from_wav


class FakeIO:
    def __init__(self):
        self.played = []
        self.recording = False
        self.greetings = {}
        self.hung_up = False

    def play(self, segments):
        self.played.append(list(segments))

    def record(self):
        self.recording = True

    def stop_recording(self):
        self.recording = False
        return b"GREETING"

    def save_greeting(self, user, pcm):
        self.greetings[user] = pcm

    def hang_up(self):
        self.hung_up = True


class FakeBox:
    def __init__(self, uids):
        self.uids = list(uids)
        self.deleted, self.saved = [], []

    def messages(self):
        return list(self.uids)

    def audio(self, uid):
        return ("AUDIO-" + uid).encode()

    def delete(self, uid):
        self.deleted.append(uid)

    def save(self, uid):
        self.saved.append(uid)


USERS = {"101": ("alice", "1234"), "102": ("bob", "2345")}


class MenuTests(unittest.TestCase):

    def setUp(self):
        self.io = FakeIO()
        self.box = FakeBox(["m1", "m2"])
        self.menu = VoicemailMenu(self.io, lambda name: name.upper().encode(), self.find, lambda user: self.box)

    def find(self, key, by_name=False):
        if by_name:
            return next((v for v in USERS.values() if v[0] == key), None)
        return USERS.get(key)

    def keys(self, digits):
        for d in digits:
            self.menu.key(d)

    def last(self):
        return self.io.played[-1]

    def test_known_phone_asks_only_for_the_pin(self):
        self.menu.start_known("bob")
        self.assertEqual(self.last(), [b"ENTER_PIN"])
        self.keys("2345#")
        self.assertEqual(self.last(), [b"AUDIO-m1"])
        self.menu.played()
        self.assertEqual(self.last(), [b"OPTIONS"])

    def test_unknown_caller_gives_extension_then_pin(self):
        self.menu.start_unknown()
        self.assertEqual(self.last(), [b"ENTER_EXTENSION"])
        self.keys("101#")
        self.assertEqual(self.last(), [b"ENTER_PIN"])
        self.keys("1234#")
        self.assertEqual(self.menu.user, "alice")
        self.assertEqual(self.last(), [b"AUDIO-m1"])

    def test_wrong_pin_three_times_hangs_up(self):
        self.menu.start_known("bob")
        self.keys("1#")
        self.assertEqual(self.last(), [b"BAD_PIN", b"ENTER_PIN"])
        self.keys("2#3#")
        self.assertEqual(self.last(), [b"GOODBYE"])
        self.keys("2345#")                      # too late
        self.assertFalse(self.io.hung_up)
        self.menu.played()
        self.assertTrue(self.io.hung_up)

    def test_keys_during_and_after_a_message(self):
        self.menu.start_known("bob")
        self.keys("2345#")
        self.keys("5")
        self.assertEqual(self.last(), [b"AUDIO-m1"])
        self.keys("9")
        self.assertEqual(self.box.saved, ["m1"])
        self.assertEqual(self.last(), [b"SAVED", b"AUDIO-m2"])
        self.keys("*")
        self.assertEqual(self.last(), [b"OPTIONS"])
        self.keys("7")
        self.assertEqual(self.box.deleted, ["m2"])
        self.assertEqual(self.last(), [b"DELETED", b"NO_MESSAGES"])
        self.keys("7")                          # nothing left to delete
        self.assertEqual(self.box.deleted, ["m2"])

    def test_next_skips_without_marking(self):
        self.menu.start_known("bob")
        self.keys("2345#6")
        self.assertEqual(self.last(), [b"AUDIO-m2"])
        self.assertEqual((self.box.saved, self.box.deleted), ([], []))

    def test_record_a_greeting(self):
        self.menu.start_known("bob")
        self.keys("2345#0")
        self.assertTrue(self.io.recording)
        self.assertEqual(self.last()[0], b"RECORD_GREETING")
        self.keys("12")                         # keys while recording are not commands
        self.keys("#")
        self.assertEqual(self.io.greetings, {"bob": b"GREETING"})
        self.assertEqual(self.last(), [b"GREETING_SAVED", b"OPTIONS"])

    def test_no_pin_set_never_logs_in(self):
        USERS["103"] = ("carol", None)
        self.addCleanup(USERS.pop, "103")
        self.menu.start_unknown()
        self.keys("103##")
        self.assertNotEqual(self.last(), [b"AUDIO-m1"])


class HashedPinTests(unittest.TestCase):
    """A PIN stored as a hash: checked by `check_pin` (in a thread, for the server), keys wait."""

    def setUp(self):
        self.io = FakeIO()
        self.box = FakeBox(["m1"])
        self.checks = []
        self.menu = VoicemailMenu(self.io, lambda name: name.upper().encode(),
                                  lambda key, by_name=False: ("alice", PIN_HASH), lambda user: self.box,
                                  self.check)

    def check(self, stored, entered):
        d = defer.Deferred()
        self.checks.append((stored, entered, d))
        return d

    def keys(self, digits):
        for d in digits:
            self.menu.key(d)

    def test_accepted_when_the_check_says_so(self):
        self.menu.start_known("alice")
        self.keys("1234#")
        [(stored, entered, d)] = self.checks
        self.assertEqual((stored, entered), (PIN_HASH, "1234"))
        self.keys("5678#7")                     # while it is checked: dropped
        self.assertEqual(len(self.checks), 1)
        self.assertEqual(self.io.played[-1], [b"ENTER_PIN"])
        d.callback(verify_pin(stored, entered))
        self.assertEqual(self.menu.user, "alice")
        self.assertEqual(self.io.played[-1], [b"AUDIO-m1"])
        self.assertEqual(self.box.deleted, [])

    def test_wrong_then_right(self):
        self.menu.start_known("alice")
        self.keys("9999#")
        self.checks[0][2].callback(False)
        self.assertEqual(self.io.played[-1], [b"BAD_PIN", b"ENTER_PIN"])
        self.keys("1234#")
        self.checks[1][2].callback(True)
        self.assertEqual(self.io.played[-1], [b"AUDIO-m1"])

    def test_a_check_that_fails_counts_as_wrong(self):
        self.menu.start_known("alice")
        self.keys("1234#")
        self.checks[0][2].errback(RuntimeError("no thread"))
        self.assertEqual(self.io.played[-1], [b"BAD_PIN", b"ENTER_PIN"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_the_call_ended_before_the_answer(self):
        self.menu.start_known("alice")
        self.keys("1234#")
        played = list(self.io.played)
        self.menu.stop()
        self.checks[0][2].callback(True)
        self.assertEqual(self.io.played, played)
        self.assertIsNone(self.menu.box)

    def test_default_check_reads_the_hash(self):
        menu = VoicemailMenu(self.io, lambda name: name.upper().encode(),
                             lambda key, by_name=False: ("alice", PIN_HASH), lambda user: self.box)
        menu.start_known("alice")
        for d in "1234#":
            menu.key(d)
        self.assertEqual(self.io.played[-1], [b"AUDIO-m1"])


class MediaTests(unittest.TestCase):

    def test_player_frames_and_done(self):
        done = []
        player = MediaPlayer(g711.PCMU, on_done=lambda: done.append(True))
        self.assertEqual(player.frame(), b"\xff" * 160)
        player.play([b"\0\0" * 200, b"\0\0" * 100])
        frames = [player.frame(), player.frame()]
        self.assertEqual([len(f) for f in frames], [160, 160])
        self.assertEqual(done, [True])
        self.assertFalse(player.busy)

    def test_recorder_limit(self):
        full = []
        rec = Recorder(g711.PCMU, max_seconds=0.05, on_full=lambda: full.append(True))
        rec.start()
        for _ in range(5):
            rec.audio(b"\xff" * 160)
        self.assertEqual(len(rec.codes), 400)
        self.assertEqual(full, [True])
        self.assertEqual(len(rec.stop()), 800)


class MailTests(unittest.TestCase):

    def test_voicemail_mail(self):
        pcm = tone(440, 1500)
        data = voicemail_mail("example.com", "bob", ("Alice Archer", "101"), 1700000000, pcm)
        msg = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(msg["X-Allworx-Voicemail"], "yes")
        self.assertEqual(msg["To"], "bob@example.com")
        self.assertIn("Alice Archer (101)", msg["From"])
        self.assertIn("0:01", msg["Subject"])
        self.assertEqual(from_wav(wav_of(data)), pcm)
