# -*- test-case-name: allworx.tests.web.test_phones -*-
"""
`/api/v1/phones` and the Phones page's phones (SPEC 19) over in-memory HTTP
with a real Office on a temporary tap.conf and fakes of the phone book
(IPhoneBook), the check-sync (ICheckSync), the registrar and the lease
table: the SPEC's keys and types, new and assigned phones, giving a new
phone to a user in one step (every mistake at once, nothing written on
error), the check-sync after each change, a new secret never shown, 401,
the index and the OpenAPI document.
"""

from twisted.internet import defer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from allworx.interfaces import ICheckSync, ILeaseTable, IPhoneBook, IRegistrations
from allworx.protocols.web import phonelist, phonesapi  # noqa: F401 (the routes)
from allworx.protocols.web.openapi import openapi_document
from allworx.tests.web.test_api import ApiCase
from allworx.tests.webhelpers import CHEAP, AdminClient
from allworx.phonebook import Sighting

T0 = 1796601600     # 2026-12-07T00:00:00Z

YEALINK = "001565abcdef"    # alice's, in tap.conf with colons
SNOM = "000413aabbcc"       # new: asked for its file, no section
POLY = "0004f2112233"       # new, and no lease any more

TEXT = CHEAP + """
[phone 00:15:65:AB:CD:EF]
user = alice
model = yealink
label = Front desk
"""



@implementer(IPhoneBook)
class FakePhoneBook:
    def __init__(self, seen=()):
        self.seen = {s.mac: s for s in seen}
        self.secrets = {}
        self.rotated = []

    def secret(self, mac):
        return self.secrets.setdefault(mac, "secret-of-" + mac)

    def has_secret(self, mac):
        return mac in self.secrets

    def rotate(self, mac):
        self.rotated.append(mac)
        self.secrets[mac] = "NEW-SECRET-%d" % len(self.rotated)
        return self.secrets[mac]

    def held_secret(self, mac):
        return self.secret(mac)

    def sighted(self, mac, address, model, filename, user_agent=None):
        self.seen[mac] = Sighting(mac, address, model, filename, user_agent, T0)

    def sightings(self):
        return dict(self.seen)


@implementer(ICheckSync)
class FakeCheckSync:
    def __init__(self, answer=True):
        self.answer = answer
        self.sent = []

    def resync(self, mac):
        self.sent.append(mac)
        return self.answer if isinstance(self.answer, defer.Deferred) else defer.succeed(self.answer)


@implementer(IRegistrations)
class FakeRegistrations:
    def __init__(self, bindings):
        self.found = bindings

    def bindings(self):
        return list(self.found)


@implementer(ILeaseTable)
class FakeLeases:
    def __init__(self, leases):
        self.found = leases

    def active_leases(self):
        return list(self.found)

    def lease_count(self):
        return len(self.found)

    def leases_page(self, offset, limit):
        return list(self.found[offset:offset + limit])


def lease(mac, address):
    return {"mac": ":".join(mac[i:i + 2] for i in range(0, 12, 2)), "address": address,
            "hostname": None, "expires": T0 + 3600, "state": "bound"}


def fakes(views):
    views.phones = FakePhoneBook([
        Sighting(YEALINK, "192.168.2.30", "yealink", "001565abcdef.cfg", "Yealink SIP-T46S",
                 T0 - 300),
        Sighting(SNOM, "192.168.2.37", "snom", "000413AABBCC.xml", "snom D785", T0 - 120),
        Sighting(POLY, "192.168.2.41", "polycom", "0004f2112233.cfg", None, T0 - 7200)])
    views.checksync = FakeCheckSync()
    views.registrations = FakeRegistrations([
        {"user": "alice", "extension": "101", "contact": "sip:101@192.168.2.31:5060",
         "source": "192.168.2.31:5060", "expires": T0 + 600},
        {"user": "bob", "extension": "102", "contact": "sip:102@192.168.2.90:5060",
         "source": "192.168.2.90:5060", "expires": T0 + 600}])
    views.leases = FakeLeases([lease(YEALINK, "192.168.2.31"), lease(SNOM, "192.168.2.37"),
                               lease("001122334455", "192.168.2.90")])
    for fake, iface in ((views.phones, IPhoneBook), (views.checksync, ICheckSync),
                        (views.registrations, IRegistrations), (views.leases, ILeaseTable)):
        verifyObject(iface, fake)
    return views


ALICE_PHONE = {"mac": YEALINK, "model": "yealink", "user": "alice", "label": "Front desk",
               "address": "192.168.2.31", "last_fetch": "2026-12-06T23:55:00Z",
               "registered": True, "state": "assigned"}
SNOM_PHONE = {"mac": SNOM, "model": "snom", "user": None, "label": "", "address": "192.168.2.37",
              "last_fetch": "2026-12-06T23:58:00Z", "registered": False, "state": "new"}
POLY_PHONE = {"mac": POLY, "model": "polycom", "user": None, "label": "",
              "address": "192.168.2.41", "last_fetch": "2026-12-06T22:00:00Z",
              "registered": False, "state": "new"}


class PhonesApiTests(ApiCase):
    def setUp(self):
        self.c = AdminClient(self, TEXT)
        self.c.clock.advance(T0)
        self.views = fakes(self.c.ctx.views)

    def test_list(self):
        r = self.call("GET", "/phones")
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(r.json, [ALICE_PHONE, SNOM_PHONE, POLY_PHONE])

    def test_list_without_the_services(self):
        self.views.phones = self.views.registrations = self.views.leases = None
        self.assertEqual(self.call("GET", "/phones").json, [dict(
            ALICE_PHONE, address=None, last_fetch=None, registered=False)])

    def test_the_lease_over_the_sighting(self):
        self.views.leases.found[0]["address"] = "192.168.2.99"
        [alice] = [p for p in self.call("GET", "/phones").json if p["mac"] == YEALINK]
        # Registered from .31, but the lease is at .99 now: not this phone.
        self.assertEqual((alice["address"], alice["registered"]), ("192.168.2.99", False))

    def test_one_phone_any_notation(self):
        for mac in ("00:15:65:ab:cd:ef", "0015.65AB.CDEF", YEALINK):
            self.assertEqual(self.call("GET", "/phones/" + mac).json, ALICE_PHONE)
        self.assertEqual(self.call("GET", "/phones/000413-aa-bb-cc").code, 400)
        self.assertEqual(self.call("GET", "/phones/00-04-13-AA-BB-CC").json, SNOM_PHONE)
        r = self.call("GET", "/phones/0000000000ff")
        self.assertEqual((r.code, r.json["reason"]), (404, "there is no phone 0000000000ff"))
        r = self.call("GET", "/phones/not-a-mac")
        self.assertEqual((r.code, r.json["field"]), (400, "mac"), r.text)

    def test_give_a_new_phone_in_one_step(self):
        r = self.call("POST", "/phones/00:04:13:aa:bb:cc", {"user": "102", "label": "Bob"})
        self.assertEqual(r.code, 201, r.text)
        self.assertEqual(r.headers.getRawHeaders("location"), ["/api/v1/phones/" + SNOM])
        self.assertEqual(r.json, dict(SNOM_PHONE, user="bob", label="Bob", state="assigned",
                                      resync=True))
        self.assertIn("[phone %s]\nuser = bob\nlabel = Bob\nmodel = snom\n" % SNOM,
                      self.c.tap_conf())
        self.assertEqual(self.c.office.config.phone_by_mac(SNOM).model, "snom")
        self.assertEqual(self.views.checksync.sent, [SNOM])
        self.assertEqual([p["state"] for p in self.call("GET", "/phones").json],
                         ["assigned", "assigned", "new"])

    def test_every_mistake_at_once_nothing_written(self):
        before = self.c.tap_conf()
        r = self.call("POST", "/phones/" + SNOM, {"model": "nokia", "label": "x" * 40,
                                                  "colour": "red"})
        self.assertEqual(r.code, 400, r.text)
        self.assertEqual(sorted(e["key"] for e in r.json["errors"]),
                         ["colour", "label", "model", "user"])
        r = self.call("POST", "/phones/" + SNOM, {"user": "carol"})
        self.assertEqual((r.code, r.json["errors"][0]["message"]),
                         (400, "there is no [user carol]"), r.text)
        # alice has a Yealink already: a second one is refused.
        r = self.call("POST", "/phones/" + SNOM, {"user": "alice", "model": "yealink"})
        self.assertEqual(r.code, 400, r.text)
        self.assertIn("already has a yealink phone", r.json["reason"])
        r = self.call("POST", "/phones/" + SNOM, {"user": "bob", "mac": POLY})
        self.assertEqual((r.code, r.json["field"]), (400, "mac"))
        self.assertEqual(self.c.tap_conf(), before)
        self.assertEqual(self.views.checksync.sent, [])

    def test_post_changes_the_keys_given_put_replaces(self):
        r = self.call("POST", "/phones/" + YEALINK, {"label": "Reception"})
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(r.json, dict(ALICE_PHONE, label="Reception", resync=True))
        self.assertIn("[phone 00:15:65:AB:CD:EF]\nuser = alice\nmodel = yealink\n"
                      "label = Reception\n", self.c.tap_conf())
        # A GET's object sent back (facts and all) changes nothing else.
        got = self.call("GET", "/phones/" + YEALINK).json
        r = self.call("PUT", "/phones/" + YEALINK, dict(got, user="bob", model=None))
        self.assertEqual(r.code, 200, r.text)
        phone = self.c.office.config.phone_by_mac(YEALINK)
        self.assertEqual((phone.user, phone.model, phone.label), ("bob", None, "Reception"))
        # The model now is the guess from the sighting.
        self.assertEqual(r.json["model"], "yealink")
        self.assertEqual(self.views.checksync.sent, [YEALINK, YEALINK])

    def test_patch_and_delete(self):
        r = self.call("PATCH", "/phones/" + SNOM, {"label": "x"})
        self.assertEqual(r.code, 404, r.text)
        r = self.call("PATCH", "/phones/" + YEALINK, {"label": ""})
        self.assertEqual((r.code, r.json["label"]), (200, ""), r.text)
        r = self.call("DELETE", "/phones/00-15-65-ab-cd-ef")
        self.assertEqual(r.code, 204, r.text)
        self.assertNotIn("[phone", self.c.tap_conf())
        # Seen before: a new phone again.
        self.assertEqual(self.call("GET", "/phones/" + YEALINK).json["state"], "new")
        self.assertEqual(self.call("DELETE", "/phones/" + YEALINK).code, 404)

    def test_the_check_sync_not_taken_or_slow(self):
        self.views.checksync.answer = False
        r = self.call("POST", "/phones/" + YEALINK, {"label": "A"})
        self.assertEqual(r.json["resync"], False)
        slow = defer.Deferred()
        self.views.checksync.answer = slow
        d = phonelist.resync(self.views, self.c.clock, YEALINK)
        got = []
        d.addCallback(got.append)
        self.assertEqual(got, [])
        self.c.clock.advance(phonelist.RESYNC_WAIT)
        self.assertEqual(got, [None])
        slow.callback(True)     # later: logged, nothing else
        self.assertEqual(got, [None])
        self.views.checksync = None
        self.assertEqual(self.call("POST", "/phones/" + YEALINK, {"label": "B"}).json["resync"],
                         False)

    def test_new_secret_never_shown(self):
        r = self.call("POST", "/phones/00:15:65:ab:cd:ef/secret")
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(r.json, dict(ALICE_PHONE, resync=True, rotated=True))
        self.assertNotIn("NEW-SECRET", r.text)
        self.assertEqual(self.views.phones.rotated, [YEALINK])
        self.assertEqual(self.views.checksync.sent, [YEALINK])
        self.assertEqual(self.call("POST", "/phones/%s/secret" % SNOM).code, 404)
        self.views.phones = None
        self.assertEqual(self.call("POST", "/phones/%s/secret" % YEALINK).code, 503)
        for path in ("/phones", "/phones/" + YEALINK):
            self.assertNotIn("secret-of", self.call("GET", path).text)

    def test_needs_login(self):
        self.assertEqual(self.call("GET", "/phones", auth=False).code, 401)
        self.assertEqual(self.call("POST", "/phones/" + SNOM, {"user": "bob"}, auth=False).code,
                         401)
        self.assertEqual(self.call("POST", "/phones/%s/secret" % YEALINK, auth=False).code, 401)
        self.assertEqual(self.views.phones.rotated, [])

    def test_records_post_still_creates(self):
        r = self.call("POST", "/phones", {"name": SNOM, "user": "bob"})
        self.assertEqual(r.code, 201, r.text)
        self.assertEqual(self.c.office.config.phone_by_mac(SNOM).user, "bob")

    def test_listed_and_described(self):
        paths = self.call("GET", "/").json["paths"]
        for path in ("/api/v1/phones", "/api/v1/phones/{mac}", "/api/v1/phones/{mac}/secret"):
            self.assertIn(path, paths)
        self.assertNotIn("/api/v1/phones/{name}", paths)
        doc = self.call("GET", "/openapi.json", auth=False).json
        self.assertEqual(doc, openapi_document())
        schema = doc["components"]["schemas"]["PhoneStatus"]
        self.assertEqual(set(schema["properties"]), set(phonelist.PHONE_KEYS))
        self.assertEqual(set(schema["required"]), set(schema["properties"]))
        self.assertEqual(set(doc["paths"]["/api/v1/phones/{mac}"]) - {"parameters"},
                         {"get", "post", "put", "patch", "delete"})
        self.assertEqual(set(doc["paths"]["/api/v1/phones"]), {"get", "post"})
