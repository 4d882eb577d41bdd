# -*- test-case-name: allworx.tests.ntp.test_service -*-
"""The NTP packet (RFC 4330 section 4) and its timestamps, shared by the server and the client."""

import struct

NTP_EPOCH = 2208988800          # seconds from 1900-01-01 to 1970-01-01
PACKET = struct.Struct("!BBbbII4sQQQQ")   # 48 bytes


def to_ntp(t):
    """POSIX seconds (float) -> 64-bit NTP timestamp."""
    return int((t + NTP_EPOCH) * 2 ** 32) & 0xFFFFFFFFFFFFFFFF


def from_ntp(value):
    """64-bit NTP timestamp -> POSIX seconds (era 0)."""
    return value / 2 ** 32 - NTP_EPOCH


def short(seconds):
    """Seconds -> NTP short format (16.16 fixed point), saturating."""
    return max(0, min(int(seconds * 65536), 0xFFFFFFFF))
