# -*- test-case-name: allworx.tests.core.test_config_phones -*-
"""
The readers of the keys of phones that configure themselves (SPEC 19):
MAC addresses in any common notation, phone models; and `check_phones`,
the checks between `[phone MAC]`, `[provisioning]` and the rest of the
office (owners, one phone of a model per user, one section per MAC, ports).

Like `values`, each parse_* takes a key's text and returns its value or
raises ValueError with a sentence. This module imports only `values`.
"""

import re

# The notations a MAC is written in: 001122aabbcc, 00:11:22:aa:bb:cc,
# 00-11-22-AA-BB-CC, 0011.22aa.bbcc (either case).
MAC_NOTATION = re.compile(
    r"^(?:[0-9A-Fa-f]{12}"
    r"|[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})$")
MAC_HINT = ("a MAC address: 12 hex digits, alone or in pairs separated by ':' or '-', "
            "or in groups of four separated by '.', like 00:15:65:12:34:56")

# The phone families the provisioning service writes files for.
MODELS = ("yealink", "polycom", "grandstream", "snom", "cisco-spa", "generic")


def normalise_mac(text):
    """`00:15:65:AB:CD:EF` (any notation of MAC_NOTATION) -> `001565abcdef`."""
    t = text.strip()
    if not MAC_NOTATION.match(t):
        raise ValueError("%r is not %s" % (text, MAC_HINT))
    return re.sub(r"[^0-9a-f]", "", t.lower())


def parse_phone_model(text):
    t = text.strip().lower()
    if t not in MODELS:
        raise ValueError("%r is not a phone model: one of %s" % (text, ", ".join(MODELS)))
    return t


def parse_phone_label(text):
    """What the phone shows on its screen: one line of printable text, at most 32 characters."""
    t = text.strip()
    if len(t) > 32:
        raise ValueError("is %d characters long: at most 32 fit on a phone's screen" % len(t))
    if any(not ch.isprintable() for ch in t):
        raise ValueError("has characters that cannot be shown (control characters)")
    return t


def check_phones(c, err, declared):
    """The checks of `[phone MAC]` sections between sections (SPEC 19)."""
    by_mac = {}
    taken = {}
    for name in c.phones:           # file order: the later section is the one named
        phone = c.phones[name]
        section = "phone %s" % name
        first = by_mac.setdefault(phone.mac, name)
        if first != name:
            err(section, None, "is the same phone as [phone %s] (MAC %s)" % (first, phone.mac))
            continue
        if phone.user not in c.users:
            err(section, "user", "there is no [user %s]" % phone.user)
            continue
        if phone.model is not None:
            other = taken.setdefault((phone.user, phone.model), name)
            if other != name:
                err(section, "user", "%s already has a %s phone, [phone %s]: a person's "
                    "line key is on one phone of a model" % (phone.user, phone.model, other))
        if c.users[phone.user].extension is None:
            err(section, "user", "%s has no extension to register the phone as" % phone.user)
    if c.provisioning.enabled:
        port = c.provisioning.port
        used = {c.web.admin_port: "[web] admin_port", c.web.http_port: "[web] http_port"}
        if port in used:
            err("provisioning", "port", "%d is already %s" % (port, used[port]))
