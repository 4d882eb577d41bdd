# -*- test-case-name: allworx.tests.provisioning.test_vendors -*-
"""
The set of files the provisioning service can make (SPEC 19), one module a
phone family: what a requested file name is (`resolve`), which family a
phone is (`guess_model`), and the bytes of the file (`render`). A name
outside this set is not a file: there is no listing and no path.
"""

import re

import attr

from allworx.protocols.provisioning.vendors import (
    ciscospa, generic, grandstream, polycom, snom, yealink)

FAMILIES = {m.MODEL: m for m in (yealink, polycom, grandstream, snom, ciscospa, generic)}

_MAC = "([0-9a-f]{12})"
# (pattern, the models it can be, what the file is): the per-MAC names.
PER_MAC = [
    (re.compile("^%s\\.cfg$" % _MAC), ("yealink", "polycom"), "config"),
    (re.compile("^%s-allworx\\.cfg$" % _MAC), ("polycom",), "settings"),
    (re.compile("^cfg%s\\.xml$" % _MAC), ("grandstream",), "config"),
    (re.compile("^([0-9A-F]{12})\\.xml$"), ("snom",), "config"),
    (re.compile("^spa%s\\.xml$" % _MAC), ("cisco-spa",), "config"),
    (re.compile("^%s\\.baresip$" % _MAC), ("generic",), "config"),
]
COMMON = {name: m.MODEL for m in FAMILIES.values() for name in m.COMMON}
ALL_ZEROS = "000000000000"

# Words in a DHCP vendor class (option 60) or an HTTP User-Agent, by family.
HINTS = (("yealink", "yealink"), ("polycom", "polycom"), ("grandstream", "grandstream"),
         ("snom", "snom"), ("cisco", "cisco-spa"), ("linksys", "cisco-spa"),
         ("spa", "cisco-spa"), ("baresip", "generic"))
# The first three bytes of the MAC (the maker's OUI), for names two families share.
OUIS = {"001565": "yealink", "249ad8": "yealink", "805ec0": "yealink", "805e0c": "yealink",
        "0004f2": "polycom", "64167f": "polycom", "482567": "polycom",
        "000b82": "grandstream", "c074ad": "grandstream", "000413": "snom"}


@attr.s(frozen=True, slots=True)
class Wanted:
    """What a file name asks for: a common file of `models[0]` (mac None), or
    the per-MAC file `kind` ("config", "settings") of `mac`, one of `models`."""

    name = attr.ib()
    models = attr.ib()
    kind = attr.ib()
    mac = attr.ib(default=None)


def resolve(name):
    """The Wanted of a file name, or None when it is not one of the set."""
    if name in COMMON:
        return Wanted(name, (COMMON[name],), "common")
    for pattern, models, kind in PER_MAC:
        m = pattern.match(name)
        if m and m.group(1).lower() != ALL_ZEROS:
            return Wanted(name, models, kind, m.group(1).lower())
    return None


def guess_model(wanted, vendor_class=None, user_agent=None, configured=None):
    """The family of the phone asking for `wanted`: the configured model if
    it is one the name allows, else the one the name allows alone, else a
    hint of the vendor class, the User-Agent or the MAC's maker; None when
    nothing tells."""
    if configured in wanted.models:
        return configured
    if len(wanted.models) == 1:
        return wanted.models[0]
    for text in (vendor_class, user_agent):
        low = (text or "").lower()
        for word, model in HINTS:
            if word in low and model in wanted.models:
                return model
    model = OUIS.get((wanted.mac or "")[:6])
    return model if model in wanted.models else None


def render_common(name, server, timezone):
    """The bytes of a common file (no account, no secret)."""
    return FAMILIES[COMMON[name]].render_common(server, timezone)


def render(wanted, model, facts):
    """The bytes of the per-MAC file `wanted` of a phone of `model`."""
    family = FAMILIES[model]
    if model == "polycom" and wanted.kind == "config":
        return family.render_master(facts)
    return family.render(facts)


def content_type(model):
    return FAMILIES[model].CONTENT_TYPE


def file_names(mac, model):
    """The per-MAC file names a phone of `model` fetches (for the docs and the pages)."""
    family = FAMILIES[model]
    names = [family.file_name(mac)]
    if model == "polycom":
        names.append(family.settings_name(mac))
    return names
