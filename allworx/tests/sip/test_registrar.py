"""Tests of the registrar: digest MD5 and SHA-256, nonces, bindings, failures."""

from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from allworx.interfaces import IRegistrations
from allworx.protocols.sip.message import NameAddr
from allworx.protocols.sip.credentials import (
    NONCE_LIFETIME, NonceBook, challenge_algorithms, digest_response, parse_authorization)
from allworx.protocols.sip.registrar import MAX_CONTACTS
from allworx.tests.siphelpers import Harness, Phone


class DigestTests(unittest.TestCase):

    def test_rfc2617_example(self):
        # RFC 2617 section 3.5: Mufasa / Circle Of Life.
        import hashlib
        ha1 = hashlib.md5(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()
        self.assertEqual(
            digest_response("MD5", ha1, "GET", "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                            "00000001", "0a4f113b", "auth"),
            "6629fae49393a05397450978507c4ef1")

    def test_parse_authorization(self):
        f = parse_authorization('Digest username="101", realm="example.com", nc=00000001, '
                                'response="ab\\"c", qop=auth')
        self.assertEqual((f["username"], f["nc"], f["qop"]), ("101", "00000001", "auth"))
        self.assertRaises(ValueError, parse_authorization, "Basic abc")

    def test_nonce_lifetime_and_replay(self):
        clock = task.Clock()
        book = NonceBook(clock)
        nonce = book.make()
        self.assertEqual(book.check(nonce, 1), "ok")
        self.assertTrue(book.use(nonce, 1))
        self.assertFalse(book.use(nonce, 1))
        self.assertTrue(book.use(nonce, 2))
        forged = nonce[:-1] + ("1" if nonce.endswith("0") else "0")   # always a different nonce
        self.assertEqual(book.check(forged, 1), "bad")
        self.assertEqual(NonceBook(clock).check(nonce, 1), "bad")
        clock.advance(NONCE_LIFETIME + 1)
        self.assertEqual(book.check(nonce, 3), "stale")

    def test_challenge_algorithms(self):
        class R:
            def __init__(self, ua):
                self.ua = ua

            def get(self, name, default=None):
                return self.ua
        self.assertEqual(challenge_algorithms(R("baresip v1.0.0")), ("MD5",))
        self.assertEqual(challenge_algorithms(R("Yealink T46")), ("SHA-256", "MD5"))


class RegistrarTests(unittest.TestCase):

    def setUp(self):
        self.h = Harness(self.mktemp())
        self.alice = Phone(self.h, "101", "192.168.2.11")

    def test_provides_interface(self):
        self.assertTrue(IRegistrations.providedBy(self.h.core.registrar))

    def test_md5_and_sha256_register(self):
        r = self.alice.register(algorithm="MD5")
        self.assertEqual(r.code, 200)
        self.assertIn("expires=3600", r.get("Contact"))
        bob = Phone(self.h, "102", "192.168.2.12")
        self.assertEqual(bob.register(algorithm="SHA-256").code, 200)
        users = sorted(b["user"] for b in self.h.core.registrar.bindings())
        self.assertEqual(users, ["alice", "bob"])

    def test_wrong_password_and_unknown_user_look_alike(self):
        wrong = self.alice.register(password="nope")
        ghost = Phone(self.h, "199", "192.168.2.13").register()
        self.assertEqual((wrong.code, ghost.code), (403, 403))
        self.assertEqual(wrong.reason, ghost.reason)

    def test_user_without_digest_is_told_to_set_the_password(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        carol = Phone(self.h, "103", "192.168.2.13")
        self.assertEqual(carol.register().code, 403)
        self.assertTrue(any("set the password again" in e.get("log_format", "") for e in events))

    def test_replayed_authorization_is_refused(self):
        uri = "sip:example.com"
        out = self.alice.send(self.alice.request("REGISTER", uri, to="<sip:101@example.com>"))
        challenge = out[0][0].get("WWW-Authenticate")
        auth = "Authorization: " + self.alice.authorization(challenge, "REGISTER", uri)
        first = self.alice.send(self.alice.request("REGISTER", uri, [auth], to="<sip:101@example.com>"))
        again = self.alice.send(self.alice.request("REGISTER", uri, [auth], to="<sip:101@example.com>"))
        self.assertEqual((first[0][0].code, again[0][0].code), (200, 403))

    def test_stale_nonce_gets_a_fresh_challenge(self):
        uri = "sip:example.com"
        out = self.alice.send(self.alice.request("REGISTER", uri, to="<sip:101@example.com>"))
        challenge = out[0][0].get("WWW-Authenticate")
        self.h.clock.advance(NONCE_LIFETIME + 1)
        auth = "Authorization: " + self.alice.authorization(challenge, "REGISTER", uri)
        resp = self.alice.send(self.alice.request("REGISTER", uri, [auth], to="<sip:101@example.com>"))[0][0]
        self.assertEqual(resp.code, 401)
        self.assertIn("stale=true", resp.get("WWW-Authenticate"))

    def test_expiry_refresh_and_unregister(self):
        self.alice.register(expires=120)
        self.h.clock.advance(100)
        self.alice.register(expires=120)
        self.h.clock.advance(100)
        self.assertEqual(len(self.h.core.registrar.contacts_of("alice")), 1)
        self.h.clock.advance(30)
        self.assertEqual(self.h.core.registrar.contacts_of("alice"), [])
        self.alice.register()
        self.assertEqual(self.alice.register(expires=0).code, 200)
        self.assertEqual(self.h.core.registrar.contacts_of("alice"), [])

    def test_too_brief_expires(self):
        r = self.alice.register(expires=10)
        self.assertEqual(r.code, 423)
        self.assertEqual(r.get("Min-Expires"), "60")

    def test_contacts_read_again_give_the_same_answers(self):
        # The registrar keeps what a Contact or To text gave: the same text must answer the same.
        ok = "Contact: <sip:101@192.168.2.11:5060>;expires=300"
        for _ in range(2):
            self.assertEqual(self.alice.register(contact=ok).code, 200)
            self.assertEqual(int(self.h.core.registrar.contacts_of("alice")[0].expires_at
                                 - self.h.clock.seconds()), 300)
            for bad in ("Contact: <sip:101@192.168.2.11:5060>;expires",        # no value: was a 500
                        "Contact: <sip:101@192.168.2.11:5060>;expires=soon",
                        "Contact: <mailto:101@example.com>", "Contact: <sip:101@bad host>"):
                self.assertEqual((self.alice.register(contact=bad).code, bad), (400, bad))
        self.assertEqual(self.alice.register(contact="Contact: <sip:101@192.168.2.11:5060>;expires=0").code,
                         200)
        self.assertEqual(self.h.core.registrar.contacts_of("alice"), [])

    def test_several_contacts_with_a_bound(self):
        codes = []
        for n in range(MAX_CONTACTS + 1):
            phone = Phone(self.h, "101", "192.168.2.%d" % (20 + n))
            codes.append(phone.register().code)
        self.assertEqual(codes, [200] * MAX_CONTACTS + [403])
        self.assertEqual(len(self.h.core.registrar.contacts_of("alice")), MAX_CONTACTS)
        contacts = NameAddr.parse(self.h.core.registrar.bindings()[0]["contact"])
        self.assertTrue(contacts.uri.startswith("sip:101@"))

    def test_repeated_failures_are_slowed_down(self):
        self.alice.patient = True
        for _ in range(6):
            self.alice.register(password="bad")
        self.alice.patient = False
        self.h.take()
        uri = "sip:example.com"
        out = self.alice.send(self.alice.request("REGISTER", uri, to="<sip:101@example.com>"))
        self.assertEqual(out, [])
        self.h.clock.advance(20)
        self.assertEqual(self.h.take()[-1][0].code, 401)

    def test_repeated_failures_lock_the_phone_out(self):
        registrar = self.h.core.registrar
        self.alice.patient = True
        for _ in range(5):
            self.assertEqual(self.alice.register(password="bad").code, 403)
        self.h.take()
        locked = self.alice.register()          # the right password, unchecked
        self.assertEqual(locked.code, 403)
        self.assertRegex(locked.reason, r"^Forbidden \(locked until \d\d:\d\d UTC\)$")
        self.assertEqual(registrar.contacts_of("alice"), [])
        self.h.clock.advance(registrar.throttle.lockout)
        self.assertEqual(self.alice.register().code, 200)

    def challenge(self, phone):
        phone.patient = True
        out = phone.send(phone.request("REGISTER", "sip:example.com", to="<sip:%s@example.com>" % phone.ext))
        phone.patient = False
        return out[-1][0].get("WWW-Authenticate")

    def guess(self, phone, challenge, nc, password="bad"):
        """One authenticated REGISTER on a known nonce: (response, seconds it was held)."""
        uri = "sip:example.com"
        auth = phone.authorization(challenge, "REGISTER", uri, password=password, nc=nc)
        phone.patient = True
        out = phone.send(phone.request("REGISTER", uri, ["Authorization: " + auth],
                                       to="<sip:%s@example.com>" % phone.ext))
        phone.patient = False
        return out[-1][0], phone.waited

    def test_200_wrong_passwords_meet_the_delay_then_the_lock_out(self):
        attacker = Phone(self.h, "101", "192.168.2.66")
        challenge = self.challenge(attacker)
        results = [self.guess(attacker, challenge, nc) for nc in range(1, 201)]
        self.assertEqual([r.code for r, _ in results[:5]], [403] * 5)
        self.assertEqual([r.reason for r, _ in results[:5]], ["Forbidden"] * 5)
        self.assertEqual([w for _, w in results[:5]], [0, 0, 0.5, 1.0, 2.0])
        self.assertTrue(all(r.reason.startswith("Forbidden (locked until") and w == 0
                            for r, w in results[5:]), results[5])
        self.assertEqual(self.h.core.registrar.throttle.locked_for("192.168.2.66"), 900)

    def test_a_source_locked_by_guessing_refuses_its_phones_until_it_ends(self):
        """
        svcrack-style guessing at other extensions from the phone's own
        address: SPEC 10 locks the source, whatever the users, for 15 minutes.
        """
        attacker = Phone(self.h, "102", "192.168.2.11", port=5099)
        challenge = self.challenge(attacker)
        for nc in range(1, 30):
            self.guess(attacker, challenge, nc)
        registrar = self.h.core.registrar
        self.assertTrue(registrar.throttle.locked_for("192.168.2.11"))
        self.assertTrue(registrar.throttle.locked_for("192.168.2.11", "bob"))
        self.alice.patient = True
        r = self.alice.register()
        self.assertEqual(r.code, 403)
        self.assertTrue(r.reason.startswith("Forbidden (locked until"), r.reason)
        self.h.clock.advance(registrar.throttle.locked_until("192.168.2.11")
                             - self.h.clock.seconds())
        self.assertEqual(self.alice.register().code, 200)
        self.assertEqual(len(registrar.contacts_of("alice")), 1)

    def test_the_right_phone_registers_from_the_same_source_once_the_lock_outs_end(self):
        attacker = Phone(self.h, "101", "192.168.2.11", port=5099)
        challenge = self.challenge(attacker)
        registrar = self.h.core.registrar
        for nc in range(1, 6):
            self.guess(attacker, challenge, nc)
        alice_until = registrar.throttle.locked_until("192.168.2.11", "alice")
        # The guessing goes on during alice's lock-out; refused, it locks the
        # source, till beyond alice's lock-out.
        while self.h.clock.seconds() < alice_until - 60:
            self.h.clock.advance(20)
            challenge = self.challenge(attacker)
            self.guess(attacker, challenge, 1)
        source_until = registrar.throttle.locked_until("192.168.2.11")
        self.assertGreater(source_until, alice_until)
        self.h.clock.advance(source_until - self.h.clock.seconds())
        self.alice.patient = True
        r = self.alice.register()
        self.assertEqual((r.code, r.reason), (200, "OK"))

    def test_the_throttle_may_be_shared(self):
        from allworx.guards import LoginThrottle
        from allworx.protocols.sip.registrar import Registrar
        shared = LoginThrottle(self.h.clock)
        registrar = Registrar(self.h.office, self.h.clock, throttle=shared)
        self.assertIs(registrar.throttle, shared)
        for _ in range(5):
            shared.failed("192.168.2.11", "alice")     # e.g. wrong POP3 passwords
        self.h.core.registrar = registrar
        self.assertEqual(self.alice.register().code, 403)

    def test_register_for_someone_else_is_refused(self):
        uri = "sip:example.com"
        out = self.alice.send(self.alice.request("REGISTER", uri, to="<sip:102@example.com>"))
        auth = "Authorization: " + self.alice.authorization(out[0][0].get("WWW-Authenticate"), "REGISTER", uri)
        resp = self.alice.send(self.alice.request("REGISTER", uri, [auth], to="<sip:102@example.com>"))
        self.assertEqual(resp[0][0].code, 403)



class RefreshIndexTests(unittest.TestCase):
    """A refreshed binding leaves every index as removing and adding it would."""

    def test_random_refreshes_match_remove_then_add(self):
        import random
        from allworx.protocols.sip.registrar import Binding

        def snapshot(r):
            # Each binding by its label (`mac`): twins made in one step share it.
            return ([(u, [(c, b.mac) for c, b in cs.items()]) for u, cs in r.by_user.items()],
                    [(c, [b.mac for b in bs]) for c, bs in r.by_contact.items()],
                    [(k, [(uc, b.mac) for uc, b in at.items()]) for k, at in r.by_source.items()],
                    r.next_expiry)

        rnd = random.Random(7)
        fast = Harness(self.mktemp()).core.registrar
        slow = Harness(self.mktemp()).core.registrar
        for step in range(3000):
            user = rnd.choice(["alice", "bob", "carol"])
            contact = rnd.choice(["sip:a@h1", "sip:b@h2", "sip:c@h3"])
            source = (rnd.choice(["192.168.2.11", "192.168.2.12"]), rnd.choice([5060, 5062]))
            transport = rnd.choice(["UDP", "TCP"])
            expires = 1000 + rnd.randint(0, 500)
            fast.bind(Binding(user, "10", contact, source, transport, expires, mac=step))
            twin = Binding(user, "10", contact, source, transport, expires, mac=step)
            old = slow.by_user.get(user, {}).get(contact)
            if old is not None:
                slow._remove(old)
            slow.by_user.setdefault(user, {})[contact] = twin
            slow.by_contact.setdefault(contact, []).append(twin)
            slow.by_source.setdefault((source, transport), {})[(user, contact)] = twin
            slow.next_expiry = min(slow.next_expiry, expires)
            if rnd.random() < 0.3:
                gone = [b.mac for cs in fast.by_user.values() for b in cs.values()]
                if gone:
                    label = gone[len(gone) // 2]
                    for r in (fast, slow):
                        r._remove(next(b for cs in r.by_user.values() for b in cs.values()
                                       if b.mac == label))
            self.assertEqual(snapshot(fast), snapshot(slow), step)
