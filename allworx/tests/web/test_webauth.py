# -*- test-case-name: allworx.tests.web.test_webauth -*-
"""
Who may use the admin port (SPEC 10, 11): admins are users with `admin =
yes` (a page session or HTTP Basic as that user), a colleague who is no
admin gets 403, the old `[web] admin_password` still logs in `admin` and
moves to `[user admin]` with the first change, the last admin cannot be
removed; `/metrics` needs an admin login or the bearer token of `[web]
metrics_token`; the login throttle locks a user at a source, not the
colleagues behind the same address, and says until when.
"""

import base64
import json

from twisted.internet import defer
from twisted.trial import unittest

from allworx.auth import AdminChecker
from allworx.confighistory import ConfigHistory
from allworx.tests.webhelpers import BASIC, CHEAP, CHEAP_HASH, JSON, AdminClient, sync_thread

TOKEN = "tok-3f9a8b7c6d5e4f3a2b1c0d"

# No [web] admin_password: alice is the admin, bob is not (both "admin-demo").
ADMINS = CHEAP.replace("[web]\nadmin_password = %s\n" % CHEAP_HASH,
                       "[web]\nmetrics_token = %s\n" % TOKEN).replace(
    "[user alice]\n", "[user alice]\nadmin = yes\n")


def basic(user, password="admin-demo"):
    return {b"Authorization": [b"Basic " + base64.b64encode(("%s:%s" % (user, password)).encode())]}


class Case(unittest.TestCase):
    text = ADMINS

    def setUp(self):
        self.c = AdminClient(self, self.text)

    def api(self, method, url, body=None, headers=None):
        h = dict(JSON) if body is not None else {}
        h.update(headers if headers is not None else basic("alice"))
        data = json.dumps(body).encode() if body is not None else None
        r = self.c.request(method, "/api/v1" + url, data=data, headers=h)
        r.json = json.loads(r.text) if r.text.strip().startswith(("{", "[")) else None
        return r


class AdminRightsTests(Case):

    def test_config_reads_admin(self):
        config = self.c.office.config
        self.assertEqual(config.admins, ["alice"])
        self.assertIsNone(config.web.admin_password)
        self.assertFalse(config.users["bob"].admin)     # the default

    def test_admin_user_logs_in_to_pages_and_api(self):
        r = self.c.login(user="alice")
        self.assertEqual(r.code, 303, r.text)
        self.assertEqual(self.c.get("/status").code, 200)
        self.assertEqual(self.api("GET", "/users").code, 200)
        # By extension too: 101 is alice.
        self.assertEqual(self.api("GET", "/users", headers=basic("101")).code, 200)

    def test_not_an_admin_gets_403_from_pages_and_api(self):
        r = self.c.login(user="bob")
        self.assertEqual(r.code, 403)
        self.assertIn("bob is not an admin", r.text)
        self.assertEqual(self.c.get("/status").code, 303)      # no session was made
        r = self.api("GET", "/users", headers=basic("bob"))
        self.assertEqual(r.code, 403, r.text)
        self.assertIn("bob is not an admin", r.text)
        self.assertEqual(self.api("PATCH", "/settings/dhcp", {"range": "1-50"},
                                  headers=basic("bob")).code, 403)
        self.assertEqual(self.api("GET", "/users", headers=basic("bob", "wrong")).code, 401)
        # The old login `admin` is gone with [web] admin_password.
        self.assertEqual(self.api("GET", "/users", headers=basic("admin")).code, 401)

    def test_more_than_one_admin_and_rights_checked_on_each_request(self):
        r = self.api("PATCH", "/users/bob", {"admin": True})
        self.assertEqual(r.code, 200, r.text)
        self.assertIs(self.api("GET", "/users/bob").json["admin"], True)
        schema = self.api("GET", "/openapi.json", headers={}).json
        self.assertEqual(schema["components"]["schemas"]["User"]["properties"]["admin"]["type"],
                         "boolean")
        self.assertEqual(self.c.office.config.admins, ["alice", "bob"])
        self.assertIn("[user bob]\nfull_name = Bob Baker\nextension = 102\npassword = ",
                      self.c.tap_conf())
        self.assertIn("admin = yes\n", self.c.tap_conf().split("[user bob]")[1])
        self.assertEqual(self.c.login(user="bob").code, 303)
        self.assertEqual(self.c.get("/status").code, 200)
        # bob's right is taken away while his session lives: his next page is refused.
        self.assertEqual(self.api("PATCH", "/users/bob", {"admin": False}).code, 200)
        self.assertEqual(self.c.get("/status").code, 403)

    def test_the_last_admin_stays(self):
        before = self.c.tap_conf()
        r = self.api("PATCH", "/users/alice", {"admin": False})
        self.assertEqual(r.code, 400, r.text)
        self.assertIn("alice is the last admin", r.text)
        r = self.api("DELETE", "/users/alice")
        self.assertEqual(r.code, 400, r.text)
        self.assertIn("alice is the last admin", r.text)
        self.assertEqual(self.c.tap_conf(), before)

    def test_history_names_the_admin(self):
        history = ConfigHistory(self.mktemp())
        self.c.office.keep_history(history)
        self.assertEqual(self.api("PATCH", "/settings/dhcp", {"range": "1-50"}).code, 200)
        newest = history.entries()[0]
        self.assertEqual((newest["actor"], newest["via"]), ("alice", "api"))
        # The same when logged in by extension: the user's name is recorded.
        self.api("PATCH", "/settings/dhcp", {"range": "1-60"}, headers=basic("101"))
        self.assertEqual(history.entries()[0]["actor"], "alice")
        # And through the pages.
        self.c.login(user="101")
        token = self.c.csrf("/users")
        r = self.api("PATCH", "/settings/dhcp", {"range": "1-70"},
                     headers={b"X-CSRF-Token": [token.encode()]})
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual((history.entries()[0]["actor"], history.entries()[0]["via"]),
                         ("alice", "api"))

    def test_users_page_sets_admin(self):
        self.c.login(user="alice")
        page = self.c.get("/users/bob").text
        self.assertIn('name="admin"', page)


class MigrationTests(Case):
    """The old story: `[web] admin_password` and no admin user."""

    text = CHEAP

    def test_old_password_still_logs_in_with_a_warning(self):
        self.assertEqual(self.c.login().code, 303)
        page = self.c.get("/status").text
        self.assertIn("[web] admin_password is obsolete", page)
        self.assertEqual(self.api("GET", "/users", headers=BASIC).code, 200)
        # Reading changes nothing.
        self.assertIn("admin_password = ", self.c.tap_conf())

    def test_first_change_moves_it_to_user_admin(self):
        r = self.api("PATCH", "/settings/dhcp", {"range": "1-50"}, headers=BASIC)
        self.assertEqual(r.code, 200, r.text)
        text = self.c.tap_conf()
        self.assertNotIn("admin_password", text)
        self.assertIn("[user admin]\nfull_name = Administrator\npassword = %s\nadmin = yes\n"
                      % CHEAP_HASH, text)
        # Before the other users.
        self.assertLess(text.index("[user admin]"), text.index("[user alice]"))
        config = self.c.office.config
        self.assertEqual((config.admins, config.web.admin_password), (["admin"], None))
        self.assertEqual(config.dhcp.range, (1, 50))
        # The same password logs in, now as the user.
        self.assertEqual(self.api("GET", "/users/admin", headers=BASIC).json["admin"], True)
        self.assertNotIn("obsolete", self.c.get("/status").text)

    def test_an_unchanged_save_moves_nothing(self):
        before = self.c.tap_conf()
        with self.c.office.acting("admin", "web"):
            self.c.office.update_settings("web", {})
        self.assertEqual(self.c.tap_conf(), before)

    def test_existing_user_admin_keeps_his_password(self):
        text = CHEAP.replace("[user alice]\n", "[user admin]\nfull_name = Ann Admin\n"
                             "password = $argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0$"
                             "ZbJ6k/1tyUTrZfS5ltKhaiZ1T5VCQhMNZ3ZIYfGJTxY\n\n[user alice]\n")
        c = AdminClient(self, text)
        ann = c.office.config.users["admin"].password
        self.assertEqual(c.login().code, 303)       # [web] admin_password, as before
        self.assertIn("that user keeps his own password", c.get("/status").text)
        r = c.request("PATCH", "/api/v1/settings/dhcp", data=b'{"range": "1-50"}',
                      headers={**BASIC, **JSON})
        self.assertEqual(r.code, 200, r.text)
        config = c.office.config
        self.assertEqual((config.admins, config.web.admin_password), (["admin"], None))
        self.assertEqual(config.users["admin"].password, ann)
        self.assertEqual(config.users["admin"].full_name, "Ann Admin")

    def test_a_restore_is_kept_as_it_is(self):
        text = self.c.tap_conf()
        with self.c.office.acting("admin", "web"):
            self.c.office.replace_text(text.replace("range = ", "range = ", 1))
        self.assertIn("admin_password", self.c.tap_conf())


class MetricsAuthTests(Case):

    def test_refused_without_login_or_token(self):
        r = self.c.get("/metrics")
        self.assertEqual(r.code, 401)
        self.assertNotIn("allworx_", r.text)
        schemes = r.headers.getRawHeaders("www-authenticate")
        self.assertTrue(any(s.startswith("Basic") for s in schemes), schemes)
        self.assertTrue(any(s.startswith("Bearer") for s in schemes), schemes)
        self.assertEqual(self.c.get("/metrics", headers={
            b"Authorization": [b"Bearer not-the-token-at-all"]}).code, 401)
        self.assertEqual(self.c.get("/metrics", headers=basic("alice", "wrong")).code, 401)
        self.assertEqual(self.c.get("/metrics", headers=basic("bob")).code, 403)

    def test_bearer_token(self):
        r = self.c.get("/metrics", headers={b"Authorization": [b"Bearer " + TOKEN.encode()]})
        self.assertEqual(r.code, 200, r.text)
        self.assertIn("allworx_office_service_up", r.text)

    def test_basic_as_admin(self):
        r = self.c.get("/metrics", headers=basic("alice"))
        self.assertEqual(r.code, 200, r.text)
        self.assertIn("allworx_office_records", r.text)

    def test_page_session(self):
        self.c.login(user="alice")
        self.assertEqual(self.c.get("/metrics").code, 200)

    def test_wrong_tokens_count_in_the_throttle(self):
        wrong = {b"Authorization": [b"Bearer wrong-token-0123456789"]}
        for _ in range(20):
            self.assertEqual(self.c.get("/metrics", headers=wrong).code, 401)
        r = self.c.get("/metrics", headers={b"Authorization": [b"Bearer " + TOKEN.encode()]})
        self.assertEqual(r.code, 429)
        self.assertRegex(r.text, r"locked until \d\d:\d\d UTC")

    def test_no_token_configured_refuses_every_bearer(self):
        c = AdminClient(self, CHEAP)
        self.assertEqual(c.get("/metrics", headers={b"Authorization": [b"Bearer "]}).code, 401)

    def test_token_is_never_shown_but_can_be_set(self):
        r = self.api("GET", "/settings/web")
        self.assertNotIn("metrics_token", r.json)
        self.assertNotIn(TOKEN, r.text)
        new = "another-token-0123456789"
        r = self.api("PATCH", "/settings/web", {"metrics_token": new})
        self.assertEqual(r.code, 200, r.text)
        self.assertNotIn(new, r.text)
        self.assertEqual(self.c.office.config.web.metrics_token, new)
        r = self.api("PATCH", "/settings/web", {"metrics_token": "short"})
        self.assertEqual(r.code, 400)
        self.assertNotIn('"short"', r.text)


class LockoutPageTests(Case):
    """The Users page lists a user's lock-out, says until when, and ends it."""

    def test_listed_with_until_and_unlocked(self):
        for _ in range(5):
            self.assertEqual(self.c.login("wrong", user="bob").code, 401)
        r = self.c.login(user="bob")
        self.assertEqual(r.code, 429)
        self.assertRegex(r.text, r"Too many failed logins for bob from 127\.0\.0\.1: "
                                 r"locked until \d\d:\d\d UTC \(in 15 minutes\)")
        # alice, at the same address, is not affected.
        self.assertEqual(self.c.login(user="alice").code, 303)
        page = self.c.get("/users").text
        self.assertIn("bob at 127.0.0.1", page)
        self.assertIn("alice</a> <small>(admin)</small>", page)
        token = self.c.csrf("/users")
        r = self.c.post("/users", {"csrf": token, "action": "unlock", "user": "bob",
                                   "source": "127.0.0.1"})
        self.assertEqual(r.code, 303)
        self.assertIn("Unlocked bob at 127.0.0.1.", self.c.get("/users").text)
        self.assertEqual(self.c.ctx.throttle.lockouts(), [])

    def test_the_api_says_until_when(self):
        for _ in range(5):
            self.api("GET", "/users", headers=basic("bob", "wrong"))
        r = self.api("GET", "/users", headers=basic("bob"))
        self.assertEqual(r.code, 429)
        self.assertRegex(r.text, r"too many failed logins for bob from 127\.0\.0\.1: "
                                 r"locked until \d\d:\d\d UTC")
        self.assertTrue(r.headers.getRawHeaders("retry-after"))
        self.assertEqual(self.api("GET", "/users").code, 200)      # alice is not locked

    def test_a_locked_source_is_named_as_such(self):
        for n in range(20):
            self.c.login("wrong", user="guess%d" % n)
        r = self.c.login(user="alice")
        self.assertEqual(r.code, 429)
        self.assertRegex(r.text, r"Too many failed logins from 127\.0\.0\.1: "
                                 r"locked until \d\d:\d\d UTC")


class HeldThreads:
    """deferToThread stand-in that holds each call until `release()`: checks that overlap."""

    def __init__(self):
        self.calls = []

    def __call__(self, f, *args, **kwargs):
        d = defer.Deferred()
        self.calls.append((d, f, args, kwargs))
        return d

    def release(self):
        calls, self.calls = self.calls, []
        for d, f, args, kwargs in calls:
            d.callback(f(*args, **kwargs))


class ConcurrentBasicTests(Case):
    """
    Many HTTP Basic requests at once (a script, a monitor): one password
    check for the same credentials, every request answered; guessing is
    counted per request as before, and a locked source gets no answer
    from the cache.
    """

    def setUp(self):
        Case.setUp(self)
        self.held = HeldThreads()
        self.c.ctx.checker = AdminChecker(self.c.office, deferToThread=self.held)

    def at_once(self, n, headers):
        """`n` GET /api/v1/users sent together: their (code, body), once all are answered."""
        answers = []
        for _ in range(n):
            d = self.c.stub.request("GET", "http://admin.example.com/api/v1/users", headers=headers)
            d.addCallback(lambda r: r.content().addCallback(
                lambda body, r=r: answers.append((r.code, body))))
            d.addErrback(answers.append)
        self.c.stub.flush()
        checks = len(self.held.calls)
        self.held.release()
        self.c.stub.flush()
        self.assertEqual(len(answers), n, answers)
        return checks, [code for code, _ in answers]

    def test_right_password_at_once_is_checked_once_and_all_answered(self):
        checks, codes = self.at_once(20, basic("alice"))
        self.assertEqual(checks, 1)             # one argon2 run, not 20
        self.assertEqual(codes, [200] * 20)
        self.assertEqual(len(self.c.ctx.throttle), 0)
        # Then remembered: no check at all.
        self.assertEqual(self.at_once(20, basic("alice")), (0, [200] * 20))

    def test_the_same_wrong_password_at_once_counts_every_request(self):
        checks, codes = self.at_once(20, basic("alice", "wrong"))
        self.assertEqual(checks, 1)
        self.assertEqual(codes, [401] * 20)
        # 20 failures, as 20 requests one after the other would count.
        throttle = self.c.ctx.throttle
        self.assertTrue(throttle.locked_until("127.0.0.1"))
        self.assertEqual(sorted((l.user or "", l.failures) for l in throttle.lockouts()),
                         [("", 20), ("alice", 5)])

    def test_different_guesses_at_once_are_each_checked(self):
        headers = [basic("alice", "guess%d" % n) for n in range(3)]
        for h in headers:
            self.c.stub.request("GET", "http://admin.example.com/api/v1/users", headers=h)
        self.c.stub.flush()
        self.assertEqual(len(self.held.calls), 3)
        self.held.release()
        self.c.stub.flush()

    def test_a_locked_source_gets_no_answer_from_the_cache(self):
        self.c.ctx.checker = AdminChecker(self.c.office, deferToThread=sync_thread)
        self.assertEqual(self.api("GET", "/users").code, 200)      # alice's login remembered
        for n in range(20):     # guessing across names (the clock stands still: still remembered)
            self.c.ctx.throttle.failed("127.0.0.1", "guess%d" % n)
        r = self.api("GET", "/users")
        self.assertEqual(r.code, 429, r.text)
        self.assertRegex(r.text, r"too many failed logins from 127\.0\.0\.1")
        self.assertTrue(r.headers.getRawHeaders("retry-after"))

    def test_a_slowed_source_waits_even_with_a_remembered_password(self):
        self.c.ctx.checker = AdminChecker(self.c.office, deferToThread=sync_thread)
        self.assertEqual(self.api("GET", "/users").code, 200)
        self.assertEqual(self.c.waited, 0)
        for n in range(6):      # past slow_after (5) failures of the source
            self.api("GET", "/users", headers=basic("guess%d" % n, "x"))
        self.assertEqual(self.api("GET", "/users").code, 200)
        self.assertGreater(self.c.waited, 0)    # held back like any login from there
