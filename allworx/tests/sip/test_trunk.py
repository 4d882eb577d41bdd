# -*- test-case-name: allworx.tests.sip.test_trunk -*-
"""
Trunk registration (allworx.protocols.sip.trunk) on a task.Clock with a fake
SIP core that captures every request and lets a fake provider answer: the
REGISTER's form, refresh at half the granted expiry, the digest challenge
answered once, wrong credentials and the back-off (at most 3 REGISTERs in the
minute after an authentication failure), no answer, doubling capped at 30
min, register = no, live add/change/remove, status(), is_provider and the
channel accounting.
"""

import hashlib
import json
import re

import attr
from twisted.internet import defer, task
from twisted.trial import unittest

from allworx.protocols.sip import trunk as trunkmod
from allworx.protocols.sip.core import Destination
from allworx.protocols.sip.message import make_response, parse
from allworx.protocols.sip.trunk import TrunkManager, TrunkRegistration

PROVIDER = "sip.internet.example"
PROVIDER_IP = "198.51.100.20"
PROXY_IP = "198.51.100.21"
WAN_IP = "203.0.113.2"
REALM = "sip.internet.example"
T0 = 1700000000.0


@attr.s(frozen=True)
class Trunk:
    """A stand-in for the config's `Trunk` record (the contract's attribute names)."""

    name = attr.ib(default="provider")
    registrar = attr.ib(default=(PROVIDER, None))
    username = attr.ib(default="office")
    auth_username = attr.ib(default=None)
    secret = attr.ib(default="s3cret")
    transport = attr.ib(default="udp")
    outbound_proxy = attr.ib(default=None)
    expires = attr.ib(default=3600)
    register = attr.ib(default=True)
    numbers = attr.ib(default=("+15551230000",))
    caller_id = attr.ib(default=None)
    channels = attr.ib(default=4)
    number_format = attr.ib(default="e164")

    @property
    def auth_user(self):
        return self.auth_username or self.username

    @property
    def presented_id(self):
        return self.caller_id or (self.numbers[0] if self.numbers else self.username)

    @property
    def proxy(self):
        host, port = self.outbound_proxy or self.registrar
        return host, port or (5061 if self.transport == "tls" else 5060)


@attr.s
class Config:
    trunks = attr.ib(factory=dict)


class Office:
    def __init__(self, trunks):
        self.config = Config(dict(trunks))


class Sent:
    def __init__(self, request, dest, on_response, on_timeout, at):
        # Through the wire format, as the provider would read it.
        self.request = parse(request.to_bytes())
        self.dest, self.on_response, self.on_timeout, self.at = dest, on_response, on_timeout, at
        self.timer = None

    def answer(self, code, extra=(), reason=None):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.on_response(make_response(self.request, code, reason, to_tag="prov", extra=extra))

    @property
    def expires(self):
        return int(self.request.get("Expires"))


class FakeCore:
    """What TrunkRegistration uses of SipCore; a transaction times out after 32 s."""

    port = 5060

    def __init__(self, clock):
        self.clock = clock
        self.sent = []
        self.provider = None     # called with each Sent, at the next advance of the clock
        self.tags = 0

    def port_for(self, transport):
        return 5061 if transport == "TLS" else self.port

    def local_host(self, peer_host=None):
        return WAN_IP

    def new_tag(self):
        self.tags += 1
        return "tag%d" % self.tags

    def via_for(self, dest, branch=None):
        self.tags += 1
        return "SIP/2.0/%s %s:%d;branch=z9hG4bK%d;rport" % (dest.transport, WAN_IP, self.port,
                                                            self.tags)

    def request(self, request, dest, on_response=None, on_timeout=None):
        s = Sent(request, dest, on_response, on_timeout, self.clock.seconds())
        self.sent.append(s)
        s.timer = self.clock.callLater(32, on_timeout)
        if self.provider is not None:
            self.clock.callLater(0, self.provider, s)
        return s

    def registers(self, since=None, until=None):
        return [s for s in self.sent if (since is None or s.at >= since)
                and (until is None or s.at <= until)]


def challenge(nonce="n1", stale=False):
    value = 'Digest realm="%s", nonce="%s", algorithm=MD5, qop="auth"' % (REALM, nonce)
    return [("WWW-Authenticate", value + (", stale=TRUE" if stale else ""))]


def auth_fields(request):
    value = request.get("Authorization") or request.get("Proxy-Authorization")
    return dict((k, a or b) for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value))


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def expected_response(f, password, method="REGISTER"):
    """RFC 2617's response computed here from the fields the client sent."""
    ha1 = md5("%s:%s:%s" % (f["username"], f["realm"], password))
    ha2 = md5("%s:%s" % (method, f["uri"]))
    return md5(":".join((ha1, f["nonce"], f["nc"], f["cnonce"], f["qop"], ha2)))


class Provider:
    """A registrar that challenges, checks the password, and grants `grant` seconds."""

    def __init__(self, password="s3cret", grant=None, down=False, code=None):
        self.password, self.grant, self.down, self.code = password, grant, down, code
        self.nonces = 0

    def __call__(self, sent):
        req = sent.request
        if self.down:
            return
        if self.code is not None:
            return sent.answer(self.code)
        if req.get("Authorization") is None:
            self.nonces += 1
            return sent.answer(401, challenge("n%d" % self.nonces))
        f = auth_fields(req)
        if f["response"] != expected_response(f, self.password):
            self.nonces += 1
            return sent.answer(401, challenge("n%d" % self.nonces))
        granted = sent.expires if self.grant is None or sent.expires == 0 else self.grant
        sent.answer(200, [("Contact", "%s;expires=%d" % (req.get("Contact"), granted))])


class Case(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.core = FakeCore(self.clock)
        self.lookups = []
        self.dns = {PROVIDER: PROVIDER_IP, "proxy.internet.example": PROXY_IP}

    def resolve(self, host):
        self.lookups.append(host)
        if host in self.dns:
            return defer.succeed(self.dns[host])
        return defer.fail(OSError("no such name"))

    def registration(self, **keys):
        reg = TrunkRegistration("provider", Trunk(**keys), self.core, self.resolve)
        reg.start()
        self.clock.advance(0)      # the provider's answers, if it answers
        return reg

    def manager(self, **trunks):
        office = Office(trunks)
        m = TrunkManager(self.core, office, self.resolve)
        m.start()
        self.clock.advance(0)
        return office, m

    def run_for(self, seconds, step=0.5):
        for _ in range(int(seconds / step)):
            self.clock.advance(step)


class RegisterTests(Case):
    def test_register_form_and_success(self):
        reg = self.registration()
        self.assertEqual(reg.state, "registering")
        [s] = self.core.sent
        r = s.request
        self.assertEqual(s.dest, Destination("UDP", PROVIDER_IP, 5060))
        self.assertEqual((r.method, r.uri), ("REGISTER", "sip:sip.internet.example"))
        self.assertEqual(r.get("To"), "<sip:office@sip.internet.example>")
        self.assertRegex(r.get("From"), r"^<sip:office@sip\.internet\.example>;tag=\w+$")
        self.assertEqual(r.get("Contact"), "<sip:office@%s:5060>" % WAN_IP)
        self.assertEqual(r.get("Expires"), "3600")
        self.assertEqual(r.get("User-Agent"), "allworx")
        self.assertEqual(r.get("Max-Forwards"), "70")
        self.assertEqual(r.cseq, (1, "REGISTER"))
        self.assertTrue(r.top_via.branch.startswith("z9hG4bK"))
        self.assertIsNone(r.get("Authorization"))
        self.clock.advance(0.2)
        s.answer(200, [("Contact", "<sip:office@%s:5060>;expires=3600" % WAN_IP)])
        self.assertEqual(reg.state, "registered")
        self.assertEqual(reg.expires, T0 + 0.2 + 3600)
        self.assertEqual(reg.since, T0 + 0.2)
        self.assertIsNone(reg.last_error)

    def test_refresh_at_half_the_granted_expiry(self):
        self.core.provider = Provider(grant=600)
        reg = self.registration()
        self.assertEqual(reg.state, "registered")
        first = self.core.sent[0].request
        since = reg.since
        self.assertEqual(len(self.core.sent), 2)
        self.clock.advance(299)
        self.assertEqual(len(self.core.sent), 2)
        self.clock.advance(1)
        self.assertEqual(len(self.core.sent), 3, "the refresh at half of the 600 s granted")
        refresh = self.core.sent[2].request
        self.assertEqual(reg.state, "registered", "still registered while the refresh is out")
        self.assertEqual(refresh.call_id, first.call_id)
        self.assertEqual(refresh.from_tag, first.from_tag)
        self.assertEqual(refresh.cseq[0], 3)
        self.assertEqual(refresh.get("Expires"), "3600")
        # The last challenge answered again, with the next nonce count.
        f = auth_fields(refresh)
        self.assertEqual((f["nonce"], f["nc"]), ("n1", "00000002"))
        self.assertEqual(f["response"], expected_response(f, "s3cret"))
        self.clock.advance(0)
        self.assertEqual(reg.state, "registered")
        self.assertEqual(reg.since, since, "a refresh does not restart `since`")
        self.assertEqual(reg.expires, T0 + 300 + 600)
        # Every refresh after that, CSeq always increasing, Call-ID kept.
        self.run_for(1200, step=1)
        cseqs = [s.request.cseq[0] for s in self.core.sent]
        self.assertEqual(cseqs, sorted(set(cseqs)))
        self.assertEqual({s.request.call_id for s in self.core.sent}, {first.call_id})
        self.assertEqual([round(s.at - T0) for s in self.core.sent[2:]], [300, 600, 900, 1200, 1500])

    def test_reused_nonce_refused_is_challenged_afresh(self):
        provider = self.core.provider = Provider(grant=600)
        reg = self.registration()
        provider.password = "rotated"          # any answer with n1 now fails: 401 n2
        self.clock.advance(300)
        # refresh (n1, refused) -> 401 -> answer to n2 (refused) -> auth failure
        self.assertEqual([auth_fields(s.request)["nonce"] for s in self.core.sent[2:]], ["n1", "n2"])
        self.assertEqual(reg.state, "auth_failed")
        provider.password = "s3cret"
        self.clock.advance(30)
        self.assertEqual(reg.state, "registered")

    def test_expiry_from_the_expires_header(self):
        reg = self.registration()
        self.core.sent[0].answer(200, [("Expires", "120")])
        self.assertEqual(reg.expires, T0 + 120)
        self.clock.advance(59)
        self.assertEqual(len(self.core.sent), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.core.sent), 2)

    def test_challenge_answered_once(self):
        reg = self.registration()
        self.core.sent[0].answer(401, challenge("abc"))
        self.assertEqual(len(self.core.sent), 2)
        second = self.core.sent[1].request
        f = auth_fields(second)
        self.assertEqual((f["username"], f["realm"], f["nonce"], f["uri"], f["nc"]),
                         ("office", REALM, "abc", "sip:sip.internet.example", "00000001"))
        self.assertEqual(f["response"], expected_response(f, "s3cret"))
        self.assertEqual(second.call_id, self.core.sent[0].request.call_id)
        self.assertEqual(second.cseq[0], 2)
        self.assertEqual(reg.state, "registering")
        self.core.sent[1].answer(200)
        self.assertEqual(reg.state, "registered")

    def test_proxy_challenge_and_auth_username(self):
        reg = self.registration(auth_username="acct77")
        self.core.sent[0].answer(407, [("Proxy-Authenticate", challenge("p1")[0][1])])
        request = self.core.sent[1].request
        self.assertIsNone(request.get("Authorization"))
        f = auth_fields(request)
        self.assertEqual(f["username"], "acct77")
        self.assertEqual(request.get("To"), "<sip:office@sip.internet.example>")
        self.core.sent[1].answer(200)
        self.assertEqual(reg.state, "registered")

    def test_stale_nonce_answered_once_more(self):
        reg = self.registration()
        self.core.sent[0].answer(401, challenge("a"))
        self.core.sent[1].answer(401, challenge("b", stale=True))
        self.assertEqual(len(self.core.sent), 3)
        self.assertEqual(auth_fields(self.core.sent[2].request)["nonce"], "b")
        self.core.sent[2].answer(401, challenge("c", stale=True))
        self.assertEqual(reg.state, "auth_failed")
        self.assertEqual(len(self.core.sent), 3)

    def test_wrong_password_auth_failed_with_back_off(self):
        self.core.provider = Provider(password="other")
        reg = self.registration()
        self.assertEqual(reg.state, "auth_failed")
        self.assertEqual(reg.last_error, "401 Unauthorized from %s:5060: the provider refused the "
                         "credentials of office" % PROVIDER_IP)
        failed_at = reg.since
        self.assertEqual(failed_at, T0)
        self.assertEqual(len(self.core.sent), 2, "one challenge, answered once")
        self.run_for(60, step=0.5)
        in_minute = self.core.registers(since=failed_at + 0.001, until=failed_at + 60)
        self.assertLessEqual(len(in_minute), 3)
        self.assertEqual([s.at - failed_at for s in in_minute], [30, 30])
        # Then 60 s after that failure, 120 s, ...: never a storm.
        self.run_for(3600, step=1)
        starts = sorted({round(s.at - T0) for s in self.core.sent})
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        self.assertEqual(gaps, [30, 60, 120, 240, 480, 960])
        self.assertEqual(len(self.core.sent), 2 * 7)
        self.assertEqual(reg.state, "auth_failed")

    def test_right_password_after_failures_resets_the_back_off(self):
        provider = self.core.provider = Provider(password="other")
        reg = self.registration()
        self.run_for(100, step=1)     # failed at 0, 30, 90
        self.assertEqual(reg.failures, 3)
        provider.password = "s3cret"
        self.run_for(130, step=1)
        self.assertEqual(reg.state, "registered")
        self.assertEqual((reg.failures, reg.last_error), (0, None))

    def test_forbidden_is_auth_failed(self):
        reg = self.registration()
        self.core.sent[0].answer(403)
        self.assertEqual(reg.state, "auth_failed")
        self.assertEqual(reg.last_error, "403 Forbidden from %s:5060" % PROVIDER_IP)

    def test_no_answer_is_unreachable(self):
        reg = self.registration()
        self.clock.advance(31.9)
        self.assertEqual(reg.state, "registering")
        self.clock.advance(0.1)
        self.assertEqual(reg.state, "unreachable")
        self.assertEqual(reg.last_error, "no answer from %s:5060 (UDP)" % PROVIDER_IP)
        self.assertEqual(reg.since, T0 + 32)
        self.clock.advance(30)
        self.assertEqual(len(self.core.sent), 2)
        self.assertEqual(reg.state, "registering")

    def test_server_errors_back_off_doubling_to_30_minutes(self):
        self.core.provider = Provider(code=503)
        reg = self.registration()
        self.run_for(4 * 3600, step=1)
        self.assertEqual(reg.state, "unreachable")
        self.assertEqual(reg.last_error, "503 Service Unavailable from %s:5060" % PROVIDER_IP)
        times = [round(s.at - T0) for s in self.core.sent]
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertEqual(gaps[:8], [30, 60, 120, 240, 480, 960, 1800, 1800])
        self.assertEqual(set(gaps[6:]), {1800})

    def test_refresh_failure_leaves_registered(self):
        provider = self.core.provider = Provider(grant=120)
        reg = self.registration()
        self.clock.advance(0.05)
        provider.down = True
        self.clock.advance(60)
        self.assertEqual(reg.state, "registered")
        self.clock.advance(32)
        self.assertEqual(reg.state, "unreachable")
        self.assertIsNone(reg.expires)

    def test_interval_too_brief(self):
        reg = self.registration(expires=60)
        self.core.sent[0].answer(423, [("Min-Expires", "300")])
        self.assertEqual(self.core.sent[1].request.get("Expires"), "300")
        self.core.sent[1].answer(200)
        self.assertEqual(reg.expires, T0 + 300)

    def test_unresolvable_is_unreachable(self):
        reg = self.registration(registrar=("nowhere.example", None))
        self.assertEqual(reg.state, "unreachable")
        self.assertEqual(reg.last_error, "cannot resolve nowhere.example: no such name")
        self.assertEqual(self.core.sent, [])
        self.dns["nowhere.example"] = "198.51.100.99"
        self.clock.advance(30)
        self.assertEqual(self.core.sent[0].dest.host, "198.51.100.99")

    def test_ip_literal_needs_no_lookup_and_ports_are_kept(self):
        self.registration(registrar=("198.51.100.30", 5070))
        self.assertEqual(self.lookups, [])
        [s] = self.core.sent
        self.assertEqual(s.dest, Destination("UDP", "198.51.100.30", 5070))
        self.assertEqual(s.request.uri, "sip:198.51.100.30:5070")
        self.assertEqual(s.request.get("To"), "<sip:office@198.51.100.30>")

    def test_outbound_proxy_and_tcp(self):
        self.registration(outbound_proxy=("proxy.internet.example", 5080), transport="tcp")
        [s] = self.core.sent
        self.assertEqual(s.dest, Destination("TCP", PROXY_IP, 5080))
        self.assertEqual(s.request.uri, "sip:sip.internet.example")
        self.assertEqual(s.request.get("Contact"), "<sip:office@%s:5060;transport=tcp>" % WAN_IP)
        self.assertTrue(s.request.get("Via").startswith("SIP/2.0/TCP "))

    def test_tls_default_port(self):
        self.registration(transport="tls")
        self.assertEqual(self.core.sent[0].dest, Destination("TLS", PROVIDER_IP, 5061))
        # Our Contact names the port the provider can reach us on over TLS.
        self.assertIn(":5061;transport=tls>", self.core.sent[0].request.get("Contact"))

    def test_register_no(self):
        reg = self.registration(register=False)
        self.assertEqual(reg.state, "not_registering")
        self.assertEqual(self.core.sent, [])
        self.assertEqual(reg.addresses, {PROVIDER_IP})
        self.dns[PROVIDER] = "198.51.100.77"      # the provider moves: seen within 30 min
        self.run_for(1800, step=10)
        self.assertEqual(reg.addresses, {"198.51.100.77"})
        self.assertEqual(self.core.sent, [])
        self.assertEqual((reg.state, reg.since), ("not_registering", T0))

    def test_register_no_unresolvable(self):
        reg = self.registration(register=False, registrar=("nowhere.example", None))
        self.assertEqual((reg.state, reg.last_error),
                         ("not_registering", "cannot resolve nowhere.example: no such name"))
        self.dns["nowhere.example"] = "198.51.100.99"
        self.clock.advance(30)
        self.assertEqual((reg.addresses, reg.last_error), ({"198.51.100.99"}, None))

    def test_stop_unregisters_once_with_credentials(self):
        self.core.provider = Provider()
        reg = self.registration()
        self.clock.advance(0.05)
        self.assertEqual(reg.state, "registered")
        done = reg.stop()
        self.assertEqual(reg.state, "stopped")
        last = self.core.sent[-1].request
        self.assertEqual(last.get("Expires"), "0")
        self.assertEqual(last.call_id, self.core.sent[0].request.call_id)
        f = auth_fields(last)
        self.assertEqual((f["nonce"], f["nc"]), ("n1", "00000002"))
        self.assertFalse(done.called)
        self.clock.advance(0.05)
        self.assertTrue(done.called)
        count = len(self.core.sent)
        self.run_for(7200, step=10)
        self.assertEqual(len(self.core.sent), count, "nothing after the stop")

    def test_stop_answers_the_unregisters_challenge_once(self):
        reg = self.registration()
        self.core.sent[0].answer(200)
        reg.stop()
        self.core.sent[1].answer(401, challenge("u1"))
        self.assertEqual(auth_fields(self.core.sent[2].request)["nonce"], "u1")
        self.core.sent[2].answer(401, challenge("u2"))
        self.assertEqual(len(self.core.sent), 3)
        self.assertTrue(reg.unregistered.called)

    def test_stop_without_binding_sends_nothing(self):
        reg = self.registration()
        reg.stop()
        self.core.sent[0].answer(200)      # late: ignored
        self.assertEqual(reg.state, "stopped")
        self.assertEqual(len(self.core.sent), 1)
        self.assertTrue(reg.unregistered.called)


class ManagerTests(Case):
    def test_status_shape(self):
        office, m = self.manager(provider=Trunk(), backup=Trunk(name="backup", register=False,
                                                                  registrar=("198.51.100.40", 5070),
                                                                  channels=2))
        self.core.sent[0].answer(200, [("Expires", "3600")])
        status = m.status()
        json.dumps(status)
        self.assertEqual([set(s) for s in status], [{
            "name", "registrar", "state", "since", "expires", "last_error", "channels",
            "channels_in_use"}] * 2)
        self.assertEqual(status[0], {
            "name": "provider", "registrar": PROVIDER, "state": "registered",
            "since": "2023-11-14T22:13:20Z", "expires": "2023-11-14T23:13:20Z",
            "last_error": None, "channels": 4, "channels_in_use": 0})
        self.assertEqual(status[1], {
            "name": "backup", "registrar": "198.51.100.40:5070", "state": "not_registering",
            "since": "2023-11-14T22:13:20Z", "expires": None, "last_error": None,
            "channels": 2, "channels_in_use": 0})

    def test_status_while_failing(self):
        office, m = self.manager(provider=Trunk())
        self.clock.advance(32)
        [s] = m.status()
        self.assertEqual((s["state"], s["expires"], s["since"]),
                         ("unreachable", None, "2023-11-14T22:13:52Z"))
        self.assertIn("no answer", s["last_error"])

    def test_is_provider(self):
        office, m = self.manager(
            a=Trunk(outbound_proxy=("proxy.internet.example", None)),
            b=Trunk(name="b", registrar=("198.51.100.50", None), register=False))
        self.assertIs(m.is_provider(PROVIDER_IP), office.config.trunks["a"])
        self.assertIs(m.is_provider(PROXY_IP), office.config.trunks["a"])
        self.assertIs(m.is_provider("198.51.100.50"), office.config.trunks["b"])
        self.assertIsNone(m.is_provider("198.51.100.99"))
        self.assertIsNone(m.is_provider("192.168.2.20"))
        self.assertEqual(m.destination("a"), Destination("UDP", PROXY_IP, 5060))
        self.assertEqual(m.destination(office.config.trunks["b"]),
                         Destination("UDP", "198.51.100.50", 5060))
        self.assertIsNone(m.destination("nothing"))

    def test_channels(self):
        office, m = self.manager(a=Trunk(channels=2), b=Trunk(name="b", channels=1))
        a, b = office.config.trunks["a"], office.config.trunks["b"]
        for s in self.core.sent:
            s.answer(200)
        self.assertIs(m.pick_outbound(), a)
        self.assertTrue(m.acquire(a))
        self.assertTrue(m.acquire("a"))
        self.assertFalse(m.acquire(a))
        self.assertEqual(m.status()[0]["channels_in_use"], 2)
        self.assertIs(m.pick_outbound(), b)
        self.assertTrue(m.acquire(b))
        self.assertIsNone(m.pick_outbound())
        m.release(a)
        self.assertIs(m.pick_outbound(), a)
        self.assertEqual(m.status()[0]["channels_in_use"], 1)
        m.release("b")
        m.release("b")
        self.assertEqual(m.status()[1]["channels_in_use"], 0)
        self.assertFalse(m.acquire("nothing"))

    def test_pick_prefers_a_trunk_that_can_carry_the_call(self):
        office, m = self.manager(a=Trunk(), b=Trunk(name="b", register=False,
                                                     registrar=("198.51.100.40", None)))
        self.core.sent[0].answer(403)
        self.assertIs(m.pick_outbound(), office.config.trunks["b"])
        m.acquire("b"), m.acquire("b"), m.acquire("b"), m.acquire("b")
        self.assertIs(m.pick_outbound(), office.config.trunks["a"])

    def change(self, office, m, **trunks):
        old = office.config
        office.config = Config(dict(trunks))
        m.config_changed(old, office.config)

    def test_live_add_change_remove(self):
        self.core.provider = Provider()
        office, m = self.manager(a=Trunk())
        self.clock.advance(0.05)
        first = m.registrations["a"]
        self.assertEqual(first.state, "registered")
        call_id = self.core.sent[0].request.call_id
        m.acquire("a")

        # Added.
        n = len(self.core.sent)
        self.change(office, m, a=Trunk(), b=Trunk(name="b", registrar=("198.51.100.40", None)))
        self.clock.advance(0)
        self.assertEqual([s.dest.host for s in self.core.sent[n:]], ["198.51.100.40"] * 2)
        self.assertEqual(m.registrations["b"].state, "registered")
        self.assertIs(m.registrations["a"], first)

        # Unchanged apart from channels: untouched, the new count applies.
        n = len(self.core.sent)
        self.change(office, m, a=Trunk(channels=9), b=Trunk(name="b", registrar=("198.51.100.40", None)))
        self.clock.advance(0.05)
        self.assertEqual(len(self.core.sent), n)
        self.assertIs(m.registrations["a"], first)
        self.assertEqual(m.status()[0]["channels"], 9)

        # Changed secret: unregistered, then registered again with a new Call-ID.
        n = len(self.core.sent)
        self.core.provider.password = "new"
        self.change(office, m, a=Trunk(secret="new"), b=Trunk(name="b", registrar=("198.51.100.40", None)))
        self.assertEqual(first.state, "stopped")
        self.assertEqual(self.core.sent[n].request.get("Expires"), "0")
        self.assertEqual(self.core.sent[n].request.call_id, call_id)
        self.assertEqual(len(self.core.sent), n + 1, "the new one waits for the unregister's answer")
        self.clock.advance(0)
        # The old credentials' unregister is refused (the provider has the new
        # secret already), its one challenge answered; then the new one registers.
        sent = [(s.request.call_id == call_id, s.request.get("Expires")) for s in self.core.sent[n:]]
        self.assertEqual(sent, [(True, "0"), (True, "0"), (False, "3600"), (False, "3600")])
        self.assertEqual(m.registrations["a"].state, "registered")
        self.assertEqual(m.status()[0]["channels_in_use"], 1, "calls in progress still count")

        # Removed: Expires: 0 once, gone from the status.
        n = len(self.core.sent)
        self.change(office, m, a=Trunk(secret="new"))
        self.assertEqual([(s.dest.host, s.request.get("Expires")) for s in self.core.sent[n:]],
                         [("198.51.100.40", "0")])
        self.assertEqual([s["name"] for s in m.status()], ["a"])
        self.assertIsNone(m.is_provider("198.51.100.40"))

    def test_restart_does_not_wait_for_a_provider_that_is_down(self):
        provider = self.core.provider = Provider()
        office, m = self.manager(a=Trunk())
        self.clock.advance(0.05)
        provider.down = True
        n = len(self.core.sent)
        self.change(office, m, a=Trunk(expires=600))
        self.assertEqual(len(self.core.sent), n + 1)
        self.clock.advance(trunkmod.UNREGISTER_WAIT)
        self.assertEqual(self.core.sent[n + 1].request.get("Expires"), "600")

    def test_stop_unregisters_every_trunk(self):
        self.core.provider = Provider()
        office, m = self.manager(a=Trunk(), b=Trunk(name="b", registrar=("198.51.100.40", None)),
                                 c=Trunk(name="c", register=False, registrar=("198.51.100.41", None)))
        self.clock.advance(0.05)
        n = len(self.core.sent)
        done = m.stop()
        self.assertEqual(sorted((s.dest.host, s.request.get("Expires")) for s in self.core.sent[n:]),
                         [(PROVIDER_IP, "0"), ("198.51.100.40", "0")])
        self.assertFalse(done.called)
        self.clock.advance(0.05)
        self.assertTrue(done.called)
        self.assertEqual(m.status(), [])
        # A change after the stop starts nothing.
        self.change(office, m, d=Trunk(name="d"))
        self.assertEqual(m.status(), [])

    def test_stop_waits_at_most_two_seconds(self):
        self.core.provider = Provider()
        office, m = self.manager(a=Trunk())
        self.clock.advance(0.05)
        self.core.provider.down = True
        done = m.stop()
        self.clock.advance(trunkmod.UNREGISTER_WAIT - 0.1)
        self.assertFalse(done.called)
        self.clock.advance(0.1)
        self.assertTrue(done.called)

    def test_config_without_trunks(self):
        office = Office({})
        office.config = object()
        m = TrunkManager(self.core, office, self.resolve)
        m.start()
        self.assertEqual(m.status(), [])
        self.assertIsNone(m.pick_outbound())
