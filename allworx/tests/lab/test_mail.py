# -*- test-case-name: allworx.tests.lab.test_mail -*-
"""
Integration tests of mail in the virtual office (lab prefix `awm`): the real
server (`twistd allworx`) in its namespace, swaks and poplib on a LAN PC, swaks
on the internet host, the internet host's SMTP sink (reached through the ISP's
MX record) and POP3 server (fetched from). They need root; without it, or
without swaks and its TLS, they fail and say why.
"""

import json
import os
import sys
import time

from twisted.trial import unittest

from allworx.tests.confs import MINIMAL, with_sections
from allworx.tests.lab.fixtures import client_report, start_lab, wait_until
from allworx.tests.lab.server import LabServer

PREFIX = "awm"
SERVER_LAN = "192.168.2.254"
WAN_IP = "203.0.113.2"
PC1_IP = "192.168.2.10"

EXTRA = """
[user admin]
password = {pw}
pop3_fetch = pop3://office:officepw@198.51.100.10

[user carol]
password = {pw}
pop3_fetch = pop3://remote:remotepw@198.51.100.10

[alias alice]
to = alice alice@internet.example

[alias team]
to = sales carol
"""

# Sends N messages over one SMTP connection; prints each acknowledged number.
BLASTER = r"""
import smtplib, sys
n = int(sys.argv[2])
s = smtplib.SMTP(sys.argv[1], 25, timeout=10)
s.ehlo("pc1.example.com")
for i in range(n):
    msg = "From: pc1@example.com\r\nTo: bob@example.com\r\nSubject: burst %d\r\n\r\nmessage %d\r\n" % (i, i)
    try:
        s.sendmail("pc1@example.com", ["bob@example.com"], msg)
    except Exception as e:
        print("ERROR", e, flush=True)
        break
    print(i, flush=True)
"""

POP_READER = r"""
import json, poplib, ssl, sys
mode = sys.argv[4] if len(sys.argv) > 4 else "plain"
context = ssl._create_unverified_context()      # the server's certificate is self-signed
if mode == "pop3s":
    p = poplib.POP3_SSL(sys.argv[1], 995, timeout=10, context=context)
else:
    p = poplib.POP3(sys.argv[1], 110, timeout=10)
    if mode == "stls":
        p.stls(context=context)
p.user(sys.argv[2]); p.pass_(sys.argv[3])
uids = [line.split()[1].decode() for line in p.uidl()[1]]
subjects = []
for i in range(len(uids)):
    lines = p.retr(i + 1)[1]
    subjects.append(next((l.decode()[9:] for l in lines if l.startswith(b"Subject: ")), ""))
p.quit()
print(json.dumps({"uids": uids, "subjects": subjects}))
"""


def conf():
    from allworx.tests.confs import PW_HASH
    base = MINIMAL.replace("[dns]\nprimary = 203.0.113.1\n",
                           "[dns]\nprimary = 203.0.113.1\n\n[mail]\nfetch_interval = 10\n")
    return with_sections(EXTRA.format(pw=PW_HASH), base)


class MailLabTests(unittest.TestCase):
    """The office's mail seen by its users' real clients."""

    SERVICES = ("network", "firewall", "mail", "smtp", "submission", "pop3", "fetch")

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("swaks",))
        self.lab.run("pc1", ["ip", "addr", "replace", PC1_IP + "/24", "dev", "eth0"])
        self.lab.run("pc1", ["ip", "route", "replace", "default", "via", SERVER_LAN])
        self.server = None

    def tearDown(self):
        if self.server is not None:
            self.server.stop()

    def require_swaks_features(self):
        """Fail unless swaks can do STARTTLS and AUTH PLAIN (Perl modules of their own)."""
        done = self.lab.run("inet", ["swaks", "--support"], check=False)
        said = done.stdout + done.stderr
        lacking = [line for line in said.splitlines()
                   if line.startswith("***") and ("TLS" in line or "Basic AUTH" in line)]
        if lacking or "=== TLS supported" not in said:
            self.fail("swaks cannot do what these tests use (TLS needs the Debian package "
                      "libnet-ssleay-perl):\n" + client_report(done))

    def start_server(self):
        """Start the server; returns once the admin API reports mail's services up."""
        if self.server is None:
            self.server = LabServer(self.lab, conf())
        self.server.start(timeout=40)
        self.server.wait_services(self.SERVICES, timeout=30)

    def swaks(self, host, server, to, sender="pc1@example.com", subject="test"):
        """swaks in a lab host: (its transcript, stdout and stderr together; its report)."""
        done = self.lab.run(host, ["swaks", "--server", server, "--to", to, "--from", sender,
                                   "--h-Subject", subject, "--timeout", "20"],
                            check=False, timeout=40)
        return done.stdout + done.stderr, client_report(done)

    def assertSent(self, expected, sent):
        """swaks' transcript of `sent` (a `swaks()` result) shows `expected`."""
        transcript, report = sent
        self.assertIn(expected, transcript, report)

    def pop_read(self, *args, timeout=30):
        """POP_READER on pc1 against the server: its JSON answer."""
        script = os.path.join(self.lab.state_dir, "pop_reader.py")
        with open(script, "w") as f:
            f.write(POP_READER)
        done = self.lab.run("pc1", [sys.executable, script, SERVER_LAN] + list(args),
                            check=False, timeout=timeout)
        try:
            return json.loads(done.stdout)
        except ValueError:
            self.fail("the POP3 reader did not answer:\n" + client_report(done))

    def mailbox(self, user):
        """Subjects of the messages in a user's Maildir on the server."""
        out = []
        base = os.path.join(self.server.data_dir, "mail", user)
        for sub in ("new", "cur"):
            try:
                names = os.listdir(os.path.join(base, sub))
            except FileNotFoundError:
                continue
            for name in names:
                with open(os.path.join(base, sub, name), "rb") as f:
                    for line in f.read().split(b"\n"):
                        if line.startswith(b"Subject: "):
                            out.append(line[9:].decode())
                            break
        return sorted(out)

    def wait(self, predicate, what, timeout=30):
        wait_until(self, predicate, what, timeout,
                   lambda: "server log:\n" + self.server.log()[-4000:])

    def test_send_receive_fetch(self):
        self.require_swaks_features()
        # Fetch sources at the ISP, before the server's first poll.
        self.lab.set_pop3_account("office", "officepw")
        self.lab.add_pop3_message("office", b"From: x@internet.example\r\nTo: Bob <bob@example.com>, "
                                            b"team@example.com\r\nSubject: multidrop\r\n\r\nhi\r\n")
        self.lab.add_pop3_message("office", b"From: x@internet.example\r\nTo: someone@else.example\r\n"
                                            b"Subject: unaddressed\r\n\r\nhi\r\n")
        self.lab.add_pop3_message("remote", b"From: x@internet.example\r\nTo: whoever@else.example\r\n"
                                            b"Subject: for carol\r\n\r\nhi\r\n")
        self.start_server()

        # From a LAN PC: a local user, a group, a nested alias, an internet address.
        self.assertSent("250 2.0.0", self.swaks("pc1", SERVER_LAN, "bob@example.com", subject="to bob"))
        self.assertSent("250 2.0.0", self.swaks("pc1", SERVER_LAN, "sales@example.com", subject="to sales"))
        self.assertSent("250 2.0.0", self.swaks("pc1", SERVER_LAN, "team@example.com", subject="to team"))
        self.assertSent("250 2.0.0", self.swaks("pc1", SERVER_LAN, "friend@internet.example",
                                                subject="to the internet"))
        self.assertSent("550 5.1.1", self.swaks("pc1", SERVER_LAN, "nobody@example.com"))

        # From the internet: local mail accepted, relaying refused.
        self.assertSent("250 2.0.0", self.swaks("inet", WAN_IP, "alice@example.com",
                                                sender="x@internet.example", subject="from outside"))
        self.assertSent("550 5.7.1", self.swaks("inet", WAN_IP, "victim@else.example",
                                                sender="spammer@internet.example"))
        # Submission from the road: STARTTLS, then AUTH, then relaying is allowed.
        done = self.lab.run("inet", ["swaks", "--server", WAN_IP, "--port", "587", "-tls",
                                     "--auth", "PLAIN", "--auth-user", "bob",
                                     "--auth-password", "admin-demo", "--from", "bob@example.com",
                                     "--to", "pen-pal@internet.example", "--h-Subject", "submitted",
                                     "--timeout", "20"], check=False, timeout=40)
        self.assertIn("235 2.7.0", done.stdout, client_report(done))
        self.assertIn("250 2.0.0", done.stdout, client_report(done))
        done = self.lab.run("inet", ["swaks", "--server", WAN_IP, "--port", "587", "-tls",
                                     "--from", "bob@example.com", "--to", "pen-pal@internet.example",
                                     "--timeout", "20"], check=False, timeout=40)
        self.assertIn("530 5.7.0", done.stdout, client_report(done))

        # The internet address arrives at the internet host's mail server through
        # the ISP's MX record; alice's push alias sends her copy out too (guide 9.2).
        def outbound():
            return sorted((m.recipient, m.data.split(b"Subject: ")[1].split(b"\n")[0].strip().decode())
                          for m in self.lab.smtp_received())
        self.wait(lambda: len(outbound()) >= 3, "delivery to the internet host", timeout=30)
        self.assertIn(("friend@internet.example", "to the internet"), outbound())
        self.assertIn(("pen-pal@internet.example", "submitted"), outbound())
        self.assertIn(("alice@internet.example", "from outside"), outbound())
        self.assertNotIn("victim@else.example", [r for r, _ in outbound()])
        self.assertIn("route for internet.example: 198.51.100.10:25 (MX)", self.server.log())

        # Fetching: carol's own account, and the admin's multi-drop.
        self.wait(lambda: "for carol" in self.mailbox("carol") and "unaddressed" in self.mailbox("admin"),
                  "POP3 fetch", timeout=30)
        self.assertEqual(self.mailbox("bob"), ["multidrop", "to bob", "to sales", "to team"])
        self.assertEqual(self.mailbox("carol"), ["for carol", "multidrop", "to team"])
        self.assertEqual(self.mailbox("alice"), ["from outside", "multidrop", "to sales", "to team"])
        self.assertEqual(self.mailbox("admin"), ["unaddressed"])
        self.wait(lambda: not self.lab.pop3_messages("office") and not self.lab.pop3_messages("remote"),
                  "removal at the ISP", timeout=15)

        # poplib from the PC, "leave a copy on the server": the same UIDs twice.
        first = self.pop_read("bob", "admin-demo")
        second = self.pop_read("bob", "admin-demo", "stls")
        self.assertEqual(len(first["uids"]), 4)
        self.assertEqual(first["uids"], second["uids"])
        self.assertEqual(sorted(first["subjects"]), ["multidrop", "to bob", "to sales", "to team"])
        over_tls = self.pop_read("bob", "admin-demo", "pop3s")
        self.assertEqual(over_tls["uids"], first["uids"])
        # After a restart too.
        self.server.stop()
        self.start_server()
        third = self.pop_read("bob", "admin-demo")
        self.assertEqual(third["uids"], first["uids"])

    def test_kill9_keeps_every_acknowledged_message(self):
        self.start_server()
        script = os.path.join(self.lab.state_dir, "blaster.py")
        with open(script, "w") as f:
            f.write(BLASTER)
        out_path = os.path.join(self.lab.state_dir, "blaster.out")
        with open(out_path, "wb") as out:
            proc = self.lab.popen("pc1", [sys.executable, script, SERVER_LAN, "200"],
                                  name="blaster", stdout=out, stderr=out)
        self.addCleanup(self.lab.stop, proc)

        def acked():
            with open(out_path) as f:
                return [int(line) for line in f.read().split("\n") if line.strip().isdigit()]
        deadline = time.monotonic() + 60
        while len(acked()) < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        self.server.kill9()
        proc.wait(30)
        numbers = acked()
        with open(out_path) as f:
            report = "the blaster exited %s; it printed:\n%s" % (proc.returncode, f.read()[-3000:])
        self.assertGreaterEqual(len(numbers), 20, report)
        self.assertLess(len(numbers), 200, "the client finished before the kill")
        self.start_server()
        stored = self.mailbox("bob")
        missing = [n for n in numbers if "burst %d" % n not in stored]
        self.assertEqual(missing, [], "acknowledged with 250 but lost after kill -9")
        self.assertGreaterEqual(len(stored), len(numbers))
        # The restarted server serves them over POP3 as well.
        seen = self.pop_read("bob", "admin-demo", timeout=60)
        self.assertEqual(len(seen["uids"]), len(stored))
