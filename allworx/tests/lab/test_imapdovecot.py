"""
FETCH and SEARCH answers side by side with Dovecot's: for the same messages, BODYSTRUCTURE,
BODY, ENVELOPE, RFC822.SIZE/HEADER and BODY[section] (parts by number, MIME, HEADER, TEXT,
HEADER.FIELDS[.NOT], partial) from the server's IMAP session and from Dovecot 2.3's imap
(Debian's dovecot-imapd), run pre-authenticated as nobody on a Maildir holding the message.
The messages are the named ones below (each a way mail is broken or nested) and 200 random
ones (allworx.tests.mail.mimegen); every answer must be the same, octet for octet. Then 300
random searches over one mailbox of 80 random messages (flags and internal dates set alike
on both) must find the same messages.

Where the two differ by design, the searches do not go: this server keeps no \\Recent (RECENT
and NEW find nothing, OLD everything), and it takes 8-bit octets in an atom where Dovecot
answers BAD; sequence numbers may name other messages (the order of a new Maildir's
messages is each server's own), so messages are compared, not numbers.

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
SEARCH_MESSAGES = 80
SEARCHES = 300
SEARCH_DAY = 1796600000             # 6-Dec-2026, 23:33 UTC: each message a day after the one before

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
    """
    Dovecot's imap on a Maildir, pre-authenticated, as nobody: holding one message, or the
    messages [(data, Maildir flag letters, internal date)] in that order.
    """

    def __init__(self, data=None, messages=None, keywords=None):
        self.root = tempfile.mkdtemp(prefix="allworx-dovecot-")
        os.chmod(self.root, 0o755)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.root, "Maildir", sub))
        for i, (octets, letters, date) in enumerate(messages or [(data, "", None)]):
            name = os.path.join(self.root, "Maildir", "cur", "%d.M%dP1.test:2,%s" % (
                1700000000 + i, i, letters))
            with open(name, "wb") as f:
                f.write(octets)
            if date is not None:
                os.utime(name, (date, date))
        if keywords is not None:
            with open(os.path.join(self.root, "Maildir", "dovecot-keywords"), "wb") as f:
                f.write(keywords)
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

    def test_searches(self):
        # one mailbox of random messages, some seen, some flagged, a day apart; random searches
        # (strings as literals where they need one) give the same messages from both
        messages = [(mimegen.message(1000 + i), "S" if i % 3 == 0 else "F" if i % 5 == 0 else "",
                     SEARCH_DAY + (i % 30) * 86400) for i in range(SEARCH_MESSAGES)]
        for data, _, _ in messages:
            self.deliver(data, users=("bob",))
        folder = self.store.maildir("bob")
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(folder, sub)):
                path = os.path.join(folder, sub, name)
                with open(path, "rb") as f:
                    data = f.read().replace(b"\n", b"\r\n")
                date = [m[2] for m in messages if m[0] == data][0]
                os.utime(path, (date, date))
        p, t = self.login(b"bob")
        self.assertIn(b"s1 OK", self.talk(p, t, b"s1 SELECT INBOX"))
        index = {}                      # our sequence number -> the message's place in the list
        for seq in range(1, len(messages) + 1):
            out = self.talk(p, t, b"f FETCH %d (BODY.PEEK[])" % seq)
            body = out[out.index(b"}\r\n") + 3:]
            index[seq] = [i for i, m in enumerate(messages) if body.startswith(m[0] + b")\r\n")][0]
        at = {i: seq for seq, i in index.items()}
        for i, (_, letters, _) in enumerate(messages):
            if letters:
                flag = b"\\Seen" if letters == "S" else b"\\Flagged"
                self.assertIn(b"st OK", self.talk(p, t, b"st STORE %d +FLAGS.SILENT (%s)" % (at[i], flag)))
        peer = Dovecot(messages=messages)
        differ = []
        try:
            for n in range(SEARCHES):
                keys = mimegen.search(n)
                theirs = peer.command(b"SEARCH CHARSET UTF-8 " + b"".join(mimegen.search_lines(keys, True)))
                lines = mimegen.search_lines(keys, False)
                lines[0] = b"q SEARCH CHARSET UTF-8 " + lines[0]
                ours = self.talk(p, t, *lines)
                found = []
                for text, place in ((theirs, lambda n: n), (ours, lambda n: index[n] + 1)):
                    m = re.search(rb"^\* SEARCH((?: \d+)*)\r\n", text, re.M)
                    found.append(sorted(place(int(x)) for x in m.group(1).split()) if m else text)
                if found[0] != found[1]:
                    differ.append(("search %d" % n, b" ".join(keys).decode("utf-8", "replace"),
                                   repr(found[0]).encode(), repr(found[1]).encode()))
        finally:
            peer.close()
        self.report(differ, SEARCHES)

    def test_keywords_written_here_read_the_same_in_dovecot(self):
        # a client's keywords ($Forwarded, $Junk, labels) on our Maildir, then the same files
        # under Dovecot: the same flags for every message
        p, t = self.session
        for command in (b"k1 STORE 1 +FLAGS ($Forwarded \\Seen)", b"k2 STORE 2 +FLAGS ($Junk $label3)",
                        b"k3 STORE 3 +FLAGS ($label3 \\Flagged)", b"k4 STORE 1 -FLAGS ($Forwarded)",
                        b"k5 STORE 1 +FLAGS (NonJunk)"):
            self.assertIn(b" OK", self.talk(p, t, command))
        ours = self.talk(p, t, b"f FETCH 1:3 (FLAGS)")
        folder = self.store.maildir("alice")
        files = sorted(os.listdir(os.path.join(folder, "cur")), key=lambda n: n.split(":2,")[0])
        messages = []
        for name in files:
            with open(os.path.join(folder, "cur", name), "rb") as f:
                messages.append((f.read(), name.split(":2,")[1], None))
        with open(os.path.join(folder, "dovecot-keywords"), "rb") as f:
            keywords = f.read()
        peer = Dovecot(messages=messages, keywords=keywords)
        try:
            theirs = peer.command(b"FETCH 1:3 (FLAGS)")
        finally:
            peer.close()
        flags = [sorted(re.findall(rb"\* (\d) FETCH \(FLAGS \(([^)]*)\)", text)) for text in (theirs, ours)]
        self.assertEqual(len(flags[1]), 3, ours)
        self.assertEqual([(n, set(f.split()) - {b"\\Recent"}) for n, f in flags[0]],
                         [(n, set(f.split())) for n, f in flags[1]], (theirs, ours))

    def test_random_messages(self):
        differ, compared = [], 0
        for seed in range(RANDOM):
            d, c = self.compare("random message %d" % seed, mimegen.message(seed),
                                mimegen.items(seed))
            differ += d
            compared += c
        self.assertGreater(compared, RANDOM * 15)
        self.report(differ, compared)
