"""Tests for POP3 fetching (allworx.protocols.mail.fetch): bookkeeping, multi-drop, failures and backoff."""

import types

from twisted.internet import defer
from twisted.mail.pop3 import ServerErrorResponse
from twisted.trial import unittest

from allworx.protocols.mail import fetch
from allworx.tests.mailtesting import MAIL_CONF, make_office, make_store, sync_thread

CONF = MAIL_CONF.replace(
    "[user admin]\n", "[user admin]\npop3_fetch = pop3://office:officepw@pop.isp.example\n").replace(
    "[user alice]\n", "[user alice]\npop3_fetch = pop3://alice1:pw1@pop.isp.example:1110\n")


class FakePop3Server:
    """The remote mailbox: {uid: bytes}, deletions at QUIT, optional failures."""

    def __init__(self, messages, password="officepw"):
        self.messages = dict(messages)
        self.password = password
        self.logins = 0
        self.unreachable = False
        self.fail_quit = False
        self.stls = False
        self.tls_started = False


class FakeClient:
    """What AccountPoller uses of twisted's POP3Client, over a FakePop3Server."""

    def __init__(self, server):
        self.server = server
        self.uids = list(server.messages)
        self.deleted = set()
        self.transport = None

    def capabilities(self, useCache=True):
        return defer.succeed({b"STLS": None} if self.server.stls else {})

    def startTLS(self, context):
        self.server.tls_started = True
        return defer.succeed({})

    def user(self, name):
        return defer.succeed(b"ok")

    def password(self, pw):
        if pw.decode() != self.server.password:
            return defer.fail(ServerErrorResponse(b"[AUTH] wrong password"))
        self.server.logins += 1
        return defer.succeed(b"ok")

    def listUID(self):
        return defer.succeed([u.encode() for u in self.uids])

    def retrieve(self, index):
        return defer.succeed(self.server.messages[self.uids[index]].split(b"\n")[:-1])

    def delete(self, index):
        self.deleted.add(index)
        return defer.succeed(b"ok")

    def quit(self):
        if self.server.fail_quit:
            return defer.fail(ConnectionError("lost"))
        for i in self.deleted:
            self.server.messages.pop(self.uids[i], None)
        return defer.succeed(b"bye")


class FetchTests(unittest.TestCase):

    def setUp(self):
        office = make_office(self, CONF)
        self.office, self.store, self.queue, self.clock = make_store(self, office=office)
        self.mail = types.SimpleNamespace(office=office, store=self.store, reactor=self.clock,
                                          defer_to_thread=sync_thread)
        self.remote = FakePop3Server({
            "u1": b"From: a@x.example\nTo: Bob <bob@example.com>, sales@example.com\nSubject: 1\n\nbody\n",
            "u2": b"From: a@x.example\nTo: nobody@other.example\nSubject: 2\n\nbody\n",
        })

    def poller(self, user="admin"):
        account = self.office.config.users[user].pop3_fetch[0]
        p = fetch.AccountPoller(self.mail, user, account)

        def connect():
            if self.remote.unreachable:
                return defer.fail(ConnectionRefusedError("refused"))
            return defer.succeed(FakeClient(self.remote))
        p._connect = connect
        return p

    def poll(self, p):
        out = []
        p.poll().addBoth(out.append)
        return out[0]

    def subjects(self, user):
        return [m.subject for m in self.store.list_messages(user)]

    def test_multidrop(self):
        self.assertEqual(self.poll(self.poller()), 2)
        self.assertEqual(self.subjects("bob"), ["1"])           # bob named twice: once
        self.assertEqual(self.subjects("alice"), ["1"])         # through sales
        self.assertEqual(self.subjects("admin"), ["2"])         # nobody local named
        self.assertEqual(self.remote.messages, {})

    def test_single_user_gets_everything(self):
        self.remote.password = "pw1"
        self.assertEqual(self.poll(self.poller("alice")), 2)
        self.assertEqual(sorted(self.subjects("alice")), ["1", "2"])
        self.assertEqual(self.subjects("bob"), [])

    def test_fetched_mail_never_counts_as_voicemail(self):
        self.remote.messages["u3"] = (b"From: a@x.example\nX-Allworx-Voicemail: yes\n"
                                      b"To: bob@example.com\nSubject: 3\n\nbody\n")
        self.remote.password = "pw1"
        self.poll(self.poller("alice"))
        self.assertEqual(self.store.voicemail_counts("alice"), (0, 0))
        self.assertIn("3", self.subjects("alice"))

    def test_never_twice_when_delete_is_lost(self):
        self.remote.fail_quit = True
        f = self.poll(self.poller())
        self.assertIsInstance(f.value, ConnectionError)
        self.assertEqual(len(self.remote.messages), 2)          # still at the ISP
        self.remote.fail_quit = False
        self.assertEqual(self.poll(self.poller()), 0)           # recorded: not again
        self.assertEqual(self.remote.messages, {})              # but now deleted
        self.assertEqual(self.subjects("bob"), ["1"])
        self.assertEqual(fetch.FetchLedger.load(self.poller().ledger_path).uids, set())

    def test_stls_when_offered(self):
        self.remote.stls = True
        self.assertEqual(self.poll(self.poller()), 2)
        self.assertTrue(self.remote.tls_started)

    def test_plan(self):
        self.assertEqual(fetch.plan([(0, "a"), (1, "b"), (2, "c")], {"b"}),
                         ([(0, "a"), (2, "c")], [1]))

    def test_ledger_round_trip(self):
        path = self.mktemp()
        ledger = fetch.FetchLedger(path, {"x", "y"})
        ledger.write()
        self.assertEqual(fetch.FetchLedger.load(path).uids, {"x", "y"})
        with open(path, "w") as f:
            f.write("{broken")
        self.assertRaises(ValueError, fetch.FetchLedger.load, path)

    def test_ledger_name_hides_password(self):
        account = self.office.config.users["admin"].pop3_fetch[0]
        self.assertNotIn("officepw", fetch.ledger_name("admin", account))

    def test_retry_delay(self):
        self.assertEqual(fetch.retry_delay(0, 300), 300)
        self.assertEqual([fetch.retry_delay(n, 300) for n in (1, 2, 3, 8, 20)],
                         [30, 60, 120, 3600, 3600])


class FetchServiceTests(unittest.TestCase):
    """Scheduling, status and backoff on a Clock."""

    def setUp(self):
        office = make_office(self, CONF)
        self.office, self.store, self.queue, self.clock = make_store(self, office=office)
        self.mail = types.SimpleNamespace(office=office, store=self.store, reactor=self.clock,
                                          defer_to_thread=sync_thread)
        self.remote = FakePop3Server({"u1": b"To: bob@example.com\n\nhi\n"})
        self.service = fetch.FetchService(self.mail)
        orig = fetch.AccountPoller._connect
        self.patch(fetch.AccountPoller, "_connect", lambda p: (
            defer.fail(ConnectionRefusedError("refused")) if self.remote.unreachable
            else defer.succeed(FakeClient(self.remote)) if p.user == "admin"
            else orig(p)))
        self.patch(fetch.AccountPoller, "poll", _only_admin(fetch.AccountPoller.poll))
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def status(self):
        return self.service.status["pop3://office@pop.isp.example:110"]

    def test_polls_every_interval(self):
        self.clock.advance(1)
        self.assertEqual(self.status()["state"], "ok")
        self.assertEqual(self.status()["fetched"], 1)
        self.remote.messages["u2"] = b"To: carol@example.com\n\nagain\n"
        self.clock.advance(299)
        self.assertEqual(self.status()["fetched"], 1)
        self.clock.advance(1)
        self.assertEqual(self.status()["fetched"], 2)
        self.assertEqual(len(self.store.list_messages("carol")), 1)

    def test_failures_back_off_and_show(self):
        self.remote.unreachable = True
        self.clock.advance(1)
        st = self.status()
        self.assertEqual(st["state"], "error")
        self.assertIn("cannot connect", st["error"])
        self.assertEqual(st["next_attempt"], 1 + 30)
        self.clock.advance(30)
        self.assertEqual(self.status()["failures"], 2)
        self.assertEqual(self.status()["next_attempt"], 31 + 60)
        self.remote.unreachable = False
        self.clock.advance(60)
        self.assertEqual(self.status()["state"], "ok")
        self.assertEqual(self.status()["failures"], 0)

    def test_wrong_password_shown(self):
        self.remote.password = "other"
        self.clock.advance(1)
        self.assertIn("login as office refused", self.status()["error"])

    def test_reconfigure_drops_removed_accounts(self):
        self.office.patch_record("user", "admin", {"pop3_fetch": ""})
        self.service.reconfigure()
        self.assertNotIn("pop3://office@pop.isp.example:110", self.service.status)
        self.assertEqual(list(self.service.pollers), [("alice", "pop3://alice1:pw1@pop.isp.example:1110")])


def _only_admin(poll):
    def wrapped(self):
        if self.user != "admin":
            return defer.succeed(0)
        return poll(self)
    return wrapped


class FetchSwitchTests(unittest.TestCase):

    def test_mail_off_stops_fetching(self):
        office = make_office(self, CONF)
        mail = types.SimpleNamespace(office=office, store=None, reactor=None, defer_to_thread=sync_thread)
        svc = fetch.FetchService(mail)
        self.assertEqual(len(svc.wanted(office.config)), 2)
        office.update_settings("mail", {"enabled": "no"})
        self.assertEqual(svc.wanted(office.config), {})
