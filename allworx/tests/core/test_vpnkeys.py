"""
Tests for the server's WireGuard keys (allworx.vpnkeys) and `allworx vpn
pubkey`: made once, 0600 in a 0700 directory, clamped, the public key
derived by X25519; the command prints it alone on one line.
"""

import base64
import io
import os
import stat

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from twisted.trial import unittest

from allworx import cli, vpnkeys
from allworx.tests.confs import MINIMAL, with_sections

# RFC 7748 6.1: Alice's private key (as scalar bytes) and her public key.
RFC_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RFC_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def b64(raw):
    return base64.b64encode(raw).decode("ascii")


class KeyTests(unittest.TestCase):

    def test_generated_keys_are_clamped(self):
        for _ in range(20):
            raw = base64.b64decode(vpnkeys.generate_private_key())
            self.assertEqual(len(raw), 32)
            self.assertEqual(raw[0] & 7, 0)
            self.assertEqual(raw[31] & 0xC0, 0x40)

    def test_clamp(self):
        self.assertEqual(vpnkeys.clamp(b"\xff" * 32), b"\xf8" + b"\xff" * 30 + b"\x7f")
        self.assertEqual(vpnkeys.clamp(bytes(32)), bytes(31) + b"\x40")

    def test_public_key_of_the_rfc_vector(self):
        self.assertEqual(vpnkeys.public_key(b64(RFC_PRIVATE)), b64(RFC_PUBLIC))

    def test_public_key_agrees_with_x25519(self):
        key = vpnkeys.generate_private_key()
        other = X25519PrivateKey.generate()
        mine = X25519PrivateKey.from_private_bytes(base64.b64decode(key))
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
        theirs = X25519PublicKey.from_public_bytes(base64.b64decode(vpnkeys.public_key(key)))
        self.assertEqual(other.exchange(theirs), mine.exchange(other.public_key()))

    def test_hex(self):
        key = b64(bytes(range(32)))
        self.assertEqual(vpnkeys.key_hex(key), bytes(range(32)).hex())
        self.assertEqual(vpnkeys.hex_key(bytes(range(32)).hex()), key)
        self.assertRaises(ValueError, vpnkeys.key_hex, "AAAA")
        self.assertRaises(ValueError, vpnkeys.hex_key, "00ff")


class KeyFileTests(unittest.TestCase):

    def setUp(self):
        self.data = os.path.join(os.path.abspath(self.mktemp()), "data")

    def test_made_once_0600_in_0700(self):
        key, made = vpnkeys.ensure_server_key(self.data)
        self.assertTrue(made)
        path = vpnkeys.server_key_path(self.data)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(self.data).st_mode), 0o711)
        with open(path) as f:
            self.assertEqual(f.read(), key + "\n")
        self.assertEqual(vpnkeys.ensure_server_key(self.data), (key, False))
        self.assertEqual(vpnkeys.read_server_key(self.data), key)
        self.assertEqual([n for n in os.listdir(os.path.dirname(path))], ["private.key"])

    def test_a_key_made_meanwhile_wins(self):
        """Another process links its key first: this one reads and returns that key."""
        theirs = vpnkeys.generate_private_key()
        real_link = os.link

        def link(src, dst):
            with open(dst, "w") as f:
                f.write(theirs + "\n")
            return real_link(src, dst)
        self.patch(os, "link", link)
        self.assertEqual(vpnkeys.ensure_server_key(self.data), (theirs, False))
        self.assertEqual(os.listdir(vpnkeys.vpn_dir(self.data)), ["private.key"])

    def test_a_broken_key_file_is_named(self):
        os.makedirs(vpnkeys.vpn_dir(self.data))
        with open(vpnkeys.server_key_path(self.data), "w") as f:
            f.write("garbage\n")
        e = self.assertRaises(vpnkeys.VpnKeyError, vpnkeys.ensure_server_key, self.data)
        self.assertIn("private.key", str(e))

    def test_device_keys(self):
        key, made = vpnkeys.ensure_device_key(self.data, "alice-phone")
        self.assertTrue(made)
        path = vpnkeys.device_key_path(self.data, "alice-phone")
        self.assertTrue(path.endswith("/vpn/devices/alice-phone.key"))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(vpnkeys.ensure_device_key(self.data, "alice-phone"), (key, False))
        vpnkeys.remove_device_key(self.data, "alice-phone")
        self.assertIsNone(vpnkeys.read_device_key(self.data, "alice-phone"))
        for bad in ("", "../x", ".hidden"):
            self.assertRaises(ValueError, vpnkeys.device_key_path, self.data, bad)


class PubkeyCommandTests(unittest.TestCase):

    def setUp(self):
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.data = os.path.join(base, "data")
        self.conf = os.path.join(base, "tap.conf")

    def run_cli(self, conf_text, *argv):
        with open(self.conf, "w") as f:
            f.write(conf_text)
        out, err = io.StringIO(), io.StringIO()
        code = cli.vpn(["pubkey", "-c", self.conf, "--data-dir", self.data] + list(argv), out, err)
        return code, out.getvalue(), err.getvalue()

    def test_prints_the_public_key_alone(self):
        text = with_sections("[vpn]\nenabled = yes\naddress = 192.168.99.1/24\n")
        code, out, err = self.run_cli(text)
        self.assertEqual(code, 0, err)
        key = vpnkeys.read_server_key(self.data)
        self.assertEqual(out, vpnkeys.public_key(key) + "\n")
        self.assertIn("made the server's key", err)
        # The second time, the same key and nothing said.
        self.assertEqual(self.run_cli(text), (0, out, ""))

    def test_not_enabled(self):
        code, out, err = self.run_cli(MINIMAL)
        self.assertEqual((code, out), (1, ""))
        self.assertIn("[vpn] is not enabled", err)
        self.assertFalse(os.path.exists(self.data))

    def test_bad_config(self):
        code, out, err = self.run_cli(with_sections("[vpn]\nenabled = yes\n"))
        self.assertEqual((code, out), (1, ""))
        self.assertIn("[vpn] address", err)

    def test_dispatched_from_main(self):
        self.assertIs(cli.COMMANDS["vpn"], cli.vpn)
