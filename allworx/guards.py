# -*- test-case-name: allworx.tests.web.test_service -*-
"""
A bound on simultaneous connections from one peer address (SPEC 13), for the
web ports and LDAP: one client cannot hold every socket of the server; and
a guard that closes a connection whose input makes its protocol raise.
"""

from twisted.logger import Logger
from twisted.protocols import policies

log = Logger()


class GuardedConnection(policies.ProtocolWrapper):
    """
    A connection whose protocol raising on input is closed, with one log
    line, instead of the exception reaching the reactor (twisted.web's own
    parser has such paths on garbage, e.g. a header line before any request).
    """

    def dataReceived(self, data):
        try:
            policies.ProtocolWrapper.dataReceived(self, data)
        except Exception as e:
            log.info("{label}: closing the connection from {peer} after bad input: {why!r}",
                     label=self.factory.label, peer=getattr(self, "peer_host", "?"), why=e)
            self.transport.loseConnection()


class PeerConnectionLimit(policies.WrappingFactory):
    """
    Wraps a server factory: at most `limit` connections at once from one peer
    address; one more is closed at once (and logged). A connection the wrapped
    factory refuses (buildProtocol returning None) is not counted.
    """

    protocol = GuardedConnection

    def __init__(self, wrapped, limit, label=""):
        policies.WrappingFactory.__init__(self, wrapped)
        self.limit = limit
        self.label = label or type(wrapped).__name__
        self.counts = {}

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        if self.counts.get(host, 0) >= self.limit:
            log.warn("{label}: refused a connection from {peer}: already {limit} open",
                     label=self.label, peer=host, limit=self.limit)
            return None
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        self.counts[host] = self.counts.get(host, 0) + 1
        wrapper = self.protocol(self, inner)
        wrapper.peer_host = host
        return wrapper

    def unregisterProtocol(self, p):
        policies.WrappingFactory.unregisterProtocol(self, p)
        host = getattr(p, "peer_host", None)
        left = self.counts.get(host, 0) - 1
        if left > 0:
            self.counts[host] = left
        else:
            self.counts.pop(host, None)
