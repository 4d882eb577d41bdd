# -*- test-case-name: allworx.tests.voice.test_voice -*-
"""
DTMF digits from RFC 4733 telephone-event packets and from SIP INFO bodies
(application/dtmf-relay and application/dtmf), each key press reported once.
"""

import struct

EVENTS = "0123456789*#ABCD"


class DtmfError(ValueError):
    """A telephone-event payload or INFO body that names no digit."""


def parse_event(payload):
    """(digit, end, duration) from a 4-byte telephone-event payload."""
    if len(payload) < 4:
        raise DtmfError("telephone-event payload shorter than 4 bytes")
    event, flags, duration = struct.unpack("!BBH", payload[:4])
    if event >= len(EVENTS):
        raise DtmfError("event %d is not a DTMF digit" % event)
    return EVENTS[event], bool(flags & 0x80), duration


def make_event(digit, end, duration, volume=10):
    """A telephone-event payload (for tests and load tools)."""
    return struct.pack("!BBH", EVENTS.index(digit), (0x80 if end else 0) | volume, duration)


class DtmfDetector:
    """
    Turns a stream of telephone-event packets into key presses: one digit per
    event (keyed by RTP timestamp), reported at its first packet, so the
    redundant end packets and retransmissions are not counted twice.
    """

    def __init__(self, on_digit):
        self.on_digit = on_digit
        self.seen = []

    def packet(self, packet):
        try:
            digit, end, _ = parse_event(packet.payload)
        except DtmfError:
            return
        key = packet.timestamp
        if key in self.seen:
            return
        self.seen.append(key)
        del self.seen[:-16]
        self.on_digit(digit)


def parse_info(content_type, body):
    """The digit of a SIP INFO body; DtmfError when there is none."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    text = body.decode("ascii", "replace").strip()
    if ctype == "application/dtmf-relay":
        for line in text.splitlines():
            k, _, v = line.partition("=")
            if k.strip().lower() == "signal":
                v = v.strip()
                if v == "10":
                    v = "*"
                elif v == "11":
                    v = "#"
                if len(v) == 1 and v.upper() in EVENTS:
                    return v.upper()
        raise DtmfError("no Signal= line in the dtmf-relay body")
    if ctype == "application/dtmf":
        if text in ("10", "11"):
            return "*" if text == "10" else "#"
        if len(text) == 1 and text.upper() in EVENTS:
            return text.upper()
        raise DtmfError("application/dtmf body is not a digit")
    raise DtmfError("INFO content type %r carries no DTMF" % ctype)
