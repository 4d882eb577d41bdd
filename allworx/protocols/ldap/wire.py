# -*- test-case-name: allworx.tests.ldap.test_service -*-
"""
What an LDAP request from the wire may hold, checked before ldaptor acts on
it, and how its bytes are decoded.

ldaptor's decoder takes any BER value where the protocol names a type, and
its matching code expects UTF-8 text: a request is checked here so that what
it holds answers with a result code (RFC 4511 4.1.9) instead of an error
deep inside ldaptor. The address book holds only text, so any name or value
that is not UTF-8 is protocolError, and a DN that is not one is
invalidDNSyntax.

The decoder (`DECODER`) refuses a message whose outer tag is not an
LDAPMessage (the Notice of Disconnection follows, RFC 4511 4.1.1) and skips
an element of unknown tag inside one (4: "MUST ignore elements of SEQUENCEs
whose tags they do not recognize"), quietly: ldaptor's own decoder prints a
line of several kilobytes to stdout for each.
"""

from ldaptor.protocols import pureber, pureldap
from ldaptor.protocols.ldap import distinguishedname, ldaperrors

NOTICE_OF_DISCONNECTION = b"1.3.6.1.4.1.1466.20036"  # RFC 4511 4.4.1
MAX_MESSAGE_ID = 2 ** 31 - 1


class MalformedMessage(ValueError):
    """The bytes are not an LDAPMessage (the connection is closed)."""


# ---------------------------------------------------------------- decoding

class _Skipped:
    """An element of a tag no one knows: decoded as nothing, so it is left out."""

    @classmethod
    def fromBER(cls, tag, content, berdecoder=None):
        return None


class _Lenient(pureber.BERDecoderContext):
    """The end of every fallback chain: basic BER types, and any other tag skipped."""

    def lookup_id(self, id):
        return pureber.BERDecoderContext.lookup_id(self, id) or _Skipped


class _Controls(pureldap.LDAPControls):
    """ldaptor's controls, decoded with a context that knows what to skip."""

    @classmethod
    def fromBER(cls, tag, content, berdecoder=None):
        context = pureldap.LDAPBERDecoderContext_LDAPControls(fallback=_Lenient(), inherit=berdecoder)
        return cls(pureber.berDecodeMultiple(content, context), tag=tag)


class _Message(pureldap.LDAPBERDecoderContext_LDAPMessage):
    Identities = dict(pureldap.LDAPBERDecoderContext_LDAPMessage.Identities)
    Identities[pureldap.LDAPControls.tag] = _Controls


class _TopLevel(pureldap.LDAPBERDecoderContext_TopLevel):
    def lookup_id(self, id):
        found = pureldap.LDAPBERDecoderContext_TopLevel.lookup_id(self, id)
        if found is None:
            raise MalformedMessage("not an LDAPMessage (tag 0x%02x)" % id)
        return found


DECODER = _TopLevel(inherit=_Message(
    fallback=pureldap.LDAPBERDecoderContext(fallback=_Lenient()),
    inherit=pureldap.LDAPBERDecoderContext(fallback=_Lenient())))


# ---------------------------------------------------------------- checks

def text(ber, what):
    """The text of a string field (a BER value or bytes); protocolError when it is none."""
    value = ber if isinstance(ber, bytes) else getattr(ber, "value", None)
    if not isinstance(value, bytes):
        raise ldaperrors.LDAPProtocolError("%s is not a string" % what)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ldaperrors.LDAPProtocolError("%s is not UTF-8" % what)


def parse_dn(value):
    """A DN from the wire; invalidDNSyntax when it is not UTF-8 or not a DN."""
    if not isinstance(value, bytes):
        raise ldaperrors.LDAPProtocolError("the DN is not a string")
    try:
        return distinguishedname.DistinguishedName(stringValue=value.decode("utf-8"))
    except (ValueError, IndexError, distinguishedname.InvalidRelativeDistinguishedName):
        # not UTF-8 (UnicodeDecodeError is a ValueError), a bad or cut \\XX escape, no "="
        raise ldaperrors.LDAPInvalidDNSyntax("not a valid DN")


_SUBSTRING_PARTS = (pureldap.LDAPFilter_substrings_initial, pureldap.LDAPFilter_substrings_any,
                    pureldap.LDAPFilter_substrings_final)


def checked_filter(f):
    """
    The search filter to match the tree with: every name and value text,
    `~=` as `=` (RFC 4511 4.5.1.7.6: no approximate rule is offered);
    protocolError for anything else, inappropriateMatching for a matching rule.
    """
    if isinstance(f, (pureldap.LDAPFilter_and, pureldap.LDAPFilter_or)):
        return type(f)([checked_filter(part) for part in f], tag=f.tag)
    if isinstance(f, pureldap.LDAPFilter_not):
        return pureldap.LDAPFilter_not(checked_filter(f.value))
    if isinstance(f, pureldap.LDAPFilter_present):
        text(f, "an attribute name")
        return f
    if isinstance(f, (pureldap.LDAPFilter_equalityMatch, pureldap.LDAPFilter_greaterOrEqual,
                      pureldap.LDAPFilter_lessOrEqual, pureldap.LDAPFilter_approxMatch)):
        text(f.attributeDesc, "an attribute name")
        text(f.assertionValue, "a filter value")
        if isinstance(f, pureldap.LDAPFilter_approxMatch):
            return pureldap.LDAPFilter_equalityMatch(attributeDesc=f.attributeDesc,
                                                     assertionValue=f.assertionValue)
        return f
    if isinstance(f, pureldap.LDAPFilter_substrings):
        text(f.type, "an attribute name")
        parts = f.substrings
        for i, part in enumerate(parts):
            text(part, "a filter value")
            if not isinstance(part, _SUBSTRING_PARTS) or \
                    (isinstance(part, pureldap.LDAPFilter_substrings_initial) and i != 0) or \
                    (isinstance(part, pureldap.LDAPFilter_substrings_final) and i != len(parts) - 1):
                raise ldaperrors.LDAPProtocolError("substrings out of order")
        return f
    if isinstance(f, pureldap.LDAPFilter_extensibleMatch):
        if f.matchingRule is not None:
            raise ldaperrors.LDAPInappropriateMatching("no matching rules are offered")
        text(f.type, "an attribute name")
        text(f.matchValue, "a filter value")
        return f
    raise ldaperrors.LDAPProtocolError("not a search filter")


def is_root_dse(request):
    """A search for the root DSE (RFC 4512 5.1): base "", scope base, `(objectClass=*)`."""
    f = request.filter
    return request.baseObject == b"" and request.scope == pureldap.LDAP_SCOPE_baseObject and \
        isinstance(f, pureldap.LDAPFilter_present) and isinstance(f.value, bytes) and \
        f.value.lower() == b"objectclass"


def check_ava(ava):
    """A compare's attribute and value: text, else protocolError."""
    if not isinstance(ava, pureldap.LDAPAttributeValueAssertion):
        raise ldaperrors.LDAPProtocolError("not an attribute value assertion")
    text(ava.attributeDesc, "an attribute name")
    text(ava.assertionValue, "the value")
