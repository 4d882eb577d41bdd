"""
Integration tests of mail authentication and spam (SPEC 18) in the virtual
office (lab prefix `awu`): the real server (`twistd allworx`, `[mail] dnsbl =
dnsbl.internet.example`) in its namespace, swaks on the internet host sending
to the office's WAN address, messages written (and DKIM-signed for
internet.example) by `allworx.lab.mailsender`, the ISP's DNS publishing the
senders' SPF/DKIM/DMARC records and the lab's blocklist, Python's imaplib on a
LAN PC reading the Junk folder. They need root, swaks, dig and curl; without
them they fail and say why.

The senders (`allworx.lab.topology`): internet.example (SPF ip4:198.51.100.10,
DKIM selectors lab and lab-ed25519, DMARC p=reject), bank.example (the
forger's victim: SPF allows no lab address, p=reject), promo.example (the
same with p=quarantine), and 198.51.100.66, listed in dnsbl.internet.example.
"""

import email
import email.policy
import json
import os
import re
import sys

import dkim
from twisted.trial import unittest

from allworx.lab import mailsender
from allworx.lab.topology import (
    DNSBL_REASON,
    DNSBL_ZONE,
    FORGED_DOMAIN,
    INET_IP,
    ISP_WAN_IP,
    LISTED_IP,
    MAIL_DOMAIN,
    QUARANTINE_DOMAIN,
)
from allworx.tests.confs import MINIMAL
from allworx.tests.lab.fixtures import client_report, start_lab, wait_until
from allworx.tests.lab.server import LabServer

PREFIX = "awu"
SERVER_LAN = "192.168.2.254"
WAN_IP = "203.0.113.2"
PC1_IP = "192.168.2.10"
PASSWORD = "admin-demo"
# The server's authserv-id: hostname.DOMAIN of MINIMAL.
AUTHSERV_ID = "allworx.example.com"
HELO = "mail." + MAIL_DOMAIN

CONF = MINIMAL + "\n[mail]\ndnsbl = %s\n" % DNSBL_ZONE

# Reads the header of every message in one of bob's folders over IMAPS.
IMAP_HEADERS = r"""
import imaplib, json, ssl, sys
ctx = ssl._create_unverified_context()      # the server's own CA; not what is tested here
M = imaplib.IMAP4_SSL(sys.argv[1], 993, ssl_context=ctx, timeout=20)
M.login(sys.argv[2], sys.argv[3])
typ, data = M.select('"%s"' % sys.argv[4], readonly=True)
if typ != "OK":
    print(json.dumps({"error": [typ, [d.decode() for d in data if d]]}))
    sys.exit(0)
headers = []
typ, data = M.fetch("1:*", "(BODY.PEEK[HEADER])") if int(data[0]) else ("OK", [])
for item in data:
    if isinstance(item, tuple):
        headers.append(item[1].decode("utf-8", "replace"))
M.logout()
print(json.dumps({"headers": headers}))
"""

# A message of an obvious spammer that none of the checks reject outright: its
# envelope and From are internet.example's (SPF and DMARC pass), its content
# hits several rules (capitals and exclamation marks in the Subject, a display
# name showing another address, HTML only, a link to a bare address, a link
# shortener, a link whose text names another site) for a score between
# spam_threshold (5) and spam_reject (15).
SPAM_HTML = (
    "<html><body><p>Dear customer, you have been selected.</p>"
    '<p><a href="http://198.51.100.66/claim">https://www.bank.example/secure</a></p>'
    '<p>Or here: <a href="https://bit.ly/3xYzAbc">claim now</a></p></body></html>')


def dig_txt(output):
    """The TXT values of `dig +short` output, each record's strings joined."""
    return ["".join(re.findall(r'"((?:[^"\\]|\\.)*)"', line))
            for line in output.splitlines() if line.strip()]


class MailAuthLabTests(unittest.TestCase):
    """Mail from the lab's internet to the office: authenticated, refused, or filed in Junk."""

    SERVICES = ("network", "firewall", "dns", "mail", "smtp", "imap")

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("swaks", "dig", "curl"))
        self.lab.run("pc1", ["ip", "addr", "replace", PC1_IP + "/24", "dev", "eth0"])
        self.lab.run("pc1", ["ip", "route", "replace", "default", "via", SERVER_LAN])
        self.server = LabServer(self.lab, CONF)
        self.addCleanup(self.server.stop)
        self.server.start(timeout=40)
        self.server.wait_services(self.SERVICES, timeout=30)
        self.sent = 0

    # ------------------------------------------------------------ helpers

    def log_tail(self):
        return "\nserver log:\n" + self.server.log()[-4000:]

    def message(self, sender, to, subject, signed=False, **kw):
        data = mailsender.message(sender, to, subject, **kw)
        return self.lab.mail_keys.sign(data) if signed else data

    def send(self, data, sender, to, source=INET_IP, helo=HELO, quit_after=None):
        """swaks from `source` (an address of inet) to the office's WAN port 25 with
        `data` as the message: (transcript, report for assertion messages)."""
        self.sent += 1
        path = os.path.join(self.lab.state_dir, "message-%d.eml" % self.sent)
        argv = ["swaks", "--server", WAN_IP, "--local-interface", source, "--helo", helo,
                "--from", sender, "--to", to, "--timeout", "30"]
        if quit_after:
            argv += ["--quit-after", quit_after]
        else:
            argv += ["--data", mailsender.write_message(path, data)]
        done = self.lab.run("inet", argv, check=False, timeout=60)
        return done.stdout + done.stderr, client_report(done) + self.log_tail()

    def folder(self, user, folder=""):
        """The messages (parsed) in a folder of `user`'s Maildir ("" is INBOX)."""
        base = os.path.join(self.server.data_dir, "mail", user)
        if folder:
            base = os.path.join(base, "." + folder)
        found = []
        for sub in ("new", "cur"):
            directory = os.path.join(base, sub)
            for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
                with open(os.path.join(directory, name), "rb") as f:
                    found.append(f.read())
        return found

    def find(self, user, subject, folder=""):
        """The messages of `user`'s `folder` whose Subject is `subject` (raw bytes)."""
        return [raw for raw in self.folder(user, folder)
                if email.message_from_bytes(raw, policy=email.policy.compat32)["Subject"] == subject]

    def wait_delivered(self, user, subject, folder=""):
        return wait_until(self, lambda: self.find(user, subject, folder),
                          "delivery of %r to %s's %s" % (subject, user, folder or "INBOX"),
                          30, self.log_tail)[0]

    def our_results(self, raw):
        """Values of the Authentication-Results headers claiming our authserv-id."""
        parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
        values = [re.sub(r"\s+", " ", v).strip() for v in parsed.get_all("Authentication-Results", [])]
        return [v for v in values if v.split(";")[0].strip().lower() == AUTHSERV_ID], values

    def dig(self, host, name, rtype, server):
        done = self.lab.run(host, ["dig", "+short", "+time=3", "+tries=1", "@" + server,
                                   name, rtype], check=False, timeout=20)
        self.assertEqual(done.returncode, 0, client_report(done))
        return done.stdout

    def dnsfunc(self, name, timeout=5):
        """dkimpy's DNS: dig in the server's namespace at the server's own resolver."""
        found = dig_txt(self.dig("server", name.decode().rstrip("."), "TXT", "127.0.0.1"))
        return found[0].encode() if found else None

    def assertRefused(self, code, sent, *words):
        transcript, report = sent
        self.assertRegex(transcript, r"<\*\* %s " % re.escape(code), report)
        refusal = [l for l in transcript.splitlines() if l.startswith("<** ")]
        for word in words:
            self.assertIn(word, "\n".join(refusal), report)

    # ------------------------------------------------------------ the lab's side

    def test_the_server_sees_the_internets_mail_records(self):
        """The lab itself: what the inbound checks will ask, through the ISP's DNS and
        through the server's own resolver; the listed address reaches the server."""
        expected = {
            MAIL_DOMAIN: "v=spf1 ip4:%s -all" % INET_IP,
            "_dmarc." + MAIL_DOMAIN: "v=DMARC1; p=reject",
            FORGED_DOMAIN: "v=spf1 a -all",
            "_dmarc." + FORGED_DOMAIN: "v=DMARC1; p=reject",
            "_dmarc." + QUARANTINE_DOMAIN: "v=DMARC1; p=quarantine",
            "66.100.51.198." + DNSBL_ZONE: DNSBL_REASON,
        }
        expected.update(self.lab.mail_keys.records())
        self.assertEqual(len(expected), 8)
        for resolver in (ISP_WAN_IP, "127.0.0.1"):
            for name, value in sorted(expected.items()):
                self.assertEqual(dig_txt(self.dig("server", name, "TXT", resolver)), [value],
                                 "%s TXT at %s" % (name, resolver))
            self.assertEqual(self.dig("server", "66.100.51.198." + DNSBL_ZONE, "A", resolver).split(),
                             ["127.0.0.2"])
            self.assertEqual(self.dig("server", "2.0.0.127." + DNSBL_ZONE, "A", resolver).split(),
                             ["127.0.0.2"])
            self.assertEqual(self.dig("server", "10.100.51.198." + DNSBL_ZONE, "A", resolver), "")
            self.assertEqual(self.dig("server", FORGED_DOMAIN, "A", resolver).split(),
                             ["198.51.100.40"])
        # A signed message verifies against the keys as the server's resolver serves them.
        signed = self.message("news@" + MAIL_DOMAIN, "alice@example.com", "signed", signed=True)
        verifier = dkim.DKIM(signed)
        self.assertTrue(verifier.verify(0, dnsfunc=self.dnsfunc), "RSA signature")
        self.assertTrue(verifier.verify(1, dnsfunc=self.dnsfunc), "ed25519 signature")
        # The listed address is inet's and reaches the office's SMTP.
        done = self.lab.run("inet", ["curl", "-sS", "-m", "5", "--interface", LISTED_IP,
                                     "http://%s/whoami" % INET_IP], check=False, timeout=20)
        self.assertEqual(done.stdout.strip(), LISTED_IP, client_report(done))
        transcript, report = self.send(None, "x@" + MAIL_DOMAIN, "postmaster@example.com",
                                       source=LISTED_IP, quit_after="HELO")
        self.assertIn("<-  220 ", transcript, report)

    # ------------------------------------------------------------ SPEC 18

    def test_forged_sender_is_refused(self):
        """From: the bank, sent by a host its SPF does not name: DMARC p=reject -> 550 5.7.26."""
        forged = self.message("ceo@" + FORGED_DOMAIN, "alice@example.com", "forged transfer")
        self.assertRefused("550 5.7.26", self.send(forged, "ceo@" + FORGED_DOMAIN,
                                                   "alice@example.com"))
        # SPF passes for the envelope's internet.example, but From is not aligned with it.
        forged = self.message("ceo@" + FORGED_DOMAIN, "alice@example.com", "forged, unaligned")
        self.assertRefused("550 5.7.26", self.send(forged, "bounce@" + MAIL_DOMAIN,
                                                   "alice@example.com"))
        self.assertEqual(self.folder("alice"), [])

    def test_mail_security_api_shows_records_and_decisions(self):
        """The admin sees what was refused and why, and the records to publish (API on 8080)."""
        forged = self.message("ceo@" + FORGED_DOMAIN, "alice@example.com", "forged for the log")
        self.assertRefused("550 5.7.26", self.send(forged, "ceo@" + FORGED_DOMAIN,
                                                   "alice@example.com"))
        done = self.lab.run("pc1", ["curl", "-sS", "-m", "10", "-u", "admin:admin-demo"]
                            + self.server.curl_https()
                            + ["https://%s:8080/api/v1/mail/security" % SERVER_LAN],
                            check=False, timeout=30)
        try:
            body = json.loads(done.stdout)
        except ValueError:
            self.fail("GET /api/v1/mail/security: " + client_report(done) + self.log_tail())
        names = {r["name"] for r in body["records"]}
        self.assertTrue({"allworx._domainkey.example.com", "allworx-ed25519._domainkey.example.com",
                         "example.com", "_dmarc.example.com"} <= names, body["records"])
        refused = [d for d in body["decisions"] if d["verdict"] == "refused"
                   and d["sender"] == "ceo@" + FORGED_DOMAIN]
        self.assertTrue(refused, body["decisions"])
        self.assertIn("DMARC", refused[0]["reason"].upper(), refused[0])
        self.assertEqual(refused[0]["client"], INET_IP)
        self.assertIn("alice", body["junk"])
        self.assertEqual(self.folder("alice", "Junk"), [])

    def test_signed_mail_passes_with_one_authentication_results(self):
        good = self.message("news@" + MAIL_DOMAIN, "alice@example.com", "signed news", signed=True)
        transcript, report = self.send(good, "news@" + MAIL_DOMAIN, "alice@example.com")
        self.assertIn("<-  250 2.0.0", transcript, report)
        raw = self.wait_delivered("alice", "signed news")
        ours, every = self.our_results(raw)
        self.assertEqual(len(ours), 1, every)
        self.assertEqual(len(every), 1, every)
        for result in ("spf=pass", "dkim=pass", "dmarc=pass"):
            self.assertIn(result, ours[0].lower(), ours)
        self.assertIn("header.d=" + MAIL_DOMAIN, ours[0], ours)
        self.assertEqual(self.folder("alice", "Junk"), [])
        # Delivered as sent: the signatures still verify in the mailbox.
        self.assertTrue(dkim.verify(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
                                    dnsfunc=self.dnsfunc), raw[:3000])

    def test_a_senders_own_authentication_results_is_removed(self):
        forged = ("Authentication-Results", AUTHSERV_ID + "; dkim=pass header.d=bank.example")
        foreign = ("Authentication-Results", "mx.internet.example; spf=pass")
        good = self.message("news@" + MAIL_DOMAIN, "alice@example.com", "claims a pass",
                            signed=True, headers=[forged, foreign])
        transcript, report = self.send(good, "news@" + MAIL_DOMAIN, "alice@example.com")
        self.assertIn("<-  250 2.0.0", transcript, report)
        raw = self.wait_delivered("alice", "claims a pass")
        ours, every = self.our_results(raw)
        self.assertEqual(len(ours), 1, every)
        self.assertNotIn("bank.example", ours[0], every)
        self.assertIn("spf=pass", ours[0], every)
        # Another host's results are its own business: kept, below ours.
        self.assertEqual(every, [ours[0], "mx.internet.example; spf=pass"])

    def test_listed_client_is_refused_at_rcpt(self):
        transcript, report = self.send(None, "x@" + MAIL_DOMAIN, "alice@example.com",
                                       source=LISTED_IP, quit_after="RCPT")
        self.assertRefused("554 5.7.1", (transcript, report), DNSBL_ZONE, DNSBL_REASON)
        # The postmaster is reachable even from a listed address.
        transcript, report = self.send(None, "x@" + MAIL_DOMAIN, "postmaster@example.com",
                                       source=LISTED_IP, quit_after="RCPT")
        self.assertNotIn("<** ", transcript, report)
        self.assertIn("<-  250 ", transcript, report)
        # An address that is not listed is not refused.
        transcript, report = self.send(None, "x@" + MAIL_DOMAIN, "alice@example.com",
                                       quit_after="RCPT")
        self.assertNotIn("<** ", transcript, report)

    def test_quarantine_policy_files_in_junk(self):
        data = self.message("offers@" + QUARANTINE_DOMAIN, "bob@example.com", "weekly offers")
        transcript, report = self.send(data, "offers@" + QUARANTINE_DOMAIN, "bob@example.com")
        self.assertIn("<-  250 2.0.0", transcript, report)
        raw = self.wait_delivered("bob", "weekly offers", "Junk")
        ours, every = self.our_results(raw)
        self.assertEqual(len(ours), 1, every)
        self.assertIn("dmarc=fail", ours[0].lower(), ours)
        self.assertIn("spf=fail", ours[0].lower(), ours)
        self.assertEqual(self.find("bob", "weekly offers"), [])

    def test_spam_lands_in_junk_seen_over_imap(self):
        data = self.message('"security@bank.example" <winner@%s>' % MAIL_DOMAIN, "bob@example.com",
                            "YOU HAVE WON A PRIZE CLAIM NOW!!!", body="You have won.\n")
        # HTML only: the text part replaced by the spammer's HTML.
        parsed = email.message_from_bytes(data, policy=email.policy.SMTP)
        parsed.set_content(SPAM_HTML, subtype="html")
        data = parsed.as_bytes()
        transcript, report = self.send(data, "winner@" + MAIL_DOMAIN, "bob@example.com")
        self.assertIn("<-  250 2.0.0", transcript, report)
        self.wait_delivered("bob", "YOU HAVE WON A PRIZE CLAIM NOW!!!", "Junk")
        script = os.path.join(self.lab.state_dir, "imap_headers.py")
        with open(script, "w") as f:
            f.write(IMAP_HEADERS)

        def headers(folder):
            done = self.lab.run("pc1", [sys.executable, script, SERVER_LAN, "bob", PASSWORD,
                                        folder], check=False, timeout=60)
            try:
                answer = json.loads(done.stdout)
            except ValueError:
                self.fail("the IMAP client did not answer:\n" + client_report(done))
            self.assertIn("headers", answer, client_report(done))
            return [email.message_from_string(h, policy=email.policy.compat32)
                    for h in answer["headers"]]
        junk = headers("Junk")
        self.assertEqual([m["Subject"] for m in junk], ["YOU HAVE WON A PRIZE CLAIM NOW!!!"])
        status = re.sub(r"\s+", " ", junk[0]["X-Spam-Status"] or "")
        self.assertTrue(status.startswith("Yes"), str(junk[0]))
        self.assertEqual(headers("INBOX"), [])

    def test_executable_attachment_is_refused(self):
        data = self.message("accounts@" + MAIL_DOMAIN, "alice@example.com", "your invoice",
                            signed=True, attachments=[
                                ("invoice.exe", "application/octet-stream",
                                 b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + b"\x00" * 64)])
        self.assertRefused("552", self.send(data, "accounts@" + MAIL_DOMAIN, "alice@example.com"),
                           "invoice.exe")
        self.assertEqual(self.folder("alice"), [])
        self.assertEqual(self.folder("alice", "Junk"), [])
