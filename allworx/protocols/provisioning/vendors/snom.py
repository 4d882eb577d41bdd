# -*- test-case-name: allworx.tests.provisioning.test_vendors -*-
"""
Snom (D3xx, D7xx): `{MAC}.xml` (uppercase MAC), the XML settings format
(`<settings><phone-settings>` with Snom's setting names: user_active,
user_name, user_pname, user_pass, user_realname, user_host, user_mailbox,
user_idle_text, ntp_server, dns_server1, utc_offset, language).
"""

from allworx.protocols.provisioning.vendors.facts import xml_text

MODEL = "snom"
COMMON = ()
CONTENT_TYPE = "application/xml; charset=utf-8"


def file_name(mac):
    return "%s.xml" % mac.upper()


def render(f):
    host = "%s:%d;transport=%s" % (f.server, f.port, f.transport)
    line = [("user_active", "on"), ("user_name", f.extension), ("user_pname", f.extension),
            ("user_pass", f.secret), ("user_realname", f.display_name),
            ("user_host", host), ("user_mailbox", f.voicemail),
            ("user_idle_text", f.label_or_extension),
            ("user_expiry", f.register_every)]
    phone = [("ntp_server", f.ntp), ("dns_server1", f.dns),
             ("utc_offset", f.timezone.offset), ("language", "English"),
             ("web_language", "English")]
    body = "".join('    <%s idx="1" perm="">%s</%s>\n' % (k, xml_text(v), k) for k, v in line)
    body += "".join('    <%s perm="">%s</%s>\n' % (k, xml_text(v), k) for k, v in phone)
    return ('<?xml version="1.0" encoding="utf-8"?>\n<settings>\n'
            '  <phone-settings e="2">\n%s  </phone-settings>\n</settings>\n'
            % body).encode("utf-8")
