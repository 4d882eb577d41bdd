"""
Fuzzers of the LDAP address book (issue 21): search filters and DNs built
with ldaptor's pureldap around fuzzed names and values, and well-formed
messages with bytes changed. Each request gets its answer (entries, then one
result; nothing for abandon), or the message the server cannot decode gets
the Notice of Disconnection; never a traceback, never a "failed" warning
(an error that was not an LDAP result), never silence.
"""

import io
import sys

from hypothesis import example, given, settings, strategies as st
from ldaptor.protocols import pureber, pureldap
from twisted.internet import defer
from twisted.cred import error as cred_error
from twisted.logger import LogLevel
from twisted.trial import unittest

from allworx.tests.ldap.test_service import ALICE, BASE, RawConnection, make_office
from allworx.tests.logwatch import LogWatch

NOTICE = b"1.3.6.1.4.1.1466.20036"

names = st.sampled_from([b"cn", b"uid", b"mail", b"objectClass", b"telephoneNumber", b"sn", b"CN",
                         b"dc", b"x-y", b"1.2.3", b""]) | st.binary(max_size=10)
values = st.sampled_from([b"alice", b"Alice Archer", b"101", b"", b"*", b"inetOrgPerson", b"\xc3\xa9",
                          b"\\2a"]) | st.binary(max_size=10) | st.text(max_size=8).map(str.encode)
dns = (st.sampled_from([BASE.encode(), ALICE.encode(), b"ou=people," + BASE.encode(), b"", b"=",
                        b"uid=alice", b"cn=\\,x," + BASE.encode(), b"uid=a+cn=b," + BASE.encode(),
                        b"dc=other,dc=org"])
       | st.binary(max_size=30)
       | st.lists(st.tuples(names, values), max_size=4).map(
           lambda avas: b",".join(n + b"=" + v for n, v in avas)))


def _ava(kind):
    return st.builds(lambda n, v: kind(attributeDesc=pureldap.LDAPAttributeDescription(n),
                                       assertionValue=pureldap.LDAPAssertionValue(v)), names, values)


_parts = st.sampled_from([pureldap.LDAPFilter_substrings_initial, pureldap.LDAPFilter_substrings_any,
                          pureldap.LDAPFilter_substrings_final])
leaves = st.one_of(
    names.map(pureldap.LDAPFilter_present),
    _ava(pureldap.LDAPFilter_equalityMatch), _ava(pureldap.LDAPFilter_greaterOrEqual),
    _ava(pureldap.LDAPFilter_lessOrEqual), _ava(pureldap.LDAPFilter_approxMatch),
    st.builds(lambda n, parts: pureldap.LDAPFilter_substrings(type=n, substrings=parts), names,
              st.lists(st.builds(lambda kind, v: kind(v), _parts, values), min_size=1, max_size=3)),
    st.builds(lambda rule, n, v, dn: pureldap.LDAPFilter_extensibleMatch(
        matchingRule=rule and pureldap.LDAPMatchingRuleAssertion_matchingRule(rule),
        type=n and pureldap.LDAPMatchingRuleAssertion_type(n),
        matchValue=pureldap.LDAPMatchingRuleAssertion_matchValue(v),
        dnAttributes=dn or None),
        st.sampled_from([None, b"2.5.13.2", b"caseIgnoreMatch"]), st.none() | names, values,
        st.booleans()),
)
filters = st.recursive(leaves, lambda children: st.one_of(
    st.lists(children, max_size=3).map(pureldap.LDAPFilter_and),
    st.lists(children, max_size=3).map(pureldap.LDAPFilter_or),
    children.map(pureldap.LDAPFilter_not)), max_leaves=8)


class CheapChecker:
    """Alice's password is `pw`; nothing is hashed (binds are fuzzed by the hundred)."""

    def requestAvatarId(self, creds):
        if creds.username in (b"alice", ALICE.encode()) and creds.password == b"pw":
            return defer.succeed("alice")
        return defer.fail(cred_error.UnauthorizedLogin())


class LdapFuzzTests(unittest.TestCase):

    def setUp(self):
        self.office = make_office()
        self.logs = LogWatch(self)
        self.stdout = io.StringIO()          # ldaptor's decoder prints what it cannot place
        self.patch(sys, "stdout", self.stdout)

    def connect(self):
        self.logs.clear()
        self.stdout.seek(0)
        self.stdout.truncate()
        conn = RawConnection(self.office)
        conn.factory.checker = CheapChecker()
        return conn

    def assertClean(self, what, answers=1):
        """No traceback, nothing above info, at most one log line per answer."""
        self.logs.assert_no_traceback()
        warned = [e for e in self.logs.events if e.get("log_level") in (LogLevel.warn, LogLevel.error,
                                                                          LogLevel.critical)]
        self.assertEqual(warned, [], repr(what))
        self.assertLessEqual(len(self.logs.events), max(1, answers), repr((what, self.logs.events)))
        self.assertEqual(self.stdout.getvalue(), "", repr(what))

    def assertAnswered(self, conn, out, kind, what):
        """One answer of `kind` to message 1, entries before it for a search, the line still up."""
        self.assertFalse(conn.transport.disconnecting, repr((what, out)))
        self.assertTrue(out, repr(what))
        self.assertEqual([m.id for m in out], [1] * len(out), repr((what, out)))
        self.assertIsInstance(out[-1].value, kind, repr((what, out)))
        for m in out[:-1]:
            self.assertIsInstance(m.value, pureldap.LDAPSearchResultEntry, repr((what, out)))
        self.assertClean(what)

    @settings(max_examples=300, deadline=None)
    @given(filters, dns, st.sampled_from([0, 1, 2, 3, 200]), st.lists(names, max_size=3))
    @example(pureldap.LDAPFilter_equalityMatch(attributeDesc=pureldap.LDAPAttributeDescription(b"cn"),
                                               assertionValue=pureldap.LDAPAssertionValue(b"\xff")),
             BASE.encode(), 2, [])
    @example(pureldap.LDAPFilter_present(b"objectClass"), b"dc=\xff", 2, [b"\xff"])
    @example(pureldap.LDAPFilter_and([pureldap.LDAPFilter_not(pureldap.LDAPFilter_not(
        pureldap.LDAPFilter_present(b"1.2.3")))]), b"", 0, [])        # as long as (objectClass=*)
    def test_search_filters(self, filter, base, scope, attributes):
        conn = self.connect()
        request = pureldap.LDAPSearchRequest(baseObject=base, scope=scope, filter=filter,
                                             attributes=attributes)
        out = conn.request(request)
        self.assertAnswered(conn, out, pureldap.LDAPSearchResultDone, request)

    @settings(max_examples=300, deadline=None)
    @given(dns, st.sampled_from(["bind", "compare", "delete", "add", "modify", "modifydn", "search",
                                 "extended"]), names, values)
    @example(b"uid=\xff\xfe,ou=people," + BASE.encode(), "bind", b"cn", b"pw")
    @example(b"uid=\xff," + BASE.encode(), "compare", b"cn", b"x")
    @example(b"uid=alice,\\eo," + BASE.encode(), "bind", b"cn", b"pw")
    @example(b"uid=alice\\", "search", b"cn", b"x")
    def test_dns(self, dn, operation, name, value):
        conn = self.connect()
        op, kind = {
            "bind": lambda: (pureldap.LDAPBindRequest(dn=dn, auth=value or b"x"), pureldap.LDAPBindResponse),
            "compare": lambda: (pureldap.LDAPCompareRequest(entry=dn, ava=pureldap.LDAPAttributeValueAssertion(
                pureber.BEROctetString(name), pureber.BEROctetString(value))), pureldap.LDAPCompareResponse),
            "delete": lambda: (pureldap.LDAPDelRequest(entry=dn), pureldap.LDAPDelResponse),
            "add": lambda: (pureldap.LDAPAddRequest(entry=dn, attributes=[
                (pureldap.LDAPAttributeDescription(name), pureber.BERSet([pureldap.LDAPAttributeValue(value)]))]),
                pureldap.LDAPAddResponse),
            "modify": lambda: (pureldap.LDAPModifyRequest(object=dn, modification=[]),
                               pureldap.LDAPModifyResponse),
            "modifydn": lambda: (pureldap.LDAPModifyDNRequest(entry=dn, newrdn=b"uid=" + value,
                                                              deleteoldrdn=1),
                                 pureldap.LDAPModifyDNResponse),
            "search": lambda: (pureldap.LDAPSearchRequest(baseObject=dn), pureldap.LDAPSearchResultDone),
            "extended": lambda: (pureldap.LDAPExtendedRequest(requestName=dn or b"1", requestValue=value),
                                 pureldap.LDAPExtendedResponse),
        }[operation]()
        out = conn.request(op)
        self.assertAnswered(conn, out, kind, op)

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(range(6)), st.integers(0, 400), st.binary(min_size=1, max_size=4),
           st.booleans())
    @example(2, 59, b"\x00\x00\x00", False)    # a whole Compare, then bytes that are no message
    # A Compare refused (its value not UTF-8) and then junk: one log line for each.
    @example(2, 59, b"\x80\x00\x00", False)
    def test_mutated_messages(self, which, at, junk, replace):
        """A byte or a few changed or inserted anywhere in a well-formed message."""
        ops = [
            pureldap.LDAPBindRequest(dn=ALICE.encode(), auth=b"pw"),
            pureldap.LDAPSearchRequest(baseObject=BASE.encode(), filter=pureldap.LDAPFilter_and([
                pureldap.LDAPFilter_substrings(type=b"cn", substrings=[
                    pureldap.LDAPFilter_substrings_initial(b"al"), pureldap.LDAPFilter_substrings_final(b"r")]),
                pureldap.LDAPFilter_not(pureldap.LDAPFilter_present(b"mail"))]), attributes=[b"cn"]),
            pureldap.LDAPCompareRequest(entry=ALICE.encode(), ava=pureldap.LDAPAttributeValueAssertion(
                pureber.BEROctetString(b"uid"), pureber.BEROctetString(b"alice"))),
            pureldap.LDAPExtendedRequest(requestName=b"1.3.6.1.4.1.4203.1.11.3", requestValue=b""),
            pureldap.LDAPModifyDNRequest(entry=ALICE.encode(), newrdn=b"uid=x", deleteoldrdn=1),
            pureldap.LDAPAbandonRequest(id=3),
        ]
        wire = bytearray(pureldap.LDAPMessage(ops[which], id=1,
                                              controls=[(b"1.2.3", False, b"v")] if which == 1 else None
                                              ).toWire())
        at %= len(wire)
        if replace:
            wire[at:at + len(junk)] = junk
        else:
            wire[at:at] = junk
        conn = self.connect()
        out = conn.send(bytes(wire))
        what = (bytes(wire), out)
        if conn.transport.disconnecting:
            # A mutation may leave a whole message followed by bytes that are
            # none: the message is answered, then the notice ends the session.
            self.assertIn(len(out), (1, 2), repr(what))
            self.assertEqual((out[-1].id, out[-1].value.responseName, out[-1].value.resultCode),
                             (0, NOTICE, 2), repr(what))
            for m in out[:-1]:
                self.assertIsInstance(m.value, pureldap.LDAPProtocolResponse, repr(what))
                self.assertEqual(m.id, 1, repr(what))
        else:
            for m in out:
                self.assertIsInstance(m.value, pureldap.LDAPProtocolResponse, repr(what))
                self.assertIsInstance(m.id, int, repr(what))
        self.assertClean(what, answers=len(out))
