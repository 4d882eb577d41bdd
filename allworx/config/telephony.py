# -*- test-case-name: allworx.tests.core.test_config_outside -*-
"""
The readers and writers of the phone system's values for outside lines
(SPEC 15): E.164 numbers, a provider's host[:port], SIP user names, a
trunk's secret, an attendant's opening hours, a user's call forwarding.
Like `values`, each parse_* takes a key's text and returns its value or
raises ValueError with a sentence; each format_* writes the value back.
"""

import re

from allworx.config.values import Target, parse_fqdn, parse_port

# ---------------------------------------------------------------- numbers

# Always dialled out, unchanged (SPEC 15).
EMERGENCY = ("911", "112", "999")

# E.164: a plus, then 8 to 15 digits, the first not 0 (SPEC 15).
E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")


def is_e164(text):
    return bool(E164.match(text))


def parse_e164(text):
    t = text.strip()
    if not (t.isascii() and E164.match(t)):
        raise ValueError("%r is not an E.164 number (+ then 8 to 15 digits, like "
                         "+15551230000)" % text)
    return t


def parse_e164_list(text):
    """`+15551230000 +15551230001` (spaces or commas between) -> a tuple, in order."""
    out = []
    for item in text.replace(",", " ").split():
        number = parse_e164(item)
        if number in out:
            raise ValueError("%s is listed twice" % number)
        out.append(number)
    return tuple(out)


def parse_extension_list(text):
    """`101 102 103` -> ('101', '102', '103'): extensions, in order, none twice."""
    out = []
    for item in text.replace(",", " ").split():
        if not (item.isascii() and item.isdigit() and 2 <= len(item) <= 8):
            raise ValueError("%r is not an extension (2 to 8 digits)" % item)
        if item in out:
            raise ValueError("%s is listed twice" % item)
        out.append(item)
    return tuple(out)


def parse_national_prefix(text):
    """0 to 2 digits; `none` (or nothing) for a country that dials none."""
    t = text.strip()
    if t.lower() in ("", "none"):
        return ""
    if not (t.isascii() and t.isdigit()) or len(t) > 2:
        raise ValueError("expected 1 or 2 digits, or none, got %r" % text)
    return t


def format_national_prefix(value):
    # Written as a word: an empty value would read as "use the default".
    return value or "none"


# ---------------------------------------------------------------- the provider

def parse_sip_hostport(text):
    """`sip.example.net` or `sip.example.net:5070` -> (host, port or None)."""
    t = text.strip()
    host, sep, port = t.rpartition(":")
    if not sep:
        return (parse_fqdn(t), None)
    return (parse_fqdn(host), parse_port(port))


def format_sip_hostport(value):
    if value is None:
        return ""
    host, port = value
    return host if port is None else "%s:%d" % (host, port)


# What the user part of a SIP URI may hold without escapes (RFC 3261 25.1:
# unreserved and user-unreserved characters).
_SIP_USER = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/]{1,64}$")


def parse_sip_user(text):
    t = text.strip()
    if not _SIP_USER.match(t):
        raise ValueError("%r is not a SIP user name (letters, digits and -_.!~*'()&=+$,;?/, "
                         "at most 64)" % text)
    return t


def parse_secret(text):
    """The provider's password, verbatim (what follows `= ` on the line)."""
    if not text:
        raise ValueError("is empty")
    return text


# ---------------------------------------------------------------- opening hours

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]?[0-9]|2[0-4]):([0-5][0-9])$")


class Hours(tuple):
    """
    Opening hours: a tuple of (days, start, end), days a frozenset of 0..6
    (Monday is 0), start and end minutes of the day. It remembers the text it
    was read from, which is how it is written back.
    """

    text = None

    def covers(self, weekday, minute):
        """Whether `minute` of the day on `weekday` (0 = Monday) is inside."""
        return any(weekday in days and start <= minute < end for days, start, end in self)


def parse_hours(text):
    """
    `mon-fri 08:30-17:30`, several spans with commas between
    (`mon-fri 08:30-12:00, mon-fri 13:00-17:30, sat 09:00-12:00`); days are
    a day, a range of days or a list (`mon,wed,fri`); no days: every day.
    """
    spans = []
    for item in _span_texts(text):
        words = item.split()
        if len(words) == 1:
            days, times = frozenset(range(7)), words[0]
        elif len(words) == 2:
            days, times = _days(words[0]), words[1]
        else:
            raise ValueError("expected DAYS HH:MM-HH:MM like mon-fri 08:30-17:30, got %r" % item)
        start, sep, end = times.partition("-")
        if not sep or ":" not in times:
            raise ValueError("expected a time span like 08:30-17:30, got %r" % times)
        start, end = _minute(start), _minute(end)
        if start >= end:
            raise ValueError("%s ends before it starts (past midnight, write two spans)" % times)
        spans.append((days, start, end))
    if not spans:
        raise ValueError("expected opening hours like mon-fri 08:30-17:30")
    hours = Hours(spans)
    hours.text = ", ".join(_span_texts(text))
    return hours


def format_hours(value):
    if not value:
        return ""
    if value.text is not None:
        return value.text
    return ", ".join("%s %s-%s" % (_days_text(days), _clock(start), _clock(end))
                     for days, start, end in value)


def _span_texts(text):
    """
    The spans of an hours text, each with its spacing made single. Commas
    separate spans and the days of a list (`mon,wed 09:00-12:00`): a piece
    without a time is days that go with the next.
    """
    spans, days = [], []
    for part in text.split(","):
        part = " ".join(part.split())
        if not part:
            continue
        if ":" not in part:
            days.append(part)
            continue
        spans.append(",".join(days + [part]))
        days = []
    if days:
        spans.append(",".join(days))        # days without a time: refused with a reason
    return spans


def _days(text):
    out = set()
    for item in text.lower().split(","):
        first, sep, last = item.partition("-")
        for day in (first, last) if sep else (first,):
            if day not in DAYS:
                raise ValueError("%r is not a day (%s)" % (day, " ".join(DAYS)))
        a, b = DAYS.index(first), DAYS.index(last if sep else first)
        out.update(range(a, b + 1) if a <= b else list(range(a, 7)) + list(range(0, b + 1)))
    return frozenset(out)


def _minute(text):
    m = _TIME.match(text)
    if not m or int(m.group(1)) == 24 and m.group(2) != "00":
        raise ValueError("%r is not a time of day like 08:30" % text)
    return int(m.group(1)) * 60 + int(m.group(2))


def _clock(minute):
    return "%02d:%02d" % divmod(minute, 60)


def _days_text(days):
    if days == frozenset(range(7)):
        return "mon-sun"
    runs, run = [], []
    for d in range(7):
        if d in days:
            run.append(d)
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    return ",".join(DAYS[r[0]] if len(r) == 1 else "%s-%s" % (DAYS[r[0]], DAYS[r[-1]])
                    for r in runs)


# ---------------------------------------------------------------- call forwarding

def parse_call_forward(text):
    """
    Where a user's calls are forwarded: an extension (2 to 8 digits), or an
    outside number, as a phone dials it (with the outbound prefix) or as
    +E.164.
    """
    t = text.strip()
    if t.startswith("+"):
        return Target("outside", parse_e164(t))
    if not (t.isascii() and t.isdigit()) or len(t) < 2:
        raise ValueError("expected an extension, an outside number as dialled (9 then the "
                         "number) or +E.164, got %r" % text)
    if len(t) <= 8:
        return Target("extension", t)
    if len(t) > 20:
        raise ValueError("%r is too long for a phone number" % text)
    return Target("outside", t)


def format_call_forward(value):
    return value.value if value is not None else ""
