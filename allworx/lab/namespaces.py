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
             (`allworx.lab.internet`)

Only documentation ranges are used, links are created inside the namespaces,
and nothing in the host namespace changes except /etc/netns/<ns>/ (the
resolv.conf `ip netns exec` shows inside) and, on request, a port forwarder on
127.0.0.1. The ISP has no route to the LAN unless `route_lan_via()` adds one.
State (pid files, logs, dnsmasq's config and leases, the internet host's mail)
lives in /run/allworx-lab/<prefix>/; `down()` kills the processes recorded
there by PID, deletes the namespaces and removes the state.
"""

import argparse
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import attr

from allworx.lab.maildir import (
    ACCOUNTS_FILE,
    POP3_FOLDERS,
    REFUSAL_FILE,
    SMTP_FOLDERS,
    Maildir,
    folder_name,
    read_accounts,
    split_envelope,
    with_lf,
    write_accounts,
    write_atomically,
)

DEFAULT_PREFIX = "awx"
STATE_ROOT = "/run/allworx-lab"
NETNS_ETC = "/etc/netns"
NOT_ROOT = "allworx lab needs root: it creates network namespaces"

SERVER_LAN_IP = "192.168.2.254"
ADMIN_IP = "192.168.2.200"
ISP_WAN_IP = "203.0.113.1"
ISP_INET_IP = "198.51.100.1"
INET_IP = "198.51.100.10"
LAN_NET = "192.168.2.0/24"
WAN_DHCP_RANGE = ("203.0.113.10", "203.0.113.50")

LAN_HOSTS = ("pc1", "pc2", "phone1", "phone2", "admin")
HOSTS = ("server", "lan") + LAN_HOSTS + ("isp", "inet")
BRIDGE = "br0"
IFNAMSIZ = 15

# What `up` itself runs; dhclient, socat and the test clients are optional.
LAB_PROGRAMS = ("ip", "ss", "sysctl", "dnsmasq")

# The Debian package that brings each program the lab runs.
PACKAGES = {
    "ip": "iproute2",
    "ss": "iproute2",
    "sysctl": "procps",
    "dnsmasq": "dnsmasq-base",
    "dhclient": "isc-dhcp-client",
    "socat": "socat",
    "dig": "bind9-dnsutils",
    "curl": "curl",
    "ping": "iputils-ping",
}


@attr.s(frozen=True)
class Link:
    """A veth pair: interface `a_if` in host `a`, `b_if` in host `b`."""

    a = attr.ib()
    a_if = attr.ib()
    b = attr.ib()
    b_if = attr.ib()
    a_mac = attr.ib(default=None)


def _lan_port(host, mac):
    return Link(host, "eth0", "lan", host, mac)


# Switch and ISP ports are named after the host they lead to. Host ends have
# fixed MACs so tests can write DHCP reservations for them.
LINKS = (
    Link("server", "lan0", "lan", "server", "02:a1:00:00:02:fe"),
    _lan_port("pc1", "02:a1:00:00:02:01"),
    _lan_port("pc2", "02:a1:00:00:02:02"),
    _lan_port("phone1", "02:a1:00:00:02:11"),
    _lan_port("phone2", "02:a1:00:00:02:12"),
    _lan_port("admin", "02:a1:00:00:02:c8"),
    Link("server", "wan0", "isp", "server", "02:a1:00:00:71:fe"),
    Link("inet", "eth0", "isp", "inet", "02:a1:00:00:64:0a"),
)

ADDRESSES = (
    ("admin", "eth0", ADMIN_IP + "/24"),
    ("isp", "server", ISP_WAN_IP + "/24"),
    ("isp", "inet", ISP_INET_IP + "/24"),
    ("inet", "eth0", INET_IP + "/24"),
)

DEFAULT_ROUTES = (
    ("admin", "eth0", SERVER_LAN_IP),
    ("inet", "eth0", ISP_INET_IP),
)

NAMESERVERS = {
    "server": "127.0.0.1",
    "lan": "127.0.0.1",
    "isp": "127.0.0.1",
    "inet": ISP_WAN_IP,
    **{host: SERVER_LAN_IP for host in LAN_HOSTS},
}

DNS_HOSTS = {
    "internet.example": INET_IP,
    "web.internet.example": INET_IP,
    "mail.internet.example": INET_IP,
}
DNS_MX = (("internet.example", "mail.internet.example", 10),)

# Ports the internet host serves, checked before `up` returns.
INET_PORTS = (("tcp", 80), ("tcp", 7), ("udp", 7), ("tcp", 25), ("tcp", 110))
ISP_PORTS = (("udp", 53), ("tcp", 53), ("udp", 67))

ISP_DNSMASQ = "isp-dnsmasq"
INET_SERVICES = "inet-services"


class LabError(Exception):
    """The lab cannot do what was asked; the message says why and what to do."""


class LabCommandError(LabError, subprocess.CalledProcessError):
    """A command run in the lab failed; its output is part of the message."""

    def __str__(self):
        text = subprocess.CalledProcessError.__str__(self)
        for stream in (self.stdout, self.stderr):
            if stream:
                if isinstance(stream, bytes):
                    stream = stream.decode("utf-8", "replace")
                text += "\n" + stream.strip()
        return text


def is_root():
    return os.geteuid() == 0


def require_root():
    """Raise LabError if this process cannot create network namespaces."""
    if not is_root():
        raise LabError(NOT_ROOT)


def missing_programs(programs):
    """The programs of `programs` not on PATH, each with its Debian package."""
    return ["%s (Debian package %s)" % (p, PACKAGES.get(p, "?"))
            for p in programs if shutil.which(p) is None]


def lab_skip_reason(programs=LAB_PROGRAMS):
    """Why a lab cannot be built here (a sentence), or None if it can."""
    if not is_root():
        return NOT_ROOT
    missing = missing_programs(programs)
    if missing:
        return "allworx lab needs " + ", ".join(missing)
    try:
        subprocess.run(["ip", "netns", "list"], check=True, timeout=10,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (subprocess.SubprocessError, OSError) as e:
        return "`ip netns` does not work here: %s" % (e,)
    return None


def start_lab(testcase, prefix="awt", programs=(), **kw):
    """
    Build a fresh lab for a trial test and tear it down in its cleanup.

    Skips the test (with the reason) when not root, when `ip netns` does not
    work, or when a program of `programs` (beyond the lab's own) is missing.
    Test processes running side by side (`trial -j`) each get their own
    prefix: the first of `prefix`, `prefix`1, `prefix`2 ... that no other
    live process holds; whatever an earlier, crashed run left under it is
    removed first.
    """
    from twisted.trial.unittest import SkipTest

    reason = lab_skip_reason(LAB_PROGRAMS + tuple(programs))
    if reason:
        raise SkipTest(reason)
    lab, claim = claim_lab(prefix, **kw)
    testcase.addCleanup(claim.close)
    lab.down()
    testcase.addCleanup(lab.down)
    lab.up()
    return lab


def claim_lab(prefix="awt", **kw):
    """
    (Lab, claim) for the first free prefix of `prefix`, `prefix`1, ...: the
    claim is an abstract Unix socket bound to the prefix's name, so it is
    released when closed or when this process dies. Close it after down().
    """
    import socket

    for n in range(100):
        candidate = prefix if n == 0 else "%s%d" % (prefix, n)
        claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            claim.bind("\0allworx-lab/" + candidate)
        except OSError:
            claim.close()
            continue
        return Lab(prefix=candidate, **kw), claim
    raise LabError("no free lab prefix from %s to %s99" % (prefix, prefix))


def _valid_prefix(instance, attribute, value):
    # Short and plain: it names namespaces and directories.
    if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", value):
        raise ValueError("lab prefix must be 1-8 lower-case letters or digits, "
                         "starting with a letter: %r" % (value,))


def _valid_lease(instance, attribute, value):
    if value < 120:
        raise ValueError("dnsmasq's shortest lease is 120 seconds, got %r" % (value,))


# ---------------------------------------------------------------- processes

def _proc_stat(pid):
    """(state, start time in clock ticks) of a process, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


@attr.s(frozen=True)
class LabProcess:
    """
    A process the lab started, as its pid file records it.

    The start time guards against a recycled PID: a process is only ours
    (alive, or to be killed) if its start time is the one recorded.
    """

    name = attr.ib()
    pid = attr.ib()
    started = attr.ib()
    host = attr.ib()
    command = attr.ib(default="")

    def alive(self):
        stat = _proc_stat(self.pid)
        return stat is not None and stat[1] == self.started and stat[0] != "Z"

    def format(self):
        return "%d\nstart=%d\nhost=%s\ncmd=%s\n" % (
            self.pid, self.started, self.host or "", " ".join(self.command.split()))

    @classmethod
    def parse(cls, name, text):
        lines = text.splitlines()
        fields = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
        return cls(name=name, pid=int(lines[0]), started=int(fields.get("start", -1)),
                   host=fields.get("host") or None, command=fields.get("cmd", ""))


# ---------------------------------------------------------------- the lab

@attr.s
class Lab:
    """
    One virtual office, named by `prefix`; see the module docstring.

    Every method that touches the system needs root. Several labs with
    different prefixes can exist side by side; one prefix is one lab.
    """

    prefix = attr.ib(default=DEFAULT_PREFIX, validator=_valid_prefix)
    state_root = attr.ib(default=STATE_ROOT)
    wan_lease_seconds = attr.ib(default=120, validator=_valid_lease)
    dns_hosts = attr.ib(factory=lambda: dict(DNS_HOSTS))
    dns_mx = attr.ib(default=DNS_MX)
    pop3_accounts = attr.ib(factory=lambda: {"remote": "remotepw"})
    ipv6 = attr.ib(default=False)
    python = attr.ib(default=sys.executable)
    _children = attr.ib(factory=dict, init=False, repr=False)

    # ------------------------------------------------------------ names

    @property
    def state_dir(self):
        return os.path.join(self.state_root, self.prefix)

    def ns(self, host):
        """The namespace name of a lab host, e.g. `awx-pc1`."""
        if host not in HOSTS:
            raise LabError("no lab host %r; the hosts are %s"
                           % (host, ", ".join(HOSTS)))
        return "%s-%s" % (self.prefix, host)

    def mac(self, host, ifname="eth0"):
        """The fixed MAC address of a host's interface (`server` has lan0, wan0)."""
        for link in LINKS:
            if (link.a, link.a_if) == (host, ifname):
                return link.a_mac
        raise LabError("no interface %s on lab host %s" % (ifname, host))

    def _path(self, *parts):
        return os.path.join(self.state_dir, *parts)

    @property
    def inet_dir(self):
        """The internet host's data directory (mail it received, POP3 boxes)."""
        return self._path("inet")

    # ------------------------------------------------------------ commands
    # Every external command goes through _command; `ip` through _ip.

    def _command(self, argv, check=True, timeout=30, capture=True, text=True,
                 input=None, **kw):
        if capture:
            kw.setdefault("stdout", subprocess.PIPE)
            kw.setdefault("stderr", subprocess.PIPE)
        try:
            done = subprocess.run(argv, timeout=timeout, text=text, input=input,
                                  **kw)
        except FileNotFoundError:
            raise LabError("cannot run %s: %s"
                           % (argv[0], ", ".join(missing_programs([argv[0]]))
                              or "not found"))
        if check and done.returncode != 0:
            raise LabCommandError(done.returncode, argv, done.stdout, done.stderr)
        return done

    def _ip(self, host, *args, check=True):
        """Run `ip` in a host's namespace (`host` None: the host namespace)."""
        argv = ["ip"] + (["-n", self.ns(host)] if host else []) + list(args)
        return self._command(argv, check=check)

    def _ip_json(self, host, *args):
        out = self._ip(host, "-j", *args, check=False)
        if out.returncode != 0 or not out.stdout.strip():
            return []
        return json.loads(out.stdout)

    def _in_ns(self, host, argv):
        return ["ip", "netns", "exec", self.ns(host)] + [str(a) for a in argv]

    def _netns_list(self):
        out = self._command(["ip", "netns", "list"])
        return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}

    def _sysctl(self, host, *settings):
        self._command(self._in_ns(host, ["sysctl", "-q", "-w", *settings]))

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
            os.makedirs(self._path(sub), exist_ok=True)
        existing = self._netns_list()
        for host in HOSTS:
            self._ensure_netns(host, existing)
        self._ensure_links()
        self._ensure_bridge()
        for host, ifname, cidr in ADDRESSES:
            self._ip(host, "addr", "replace", cidr, "dev", ifname)
        for host, ifname, gateway in DEFAULT_ROUTES:
            self._ip(host, "route", "replace", "default", "via", gateway,
                     "dev", ifname)
        self._sysctl("isp", "net.ipv4.ip_forward=1")
        self._ensure_isp_dnsmasq()
        self._ensure_internet_host()
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
        os.makedirs(directory, exist_ok=True)
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

    def _ensure_bridge(self):
        if BRIDGE not in self._links_in("lan"):
            self._ip("lan", "link", "add", BRIDGE, "type", "bridge",
                     "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
        for link in LINKS:
            if link.b == "lan":
                self._ip("lan", "link", "set", link.b_if, "master", BRIDGE)
        self._ip("lan", "link", "set", BRIDGE, "up")

    # ------------------------------------------------------------ ISP

    def dnsmasq_config(self):
        """The text of the ISP's dnsmasq configuration."""
        first, last = WAN_DHCP_RANGE
        lines = [
            "# allworx lab %s: the ISP's DHCP server (WAN) and DNS" % self.prefix,
            "keep-in-foreground",
            "user=root",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "interface=server",
            "interface=inet",
            "no-dhcp-interface=inet",
            "no-dhcp-interface=lo",
            "pid-file=" + self._path("isp", "dnsmasq.pid"),
            "log-facility=" + self._path("isp", "dnsmasq.log"),
            "log-queries",
            "log-dhcp",
            "dhcp-authoritative",
            "dhcp-leasefile=" + self._path("isp", "dnsmasq.leases"),
            "dhcp-range=%s,%s,255.255.255.0,%ds" % (first, last,
                                                    self.wan_lease_seconds),
            "dhcp-option=option:router," + ISP_WAN_IP,
            "dhcp-option=option:dns-server," + ISP_WAN_IP,
            "domain=isp.example",
            # This internet has nothing but the records below: any other
            # name does not exist (NXDOMAIN), as a resolver would say.
            "local=/#/",
        ]
        lines += ["host-record=%s,%s" % (name, ip)
                  for name, ip in sorted(self.dns_hosts.items())]
        lines += ["mx-host=%s,%s,%d" % mx for mx in self.dns_mx]
        return "\n".join(lines) + "\n"

    def _ensure_isp_dnsmasq(self):
        conf = self._path("isp", "dnsmasq.conf")
        text = self.dnsmasq_config()
        try:
            with open(conf) as f:
                changed = f.read() != text
        except FileNotFoundError:
            changed = True
        if changed:
            write_atomically(conf, text.encode())
            self._stop_named(ISP_DNSMASQ)
        if self._ensure_running(ISP_DNSMASQ) is None:
            self.start_isp_dhcp()

    def start_isp_dhcp(self):
        """Start the ISP's dnsmasq (DHCP and DNS); its leases survive restarts."""
        proc = self._spawn(ISP_DNSMASQ, "isp",
                           ["dnsmasq", "--conf-file=" + self._path("isp", "dnsmasq.conf")])
        self._wait_listening("isp", ISP_PORTS, proc)

    def stop_isp_dhcp(self):
        """Stop the ISP's dnsmasq: no DHCP (and no upstream DNS) until started."""
        self._stop_named(ISP_DNSMASQ)

    def restart_isp_dhcp(self):
        """Restart the ISP's DHCP server (dnsmasq), keeping its lease file."""
        self.stop_isp_dhcp()
        self.start_isp_dhcp()

    def isp_leases(self):
        """The ISP's current leases: a list of dicts (expires, mac, ip, hostname)."""
        try:
            with open(self._path("isp", "dnsmasq.leases")) as f:
                rows = [line.split() for line in f if line.strip()]
        except FileNotFoundError:
            return []
        return [{"expires": int(r[0]), "mac": r[1], "ip": r[2],
                 "hostname": None if r[3] == "*" else r[3]}
                for r in rows if len(r) >= 4]

    def route_lan_via(self, wan_ip):
        """Give the ISP a route to the LAN through the server's WAN address."""
        ipaddress.IPv4Address(wan_ip)
        self._ip("isp", "route", "replace", LAN_NET, "via", wan_ip, "dev", "server")

    def unroute_lan(self):
        """Remove the ISP's route to the LAN, if any (the default state)."""
        self._ip("isp", "route", "del", LAN_NET, check=False)

    # ------------------------------------------------------------ internet host

    def _ensure_internet_host(self):
        accounts = os.path.join(self.inet_dir, ACCOUNTS_FILE)
        if not os.path.exists(accounts):
            write_accounts(accounts, self.pop3_accounts)
        if self._ensure_running(INET_SERVICES) is not None:
            return
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root] + [p for p in [env.get("PYTHONPATH")] if p])
        proc = self._spawn(INET_SERVICES, "inet",
                           [self.python, "-m", "allworx.lab.internet",
                            "--dir", self.inet_dir], env=env)
        self._wait_listening("inet", INET_PORTS, proc)

    def set_pop3_account(self, user, password):
        """Add or change a POP3 account on the internet host (live)."""
        path = os.path.join(self.inet_dir, ACCOUNTS_FILE)
        os.makedirs(self.inet_dir, exist_ok=True)
        accounts = read_accounts(path)
        accounts[user] = password
        write_accounts(path, accounts)

    def add_pop3_message(self, user, data):
        """Put a message (bytes) in a POP3 mailbox of the internet host; its path."""
        maildir = Maildir(os.path.join(self.inet_dir, POP3_FOLDERS, folder_name(user)))
        return maildir.deliver(with_lf(data))

    def pop3_messages(self, user):
        """The messages still in a POP3 mailbox of the internet host (bytes)."""
        maildir = Maildir(os.path.join(self.inet_dir, POP3_FOLDERS, folder_name(user)))
        return [_read(path) for path in maildir.messages()]

    def smtp_received(self):
        """What the internet host's SMTP accepted, oldest first: ReceivedMail."""
        found = []
        root = os.path.join(self.inet_dir, SMTP_FOLDERS)
        try:
            folders = sorted(os.listdir(root))
        except FileNotFoundError:
            return []
        for folder in folders:
            for path in Maildir(os.path.join(root, folder)).messages():
                found.append((os.path.basename(path), path))
        mails = []
        for _, path in sorted(found):
            sender, recipient, message = split_envelope(_read(path))
            mails.append(ReceivedMail(sender, recipient, message, path))
        return mails

    def smtp_refuse(self, code=451, text="try again later"):
        """Make the internet host's SMTP answer every RCPT with `code`; None: accept."""
        path = os.path.join(self.inet_dir, REFUSAL_FILE)
        if code is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        else:
            write_atomically(path, ("%d %s\n" % (code, text)).encode())

    # ------------------------------------------------------------ running things

    def run(self, host, argv, check=True, timeout=30, input=None, text=True,
            capture=True, **kw):
        """
        Run a command in a lab host and wait for it: a CompletedProcess with
        its output (str unless `text` is False). Raises LabCommandError on a
        non-zero exit if `check`, subprocess.TimeoutExpired after `timeout`.
        """
        return self._command(self._in_ns(host, argv), check=check, timeout=timeout,
                             input=input, text=text, capture=capture, **kw)

    def popen(self, host, argv, name=None, **kw):
        """
        Start a background process in a lab host; `down()` (or `stop(proc)`)
        kills it by PID. Its output goes to logs/NAME.log unless `stdout` or
        `stderr` are given. Returns the Popen.
        """
        name = name or "%s-%s" % (host, os.path.basename(str(argv[0])))
        if self._alive(name) is not None:
            name = "%s-%d" % (name, time.monotonic_ns())
        return self._spawn(name, host, argv, **kw)

    def _spawn(self, name, host, argv, **kw):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise LabError("bad process name %r" % (name,))
        argv = [str(a) for a in argv]
        full = self._in_ns(host, argv) if host else argv
        log_path = self._path("logs", name + ".log")
        with open(log_path, "ab") as log_file:
            kw.setdefault("stdin", subprocess.DEVNULL)
            kw.setdefault("stdout", log_file)
            kw.setdefault("stderr", subprocess.STDOUT)
            # Its own session: a signal to its process group reaches every
            # child it forks, and nothing from our terminal reaches it.
            proc = subprocess.Popen(full, start_new_session=True, **kw)
        self._record(name, proc.pid, host, " ".join(argv))
        self._children[proc.pid] = proc
        proc.lab_name = name
        return proc

    def _record(self, name, pid, host, command):
        stat = _proc_stat(pid)
        record = LabProcess(name, pid, stat[1] if stat else -1, host, command)
        write_atomically(self._path("pids", name + ".pid"), record.format().encode())
        return record

    def processes(self):
        """The processes the lab started (LabProcess), alive or not."""
        try:
            names = sorted(os.listdir(self._path("pids")))
        except FileNotFoundError:
            return []
        found = []
        for filename in names:
            if filename.endswith(".pid"):
                try:
                    found.append(LabProcess.parse(filename[:-4],
                                                  _read(self._path("pids", filename)).decode()))
                except (ValueError, IndexError, FileNotFoundError):
                    continue
        return found

    def _alive(self, name):
        for proc in self.processes():
            if proc.name == name and proc.alive():
                return proc
        return None

    def _in_place(self, proc):
        """Whether a process is in its host's current namespace (not in one
        that was deleted and rebuilt under the same name)."""
        if proc.host is None:
            return True
        try:
            return (os.stat("/proc/%d/ns/net" % proc.pid).st_ino
                    == os.stat(os.path.join("/run/netns", self.ns(proc.host))).st_ino)
        except OSError:
            return False

    def _ensure_running(self, name):
        """The live, in-place process `name`, or None after clearing a stray one."""
        proc = self._alive(name)
        if proc is not None and self._in_place(proc):
            return proc
        self._stop_named(name)
        return None

    def stop(self, proc, timeout=5.0):
        """Stop a process the lab started: a Popen, a LabProcess or its name."""
        if isinstance(proc, str):
            name = proc
        elif isinstance(proc, LabProcess):
            name = proc.name
        else:
            name = getattr(proc, "lab_name", None)
            if name is None:
                raise LabError("not a process the lab started: %r" % (proc,))
        self._stop_named(name, timeout)

    def _stop_named(self, name, timeout=5.0):
        for record in self.processes():
            if record.name == name:
                self._kill(record, timeout)
                os.unlink(self._path("pids", record.name + ".pid"))

    def _kill(self, record, timeout):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not record.alive():
                break
            try:
                if os.getpgid(record.pid) == record.pid:
                    os.killpg(record.pid, sig)
                else:
                    os.kill(record.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while record.alive() and time.monotonic() < deadline:
                self._reap(record.pid)
                time.sleep(0.02)
        self._reap(record.pid)

    def _reap(self, pid):
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            del self._children[pid]

    def _wait_listening(self, host, ports, proc, timeout=20):
        """Wait until `host` listens on every (proto, port) or `proc` has died."""
        wanted = set(ports)
        deadline = time.monotonic() + timeout
        while True:
            argv = ["ss", "-Hlntu"]
            out = self._command(self._in_ns(host, argv) if host else argv)
            listening = set()
            for line in out.stdout.splitlines():
                fields = line.split()
                if len(fields) >= 5:
                    listening.add((fields[0], int(fields[4].rsplit(":", 1)[1])))
            if wanted <= listening:
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                log = self._path("logs", proc.lab_name + ".log")
                tail = _read(log).decode("utf-8", "replace")[-2000:] if os.path.exists(log) else ""
                raise LabError("%s in %s did not start (%s); missing %s; its log %s:\n%s"
                               % (proc.lab_name, host or "the host namespace",
                                  "exited %s" % proc.returncode
                                  if proc.returncode is not None else "timed out",
                                  sorted(wanted - listening), log, tail))
            time.sleep(0.05)

    def forward_port(self, local_port, host, remote_ip, remote_port):
        """
        Relay 127.0.0.1:`local_port` of the host machine to `remote_ip`:
        `remote_port` as seen from lab host `host` (socat, one connection per
        fork). E.g. forward_port(8080, "admin", "192.168.2.254", 8080) shows
        the admin pages to the machine's browser. Returns the LabProcess.
        """
        name = "forward-%d" % local_port
        running = self._alive(name)
        if running is not None:
            return running
        self._stop_named(name)
        ipaddress.IPv4Address(remote_ip)
        missing = missing_programs(["socat"])
        if missing:
            raise LabError("forward_port needs " + ", ".join(missing))
        target = "ip netns exec %s socat STDIO TCP\\:%s\\:%d" % (
            self.ns(host), remote_ip, remote_port)
        proc = self._spawn(name, None, [
            "socat", "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % local_port,
            "EXEC:" + target])
        self._wait_listening(None, [("tcp", local_port)], proc, timeout=5)
        return self._alive(name)

    # ------------------------------------------------------------ DHCP clients

    def _dhclient_files(self, host, ifname):
        base = self._path("dhclient", "%s-%s" % (host, ifname))
        return {k: base + "." + k for k in ("conf", "leases", "pid", "sh", "env", "history")}

    def dhclient(self, host, ifname="eth0", apply=True, timeout=15, wait=True):
        """
        Run ISC dhclient on `host`'s `ifname`; it keeps its lease renewed in
        the background until `down()` or `dhclient_release()`.

        With `apply`, the address and default route are set on the interface
        (inside the namespace only; unlike Debian's dhclient-script, ours never
        writes resolv.conf or runs the system's hooks). With `wait`, returns
        the lease as dhclient reported it ({"ip_address": ..., "routers": ...,
        "domain_name_servers": ..., "domain_name": ..., ...}) or raises
        LabError after `timeout` seconds; without, returns at once (the Popen)
        and `dhclient_lease()` shows the lease once there is one.
        """
        missing = missing_programs(["dhclient"])
        if missing:
            raise LabError("dhclient needs " + ", ".join(missing))
        name = "dhclient-%s-%s" % (host, ifname)
        files = self._dhclient_files(host, ifname)
        self._stop_named(name)
        self._kill_daemons(files["conf"])
        for key in ("env", "pid"):
            if os.path.exists(files[key]):
                os.unlink(files[key])
        write_atomically(files["conf"], (
            "# allworx lab: DHCP client of %s %s\n"
            "timeout %d;\nretry 1;\ninitial-interval 1;\n"
            'send host-name "%s";\n'
            "request subnet-mask, broadcast-address, routers, domain-name,\n"
            "        domain-name-servers, host-name, ntp-servers;\n"
            % (host, ifname, timeout, host)).encode())
        write_atomically(files["sh"], _dhclient_script(files, apply).encode())
        os.chmod(files["sh"], 0o755)
        options = ["-cf", files["conf"], "-lf", files["leases"], "-pf", files["pid"],
                   "-sf", files["sh"], ifname]
        if not wait:
            return self._spawn(name, host, ["dhclient", "-4", "-d", "-v"] + options)
        argv = ["dhclient", "-4", "-1", "-v"] + options
        log_path = self._path("logs", name + ".log")
        with open(log_path, "ab") as log_file:
            # Not a pipe: the daemon dhclient becomes would hold it open.
            done = self.run(host, argv, check=False, timeout=timeout + 10,
                            capture=False, stdin=subprocess.DEVNULL,
                            stdout=log_file, stderr=subprocess.STDOUT)
        if os.path.exists(files["pid"]):
            pid = int(_read(files["pid"]).split()[0])
            self._record(name, pid, host, " ".join(argv))
        if done.returncode != 0 or not os.path.exists(files["env"]):
            tail = _read(log_path).decode("utf-8", "replace")[-1500:]
            raise LabError("no DHCP lease for %s %s (dhclient exit %s):\n%s"
                           % (host, ifname, done.returncode, tail))
        return self.dhclient_lease(host, ifname)

    def _daemons(self, marker=None):
        """
        PIDs of daemons this lab started whose PID we could not record (a
        dhclient that forks after its parent has exited): every process whose
        command line names a file of this lab's own state directory.
        """
        marker = (marker or self._path("dhclient")).encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if any(a.startswith(marker) for a in argv):
                found.append(int(entry))
        return found

    def _kill_daemons(self, marker=None):
        for pid in self._daemons(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def dhclient_lease(self, host, ifname="eth0"):
        """The lease dhclient last reported for host's ifname, or None."""
        files = self._dhclient_files(host, ifname)
        try:
            text = _read(files["env"]).decode()
        except FileNotFoundError:
            return None
        lease = {}
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.startswith("new_"):
                lease[key[4:]] = value
            elif key == "reason":
                lease["reason"] = value
        return lease

    def dhclient_release(self, host, ifname="eth0", timeout=15):
        """Release the lease of `dhclient()` and stop its daemon."""
        files = self._dhclient_files(host, ifname)
        if os.path.exists(files["conf"]):
            self.run(host, ["dhclient", "-4", "-r", "-cf", files["conf"],
                            "-lf", files["leases"], "-pf", files["pid"],
                            "-sf", files["sh"], ifname],
                     check=False, timeout=timeout)
        self._stop_named("dhclient-%s-%s" % (host, ifname))
        self._kill_daemons(files["conf"])

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
        for host in HOSTS:
            ns = self.ns(host)
            if ns in existing:
                pids = self._command(["ip", "netns", "pids", ns], check=False).stdout.split()
                if pids:
                    warnings.append(
                        "%s: processes the lab did not start still run there (pids %s); "
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
        for name in (ISP_DNSMASQ, INET_SERVICES):
            if name not in names or not names[name].alive():
                problems.append("%s is not running" % name)
        for proc in names.values():
            if proc.name not in (ISP_DNSMASQ, INET_SERVICES) and not proc.alive():
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


@attr.s(frozen=True)
class ReceivedMail:
    """A message the internet host's SMTP accepted, with its envelope."""

    sender = attr.ib()
    recipient = attr.ib()
    data = attr.ib(repr=False)
    path = attr.ib()


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _dhclient_script(files, apply):
    """A dhclient-script that records the lease and, if `apply`, sets it on the
    interface; unlike Debian's it never touches /etc/resolv.conf."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    script = [
        "#!/bin/sh",
        "# Written by allworx lab.",
        'echo "$reason $new_ip_address" >> %s' % files["history"],
    ]
    if apply:
        script += [
            'case "$reason" in',
            "PREINIT) %s link set dev \"$interface\" up ;;" % ip,
            "BOUND|RENEW|REBIND|REBOOT)",
            '  if [ -n "$old_ip_address" ] && [ "$old_ip_address" != "$new_ip_address" ]; then',
            '    %s addr del "$old_ip_address/$old_subnet_mask" dev "$interface"' % ip,
            "  fi",
            '  %s addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"' % ip,
            '  set -- $new_routers',
            '  [ -n "$1" ] && %s route replace default via "$1" dev "$interface"' % ip,
            "  ;;",
            "EXPIRE|FAIL|RELEASE|STOP)",
            '  [ -n "$old_ip_address" ] && %s addr del "$old_ip_address/$old_subnet_mask" dev "$interface"' % ip,
            "  ;;",
            "esac",
        ]
    script += [
        'case "$reason" in',
        "BOUND|RENEW|REBIND|REBOOT)",
        "  /usr/bin/env | /usr/bin/sort | /bin/grep -E '^(reason|interface|new_)' > %s.tmp"
        % files["env"],
        "  /bin/mv %s.tmp %s ;;" % (files["env"], files["env"]),
        "esac",
        "exit 0",
    ]
    return "\n".join(script) + "\n"


# ---------------------------------------------------------------- command line

def _parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", default=argparse.SUPPRESS,
                        help="namespace name prefix (default %s)" % DEFAULT_PREFIX)
    common.add_argument("--state-root", default=argparse.SUPPRESS,
                        help="state directory root (default %s)" % STATE_ROOT)
    parser = argparse.ArgumentParser(
        prog="allworx lab", parents=[common],
        description="The virtual office: network namespaces with the allworx "
                    "server's LAN, WAN, ISP and internet.")
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", parents=[common], help="build (or repair) the lab")
    up.add_argument("--wan-lease", type=int, default=120, metavar="SECONDS",
                    help="lease time of the ISP's DHCP server (default 120)")
    up.add_argument("--forward-admin", type=int, metavar="PORT",
                    help="relay 127.0.0.1:PORT to the admin pages, %s:8080"
                         % SERVER_LAN_IP)
    sub.add_parser("down", parents=[common], help="remove the lab")
    sub.add_parser("status", parents=[common],
                   help="show namespaces, addresses and processes "
                        "(exit 0 if the lab is whole)")
    ex = sub.add_parser("exec", parents=[common],
                        help="run a command in a lab host: exec HOST CMD...")
    ex.add_argument("host", choices=HOSTS, metavar="HOST",
                    help="one of " + ", ".join(HOSTS))
    ex.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    return parser


def main(argv=None):
    """`allworx lab up|down|status|exec HOST CMD...`; `argv` follows `lab`."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        require_root()
        kw = {"prefix": getattr(args, "prefix", DEFAULT_PREFIX),
              "state_root": getattr(args, "state_root", STATE_ROOT)}
        if args.action == "up":
            kw["wan_lease_seconds"] = args.wan_lease
        try:
            lab = Lab(**kw)
        except ValueError as e:
            raise LabError(str(e))
        if args.action == "up":
            lab.up()
            if args.forward_admin:
                lab.forward_port(args.forward_admin, "admin", SERVER_LAN_IP, 8080)
            print(lab.status())
            return 0
        if args.action == "down":
            for warning in lab.down():
                print("warning: " + warning, file=sys.stderr)
            return 0
        if args.action == "status":
            print(lab.status())
            problems = lab.problems()
            for problem in problems:
                print("problem: " + problem)
            return 1 if problems else 0
        return _exec(lab, args.host, args.command)
    except LabError as e:
        print("allworx lab: %s" % (e,), file=sys.stderr)
        return 2


def _exec(lab, host, command):
    if not command:
        raise LabError("exec needs a command: allworx lab exec HOST CMD...")
    if lab.ns(host) not in lab._netns_list():
        raise LabError("namespace %s does not exist: run `allworx lab up` first"
                       % lab.ns(host))
    proc = None

    def relay(signum, frame):
        if proc is not None and signum != signal.SIGINT:
            proc.send_signal(signum)

    # Ctrl-C reaches the command from the terminal and is the command's to
    # handle; a SIGTERM or SIGHUP sent to us is passed on to it. (Handled,
    # not ignored: the command starts with the default dispositions.)
    relayed = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, relay) for signum in relayed}
    try:
        proc = subprocess.Popen(lab._in_ns(host, command))
        code = proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
