# -*- test-case-name: allworx.tests.provisioning.test_vendors -*-
"""
Polycom (SoundPoint IP, VVX; UC Software): a phone first fetches its
per-phone master configuration file `{mac}.cfg`, else the default master
`000000000000.cfg`; a master file only names the configuration files to
load (CONFIG_FILES, where the phone puts its own MAC for
[PHONE_MAC_ADDRESS]). Both name `{mac}-allworx.cfg`, which holds the
settings, with the parameter names of Polycom's administrator guide
(reg.1.*, msg.mwi.1.*, tcpIpApp.sntp.*, device.dns.*, lcl.ml.lang).
"""

from allworx.protocols.provisioning.vendors.facts import xml_attr

MODEL = "polycom"
COMMON = ("000000000000.cfg",)
CONTENT_TYPE = "application/xml; charset=utf-8"
TRANSPORTS = {"udp": "UDPOnly", "tcp": "TCPOnly", "tls": "TLS"}
SETTINGS = "%s-allworx.cfg"


def file_name(mac):
    return "%s.cfg" % mac


def settings_name(mac):
    return SETTINGS % mac


def _master(config_files):
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<!-- allworx: master configuration file -->\n'
            '<APPLICATION APP_FILE_PATH="sip.ld" CONFIG_FILES=%s MISC_FILES="" '
            'LOG_FILE_DIRECTORY="" OVERRIDES_DIRECTORY="" CONTACTS_DIRECTORY=""/>\n'
            % xml_attr(config_files)).encode("utf-8")


def render_common(server, timezone):
    """The default master file: each phone loads its own settings file."""
    return _master(SETTINGS % "[PHONE_MAC_ADDRESS]")


def render_master(f):
    return _master(settings_name(f.mac))


def render(f):
    """The settings file `{mac}-allworx.cfg`."""
    params = [
        ("reg.1.address", f.extension),
        ("reg.1.auth.userId", f.extension),
        ("reg.1.auth.password", f.secret),
        ("reg.1.displayName", f.display_name),
        ("reg.1.label", f.label_or_extension),
        ("reg.1.server.1.address", f.server),
        ("reg.1.server.1.port", f.port),
        ("reg.1.server.1.transport", TRANSPORTS[f.transport]),
        ("reg.1.server.1.expires", f.register_every),
        ("msg.mwi.1.subscribe", f.extension),
        ("msg.mwi.1.callBackMode", "contact"),
        ("msg.mwi.1.callBack", f.voicemail),
        ("tcpIpApp.sntp.address", f.ntp),
        ("tcpIpApp.sntp.gmtOffset", f.timezone.offset),
        ("device.set", 1),
        ("device.dns.serverAddress.set", 1),
        ("device.dns.serverAddress", f.dns),
        ("lcl.ml.lang", "English_United_States"),
    ]
    attrs = "".join("\n    %s=%s" % (k, xml_attr(v)) for k, v in params)
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<!-- allworx: settings of the phone %s -->\n'
            '<polycomConfig>\n  <allworx%s/>\n</polycomConfig>\n'
            % (f.mac, attrs)).encode("utf-8")
