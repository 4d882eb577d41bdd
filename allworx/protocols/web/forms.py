# -*- test-case-name: allworx.tests.web.test_pages -*-
"""
The admin pages' forms as data: which keys each form edits, how a submitted
form becomes `{section: {key: text}}`, and how `ConfigErrors` map back onto
the fields so the page can mark them.
"""

import attr

from allworx.config import (
    RECORD_SECTIONS, REQUIRED, SECURITY_MODES, WAN_MODES, format_value, keys_of, parse_bool)
from allworx.protocols.web.changes import (
    file_texts, pin_state, record_texts, record_values, settings_values, shown_values,
    worded_values)


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
    F("ntp.servers", "Upstream time servers",
      help="Host names or addresses, space separated, that the server polls itself; "
           "empty: it serves the host clock (Status page: Time server)."),
    F("web.admin_port", "Admin pages port"),
    F("web.http_port", "Web sites port"),
)

# The phone system's dialling rules and remote phones (SPEC 15), on the Phone lines page.
DIALLING = (
    F("sip.outbound_prefix", "Outside line prefix",
      help="Dialled before an outside number (default 9); 911, 112 and 999 need none."),
    F("sip.operator", "Operator extension",
      help="Where 0 and calls nobody else takes go; empty: the lowest extension of an admin."),
    F("sip.country_code", "Country code", help="The office's country calling code (default 1)."),
    F("sip.national_prefix", "National prefix",
      help="Dialled before a national number (default 1); none if the country has none."),
    F("sip.international_prefix", "International prefix",
      help="Dialled before a country code (default 011)."),
    F("sip.wan", "Phones may register from the internet", "checkbox",
      help="For people working from home: their phones register over UDP, TCP or TLS."),
    F("sip.tls_port", "TLS port for remote phones", help="Default 5061."),
)

TARGET_HELP = "An extension, the name of a ring group or attendant, or voicemail EXT."

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
               help="One per line: pop3://user:password@host[:port] or pop3s://..."),
             F("outside", "May call outside numbers", "checkbox"),
             F("forward_always", "Forward every call to",
               help="An extension, or an outside number as dialled (9 then the number) or "
                    "+E.164; empty: no forwarding."),
             F("forward_busy", "Forward when busy to"),
             F("forward_noanswer", "Forward when not answered to"),
             F("dnd", "Do not disturb", "checkbox", help="Calls go straight to voicemail."),
             F("admin", "Admin", "checkbox", help="May use these admin pages and the API.")),
    "trunk": (F("name", "Name", help="A short name: letters, digits, '.', '_', '-'."),
              F("registrar", "Provider's server",
                help="host[:port] of the provider's registrar, e.g. sip.provider.example"),
              F("username", "Account (user name)"),
              F("auth_username", "Authentication user name",
                help="Only if the provider gives one apart from the account."),
              F("secret", "Password", "password",
                help="The provider's password for the account. Never shown: when editing, "
                     "leave empty to keep the stored one."),
              F("transport", "Transport", "select", ("udp", "tcp", "tls")),
              F("outbound_proxy", "Outbound proxy",
                help="host[:port], only if the provider asks for one."),
              F("expires", "Registration lasts", help="Seconds, or 30m, 1h (default 3600)."),
              F("register", "Register with the provider", "checkbox",
                help="Off for a provider that sends calls to the WAN address unregistered."),
              F("numbers", "Numbers",
                help="The trunk's numbers, E.164, space separated: +15551230000 +15551230001"),
              F("caller_id", "Caller ID", help="Shown on calls out; empty: the first number."),
              F("channels", "Channels", help="Calls at once (default 4)."),
              F("number_format", "Numbers sent as", "select", ("e164", "national"))),
    "number": (F("name", "Number", help="E.164: + then the country code and number, "
                                        "like +15551230000."),
               F("to", "Calls go to", help=TARGET_HELP + " Empty: the operator.")),
    "group": (F("name", "Name", help="Usable as a call target, e.g. sales."),
              F("number", "Number", help="Dialled like an extension."),
              F("members", "Members", help="Extensions, space separated, in hunt order."),
              F("strategy", "Strategy", "select", ("ring-all", "hunt"),
                help="ring-all: every phone at once; hunt: one after another."),
              F("ring_timeout", "Ring for", help="Seconds (default 20)."),
              F("fallback", "When nobody answers", help=TARGET_HELP)),
    "attendant": (F("name", "Name", help="Usable as a call target, e.g. frontdesk."),
                  F("number", "Number", help="Dialled like an extension (optional)."),
                  F("greeting", "Greeting",
                    help="Text the attendant speaks, or a WAV file under the data directory."),
                  ) + tuple(F("key_%d" % d, "Key %d" % d,
                              help="Empty: the operator." if d == 0 else "")
                            for d in range(10)) + (
                  F("timeout", "Wait for a key", help="Seconds (default 10)."),
                  F("fallback", "When no key is pressed", help=TARGET_HELP),
                  F("hours", "Opening hours",
                    help="Like mon-fri 08:30-17:30 (commas between spans); empty: always open."),
                  F("after_hours", "Outside the hours", help=TARGET_HELP)),
}


def current_settings(office, fields):
    """The current text of each settings field, by field name, in the file's own words."""
    out = {}
    cache = {}
    for f in fields:
        if f.section not in cache:
            cache[f.section] = worded_values(settings_values(office, f.section),
                                             file_texts(office, f.section))
        out[f.name] = cache[f.section].get(f.key, "")
    return out


def current_record(office, kind, name):
    """
    The current text of each field of a record, in the file's own words
    (password, PIN and secrets never shown).
    """
    values = worded_values(record_values(office, kind, name), record_texts(office, kind, name))
    values = shown_values(values, kind)
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


def default_record(kind):
    """The text of each key of a new record: its default ("" for a required or empty one)."""
    cls = RECORD_SECTIONS[kind]
    return {f.name: "" if f.default is REQUIRED else format_value(cls, f.name, f.default)
            for f in keys_of(cls)}


def record_changes(kind, form, fields=None):
    """
    A submitted record form -> (name, {key: text}) without the name. An
    unticked checkbox is absent from a form, so it means "no".
    """
    values = {}
    for f in fields if fields is not None else RECORD_FIELDS[kind]:
        if f.name == "name":
            continue
        if f.kind == "checkbox":
            values[f.name] = "yes" if form.get(f.name) else "no"
        elif f.name in form:
            values[f.name] = form[f.name]
    return form.get("name", "").strip(), values


def same_text(field, shown, sent):
    """
    Whether a submitted field says what the form showed: the same words
    (spacing around them aside), the same yes/no of a checkbox, or an empty
    password field (which keeps the stored secret).
    """
    if field.kind == "password":
        return not sent.strip()
    if field.kind == "checkbox":
        try:
            return parse_bool(shown or "no") == parse_bool(sent or "no")
        except ValueError:
            return False
    return shown.strip() == sent.strip()


def changed_values(fields, shown, sent):
    """`{key: text}` of the submitted fields (`sent`) that differ from what was `shown`."""
    out = {}
    for f in fields:
        if f.key in sent and not same_text(f, shown.get(f.key, ""), sent[f.key]):
            out[f.key] = sent[f.key]
    return out


def changed_settings(office, fields, form):
    """
    `{section: {key: text}}` of a settings form's fields that differ from what
    the page showed (the file's words, else the default): a form saved as
    shown changes nothing, and a key the file leaves out stays out.
    """
    current = current_settings(office, fields)
    out = {}
    for section, sent in settings_changes(fields, form).items():
        mine = [f for f in fields if f.section == section]
        shown = {f.key: current[f.name] for f in mine}
        values = changed_values(mine, shown, sent)
        if values:
            out[section] = values
    return out


def section_changes(office, fields, section, form):
    """`{key: text}` of one section's settings form (`fields`) that differ from what the page showed."""
    return changed_settings(office, fields, form).get(section, {})


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
