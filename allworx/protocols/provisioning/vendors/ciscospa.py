# -*- test-case-name: allworx.tests.provisioning.test_vendors -*-
"""
Cisco SPA (Linksys/Cisco SPA3xx/5xx): `spa{mac}.xml`, a `<flat-profile>`
whose elements are the parameter names of the SPA administration guide with
spaces as underscores and `_1_` for line 1 (Proxy_1_, User_ID_1_, ...).
"""

from allworx.protocols.provisioning.vendors.facts import format_offset, xml_text

MODEL = "cisco-spa"
COMMON = ()
CONTENT_TYPE = "application/xml; charset=utf-8"


def file_name(mac):
    return "spa%s.xml" % mac


def render(f):
    values = [
        ("Line_Enable_1_", "Yes"),
        ("Proxy_1_", "%s:%d" % (f.server, f.port)),
        ("Register_1_", "Yes"),
        ("Register_Expires_1_", f.register_every),
        ("SIP_Transport_1_", f.transport.upper()),
        ("Display_Name_1_", f.display_name),
        ("User_ID_1_", f.extension),
        ("Password_1_", f.secret),
        ("Use_Auth_ID_1_", "Yes"),
        ("Auth_ID_1_", f.extension),
        ("Mailbox_ID_1_", f.extension),
        ("Voice_Mail_Number", f.voicemail),
        ("Short_Name_1_", f.label_or_extension),
        ("Station_Display_Name", f.label_or_extension),
        ("Primary_NTP_Server", f.ntp),
        ("Primary_DNS", f.dns),
        ("Time_Zone", "GMT" + format_offset(f.timezone.offset)),
        ("Language_Selection", "English"),
    ]
    body = "".join('  <%s ua="na">%s</%s>\n' % (k, xml_text(v), k) for k, v in values)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<flat-profile>\n%s</flat-profile>\n'
            % body).encode("utf-8")
