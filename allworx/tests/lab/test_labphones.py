"""
Tests for allworx.lab.labphones: the lab's office phones (baresip) and
`allworx lab call`.

`PhoneFilesTests` and `PlaceCallTests` run anywhere; `LabPhonesTests` runs
the server with the repository's tap.conf in a real lab (needs root): the
phones register, and `allworx lab call phone1 102` is answered by phone2
while the server lists the call, and each phone hears the other's tone.
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
        # What each call heard, recorded where `allworx lab call` reads it.
        self.assertIn("module sndfile.so\n", config)
        self.assertIn("snd_path /x/phone1/heard\n", config)
        phone2 = labphones.phone_files(LAB_PHONES["phone2"], "/x/phone2", "192.168.2.12")
        self.assertIn("audio_source ausine,660\n", phone2["/x/phone2/config"])
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
        def start(lab, host, ip, lease):
            started.append((host, ip))
            return None, "hand-made account; provisioning failed: no option 66 in its DHCP lease"
        self.patch(labphones, "start_phone", start)
        clock = Clock()

        def sleep(seconds):
            clock.now += seconds
            if clock.now >= 2:
                lab.leases["phone2"] = {"ip_address": "192.168.2.12"}

        said = labphones.start_phones_when_leased(lab, ["phone1", "phone2", "bphone1"], [],
                                                  timeout=5, sleep=sleep, clock=clock)
        self.assertEqual(started, [("phone1", "192.168.2.11"), ("phone2", "192.168.2.12")])
        how = " (hand-made account; provisioning failed: no option 66 in its DHCP lease)"
        self.assertEqual(said, {"phone1": "started on 192.168.2.11" + how,
                                "phone2": "started on 192.168.2.12" + how,
                                "bphone1": "not started: no DHCP lease in 5 s"})


# What the server's generic file (model `generic`, `{mac}.baresip`) looks like.
GENERIC = """# allworx generic provisioning for 02a100000211
sip_listen 0.0.0.0:5060
dns_server 192.168.2.254:53
module g711.so
module mwi.so
module nosuchcodec.so
module_app account.so
<sip:101@192.168.2.254>;auth_user=101;auth_pass=S3cret_-x;regint=600;mwi=yes

"""


class Completed:
    def __init__(self, returncode, stdout="", stderr=""):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class CurlLab:
    """run() as curl would answer it: `answers` maps a URL to (exit, stdout, stderr)."""

    def __init__(self, answers):
        self.answers = answers
        self.ran = []

    def run(self, host, argv, check=True, timeout=30, **kw):
        self.ran.append((host, argv))
        return Completed(*self.answers.get(argv[-1], (7, "", "curl: (7) Failed to connect")))


def wav_bytes(samples, rate=8000, final=True):
    """A mono 16-bit WAV; `final=False`: the RIFF size of a file still being written."""
    import struct
    data = struct.pack("<%dh" % len(samples), *samples)
    riff = 36 + len(data) if final else 0
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) +
            b"data" + struct.pack("<I", len(data) if final else 0) + data)


def sine(freq, seconds, rate=8000, amplitude=8000):
    import math
    return [int(amplitude * math.sin(2 * math.pi * freq * i / rate))
            for i in range(int(rate * seconds))]


class HeardTests(unittest.TestCase):
    """What `allworx lab call` says a call's recording holds."""

    def test_the_other_phones_tone(self):
        said, sound = labphones.describe_heard(sine(660, 2.0), 8000, own_tone=440)
        self.assertTrue(sound)
        self.assertEqual(said, "heard phone2's 660 Hz tone for 2.0 s: audio both ways")

    def test_sound_that_is_no_lab_tone(self):
        said, sound = labphones.describe_heard(sine(1234, 1.5), 8000, own_tone=440)
        self.assertTrue(sound)
        self.assertIn("1.5 s of sound (no lab phone's tone", said)

    def test_silence_and_nothing(self):
        said, sound = labphones.describe_heard([0, 3, -2] * 4000, 8000, own_tone=440)
        self.assertFalse(sound)
        self.assertEqual(said, "heard 1.5 s of silence: no audio reached this phone")
        self.assertFalse(labphones.describe_heard([], 0, own_tone=440)[1])

    def test_the_newest_finished_recording(self):
        directory = self.mktemp()
        heard = os.path.join(directory, labphones.HEARD_DIR)
        os.makedirs(heard)
        self.assertEqual(labphones.recordings(directory), set())
        with open(os.path.join(heard, "dump-old-dec.wav"), "wb") as f:
            f.write(wav_bytes(sine(440, 0.2)))
        before = labphones.recordings(directory)
        self.assertIsNone(labphones.finished_heard(directory, before))
        with open(os.path.join(heard, "dump-new-enc.wav"), "wb") as f:
            f.write(wav_bytes(sine(440, 0.2)))
        path = os.path.join(heard, "dump-new-dec.wav")
        with open(path, "wb") as f:
            f.write(wav_bytes(sine(660, 0.5), final=False))
        self.assertIsNone(labphones.finished_heard(directory, before), "still being written")
        with open(path, "wb") as f:
            f.write(wav_bytes(sine(660, 0.5)))
        samples, rate = labphones.finished_heard(directory, before)
        self.assertEqual((len(samples), rate), (4000, 8000))
        self.assertEqual(labphones.recordings(self.mktemp()), set())


class ProvisioningTests(unittest.TestCase):

    def test_host_mac(self):
        self.assertEqual(labphones.host_mac("phone1"), "02a100000211")
        self.assertEqual(labphones.host_mac("bphone1"), "02a200000311")
        self.assertRaises(labphones.LabError, labphones.host_mac, "isp")

    def test_url_from_option_66(self):
        url = labphones.provisioning_url
        mac = "02a100000211"
        self.assertEqual(url({"tftp_server_name": "http://192.168.2.254:8089/"}, mac),
                         "http://192.168.2.254:8089/02a100000211.baresip")
        self.assertEqual(url({"tftp_server_name": "http://192.168.2.254:8089"}, mac),
                         "http://192.168.2.254:8089/02a100000211.baresip")
        self.assertEqual(url({"tftp_server_name": "192.168.2.254"}, mac),
                         "tftp://192.168.2.254/02a100000211.baresip")
        self.assertIsNone(url({"ip_address": "192.168.2.11"}, mac))
        self.assertIsNone(url(None, mac))
        self.assertRaises(ValueError, url, {"tftp_server_name": "x; rm -rf /"}, mac)

    def test_split_by_the_contract_rule(self):
        config, accounts = labphones.split_generic(GENERIC)
        self.assertEqual(accounts, ["<sip:101@192.168.2.254>;auth_user=101;auth_pass=S3cret_-x;"
                                    "regint=600;mwi=yes"])
        self.assertEqual(config[:2], ["sip_listen 0.0.0.0:5060", "dns_server 192.168.2.254:53"])
        self.assertEqual(len(config), 6)
        self.assertRaises(ValueError, labphones.split_generic, "# nothing\nsip_listen x\n")

    def test_provisioned_files_keep_the_labs_settings(self):
        modules = self.mktemp()
        os.makedirs(modules)
        for name in ("g711", "mwi", "account", "ausine", "aubridge", "menu", "ctrl_tcp"):
            open(os.path.join(modules, name + ".so"), "w").close()
        files = labphones.provisioned_files(GENERIC, "/x/phone1", "192.168.2.11",
                                            "http://s/02a100000211.baresip", modules)
        config = files["/x/phone1/config"].splitlines()
        self.assertEqual(config[0], "# allworx lab: provisioned from http://s/02a100000211.baresip")
        self.assertIn("dns_server 192.168.2.254:53", config)
        self.assertIn("sip_listen 192.168.2.11:5060", config)
        self.assertNotIn("sip_listen 0.0.0.0:5060", config)
        self.assertIn("ctrl_tcp_listen 127.0.0.1:4444", config)
        self.assertNotIn("module mwi.so", config)                # spins baresip 1.0
        self.assertNotIn("module nosuchcodec.so", config)        # baresip has no such module
        self.assertEqual(config.count("module g711.so"), 1)
        self.assertIn("snd_path /x/phone1/heard", config)
        self.assertIn("audio_source ausine,440", config)
        self.assertEqual(config.count("module_app account.so"), 1)
        self.assertEqual(files["/x/phone1/accounts"],
                         "<sip:101@192.168.2.254>;auth_user=101;auth_pass=S3cret_-x;"
                         "regint=600;mwi=yes;answermode=auto\n")
        self.assertEqual(files["/x/phone1/contacts"], "")

    def test_setup_fetches_from_option_66(self):
        url = "http://192.168.2.254:8089/02a100000211.baresip"
        lab = CurlLab({url: (0, GENERIC, "")})
        files, how = labphones.phone_setup(
            lab, "phone1", "192.168.2.11",
            {"ip_address": "192.168.2.11", "tftp_server_name": "http://192.168.2.254:8089/"}, "/x")
        self.assertEqual(how, "provisioned from " + url)
        self.assertEqual(lab.ran[0][0], "phone1")
        self.assertEqual(lab.ran[0][1][0], "curl")
        self.assertIn("auth_pass=S3cret_-x", files["/x/accounts"])

    def test_setup_falls_back_to_the_hand_made_account(self):
        lab = CurlLab({})
        lease = {"ip_address": "192.168.2.11", "tftp_server_name": "192.168.2.254"}
        files, how = labphones.phone_setup(lab, "phone1", "192.168.2.11", lease, "/x")
        self.assertEqual(files, labphones.phone_files(LAB_PHONES["phone1"], "/x", "192.168.2.11"))
        self.assertEqual(how, "hand-made account; provisioning failed: curl "
                         "tftp://192.168.2.254/02a100000211.baresip: exit 7: "
                         "curl: (7) Failed to connect")
        files, how = labphones.phone_setup(lab, "phone1", "192.168.2.11",
                                           {"ip_address": "192.168.2.11"}, "/x")
        self.assertEqual(how, "hand-made account; provisioning failed: "
                         "no option 66 in its DHCP lease")
        # A file without an account is refused the same way.
        lab = CurlLab({"tftp://192.168.2.254/02a100000211.baresip": (0, "sip_listen x\n", "")})
        files, how = labphones.phone_setup(lab, "phone1", "192.168.2.11", lease, "/x")
        self.assertIn("no <sip: account line", how)
        self.assertIn("auth_pass=alice-demo", files["/x/accounts"])


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
            # As `make run` starts them: option 66 tells them where to fetch.
            lease = lab.dhclient(host, "eth0", timeout=30,
                                 vendor_class=labphones.PHONE_VENDOR_CLASS)
            self.assertEqual(lease.get("tftp_server_name"), "192.168.2.254", lease)
        said = labphones.start_phones_when_leased(lab, ["phone1", "phone2"], [], timeout=5)
        self.assertEqual(sorted(said), ["phone1", "phone2"])
        self.assertTrue(all(s.startswith("started on 192.168.2.") for s in said.values()), said)
        # Each phone says where its account came from: the provisioning
        # service, by TFTP ([phone] sections in the repository's tap.conf).
        self.assertTrue(all("provisioned from tftp://192.168.2.254/02a1000002" in s
                            for s in said.values()), "%s\n%s" % (said, self.context()))

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
        # Audio both ways: phone1 heard phone2's tone, phone2 heard phone1's.
        self.assertIn("phone1: heard phone2's 660 Hz tone for", text)
        self.assertIn("audio both ways", text)
        # phone2 closes its recording when it has taken the call's end in: wait for that.
        heard2 = wait_until(
            self, lambda: labphones.finished_heard(labphones.phone_directory(lab, "phone2"), ()),
            "phone2's recording of the call closed", 15, self.context)
        said2, _ = labphones.describe_heard(*heard2, own_tone=660)
        self.assertIn("heard phone1's 440 Hz tone", said2)
        self.assertTrue(seen, "the call never showed in /api/v1/sip/calls\n" + text)
        self.assertIn("101", json.dumps(seen[0]))

    def test_call_without_a_phone_says_so(self):
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(cli.main(["call", "--prefix", self.lab.prefix, "phone2", "101"]), 2)
        self.assertIn("no phone runs in %s" % self.lab.ns("phone2"), err.getvalue())

