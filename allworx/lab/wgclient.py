# -*- test-case-name: allworx.tests.lab.test_sites -*-
"""
A WireGuard client in a lab host, from a device's client config (the text
`/api/v1/devices/NAME/wireguard.conf` gives, in wg-quick's format): the
remote user's laptop. Not wg-quick: wireguard-go runs in the host's
namespace (`LabRunner.popen`), is configured through its UAPI socket, and
the config's Address and AllowedIPs become the interface's address and
routes there. The config's DNS line is left to the caller.

    python -m allworx.lab.wgclient [--prefix awx] [--host laptop]
        [--interface awg2] CONFIG      # brings the tunnel up, then waits

Ctrl-C takes it down again.
"""

import argparse
import ipaddress
import os
import signal
import socket
import sys
import time

import attr

from allworx.lab.namespaces import Lab
from allworx.lab.processes import LabError
from allworx.lab.topology import DEFAULT_PREFIX
from allworx.routing.vpn.peers import Peer, Tunnel, changes
from allworx.routing.vpn.uapi import GET_TEXT, parse_get, set_text, socket_path

NOT_SHOWN = "(shown once)"


@attr.s(frozen=True)
class ClientConfig:
    """A client config: [Interface] and one [Peer] (the office's server)."""

    address = attr.ib()         # IPv4Interface
    private_key = attr.ib()
    dns = attr.ib()             # tuple of str
    peer_key = attr.ib()
    endpoint = attr.ib()        # (host, port)
    allowed_ips = attr.ib()     # tuple of IPv4Network
    keepalive = attr.ib(default=0)


def parse_client_config(text):
    """A wg-quick style config -> ClientConfig; ValueError says what is wrong."""
    sections, current = {}, None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip().lower(), {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            raise ValueError("not a WireGuard client config line: %r" % raw)
        current[key.strip().lower()] = value.strip()
    iface, peer = sections.get("interface"), sections.get("peer")
    if not iface or not peer:
        raise ValueError("a client config needs [Interface] and [Peer]:\n" + text)
    private = iface.get("privatekey", "")
    if not private or private == NOT_SHOWN:
        raise ValueError("the config has no private key (%r): the server shows it once"
                         % private)
    host, _, port = peer["endpoint"].rpartition(":")
    return ClientConfig(
        address=ipaddress.IPv4Interface(iface["address"].split(",")[0].strip()),
        private_key=private,
        dns=tuple(d.strip() for d in iface.get("dns", "").split(",") if d.strip()),
        peer_key=peer["publickey"],
        endpoint=(host.strip("[]"), int(port)),
        allowed_ips=tuple(ipaddress.IPv4Network(n.strip(), strict=False)
                          for n in peer["allowedips"].split(",") if n.strip()),
        keepalive=int(peer.get("persistentkeepalive", "0") or 0))


def uapi_request(ifname, text, timeout=5.0):
    """One request over wireguard-go's UAPI socket; the answer's text."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path(ifname))
        sock.sendall(text.encode())
        answer = b""
        while not answer.endswith(b"\n\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    return answer.decode()


class LabWireGuardClient:
    """wireguard-go as interface `ifname` in lab host `host`, set up from a ClientConfig."""

    def __init__(self, lab, host, ifname):
        self.lab, self.host, self.ifname = lab, host, ifname
        self.proc = None

    def up(self, config, timeout=10.0):
        if not isinstance(config, ClientConfig):
            config = parse_client_config(config)
        self.proc = self.lab.popen(self.host, ["wireguard-go", "-f", self.ifname],
                                   name="wg-%s-%s" % (self.host, self.ifname))
        deadline = time.monotonic() + timeout
        while not os.path.exists(socket_path(self.ifname)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError("wireguard-go %s in %s did not start:\n%s" % (
                    self.ifname, self.host, self.lab.log_text(self.proc.lab_name)))
            time.sleep(0.05)
        endpoint = (self._resolve(config.endpoint[0]), config.endpoint[1])
        tunnel = Tunnel(config.private_key, 0, (
            Peer("server", config.peer_key, tuple(sorted(config.allowed_ips)), endpoint,
                 config.keepalive),))
        answer = uapi_request(self.ifname, set_text(changes(None, tunnel), replace_peers=True))
        if "errno=0" not in answer.split():
            raise LabError("wireguard-go refused the config: %r" % answer)
        self.lab._ip(self.host, "addr", "replace", str(config.address), "dev", self.ifname)
        self.lab._ip(self.host, "link", "set", self.ifname, "up")
        for net in config.allowed_ips:
            if net != config.address.network:
                self.lab._ip(self.host, "route", "replace", str(net), "dev", self.ifname)
        return config

    def _resolve(self, host):
        """The endpoint's address, a name looked up as the lab host would."""
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            pass
        done = self.lab.run(self.host, ["getent", "ahostsv4", host], check=False)
        if done.returncode != 0 or not done.stdout.split():
            raise LabError("%s does not resolve in %s" % (host, self.host))
        return done.stdout.split()[0]

    def peers(self):
        """The peer dicts wireguard-go reports (handshake, bytes, endpoint)."""
        return parse_get(uapi_request(self.ifname, GET_TEXT))[1]

    def down(self):
        if self.proc is not None:
            self.lab.stop(self.proc)
            self.proc = None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m allworx.lab.wgclient", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    parser.add_argument("--host", default="laptop")
    parser.add_argument("--interface", default="awg2")
    parser.add_argument("config")
    args = parser.parse_args(argv)
    with open(args.config) as f:
        text = f.read()
    client = LabWireGuardClient(Lab(prefix=args.prefix), args.host, args.interface)
    stop = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        config = client.up(text)
        print("%s up in %s as %s; try: allworx lab exec %s ping %s" % (
            args.interface, args.host, config.address, args.host, config.dns[0] if config.dns
            else config.allowed_ips[0].network_address), flush=True)
        while not stop and client.proc.poll() is None:
            time.sleep(0.5)
    except (LabError, ValueError, OSError) as e:
        sys.stderr.write("wgclient: %s\n" % e)
        return 1
    finally:
        client.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
