# -*- test-case-name: allworx.tests.dhcp.test_service -*-
"""
The DHCP server's sockets: a UDP port that hears and speaks only on the LAN
interface (SO_BINDTODEVICE, SO_BROADCAST), and raw IPv4/UDP replies through
an AF_PACKET socket to a client's hardware address, for clients that have no
address yet and did not ask for broadcast (RFC 2131 4.1). The raw send leaves
no state in the kernel, unlike writing an ARP entry with `ip neigh` first.
"""

import socket

from allworx.ipv4udp import ipv4_udp_packet
from allworx.protocols.dhcp.codec import CLIENT_PORT, SERVER_PORT

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_RCVBUFFORCE = 33
ETH_P_IP = 0x0800
RECEIVE_BUFFER = 4 * 1024 * 1024
READ_PER_TURN = 16 * 1024    # bytes of datagrams read before the reactor looks around


def ip_udp_packet(src_ip, dst_ip, src_port, dst_port, payload):
    """A server reply as an IPv4/UDP packet (don't-fragment set, as a host's own would be)."""
    return ipv4_udp_packet(src_ip, dst_ip, src_port, dst_port, payload, dont_fragment=True)


class RawSender:
    """Sends DHCP replies as Ethernet frames on one interface, to clients without an address."""

    def __init__(self, interface, server_ip):
        self.interface = interface
        self.server_ip = str(server_ip)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def send(self, payload, dst_mac, dst_ip, dst_port=CLIENT_PORT):
        """Send `payload` from port 67 to `dst_ip`:`dst_port` at hardware address `dst_mac`."""
        packet = ip_udp_packet(self.server_ip, dst_ip, SERVER_PORT, dst_port, payload)
        # A SOCK_DGRAM packet socket: the kernel adds the Ethernet header.
        self.sock.sendto(packet, (self.interface, ETH_P_IP, 0, 0,
                                  bytes.fromhex(dst_mac.replace(":", ""))))

    def close(self):
        """Close the packet socket."""
        self.sock.close()


def open_device_udp(reactor, proto, interface, port):
    """A UDP port on 0.0.0.0:`port` that hears and speaks only on `interface`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
        port = reactor.adoptDatagramPort(sock.fileno(), socket.AF_INET, proto)
        # Back to the reactor every few dozen datagrams (Twisted reads up to
        # 256 KB, ~800 requests, per turn): the journal's commits come back
        # through the reactor, and each ACK waits for one.
        port.maxThroughput = READ_PER_TURN
        return port
    finally:
        sock.close()  # the port holds its own duplicate
