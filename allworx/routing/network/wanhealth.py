# -*- test-case-name: allworx.tests.network.test_wanhealth -*-
"""
How the WAN stands, for the dashboard (`allworx.interfaces.IWanStatus`):
the DHCP lease in force and the gateway's health. `GatewayProbe` sends one
ICMP echo to the WAN gateway every 10 seconds (`ping -c 1 -W 1 -n --
GATEWAY`, spawned with an argv, no shell) and keeps the last results, from
which come the latency and the loss. The network service tells it the
gateway each time it reports the WAN (`gateway_is`).
"""

import collections
import re
import shutil

from twisted.internet import task
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger
from zope.interface import implementer

from allworx.interfaces import IWanStatus

log = Logger()

PROBE_EVERY = 10.0
KEEP = 30               # results kept: the last five minutes
RTT = re.compile(rb"time[=<]\s*([0-9.]+)\s*ms")


def ping_argv(gateway):
    return ["ping", "-c", "1", "-W", "1", "-n", "--", str(gateway)]


def parse_ping(output, code):
    """The round trip in ms of one `ping -c 1`, or None (no answer)."""
    if code != 0:
        return None
    found = RTT.search(output or b"")
    return float(found.group(1)) if found else None


def spawn_ping(reactor):
    """A runner: argv -> Deferred (stdout, stderr, exit code), no shell."""
    def run(argv):
        executable = shutil.which(argv[0]) or "/bin/" + argv[0]
        return getProcessOutputAndValue(executable, argv[1:], env={"LC_ALL": "C"},
                                        reactor=reactor)
    return run


class GatewayProbe:
    """One echo to the gateway every `every` seconds; the last `keep` results."""

    def __init__(self, reactor, run=None, every=PROBE_EVERY, keep=KEEP):
        self.reactor = reactor
        if run is None and IReactorProcess.providedBy(reactor):
            run = spawn_ping(reactor)
        self.run = run          # None: this reactor cannot spawn; nothing is probed
        self.every = every
        self.gateway = None
        self.results = collections.deque(maxlen=keep)  # (time, ms or None)
        self.error = None
        self._loop = None
        self._busy = False

    def start(self):
        if self._loop is None and self.run is not None:
            self._loop = task.LoopingCall(self.probe)
            self._loop.clock = self.reactor
            self._loop.start(self.every, now=True)

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def gateway_is(self, gateway):
        """The WAN gateway now (an address or None); another one starts the results afresh."""
        gateway = str(gateway) if gateway is not None else None
        if gateway != self.gateway:
            self.gateway = gateway
            self.results.clear()
            self.error = None

    def probe(self):
        gateway = self.gateway
        if gateway is None or self._busy or self.run is None:
            return
        self._busy = True
        started = self.reactor.seconds()
        try:
            d = self.run(ping_argv(gateway))
        except Exception as e:     # no ping at all: said once, not every 10 s
            self._busy = False
            self._failed(e)
            return

        def done(result):
            out, err, code = result
            if gateway == self.gateway:
                self.results.append((started, parse_ping(out, code)))
                if code not in (0, 1):
                    self._failed((err or b"").decode("utf-8", "replace").strip()
                                 or "ping exited %s" % code)
                else:
                    self.error = None

        def failed(failure):
            self._failed(failure.getErrorMessage())

        def finished(_):
            self._busy = False
        d.addCallbacks(done, failed).addBoth(finished)

    def _failed(self, why):
        why = str(why)
        if why != self.error:
            log.warn("wan: cannot probe the gateway {gateway}: {why}", gateway=self.gateway,
                     why=why)
        self.error = why

    def health(self):
        """What IWanStatus.gateway_health gives."""
        answered = [ms for _, ms in self.results if ms is not None]
        last = self.results[-1] if self.results else (None, None)
        return {"gateway": self.gateway, "probes": len(self.results), "answered": len(answered),
                "loss": (round(1.0 - len(answered) / float(len(self.results)), 3)
                         if self.results else None),
                "latency_ms": round(sum(answered) / len(answered), 2) if answered else None,
                "last_ms": last[1], "last_at": last[0], "every_s": self.every,
                "error": self.error}


@implementer(IWanStatus)
class WanStatus:
    """The network service's lease (`lease_of()` gives it, or None) and its gateway probe."""

    def __init__(self, lease_of, probe):
        self.lease_of = lease_of
        self.probe = probe

    def lease(self):
        lease = self.lease_of()
        if lease is None:
            return None
        return {"address": str(lease.address), "router": str(lease.router or "") or None,
                "server": str(lease.server), "obtained": lease.obtained,
                "renews": lease.renew_at, "expires": lease.expires_at}

    def gateway_health(self):
        return self.probe.health()
