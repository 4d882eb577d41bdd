"""Tests of the auto attendant's menu machine and its greetings, on a task.Clock."""

import os
import wave

import attr

from twisted.internet import task
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.config.values import Target
from allworx.protocols.voice.attendant_greetings import AttendantGreetings
from allworx.protocols.voice.attendant_menu import DIGIT_TIMEOUT, REPEATS, AttendantMenu
from allworx.protocols.voice.greeting import tone
from allworx.protocols.voice.wav import to_wav
from allworx.tests.confs import NETWORK, PW_HASH

CONF = NETWORK + """
[dns]
primary = 203.0.113.1

[web]
admin_password = {pw}

[user alice]
extension = 101
password = {pw}

[user bob]
extension = 102
password = {pw}

[user dora]
extension = 1050
password = {pw}

[group sales]
number = 105
members = 101 102

[attendant main]
number = 500
greeting = Thank you for calling.
key_1 = 101
key_2 = sales
timeout = 8
"""

GREETING = b"G" * 1600
PROMPT = {"menu": b"M" * 160, "invalid": b"I" * 160, "transfer": b"T" * 160,
          "cannot_transfer": b"C" * 160}


def attendant(extra=""):
    """The [attendant main] of CONF with `extra` lines; `key_1 = ` (empty) takes key_1 away."""
    no_key_1 = "key_1 = \n" in extra
    extra = extra.replace("key_1 = \n", "")
    text = CONF.format(pw=PW_HASH).replace("timeout = 8\n", "timeout = 8\n" + extra)
    a = parse_config(text).attendants["main"]
    return attr.evolve(a, key_1=None) if no_key_1 else a


NUMBERS = {"101": Target("extension", "101"), "102": Target("extension", "102"),
           "1050": Target("extension", "1050"), "105": Target("group", "sales"),
           "500": Target("attendant", "main")}


class FakeIo:
    def __init__(self):
        self.plays = []
        self.routes = []
        self.stops = 0
        self.hung_up = False

    def play(self, segments):
        self.plays.append(segments)

    def stop_playing(self):
        self.stops += 1

    def route(self, target):
        self.routes.append(target)

    def hang_up(self):
        self.hung_up = True


class MenuTests(unittest.TestCase):

    def menu(self, extra="", now=(0, 10 * 60), operator="100", greeting=GREETING):
        self.clock = task.Clock()
        self.io = FakeIo()
        m = AttendantMenu(self.io, self.clock, attendant(extra), greeting, PROMPT.__getitem__,
                          dict(NUMBERS), operator, lambda: now)
        m.start()
        return m

    def test_the_greeting_plays_then_a_key_routes_at_once(self):
        m = self.menu()
        self.assertEqual(self.io.plays, [[GREETING]])
        m.played()
        m.key("1")
        self.assertEqual(self.io.routes, [Target("extension", "101")])
        self.assertEqual(self.io.plays[-1], [PROMPT["transfer"]])
        self.assertEqual(m.target, Target("extension", "101"))
        # Keys after that do nothing, and no timer is left.
        m.key("2")
        self.assertEqual(len(self.io.routes), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_key_during_the_greeting_interrupts_it(self):
        m = self.menu()
        m.key("2")
        self.assertEqual(self.io.routes, [Target("name", "sales")])

    def test_no_greeting_plays_the_menu_prompt(self):
        self.menu(greeting=None)
        self.assertEqual(self.io.plays, [[PROMPT["menu"]]])

    def test_zero_is_the_operator(self):
        m = self.menu()
        m.key("0")
        self.assertEqual(self.io.routes, [Target("extension", "100")])

    def test_key_0_overrides_the_operator(self):
        m = self.menu("key_0 = 102\n")
        m.key("0")
        self.assertEqual(self.io.routes, [Target("extension", "102")])

    def test_dialled_extension_routes_when_complete(self):
        m = self.menu()
        m.played()
        m.key("1")      # key_1 is set: that wins
        self.assertEqual(self.io.routes, [Target("extension", "101")])
        m = self.menu("key_1 = \n")
        m.key("1")
        self.assertEqual(self.io.stops, 1)      # the greeting stopped
        m.key("0")
        self.assertEqual(self.io.routes, [])
        m.key("2")      # 102: no longer number begins with it
        self.assertEqual(self.io.routes, [Target("extension", "102")])

    def test_a_number_that_begins_a_longer_one_waits_for_the_digit_timeout(self):
        m = self.menu("key_1 = \n")
        for d in "105":
            m.key(d)
        self.assertEqual(self.io.routes, [])
        self.clock.advance(DIGIT_TIMEOUT - 0.1)
        self.assertEqual(self.io.routes, [])
        self.clock.advance(0.2)
        self.assertEqual(self.io.routes, [Target("group", "sales")])

    def test_the_longer_number_and_pound(self):
        m = self.menu("key_1 = \n")
        for d in "1050":
            m.key(d)
            self.clock.advance(DIGIT_TIMEOUT - 0.5)     # each digit in time
        self.assertEqual(self.io.routes, [Target("extension", "1050")])
        m = self.menu("key_1 = \n")
        for d in "105#":
            m.key(d)
        self.assertEqual(self.io.routes, [Target("group", "sales")])

    def test_attendant_number_is_dialled(self):
        m = self.menu()
        for d in "500":
            m.key(d)
        self.assertEqual(self.io.routes, [Target("attendant", "main")])

    def test_no_key_goes_to_the_fallback_after_the_greeting(self):
        m = self.menu("fallback = 102\n")
        self.clock.advance(60)
        self.assertEqual(self.io.routes, [])         # the timeout counts after the greeting
        m.played()
        self.clock.advance(7.9)
        self.assertEqual(self.io.routes, [])
        self.clock.advance(0.2)
        self.assertEqual(self.io.routes, [Target("extension", "102")])

    def test_no_key_and_no_fallback_is_the_operator(self):
        m = self.menu()
        m.played()
        self.clock.advance(8.1)
        self.assertEqual(self.io.routes, [Target("extension", "100")])

    def test_without_an_operator_the_route_is_none(self):
        m = self.menu(operator=None)
        m.key("0")
        self.assertEqual(self.io.routes, [None])

    def test_an_unknown_number_says_so_and_plays_the_menu_again_then_fallback(self):
        m = self.menu("fallback = 102\n")
        for n in range(REPEATS):
            m.key("7")          # no number begins with 7
            self.assertEqual(self.io.plays[-1], [PROMPT["invalid"], GREETING])
            self.assertEqual(self.io.routes, [])
        m.played()
        m.key("7")
        self.assertEqual(self.io.routes, [Target("extension", "102")])

    def test_digits_that_stop_short_are_invalid_after_the_timeout(self):
        m = self.menu("key_1 = \n")
        m.key("1")
        self.clock.advance(DIGIT_TIMEOUT + 0.1)
        self.assertEqual(self.io.plays[-1], [PROMPT["invalid"], GREETING])
        # And the menu runs again: the no-key timeout after its greeting.
        m.played()
        self.clock.advance(8.1)
        self.assertEqual(self.io.routes, [Target("extension", "100")])

    def test_a_digit_that_leads_nowhere_is_invalid_at_once(self):
        m = self.menu("key_1 = \n")
        m.key("1")
        m.key("9")              # 19: nobody
        self.assertEqual(self.io.plays[-1], [PROMPT["invalid"], GREETING])

    def test_star_plays_the_menu_again(self):
        m = self.menu()
        m.played()
        m.key("*")
        self.assertEqual(self.io.plays[-1], [GREETING])
        m.played()
        self.clock.advance(8.1)
        self.assertEqual(len(self.io.routes), 1)

    def test_after_hours(self):
        extra = "hours = mon-fri 08:30-17:30\nafter_hours = voicemail 101\n"
        self.menu(extra, now=(5, 10 * 60))          # Saturday
        self.assertEqual(self.io.routes, [Target("voicemail", "101")])
        self.assertEqual(self.io.plays, [[PROMPT["transfer"]]])
        self.menu(extra, now=(0, 17 * 60 + 30))     # Monday, closed at 17:30
        self.assertEqual(self.io.routes, [Target("voicemail", "101")])
        self.menu(extra, now=(4, 8 * 60 + 30))      # Friday, open
        self.assertEqual(self.io.routes, [])
        self.assertEqual(self.io.plays, [[GREETING]])

    def test_outside_hours_without_after_hours_plays_the_menu(self):
        self.menu("hours = mon-fri 08:30-17:30\n", now=(6, 0))
        self.assertEqual(self.io.plays, [[GREETING]])

    def test_transfer_failed_says_so_then_hangs_up(self):
        m = self.menu()
        m.key("1")
        m.played()              # the "transfer" prompt
        self.assertFalse(self.io.hung_up)
        m.transfer_failed()
        self.assertEqual(self.io.plays[-1], [PROMPT["cannot_transfer"]])
        m.key("2")
        self.assertFalse(self.io.hung_up)
        m.played()
        self.assertTrue(self.io.hung_up)

    def test_stop_leaves_no_timer(self):
        m = self.menu("key_1 = \n")
        m.key("1")
        m.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class GreetingTests(unittest.TestCase):

    def setUp(self):
        self.data = self.mktemp()
        os.makedirs(self.data)
        self.directory = os.path.join(self.data, "voicemail", "attendant")
        self.spoken = []

    def speak(self, text, path):
        self.spoken.append(text)
        with open(path, "wb") as f:
            f.write(to_wav(tone(300 + len(self.spoken) * 100, 100), rate=16000))
        return True

    def test_text_rendered_once_and_again_when_it_changes(self):
        g = AttendantGreetings(self.directory, self.data, speak=self.speak)
        a = attendant()
        self.assertTrue(g.stale(a))
        tones = g.get(a)
        self.assertEqual(tones, g.tones)
        self.assertEqual(g.render([a]), 1)
        self.assertFalse(g.stale(a))
        pcm = g.get(a)
        # espeak's rate (here 16 kHz) is stored as 8 kHz mono.
        self.assertEqual(len(pcm), 800)
        with wave.open(os.path.join(self.directory, "main.wav")) as w:
            self.assertEqual((w.getframerate(), w.getnchannels()), (8000, 1))
        with open(os.path.join(self.directory, "main.txt")) as f:
            self.assertEqual(f.read(), "Thank you for calling.")
        # A new server (restart) finds it; nothing is spoken again.
        g2 = AttendantGreetings(self.directory, self.data, speak=self.speak)
        self.assertEqual(g2.render([a]), 0)
        self.assertEqual(g2.get(a), pcm)
        self.assertEqual(self.spoken, ["Thank you for calling."])
        # The text changes: rendered again.
        b = attr.evolve(a, greeting="Welcome to Example.")
        self.assertTrue(g2.stale(b))
        self.assertEqual(g2.get(b), g2.tones)
        self.assertEqual(g2.render([b]), 1)
        self.assertNotEqual(g2.get(b), pcm)
        self.assertEqual(self.spoken, ["Thank you for calling.", "Welcome to Example."])

    def test_without_espeak_tones(self):
        g = AttendantGreetings(self.directory, self.data, speak=lambda text, path: False)
        a = attendant()
        self.assertEqual(g.render([a]), 0)
        self.assertEqual(g.get(a), g.tones)

    def test_a_wav_under_data_dir(self):
        os.makedirs(os.path.join(self.data, "greetings"))
        with open(os.path.join(self.data, "greetings", "main.wav"), "wb") as f:
            f.write(to_wav(tone(440, 200)))
        g = AttendantGreetings(self.directory, self.data, speak=self.speak)
        a = attr.evolve(attendant(), greeting="greetings/main.wav")
        self.assertFalse(g.stale(a))
        self.assertEqual(g.get(a), tone(440, 200))
        self.assertEqual(g.render([a]), 0)
        self.assertEqual(self.spoken, [])
        # Outside data_dir, or missing: the tones.
        self.assertEqual(g.get(attr.evolve(a, greeting="../../etc/x.wav")), g.tones)
        self.assertEqual(g.get(attr.evolve(a, greeting="nothing.wav")), g.tones)

    def test_no_greeting_is_none(self):
        g = AttendantGreetings(self.directory, self.data, speak=self.speak)
        self.assertIsNone(g.get(attr.evolve(attendant(), greeting="")))
