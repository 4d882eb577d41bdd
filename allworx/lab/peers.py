# -*- test-case-name: allworx.tests.lab.test_namespaces -*-
"""
The office's counterparts that the lab runs: the ISP (dnsmasq: the WAN's DHCP
server and an upstream DNS; `allworx.lab.timeserver`: its time server), the internet host's services (`allworx.lab.internet`)
and its mail, and ISC dhclient on any lab host.
"""

import ipaddress
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
from allworx.lab.mailsender import LabDkimKeys, txt_strings
from allworx.lab.processes import LabError, LabRunner, missing_programs, read_file
from allworx.lab.topology import (
    BRANCH_ISP_IP,
    BRANCH_WAN_DHCP_RANGE,
    BRANCH_WAN_IP,
    BRANCH_WAN_NET,
    BRANCH_WAN_NAME,
    DNS_HOSTS,
    DNS_MX,
    DNS_TXT,
    DNSBL_ANSWER,
    DNSBL_LISTED,
    DNSBL_ZONE,
    INET_PORTS,
    INET_SERVICES,
    ISP_DNSMASQ,
    ISP_NTP,
    ISP_NTP_PORTS,
    ISP_PORTS,
    ISP_WAN_IP,
    LAN_NET,
    LINKS,
    OFFICE_NAMES,
    OFFICE_WAN_NAME,
    WAN_DHCP_RANGE,
)


def _valid_lease(instance, attribute, value):
    if value < 120:
        raise ValueError("dnsmasq's shortest lease is 120 seconds, got %r" % (value,))


@attr.s(frozen=True)
class ReceivedMail:
    """A message the internet host's SMTP accepted, with its envelope."""

    sender = attr.ib()
    recipient = attr.ib()
    data = attr.ib(repr=False)
    path = attr.ib()


@attr.s
class LabPeers(LabRunner):
    """
    The ISP, the internet host and DHCP clients of a lab. `wan_lease_seconds`,
    `dns_hosts` and `dns_mx` configure the ISP's dnsmasq, `pop3_accounts` the
    internet host's POP3 server; `python` runs the internet host's services.
    """

    wan_lease_seconds = attr.ib(default=120, validator=_valid_lease)
    dns_hosts = attr.ib(factory=lambda: dict(DNS_HOSTS))
    dns_mx = attr.ib(default=DNS_MX)
    pop3_accounts = attr.ib(factory=lambda: {"remote": "remotepw"})
    python = attr.ib(default=sys.executable)

    @property
    def inet_dir(self):
        """The internet host's data directory (mail it received, POP3 boxes)."""
        return self._path("inet")

    @property
    def mail_keys(self):
        """The internet mail senders' DKIM keys (`LabDkimKeys`), made at `up()`."""
        return LabDkimKeys(self._path("inet", "dkim"))

    def dns_txt_records(self):
        """
        [(name, TXT value)] the ISP's DNS publishes: the senders' SPF and
        DMARC, their DKIM keys (once made), and the blocklist's entries (with
        their A record in `dnsmasq_config`).
        """
        records = sorted(DNS_TXT.items()) + self.mail_keys.records()
        records += [(dnsbl_name(ip), reason) for ip, reason in sorted(DNSBL_LISTED.items())]
        return records

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
            "interface=bserver",
            "interface=laptop",
            "no-dhcp-interface=inet",
            "no-dhcp-interface=laptop",
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
            # The branch office's segment: its own range and router (a
            # tagged option wins over the untagged one above).
            "dhcp-range=set:branch,%s,%s,255.255.255.128,%ds" % (
                BRANCH_WAN_DHCP_RANGE + (self.wan_lease_seconds,)),
            "dhcp-option=tag:branch,option:router," + BRANCH_ISP_IP,
            "domain=isp.example",
            # This internet has nothing but the records below: any other
            # name does not exist (NXDOMAIN), as a resolver would say.
            "local=/#/",
        ]
        lines += ["host-record=%s,%s" % (name, ip)
                  for name, ip in sorted(self.dns_hosts.items())]
        lines += ["mx-host=%s,%s,%d" % mx for mx in self.dns_mx]
        lines += ["host-record=%s,%s" % (dnsbl_name(ip), DNSBL_ANSWER)
                  for ip in sorted(DNSBL_LISTED)]
        lines += ["txt-record=%s,%s" % (name, ",".join(_dnsmasq_quoted(s) for s in txt_strings(value)))
                  for name, value in self.dns_txt_records()]
        # The office as the internet sees it: its WAN lease is named
        # OFFICE_WAN_NAME, and its names point there (the lab's ACME CA checks
        # HTTP-01 challenges on them).
        server_wan_mac = [l.a_mac for l in LINKS if (l.a, l.a_if) == ("server", "wan0")][0]
        lines.append("dhcp-host=%s,%s" % (server_wan_mac, OFFICE_WAN_NAME))
        lines += ["cname=%s,%s.isp.example" % (name, OFFICE_WAN_NAME) for name in OFFICE_NAMES]
        # The branch's lease is fixed: the main office's [site branch] dials it.
        branch_wan_mac = [l.a_mac for l in LINKS if (l.a, l.a_if) == ("bserver", "wan0")][0]
        # Its segment is the upper half of the ISP's /24, so the main range's
        # context (netmask /24) also matches there: the host's own tag picks
        # the branch's router, netmask and broadcast.
        lines.append("dhcp-host=%s,set:branch,%s,%s" % (branch_wan_mac, BRANCH_WAN_IP,
                                                        BRANCH_WAN_NAME))
        net = ipaddress.ip_network(BRANCH_WAN_NET)
        lines.append("dhcp-option=tag:branch,option:netmask,%s" % net.netmask)
        lines.append("dhcp-option=tag:branch,28,%s" % net.broadcast_address)   # broadcast
        return "\n".join(lines) + "\n"

    def _ensure_isp_dnsmasq(self):
        conf = self._path("isp", "dnsmasq.conf")
        self.mail_keys.ensure()
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
        self.wait_listening("isp", ISP_PORTS, proc)

    def start_isp_ntp(self):
        """The ISP's time server (`allworx.lab.timeserver`, stratum 1) on 203.0.113.1:123."""
        if self._ensure_running(ISP_NTP) is not None:
            return
        proc = self._spawn(ISP_NTP, "isp", [self.python, "-m", "allworx.lab.timeserver",
                                            "--dir", self._path("isp")], env=self._python_env())
        self.wait_listening("isp", ISP_NTP_PORTS, proc)

    def set_isp_clock_offset(self, seconds):
        """Make the ISP's time server tell the host clock plus `seconds` (0: the host clock)."""
        write_atomically(self._path("isp", "ntp-offset"), ("%r\n" % float(seconds)).encode())

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
        proc = self._spawn(INET_SERVICES, "inet",
                           [self.python, "-m", "allworx.lab.internet",
                            "--dir", self.inet_dir], env=self._python_env())
        self.wait_listening("inet", INET_PORTS, proc)

    def _python_env(self):
        """The environment of a lab service run as `python -m allworx.lab...` (this tree first)."""
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root] + [p for p in [env.get("PYTHONPATH")] if p])
        return env

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
        return [read_file(path) for path in maildir.messages()]

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
            sender, recipient, message = split_envelope(read_file(path))
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

    # ------------------------------------------------------------ DHCP clients

    def _dhclient_files(self, host, ifname):
        base = self._path("dhclient", "%s-%s" % (host, ifname))
        return {k: base + "." + k for k in ("conf", "leases", "pid", "sh", "env", "history")}

    def dhclient(self, host, ifname="eth0", apply=True, timeout=15, wait=True,
                 vendor_class=None):
        """
        Run ISC dhclient on `host`'s `ifname`; it keeps its lease renewed in
        the background until `down()` or `dhclient_release()`. A
        `vendor_class` is sent as option 60, and then option 66 (where a
        phone finds its provisioning server) is asked for too: the lease
        shows it as `tftp_server_name`.

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
        if vendor_class is not None and not re.fullmatch(r"[A-Za-z0-9 ._-]+", vendor_class):
            raise LabError("vendor class %r: letters, digits, space, '.', '_' and '-' only"
                           % (vendor_class,))
        write_atomically(files["conf"], (
            "# allworx lab: DHCP client of %s %s\n"
            "timeout %d;\nretry 1;\ninitial-interval 1;\n"
            'send host-name "%s";\n%s'
            "request subnet-mask, broadcast-address, routers, domain-name,\n"
            "        domain-name-servers, host-name, ntp-servers%s;\n"
            % (host, ifname, timeout, host,
               "" if vendor_class is None else 'send vendor-class-identifier "%s";\n' % vendor_class,
               "" if vendor_class is None else ", tftp-server-name")).encode())
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
        if done.returncode == 0:
            # dhclient -1 forks into the background once bound, and the
            # daemon writes the pid file after its parent has exited: wait
            # for it, so the daemon is recorded (and later stopped) by PID.
            pid = _daemon_pid(files["pid"], deadline=time.monotonic() + 5)
            if pid is not None:
                self._record(name, pid, host, " ".join(argv))
        if done.returncode != 0 or not os.path.exists(files["env"]):
            tail = read_file(log_path).decode("utf-8", "replace")[-1500:]
            raise LabError("no DHCP lease for %s %s (dhclient exit %s):\n%s"
                           % (host, ifname, done.returncode, tail))
        return self.dhclient_lease(host, ifname)

    def dhclient_lease(self, host, ifname="eth0"):
        """The lease dhclient last reported for host's ifname, or None."""
        files = self._dhclient_files(host, ifname)
        try:
            text = read_file(files["env"]).decode()
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


def _daemon_pid(path, deadline):
    """The PID in `path` once it names a live process, or None at `deadline`."""
    while True:
        try:
            pid = int(read_file(path).split()[0])
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
            if time.monotonic() >= deadline:
                return None
        time.sleep(0.02)


def dnsbl_name(ip, zone=DNSBL_ZONE):
    """The name a DNSBL `zone` answers for IPv4 address `ip`: its octets reversed."""
    return ".".join(reversed(str(ipaddress.IPv4Address(ip)).split("."))) + "." + zone


def _dnsmasq_quoted(text):
    """One string of a dnsmasq txt-record: quoted, so commas stay in it."""
    if '"' in text or "\\" in text:
        raise ValueError("no quotes or backslashes in the lab's TXT records: %r" % (text,))
    return '"%s"' % text


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
