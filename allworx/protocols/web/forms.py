# -*- test-case-name: allworx.tests.web.test_pages -*-
"""
The admin pages' forms as data: which keys each form edits, how a submitted
form becomes `{section: {key: text}}`, and how `ConfigErrors` map back onto
the fields so the page can mark them.
"""

import attr

from allworx.config import SECURITY_MODES, WAN_MODES
from allworx.protocols.web.changes import pin_state, record_values, settings_values, shown_values


@attr.s(frozen=True, slots=True)
class Field:
    """One input of a form: `name` is `section.key` (settings) or `key` (records)."""

    name = attr.ib()
    label = attr.ib()
    kind = attr.ib(default="text")     # text | checkbox | select | textarea | password
    choices = attr.ib(default=())
    help = attr.ib(default="")

    @property
    def section(self):
        return self.name.partition(".")[0] if "." in self.name else None

    @property
    def key(self):
        return self.name.partition(".")[2] if "." in self.name else self.name


F = Field

NETWORK = (
    F("system.hostname", "Server name", help="The server's own name in the domain."),
    F("system.domain", "Domain", help="The office's DNS and mail domain, e.g. example.com."),
    F("system.admin_email", "Administrator's e-mail"),
    F("lan.interface", "LAN interface"),
    F("lan.address", "LAN address", help="The server's address and prefix on the LAN, e.g. 192.168.2.254/24."),
    F("lan.gateway", "LAN gateway", help="Only in lan-only mode: the LAN's own router."),
    F("wan.mode", "WAN address from", "select", WAN_MODES,
      help="static: entered below; dhcp: from the ISP; disabled: no WAN."),
    F("wan.interface", "WAN interface"),
    F("wan.address", "WAN address", help="For static mode, with prefix: 203.0.113.2/24."),
    F("wan.gateway", "WAN gateway", help="For static mode: the ISP's router."),
)

SECURITY = (
    F("security.mode", "Security mode", "select", SECURITY_MODES,
      help="lan-only: no WAN routing; router: no NAT; firewall-nat: SPI firewall with NAT; "
           "firewall-nat-dmz: also hide the server's own ports except those below."),
    F("security.dmz_open", "Ports open in DMZ mode", help="e.g. 25/tcp 80/tcp 5060/udp"),
)

DHCP = (
    F("dhcp.enabled", "DHCP server on", "checkbox"),
    F("dhcp.range", "Address range", help="Host numbers (1-100) or addresses (192.168.2.1-192.168.2.100)."),
    F("dhcp.lease_time", "Lease time", help="Seconds, or 12h, 1d."),
)

DNS = (
    F("dns.enabled", "DNS server on", "checkbox"),
    F("dns.use_forwarders", "Use forwarders", "checkbox",
      help="Off: stand-alone, answer only from the office zone."),
    F("dns.primary", "Primary DNS server", help="The ISP's DNS server, entered by hand."),
    F("dns.secondary", "Secondary DNS server"),
)

SERVICES = (
    F("mail.enabled", "Mail server on", "checkbox"),
    F("mail.relay_from_wan", "Relay for hosts on the Internet", "checkbox",
      help="Almost never wanted: makes the server an open relay."),
    F("mail.smarthost", "Smarthost", help="host[:port] of the ISP's mail server, or empty."),
    F("mail.max_message_size", "Largest message", help="e.g. 25M"),
    F("mail.fetch_interval", "POP3 fetch interval", help="e.g. 5m"),
    F("pop3.enabled", "POP3 server on", "checkbox"),
    F("pop3.wan", "POP3 on the WAN too", "checkbox"),
    F("sip.enabled", "Phone system on", "checkbox"),
    F("sip.voicemail_timeout", "Seconds of ringing before voicemail"),
    F("sip.voicemail_number", "Voicemail number"),
    F("sip.rtp_ports", "RTP ports"),
    F("ldap.enabled", "LDAP address book on", "checkbox"),
    F("ntp.enabled", "Time server on", "checkbox"),
    F("web.admin_port", "Admin pages port"),
    F("web.http_port", "Web sites port"),
)

RECORD_FIELDS = {
    "forward": (F("name", "Name"), F("proto", "Protocol", "select", ("tcp", "udp")),
                F("wan_port", "WAN port"), F("to", "To (LAN address or host[:port])")),
    "host": (F("name", "Name"), F("mac", "MAC address"), F("address", "Address")),
    "record": (F("name", "Name", help="@ for the domain itself"), F("a", "A (addresses)"),
               F("mx", "MX (priority host, ...)"), F("cname", "CNAME"), F("txt", "TXT")),
    "alias": (F("name", "Alias"), F("to", "Delivers to", help="Users, aliases, outside addresses")),
    "user": (F("name", "User name"), F("full_name", "Full name"),
             F("password", "Password", "password",
               help="Required for a new user; when editing, leave empty to keep the current one."),
             F("extension", "Extension"),
             F("voicemail_pin", "Voicemail PIN", "password",
               help="4 to 10 digits, stored hashed; when editing, leave empty to keep the "
                    "current one."),
             F("email_forward", "Forward mail to"),
             F("pop3_fetch", "POP3 accounts to fetch", "textarea",
               help="One per line: pop3://user:password@host[:port] or pop3s://...")),
}


def current_settings(office, fields):
    """The current text of each settings field, by field name."""
    out = {}
    cache = {}
    for f in fields:
        if f.section not in cache:
            cache[f.section] = settings_values(office, f.section)
        out[f.name] = cache[f.section].get(f.key, "")
    return out


def current_record(office, kind, name):
    """The current text of each field of a record (password, PIN and secrets never shown)."""
    values = shown_values(record_values(office, kind, name), kind)
    values["name"] = name
    if kind == "user":
        values["voicemail_pin"] = pin_state(office.config.users[name])
    return values


def settings_changes(fields, form):
    """
    A submitted settings form -> `{section: {key: text}}`. An unticked
    checkbox is absent from a form, so it means "no".
    """
    out = {}
    for f in fields:
        if f.kind == "checkbox":
            value = "yes" if form.get(f.name) else "no"
        elif f.name in form:
            value = form[f.name]
        else:
            continue
        out.setdefault(f.section, {})[f.key] = value
    return out


def record_changes(kind, form):
    """A submitted record form -> (name, {key: text}) without the name."""
    values = {}
    for f in RECORD_FIELDS[kind]:
        if f.name != "name" and f.name in form:
            values[f.name] = form[f.name]
    return form.get("name", "").strip(), values


@attr.s(slots=True)
class FormState:
    """A form sent back with errors: what was typed, and what was wrong where."""

    action = attr.ib()
    values = attr.ib(factory=dict)
    errors = attr.ib(factory=dict)      # field name -> message
    general = attr.ib(factory=list)     # every message, for the summary at the top


def describe(error):
    """One ConfigError as a sentence for a person."""
    where = []
    if error.section:
        where.append("[%s]" % error.section)
    if error.key:
        where.append(error.key)
    return ("%s: %s" % (" ".join(where), error.message)) if where else error.message


def form_errors(action, values, errors, record_section=None):
    """
    A FormState for `errors` (ConfigError list). In a record form, errors of
    that record mark its keys (and a nameless one marks the name); in a
    settings form an error marks `section.key`.
    """
    state = FormState(action, dict(values))
    for e in errors:
        state.general.append(describe(e))
        if record_section is not None:
            if e.section == record_section:
                state.errors.setdefault(e.key or "name", e.message)
        elif e.section and e.key:
            state.errors.setdefault("%s.%s" % (e.section, e.key), e.message)
    return state
