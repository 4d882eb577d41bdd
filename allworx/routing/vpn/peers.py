# -*- test-case-name: allworx.tests.vpn.test_peers -*-
"""
What the WireGuard interface should hold, as plain data: `Tunnel` (the
private key, the port, the peers) and `Peer` (public key, allowed IPs,
endpoint, keepalive), built from the config by `tunnel_for`; and
`changes`, the difference between two tunnels that both engines (the
UAPI text of wireguard-go, the kernel's netlink messages) render.

- a `[site]` is a peer whose allowed IPs are its server's tunnel address
  and its `networks`; with an `endpoint` it is dialled, and kept open by a
  keepalive every 25 s (the side behind NAT keeps the path open);
- a `[device]` is a peer whose allowed IP is its tunnel address alone; it
  dials the server (its own config keeps the keepalive).
"""

import ipaddress

import attr

KEEPALIVE = 25


@attr.s(frozen=True, slots=True)
class Peer:
    name = attr.ib()                # "site branch", "device alice-phone"
    public_key = attr.ib()          # base64
    allowed_ips = attr.ib()         # tuple of IPv4Network, sorted
    endpoint = attr.ib(default=None)    # (ip text, port) or None
    keepalive = attr.ib(default=0)      # seconds, 0 = off


@attr.s(frozen=True, slots=True)
class Tunnel:
    private_key = attr.ib()         # base64
    listen_port = attr.ib()
    peers = attr.ib()               # tuple of Peer, in name order

    def peer_by_key(self):
        return {p.public_key: p for p in self.peers}


@attr.s(frozen=True, slots=True)
class PeerChange:
    """One peer to add (`new`), change (`old` and `new`) or remove (`old`)."""

    old = attr.ib()
    new = attr.ib()

    @property
    def kind(self):
        if self.old is None:
            return "add"
        if self.new is None:
            return "remove"
        return "update"

    @property
    def public_key(self):
        return (self.new or self.old).public_key


@attr.s(frozen=True, slots=True)
class TunnelChanges:
    private_key = attr.ib(default=None)     # the new key, when it changed
    listen_port = attr.ib(default=None)     # the new port, when it changed
    peers = attr.ib(default=())             # tuple of PeerChange: removals first

    def __bool__(self):
        return bool(self.private_key or self.listen_port or self.peers)


def _host(ip):
    return ipaddress.IPv4Network("%s/32" % ip)


def site_endpoint(site):
    """The (host, port) a site is dialled at, before resolution; None when not dialled."""
    if site.endpoint is None:
        return None
    host, port = site.endpoint
    return (host, port or 51820)


def tunnel_for(config, private_key, device_keys, endpoints):
    """
    The Tunnel `config` asks for. `device_keys` {device name: public key}
    gives the keys of server-made devices; `endpoints` {site name: (ip,
    port)} the sites' endpoints resolved (a site absent there is not dialled
    until its name resolves).
    """
    peers = []
    for name in sorted(config.sites):
        s = config.sites[name]
        allowed = {_host(s.address)} | set(s.networks)
        endpoint = endpoints.get(name)
        peers.append(Peer("site %s" % name, s.public_key, tuple(sorted(allowed)), endpoint,
                          KEEPALIVE if site_endpoint(s) is not None else 0))
    for name in sorted(config.devices):
        d = config.devices[name]
        key = d.public_key or device_keys.get(name)
        if key is None:
            continue
        peers.append(Peer("device %s" % name, key, (_host(d.address),)))
    return Tunnel(private_key, config.vpn.port, tuple(peers))


def routes_for(config):
    """The networks routed over the tunnel: each site's networks and each device's /32."""
    nets = set()
    for s in config.sites.values():
        nets.update(s.networks)
    for d in config.devices.values():
        nets.add(_host(d.address))
    return tuple(sorted(nets))


def changes(old, new):
    """
    What turns `old` (a Tunnel, or None for an empty interface) into `new`:
    peers removed first (so a key that moves from one name to another is
    free again), then the ones added and changed, each in name order.
    """
    if old is None:
        return TunnelChanges(new.private_key, new.listen_port,
                             tuple(PeerChange(None, p) for p in new.peers))
    before, after = old.peer_by_key(), new.peer_by_key()
    removed = [PeerChange(before[k], None) for k in before if k not in after]
    rest = []
    for p in new.peers:
        was = before.get(p.public_key)
        if was is None:
            rest.append(PeerChange(None, p))
        elif was != p:
            rest.append(PeerChange(was, p))
    removed.sort(key=lambda c: c.old.name)
    return TunnelChanges(
        new.private_key if new.private_key != old.private_key else None,
        new.listen_port if new.listen_port != old.listen_port else None,
        tuple(removed + rest))
