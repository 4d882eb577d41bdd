# -*- test-case-name: allworx.tests.core.test_service -*-
"""
The whole server as one MultiService: one named child per protocol, built
from the office, each reconfiguring itself when the office changes.
"""

import importlib
import os

from twisted.application import service
from twisted.logger import Logger

log = Logger()

# Child services in start order: name -> "module:factory". Each factory takes
# the office and returns an IService named like its entry. Interfaces and the
# firewall come first so the others start on a configured network.
CHILDREN = (
    ("network", "allworx.routing.network.service:make_service"),
    ("firewall", "allworx.routing.firewall.service:make_service"),
    ("dhcp", "allworx.protocols.dhcp.service:make_service"),
    ("dns", "allworx.protocols.dns.service:make_service"),
    ("ntp", "allworx.protocols.ntp.service:make_service"),
    ("mail", "allworx.protocols.mail.service:make_service"),
    ("sip", "allworx.protocols.sip.service:make_service"),
    ("ldap", "allworx.protocols.ldap.service:make_service"),
    ("web", "allworx.protocols.web.service:make_service"),
)


class PendingService(service.Service):
    """Stands in for a protocol whose module is not part of this build."""

    def __init__(self, name, office, reason):
        self.setName(name)
        self.office = office
        self.reason = reason

    def startService(self):
        service.Service.startService(self)
        self.office.set_status(self.name, "down", self.reason)


class AllworxService(service.MultiService):
    """The server: the office plus its protocol services."""

    def __init__(self, office, children=CHILDREN):
        service.MultiService.__init__(self)
        self.office = office
        for name, target in children:
            self.addService(_build(name, target, office))

    def startService(self):
        config = self.office.config
        os.makedirs(config.system.data_dir, mode=0o750, exist_ok=True)
        log.info("allworx {hostname}.{domain} starting: security mode {mode}, "
                 "data in {data_dir}", hostname=config.system.hostname,
                 domain=config.system.domain, mode=config.security.mode,
                 data_dir=config.system.data_dir)
        # Not MultiService.startService: one child that fails to start must
        # not take the others down; it is reported and the rest run.
        service.Service.startService(self)
        for child in self:
            try:
                child.startService()
            except Exception as e:
                log.failure("{service} failed to start", service=child.name)
                self.office.set_status(child.name, "down", "failed to start: %s: %s"
                                       % (type(e).__name__, e))
        states = {}
        for status in self.office.status.values():
            states.setdefault(status.state, []).append(status.name)
        log.info("allworx ready: {summary}", summary="; ".join(
            "%s: %s" % (state, ", ".join(sorted(names)))
            for state, names in sorted(states.items())))


def _build(name, target, office):
    module_name, factory_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            return PendingService(name, office, "not part of this build (%s)" % module_name)
        raise
    try:
        child = getattr(module, factory_name)(office)
    except Exception as e:
        log.failure("{service} could not be built", service=name)
        return PendingService(name, office, "could not be built: %s: %s" % (type(e).__name__, e))
    if child.name != name:
        child.setName(name)
    return child


def make_server(config, data_dir=None):
    """The top-level service for a validated config."""
    from allworx.office import Office
    return AllworxService(Office(config, data_dir=data_dir))
