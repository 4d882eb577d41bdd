# -*- test-case-name: allworx.tests.core.test_service -*-
"""
The one base of the server's child services.

`OfficeService` owns a service's subscriptions to the office's events: it
subscribes when the service starts and unsubscribes when it stops, and calls
`config_changed(event)` on every accepted change while running.

`ListeningService` adds ports, bound with a clear account of the outcome: each
port that listens is logged as such, each that cannot says why (most often: no
root for a port below 1024), and the service's status in the office says the
same. It binds again only when the service's listening settings change.
"""

import errno

from twisted.application import service
from twisted.internet import defer, error
from twisted.logger import Logger

from allworx.office import ConfigChanged

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


class OfficeService(service.MultiService):
    """
    A named child of the server that follows the office: `follow(EventClass,
    callback)` (usually in the constructor) subscribes `callback` while the
    service runs; ConfigChanged reaches `config_changed` while running. It may
    have children of its own (the mail service's smtp, pop3, ...), started
    after it subscribes and stopped before it unsubscribes.
    """

    def __init__(self, name, office):
        service.MultiService.__init__(self)
        self.setName(name)
        self.office = office
        self._follows = [(ConfigChanged, self._on_config)]
        self._unsubscribes = []

    def follow(self, event_class, callback):
        """Call `callback(event)` for each `event_class` event while running."""
        self._follows.append((event_class, callback))
        if self.running:
            self._unsubscribes.append(self.office.subscribe(event_class, callback))

    def config_changed(self, event):
        """Called on every ConfigChanged while running."""

    def startService(self):
        self._office_subscribe()
        service.MultiService.startService(self)

    def stopService(self):
        d = service.MultiService.stopService(self)
        self._office_unsubscribe()
        return d

    def _office_subscribe(self):
        if not self._unsubscribes:
            self._unsubscribes = [self.office.subscribe(event_class, callback)
                                  for event_class, callback in self._follows]

    def _office_unsubscribe(self):
        unsubscribes, self._unsubscribes = self._unsubscribes, []
        for unsubscribe in unsubscribes:
            unsubscribe()

    def _on_config(self, event):
        if self.running:
            self.config_changed(event)


class ListeningService(OfficeService):
    """
    A service that listens on several ports, given as (label, port number,
    listen) where `listen()` returns an IListeningPort or raises
    CannotListenError. Starts what it can, records the rest, stops them all.

    A service whose ports come from the config overrides `build_listeners`
    (None or [] when switched off, with `disabled_reason` saying why) and
    `bound_settings` (what, when changed, means listening again): the base
    class then follows the office live, rebinding only when that changes.
    """

    def __init__(self, name, office, listeners=()):
        OfficeService.__init__(self, name, office)
        self.listeners = list(listeners)
        self.ports = []
        self.failed = []
        self._bound = None

    # Hooks for config-driven services.

    def build_listeners(self, config):
        """The listeners for `config`; the default keeps the ones given."""
        return self.listeners

    def bound_settings(self, config):
        """A value whose change means the ports must be bound again."""
        return None

    def disabled_reason(self, config):
        """Why the service does not listen under `config`, or None."""
        return None

    # Life cycle (`config_changed` is called after any rebind).

    def startService(self):
        OfficeService.startService(self)
        self._bind()

    def stopService(self):
        children = OfficeService.stopService(self)
        return defer.gatherResults([children, self._unbind()])

    def rebind(self):
        """Close every port and listen again under the current config."""
        # Recorded now, so a second notice of the same change does not rebind twice.
        self._bound = self.bound_settings(self.office.config)
        d = self._unbind()
        d.addCallback(lambda _: self._bind() if self.running else None)
        return d

    def _on_config(self, event):
        if not self.running:
            return
        if self.bound_settings(event.new) != self._bound:
            log.info("{service}: its settings changed, listening again", service=self.name)
            self.rebind()
        self.config_changed(event)

    def _bind(self):
        config = self.office.config
        self._bound = self.bound_settings(config)
        reason = self.disabled_reason(config)
        self.listeners = [] if reason else list(self.build_listeners(config) or [])
        self.ports, self.failed = [], []
        if reason or not self.listeners:
            self.office.set_status(self.name, "disabled", reason or "nothing to listen on")
            return
        ok = []
        for label, number, listen in self.listeners:
            try:
                self.ports.append(listen())
                ok.append(label)
            except (error.CannotListenError, OSError) as e:
                self.failed.append("%s: %s" % (label, why_not(e, number)))
        self.report(ok)

    def _unbind(self):
        ports, self.ports = self.ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])

    def report(self, ok):
        if self.failed and not ok:
            self.office.set_status(self.name, "down", "; ".join(self.failed))
        elif self.failed:
            self.office.set_status(self.name, "degraded", "listening on %s; not on %s" % (
                ", ".join(ok), "; ".join(self.failed)))
        else:
            self.office.set_status(self.name, "up", "listening on %s" % ", ".join(ok))


class PortsService(ListeningService):
    """
    A ListeningService whose ports come from the config through `spec(config)`:
    a tuple of (label, port, factory, tls_options or None), or None when
    switched off (then `off_reason` is its status). It listens again when the
    labels or ports of that spec change.
    """

    def __init__(self, name, office, reactor, spec, off_reason):
        ListeningService.__init__(self, name, office)
        self.reactor = reactor
        self.spec = spec
        self.off_reason = off_reason

    def bound_settings(self, config):
        return tuple((label, port) for label, port, _, _ in self.spec(config) or ())

    def disabled_reason(self, config):
        return None if self.spec(config) else self.off_reason

    def build_listeners(self, config):
        out = []
        for label, port, factory, tls_options in self.spec(config):
            if tls_options is not None:
                listen = (lambda p=port, f=factory, o=tls_options:
                          self.reactor.listenSSL(p, f, o, interface=""))
            else:
                listen = lambda p=port, f=factory: self.reactor.listenTCP(p, f, interface="")
            out.append((label, port, listen))
        return out
