"""
Tests for allworx.lab.labphones: the lab's office phones (baresip) and
`allworx lab call`.

`PhoneFilesTests` and `PlaceCallTests` run anywhere; `LabPhonesTests` runs
the server with the repository's tap.conf in a real lab (needs root): the
phones register, and `allworx lab call phone1 102` is answered by phone2
while the server lists the call.
"""

import hashlib
import io
import json
import os
import sys
import threading

from twisted.trial import unittest

from allworx.lab import cli, labphones
from allworx.lab.labphones import LAB_PHONES, NetstringReader, netstring, place_call
from allworx.tests.lab.fixtures import require_programs, start_lab, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


class PhoneFilesTests(unittest.TestCase):

    def test_config_and_account(self):
        files = labphones.phone_files(LAB_PHONES["phone1"], "/x/phone1", "192.168.2.11")
        config = files["/x/phone1/config"]
        self.assertIn("sip_listen 192.168.2.11:5060\n", config)
        self.assertIn("ctrl_tcp_listen 127.0.0.1:4444\n", config)
        self.assertIn("module_app ctrl_tcp.so\n", config)
        # ausine's tone is 48 kHz stereo only: without these a call fails as it is answered.
        self.assertIn("audio_source ausine,440\nausrc_srate 48000\nausrc_channels 2\n", config)
        # No terminal UI (it runs in the background) and never the mwi module (it spins).
        self.assertNotIn("stdio", config)
        self.assertNotIn("mwi", config)
        self.assertEqual(files["/x/phone1/accounts"],
                         "<sip:101@192.168.2.254>;auth_user=101;auth_pass=alice-demo;"
                         "regint=300;answermode=auto;audio_codecs=PCMU\n")
        self.assertEqual(files["/x/phone1/contacts"], "")

    def test_the_phones_are_the_example_configs_users(self):
        with open(os.path.join(REPO, "tap.conf")) as f:
            text = f.read()
        from allworx.config import load_config
        config = load_config(os.path.join(REPO, "tap.conf"))
        for host in ("phone1", "phone2"):
            phone = LAB_PHONES[host]
            self.assertIn("[user %s]" % phone.user, text)
            self.assertEqual(config.users[phone.user].extension, phone.ext)
            digest = dict(config.users[phone.user].sip_digest)["MD5"]
            self.assertEqual(digest, hashlib.md5(("%s:%s:%s" % (
                phone.ext, config.system.domain, phone.password)).encode()).hexdigest())
        self.assertIn("NAME-demo", text)

    def test_netstrings(self):
        reader = NetstringReader()
        reader.feed(netstring(b'{"a": 1}') + b"5:hello," + b'8:{"b": 2')
        self.assertEqual(list(reader.messages()), [{"a": 1}])
        reader.feed(b"},")
        self.assertEqual(list(reader.messages()), [{"b": 2}])
        reader.feed(b"x:")
        self.assertRaises(ValueError, list, reader.messages())


class FakeControl:
    """A phone's ctrl_tcp as place_call sees it: scripted messages, sent commands kept."""

    def __init__(self, script, clock):
        self.script = list(script)
        self.sent = []
        self.clock = clock

    def command(self, command, params=""):
        self.sent.append((command, params))

    def next(self, timeout):
        if self.script and self.script[0] is not None:
            return self.script.pop(0)
        if self.script:
            self.script.pop(0)
        self.clock.now += max(timeout, 0)
        return None


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def event(kind, **kw):
    return dict(event=True, type=kind, **kw)


class PlaceCallTests(unittest.TestCase):

    def call(self, script, **kw):
        clock = Clock()
        control = FakeControl(script, clock)
        said = []
        code = place_call(control, "102", say=said.append, clock=clock, **kw)
        return code, control.sent, said, clock.now

    def test_answered_held_and_hung_up(self):
        code, sent, said, now = self.call([
            {"response": True, "ok": True, "token": "dial", "data": ""},
            event("CALL_OUTGOING"), event("CALL_PROGRESS"),
            event("CALL_ESTABLISHED", peeruri="sip:102@192.168.2.254"),
            None, event("CALL_CLOSED", param="Connection reset by user")], hold=3)
        self.assertEqual(code, 0)
        self.assertEqual(sent, [("dial", "102"), ("hangup", "")])
        self.assertEqual(said, ["dialling 102 ...", "calling", "ringing (early media)",
                                "answered by sip:102@192.168.2.254; the Phones page shows the call",
                                "hanging up after 3 s", "call ended: Connection reset by user"])
        self.assertEqual(now, 3)

    def test_refused(self):
        code, sent, said, _ = self.call([event("CALL_OUTGOING"),
                                         event("CALL_CLOSED", param="486 Busy Here")])
        self.assertEqual(code, 1)
        self.assertEqual(said[-1], "call ended: 486 Busy Here")
        self.assertEqual(sent, [("dial", "102")])

    def test_no_answer(self):
        code, sent, said, now = self.call([event("CALL_OUTGOING"), None], answer_timeout=7)
        self.assertEqual(code, 1)
        self.assertEqual(sent, [("dial", "102"), ("hangup", "")])
        self.assertEqual(said[-1], "no answer in 7 s: hanging up")
        self.assertEqual(now, 7)

    def test_dial_refused_by_the_phone(self):
        code, sent, said, _ = self.call([{"response": True, "ok": False, "token": "dial",
                                          "data": "no account\n"}])
        self.assertEqual(code, 1)
        self.assertEqual(said[-1], "the phone refused dial: no account")


class FakeLab:
    def __init__(self, leases):
        self.leases = leases
        self.started = []

    def dhclient_lease(self, host):
        return self.leases.get(host)


class StartWhenLeasedTests(unittest.TestCase):

    def test_each_phone_once_leased(self):
        lab = FakeLab({"phone1": {"ip_address": "192.168.2.11"}})
        started = []
        self.patch(labphones, "start_phone", lambda lab, host, ip: started.append((host, ip)))
        clock = Clock()

        def sleep(seconds):
            clock.now += seconds
            if clock.now >= 2:
                lab.leases["phone2"] = {"ip_address": "192.168.2.12"}

        said = labphones.start_phones_when_leased(lab, ["phone1", "phone2", "bphone1"], [],
                                                  timeout=5, sleep=sleep, clock=clock)
        self.assertEqual(started, [("phone1", "192.168.2.11"), ("phone2", "192.168.2.12")])
        self.assertEqual(said, {"phone1": "started on 192.168.2.11",
                                "phone2": "started on 192.168.2.12",
                                "bphone1": "not started: no DHCP lease in 5 s"})


class LabPhonesTests(unittest.TestCase):
    """The server with the repository's tap.conf; the lab's phones register; a lab call."""

    def setUp(self):
        require_programs(self, ["dhclient", "baresip"])
        self.lab = start_lab(self, prefix="awp")
        from allworx.tests.lab.server import LabServer
        with open(os.path.join(REPO, "tap.conf")) as f:
            self.server = LabServer(self.lab, f.read())
        self.addCleanup(self.server.stop)
        self.server.start(timeout=60)

    def api(self, path):
        from allworx.tests.lab.test_sip import api_get
        try:
            return api_get(self.lab, "admin", path)
        except OSError:
            return None

    def context(self):
        return "--- server:\n%s%s" % (self.server.log()[-3000:], "".join(
            "\n--- %s:\n%s" % (host, self.lab.log_text(labphones.process_name(host)))
            for host in ("phone1", "phone2")))

    def test_phones_register_and_a_lab_call_is_answered(self):
        lab = self.lab
        for host in ("phone1", "phone2"):
            lab.dhclient(host, "eth0", timeout=30)
        said = labphones.start_phones_when_leased(lab, ["phone1", "phone2"], [], timeout=5)
        self.assertEqual(sorted(said), ["phone1", "phone2"])
        self.assertTrue(all(s.startswith("started on 192.168.2.") for s in said.values()), said)

        def registered():
            bindings = self.api("/sip/registrations") or []
            return {b["user"] for b in bindings} >= {"101", "102"} or \
                {b["user"] for b in bindings} >= {"alice", "bob"}
        wait_until(self, registered, "phone1 and phone2 registered (/api/v1/sip/registrations)",
                   20, self.context)

        out = io.StringIO()
        seen = []

        def watch():
            # The call as the Phones page's API shows it while it is up.
            def up():
                calls = self.api("/sip/calls") or []
                if calls:
                    seen.append(calls)
                return calls
            try:
                wait_until(self, up, "the call in /api/v1/sip/calls", 20)
            except self.failureException:
                pass
        watcher = threading.Thread(target=watch, daemon=True)
        self.patch(sys, "stdout", out)
        watcher.start()
        code = cli.main(["call", "--prefix", lab.prefix, "phone1", "102", "--hold", "4"])
        watcher.join(25)
        text = out.getvalue()
        self.assertEqual(code, 0, text + self.context())
        self.assertIn("phone1: dialling 102 ...", text)
        self.assertIn("phone1: answered by", text)
        self.assertIn("phone1: call ended:", text)
        self.assertTrue(seen, "the call never showed in /api/v1/sip/calls\n" + text)
        self.assertIn("101", json.dumps(seen[0]))

    def test_call_without_a_phone_says_so(self):
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(cli.main(["call", "--prefix", self.lab.prefix, "phone2", "101"]), 2)
        self.assertIn("no phone runs in %s" % self.lab.ns("phone2"), err.getvalue())

