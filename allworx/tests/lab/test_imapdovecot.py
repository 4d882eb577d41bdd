"""
FETCH answers side by side with Dovecot's: for the same messages, BODYSTRUCTURE, BODY,
ENVELOPE and BODY[section] (parts by number, MIME, HEADER, TEXT, HEADER.FIELDS[.NOT]) from
the server's IMAP session and from Dovecot 2.3's imap (Debian's dovecot-imapd), run
pre-authenticated as nobody on a Maildir holding the message. The messages are the named
ones below (each a way mail is broken or nested) and 200 random ones
(allworx.tests.mail.mimegen); every answer must be the same, octet for octet.

One difference is Dovecot's and left out of the comparison: HEADER.FIELDS of an enclosed
message whose header a boundary line cut short (no blank line). Dovecot reads that header
again past the boundary, into the next part; here it ends where the part ends.
"""

import os
import re
import shutil
import subprocess
import tempfile

from allworx.protocols.mail import imapmime
from allworx.tests.mail import mimegen
from allworx.tests.mail.test_imap import ImapCase

DOVECOT = "/usr/lib/dovecot/imap"
RANDOM = 200

NAMED = {
    "nested multipart with an enclosed message": (
        b'From: a@b\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\npre\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\nContent-Type: message/rfc822\r\n"
        b"\r\nFrom: c@d\r\nSubject: in\r\n\r\ninner body\r\n--XX--\r\nepi\r\n"),
    "every Content-* field, folded and cased": (
        b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: Text/PLAIN; Charset=UTF-8; "
        b'Format="flowed"\r\nContent-Description: folded\r\n\tover two  lines\r\n'
        b"Content-ID: <id@x>\r\nContent-Transfer-Encoding: BASE64 \r\nContent-Language: en, de-CH\r\n"
        b"Content-Location: http://x/y\r\nContent-MD5: abc==\r\n"
        b'Content-Disposition: Inline; Filename="x y.txt"; size=10\r\n\r\naGVsbG8=\r\n'),
    "RFC 2231 continuations and an 8-bit description": (
        b'From: a@b\r\nContent-Type: application/pdf; name*0="a b"; name*1="c.pdf"\r\n'
        b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.pdf\r\n"
        b"Content-Description: d\xc3\xa9j\xc3\xa0 \"hi\"\r\n\r\nxx\r\n"),
    "a part that is not MIME keeps no Content-* field": (
        b"From: a@b\r\nContent-Description: no mime version, no type\r\nContent-ID: <q>\r\n\r\nx\r\n"),
    "boundaries that begin with the enclosing one, a header cut short": (
        b"From: a@b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: multipart/alternative; boundary=bb\r\n\r\n--bb\r\n\r\nin1\r\n--b\r\n"
        b"Content-Type: text/plain\r\nX-A: 1\r\n--b\r\n\r\nouter\r\n--bx is a boundary line\r\n"
        b"\r\nlast\r\n--b--\r\n"),
    "a blank line right before a boundary, an empty enclosed message": (
        b"From: a@b\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n"
        b"Content-Type: text/plain\r\n\r\n--z\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y\r\n"
        b"\r\n--z\r\nContent-Type: text/plain\r\n\r\n\r\n--z--\r\n"),
    "multiparts without parts or without a boundary": (
        b"From: a@b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: multipart/mixed\r\n\r\nno boundary\r\n--b\r\n"
        b"Content-Type: multipart/mixed; boundary=c\r\n\r\n--c--\r\n--b--\r\n"),
    "addresses of every shape, repeated fields": (
        b'From: "J\xc3\xb6rg" <j@x.example>\r\nSubject: caf\xc3\xa9 =?utf-8?q?x?=\r\n'
        b'To: a@b, "Q, R" <q@r>, undisclosed-recipients:;\r\nTo: z@w\r\n'
        b"Cc: Group: m@n, o@p;, (comment) plain@x (c2)\r\nDate: Mon,\r\n 7 Dec 2026\r\n"
        b"Message-ID: <m1@x>\r\nMessage-ID: \r\n  <folded@x>\r\nReply-To: <r@s>\r\n"
        b"Bcc: broken, @nodomain, user@, <>, <@route,@r2:x@y>, x@[1.2.3.4]\r\n"
        b"Subject:   spaced\t\tout  \r\n\r\nx\r\n"),
    "a one-part message in any case": (
        b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: TEXT/Plain\r\n\r\nx\r\n"),
    "a digest, its parts messages by default": (
        b'Content-Type: multipart/digest; boundary="b"\r\n\r\npreamble\r\n--b  \r\n\r\n'
        b"Subject: one\r\n\r\nfirst\r\n--b\r\nContent-Type: text/plain\r\n\r\ntwo\r\n--b--\r\n"),
    "all header": b"Subject: headers only\r\nFrom: x@y.example\r\n",
    "nested deeper than Dovecot reads": (
        b"From: a@b\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
        + b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i)
                   for i in range(1, 110))
        + b"--b109\r\n\r\ndeep\r\n"),
}

NAMED_ITEMS = ["BODYSTRUCTURE", "BODY", "ENVELOPE", "BODY.PEEK[TEXT]", "BODY.PEEK[HEADER]"] + [
    "BODY.PEEK[%s%s]" % (n, end) for n in ("1", "2", "3", "1.1", "2.1", "2.2", "1.1.1", "2.1.1")
    for end in ("", ".MIME", ".TEXT", ".HEADER", ".HEADER.FIELDS (From Subject)")]


def _answer(text, seq):
    """What a FETCH answered, without the untagged framing; the whole text when it failed."""
    m = re.match(rb"\* %d FETCH \((.*)\)\r\n\w+ OK[^\r]*\r\n$" % seq, text, re.S)
    return m.group(1) if m else b"<<" + text + b">>"


def _dovecot_cut(data, item):
    """True for HEADER.FIELDS of an enclosed message whose header a boundary cut short."""
    m = re.match(r"BODY\.PEEK\[([\d.]+)\.HEADER\.FIELDS", item)
    if m is None:
        return False
    part = imapmime.find(imapmime.parse(data), [int(n) for n in m.group(1).split(".")])
    if part is None or part.kind != imapmime.MESSAGE or not part.children:
        return False
    inner = part.children[0]
    header = data[inner.start:inner.body]
    return inner.body < len(data) and not (header == b"\r\n" or header.endswith(b"\r\n\r\n"))


class Dovecot:
    """Dovecot's imap on a Maildir holding one message, pre-authenticated, as nobody."""

    def __init__(self, data):
        self.root = tempfile.mkdtemp(prefix="allworx-dovecot-")
        os.chmod(self.root, 0o755)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.root, "Maildir", sub))
        with open(os.path.join(self.root, "Maildir", "cur", "1.test:2,"), "wb") as f:
            f.write(data)
        conf = os.path.join(self.root, "dovecot.conf")
        with open(conf, "w") as f:
            f.write("mail_location = maildir:%s/Maildir\nlog_path = /dev/stderr\nssl = no\n"
                    "protocols = imap\n" % self.root)
        subprocess.run(["chown", "-R", "nobody:nogroup", self.root], check=True)
        self.stderr = open(os.path.join(self.root, "stderr"), "w+b")
        self.proc = subprocess.Popen(
            ["runuser", "-u", "nobody", "--", "env", "USER=nobody", "HOME=" + self.root,
             DOVECOT, "-c", conf], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        self.tag = 0
        self.command(b"SELECT INBOX")

    def command(self, text):
        self.tag += 1
        tag = b"d%d" % self.tag
        self.proc.stdin.write(tag + b" " + text + b"\r\n")
        self.proc.stdin.flush()
        out = b""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("Dovecot's imap ended before answering %r; its stderr:\n%s"
                                     % (text, self.errors()))
            out += line
            if line.startswith(tag + b" "):
                return out

    def errors(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")[-2000:]

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.root, ignore_errors=True)


class DovecotComparisonTests(ImapCase):

    timeout = 300

    def setUp(self):
        super().setUp()
        self.assertTrue(os.access(DOVECOT, os.X_OK),
                        "%s is missing: the dovecot-imapd package (make test installs it)" % DOVECOT)
        self.session = self.select()
        self.delivered = 3          # ImapCase's own three messages

    def compare(self, name, data, items):
        """[(item, Dovecot's answer, ours)] that differ for the message; the items compared."""
        self.deliver(data)
        self.delivered += 1
        seq = self.delivered
        p, t = self.session
        self.assertIn(b"s2 OK", self.talk(p, t, b"s2 SELECT INBOX"))
        peer = Dovecot(data)
        differ, compared = [], 0
        try:
            for item in items:
                if _dovecot_cut(data, item):
                    continue
                theirs = _answer(peer.command(b"FETCH 1 (%s)" % item.encode()), 1)
                ours = _answer(self.talk(p, t, b"f FETCH %d (%s)" % (seq, item.encode())), seq)
                compared += 1
                if theirs != ours:
                    differ.append((name, item, theirs, ours))
        finally:
            peer.close()
        return differ, compared

    def report(self, differ, compared):
        shown = "".join("\n%s, %s:\n  Dovecot: %r\n  allworx: %r" % (name, item, t[:600], o[:600])
                        for name, item, t, o in differ[:6])
        if differ:
            self.fail("%d of %d answers differ from Dovecot's:%s" % (len(differ), compared, shown))

    def test_named_messages(self):
        differ, compared = [], 0
        for name, data in sorted(NAMED.items()):
            d, c = self.compare(name, data, NAMED_ITEMS)
            differ += d
            compared += c
        self.assertGreater(compared, len(NAMED) * len(NAMED_ITEMS) * 0.9)
        self.report(differ, compared)

    def test_random_messages(self):
        differ, compared = [], 0
        for seed in range(RANDOM):
            d, c = self.compare("random message %d" % seed, mimegen.message(seed),
                                mimegen.items(seed))
            differ += d
            compared += c
        self.assertGreater(compared, RANDOM * 15)
        self.report(differ, compared)
