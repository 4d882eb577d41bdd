# -*- test-case-name: allworx.tests.lab.test_contentfilter -*-
"""
The content filter against the real rspamd and clamd (SPEC 18), on
loopback: rspamd (/usr/bin/rspamd, in the foreground with a minimal
configuration of our own in a temporary directory: no modules, DNS pointed
at a closed loopback port so nothing leaves the machine) rejects a GTUBE
message through our /checkv2 client and lets a plain one through; clamd
(/usr/sbin/clamd, in the foreground, its socket and a one-signature .hdb
database in a temporary directory) finds a test file attached to a message.
Each daemon is stopped by its own PID. Needs root (rspamd's workers and
clamd run as root here) and the two programs: without them the test fails.
"""

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from allworx.protocols.mail.clamd import ClamdClient
from allworx.protocols.mail.rspamd import RspamdClient
from allworx.protocols.mail.spam import ContentFilter
from allworx.protocols.mail.verdicts import MessageFacts
from allworx.tests.mailtesting import make_office

RSPAMD = "/usr/bin/rspamd"
CLAMD = "/usr/sbin/clamd"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
PLAIN = (b"From: Alice <alice@example.org>\r\nTo: bob@corp.example\r\nSubject: Lunch\r\n"
         b"Date: Fri, 15 Jan 2027 08:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\n"
         b"Shall we meet at noon?\r\n")
FACTS = MessageFacts("198.51.100.7", "mx.example.org", "alice@example.org", ("bob@corp.example",),
                     ("bob",), "pass", (), "none", "")
SAMPLE = b"allworx content filter test file: harmless, but our clamd database names it\n"
SIGNATURE = "Allworx.Test.Sample"

RSPAMD_CONF = """
options {
  pidfile = "%(dir)s/rspamd.pid";
  dbdir = "%(dir)s";
  filters = "";
  gtube_patterns = "all";
  control_socket = "%(dir)s/rspamd.sock mode=0600";
  dns { nameserver = ["127.0.0.1:9"]; timeout = 1s; retransmits = 1; }
}
logging { type = "console"; level = "notice"; }
actions { reject = 15; add_header = 6; greylist = 4; }
worker "normal" { bind_socket = "127.0.0.1:%(port)d"; count = 1; }
"""

CLAMD_CONF = """
LocalSocket %(dir)s/clamd.sock
DatabaseDirectory %(dir)s/db
Foreground yes
LogFile %(dir)s/clamd.log
TemporaryDirectory %(dir)s
PidFile %(dir)s/clamd.pid
User root
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def with_attachment(name, data):
    body = base64.encodebytes(data)
    return (b"From: a@b.example\r\nTo: bob@corp.example\r\nSubject: file\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            b"see attached\r\n--b\r\nContent-Type: application/octet-stream\r\n"
            b'Content-Disposition: attachment; filename="' + name.encode() + b'"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + body + b"--b--\r\n")


class DaemonCase(unittest.TestCase):
    """Starts a daemon in a private temporary directory; stops it by PID."""

    program = None

    def setUp(self):
        if os.geteuid() != 0:
            self.fail("this test runs rspamd and clamd as root: run it as root")
        if not os.access(self.program, os.X_OK):
            self.fail("this test needs %s (Debian packages rspamd and clamav-daemon)" % self.program)
        self.dir = tempfile.mkdtemp(prefix="awcf-")     # short: clamd's socket path
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.office = make_office(self)

    def start(self, argv, name):
        self.log_path = os.path.join(self.dir, name + ".out")
        out = open(self.log_path, "wb")
        self.addCleanup(out.close)
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.addCleanup(self.stop, proc)
        self.proc = proc
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)     # its own session: the daemon and its workers
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def log_text(self, *extra):
        text = []
        for path in (self.log_path,) + extra:
            try:
                with open(path, "rb") as f:
                    text.append(f.read()[-3000:].decode("utf-8", "replace"))
            except OSError:
                pass
        return "\n".join(text) or "(nothing)"

    @defer.inlineCallbacks
    def wait_for(self, ready, what, timeout=120.0):
        """Poll `ready()` on the reactor until true; fail with the daemon's output past `timeout`."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                self.fail("%s exited (%s) before %s:\n%s" % (self.program, self.proc.returncode,
                                                             what, self.log_text()))
            if time.monotonic() > deadline:
                self.fail("%s did not happen within %ss:\n%s" % (what, timeout, self.log_text()))
            yield task.deferLater(reactor, 0.2, lambda: None)


def _listening(port):
    s = socket.socket()
    try:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
    finally:
        s.close()


class RspamdTests(DaemonCase):

    program = RSPAMD

    @defer.inlineCallbacks
    def test_gtube_rejected_and_plain_accepted_through_our_client(self):
        port = free_port()
        conf = os.path.join(self.dir, "rspamd.conf")
        with open(conf, "w") as f:
            f.write(RSPAMD_CONF % {"dir": self.dir, "port": port})
        self.start([RSPAMD, "-f", "-u", "root", "-g", "root", "-i", "-c", conf,
                    "--var", "DBDIR=" + self.dir, "--var", "RUNDIR=" + self.dir], "rspamd")
        yield self.wait_for(lambda: _listening(port), "rspamd listening on 127.0.0.1:%d" % port)
        client = RspamdClient(reactor, "127.0.0.1", port, timeout=30)
        spam = PLAIN.replace(b"Shall we meet at noon?", GTUBE)
        v = yield client.check(spam, FACTS)
        self.assertEqual((v.action, v.reply[:2]), ("reject", (550, "5.7.1")), (v, self.log_text()))
        self.assertIn("GTUBE", [r[0] for r in v.rules])
        v = yield client.check(PLAIN, FACTS)
        self.assertEqual(v.action, "accept", (v, self.log_text()))
        # The same through the content filter, as configured in [mail].
        self.office.update_settings("mail", {"rspamd": "127.0.0.1:%d" % port})
        content = ContentFilter(self.office, reactor)
        v = yield content.check(spam, FACTS)
        self.assertEqual(v.reply[:2], (550, "5.7.1"), (v, self.log_text()))
        self.assertTrue(v.status_header.startswith("Yes, score=15.0 required=15.0"), v.status_header)


class ClamdTests(DaemonCase):

    program = CLAMD

    @defer.inlineCallbacks
    def test_custom_signature_found_in_an_attachment(self):
        os.makedirs(os.path.join(self.dir, "db"))
        with open(os.path.join(self.dir, "db", "allworx.hdb"), "w") as f:
            f.write("%s:%d:%s\n" % (hashlib.md5(SAMPLE).hexdigest(), len(SAMPLE), SIGNATURE))
        conf = os.path.join(self.dir, "clamd.conf")
        with open(conf, "w") as f:
            f.write(CLAMD_CONF % {"dir": self.dir})
        sock = os.path.join(self.dir, "clamd.sock")
        clamd_log = os.path.join(self.dir, "clamd.log")
        self.start([CLAMD, "-c", conf], "clamd")
        yield self.wait_for(lambda: os.path.exists(sock), "clamd's socket " + sock)
        client = ClamdClient(reactor, sock, timeout=30)
        infected = with_attachment("report.dat", SAMPLE)
        found = yield client.scan(infected)
        self.assertEqual(found, SIGNATURE + ".UNOFFICIAL", self.log_text(clamd_log))
        found = yield client.scan(with_attachment("report.dat", b"something else entirely\n"))
        self.assertIsNone(found, self.log_text(clamd_log))
        self.office.update_settings("mail", {"clamd": sock})
        v = yield ContentFilter(self.office, reactor).check(infected, FACTS)
        self.assertEqual(v.reply, (552, "5.7.1", "virus found: %s.UNOFFICIAL" % SIGNATURE))
