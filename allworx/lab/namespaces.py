# -*- test-case-name: allworx.tests.lab.test_namespaces -*-
"""
The virtual office: network namespaces that make a small office on one machine.

`Lab.up()` builds, under a prefix (default `awx`), the namespaces

    server   lan0 (to the LAN switch) and wan0 (to the ISP), up, no addresses:
             the allworx server runs here and configures them itself
    lan      the LAN switch: bridge br0 with one port per LAN host
    pc1 pc2 phone1 phone2   eth0 on the switch, no address (DHCP or tests)
    admin    eth0 192.168.2.200/24, default via 192.168.2.254
    isp      203.0.113.1/24 towards the server, 198.51.100.1/24 towards the
             internet, forwarding; dnsmasq: DHCP for the WAN, DNS on :53
    inet     198.51.100.10/24, default via the ISP: web, echo, SMTP, POP3
             (`allworx.lab.internet`); 198.51.100.20: the telephony
             provider sip.internet.example (Kamailio, `allworx.lab.provider`);
             198.51.100.30: the ACME CA acme.internet.example (pebble,
             `allworx.lab.acmeca`); 198.51.100.31 and .32: the outside
             phones' addresses; 198.51.100.66: an address the lab's
             blocklist (dnsbl.internet.example) lists

and the second office, `branch`, and a remote user's laptop:

    bserver  lan0 (to the branch's switch) and wan0 (to the ISP's second
             customer segment, 203.0.113.128/25, where the ISP's DHCP gives
             it the fixed lease 203.0.113.130, branch.isp.example)
    blan     the branch's LAN switch: bridge br0 (192.168.3.0/24)
    bpc1 bphone1   eth0 on the branch's switch, no address
    laptop   198.51.100.50/24 on a link of its own to the ISP, default via
             the ISP (which routes its /32 there and proxies ARP between it
             and the internet host): the remote user's laptop

Only documentation ranges are used, links are created inside the namespaces,
and nothing in the host namespace changes except /etc/netns/<ns>/ (the
resolv.conf `ip netns exec` shows inside) and, on request, a port forwarder on
127.0.0.1. The ISP has no route to the LAN unless `route_lan_via()` adds one.
State (pid files, logs, dnsmasq's config and leases, the internet host's mail,
the provider's kamailio.cfg and accounts, the /run and /var/lib/dhcp of each
host's `lab exec` commands) lives in /run/allworx-lab/<prefix>/; `down()` kills
the processes recorded there by PID, then every other process in one of the
lab's namespaces (a daemon a `lab exec` command left), deletes the namespaces
and removes the state.

The layout is `allworx.lab.topology`; `Lab` builds, checks and removes it, on
top of `provider.LabProvider` (the telephony provider), `peers.LabPeers` (the
ISP, the internet host, dhclient) and `processes.LabRunner` (commands, pid
files, waiting for ports).
"""

import os
import shutil
import time

import attr

from allworx import atomicfile
from allworx.lab.acmeca import LabAcme
from allworx.lab.confine import confined_argv, end_processes, namespace_inodes, namespace_pids
from allworx.lab.maildir import write_atomically
from allworx.lab.processes import LabCommandError, LabError, missing_programs, require_root
from allworx.lab.provider import LabProvider
from allworx.lab.topology import (
    ACME_CA,
    ADDRESSES,
    DEFAULT_ROUTES,
    HOST_ROUTES,
    HOSTS,
    IFNAMSIZ,
    INET_SERVICES,
    ISP_DNSMASQ,
    LAB_PROGRAMS,
    LINKS,
    NAMESERVERS,
    NETNS_ETC,
    PROVIDER,
    PROXY_ARP,
    SWITCHES,
)

# The lab's services: `problems()` names each one that is not running.
SERVICES = (ISP_DNSMASQ, INET_SERVICES, PROVIDER, ACME_CA)


def ensure_directory(path):
    """
    The lab's directories (mode 0755), made again when another lab's down()
    removes the shared state root (or /etc/netns) between two of the steps.
    """
    atomicfile.ensure_directory(path, mode=0o755)


@attr.s
class Lab(LabAcme, LabProvider):
    """
    One virtual office, named by `prefix`; see the module docstring. Without
    `ipv6`, its links carry IPv4 only.

    Every method that touches the system needs root. Several labs with
    different prefixes can exist side by side; one prefix is one lab.
    """

    ipv6 = attr.ib(default=False)

    def mac(self, host, ifname="eth0"):
        """The fixed MAC address of a host's interface (`server` has lan0, wan0)."""
        for link in LINKS:
            if (link.a, link.a_if) == (host, ifname):
                return link.a_mac
        raise LabError("no interface %s on lab host %s" % (ifname, host))

    # ------------------------------------------------------------ build

    def up(self):
        """
        Build the lab, or repair whatever is missing of it; running it again
        on a complete lab changes nothing. Returns once every service answers.
        """
        require_root()
        missing = missing_programs(LAB_PROGRAMS)
        if missing:
            raise LabError("allworx lab needs " + ", ".join(missing))
        for sub in ("pids", "logs", "isp", "inet", "dhclient"):
            ensure_directory(self._path(sub))
        existing = self._netns_list()
        for host in HOSTS:
            self._ensure_netns(host, existing)
        self._ensure_links()
        for switch, bridge in sorted(SWITCHES.items()):
            self._ensure_bridge(switch, bridge)
        for host, ifname, cidr in ADDRESSES:
            self._ip(host, "addr", "replace", cidr, "dev", ifname)
        for host, ifname, gateway in DEFAULT_ROUTES:
            self._ip(host, "route", "replace", "default", "via", gateway,
                     "dev", ifname)
        for host, ifname, destination in HOST_ROUTES:
            self._ip(host, "route", "replace", destination, "dev", ifname)
        self._sysctl("isp", "net.ipv4.ip_forward=1")
        for host, ifname in PROXY_ARP:
            self._sysctl(host, "net.ipv4.conf.%s.proxy_arp=1" % ifname)
        self._ensure_isp_dnsmasq()
        self.start_isp_ntp()
        self._ensure_internet_host()
        self._ensure_provider()
        self._ensure_acme()
        return self

    def _write_resolv_conf(self, host):
        try:
            os.mkdir(NETNS_ETC)
        except FileExistsError:
            pass
        else:
            # Remembered so that the last lab down removes it again.
            open(os.path.join(self.state_root, ".created-etc-netns"), "w").close()
        directory = os.path.join(NETNS_ETC, self.ns(host))
        ensure_directory(directory)
        text = ("# allworx lab %s: resolver inside namespace %s\nnameserver %s\n"
                % (self.prefix, self.ns(host), NAMESERVERS[host]))
        write_atomically(os.path.join(directory, "resolv.conf"), text.encode())

    def _ensure_netns(self, host, existing):
        # resolv.conf first: it must be there before anything runs inside.
        self._write_resolv_conf(host)
        if self.ns(host) not in existing:
            self._command(["ip", "netns", "add", self.ns(host)])
        if not self.ipv6 and os.path.isdir("/proc/sys/net/ipv6"):
            # Before the links exist, so they are born without IPv6; lo keeps ::1.
            self._sysctl(host, "net.ipv6.conf.default.disable_ipv6=1")
        self._ip(host, "link", "set", "lo", "up")

    def _links_in(self, host):
        return {link["ifname"]: link for link in self._ip_json(host, "link")}

    def _ensure_links(self):
        present = {host: self._links_in(host) for host in HOSTS}
        for link in LINKS:
            a_there = link.a_if in present[link.a]
            b_there = link.b_if in present[link.b]
            if not (a_there and b_there):
                # Half a pair (its other namespace was lost): start over.
                if a_there:
                    self._ip(link.a, "link", "del", link.a_if, check=False)
                if b_there:
                    self._ip(link.b, "link", "del", link.b_if, check=False)
                self._add_veth(link)
            self._ip(link.a, "link", "set", link.a_if, "up")
            self._ip(link.b, "link", "set", link.b_if, "up")

    def _add_veth(self, link):
        assert max(len(link.a_if), len(link.b_if)) <= IFNAMSIZ
        argv = ["link", "add", "name", link.a_if, "netns", self.ns(link.a)]
        if link.a_mac:
            argv += ["address", link.a_mac]
        argv += ["type", "veth", "peer", "name", link.b_if, "netns", self.ns(link.b)]
        # A namespace deleted a moment ago may still hold the old peer's name
        # while the kernel tears it down; wait for that rather than fail.
        deadline = time.monotonic() + 5
        while True:
            done = self._ip(None, *argv, check=False)
            if done.returncode == 0:
                return
            if "exists" not in done.stderr or time.monotonic() > deadline:
                raise LabCommandError(done.returncode, ["ip"] + argv,
                                      done.stdout, done.stderr)
            self._ip(link.a, "link", "del", link.a_if, check=False)
            self._ip(link.b, "link", "del", link.b_if, check=False)
            time.sleep(0.1)

    def _ensure_bridge(self, switch, bridge):
        if bridge not in self._links_in(switch):
            self._ip(switch, "link", "add", bridge, "type", "bridge",
                     "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
        for link in LINKS:
            if link.b == switch:
                self._ip(switch, "link", "set", link.b_if, "master", bridge)
        self._ip(switch, "link", "set", bridge, "up")

    # ------------------------------------------------------------ tear down

    def down(self):
        """
        Remove the lab: kill the processes it started (by their recorded
        PIDs), delete its namespaces, /etc/netns entries and state. Safe to
        run on a lab that is partly or not at all there. Returns warnings
        (processes it did not start, still running in its namespaces).
        """
        require_root()
        warnings = []
        for record in self.processes():
            self._kill(record, timeout=3.0)
        self._kill_daemons()
        existing = self._netns_list()
        # What `lab exec` started and left running (a daemon that forked)
        # is in one of the lab's namespaces: found by that, ended by PID.
        inodes = namespace_inodes(self.ns(host) for host in HOSTS if self.ns(host) in existing)
        end_processes(lambda: namespace_pids(inodes))
        for host in HOSTS:
            ns = self.ns(host)
            if ns in existing:
                pids = self._command(["ip", "netns", "pids", ns], check=False).stdout.split()
                if pids:
                    warnings.append(
                        "%s: processes outlived SIGKILL there (pids %s); "
                        "its links stay until they exit" % (ns, " ".join(pids)))
                self._command(["ip", "netns", "del", ns])
            shutil.rmtree(os.path.join(NETNS_ETC, ns), ignore_errors=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        marker = os.path.join(self.state_root, ".created-etc-netns")
        try:
            if os.path.exists(marker) and not os.listdir(NETNS_ETC):
                os.rmdir(NETNS_ETC)
                os.unlink(marker)
        except OSError:
            pass  # another lab is using them
        try:
            os.rmdir(self.state_root)
        except OSError:
            pass
        return warnings

    def exec_argv(self, host, command):
        """The argv of `allworx lab exec HOST CMD...`: `command` in the host's
        namespace with its own /run and /var/lib/dhcp (`allworx.lab.confine`)."""
        return confined_argv(self.state_dir, self.state_root, host, self.ns(host), command)

    # ------------------------------------------------------------ reporting

    def problems(self):
        """What is missing or dead in the lab, one sentence each; [] if whole."""
        require_root()
        existing = self._netns_list()
        if not self.processes() and not any(self.ns(host) in existing for host in HOSTS):
            return ["the lab is down: run `allworx lab up`"]
        problems = []
        for host in HOSTS:
            if self.ns(host) not in existing:
                problems.append("namespace %s is missing" % self.ns(host))
        names = {p.name: p for p in self.processes()}
        for name in SERVICES:
            if name not in names or not names[name].alive():
                problems.append("%s is not running" % name)
        for proc in names.values():
            if proc.name not in SERVICES and not proc.alive():
                problems.append("%s (pid %d) has died" % (proc.name, proc.pid))
            elif proc.alive() and not self._in_place(proc):
                problems.append("%s (pid %d) runs in a deleted namespace %s"
                                % (proc.name, proc.pid, self.ns(proc.host)))
        return problems

    def status(self):
        """A report: each namespace with its interfaces and addresses, each process."""
        require_root()
        existing = self._netns_list()
        procs = self.processes()
        if not procs and not any(self.ns(host) in existing for host in HOSTS):
            return "lab %s is down (no namespaces, no processes)" % self.prefix
        lines = ["lab %s (state %s)" % (self.prefix, self.state_dir)]
        for host in HOSTS:
            ns = self.ns(host)
            if ns not in existing:
                lines.append("  %-14s missing" % ns)
                continue
            lines.append("  %s" % ns)
            for link in self._ip_json(host, "addr"):
                if link.get("ifname") == "lo":
                    continue
                addresses = ["%s/%s" % (a["local"], a["prefixlen"])
                             for a in link.get("addr_info", []) if a.get("family") == "inet"]
                master = " (port of %s)" % link["master"] if link.get("master") else ""
                lines.append("    %-8s %-5s %s%s" % (
                    link["ifname"], "up" if "UP" in link.get("flags", []) else "down",
                    " ".join(addresses) or "-", master))
        lines.append("processes:")
        if not procs:
            lines.append("  none")
        for proc in procs:
            if not proc.alive():
                state = "dead"
            elif not self._in_place(proc):
                state = "alive, in a deleted namespace"
            else:
                state = "alive"
            lines.append("  %-22s pid %-7d %s in %s: %s" % (
                proc.name, proc.pid, state,
                self.ns(proc.host) if proc.host else "host namespace",
                proc.command if len(proc.command) < 70 else proc.command[:67] + "..."))
        return "\n".join(lines)

