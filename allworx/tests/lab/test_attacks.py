# -*- test-case-name: allworx.tests.lab.test_attacks -*-
"""
Issue 21's attacks, run on the real server in the virtual office (lab prefix
`awk`) with real clients, and what the office's users see meanwhile:

- password guessing: curl's POP3 from pc1, swaks' SMTP AUTH (STARTTLS on
  587) from the internet host, digest REGISTERs from phone1. Each attacker's
  answers come later and later, then say "locked until"; the lock-outs show
  in GET /api/v1/lockouts and `allworx unlock` (run in the server's
  namespace, on its tap.conf and data directory) lists and ends them. The
  real users are served throughout: bob from pc2 by POP3 and swaks, a
  colleague from the attacker's own address, bob's baresip phone; and the
  guessed users from the guessing host once unlocked (alice's baresip).
  Spraying one password over many names from one address locks the
  address (SPEC 10: whatever the users): every login from it is refused,
  saying until when, till `allworx unlock --source` ends it.
- floods: pc1 opens the mail ports up to its share and past it, then 25
  addresses on pc1 fill the mail service to its cap; pc2's swaks and POP3
  are served both times, and pc1 again once it lets go.
- enumeration: svwar-style OPTIONS, REGISTER and INVITE for an extension
  whose phone is registered and for one that does not exist get the same
  answers, nmap's sip-enum-users gives up, and curl's VRFY from the internet
  is answered alike for a user and a non-user.

Each test ends with the server unharmed: every service up in its status,
no traceback in its log. Needs root, curl, swaks (with TLS), baresip and
nmap; fails and says why without them.
"""

import inspect
import json
import os
import subprocess
import sys
import time

from twisted.trial import unittest

from allworx.guards import LoginThrottle
from allworx.lab.topology import INET_IP, SERVER_LAN_IP
from allworx.passwords import sip_digest
from allworx.protocols.mail.smtp import MAX_CONNECTIONS_PER_PEER, MAX_SESSIONS
from allworx.tests.confs import MINIMAL, PW_HASH, with_sections
from allworx.tests.lab.fixtures import client_report, start_lab, wait_until
from allworx.tests.lab.server import LabServer
from allworx.lab.tones import tone_wav
from allworx.tests.lab.phones import Baresip, SipAccount
from allworx.tests.lab.test_sip import PHONES, SERVER_IP

PREFIX = "awk"
WAN_IP = "203.0.113.2"
PASSWORD = "admin-demo"           # every user's mail password (PW_HASH)
HOST_IPS = {"pc1": "192.168.2.10", "pc2": "192.168.2.20",
            "phone1": PHONES["phone1"][2], "phone2": PHONES["phone2"][2]}
SPRAYER = "192.168.2.30"           # a second address of pc1
# The server's one throttle has LoginThrottle's defaults.
THROTTLE = {name: p.default for name, p in inspect.signature(LoginThrottle).parameters.items()
            if p.default is not p.empty}
# One user guessed at from one address: the guess after the last allowed
# failure meets the lock-out.
GUESSES = ["guess-%d" % n for n in range(1, THROTTLE["user_limit"] + 2)]
LOCKED = r"locked until \d\d:\d\d UTC"
ALLWORX = os.path.join(os.path.dirname(sys.executable), "allworx")
SERVICES = ("network", "firewall", "mail", "smtp", "submission", "pop3", "sip", "web")


def least_delay(failures):
    """How long a guess waits at least after `failures` failures of its user at its source."""
    if failures <= THROTTLE["user_free"]:
        return 0.0
    return min(THROTTLE["max_delay"], THROTTLE["first_delay"] * 2 ** (failures - THROTTLE["user_free"] - 1))


# Digest REGISTERs for one extension from one address, each answering its
# challenge with the next guessed password; one JSON line per guess.
SIP_GUESSER = r"""
import hashlib, json, re, socket, sys, time
server, source, ext = sys.argv[1:4]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((source, 5072))
sock.settimeout(30)
call_id = "guess-%d@%s" % (time.time() * 1000, source)
cseq = 0

def register(authorization=None):
    global cseq
    cseq += 1
    lines = ["REGISTER sip:%s SIP/2.0" % server,
             "Via: SIP/2.0/UDP %s:5072;branch=z9hG4bK-guess-%d;rport" % (source, cseq),
             "Max-Forwards: 70",
             "From: <sip:%s@%s>;tag=guesser" % (ext, server),
             "To: <sip:%s@%s>" % (ext, server),
             "Call-ID: " + call_id,
             "CSeq: %d REGISTER" % cseq,
             "Contact: <sip:%s@%s:5072>" % (ext, source),
             "Expires: 60"]
    if authorization:
        lines.append("Authorization: " + authorization)
    sock.sendto(("\r\n".join(lines + ["Content-Length: 0", "", ""])).encode(), (server, 5060))
    while True:
        text = sock.recv(65535).decode("utf-8", "replace")
        head = text.split("\r\n\r\n")[0].split("\r\n")
        code = int(head[0].split()[1])
        if code >= 200 and any(l.lower() == "cseq: %d register" % cseq for l in head[1:]):
            return head

def md5(text):
    return hashlib.md5(text.encode()).hexdigest()

for guess in sys.argv[4:]:
    challenge = register()
    offer = [l for l in challenge if l.lower().startswith("www-authenticate:") and "MD5" in l]
    if not offer:
        print(json.dumps({"guess": guess, "challenge": challenge[0]}), flush=True)
        break
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', offer[0].split(":", 1)[1]))
    uri = "sip:" + server
    ha1 = md5("%s:%s:%s" % (ext, fields["realm"], guess))
    answer = md5("%s:%s:00000001:c0ffee:auth:%s" % (ha1, fields["nonce"], md5("REGISTER:" + uri)))
    started = time.monotonic()
    reply = register('Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
                     'algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"'
                     % (ext, fields["realm"], fields["nonce"], uri, answer))
    print(json.dumps({"guess": guess, "challenge": challenge[0], "answer": reply[0],
                      "seconds": round(time.monotonic() - started, 3)}), flush=True)
"""

# Opens connections to the mail ports: each argument SOURCE:PORT:COUNT, in
# order; reads each greeting (and on POP3 sends USER bob, as a guesser
# would); prints one JSON line of what each item got, then holds every
# connection open until its standard input closes.
FLOOD = r"""
import json, socket, sys
server = sys.argv[1]
held, report = [], {}

def line(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(512)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()

for item in sys.argv[2:]:
    source, port, count = item.split(":")
    got = report[item] = {"admitted": 0, "refused": {}}
    for _ in range(int(count)):
        sock = socket.create_connection((server, int(port)), timeout=15, source_address=(source, 0))
        greeting = line(sock)
        if greeting.startswith(("220 ", "+OK")):
            got["admitted"] += 1
            if port == "110":
                sock.sendall(b"USER bob\r\n")
                line(sock)
            held.append(sock)
        else:
            got["refused"][greeting] = got["refused"].get(greeting, 0) + 1
            sock.close()
print(json.dumps(report), flush=True)
sys.stdin.read()
for sock in held:
    sock.close()
"""

# svwar's questions for each extension named, by OPTIONS, REGISTER and
# INVITE; the answers with what they echo of their request taken out.
SVWAR = r"""
import json, socket, sys
from allworx.tests.sip.test_enumeration import normalized, svwar_request
server, source = sys.argv[1:3]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((source, 5071))
sock.settimeout(10)
answers, n = {}, 0
for method in ("OPTIONS", "REGISTER", "INVITE"):
    for ext in sys.argv[3:]:
        n += 1
        sock.sendto(svwar_request(method, ext, host=server, source=(source, 5071), n=n), (server, 5060))
        answers["%s %s" % (method, ext)] = normalized(sock.recv(65535), ext)
print(json.dumps(answers))
"""


def conf():
    """MINIMAL's alice (101) and bob (102) with their phones' digests, and carol (mail only)."""
    base = MINIMAL.replace(
        "sip_digest = %s\n" % sip_digest("101", "example.com", PASSWORD),
        "sip_digest = %s\n" % sip_digest("101", "example.com", PHONES["phone1"][3]))
    base = base.replace("extension = 102\n", "extension = 102\nsip_digest = %s\n"
                        % sip_digest("102", "example.com", PHONES["phone2"][3]))
    return with_sections("[user carol]\nfull_name = Carol Cole\npassword = %s\n" % PW_HASH, base)


class AttackLabTests(unittest.TestCase):
    """An attacker's tools against the office while its users work."""

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("curl", "swaks", "baresip", "nmap"))
        for host, ip in HOST_IPS.items():
            self.lab.run(host, ["ip", "addr", "replace", ip + "/24", "dev", "eth0"])
            self.lab.run(host, ["ip", "link", "set", "lo", "up"])
            self.lab.run(host, ["ip", "route", "replace", "default", "via", SERVER_LAN_IP])
        self.phones = []
        self.server = LabServer(self.lab, conf())
        self.addCleanup(self.server.stop)
        self.server.start(timeout=40)
        self.server.wait_services(SERVICES, timeout=30)
        self.tone = os.path.join(self.lab.state_dir, "tone.wav")
        tone_wav(self.tone, 440, 1)

    # ------------------------------------------------------------ clients

    def run_client(self, host, argv, timeout=60):
        return self.lab.run(host, argv, check=False, timeout=timeout)

    def script(self, name, text):
        path = os.path.join(self.lab.state_dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def pop3(self, host, user, password, message="", options=()):
        """curl's POP3 from `host`: the message list, or message number `message`."""
        return self.run_client(host, self.pop3_argv(user, password, message, options))

    def pop3_argv(self, user, password, message="", options=()):
        return ["curl", "-sS", "-v", "-m", "40", "-u", "%s:%s" % (user, password)] + list(options) + [
            "pop3://%s/%s" % (SERVER_LAN_IP, message)]

    def in_parallel(self, host, commands, timeout=60):
        """Run `commands` in `host` all at once: their CompletedProcesses."""
        procs = [self.lab.popen(host, argv, name="parallel-%d" % n, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for n, argv in enumerate(commands)]
        for proc in procs:
            self.addCleanup(self.lab.stop, proc)
        done = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        return done

    def swaks(self, host, server, *args):
        return self.run_client(host, ["swaks", "--server", server, "--timeout", "40"] + list(args))

    def submit(self, host, server, user, password, subject="", quit_after=None):
        """swaks on 587: STARTTLS, AUTH PLAIN as `user`, a message to bob (or stop after AUTH)."""
        args = ["--port", "587", "-tls", "--auth", "PLAIN", "--auth-user", user,
                "--auth-password", password, "--from", "%s@example.com" % user,
                "--to", "bob@example.com", "--h-Subject", subject or "from " + user]
        return self.swaks(host, server, *(args + (["--quit-after", quit_after] if quit_after else [])))

    def api(self, path):
        """GET /api/v1PATH as the admin, by curl from the admin PC: (JSON, curl's report)."""
        done = self.run_client("admin", ["curl", "-sS", "-m", "10", "-u", "admin:" + PASSWORD]
                               + self.server.curl_https()
                               + ["https://%s:8080/api/v1%s" % (SERVER_LAN_IP, path)])
        try:
            return json.loads(done.stdout), client_report(done)
        except ValueError:
            self.fail("the API did not answer GET %s:\n%s" % (path, client_report(done)))

    def unlock(self, *args):
        """`allworx unlock ARGS` in the server's namespace, on its tap.conf and data directory."""
        done = self.run_client("server", [ALLWORX, "unlock", "-c", self.server.conf_path,
                                          "--data-dir", self.server.data_dir] + list(args))
        self.assertEqual(done.returncode, 0, client_report(done))
        return done

    def phone(self, host):
        """A baresip phone of the user PHONES names for `host`, started."""
        name, ext, ip, password = PHONES[host]
        phone = Baresip(self.lab, host, os.path.join(self.lab.state_dir, "phones"), self.tone,
                        SipAccount(ext, password, SERVER_IP, bind_ip=ip), name=name)
        self.addCleanup(phone.stop)
        phone.start()
        self.phones.append(phone)
        return phone

    def registered(self, user):
        bindings, _ = self.api("/sip/registrations")
        return any(b["user"] == user for b in bindings)

    def flood(self, host, *items):
        """
        FLOOD from `host` with `items` (SOURCE:PORT:COUNT): (its report,
        a function that lets the connections go and waits for it to end).
        """
        out = os.path.join(self.lab.state_dir, "flood.out")
        err = os.path.join(self.lab.state_dir, "flood.err")
        with open(out, "w") as stdout, open(err, "w") as stderr:
            proc = self.lab.popen(host, [sys.executable, self.script("flood.py", FLOOD),
                                         SERVER_LAN_IP] + list(items),
                                  name="flood", stdin=subprocess.PIPE, stdout=stdout, stderr=stderr)
        self.addCleanup(self.lab.stop, proc)

        def said():
            with open(out) as o, open(err) as e:
                return subprocess.CompletedProcess(proc.args, proc.poll(), o.read(), e.read())

        def reported():
            done = said()
            return done if done.stdout.strip() or done.returncode is not None else None
        done = self.wait_for(reported, 60, "the flood's connections")
        try:
            report = json.loads(done.stdout)
        except ValueError:
            self.fail("the flood did not report:\n" + client_report(done))

        def release():
            proc.stdin.close()
            proc.wait(30)
            self.assertEqual(proc.returncode, 0, client_report(said()))
        return report, client_report(done), release

    # ------------------------------------------------------------ waiting and checking

    def wait_for(self, predicate, timeout, what):
        """Poll `predicate` until it gives something true (returned), or fail with the logs."""
        return wait_until(self, predicate, what, timeout, lambda: "--- server:\n%s%s" % (
            self.server.log()[-3000:],
            "".join("\n--- %s:\n%s" % (p.host, p.log_tail()) for p in self.phones)))

    def guessed(self, runs):
        """
        Each of `runs` ((seconds, answer text, report) per guess, in order)
        refused as a wrong password, answered later and later, and the last
        one refused for the lock-out; the answers of the last one.
        """
        for n, (seconds, text, report) in enumerate(runs[:-1]):
            self.assertNotRegex(text, LOCKED, report)
            self.assertGreaterEqual(seconds, least_delay(n), "guess %d was not held back:\n%s"
                                    % (n + 1, report))
        seconds, text, report = runs[-1]
        self.assertRegex(text, LOCKED, report)
        return text

    def assertServed(self, done, *texts):
        for text in texts:
            self.assertIn(text, done.stdout + done.stderr, client_report(done))

    def assertUnharmed(self):
        """Every service of the server up in its status; no traceback in its log."""
        services, done = self.server.services()
        self.assertIsNotNone(services, client_report(done))
        self.assertEqual({n: s for n, s in services.items() if s["state"] not in ("up", "disabled")},
                         {}, client_report(done))
        for name in SERVICES:
            self.assertEqual(services[name]["state"], "up", client_report(done))
        log = self.server.log()
        for word in ("Traceback", "Unhandled"):
            at = log.find(word)
            self.assertEqual(at, -1, "%r in the server's log:\n%s" % (word, log[max(0, at - 1500):at + 2500]))

    # ------------------------------------------------------------ the attacks

    def test_guessing_is_slowed_then_locked_and_the_users_are_served(self):
        bob_phone = self.phone("phone2")
        self.guess_pop3()
        self.spray_pop3()
        self.guess_smtp_auth()
        self.guess_sip_register()
        # bob's phone, elsewhere, registered meanwhile.
        self.wait_for(lambda: self.registered("bob"), 20, "bob's phone's registration")

        # The lock-outs, on the API and by `allworx unlock`.
        limit = THROTTLE["user_limit"]
        expected = {("bob", HOST_IPS["pc1"], limit), ("carol", INET_IP, limit),
                    ("alice", HOST_IPS["phone1"], limit), (None, SPRAYER, THROTTLE["source_limit"])}
        lockouts, report = self.api("/lockouts")
        self.assertEqual({(l["user"], l["source"], l["failures"]) for l in lockouts["lockouts"]},
                         expected, report)
        lines = ["%s at %s: locked until" % (user, source) if user else
                 "source %s (every login from it): locked until" % source
                 for user, source, _ in expected]
        # The server writes its lock-outs to data_dir as they start: wait for the last.
        self.wait_for(lambda: all(line in self.unlock().stdout for line in lines), 10,
                      "the lock-outs in `allworx unlock`'s list")
        self.assertServed(self.unlock("bob"), "unlocked bob at %s" % HOST_IPS["pc1"])
        self.assertServed(self.unlock("carol", INET_IP), "unlocked carol at %s" % INET_IP)
        self.assertServed(self.unlock("101"), "unlocked alice at %s" % HOST_IPS["phone1"])
        self.assertServed(self.unlock("--source", SPRAYER), "unlocked source %s" % SPRAYER)
        lockouts, report = self.api("/lockouts")
        self.assertEqual(lockouts["lockouts"], [], report)
        self.assertServed(self.unlock(), "no login is locked out")

        # Unlocked, the users are served where they were guessed at.
        again = self.pop3("pc1", "bob", PASSWORD)
        self.assertEqual(again.returncode, 0, client_report(again))
        again = self.pop3("pc1", "alice", PASSWORD, options=["--interface", SPRAYER])
        self.assertEqual(again.returncode, 0, client_report(again))
        self.assertServed(self.submit("inet", WAN_IP, "carol", PASSWORD), "235 2.7.0", "250 2.0.0")
        self.phone("phone1")
        self.wait_for(lambda: self.registered("alice"), 20, "alice's phone's registration")
        self.assertTrue(self.registered("bob"), bob_phone.log_tail())
        self.assertUnharmed()

    def guess_pop3(self):
        """
        curl's POP3 from pc1 with bob's name and a wrong password, run after
        run: later and later, then locked. bob at his own PC is served, and
        so is alice at pc1; bob at pc1 stays locked, his right password too.
        """
        runs = []
        for guess in GUESSES:
            started = time.monotonic()
            done = self.pop3("pc1", "bob", guess)
            runs.append((time.monotonic() - started, done.stderr, client_report(done)))
            self.assertNotEqual(done.returncode, 0, client_report(done))
        for _, text, report in runs[:-1]:
            self.assertIn("-ERR [AUTH] wrong user name or password", text, report)
        self.assertIn("-ERR [AUTH] too many failed logins, locked until", self.guessed(runs), runs[-1][2])

        # The real bob, from his own PC: sends (submission, STARTTLS and
        # AUTH) and reads it by POP3; the mailbox is his, not [IN-USE].
        sent = self.submit("pc2", SERVER_LAN_IP, "bob", PASSWORD, subject="bob at his desk")
        self.assertServed(sent, "235 2.7.0", "250 2.0.0")
        read = self.pop3("pc2", "bob", PASSWORD, "1")
        self.assertEqual(read.returncode, 0, client_report(read))
        self.assertServed(read, "Subject: bob at his desk")
        colleague = self.pop3("pc1", "alice", PASSWORD)
        self.assertEqual(colleague.returncode, 0, client_report(colleague))
        still = self.pop3("pc1", "bob", PASSWORD)
        self.assertServed(still, "-ERR [AUTH] too many failed logins, locked until")

    def spray_pop3(self):
        """
        Password spraying from another address of pc1: one wrong password for
        as many names as lock an address, all at once, carol's among them.
        The address is locked (SPEC 10: whatever the users): carol is
        refused there, her right password unchecked, and so is alice, behind
        the same address (she is served once the address is unlocked).
        """
        self.lab.run("pc1", ["ip", "addr", "add", SPRAYER + "/24", "dev", "eth0"])
        names = ["carol"] + ["user%02d" % n for n in range(1, THROTTLE["source_limit"])]
        interface = ["--interface", SPRAYER]
        for done in self.in_parallel("pc1", [self.pop3_argv(name, "Spring2024!", options=interface)
                                             for name in names]):
            self.assertServed(done, "-ERR [AUTH] wrong user name or password")
        refused = self.pop3("pc1", "carol", PASSWORD, options=interface)
        self.assertServed(refused, "-ERR [AUTH] too many failed logins, locked until")
        refused = self.pop3("pc1", "alice", PASSWORD, options=interface)
        self.assertServed(refused, "-ERR [AUTH] too many failed logins, locked until")

    def guess_smtp_auth(self):
        """swaks from the internet on 587 (STARTTLS, AUTH PLAIN as carol):
        later and later, then locked; alice behind the same address sends."""
        runs = []
        for guess in GUESSES:
            started = time.monotonic()
            done = self.submit("inet", WAN_IP, "carol", guess, quit_after="AUTH")
            runs.append((time.monotonic() - started, done.stdout + done.stderr, client_report(done)))
        for _, text, report in runs[:-1]:
            self.assertIn("535 5.7.8 authentication credentials invalid", text, report)
        self.assertIn("454 4.7.0 too many failed logins, locked until", self.guessed(runs), runs[-1][2])
        self.assertServed(self.submit("inet", WAN_IP, "alice", PASSWORD), "235 2.7.0", "250 2.0.0")

    def guess_sip_register(self):
        """Digest REGISTERs for 101 from alice's phone's address, each with a
        wrong password: later and later, then locked."""
        done = self.run_client("phone1", [sys.executable, self.script("sipguess.py", SIP_GUESSER),
                                          SERVER_LAN_IP, HOST_IPS["phone1"], "101"] + GUESSES)
        report = client_report(done)
        try:
            answers = [json.loads(line) for line in done.stdout.splitlines()]
        except ValueError:
            self.fail("the SIP guesser did not report:\n" + report)
        self.assertEqual(len(answers), len(GUESSES), report)
        for answer in answers:
            self.assertTrue(answer["challenge"].startswith("SIP/2.0 401 "), report)
        for answer in answers[:-1]:
            self.assertEqual(answer["answer"], "SIP/2.0 403 Forbidden", report)
        self.assertRegex(self.guessed([(a["seconds"], a["answer"], report) for a in answers]),
                         r"^SIP/2\.0 403 Forbidden \(%s\)$" % LOCKED)

    def test_floods_and_probes_leave_the_office_serving(self):
        self.phone("phone2")
        self.wait_for(lambda: self.registered("bob"), 20, "bob's phone's registration")
        pc1 = HOST_IPS["pc1"]
        half = MAX_CONNECTIONS_PER_PEER // 2 + 5

        # pc1 opens SMTP and POP3 up to its share of the mail ports and past it.
        report, said, release = self.flood("pc1", "%s:25:%d" % (pc1, half), "%s:110:%d" % (pc1, half))
        smtp, pop3 = report["%s:25:%d" % (pc1, half)], report["%s:110:%d" % (pc1, half)]
        self.assertEqual(smtp["admitted"] + pop3["admitted"], MAX_CONNECTIONS_PER_PEER, said)
        self.assertEqual(pop3["refused"], {"-ERR [SYS/TEMP] too many connections from your address":
                                           2 * half - MAX_CONNECTIONS_PER_PEER}, said)
        self.users_are_served("while pc1 holds its share")
        release()
        self.wait_for(lambda: self.pop3("pc1", "alice", PASSWORD).returncode == 0, 15,
                      "pc1's POP3 once it let its connections go")

        # 25 addresses on pc1 take SMTP up to the cap; room is kept for pc2.
        sources = [pc1] + ["192.168.2.%d" % (100 + n) for n in range(24)]
        for ip in sources[1:]:
            self.lab.run("pc1", ["ip", "addr", "add", ip + "/24", "dev", "eth0"])
        items = ["%s:25:%d" % (ip, MAX_CONNECTIONS_PER_PEER) for ip in sources]
        report, said, release = self.flood("pc1", *items)
        admitted = [report[item]["admitted"] for item in items]
        refusals = set()
        for item in items:
            refusals.update(report[item]["refused"])
        self.assertGreaterEqual(min(admitted), 1, said)
        self.assertLessEqual(max(admitted), MAX_CONNECTIONS_PER_PEER, said)
        self.assertGreaterEqual(sum(admitted), MAX_SESSIONS * 9 // 10, said)
        self.assertLess(sum(admitted), MAX_SESSIONS, said)
        self.assertEqual(refusals, {"421 4.7.0 too busy, try again later"}, said)
        self.users_are_served("while the mail service is at its cap")
        release()

        # svwar's probes from pc1: bob's registered 102 and a missing 999 answered alike.
        done = self.run_client("pc1", [sys.executable, self.script("svwar.py", SVWAR),
                                       SERVER_LAN_IP, pc1, "102", "999"])
        try:
            answers = json.loads(done.stdout)
        except ValueError:
            self.fail("the probe did not report:\n" + client_report(done))
        for method, code in (("OPTIONS", "200"), ("REGISTER", "401"), ("INVITE", "407")):
            self.assertTrue(answers[method + " 102"].startswith("SIP/2.0 %s " % code), client_report(done))
            self.assertEqual(answers[method + " 102"], answers[method + " 999"], client_report(done))
        # nmap's sip-enum-users finds nothing to tell extensions apart by: it
        # gives up (its reason shows with -d).
        done = self.run_client("pc1", [
            "nmap", "-d", "-n", "-sU", "-p", "5060", "--script", "sip-enum-users", "--script-args",
            "sip-enum-users.minext=100,sip-enum-users.maxext=105", SERVER_LAN_IP], timeout=120)
        self.assertIn("Server not returning 404 for random extension", done.stdout, client_report(done))
        self.assertNotRegex(done.stdout, r"(?m)^\|\s+10[0-5]: ", client_report(done))
        # VRFY from the internet: a user and a non-user alike (curl sends VRFY
        # for a recipient given without a sender).
        vrfy = {name: self.run_client("inet", ["curl", "-sS", "-m", "20", "smtp://" + WAN_IP,
                                               "--mail-rcpt", name]) for name in ("bob", "nobody")}
        self.assertTrue(vrfy["bob"].stdout.startswith("252 "), client_report(vrfy["bob"]))
        self.assertEqual(vrfy["bob"].stdout, vrfy["nobody"].stdout,
                         client_report(vrfy["bob"]) + "\n" + client_report(vrfy["nobody"]))

        self.assertTrue(self.registered("bob"), self.phones[0].log_tail())
        self.assertUnharmed()

    def users_are_served(self, when):
        """pc2's swaks and POP3 are served: bob sends himself a message and reads it."""
        subject = "sent " + when
        self.assertServed(self.swaks("pc2", SERVER_LAN_IP, "--from", "bob@example.com",
                                     "--to", "bob@example.com", "--h-Subject", subject), "250 2.0.0")
        listed = self.pop3("pc2", "bob", PASSWORD)
        self.assertEqual(listed.returncode, 0, client_report(listed))
        last = listed.stdout.split()[-2]
        read = self.pop3("pc2", "bob", PASSWORD, last)
        self.assertEqual(read.returncode, 0, client_report(read))
        self.assertServed(read, "Subject: " + subject)
