"""
A UDP receiver on loopback that records the TOS byte of every datagram it
gets (IP_RECVTOS), read by the reactor: the tests of DSCP marks look at the
packets as they arrive, not only at the sending socket's option.
"""

import socket

from twisted.internet import defer, reactor


class TosReceiver:
    """`received` holds (data, tos); `wait(n)` fires once n datagrams came; `close()` when done."""

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        self.sock.setblocking(False)
        self.sock.bind((host, 0))
        self.address = self.sock.getsockname()
        self.received = []
        self.waiting = []
        reactor.addReader(self)

    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):
        return "TosReceiver"

    def doRead(self):
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(2048, socket.CMSG_SPACE(4))
            except BlockingIOError:
                break
            tos = None
            for level, kind, value in ancillary:
                if level == socket.IPPROTO_IP and kind == socket.IP_TOS:
                    tos = value[0]
            self.received.append((data, tos))
        for item in list(self.waiting):
            if len(self.received) >= item[0]:
                self.waiting.remove(item)
                item[1].callback(self.received)

    def connectionLost(self, reason):
        pass

    def wait(self, count):
        if len(self.received) >= count:
            return defer.succeed(self.received)
        d = defer.Deferred()
        self.waiting.append((count, d))
        return d

    def close(self):
        reactor.removeReader(self)
        self.sock.close()
