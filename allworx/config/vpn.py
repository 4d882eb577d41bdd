# -*- test-case-name: allworx.tests.core.test_config_vpn -*-
"""
The readers and writers of the keys of sites and remote access (SPEC 16):
WireGuard keys, an interface name, lists of networks, ranges of
extensions, an endpoint; and `check_vpn`, the checks between `[vpn]`,
`[site NAME]`, `[device NAME]` and the rest of the office (overlapping
networks and extension ranges, tunnel addresses, owners).

Like `values`, each parse_* takes a key's text and returns its value or
raises ValueError with a sentence; each format_* writes the value back.
This module sits between `values` and `model`: it imports only `values`,
and `check_vpn` takes the loaded Config and the `err` of the cross-checks.
"""

import base64
import binascii
import ipaddress
import re

from allworx.config.values import parse_fqdn, parse_port

# ---------------------------------------------------------------- readers

# What Linux takes as an interface name (IFNAMSIZ 16 with its NUL), without
# the characters `ip` and file names would trip on.
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")

WG_KEY_BYTES = 32


def parse_interface_name(text):
    t = text.strip()
    if not _IFNAME.match(t) or t in (".", ".."):
        raise ValueError("%r is not an interface name (1 to 15 letters, digits, '.', '_' or '-')"
                         % text)
    return t


def parse_wg_key(text):
    """A WireGuard key: standard base64 of 32 bytes (44 characters, the last '=')."""
    t = text.strip()
    try:
        raw = base64.b64decode(t, validate=True)
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or len(raw) != WG_KEY_BYTES or len(t) != 44:
        raise ValueError("%r is not a WireGuard key (base64 of 32 bytes, 44 characters "
                         "ending in '=', as `wg pubkey` or `allworx vpn pubkey` prints)" % text)
    if raw == bytes(WG_KEY_BYTES):
        raise ValueError("the all-zero key is not a public key")
    # Written back as read; the canonical base64 of the same bytes.
    return base64.b64encode(raw).decode("ascii")


def parse_networks(text):
    """`192.168.3.0/24 10.8.0.0/16` -> a tuple of IPv4Network, none twice."""
    out = []
    for item in text.replace(",", " ").split():
        if "/" not in item:
            raise ValueError("%r needs a prefix length, like 192.168.3.0/24" % item)
        try:
            net = ipaddress.IPv4Network(item, strict=False)
        except ValueError:
            raise ValueError("%r is not an IPv4 network like 192.168.3.0/24" % item)
        if str(net.network_address) != item.split("/")[0]:
            raise ValueError("%s has host bits set: the network is %s" % (item, net))
        if net in out:
            raise ValueError("%s is listed twice" % net)
        out.append(net)
    return tuple(out)


def format_networks(value):
    return " ".join(str(n) for n in value)


def parse_extension_ranges(text):
    """
    `200-299 3000-3099 250` -> (('200', '299'), ('3000', '3099'), ('250', '250')):
    ranges of extensions, both ends of one length (2 to 8 digits), in order.
    """
    out = []
    for item in text.replace(",", " ").split():
        first, sep, last = item.partition("-")
        last = last if sep else first
        for end in (first, last):
            if not (end.isascii() and end.isdigit() and 2 <= len(end) <= 8):
                raise ValueError("%r is not an extension or a range of them like 200-299" % item)
        if len(first) != len(last):
            raise ValueError("%s: both ends of a range have the same number of digits" % item)
        if last < first:
            raise ValueError("the range %s is backwards" % item)
        for other in out:
            if ranges_overlap((first, last), other):
                raise ValueError("%s overlaps %s" % (item, format_range_item(other)))
        out.append((first, last))
    return tuple(out)


def format_range_item(value):
    first, last = value
    return first if first == last else "%s-%s" % (first, last)


def format_extension_ranges(value):
    return " ".join(format_range_item(r) for r in value)


def in_range(extension, range_):
    """Whether `extension` (digits) falls in `range_` (first, last)."""
    first, last = range_
    return len(extension) == len(first) and first <= extension <= last


def ranges_overlap(a, b):
    return len(a[0]) == len(b[0]) and not (a[1] < b[0] or b[1] < a[0])


def parse_endpoint(text):
    """`vpn.example.com`, `203.0.113.2:51820` -> (host, port or None)."""
    t = text.strip()
    host, sep, port = t.rpartition(":")
    if not sep:
        return (parse_fqdn(t), None)
    return (parse_fqdn(host), parse_port(port))


def format_endpoint(value):
    if value is None:
        return ""
    host, port = value
    return host if port is None else "%s:%d" % (host, port)


# ---------------------------------------------------------------- the checks

def _usable(ip, net):
    return ip in net and ip not in (net.network_address, net.broadcast_address)


def check_vpn(c, err, declared):
    """The checks of sites and remote access between sections (SPEC 16)."""
    vpn = c.vpn
    if not vpn.enabled:
        for kind, items in (("site", c.sites), ("device", c.devices)):
            for name in sorted(items):
                err("%s %s" % (kind, name), None, "needs [vpn] enabled = yes")
        return
    if vpn.address is None:
        err("vpn", "address", "is required when enabled = yes (this server's tunnel address, "
            "like 192.168.99.1/24)")
        return
    if vpn.interface in (c.lan.interface, c.wan.interface):
        err("vpn", "interface", "%s is already the %s interface" % (
            vpn.interface, "LAN" if vpn.interface == c.lan.interface else "WAN"))
    tunnel = vpn.address.network
    lan = c.lan_network
    wan = c.wan.address.network if c.wan.address is not None else None
    if tunnel.overlaps(lan):
        err("vpn", "address", "the tunnel subnet %s overlaps the LAN %s" % (tunnel, lan))
    elif wan is not None and tunnel.overlaps(wan):
        err("vpn", "address", "the tunnel subnet %s overlaps the WAN %s" % (tunnel, wan))
    udp = {c.dns.port: "DNS", c.ntp.port: "NTP", 67: "the DHCP server"}
    if c.sip.enabled:
        udp[c.sip.port] = "SIP"
    if vpn.port in udp:
        err("vpn", "port", "%d/udp is already the port of %s" % (vpn.port, udp[vpn.port]))
    elif c.sip.enabled and c.sip.rtp_ports[0] <= vpn.port <= c.sip.rtp_ports[1]:
        err("vpn", "port", "%d is inside [sip] rtp_ports" % vpn.port)

    addresses = {vpn.address.ip: "this server ([vpn] address)"}
    keys = {}
    peers = [("site", s) for s in sorted(c.sites.values(), key=lambda s: s.name)]
    peers += [("device", d) for d in sorted(c.devices.values(), key=lambda d: d.name)]
    for kind, peer in peers:
        section = "%s %s" % (kind, peer.name)
        if not _usable(peer.address, tunnel):
            err(section, "address", "%s is not a host address of the tunnel subnet %s"
                % (peer.address, tunnel))
        elif peer.address in addresses:
            err(section, "address", "%s is already the tunnel address of %s"
                % (peer.address, addresses[peer.address]))
        else:
            addresses[peer.address] = "%s %s" % (kind, peer.name)
        if peer.public_key is not None:
            if peer.public_key in keys:
                err(section, "public_key", "is already the key of %s" % keys[peer.public_key])
            keys[peer.public_key] = "%s %s" % (kind, peer.name)

    _check_sites(c, err, tunnel, lan, wan)
    users = declared.get("user", c.users)
    for d in c.devices.values():
        if d.user not in users:
            err("device %s" % d.name, "user", "names unknown user %r" % d.user)


def _check_sites(c, err, tunnel, lan, wan):
    networks = []           # (network, site name)
    ranges = []             # (range, site name)
    local = sorted((u.extension, u.name) for u in c.users.values() if u.extension)
    for s in sorted(c.sites.values(), key=lambda s: s.name):
        section = "site %s" % s.name
        for net in s.networks:
            if net.overlaps(lan):
                err(section, "networks", "%s overlaps the LAN %s" % (net, lan))
            elif net.overlaps(tunnel):
                err(section, "networks", "%s overlaps the tunnel subnet %s" % (net, tunnel))
            elif wan is not None and net.overlaps(wan):
                err(section, "networks", "%s overlaps the WAN %s" % (net, wan))
            else:
                other = next((o for o in networks if o[0].overlaps(net)), None)
                if other is not None:
                    err(section, "networks", "%s overlaps %s of site %s" % (net, other[0], other[1]))
                networks.append((net, s.name))
        for r in s.extensions:
            mine = [name for ext, name in local if in_range(ext, r)]
            if mine:
                err(section, "extensions", "%s holds the extension of local user %s"
                    % (format_range_item(r), mine[0]))
            elif c.sip.voicemail_number and in_range(c.sip.voicemail_number, r):
                err(section, "extensions", "%s holds the voicemail number %s"
                    % (format_range_item(r), c.sip.voicemail_number))
            other = next((o for o in ranges if ranges_overlap(o[0], r)), None)
            if other is not None:
                err(section, "extensions", "%s overlaps %s of site %s"
                    % (format_range_item(r), format_range_item(other[0]), other[1]))
            ranges.append((r, s.name))
        # A subdomain (branch.example.com under example.com) is fine: its
        # names are asked of that site, the rest answered here.
        if s.domain is not None and s.domain == c.system.domain:
            err(section, "domain", "%s is this office's own domain" % s.domain)
