# -*- test-case-name: allworx.tests.test_service -*-
"""
Binding a service's ports with a clear account of the outcome: each port that
listens is logged as such, each that cannot says why (most often: no root for
a port below 1024), and the service's status in the office says the same.
"""

import errno

from twisted.application import service
from twisted.internet import error
from twisted.logger import Logger

log = Logger()


def why_not(failure_or_exc, port):
    """A sentence for a bind failure, naming the likely cause."""
    exc = getattr(failure_or_exc, "value", failure_or_exc)
    sock_err = getattr(exc, "socketError", None) or exc
    code = getattr(sock_err, "errno", None)
    if code in (errno.EACCES, errno.EPERM):
        if port < 1024:
            return "permission denied (port %d needs root or CAP_NET_BIND_SERVICE)" % port
        return "permission denied"
    if code == errno.EADDRINUSE:
        return "address already in use (another program listens on port %d)" % port
    if code == errno.EADDRNOTAVAIL:
        return "address not available on this host"
    return str(sock_err)


class ListeningService(service.Service):
    """
    A service that listens on several ports, given as (label, port number,
    listen) where `listen()` returns an IListeningPort or raises
    CannotListenError. Starts what it can, records the rest, stops them all.
    """

    def __init__(self, name, office, listeners=()):
        self.setName(name)
        self.office = office
        self.listeners = list(listeners)
        self.ports = []
        self.failed = []

    def startService(self):
        service.Service.startService(self)
        self.ports, self.failed = [], []
        ok = []
        for label, number, listen in self.listeners:
            try:
                self.ports.append(listen())
                ok.append(label)
            except (error.CannotListenError, OSError) as e:
                self.failed.append("%s: %s" % (label, why_not(e, number)))
        self.report(ok)

    def report(self, ok):
        if self.failed and not ok:
            self.office.set_status(self.name, "down", "; ".join(self.failed))
        elif self.failed:
            self.office.set_status(self.name, "degraded", "listening on %s; not on %s" % (
                ", ".join(ok), "; ".join(self.failed)))
        else:
            self.office.set_status(self.name, "up", "listening on %s" % ", ".join(ok))

    def stopService(self):
        service.Service.stopService(self)
        ports, self.ports = self.ports, []
        from twisted.internet import defer
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])
