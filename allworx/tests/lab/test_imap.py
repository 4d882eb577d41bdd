# -*- test-case-name: allworx.tests.lab.test_imap -*-
"""
Integration tests of the IMAP server in the virtual office (lab prefix
`awq`): the real server (`twistd allworx`) in its namespace; Python's imaplib
on a LAN PC over TLS (993) and STARTTLS (143), idling while swaks delivers;
mbsync (isync) syncing the mailbox both ways. They need root, swaks and
mbsync; without them they fail and say why.
"""

import json
import os
import sys
import time

from twisted.trial import unittest

from allworx.tests.confs import MINIMAL
from allworx.tests.lab.fixtures import client_report, start_lab, wait_until
from allworx.tests.lab.server import LabServer

PREFIX = "awq"
SERVER_LAN = "192.168.2.254"
# mbsync checks the certificate's DNS names (not IP addresses): the built-in
# name, resolved by pc1 through the server's own DNS.
IMAP_NAME = "imap.example.com"
PC1_IP = "192.168.2.10"
PASSWORD = "admin-demo"

# Idles on INBOX over 993; prints IDLING, then each line the server sends
# with the time it came (time.monotonic, the same clock as the test's).
IDLER = r"""
import imaplib, ssl, sys, time
ctx = ssl._create_unverified_context()      # the server's own certificate
M = imaplib.IMAP4_SSL(sys.argv[1], 993, ssl_context=ctx, timeout=30)
M.login(sys.argv[2], sys.argv[3])
print("SELECTED", M.select("INBOX")[1][0].decode(), flush=True)
tag = M._new_tag()
M.send(tag + b" IDLE\r\n")
first = M.readline()
if not first.startswith(b"+"):
    print("NOT IDLING", first, flush=True)
    sys.exit(1)
print("IDLING", time.monotonic(), flush=True)
while True:
    line = M.readline()
    if not line:
        break
    print("LINE", time.monotonic(), line.strip().decode(), flush=True)
    if b"EXISTS" in line:
        break
M.send(b"DONE\r\n")
print("END", M.readline().decode().strip(), flush=True)
M.logout()
"""

# STARTTLS on 143: capabilities before and after, a login refused in the clear.
STARTTLS = r"""
import imaplib, json, ssl, sys
ctx = ssl._create_unverified_context()
M = imaplib.IMAP4(sys.argv[1], 143, timeout=20)
before = list(M.capabilities)
try:
    M.login(sys.argv[2], sys.argv[3])
    clear = "accepted"
except imaplib.IMAP4.error as e:
    clear = str(e)
M.starttls(ssl_context=ctx)
after = list(M.capabilities)
M.login(sys.argv[2], sys.argv[3])
typ, boxes = M.list()
M.logout()
print(json.dumps({"before": before, "after": after, "clear": clear,
                  "list": [b.decode() for b in boxes]}))
"""

# Flags of the server's messages by subject, over 993; `STORE` sets one.
FLAGS = r"""
import imaplib, json, re, ssl, sys
ctx = ssl._create_unverified_context()
M = imaplib.IMAP4_SSL(sys.argv[1], 993, ssl_context=ctx, timeout=20)
M.login(sys.argv[2], sys.argv[3])
M.select("INBOX")
out = {}
typ, data = M.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
for item in data:
    if isinstance(item, tuple):
        uid = re.search(rb"UID (\d+)", item[0]).group(1).decode()
        flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode()
        subject = item[1].decode().split(":", 1)[1].strip()
        out[subject] = {"uid": uid, "flags": flags}
if len(sys.argv) > 4:
    uid = out[sys.argv[4]]["uid"]
    M.uid("STORE", uid, "+FLAGS", "(" + sys.argv[5] + ")")
M.logout()
print(json.dumps(out))
"""


class ImapLabTests(unittest.TestCase):
    """The office's mailboxes seen by real IMAP clients."""

    SERVICES = ("network", "firewall", "mail", "smtp", "imap")

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("swaks", "mbsync"))
        self.lab.run("pc1", ["ip", "addr", "replace", PC1_IP + "/24", "dev", "eth0"])
        self.lab.run("pc1", ["ip", "route", "replace", "default", "via", SERVER_LAN])
        self.server = LabServer(self.lab, MINIMAL)
        self.addCleanup(self.server.stop)
        self.server.start(timeout=40)
        self.server.wait_services(self.SERVICES, timeout=30)

    def script(self, name, text):
        path = os.path.join(self.lab.state_dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def wait(self, predicate, what, timeout=30, extra=lambda: ""):
        wait_until(self, predicate, what, timeout,
                   lambda: extra() + "\nserver log:\n" + self.server.log()[-4000:])

    def swaks(self, subject):
        done = self.lab.run("pc1", ["swaks", "--server", SERVER_LAN, "--to", "bob@example.com",
                                    "--from", "pc1@example.com", "--h-Subject", subject,
                                    "--timeout", "20"], check=False, timeout=40)
        self.assertIn("250 2.0.0", done.stdout + done.stderr, client_report(done))

    def run_json(self, script, *args):
        done = self.lab.run("pc1", [sys.executable, script, SERVER_LAN] + list(args),
                            check=False, timeout=60)
        try:
            return json.loads(done.stdout)
        except ValueError:
            self.fail("the IMAP client did not answer:\n" + client_report(done))

    def test_idle_hears_a_delivery_and_starttls_guards_logins(self):
        self.swaks("before")
        log_path = os.path.join(self.lab.state_dir, "idler.out")
        with open(log_path, "w") as out:
            proc = self.lab.popen("pc1", [sys.executable, self.script("idler.py", IDLER),
                                          SERVER_LAN, "bob", PASSWORD],
                                  name="pc1-idler", stdout=out, stderr=out)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())

        def said():
            with open(log_path) as f:
                return f.read()
        self.wait(lambda: "IDLING" in said() or proc.poll() is not None, "the client idling",
                  extra=said)
        self.assertIn("IDLING", said())
        self.swaks("while idling")
        delivered = time.monotonic()
        self.wait(lambda: "EXISTS" in said() or proc.poll() is not None, "EXISTS while idling",
                  extra=said)
        line = [l for l in said().splitlines() if "EXISTS" in l]
        self.assertTrue(line, said())
        heard = float(line[0].split()[1])
        self.assertLess(heard - delivered, 2.0, said())
        self.assertEqual(proc.wait(timeout=20), 0, said())
        self.assertIn(" OK", said().splitlines()[-1], said())

        got = self.run_json(self.script("starttls.py", STARTTLS), "bob", PASSWORD)
        self.assertIn("LOGINDISABLED", got["before"])
        self.assertIn("STARTTLS", got["before"])
        self.assertNotEqual(got["clear"], "accepted")
        self.assertNotIn("LOGINDISABLED", got["after"])
        listed = "\n".join(got["list"])
        for name, attr in (("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"),
                           ("Junk", "\\Junk")):
            self.assertIn(attr, [l for l in got["list"] if '"%s"' % name in l][0], listed)

    def test_mbsync_syncs_both_ways(self):
        self.swaks("first")
        self.swaks("second")
        # The server's own CA: mbsync verifies the certificate's chain and name.
        cert = self.server.ca_file
        local = os.path.join(self.lab.state_dir, "mbsync-local")
        os.makedirs(local, exist_ok=True)
        rc = self.script("mbsyncrc", (
            "IMAPAccount office\nHost {host}\nPort 993\nUser bob\nPass {pw}\nSSLType IMAPS\n"
            "CertificateFile {cert}\n\nIMAPStore remote\nAccount office\n\n"
            "MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
            "Channel office\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\n"
            "SyncState *\nExpunge None\n").format(host=IMAP_NAME, pw=PASSWORD, cert=cert,
                                                  local=local))

        def mbsync():
            done = self.lab.run("pc1", ["mbsync", "-c", rc, "-a"], check=False, timeout=60)
            self.assertEqual(done.returncode, 0, client_report(done) + self.server.log()[-3000:])

        def local_files():
            out = {}
            for sub in ("new", "cur"):
                d = os.path.join(local, "INBOX", sub)
                for name in os.listdir(d) if os.path.isdir(d) else ():
                    with open(os.path.join(d, name), "rb") as f:
                        for line in f.read().split(b"\n"):
                            if line.startswith(b"Subject: "):
                                out[line[9:].decode().strip()] = os.path.join(d, name)
            return out

        mbsync()
        files = local_files()
        self.assertEqual(sorted(files), ["first", "second"], os.listdir(local))
        for name in ("Sent", "Drafts", "Trash", "Junk"):
            self.assertTrue(os.path.isdir(os.path.join(local, name)), os.listdir(local))

        # A flag set on each side: "first" flagged locally, "second" seen on the server.
        path = files["first"]
        head, _, info = os.path.basename(path).partition(":2,")
        os.rename(path, os.path.join(local, "INBOX", "cur", head + ":2," + info + "F"))
        self.run_json(self.script("flags.py", FLAGS), "bob", PASSWORD, "second", "\\Seen")
        mbsync()
        server = self.run_json(self.script("flags.py", FLAGS), "bob", PASSWORD)
        self.assertIn("\\Flagged", server["first"]["flags"], server)
        seen = local_files()["second"]
        self.assertIn("S", os.path.basename(seen).partition(":2,")[2], seen)
