# -*- test-case-name: allworx.tests.firewall.test_ruleset -*-
"""
The kernel side of the firewall: a `FlowPolicy` compiled to an
`iptables-restore --noflush` script, applied atomically and removed on stop.

iptables rather than nft's own syntax: the NFQUEUE target is what kernels
without `nft_queue` (such as the one this was built on) offer. With the
nf_tables backend each table's part of a restore is one transaction.

The rules live in the server's own chains (`AWX-*`), reached by one jump at
the head of each built-in chain, so other rules of the machine are kept. A
change redefines the chains' contents in one restore. In the firewall modes:

- conntrack: established/related packets are accepted in the kernel; bulk
  traffic never reaches the process;
- the first packet of each new flow arriving on the WAN is queued in mangle
  PREROUTING (before DNAT, so the hook sees the address it was sent to) and
  the first packet of each new LAN->WAN flow in filter FORWARD. There is no
  `--queue-bypass`: with the process gone new flows are dropped (fail closed)
  while established ones go on;
- a forward's DNAT is selected by the packet mark the hook sets; LAN->WAN is
  masqueraded behind the WAN address;
- the server's LAN-only ports are dropped from the WAN in filter INPUT, in
  every mode, whatever the hook says.

`router` mode forwards everything, without NAT or queue; `lan-only` forwards
nothing (LAN->WAN is rejected with ICMP admin-prohibited, the WAN unused).
"""

import collections
import re
import subprocess

from twisted.internet import defer, protocol
from twisted.logger import Logger

from allworx.routing.firewall.policy import MARK_BASE

log = Logger()

QUEUE_NUM = 24
# Set by the hook with NF_REPEAT on a flow it rejects (FORWARD only).
REJECT_MARK = MARK_BASE | 0xFFFF

# (table, built-in chain, our chain) in the order they are written.
JUMPS = (
    ("mangle", "PREROUTING", "AWX-PRE"),
    ("nat", "PREROUTING", "AWX-PRE"),
    ("nat", "POSTROUTING", "AWX-POST"),
    ("filter", "INPUT", "AWX-INPUT"),
    ("filter", "FORWARD", "AWX-FORWARD"),
)
TABLES = ("mangle", "nat", "filter")
CHAIN_PREFIX = "AWX-"

_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


class RulesetError(Exception):
    """The ruleset could not be compiled or applied; the message says why."""


def _ifname(name, what):
    if not _IFNAME.match(name or ""):
        raise RulesetError("%s interface name %r is not a valid Linux interface name"
                           % (what, name))
    return name


def _ports(ports):
    ports = sorted(ports)
    if len(ports) == 1:
        return "--dport %d" % ports[0]
    return "-m multiport --dports %s" % ",".join(str(p) for p in ports)


def compile_chains(policy, queue_num=QUEUE_NUM):
    """
    The rules of each of our chains for `policy`: {(table, chain): [rule]},
    each rule the text after `-A CHAIN`. Every chain of JUMPS is present,
    empty when the mode needs nothing there.
    """
    lan = _ifname(policy.lan_interface, "LAN")
    wan = _ifname(policy.wan_interface, "WAN") if policy.wan_interface else None
    vpn = _ifname(policy.vpn_interface, "VPN") if policy.vpn_interface else None
    # The tunnel counts as LAN (SPEC 16): LAN <-> tunnel and tunnel <-> tunnel
    # (a device to another site) are routed, never NATed; the tunnel never
    # reaches the WAN through the office.
    tunnel = []
    if vpn:
        tunnel = ["-i %s -o %s -j ACCEPT" % (lan, vpn), "-i %s -o %s -j ACCEPT" % (vpn, lan),
                  "-i %s -o %s -j ACCEPT" % (vpn, vpn)]
        if wan:
            tunnel.append("-i %s -o %s -j DROP" % (vpn, wan))
    chains = {(table, ours): [] for table, _, ours in JUMPS}
    pre, nat_pre = chains[("mangle", "AWX-PRE")], chains[("nat", "AWX-PRE")]
    post = chains[("nat", "AWX-POST")]
    inp, fwd = chains[("filter", "AWX-INPUT")], chains[("filter", "AWX-FORWARD")]
    established = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"

    # Kernel guard of the LAN-only services, in every mode with a WAN.
    guard = []
    if wan:
        guard.append("-i %s -p udp --sport 67 --dport 68 -j ACCEPT" % wan)
        for proto in ("tcp", "udp"):
            ports = [port for (p, port) in policy.lan_only if p == proto]
            if ports:
                guard.append("-i %s -p %s %s -j DROP" % (wan, proto, _ports(ports)))

    if policy.inspects:
        queue = "-j NFQUEUE --queue-num %d" % queue_num   # no bypass: fail closed
        pre.append("-i %s -m conntrack --ctstate NEW %s" % (wan, queue))
        for r in policy.forwards:
            if r.target is not None:
                nat_pre.append("-p %s -m mark --mark 0x%08x -j DNAT --to-destination %s:%d"
                               % (r.proto, r.mark, r.target, r.to_port))
        post.append("-s %s -o %s -j MASQUERADE" % (policy.lan_network, wan))
        inp.append(established)
        # FIN, NULL or Xmas probes are INVALID to conntrack and never queued:
        # dropped here, or the stack's RST would show which ports are closed.
        inp.append("-i %s -m conntrack --ctstate INVALID -j DROP" % wan)
        inp.extend(guard)
        fwd.extend([
            established,
            "-m conntrack --ctstate INVALID -j DROP",
            "-m mark --mark 0x%08x -j REJECT --reject-with icmp-admin-prohibited" % REJECT_MARK,
        ] + tunnel + [
            "-i %s -o %s -m conntrack --ctstate NEW %s" % (lan, wan, queue),
            "-i %s -o %s -m conntrack --ctstate DNAT -j ACCEPT" % (wan, lan),
            "-j DROP",
        ])
    elif policy.mode == "router":
        inp.extend(guard)
        fwd.extend(tunnel)
    else:  # lan-only
        inp.append(established)
        if wan:
            inp.extend(guard)
            if policy.vpn_port:
                inp.append("-i %s -p udp --dport %d -j ACCEPT" % (wan, policy.vpn_port))
            inp.append("-i %s -j DROP" % wan)
        fwd.extend(tunnel + [
            "-i %s -j REJECT --reject-with icmp-admin-prohibited" % lan,
            "-j DROP",
        ])
    return chains


def parse_saved(text):
    """
    From `iptables-save` output: {table: (our chains present, Counter of
    (built-in chain, our chain) jumps)}.
    """
    found = {}
    table = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
            found[table] = (set(), collections.Counter())
        elif table is None:
            continue
        elif line.startswith(":" + CHAIN_PREFIX):
            found[table][0].add(line[1:].split()[0])
        elif line.startswith("-A "):
            parts = line.split()
            if len(parts) == 4 and parts[2] == "-j" and parts[3].startswith(CHAIN_PREFIX):
                found[table][1][(parts[1], parts[3])] += 1
    return found


def restore_script(chains, saved=""):
    """
    The `iptables-restore --noflush` text that replaces our chains' contents
    with `chains` and leaves exactly one jump to each, given the current
    `iptables-save` output `saved`.
    """
    state = parse_saved(saved)
    out = ["# allworx firewall (generated; each table replaced as a whole)"]
    for table in TABLES:
        present, jumps = state.get(table, (set(), collections.Counter()))
        out.append("*" + table)
        ours = [(builtin, mine) for t, builtin, mine in JUMPS if t == table]
        for _, mine in ours:
            out.append(":%s - [0:0]" % mine)      # declared: created or flushed
        for _, mine in ours:
            out.extend("-A %s %s" % (mine, rule) for rule in chains[(table, mine)])
        for builtin, mine in ours:
            count = jumps[(builtin, mine)]
            out.extend(["-D %s -j %s" % (builtin, mine)] * max(0, count - 1))
            if count == 0:
                out.append("-I %s 1 -j %s" % (builtin, mine))
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def removal_script(saved):
    """The `iptables-restore --noflush` text that removes every jump and chain of ours."""
    state = parse_saved(saved)
    out = ["# allworx firewall: removed"]
    for table in TABLES:
        if table not in state:
            continue
        present, jumps = state[table]
        if not present and not jumps:
            continue
        out.append("*" + table)
        for (builtin, mine), count in sorted(jumps.items()):
            out.extend(["-D %s -j %s" % (builtin, mine)] * count)
        for mine in sorted(present):
            out.append(":%s - [0:0]" % mine)
        for mine in sorted(present):
            out.append("-X %s" % mine)
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def describe(chains):
    """The ruleset as `iptables-save`-like text, for logs and the admin pages."""
    lines = []
    for table, _, mine in JUMPS:
        for rule in chains[(table, mine)]:
            lines.append("-t %s -A %s %s" % (table, mine, rule))
    return "\n".join(lines)


class _CommandProcess(protocol.ProcessProtocol):
    """Feeds text to a command's stdin and collects its output."""

    def __init__(self, argv, text, done):
        self.argv = argv
        self.text = text
        self.done = done
        self.out = []
        self.err = []

    def connectionMade(self):
        if self.text:
            self.transport.write(self.text.encode("utf-8"))
        self.transport.closeStdin()

    def outReceived(self, data):
        self.out.append(data)

    def errReceived(self, data):
        self.err.append(data)

    def processEnded(self, reason):
        code = reason.value.exitCode
        if code == 0:
            self.done.callback(b"".join(self.out).decode("utf-8", "replace"))
        else:
            err = b"".join(self.err).decode("utf-8", "replace").strip()
            self.done.errback(RulesetError("%s failed (exit %s): %s"
                                           % (" ".join(self.argv), code, err)))


class IptablesRunner:
    """Reads and replaces the kernel ruleset without blocking the reactor."""

    def __init__(self, reactor, save="iptables-save", restore="iptables-restore"):
        self.reactor = reactor
        self.save = save
        self.restore = restore

    def _run(self, argv, text=""):
        done = defer.Deferred()
        try:
            self.reactor.spawnProcess(_CommandProcess(argv, text, done), argv[0], argv,
                                      env=None)
        except OSError as e:
            return defer.fail(RulesetError("cannot run %s: %s" % (argv[0], e)))
        return done

    @defer.inlineCallbacks
    def apply(self, chains):
        """Install `chains` (from compile_chains); fires when the kernel has them."""
        saved = yield self._run([self.save])
        yield self._run([self.restore, "--noflush"], restore_script(chains, saved))

    def apply_blocking(self, chains, timeout=30):
        """
        Install `chains` and wait for it, blocking: only for the server's
        start, before the reactor runs, so that no packet is forwarded
        before the ruleset is in place. Raises RulesetError.
        """
        try:
            saved = subprocess.run([self.save], capture_output=True, text=True,
                                   timeout=timeout)
            if saved.returncode != 0:
                raise RulesetError("%s failed (exit %s): %s" % (
                    self.save, saved.returncode, saved.stderr.strip()))
            done = subprocess.run([self.restore, "--noflush"],
                                  input=restore_script(chains, saved.stdout),
                                  capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.SubprocessError) as e:
            raise RulesetError("cannot run iptables: %s" % (e,))
        if done.returncode != 0:
            raise RulesetError("%s --noflush failed (exit %s): %s" % (
                self.restore, done.returncode, done.stderr.strip()))

    @defer.inlineCallbacks
    def remove(self):
        """Remove our chains and jumps; fires when they are gone."""
        saved = yield self._run([self.save])
        script = removal_script(saved)
        if "*" in script:
            yield self._run([self.restore, "--noflush"], script)
