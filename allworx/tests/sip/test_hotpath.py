"""
Tests of the SIP hot path's shortcuts (bench/sip.py measures it): each
must give exactly what the long way gives, and its cost must not grow with
the office.
"""

from prometheus_client import REGISTRY
from twisted.trial import unittest

from allworx.protocols.sip import credentials, headervalues, message
from allworx.protocols.sip.core import Destination
from allworx.protocols.sip.message import Via, make_response, parse
from allworx.tests.siphelpers import Harness, Phone, offer


def _bindings_gauge():
    return REGISTRY.get_sample_value("allworx_sip_bindings")


class RegistrarCostTests(unittest.TestCase):

    def setUp(self):
        self.h = Harness(self.mktemp())
        self.registrar = self.h.core.registrar
        self.alice = Phone(self.h, "101", "192.168.2.11")
        self.bob = Phone(self.h, "102", "192.168.2.12")

    def test_lookups_do_not_sweep_every_user_before_a_binding_is_due(self):
        self.assertEqual(self.alice.register(expires=120).code, 200)
        self.assertEqual(self.bob.register(expires=600).code, 200)
        swept = []

        class Watched(dict):
            def __iter__(inner):
                swept.append(1)
                return dict.__iter__(inner)
        self.registrar.by_user = Watched(self.registrar.by_user)
        for _ in range(10):
            self.registrar.contacts_of("alice")
            self.registrar.expire()
        self.assertEqual(swept, [])
        self.h.clock.advance(121)
        self.assertEqual(self.registrar.contacts_of("alice"), [])
        self.assertEqual(len(swept), 1)
        self.assertEqual(len(self.registrar.contacts_of("bob")), 1)
        self.assertEqual(self.registrar.next_expiry, self.registrar.contacts_of("bob")[0].expires_at)

    def assertIndexesMatch(self):
        """The contact and source indexes hold exactly the bindings by_user holds."""
        every = [b for contacts in self.registrar.by_user.values() for b in contacts.values()]
        self.assertNotIn({}, list(self.registrar.by_user.values()))
        by_contact = {}
        for b in every:
            by_contact.setdefault(b.contact, []).append(b)
        self.assertEqual({c: sorted(map(id, bs)) for c, bs in self.registrar.by_contact.items()},
                         {c: sorted(map(id, bs)) for c, bs in by_contact.items()})
        by_source = {}
        for b in every:
            by_source.setdefault((b.source, b.transport), set()).add(id(b))
        self.assertEqual({k: set(map(id, v.values())) for k, v in self.registrar.by_source.items()},
                         by_source)

    def test_calls_find_phones_without_scanning_the_office(self):
        self.alice.register()
        self.bob.register()
        swept = []

        class Watched(dict):
            def __iter__(inner):
                swept.append(1)
                return dict.__iter__(inner)

            def values(inner):
                swept.append(1)
                return dict.values(inner)
        self.registrar.by_user = Watched(self.registrar.by_user)
        self.assertEqual(self.registrar.phone_at(("192.168.2.12", 5060), "UDP"), "bob")
        self.assertIsNone(self.registrar.phone_at(("192.168.2.12", 5060), "TCP"))
        self.assertIsNone(self.registrar.phone_at(("192.168.2.99", 5060), "UDP"))
        self.assertEqual(self.registrar.destination_of("sip:101@192.168.2.11:5060"),
                         ("UDP", "192.168.2.11", 5060))
        self.assertIsNone(self.registrar.destination_of("sip:199@192.168.2.11:5060"))
        self.assertEqual(swept, [])

    def test_the_indexes_follow_every_change(self):
        self.alice.register(expires=120)
        self.bob.register()
        self.assertIndexesMatch()
        self.alice.register(expires=120, contact="Contact: <sip:101@192.168.2.11:5062>")
        self.alice.register(expires=300)                    # a refresh of the first
        self.assertIndexesMatch()
        self.assertEqual(len(self.registrar.contacts_of("alice")), 2)
        self.h.clock.advance(150)                           # the second one expires
        self.assertEqual(len(self.registrar.contacts_of("alice")), 1)
        self.assertIndexesMatch()
        self.assertEqual(self.alice.register(expires=0).code, 200)
        self.assertIndexesMatch()
        self.assertEqual(self.registrar.contacts_of("alice"), [])
        self.assertIsNone(self.registrar.phone_at(("192.168.2.11", 5060), "UDP"))
        self.h.clock.advance(300)
        self.assertIndexesMatch()

    def test_phone_at_skips_an_expired_binding_not_yet_swept(self):
        self.alice.register(expires=120)
        self.h.clock.advance(121)
        self.assertIsNone(self.registrar.phone_at(("192.168.2.11", 5060), "UDP"))

    def test_a_removed_user_leaves_no_index_behind(self):
        self.alice.register()
        self.bob.register()
        del self.h.office.config.users["bob"]
        self.registrar.forget_removed()
        self.assertIndexesMatch()
        self.assertIsNone(self.registrar.phone_at(("192.168.2.12", 5060), "UDP"))
        self.assertEqual(self.registrar.phone_at(("192.168.2.11", 5060), "UDP"), "alice")

    def test_two_users_on_one_source_both_resolve(self):
        from allworx.protocols.sip.registrar import Binding
        self.registrar.bind(Binding("alice", "101", "sip:101@192.168.2.20:5060", ("192.168.2.20", 5060),
                                    "UDP", 1e12))
        self.registrar.bind(Binding("bob", "102", "sip:102@192.168.2.20:5060", ("192.168.2.20", 5060),
                                    "UDP", 1e12))
        self.assertEqual(self.registrar.phone_at(("192.168.2.20", 5060), "UDP"), "alice")
        self.registrar._remove(self.registrar.by_user["alice"]["sip:101@192.168.2.20:5060"])
        self.assertEqual(self.registrar.phone_at(("192.168.2.20", 5060), "UDP"), "bob")
        self.assertIndexesMatch()

    def test_a_refreshed_binding_is_kept_when_its_first_expiry_passes(self):
        self.alice.register(expires=120)
        self.h.clock.advance(100)
        self.alice.register(expires=120)
        self.h.clock.advance(30)
        self.assertEqual(len(self.registrar.contacts_of("alice")), 1)
        self.h.clock.advance(100)
        self.assertEqual(self.registrar.contacts_of("alice"), [])

    def test_the_bindings_gauge_follows_registrations(self):
        start = _bindings_gauge()
        self.alice.register()
        self.bob.register()
        self.assertEqual(_bindings_gauge(), start + 2)
        self.alice.register()                       # a refresh: no new binding
        self.assertEqual(_bindings_gauge(), start + 2)
        self.assertEqual(self.alice.register(expires=0).code, 200)
        self.assertEqual(_bindings_gauge(), start + 1)

    def test_a_register_through_the_core_is_answered_at_once(self):
        # No Deferred in between: the 401 and the 200 are out when receive returns.
        uri, to = "sip:example.com", "<sip:101@example.com>"
        self.h.receive(self.alice.request("REGISTER", uri, to=to), self.alice.address)
        out = self.h.take()
        self.assertEqual([m.code for m, d in out], [401])
        auth = self.alice.authorization(out[0][0].get("WWW-Authenticate"), "REGISTER", uri)
        self.h.receive(self.alice.request("REGISTER", uri, ["Authorization: " + auth], to=to),
                       self.alice.address)
        self.assertEqual([m.code for m, d in self.h.take()], [200])

    def test_a_retransmitted_register_gets_the_kept_answer_not_a_second_check(self):
        uri, to = "sip:example.com", "<sip:101@example.com>"
        challenge = self.alice.send(self.alice.request("REGISTER", uri, to=to))[0][0]
        auth = self.alice.authorization(challenge.get("WWW-Authenticate"), "REGISTER", uri)
        data = self.alice.request("REGISTER", uri, ["Authorization: " + auth], to=to)
        checks = []
        check = self.registrar.checker.check_phone
        self.registrar.checker.check_phone = lambda *a: checks.append(1) or check(*a)
        self.h.receive(data, self.alice.address)
        [(first, _)] = self.h.take()
        self.assertEqual(self.h.core.server_tx, {})          # no transaction kept: only its bytes
        self.h.receive(data, self.alice.address)
        [(again, _)] = self.h.take()
        self.assertEqual((first.code, again.to_bytes()), (200, first.to_bytes()))
        self.assertEqual(len(checks), 1)                       # the nonce count was not replayed
        self.h.clock.advance(33)
        self.assertEqual(self.h.core.completed, {})
        self.h.receive(data, self.alice.address)
        self.assertEqual([m.code for m, d in self.h.take()], [403])     # now a replay

    def test_a_challenge_is_stateless_and_a_retransmission_challenged_afresh(self):
        uri, to = "sip:example.com", "<sip:101@example.com>"
        data = self.alice.request("REGISTER", uri, to=to)
        self.h.receive(data, self.alice.address)
        [(first, _)] = self.h.take()
        self.assertEqual((self.h.core.server_tx, self.h.core.completed), ({}, {}))
        self.h.receive(data, self.alice.address)
        [(again, _)] = self.h.take()
        self.assertEqual((first.code, again.code), (401, 401))
        self.assertEqual(again.to_tag, first.to_tag)
        self.assertNotEqual(again.get("WWW-Authenticate"), first.get("WWW-Authenticate"))
        # Either challenge's nonce is good for the answer.
        for challenge in (first, again):
            auth = self.alice.authorization(challenge.get("WWW-Authenticate"), "REGISTER", uri)
            self.h.receive(self.alice.request("REGISTER", uri, ["Authorization: " + auth], to=to),
                           self.alice.address)
            self.assertEqual([m.code for m, d in self.h.take()], [200])

    def test_a_register_over_tcp_is_answered_and_nothing_kept(self):
        uri, to = "sip:example.com", "<sip:101@example.com>"
        data = self.alice.request("REGISTER", uri, to=to)
        self.h.receive(data, self.alice.address, transport="TCP")
        self.assertEqual((self.h.core.server_tx, self.h.core.completed), ({}, {}))
        self.assertEqual([m.code for m, d in self.h.take()], [401])


class AuthorizationTests(unittest.TestCase):

    def test_parsed_fields_are_the_callers_own(self):
        value = 'Digest username="101", realm="example.com", nonce="n", response="r"'
        first = credentials.parse_authorization(value)
        first["username"] = "changed"
        self.assertEqual(credentials.parse_authorization(value)["username"], "101")

    def test_quoted_bare_and_unclosed_values(self):
        f = credentials.parse_authorization('Digest a="x, y", b=bare, c="", d="open, e=\\"q\\"')
        self.assertEqual((f["a"], f["b"], f["c"]), ("x, y", "bare", ""))
        self.assertEqual(f["d"], '"open')
        self.assertEqual(f["e"], '\\"q\\"')

    def test_not_digest_is_refused_even_after_a_digest_value(self):
        credentials.parse_authorization('Digest username="101"')
        self.assertRaises(ValueError, credentials.parse_authorization, "Basic abc")


REGISTER = (b"REGISTER sip:example.com SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.168.2.11:5060;branch=z9hG4bKhot1;rport\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:101@example.com>;tag=a\r\n"
            b"To: <sip:101@example.com>\r\nCall-ID: hot1\r\nCSeq: 7 REGISTER\r\n"
            b"Contact: <sip:101@192.168.2.11>, <sip:101@192.168.2.11:5062>\r\n"
            b"Content-Length: 0\r\n\r\n")


class ParseTests(unittest.TestCase):

    def test_crlf_and_bare_lf_and_folded_headers_parse_alike(self):
        fast = parse(REGISTER)
        lf = parse(REGISTER.replace(b"\r\n", b"\n"))
        folded = parse(REGISTER.replace(b"Call-ID: hot1", b"Call-ID:\r\n hot1"))
        for other in (lf, folded):
            self.assertEqual(other.headers, fast.headers)
            self.assertEqual((other.method, other.uri, other.body), (fast.method, fast.uri, fast.body))
        self.assertEqual(fast.get_all("Contact"), ["<sip:101@192.168.2.11>", "<sip:101@192.168.2.11:5062>"])

    def test_a_continuation_before_any_header_is_refused(self):
        bad = REGISTER.replace(b"SIP/2.0\r\nVia", b"SIP/2.0\r\n folded\r\nVia")
        self.assertRaises(message.SipParseError, parse, bad)
        self.assertRaises(message.SipParseError, parse, bad.replace(b"\r\n folded", b"\r\n\tfolded"))

    def test_continuations_anywhere_are_joined_whatever_was_read_before(self):
        fast = parse(REGISTER)
        for where in (b"Max-Forwards: 70", b"To: <sip:101@example.com>", b"Content-Length: 0"):
            name, _, value = where.partition(b": ")
            for fold in (b":\r\n ", b":\r\n\t", b": \r\n  \t "):
                folded = parse(REGISTER.replace(where, name + fold + value))
                self.assertEqual(folded.headers, fast.headers, (where, fold))
                self.assertEqual(folded.get(name.decode()), fast.get(name.decode()))
        # A continuation after the last header, and lines of other white space, which are ignored.
        tail = parse(REGISTER.replace(b"Content-Length: 0\r\n", b"Content-Length:\r\n 0\r\n\x0b\r\n"))
        self.assertEqual(tail.headers, fast.headers)

    def test_at_most_max_headers_lines(self):
        head = b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKm\r\n" \
               b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: m\r\nCSeq: 1 OPTIONS\r\n"
        fill = message.MAX_HEADERS - 5
        ok = head + b"X-A: 1\r\n" * fill + b"\x0c\r\n" * 3 + b"\r\n"
        self.assertEqual(len(parse(ok).get_all("X-A")), fill)
        self.assertRaises(message.SipParseError, parse, head + b"X-A: 1\r\n" * (fill + 1) + b"\r\n")

    def test_cseq_memo_refuses_what_it_refused_before(self):
        self.assertEqual(message.parse_cseq("7 REGISTER"), (7, "REGISTER"))
        self.assertEqual(message.parse_cseq("7 REGISTER"), (7, "REGISTER"))
        for bad in ("x REGISTER", "7", "99999999999 INVITE"):
            self.assertRaises(message.SipParseError, message.parse_cseq, bad)
            self.assertRaises(message.SipParseError, message.parse_cseq, bad)


class HeaderIndexTests(unittest.TestCase):
    """`SipMessage.get` reads an index of first values: always what a scan of `headers` gives."""

    @staticmethod
    def scan(msg, name):
        name = message.canonical(name)
        return next((v for k, v in msg.headers if k == name), None)

    def check(self, msg):
        for name in ("Via", "v", "From", "to", "Contact", "m", "Route", "X-Other", "Call-ID",
                     "content-length", "Content-Length", "CSeq"):
            self.assertEqual(msg.get(name), self.scan(msg, name), name)

    def test_parsed_then_changed(self):
        import random
        rnd = random.Random(5)
        data = (b"INVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h1;branch=z9hG4bK1, SIP/2.0/UDP h2\r\n"
                b"Via: SIP/2.0/UDP h3\r\nf: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\ni: c1\r\n"
                b"CSeq: 1 INVITE\r\nContact: ,\r\nm: <sip:a@1.2.3.4>\r\nRoute:\r\nX-Other: \r\n"
                b"Content-Length: 0\r\n\r\n")
        msg = parse(data)
        self.check(msg)
        self.assertEqual(msg.get("X-Other"), "")
        self.assertIsNone(msg.get("Content-Length"))
        for step in range(300):
            op = rnd.choice(("set", "add", "add_first", "remove", "pop_first", "replace_first"))
            name = rnd.choice(("Via", "Contact", "X-Other", "Route", "To"))
            value = "v%d" % step
            if op == "set":
                msg.set(name, value)
            elif op == "add":
                msg.add(name, value)
            elif op == "add_first":
                msg.add(name, value, first=True)
            elif op == "remove":
                msg.remove(name)
            elif op == "pop_first":
                expected = self.scan(msg, name)
                self.assertEqual(msg.pop_first(name), expected)
            elif self.scan(msg, name) is not None:
                msg.replace_first(name, value)
            else:
                self.assertRaises(KeyError, msg.replace_first, name, value)
            self.check(msg)

    def test_made_here(self):
        msg = message.Response([("Via", "SIP/2.0/UDP a"), ("Via", "SIP/2.0/UDP b")], code=200)
        self.check(msg)
        msg.pop_first("Via")
        self.check(msg)
        self.assertEqual(msg.get("Via"), "SIP/2.0/UDP b")


class ViaRewriteTests(unittest.TestCase):

    def setUp(self):
        self.h = Harness(self.mktemp())
        self.seen = []
        self.h.core.registrar.handle = lambda request, source, transport: self._seen(request)

    def _seen(self, request):
        self.seen.append(request)
        return message.make_response(request, 200)

    def test_the_remembered_via_is_what_parsing_the_rewritten_text_gives(self):
        for via in ("SIP/2.0/UDP 192.168.2.11:5060;branch=z9hG4bKv1;rport",
                    "SIP/2.0/UDP 192.168.2.11:5060;branch=z9hG4bKv2;RPORT;alias",
                    "SIP/2.0/UDP 192.168.2.11;branch=z9hG4bKv3",
                    "SIP/2.0/UDP 192.168.2.11:5060 ; rport ; branch=z9hG4bKv4"):
            data = REGISTER.replace(b"SIP/2.0/UDP 192.168.2.11:5060;branch=z9hG4bKhot1;rport",
                                    via.encode())
            # Sent from elsewhere than its Via says: `received` is added (RFC 3261 18.2.1).
            self.h.core.receive(data, Destination("UDP", "192.168.2.12", 5999))
            request = self.seen[-1]
            text = request.get("Via")
            self.assertIn("received=192.168.2.12", text)
            self.assertEqual(request.top_via, Via._parse(text), via)
            self.assertEqual(request.headers.count(("Via", text)), 1)
            self.assertEqual([k for k, _ in request.headers].count("Via"), 1)

    def test_received_only_when_the_source_differs_or_rport_asks(self):
        cases = [("SIP/2.0/UDP 192.168.2.11:5060;branch=z9hG4bKr1", None),
                 ("SIP/2.0/UDP 192.168.2.11:5060;branch=z9hG4bKr2;rport",
                  "SIP/2.0/UDP 192.168.2.11:5060;branch=z9hG4bKr2;rport=5999;received=192.168.2.11"),
                 ("SIP/2.0/UDP phone.example.com:5060;branch=z9hG4bKr3",
                  "SIP/2.0/UDP phone.example.com:5060;branch=z9hG4bKr3;received=192.168.2.11")]
        for via, expected in cases:
            data = REGISTER.replace(b"SIP/2.0/UDP 192.168.2.11:5060;branch=z9hG4bKhot1;rport",
                                    via.encode())
            self.h.core.receive(data, Destination("UDP", "192.168.2.11", 5999))
            self.assertEqual(self.seen[-1].get("Via"), expected or via)

    def test_our_own_via_is_remembered_as_parsing_it_gives(self):
        core = self.h.core
        for dest in (Destination("UDP", "192.168.2.11", 5060), Destination("tcp", "127.0.0.1", 5070),
                     Destination("TLS", "203.0.113.9", 5061)):
            text = core.via_for(dest, "z9hG4bKawr1234")
            self.assertEqual(Via.parse(text), Via._parse(text))
            text = core.via_for(dest)
            self.assertEqual(Via.parse(text), Via._parse(text))


class HeapTests(unittest.TestCase):

    def test_timer_j_keeps_bytes_only(self):
        h = Harness(self.mktemp())
        phone = Phone(h, "101", "192.168.2.11")
        phone.send(phone.request("OPTIONS", "sip:example.com"))
        phone.register()
        self.assertEqual(len(h.core.completed), 2)     # OPTIONS' answer and the 200 (the 401 is stateless)
        self.assertEqual({type(v) for v in h.core.completed.values()}, {bytes})

    def test_a_refused_answer_is_kept_as_nothing_to_send(self):
        h = Harness(self.mktemp())
        h.core._keep(("z9hG4bKx", "192.168.2.11", 5060, "OPTIONS"), None)
        self.assertEqual(list(h.core.completed.values()), [b""])


class ShortcutEquivalenceTests(unittest.TestCase):
    """The hot path's quicker readings give what the long way gives, on every input."""

    def _via_by_pattern(self, value):
        m = headervalues._VIA.match(value.strip())
        if not m:
            raise message.SipParseError("bad Via")
        host, port = message.split_hostport(m.group(2).strip())
        return Via(m.group(1).upper(), host, port, message.parse_params(m.group(3) or ""))

    def test_via_without_the_pattern_reads_as_the_pattern_does(self):
        values = ["SIP/2.0/UDP 192.168.2.11:5060;branch=z9hG4bK1;rport",
                  "SIP/2.0/udp 192.168.2.11;branch=z9hG4bK2;received=1.2.3.4",
                  "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK3",
                  "SIP/2.0/TCP host.example.com",
                  "  SIP/2.0/UDP 10.0.0.1:5060;branch=x;;alias  ",
                  "SIP/2.0/UDP 10.0.0.1:5060 ;branch=x",
                  "SIP/2.0/UDP\t10.0.0.1:5060;branch=x",
                  "SIP / 2.0 / UDP 10.0.0.1;branch=x",
                  "SIP/2.0/UDP ;branch=x", "SIP/2.0/ 10.0.0.1", "SIP/2.0/UDP",
                  "SIP/2.0/UDP 10.0.0.1:99999;branch=x", "SIP/2.0/UDP 10.0.0.1:;branch=x",
                  "SIP/2.0/UDP 10.0.0.1:5060;branch=\"q\"", "SIP/2.0/UDP a b",
                  "SIP/2.0/U2P 10.0.0.1", "SIP/2.0/ÜDP 10.0.0.1", "SIP/2.0/UDP 10.0.0.1\x0b;b=1"]
        for value in values:
            try:
                expected = self._via_by_pattern(value)
            except message.SipParseError:
                self.assertRaises(message.SipParseError, Via._parse, value)
                continue
            self.assertEqual(Via._parse(value), expected, value)

    def test_authorization_pattern_reads_as_the_per_character_one(self):
        import random
        import re
        reference = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')
        rnd = random.Random(22)
        texts = ['username="1005", realm="example.com", nonce="a.b.c", uri="sip:x", '
                 'response="00ff", algorithm=MD5, cnonce="ab", qop=auth, nc=00000001',
                 'a="x\\"y", b="unterminated, c=1', 'a="\\\\"', 'a="", b', 'a = "1" ,b=2']
        texts += ["".join(rnd.choice('ab=", \\\t') for _ in range(rnd.randint(0, 16)))
                  for _ in range(20000)]
        for text in texts:
            self.assertEqual(credentials._AUTH_PARAM.findall(text), reference.findall(text), text)

    def test_authorization_without_escapes_reads_as_the_escaping_pattern(self):
        import random
        rnd = random.Random(23)
        texts = ['username="1005", realm="example.com", nonce="a.b", uri="sip:x", '
                 'response="00ff", algorithm=MD5, cnonce="ab", qop=auth, nc=00000001',
                 'b="unterminated, c=1', 'a="", b', 'a = "1" ,b=2', 'x"a=b"', 'a="k=v",b=c', 'a=b c=d']
        texts += ["".join(rnd.choice('ab=", \t-') for _ in range(rnd.randint(0, 18)))
                  for _ in range(20000)]
        for text in texts:
            expected = {}
            for name, whole, quoted, bare in credentials._AUTH_PARAM.findall(text):
                expected[name.lower()] = quoted if whole[:1] == '"' and not bare else whole
            credentials._LAST_AUTH[0] = None
            self.assertEqual(credentials.parse_authorization("Digest " + text), expected, text)

    def test_tags_read_through_the_memo_are_the_parsed_ones(self):
        for value in ("<sip:101@example.com>;tag=abc", "<sip:101@example.com>",
                      '"A;tag=x" <sip:101@example.com;tag=uri>;TAG=Up', "sip:101@example.com;tag=t2"):
            request = message.Request([("From", value), ("To", value)])
            for _ in range(2):
                expected = message.NameAddr.parse(value).params.get("tag")
                self.assertEqual(request.from_tag, expected)
                self.assertEqual(request.to_tag, expected)
        self.assertRaises(message.SipParseError, message.header_tag, "<sip:unclosed")

    def test_nonce_mac_is_keyed_blake2s_of_the_secret(self):
        import hashlib
        from twisted.internet import task
        book = credentials.NonceBook(task.Clock(), secret=b"k" * 32)
        for text in ("a", "5f.1", ""):
            self.assertEqual(book._mac(text),
                             hashlib.blake2s(text.encode(), key=b"k" * 32, digest_size=12).hexdigest())
        nonce = book.make()
        self.assertEqual(book.check(nonce, 1), "ok")
        made, serial, mac = nonce.split(".")
        self.assertEqual(mac, book._mac("%s.%s" % (made, serial)))
        for forged in ("%s.%x.%s" % (made, int(serial, 16) + 1, mac), nonce + "0", nonce[:-1] + "\xe9",
                       "%s.%s.%s.%s" % (made, serial, "00", mac), ".".join([made, serial])):
            self.assertEqual(book.check(forged, 1), "bad", forged)
        book.secret = b"other" * 7          # a new secret is used at once
        self.assertEqual(credentials.NonceBook(task.Clock(), secret=b"other" * 7)._mac("a"), book._mac("a"))

    def test_responses_copy_what_the_long_filter_copies(self):
        def long_way(request, code, to_tag):
            headers = [(k, v) for k, v in request.headers
                       if k in ("Via", "From", "To", "Call-ID", "CSeq", "Record-Route")
                       and not (k == "Record-Route" and not (200 <= code < 300 or 100 < code < 200))]
            if to_tag is not None and code != 100:
                headers = [(k, v if k != "To" or "tag=" in v.lower() else "%s;tag=%s" % (v, to_tag))
                           for k, v in headers]
            return headers
        request = message.Request([
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2"),
            ("Record-Route", "<sip:p1;lr>"), ("From", "<sip:a@x>;tag=f"), ("To", "<sip:b@x>"),
            ("Call-ID", "c1"), ("CSeq", "1 INVITE"), ("Contact", "<sip:a@1.2.3.4>"),
            ("Record-Route", "<sip:p2;lr>")], method="INVITE", uri="sip:b@x")
        tagged = message.Request([(k, v + ";TAG=t" if k == "To" else v) for k, v in request.headers],
                                 method="INVITE", uri="sip:b@x")
        for code in (100, 101, 180, 199, 200, 202, 299, 300, 401, 487, 500, 603):
            for req in (request, tagged):
                for to_tag in (None, "xyz"):
                    self.assertEqual(message.make_response(req, code, to_tag=to_tag).headers,
                                     long_way(req, code, to_tag), (code, to_tag))


class KeptAnswersTests(unittest.TestCase):

    def test_kept_at_least_timer_j_and_at_most_a_second_more(self):
        from twisted.internet import task
        from allworx.protocols.sip.timerj import KeptAnswers
        clock = task.Clock()
        clock.advance(100.25)
        kept = KeptAnswers(clock)
        for i in range(50):
            kept.keep(("b%d" % i, "h", 5060, "REGISTER"), b"answer %d" % i)
            clock.advance(0.01)
        kept.keep(("none", "h", 5060, "OPTIONS"), None)
        self.assertEqual(kept[("none", "h", 5060, "OPTIONS")], b"")
        self.assertEqual(len(kept.order), 1)            # one entry for the second, not one an answer
        clock.advance(32)                               # 32 s after the last one was kept
        self.assertEqual(len(kept), 51)
        clock.pump([1.0])
        self.assertEqual((dict(kept), kept.sweeper, len(kept.order)), ({}, None, 0))
        kept.keep(("again", "h", 5060, "REGISTER"), b"x")      # the sweeper starts again
        self.assertIsNotNone(kept.sweeper)
        clock.pump([1.0] * 33)
        self.assertEqual(kept, {})


class YoungGarbageTests(unittest.TestCase):
    """What the REGISTER path keeps a while is nothing the older collections must walk."""

    def test_nonce_counts_are_untracked_once_looked_at(self):
        import gc
        from twisted.internet import task
        book = credentials.NonceBook(task.Clock())
        nonce = book.make()
        self.assertTrue(book.use(nonce, 1))
        self.assertTrue(book.use(nonce, 2))
        self.assertFalse(book.use(nonce, 2))                   # still a replay
        gc.collect()
        self.assertFalse(gc.is_tracked(book.counts[nonce]))
        self.assertEqual(book.counts[nonce][0], 2)

    def test_the_via_memo_stays_small(self):
        for i in range(3 * headervalues.VIA_MEMO_SIZE):
            Via.parse("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKmemo%d" % i)
        self.assertLessEqual(len(headervalues._VIA_MEMO), headervalues.VIA_MEMO_SIZE + 1)

    def test_kept_keys_share_the_method_and_host_strings(self):
        # Timer J keeps a key per answer for 32 s: its method and sent-by host are one string each.
        keys = []
        for i in range(2):
            data = REGISTER.replace(b"branch=z9hG4bKhot1", b"branch=z9hG4bKshare%d" % i)
            request = parse(bytes(bytearray(data)))
            via = request.top_via
            keys.append((request.method, via.host))
        self.assertEqual(keys[0], keys[1])
        self.assertIs(keys[0][0], keys[1][0])
        self.assertIs(keys[0][1], keys[1][1])

    def test_the_registrars_to_tag_is_one_per_call_id_and_from(self):
        from allworx.protocols.sip import registrar
        tags = set()
        for call_id, sender in (("c1", "<sip:101@example.com>;tag=a"), ("c1", "<sip:101@example.com>;tag=b"),
                                ("c1<sip:1", "01@example.com>;tag=a"), ("c2", "<sip:101@example.com>;tag=a")):
            request = message.Request([("Call-ID", call_id), ("From", sender)], method="REGISTER")
            again = message.Request([("Call-ID", call_id), ("From", sender), ("CSeq", "2 REGISTER")],
                                    method="REGISTER")
            tag = registrar._tag(request)
            self.assertRegex(tag, "^[0-9a-f]{10}$")
            self.assertEqual(registrar._tag(again), tag)
            tags.add(tag)
        self.assertEqual(len(tags), 4)


class CallGarbageTests(unittest.TestCase):
    """
    A call's transactions and the call that holds them are freed by reference
    counting when it ends: nothing left for the cyclic collector, whose passes
    cost the server about 8 % of its CPU under SIPp's call load (a hundred
    objects a call lived on in cycles of a call, its transactions and their
    callbacks).
    """

    def setUp(self):
        self.h = Harness(self.mktemp(), mailboxes=False)
        self.alice = Phone(self.h, "101", "192.168.2.11")
        self.bob = Phone(self.h, "102", "192.168.2.12")
        self.alice.register()
        self.bob.register()
        self.h.take()

    def call(self, n, answer):
        out = self.alice.send(self.alice.request("INVITE", "sip:102@example.com",
                                                 ["Content-Type: application/sdp"], offer()))
        invite = [m for m, _ in out if m.is_request and m.method == "INVITE"][0]
        tag = "r%d" % n
        for code in (180, answer):
            response = make_response(invite, code, to_tag=tag)
            if code == 200:
                response.add("Contact", "<sip:102@192.168.2.12>")
            self.h.receive(response.to_bytes(), ("192.168.2.12", 5060))
        got = [m.code for m, _ in self.h.take() if not m.is_request]
        self.assertIn(answer, got)
        if answer == 200:
            self.alice.send(self.alice.request("ACK", "sip:102@192.168.2.12",
                                               ["Route: <sip:192.168.2.254:5060;lr>"], to_tag=tag,
                                               to="<sip:102@example.com>", cseq=1))
            out = self.alice.send(self.alice.request("BYE", "sip:102@192.168.2.12",
                                                     ["Route: <sip:192.168.2.254:5060;lr>"], to_tag=tag,
                                                     to="<sip:102@example.com>", cseq=2))
            bye = out[0][0]
            self.h.receive(make_response(bye, 200).to_bytes(), ("192.168.2.12", 5060))
        else:
            self.alice.send(self.alice.request("ACK", "sip:102@example.com", [], to_tag=tag,
                                               to="<sip:102@example.com>", cseq=1))
        self.h.take()

    def test_answered_and_refused_calls_leave_no_cycles(self):
        import gc
        self.call(0, 200)           # what the first call makes once (caches, the history)
        self.call(1, 486)
        self.h.clock.advance(100)
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        for n in range(2, 22):
            self.call(n, 200 if n % 2 else 486)
        self.h.clock.advance(0.6)
        self.assertEqual(gc.collect(), 0)
        self.h.clock.advance(100)   # every timer (D, H, I, J, K, M) has run
        self.assertEqual(gc.collect(), 0)
        self.assertEqual((self.h.core.server_tx, self.h.core.client_tx), ({}, {}))
