"""
Extension enumeration (issue 21, item 6): sipvicious' svwar asks for
sip:EXT@server with INVITE, REGISTER or OPTIONS (and a SUBSCRIBE does as
well) and lists the extensions whose answer differs from a missing one's.
An unauthenticated prober must get the same answer for 101 as for 999, apart
from what each answer echoes of its own request (tags, branch, Call-ID) and
the fresh nonce; after a wrong answer to the challenge too, and by the same
path through the code.
"""

import re

from twisted.trial import unittest

from allworx.protocols.sip import credentials as credentials_module
from allworx.protocols.sip.message import parse
from allworx.protocols.sip.transaction import T1
from allworx.tests.siphelpers import Harness, Phone, offer

PROBER = ("192.168.2.66", 5060)      # a LAN host where no phone registered
WAN = ("198.51.100.10", 5060)
NUMBERS = ["101", "999", "102", "103", "alice", "nobody", "400"]


def svwar_request(method, ext, host="192.168.2.254", source=PROBER, n=1, headers=()):
    """A request the way svwar builds it: To and Request-URI the extension, From the same."""
    lines = ["%s sip:%s@%s SIP/2.0" % (method, ext, host),
             "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK-%d-%s;rport" % (source[0], source[1], n, ext),
             "Max-Forwards: 70",
             "To: \"%s\" <sip:%s@%s>" % (ext, ext, host),
             "From: \"%s\" <sip:%s@%s>;tag=6%d%s" % (ext, ext, host, n, ext),
             "User-Agent: friendly-scanner",
             "Call-ID: %d%s@svwar" % (n, ext),
             "Contact: <sip:%s@%s:%d>" % (ext, source[0], source[1]),
             "CSeq: 1 %s" % method,
             "Accept: application/sdp"] + list(headers)
    body = offer(source[0]).encode() if method == "INVITE" else b""
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def normalized(data, ext):
    """An answer with what it echoes of its request, its tags and its nonce taken out."""
    text = data.decode("utf-8", "replace")
    text = re.sub(r";tag=[^;\r\n>]*", ";tag=T", text)
    text = re.sub(r"branch=[^;\r\n]*", "branch=B", text)
    text = re.sub(r'nonce="[^"]*"', 'nonce="N"', text)
    text = re.sub(r"(?m)^Call-ID: .*$", "Call-ID: C", text)
    return text.replace("sip:%s@" % ext, "sip:EXT@").replace('"%s"' % ext, '"EXT"')


class EnumerationTests(unittest.TestCase):

    def setUp(self):
        self.h = Harness(self.mktemp())
        # Phones registered: enumeration must not tell registered from not.
        for ext, host in (("101", "192.168.2.11"), ("102", "192.168.2.12")):
            self.assertEqual(Phone(self.h, ext, host).register().code, 200)
        self.h.take()

    def probe(self, data, source=PROBER):
        """Every datagram the server sent `source` for `data`, its timers run out."""
        self.h.sent = []
        self.h.receive(data, source)
        self.h.clock.pump([T1] * 140)
        sent, self.h.sent = self.h.sent, []
        return [d for d, dest in sent if (dest.host, dest.port) == source]

    def assertAlike(self, answers):
        """`answers`: {ext: [datagrams]}; all the same once normalized."""
        shapes = {ext: [normalized(d, ext) for d in data] for ext, data in answers.items()}
        first = shapes[NUMBERS[0]]
        self.assertTrue(first, "no answer at all to %s" % NUMBERS[0])
        for ext, shape in shapes.items():
            self.assertEqual(shape, first, "the answer for %s differs from %s's" % (ext, NUMBERS[0]))

    def test_svwar_probes_are_answered_alike(self):
        for method in ("INVITE", "REGISTER", "OPTIONS", "SUBSCRIBE"):
            answers = {}
            for n, ext in enumerate(NUMBERS):
                headers = ["Event: message-summary"] if method == "SUBSCRIBE" else []
                answers[ext] = self.probe(svwar_request(method, ext, n=n, headers=headers))
            self.assertAlike(answers)
            code = parse(answers["101"][0]).code
            self.assertEqual(code, {"INVITE": 407, "REGISTER": 401, "OPTIONS": 200,
                                    "SUBSCRIBE": 401}[method], method)
        self.assertEqual(self.h.core.registrar.active_calls(), [])

    def test_probes_by_domain_and_from_the_wan_are_answered_alike(self):
        for method in ("INVITE", "REGISTER", "OPTIONS"):
            self.assertAlike({ext: self.probe(svwar_request(method, ext, host="example.com", n=n))
                              for n, ext in enumerate(NUMBERS)})
            self.assertAlike({ext: self.probe(svwar_request(method, ext, source=WAN, n=n), WAN)
                              for n, ext in enumerate(NUMBERS)})

    def wrong_answer(self, method, ext, n):
        """The prober's second request, answering the challenge with a guessed password."""
        header = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
        first = self.probe(svwar_request(method, ext, n=n))
        challenge = parse(first[0]).get("WWW-Authenticate" if method == "REGISTER" else "Proxy-Authenticate")
        uri = "sip:%s@192.168.2.254" % ext
        auth = Phone(self.h, ext, PROBER[0], password="guess").authorization(challenge, method, uri)
        return self.probe(svwar_request(method, ext, n=n + 100, headers=["%s: %s" % (header, auth)]))

    def test_a_wrong_answer_is_refused_alike_by_the_same_path(self):
        digests = []
        real = credentials_module.digest_response

        def counting(*args, **kwargs):
            digests.append(args[0])
            return real(*args, **kwargs)
        self.patch(credentials_module, "digest_response", counting)
        for method in ("REGISTER", "INVITE"):
            answers = {}
            for n, ext in enumerate(NUMBERS[:4]):
                # A fresh source each time: the throttle's count is not what is compared.
                self.h.core.registrar.throttle.unlock()
                del digests[:]
                answers[ext] = self.wrong_answer(method, ext, n)
                self.assertEqual(digests, ["MD5"], "%s for %s: digest computed %r" % (method, ext, digests))
            self.assertAlike({k: v for k, v in answers.items()})
            self.assertEqual(parse(answers["101"][0]).code, 403)

    def test_the_challenge_is_stateless_and_its_ack_absorbed(self):
        self.h.receive(svwar_request("INVITE", "102"), PROBER)
        [(first, _)] = self.h.take()
        self.assertEqual(first.code, 407)
        self.assertTrue(first.to_tag.startswith("awc"))
        self.assertEqual(self.h.core.server_tx, {})
        self.h.clock.pump([T1] * 140)
        self.assertEqual(self.h.take(), [], "a challenge was sent again: amplification")
        ack = Phone(self.h, "102", PROBER[0]).request("ACK", "sip:102@example.com", cseq=1,
                                                       to_tag=first.to_tag)
        self.h.receive(ack, PROBER)
        self.assertEqual(self.h.take(), [])

    def test_a_phone_that_answers_the_challenge_calls(self):
        stranger = Phone(self.h, "101", PROBER[0])
        out = stranger.invite("sip:102@example.com", ["Content-Type: application/sdp"], offer())
        self.assertEqual(out[0][0].code, 100)
        self.assertEqual({d.host for m, d in out if m.is_request and m.method == "INVITE"},
                         {"192.168.2.12"})
        # ... and the authenticated caller learns 999 does not exist.
        out = stranger.invite("sip:999@example.com", ["Content-Type: application/sdp"], offer())
        self.assertEqual([m.code for m, _ in out], [100, 404])

    def test_a_registered_phone_calls_without_a_challenge(self):
        alice = Phone(self.h, "101", "192.168.2.11")
        out = alice.send(alice.request("INVITE", "sip:999@example.com", body=offer()))
        self.assertEqual([m.code for m, _ in out], [100, 404])
        # Another port of the same host is not the phone.
        other = Phone(self.h, "101", "192.168.2.11", port=5062)
        out = other.send(other.request("INVITE", "sip:999@example.com", body=offer()))
        self.assertEqual([m.code for m, _ in out], [407])

    def test_guessing_through_invite_is_throttled(self):
        throttle = self.h.core.registrar.throttle
        for n in range(throttle.user_limit):
            self.assertEqual(parse(self.wrong_answer("INVITE", "102", n)[-1]).code, 403)
        self.assertTrue(throttle.locked_until(PROBER[0], "bob"))
        # The right password from that source is now refused unchecked.
        out = Phone(self.h, "102", PROBER[0]).invite("sip:101@example.com", body=offer())
        self.assertEqual([m.code for m, _ in out], [403])
        self.assertIn("locked until", out[0][0].reason)

    def test_the_right_password_is_admitted_after_the_delay(self):
        """INVITE's logins follow the throttle's one rule: later after failures, then admitted."""
        throttle = self.h.core.registrar.throttle
        for n in range(2):
            self.assertEqual(parse(self.wrong_answer("INVITE", "102", n)[-1]).code, 403)
        self.assertGreater(throttle.delay(PROBER[0], "bob"), 0)
        caller = Phone(self.h, "102", PROBER[0])
        uri = "sip:101@example.com"
        first = parse(self.probe(svwar_request("INVITE", "102", n=50))[0])
        challenge = [v for k, v in first.headers
                     if k == "Proxy-Authenticate" and "algorithm=MD5" in v][0]
        invite = caller.request("INVITE", uri, ["Proxy-Authorization: " + caller.authorization(
            challenge, "INVITE", uri)], offer())
        self.h.sent = []
        self.h.receive(invite, PROBER)
        self.h.receive(invite, PROBER)      # retransmitted while the login waits
        self.assertEqual(self.h.take(), [], "answered before the delay")
        self.h.clock.advance(throttle.delay(PROBER[0], "bob"))
        out = self.h.take()
        self.assertEqual([m.code for m, _ in out if not m.is_request][:1], [100])
        self.assertEqual(len([m for m, d in out if m.is_request and m.method == "INVITE"]), 1,
                         "the retransmission started a second call")

    def test_an_answer_that_is_not_ascii_is_refused_like_any_wrong_one(self):
        for ext in ("101", "999"):
            first = self.probe(svwar_request("REGISTER", ext, n=7))
            challenge = parse(first[0]).get("WWW-Authenticate")
            auth = Phone(self.h, ext, PROBER[0]).authorization(challenge, "REGISTER",
                                                               "sip:%s@192.168.2.254" % ext)
            auth = auth.replace('response="', 'response="\u00e9', 1)
            out = self.probe(svwar_request("REGISTER", ext, n=8, headers=["Authorization: " + auth]))
            self.assertEqual([parse(d).code for d in out], [403], ext)
