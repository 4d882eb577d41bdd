# -*- test-case-name: allworx.tests.core.test_config, allworx.tests.core.test_config_outside, allworx.tests.core.test_injection -*-
"""
The readers and writers of tap.conf's values: each parse_* takes the text of
a key and returns the value (or raises ValueError with a sentence saying what
is wrong); each format_* writes a value back as text.
"""

import ipaddress
import re
from urllib.parse import urlsplit, unquote

import attr

# ---------------------------------------------------------------- the text of a value

# What tap.conf's syntax cannot carry inside a value. Every key is one line
# of the file (lists are separated by spaces on that line: no key is written
# over several lines), so a line break of any kind ends the value and the rest
# would be read as new lines: a new key, or a whole new section. The other
# control characters (NUL, ESC, DEL, C1), lone surrogates (not encodable as
# UTF-8) and the bidirectional controls (which make the file read differently
# from what it holds) have no place in a value either; a tab is whitespace.
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"   # str.splitlines' boundaries
_REFUSED = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e"
                      "\u2066-\u2069\ud800-\udfff]")
_COMMENT = re.compile(r"\s[#;]")


def check_value_text(text):
    """
    Raise ValueError naming the first character of `text` that tap.conf
    cannot hold in a value: a line break, another control character, a lone
    surrogate, a bidirectional control, or a ` #`/` ;` that the file would
    read as the start of a comment.
    """
    m = _REFUSED.search(text)
    if m:
        ch = m.group()
        code = "U+%04X" % ord(ch)
        if ch in _LINE_BREAKS:
            raise ValueError("a line break (%s) is not allowed in a value" % code)
        if ch == "\0":
            raise ValueError("a NUL character (U+0000) is not allowed in a value")
        if "\ud800" <= ch <= "\udfff":
            raise ValueError("%s is half of a surrogate pair, not a character" % code)
        if ch > "\x9f":
            raise ValueError("the bidirectional control %s is not allowed in a value" % code)
        raise ValueError("the control character %s is not allowed in a value" % code)
    m = _COMMENT.search(text)
    if m:
        raise ValueError("%r is not allowed in a value: tap.conf reads it as the start of a "
                         "comment" % m.group())


# What the API shows a key's value as (SPEC 10: "yes/no keys as booleans,
# ports and counts as numbers", everything else, durations and sizes among
# them, as the text the user wrote): a reader says so in its `json_type`.
JSON_BOOLEAN, JSON_NUMBER, JSON_TEXT = "boolean", "number", "text"


def json_type(parse):
    """How the API shows the values `parse` reads: JSON_BOOLEAN, JSON_NUMBER or JSON_TEXT."""
    return getattr(parse, "json_type", JSON_TEXT)


def checked(parse):
    """`parse` that first refuses text tap.conf cannot hold (see check_value_text)."""
    def parse_checked(text):
        check_value_text(text)
        return parse(text)
    parse_checked.json_type = json_type(parse)
    return parse_checked


# ---------------------------------------------------------------- value readers

def parse_bool(text):
    t = text.strip().lower()
    if t in ("yes", "true", "on", "1"):
        return True
    if t in ("no", "false", "off", "0"):
        return False
    raise ValueError("expected yes or no, got %r" % text)


parse_bool.json_type = JSON_BOOLEAN


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
    parse.json_type = JSON_NUMBER
    return parse


parse_port = parse_int(1, 65535)


def parse_int_or_off(low, high):
    """0 (off), or a whole number from `low` to `high`."""
    within = parse_int(0, high)

    def parse(text):
        value = within(text)
        if 0 < value < low:
            raise ValueError("%d is out of range: 0 (off) or %d-%d" % (value, low, high))
        return value
    parse.json_type = JSON_NUMBER
    return parse


def parse_score(low=0.0, high=1000.0):
    """A decimal number such as `5` or `7.5` (spam scores)."""
    def parse(text):
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError("expected a number like 5 or 7.5, got %r" % text)
        if value != value or not low <= value <= high:
            raise ValueError("%s is out of range %s-%s" % (text.strip(), low, high))
        return value
    parse.json_type = JSON_NUMBER
    return parse


def format_score(value):
    return ("%.2f" % value).rstrip("0").rstrip(".")


def parse_dkim_selector(text):
    """A DKIM selector: one DNS label (letters, digits, hyphens), at most 40 characters."""
    t = text.strip().lower()
    if not re.match(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$", t):
        raise ValueError("expected a DKIM selector (letters, digits and inner hyphens, "
                         "at most 40), got %r" % text)
    return t


def parse_dnsbl_zones(text):
    """DNSBL zones, space or comma separated: `zen.spamhaus.org bl.example`."""
    zones = []
    for word in text.replace(",", " ").split():
        zone = word.strip(".").lower()
        if not re.match(r"^(?=.{1,200}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
                        r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$", zone):
            raise ValueError("expected DNSBL zones (domain names), got %r" % word)
        if zone not in zones:
            zones.append(zone)
    return tuple(zones)


def parse_socket_path(text):
    """An absolute path of a unix socket, such as clamd's."""
    t = text.strip()
    if not t.startswith("/") or "\0" in t or len(t) > 107:
        raise ValueError("expected the absolute path of a unix socket, got %r" % text)
    return t

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


def parse_duration_or_off(low=1, high=None):
    """`off` (or 0, or nothing): 0; else a duration as `parse_duration`."""
    within = parse_duration(low, high)

    def parse(text):
        if text.strip().lower() in ("", "off", "0", "no"):
            return 0
        return within(text)
    return parse


def format_duration_or_off(seconds):
    """0 as `off`; whole days, hours or minutes with their unit; else seconds."""
    if not seconds:
        return "off"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return "%d%s" % (seconds // size, unit)
    return str(seconds)


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


HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def parse_hostname(text):
    t = text.strip().lower()
    if not HOST_LABEL.match(t):
        raise ValueError("%r is not a valid host name (letters, digits, hyphens)" % text)
    return t


def parse_domain(text):
    t = text.strip().lower().rstrip(".")
    labels = t.split(".")
    if len(labels) < 2 or not all(HOST_LABEL.match(l) for l in labels) or len(t) > 253:
        raise ValueError("%r is not a valid domain name like example.com" % text)
    return t


def parse_fqdn(text):
    """A host name or a dotted name (`mail.example.net`)."""
    t = text.strip().lower().rstrip(".")
    if not t or not all(HOST_LABEL.match(l) for l in t.split(".")):
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
    optional.json_type = json_type(parse)
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
        if not (t.isascii() and t.isdigit()) or not low <= len(t) <= high:
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


def parse_token(text):
    """A bearer token: 16 to 200 visible ASCII characters (no spaces)."""
    t = text.strip()
    if not 16 <= len(t) <= 200 or not all("!" <= ch <= "~" for ch in t):
        raise ValueError("expected 16 to 200 visible characters without spaces "
                         "(e.g. from `openssl rand -hex 32`)")
    return t


def parse_pin(text):
    """
    A voicemail PIN: its hash (`$argon2...`, what the server writes), or 4 to
    10 digits as a person types them, which the server hashes at its next
    write of tap.conf (and which work until then).
    """
    t = text.strip()
    if t.startswith("$argon2"):
        return t
    if not (t.isascii() and t.isdigit()) or not 4 <= len(t) <= 10:
        raise ValueError("expected 4 to 10 digits (a PIN is never repeated back)")
    return t


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


def parse_choice(choices):
    def parse(text):
        t = text.strip().lower()
        if t not in choices:
            raise ValueError("expected one of %s, got %r" % (", ".join(choices), text))
        return t
    return parse


def parse_sip_digest_key(text):
    from allworx.passwords import parse_sip_digest
    return tuple(sorted(parse_sip_digest(text).items()))


def format_sip_digest(value):
    if not value:
        return ""
    names = {"MD5": "md5", "SHA-256": "sha256"}
    return " ".join("%s:%s" % (names[k], v) for k, v in value)


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


# ---------------------------------------------------------------- call targets

# A [group] or [attendant] name: it starts with a letter, so that a TARGET
# tells it from an extension.
TARGET_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,31}$")
TARGET_KINDS = ("extension", "group", "attendant", "voicemail", "outside", "name")


@attr.s(frozen=True, slots=True)
class Target:
    """
    Where a call goes. `kind` is `extension` (value: its digits), `group` or
    `attendant` (value: the section's name), `voicemail` (value: the
    extension whose mailbox takes the message), `outside` (value: an E.164
    number or dialled digits; only a user's forward_* keys name one), or
    `name` for a bare name as written, which `Config.resolve_target` turns
    into a group or an attendant.
    """

    kind = attr.ib(validator=attr.validators.in_(TARGET_KINDS))
    value = attr.ib()


def parse_target(text):
    """A TARGET: `101` (an extension), `voicemail 101`, or a group/attendant name."""
    words = text.strip().split()
    if not words:
        raise ValueError("expected an extension, voicemail EXT, or a group or attendant name")
    if words[0].lower() == "voicemail":
        if len(words) != 2 or not _is_extension(words[1]):
            raise ValueError("expected 'voicemail EXT' with the extension of a mailbox, "
                             "like voicemail 101, got %r" % text)
        return Target("voicemail", words[1])
    if len(words) > 1:
        raise ValueError("expected one extension or name, got %r" % text)
    word = words[0]
    if word.isascii() and word.isdigit():
        if not _is_extension(word):
            raise ValueError("%r is not an extension (2 to 8 digits)" % word)
        return Target("extension", word)
    name = word.lower()
    if not TARGET_NAME.match(name):
        raise ValueError("%r is neither an extension nor a group or attendant name" % text)
    return Target("name", name)


def format_target(value):
    """A Target as tap.conf writes it (None: empty)."""
    if value is None:
        return ""
    if value.kind == "voicemail":
        return "voicemail %s" % value.value
    return value.value


def _is_extension(text):
    return text.isascii() and text.isdigit() and 2 <= len(text) <= 8
