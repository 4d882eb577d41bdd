# -*- test-case-name: allworx.tests.web.test_nosecrets -*-
"""
No secret is ever shown (SPEC 11): with a config full of them (password
hashes, SIP digests, a voicemail PIN's hash, a trunk's password, a fetch
account's password, the metrics token), every GET route the API's index
lists and every admin page is read, and none of them appears.
"""

import json
import os

from twisted.trial import unittest

from allworx.backupservice import BackupService
from allworx.config import SETTINGS_SECTIONS
from allworx.confighistory import ConfigHistory
from allworx.passwords import sip_digest
from allworx.protocols.web import pages
from allworx.tests.confs import PIN_HASH
from allworx.tests.web.test_webauth import ADMINS, TOKEN, basic
from allworx.tests.webhelpers import CHEAP_HASH, AdminClient, sync_thread

TRUNK_SECRET = "top-s3cret word"
FETCH_SECRET = "fetch-S3cretPass"
DIGEST = sip_digest("101", "example.com", "admin-demo")

TEXT = ADMINS.replace("[user alice]\n", "[user alice]\npop3_fetch = pop3://alice:%s@pop.isp.example\n"
                      % FETCH_SECRET) + """
[trunk main]
registrar = sip.provider.example
username = office
secret = %s
numbers = +15551230000
""" % TRUNK_SECRET

def secrets_in(text):
    return [what for what, secret in (_SECRETS_NOW or _SECRETS).items() if secret in text]


_SECRETS_NOW = {}


# Each secret as it could leak: whole, or the part that identifies it.
_SECRETS = {
    "a password hash": CHEAP_HASH.rsplit("$", 1)[1],
    "a PIN hash": PIN_HASH.rsplit("$", 1)[1],
    "a SIP digest": DIGEST.split()[0].split(":")[1],
    "the trunk's password": TRUNK_SECRET,
    "a fetch password": FETCH_SECRET,
    "the metrics token": TOKEN,
}

# Routes whose answer is the configuration itself, secrets and all, by
# design: a backup (to restore it must hold them) and the file's download.
WHOLE_FILE = ("/api/v1/backup", "/api/v1/backup/tap.conf", "/api/v1/backups/{name}")


class NoSecretTests(unittest.TestCase):

    def setUp(self):
        self.c = AdminClient(self, TEXT)
        for what, secret in _SECRETS.items():
            self.assertIn(secret, self.c.tap_conf(), what)   # the test's own premise
        # The backups and the config history, with a version that changed secrets.
        office = self.c.office
        svc = BackupService(office, self.c.clock, restart=lambda swap: swap(),
                            defer_to_thread=sync_thread, now=self.c.clock.seconds)
        office.keep_history(ConfigHistory(os.path.join(office.config.system.data_dir,
                                                       "config-history")))
        self.c.ctx.views.backup = svc
        with office.acting("alice", "api"):
            office.patch_record("trunk", "main", {"secret": TRUNK_SECRET + "!"})
        svc.make_backup()
        _SECRETS_NOW.update(_SECRETS, new_trunk=TRUNK_SECRET + "!")

    def get(self, path):
        return self.c.get(path, headers=basic("alice"))

    def test_no_api_answer_shows_a_secret(self):
        index = json.loads(self.get("/api/v1/").text)
        walked, leaks = [], []
        for path in index["paths"]:
            if path in WHOLE_FILE:
                continue
            for concrete in self.expand(path):
                r = self.get(concrete)
                walked.append((concrete, r.code))
                found = secrets_in(r.text)
                if found:
                    leaks.append("%s shows %s" % (concrete, ", ".join(found)))
        self.assertEqual(leaks, [])
        ok = [p for p, code in walked if code == 200]
        for must in ("/api/v1/users/alice", "/api/v1/trunks/main", "/api/v1/settings/web",
                     "/api/v1/users", "/api/v1/backups", "/api/v1/config/history/1",
                     "/api/v1/config/history/2"):
            self.assertIn(must, ok, walked)

    def expand(self, path):
        if "{section}" in path:
            return [path.replace("{section}", s) for s in SETTINGS_SECTIONS]
        if "{name}" in path:
            collection = path.split("/{name}")[0]
            r = self.get(collection)
            try:
                body = json.loads(r.text)
            except ValueError:
                return []
            items = next((v for v in body.values() if isinstance(v, list)), []) \
                if isinstance(body, dict) else body
            names = [i.get("name") for i in items if isinstance(i, dict) and i.get("name")]
            return [path.replace("{name}", n) for n in names]
        if path.startswith("/api/v1/config/history/{id}"):
            versions = json.loads(self.get(path.split("/{id}")[0]).text)["versions"]
            return [path.replace("{id}", str(v["id"])) for v in versions]
        if "{" in path:
            return []
        return [path]

    def test_no_page_shows_a_secret(self):
        self.assertEqual(self.c.login(user="alice").code, 303)
        leaks = []
        for path in ["/" + p.slug for p in pages.PAGES] + [
                "/users/alice", "/users/bob", "/lines/edit/trunk/main"]:
            r = self.c.get(path)
            self.assertEqual(r.code, 200, path)
            found = secrets_in(r.text)
            if found:
                leaks.append("%s shows %s" % (path, ", ".join(found)))
        self.assertEqual(leaks, [])


class NoSecretInTheLogTests(unittest.TestCase):
    """What the server logs while secrets go by, right or wrong (SPEC 11)."""

    def setUp(self):
        from twisted.logger import globalLogPublisher
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.c = AdminClient(self, TEXT)

    def logged(self):
        from twisted.logger import formatEvent
        return "\n".join("%s %r" % (formatEvent(e), sorted(
            (k, v) for k, v in e.items() if not k.startswith("log_") and isinstance(v, str)))
            for e in self.events)

    def test_secrets_sent_right_and_wrong_stay_out_of_the_log(self):
        typed = {"a mistyped PIN": "98765432109", "a new password": "n3w-Passw0rd!",
                 "a wrong password": "wr0ng-Passw0rd", "a wrong token": "not-the-token-0123456",
                 "a new fetch password": "fetchN3wSecret"}
        c = self.c
        c.request("PATCH", "/api/v1/users/bob", data=json.dumps(
            {"voicemail_pin": typed["a mistyped PIN"]}).encode(),
            headers={**basic("alice"), b"Content-Type": [b"application/json"]})
        c.request("PATCH", "/api/v1/users/bob", data=json.dumps(
            {"password": typed["a new password"],
             "pop3_fetch": "pop3://bob:%s@pop.isp.example" % typed["a new fetch password"]}).encode(),
            headers={**basic("alice"), b"Content-Type": [b"application/json"]})
        c.get("/api/v1/users", headers=basic("alice", typed["a wrong password"]))
        c.get("/metrics", headers={b"Authorization": [b"Bearer " + typed["a wrong token"].encode()]})
        c.get("/metrics", headers={b"Authorization": [b"Bearer " + TOKEN.encode()]})
        c.login(typed["a wrong password"], user="bob")
        c.login(user="alice")
        # A page's form refused: its errors are logged, the PIN typed is not.
        r = c.post("/users", {"csrf": c.csrf("/users"), "action": "add_user", "name": "dan",
                              "password": typed["a new password"],
                              "voicemail_pin": typed["a mistyped PIN"]})
        self.assertEqual(r.code, 400, r.text)
        text = self.logged()
        self.assertIn("voicemail_pin", text)
        self.assertIn("admin login", text)           # the log did hear these requests
        leaks = [what for what, secret in list(typed.items()) + list(_SECRETS.items())
                 if secret in text]
        self.assertEqual(leaks, [])
        # And the session cookie and CSRF token of the login are not in it either.
        session = c.ctx.sessions._sessions
        for s in session.values():
            self.assertNotIn(s.id, text)
            self.assertNotIn(s.csrf, text)
