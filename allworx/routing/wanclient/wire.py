# -*- test-case-name: allworx.tests.wanclient.test_client -*-
"""
The WAN DHCP client's sockets, watched by the reactor (and, for the moment a
new address is checked, an ARP socket).

An AF_PACKET datagram socket on the interface, with a classic BPF filter so
only UDP to port 68 reaches Python (never the routed traffic): it is how a
client with no address yet sends from 0.0.0.0 and hears replies sent to an
address it does not have. Unicast renewals go through an ordinary UDP socket
on port 68 bound to the interface: the kernel routes and ARPs, and the socket
keeps the kernel from answering the server's unicast ACK with an ICMP
port-unreachable.
"""

import ctypes
import random
import socket
import struct

from twisted.internet import protocol
from twisted.logger import Logger

from allworx.ipv4udp import MalformedPacket, ipv4_udp_packet, parse_ipv4_udp
from allworx.protocols.dhcp.codec import BROADCAST, CLIENT_PORT, SERVER_PORT, ZERO
from allworx.rawsocket import SocketReader
from allworx.routing.wanclient.packets import ETH_P_ARP, arp_conflict, arp_probe

log = Logger()

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
SO_BINDTODEVICE = 25
PACKET_OUTGOING = 4

# Classic BPF on a SOCK_DGRAM packet socket (offsets from the IP header):
# accept unfragmented IPv4 UDP to port 68, drop everything else in the kernel.
_BPF_PORT68 = (
    (0x30, 0, 0, 9),            # ldb [9]            protocol
    (0x15, 0, 5, 17),           # jeq #17 else drop  UDP?
    (0x28, 0, 0, 6),            # ldh [6]            flags + fragment offset
    (0x45, 3, 0, 0x1FFF),       # jset #0x1fff drop  a later fragment
    (0xB1, 0, 0, 0),            # ldxb 4*([0]&0xf)   header length
    (0x48, 0, 0, 2),            # ldh [x+2]          UDP destination port
    (0x15, 0, 1, CLIENT_PORT),  # jeq #68 else drop
    (0x06, 0, 0, 0x40000),      # ret accept
    (0x06, 0, 0, 0),            # ret drop
)


def _attach_filter(sock, program):
    """setsockopt(SO_ATTACH_FILTER) with a struct sock_fprog built in ctypes."""
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class _Discard(protocol.DatagramProtocol):
    """The UDP port 68 socket: it only sends; what it hears came on the packet socket too."""

    def datagramReceived(self, data, addr):
        pass


class PacketWire(SocketReader):
    """
    DHCP on one interface through the reactor: `open()`, `broadcast`,
    `unicast`, `close()`. Each UDP payload to port 68 goes to `deliver(data)`.
    """

    bufsize = 4096
    log_prefix = "wandhcp"

    def __init__(self, ifname, reactor, deliver):
        SocketReader.__init__(self, reactor)
        self.ifname = ifname
        self.deliver = deliver
        self.udp = None
        self.probe = None
        self._ident = random.getrandbits(16)

    def open(self):
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        except PermissionError:
            raise PermissionError("cannot open a packet socket on %s (needs root or "
                                  "CAP_NET_RAW)" % self.ifname)
        try:
            # Filter first, then bind: no unfiltered packet is ever queued.
            _attach_filter(sock, _BPF_PORT68)
            sock.bind((self.ifname, ETH_P_IP))
        except OSError:
            sock.close()
            raise
        self.attach(sock)
        self.udp = self._open_udp()

    def _open_udp(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.ifname.encode())
            s.bind(("0.0.0.0", CLIENT_PORT))
            s.setblocking(False)
            return self.reactor.adoptDatagramPort(s.fileno(), socket.AF_INET, _Discard())
        except OSError as e:
            log.warn("wan: no UDP socket on port {port} of {ifname} ({why}); renewals "
                     "will be broadcast", port=CLIENT_PORT, ifname=self.ifname, why=str(e))
            return None
        finally:
            s.close()   # adoptDatagramPort keeps its own copy of the descriptor

    def start_probe(self, ip, mac, on_conflict):
        """Begin checking `ip` by ARP (one probe now); `on_conflict(mac)` if it is taken."""
        self.end_probe()
        probe = ArpProbe(self.ifname, self.reactor, mac, ip, on_conflict)
        try:
            probe.open()
        except OSError as e:
            log.warn("wan: cannot check {ip} by ARP on {ifname}: {why}",
                     ip=str(ip), ifname=self.ifname, why=str(e))
            return
        self.probe = probe
        probe.send()

    def probe_again(self):
        if self.probe is not None:
            self.probe.send()

    def end_probe(self):
        probe, self.probe = self.probe, None
        if probe is not None:
            probe.close()

    def close(self):
        self.end_probe()
        self.detach()
        if self.udp is not None:
            self.udp.stopListening()
            self.udp = None

    def broadcast(self, data, src=ZERO):
        self._ident = (self._ident + 1) & 0xFFFF
        packet = ipv4_udp_packet(src, BROADCAST, CLIENT_PORT, SERVER_PORT, data,
                                 ident=self._ident)
        self._send(packet, b"\xff" * 6)

    def unicast(self, data, dst):
        if self.udp is None:
            return self.broadcast(data)
        try:
            self.udp.write(data, (str(dst), SERVER_PORT))
        except OSError as e:
            log.warn("wan: cannot send to {dst}: {why}", dst=str(dst), why=str(e))

    def _send(self, packet, mac):
        if self.sock is None:
            return
        try:
            self.sock.sendto(packet, (self.ifname, ETH_P_IP, 0, 0, mac))
        except OSError as e:
            log.warn("wan: cannot send on {ifname}: {why}", ifname=self.ifname, why=str(e))

    def read_error(self, exc):
        log.warn("wan: receive error on {ifname}: {why}", ifname=self.ifname, why=str(exc))

    def received(self, packet, addr):
        if len(addr) > 2 and addr[2] == PACKET_OUTGOING:
            return
        try:
            datagram = parse_ipv4_udp(packet)
        except MalformedPacket:
            return
        if datagram.dport == CLIENT_PORT and datagram.sport == SERVER_PORT:
            self.deliver(datagram.payload)


class ArpProbe(SocketReader):
    """
    While a new address is checked (RFC 2131 4.4.1, RFC 5227): an ARP
    socket on the interface that sends probes for it and calls
    `on_conflict(mac)` when another host answers for it.
    """

    bufsize = 256
    log_prefix = "arpprobe"

    def __init__(self, ifname, reactor, mac, ip, on_conflict):
        SocketReader.__init__(self, reactor)
        self.ifname = ifname
        self.mac = mac
        self.ip = ip
        self.on_conflict = on_conflict

    def open(self):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        try:
            sock.bind((self.ifname, ETH_P_ARP))
        except OSError:
            sock.close()
            raise
        self.attach(sock)

    def send(self):
        if self.sock is None:
            return
        try:
            self.sock.sendto(arp_probe(self.mac, self.ip),
                             (self.ifname, ETH_P_ARP, 0, 0, b"\xff" * 6))
        except OSError as e:
            log.warn("wan: cannot send an ARP probe on {ifname}: {why}",
                     ifname=self.ifname, why=str(e))

    def close(self):
        self.detach()

    def received(self, packet, addr):
        if len(addr) > 2 and addr[2] == PACKET_OUTGOING:
            return
        other = arp_conflict(packet, self.ip, self.mac)
        if other is not None:
            self.on_conflict(other)
