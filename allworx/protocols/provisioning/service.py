# -*- test-case-name: allworx.tests.provisioning.test_service -*-
"""
The "provisioning" child (SPEC 19): on the LAN address only, HTTP on
`[provisioning] port`, HTTPS on the next port once the server has its
certificate, and TFTP on udp/69; listening again when the switch, the port,
the LAN address or the certificate's presence changes. The files come from
one `files.Provisioner` shared by the three, with one rate limit per address.
"""

from twisted.logger import Logger

from allworx.protocols.provisioning.files import Provisioner
from allworx.protocols.provisioning.http import ProvisioningRoot, ProvisioningSite, limited
from allworx.protocols.provisioning.tftp import TftpServer
from allworx.servicebase import ListeningService

log = Logger()

TFTP_PORT = 69


class ProvisioningService(ListeningService):
    """
    `phonebook` (IPhoneBook: secrets and sightings), `leases` (ILeaseTable:
    who holds which MAC's lease), `tls_options()` (the server's live TLS
    options, or None while it has no certificate).
    """

    def __init__(self, office, phonebook, leases, reactor=None, tls_options=None,
                 tftp_port=TFTP_PORT):
        if reactor is None:
            from twisted.internet import reactor
        ListeningService.__init__(self, "provisioning", office)
        self.reactor = reactor
        self.tls_options = tls_options or (lambda: None)
        self.tftp_port = tftp_port
        self.provisioner = Provisioner(lambda: office.config, phonebook, leases, reactor)
        is_lan = office.is_lan_peer
        self.http_site = ProvisioningSite(ProvisioningRoot(self.provisioner, "http"), is_lan,
                                          reactor=reactor)
        self.https_site = ProvisioningSite(ProvisioningRoot(self.provisioner, "https"),
                                           is_lan, reactor=reactor)
        self.tftp = TftpServer(self.provisioner, reactor, self._listen_transfer, is_lan)

    def bound_settings(self, config):
        p = config.provisioning
        return (p.enabled, p.port, str(config.lan_ip), self.tls_options() is not None)

    def disabled_reason(self, config):
        return None if config.provisioning.enabled else "switched off in [provisioning]"

    def build_listeners(self, config):
        lan, port = str(config.lan_ip), config.provisioning.port
        http = limited(self.http_site)
        out = [("http %s:%d" % (lan, port), port,
                lambda: self.reactor.listenTCP(port, http, interface=lan))]
        options = self.tls_options()
        if options is not None:
            https = limited(self.https_site)
            out.append(("https %s:%d" % (lan, port + 1), port + 1,
                        lambda: self.reactor.listenSSL(port + 1, https, options,
                                                       interface=lan)))
        tftp = self.tftp_port
        out.append(("tftp %s:%d" % (lan, tftp), tftp,
                    lambda: self.reactor.listenUDP(tftp, self.tftp, interface=lan)))
        return out

    def _listen_transfer(self, proto):
        """A TFTP transfer's own port, on the LAN address."""
        return self.reactor.listenUDP(0, proto, interface=str(self.office.config.lan_ip))

    def stopService(self):
        self.tftp.stop()
        return ListeningService.stopService(self)
