"""[phone MAC] and [provisioning] (SPEC 19): notations, models, the checks."""

from twisted.trial import unittest

from allworx.config import ConfigErrors, parse_config
from allworx.config.phones import normalise_mac
from allworx.tests.confs import MINIMAL, with_sections


def errors_of(text):
    try:
        parse_config(text)
    except ConfigErrors as e:
        return [(err.section, err.key, err.message) for err in e.errors]
    return []


class MacTests(unittest.TestCase):

    def test_every_common_notation(self):
        for text in ("001565ABCDEF", "00:15:65:ab:cd:ef", "00-15-65-AB-CD-EF", "0015.65ab.cdef",
                     " 00:15:65:AB:CD:EF "):
            self.assertEqual(normalise_mac(text), "001565abcdef", text)

    def test_not_a_mac(self):
        for text in ("00:15:65:ab:cd", "00:15-65:ab:cd:ef", "0015.65ab.cdeg", "", "00155 65abcdef"):
            with self.assertRaises(ValueError) as cm:
                normalise_mac(text)
            self.assertIn("not a MAC address", str(cm.exception))


class SectionTests(unittest.TestCase):

    def test_phones_load_with_their_mac(self):
        c = parse_config(with_sections(
            "[phone 00:15:65:AB:CD:EF]\nuser = alice\nmodel = Yealink\nlabel = Front desk\n\n"
            "[phone 0004f2123456]\nuser = bob\n\n[provisioning]\nport = 8090\n"))
        phone = c.phones["00:15:65:AB:CD:EF"]
        self.assertEqual((phone.mac, phone.user, phone.model, phone.label),
                         ("001565abcdef", "alice", "yealink", "Front desk"))
        self.assertIsNone(c.phones["0004f2123456"].model)
        self.assertIs(c.phone_by_mac("00-15-65-ab-cd-ef"), phone)
        self.assertIsNone(c.phone_by_mac("nonsense"))
        self.assertEqual((c.provisioning.enabled, c.provisioning.port), (True, 8090))

    def test_defaults(self):
        c = parse_config(MINIMAL)
        self.assertEqual((c.provisioning.enabled, c.provisioning.port, c.phones), (True, 8089, {}))

    def test_every_mistake_named(self):
        found = errors_of(with_sections(
            "[phone 00:15:65:ab:cd]\nuser = alice\n\n"
            "[phone 001565000001]\nuser = carol\n\n"
            "[phone 001565000002]\nuser = alice\nmodel = nokia\n\n"
            "[phone 001565000003]\nuser = bob\nmodel = snom\n\n"
            "[phone 00:15:65:00:00:04]\nuser = bob\nmodel = snom\n\n"
            "[phone 0015.6500.0003]\nuser = alice\n\n"
            "[phone 001565000005]\nuser = alice\nlabel = %s\n\n"
            "[provisioning]\nport = 8080\n" % ("x" * 40)))
        messages = {(s, k): m for s, k, m in found}
        self.assertIn("expected a MAC address", messages[("phone 00:15:65:ab:cd", None)])
        self.assertIn("there is no [user carol]", messages[("phone 001565000001", "user")])
        self.assertIn("not a phone model", messages[("phone 001565000002", "model")])
        self.assertIn("bob already has a snom phone, [phone 001565000003]",
                      messages[("phone 00:15:65:00:00:04", "user")])
        self.assertIn("same phone as [phone 001565000003]", messages[("phone 0015.6500.0003", None)])
        self.assertIn("at most 32", messages[("phone 001565000005", "label")])
        self.assertIn("already [web] admin_port", messages[("provisioning", "port")])
