# -*- test-case-name: allworx.tests.core.test_config, allworx.tests.core.test_config_outside -*-
"""
tap.conf as a validated model.

Each section is a frozen attrs class whose fields are the section's keys; a
field's metadata names the function that reads it from text (and raises
ValueError with a sentence saying what is wrong) and the one that writes it back.
`Config` holds every section and the derived facts several services need.
"""

import re

import attr

from allworx.config.values import (
    HOST_LABEL, checked, format_bool, format_fetch_urls, format_forward_target, format_hostport,
    format_ports_list, format_range, format_sip_digest, format_words, parse_bool,
    parse_choice, parse_cidr, parse_digits, parse_domain, parse_duration, parse_email,
    parse_fetch_urls, parse_forward_target, parse_fqdn, parse_hostname, parse_hostport,
    parse_ip, parse_ip_list, parse_mac, parse_mx_list, parse_optional, parse_password_hash,
    parse_pin, parse_pool_range, parse_token, parse_port, parse_port_range, parse_ports_list, parse_sip_digest_key,
    parse_size, parse_words, parse_score, format_score, parse_dkim_selector,
    parse_dnsbl_zones, parse_socket_path, parse_duration_or_off, format_duration_or_off, TARGET_NAME, Target, format_target, parse_int, parse_int_or_off, parse_target)
from allworx.config.telephony import (
    E164, format_call_forward, format_hours, format_national_prefix, format_sip_hostport,
    parse_call_forward, parse_e164, parse_e164_list, parse_extension_list, parse_hours,
    parse_national_prefix, parse_secret, parse_sip_hostport, parse_sip_user)
from allworx.config.phones import (
    MAC_HINT, MAC_NOTATION, normalise_mac, parse_phone_label, parse_phone_model)
from allworx.config.vpn import (
    format_endpoint, format_extension_ranges, format_networks, parse_endpoint,
    parse_extension_ranges, parse_interface_name, parse_networks, parse_wg_key)

REQUIRED = attr.NOTHING


# ---------------------------------------------------------------- the model

def key(parse, default=REQUIRED, fmt=str, doc="", shown=True):
    """
    A config key: how to read it, its default, how to write it back. Every
    key's reader first refuses what no value of tap.conf can hold (line
    breaks, other control characters, ` #`: `values.check_value_text`), so
    the file, the pages, the API and the command line get the same check.
    `shown=False` keeps a secret out of the model's repr (and so of logs).
    """
    return attr.ib(default=default, repr=shown,
                   metadata={"parse": checked(parse), "format": fmt, "doc": doc})


def optional(parse, fmt=str, doc=""):
    """An optional key: empty text is None, None is written as empty text."""
    return key(parse_optional(parse), None, fmt=lambda v: fmt(v) if v is not None else "", doc=doc)


SECURITY_MODES = ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")
WAN_MODES = ("static", "dhcp", "disabled")


@attr.s(frozen=True, slots=True)
class SystemSettings:
    domain = key(parse_domain, doc="the office's DNS and mail domain")
    hostname = key(parse_hostname, "allworx", doc="the server's own name")
    data_dir = key(str, "/var/lib/allworx", doc="leases, mail, greetings, state")
    admin_email = key(parse_optional(parse_email), None, fmt=lambda v: v or "")
    backup_every = key(parse_duration_or_off(3600, 366 * 86400), 0, fmt=format_duration_or_off,
                       doc="how often a backup is written to data_dir/backups (off, or 1h-366d)")
    backup_keep = key(parse_int(1, 1000), 7, doc="how many backups data_dir/backups keeps")


@attr.s(frozen=True, slots=True)
class LanSettings:
    interface = key(str)
    address = key(parse_cidr)
    gateway = key(parse_optional(parse_ip), None, fmt=lambda v: str(v or ""),
                  doc="the LAN's router in lan-only mode")


@attr.s(frozen=True, slots=True)
class WanSettings:
    mode = key(parse_choice(WAN_MODES), "disabled")
    interface = key(str, "")
    address = key(parse_optional(parse_cidr), None, fmt=lambda v: str(v or ""))
    gateway = key(parse_optional(parse_ip), None, fmt=lambda v: str(v or ""))
    upload_kbit = key(parse_int_or_off(64, 10000000), 0,
                      doc="the uplink's speed in kbit/s: shapes the WAN with voice first; 0 = off")


@attr.s(frozen=True, slots=True)
class SecuritySettings:
    mode = key(parse_choice(SECURITY_MODES), "firewall-nat")
    dmz_open = key(parse_ports_list, (), fmt=format_ports_list)


@attr.s(frozen=True, slots=True)
class DhcpSettings:
    enabled = key(parse_bool, True, fmt=format_bool)
    range = key(parse_pool_range, (1, 100), fmt=format_range)
    lease_time = key(parse_duration(60, 365 * 86400), 86400)
    client_rate = key(parse_int(0, 10000), 10,
                      doc="packets a second each client (MAC) may send, bursts of three times "
                          "that; 0 = no limit")


@attr.s(frozen=True, slots=True)
class DnsSettings:
    enabled = key(parse_bool, True, fmt=format_bool)
    primary = key(parse_optional(parse_ip), None, fmt=lambda v: str(v or ""))
    secondary = key(parse_optional(parse_ip), None, fmt=lambda v: str(v or ""))
    use_forwarders = key(parse_bool, True, fmt=format_bool)
    port = key(parse_port, 53)
    wan_view = key(parse_choice(("public", "all")), "public",
                   doc="what the WAN sees of the zone: public names only, or all of them")


@attr.s(frozen=True, slots=True)
class MailSettings:
    enabled = key(parse_bool, True, fmt=format_bool)
    relay_from_wan = key(parse_bool, False, fmt=format_bool)
    smarthost = key(parse_optional(parse_hostport(25)), None,
                    fmt=lambda v: format_hostport(v) if v else "")
    max_message_size = key(parse_size, 10 * 1024 * 1024)
    fetch_interval = key(parse_duration(10, 86400), 300)
    smtp_port = key(parse_port, 25)
    submission_port = key(parse_port, 587)
    submissions_port = key(parse_int(0, 65535), 465,
                           doc="implicit-TLS submission (RFC 8314); 0 turns it off")
    # Mail authentication and spam (SPEC 18).
    dkim_selector = key(parse_dkim_selector, "allworx",
                        doc="DKIM selector of the RSA key; the ed25519 key is SELECTOR-ed25519")
    dnsbl = key(parse_dnsbl_zones, (), fmt=format_words, doc="DNSBL zones asked about WAN clients")
    greylist = key(parse_bool, False, fmt=format_bool,
                   doc="greylist unknown WAN senders (a retry is accepted)")
    spam_threshold = key(parse_score(), 5.0, fmt=format_score, doc="score from which mail goes to Junk")
    spam_reject = key(parse_score(), 15.0, fmt=format_score, doc="score from which mail is refused")
    rspamd = optional(parse_hostport(11333), fmt=format_hostport,
                      doc="rspamd's HTTP address: its verdict replaces the built-in score")
    clamd = optional(parse_socket_path, doc="clamd's unix socket: attachments are scanned")


@attr.s(frozen=True, slots=True)
class Pop3Settings:
    enabled = key(parse_bool, True, fmt=format_bool)
    wan = key(parse_bool, False, fmt=format_bool)
    port = key(parse_port, 110)
    pop3s_port = key(parse_port, 995)


@attr.s(frozen=True, slots=True)
class ImapSettings:
    enabled = key(parse_bool, True, fmt=format_bool)
    wan = key(parse_bool, False, fmt=format_bool)
    port = key(parse_port, 143)
    imaps_port = key(parse_port, 993)


@attr.s(frozen=True, slots=True)
class SipSettings:
    enabled = key(parse_bool, True, fmt=format_bool)
    voicemail_timeout = key(parse_duration(1, 600), 20)
    voicemail_number = key(parse_digits(2, 8), "400")
    rtp_ports = key(parse_port_range, (10000, 20000), fmt=format_range)
    port = key(parse_port, 5060)
    # Outside lines (SPEC 15).
    outbound_prefix = key(parse_digits(1, 2), "9", doc="dialled before an outside number")
    operator = optional(parse_digits(2, 8),
                        doc="the extension 0 and unroutable calls reach; default the lowest")
    country_code = key(parse_digits(1, 3), "1", doc="the office's country calling code")
    national_prefix = key(parse_national_prefix, "1", fmt=format_national_prefix,
                          doc="dialled before a national number (none: no prefix)")
    international_prefix = key(parse_digits(2, 4), "011", doc="dialled before a country code")
    wan = key(parse_bool, False, fmt=format_bool, doc="phones may register from the internet")
    tls_port = key(parse_port, 5061)


@attr.s(frozen=True, slots=True)
class WebSettings:
    # The old story's admin login (user `admin`): still accepted, with a
    # warning; the first change through the pages or API moves it to
    # `[user admin]` with `admin = yes` (SPEC 10).
    admin_password = key(parse_optional(parse_password_hash), None, fmt=lambda v: v or "",
                         shown=False, doc="obsolete: the admin is a user with admin = yes")
    # A Prometheus scraper's `Authorization: Bearer TOKEN` for /metrics (SPEC 11).
    metrics_token = key(parse_optional(parse_token), None, fmt=lambda v: v or "", shown=False,
                        doc="a bearer token for /metrics (16 or more characters); never shown")
    admin_port = key(parse_port, 8080)
    http_port = key(parse_port, 80)


def parse_acme_url(text):
    """An ACME directory URL (http:// or https://), or empty."""
    text = text.strip()
    if text and not re.match(r"^https?://[^\s/]+(/\S*)?$", text):
        raise ValueError("expected an http:// or https:// URL, got %r" % text)
    return text


@attr.s(frozen=True, slots=True)
class TlsSettings:
    acme_directory = key(parse_acme_url, "", doc="URL of an ACME directory; empty: the server's own CA")
    acme_email = key(parse_optional(parse_email), None, fmt=lambda v: v or "", doc="the contact address given to the ACME CA")


@attr.s(frozen=True, slots=True)
class LdapSettings:
    enabled = key(parse_bool, True, fmt=format_bool)
    port = key(parse_port, 389)


MAX_TIME_SERVERS = 8


def parse_time_servers(text):
    """`[ntp] servers`: host names or IPv4 addresses, space separated (at most 8)."""
    out = []
    for word in text.split():
        if re.match(r"^[0-9.]+$", word):
            out.append(str(parse_ip(word)))
        else:
            out.append(parse_fqdn(word))
    if len(out) > MAX_TIME_SERVERS:
        raise ValueError("%d time servers named; at most %d are polled"
                         % (len(out), MAX_TIME_SERVERS))
    if len(set(out)) != len(out):
        raise ValueError("%r names a time server twice" % text)
    return tuple(out)


@attr.s(frozen=True, slots=True)
class NtpSettings:
    enabled = key(parse_bool, True, fmt=format_bool)
    port = key(parse_port, 123)
    servers = key(parse_time_servers, (), fmt=format_words,
                  doc="upstream time servers the server polls itself (SNTP), space separated; "
                      "none: it answers from the host clock")


@attr.s(frozen=True, slots=True)
class User:
    """One person: mailbox, extension, voicemail, fetch accounts, directory entry."""

    name = attr.ib()
    password = key(parse_password_hash, shown=False)
    full_name = key(str, "")
    extension = key(parse_optional(parse_digits(2, 8)), None, fmt=lambda v: v or "")
    # Stored as an argon2 hash (the server hashes a typed PIN at its next
    # write); the pages and the API set it and never show it.
    voicemail_pin = key(parse_optional(parse_pin), None, fmt=lambda v: v or "", shown=False,
                        doc="4 to 10 digits; stored hashed, never shown")
    email_forward = key(parse_optional(parse_email), None, fmt=lambda v: v or "")
    pop3_fetch = key(parse_fetch_urls, (), fmt=format_fetch_urls)
    # H(extension:domain:password) for SIP digest; written with the password
    # by `allworx passwd --sip EXT@DOMAIN` and by the admin pages and API.
    sip_digest = key(parse_optional(parse_sip_digest_key), None, fmt=format_sip_digest,
                     shown=False)
    # Call handling (SPEC 15).
    outside = key(parse_bool, True, fmt=format_bool, doc="may call outside numbers")
    forward_always = optional(parse_call_forward, format_call_forward,
                              doc="an extension, or an outside number as dialled or +E.164")
    forward_busy = optional(parse_call_forward, format_call_forward)
    forward_noanswer = optional(parse_call_forward, format_call_forward)
    dnd = key(parse_bool, False, fmt=format_bool, doc="do not disturb: calls go to voicemail")
    admin = key(parse_bool, False, fmt=format_bool, doc="may use the admin pages and the API")


@attr.s(frozen=True, slots=True)
class Alias:
    """A mail address of the domain that expands to users and outside addresses."""

    name = attr.ib()
    to = key(parse_words, fmt=format_words)


@attr.s(frozen=True, slots=True)
class Host:
    """
    A device's name, bound to its MAC: with an `address`, a DHCP reservation
    that is also a DNS name; without one, a named dynamic client whose name
    follows whatever address that MAC's lease holds (SPEC 1, 3).
    """

    name = attr.ib()
    mac = key(parse_mac)
    address = key(parse_optional(parse_ip), None, fmt=lambda v: str(v or ""))


@attr.s(frozen=True, slots=True)
class Record:
    """Static DNS records for one name of the zone (`@` is the domain itself)."""

    name = attr.ib()
    a = key(parse_ip_list, (), fmt=lambda v: " ".join(map(str, v)))
    mx = key(parse_mx_list, (), fmt=lambda v: ", ".join("%d %s" % m for m in v))
    cname = key(parse_optional(parse_fqdn), None, fmt=lambda v: v or "")
    txt = key(str, "")


@attr.s(frozen=True, slots=True)
class Forward:
    """A LAN device's service made visible on a WAN port (guide 4.3)."""

    name = attr.ib()
    wan_port = key(parse_port)
    to = key(parse_forward_target, fmt=format_forward_target)
    proto = key(parse_choice(("tcp", "udp")), "tcp")

    @property
    def to_port(self):
        return self.to[1] if self.to[1] is not None else self.wan_port


@attr.s(frozen=True, slots=True)
class Trunk:
    """An account at an internet telephony provider: the office's outside line."""

    name = attr.ib()
    registrar = key(parse_sip_hostport, fmt=format_sip_hostport, doc="the provider's host[:port]")
    username = key(parse_sip_user)
    secret = key(parse_secret, doc="the provider's password; never shown", shown=False)
    auth_username = optional(parse_sip_user, doc="default the username")
    transport = key(parse_choice(("udp", "tcp", "tls")), "udp")
    outbound_proxy = optional(parse_sip_hostport, format_sip_hostport)
    expires = key(parse_duration(60, 86400), 3600)
    register = key(parse_bool, True, fmt=format_bool,
                   doc="no: the provider sends calls to the WAN address unregistered")
    numbers = key(parse_e164_list, (), fmt=format_words, doc="the trunk's numbers, E.164")
    caller_id = optional(parse_e164, doc="shown on outbound calls; default the first number")
    channels = key(parse_int(1, 1000), 4, doc="concurrent calls")
    number_format = key(parse_choice(("e164", "national")), "e164")

    @property
    def auth_user(self):
        """The name the trunk answers digest challenges with."""
        return self.auth_username or self.username

    @property
    def presented_id(self):
        """The number (or name) outbound calls show."""
        return self.caller_id or (self.numbers[0] if self.numbers else self.username)

    @property
    def proxy(self):
        """(host, port) the trunk's requests go to: its outbound proxy, else the registrar."""
        host, port = self.outbound_proxy or self.registrar
        if port is None:
            port = 5061 if self.transport == "tls" else 5060
        return (host, port)


@attr.s(frozen=True, slots=True)
class Number:
    """One of the office's outside numbers (E.164, the section's name)."""

    name = attr.ib()
    to = optional(parse_target, format_target, doc="TARGET; empty: the operator")


@attr.s(frozen=True, slots=True)
class Group:
    """A ring group: a number that rings several extensions."""

    name = attr.ib()
    number = key(parse_digits(2, 8), doc="dialled like an extension")
    members = key(parse_extension_list, (), fmt=format_words, doc="extensions, in hunt order")
    strategy = key(parse_choice(("ring-all", "hunt")), "ring-all")
    ring_timeout = key(parse_duration(1, 600), 20)
    fallback = optional(parse_target, format_target, doc="TARGET when nobody answers")


def _menu_key(digit):
    return optional(parse_target, format_target, doc="TARGET for the key %d" % digit)


@attr.s(frozen=True, slots=True)
class Attendant:
    """An auto attendant: a greeting and a menu of keys."""

    name = attr.ib()
    number = optional(parse_digits(2, 8), doc="dialled like an extension")
    greeting = key(str, "", doc="text spoken by espeak-ng, or a WAV under data_dir")
    key_0 = _menu_key(0)
    key_1 = _menu_key(1)
    key_2 = _menu_key(2)
    key_3 = _menu_key(3)
    key_4 = _menu_key(4)
    key_5 = _menu_key(5)
    key_6 = _menu_key(6)
    key_7 = _menu_key(7)
    key_8 = _menu_key(8)
    key_9 = _menu_key(9)
    timeout = key(parse_duration(1, 120), 10)
    fallback = optional(parse_target, format_target, doc="TARGET when no key is pressed")
    hours = optional(parse_hours, format_hours, doc="like mon-fri 08:30-17:30")
    after_hours = optional(parse_target, format_target, doc="TARGET outside the hours")

    def menu(self):
        """{digit: TARGET} of the keys that have one."""
        return {str(d): getattr(self, "key_%d" % d) for d in range(10)
                if getattr(self, "key_%d" % d) is not None}


@attr.s(frozen=True, slots=True)
class VpnSettings:
    """The WireGuard tunnel of sites and remote access (SPEC 16)."""

    enabled = key(parse_bool, False, fmt=format_bool)
    interface = key(parse_interface_name, "awg0",
                    doc="two servers on one machine need two names")
    port = key(parse_port, 51820, doc="the UDP port WireGuard listens on")
    address = optional(parse_cidr, doc="this server's tunnel address, like 192.168.99.1/24")
    endpoint = optional(parse_endpoint, format_endpoint,
                        doc="host[:port] that devices dial; default the WAN address")


@attr.s(frozen=True, slots=True)
class Site:
    """Another office, joined through the tunnel."""

    name = attr.ib()
    public_key = key(parse_wg_key, doc="its server's WireGuard public key (base64)")
    address = key(parse_ip, doc="its server's tunnel address, no prefix")
    endpoint = optional(parse_endpoint, format_endpoint,
                        doc="host:port to dial; empty on the side that is dialled")
    networks = key(parse_networks, (), fmt=format_networks, doc="its LAN CIDRs")
    extensions = key(parse_extension_ranges, (), fmt=format_extension_ranges,
                     doc="the extensions it serves, like 200-299")
    domain = optional(parse_domain, doc="its DNS domain")


@attr.s(frozen=True, slots=True)
class Device:
    """A remote user's laptop or phone on the tunnel."""

    name = attr.ib()
    user = key(str.strip, doc="the owner: a [user]")
    address = key(parse_ip, doc="its tunnel address, no prefix")
    public_key = optional(parse_wg_key, doc="empty: the server makes the key pair")


@attr.s(frozen=True, slots=True)
class ProvisioningSettings:
    """The service phones fetch their configuration from (SPEC 19), LAN only."""

    enabled = key(parse_bool, True, fmt=format_bool)
    port = key(parse_port, 8089, doc="HTTP; HTTPS on the next port once certificates exist")


@attr.s(frozen=True, slots=True)
class Phone:
    """A desk phone that configures itself, named by its MAC (any common notation)."""

    name = attr.ib()
    user = key(str.strip, doc="the owner: a [user]; the phone registers as his extension")
    model = optional(parse_phone_model,
                     doc="yealink, polycom, grandstream, snom, cisco-spa or generic; "
                         "empty: guessed from the DHCP vendor class or the User-Agent")
    label = key(parse_phone_label, "", doc="shown on the phone's screen")

    @property
    def mac(self):
        """The MAC as 12 lowercase hex digits, whatever the section's notation."""
        return normalise_mac(self.name)


SETTINGS_SECTIONS = {
    "system": SystemSettings, "lan": LanSettings, "wan": WanSettings,
    "security": SecuritySettings, "dhcp": DhcpSettings, "dns": DnsSettings,
    "mail": MailSettings, "pop3": Pop3Settings, "imap": ImapSettings,
    "sip": SipSettings,
    "web": WebSettings, "ldap": LdapSettings, "ntp": NtpSettings, "tls": TlsSettings,
    "vpn": VpnSettings, "provisioning": ProvisioningSettings,
}
RECORD_SECTIONS = {
    "user": User, "alias": Alias, "host": Host, "record": Record, "forward": Forward,
    "trunk": Trunk, "number": Number, "group": Group, "attendant": Attendant,
    "site": Site, "device": Device, "phone": Phone,
}
# The attribute of Config that holds each kind of record.
RECORD_PLURALS = {
    "user": "users", "alias": "aliases", "host": "hosts", "record": "records",
    "forward": "forwards", "trunk": "trunks", "number": "numbers", "group": "groups",
    "attendant": "attendants", "site": "sites", "device": "devices", "phone": "phones",
}
# Names of the zone the server itself defines (guide 10; the last four for
# mail clients' automatic set-up, SPEC 17).
BUILTIN_NAMES = ("www", "corp", "admin", "lan", "wan", "smtp", "pop",
                 "imap", "mail", "autoconfig", "autodiscover")

RECORD_NAME = {
    "user": re.compile(r"^[a-z][a-z0-9._-]{0,31}$"),
    "alias": re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$"),
    "host": HOST_LABEL,
    "record": re.compile(r"^(@|(?!-)[a-z0-9_-]{1,63}(\.(?!-)[a-z0-9_-]{1,63})*)$"),
    "forward": re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$"),
    "trunk": re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$"),
    "number": E164,
    "group": TARGET_NAME,
    "attendant": TARGET_NAME,
    "site": re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$"),
    "device": re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$"),
    "phone": MAC_NOTATION,
}
# What a valid name looks like, where "not a valid NAME" alone would not say.
RECORD_NAME_HINT = {
    "number": "an E.164 number: + then 8 to 15 digits, like +15551230000",
    "group": "a letter, then letters, digits, '.', '_' or '-' (at most 32)",
    "attendant": "a letter, then letters, digits, '.', '_' or '-' (at most 32)",
    "phone": MAC_HINT,
}


def keys_of(cls):
    """The config keys of a model class, in file order."""
    return [f for f in attr.fields(cls) if "parse" in f.metadata]


def format_value(cls, name, value):
    """Write a model value back as the text of its key."""
    field = attr.fields_dict(cls)[name]
    return field.metadata["format"](value)


@attr.s(frozen=True, slots=True)
class Config:
    """The whole validated configuration; `doc` is the text it came from."""

    system = attr.ib()
    lan = attr.ib()
    wan = attr.ib()
    security = attr.ib()
    dhcp = attr.ib()
    dns = attr.ib()
    mail = attr.ib()
    pop3 = attr.ib()
    imap = attr.ib()
    sip = attr.ib()
    web = attr.ib()
    ldap = attr.ib()
    ntp = attr.ib()
    tls = attr.ib(default=TlsSettings())
    vpn = attr.ib(default=VpnSettings())
    provisioning = attr.ib(default=ProvisioningSettings())
    users = attr.ib(factory=dict)
    aliases = attr.ib(factory=dict)
    hosts = attr.ib(factory=dict)
    records = attr.ib(factory=dict)
    forwards = attr.ib(factory=dict)
    trunks = attr.ib(factory=dict)
    numbers = attr.ib(factory=dict)
    groups = attr.ib(factory=dict)
    attendants = attr.ib(factory=dict)
    sites = attr.ib(factory=dict)
    devices = attr.ib(factory=dict)
    phones = attr.ib(factory=dict)
    doc = attr.ib(default=None, eq=False, repr=False)
    path = attr.ib(default=None, eq=False)
    # extension -> user, made on first use: every login names a user by it
    # (SIP digest on each REGISTER), so it must not cost a scan of the users.
    _by_extension = attr.ib(default=None, init=False, eq=False, repr=False)

    # Derived facts that several services need, computed in one place.

    @property
    def lan_ip(self):
        return self.lan.address.ip

    @property
    def lan_network(self):
        return self.lan.address.network

    @property
    def pool(self):
        """(first, last) addresses of the DHCP pool."""
        return resolve_pool(self.dhcp.range, self.lan.address)

    @property
    def router_for_lan(self):
        """The gateway DHCP hands out (guide 4.3, 5)."""
        if self.security.mode == "lan-only":
            return self.lan.gateway
        return self.lan_ip

    @property
    def dns_for_lan(self):
        """The DNS servers DHCP hands out."""
        if self.security.mode == "lan-only":
            return tuple(ip for ip in (self.dns.primary, self.dns.secondary) if ip)
        if self.dns.enabled:
            return (self.lan_ip,)
        return tuple(ip for ip in (self.dns.primary, self.dns.secondary) if ip)

    @property
    def forwarding(self):
        """Whether the kernel forwards: between LAN and WAN in this mode, or to the tunnel (SPEC 16)."""
        return (self.security.mode != "lan-only" and self.wan.mode != "disabled") or self.vpn.enabled

    def is_tunnel_side(self, ip):
        """Whether `ip` (IPv4Address) is on the tunnel: its subnet or a site's networks."""
        vpn = self.vpn
        if not vpn.enabled or vpn.address is None:
            return False
        return ip in vpn.address.network or any(
            ip in net for site in self.sites.values() for net in site.networks)

    @property
    def admins(self):
        """The names of the users with `admin = yes`, sorted."""
        return sorted(u.name for u in self.users.values() if u.admin)

    def phone_by_mac(self, mac):
        """The [phone] section of a MAC (any notation), or None."""
        try:
            mac = normalise_mac(mac)
        except ValueError:
            return None
        for phone in self.phones.values():
            if phone.mac == mac:
                return phone
        return None

    def user_by_extension(self, extension):
        index = self._by_extension
        if index is None:
            index = {}
            for u in self.users.values():
                if u.extension:
                    index.setdefault(u.extension, u)
            object.__setattr__(self, "_by_extension", index)
        return index.get(extension)

    # Outside lines and call handling (SPEC 15).

    @property
    def operator_extension(self):
        """The extension that 0 and unroutable calls reach: `[sip] operator`, else the lowest."""
        if self.sip is not None and self.sip.operator:
            return self.sip.operator
        extensions = [u.extension for u in self.users.values() if u.extension]
        return min(extensions, key=lambda e: (int(e), e)) if extensions else None

    def group_by_number(self, number):
        return next((g for g in self.groups.values() if g.number == number), None)

    def attendant_by_number(self, number):
        return next((a for a in self.attendants.values() if a.number == number), None)

    def inbound_target(self, number):
        """
        Where a call to the office's E.164 `number` goes: its `[number]`'s
        TARGET resolved, else the operator's extension; None when no trunk
        has that number (or it names nothing; `allworx check` reports that).
        """
        if not any(number in t.numbers for t in self.trunks.values()):
            return None
        entry = self.numbers.get(number)
        if entry is None or entry.to is None:
            operator = self.operator_extension
            return Target("extension", operator) if operator else None
        try:
            return self.resolve_target(entry.to)
        except ValueError:
            return None

    def resolve_target(self, target):
        """
        The Target a TARGET means here: a bare name becomes the group or
        attendant of that name; digits that are a group's or an attendant's
        number become that group or attendant. Raises ValueError naming what
        is missing.
        """
        kind, value = target.kind, target.value
        if kind == "name":
            if value in self.groups:
                return Target("group", value)
            if value in self.attendants:
                return Target("attendant", value)
            raise ValueError("there is no [group %s] or [attendant %s]" % (value, value))
        if kind in ("group", "attendant"):
            if value not in getattr(self, RECORD_PLURALS[kind]):
                raise ValueError("there is no [%s %s]" % (kind, value))
            return target
        if kind == "extension":
            if self.user_by_extension(value) is not None:
                return target
            for kind, found in (("group", self.group_by_number(value)),
                                ("attendant", self.attendant_by_number(value))):
                if found is not None:
                    return Target(kind, found.name)
            raise ValueError("no user, group or attendant has the extension %s" % value)
        if kind == "voicemail" and self.user_by_extension(value) is None:
            raise ValueError("no user has the extension %s (for its voicemail)" % value)
        return target

    def with_data_dir(self, data_dir):
        return attr.evolve(self, system=attr.evolve(self.system, data_dir=data_dir))


def resolve_pool(range_, address):
    """Turn a `range` value into (first, last) addresses inside the LAN subnet."""
    net = address.network
    first, last = range_
    if net.num_addresses < 4:
        raise ValueError("the LAN %s is too small for a pool: it has no host address "
                         "besides the server's" % net)
    if isinstance(first, int):
        size = net.num_addresses
        if last >= size - 1:
            raise ValueError("host number %d is outside %s (largest is %d)"
                             % (last, net, size - 2))
        return (net.network_address + first, net.network_address + last)
    for ip in (first, last):
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            raise ValueError("%s is not a host address of the LAN %s" % (ip, net))
    if last < first:
        raise ValueError("the range %s-%s is backwards" % (first, last))
    return (first, last)
