# -*- test-case-name: allworx.tests.provisioning.test_vendors -*-
"""
Grandstream (GXP and the like): `cfg{mac}.xml`, the XML provisioning format
(`<gs_provision>` with the P-values of Grandstream's configuration template:
P271 account active, P270 account name, P47 SIP server, P35 user ID, P36
auth ID, P34 password, P3 display name, P33 voicemail access number, P99
MWI subscription, P130 transport, P30 NTP server, P64 time zone (a POSIX
TZ string), P1362 language).
"""

from allworx.protocols.provisioning.vendors.facts import xml_text

MODEL = "grandstream"
COMMON = ()
CONTENT_TYPE = "application/xml; charset=utf-8"
TRANSPORTS = {"udp": 0, "tcp": 1, "tls": 2}


def file_name(mac):
    return "cfg%s.xml" % mac


def render(f):
    server = f.server if f.port == 5060 else "%s:%d" % (f.server, f.port)
    values = [
        ("P271", 1), ("P270", f.label_or_extension), ("P47", server),
        ("P35", f.extension), ("P36", f.extension), ("P34", f.secret),
        ("P3", f.display_name), ("P33", f.voicemail), ("P99", 1),
        ("P130", TRANSPORTS[f.transport]), ("P30", f.ntp), ("P64", f.timezone.posix),
        ("P1362", f.language),
    ]
    body = "".join("    <%s>%s</%s>\n" % (k, xml_text(v), k) for k, v in values)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<gs_provision version="1">\n'
            '  <mac>%s</mac>\n  <config version="1">\n%s  </config>\n</gs_provision>\n'
            % (f.mac, body)).encode("utf-8")
