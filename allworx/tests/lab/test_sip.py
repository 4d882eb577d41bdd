"""
Integration test of the phones in the virtual office (lab prefix `awp`): the
real server in its namespace, two baresip phones (phone1 = alice 101,
phone2 = bob 102) driven headless through ctrl_tcp, a SUBSCRIBE client of
our own for message waiting, and POP3 for bob's mailbox. It needs root and
baresip (the lab's `start_lab` decides what a missing one means).

The test synchronises on events, never on fixed sleeps or log text: the
server's admin API (status, registrations, calls), baresip's ctrl_tcp events
(CALL_INCOMING, CALL_ESTABLISHED, CALL_CLOSED), what a phone hears (its
decoded audio, read while baresip writes it), and the mailbox over POP3.
The one timed wait lets alice's tone be recorded for the seconds the test
then measures; key presses are paced at the length of a key.
"""

import base64
import email
import email.policy
import http.client
import json
import imaplib
import os
import poplib
import socket
import ssl
import threading
import time

from twisted.trial import unittest

from allworx.passwords import hash_password, sip_digest
from allworx.tests.confs import MINIMAL
from allworx.tests.lab.fixtures import start_lab, wait_until
from allworx.lab.tones import goertzel_power, tone_wav, wav_samples
from allworx.tests.lab.phones import Baresip, SipAccount, socket_in_ns

PREFIX = "awp"
SERVER_IP = "192.168.2.254"
PHONES = {"phone1": ("alice", "101", "192.168.2.11", "alice-pw"),
          "phone2": ("bob", "102", "192.168.2.12", "bob-pw")}
ADMIN_PORT = 8080
def conf(data_dir):
    users = ""
    for _, (name, ext, _, pw) in sorted(PHONES.items()):
        users += "\n[user %s]\nextension = %s\nvoicemail_pin = %s\npassword = %s\nsip_digest = %s\n" % (
            name, ext, {"alice": "1234", "bob": "2345"}[name], hash_password(pw),
            sip_digest(ext, "example.com", pw))
    base = MINIMAL.split("[user alice]")[0]
    return base + "\n[sip]\nvoicemail_timeout = 4\nrtp_ports = 20000-20100\n" + users


class SubscribeClient:
    """A tiny SIP UA in a lab host that SUBSCRIBEs to message-summary and keeps NOTIFY bodies."""

    def __init__(self, lab, host, ip, ext):
        self.sock = socket_in_ns(lab.ns(host), kind=socket.SOCK_DGRAM)
        self.sock.bind((ip, 5070))
        self.sock.settimeout(0.5)
        self.ip, self.ext = ip, ext
        self.notifies = []
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def subscribe(self):
        msg = ("SUBSCRIBE sip:{ext}@{srv} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:5070;branch=z9hG4bKsub{t};rport\r\n"
               "Max-Forwards: 70\r\nFrom: <sip:{ext}@example.com>;tag=sub1\r\nTo: <sip:{ext}@example.com>\r\n"
               "Call-ID: mwi-{t}@{ip}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:{ext}@{ip}:5070>\r\n"
               "Event: message-summary\r\nExpires: 600\r\nAccept: application/simple-message-summary\r\n"
               "Content-Length: 0\r\n\r\n").format(ext=self.ext, srv=SERVER_IP, ip=self.ip, t=int(time.time()))
        self.sock.sendto(msg.encode(), (SERVER_IP, 5060))

    def _loop(self):
        while not self.stopped:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            text = data.decode("utf-8", "replace")
            if text.startswith("NOTIFY"):
                head, _, body = text.partition("\r\n\r\n")
                self.notifies.append(body)
                lines = head.split("\r\n")
                keep = [line for line in lines[1:] if line.split(":")[0].lower() in
                        ("via", "from", "to", "call-id", "cseq")]
                reply = "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n"
                self.sock.sendto(reply.encode(), addr)

    def close(self):
        self.stopped = True
        self.thread.join(2)
        self.sock.close()


def pop3_in(lab, host, user, password):
    """A poplib.POP3 connected to the server from a lab host."""
    class NsPOP3(poplib.POP3):
        def _create_socket(self, timeout):
            s = socket_in_ns(lab.ns(host))
            s.settimeout(timeout)
            s.connect((self.host, self.port))
            return s
    box = NsPOP3(SERVER_IP, 110, timeout=10)
    box.user(user)
    box.pass_(password)
    return box


def api_get(lab, host, path, ca_file=None):
    """
    GET /api/v1PATH as the admin from a lab host over HTTPS, verified against
    the server's CA (`ca_file`, by default the lab server's at its usual
    place): the decoded JSON (raises on non-200).
    """
    ca_file = ca_file or os.path.join(lab.state_dir, "allworx", "data", "tls", "ca.crt")
    sock = socket_in_ns(lab.ns(host))
    sock.settimeout(10)
    sock.connect((SERVER_IP, ADMIN_PORT))
    context = ssl.create_default_context(cafile=ca_file)
    conn = http.client.HTTPSConnection(SERVER_IP, ADMIN_PORT, timeout=10, context=context)
    conn.sock = context.wrap_socket(sock, server_hostname=SERVER_IP)
    try:
        conn.request("GET", "/api/v1" + path, headers={
            "Authorization": "Basic " + base64.b64encode(b"admin:admin-demo").decode()})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise AssertionError("GET /api/v1%s: %d %r" % (path, response.status, body[:300]))
    return json.loads(body)


def imap_in(lab, host, ca_file, user, password):
    """An imaplib.IMAP4_SSL from a lab host to the server's 993, verified against its CA as imap.DOMAIN."""
    class NsIMAP(imaplib.IMAP4_SSL):
        def _create_socket(self, timeout):
            sock = socket_in_ns(lab.ns(host))
            sock.settimeout(timeout)
            sock.connect((SERVER_IP, 993))
            return self.ssl_context.wrap_socket(sock, server_hostname=self.host)
    box = NsIMAP("imap.example.com", 993, ssl_context=ssl.create_default_context(cafile=ca_file),
                 timeout=10)
    box.login(user, password)
    return box


def voicemail_wavs(lab, user, password):
    """[(number, wav bytes)] of the voicemail messages in a POP3 mailbox."""
    box = pop3_in(lab, "phone2", user, password)
    try:
        out = []
        count, _ = box.stat()
        for n in range(1, count + 1):
            raw = b"\n".join(box.retr(n)[1])
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            if msg.get("X-Allworx-Voicemail") != "yes":
                continue
            for part in msg.walk():
                if part.get_content_type() == "audio/wav":
                    out.append((n, part.get_payload(decode=True)))
        return out
    finally:
        box.quit()


class PhoneLabTests(unittest.TestCase):
    """Two baresip phones call each other and use voicemail."""

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("baresip",))
        from allworx.tests.lab.server import LabServer
        self.work = os.path.join(self.lab.state_dir, "phones")
        os.makedirs(self.work, exist_ok=True)
        self.phones = []
        self.server = LabServer(self.lab, "")
        self.server.write_conf(conf(self.server.data_dir))
        self.addCleanup(self.server.stop)
        self.server.start()
        # The network service applies the LAN address; add it if it did not.
        self.lab.run("server", ["ip", "addr", "add", SERVER_IP + "/24", "dev", "lan0"], check=False)
        for host, (_, _, ip, _) in sorted(PHONES.items()):
            self.lab.run(host, ["ip", "addr", "add", ip + "/24", "dev", "eth0"], check=False)
            self.lab.run(host, ["ip", "link", "set", "lo", "up"])
            self.lab.run(host, ["ip", "route", "replace", "default", "via", SERVER_IP])
        self.wait_for(lambda: self.services().get("sip", {}).get("state") == "up", 15,
                      "sip up in the server's status")
        self.tone_a = os.path.join(self.work, "a-440.wav")
        self.tone_b = os.path.join(self.work, "b-1200.wav")
        tone_wav(self.tone_a, 440, 30)
        tone_wav(self.tone_b, 1200, 30)

    # ------------------------------------------------------------ the server's API

    def api(self, path):
        return api_get(self.lab, "phone2", path)

    def services(self):
        try:
            return self.api("/status")["services"]
        except OSError:
            return {}       # the admin port is not listening yet

    def registered(self, user, contact_has=""):
        return any(b["user"] == user and contact_has in b["contact"]
                   for b in self.api("/sip/registrations"))

    # ------------------------------------------------------------ phones

    def phone(self, host, source_wav, transport="udp", regint=300):
        """The baresip phone of lab host `host` (PHONES), registering at the server."""
        name, ext, ip, password = PHONES[host]
        account = SipAccount(ext, password, SERVER_IP, bind_ip=ip, transport=transport,
                             regint=regint)
        return Baresip(self.lab, host, self.work, source_wav, account, name=name)

    def start_phones(self, alice_transport="udp", alice_registers=True):
        self.alice = self.phone("phone1", self.tone_a, alice_transport,
                                300 if alice_registers else 0)
        self.bob = self.phone("phone2", self.tone_b)
        for phone in (self.alice, self.bob):
            self.addCleanup(phone.stop)
            phone.start()
            self.phones.append(phone)
        for phone in (self.alice, self.bob) if alice_registers else (self.bob,):
            self.wait_for(lambda: self.registered(phone.name), 15,
                          "%s's registration in /api/v1/sip/registrations" % phone.host)

    def wait_for(self, predicate, timeout, what):
        """Poll `predicate` until it is true (returned) or fail with the server's and phones' logs."""
        return wait_until(self, predicate, what, timeout, lambda: "--- server:\n%s%s" % (
            self.server.log()[-3000:],
            "".join("\n--- %s (baresip stderr and log):\n%s" % (p.host, p.log_tail())
                    for p in self.phones)))

    def wait_heard(self, phone, before, freq, seconds, timeout, what):
        """Wait until `phone` has heard `freq` for `seconds` in a row; the sample index after it."""
        return self.wait_for(lambda: phone.heard_for(before, freq, seconds), timeout, "%s (%s hears %d Hz for %.1f s)"
                             % (what, phone.host, freq, seconds))

    def newest_decoded(self, phone, before):
        """The newest call's audio as the phone heard it, once baresip has written it out."""
        return self.wait_for(lambda: phone.finished_recording(before), 10,
                             "%s's recording of the call" % phone.host)

    def test_call_voicemail_mwi_and_delete_by_phone(self):
        self.start_phones()
        # 1. alice calls bob, bob answers: audio both ways, BYE ends it.
        before_a, before_b = self.alice.recordings(), self.bob.recordings()
        mark_b = self.bob.mark()
        self.alice.command("dial", "102")
        self.bob.wait_event("CALL_INCOMING", 10, mark_b)
        mark_a = self.alice.mark()
        self.bob.command("accept")
        self.alice.wait_event("CALL_ESTABLISHED", 10, mark_a)
        self.wait_heard(self.bob, before_b, 440, 2.0, 15, "alice's tone at bob")
        self.wait_heard(self.alice, before_a, 1200, 2.0, 15, "bob's tone at alice")
        self.alice.command("hangup")
        self.bob.wait_event("CALL_CLOSED", 10, mark_b)
        heard_by_bob, rate_b = self.newest_decoded(self.bob, before_b)
        heard_by_alice, rate_a = self.newest_decoded(self.alice, before_a)
        self.assertGreater(goertzel_power(heard_by_bob[rate_b // 2:], rate_b, 440), 0.5)
        self.assertGreater(goertzel_power(heard_by_alice[rate_a // 2:], rate_a, 1200), 0.5)

        # 2. bob watches message waiting with a SUBSCRIBE client of our own.
        mwi = SubscribeClient(self.lab, "phone2", PHONES["phone2"][2], "102")
        self.addCleanup(mwi.close)
        mwi.subscribe()
        self.wait_for(lambda: mwi.notifies, 5, "the first message-summary NOTIFY")
        self.assertIn("Messages-Waiting: no", mwi.notifies[0])

        # 3. alice calls bob, nobody answers: after the timeout voicemail
        # takes the call; alice's 5 s of tone after the beep are recorded.
        tone_wav(self.tone_a, 440, 60)
        before_a = self.alice.recordings()
        mark_a, mark_b = self.alice.mark(), self.bob.mark()
        self.alice.command("dial", "102")
        self.bob.wait_event("CALL_INCOMING", 10, mark_b)
        self.alice.wait_event("CALL_ESTABLISHED", 15, mark_a)
        # The beep (1 kHz, 400 ms) ends the greeting; recording starts after it.
        self.wait_heard(self.alice, before_a, 1000, 0.25, 30, "the beep before the recording")
        time.sleep(5)       # audio: the 5 s of alice's tone that the test measures below
        self.alice.command("hangup")
        self.alice.wait_event("CALL_CLOSED", 10, mark_a)
        wavs = self.wait_for(lambda: voicemail_wavs(self.lab, "bob", "bob-pw"), 10,
                             "the voicemail in bob's mailbox (POP3)")
        self.assertEqual(len(wavs), 1)
        samples, rate = wav_samples(wavs[0][1])
        self.assertEqual(rate, 8000)
        seconds = len(samples) / rate
        self.assertTrue(4.0 <= seconds <= 6.0, "the recording lasts %.2f s, not about 5" % seconds)
        self.assertGreater(goertzel_power(samples[800:-800], rate, 440), 0.5)
        self.wait_for(lambda: any("Messages-Waiting: yes" in n for n in mwi.notifies), 5,
                      "a message-waiting NOTIFY")

        # 4. bob calls voicemail, enters his PIN, hears the message, deletes it (7).
        before_b = self.bob.recordings()
        mark_b = self.bob.mark()
        self.bob.command("dial", "400")
        self.bob.wait_event("CALL_ESTABLISHED", 10, mark_b)
        # The menu asks for the PIN: bob hears the prompt before he types.
        self.wait_for(lambda: any(abs(x) > 1000 for x in self.bob.hearing(before_b)[0]), 15,
                      "the PIN prompt at bob")
        self.bob.dtmf("2345#")
        # Logged in: the menu plays alice's message (her 440 Hz tone).
        self.wait_heard(self.bob, before_b, 440, 1.0, 15, "alice's message after the PIN")
        self.bob.dtmf("7")
        self.wait_for(lambda: not voicemail_wavs(self.lab, "bob", "bob-pw"), 10,
                      "the message's deletion")
        self.wait_for(lambda: "Messages-Waiting: no" in mwi.notifies[-1], 5, "the all-clear NOTIFY")
        self.bob.command("hangup")
        self.bob.wait_event("CALL_CLOSED", 10, mark_b)
        heard, rate = self.newest_decoded(self.bob, before_b)
        half = rate // 2
        best = max(goertzel_power(heard[i:i + half], rate, 440)
                   for i in range(0, max(1, len(heard) - half), half // 2))
        self.assertGreater(best, 0.5, "bob did not hear alice's message on the phone")

    def test_a_voicemail_read_over_imap_drops_message_waiting(self):
        """SPEC 17: \\Seen over IMAP is heard for the phone (message waiting drops)."""
        self.start_phones()
        mwi = SubscribeClient(self.lab, "phone2", PHONES["phone2"][2], "102")
        self.addCleanup(mwi.close)
        mwi.subscribe()
        self.wait_for(lambda: mwi.notifies, 5, "the first message-summary NOTIFY")
        # alice calls bob, nobody answers: voicemail takes a few seconds of her tone.
        before_a = self.alice.recordings()
        mark_a, mark_b = self.alice.mark(), self.bob.mark()
        self.alice.command("dial", "102")
        self.bob.wait_event("CALL_INCOMING", 10, mark_b)
        self.alice.wait_event("CALL_ESTABLISHED", 15, mark_a)
        self.wait_heard(self.alice, before_a, 1000, 0.25, 30, "the beep before the recording")
        time.sleep(2)       # audio: what voicemail records
        self.alice.command("hangup")
        self.alice.wait_event("CALL_CLOSED", 10, mark_a)
        self.wait_for(lambda: any("Messages-Waiting: yes" in n for n in mwi.notifies), 10,
                      "a message-waiting NOTIFY")
        seen_before = len(mwi.notifies)
        # bob reads it in his mail program: IMAP over TLS, verified against the server's CA.
        box = imap_in(self.lab, "phone2", self.server.ca_file, "bob", "bob-pw")
        self.addCleanup(box.logout)
        box.select("INBOX")
        typ, data = box.search(None, "UNSEEN")
        self.assertEqual((typ, len(data[0].split())), ("OK", 1), data)
        typ, data = box.fetch(data[0], "(BODY[HEADER.FIELDS (X-ALLWORX-VOICEMAIL)])")
        self.assertIn(b"X-Allworx-Voicemail: yes", data[0][1])     # a FETCH of BODY[...] sets \\Seen
        self.wait_for(lambda: any("Messages-Waiting: no" in n for n in mwi.notifies[seen_before:]), 5,
                      "message waiting dropping after the voicemail was read over IMAP")

    def test_tcp_phone_and_busy_goes_to_voicemail(self):
        self.start_phones(alice_transport="tcp")
        self.wait_for(lambda: self.registered("alice", "transport=tcp"), 5,
                      "alice's TCP registration in /api/v1/sip/registrations")
        # bob (UDP) calls alice (TCP): the INVITE and bob's BYE reach her over TCP.
        mark_a, mark_b = self.alice.mark(), self.bob.mark()
        self.bob.command("dial", "alice")
        self.alice.wait_event("CALL_INCOMING", 10, mark_a)
        self.alice.command("accept")
        self.bob.wait_event("CALL_ESTABLISHED", 10, mark_b)
        self.bob.command("hangup")
        self.alice.wait_event("CALL_CLOSED", 10, mark_a)
        # alice rejects the next call: busy, so voicemail answers bob at
        # once, well before the 4 s of voicemail_timeout.
        mark_a, mark_b = self.alice.mark(), self.bob.mark()
        dialled = time.monotonic()
        self.bob.command("dial", "101")
        self.alice.wait_event("CALL_INCOMING", 10, mark_a)
        self.alice.command("hangup")
        self.bob.wait_event("CALL_ESTABLISHED", 10, mark_b)
        answered_after = time.monotonic() - dialled
        calls = self.api("/sip/calls")
        self.assertEqual([(c["callee"], c["state"]) for c in calls], [("101", "voicemail")], calls)
        self.assertLess(answered_after, 3.0, "voicemail answered only after the ringing timeout, "
                        "not on alice's busy answer")
        self.bob.command("hangup")
        self.bob.wait_event("CALL_CLOSED", 10, mark_b)
        self.assertEqual(self.server.log().count("Traceback"), 0, self.server.log()[-3000:])

    def test_probes_are_answered_alike_and_an_unregistered_phone_answers_the_challenge(self):
        from allworx.tests.sip.test_enumeration import normalized, svwar_request
        self.start_phones(alice_registers=False)
        self.assertFalse(self.registered("alice"))
        # svwar's question from alice's host (not a registered phone's address):
        # an extension that exists and one that does not get the same answer.
        ip = PHONES["phone1"][2]
        probe = socket_in_ns(self.lab.ns("phone1"), kind=socket.SOCK_DGRAM)
        self.addCleanup(probe.close)
        probe.bind((ip, 5071))
        probe.settimeout(5)
        answers = {}
        for n, ext in enumerate(("102", "999")):
            probe.sendto(svwar_request("INVITE", ext, host=SERVER_IP, source=(ip, 5071), n=n),
                         (SERVER_IP, 5060))
            answers[ext] = normalized(probe.recvfrom(65535)[0], ext)
        self.assertTrue(answers["102"].startswith("SIP/2.0 407 "), answers["102"])
        self.assertEqual(answers["102"], answers["999"])
        # alice's phone never registered: its INVITE is challenged, baresip
        # answers with digest, and bob's phone rings.
        mark_a, mark_b = self.alice.mark(), self.bob.mark()
        self.alice.command("dial", "102")
        self.bob.wait_event("CALL_INCOMING", 10, mark_b)
        self.bob.command("accept")
        self.alice.wait_event("CALL_ESTABLISHED", 10, mark_a)
        self.alice.command("hangup")
        self.bob.wait_event("CALL_CLOSED", 10, mark_b)
        self.assertEqual(self.server.log().count("Traceback"), 0, self.server.log()[-3000:])
