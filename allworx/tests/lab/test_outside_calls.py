"""
Outside lines end to end (lab prefix `awo`): the real server with a
`[trunk]` to the lab's provider (Kamailio as sip.internet.example in the
`inet` namespace), office phone alice (phone1, extension 101) and the
outside phones carla and dave of the provider (baresip in `inet`, accounts
alice and bob of topology.OUTSIDE_PHONES). The trunk registers; an outside
phone calls the office number and the extension answers, with audio both
ways through the server's relay; the extension dials out (9 + national
number) and the outside phone sees the office's caller ID, audio both ways;
the call history lists both.

Synchronised on events only: the admin API (trunk state, registrations,
calls), baresip's ctrl_tcp events, and the tones each phone hears.
"""

import os

from twisted.trial import unittest

from allworx.lab.topology import (
    OFFICE_NUMBERS,
    OUTSIDE_PHONES,
    PROVIDER,
    PROVIDER_DOMAIN,
    TRUNK_SECRET,
    TRUNK_USER,
)
from allworx.tests.lab.fixtures import process_report, start_lab, wait_until
from allworx.lab.tones import goertzel_power, longest_tone, tone_wav
from allworx.tests.lab.phones import Baresip, SipAccount, outside_phone
from allworx.tests.lab.sipua import wait_registered
from allworx.tests.lab.test_sip import PHONES, SERVER_IP, api_get, conf

PREFIX = "awo"

TRUNK = """
[trunk provider]
registrar = {domain}
username = {user}
secret = {secret}
numbers = {numbers}

[number {first}]
to = 101

[group team]
number = 300
members = 101 102

[attendant main]
number = 500
greeting = Thank you for calling. For the team, press 2.
key_2 = team
timeout = 20

[number {second}]
to = main
""".format(domain=PROVIDER_DOMAIN, user=TRUNK_USER, secret=TRUNK_SECRET,
           numbers=" ".join(OFFICE_NUMBERS), first=OFFICE_NUMBERS[0], second=OFFICE_NUMBERS[1])


class OutsideCallLabTests(unittest.TestCase):
    """Calls in and out through the trunk, with real phones and the real provider."""

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("baresip", "kamailio"))
        from allworx.tests.lab.server import LabServer
        self.work = os.path.join(self.lab.state_dir, "phones")
        os.makedirs(self.work, exist_ok=True)
        self.phones = []
        self.server = LabServer(self.lab, "")
        text = conf(self.server.data_dir).replace("voicemail_timeout = 4", "voicemail_timeout = 20")
        self.server.write_conf(text + TRUNK)
        self.addCleanup(self.server.stop)
        self.server.start()
        self.lab.run("server", ["ip", "addr", "add", SERVER_IP + "/24", "dev", "lan0"], check=False)
        for host in ("phone1", "phone2"):
            _, ext, ip, _ = PHONES[host]
            self.lab.run(host, ["ip", "addr", "add", ip + "/24", "dev", "eth0"], check=False)
            self.lab.run(host, ["ip", "link", "set", "lo", "up"])
            self.lab.run(host, ["ip", "route", "replace", "default", "via", SERVER_IP])

    def context(self):
        return "--- server:\n%s\n%s%s" % (
            self.server.log()[-4000:], process_report(self.lab, PROVIDER)[-2000:],
            "".join("\n--- %s (baresip):\n%s" % (p.name, p.log_tail()[-2000:]) for p in self.phones))

    def wait_for(self, predicate, timeout, what):
        return wait_until(self, predicate, what, timeout, self.context)

    def api(self, path):
        return api_get(self.lab, "phone1", path)

    def trunk_state(self):
        try:
            return {t["name"]: t for t in self.api("/sip/trunks")}.get("provider", {}).get("state")
        except (OSError, AssertionError):
            return None

    def office_phone(self, freq, host="phone1"):
        name, ext, ip, password = PHONES[host]
        tone = os.path.join(self.work, "office-%d.wav" % freq)
        tone_wav(tone, freq, 30)
        phone = Baresip(self.lab, host, self.work, tone, SipAccount(ext, password, SERVER_IP, bind_ip=ip),
                        name=name)
        self.addCleanup(phone.stop)
        self.phones.append(phone)
        phone.start()
        self.wait_for(lambda: any(b["user"] == name for b in self.api("/sip/registrations")), 15,
                      "the office phone's registration")
        return phone

    def outside(self, user, freq):
        tone = os.path.join(self.work, "%s-%d.wav" % (user, freq))
        tone_wav(tone, freq, 30)
        # Their own directory: the outside alice is not the office's alice.
        workdir = os.path.join(self.work, "outside")
        os.makedirs(workdir, exist_ok=True)
        phone = outside_phone(self.lab, user, workdir, tone)
        self.addCleanup(phone.stop)
        self.phones.append(phone)
        phone.start()
        wait_registered(self, self.lab, user, self.context)
        return phone

    def hears(self, phone, before, freq, what):
        self.wait_for(lambda: phone.heard_for(before, freq, 1.5), 20,
                      "%s (%s hears %d Hz)" % (what, phone.name, freq))

    def test_trunk_registers_calls_in_and_out_with_audio_and_history(self):
        self.wait_for(lambda: self.trunk_state() == "registered", 30, "the trunk registered at the provider")
        office = self.office_phone(440)
        caller = self.outside("alice", 1200)      # an outside caller (+15557770001)
        callee = self.outside("bob", 700)         # an outside number the office calls

        # 1. In: the outside phone dials the office's number (national form).
        before_o, before_c = office.recordings(), caller.recordings()
        mark_o, mark_c = office.mark(), caller.mark()
        caller.command("dial", OFFICE_NUMBERS[0][2:])
        incoming = office.wait_event("CALL_INCOMING", 15, mark_o)
        self.assertIn(OUTSIDE_PHONES["alice"], str(incoming), (incoming, self.context()))
        office.command("accept")
        caller.wait_event("CALL_ESTABLISHED", 15, mark_c)
        self.hears(office, before_o, 1200, "the outside caller's tone in the office")
        self.hears(caller, before_c, 440, "the office's tone at the outside caller")
        caller.command("hangup")
        office.wait_event("CALL_CLOSED", 15, mark_o)

        # 2. Out: the extension dials 9 + the national number of an outside phone.
        before_o, before_b = office.recordings(), callee.recordings()
        mark_o, mark_b = office.mark(), callee.mark()
        office.command("dial", "9" + OUTSIDE_PHONES["bob"][2:])
        incoming = callee.wait_event("CALL_INCOMING", 15, mark_b)
        self.assertIn(OFFICE_NUMBERS[0], str(incoming), (incoming, self.context()))
        callee.command("accept")
        office.wait_event("CALL_ESTABLISHED", 15, mark_o)
        self.hears(callee, before_b, 440, "the office's tone at the outside phone")
        self.hears(office, before_o, 700, "the outside phone's tone in the office")
        office.command("hangup")
        callee.wait_event("CALL_CLOSED", 15, mark_b)
        heard, rate = self.wait_for(lambda: callee.finished_recording(before_b), 10,
                                    "the outside phone's recording")
        self.assertGreater(goertzel_power(heard[rate // 2:], rate, 440), 0.3)

        # 3. Both calls are in the history, newest first.
        def listed():
            calls = self.api("/calls")["calls"]
            return calls if len([c for c in calls if c["trunk"] == "provider"]) >= 2 else None
        calls = self.wait_for(listed, 10, "both outside calls in /api/v1/calls")
        out, inn = [c for c in calls if c["trunk"] == "provider"][:2]
        self.assertEqual((out["direction"], out["from"], out["to"], out["outcome"]),
                         ("outbound", "101", OUTSIDE_PHONES["bob"], "answered"), calls)
        self.assertEqual((inn["direction"], inn["from"], inn["to"], inn["answered_by"], inn["outcome"]),
                         ("inbound", OUTSIDE_PHONES["alice"], OFFICE_NUMBERS[0], "101", "answered"), calls)
        self.assertGreaterEqual(inn["duration_s"], 1)

    def test_blind_transfer_of_an_outside_call(self):
        self.wait_for(lambda: self.trunk_state() == "registered", 30, "the trunk registered at the provider")
        alice = self.office_phone(440)
        bob = self.office_phone(900, "phone2")
        caller = self.outside("alice", 1200)
        # The outside phone calls the office; alice (101) answers.
        mark_a, mark_c = alice.mark(), caller.mark()
        before_c, before_b = caller.recordings(), bob.recordings()
        caller.command("dial", OFFICE_NUMBERS[0])
        alice.wait_event("CALL_INCOMING", 15, mark_a)
        alice.command("accept")
        caller.wait_event("CALL_ESTABLISHED", 15, mark_c)
        self.hears(caller, before_c, 440, "alice's tone at the outside caller")
        # Alice transfers the caller to bob (102), blind: bob rings, answers,
        # and the outside caller now hears bob.
        mark_b = bob.mark()
        alice.command("transfer", "sip:102@%s" % SERVER_IP)
        bob.wait_event("CALL_INCOMING", 15, mark_b)
        bob.command("accept")
        bob.wait_event("CALL_ESTABLISHED", 15, mark_b)
        self.hears(caller, before_c, 900, "bob's tone at the outside caller after the transfer")
        self.hears(bob, before_b, 1200, "the outside caller's tone at bob")
        alice.wait_event("CALL_CLOSED", 15, mark_a)
        caller.command("hangup")
        bob.wait_event("CALL_CLOSED", 15, mark_b)

        def listed():
            calls = [c for c in self.api("/calls")["calls"] if c["trunk"] == "provider"]
            return calls or None
        call = self.wait_for(listed, 10, "the transferred call in /api/v1/calls")[0]
        self.assertEqual((call["direction"], call["answered_by"], call["outcome"]),
                         ("inbound", "102", "answered"), call)

    def test_the_attendant_sends_a_key_to_a_ring_group_and_a_member_answers(self):
        self.wait_for(lambda: self.trunk_state() == "registered", 30, "the trunk registered at the provider")
        alice = self.office_phone(440)
        bob = self.office_phone(900, "phone2")
        caller = self.outside("alice", 1200)
        mark_a, mark_b, mark_c = alice.mark(), bob.mark(), caller.mark()
        before_c, before_b = caller.recordings(), bob.recordings()
        # The office's second number goes to the attendant, which answers.
        caller.command("dial", OFFICE_NUMBERS[1])
        caller.wait_event("CALL_ESTABLISHED", 15, mark_c)
        # Key 2: the team rings (both phones); bob answers.
        caller.dtmf("2")
        alice.wait_event("CALL_INCOMING", 15, mark_a)
        bob.wait_event("CALL_INCOMING", 15, mark_b)
        bob.command("accept")
        bob.wait_event("CALL_ESTABLISHED", 15, mark_b)
        alice.wait_event("CALL_CLOSED", 15, mark_a)       # the other member stops ringing
        self.hears(caller, before_c, 900, "bob's tone at the outside caller")
        self.hears(bob, before_b, 1200, "the outside caller's tone at bob")
        caller.command("hangup")
        bob.wait_event("CALL_CLOSED", 15, mark_b)

        def listed():
            calls = [c for c in self.api("/calls")["calls"] if c["trunk"] == "provider"]
            return calls or None
        call = self.wait_for(listed, 10, "the call in /api/v1/calls")[0]
        self.assertEqual((call["direction"], call["to"], call["answered_by"], call["outcome"]),
                         ("inbound", OFFICE_NUMBERS[1], "102", "answered"), call)

    def test_hold_plays_music_to_the_outside_caller_and_resume_brings_the_office_back(self):
        # The office's own music (a 600 Hz tone, so the caller's recording shows it).
        music = os.path.join(self.server.data_dir, "voicemail", "music.wav")
        os.makedirs(os.path.dirname(music), exist_ok=True)
        tone_wav(music, 600, 10)
        self.wait_for(lambda: self.trunk_state() == "registered", 30, "the trunk registered at the provider")
        alice = self.office_phone(440)
        caller = self.outside("alice", 1200)
        mark_a, mark_c = alice.mark(), caller.mark()
        before_c = caller.recordings()
        caller.command("dial", OFFICE_NUMBERS[0])
        alice.wait_event("CALL_INCOMING", 15, mark_a)
        alice.command("accept")
        caller.wait_event("CALL_ESTABLISHED", 15, mark_c)
        self.hears(caller, before_c, 440, "alice's tone at the outside caller")
        alice.command("hold")
        held_until = self.wait_for(lambda: caller.heard_for(before_c, 600, 1.5), 20,
                                   "music on hold at the outside caller")
        alice.command("resume")

        def office_again():
            samples, rate = caller.hearing(before_c)
            length, _ = longest_tone(samples, rate, 440, start=held_until)
            return length >= 1.5
        self.wait_for(office_again, 20, "alice's tone at the outside caller after resume")
        caller.command("hangup")
        alice.wait_event("CALL_CLOSED", 15, mark_a)
