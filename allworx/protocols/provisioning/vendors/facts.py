# -*- test-case-name: allworx.tests.provisioning.test_vendors -*-
"""
What a phone's file says, gathered once from the office (`PhoneFacts`), so
that each vendor's module only spells it the way that vendor's phones read
it; and the host's time zone, as the phones need it (name, POSIX TZ string,
offset from UTC).
"""

import os
from xml.sax.saxutils import escape, quoteattr

import attr

LOCALTIME = "/etc/localtime"
ZONEINFO = "/usr/share/zoneinfo/"


@attr.s(frozen=True, slots=True)
class TimeZone:
    name = attr.ib(default="UTC")          # IANA name, e.g. Europe/Berlin
    posix = attr.ib(default="UTC0")        # POSIX TZ string, e.g. CET-1CEST,M3.5.0,M10.5.0/3
    offset = attr.ib(default=0)            # seconds east of UTC, standard time


def host_timezone(path=LOCALTIME):
    """The host's time zone, read from /etc/localtime (a TZif file); UTC when unreadable."""
    try:
        target = os.path.realpath(path)
        name = target.split(ZONEINFO, 1)[1] if ZONEINFO in target else "UTC"
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return TimeZone()
    # TZif version 2 and later end with "\n<POSIX TZ string>\n".
    posix = "UTC0"
    if data.startswith(b"TZif") and data[4:5] in (b"2", b"3", b"4") and data.endswith(b"\n"):
        footer = data[:-1].rsplit(b"\n", 1)[-1]
        try:
            posix = footer.decode("ascii") or "UTC0"
        except UnicodeDecodeError:
            pass
    return TimeZone(name=name, posix=posix, offset=posix_offset(posix))


def posix_offset(posix):
    """Standard time's offset east of UTC, in seconds, from a POSIX TZ string
    ("CET-1CEST,..." -> 3600, "EST5EDT" -> -18000, "<+0530>-5:30" -> 19800)."""
    text = posix
    if text.startswith("<"):
        text = text[text.find(">") + 1:]
    else:
        i = 0
        while i < len(text) and text[i].isalpha():
            i += 1
        text = text[i:]
    # POSIX counts west of Greenwich as positive, and the sign may be left out.
    sign, i = -1, 0
    if text[:1] in ("+", "-"):
        sign, i = (-1 if text[0] == "+" else 1), 1
    j = i
    while j < len(text) and (text[j].isdigit() or text[j] == ":"):
        j += 1
    parts = [int(p) for p in text[i:j].split(":") if p.isdigit()] or [0]
    seconds = sum(p * m for p, m in zip(parts, (3600, 60, 1)))
    return sign * seconds


def format_offset(seconds, sep=":"):
    """3600 -> '+01:00', -16200 -> '-04:30' (sep '' -> '+0100')."""
    sign = "-" if seconds < 0 else "+"
    h, m = divmod(abs(seconds) // 60, 60)
    return "%s%02d%s%02d" % (sign, h, sep, m)


@attr.s(frozen=True, slots=True)
class PhoneFacts:
    """Everything one phone's file carries (SPEC 19), already decided."""

    mac = attr.ib()                 # 12 lowercase hex digits
    server = attr.ib()              # the SIP server: the LAN address (text)
    port = attr.ib()                # its SIP port
    transport = attr.ib()           # "udp" | "tcp" | "tls"
    extension = attr.ib()           # user name and auth name
    display_name = attr.ib()        # the owner's full name (or his name)
    secret = attr.ib(repr=False)    # the phone's own SIP secret
    voicemail = attr.ib()           # the voicemail number (MWI subscribed to the extension)
    ntp = attr.ib()                 # the server's LAN address
    dns = attr.ib()                 # the server's LAN address
    timezone = attr.ib()            # TimeZone
    label = attr.ib()               # shown on the phone's screen
    language = attr.ib(default="en")
    register_every = attr.ib(default=600)   # seconds between registrations

    @property
    def MAC(self):
        return self.mac.upper()

    @property
    def label_or_extension(self):
        return self.label or self.extension


def build_facts(config, phone, secret, timezone=None):
    """The facts of `phone` (a config Phone) under `config`, with its `secret`."""
    user = config.users[phone.user]
    lan = str(config.lan_ip)
    return PhoneFacts(
        mac=phone.mac, server=lan, port=config.sip.port, transport="udp",
        extension=user.extension, display_name=user.full_name or user.name,
        secret=secret, voicemail=config.sip.voicemail_number, ntp=lan, dns=lan,
        timezone=timezone if timezone is not None else host_timezone(), label=phone.label)


def xml_text(value):
    return escape(str(value))


def xml_attr(value):
    return quoteattr(str(value))
