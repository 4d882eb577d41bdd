# -*- test-case-name: allworx.tests.vpn.test_golog -*-
"""
wireguard-go's output, read into the server's log.

The service runs wireguard-go with `LOG_LEVEL=verbose`, because only there
does it say that it dropped a handshake from a key no peer holds. Its lines
look like

    DEBUG: (awg0) 2022/03/16 12:00:00 Received invalid initiation message from 203.0.113.2:51820
    ERROR: (awg0) 2022/03/16 12:00:00 Failed to bind ...

The verbose ones are chatty (every routine started, every keepalive and
handshake of every peer) and are dropped, but for:

- a handshake from an unknown key: one warning "vpn: a handshake from an
  unknown key at ADDR was dropped" the first time an address tries, then at
  most one a minute for it with the count of the minute (`UnknownKeyReports`);
  each one counted in `allworx_vpn_unknown_key_handshakes_total` (shown
  from the first one on);
- its version at start, as an info line.

ERROR lines become warnings; any other text (a panic, the banner aside) is
logged as it is.
"""

import re

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily
from twisted.logger import Logger

log = Logger()


class UnknownKeyCount:
    """
    `allworx_vpn_unknown_key_handshakes_total`, in prometheus_client's
    registry: shown from the first such handshake on (a server without the
    tunnel shows no `allworx_vpn_` metric at all).
    """

    def __init__(self):
        self.count = 0

    def family(self):
        return CounterMetricFamily(
            "allworx_vpn_unknown_key_handshakes",
            "Handshake initiations from a key no WireGuard peer holds, dropped",
            value=self.count)

    def describe(self):
        yield self.family()

    def collect(self):
        if self.count:
            yield self.family()


UNKNOWN_KEY_HANDSHAKES = UnknownKeyCount()
REGISTRY.register(UNKNOWN_KEY_HANDSHAKES)

REPORT_EVERY = 60.0         # seconds between two warnings about one address
MAX_ADDRESSES = 64          # addresses reported one by one in a minute; beyond, summed up
OTHERS = "other addresses"

LINE = re.compile(r"^(?P<level>DEBUG|INFO|ERROR): \((?P<ifname>[^)]*)\) "
                  r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (?P<message>.*)$")
UNKNOWN_KEY = re.compile(r"^Received invalid initiation message from (?P<endpoint>\S+)$")
VERSION = "Starting wireguard-go version "


def endpoint_host(endpoint):
    """'203.0.113.2:51820' -> '203.0.113.2'; '[2001:db8::1]:51820' -> '2001:db8::1'."""
    host, sep, _ = endpoint.rpartition(":")
    return (host if sep else endpoint).strip("[]")


class UnknownKeyReports:
    """
    Handshakes from unknown keys, reported per address: the first at once,
    then at the end of each minute in which more came, with their count; an
    address quiet for a minute is forgotten. More than MAX_ADDRESSES at once
    (a spoofed flood) are summed up under "other addresses".
    """

    def __init__(self, clock, ifname, every=REPORT_EVERY, limit=MAX_ADDRESSES):
        self.clock = clock
        self.ifname = ifname
        self.every = every
        self.limit = limit
        self._windows = {}      # host -> [count since the last warning, started, timer]

    def seen(self, endpoint):
        UNKNOWN_KEY_HANDSHAKES.count += 1
        host = endpoint_host(endpoint)
        if host not in self._windows and len(self._windows) >= self.limit:
            host = OTHERS
        window = self._windows.get(host)
        if window is not None:
            window[0] += 1
            return
        log.warn("vpn: a handshake from an unknown key at {address} was dropped",
                 address=host, endpoint=endpoint, count=1, ifname=self.ifname)
        self._open(host)

    def _open(self, host):
        self._windows[host] = [0, self.clock.seconds(),
                               self.clock.callLater(self.every, self._window_ended, host)]

    def _window_ended(self, host):
        count, started, _ = self._windows.pop(host)
        if count:
            self._report(host, count, started)
            self._open(host)

    def _report(self, host, count, started):
        seconds = int(round(self.clock.seconds() - started))
        text = ("vpn: {count} more handshakes from an unknown key at {address} were dropped "
                "in {seconds} s" if count > 1 else
                "vpn: 1 more handshake from an unknown key at {address} was dropped in {seconds} s")
        log.warn(text, address=host, count=count, seconds=seconds, ifname=self.ifname)

    def stop(self):
        """No more timers; what is still counted is reported now."""
        windows, self._windows = self._windows, {}
        for host, (count, started, timer) in sorted(windows.items()):
            if timer.active():
                timer.cancel()
            if count:
                self._report(host, count, started)


class GoOutput:
    """wireguard-go's stdout and stderr, line by line, into the log."""

    def __init__(self, ifname, clock):
        self.ifname = ifname
        self.unknown_keys = UnknownKeyReports(clock, ifname)
        self._partial = b""

    def feed(self, data):
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self.line(line.decode("utf-8", "replace").strip())

    def line(self, text):
        # Its banner (a box saying the kernel could do this) says nothing useful.
        if not text or text[0] in "\u2502\u250c\u2514":
            return
        parsed = LINE.match(text)
        if parsed is None:
            log.info("wireguard-go {ifname}: {line}", ifname=self.ifname, line=text)
            return
        level, message = parsed.group("level"), parsed.group("message")
        if level == "ERROR":
            log.warn("wireguard-go {ifname}: {line}", ifname=self.ifname, line=message)
            return
        unknown = UNKNOWN_KEY.match(message)
        if unknown is not None:
            self.unknown_keys.seen(unknown.group("endpoint"))
        elif message.startswith(VERSION):
            log.info("wireguard-go {ifname}: {line}", ifname=self.ifname, line=message)

    def stop(self):
        if self._partial:
            self.line(self._partial.decode("utf-8", "replace").strip())
            self._partial = b""
        self.unknown_keys.stop()
