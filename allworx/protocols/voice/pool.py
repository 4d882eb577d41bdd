# -*- test-case-name: allworx.tests.voice.test_relay, allworx.tests.voice.test_voice -*-
"""
One epoll set for every media socket of a reactor: the RTP relay's sockets
and the voicemail calls' endpoints.

Fifty packets a second each way per call go through the reactor every
service shares. Twisted's own UDP port costs a logging context, a method
dispatch and an exception (the read that finds nothing left) for every
packet; so media sockets sit in one epoll set (`SocketPool`) whose
descriptor is the one reader the reactor sees. One wake-up of the reactor
serves every socket that has a packet, each read once per round
(level-triggered: a socket with more waiting comes round again).
"""

import select

from twisted.logger import Logger

log = Logger()


class SocketPool:
    """
    Every media socket of one reactor in one epoll set, whose descriptor is
    a single reader of the reactor (added with the first socket, removed
    with the last). `add(sock, handler)`: `handler()` is called when `sock`
    is readable, and reads it (one packet); `remove(sock)` before closing it.
    """

    ROUNDS = 4                  # polls of the set per wake-up of the reactor, at most
    BATCH = 256

    def __init__(self, reactor):
        self.reactor = reactor
        self.poller = None
        self.handlers = {}      # fd -> callable reading that socket

    def fileno(self):
        return self.poller.fileno() if self.poller is not None else -1

    def logPrefix(self):
        return "rtp"

    def add(self, sock, handler):
        if self.poller is None:
            self.poller = select.epoll()
        self.poller.register(sock.fileno(), select.EPOLLIN)
        self.handlers[sock.fileno()] = handler
        if len(self.handlers) == 1:
            self.reactor.addReader(self)

    def remove(self, sock):
        fd = sock.fileno()
        if self.handlers.pop(fd, None) is not None:
            self.poller.unregister(fd)
            if not self.handlers:
                self.reactor.removeReader(self)
                self.poller.close()
                self.poller = None

    def doRead(self):
        poll, handlers, batch = self.poller.poll, self.handlers, self.BATCH
        for _ in range(self.ROUNDS):
            events = poll(0, batch)
            for fd, _ in events:
                handler = handlers.get(fd)
                if handler is not None:
                    try:
                        handler()
                    except Exception:
                        log.failure("RTP: a packet failed")
            if len(events) < batch:
                # Not a full batch: what came meanwhile wakes the reactor again
                # (the set's descriptor is level-triggered), no empty poll here.
                return

    def connectionLost(self, reason):
        """The reactor dropped the reader (it is shutting down)."""


_POOLS = {}


def pool_of(reactor):
    """The one SocketPool of `reactor`."""
    pool = _POOLS.get(id(reactor))
    if pool is None or pool.reactor is not reactor:
        pool = _POOLS[id(reactor)] = SocketPool(reactor)
    return pool
