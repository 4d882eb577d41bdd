# -*- test-case-name: allworx.tests.core.test_service -*-
"""
The whole server as one MultiService: one named child per protocol, each
built here with what it needs from the others. This module is the one place
where the run-time arrows are drawn (see docs/ARCHITECTURE.md):

    dhcp.leases   ----> firewall (host-name forwards), dns (client names), web
    dhcp.rogues   ----> web
    firewall.connections -> web
    dns.keeper (zone) --> web
    mail.store    ----> sip (voicemail, message waiting), web
    mail.queue, mail.fetch -> web
    sip.registrations, sip.calls -> web
    one LoginThrottle -> web, ldap, mail (SMTP AUTH, POP3), sip (digest)
                         (its lock-outs kept in data_dir/lockouts.json, where
                          `allworx unlock` reaches it)
    one CertificateKeeper -> mail (STARTTLS, 465, STLS, 995), sip (TLS),
                         web (admin pages, 443, /ca.crt): one live certificate
    one StatsService (samples the registry and the interfaces every 10 s into
                      data_dir/stats.json) -> web (Views.stats)
    one EventRing (the server's recent log events, SPEC 20) -> web
    one PhoneBook (phones' own SIP secrets and sightings under data_dir/phones,
                   SPEC 19) -> sip (registrar, check-sync), the provisioning
                   service, web (Views.phones); sip.checksync -> web
                   (Views.checksync)
    dhcp.leases, the certificate -> provisioning
                         (the phones' files by HTTP, HTTPS and TFTP, SPEC 19)

Facts that change (config, leases, the WAN address, mailboxes, statuses)
travel as events on the office; the objects above are handed over once, at
construction, so no service depends on another having started first.
"""

import os

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger, globalLogPublisher

from allworx.backupservice import BackupService
from allworx.certificates import CertificateKeeper
from allworx.eventlog import EventRing
from allworx.confighistory import ConfigHistory
from allworx.guards import LoginThrottle
from allworx.interfaces import Views
from allworx.lockoutfile import LockoutFile
from allworx.office import ConfigChanged, Office, WanAddressChanged
from allworx.phonebook import PhoneBook
from allworx.protocols.dhcp.service import DhcpService
from allworx.protocols.dns.service import DnsService
from allworx.protocols.ldap.service import LdapService
from allworx.protocols.mail.service import MailService
from allworx.protocols.ntp.service import NtpService
from allworx.protocols.provisioning.service import ProvisioningService
from allworx.protocols.sip.service import SipService
from allworx.protocols.web.service import WebService
from allworx.routing.firewall.service import FirewallService
from allworx.routing.network.service import NetworkService
from allworx.routing.vpn.service import VpnService
from allworx.statssampler import StatsService

log = Logger()

# The children, in the order they start (the network first, so the others
# start on configured interfaces; the firewall next, so nothing is forwarded
# before it stands; the tunnel after both, SPEC 16).
NAMES = ("network", "firewall", "vpn", "dhcp", "dns", "ntp", "mail", "sip", "provisioning",
         "ldap", "web")


def certificate_keeper(office, reactor):
    """The server's certificates, their state shown as the "certificates" status."""
    return CertificateKeeper(lambda: office.config, reactor,
                             report=lambda state, detail: office.set_status(
                                 "certificates", state, detail))


def build_children(office, reactor=None, logins=None, certificates=None, stats=None,
                   events=None, backups=None, phonebook=None):
    """
    The protocol services of `office`, wired to each other, in start order
    (`stats`: the dashboard's history, IStats; `events`: the recent log
    events, ILogEvents; `backups`: IBackups; all shown by the web;
    `phonebook`: the phones' secrets and sightings, IPhoneBook, one per
    server, by default read from data_dir).
    """
    if reactor is None:
        from twisted.internet import reactor
    if phonebook is None:
        phonebook = PhoneBook(office.config.system.data_dir, reactor)
    # One certificate for every TLS port, renewed in place (allworx.certificates).
    if certificates is None:
        certificates = certificate_keeper(office, reactor)
    # One login throttle for every protocol that checks passwords: guesses
    # at a user's password count together, whether by web, LDAP, SMTP AUTH,
    # POP3 or SIP digest.
    if logins is None:
        logins = LoginThrottle(reactor)
    network = NetworkService(office)
    dhcp = DhcpService(office)
    firewall = FirewallService(office, leases=dhcp.leases)
    vpn = VpnService(office, reactor)
    dns = DnsService(office, leases=dhcp.leases)
    ntp = NtpService(office)
    mail = MailService(office, throttle=logins, certificates=certificates)
    sip = SipService(office, mail_store=mail.store, throttle=logins,
                     tls_options=certificates.current,   # the server's one certificate
                     phonebook=phonebook, leases=dhcp.leases)
    # The phones' files (SPEC 19): to the holder of each MAC's lease, HTTPS
    # with the server's one certificate.
    provisioning = ProvisioningService(office, phonebook, dhcp.leases,
                                       tls_options=certificates.current)
    ldap = LdapService(office, throttle=logins)
    web = WebService(office, Views(
        leases=dhcp.leases, rogues=dhcp.rogues, connections=firewall.connections,
        zone=dns.keeper, mail_store=mail.store, mail_queue=mail.queue, fetch=mail.fetch,
        registrations=sip.registrations, calls=sip.calls, trunks=sip.trunks,
        call_history=sip.call_history, mail_security=mail.security, vpn=vpn,
        stats=stats, logs=events, wan=network.wan, time=ntp.time, certificates=certificates, backup=backups,
        phones=phonebook, checksync=sip.checksync),
        throttle=logins, certificates=certificates)
    return [network, firewall, vpn, dhcp, dns, ntp, mail, sip, provisioning, ldap, web]


class AllworxService(service.MultiService):
    """
    The server: the office plus its protocol services, and the one login
    throttle they share (`logins`), whose lock-outs survive a restart.
    """

    def __init__(self, office, children=None, reactor=None):
        service.MultiService.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.office = office
        self.started = None
        self.ready = False
        self.logins = None
        self.certificates = None
        self.stats = None       # the dashboard's sampler and history (allworx.statssampler)
        self.events = None      # the recent log events (an EventRing), observed while running
        self.backups = None
        self.phonebook = None   # IPhoneBook: made anew with the children (a restore replaces its files)
        if children is None:
            # Made here, not only at start: children open files under it as
            # they are built (the call history), and it must be 0711 (startService).
            os.makedirs(office.config.system.data_dir, mode=0o711, exist_ok=True)
            self.logins = LoginThrottle(reactor, store=LockoutFile(office.config.system.data_dir))
            self.certificates = certificate_keeper(office, reactor)
            self.stats = StatsService(os.path.join(office.config.system.data_dir, "stats.json"),
                                      lambda: office.config, reactor)
            self.events = EventRing()
            # Backups, restores and tap.conf's history; a restore builds the children anew.
            self.backups = BackupService(office, reactor, restart=self.restart_around)
            children = self.build()
        for child in children:
            self.addService(child)

    def startService(self):
        config = self.office.config
        # Others may pass through (to the web roots, 0755) but not list it;
        # everything else under it is created 0700/0600.
        os.makedirs(config.system.data_dir, mode=0o711, exist_ok=True)
        if self.events is not None:
            globalLogPublisher.addObserver(self.events)     # the Logs page's events
        log.info("allworx {hostname}.{domain} starting: security mode {mode}, "
                 "data in {data_dir}", hostname=config.system.hostname,
                 domain=config.system.domain, mode=config.security.mode,
                 data_dir=config.system.data_dir)
        # Not MultiService.startService: one child that fails to start must
        # not take the others down; it is reported and the rest run. A child
        # whose start is asynchronous (the firewall's first ruleset) is
        # waited on by `started`, and its failure is reported the same way.
        service.Service.startService(self)
        if self.logins is not None:
            self.logins.start()     # takes `allworx unlock`'s requests
        if self.certificates is not None:
            # Before the children: made at first start, then renewed by its timer.
            self.certificates.start()
            self._follow_names = self.office.subscribe(
                ConfigChanged, lambda event: self.certificates.check())
            # An ACME CA that could not be reached is tried again once the WAN has an address.
            self._follow_wan = self.office.subscribe(
                WanAddressChanged, lambda event: event.new and self.certificates.wan_changed())
        if self.stats is not None:
            self.stats.startService()   # loads the history, then samples every 10 s
        if self.backups is not None:
            self.office.keep_history(ConfigHistory(
                os.path.join(config.system.data_dir, "config-history")))
            self.backups.startService()
            self._follow_backups = self.office.subscribe(ConfigChanged,
                                                         self.backups.config_changed)
        self._start_children()
        return self.started

    def _start_children(self):
        starts = []
        for child in self:
            d = defer.maybeDeferred(child.startService)
            d.addErrback(self._failed_to_start, child.name)
            starts.append(d)
        self.started = defer.gatherResults(starts)
        # "ready" only once the reactor runs: twistd starts services before
        # it, and until then a SIGTERM finds no handler and kills the process
        # before it can undo what it applied.
        self.started.addCallback(lambda _: self.reactor.callWhenRunning(self._ready))

    def build(self):
        """
        New protocol services for the office (what `restart_around` starts),
        around a phone book read anew from data_dir.
        """
        self.phonebook = PhoneBook(self.office.config.system.data_dir, self.reactor)
        return build_children(self.office, self.reactor, self.logins, self.certificates,
                              self.stats.store if self.stats is not None else None,
                              self.events, self.backups, self.phonebook)

    def _flush_phonebook(self, outcome=None):
        """Write the sightings that wait (before a restore's swap, or the stop), then pass `outcome` on."""
        if self.phonebook is None:
            return outcome
        return self.phonebook.flush().addBoth(lambda _: outcome)

    def restart_around(self, work):
        """
        Stop every protocol service, run `work()` (a Deferred: a restore
        swapping the data in), then build them anew and start them, so each
        reads its state from the files again. Whatever `work` does, the
        services come back.
        """
        old = list(self)
        # Removed while running, each is stopped (the last first).
        d = defer.DeferredList([defer.maybeDeferred(self.removeService, child)
                                for child in reversed(old)])

        def rebuild(outcome):
            running, self.running = self.running, 0     # added here, started below
            try:
                for child in self.build():
                    self.addService(child)
            finally:
                self.running = running
            self._start_children()
            log.info("allworx: services built again and started")
            return outcome
        d.addCallback(self._flush_phonebook)
        d.addCallback(lambda _: defer.maybeDeferred(work))
        return d.addBoth(rebuild)

    def stopService(self):
        if self.backups is not None:
            self._follow_backups()
            self.backups.stopService()
        if self.logins is not None:
            self.logins.stop()
        if self.certificates is not None:
            self._follow_names()
            self._follow_wan()
            self.certificates.stop()
        stopped = service.MultiService.stopService(self)
        stopped.addBoth(self._flush_phonebook)
        if self.events is not None:
            globalLogPublisher.removeObserver(self.events)
        if self.stats is not None:
            # The history is written once the children have stopped.
            stopped.addBoth(lambda _: self.stats.stopService())
        return stopped

    def _failed_to_start(self, failure, name):
        log.failure("{service} failed to start", failure, service=name)
        self.office.set_status(name, "down", "failed to start: %s: %s"
                               % (failure.type.__name__, failure.value))

    def _ready(self):
        self.ready = True
        states = {}
        for status in self.office.status.values():
            states.setdefault(status.state, []).append(status.name)
        log.info("allworx ready: {summary}", summary="; ".join(
            "%s: %s" % (state, ", ".join(sorted(names)))
            for state, names in sorted(states.items())))


def make_server(config, data_dir=None):
    """The top-level service for a validated config."""
    return AllworxService(Office(config, data_dir=data_dir))
