"""
A provisioned phone registers and calls with its own secret (SPEC 19): the
registrar accepts the user's password or the secret of any [phone] given to
that user, through the same throttle and with the same work for any name.
"""

import os

from twisted.internet import task
from twisted.trial import unittest

from allworx.office import ConfigChanged, changed_sections
from allworx.phonebook import PhoneBook
from allworx.protocols.sip import credentials as credentials_module
from allworx.tests.siphelpers import Harness, Phone, offer, office

MAC = "001565abcdef"
PHONES = """
[phone 00:15:65:AB:CD:EF]
user = alice
model = yealink

[phone 0004f2000002]
user = bob
model = polycom
"""


def change_config(h, text):
    """
    The harness's office with the phones of `text` instead (its users as
    before), handed on as the SIP service hands a ConfigChanged.
    """
    old = h.office.config
    new = office(old.system.data_dir, text).config
    h.office.config = new
    event = ConfigChanged(old, new, changed_sections(old, new))
    h.core.checksync.config_changed(event)      # in the order SipService.config_changed calls
    h.core.registrar.forget_removed()
    return event


class PhoneSecretTests(unittest.TestCase):

    def setUp(self):
        data = self.mktemp()
        os.makedirs(data)
        self.book = PhoneBook(data, task.Clock())
        self.h = Harness(data, extra=PHONES, phonebook=self.book)
        self.secret = self.book.secret(MAC)
        self.phone = Phone(self.h, "101", "192.168.2.37", password=self.secret)

    def bindings(self, user="alice"):
        return self.h.core.registrar.contacts_of(user)

    def test_registers_with_its_secret_md5_and_sha256(self):
        for algorithm in ("MD5", "SHA-256"):
            r = self.phone.register(algorithm=algorithm, headers=["User-Agent: Yealink SIP-T46S"])
            self.assertEqual(r.code, 200, algorithm)
        [b] = self.bindings()
        self.assertEqual((b.mac, b.user_agent), (MAC, "Yealink SIP-T46S"))

    def test_the_password_still_works_and_names_no_phone(self):
        r = Phone(self.h, "101", "192.168.2.11").register()
        self.assertEqual(r.code, 200)
        [b] = self.bindings()
        self.assertIsNone(b.mac)

    def test_a_register_makes_no_secret_for_a_phone_that_never_fetched(self):
        # bob's polycom has never asked for its file: it holds no secret, and
        # bob's REGISTER with his password makes none (no write on the SIP path).
        r = Phone(self.h, "102", "192.168.2.12").register()
        self.assertEqual(r.code, 200)
        self.assertFalse(self.book.has_secret("0004f2000002"))

    def test_another_users_phone_secret_is_refused(self):
        bobs = self.book.secret("0004f2000002")
        self.assertEqual(Phone(self.h, "101", "192.168.2.38", password=bobs).register().code, 403)
        self.assertEqual(Phone(self.h, "103", "192.168.2.38", password=self.secret).register().code,
                         403)
        self.assertEqual(self.bindings(), [])

    def test_a_rotated_secret_is_refused(self):
        self.book.rotate(MAC)
        self.assertEqual(self.phone.register().code, 403)

    def test_a_secret_of_a_mac_without_a_phone_section_is_refused(self):
        stray = self.book.secret("0004f2999999")
        self.assertEqual(Phone(self.h, "101", "192.168.2.39", password=stray).register().code, 403)

    def test_phone_removed_drops_its_registration_and_secret(self):
        self.assertEqual(self.phone.register().code, 200)
        alice = Phone(self.h, "101", "192.168.2.11")
        self.assertEqual(alice.register().code, 200)
        change_config(self.h, "")       # no [phone] sections any more
        self.assertEqual([b.mac for b in self.bindings()], [None])
        self.assertEqual(Phone(self.h, "101", "192.168.2.37", password=self.secret).register().code, 403)

    def test_a_user_with_only_a_phone_keeps_it_registered(self):
        # carol has no sip_digest: only her phone's secret can register her.
        extra = PHONES + "\n[phone 000b82000003]\nuser = carol\nmodel = grandstream\n"
        change_config(self.h, extra)
        secret = self.book.secret("000b82000003")
        self.assertEqual(Phone(self.h, "103", "192.168.2.40", password=secret).register().code, 200)
        change_config(self.h, extra + "\n")
        self.assertEqual(len(self.bindings("carol")), 1)

    def test_invite_answered_with_the_secret_is_admitted(self):
        caller = Phone(self.h, "101", "192.168.2.41", password=self.secret)
        out = caller.invite("sip:102@example.com", ["Content-Type: application/sdp"], offer())
        self.assertEqual(out[0][0].code, 100)

    def test_the_same_work_for_any_name(self):
        digests = []
        real = credentials_module.digest_response

        def counting(*args, **kwargs):
            digests.append(args[0])
            return real(*args, **kwargs)
        self.patch(credentials_module, "digest_response", counting)
        counts = {}
        for n, ext in enumerate(("101", "102", "103", "199")):
            self.h.core.registrar.throttle.unlock()
            del digests[:]
            r = Phone(self.h, ext, "192.168.2.%d" % (50 + n), password="wrong").register()
            self.assertEqual(r.code, 403)
            counts[ext] = len(digests)
        self.assertEqual(set(counts.values()), {2}, counts)

    def test_wrong_secret_counts_in_the_throttle(self):
        wrong = Phone(self.h, "101", "192.168.2.37", password="not-the-secret")
        wrong.patient = True
        throttle = self.h.core.registrar.throttle
        for _ in range(throttle.user_limit):
            self.assertEqual(wrong.register().code, 403)
        self.assertTrue(throttle.locked_for("192.168.2.37", "alice"))
        # Locked: even the right secret is refused unchecked until the lock ends.
        self.assertEqual(self.phone.register().code, 403)
