# -*- test-case-name: allworx.tests.network.test_service -*-
"""
The kernel's link events (rtnetlink, link group) in the reactor: an
interface appearing or going away, its carrier coming and going. The network
service uses them to set up an interface the moment it appears and to tell
the WAN DHCP client when its cable is back.
"""

import socket
import struct

import attr

from allworx.rawsocket import SocketReader

RTMGRP_LINK = 1
RTM_NEWLINK, RTM_DELLINK = 16, 17
IFLA_IFNAME = 3
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")


@attr.s(frozen=True, slots=True)
class LinkEvent:
    """An interface appeared, changed or went away (from rtnetlink)."""

    ifname = attr.ib()
    index = attr.ib()
    up = attr.ib()          # administratively up
    carrier = attr.ib()     # IFF_LOWER_UP: the cable (or veth peer) is there
    gone = attr.ib(default=False)


def parse_link_events(data):
    """The LinkEvents in one rtnetlink datagram; anything else is skipped."""
    events = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        body = offset + _NLMSGHDR.size
        if kind in (RTM_NEWLINK, RTM_DELLINK) and length >= _NLMSGHDR.size + _IFINFOMSG.size:
            _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, body)
            name = _link_name(data, body + _IFINFOMSG.size, offset + length)
            if name is not None:
                events.append(LinkEvent(name, index, bool(flags & IFF_UP),
                                        bool(flags & IFF_LOWER_UP), kind == RTM_DELLINK))
        offset += (length + 3) & ~3
    return events


def _link_name(data, start, end):
    while start + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, start)
        if length < _RTATTR.size or start + length > end:
            return None
        if kind == IFLA_IFNAME:
            return bytes(data[start + _RTATTR.size:start + length]).split(b"\0")[0].decode(
                "utf-8", "replace")
        start += (length + 3) & ~3
    return None


class LinkMonitor(SocketReader):
    """
    Link events from the kernel (rtnetlink's link group) delivered in the
    reactor: `callback(LinkEvent)` for each. Needs no privileges.
    """

    log_prefix = "linkmonitor"

    def __init__(self, reactor, callback):
        SocketReader.__init__(self, reactor)
        self.callback = callback

    def start(self):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.bind((0, RTMGRP_LINK))
        except OSError:
            sock.close()
            raise
        self.attach(sock)

    def stop(self):
        self.detach()

    def received(self, data, addr):
        # A read error (ENOBUFS: events were dropped) needs nothing: the
        # next events still tell the state.
        for event in parse_link_events(data):
            self.callback(event)
