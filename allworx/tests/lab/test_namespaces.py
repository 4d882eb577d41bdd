"""
Tests for allworx.lab (the virtual office): its layout, processes, peers and
command line.

The first part runs anywhere: configuration, bookkeeping and the internet
host's services driven through in-memory transports. `LabTests` builds a real
lab (prefix `awt`) and fails, with the reason, unless run as root on a machine
where `ip netns` works.
"""

import io
import ipaddress
import os
import socket
import sys
import textwrap
import time
import urllib.request

from twisted.cred import credentials, error
from twisted.internet import address, defer
from twisted.internet.error import ConnectionDone
from twisted.python import failure
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from allworx.lab import cli, internet, peers, processes
from allworx.lab import namespaces
from allworx.lab.namespaces import Lab
from allworx.lab.processes import LabError, LabProcess
from allworx.lab.topology import (
    ADDRESSES,
    HOSTS,
    IFNAMSIZ,
    LAB_PROGRAMS,
    LINKS,
    PACKAGES,
    RECOMMENDS_NEEDED,
)
from allworx.lab.maildir import (
    ACCOUNTS_FILE,
    Maildir,
    read_accounts,
    split_envelope,
    write_accounts,
)
from allworx.tests.lab.fixtures import client_report, require_programs, start_lab

DOCUMENTATION_NETS = [ipaddress.ip_network(n) for n in
                      ("192.168.2.0/24", "203.0.113.0/24", "198.51.100.0/24",
                       "192.168.3.0/24")]


class LabLayoutTests(unittest.TestCase):
    """The lab's names, addresses and configuration, without building it."""

    def test_namespace_names(self):
        lab = Lab(prefix="awt")
        self.assertEqual(lab.ns("pc1"), "awt-pc1")
        self.assertEqual(Lab().ns("server"), "awx-server")
        self.assertRaises(LabError, lab.ns, "printer")

    def test_prefix_is_validated(self):
        for bad in ("", "AWX", "a-b", "toolongprefix", "1ab", "a/b"):
            self.assertRaises(ValueError, Lab, prefix=bad)

    def test_lease_time_respects_dnsmasq_minimum(self):
        self.assertRaises(ValueError, Lab, wan_lease_seconds=60)
        self.assertIn(",300s", Lab(wan_lease_seconds=300).dnsmasq_config())

    def test_interface_names_fit_the_kernel_limit(self):
        for link in LINKS:
            self.assertLessEqual(len(link.a_if), IFNAMSIZ)
            self.assertLessEqual(len(link.b_if), IFNAMSIZ)
            self.assertIn(link.a, HOSTS)
            self.assertIn(link.b, HOSTS)

    def test_only_documentation_ranges(self):
        for host, ifname, cidr in ADDRESSES:
            net = ipaddress.ip_interface(cidr).network
            self.assertTrue(any(net.subnet_of(doc) for doc in DOCUMENTATION_NETS), cidr)
        for ip in Lab().dns_hosts.values():
            self.assertTrue(any(ipaddress.ip_address(ip) in doc
                                for doc in DOCUMENTATION_NETS), ip)

    def test_server_interfaces(self):
        server_links = {link.a_if for link in LINKS if link.a == "server"}
        self.assertEqual(server_links, {"lan0", "wan0"})
        self.assertFalse([a for a in ADDRESSES if a[0] == "server"])
        self.assertEqual(Lab().mac("server", "wan0"), "02:a1:00:00:71:fe")
        self.assertRaises(LabError, Lab().mac, "pc1", "wan0")

    def test_branch_office_and_laptop(self):
        lab = Lab()
        self.assertEqual({link.a_if for link in LINKS if link.a == "bserver"}, {"lan0", "wan0"})
        self.assertFalse([a for a in ADDRESSES if a[0] == "bserver"])
        self.assertEqual({link.a for link in LINKS if link.b == "blan"},
                         {"bserver", "bpc1", "bphone1"})
        self.assertIn(("laptop", "eth0", "198.51.100.50/24"), ADDRESSES)
        for host in HOSTS:
            # The longest namespace name a prefix can give still names a host plainly.
            self.assertLessEqual(len(host), IFNAMSIZ)
        lines = lab.dnsmasq_config().splitlines()
        self.assertIn("dhcp-host=%s,set:branch,203.0.113.130,branch" % lab.mac("bserver", "wan0"),
                      lines)
        self.assertIn("dhcp-option=tag:branch,option:netmask,255.255.255.128", lines)
        self.assertIn("dhcp-range=set:branch,203.0.113.140,203.0.113.160,255.255.255.128,120s", lines)
        self.assertIn("dhcp-option=tag:branch,option:router,203.0.113.129", lines)
        self.assertIn("interface=bserver", lines)
        self.assertIn("no-dhcp-interface=laptop", lines)

    def test_dnsmasq_config(self):
        lab = Lab(prefix="awt", state_root="/run/x")
        text = lab.dnsmasq_config()
        for line in ("no-resolv", "no-hosts", "keep-in-foreground",
                     "dhcp-range=203.0.113.10,203.0.113.50,255.255.255.0,120s",
                     "dhcp-option=option:router,203.0.113.1",
                     "dhcp-option=option:dns-server,203.0.113.1",
                     "domain=isp.example",
                     "host-record=web.internet.example,198.51.100.10",
                     "host-record=mail.internet.example,198.51.100.10",
                     "mx-host=internet.example,mail.internet.example,10",
                     "host-record=sip.internet.example,198.51.100.20",
                     "dhcp-leasefile=/run/x/awt/isp/dnsmasq.leases",
                     "pid-file=/run/x/awt/isp/dnsmasq.pid"):
            self.assertIn(line, text.splitlines())

    def test_dhclient_script_never_touches_resolv_conf(self):
        files = Lab(state_root="/run/x")._dhclient_files("pc1", "eth0")
        for apply in (True, False):
            script = peers._dhclient_script(files, apply)
            self.assertNotIn("resolv", script)
            self.assertTrue(script.startswith("#!/bin/sh\n"))
        self.assertIn("addr replace", peers._dhclient_script(files, True))
        self.assertNotIn("addr replace", peers._dhclient_script(files, False))


def makefile_packages(lists=("RUN_PACKAGES", "TEST_PACKAGES")):
    """The Debian packages the Makefile's package lists `lists` name (by
    default the two `make test` installs)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    with open(os.path.join(root, "Makefile")) as f:
        text = f.read().replace("\\\n", " ")
    packages = set()
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        words = name.split()
        if sep and len(words) == 2 and words[0] in lists and words[1] in (":", "+"):
            packages.update(value.split())
    return packages


class PackageTests(unittest.TestCase):
    """`make deps` installs, each by name, every package the lab and its tests use;
    `make run` only what the server and the lab need; `make bench` the rest."""

    def test_every_program_has_its_package_in_the_makefile(self):
        packages = makefile_packages()
        self.assertIn("iproute2", packages)
        for program, package in sorted(PACKAGES.items()):
            self.assertIn(package, packages, "%s (for %s)" % (package, program))

    def test_what_the_tests_need_of_a_recommends_is_named(self):
        packages = makefile_packages()
        for program, needed in sorted(RECOMMENDS_NEEDED.items()):
            for package in needed:
                self.assertIn(package, packages, "%s (for %s)" % (package, program))
        self.assertIn("libnet-ssleay-perl", RECOMMENDS_NEEDED["swaks"])

    def test_make_run_installs_the_server_and_the_lab_only(self):
        run = makefile_packages(["RUN_PACKAGES"])
        bench = makefile_packages(["BENCH_PACKAGES"])
        # The lab's programs, its PCs' and phones' clients and what the banner shows.
        for program in LAB_PROGRAMS + ("dhclient", "socat", "baresip", "wireguard-go", "dig",
                                       "curl", "swaks", "ping", "openssl"):
            self.assertIn(PACKAGES[program], run, program)
        for package in ("postfix", "nginx-light", "cmake", "kea-dhcp4-server", "dnsperf",
                        "rtpengine-daemon", "libpugixml-dev"):
            self.assertIn(package, bench)
            self.assertNotIn(package, makefile_packages(), package)
        # Dovecot is a test peer too (allworx.tests.lab.test_imapdovecot): make test installs it
        self.assertIn("dovecot-imapd", makefile_packages(["TEST_PACKAGES"]))
        self.assertNotIn("dovecot-imapd", run)
        self.assertEqual(run & bench, set())


class LabProcessTests(unittest.TestCase):
    """Pid file records and the liveness check."""

    def test_round_trip(self):
        record = LabProcess("isp-dnsmasq", 42, 1234, "isp", "dnsmasq -k")
        self.assertEqual(LabProcess.parse("isp-dnsmasq", record.format()), record)
        host_side = LabProcess("forward-8080", 43, 99, None, "socat")
        self.assertEqual(LabProcess.parse("forward-8080", host_side.format()), host_side)

    def test_alive_checks_start_time(self):
        started = processes._proc_stat(os.getpid())[1]
        self.assertTrue(LabProcess("me", os.getpid(), started, None).alive())
        # Same PID, different start time: a recycled PID, not ours.
        self.assertFalse(LabProcess("me", os.getpid(), started + 1, None).alive())


class SharedDirectoryTests(unittest.TestCase):
    """Two labs share /run/allworx-lab: one's down() removes it when empty,
    which may fall between the other's up() making it and making its own
    directory inside (a CI run failed so: FileNotFoundError in makedirs)."""

    def test_a_parent_removed_meanwhile_is_made_again(self):
        root = os.path.join(os.path.abspath(self.mktemp()), "allworx-lab")
        mkdir = os.mkdir

        def racing_mkdir(path, mode=0o777):
            mkdir(path, mode)
            if path == root and not removed:
                removed.append(path)
                os.rmdir(path)  # the other lab's down(), just then
        removed = []
        self.patch(os, "mkdir", racing_mkdir)
        namespaces.ensure_directory(os.path.join(root, "aww", "pids"))
        self.assertEqual(removed, [root])
        self.assertTrue(os.path.isdir(os.path.join(root, "aww", "pids")))

    def test_gives_up_after_its_attempts(self):
        from allworx import atomicfile

        def failing(path, mode=0o777):
            raise FileNotFoundError(2, "No such file or directory", path)
        self.patch(atomicfile.os, "mkdir", failing)
        self.assertRaises(FileNotFoundError, atomicfile.ensure_directory, "/x/y", attempts=3)


class CommandLineTests(unittest.TestCase):
    """`allworx lab` without root."""

    def test_needs_root(self):
        self.patch(processes.os, "geteuid", lambda: 1000)
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(cli.main(["status"]), 2)
        self.assertIn("allworx lab needs root: it creates network namespaces",
                      err.getvalue())
        self.assertIn("needs root", processes.unavailable_reason())

    def test_exec_parses_the_command(self):
        args = cli._parser().parse_args(
            ["exec", "--prefix", "awt", "pc1", "ping", "-c", "1", "192.168.2.200"])
        self.assertEqual((args.prefix, args.host, args.command),
                         ("awt", "pc1", ["ping", "-c", "1", "192.168.2.200"]))
        args = cli._parser().parse_args(["--prefix", "awt", "up", "--wan-lease", "300"])
        self.assertEqual((args.prefix, args.wan_lease), ("awt", 300))

    def test_help_of_each_action(self):
        helps = cli.helps()
        self.assertEqual([h.split("\n")[0].split("[")[0] for h in helps],
                         ["usage: allworx lab ", "usage: allworx lab up ",
                          "usage: allworx lab down ", "usage: allworx lab status ",
                          "usage: allworx lab exec ", "usage: allworx lab call "])
        for text in helps:
            self.assertIn("--prefix P", text)
            self.assertIn("examples:\n  allworx lab", text)
        self.assertIn("--forward-admin PORT", helps[1])
        self.assertIn("HOST", helps[4])
        self.assertIn("PHONE NUMBER", helps[5])
        self.assertIn("--hold SECONDS", helps[5])


class MailStateTests(unittest.TestCase):
    """Lab methods that only read and write the internet host's files."""

    def setUp(self):
        self.lab = Lab(prefix="awt", state_root=self.mktemp())

    def test_pop3_messages(self):
        self.lab.add_pop3_message("remote", b"Subject: one\r\n\r\nbody\r\n")
        self.lab.add_pop3_message("remote", b"Subject: two\r\n\r\nbody\r\n")
        self.assertEqual(self.lab.pop3_messages("remote"),
                         [b"Subject: one\n\nbody\n", b"Subject: two\n\nbody\n"])
        self.assertEqual(self.lab.pop3_messages("nobody"), [])

    def test_pop3_accounts(self):
        self.lab.set_pop3_account("alice", "secret")
        path = os.path.join(self.lab.inet_dir, ACCOUNTS_FILE)
        self.assertEqual(read_accounts(path), {"alice": "secret"})

    def test_smtp_received_empty(self):
        self.assertEqual(self.lab.smtp_received(), [])


def _run_now(iterator):
    # POP3 writes long answers through a cooperator; here they run at once.
    for _ in iterator:
        pass
    return defer.succeed(iterator)


def _session(factory, lines):
    """Feed `lines` to a server protocol of `factory`; what it answered."""
    peer = address.IPv4Address("TCP", "203.0.113.20", 40000)
    proto = factory.buildProtocol(peer)
    proto.schedule = _run_now
    transport = StringTransport(peerAddress=peer)
    proto.makeConnection(transport)
    for line in lines:
        proto.dataReceived(line + b"\r\n")
        while transport.producer is not None:
            transport.producer.resumeProducing()
    proto.connectionLost(failure.Failure(ConnectionDone()))
    return transport.value()


class InternetHostTests(unittest.TestCase):
    """The internet host's services, in memory."""

    def setUp(self):
        self.lab = Lab(prefix="awt", state_root=self.mktemp())
        # The lab and the host agree on where mail lives.
        self.dir = self.lab.inet_dir
        os.makedirs(self.dir)

    def test_whoami(self):
        request = DummyRequest([b"whoami"])
        request.client = address.IPv4Address("TCP", "203.0.113.20", 5555)
        body = internet.WhoAmI().render_GET(request)
        self.assertEqual(body, b"203.0.113.20\n")

    def test_smtp_sink_stores_per_recipient(self):
        factory = internet.SinkFactory(internet.SinkDelivery(self.dir))
        out = _session(factory, [
            b"EHLO office.example",
            b"MAIL FROM:<alice@office.example>",
            b"RCPT TO:<Bob@Internet.example>",
            b"RCPT TO:<carol@internet.example>",
            b"DATA",
            b"Subject: hello",
            b"",
            b"..leading dot",
            b".",
            b"QUIT",
        ])
        self.assertIn(b"250 Delivery in progress", out)
        mails = self.lab.smtp_received()
        self.assertEqual(sorted(m.recipient for m in mails),
                         ["Bob@Internet.example", "carol@internet.example"])
        for mail in mails:
            self.assertEqual(mail.sender, "alice@office.example")
            self.assertTrue(mail.data.startswith(b"Received: from office.example"))
            self.assertTrue(mail.data.endswith(b"Subject: hello\n\n.leading dot\n"))
        self.assertIn("/smtp/bob@internet.example/new/",
                      [m for m in mails if m.recipient.startswith("Bob")][0].path)

    def test_smtp_refusal_switch(self):
        factory = internet.SinkFactory(internet.SinkDelivery(self.dir))
        self.lab.smtp_refuse(451, "try again later")
        out = _session(factory, [b"HELO x", b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>"])
        self.assertIn(b"451 try again later", out)
        self.lab.smtp_refuse(None)
        out = _session(factory, [b"HELO x", b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>"])
        self.assertIn(b"250 Recipient address accepted", out)

    def test_split_envelope(self):
        self.assertEqual(
            split_envelope(b"Return-Path: <>\nDelivered-To: x@y\nSubject: s\n\nb\n"),
            ("", "x@y", b"Subject: s\n\nb\n"))

    def test_pop3_mailbox_deletes_at_sync(self):
        self.lab.add_pop3_message("remote", b"Subject: one\r\n\r\nbody\r\n")
        self.lab.add_pop3_message("remote", b"Subject: two\r\n\r\nx\r\n")
        maildir = Maildir(os.path.join(self.dir, "pop3", "remote"))
        box = internet.MaildirMailbox(maildir)
        # Sizes count CRLF line ends, as RETR sends them.
        self.assertEqual(box.listMessages(), [22, 19])
        uid = box.getUidl(0)
        self.assertEqual(box.getUidl(0), uid)
        self.assertRaises(ValueError, box.getUidl, 2)
        box.deleteMessage(0)
        self.assertEqual(box.listMessages(), [0, 19])
        self.assertRaises(ValueError, box.getMessage, 0)
        box.undeleteMessages()
        box.deleteMessage(0)
        self.assertEqual(len(maildir.messages()), 2, "nothing deleted before QUIT")
        box.sync()
        self.assertEqual(self.lab.pop3_messages("remote"), [b"Subject: two\n\nx\n"])
        self.assertNotEqual(internet.MaildirMailbox(maildir).getUidl(0), uid)

    def test_pop3_session(self):
        write_accounts(os.path.join(self.dir, ACCOUNTS_FILE), {"remote": "remotepw"})
        self.lab.add_pop3_message("remote", b"Subject: one\r\n\r\n.body\r\n")
        out = _session(internet.pop3_factory(self.dir), [
            b"USER remote", b"PASS remotepw", b"STAT", b"RETR 1", b"DELE 1", b"QUIT"])
        self.assertIn(b"+OK 1 23\r\n", out)
        self.assertIn(b"Subject: one\r\n\r\n..body\r\n.\r\n", out)
        self.assertEqual(self.lab.pop3_messages("remote"), [])

    def test_account_checker(self):
        path = os.path.join(self.dir, ACCOUNTS_FILE)
        write_accounts(path, {"remote": "remotepw"})
        checker = internet.AccountFileChecker(path)
        good = checker.requestAvatarId(credentials.UsernamePassword(b"remote", b"remotepw"))
        self.assertEqual(self.successResultOf(good), "remote")
        for user, password in ((b"remote", b"nope"), (b"nobody", b"remotepw")):
            bad = checker.requestAvatarId(credentials.UsernamePassword(user, password))
            self.failureResultOf(bad, error.UnauthorizedLogin)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabTests(unittest.TestCase):
    """A real lab, prefix `awt`: needs root and `ip netns`."""

    def setUp(self):
        self.lab = start_lab(self, prefix="awt")

    def test_lan_switch_connects_hosts(self):
        require_programs(self, ["ping"])
        lab = self.lab
        lab.run("pc1", ["ip", "addr", "add", "192.168.2.101/24", "dev", "eth0"])
        self.addCleanup(lab.run, "pc1", ["ip", "addr", "flush", "dev", "eth0"], check=False)
        lab.run("pc1", ["ping", "-c", "1", "-W", "3", "192.168.2.200"])
        routes = lab.run("admin", ["ip", "route", "show", "default"])
        self.assertIn("default via 192.168.2.254 dev eth0", routes.stdout, client_report(routes))
        for ifname in ("lan0", "wan0"):
            show = lab.run("server", ["ip", "addr", "show", "dev", ifname])
            self.assertIn("UP", show.stdout, client_report(show))
            self.assertNotIn("inet ", show.stdout, client_report(show))

    def test_isp_hands_out_wan_lease(self):
        require_programs(self, ["dhclient"])
        lab = self.lab
        lease = lab.dhclient("server", "wan0", apply=False)
        ip = ipaddress.ip_address(lease["ip_address"])
        self.assertTrue(ipaddress.ip_address("203.0.113.10") <= ip
                        <= ipaddress.ip_address("203.0.113.50"), ip)
        self.assertEqual(lease["routers"], "203.0.113.1")
        self.assertEqual(lease["domain_name_servers"], "203.0.113.1")
        self.assertEqual(lease["domain_name"], "isp.example")
        self.assertEqual(lease["dhcp_lease_time"], "120")
        # The lease is the ISP's record too, and survives a restart of its DHCP server.
        self.assertEqual([(l["mac"], l["ip"]) for l in lab.isp_leases()],
                         [(lab.mac("server", "wan0"), str(ip))])
        lab.restart_isp_dhcp()
        self.assertEqual([l["ip"] for l in lab.isp_leases()], [str(ip)])
        self.assertIn("dhclient-server-wan0", [p.name for p in lab.processes() if p.alive()])
        lab.dhclient_release("server", "wan0")
        self.assertNotIn("dhclient-server-wan0", [p.name for p in lab.processes()])

    def test_background_dhclient_applies_the_lease(self):
        require_programs(self, ["dhclient", "ping"])
        lab = self.lab
        proc = lab.dhclient("server", "wan0", wait=False)
        deadline = time.monotonic() + 15
        while lab.dhclient_lease("server", "wan0") is None:
            self.assertIsNone(proc.poll(), "dhclient exited")
            self.assertLess(time.monotonic(), deadline, "no lease in 15 s")
            time.sleep(0.1)
        ip = lab.dhclient_lease("server", "wan0")["ip_address"]
        addr = lab.run("server", ["ip", "addr", "show", "wan0"])
        self.assertIn("inet %s/24" % ip, addr.stdout, client_report(addr))
        routes = lab.run("server", ["ip", "route"])
        self.assertIn("default via 203.0.113.1 dev wan0", routes.stdout, client_report(routes))
        lab.run("server", ["ping", "-c", "1", "-W", "3", "198.51.100.10"])

    def test_branch_wan_lease_is_fixed_and_the_laptop_is_on_the_internet(self):
        require_programs(self, ["dhclient", "ping", "curl"])
        lab = self.lab
        lease = lab.dhclient("bserver", "wan0")
        self.assertEqual((lease["ip_address"], lease["routers"]), ("203.0.113.130", "203.0.113.129"), lease)
        self.assertEqual(lease.get("subnet_mask"), "255.255.255.128", lease)
        out = lab.run("isp", ["dig", "+short", "+time=2", "+tries=1", "@203.0.113.1",
                              "branch.isp.example"])
        self.assertEqual(out.stdout.strip(), "203.0.113.130", client_report(out))
        main = lab.dhclient("server", "wan0")["ip_address"]
        # Office to branch across the ISP, and the laptop to both and to the internet.
        lab.run("server", ["ping", "-c", "1", "-W", "3", "203.0.113.130"])
        for target in (main, "203.0.113.130"):
            lab.run("laptop", ["ping", "-c", "1", "-W", "3", target])
        out = lab.run("laptop", ["curl", "-sS", "-m", "5", "http://198.51.100.10/whoami"])
        self.assertEqual(out.stdout.strip(), "198.51.100.50", client_report(out))
        # The branch's switch joins its PC and phone.
        lab.run("bpc1", ["ip", "addr", "add", "192.168.3.1/24", "dev", "eth0"])
        lab.run("bphone1", ["ip", "addr", "add", "192.168.3.11/24", "dev", "eth0"])
        lab.run("bpc1", ["ping", "-c", "1", "-W", "3", "192.168.3.11"])

    def test_internet_web_sees_the_client_address(self):
        require_programs(self, ["curl"])
        out = self.lab.run("isp", ["curl", "-sS", "-m", "5", "http://198.51.100.10/whoami"])
        self.assertEqual(out.stdout.strip(), "198.51.100.1", client_report(out))

    def test_isp_dns(self):
        require_programs(self, ["dig", "curl"])
        dig = ["dig", "+short", "+time=2", "+tries=1", "@203.0.113.1"]
        out = self.lab.run("isp", dig + ["web.internet.example"])
        self.assertEqual(out.stdout.strip(), "198.51.100.10", client_report(out))
        out = self.lab.run("inet", dig + ["acme.internet.example"])
        self.assertEqual(out.stdout.strip(), "198.51.100.30", client_report(out))
        out = self.lab.run("inet", dig + ["internet.example", "MX"])
        self.assertEqual(out.stdout.strip(), "10 mail.internet.example.", client_report(out))
        # The internet's mail records (SPEC 18): SPF, the lab's DKIM keys (made
        # at `up`), the blocklist listing inet's 198.51.100.66.
        out = self.lab.run("inet", dig + ["internet.example", "TXT"])
        self.assertEqual(out.stdout.strip(), '"v=spf1 ip4:198.51.100.10 -all"', client_report(out))
        out = self.lab.run("inet", dig + ["lab._domainkey.internet.example", "TXT"])
        key = dict(self.lab.mail_keys.records())["lab._domainkey.internet.example"]
        self.assertEqual(out.stdout.strip().replace('" "', "").strip('"'), key, client_report(out))
        out = self.lab.run("inet", dig + ["66.100.51.198.dnsbl.internet.example", "A"])
        self.assertEqual(out.stdout.strip(), "127.0.0.2", client_report(out))
        out = self.lab.run("isp", ["curl", "-sS", "-m", "5", "--interface", "198.51.100.1",
                                   "http://198.51.100.66/whoami"], check=False)
        self.assertEqual(out.stdout.strip(), "198.51.100.1", client_report(out))
        resolv = self.lab.run("pc1", ["cat", "/etc/resolv.conf"])
        self.assertEqual(resolv.stdout.split()[-1], "192.168.2.254", client_report(resolv))

    def test_internet_mail(self):
        lab = self.lab
        lab.add_pop3_message("remote", b"Subject: waiting\r\n\r\nfor you\r\n")
        script = textwrap.dedent("""
            import poplib, smtplib
            s = smtplib.SMTP("198.51.100.10", 25, timeout=5)
            s.sendmail("a@office.example", ["b@internet.example"], "Subject: hi\\r\\n\\r\\nyo\\r\\n")
            s.quit()
            p = poplib.POP3("198.51.100.10", 110, timeout=5)
            p.user("remote"); p.pass_("remotepw")
            print(b"\\n".join(p.retr(1)[1]).decode())
            p.dele(1); p.quit()
        """)
        out = lab.run("isp", [lab.python, "-c", script], timeout=20)
        self.assertIn("Subject: waiting", out.stdout, client_report(out))
        self.assertEqual(lab.pop3_messages("remote"), [])
        [mail] = lab.smtp_received()
        self.assertEqual((mail.sender, mail.recipient), ("a@office.example", "b@internet.example"))
        self.assertTrue(mail.data.endswith(b"Subject: hi\n\nyo\n"))

    def test_route_lan_via(self):
        lab = self.lab
        lab.route_lan_via("203.0.113.2")
        routes = lab.run("isp", ["ip", "route"])
        self.assertIn("192.168.2.0/24 via 203.0.113.2 dev server", routes.stdout,
                      client_report(routes))
        lab.unroute_lan()
        routes = lab.run("isp", ["ip", "route"])
        self.assertNotIn("192.168.2.0/24", routes.stdout, client_report(routes))

    def test_forward_port(self):
        require_programs(self, ["socat"])
        port = _free_port()
        proc = self.lab.forward_port(port, "isp", "198.51.100.10", 80)
        self.assertTrue(proc.alive())
        body = urllib.request.urlopen("http://127.0.0.1:%d/whoami" % port, timeout=5).read()
        self.assertEqual(body, b"198.51.100.1\n")
        self.lab.stop(proc)
        self.assertFalse(proc.alive())

    def test_up_twice_and_repair(self):
        lab = self.lab
        before = {p.name: p for p in lab.processes()}
        lab.up()
        self.assertEqual({p.name: p for p in lab.processes()}, before)
        self.assertEqual(lab.problems(), [])
        # Break it: lose a host, the ISP (its dnsmasq lives on in the old
        # namespace) and the internet host's services.
        lab._command(["ip", "netns", "del", lab.ns("pc2")])
        lab._command(["ip", "netns", "del", lab.ns("isp")])
        lab.stop("inet-services")
        lab.stop_provider()
        problems = lab.problems()
        for problem in ("namespace %s is missing" % lab.ns("pc2"),
                        "namespace %s is missing" % lab.ns("isp"),
                        "inet-services is not running",
                        "provider is not running",
                        "isp-dnsmasq (pid %d) runs in a deleted namespace %s"
                        % (before["isp-dnsmasq"].pid, lab.ns("isp"))):
            self.assertIn(problem, problems)
        lab.up()
        self.assertEqual(lab.problems(), [])
        self.assertFalse(before["isp-dnsmasq"].alive())
        for host, argv, expected in (("pc2", ["ip", "-br", "link"], "eth0"),
                                     ("lan", ["ip", "link", "show", "pc2"], "master br0"),
                                     ("isp", ["ss", "-lnu"], ":53 "),
                                     ("inet", ["ss", "-lnu"], "198.51.100.20:5060 ")):
            out = lab.run(host, argv)
            self.assertIn(expected, out.stdout, client_report(out))

    def test_popen_and_stop(self):
        proc = self.lab.popen("pc1", ["sleep", "60"])
        [record] = [p for p in self.lab.processes() if p.name == "pc1-sleep"]
        self.assertEqual(record.pid, proc.pid)
        self.assertTrue(record.alive())
        self.lab.stop(proc)
        self.assertIsNotNone(proc.poll())
        self.assertNotIn("pc1-sleep", [p.name for p in self.lab.processes()])

    def test_command_line(self):
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertEqual(cli.main(["--prefix", self.lab.prefix, "status"]), 0)
        self.assertIn(self.lab.ns("admin"), out.getvalue())
        self.assertIn("192.168.2.200/24", out.getvalue())
        prefix = self.lab.prefix
        self.assertEqual(cli.main(["exec", "--prefix", prefix, "isp", "true"]), 0)
        self.assertEqual(cli.main(["exec", "--prefix", prefix, "isp", "sh", "-c", "exit 3"]),
                         3)

    def test_down_removes_everything(self):
        lab = self.lab
        lab.popen("inet", ["sleep", "60"])
        procs = lab.processes()
        # The ISP's dnsmasq and time server, the internet host, the provider, the ACME CA
        # and the sleep.
        self.assertEqual(len(procs), 6, [p.name for p in procs])
        self.assertEqual(lab.down(), [])
        self.assertEqual([p.name for p in procs if p.alive()], [])
        listed = lab._command(["ip", "netns", "list"])
        self.assertEqual([ns for ns in listed.stdout.split() if ns.startswith(lab.prefix + "-")],
                         [], client_report(listed))
        for host in HOSTS:
            self.assertFalse(os.path.exists(os.path.join("/etc/netns", lab.ns(host))))
        self.assertFalse(os.path.exists(lab.state_dir))
        self.assertEqual(lab.down(), [])
