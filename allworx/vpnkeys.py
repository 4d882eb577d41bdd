# -*- test-case-name: allworx.tests.core.test_vpnkeys -*-
"""
The WireGuard keys the server keeps (SPEC 16): its own private key,
DATA_DIR/vpn/private.key, made at the first start with `[vpn] enabled`
(or by `allworx vpn pubkey` when it asks before that start); and the key
pairs it makes for `[device]`s that name no public key,
DATA_DIR/vpn/devices/NAME.key. Each file holds the base64 of 32 random
bytes clamped as Curve25519 requires, mode 0600, in a 0700 directory.

A key file is created once and never replaced: written in full and
fsynced under a temporary name, then linked to its name, which fails if
another process made it first (then its key is the one used), so the
server and the command never hand out two different keys.

Blocking file work: the server calls these at its start, and the command.
"""

import base64
import binascii
import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from allworx.atomicfile import ensure_directory, fsync_directory, write_synced

KEY_BYTES = 32


class VpnKeyError(Exception):
    """A key file that cannot be read or is not a key; the message says which and why."""


def clamp(raw):
    """32 bytes made a Curve25519 private key (RFC 7748 5: the low 3 bits and the top bit cleared, bit 254 set)."""
    b = bytearray(raw)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return bytes(b)


def generate_private_key():
    """A new private key, as base64 text."""
    return base64.b64encode(clamp(os.urandom(KEY_BYTES))).decode("ascii")


def decode_key(text):
    """The 32 bytes of a base64 key; ValueError when it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ValueError("not a WireGuard key (base64 of 32 bytes)")
    return raw


def public_key(private_b64):
    """The public key (base64) of a private key (base64)."""
    private = X25519PrivateKey.from_private_bytes(decode_key(private_b64))
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def key_hex(b64):
    """A base64 key as the lower-case hex the UAPI protocol speaks."""
    return decode_key(b64).hex()


def hex_key(hex_text):
    """A UAPI hex key back as base64."""
    raw = bytes.fromhex(hex_text)
    if len(raw) != KEY_BYTES:
        raise ValueError("not a 32-byte key: %r" % hex_text)
    return base64.b64encode(raw).decode("ascii")


# ---------------------------------------------------------------- the files

def vpn_dir(data_dir):
    return os.path.join(data_dir, "vpn")


def server_key_path(data_dir):
    return os.path.join(vpn_dir(data_dir), "private.key")


def device_key_path(data_dir, name):
    if not name or "/" in name or name.startswith("."):
        raise ValueError("%r is not a device name" % name)
    return os.path.join(vpn_dir(data_dir), "devices", name + ".key")


def read_key(path):
    """The private key (base64) kept at `path`, or None when there is none."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise VpnKeyError("%s: cannot read: %s" % (path, getattr(e, "strerror", None) or e))
    try:
        decode_key(text)
    except ValueError as e:
        raise VpnKeyError("%s: %s" % (path, e))
    return text


def _create_key(path):
    """Make a key at `path` unless one is there: (key, whether made now)."""
    existing = read_key(path)
    if existing is not None:
        return existing, False
    directory = os.path.dirname(path)
    ensure_directory(directory, 0o700)
    key = generate_private_key()
    tmp = os.path.join(directory, ".%s.tmp-%d" % (os.path.basename(path), os.getpid()))
    try:
        write_synced(tmp, (key + "\n").encode("ascii"), 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return read_key(path), False
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    fsync_directory(directory)
    return key, True


def ensure_server_key(data_dir):
    """
    The server's private key, made if missing: (key, whether made now).
    data_dir is made as the server makes it (0711) when missing.
    """
    os.makedirs(data_dir, mode=0o711, exist_ok=True)
    return _create_key(server_key_path(data_dir))


def read_server_key(data_dir):
    return read_key(server_key_path(data_dir))


def ensure_device_key(data_dir, name):
    """A server-made device's private key, made if missing: (key, whether made now)."""
    os.makedirs(data_dir, mode=0o711, exist_ok=True)
    ensure_directory(vpn_dir(data_dir), 0o700)
    return _create_key(device_key_path(data_dir, name))


def read_device_key(data_dir, name):
    return read_key(device_key_path(data_dir, name))


def remove_device_key(data_dir, name):
    """Forget a server-made device key (a new one is made on next use)."""
    try:
        os.unlink(device_key_path(data_dir, name))
    except FileNotFoundError:
        pass
