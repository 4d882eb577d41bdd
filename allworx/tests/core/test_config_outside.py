"""
Tests for the config of outside lines (SPEC 15): the [trunk], [number],
[group] and [attendant] sections, the new keys of [sip] and [user], TARGETs
and their resolution, and every check with its section, key and line.
"""

import os

import attr
from hypothesis import given, strategies as st
from twisted.trial import unittest

from allworx import config as C
from allworx.config.values import Target
from allworx.office import Office
from allworx.tests.confs import MINIMAL, PW_HASH, with_sections
from allworx.tests.core.test_config import errors_of

# An office with a trunk, its two numbers, a ring group and an attendant.
OUTSIDE = """\
[trunk main]
registrar = sip.provider.example
username = office
secret = s3cret pass;word
numbers = +15551230000 +15551230001

[number +15551230000]
to = frontdesk

[number +15551230001]

[group sales]
number = 500
members = 101 102
fallback = voicemail 101

[attendant frontdesk]
number = 600
greeting = Welcome to Example.
key_1 = sales
key_2 = 102
key_0 = voicemail 101
hours = mon-fri 08:30-17:30
after_hours = voicemail 101
"""


def line_of(text, needle, after=""):
    """The 1-based line of the first `needle` that follows `after` in `text`."""
    start = text.index(after)
    return text[:text.index(needle, start)].count("\n") + 1


class TargetTests(unittest.TestCase):

    def test_kinds(self):
        self.assertEqual(C.parse_target("101"), Target("extension", "101"))
        self.assertEqual(C.parse_target(" voicemail   101 "), Target("voicemail", "101"))
        self.assertEqual(C.parse_target("Voicemail 101"), Target("voicemail", "101"))
        self.assertEqual(C.parse_target("sales"), Target("name", "sales"))
        self.assertEqual(C.parse_target("Front-Desk"), Target("name", "front-desk"))

    def test_refused(self):
        for text, fragment in (("", "expected an extension"), ("1", "not an extension"),
                               ("123456789", "not an extension"), ("voicemail", "voicemail EXT"),
                               ("voicemail bob", "voicemail EXT"), ("voicemail 101 102", "voicemail EXT"),
                               ("sales team", "one extension or name"), ("9sales", "neither"),
                               ("s@les", "neither")):
            with self.assertRaises(ValueError) as e:
                C.parse_target(text)
            self.assertIn(fragment, str(e.exception), text)

    def test_kind_is_checked(self):
        self.assertRaises(ValueError, Target, "phone", "101")

    @given(st.one_of(
        st.from_regex(r"\A[0-9]{2,8}\Z"),
        st.from_regex(r"\Avoicemail [0-9]{2,8}\Z"),
        st.from_regex(r"\A[a-z][a-z0-9._-]{0,31}\Z").filter(lambda s: s != "voicemail")))
    def test_round_trip(self, text):
        target = C.parse_target(text)
        self.assertEqual(C.format_target(target), text)
        self.assertEqual(C.parse_target(C.format_target(target)), target)
        self.assertEqual(C.format_target(None), "")


class NumberParserTests(unittest.TestCase):

    def test_e164(self):
        self.assertEqual(C.parse_e164(" +15551230000 "), "+15551230000")
        self.assertEqual(C.parse_e164("+12345678"), "+12345678")
        self.assertEqual(C.parse_e164("+123456789012345"), "+123456789012345")
        for bad in ("15551230000", "+05551230000", "+1234567", "+1234567890123456",
                    "+1555 1230000", "+1555123000x", "+١٢٣٤٥٦٧٨٩"):
            with self.assertRaises(ValueError) as e:
                C.parse_e164(bad)
            self.assertIn("E.164", str(e.exception))

    @given(st.from_regex(r"\A\+[1-9][0-9]{7,14}\Z"))
    def test_e164_round_trip(self, number):
        self.assertEqual(C.parse_e164(number), number)
        self.assertTrue(C.is_e164(number))

    def test_e164_list(self):
        self.assertEqual(C.parse_e164_list("+15551230000, +15551230001"),
                         ("+15551230000", "+15551230001"))
        self.assertEqual(C.parse_e164_list(""), ())
        self.assertRaisesRegex(ValueError, "listed twice", C.parse_e164_list,
                               "+15551230000 +15551230000")
        self.assertRaisesRegex(ValueError, "E.164", C.parse_e164_list, "+15551230000 5551230001")

    def test_extension_list(self):
        self.assertEqual(C.parse_extension_list("101 102,103"), ("101", "102", "103"))
        self.assertRaisesRegex(ValueError, "not an extension", C.parse_extension_list, "101 bob")
        self.assertRaisesRegex(ValueError, "not an extension", C.parse_extension_list, "1")
        self.assertRaisesRegex(ValueError, "listed twice", C.parse_extension_list, "101 101")

    def test_national_prefix(self):
        self.assertEqual(C.parse_national_prefix("0"), "0")
        self.assertEqual(C.parse_national_prefix("none"), "")
        self.assertEqual(C.parse_national_prefix(""), "")
        self.assertEqual(C.format_national_prefix(""), "none")
        self.assertEqual(C.format_national_prefix("1"), "1")
        for bad in ("011", "a", "-1"):
            self.assertRaises(ValueError, C.parse_national_prefix, bad)

    def test_call_forward(self):
        self.assertEqual(C.parse_call_forward("102"), Target("extension", "102"))
        self.assertEqual(C.parse_call_forward("+15557770001"), Target("outside", "+15557770001"))
        self.assertEqual(C.parse_call_forward("95557770001"), Target("outside", "95557770001"))
        for bad in ("bob", "1", "+12", "9" * 21, "555-777"):
            self.assertRaises(ValueError, C.parse_call_forward, bad)
        for text in ("102", "+15557770001", "95557770001"):
            self.assertEqual(C.format_call_forward(C.parse_call_forward(text)), text)
        self.assertEqual(C.format_call_forward(None), "")


class ProviderParserTests(unittest.TestCase):

    def test_hostport(self):
        self.assertEqual(C.parse_sip_hostport("SIP.Provider.example"), ("sip.provider.example", None))
        self.assertEqual(C.parse_sip_hostport("198.51.100.20:5070"), ("198.51.100.20", 5070))
        self.assertEqual(C.format_sip_hostport(("sip.provider.example", None)), "sip.provider.example")
        self.assertEqual(C.format_sip_hostport(("sip.provider.example", 5070)), "sip.provider.example:5070")
        for bad in ("sip.provider.example:0", "sip.provider.example:x", "bad_host", ""):
            self.assertRaises(ValueError, C.parse_sip_hostport, bad)

    def test_sip_user(self):
        self.assertEqual(C.parse_sip_user(" office "), "office")
        self.assertEqual(C.parse_sip_user("+15551230000"), "+15551230000")
        for bad in ("", "a b", "a@b", "a:b", "x" * 65, "<a>"):
            self.assertRaises(ValueError, C.parse_sip_user, bad)

    def test_secret_verbatim(self):
        self.assertEqual(C.parse_secret("pa ss;wo#rd="), "pa ss;wo#rd=")
        self.assertRaisesRegex(ValueError, "empty", C.parse_secret, "")


class HoursTests(unittest.TestCase):

    def test_one_span(self):
        hours = C.parse_hours("mon-fri 08:30-17:30")
        self.assertEqual(hours, ((frozenset(range(5)), 510, 1050),))
        self.assertEqual(C.format_hours(hours), "mon-fri 08:30-17:30")
        self.assertTrue(hours.covers(0, 510))
        self.assertFalse(hours.covers(0, 1050))
        self.assertFalse(hours.covers(5, 600))

    def test_several_spans_as_written(self):
        text = "Mon-Fri 08:30-12:00,  mon-fri 13:00-17:30, sat 09:00-12:00"
        hours = C.parse_hours(text)
        self.assertEqual(len(hours), 3)
        self.assertEqual(hours[2], (frozenset({5}), 540, 720))
        self.assertEqual(C.format_hours(hours), "Mon-Fri 08:30-12:00, mon-fri 13:00-17:30, "
                                                "sat 09:00-12:00")
        self.assertFalse(hours.covers(2, 12 * 60 + 30))  # lunch

    def test_day_lists_ranges_and_every_day(self):
        self.assertEqual(C.parse_hours("mon,wed,fri 09:00-10:00")[0][0], frozenset({0, 2, 4}))
        self.assertEqual(C.parse_hours("fri-mon 09:00-10:00")[0][0], frozenset({4, 5, 6, 0}))
        self.assertEqual(C.parse_hours("00:00-24:00"), ((frozenset(range(7)), 0, 1440),))

    def test_written_back_without_the_text(self):
        hours = C.Hours([(frozenset({0, 1, 2, 4}), 480, 1020), (frozenset(range(7)), 0, 60)])
        self.assertEqual(C.format_hours(hours), "mon-wed,fri 08:00-17:00, mon-sun 00:00-01:00")
        self.assertEqual(C.format_hours(None), "")

    def test_refused(self):
        for text, fragment in (("mon-fri", "time span"), ("xyz 08:00-09:00", "not a day"),
                               ("mon-fri 17:00-08:00", "ends before it starts"),
                               ("mon-fri 8:00-25:00", "not a time of day"),
                               ("mon 08:00-24:30", "not a time of day"),
                               ("mon 08:00 - 09:00", "expected DAYS"), (",", "expected opening hours")):
            with self.assertRaises(ValueError) as e:
                C.parse_hours(text)
            self.assertIn(fragment, str(e.exception), text)

    spans = st.tuples(st.frozensets(st.integers(0, 6), min_size=1),
                      st.integers(0, 1439), st.integers(1, 1440)).filter(lambda s: s[1] < s[2])

    @given(st.lists(spans, min_size=1, max_size=4))
    def test_round_trip(self, spans):
        hours = C.Hours(spans)
        again = C.parse_hours(C.format_hours(hours))
        self.assertEqual(again, hours)
        self.assertEqual(C.parse_hours(C.format_hours(again)), hours)


def outside(extra="", base=MINIMAL):
    return with_sections(OUTSIDE + extra, base)


class ModelTests(unittest.TestCase):

    def test_sections_and_defaults(self):
        c = C.parse_config(outside())
        t = c.trunks["main"]
        self.assertEqual(t.registrar, ("sip.provider.example", None))
        self.assertEqual(t.secret, "s3cret pass;word")
        self.assertEqual((t.transport, t.expires, t.register, t.channels, t.number_format),
                         ("udp", 3600, True, 4, "e164"))
        self.assertEqual((t.auth_username, t.outbound_proxy, t.caller_id), (None, None, None))
        self.assertEqual(t.numbers, ("+15551230000", "+15551230001"))
        self.assertEqual(c.numbers["+15551230000"].to, Target("name", "frontdesk"))
        self.assertIsNone(c.numbers["+15551230001"].to)
        g = c.groups["sales"]
        self.assertEqual((g.number, g.members, g.strategy, g.ring_timeout),
                         ("500", ("101", "102"), "ring-all", 20))
        a = c.attendants["frontdesk"]
        self.assertEqual(a.menu(), {"0": Target("voicemail", "101"), "1": Target("name", "sales"),
                                    "2": Target("extension", "102")})
        self.assertEqual((a.timeout, a.fallback, a.greeting), (10, None, "Welcome to Example."))
        s = c.sip
        self.assertEqual((s.outbound_prefix, s.operator, s.country_code, s.national_prefix,
                          s.international_prefix, s.wan, s.tls_port),
                         ("9", None, "1", "1", "011", False, 5061))
        u = c.users["alice"]
        self.assertEqual((u.outside, u.forward_always, u.forward_busy, u.forward_noanswer, u.dnd),
                         (True, None, None, None, False))

    def test_a_config_without_outside_lines(self):
        c = C.parse_config(MINIMAL)
        self.assertEqual((c.trunks, c.numbers, c.groups, c.attendants), ({}, {}, {}, {}))

    def test_trunk_facts(self):
        t = C.parse_config(outside()).trunks["main"]
        self.assertEqual((t.auth_user, t.presented_id, t.proxy),
                         ("office", "+15551230000", ("sip.provider.example", 5060)))
        t2 = attr.evolve(t, auth_username="auth1", caller_id="+15551230001", transport="tls",
                         outbound_proxy=("proxy.provider.example", None))
        self.assertEqual((t2.auth_user, t2.presented_id, t2.proxy),
                         ("auth1", "+15551230001", ("proxy.provider.example", 5061)))
        t3 = attr.evolve(t, numbers=(), registrar=("sip.provider.example", 5080))
        self.assertEqual((t3.presented_id, t3.proxy), ("office", ("sip.provider.example", 5080)))

    def test_secret_not_in_repr(self):
        c = C.parse_config(outside())
        self.assertNotIn("s3cret", repr(c.trunks["main"]))
        self.assertNotIn("s3cret", repr(c))

    def test_operator_extension(self):
        c = C.parse_config(outside())
        self.assertEqual(c.operator_extension, "101")
        c = C.parse_config(outside("\n[sip]\noperator = 102\n"))
        self.assertEqual(c.operator_extension, "102")
        c = C.parse_config(with_sections("[user carol]\npassword = %s\nextension = 99\n" % PW_HASH))
        self.assertEqual(c.operator_extension, "99")          # lowest as a number, not as text
        c = C.parse_config(MINIMAL.replace("extension = 101\n", "").replace("extension = 102\n", ""))
        self.assertIsNone(c.operator_extension)

    def test_by_number(self):
        c = C.parse_config(outside())
        self.assertEqual(c.group_by_number("500").name, "sales")
        self.assertEqual(c.attendant_by_number("600").name, "frontdesk")
        self.assertIsNone(c.group_by_number("600"))
        self.assertIsNone(c.attendant_by_number("500"))

    def test_resolve_target(self):
        c = C.parse_config(outside())
        resolve = c.resolve_target
        self.assertEqual(resolve(Target("name", "sales")), Target("group", "sales"))
        self.assertEqual(resolve(Target("name", "frontdesk")), Target("attendant", "frontdesk"))
        self.assertEqual(resolve(Target("extension", "101")), Target("extension", "101"))
        self.assertEqual(resolve(Target("extension", "500")), Target("group", "sales"))
        self.assertEqual(resolve(Target("extension", "600")), Target("attendant", "frontdesk"))
        self.assertEqual(resolve(Target("voicemail", "102")), Target("voicemail", "102"))
        self.assertEqual(resolve(Target("group", "sales")), Target("group", "sales"))
        self.assertEqual(resolve(Target("outside", "+15557770001")), Target("outside", "+15557770001"))
        for target, fragment in ((Target("name", "nobody"), "no [group nobody] or [attendant nobody]"),
                                 (Target("extension", "105"), "extension 105"),
                                 (Target("voicemail", "105"), "extension 105"),
                                 (Target("group", "frontdesk"), "no [group frontdesk]"),
                                 (Target("attendant", "sales"), "no [attendant sales]")):
            with self.assertRaises(ValueError) as e:
                resolve(target)
            self.assertIn(fragment, str(e.exception))

    def test_inbound_target(self):
        c = C.parse_config(outside())
        self.assertEqual(c.inbound_target("+15551230000"), Target("attendant", "frontdesk"))
        self.assertEqual(c.inbound_target("+15551230001"), Target("extension", "101"))
        self.assertIsNone(c.inbound_target("+15559990000"))
        c = C.parse_config(outside().replace("numbers = +15551230000 +15551230001",
                                             "numbers = +15551230000 +15551230001 +15551230002"))
        self.assertEqual(c.inbound_target("+15551230002"), Target("extension", "101"))

    def test_new_user_and_sip_keys(self):
        c = C.parse_config(outside("""
[sip]
outbound_prefix = 8
operator = 102
country_code = 44
national_prefix = 0
international_prefix = 00
wan = yes
tls_port = 5071

[user carol]
password = {pw}
extension = 103
outside = no
dnd = yes
forward_always = 101
forward_busy = 102
""".format(pw=PW_HASH)))
        s = c.sip
        self.assertEqual((s.outbound_prefix, s.operator, s.country_code, s.national_prefix,
                          s.international_prefix, s.wan, s.tls_port),
                         ("8", "102", "44", "0", "00", True, 5071))
        carol = c.users["carol"]
        self.assertEqual((carol.outside, carol.dnd, carol.forward_always, carol.forward_busy),
                         (False, True, Target("extension", "101"), Target("extension", "102")))


# Text of each new key, and the value it reads as; each must write back as
# text that reads as the same value.
NEW_KEYS = {
    C.Trunk: {"registrar": "sip.provider.example:5080", "username": "office",
              "auth_username": "auth-1", "secret": "p a s s", "transport": "tls",
              "outbound_proxy": "proxy.provider.example", "expires": "1h", "register": "no",
              "numbers": "+15551230000, +15551230001", "caller_id": "+15551230000",
              "channels": "30", "number_format": "national"},
    C.Number: {"to": "voicemail 101"},
    C.Group: {"number": "500", "members": "101,102", "strategy": "hunt", "ring_timeout": "1m",
              "fallback": "frontdesk"},
    C.Attendant: dict({"number": "600", "greeting": "Hello there", "timeout": "15",
                       "fallback": "101", "hours": "mon-fri 08:30-12:00, sat 09:00-12:00",
                       "after_hours": "voicemail 101"},
                      **{"key_%d" % d: "10%d" % d for d in range(10)}),
    C.SipSettings: {"outbound_prefix": "0", "operator": "101", "country_code": "44",
                    "national_prefix": "none", "international_prefix": "00", "wan": "yes",
                    "tls_port": "5071"},
    C.User: {"outside": "no", "forward_always": "102", "forward_busy": "95557770001",
             "forward_noanswer": "+15557770001", "dnd": "on"},
}


class RoundTripTests(unittest.TestCase):

    def test_every_new_key_round_trips(self):
        for cls, texts in NEW_KEYS.items():
            fields = attr.fields_dict(cls)
            for name, text in texts.items():
                parse = fields[name].metadata["parse"]
                value = parse(text)
                written = C.format_value(cls, name, value)
                self.assertEqual(parse(written), value, (cls.__name__, name, written))
                self.assertEqual(C.format_value(cls, name, parse(written)), written)

    def test_every_new_key_is_listed(self):
        new = {C.Trunk, C.Number, C.Group, C.Attendant}
        for cls in new:
            self.assertEqual(set(NEW_KEYS[cls]), {f.name for f in C.keys_of(cls)}, cls)

    def test_defaults_write_back(self):
        for cls in (C.Trunk, C.Group, C.Attendant, C.SipSettings, C.User):
            for f in C.keys_of(cls):
                if f.default is C.REQUIRED:
                    continue
                text = C.format_value(cls, f.name, f.default)
                self.assertEqual(f.metadata["parse"](text) if text else None,
                                 f.default if text else None, (cls.__name__, f.name))

    def test_through_the_office(self):
        """Each new section written by the office (as the pages and API do) reads back the same."""
        base = self.mktemp()
        os.makedirs(base)
        path = os.path.join(base, "tap.conf")
        with open(path, "w") as f:
            f.write(outside())
        office = Office(C.load_config(path))
        trunk = dict(NEW_KEYS[C.Trunk], numbers="+15551230000 +15551230001")
        office.put_record("trunk", "main", trunk)
        office.put_record("trunk", "second", {"registrar": "sip2.provider.example",
                                              "username": "u2", "secret": "x"})
        office.put_record("group", "sales", dict(NEW_KEYS[C.Group], fallback="frontdesk"))
        attendant = dict(NEW_KEYS[C.Attendant], **{"key_%d" % d: "101" for d in range(10)})
        office.put_record("attendant", "frontdesk", attendant)
        office.put_record("number", "+15551230001", {"to": "sales"})
        office.update_settings("sip", dict(NEW_KEYS[C.SipSettings], outbound_prefix="8"))
        office.patch_record("user", "bob", dict(NEW_KEYS[C.User], outside="yes", forward_always="101",
                                                     forward_busy="85557770001"))
        again = C.load_config(path)
        self.assertEqual(again, office.config)
        self.assertEqual(again.trunks["main"].secret, "p a s s")
        self.assertEqual(again.sip.national_prefix, "")
        self.assertEqual(C.format_value(C.Attendant, "hours", again.attendants["frontdesk"].hours),
                         "mon-fri 08:30-12:00, sat 09:00-12:00")
        with open(path) as f:
            text = f.read()
        self.assertIn("national_prefix = none", text)
        self.assertIn("[trunk second]", text)
        office.delete_record("trunk", "second")
        self.assertNotIn("second", C.load_config(path).trunks)


class CheckTests(unittest.TestCase):

    def assertError(self, text, section, key, fragment, line_needle=None, after=""):
        """An error at [section] key whose message holds `fragment`, on the line of `line_needle`."""
        errs = errors_of(text)
        for e in errs:
            if e.section == section and e.key == key and fragment in e.message:
                needle = line_needle or ("%s =" % key if key else "[%s]" % section)
                self.assertEqual(e.line, line_of(text, needle, after or "[%s]" % section), str(e))
                return e
        self.fail("no error [%s] %s ~ %r in:\n%s" % (section, key, fragment,
                                                     "\n".join(map(str, errs))))

    def test_valid(self):
        C.parse_config(outside())

    def test_bad_values_all_at_once(self):
        text = outside("""
[trunk bad]
registrar = sip.provider.example:99999
username = a b
secret = x
transport = sctp
expires = 30
channels = 0
number_format = local
numbers = +15551230002 5551230003

[group g2]
number = 5x
strategy = random
ring_timeout = 0
fallback = two words

[attendant a2]
timeout = 121
hours = mon-fri 17:00-08:00
key_5 = 1
""")
        errs = errors_of(text)
        got = {(e.section, e.key) for e in errs}
        for k in ("registrar", "username", "transport", "expires", "channels", "number_format",
                  "numbers"):
            self.assertIn(("trunk bad", k), got)
        for k in ("number", "strategy", "ring_timeout", "fallback"):
            self.assertIn(("group g2", k), got)
        for k in ("timeout", "hours", "key_5"):
            self.assertIn(("attendant a2", k), got)
        self.assertError(text, "trunk bad", "numbers", "'5551230003' is not an E.164 number",
                         after="[trunk bad]")
        self.assertError(text, "attendant a2", "hours", "ends before it starts", after="[attendant a2]")

    def test_number_name_not_e164(self):
        self.assertError(outside("\n[number 5551230000]\nto = 101\n"), "number 5551230000", None,
                         "expected an E.164 number")

    def test_bad_group_name_says_why(self):
        self.assertError(outside("\n[group 9sales]\nnumber = 510\nmembers = 101\n"), "group 9sales",
                         None, "expected a letter")

    def test_target_naming_nothing(self):
        text = outside().replace("to = frontdesk", "to = frontdsk")
        e = self.assertError(text, "number +15551230000", "to",
                             "no [group frontdsk] or [attendant frontdsk]")
        self.assertIn("did you mean 'frontdesk'", e.message)
        text = outside().replace("fallback = voicemail 101", "fallback = voicemail 105")
        self.assertError(text, "group sales", "fallback", "extension 105")
        text = outside().replace("key_2 = 102", "key_2 = 105")
        self.assertError(text, "attendant frontdesk", "key_2", "no user, group or attendant has "
                         "the extension 105")
        text = outside().replace("after_hours = voicemail 101", "after_hours = nobody")
        self.assertError(text, "attendant frontdesk", "after_hours", "no [group nobody]")

    def test_target_of_a_broken_section_is_not_named_twice(self):
        text = outside().replace("[group sales]\nnumber = 500\n", "[group sales]\n")
        errs = errors_of(text)
        self.assertEqual([(e.section, e.key) for e in errs], [("group sales", "number")], errs)

    def test_number_no_trunk_has(self):
        self.assertError(outside("\n[number +15559990000]\nto = 101\n"), "number +15559990000",
                         None, "no [trunk] has +15559990000")

    def test_number_in_two_trunks(self):
        text = outside("\n[trunk second]\nregistrar = sip2.example\nusername = u\nsecret = s\n"
                       "numbers = +15551230001\n")
        self.assertError(text, "trunk second", "numbers",
                         "+15551230001 is already a number of trunk main", after="[trunk second]")

    def test_group_and_attendant_numbers_clash(self):
        cases = [("number = 500", "number = 101", "group sales", "already the extension of user alice"),
                 ("number = 500", "number = 400", "group sales", "already the voicemail number"),
                 ("number = 600", "number = 500", "attendant frontdesk", "already the number of group sales")]
        for old, new, section, fragment in cases:
            self.assertError(outside().replace(old, new), section, "number", fragment)
        text = outside("\n[group support]\nnumber = 500\nmembers = 102\n")
        self.assertError(text, "group support", "number", "already the number of group sales",
                         after="[group support]")

    def test_numbers_that_would_be_dialled_out(self):
        text = outside().replace("number = 500", "number = 901")
        self.assertError(text, "group sales", "number", "901 would be dialled out")
        text = outside("\n[user carol]\npassword = %s\nextension = 912\n" % PW_HASH)
        self.assertError(text, "user carol", "extension", "912 would be dialled out")
        text = outside("\n[sip]\nvoicemail_number = 98\n")
        self.assertError(text, "sip", "voicemail_number", "98 would be dialled out")
        text = outside("\n[user carol]\npassword = %s\nextension = 911\n" % PW_HASH)
        self.assertError(text, "user carol", "extension", "emergency number")
        # Without a trunk nothing is dialled out: such numbers are fine.
        C.parse_config(with_sections("[user carol]\npassword = %s\nextension = 912\n" % PW_HASH))

    def test_group_members(self):
        self.assertError(outside().replace("members = 101 102", "members = 101 105"),
                         "group sales", "members", "no user has the extension 105")
        self.assertError(outside().replace("members = 101 102\n", ""),
                         "group sales", "members", "has no members", line_needle="[group sales]")
        self.assertError(outside().replace("fallback = voicemail 101", "fallback = sales"),
                         "group sales", "fallback", "is the group itself")

    def test_forwarding(self):
        def user(*lines):
            return outside("\n[user carol]\npassword = %s\nextension = 103\n%s\n"
                           % (PW_HASH, "\n".join(lines)))
        self.assertError(user("forward_busy = 105"), "user carol", "forward_busy",
                         "no user, group or attendant has the extension 105")
        self.assertError(user("forward_always = 103"), "user carol", "forward_always",
                         "own extension")
        self.assertError(user("forward_noanswer = 5557770001"), "user carol", "forward_noanswer",
                         "the outbound prefix 9 first")
        self.assertError(user("outside = no", "forward_noanswer = +15557770001"), "user carol",
                         "forward_noanswer", "outside = no")
        self.assertError(with_sections("[user carol]\npassword = %s\nforward_always = +15557770001\n"
                                       % PW_HASH), "user carol", "forward_always", "no [trunk]")
        c = C.parse_config(user("forward_always = 500", "forward_busy = 95557770001",
                                "forward_noanswer = +15557770001"))
        self.assertEqual(c.users["carol"].forward_always, Target("extension", "500"))

    def test_operator(self):
        self.assertError(outside("\n[sip]\noperator = 105\n"), "sip", "operator",
                         "no user has the extension 105")

    def test_number_for_the_operator_without_one(self):
        base = MINIMAL.replace("extension = 101\n", "").replace("extension = 102\n", "")
        text = with_sections(OUTSIDE.split("[group sales]")[0].replace("to = frontdesk\n", ""), base)
        self.assertError(text, "number +15551230000", "to", "no user has an extension",
                         line_needle="[number +15551230000]")
