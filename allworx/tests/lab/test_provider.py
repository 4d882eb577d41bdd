"""
The lab's telephony provider (Kamailio as the ITSP sip.internet.example, in
the `inet` namespace at 198.51.100.20; `allworx.lab.provider`), lab prefix
`awi`: outside phones (baresip, `phones.outside_phone`, each with its own SIP
address in `inet`) register and call each other with audio both ways; a small UA of the
test's own stands in for the office's trunk and checks what the provider
does with digest authentication, the dialled numbers and the caller's From.

The first class runs anywhere (the generated configuration); the second
needs root, baresip and kamailio, and waits on events (baresip's ctrl_tcp
events, SIP answers, what a phone hears), never on fixed sleeps.
"""

import os
import re
import threading

from twisted.trial import unittest

from allworx.lab import demo, provider
from allworx.lab.namespaces import Lab
from allworx.lab.topology import (
    BRANCH_ISP_IP,
    BRANCH_WAN_NET,
    BRANCH_WAN_PREFIX,
    INET_IP,
    ISP_INET_IP,
    ISP_WAN_IP,
    LAPTOP_IP,
    OFFICE_NUMBERS,
    OUTSIDE_PASSWORDS,
    OUTSIDE_PHONES,
    PROVIDER,
    PROVIDER_DOMAIN,
    PROVIDER_IP,
    TRUNK_SECRET,
    TRUNK_USER,
)
from allworx.tests.lab.fixtures import client_report, process_report, start_lab, wait_until
from allworx.lab.tones import goertzel_power, tone_wav
from allworx.tests.lab.phones import outside_phone
from allworx.tests.lab.sipua import ProviderUA, header, offer, wait_registered

PREFIX = "awi"
# The test's stand-in for the office's trunk: a UA in `inet` (its own port).
OFFICE_UA = (INET_IP, 5080)


class ProviderConfigTests(unittest.TestCase):
    """The provider's kamailio.cfg and accounts, without running it."""

    def setUp(self):
        self.lab = Lab(prefix="awi", state_root="/run/x")
        self.text = self.lab.provider_config(modules="/mods")

    def test_listens_on_its_own_address_with_digest(self):
        for line in ('listen=udp:198.51.100.20:5060', 'listen=tcp:198.51.100.20:5060',
                     'alias="sip.internet.example"', 'mpath="/mods"',
                     'modparam("auth_db", "db_url", "text:///run/x/awi/provider/db")',
                     '\t\tproxy_challenge("sip.internet.example", "1");',
                     '\t\twww_challenge("sip.internet.example", "1");'):
            self.assertIn(line, self.text.splitlines())
        self.assertNotIn("{{", self.text)
        # Media end to end: nothing touches the SDP.
        self.assertNotIn("rtpproxy", self.text)
        self.assertNotIn("rtpengine", self.text)

    def test_numbers_reach_their_accounts(self):
        self.assertIn('\tif ($rU == "+15551230000" || $rU == "15551230000" '
                      '|| $rU == "5551230000") {\n\t\t$var(aor) = "office";\n'
                      '\t\t$var(did) = "+15551230000";', self.text)
        self.assertIn('$rU == "5557770002" || $rU == "bob") {\n\t\t$var(aor) = "bob";\n\t}',
                      self.text)
        self.assertIn('uac_replace_from("Alice", "sip:+15557770001@sip.internet.example");',
                      self.text)

    def test_accounts_table(self):
        table = provider.subscriber_table(provider.default_accounts())
        rows = table.splitlines()
        self.assertTrue(rows[0].startswith("id(int,auto) username(string) domain(string) "
                                           "password(string)"))
        self.assertIn("1:office:sip.internet.example:%s::" % TRUNK_SECRET, rows)
        self.assertIn("2:alice:sip.internet.example:%s::" % OUTSIDE_PASSWORDS["alice"], rows)
        escaped = provider.subscriber_table([provider.ProviderAccount("u", "a:b\\c")])
        self.assertIn("1:u:sip.internet.example:a\\:b\\\\c::", escaped.splitlines())

    def test_dialled_forms(self):
        self.assertEqual(provider.dialled_forms("+15557770001"),
                         ["+15557770001", "15557770001", "5557770001"])
        self.assertEqual(provider.dialled_forms("+442071234567"), ["+442071234567"])

    def test_outside_phone_for_a_person(self):
        lab = Lab(prefix="awi", state_root=self.mktemp())
        directory = lab.outside_phone_dir("bob")
        with open(os.path.join(directory, "accounts")) as f:
            self.assertEqual(f.read(), "<sip:bob@sip.internet.example>;auth_pass=%s;regint=600;"
                             "answermode=manual;audio_codecs=PCMU\n" % OUTSIDE_PASSWORDS["bob"])
        with open(os.path.join(directory, "config")) as f:
            config = f.read().splitlines()
        self.assertIn("sip_listen 198.51.100.32:5060", config)
        self.assertIn("snd_path " + os.path.join(directory, "snd"), config)
        banner = demo.phone_banner(lab, "tap.conf")
        for text in ("sip.internet.example (198.51.100.20, Kamailio)",
                     "username office, secret %s," % TRUNK_SECRET,
                     "numbers +15551230000 +15551230001 (a [trunk] in tap.conf registers it)",
                     "alice  +15557770001  password alice-outside-pw",
                     "allworx lab exec inet baresip -f " + directory):
            self.assertIn(text, banner)

    def test_a_string_that_would_break_the_config_is_refused(self):
        self.assertRaises(ValueError, provider.caller_block,
                          [provider.ProviderAccount('x"y', "pw", ("+15550000000",))])


class ProviderLabTests(unittest.TestCase):
    """The provider in a real lab: accounts, digest, numbers, calls between outside phones."""

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("baresip", "kamailio"))
        self.work = os.path.join(self.lab.state_dir, "phones")
        os.makedirs(self.work, exist_ok=True)
        self.phones = []

    def context(self):
        return "%s%s" % (process_report(self.lab, PROVIDER), "".join(
            "\n--- %s (baresip):\n%s" % (p.name, p.log_tail()) for p in self.phones))

    def wait_for(self, predicate, timeout, what):
        return wait_until(self, predicate, what, timeout, self.context)

    def ua(self, address, user=None, password=None):
        ua = ProviderUA(self.lab, "inet", address, user, password)
        self.addCleanup(ua.close)
        return ua

    def outside_phone(self, user, freq):
        """alice or bob, sending a tone of `freq`, registered at the provider."""
        tone = os.path.join(self.work, "%s-%d.wav" % (user, freq))
        tone_wav(tone, freq, 30)
        phone = outside_phone(self.lab, user, self.work, tone)
        self.addCleanup(phone.stop)
        self.phones.append(phone)
        phone.start()
        wait_registered(self, self.lab, user, self.context)
        return phone

    def test_provider_runs_beside_the_internet_host_and_the_isp_is_unchanged(self):
        self.assertEqual(self.lab.problems(), [])
        ss = self.lab.run("inet", ["ss", "-Hlntu"])
        for proto in ("udp", "tcp"):
            self.assertRegex(ss.stdout, r"(?m)^%s .* %s:5060 " % (proto, re.escape(PROVIDER_IP)),
                             client_report(ss))
        # The ISP's side is as it was: its own two networks, no route or
        # NAT rule of the provider's; the office reaches the provider
        # through its own WAN and the ISP's forwarding only.
        routes = self.lab.run("isp", ["ip", "-4", "route"])
        # (Beside them: the branch office's segment and the laptop's own link.)
        self.assertEqual(sorted(line.split()[0] for line in routes.stdout.splitlines()),
                         sorted(["198.51.100.0/24", "203.0.113.0/24", BRANCH_WAN_NET,
                                 LAPTOP_IP]), client_report(routes))
        addrs = self.lab.run("isp", ["ip", "-4", "-br", "addr", "show", "scope", "global"])
        found = sorted(a for line in addrs.stdout.splitlines() for a in line.split()[2:])
        self.assertEqual(found, sorted([ISP_INET_IP + "/24", ISP_WAN_IP + "/24",
                                        "%s/%d" % (BRANCH_ISP_IP, BRANCH_WAN_PREFIX)]),
                         client_report(addrs))
        dig = self.lab.run("inet", ["dig", "+short", "+time=2", "+tries=1", "@" + ISP_WAN_IP,
                                    PROVIDER_DOMAIN], check=False)
        self.assertEqual(dig.stdout.strip(), PROVIDER_IP, client_report(dig))

    def test_digest_numbers_and_the_office_trunk(self):
        office = self.ua(OFFICE_UA, TRUNK_USER, TRUNK_SECRET)
        anonymous = self.ua((INET_IP, 5082))
        outside = "sip:%s@%s" % (OUTSIDE_PHONES["bob"], PROVIDER_DOMAIN)
        # Nothing without credentials: 407 for a call, 401 for a registration.
        answer = anonymous.request("INVITE", outside, body=offer(INET_IP), authenticate=False)
        self.assertTrue(answer.startswith("SIP/2.0 407 "), answer)
        self.assertIn('realm="%s"' % PROVIDER_DOMAIN, header(answer, "Proxy-Authenticate"))
        wrong = self.ua((INET_IP, 5083), TRUNK_USER, "not-the-secret")
        answer = wrong.register()
        self.assertTrue(answer.startswith("SIP/2.0 401 "), answer)
        # The trunk registers; numbers nobody has are 404, an account not
        # registered 480, whichever form the number is dialled in.
        answer = office.register()
        self.assertTrue(answer.startswith("SIP/2.0 200 "), answer + self.context())
        self.assertIn("expires=300", answer)
        for number, code in (("+15559990000", 404), ("5559990000", 404),
                             (OUTSIDE_PHONES["bob"], 480), ("5557770002", 480)):
            answer = office.request("INVITE", "sip:%s@%s" % (number, PROVIDER_DOMAIN),
                                    body=offer(INET_IP))
            self.assertTrue(answer.startswith("SIP/2.0 %d " % code), (number, answer))
        # alice calls the office's second number in national form: the
        # trunk's contact gets the DID (E.164) as the Request-URI user and
        # alice's number with her name in From; the office's busy reaches her.
        alice = self.outside_phone("alice", 440)
        mark = alice.mark()
        alice.command("dial", OFFICE_NUMBERS[1][2:])
        invite = office.receive(10, lambda t: t.startswith("INVITE "))
        self.assertIsNotNone(invite, "no INVITE at the trunk\n" + self.context())
        office.reply(invite, 180, "Ringing")
        self.assertRegex(invite.split("\r\n")[0],
                         r"^INVITE sip:%s@%s:%d SIP/2.0$" % (re.escape(OFFICE_NUMBERS[1]),
                                                             re.escape(OFFICE_UA[0]), OFFICE_UA[1]))
        self.assertRegex(header(invite, "From"),
                         r'^"?Alice"? <sip:%s@%s>;tag=' % (re.escape(OUTSIDE_PHONES["alice"]),
                                                         re.escape(PROVIDER_DOMAIN)))
        self.assertIn("Record-Route: <sip:%s;" % PROVIDER_IP, invite)
        self.assertNotIn("Proxy-Authorization", invite)
        # Media end to end: alice's SDP as she sent it (the inet host's
        # address, see phones.py, and one of her RTP ports), not the provider's.
        self.assertIn("\r\nc=IN IP4 %s\r\n" % INET_IP, invite)
        port = int(re.search(r"(?m)^m=audio (\d+) ", invite).group(1))
        self.assertTrue(31000 <= port <= 31099, invite)
        office.reply(invite, 486, "Busy Here")
        closed = alice.wait_event("CALL_CLOSED", 10, mark)
        self.assertIn("486", closed.get("param", ""), closed)
        # The office calls alice presenting its second number in P-Asserted-
        # Identity: the provider keeps its From as sent.
        mark = alice.mark()
        answer = {}

        def call():
            answer["text"] = office.request(
                "INVITE", "sip:%s@%s" % (OUTSIDE_PHONES["alice"], PROVIDER_DOMAIN),
                extra=["P-Asserted-Identity: <sip:%s@%s>" % (OFFICE_NUMBERS[1],
                                                              PROVIDER_DOMAIN)],
                body=offer(INET_IP))
        caller = threading.Thread(target=call)
        caller.start()
        incoming = alice.wait_event("CALL_INCOMING", 10, mark)
        alice.command("hangup")
        caller.join(15)
        self.assertIn("sip:office@%s" % PROVIDER_DOMAIN, incoming.get("peeruri", ""), incoming)
        self.assertTrue(answer.get("text", "").startswith("SIP/2.0 486 "), answer)

    def test_outside_phones_call_each_other(self):
        alice = self.outside_phone("alice", 440)
        bob = self.outside_phone("bob", 1200)
        before_a, before_b = alice.recordings(), bob.recordings()
        mark_a, mark_b = alice.mark(), bob.mark()
        alice.command("dial", OUTSIDE_PHONES["bob"])
        incoming = bob.wait_event("CALL_INCOMING", 10, mark_b)
        self.assertIn("sip:%s@%s" % (OUTSIDE_PHONES["alice"], PROVIDER_DOMAIN),
                      incoming.get("peeruri", ""), incoming)
        bob.command("accept")
        alice.wait_event("CALL_ESTABLISHED", 10, mark_a)
        self.wait_for(lambda: bob.heard_for(before_b, 440, 2.0), 15,
                      "alice's tone (440 Hz, 2 s) at bob")
        self.wait_for(lambda: alice.heard_for(before_a, 1200, 2.0), 15,
                      "bob's tone (1200 Hz, 2 s) at alice")
        # BYE goes through the provider (Record-Route) and ends bob's side.
        alice.command("hangup")
        bob.wait_event("CALL_CLOSED", 10, mark_b)
        self.wait_for(lambda: "in-dialog BYE" in self.lab.log_text(PROVIDER, 100000), 5,
                      "the BYE through the provider")
        heard, rate = self.wait_for(lambda: bob.finished_recording(before_b), 10,
                                    "bob's recording of the call")
        self.assertGreater(goertzel_power(heard[rate // 2:], rate, 440), 0.5)
        log = self.lab.log_text(PROVIDER, 100000)
        self.assertIn("INVITE from alice", log)
        self.assertNotIn("ERROR", log, self.context())
