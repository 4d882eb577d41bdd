# -*- test-case-name: allworx.tests.provisioning.test_vendors -*-
"""
Yealink (T4x/T5x and the like): the common file `y000000000000.cfg` every
Yealink fetches first, then `{mac}.cfg`; both "key = value" lines after the
`#!version:1.0.0.1` header, with the keys of Yealink's auto-provisioning
guide (account.1.*, voice_mail.number.1, local_time.*, network.*, lang.*).
"""

from allworx.protocols.provisioning.vendors.facts import format_offset

MODEL = "yealink"
COMMON = ("y000000000000.cfg",)
CONTENT_TYPE = "text/plain; charset=utf-8"
HEADER = "#!version:1.0.0.1"
TRANSPORTS = {"udp": 0, "tcp": 1, "tls": 2}


def file_name(mac):
    return "%s.cfg" % mac


def _hours(seconds):
    # Yealink writes the offset as hours, "+1", "-5", "+5:30".
    text = format_offset(seconds)
    sign, hh, mm = text[0], int(text[1:3]), text[4:6]
    return "%s%d%s" % (sign, hh, "" if mm == "00" else ":" + mm)


def _lines(pairs):
    return (HEADER + "\n" + "".join("%s = %s\n" % (k, v) for k, v in pairs)).encode("utf-8")


def render_common(server, timezone):
    """The settings of every Yealink on this LAN (no account, no secret)."""
    return _lines([
        ("local_time.ntp_server1", server),
        ("local_time.time_zone", _hours(timezone.offset)),
        ("local_time.time_zone_name", timezone.name),
        ("network.primary_dns", server),
        ("lang.gui", "English"),
        ("lang.wui", "English"),
    ])


def render(f):
    return _lines([
        ("account.1.enable", 1),
        ("account.1.label", f.label_or_extension),
        ("account.1.display_name", f.display_name),
        ("account.1.user_name", f.extension),
        ("account.1.auth_name", f.extension),
        ("account.1.password", f.secret),
        ("account.1.sip_server.1.address", f.server),
        ("account.1.sip_server.1.port", f.port),
        ("account.1.sip_server.1.transport_type", TRANSPORTS[f.transport]),
        ("account.1.sip_server.1.expires", f.register_every),
        ("account.1.subscribe_mwi", 1),
        ("account.1.subscribe_mwi_to_vm", 1),
        ("voice_mail.number.1", f.voicemail),
        ("local_time.ntp_server1", f.ntp),
        ("local_time.time_zone", _hours(f.timezone.offset)),
        ("local_time.time_zone_name", f.timezone.name),
        ("network.primary_dns", f.dns),
        ("lang.gui", "English"),
        ("lang.wui", "English"),
    ])
