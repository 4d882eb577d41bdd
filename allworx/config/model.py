# -*- test-case-name: allworx.tests.core.test_config -*-
"""
tap.conf as a validated model.

Each section is a frozen attrs class whose fields are the section's keys; a
field's metadata names the function that reads it from text (and raises
ValueError with a sentence saying what is wrong) and the one that writes it back.
`load_config` reads the whole file and returns a `Config`, or raises
`ConfigErrors` listing every problem with its section, key and line.
"""

import difflib
import ipaddress
import re
from urllib.parse import urlsplit, unquote

import attr

from allworx.inifile import IniDocument, IniSyntaxError

REQUIRED = attr.NOTHING


# ---------------------------------------------------------------- value readers

def parse_bool(text):
    t = text.strip().lower()
    if t in ("yes", "true", "on", "1"):
        return True
    if t in ("no", "false", "off", "0"):
        return False
    raise ValueError("expected yes or no, got %r" % text)


def format_bool(value):
    return "yes" if value else "no"


def parse_int(low=None, high=None):
    def parse(text):
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise ValueError("expected a whole number, got %r" % text)
        if low is not None and value < low or high is not None and value > high:
            raise ValueError("%d is out of range %s-%s" % (value, low, high))
        return value
    return parse


parse_port = parse_int(1, 65535)

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$", re.I)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(low=1, high=None):
    """Seconds, or a number with s/m/h/d/w: `300`, `5m`, `12h`, `1d`."""
    def parse(text):
        m = _DURATION.match(text)
        if not m:
            raise ValueError("expected a duration like 300, 5m, 12h or 1d, got %r" % text)
        value = int(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
        if value < low or high is not None and value > high:
            raise ValueError("%d seconds is out of range %s-%s" % (value, low, high))
        return value
    return parse


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)i?b?\s*$", re.I)


def parse_size(text):
    """Bytes, or with K/M/G: `10M`, `25MB`."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError("expected a size like 10M or 10485760, got %r" % text)
    value = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[m.group(2).lower()]
    if value < 1024:
        raise ValueError("a message size under 1K is not usable")
    return value


def parse_ip(text):
    try:
        return ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise ValueError("%r is not an IPv4 address" % text)


def parse_cidr(text):
    """An interface address with its prefix, `192.168.2.254/24`."""
    t = text.strip()
    if "/" not in t:
        raise ValueError("%r needs a prefix length, like 192.168.2.254/24" % text)
    try:
        iface = ipaddress.IPv4Interface(t)
    except ValueError:
        raise ValueError("%r is not an IPv4 address with prefix length" % text)
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        raise ValueError("%s is the %s address of %s, not a host address" % (
            iface.ip, "network" if iface.ip == net.network_address else "broadcast", net))
    return iface


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def parse_hostname(text):
    t = text.strip().lower()
    if not _LABEL.match(t):
        raise ValueError("%r is not a valid host name (letters, digits, hyphens)" % text)
    return t


def parse_domain(text):
    t = text.strip().lower().rstrip(".")
    labels = t.split(".")
    if len(labels) < 2 or not all(_LABEL.match(l) for l in labels) or len(t) > 253:
        raise ValueError("%r is not a valid domain name like example.com" % text)
    return t


def parse_fqdn(text):
    """A host name or a dotted name (`mail.example.net`)."""
    t = text.strip().lower().rstrip(".")
    if not t or not all(_LABEL.match(l) for l in t.split(".")):
        raise ValueError("%r is not a valid host name" % text)
    return t


_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def parse_email(text):
    t = text.strip()
    if not _EMAIL.match(t):
        raise ValueError("%r is not an e-mail address" % text)
    return t


def parse_optional(parse):
    def optional(text):
        return None if not text.strip() else parse(text)
    return optional


def parse_hostport(default_port):
    def parse(text):
        t = text.strip()
        host, sep, port = t.rpartition(":")
        if not sep:
            host, port = t, str(default_port)
        return (parse_fqdn(host), parse_port(port))
    return parse


def format_hostport(value):
    return "%s:%d" % value


_MAC = re.compile(r"^([0-9a-f]{2})([:-]?)([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$", re.I)


def parse_mac(text):
    m = _MAC.match(text.strip())
    if not m:
        raise ValueError("%r is not a MAC address like 00:0a:dd:12:34:56" % text)
    mac = ":".join(m.group(i) for i in (1, 3, 4, 5, 6, 7)).lower()
    if int(mac[:2], 16) & 1:
        raise ValueError("%s is a multicast address, not a device's MAC" % mac)
    return mac


def parse_digits(low, high):
    def parse(text):
        t = text.strip()
        if not t.isdigit() or not low <= len(t) <= high:
            raise ValueError("expected %d to %d digits, got %r" % (low, high, text))
        return t
    return parse


def parse_port_range(text):
    m = re.match(r"^\s*(\d+)\s*-\s*(\d+)\s*$", text)
    if not m:
        raise ValueError("expected a port range like 10000-20000, got %r" % text)
    low, high = parse_port(m.group(1)), parse_port(m.group(2))
    if high - low < 3:
        raise ValueError("port range %d-%d is empty or too small" % (low, high))
    return (low, high)


def format_range(value):
    return "%s-%s" % value


def parse_ports_list(text):
    """`25/tcp 80/tcp 5060/udp` -> ((25, 'tcp'), (80, 'tcp'), (5060, 'udp'))."""
    out = []
    for item in text.replace(",", " ").split():
        port, sep, proto = item.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp"):
            raise ValueError("%r: protocol must be tcp or udp" % item)
        out.append((parse_port(port), proto))
    return tuple(sorted(set(out)))


def format_ports_list(value):
    return " ".join("%d/%s" % p for p in value)


def parse_words(text):
    return tuple(text.replace(",", " ").split())


def format_words(value):
    return " ".join(value)


def parse_password_hash(text):
    t = text.strip()
    if not t.startswith("$argon2"):
        raise ValueError("expected a hash from 'allworx passwd' (starting with $argon2), "
                         "not a plain password")
    return t


@attr.s(frozen=True, slots=True)
class FetchAccount:
    """A mailbox at the ISP that the server polls for a user (guide 8.2)."""

    url = attr.ib()
    scheme = attr.ib()
    user = attr.ib()
    password = attr.ib(repr=False)
    host = attr.ib()
    port = attr.ib()

    @property
    def display(self):
        """The URL without its password, for pages and logs."""
        return "%s://%s@%s:%d" % (self.scheme, self.user, self.host, self.port)


def parse_fetch_urls(text):
    out = []
    for url in text.split():
        parts = urlsplit(url)
        if parts.scheme not in ("pop3", "pop3s"):
            raise ValueError("%r: expected pop3://user:pass@host[:port] or pop3s://..." % _hide(url))
        try:
            port = parts.port
        except ValueError:
            raise ValueError("%r has a bad port" % _hide(url))
        if not parts.hostname or not parts.username or parts.password is None:
            raise ValueError("%r needs a user, a password and a host" % _hide(url))
        out.append(FetchAccount(url, parts.scheme, unquote(parts.username),
                                unquote(parts.password), parts.hostname,
                                port or (995 if parts.scheme == "pop3s" else 110)))
    return tuple(out)


def _hide(url):
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def format_fetch_urls(value):
    return " ".join(a.url for a in value)


def parse_pool_range(text):
    """`1-100` (host numbers) or `192.168.2.1-192.168.2.100`; checked against the LAN later."""
    m = re.match(r"^\s*([0-9.]+)\s*-\s*([0-9.]+)\s*$", text)
    if not m:
        raise ValueError("expected host numbers like 1-100 or addresses like "
                         "192.168.2.1-192.168.2.100, got %r" % text)
    a, b = m.group(1), m.group(2)
    if a.isdigit() and b.isdigit():
        first, last = int(a), int(b)
        if not 1 <= first <= last:
            raise ValueError("host numbers %s-%s must be ascending from 1" % (a, b))
        return (first, last)
    return (parse_ip(a), parse_ip(b))


# ---------------------------------------------------------------- the model

def key(parse, default=REQUIRED, fmt=str, doc=""):
    """A config key: how to read it, its default, how to write it back."""
    return attr.ib(default=default, metadata={"parse": parse, "format": fmt, "doc": doc})


SECURITY_MODES = ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")
WAN_MODES = ("static", "dhcp", "disabled")


def parse_choice(choices):
    def parse(text):
        t = text.strip().lower()
        if t not in choices:
            raise ValueError("expected one of %s, got %r" % (", ".join(choices), text))
        return t
    return parse


@attr.s(frozen=True, slots=True)
class SystemSettings:
    domain = key(parse_domain, doc="the office's DNS and mail domain")
    hostname = key(parse_hostname, "allworx", doc="the server's own name")
    data_dir = key(str, "/var/lib/allworx", doc="leases, mail, greetings, state")
    admin_email = key(parse_optional(parse_email), None, fmt=lambda v: v or "")


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


@attr.s(frozen=True, slots=True)
class SecuritySettings:
    mode = key(parse_choice(SECURITY_MODES), "firewall-nat")
    dmz_open = key(parse_ports_list, (), fmt=format_ports_list)


@attr.s(frozen=True, slots=True)
class DhcpSettings:
    enabled = key(parse_bool, True, fmt=format_bool)
    range = key(parse_pool_range, (1, 100), fmt=format_range)
    lease_time = key(parse_duration(60, 365 * 86400), 86400)


@attr.s(frozen=True, slots=True)
class DnsSettings:
    enabled = key(parse_bool, True, fmt=format_bool)
    primary = key(parse_optional(parse_ip), None, fmt=lambda v: str(v or ""))
    secondary = key(parse_optional(parse_ip), None, fmt=lambda v: str(v or ""))
    use_forwarders = key(parse_bool, True, fmt=format_bool)
    port = key(parse_port, 53)


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


@attr.s(frozen=True, slots=True)
class Pop3Settings:
    enabled = key(parse_bool, True, fmt=format_bool)
    wan = key(parse_bool, False, fmt=format_bool)
    port = key(parse_port, 110)
    pop3s_port = key(parse_port, 995)


@attr.s(frozen=True, slots=True)
class SipSettings:
    enabled = key(parse_bool, True, fmt=format_bool)
    voicemail_timeout = key(parse_duration(1, 600), 20)
    voicemail_number = key(parse_digits(2, 8), "400")
    rtp_ports = key(parse_port_range, (10000, 20000), fmt=format_range)
    port = key(parse_port, 5060)


@attr.s(frozen=True, slots=True)
class WebSettings:
    admin_password = key(parse_password_hash)
    admin_port = key(parse_port, 8080)
    http_port = key(parse_port, 80)


@attr.s(frozen=True, slots=True)
class LdapSettings:
    enabled = key(parse_bool, True, fmt=format_bool)
    port = key(parse_port, 389)


@attr.s(frozen=True, slots=True)
class NtpSettings:
    enabled = key(parse_bool, True, fmt=format_bool)
    port = key(parse_port, 123)


def _parse_sip_digest(text):
    from allworx.passwords import parse_sip_digest
    return tuple(sorted(parse_sip_digest(text).items()))


def _format_sip_digest(value):
    if not value:
        return ""
    names = {"MD5": "md5", "SHA-256": "sha256"}
    return " ".join("%s:%s" % (names[k], v) for k, v in value)


@attr.s(frozen=True, slots=True)
class User:
    """One person: mailbox, extension, voicemail, fetch accounts, directory entry."""

    name = attr.ib()
    password = key(parse_password_hash)
    full_name = key(str, "")
    extension = key(parse_optional(parse_digits(2, 8)), None, fmt=lambda v: v or "")
    voicemail_pin = key(parse_optional(parse_digits(4, 10)), None, fmt=lambda v: v or "")
    email_forward = key(parse_optional(parse_email), None, fmt=lambda v: v or "")
    pop3_fetch = key(parse_fetch_urls, (), fmt=format_fetch_urls)
    # H(extension:domain:password) for SIP digest; written with the password
    # by `allworx passwd --sip EXT@DOMAIN` and by the admin pages and API.
    sip_digest = key(parse_optional(_parse_sip_digest), None, fmt=_format_sip_digest)


@attr.s(frozen=True, slots=True)
class Alias:
    """A mail address of the domain that expands to users and outside addresses."""

    name = attr.ib()
    to = key(parse_words, fmt=format_words)


@attr.s(frozen=True, slots=True)
class Host:
    """A DHCP reservation that is also a DNS name."""

    name = attr.ib()
    mac = key(parse_mac)
    address = key(parse_ip)


def parse_mx_list(text):
    """`10 mail.example.com, 20 backup.example.net` -> ((10, 'mail...'), ...)."""
    out = []
    for item in text.split(","):
        parts = item.split()
        if len(parts) == 1:
            parts = ["10"] + parts
        if len(parts) != 2:
            raise ValueError("expected 'PRIORITY HOST', got %r" % item.strip())
        out.append((parse_int(0, 65535)(parts[0]), parse_fqdn(parts[1])))
    return tuple(out)


def parse_ip_list(text):
    return tuple(parse_ip(t) for t in text.replace(",", " ").split())


@attr.s(frozen=True, slots=True)
class Record:
    """Static DNS records for one name of the zone (`@` is the domain itself)."""

    name = attr.ib()
    a = key(parse_ip_list, (), fmt=lambda v: " ".join(map(str, v)))
    mx = key(parse_mx_list, (), fmt=lambda v: ", ".join("%d %s" % m for m in v))
    cname = key(parse_optional(parse_fqdn), None, fmt=lambda v: v or "")
    txt = key(str, "")


def parse_forward_target(text):
    """`192.168.2.20`, `192.168.2.20:8080`, `camera`, `camera:80`."""
    t = text.strip()
    host, sep, port = t.rpartition(":")
    if not sep:
        host, port = t, None
    try:
        target = ipaddress.IPv4Address(host)
    except ValueError:
        target = parse_hostname(host)
    return (target, parse_port(port) if port is not None else None)


def format_forward_target(value):
    host, port = value
    return str(host) if port is None else "%s:%d" % (host, port)


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


SETTINGS_SECTIONS = {
    "system": SystemSettings, "lan": LanSettings, "wan": WanSettings,
    "security": SecuritySettings, "dhcp": DhcpSettings, "dns": DnsSettings,
    "mail": MailSettings, "pop3": Pop3Settings, "sip": SipSettings,
    "web": WebSettings, "ldap": LdapSettings, "ntp": NtpSettings,
}
RECORD_SECTIONS = {
    "user": User, "alias": Alias, "host": Host, "record": Record, "forward": Forward,
}
# Names of the zone the server itself defines (guide 10).
BUILTIN_NAMES = ("www", "corp", "admin", "lan", "wan", "smtp", "pop")

_RECORD_NAME = {
    "user": re.compile(r"^[a-z][a-z0-9._-]{0,31}$"),
    "alias": re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$"),
    "host": _LABEL,
    "record": re.compile(r"^(@|(?!-)[a-z0-9_-]{1,63}(\.(?!-)[a-z0-9_-]{1,63})*)$"),
    "forward": re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$"),
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
    sip = attr.ib()
    web = attr.ib()
    ldap = attr.ib()
    ntp = attr.ib()
    users = attr.ib(factory=dict)
    aliases = attr.ib(factory=dict)
    hosts = attr.ib(factory=dict)
    records = attr.ib(factory=dict)
    forwards = attr.ib(factory=dict)
    doc = attr.ib(default=None, eq=False, repr=False)
    path = attr.ib(default=None, eq=False)

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
        """Whether the kernel forwards between LAN and WAN in this mode."""
        return self.security.mode != "lan-only" and self.wan.mode != "disabled"

    def user_by_extension(self, extension):
        for u in self.users.values():
            if u.extension == extension:
                return u
        return None

    def with_data_dir(self, data_dir):
        return attr.evolve(self, system=attr.evolve(self.system, data_dir=data_dir))


def resolve_pool(range_, address):
    """Turn a `range` value into (first, last) addresses inside the LAN subnet."""
    net = address.network
    first, last = range_
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


# ---------------------------------------------------------------- errors

@attr.s(frozen=True, slots=True)
class ConfigError:
    """One problem in the file, pinned to a section, key and line."""

    section = attr.ib()
    key = attr.ib()
    line = attr.ib()
    message = attr.ib()

    def __str__(self):
        where = "[%s]" % self.section if self.section else "file"
        if self.key:
            where += " %s" % self.key
        if self.line:
            where = "line %d: %s" % (self.line, where)
        return "%s: %s" % (where, self.message)

    def as_dict(self):
        return {"section": self.section, "key": self.key, "line": self.line,
                "message": self.message}


class ConfigErrors(ValueError):
    """Every error found in a config, in file order."""

    def __init__(self, errors, path=None):
        self.errors = sorted(errors, key=lambda e: (e.line or 0, e.section or "", e.key or ""))
        self.path = path
        ValueError.__init__(self, self.report())

    def report(self):
        head = "%s: " % self.path if self.path else ""
        return "\n".join(head + str(e) for e in self.errors)


def _did_you_mean(word, choices):
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return "; did you mean %r?" % close[0] if close else ""


# ---------------------------------------------------------------- loading

def load_config(path, data_dir=None):
    """Read and validate the file at `path`; raises ConfigErrors."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigErrors([ConfigError(None, None, 0, "cannot read: %s" % e.strerror)], path)
    except UnicodeDecodeError as e:
        raise ConfigErrors([ConfigError(None, None, 0, "not UTF-8 text: %s" % e)], path)
    return parse_config(text, path=path, data_dir=data_dir)


def parse_config(text, path=None, data_dir=None):
    """Validate INI `text` into a Config; raises ConfigErrors."""
    try:
        doc = IniDocument.parse(text)
    except IniSyntaxError as e:
        raise ConfigErrors([ConfigError(None, None, e.line, "%s: %r" % (e.reason, e.text.strip()))], path)
    return config_from_document(doc, path=path, data_dir=data_dir)


def config_from_document(doc, path=None, data_dir=None):
    """Validate a parsed document; raises ConfigErrors naming every problem."""
    errors = []
    settings = {}
    records = {kind: {} for kind in RECORD_SECTIONS}
    lines = {}  # (section name, key) -> line, for cross-checks
    seen = {}

    for section in doc.sections:
        kind, label = section.kind, section.label
        norm = "%s %s" % (kind, label) if label else kind
        if norm in seen:
            errors.append(ConfigError(section.name, None, section.line,
                                      "duplicate section (first at line %d)" % seen[norm]))
            continue
        seen[norm] = section.line
        if kind in SETTINGS_SECTIONS and label is None:
            cls = SETTINGS_SECTIONS[kind]
        elif kind in RECORD_SECTIONS and label:
            cls = RECORD_SECTIONS[kind]
            if not _RECORD_NAME[kind].match(label):
                errors.append(ConfigError(section.name, None, section.line,
                                          "%r is not a valid %s name" % (label, kind)))
                continue
        elif kind in RECORD_SECTIONS:
            errors.append(ConfigError(section.name, None, section.line,
                                      "needs a name: [%s NAME]" % kind))
            continue
        elif kind in SETTINGS_SECTIONS:
            errors.append(ConfigError(section.name, None, section.line,
                                      "[%s] takes no name" % kind))
            continue
        else:
            errors.append(ConfigError(section.name, None, section.line,
                                      "unknown section" + _did_you_mean(
                                          kind, list(SETTINGS_SECTIONS) + list(RECORD_SECTIONS))))
            continue
        values, failed = _read_section(section, cls, errors, lines)
        if label is None:
            settings[kind] = (cls, values, section, failed)
        else:
            records[kind][label] = (cls, values, section, failed)

    built = {}
    for kind, cls in SETTINGS_SECTIONS.items():
        cls, values, section, failed = settings.get(kind, (cls, {}, None, ()))
        built[kind] = _build(kind, None, cls, values, section, failed, errors)
    built_records = {}
    for kind, items in records.items():
        out = {}
        for label, (cls, values, section, failed) in items.items():
            obj = _build(kind, label, cls, values, section, failed, errors)
            if obj is not None:
                out[label] = obj
        built_records[kind] = out

    config = Config(
        users=built_records["user"], aliases=built_records["alias"],
        hosts=built_records["host"], records=built_records["record"],
        forwards=built_records["forward"], doc=doc, path=path, **built)
    complete = all(v is not None for v in built.values())
    if data_dir and complete:
        config = config.with_data_dir(data_dir)
    declared = {kind: set(items) for kind, items in records.items()}
    _cross_check(config, lines, errors, complete, declared)
    if errors:
        raise ConfigErrors(errors, path)
    return config


def _read_section(section, cls, errors, lines):
    """Parse each key of `section`: (values, keys that failed to parse)."""
    fields = {f.name: f for f in keys_of(cls)}
    values = {}
    failed = set()
    for entry in section.entries():
        lines[(section.name, entry.key)] = entry.line
        if entry.key in values:
            errors.append(ConfigError(section.name, entry.key, entry.line, "duplicate key"))
            continue
        field = fields.get(entry.key)
        if field is None:
            errors.append(ConfigError(section.name, entry.key, entry.line,
                                      "unknown key" + _did_you_mean(entry.key, fields)))
            continue
        try:
            values[entry.key] = field.metadata["parse"](entry.value)
        except ValueError as e:
            errors.append(ConfigError(section.name, entry.key, entry.line, str(e)))
            failed.add(entry.key)
    lines[(section.name, None)] = section.line
    return values, failed


def _build(kind, label, cls, values, section, failed, errors):
    required = [f.name for f in keys_of(cls) if f.default is REQUIRED]
    if any(k in failed for k in required):
        return None
    missing = [k for k in required if k not in values]
    name = section.name if section is not None else kind
    line = section.line if section is not None else 0
    for k in missing:
        errors.append(ConfigError(name, k, line, "is required" if section is not None
                                  else "is required (the section [%s] is missing)" % kind))
    if missing:
        return None
    # Keys that failed to parse are absent here: their defaults stand in so
    # the cross-checks still run; the error is already recorded.
    if label is not None:
        return cls(name=label, **values)
    return cls(**values)


def _cross_check(c, lines, errors, complete=True, declared=None):
    """
    Checks between keys and sections: ranges inside the LAN, references.
    With sections that failed to load (`complete` false, those sections None)
    the groups of checks that need them are skipped, the others still run, so
    one pass reports as much as it can.
    """

    def err(section, key, message):
        errors.append(ConfigError(section, key, lines.get((section, key)) or
                                  lines.get((section, None)) or 0, message))

    for check in (_check_network, _check_services, _check_users_aliases,
                  _check_hosts_records, _check_forwards):
        try:
            check(c, err, declared or {})
        except AttributeError:
            if complete:
                raise


def _check_network(c, err, declared):
    lan = c.lan.address
    if c.wan.mode != "disabled" and not c.wan.interface:
        err("wan", "interface", "is required when mode is %s" % c.wan.mode)
    if c.wan.interface and c.wan.interface == c.lan.interface:
        err("wan", "interface", "is the same interface as the LAN")
    if c.wan.mode == "static":
        if c.wan.address is None:
            err("wan", "address", "is required when mode is static")
        if c.wan.gateway is None:
            err("wan", "gateway", "is required when mode is static")
    if c.wan.address is not None and c.wan.address.network.overlaps(lan.network):
        err("wan", "address", "%s overlaps the LAN %s" % (c.wan.address.network, lan.network))
    if (c.wan.address is not None and c.wan.gateway is not None
            and c.wan.gateway not in c.wan.address.network):
        err("wan", "gateway", "%s is not in the WAN subnet %s" % (c.wan.gateway, c.wan.address.network))
    if c.lan.gateway is not None and c.lan.gateway not in lan.network:
        err("lan", "gateway", "%s is not in the LAN subnet %s" % (c.lan.gateway, lan.network))
    if c.lan.gateway is not None and c.lan.gateway == lan.ip:
        err("lan", "gateway", "is the server's own LAN address")
    # Security
    if c.security.mode != "lan-only" and c.wan.mode == "disabled":
        err("security", "mode", "%s needs a WAN: set [wan] mode to static or dhcp, "
            "or use lan-only" % c.security.mode)


def _check_services(c, err, declared):
    try:
        first, last = c.pool
        if int(last) - int(first) > 253:
            err("dhcp", "range", "a pool holds at most 254 addresses")
    except ValueError as e:
        err("dhcp", "range", str(e))
    # DNS
    if c.dns.use_forwarders and c.dns.enabled and c.dns.primary is None:
        err("dns", "primary", "is required when use_forwarders = yes (the ISP's DNS server)")
    if c.security.mode == "lan-only" and c.dhcp.enabled and c.dns.primary is None:
        err("dns", "primary", "is required in lan-only mode: DHCP hands it out as the DNS server")
    low, high = c.sip.rtp_ports
    if low <= c.sip.port <= high:
        err("sip", "rtp_ports", "includes the SIP port %d" % c.sip.port)


def _check_users_aliases(c, err, declared):
    extensions = {}
    for u in c.users.values():
        section = "user %s" % u.name
        if u.extension:
            if u.extension in extensions:
                err(section, "extension", "%s is already the extension of user %s"
                    % (u.extension, extensions[u.extension]))
            extensions[u.extension] = u.name
            if c.sip is not None and u.extension == c.sip.voicemail_number:
                err(section, "extension", "%s is the voicemail number" % u.extension)
    for a in c.aliases.values():
        section = "alias %s" % a.name
        if not a.to:
            err(section, "to", "names nobody")
        for target in a.to:
            if "@" in target:
                try:
                    parse_email(target)
                except ValueError as e:
                    err(section, "to", str(e))
            elif target not in declared.get("user", c.users) and target not in c.aliases:
                err(section, "to", "names unknown user or alias %r%s" % (
                    target, _did_you_mean(target, list(c.users) + list(c.aliases))))
        loop = _alias_loop(c, a.name)
        if loop:
            err(section, "to", "alias loop: %s" % " -> ".join(loop))


def _check_hosts_records(c, err, declared):
    for r in c.records.values():
        section = "record %s" % r.name
        if r.name in BUILTIN_NAMES:
            err(section, None, "%r is a built-in name of the zone" % r.name)
        if r.name in c.hosts:
            err(section, None, "%r is already a [host]" % r.name)
        if r.cname and (r.a or r.mx or r.txt):
            err(section, "cname", "a name with a cname can have no other records")
        if r.cname and r.name == "@":
            err(section, "cname", "the domain itself cannot be a cname")
        if not (r.a or r.mx or r.cname or r.txt):
            err(section, None, "has no records (a, mx, cname or txt)")
    macs, addrs = {}, {}
    for h in c.hosts.values():
        section = "host %s" % h.name
        if h.name in BUILTIN_NAMES:
            err(section, None, "%r is a built-in name of the zone" % h.name)
        if h.mac in macs:
            err(section, "mac", "%s is already reserved for host %s" % (h.mac, macs[h.mac]))
        macs[h.mac] = h.name
        if h.address in addrs:
            err(section, "address", "%s is already reserved for host %s" % (h.address, addrs[h.address]))
        addrs[h.address] = h.name
    lan = c.lan.address
    for h in c.hosts.values():
        section = "host %s" % h.name
        if h.address not in lan.network:
            err(section, "address", "%s is not in the LAN subnet %s" % (h.address, lan.network))
        elif h.address in (lan.ip, lan.network.network_address, lan.network.broadcast_address):
            err(section, "address", "%s is not a usable host address" % h.address)


def _check_forwards(c, err, declared):
    ports = {}
    for f in c.forwards.values():
        k = (f.proto, f.wan_port)
        if k in ports:
            err("forward %s" % f.name, "wan_port", "%d/%s is already forwarded by %s"
                % (f.wan_port, f.proto, ports[k]))
        ports[k] = f.name
    for f in c.forwards.values():
        section = "forward %s" % f.name
        target = f.to[0]
        if isinstance(target, str):
            if target not in declared.get("host", c.hosts):
                err(section, "to", "names unknown host %r%s" % (
                    target, _did_you_mean(target, c.hosts)))
        elif target not in c.lan_network or target == c.lan_ip:
            err(section, "to", "%s is not a LAN device's address in %s" % (target, c.lan_network))


def _alias_loop(c, start):
    """The path of a loop through aliases starting at `start`, or None."""
    def walk(name, path):
        for t in c.aliases[name].to:
            if t == name and t in c.users:
                continue  # the user behind an alias of the same name (guide 9.2)
            if t == start:
                return path + [t]
            if t in c.aliases and t not in path:
                found = walk(t, path + [t])
                if found:
                    return found
        return None
    return walk(start, [start])
