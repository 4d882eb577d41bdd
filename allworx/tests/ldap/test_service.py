# -*- test-case-name: allworx.tests.ldap.test_service -*-
"""
The LDAP address book: the tree built from the users, binds checked by the
office's checker, read-only, LAN only, live. ldaptor's own client talks to the
server over an in-memory connection (twisted.test.iosim).
"""

import io
import sys

from hypothesis import given, settings, strategies as st
from ldaptor import delta
from ldaptor.protocols import pureber, pureldap
from ldaptor.protocols.ldap import ldapclient, ldapsyntax, ldaperrors
from twisted.internet import defer, task
from twisted.logger import LogLevel
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from twisted.trial import unittest

from allworx.auth import OfficeUserChecker
from allworx.config import parse_config
from allworx.office import Office
from allworx.protocols.ldap import service as ldap
from allworx.tests.confs import with_sections
from allworx.tests.logwatch import LogWatch

BASE = "dc=example,dc=com"
ALICE = "uid=alice,ou=people,dc=example,dc=com"


def sync_thread(f, *args, **kwargs):
    """deferToThread stand-in: run now (tests hash a handful of passwords)."""
    return defer.maybeDeferred(f, *args, **kwargs)


def make_office(text=None):
    from allworx.tests.webhelpers import CHEAP
    return Office(parse_config(text or CHEAP))


class Connected:
    """An ldaptor client connected to the address book server in memory."""

    def __init__(self, office, peer="192.168.2.10", clock=None, throttle=None):
        self.clock = clock or task.Clock()
        self.factory = ldap.AddressBookFactory(office, OfficeUserChecker(office, sync_thread),
                                               clock=self.clock, throttle=throttle)
        addr = IPv4Address("TCP", peer, 40000)
        self.server = self.factory.buildProtocol(addr)
        self.client = ldapclient.LDAPClient()
        self.pump = iosim.connect(
            self.server, iosim.FakeTransport(self.server, True, peerAddress=addr),
            self.client, iosim.FakeTransport(self.client, False))

    def run(self, d):
        """The answer, a login's delay waited out on the clock (in `self.waited`)."""
        self.pump.flush()
        results = []
        d.addBoth(results.append)
        self.pump.flush()
        self.waited = 0
        while not results and self.waited < 60:
            self.clock.advance(0.25)
            self.waited += 0.25
            self.pump.flush()
        assert results, "no answer"
        return results[0]

    def search(self, base, filter_text, attributes=()):
        entry = ldapsyntax.LDAPEntry(self.client, base)
        return self.run(entry.search(filterText=filter_text, attributes=attributes))

    def bind(self, dn, password):
        return self.run(self.client.bind(dn, password))

    def send(self, op):
        return self.run(self.client.send(op))


class TreeTests(unittest.TestCase):
    """The pure part: names and attributes from the config."""

    def test_base_dn_from_domain(self):
        self.assertEqual(ldap.base_dn("example.com"), BASE)
        self.assertEqual(ldap.base_dn("corp.example.co.uk"), "dc=corp,dc=example,dc=co,dc=uk")
        self.assertEqual(ldap.user_dn("bob", "example.com"), "uid=bob,ou=people," + BASE)

    def test_person_attributes(self):
        config = make_office().config
        attrs = ldap.person_attributes(config.users["alice"], "example.com")
        self.assertIn("inetOrgPerson", attrs["objectClass"])
        self.assertEqual(attrs["cn"], ["Alice Archer"])
        self.assertEqual(attrs["sn"], ["Archer"])
        self.assertEqual(attrs["givenName"], ["Alice"])
        self.assertEqual(attrs["mail"], ["alice@example.com"])
        self.assertEqual(attrs["telephoneNumber"], ["101"])
        self.assertNotIn("userPassword", attrs)

    def test_user_without_full_name_or_extension(self):
        office = make_office(with_sections("[user dave]\npassword = %s\n" % _hash()))
        attrs = ldap.person_attributes(office.config.users["dave"], "example.com")
        self.assertEqual(attrs["cn"], ["dave"])
        self.assertEqual(attrs["sn"], ["dave"])
        self.assertNotIn("telephoneNumber", attrs)

    def test_bind_names(self):
        config = make_office().config
        self.assertEqual(ldap.bind_name_to_user(config, ALICE.encode()), "alice")
        self.assertEqual(ldap.bind_name_to_user(config, b"UID=Alice,OU=People,DC=example,DC=com"), "alice")
        self.assertEqual(ldap.bind_name_to_user(config, b"alice@example.com"), "alice")
        self.assertEqual(ldap.bind_name_to_user(config, b"102"), "bob")
        self.assertIsNone(ldap.bind_name_to_user(config, b"uid=alice,ou=other,dc=example,dc=com"))
        self.assertIsNone(ldap.bind_name_to_user(config, b"cn=alice,ou=people,dc=example,dc=com"))
        self.assertIsNone(ldap.bind_name_to_user(config, b"uid=zed,ou=people,dc=example,dc=com"))
        self.assertIsNone(ldap.bind_name_to_user(config, b"=,=,"))

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=80))
    def test_bind_names_never_crash(self, data):
        config = make_office().config
        result = ldap.bind_name_to_user(config, data)
        self.assertIn(result, (None, "alice", "bob"))


def _hash():
    from allworx.tests.confs import PW_HASH
    return PW_HASH


class SearchTests(unittest.TestCase):
    """Anonymous search on the LAN, as a mail client's address book does it."""

    def setUp(self):
        self.office = make_office()
        self.conn = Connected(self.office)

    def test_find_user_by_name(self):
        found = self.conn.search(BASE, "(cn=alice*)", ["mail", "telephoneNumber"])
        self.assertEqual([str(e.dn) for e in found], [ALICE])
        self.assertEqual(set(found[0]["mail"]), {b"alice@example.com"})
        self.assertEqual(set(found[0]["telephoneNumber"]), {b"101"})

    def test_find_all_people(self):
        found = self.conn.search("ou=people," + BASE, "(objectClass=inetOrgPerson)")
        self.assertEqual(sorted(str(e.dn) for e in found),
                         [ALICE, "uid=bob,ou=people," + BASE])

    def test_search_by_phone_number(self):
        found = self.conn.search(BASE, "(telephoneNumber=102)", ["cn"])
        self.assertEqual(set(found[0]["cn"]), {b"Bob Baker"})

    def test_unknown_base_is_no_such_object(self):
        result = self.conn.search("dc=other,dc=org", "(objectClass=*)")
        self.assertIsInstance(result.value, ldaperrors.LDAPNoSuchObject)

    def test_root_dse_names_the_base(self):
        op = pureldap.LDAPSearchRequest(
            baseObject=b"", scope=pureldap.LDAP_SCOPE_baseObject,
            filter=pureldap.LDAPFilter_present("objectClass"))
        entries = []
        self.conn.client.send_multiResponse(op, lambda r: entries.append(r) or
                                            isinstance(r, pureldap.LDAPSearchResultDone))
        self.conn.pump.flush()
        self.assertIsInstance(entries[-1], pureldap.LDAPSearchResultDone)
        attrs = dict((k, v) for k, v in entries[0].attributes)
        self.assertEqual(list(attrs[b"namingContexts"]), [BASE.encode()])

    def test_tree_follows_the_office_live(self):
        self.office.put_record("user", "carol", {
            "password": _hash(), "full_name": "Carol Chen", "extension": "103"})
        found = self.conn.search(BASE, "(sn=Chen)", ["mail"])
        self.assertEqual(set(found[0]["mail"]), {b"carol@example.com"})
        self.office.delete_record("user", "carol")
        self.assertEqual(self.conn.search(BASE, "(sn=Chen)"), [])


class SearchLiveTests(unittest.TestCase):
    """The service rebuilds the tree on ConfigChanged."""

    def test_service_rebuilds_on_user_change(self):
        from twisted.internet.testing import MemoryReactor
        office = make_office()
        svc = ldap.LdapService(office, reactor=MemoryReactor())
        svc.startService()
        self.addCleanup(svc.stopService)
        self.assertEqual(office.status["ldap"].state, "up")
        office.patch_record("user", "bob", {"full_name": "Robert Baker"})
        root = svc.factory.current_root()
        people = root._children["ou=people"]
        bob = people._children["uid=bob"]
        self.assertEqual(list(bob["cn"]), [b"Robert Baker"])

    def test_port_change_relistens(self):
        from twisted.internet.testing import MemoryReactor
        reactor = MemoryReactor()
        office = make_office()
        svc = ldap.LdapService(office, reactor=reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        self.assertEqual(reactor.tcpServers[-1][0], 389)
        office.update_settings("ldap", {"port": "10389"})
        self.assertEqual(reactor.tcpServers[-1][0], 10389)
        office.update_settings("ldap", {"enabled": "no"})
        self.assertEqual(office.status["ldap"].state, "disabled")


class BindTests(unittest.TestCase):
    """Simple bind checks the password through OfficeUserChecker."""

    def setUp(self):
        self.conn = Connected(make_office())

    def test_right_password(self):
        result = self.conn.bind(ALICE, "admin-demo")
        self.assertFalse(isinstance(result, Exception) or hasattr(result, "value"), result)

    def test_wrong_password(self):
        result = self.conn.bind(ALICE, "wrong")
        self.assertIsInstance(result.value, ldaperrors.LDAPInvalidCredentials)

    def test_unknown_user(self):
        result = self.conn.bind("uid=zed,ou=people," + BASE, "admin-demo")
        self.assertIsInstance(result.value, ldaperrors.LDAPInvalidCredentials)

    def test_name_without_password_is_refused(self):
        result = self.conn.bind(ALICE, "")
        self.assertIsInstance(result.value, ldaperrors.LDAPUnwillingToPerform)

    def test_lock_out_after_repeated_failures(self):
        for _ in range(10):
            self.conn.bind(ALICE, "wrong")
        result = self.conn.bind(ALICE, "admin-demo")
        self.assertIsInstance(result.value, ldaperrors.LDAPUnwillingToPerform)
        self.conn.clock.advance(15 * 60 + 1)
        result = self.conn.bind(ALICE, "admin-demo")
        self.assertFalse(hasattr(result, "value"), result)

    def test_200_wrong_passwords_meet_the_delay_then_the_lock_out(self):
        checker = self.conn.factory.checker
        checked = []
        real = checker.requestAvatarId
        checker.requestAvatarId = lambda creds: (checked.append(1), real(creds))[1]
        results, waits = [], []
        for _ in range(200):
            results.append(self.conn.bind(ALICE, "wrong").value)
            waits.append(self.conn.waited)
        self.assertEqual([type(r) for r in results[:5]], [ldaperrors.LDAPInvalidCredentials] * 5)
        self.assertEqual(waits[:5], [0, 0, 0.5, 1.0, 2.0])
        self.assertTrue(all(isinstance(r, ldaperrors.LDAPUnwillingToPerform)
                            and b"locked until" in r.message for r in results[5:]))
        self.assertEqual(set(waits[5:]), {0})
        self.assertEqual(len(checked), 5)

    def test_a_source_locked_by_guessing_refuses_a_colleague_too(self):
        """SPEC 10: 20 failures from one source, whatever the users, lock the source."""
        for n in range(20):
            self.conn.bind("uid=guess%d,ou=people,%s" % (n, BASE), "wrong")
        self.assertTrue(self.conn.factory.throttle.locked_for("192.168.2.10"))
        result = self.conn.bind(ALICE, "admin-demo")
        self.assertIsInstance(result.value, ldaperrors.LDAPUnwillingToPerform)
        self.assertIn("locked until", str(result.value))
        self.assertEqual(self.conn.waited, 0)

    def test_the_throttle_may_be_shared(self):
        from allworx.guards import LoginThrottle
        shared = LoginThrottle(self.conn.clock)
        conn = Connected(make_office(), clock=self.conn.clock, throttle=shared)
        self.assertIs(conn.factory.throttle, shared)
        for _ in range(5):
            shared.failed("192.168.2.10", "alice")     # e.g. wrong POP3 passwords
        result = conn.bind(ALICE, "admin-demo")
        self.assertIsInstance(result.value, ldaperrors.LDAPUnwillingToPerform)
        self.assertIn(b"locked until", result.value.message)
        self.assertFalse(hasattr(conn.bind("uid=bob,ou=people," + BASE, "admin-demo"), "value"))

    def test_no_import_from_the_web(self):
        import ast
        with open(ldap.__file__) as f:
            tree = ast.parse(f.read())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        self.assertEqual([n for n in names if n.startswith("allworx.protocols.web")], [])

    def test_whoami(self):
        self.conn.bind(ALICE, "admin-demo")
        op = pureldap.LDAPExtendedRequest(requestName=ldap.WHOAMI_OID, requestValue=None)
        response = self.conn.send(op)
        self.assertEqual(response.resultCode, 0)
        self.assertEqual(response.response, b"dn:" + ALICE.encode())

    def test_whoami_anonymous(self):
        op = pureldap.LDAPExtendedRequest(requestName=ldap.WHOAMI_OID, requestValue=None)
        response = self.conn.send(op)
        self.assertEqual((response.resultCode, response.response), (0, b""))


class ReadOnlyTests(unittest.TestCase):
    """Every write gets insufficientAccessRights, even when bound."""

    def setUp(self):
        self.conn = Connected(make_office())
        self.conn.bind(ALICE, "admin-demo")

    def assertRefused(self, response):
        self.assertEqual(response.resultCode, ldaperrors.LDAPInsufficientAccessRights.resultCode)

    def test_add(self):
        op = pureldap.LDAPAddRequest(entry="uid=eve,ou=people," + BASE, attributes=[
            (pureldap.LDAPAttributeDescription("uid"),
             pureber.BERSet([pureldap.LDAPAttributeValue("eve")]))])
        self.assertRefused(self.conn.send(op))

    def test_delete(self):
        self.assertRefused(self.conn.send(pureldap.LDAPDelRequest(entry=ALICE)))

    def test_modify(self):
        op = delta.ModifyOp(ALICE, [delta.Replace("mail", [b"x@evil.example"])]).asLDAP()
        self.assertRefused(self.conn.send(op))

    def test_modify_dn(self):
        op = pureldap.LDAPModifyDNRequest(entry=ALICE, newrdn="uid=mallory", deleteoldrdn=1)
        self.assertRefused(self.conn.send(op))

    def test_password_modify(self):
        op = pureldap.LDAPPasswordModifyRequest(newPasswd=b"x")
        self.assertRefused(self.conn.send(op))


class PeerTests(unittest.TestCase):
    """LAN only, and hostile bytes end the connection without a crash."""

    def test_wan_peer_refused(self):
        factory = ldap.AddressBookFactory(make_office())
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "198.51.100.10", 5555)))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "192.168.2.10", 5555)))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555)))

    def _server(self):
        factory = ldap.AddressBookFactory(make_office())
        proto = factory.buildProtocol(IPv4Address("TCP", "192.168.2.10", 5555))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.168.2.10", 5555))
        proto.makeConnection(transport)
        return proto, transport

    def test_oversized_request_hangs_up(self):
        proto, transport = self._server()
        proto.dataReceived(b"\x30\x84\x00\x10\x00\x00" + b"x" * (ldap.MAX_BUFFER + 10))
        self.assertTrue(transport.disconnecting)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(min_size=1, max_size=300))
    def test_garbage_never_crashes(self, data):
        proto, transport = self._server()
        proto.dataReceived(data)  # must not raise
        self.assertTrue(transport.disconnecting or len(proto.buffer) <= len(data))

    def test_response_where_request_belongs(self):
        proto, transport = self._server()
        msg = pureldap.LDAPMessage(pureldap.LDAPBindResponse(resultCode=0), id=1)
        proto.dataReceived(msg.toWire())
        self.assertTrue(transport.disconnecting)


_DECODER = pureldap.LDAPBERDecoderContext_TopLevel(
    inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
        fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
        inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext())))


class RawConnection:
    """The server on a StringTransport: raw BER in, the LDAPMessages it answered out."""

    def __init__(self, office=None, clock=None):
        office = office or make_office()
        self.clock = clock or task.Clock()
        self.factory = ldap.AddressBookFactory(office, OfficeUserChecker(office, sync_thread),
                                               clock=self.clock)
        peer = IPv4Address("TCP", "192.168.2.10", 5555)
        self.server = self.factory.buildProtocol(peer)
        self.transport = StringTransport(peerAddress=peer)
        self.server.makeConnection(self.transport)

    def send(self, wire):
        """Feed bytes; the messages sent back since the last call."""
        self.transport.clear()
        self.server.dataReceived(wire)
        out, data = [], self.transport.value()
        while data:
            message, used = pureber.berDecodeObject(_DECODER, data)
            out.append(message)
            data = data[used:]
        return out

    def request(self, op, id=1, controls=None):
        return self.send(pureldap.LDAPMessage(op, id=id, controls=controls).toWire())


def ber(*items, tag=0x30):
    """A constructed BER value of already encoded items (to build what pureldap would refuse to)."""
    content = b"".join(items)
    return bytes([tag]) + pureber.int2berlen(len(content)) + content


def octets(value, tag=0x04):
    return pureber.BEROctetString(value, tag=tag).toWire()


def integer(value):
    return pureber.BERInteger(value).toWire()


def search(filter, base=BASE.encode(), attributes=()):
    return pureldap.LDAPSearchRequest(baseObject=base, filter=filter, attributes=list(attributes))


def eq(attribute, value, kind=pureldap.LDAPFilter_equalityMatch):
    return kind(attributeDesc=pureldap.LDAPAttributeDescription(attribute),
                assertionValue=pureldap.LDAPAssertionValue(value))


class MalformedRequestTests(unittest.TestCase):
    """
    Requests a fuzzer sent (issue 21, item 2): each is answered with an LDAP
    result code and logged in one line, never with a traceback.
    """

    def setUp(self):
        self.conn = RawConnection()
        self.logs = LogWatch(self)

    def assertAnswered(self, responses, kind, code, id=1):
        self.assertEqual(len(responses), 1, repr(responses))
        [message] = responses
        self.assertEqual(message.id, id)
        self.assertIsInstance(message.value, kind)
        self.assertEqual(message.value.resultCode, code, repr(message))
        self.assertFalse(self.conn.transport.disconnecting)
        self.logs.assert_no_traceback()
        self.assertEqual([e["log_level"] for e in self.logs.events], [LogLevel.info],
                         [e.get("log_format") for e in self.logs.events])    # refused, not failed

    def test_bind_version_not_a_number(self):
        """`%u format: a real number is required, not bytes`."""
        bind = ber(octets(b"3"), octets(b"uid=alice"), octets(b"pw", tag=0x80), tag=0x60)
        out = self.conn.send(ber(integer(1), bind))
        self.assertAnswered(out, pureldap.LDAPBindResponse, ldaperrors.LDAPProtocolError.resultCode)

    def test_bind_dn_not_utf8(self):
        out = self.conn.request(pureldap.LDAPBindRequest(dn=b"uid=\xff\xfe,ou=people," + BASE.encode(),
                                                         auth=b"pw"))
        self.assertAnswered(out, pureldap.LDAPBindResponse, ldaperrors.LDAPInvalidDNSyntax.resultCode)

    def test_search_base_not_utf8(self):
        out = self.conn.request(search(pureldap.LDAPFilter_present(b"objectClass"), base=b"dc=\xff,dc=com"))
        self.assertAnswered(out, pureldap.LDAPSearchResultDone, ldaperrors.LDAPInvalidDNSyntax.resultCode)

    def test_search_filter_not_utf8(self):
        for filter in (eq(b"cn", b"\xff"), eq(b"c\xffn", b"x"), pureldap.LDAPFilter_present(b"\xff"),
                       eq(b"cn", b"\xff", pureldap.LDAPFilter_greaterOrEqual),
                       pureldap.LDAPFilter_not(eq(b"cn", b"\xc3")),
                       pureldap.LDAPFilter_substrings(type=b"c\xffn", substrings=[
                           pureldap.LDAPFilter_substrings_initial(b"a")]),
                       pureldap.LDAPFilter_substrings(type=b"cn", substrings=[
                           pureldap.LDAPFilter_substrings_any(b"\xff")])):
            out = self.conn.request(search(filter))
            self.assertAnswered(out, pureldap.LDAPSearchResultDone, ldaperrors.LDAPProtocolError.resultCode)
            self.logs.clear()

    def test_search_attributes_not_utf8(self):
        out = self.conn.request(search(pureldap.LDAPFilter_present(b"objectClass"), attributes=[b"\xff"]))
        self.assertAnswered(out, pureldap.LDAPSearchResultDone, ldaperrors.LDAPProtocolError.resultCode)

    def test_approximate_match_is_equality(self):
        """RFC 4511 4.5.1.7.6: without an approximate rule, ~= matches as =."""
        out = self.conn.request(search(eq(b"uid", b"Alice", pureldap.LDAPFilter_approxMatch)))
        self.assertEqual([m.value.objectName for m in out[:-1]], [ALICE.encode()])
        self.assertEqual(out[-1].value.resultCode, 0)
        self.logs.assert_no_traceback()

    def test_extensible_match_with_a_rule(self):
        filter = pureldap.LDAPFilter_extensibleMatch(
            matchingRule=pureldap.LDAPMatchingRuleAssertion_matchingRule(b"2.5.13.2"),
            type=pureldap.LDAPMatchingRuleAssertion_type(b"cn"),
            matchValue=pureldap.LDAPMatchingRuleAssertion_matchValue(b"x"), dnAttributes=None)
        out = self.conn.request(search(filter))
        self.assertAnswered(out, pureldap.LDAPSearchResultDone,
                            ldaperrors.LDAPInappropriateMatching.resultCode)

    def test_compare(self):
        def compare(dn, attribute, value):
            return pureldap.LDAPCompareRequest(entry=dn, ava=pureldap.LDAPAttributeValueAssertion(
                pureber.BEROctetString(attribute), pureber.BEROctetString(value)))
        out = self.conn.request(compare(b"uid=\xff," + BASE.encode(), b"cn", b"x"))
        self.assertAnswered(out, pureldap.LDAPCompareResponse, ldaperrors.LDAPInvalidDNSyntax.resultCode)
        self.logs.clear()
        out = self.conn.request(compare(ALICE.encode(), b"cn", b"\xff"))
        self.assertAnswered(out, pureldap.LDAPCompareResponse, ldaperrors.LDAPProtocolError.resultCode)
        [message] = self.conn.request(compare(ALICE.encode(), b"uid", b"alice"))
        self.assertEqual(message.value.resultCode, ldaperrors.LDAPCompareTrue.resultCode)

    def test_abandon_gets_no_answer(self):
        self.assertEqual(self.conn.request(pureldap.LDAPAbandonRequest(id=3), id=4), [])
        self.logs.assert_no_traceback()
        self.assertFalse(self.conn.transport.disconnecting)

    def test_unknown_elements_inside_a_message_are_ignored_quietly(self):
        """RFC 4511 4: elements of unknown tags in a SEQUENCE are ignored (and not printed)."""
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        request = search(pureldap.LDAPFilter_present(b"objectClass"), base=ALICE.encode())
        out = self.conn.send(ber(integer(1), request.toWire(), octets(b"?", tag=0x9e)))
        self.assertEqual([m.value.objectName for m in out[:-1]], [ALICE.encode()])
        self.assertEqual(out[-1].value.resultCode, 0)
        self.assertEqual(stdout.getvalue(), "")
        self.logs.assert_no_traceback()

    def test_undecodable_message_gets_a_notice_of_disconnection(self):
        """RFC 4511 4.1.1: protocolError in a Notice of Disconnection, then hang up."""
        for wire in (ber(octets(b"1"), pureldap.LDAPUnbindRequest().toWire()),  # the id not a number
                     ber(integer(1), ber(octets(b"x"), tag=0x63)),                  # a search of one field
                     b"\x30\x03\x02\x01",                                           # a cut length
                     b"\x31\x00"):                                                  # not a message
            conn = RawConnection()
            out = conn.send(wire + b"\x30\x00")
            self.assertEqual(len(out), 1, repr((wire, out)))
            self.assertEqual(out[0].id, 0)
            self.assertEqual(out[0].value.responseName, b"1.3.6.1.4.1.1466.20036")
            self.assertEqual(out[0].value.resultCode, ldaperrors.LDAPProtocolError.resultCode)
            self.assertTrue(conn.transport.disconnecting)
            self.logs.assert_no_traceback()

    def test_critical_control_whose_type_is_not_a_string(self):
        control = ber(integer(5), pureber.BERBoolean(True).toWire())
        request = search(pureldap.LDAPFilter_present(b"objectClass")).toWire()
        out = self.conn.send(ber(integer(1), request, ber(control, tag=0xa0)))
        self.assertAnswered(out, pureldap.LDAPSearchResultDone, ldaperrors.LDAPProtocolError.resultCode)
