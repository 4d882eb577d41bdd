# -*- test-case-name: allworx.tests.vpn.test_netlink -*-
"""
The kernel's side of the tunnel, through netlink (pyroute2):

- `TunnelLinks`: the interface itself (created as `type wireguard` where the
  kernel has the module; wireguard-go makes its own TUN), its address, up,
  and the routes over it;
- `netlink_calls(changes)`: a `peers.TunnelChanges` as the calls of
  pyroute2's `WireGuard.set` (one per device change and per peer), pure
  and unit-tested against the messages they encode;
- `KernelWireGuard`: sends those calls to the kernel's module (generic
  netlink family "wireguard") and reads the peers back in the same shape
  as the UAPI's `get=1`.

Netlink calls are quick and local; they are made in the reactor thread, as
the network service does.
"""

import errno

from twisted.internet import defer


class NoKernelModule(Exception):
    """The kernel cannot make a WireGuard interface (no module)."""


def netlink_calls(changes):
    """
    [kwargs of WireGuard.set(IFNAME, **kwargs)] for `changes`: the device's
    key and port first (when they changed), then one call per peer.
    """
    calls = []
    device = {}
    if changes.private_key is not None:
        device["private_key"] = changes.private_key
    if changes.listen_port is not None:
        device["listen_port"] = changes.listen_port
    if device:
        calls.append(device)
    for change in changes.peers:
        old, new = change.old, change.new
        if new is None or (old is not None and old.endpoint is not None and new.endpoint is None):
            calls.append({"peer": {"public_key": old.public_key, "remove": True}})
            if new is None:
                continue
            old = None
        peer = {"public_key": new.public_key}
        if old is not None:
            peer["update_only"] = True
        if new.endpoint is not None and (old is None or old.endpoint != new.endpoint):
            peer["endpoint_addr"], peer["endpoint_port"] = new.endpoint
        if old is None or old.keepalive != new.keepalive:
            peer["persistent_keepalive"] = new.keepalive
        if old is None or old.allowed_ips != new.allowed_ips:
            peer["replace_allowed_ips"] = True
            peer["allowed_ips"] = [str(n) for n in new.allowed_ips]
        calls.append({"peer": peer})
    return calls


def peers_from_info(messages):
    """The peers of a WireGuard.info() answer, as parse_get's peer dicts."""
    out = []
    for msg in messages:
        for peer in msg.get_attr("WGDEVICE_A_PEERS") or ():
            key = peer.get_attr("WGPEER_A_PUBLIC_KEY")
            handshake = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME") or {}
            endpoint = peer.get_attr("WGPEER_A_ENDPOINT")
            out.append({
                "public_key": key.decode("ascii") if isinstance(key, bytes) else key,
                "endpoint": "%s:%d" % (endpoint["addr"], endpoint["port"]) if endpoint else None,
                "last_handshake_time_sec": handshake.get("tv_sec", 0),
                "rx_bytes": peer.get_attr("WGPEER_A_RX_BYTES") or 0,
                "tx_bytes": peer.get_attr("WGPEER_A_TX_BYTES") or 0,
                "allowed_ips": [a.get("addr") for a in peer.get_attr("WGPEER_A_ALLOWEDIPS") or ()],
            })
    return out


class KernelWireGuard:
    """The kernel module's interface `ifname`, configured through generic netlink."""

    kind = "kernel"

    def __init__(self, ifname, wireguard_factory=None):
        self.ifname = ifname
        if wireguard_factory is None:
            from pyroute2 import WireGuard as wireguard_factory
        self._factory = wireguard_factory
        self._wg = None

    def _socket(self):
        if self._wg is None:
            self._wg = self._factory()
        return self._wg

    def apply(self, changes, replace_peers=False):
        """Send `changes`; a Deferred that fails with the netlink error."""
        try:
            wg = self._socket()
            for call in netlink_calls(changes):
                wg.set(self.ifname, **call)
        except Exception as e:
            return defer.fail(e)
        return defer.succeed(None)

    def peers(self):
        try:
            return defer.succeed(peers_from_info(self._socket().info(self.ifname)))
        except Exception as e:
            return defer.fail(e)

    def close(self):
        if self._wg is not None:
            self._wg.close()
            self._wg = None


class TunnelLinks:
    """The tunnel interface, its address and its routes, through an IPRoute."""

    def __init__(self, ipr):
        self.ipr = ipr

    def index(self, ifname):
        found = self.ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    def create_wireguard(self, ifname):
        """Make a kernel WireGuard interface; NoKernelModule when the kernel has none."""
        from pyroute2 import NetlinkError
        try:
            self.ipr.link("add", ifname=ifname, kind="wireguard")
        except NetlinkError as e:
            if e.code in (errno.EOPNOTSUPP, errno.ENODEV, errno.EINVAL, errno.ENOENT):
                raise NoKernelModule("the kernel has no WireGuard module (%s)" % e)
            raise

    def delete(self, ifname):
        index = self.index(ifname)
        if index is not None:
            self.ipr.link("del", index=index)

    def set_address(self, ifname, address, old=None):
        """Put `address` (IPv4Interface) on the interface, taking `old` off, and bring it up."""
        index = self.index(ifname)
        if index is None:
            raise OSError(errno.ENODEV, "interface %s does not exist" % ifname)
        if old is not None and old != address:
            try:
                self.ipr.addr("del", index=index, address=str(old.ip), prefixlen=old.network.prefixlen)
            except Exception:
                pass
        self.ipr.addr("replace", index=index, address=str(address.ip),
                      prefixlen=address.network.prefixlen)
        self.ipr.link("set", index=index, state="up")

    def add_route(self, ifname, network):
        self.ipr.route("replace", dst=str(network), oif=self.index(ifname))

    def del_route(self, ifname, network):
        index = self.index(ifname)
        if index is not None:
            self.ipr.route("del", dst=str(network), oif=index)

    def close(self):
        self.ipr.close()
