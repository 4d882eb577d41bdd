# -*- test-case-name: allworx.tests.sip.test_dialplan -*-
"""
The dial plan (SPEC 15): what a phone's dialled digits mean, how a number
becomes E.164, and how it is written for a provider. Pure functions of the
digits and the config; nothing here sends or waits.

- Emergency numbers (911, 112, 999) go out unchanged, without the outbound
  prefix (and with it, out of habit).
- The outbound prefix (`[sip] outbound_prefix`, 9) then a number is an
  outside call: `+...` as it is; `international_prefix` + digits -> `+`
  digits; `national_prefix` + digits, or digits alone -> `+` `country_code`
  digits.
- Anything else is dialled inside: the voicemail number, an extension, a
  group's or an attendant's number, `0` for the operator.
"""

import re

import attr

from allworx.config import EMERGENCY, is_e164

__all__ = ["EMERGENCY", "Dialled", "classify", "for_provider", "from_provider", "to_e164"]
OPERATOR = "0"

# Visual separators a number may carry (RFC 3966 visual-separator).
_SEPARATORS = re.compile(r"[-.() ]")
DIALLED_KINDS = ("emergency", "outside", "voicemail_menu", "extension", "group", "attendant")


@attr.s(frozen=True, slots=True)
class Dialled:
    """
    What a phone dialled: `kind` (one of DIALLED_KINDS) and `number`: the
    emergency number as dialled; the E.164 number of an outside call; the
    extension, or the group's or attendant's number, dialled inside (`0`
    gives the operator's extension); for `voicemail_menu`, the caller's own
    extension (its mailbox), or None when the caller has none.
    """

    kind = attr.ib(validator=attr.validators.in_(DIALLED_KINDS))
    number = attr.ib()


def _digits(text):
    return bool(text) and text.isascii() and text.isdigit()


def _e164(digits, what):
    number = "+" + digits
    if not is_e164(number):
        raise ValueError("%r is not a phone number (%s)" % (what, "+ then 8 to 15 digits, "
                                                                 "the first not 0"))
    return number


def to_e164(digits, sip):
    """
    The E.164 form of a number dialled after the outbound prefix, per the
    office's `[sip]` country settings; ValueError if it is not a number.
    """
    t = digits.strip()
    if t.startswith("+"):
        if not _digits(t[1:]):
            raise ValueError("%r is not a phone number" % digits)
        return _e164(t[1:], digits)
    if not _digits(t):
        raise ValueError("%r is not a phone number" % digits)
    if t.startswith(sip.international_prefix) and len(t) > len(sip.international_prefix):
        return _e164(t[len(sip.international_prefix):], digits)
    if sip.national_prefix and t.startswith(sip.national_prefix):
        t = t[len(sip.national_prefix):]
    return _e164(sip.country_code + t, digits)


def for_provider(e164, trunk, sip):
    """
    The Request-URI user part for `e164` on `trunk`: the E.164 number, or,
    with `number_format = national`, the digits after the office's country
    code (without a national prefix) for a number of that country, else the
    international prefix and the digits.
    """
    if trunk.number_format != "national":
        return e164
    country = "+" + sip.country_code
    if e164.startswith(country):
        return e164[len(country):]
    return sip.international_prefix + e164[1:]


def from_provider(uri_user, sip):
    """
    The E.164 number a provider names (the caller's, or the number called):
    `+...`; the international prefix then digits; the country code then a
    full number without `+` (11 digits or more); a national number with or
    without the national prefix. ValueError if it is not a number.
    """
    t = _SEPARATORS.sub("", uri_user.split(";", 1)[0].strip())
    if (_digits(t) and len(t) >= 11 and t.startswith(sip.country_code)
            and not t.startswith(sip.international_prefix)
            and not (sip.national_prefix and t.startswith(sip.national_prefix))):
        return _e164(t, uri_user)
    return to_e164(t, sip)


def classify(dialled, config, user=None):
    """
    What `dialled` (a Request-URI user part from a LAN phone) means, as a
    Dialled, or None when it names nothing. `user` is the caller (a User)
    or None; its extension is the mailbox of the voicemail menu.
    """
    t = dialled.strip()
    sip = config.sip
    prefix = sip.outbound_prefix
    if t in EMERGENCY and config.trunks:
        return Dialled("emergency", t)
    if t.startswith(prefix) and t[len(prefix):] in EMERGENCY and config.trunks:
        return Dialled("emergency", t[len(prefix):])
    inside = _inside(t, config, user)
    if inside is not None:
        return inside
    if t in EMERGENCY:
        return Dialled("emergency", t)      # no trunk: the call fails there, not as unknown
    rest = t[len(prefix):]
    if t.startswith(prefix) and (_digits(rest) or rest.startswith("+") and _digits(rest[1:])):
        try:
            return Dialled("outside", to_e164(rest, sip))
        except ValueError:
            return None
    return None


def _inside(t, config, user):
    """A number dialled inside the office, or None."""
    if t == config.sip.voicemail_number:
        return Dialled("voicemail_menu", user.extension if user is not None else None)
    if t == OPERATOR:
        operator = config.operator_extension
        return Dialled("extension", operator) if operator else None
    if config.user_by_extension(t) is not None:
        return Dialled("extension", t)
    if config.group_by_number(t) is not None:
        return Dialled("group", t)
    if config.attendant_by_number(t) is not None:
        return Dialled("attendant", t)
    named = config.users.get(t)
    if named is not None and named.extension:
        return Dialled("extension", named.extension)
    return None
