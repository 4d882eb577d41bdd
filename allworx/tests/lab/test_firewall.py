# -*- test-case-name: allworx.tests.lab.test_firewall -*-
"""
Integration tests of the security modes in the virtual office (lab prefix
`awf`): the real server in its namespace, real clients (curl, nmap, dig, an
echo session, python's http.server) on the LAN PCs and the internet host.
They need root; without it, or without a client, they fail and say why.
"""

import json
import os
import re
import subprocess
import sys
import time

from twisted.trial import unittest

from allworx.tests.confs import MINIMAL, with_sections
from allworx.tests.lab.fixtures import client_report, start_lab
from allworx.tests.lab.server import LabServer

PREFIX = "awf"
WAN_IP = "203.0.113.2"
PC1_IP = "192.168.2.10"
INET_IP = "198.51.100.10"

# The office of these tests: static WAN, pc1 reserved, its web server forwarded.
BASE = MINIMAL.replace("[security]\nmode = firewall-nat\n", "")
EXTRA = """
[security]
mode = {mode}
dmz_open = 25/tcp 7000/tcp 5060/udp

[host pc1]
mac = 02:a1:00:00:02:01
address = 192.168.2.10

[forward web]
proto = tcp
wan_port = 8081
to = pc1:8000

[forward voice]
proto = udp
wan_port = 4000
to = 192.168.2.10:4001
"""

UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

UDP_ASK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recv(2048).decode())
except socket.timeout:
    print("TIMEOUT")
"""

# A line-echo session that stays open: each line on stdin goes to the echo
# server; what comes back (or "TIMEOUT"/"ERROR ...") is printed.
ECHO_CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 7), timeout=5)
print("CONNECTED", flush=True)
for line in sys.stdin:
    try:
        s.sendall(line.encode())
        print(s.recv(1024).decode().strip(), flush=True)
    except socket.timeout:
        print("TIMEOUT", flush=True)
    except OSError as e:
        print("ERROR", e, flush=True)
"""


class Scan(dict):
    """nmap's verdicts, {port: (state, reason)}, and its report for assertion messages."""

    def __init__(self, found, report):
        dict.__init__(self, found)
        self.report = report


class FirewallLabTests(unittest.TestCase):
    """Each test starts the server in one security mode and tries it from both sides."""

    # What every test here relies on: each is up before a test goes on.
    SERVICES = ("network", "firewall", "dhcp", "dns", "ldap", "web")

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("curl", "nmap", "dig", "ping",
                                                             "iptables-save"))
        self.lab.run("pc1", ["ip", "addr", "replace", PC1_IP + "/24", "dev", "eth0"])
        self.lab.run("pc1", ["ip", "route", "replace", "default", "via", "192.168.2.254"])
        self.server = None

    def tearDown(self):
        if self.server is not None:
            self.server.stop()

    # ------------------------------------------------------------ helpers

    def start_server(self, mode, base=BASE, services=SERVICES):
        """Start the server in `mode`; returns once the admin API reports `services` up."""
        self.server = LabServer(self.lab, with_sections(EXTRA.format(mode=mode), base))
        self.server.start(timeout=30)
        self.server.wait_services(services, timeout=30)

    def curl(self, host, url, timeout=2):
        """curl in a lab host: its CompletedProcess (stdout is the body)."""
        return self.lab.run(host, ["curl", "-sS", "-m", str(timeout), url], check=False,
                            timeout=timeout + 10)

    def assertCurl(self, done, code, body=None):
        """curl's run `done` exited with `code` (and printed `body`, if given)."""
        if body is None:
            self.assertEqual(done.returncode, code, client_report(done))
        else:
            self.assertEqual((done.returncode, done.stdout), (code, body), client_report(done))

    def listen(self, host, port, name):
        """A tiny TCP listener (python's http.server) in a lab host."""
        root = self.mktemp()
        os.makedirs(root)
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write("hello from %s\n" % name)
        proc = self.lab.popen(host, [sys.executable, "-m", "http.server", str(port),
                                     "--directory", root], name=name)
        self.addCleanup(self.lab.stop, proc)
        self.lab.wait_listening(host, [("tcp", port)], proc, timeout=10)
        return proc

    def scan(self, ports, udp=False, target=WAN_IP, flags=None):
        """nmap from the internet host: a Scan, {port: (state, reason)}."""
        flags = flags or ("-sU" if udp else "-sS")
        argv = ["nmap", "-n", "-Pn", flags, "--reason", "--max-retries", "1",
                "-p", ",".join(str(p) for p in ports), target]
        done = self.lab.run("inet", argv, timeout=60)
        found = {}
        for m in re.finditer(r"^(\d+)/(?:tcp|udp)\s+(\S+)\s+\S+\s+(\S+)", done.stdout, re.M):
            found[int(m.group(1))] = (m.group(2), m.group(3))
        report = client_report(done)
        self.assertEqual(set(found), set(ports), report)
        return Scan(found, report)

    def run_client(self, host, argv, **kw):
        """A client in a lab host, its exit status left to the test: its CompletedProcess."""
        return self.lab.run(host, argv, check=False, **kw)

    def iptables_save(self):
        done = self.lab.run("server", ["iptables-save"])
        return done.stdout, client_report(done)

    # ------------------------------------------------------------ the modes

    def test_firewall_nat(self):
        self.start_server("firewall-nat")
        # LAN -> internet is masqueraded: the internet host sees the WAN address.
        self.assertCurl(self.curl("pc1", "http://%s/whoami" % INET_IP), 0, WAN_IP + "\n")
        # A [forward] makes pc1's web server visible on the WAN port.
        self.listen("pc1", 8000, "pc1-web")
        self.assertCurl(self.curl("inet", "http://%s:8081/" % WAN_IP), 0, "hello from pc1-web\n")
        # A UDP forward, to a port of its own on the PC.
        echo = self.lab.popen("pc1", [sys.executable, "-c", UDP_ECHO, "4001"], name="udp-echo")
        self.addCleanup(self.lab.stop, echo)
        self.lab.wait_listening("pc1", [("udp", 4001)], echo, timeout=10)
        ask = self.lab.run("inet", [sys.executable, "-c", UDP_ASK, WAN_IP, "4000"])
        self.assertEqual(ask.stdout.strip(), "ping", client_report(ask))
        # The internet cannot reach a LAN PC, even with a route to the LAN.
        self.lab.route_lan_via(WAN_IP)
        self.addCleanup(self.lab.unroute_lan)
        self.assertCurl(self.curl("inet", "http://%s:8000/" % PC1_IP), 28)  # timed out
        # Admin pages and LDAP (both served: the server is up) are invisible
        # from the WAN (no answer at all), while an unguarded port of the
        # server still answers with a reset.
        tcp = self.scan([22, 389, 8080, 8081])
        self.assertEqual(tcp[389], ("filtered", "no-response"), tcp.report)
        self.assertEqual(tcp[8080], ("filtered", "no-response"), tcp.report)
        self.assertEqual(tcp[22], ("closed", "reset"), tcp.report)
        self.assertEqual(tcp[8081][0], "open", tcp.report)
        # DHCP and NTP: no answer, not even ICMP port unreachable.
        udp = self.scan([67, 123, 9999], udp=True)
        self.assertEqual(udp[67], ("open|filtered", "no-response"), udp.report)
        self.assertEqual(udp[123], ("open|filtered", "no-response"), udp.report)
        self.assertEqual(udp[9999], ("closed", "port-unreach"), udp.report)
        # DNS stays open on the WAN for the office's zone, but recursion is the
        # DNS server's to refuse.
        dig = self.run_client("inet", ["dig", "+tries=1", "+time=2", "@" + WAN_IP,
                                       "internet.example"])
        self.assertIn("status: REFUSED", dig.stdout, client_report(dig))
        # The same services still answer on the LAN.
        self.assertCurl(self.curl("pc1", "http://192.168.2.254:8080/"), 0)
        # The server's own outbound traffic goes through its own firewall.
        self.assertCurl(self.curl("server", "http://%s/whoami" % INET_IP), 0, WAN_IP + "\n")
        self.check_connection_log()

    def check_connection_log(self):
        """The admin API shows each decision with its reason."""
        done = self.lab.run("pc1", [
            "curl", "-sS", "-m", "5", "-u", "admin:admin-demo"] + self.server.curl_https() + [
            "https://192.168.2.254:8080/api/v1/connections?limit=500"])
        report = client_report(done)
        try:
            log = json.loads(done.stdout)
        except ValueError:
            self.fail("the connection log is not JSON:\n" + report)
        reasons = {(e["side"], e["dst"], e["dport"], e["action"], e["reason"])
                   for e in log["entries"]}
        self.assertIn(("wan", WAN_IP, 8081, "accept", "forward web to 192.168.2.10:8000"),
                      reasons, report)
        self.assertIn(("wan", WAN_IP, 8080, "drop", "admin pages is LAN-only"), reasons, report)
        self.assertIn(("wan", PC1_IP, 8000, "drop", "the LAN is not visible from the WAN"),
                      reasons, report)
        self.assertIn(("lan", INET_IP, 80, "accept",
                       "LAN to the internet, masqueraded behind the WAN address"), reasons, report)
        self.assertGreater(log["counts"]["drop"], 0, report)

    def test_dmz_only_dmz_open_answers(self):
        self.start_server("firewall-nat-dmz")
        self.listen("server", 7000, "dmz-open")
        self.listen("server", 7001, "dmz-closed")
        self.listen("pc1", 8000, "pc1-web")
        tcp = self.scan([22, 7000, 7001, 8080, 8081])
        self.assertEqual(tcp[7000][0], "open", tcp.report)
        for port in (22, 7001, 8080):
            self.assertEqual(tcp[port], ("filtered", "no-response"), tcp.report)
        self.assertEqual(tcp[8081][0], "open", tcp.report)   # forwards are not the server's ports
        # Probes without SYN (FIN scan) get no RST either, not even from closed ports.
        fin = self.scan([22, 7001], flags="-sF")
        self.assertEqual(fin[22], ("open|filtered", "no-response"), fin.report)
        self.assertEqual(fin[7001], ("open|filtered", "no-response"), fin.report)
        udp = self.scan([5353, 9999], udp=True)
        self.assertEqual(udp[9999], ("open|filtered", "no-response"), udp.report)
        # No ping either; the LAN still goes out.
        ping = self.run_client("inet", ["ping", "-c", "1", "-W", "1", WAN_IP])
        self.assertNotEqual(ping.returncode, 0, client_report(ping))
        self.assertCurl(self.curl("pc1", "http://%s/whoami" % INET_IP), 0, WAN_IP + "\n")
        # The office's DHCP server still serves the LAN, and its clients go out.
        self.addCleanup(self.lab.dhclient_release, "pc2")
        lease = self.lab.dhclient("pc2")
        self.assertTrue(lease["ip_address"].startswith("192.168.2."), lease)
        self.assertCurl(self.curl("pc2", "http://%s/whoami" % INET_IP), 0, WAN_IP + "\n")

    def test_dmz_with_the_wan_address_from_dhcp(self):
        # The WAN DHCP client gets its lease through the firewall, and the hook
        # follows the address it got.
        base = BASE.replace("mode = static\naddress = 203.0.113.2/24\ngateway = 203.0.113.1\n",
                            "mode = dhcp\n")
        self.assertNotEqual(base, BASE)
        self.start_server("firewall-nat-dmz", base=base)
        deadline = time.monotonic() + 20
        while True:
            m = re.search(r"wan: bound (\S+)/24", self.server.log())
            if m or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertTrue(m, self.server.log()[-3000:])
        wan_ip = m.group(1)
        self.server.wait_for("firewall ruleset applied", timeout=5)
        deadline = time.monotonic() + 10
        while True:
            done = self.curl("pc1", "http://%s/whoami" % INET_IP)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertCurl(done, 0, wan_ip + "\n")
        self.assertCurl(self.curl("server", "http://%s/whoami" % INET_IP), 0, wan_ip + "\n")
        self.listen("server", 7000, "dmz-open")
        tcp = self.scan([22, 7000], target=wan_ip)
        self.assertEqual(tcp[7000][0], "open", tcp.report)
        self.assertEqual(tcp[22], ("filtered", "no-response"), tcp.report)

    def eventually(self, probe, timeout=8):
        """`probe()` until it succeeds (exit status 0) or `timeout`: its last result."""
        deadline = time.monotonic() + timeout
        while True:
            result = probe()
            if result.returncode == 0 or time.monotonic() > deadline:
                return result
            time.sleep(0.2)

    def api(self, method, path, body):
        """A change through the admin API from the LAN: (HTTP status, answer, curl's report)."""
        done = self.lab.run("pc1", [
            "curl", "-sS", "-m", "10", "-u", "admin:admin-demo", "-X", method,
            "-H", "Content-Type: application/json", "-d", json.dumps(body),
            "-w", "\n%{http_code}"] + self.server.curl_https() + [
            "https://192.168.2.254:8080/api/v1" + path])
        text, _, code = done.stdout.rpartition("\n")
        return int(code), text, client_report(done)

    def test_changes_apply_live(self):
        self.start_server("firewall-nat")
        self.listen("pc1", 8000, "pc1-web")
        self.lab.route_lan_via(WAN_IP)
        self.addCleanup(self.lab.unroute_lan)
        self.assertCurl(self.curl("inet", "http://%s:8000/" % PC1_IP), 28)
        # A new forward, by the API: visible on its WAN port at once.
        code, _, report = self.api("POST", "/forwards", {
            "name": "extra", "proto": "tcp", "wan_port": "2222", "to": PC1_IP + ":8000"})
        self.assertEqual(code // 100, 2, report)
        self.assertCurl(self.eventually(lambda: self.curl("inet", "http://%s:2222/" % WAN_IP)),
                        0, "hello from pc1-web\n")
        # Router mode, by the API: the LAN is reachable without NAT.
        code, _, report = self.api("PATCH", "/settings/security", {"mode": "router"})
        self.assertEqual(code, 200, report)
        self.assertCurl(self.eventually(lambda: self.curl("inet", "http://%s:8000/" % PC1_IP)),
                        0, "hello from pc1-web\n")
        self.assertCurl(self.curl("pc1", "http://%s/whoami" % INET_IP), 0, PC1_IP + "\n")

    def test_router_forwards_both_ways_without_nat(self):
        self.start_server("router")
        self.lab.route_lan_via(WAN_IP)
        self.addCleanup(self.lab.unroute_lan)
        self.assertCurl(self.curl("pc1", "http://%s/whoami" % INET_IP), 0, PC1_IP + "\n")
        self.listen("pc1", 8000, "pc1-web")
        self.assertCurl(self.curl("inet", "http://%s:8000/" % PC1_IP), 0, "hello from pc1-web\n")
        # Still: the LAN-side services of the server do not answer from the WAN.
        scan = self.scan([8080])
        self.assertEqual(scan[8080], ("filtered", "no-response"), scan.report)
        # A clean stop takes the ruleset away.
        saved, report = self.iptables_save()
        self.assertIn("AWX-FORWARD", saved, report)
        self.server.stop()
        self.server = None
        saved, report = self.iptables_save()
        self.assertNotIn("AWX-", saved, report)

    def test_lan_only_forwards_nothing(self):
        self.start_server("lan-only")
        self.lab.route_lan_via(WAN_IP)
        self.addCleanup(self.lab.unroute_lan)
        done = self.curl("pc1", "http://%s/whoami" % INET_IP)
        self.assertNotEqual(done.returncode, 0, client_report(done))
        self.listen("pc1", 8000, "pc1-web")
        done = self.curl("inet", "http://%s:8000/" % PC1_IP)
        self.assertNotEqual(done.returncode, 0, client_report(done))
        # The server itself still serves the LAN.
        self.assertCurl(self.curl("pc1", "http://192.168.2.254:8080/"), 0)

    def test_kill_9_keeps_established_flows_and_refuses_new_ones(self):
        self.start_server("firewall-nat")
        session = self.lab.popen("pc1", [sys.executable, "-u", "-c", ECHO_CLIENT, INET_IP],
                                 name="echo-session", stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addCleanup(self.lab.stop, session)

        def echo(text):
            session.stdin.write(("%s\n" % text).encode())
            session.stdin.flush()
            return session.stdout.readline().decode().strip()

        self.assertEqual(session.stdout.readline().decode().strip(), "CONNECTED")
        self.assertEqual(echo("before"), "before")
        self.server.kill9()
        self.server = None
        # The ruleset stays in the kernel without its hook: fail closed.
        saved, report = self.iptables_save()
        self.assertIn("NFQUEUE", saved, report)
        self.assertNotIn("queue-bypass", saved, report)
        for i in range(3):
            self.assertEqual(echo("after %d" % i), "after %d" % i)
        self.assertCurl(self.curl("pc1", "http://%s/whoami" % INET_IP), 28)
        self.assertCurl(self.curl("inet", "http://%s:8081/" % WAN_IP), 28)
        self.assertEqual(echo("still"), "still")
        # Started again, it takes over the ruleset left behind: new flows pass.
        self.start_server("firewall-nat")
        self.assertCurl(self.curl("pc1", "http://%s/whoami" % INET_IP), 0, WAN_IP + "\n")
        self.assertEqual(echo("again"), "again")
        saved, report = self.iptables_save()
        self.assertEqual(saved.count("-A FORWARD -j AWX-FORWARD"), 1, report)
