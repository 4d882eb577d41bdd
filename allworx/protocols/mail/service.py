# -*- test-case-name: allworx.tests.mail.test_service -*-
"""
The "mail" child of the server: a MultiService whose children are smtp,
submission (587, and implicit TLS on `submissions_port`, RFC 8314), pop3, imap,
queue and fetch, sharing one store, one outbound queue and
one durable writer. Its `store` (IMailStore), `queue` (IMailQueue) and
`fetch.status` are what the rest of the server is given; it follows
configuration changes live (ports, switches, smarthost, users and aliases).
"""

import os

from twisted.application import service
from twisted.internet import threads
from twisted.logger import Logger
from twisted.names import client as dns_client

from allworx.atomicfile import ensure_directory, write_atomically
from allworx.auth import OfficeUserChecker
from allworx.certificates import CertificateKeeper
from allworx.guards import LoginThrottle, PeerLimit
from allworx.protocols.mail import fetch, imap, pop3
from allworx.protocols.mail.decisions import DecisionLog
from allworx.protocols.mail.dkimsign import DkimSigner
from allworx.protocols.mail.dnsbl import Dnsbl
from allworx.protocols.mail.greylist import Greylist
from allworx.protocols.mail.inbound import InboundChecks
from allworx.protocols.mail.durable import DurableWriter
from allworx.protocols.mail.queue import OutboundQueue
from allworx.protocols.mail.relay import SmtpRelay
from allworx.protocols.mail.security import MailSecurity
from allworx.protocols.mail.spam import ContentFilter
from allworx.protocols.mail.smtp import MAX_CONNECTIONS_PER_PEER, MAX_SESSIONS, SmtpFactory
from allworx.protocols.mail.store import MailStore
from allworx.servicebase import OfficeService, PortsService

log = Logger()


class QueueService(service.Service):
    """Loads the outbound queue from disk at start and runs its delivery timers."""

    def __init__(self, queue):
        self.setName("queue")
        self.queue = queue

    def startService(self):
        service.Service.startService(self)
        count = self.queue.load()
        self.queue.start()
        self.queue.office.set_status("queue", "up", "%d message(s) waiting" % count)

    def stopService(self):
        service.Service.stopService(self)
        self.queue.stop()


class MailService(OfficeService):
    """
    Mail for the office: SMTP in, the queue out, POP3, fetching. Its ports
    share one login throttle and one per-peer limit (each peer's share, and
    a cap in all), given or its own. TLS (STARTTLS, STLS, 465, 995) uses the
    server's certificate from `certificates` (an allworx.certificates
    CertificateKeeper), given or its own.
    """

    def __init__(self, office, reactor=None, checker=None, defer_to_thread=None,
                 throttle=None, peer_limit=None, certificates=None):
        if reactor is None:
            from twisted.internet import reactor
        OfficeService.__init__(self, "mail", office)
        self.reactor = reactor
        self.checker = checker or OfficeUserChecker(office)
        self.throttle = throttle if throttle is not None else LoginThrottle(reactor)
        self.peers = peer_limit if peer_limit is not None else PeerLimit(
            MAX_CONNECTIONS_PER_PEER, cap=MAX_SESSIONS)
        self.defer_to_thread = defer_to_thread
        self.writer = DurableWriter(defer_to_thread) if defer_to_thread else DurableWriter()
        self.relay = SmtpRelay(reactor, None, "localhost")
        self.store = MailStore(office, self.writer, reactor)
        # DKIM: keys under data_dir/dkim (the DNS service publishes them from there).
        self.dkim = DkimSigner(office, reactor, defer_to_thread or threads.deferToThread)
        self.queue = OutboundQueue(office, self.writer, reactor, self.relay, self.store,
                                   signer=self.dkim)
        self.dkim.queue = self.queue
        self.store.queue = self.queue
        self.own_certificates = certificates is None
        self.certificates = certificates or CertificateKeeper(lambda: office.config, reactor)
        self.tls_options = None
        # Mail from the internet (SPEC 18): the decisions, DNSBL, greylist
        # (made at start, under data_dir) and the content filter (rules,
        # Bayes, attachments, rspamd and clamd; the Junk folder trains it).
        self.decisions = DecisionLog(reactor)
        self.greylist = None
        self.content_filter = ContentFilter(office, reactor,
                                            defer_to_thread=defer_to_thread or threads.deferToThread)
        self.inbound = InboundChecks(office, None, self.decisions, Dnsbl(reactor),
                                     content_filter=self.content_filter)
        self.security = MailSecurity(office, self.dkim, self.decisions, self.store)
        self.smtp_factory = SmtpFactory(office, self.store.deliver, reactor, self.checker,
                                        label="smtp", throttle=self.throttle, peer_limit=self.peers,
                                        inbound=self.inbound)
        self.submission_factory = SmtpFactory(office, self.store.deliver, reactor, self.checker,
                                              submission=True, label="submission",
                                              throttle=self.throttle, peer_limit=self.peers)
        self.smtp = PortsService("smtp", office, reactor, self._smtp_spec,
                                 "turned off in [mail]")
        self.submission = PortsService("submission", office, reactor, self._submission_spec,
                                       "turned off in [mail]")
        self.queue_service = QueueService(self.queue)
        self.pop3 = pop3.make_pop3_service(self)
        self.imap = imap.make_imap_service(self)
        self.fetch = fetch.FetchService(self)
        self.imap.factory.mailboxes.trainers.append(self.content_filter.train)
        for child in (self.queue_service, self.smtp, self.submission, self.pop3, self.imap,
                      self.fetch):
            child.setServiceParent(self)
        self._apply(office.config)

    # ------------------------------------------------------------ what listens

    def _smtp_spec(self, config):
        if not config.mail.enabled:
            return None
        return (("smtp tcp/%d" % config.mail.smtp_port, config.mail.smtp_port,
                 self.smtp_factory, None),)

    def _submission_spec(self, config):
        if not config.mail.enabled:
            return None
        out = [("submission tcp/%d" % config.mail.submission_port,
                config.mail.submission_port, self.submission_factory, None)]
        if config.mail.submissions_port and self.tls_options is not None:
            out.append(("submissions tcp/%d" % config.mail.submissions_port,
                        config.mail.submissions_port, self.submission_factory, self.tls_options))
        return tuple(out)

    def _apply(self, config):
        """Settings the shared objects take from the config."""
        host = "%s.%s" % (config.system.hostname, config.system.domain)
        self.relay.helo_name = host
        self.relay.smarthost = config.mail.smarthost
        self.relay.resolver = own_resolver(config, self.reactor)
        self.inbound.resolver = self.relay.resolver

    # ------------------------------------------------------------ life

    def startService(self):
        config = self.office.config
        ensure_directory(os.path.join(config.system.data_dir, "mail"))
        if self.greylist is None:
            self.greylist = self.inbound.greylist = Greylist(
                os.path.join(config.system.data_dir, "mail", "greylist.json"), self.reactor,
                write=self._write_file)
        if self.own_certificates:
            self.certificates.start()
        # The same live object for every port: a renewed certificate reaches
        # new connections without listening again.
        self.tls_options = self.certificates.current()
        if self.tls_options is None:
            log.error("mail: no certificate; STARTTLS, STLS, 465 and 995 are off")
        for f in (self.smtp_factory, self.submission_factory):
            f.tls_options = self.tls_options
        OfficeService.startService(self)
        # After the queue is loaded (its child started): retired selectors it
        # no longer holds go. Keys made here the first time block for a moment.
        self._dkim(self.dkim.start)
        self.office.set_status("mail", "up" if config.mail.enabled else "disabled",
                               "mailboxes in %s" % os.path.join(config.system.data_dir, "mail"))

    def _dkim(self, work, *args):
        try:
            work(*args)
        except Exception:
            log.failure("mail: DKIM keys not made or changed: outbound mail may leave unsigned")

    def _write_file(self, path, text):
        if self.defer_to_thread is not None:
            return self.defer_to_thread(write_atomically, path, text)
        return threads.deferToThread(write_atomically, path, text)

    def stopService(self):
        if self.own_certificates:
            self.certificates.stop()
        if self.greylist is not None:
            self.greylist.stop()
        self.content_filter.stop()      # what training left to write
        return OfficeService.stopService(self)

    def config_changed(self, event):
        # Before the children's own handlers (they subscribed after this
        # service), so the ports they bind again see the new settings.
        self._apply(event.new)
        if event.old.system.data_dir != event.new.system.data_dir:
            self._dkim(self.dkim.start)
        elif event.touches("mail"):
            self._dkim(self.dkim.selector_changed, event.old.mail.dkim_selector,
                       event.new.mail.dkim_selector)
        if event.touches("user", "system"):
            self.store.forget()
        self.fetch.reconfigure()
        if event.touches("mail"):
            self.office.set_status("mail", "up" if event.new.mail.enabled else "disabled",
                                   "mailboxes in %s" % os.path.join(event.new.system.data_dir, "mail"))


def own_resolver(config, reactor):
    """
    A DNS client that asks the server's own resolver (127.0.0.1 on `[dns]
    port`) first, then the ISP's servers from `[dns]` when that one is silent.
    """
    servers = []
    if config.dns.enabled:
        servers.append(("127.0.0.1", config.dns.port))
    for ip in (config.dns.primary, config.dns.secondary):
        if ip is not None:
            servers.append((str(ip), 53))
    if not servers:
        servers.append(("127.0.0.1", config.dns.port))
    return dns_client.Resolver(servers=servers, timeout=(2, 4), reactor=reactor)
