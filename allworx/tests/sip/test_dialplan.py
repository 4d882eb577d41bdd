"""
Tests for the dial plan (SPEC 15): numbers made E.164 with the office's
country settings (the US defaults and the UK's), written for a provider in
either number format, read back from what a provider sends, and what a
phone's dialled digits mean.
"""

import attr
from hypothesis import assume, given, strategies as st
from twisted.trial import unittest

from allworx import config as C
from allworx.protocols.sip import dialplan as D
from allworx.tests.confs import MINIMAL, PW_HASH, with_sections

TRUNK = """\
[trunk main]
registrar = sip.provider.example
username = office
secret = s3cret
numbers = +15551230000

[group sales]
number = 500
members = 101 102

[attendant frontdesk]
number = 600
key_1 = sales
"""

US = C.parse_config(with_sections(TRUNK)).sip
UK = attr.evolve(US, country_code="44", national_prefix="0", international_prefix="00")
NONE = attr.evolve(US, country_code="39", national_prefix="", international_prefix="00")


def trunk(number_format):
    return attr.evolve(C.parse_config(with_sections(TRUNK)).trunks["main"],
                       number_format=number_format)


class ToE164Tests(unittest.TestCase):

    def test_us_defaults(self):
        self.assertEqual(D.to_e164("+442079460000", US), "+442079460000")
        self.assertEqual(D.to_e164("011442079460000", US), "+442079460000")
        self.assertEqual(D.to_e164("15557770001", US), "+15557770001")
        self.assertEqual(D.to_e164("5557770001", US), "+15557770001")
        self.assertEqual(D.to_e164(" 5557770001 ", US), "+15557770001")

    def test_another_country(self):
        self.assertEqual(D.to_e164("02079460000", UK), "+442079460000")
        self.assertEqual(D.to_e164("2079460000", UK), "+442079460000")
        self.assertEqual(D.to_e164("0015557770001", UK), "+15557770001")
        self.assertEqual(D.to_e164("+15557770001", UK), "+15557770001")

    def test_country_without_national_prefix(self):
        self.assertEqual(D.to_e164("0612345678", NONE), "+390612345678")
        self.assertEqual(D.to_e164("0015557770001", NONE), "+15557770001")

    def test_not_numbers(self):
        for bad in ("", "+", "+0123456789", "12a4567890", "+1 555", "011", "55", "+1234567890123456",
                    "5557770001" + "1" * 10, "٥٥٥٧٧٧٠٠٠١"):
            self.assertRaises(ValueError, D.to_e164, bad, US)

    @given(st.from_regex(r"\A[2-9][0-9]{9}\Z"))
    def test_us_national_forms_agree(self, national):
        e164 = "+1" + national
        for dialled in (national, "1" + national, "0111" + national, e164):
            self.assertEqual(D.to_e164(dialled, US), e164)

    @given(st.from_regex(r"\A\+[1-9][0-9]{7,14}\Z"))
    def test_e164_unchanged_and_international_prefix(self, e164):
        for sip in (US, UK, NONE):
            self.assertEqual(D.to_e164(e164, sip), e164)
            self.assertEqual(D.to_e164(sip.international_prefix + e164[1:], sip), e164)


class ProviderTests(unittest.TestCase):

    def test_for_provider_e164(self):
        self.assertEqual(D.for_provider("+15557770001", trunk("e164"), US), "+15557770001")
        self.assertEqual(D.for_provider("+442079460000", trunk("e164"), UK), "+442079460000")

    def test_for_provider_national(self):
        self.assertEqual(D.for_provider("+15557770001", trunk("national"), US), "5557770001")
        self.assertEqual(D.for_provider("+442079460000", trunk("national"), US), "011442079460000")
        self.assertEqual(D.for_provider("+442079460000", trunk("national"), UK), "2079460000")
        self.assertEqual(D.for_provider("+15557770001", trunk("national"), UK), "0015557770001")

    def test_from_provider(self):
        for sent, e164 in (("+15557770001", "+15557770001"), ("15557770001", "+15557770001"),
                           ("5557770001", "+15557770001"), ("011442079460000", "+442079460000"),
                           ("+1-555-777-0001", "+15557770001"), ("+15557770001;npdi", "+15557770001")):
            self.assertEqual(D.from_provider(sent, US), e164, sent)
        for sent, e164 in (("+442079460000", "+442079460000"), ("442079460000", "+442079460000"),
                           ("02079460000", "+442079460000"), ("2079460000", "+442079460000"),
                           ("0015557770001", "+15557770001")):
            self.assertEqual(D.from_provider(sent, UK), e164, sent)
        for bad in ("anonymous", "", "+", "office"):
            self.assertRaises(ValueError, D.from_provider, bad, US)

    @given(st.from_regex(r"\A\+[1-9][0-9]{7,14}\Z"), st.sampled_from(["e164", "national"]),
           st.sampled_from(["US", "UK"]))
    def test_round_trip(self, e164, number_format, country):
        """What the office sends a provider, the provider may send back: the same number."""
        sip = {"US": US, "UK": UK}[country]
        sent = D.for_provider(e164, trunk(number_format), sip)
        if number_format == "national" and e164.startswith("+" + sip.country_code):
            # A national number that reads as something else (it starts with
            # a prefix, or with the country code and is long) is ambiguous.
            national = sent
            assume(not national.startswith(sip.international_prefix))
            assume(not (sip.national_prefix and national.startswith(sip.national_prefix)))
            assume(not (len(national) >= 11 and national.startswith(sip.country_code)))
        self.assertEqual(D.from_provider(sent, sip), e164)


def office(extra=""):
    return C.parse_config(with_sections(TRUNK + extra))


class ClassifyTests(unittest.TestCase):

    def setUp(self):
        self.c = office()
        self.alice = self.c.users["alice"]

    def classify(self, dialled, config=None, user=None):
        return D.classify(dialled, config or self.c, user or self.alice)

    def test_emergency_unchanged_without_prefix(self):
        for number in D.EMERGENCY:
            self.assertEqual(self.classify(number), D.Dialled("emergency", number))
            self.assertEqual(self.classify("9" + number), D.Dialled("emergency", number))

    def test_emergency_without_trunks(self):
        """With no trunk an emergency number is still that (the call fails as no line)."""
        c = C.parse_config(MINIMAL)
        self.assertEqual(D.classify("911", c, None), D.Dialled("emergency", "911"))
        carol = with_sections("[user carol]\npassword = %s\nextension = 112\n" % PW_HASH)
        self.assertEqual(D.classify("112", C.parse_config(carol), None), D.Dialled("extension", "112"))

    def test_outside(self):
        self.assertEqual(self.classify("95557770001"), D.Dialled("outside", "+15557770001"))
        self.assertEqual(self.classify("915557770001"), D.Dialled("outside", "+15557770001"))
        self.assertEqual(self.classify("9011442079460000"), D.Dialled("outside", "+442079460000"))
        self.assertEqual(self.classify("9+442079460000"), D.Dialled("outside", "+442079460000"))

    def test_outside_needs_the_prefix(self):
        self.assertIsNone(self.classify("5557770001"))
        self.assertIsNone(self.classify("+15557770001"))
        self.assertIsNone(self.classify("9"))
        self.assertIsNone(self.classify("955"))
        self.assertIsNone(self.classify("9555x770001"))

    def test_other_prefix_and_country(self):
        c = office("\n[sip]\noutbound_prefix = 0\ncountry_code = 44\nnational_prefix = 0\n"
                   "international_prefix = 00\noperator = 102\n")
        self.assertEqual(D.classify("002079460000", c, None), D.Dialled("outside", "+442079460000"))
        self.assertEqual(D.classify("0999", c, None), D.Dialled("emergency", "999"))
        self.assertEqual(D.classify("0", c, None), D.Dialled("extension", "102"))

    def test_inside(self):
        self.assertEqual(self.classify("102"), D.Dialled("extension", "102"))
        self.assertEqual(self.classify("500"), D.Dialled("group", "500"))
        self.assertEqual(self.classify("600"), D.Dialled("attendant", "600"))
        self.assertEqual(self.classify("0"), D.Dialled("extension", "101"))
        self.assertEqual(self.classify("bob"), D.Dialled("extension", "102"))

    def test_voicemail_number(self):
        self.assertEqual(self.classify("400"), D.Dialled("voicemail_menu", "101"))
        self.assertEqual(D.classify("400", self.c, None), D.Dialled("voicemail_menu", None))

    def test_unknown(self):
        for dialled in ("105", "", "nobody", "#", "*97"):
            self.assertIsNone(self.classify(dialled), dialled)

    def test_kinds_are_checked(self):
        self.assertRaises(ValueError, D.Dialled, "somewhere", "1")
