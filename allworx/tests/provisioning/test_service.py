"""The provisioning child: what it listens on, and when it listens again (SPEC 19)."""

from twisted.trial import unittest

from allworx.office import Office
from allworx.protocols.provisioning.service import ProvisioningService
from allworx.tests.provisioning.fakes import FakeLeases, FakePhoneBook, office_config


class FakePort:
    def __init__(self, kind, port, factory, interface, options=None):
        self.kind, self.port, self.factory = kind, port, factory
        self.interface, self.options = interface, options
        self.stopped = False

    def stopListening(self):
        self.stopped = True


class FakeReactor:
    def __init__(self):
        self.ports = []

    def seconds(self):
        return 0.0

    def callLater(self, *a, **kw):
        raise AssertionError("no timer expected")

    def _port(self, *args, **kw):
        port = FakePort(*args, **kw)
        self.ports.append(port)
        return port

    def listenTCP(self, port, factory, interface=""):
        return self._port("tcp", port, factory, interface)

    def listenSSL(self, port, factory, options, interface=""):
        return self._port("ssl", port, factory, interface, options)

    def listenUDP(self, port, proto, interface=""):
        return self._port("udp", port, proto, interface)


class ServiceTests(unittest.TestCase):

    def setUp(self):
        self.office = Office(office_config())
        self.reactor = FakeReactor()
        self.tls = None
        self.service = ProvisioningService(self.office, FakePhoneBook(), FakeLeases(),
                                           reactor=self.reactor, tls_options=lambda: self.tls)

    def listening(self):
        return sorted((p.kind, p.port, p.interface) for p in self.reactor.ports if not p.stopped)

    def test_http_and_tftp_on_the_lan_address(self):
        self.service.startService()
        self.assertEqual(self.listening(), [("tcp", 8089, "192.168.2.254"),
                                            ("udp", 69, "192.168.2.254")])
        self.assertEqual(self.office.status["provisioning"].state, "up")
        self.service.stopService()
        self.assertEqual(self.listening(), [])

    def test_https_on_the_next_port_with_a_certificate(self):
        self.tls = object()
        self.service.startService()
        self.assertIn(("ssl", 8090, "192.168.2.254"), self.listening())
        ssl, = [p for p in self.reactor.ports if p.kind == "ssl"]
        self.assertIs(ssl.options, self.tls)

    def test_follows_the_port_and_the_switch(self):
        self.service.startService()
        self.office.update_settings("provisioning", {"port": "8095"})
        self.assertIn(("tcp", 8095, "192.168.2.254"), self.listening())
        self.assertNotIn(("tcp", 8089, "192.168.2.254"), self.listening())
        self.office.update_settings("provisioning", {"enabled": "no"})
        self.assertEqual(self.listening(), [])
        self.assertEqual(self.office.status["provisioning"].state, "disabled")

    def test_a_transfer_port_is_on_the_lan_address(self):
        self.service.startService()
        port = self.service._listen_transfer(object())
        self.assertEqual((port.kind, port.port, port.interface), ("udp", 0, "192.168.2.254"))
