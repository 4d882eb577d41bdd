# -*- test-case-name: allworx.tests.core.test_dscp -*-
"""
DSCP marks on the sockets the server sends voice from (SPEC 16, guide 11):
EF (46, TOS byte 0xB8) on RTP, CS3 (24, TOS byte 0x60) on SIP, so that the
WAN shaper (allworx.routing.network.shaping), a switch or the provider can
put voice first. The mark is the IP header's TOS byte (IPv6: the traffic
class), set once when the socket is made; every packet it sends carries it.

`mark(thing, kind)` takes a socket, a Twisted port (listening TCP/TLS, UDP)
or a Twisted connector of an outgoing connection (marked before its SYN:
Twisted connects on the next turn of the reactor) and returns `thing`, so
it wraps the line that makes the socket. On Linux a connection accepted by
a marked listening socket inherits the mark. Anything without a real
socket (a test's fake port) is returned unchanged; a socket that refuses
the option is logged and used unmarked: a mark is a hint, never a reason
to lose a call.
"""

import socket

from twisted.logger import Logger

log = Logger()

RTP = "rtp"
SIP = "sip"
# The TOS byte: the DSCP in its upper six bits (ECN bits zero).
TOS = {RTP: 46 << 2, SIP: 24 << 2}
EF, CS3 = TOS[RTP], TOS[SIP]
IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", 67)


def socket_of(thing):
    """The socket object behind a socket, a Twisted port or a connector, or None."""
    if isinstance(thing, socket.socket):
        return thing
    for candidate in (thing, getattr(thing, "transport", None)):
        sock = getattr(candidate, "socket", None)
        if isinstance(sock, socket.socket):
            return sock
    return None


def mark(thing, kind):
    """Set the DSCP of `kind` (RTP or SIP) on what `thing` sends; returns `thing`."""
    tos = TOS[kind]
    sock = socket_of(thing)
    if sock is None:
        return thing
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, tos)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    except OSError as e:
        log.warn("no DSCP mark for {kind} on a socket: {error}", kind=kind, error=str(e))
    return thing


def marked(sock):
    """The TOS byte (IPv6: traffic class) a socket sends with."""
    if sock.family == socket.AF_INET6:
        return sock.getsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS)
    return sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)
