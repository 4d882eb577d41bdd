# -*- test-case-name: allworx.tests.web.test_wgdevices -*-
"""
A remote `[device]`'s WireGuard client config (SPEC 16), as the text the
WireGuard apps import and as its QR code (PNG, made with segno):

    [Interface]
    Address = ITS ADDRESS/32
    DNS = the server's tunnel address
    PrivateKey = ...

    [Peer]
    PublicKey = the server's
    Endpoint = [vpn] endpoint (host[:port], the port [vpn] port if none), else the WAN address
    AllowedIPs = the LAN, the tunnel subnet, every site's networks (a split tunnel)
    PersistentKeepalive = 25

The private key of a device the server made a key for is the one secret
shown, and only once: the first config (text or QR) after the key was made
carries it; `DATA_DIR/vpn/devices/NAME.shown` then holds that key's public
half (so it survives a restart, and a new key, whose public half differs,
is shown once again). Later configs say `PrivateKey = (shown once)`; a new
key (`new_key`) is the way to a config with a key again. A device that
brought its own public key gets a config that says to put its own private
key there.

The key files are small and made synchronously, in the reactor, as the vpn
service makes them: two requests cannot both show one key.
"""

import io
import os

import segno
from twisted.internet import defer

from allworx.atomicfile import ensure_directory, write_atomically
from allworx.vpnkeys import (
    VpnKeyError, device_key_path, ensure_device_key, public_key, read_device_key,
    read_server_key, remove_device_key)

SHOWN_ONCE = "(shown once)"
KEEPALIVE = 25
PNG_TYPE = b"image/png"
CONF_TYPE = b"text/plain; charset=utf-8"


class NoConfig(Exception):
    """No client config can be made now (the tunnel is off, no endpoint known); says why."""


def shown_path(data_dir, name):
    """Where the public half of the last private key shown for `name` is kept."""
    return device_key_path(data_dir, name)[:-len(".key")] + ".shown"


def _read_shown(data_dir, name):
    try:
        with open(shown_path(data_dir, name), encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def forget_shown(data_dir, name):
    try:
        os.unlink(shown_path(data_dir, name))
    except FileNotFoundError:
        pass


def server_made(device):
    return device.public_key is None


def endpoint_text(config, wan_address):
    """What devices dial: `[vpn] endpoint` (its port, else `[vpn] port`), else the WAN address."""
    vpn = config.vpn
    if vpn.endpoint is not None:
        host, port = vpn.endpoint
    elif wan_address:
        # The office keeps its WAN address with its prefix (203.0.113.2/24).
        host, port = str(getattr(wan_address, "ip", wan_address)), None
    else:
        raise NoConfig("the WAN address is not known yet: set [vpn] endpoint to the name or "
                       "address devices dial")
    return "%s:%d" % (host, port or vpn.port)


def allowed_ips(config):
    """The LAN, the tunnel subnet and every site's networks, each once, in that order."""
    nets = [config.lan_network, config.vpn.address.network]
    for name in sorted(config.sites):
        nets.extend(config.sites[name].networks)
    out = []
    for net in nets:
        if net not in out:
            out.append(net)
    return ", ".join(str(n) for n in out)


def _server_public_key(data_dir):
    try:
        key = read_server_key(data_dir)
    except VpnKeyError as e:
        raise NoConfig(str(e))
    if key is None:
        raise NoConfig("the server has no WireGuard key yet: it is made when the server "
                       "starts with [vpn] enabled = yes")
    return public_key(key)


def render(address, dns, private_key, server_key, endpoint, allowed):
    return ("[Interface]\n"
            "Address = %s/32\n"
            "DNS = %s\n"
            "PrivateKey = %s\n"
            "\n"
            "[Peer]\n"
            "PublicKey = %s\n"
            "Endpoint = %s\n"
            "AllowedIPs = %s\n"
            "PersistentKeepalive = %d\n" % (address, dns, private_key, server_key, endpoint,
                                             allowed, KEEPALIVE))


def client_config(config, data_dir, wan_address, name):
    """
    The config text of device `name` (KeyError if there is none). Shows a
    server-made private key if it was not shown yet, and notes that it was.
    """
    device = config.devices.get(name)
    if device is None:
        raise KeyError("device %s" % name)
    if not config.vpn.enabled or config.vpn.address is None:
        raise NoConfig("the tunnel is off: [vpn] enabled = no")
    server_key = _server_public_key(data_dir)
    endpoint = endpoint_text(config, wan_address)
    if not server_made(device):
        secret = "(this device's own private key: the one whose public key is %s)" % (
            device.public_key)
        return render(device.address, config.vpn.address.ip, secret, server_key, endpoint,
                      allowed_ips(config))
    try:
        key, _ = ensure_device_key(data_dir, name)
    except (OSError, VpnKeyError) as e:
        raise NoConfig("the device's key: %s" % e)
    pub = public_key(key)
    text = render(device.address, config.vpn.address.ip, key, server_key, endpoint,
                  allowed_ips(config))
    if _read_shown(data_dir, name) == pub:
        return text.replace("PrivateKey = %s\n" % key, "PrivateKey = %s\n" % SHOWN_ONCE)
    path = shown_path(data_dir, name)
    ensure_directory(os.path.dirname(path), 0o700)
    write_atomically(path, pub + "\n")
    return text


def key_state(config, data_dir, name):
    """`own` (the device's own key), `waiting` (a server key not shown yet) or `shown`."""
    device = config.devices[name]
    if not server_made(device):
        return "own"
    try:
        key = read_device_key(data_dir, name)
    except VpnKeyError:
        key = None
    if key is not None and _read_shown(data_dir, name) == public_key(key):
        return "shown"
    return "waiting"


def new_key(config, data_dir, name):
    """
    A new server-made key for device `name` (KeyError if none; ValueError
    if it brought its own): the old key is gone, the new one is shown once.
    Returns its public key; the vpn service must then be told (keys_changed).
    """
    device = config.devices.get(name)
    if device is None:
        raise KeyError("device %s" % name)
    if not server_made(device):
        raise ValueError("device %s brings its own key (public_key in tap.conf); the server "
                         "makes no key for it" % name)
    remove_device_key(data_dir, name)
    forget_shown(data_dir, name)
    key, _ = ensure_device_key(data_dir, name)
    return public_key(key)


def renew_key(ctx, name):
    """
    `new_key` for the admin pages and API (AdminContext `ctx`), then the
    running tunnel told: a Deferred of the new public key.
    """
    config = ctx.office.config
    try:
        key = new_key(config, config.system.data_dir, name)
    except Exception:
        return defer.fail()
    view = ctx.views.vpn
    d = defer.maybeDeferred(view.keys_changed) if view is not None else defer.succeed(None)
    return d.addCallback(lambda _: key)


def qr_png(text, scale=4):
    """The QR code of `text` as PNG bytes (what the WireGuard apps scan)."""
    out = io.BytesIO()
    segno.make(text, error="m", micro=False).save(out, kind="png", scale=scale, border=4)
    return out.getvalue()
