# -*- test-case-name: allworx.tests.dns.test_sites -*-
"""
Names across sites (SPEC 16): the conditional forwarder at the head of the
LAN's resolver chain.

A question at or under a `[site]`'s `domain`, or a PTR question for an
address in (or a reverse zone inside) one of its `networks`, is that
site's: it is asked of the site's server at its tunnel address, port 53
(UDP with recursion desired; TCP when the reply is truncated), and the
answer is kept in the resolver's cache for its TTL. The most specific
domain wins: a site's domain under the office's own (`branch.example.com`
beside `example.com`) is the site's, and the office's own domain under a
site's is the office's. While the site does not answer, SERVFAIL after
`SITE_TIMEOUT` (no second try, and never the ISP's forwarders: the name is
not theirs to answer). Only the LAN's chain has this link: the WAN never
recurses.

`SiteRoutes` is the pure part (a name -> its site or None, from the
configuration); `SiteForwarder` is the resolver link, following the
configuration as it changes.
"""

import ipaddress

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import dns, error
from twisted.names.common import ResolverBase

from allworx.protocols.dns.cache import NegativeAnswer
from allworx.protocols.dns.chain import CountedForwarder

log = Logger()

SITE_TIMEOUT = 1.5   # seconds a site's server has to answer: SERVFAIL within 2 s
SITE_PORT = 53

_REVERSE = ".in-addr.arpa"


class SiteUnreachable(Exception):
    """A site's server did not answer: ends the chain (SERVFAIL), unlike a DomainError."""


class SiteRoutes:
    """
    Which site's server answers a name, for one configuration: `site_for`
    gives the `Site` or None (the office's own, or the Internet's).
    """

    def __init__(self, config):
        vpn = getattr(config, "vpn", None)
        sites = [s for s in getattr(config, "sites", {}).values() if s.domain]
        if vpn is None or not vpn.enabled:
            sites = []
        self.own = config.system.domain.lower().rstrip(".")
        self.domains = {s.domain.lower().rstrip("."): s for s in sites}
        self.networks = [(net, s) for s in sites for net in s.networks]

    def __bool__(self):
        return bool(self.domains)

    def site_for(self, name):
        """The `Site` whose server answers `name` (text or bytes), or None."""
        if not self.domains:
            return None
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        name = name.lower().rstrip(".")
        if name.endswith(_REVERSE):
            return self._reverse(name[:-len(_REVERSE)])
        while name:
            if name == self.own:
                return None
            site = self.domains.get(name)
            if site is not None:
                return site
            name = name.partition(".")[2]
        return None

    def _reverse(self, labels):
        """The site whose networks hold the reverse name's addresses (`labels`: 3.168.192)."""
        parts = labels.split(".")
        if not 1 <= len(parts) <= 4 or not all(
                p.isdigit() and len(p) <= 3 and int(p) < 256 and str(int(p)) == p for p in parts):
            return None
        octets = list(reversed(parts)) + ["0"] * (4 - len(parts))
        net = ipaddress.IPv4Network("%s/%d" % (".".join(octets), 8 * len(parts)))
        for site_net, site in self.networks:
            if net.subnet_of(site_net):
                return site
        return None


class SiteForwarder(ResolverBase):
    """
    The conditional forwarder as a link of the LAN's chain: a site's name is
    answered from `cache` or asked of the site's server (and the answer
    stored in `cache`); any other name passes on (DomainError).
    """

    def __init__(self, office, cache, reactor, port=SITE_PORT, timeout=SITE_TIMEOUT):
        ResolverBase.__init__(self)
        self.office = office
        self.cache = cache
        self.reactor = reactor
        self.port = port
        self.timeout = timeout
        self._config = None
        self._routes = None
        self._servers = {}    # site address -> its CountedForwarder

    def routes(self):
        """The routes of the configuration in force (made again when it changes)."""
        config = self.office.config
        if config is not self._config:
            self._routes = SiteRoutes(config)
            self._config = config
            wanted = {str(s.address) for s in self._routes.domains.values()}
            for address in set(self._servers) - wanted:
                del self._servers[address]
        return self._routes

    def _server(self, site):
        address = str(site.address)
        server = self._servers.get(address)
        if server is None:
            server = self._servers[address] = CountedForwarder(
                [(address, self.port)], self.reactor, self.timeout, on_answer=self.cache.store)
        return server

    def _lookup(self, name, cls, type, timeout):
        routes = self.routes()
        site = routes.site_for(name) if routes and cls == dns.IN else None
        if site is None:
            return defer.fail(error.DomainError(name))
        d = self.cache._lookup(name, cls, type, timeout)
        d.addErrback(self._miss, site, name, cls, type, timeout)
        return d

    def _miss(self, reason, site, name, cls, type, timeout):
        reason.trap(error.DomainError)
        d = self._server(site)._lookup(name, cls, type, timeout)
        d.addErrback(self._failed, site, name)
        return d

    def _failed(self, reason, site, name):
        if reason.check(NegativeAnswer):
            return reason
        log.debug("dns: site {site} ({address}) gave no answer for {name!r}: {why}",
                  site=site.name, address=str(site.address), name=name,
                  why=reason.getErrorMessage())
        raise SiteUnreachable(site.name)
