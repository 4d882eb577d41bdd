# -*- test-case-name: allworx.tests.vpn.test_service -*-
"""
The "vpn" service: the WireGuard interface of sites and remote access
(SPEC 16), kept as the config says.

At start with `[vpn] enabled = yes`: the server's key (made at the first
start, `allworx.vpnkeys`) and the keys of server-made devices; then the
interface `[vpn] interface`: the kernel's WireGuard where the module exists
(`ip link add type wireguard` succeeds; configured by generic netlink),
otherwise `wireguard-go -f IFNAME`, a child process kept and stopped by its
own PID, configured through its UAPI socket once that appears; its verbose
output is read by `golog` (handshakes from unknown keys become warnings). Then the
key, the port and the peers; the tunnel address on the interface, up; and
a route over it for each site's networks and each device's address.

A config change is applied live and only where it differs: peers added,
changed or removed, routes added or removed, the address moved; a change
of `enabled` or `interface` stops the engine and starts it again.
Stopping removes what it made (the interface goes with wireguard-go).

It is the IVpnPeers of the Sites page and /metrics: `peers()` gives each
peer's handshake and bytes, `site_status()` whether each site's server
answered the last probe over the tunnel (`probe.SiteProber`, every 30 s
while the engine runs), `keys_changed()` applies a device key the admin
pages made anew.
"""

import errno
import ipaddress
import os

from twisted.internet import defer, protocol
from twisted.logger import Logger
from zope.interface import implementer

from allworx.interfaces import IVpnPeers

from allworx.routing.vpn.golog import GoOutput
from allworx.routing.vpn.netlink import KernelWireGuard, NoKernelModule, TunnelLinks
from allworx.routing.vpn.peers import changes, routes_for, site_endpoint, tunnel_for
from allworx.routing.vpn.probe import SiteProber
from allworx.routing.vpn.uapi import SOCKET_DIR, UapiClient, set_text, socket_path
from allworx.servicebase import OfficeService
from allworx.vpnkeys import (
    VpnKeyError, ensure_device_key, ensure_server_key, public_key, remove_device_key)

log = Logger()

SOCKET_WAIT = 10.0          # seconds wireguard-go has to open its UAPI socket
POLL = 0.05
RESTART_AFTER = 10.0        # seconds before a wireguard-go that died is started again
STOP_WAIT = 5.0             # seconds between TERM and KILL


class EngineError(Exception):
    """The tunnel's engine could not start or take its configuration."""


class _GoProcess(protocol.ProcessProtocol):
    """wireguard-go's process: its output read into the log (`golog`), its end reported."""

    def __init__(self, ifname, ended, clock):
        self.ended = ended
        self.output = GoOutput(ifname, clock)

    def outReceived(self, data):
        self.output.feed(data)

    def errReceived(self, data):
        self.output.feed(data)

    def processEnded(self, reason):
        self.output.stop()
        self.ended(getattr(reason.value, "exitCode", None), getattr(reason.value, "signal", None))


class UserspaceEngine:
    """`wireguard-go -f IFNAME` as a child process, configured through its UAPI socket."""

    kind = "wireguard-go"

    def __init__(self, reactor, ifname, argv=("wireguard-go",), socket_dir=SOCKET_DIR,
                 exists=os.path.exists, on_exit=None):
        self.reactor = reactor
        self.ifname = ifname
        self.argv = list(argv) + ["-f", ifname]
        self.path = socket_path(ifname, socket_dir)
        self.exists = exists
        self.on_exit = on_exit
        self.client = UapiClient(reactor, self.path)
        self.process = None
        self.pid = None
        self._ended = None
        self._stopping = False

    def start(self):
        """Start the process; fires when its UAPI socket answers."""
        self._ended = defer.Deferred()
        # Verbose: only there does it say it dropped a handshake from an unknown key.
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1", LOG_LEVEL="verbose")
        try:
            self.process = self.reactor.spawnProcess(
                _GoProcess(self.ifname, self._process_ended, self.reactor), self.argv[0],
                self.argv, env=env)
        except OSError as e:
            return defer.fail(EngineError("cannot run %s: %s" % (self.argv[0], e)))
        self.pid = self.process.pid
        log.info("vpn: started wireguard-go for {ifname} (pid {pid})", ifname=self.ifname,
                 pid=self.pid)
        return self._wait_for_socket()

    def _wait_for_socket(self):
        d = defer.Deferred()
        waited = [0.0]

        def poll():
            if self.process is None or self._ended.called:
                d.errback(EngineError("wireguard-go exited before opening %s" % self.path))
            elif self.exists(self.path):
                # The socket appears before it listens: ask until it answers.
                self.client.get().addCallbacks(lambda _: d.callback(None), retry)
            else:
                retry(None)

        def retry(_):
            waited[0] += POLL
            if waited[0] > SOCKET_WAIT:
                d.errback(EngineError("wireguard-go did not open %s within %d s"
                                      % (self.path, SOCKET_WAIT)))
            else:
                self.reactor.callLater(POLL, poll)
        poll()
        return d

    def _process_ended(self, code, signal):
        log.info("vpn: wireguard-go for {ifname} (pid {pid}) ended: exit {code}, signal {signal}",
                 ifname=self.ifname, pid=self.pid, code=code, signal=signal)
        self.process = None
        stopping, self._stopping = self._stopping, False
        self._ended.callback(None)
        if not stopping and self.on_exit is not None:
            self.on_exit("wireguard-go exited (code %s, signal %s)" % (code, signal))

    def apply(self, tunnel_changes, replace_peers=False):
        text = set_text(tunnel_changes, replace_peers)
        if text is None:
            return defer.succeed(None)
        return self.client.set(text)

    def peers(self):
        return self.client.get().addCallback(lambda answer: answer[1])

    def stop(self):
        """TERM to our process (by its PID), KILL if it lingers; fires when it has ended."""
        if self.process is None:
            return defer.succeed(None)
        self._stopping = True
        ended = self._ended
        try:
            self.process.signalProcess("TERM")
        except Exception:
            return ended
        kill = self.reactor.callLater(STOP_WAIT, self._kill)
        ended.addBoth(lambda r: kill.cancel() if kill.active() else None)
        return ended

    def _kill(self):
        if self.process is not None:
            log.warn("vpn: wireguard-go (pid {pid}) did not stop; killing it", pid=self.pid)
            try:
                self.process.signalProcess("KILL")
            except Exception:
                pass


def _default_links(netns=None):
    from pyroute2 import IPRoute
    return TunnelLinks(IPRoute(netns=netns) if netns else IPRoute())


def _is_ip(host):
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        return False


@implementer(IVpnPeers)
class VpnService(OfficeService):
    """Runs the tunnel's engine and keeps its peers, address and routes as configured."""

    def __init__(self, office, reactor=None, links_factory=_default_links,
                 kernel_factory=KernelWireGuard, userspace_argv=("wireguard-go",),
                 socket_dir=SOCKET_DIR, exists=os.path.exists):
        OfficeService.__init__(self, "vpn", office)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self._links_factory = links_factory
        self._kernel_factory = kernel_factory
        self._userspace_argv = tuple(userspace_argv)
        self._socket_dir = socket_dir
        self._exists = exists
        self._lock = defer.DeferredLock()
        self.engine = None
        self.links = None
        self.tunnel = None          # the peers.Tunnel the engine holds
        self.routes = ()            # the networks routed over it
        self.settings = None        # the VpnSettings it runs under
        self.public_key = None
        self.problems = []
        self._restart = None
        self.prober = SiteProber(self.reactor, lambda: self.office.config)

    # ---------------------------------------------------------- life cycle

    def startService(self):
        OfficeService.startService(self)
        return self._lock.run(self._start)

    def stopService(self):
        d = OfficeService.stopService(self)
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        return defer.gatherResults([d, self._lock.run(self._stop)])

    def config_changed(self, event):
        if not event.touches("vpn", "site", "device", "system"):
            return
        self._lock.run(self._follow, event.new)

    def peers(self):
        """IVpnPeers.peers: each peer's key, endpoint, last handshake (epoch or None) and bytes."""
        if self.engine is None:
            return defer.succeed([])
        return self.engine.peers().addCallback(lambda found: [peer_view(p) for p in found])

    def site_status(self):
        """IVpnPeers.site_status: whether each site's server answered the last probe."""
        return self.prober.status()

    def keys_changed(self):
        """A server-made device key was made anew: give the engine the keys as they are now."""
        if not self.running or self.engine is None:
            return defer.succeed(None)
        return self._lock.run(self._follow, self.office.config)

    # ---------------------------------------------------------- the steps

    @defer.inlineCallbacks
    def _start(self):
        config = self.office.config
        vpn = config.vpn
        self.settings = vpn
        self.problems = []
        if not vpn.enabled:
            self.office.set_status(self.name, "disabled", "[vpn] enabled = no")
            return
        data_dir = config.system.data_dir
        try:
            key, made = ensure_server_key(data_dir)
            device_keys = self._device_keys(config)
        except (OSError, VpnKeyError) as e:
            self.office.set_status(self.name, "down", "the WireGuard key: %s" % e)
            return
        self.public_key = public_key(key)
        if made:
            log.info("vpn: made the server's WireGuard key; its public key is {key}",
                     key=self.public_key)
        try:
            yield self._start_engine(vpn.interface)
            endpoints = yield self._resolve(config)
            tunnel = tunnel_for(config, key, device_keys, endpoints)
            yield self.engine.apply(changes(None, tunnel), replace_peers=True)
            self.tunnel = tunnel
            self.links.set_address(vpn.interface, vpn.address)
            self.routes = ()
            self._set_routes(routes_for(config))
        except Exception as e:
            log.error("vpn: could not bring up {ifname}: {why}", ifname=vpn.interface, why=_why(e))
            self.office.set_status(self.name, "down", "%s: %s" % (vpn.interface, _why(e)))
            yield self._stop_engine()
            return
        self._report(config)
        self.prober.start()

    def _start_engine(self, ifname):
        self.links = self._links_factory()
        if self.links.index(ifname) is not None:
            log.info("vpn: {ifname} exists from before; made anew", ifname=ifname)
            self.links.delete(ifname)
        try:
            self.links.create_wireguard(ifname)
        except NoKernelModule:
            self.engine = UserspaceEngine(self.reactor, ifname, self._userspace_argv,
                                          self._socket_dir, self._exists, self._engine_died)
            return self.engine.start()
        self.engine = self._kernel_factory(ifname)
        return defer.succeed(None)

    @defer.inlineCallbacks
    def _stop_engine(self):
        self.prober.stop()
        engine, self.engine = self.engine, None
        links, self.links = self.links, None
        ifname = self.settings.interface if self.settings is not None else None
        if engine is not None:
            if engine.kind == "kernel":
                engine.close()
                if links is not None and ifname:
                    _quietly(links.delete, ifname)
            else:
                yield engine.stop()
        if links is not None:
            _quietly(links.close)
        self.tunnel = None
        self.routes = ()

    @defer.inlineCallbacks
    def _stop(self):
        yield self._stop_engine()

    def _engine_died(self, why):
        self.office.set_status(self.name, "down", "%s; starting it again in %d s"
                               % (why, RESTART_AFTER))
        self.engine = None
        if self.running:
            self._restart = self.reactor.callLater(
                RESTART_AFTER, lambda: self._lock.run(self._again))

    @defer.inlineCallbacks
    def _again(self):
        yield self._stop_engine()
        if self.running:
            yield self._start()

    @defer.inlineCallbacks
    def _follow(self, config):
        """Apply a changed config: only what differs, or all again for a new interface."""
        old = self.settings
        vpn = config.vpn
        if (old is None or old.enabled != vpn.enabled or old.interface != vpn.interface
                or self.engine is None):
            yield self._stop_engine()
            yield self._start()
            return
        self.problems = []
        try:
            key, _ = ensure_server_key(config.system.data_dir)
            device_keys = self._device_keys(config)
            endpoints = yield self._resolve(config)
            tunnel = tunnel_for(config, key, device_keys, endpoints)
            yield self.engine.apply(changes(self.tunnel, tunnel))
            self.tunnel = tunnel
            if vpn.address != old.address:
                self.links.set_address(vpn.interface, vpn.address, old.address)
            self.settings = vpn
            self._set_routes(routes_for(config))
        except Exception as e:
            log.error("vpn: could not apply the change: {why}", why=_why(e))
            self.office.set_status(self.name, "degraded", "the last change did not apply: %s"
                                   % _why(e))
            return
        self._report(config)

    def _device_keys(self, config):
        """{device: public key} of the server-made devices; keys of removed devices are forgotten."""
        data_dir = config.system.data_dir
        out = {}
        for name, device in config.devices.items():
            if device.public_key is None:
                out[name] = public_key(ensure_device_key(data_dir, name)[0])
        devices_dir = os.path.join(data_dir, "vpn", "devices")
        if os.path.isdir(devices_dir):
            for filename in os.listdir(devices_dir):
                name = filename[:-len(".key")]
                if filename.endswith(".key") and name not in out:
                    remove_device_key(data_dir, name)
        return out

    def _set_routes(self, wanted):
        ifname = self.settings.interface
        for net in self.routes:
            if net not in wanted:
                _quietly(self.links.del_route, ifname, net)
        routed = []
        for net in wanted:
            if net in self.routes:
                routed.append(net)
                continue
            try:
                self.links.add_route(ifname, net)
                routed.append(net)
            except Exception as e:
                self.problems.append("route to %s: %s" % (net, _why(e)))
        self.routes = tuple(routed)

    @defer.inlineCallbacks
    def _resolve(self, config):
        """{site: (ip, port)} of the sites dialled; a name that does not resolve is left out."""
        out = {}
        for name in sorted(config.sites):
            target = site_endpoint(config.sites[name])
            if target is None:
                continue
            host, port = target
            if not _is_ip(host):
                try:
                    host = yield self.reactor.resolve(host)
                except Exception as e:
                    self.problems.append("site %s: endpoint %s does not resolve (%s)"
                                         % (name, target[0], _why(e)))
                    continue
            out[name] = (host, port)
        return out

    def _report(self, config):
        vpn = config.vpn
        detail = "%s (%s) on port %d: %s, %s" % (
            vpn.interface, self.engine.kind, vpn.port, _count(len(config.sites), "site"),
            _count(len(config.devices), "device"))
        if self.problems:
            self.office.set_status(self.name, "degraded", detail + "; " + "; ".join(self.problems))
        else:
            self.office.set_status(self.name, "up", detail)


def peer_view(peer):
    """An engine's peer dict (UAPI get=1 or netlink) as IVpnPeers.peers gives it."""
    handshake = peer.get("last_handshake_time_sec") or 0
    return {"public_key": peer.get("public_key"), "endpoint": peer.get("endpoint"),
            "last_handshake": handshake if handshake > 0 else None,
            "rx_bytes": int(peer.get("rx_bytes") or 0), "tx_bytes": int(peer.get("tx_bytes") or 0)}


def _count(n, word):
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def _why(e):
    if isinstance(e, OSError) and e.errno in (errno.EPERM, errno.EACCES):
        return "no permission (needs root or CAP_NET_ADMIN)"
    return str(e) or e.__class__.__name__


def _quietly(f, *args):
    try:
        f(*args)
    except Exception as e:
        log.info("vpn: {what} failed: {why}", what=getattr(f, "__name__", f), why=e)
