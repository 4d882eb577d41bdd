# -*- test-case-name: allworx.tests.wanclient.test_client -*-
"""
A raw socket (packet, ARP, netlink) watched by the reactor: the one place that
knows how to attach it, read a bounded burst of datagrams per reactor turn, and
detach it.
"""

from zope.interface import implementer
from twisted.internet.interfaces import IReadDescriptor


@implementer(IReadDescriptor)
class SocketReader:
    """
    Subclasses implement `received(data, addr)`, and `read_error(exc)` if an
    error other than "nothing to read" needs telling. At most `burst`
    datagrams are read per turn so one busy socket cannot starve the others.
    """

    burst = 64
    bufsize = 65536
    log_prefix = "socket"

    def __init__(self, reactor):
        self.reactor = reactor
        self.sock = None

    def attach(self, sock):
        """Make `sock` non-blocking and start reading it in the reactor."""
        sock.setblocking(False)
        self.sock = sock
        self.reactor.addReader(self)

    def detach(self):
        """Stop reading and close the socket (safe to call twice)."""
        if self.sock is not None:
            self.reactor.removeReader(self)
            self.sock.close()
            self.sock = None

    def received(self, data, addr):
        raise NotImplementedError

    def read_error(self, exc):
        """A read failed (ENOBUFS on netlink, a vanished interface...)."""

    # IReadDescriptor

    def fileno(self):
        return self.sock.fileno() if self.sock is not None else -1

    def logPrefix(self):
        return self.log_prefix

    def doRead(self):
        for _ in range(self.burst):
            if self.sock is None:
                return
            try:
                data, addr = self.sock.recvfrom(self.bufsize)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.read_error(e)
                return
            self.received(data, addr)

    def connectionLost(self, reason):
        self.sock = None
