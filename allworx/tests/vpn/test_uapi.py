"""
Tests for wireguard-go's UAPI (allworx.routing.vpn.uapi): the `set=1` text
for a config and for a change, the `get=1` answer read, and the client
over a socket (a StringTransport).
"""

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from allworx.routing.vpn import peers as P
from allworx.routing.vpn import uapi as U
from allworx.tests.core.test_config_vpn import KEY1, KEY2, VPN
from allworx.tests.vpn.test_peers import PHONE_KEY, SERVER_KEY, tunnel
from allworx.vpnkeys import key_hex

H1, H2, HPHONE, HSERVER = (key_hex(k) for k in (KEY1, KEY2, PHONE_KEY, SERVER_KEY))


class SetTextTests(unittest.TestCase):

    def test_first_configuration(self):
        text = U.set_text(P.changes(None, tunnel()), replace_peers=True)
        self.assertEqual(text, "\n".join([
            "set=1", "private_key=" + HSERVER, "listen_port=51820", "replace_peers=true",
            "public_key=" + H1, "endpoint=198.51.100.2:51820",
            "persistent_keepalive_interval=25", "replace_allowed_ips=true",
            "allowed_ip=192.168.3.0/24", "allowed_ip=192.168.99.2/32",
            "public_key=" + H2, "persistent_keepalive_interval=0", "replace_allowed_ips=true",
            "allowed_ip=192.168.99.10/32",
            "public_key=" + HPHONE, "persistent_keepalive_interval=0",
            "replace_allowed_ips=true", "allowed_ip=192.168.99.11/32",
        ]) + "\n\n")

    def test_keys_are_hex(self):
        self.assertEqual(HSERVER, "10" * 31 + "50")

    def test_nothing_to_say(self):
        self.assertIsNone(U.set_text(P.changes(tunnel(), tunnel())))

    def test_only_what_changed(self):
        new = tunnel(VPN.replace("networks = 192.168.3.0/24", "networks = 192.168.3.0/24 10.3.0.0/16")
                     .replace("address = 192.168.99.10\n", "address = 192.168.99.20\n"),
                     endpoints={"branch": ("198.51.100.9", 51820)})
        self.assertEqual(U.set_text(P.changes(tunnel(), new)), "\n".join([
            "set=1",
            "public_key=" + H1, "update_only=true", "endpoint=198.51.100.9:51820",
            "replace_allowed_ips=true", "allowed_ip=10.3.0.0/16", "allowed_ip=192.168.3.0/24",
            "allowed_ip=192.168.99.2/32",
            "public_key=" + H2, "update_only=true", "replace_allowed_ips=true",
            "allowed_ip=192.168.99.20/32",
        ]) + "\n\n")

    def test_removed_peer_and_new_port(self):
        without_laptop = (VPN.split("[device alice-laptop]")[0] + "[device alice-phone]"
                          + VPN.split("[device alice-phone]")[1])
        new = tunnel(without_laptop.replace("enabled = yes", "enabled = yes\nport = 51821"))
        self.assertEqual(U.set_text(P.changes(tunnel(), new)), "\n".join([
            "set=1", "listen_port=51821", "public_key=" + H2, "remove=true"]) + "\n\n")

    def test_an_endpoint_taken_away_makes_the_peer_anew(self):
        new = tunnel(endpoints={})
        text = U.set_text(P.changes(tunnel(), new))
        self.assertTrue(text.startswith("set=1\npublic_key=%s\nremove=true\npublic_key=%s\n"
                                        "persistent_keepalive_interval=25\n" % (H1, H1)), text)
        self.assertNotIn("endpoint=", text)


GET_ANSWER = """\
private_key=%s
listen_port=51820
public_key=%s
preshared_key=0000000000000000000000000000000000000000000000000000000000000000
protocol_version=1
endpoint=198.51.100.2:51820
last_handshake_time_sec=1700000000
last_handshake_time_nsec=5
tx_bytes=1234
rx_bytes=5678
persistent_keepalive_interval=25
allowed_ip=192.168.3.0/24
allowed_ip=192.168.99.2/32
public_key=%s
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=0
rx_bytes=0
persistent_keepalive_interval=0
allowed_ip=192.168.99.10/32
errno=0

""" % (HSERVER, H1, H2)


class ParseGetTests(unittest.TestCase):

    def test_peers(self):
        device, peers = U.parse_get(GET_ANSWER)
        self.assertEqual(device, {"listen_port": "51820"})       # never the private key
        self.assertEqual(peers[0], {
            "public_key": KEY1, "endpoint": "198.51.100.2:51820", "protocol_version": 1,
            "last_handshake_time_sec": 1700000000, "last_handshake_time_nsec": 5,
            "tx_bytes": 1234, "rx_bytes": 5678, "persistent_keepalive_interval": 25,
            "allowed_ips": ["192.168.3.0/24", "192.168.99.2/32"]})
        self.assertEqual((peers[1]["public_key"], peers[1]["endpoint"], peers[1]["rx_bytes"]),
                         (KEY2, None, 0))

    def test_errno(self):
        self.assertRaises(U.UapiError, U.parse_get, "errno=22\n\n")
        self.assertRaises(U.UapiError, U.parse_get, "listen_port=1\n\n")


class ClientTests(unittest.TestCase):

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.client = U.UapiClient(self.reactor, "/run/test/awg0.sock")

    def connected(self):
        """The protocol of the last connection, with a StringTransport."""
        path, factory = self.reactor.unixClients[-1][:2]
        self.assertEqual(path, "/run/test/awg0.sock")
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        # The endpoint's wrapper fires connect() when the connection is made.
        return proto, transport

    def test_set(self):
        d = self.client.set("set=1\nlisten_port=1\n\n")
        proto, transport = self.connected()
        self.assertEqual(transport.value(), b"set=1\nlisten_port=1\n\n")
        proto.dataReceived(b"errno=0\n")
        self.assertNoResult(d)
        proto.dataReceived(b"\n")
        self.assertIsNone(self.successResultOf(d))

    def test_set_refused(self):
        d = self.client.set("set=1\nlisten_port=1\n\n")
        proto, _ = self.connected()
        proto.dataReceived(b"errno=22\n\n")
        self.failureResultOf(d, U.UapiError)

    def test_get(self):
        d = self.client.get()
        proto, transport = self.connected()
        self.assertEqual(transport.value(), b"get=1\n\n")
        data = GET_ANSWER.encode()
        proto.dataReceived(data[:100])
        proto.dataReceived(data[100:])
        device, peers = self.successResultOf(d)
        self.assertEqual([p["public_key"] for p in peers], [KEY1, KEY2])

    def test_closed_early(self):
        d = self.client.get()
        proto, _ = self.connected()
        proto.dataReceived(b"listen_port=1\n")
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure
        proto.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, U.UapiError)

    def test_unreachable(self):
        d = self.client.get()
        from twisted.internet.error import ConnectionRefusedError
        self.reactor.unixClients[-1][1].clientConnectionFailed(None, ConnectionRefusedError())
        self.failureResultOf(d, U.UapiError)

    def test_socket_path(self):
        self.assertEqual(U.socket_path("awg0"), "/var/run/wireguard/awg0.sock")
