"""
Check-sync (SPEC 19, ICheckSync): the vendor's NOTIFY to the phone's
registered contact, which registration is the phone, answers, challenges,
time-outs, and the resyncs a tap.conf change brings.
"""

import hashlib
import os

import attr
from twisted.internet import task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from allworx.interfaces import ICheckSync
from allworx.office import ConfigChanged, changed_sections
from allworx.phonebook import PhoneBook
from allworx.protocols.sip.checksync import EVENTS, RESYNC_DELAY, model_of_agent
from allworx.protocols.sip.credentials import parse_authorization
from allworx.protocols.sip.message import make_response
from allworx.protocols.sip.transaction import T1
from allworx.tests.sip.test_phonesecrets import change_config
from allworx.tests.siphelpers import Harness, Phone

MAC = "001565abcdef"


def phones(model="yealink", label=""):
    return "\n[phone 00:15:65:ab:cd:ef]\nuser = alice\nmodel = %s\nlabel = %s\n" % (model, label)


class FakeLeases:
    def __init__(self, leases=()):
        self.leases = list(leases)

    def active_leases(self):
        return self.leases


class CheckSyncTests(unittest.TestCase):

    def setUp(self):
        self.data = self.mktemp()
        os.makedirs(self.data)
        self.book = PhoneBook(self.data, task.Clock())
        self.leases = FakeLeases()
        self.make(phones())

    def make(self, extra):
        self.h = Harness(self.data, extra=extra, phonebook=self.book, leases=self.leases)
        self.sync = self.h.core.checksync

    def register_phone(self, address="192.168.2.37", agent="Yealink SIP-T46S 66.86.0.15",
                       secret=True):
        phone = Phone(self.h, "101", address, password=self.book.secret(MAC) if secret else None)
        r = phone.register(headers=["User-Agent: " + agent])
        self.assertEqual(r.code, 200)
        return phone

    def notify(self):
        """The one NOTIFY sent, and where."""
        out = [(m, d) for m, d in self.h.take() if m.is_request]
        self.assertEqual(len(out), 1, out)
        self.assertEqual(out[0][0].method, "NOTIFY")
        return out[0]

    def answer(self, request, dest, code, extra=()):
        self.h.receive(make_response(request, code, to_tag="p1", extra=extra).to_bytes(),
                       (dest.host, dest.port))

    def test_interface(self):
        self.assertTrue(verifyObject(ICheckSync, self.sync))

    def test_each_vendors_event(self):
        self.assertEqual(EVENTS, {
            "yealink": "check-sync", "polycom": "check-sync", "grandstream": "check-sync",
            "generic": "check-sync", "snom": "check-sync;reboot=false", "cisco-spa": "resync"})
        for model in sorted(EVENTS):
            self.make(phones(model))
            self.register_phone()
            d = self.sync.resync("00:15:65:AB:CD:EF")
            request, dest = self.notify()
            self.assertEqual(request.get("Event"), EVENTS[model], model)
            self.assertEqual(request.get("Subscription-State"), "terminated")
            self.assertEqual(request.uri, "sip:101@192.168.2.37:5060")
            self.assertEqual((dest.host, dest.port), ("192.168.2.37", 5060))
            self.assertIsNone(request.to_tag)      # out of dialog
            self.answer(request, dest, 200)
            self.assertIs(self.successResultOf(d), True)

    def test_not_registered(self):
        self.assertIs(self.successResultOf(self.sync.resync(MAC)), False)
        self.assertEqual(self.h.take(), [])
        self.assertIs(self.successResultOf(self.sync.resync("not a mac")), False)

    def test_timeout_is_false(self):
        self.register_phone()
        d = self.sync.resync(MAC)
        self.notify()
        self.assertNoResult(d)
        self.h.clock.advance(64 * T1 + 1)
        self.assertIs(self.successResultOf(d), False)

    def test_refused_is_false(self):
        self.register_phone()
        d = self.sync.resync(MAC)
        request, dest = self.notify()
        self.answer(request, dest, 100)
        self.assertNoResult(d)
        self.answer(request, dest, 489)
        self.assertIs(self.successResultOf(d), False)

    def test_a_challenge_is_answered_with_the_phones_secret(self):
        self.register_phone()
        d = self.sync.resync(MAC)
        request, dest = self.notify()
        self.answer(request, dest, 401, [("WWW-Authenticate",
                                          'Digest realm="phone", nonce="n1", qop="auth"')])
        again, _ = self.notify()
        self.assertEqual((again.call_id, again.cseq[0]), (request.call_id, request.cseq[0] + 1))
        f = parse_authorization(again.get("Authorization"))
        self.assertEqual(f["username"], "101")
        md5 = lambda t: hashlib.md5(t.encode()).hexdigest()     # noqa: E731
        ha1 = md5("101:phone:%s" % self.book.secret(MAC))
        expected = md5(":".join((ha1, "n1", f["nc"], f["cnonce"], "auth",
                                 md5("NOTIFY:%s" % again.uri))))
        self.assertEqual(f["response"], expected)
        self.answer(again, dest, 200)
        self.assertIs(self.successResultOf(d), True)

    def test_after_a_rotation_the_challenge_is_answered_with_the_secret_the_phone_holds(self):
        self.register_phone()
        held = self.book.secret(MAC)
        self.book.rotate(MAC)
        d = self.sync.resync(MAC)
        request, dest = self.notify()
        self.answer(request, dest, 401, [("WWW-Authenticate", 'Digest realm="phone", nonce="n2"')])
        again, _ = self.notify()
        f = parse_authorization(again.get("Authorization"))
        md5 = lambda t: hashlib.md5(t.encode()).hexdigest()     # noqa: E731
        ha1 = md5("101:phone:%s" % held)
        self.assertEqual(f["response"], md5(":".join((ha1, "n2", md5("NOTIFY:%s" % again.uri)))))
        self.answer(again, dest, 200)
        self.assertIs(self.successResultOf(d), True)

    def test_a_second_challenge_is_false(self):
        self.register_phone()
        d = self.sync.resync(MAC)
        challenge = [("WWW-Authenticate", 'Digest realm="phone", nonce="n1"')]
        request, dest = self.notify()
        self.answer(request, dest, 401, challenge)
        again, _ = self.notify()
        self.answer(again, dest, 401, challenge)
        self.assertIs(self.successResultOf(d), False)

    def test_found_by_the_lease_address(self):
        # Registered with the user's password: only its address says it is the phone.
        Phone(self.h, "101", "192.168.2.11").register()     # alice's softphone
        self.register_phone("192.168.2.37", agent="whatever", secret=False)
        self.leases.leases = [{"mac": "00:15:65:ab:cd:ef", "address": "192.168.2.37"}]
        self.sync.resync(MAC)
        _, dest = self.notify()
        self.assertEqual(dest.host, "192.168.2.37")

    def test_found_by_the_address_it_fetched_from(self):
        Phone(self.h, "101", "192.168.2.11").register()
        self.register_phone("192.168.2.37", agent="whatever", secret=False)
        self.book.sighted(MAC, "192.168.2.37", "yealink", "001565abcdef.cfg")
        self.sync.resync(MAC)
        _, dest = self.notify()
        self.assertEqual(dest.host, "192.168.2.37")

    def test_found_by_the_owners_user_agent(self):
        Phone(self.h, "101", "192.168.2.11").register()
        self.register_phone("192.168.2.37", agent="Yealink SIP-T46S", secret=False)
        self.sync.resync(MAC)
        _, dest = self.notify()
        self.assertEqual(dest.host, "192.168.2.37")

    def test_another_users_phone_is_not_taken_for_it(self):
        Phone(self.h, "102", "192.168.2.12").register(headers=["User-Agent: Yealink SIP-T46S"])
        self.assertIs(self.successResultOf(self.sync.resync(MAC)), False)

    def test_model_of_agent(self):
        self.assertEqual(model_of_agent("Cisco/SPA504G-7.6.2c"), "cisco-spa")
        self.assertEqual(model_of_agent("Linksys/SPA942-6.1.5(a)"), "cisco-spa")
        self.assertEqual(model_of_agent("PolycomVVX-VVX_410-UA/5.9"), "polycom")
        self.assertEqual(model_of_agent("snomD785/10.1.33.33"), "snom")
        self.assertEqual(model_of_agent("baresip v1.0.0 (x86_64/linux)"), "generic")
        self.assertIsNone(model_of_agent(None))


class ConfigChangeTests(unittest.TestCase):

    def setUp(self):
        self.data = self.mktemp()
        os.makedirs(self.data)
        self.book = PhoneBook(self.data, task.Clock())
        self.h = Harness(self.data, extra=phones(), phonebook=self.book)
        phone = Phone(self.h, "101", "192.168.2.37", password=self.book.secret(MAC))
        self.assertEqual(phone.register().code, 200)
        self.h.take()

    def notifies(self):
        """The NOTIFYs sent, each answered 200 as the phone does."""
        out = [(m, d) for m, d in self.h.take() if m.is_request and m.method == "NOTIFY"]
        for m, d in out:
            self.h.receive(make_response(m, 200, to_tag="p1").to_bytes(), (d.host, d.port))
        return [m for m, _ in out]

    def swap(self, new):
        old = self.h.office.config
        self.h.office.config = new
        self.h.core.checksync.config_changed(ConfigChanged(old, new, changed_sections(old, new)))

    def with_alice(self, **changes):
        config = self.h.office.config
        users = dict(config.users)
        users["alice"] = attr.evolve(users["alice"], **changes)
        return attr.evolve(config, users=users)

    def test_label_change_resyncs_once(self):
        change_config(self.h, phones(label="Front desk"))
        change_config(self.h, phones(label="Reception"))
        self.assertEqual(self.notifies(), [])
        self.h.clock.advance(RESYNC_DELAY)
        [notify] = self.notifies()
        self.assertEqual(notify.get("Event"), "check-sync")
        self.h.clock.advance(RESYNC_DELAY * 10)
        self.assertEqual(self.notifies(), [])

    def test_owner_name_change_resyncs(self):
        self.swap(self.with_alice(full_name="Alice Archer-Smith"))
        self.h.clock.advance(RESYNC_DELAY)
        self.assertEqual(len(self.notifies()), 1)

    def test_voicemail_number_change_resyncs(self):
        config = self.h.office.config
        self.swap(attr.evolve(config, sip=attr.evolve(config.sip, voicemail_number="500")))
        self.h.clock.advance(RESYNC_DELAY)
        self.assertEqual(len(self.notifies()), 1)

    def test_unrelated_change_does_not(self):
        self.swap(self.with_alice(dnd=True))
        config = self.h.office.config
        self.swap(attr.evolve(config, sip=attr.evolve(config.sip, voicemail_timeout=30)))
        self.h.clock.advance(RESYNC_DELAY)
        self.assertEqual(self.notifies(), [])

    def test_a_phone_given_to_another_user_is_still_told(self):
        # Its registration as alice's ends with the change; it is reached where it was.
        change_config(self.h, phones().replace("user = alice", "user = bob"))
        self.assertEqual(self.h.core.registrar.contacts_of("alice"), [])
        self.h.clock.advance(RESYNC_DELAY)
        [notify] = self.notifies()
        self.assertEqual(notify.uri, "sip:101@192.168.2.37:5060")

    def test_a_direct_resync_takes_the_place_of_a_waiting_one(self):
        change_config(self.h, phones(label="Front desk"))
        d = self.h.core.checksync.resync(MAC)
        self.assertEqual(len(self.notifies()), 1)
        self.assertIs(self.successResultOf(d), True)
        self.h.clock.advance(RESYNC_DELAY * 10)
        self.assertEqual(self.notifies(), [])
