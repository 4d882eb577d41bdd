"""
Two offices joined by WireGuard, end to end (SPEC 16; lab prefix `aws`): the
real server in the lab's `server` namespace (the main office, example.com,
192.168.2.0/24, static WAN 203.0.113.2) and a second one in `bserver` (the
branch, branch.example.com, 192.168.3.0/24, WAN by DHCP: the ISP's fixed
lease 203.0.113.130), each with the other as its `[site]` (keys made in each data
directory before either starts), and the main office's `[device laptop]`.

What is checked: the LANs reach each other and the WAN carries nothing but
WireGuard between the servers (a packet socket on the main server's wan0);
names of the branch resolve through the main server and the WAN sees no
private address; phone 101 calls 201 at the branch with audio both ways, and
fails within 5 s once the branch server is stopped; the laptop's config from
the API brings up wireguard-go in the `laptop` namespace and reaches POP3 on
the LAN; /api/v1/sites shows the branch's handshake.

`SiteConfigTests` run anywhere (the texts the lab writes); `SitesLabTests`
need root, wireguard-go, baresip, dig, dhclient, and fail, saying why,
without them. Synchronised on events (ping replies, API answers, baresip's
events and the tones the phones hear), never fixed sleeps.
"""

import base64
import datetime
import http.client
import ipaddress
import json
import os
import poplib
import socket
import ssl
import struct
import threading
import time

from twisted.trial import unittest

from allworx.config import parse_config
from allworx.lab.sites import (
    BRANCH_USERS,
    branch_conf,
    main_office_sections,
    server_public_key,
    set_site_key,
)
from allworx.lab.topology import (
    BRANCH_LAN_IP,
    BRANCH_WAN_IP,
    BRANCH_WAN_PREFIX,
    OFFICE_NAMES,
    WG_PORT,
)
from allworx.lab.wgclient import LabWireGuardClient, parse_client_config
from allworx.tests.confs import PW_HASH
from allworx.tests.lab.fixtures import client_report, process_report, start_lab, wait_until
from allworx.lab.tones import tone_wav
from allworx.tests.lab.phones import Baresip, SipAccount, socket_in_ns
from allworx.tests.lab.test_sip import ADMIN_PORT, PHONES, SERVER_IP, conf

PREFIX = "aws"
MAIN_WAN_IP = "203.0.113.2"
# One quick user at the branch (argon2 with the default cost is slow): dave, 201.
BRANCH_TEST_USERS = {"dave": BRANCH_USERS["dave"][:2] + ("dave-pw", "2011")}
BRANCH_PHONE_IP = "192.168.3.11"
PRIVATE = [ipaddress.ip_network(n) for n in
           ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8")]
ETH_P_ALL = 0x0003


# ---------------------------------------------------------------- without root

class SiteConfigTests(unittest.TestCase):
    """The configuration texts the lab writes for its two offices."""

    def test_both_offices_configs_pass_the_checks(self):
        main_dir, branch_dir = self.mktemp(), self.mktemp()
        main_key, branch_key = server_public_key(main_dir), server_public_key(branch_dir)
        self.assertEqual(server_public_key(main_dir), main_key)      # made once
        main = parse_config(conf(main_dir) + main_office_sections(branch_key, "awg0"))
        self.assertEqual(main.sites["branch"].public_key, branch_key)
        self.assertEqual(str(main.sites["branch"].address), "192.168.99.2")
        self.assertEqual(main.devices["laptop"].user, "alice")
        self.assertEqual(main.vpn.interface, "awg0")
        branch = parse_config(branch_conf(main_key, PW_HASH, "awg1", users=BRANCH_TEST_USERS))
        self.assertEqual(branch.sites["main"].public_key, main_key)
        self.assertEqual(branch.system.domain, "branch.example.com")
        self.assertEqual(str(branch.lan.address), "192.168.3.254/24")
        self.assertEqual(branch.vpn.interface, "awg1")
        self.assertEqual(branch.users["dave"].extension, "201")

    def test_make_run_joins_the_branch_to_tap_conf_once(self):
        from allworx.config import load_config
        from allworx.lab.demo import join_branch
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        path = os.path.join(work, "tap.conf")
        with open(os.path.join(root, "tap.conf")) as f:
            original = f.read()
        with open(path, "w") as f:
            f.write(original)
        main_dir, branch_dir = os.path.join(work, "data"), os.path.join(work, "branch")
        branch_path, note = join_branch(path, main_dir, branch_dir, PW_HASH)
        self.assertIn("added [vpn], [site branch] and [device laptop]", note)
        config = load_config(path)
        self.assertEqual(config.sites["branch"].public_key, server_public_key(branch_dir))
        self.assertEqual(config.devices["laptop"].user, "alice")
        with open(path) as f:
            self.assertTrue(f.read().startswith(original.rstrip("\n")))
        branch = load_config(branch_path)
        self.assertEqual(branch.sites["main"].public_key, server_public_key(main_dir))
        # Its admin is a user (SPEC 10), with the main office admin's password.
        self.assertEqual(sorted(branch.users), ["admin", "dave", "erin"])
        self.assertEqual((branch.admins, branch.users["admin"].password, branch.web.admin_password),
                         (["admin"], PW_HASH, None))
        self.assertIn("joins the branch already", join_branch(path, main_dir, branch_dir, PW_HASH)[1])
        # A new branch (its data directory made again): only its key changes.
        os.rename(branch_dir, branch_dir + ".old")
        note = join_branch(path, main_dir, branch_dir, PW_HASH)[1]
        self.assertIn("updated the branch's public key", note)
        self.assertEqual(load_config(path).sites["branch"].public_key,
                         server_public_key(branch_dir))

    def test_set_site_key_changes_only_that_line(self):
        text = "# top\n[site branch]\n# the key\npublic_key = OLD\naddress = 1\n[site other]\npublic_key = X\n"
        self.assertEqual(set_site_key(text, "branch", "NEW"),
                         text.replace("OLD", "NEW"))
        self.assertEqual(set_site_key(text, "other", "Y"), text.replace("= X", "= Y"))
        self.assertIsNone(set_site_key(text, "nowhere", "Y"))

    def test_client_config(self):
        key = base64.b64encode(b"\x01" * 32).decode()
        text = ("[Interface]\nAddress = 192.168.99.10/32\nDNS = 192.168.99.1\nPrivateKey = %s\n\n"
                "[Peer]\nPublicKey = %s\nEndpoint = 203.0.113.2:51820\n"
                "AllowedIPs = 192.168.2.0/24, 192.168.99.0/24, 192.168.3.0/24\n"
                "PersistentKeepalive = 25\n" % (key, key))
        config = parse_client_config(text)
        self.assertEqual((str(config.address), config.dns, config.endpoint, config.keepalive),
                         ("192.168.99.10/32", ("192.168.99.1",), ("203.0.113.2", 51820), 25))
        self.assertEqual([str(n) for n in config.allowed_ips],
                         ["192.168.2.0/24", "192.168.99.0/24", "192.168.3.0/24"])
        self.assertRaises(ValueError, parse_client_config,
                          text.replace("PrivateKey = " + key, "PrivateKey = (shown once)"))
        self.assertRaises(ValueError, parse_client_config, "[Interface]\nAddress = 1.2.3.4/32\n")


# ---------------------------------------------------------------- the lab

def api_request(lab, host, server_ip, ca_file, path):
    """GET /api/v1PATH as the admin from a lab host over HTTPS: (status, body bytes)."""
    sock = socket_in_ns(lab.ns(host))
    sock.settimeout(10)
    sock.connect((server_ip, ADMIN_PORT))
    context = ssl.create_default_context(cafile=ca_file)
    conn = http.client.HTTPSConnection(server_ip, ADMIN_PORT, timeout=10, context=context)
    conn.sock = context.wrap_socket(sock, server_hostname=server_ip)
    try:
        conn.request("GET", "/api/v1" + path, headers={
            "Authorization": "Basic " + base64.b64encode(b"admin:admin-demo").decode()})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Capture:
    """Every frame on one interface of a lab host (a packet socket), until stopped."""

    def __init__(self, lab, host, ifname):
        self.sock = socket_in_ns(lab.ns(host), socket.AF_PACKET, socket.SOCK_RAW,
                                 socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.settimeout(0.2)
        self.frames = []
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopped:
            try:
                self.frames.append(self.sock.recv(65535))
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        """Stop, keeping the frames already queued on the socket (the last reply can arrive
        between the loop's last read and the flag)."""
        self.stopped = True
        self.thread.join(2)
        self.sock.setblocking(False)
        while True:
            try:
                self.frames.append(self.sock.recv(65535))
            except OSError:
                break
        self.sock.close()

    def ipv4(self):
        """[(proto, src, sport, dst, dport)] of the IPv4 frames (ports 0 unless TCP/UDP)."""
        out = []
        for frame in self.frames:
            if len(frame) < 34 or frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
            proto = ip[9]
            src, dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
            ihl = (ip[0] & 0x0F) * 4
            sport = dport = 0
            if proto in (6, 17) and len(ip) >= ihl + 4:
                sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
            out.append((proto, src, sport, dst, dport))
        return out


class SitesLabTests(unittest.TestCase):
    """The main office and the branch, joined; see the module docstring."""

    timeout = 240

    def setUp(self):
        self.lab = lab = start_lab(self, prefix=PREFIX, programs=(
            "ping", "dig", "dhclient", "curl", "wireguard-go", "baresip"))
        from allworx.tests.lab.server import LabServer
        self.phones = []
        self.main = LabServer(lab, "")
        self.branch = LabServer(lab, "", name="branch", host="bserver",
                                lan_ip=BRANCH_LAN_IP, admin_host="bpc1")
        # The keys first, as `allworx vpn pubkey --data-dir` makes them, then the configs.
        main_key = server_public_key(self.main.data_dir)
        branch_key = server_public_key(self.branch.data_dir)
        self.main.write_conf(conf(self.main.data_dir).replace("voicemail_timeout = 4",
                                                              "voicemail_timeout = 20")
                             + main_office_sections(branch_key, lab.prefix + "w0"))
        # wireguard-go's control sockets are machine-wide (/var/run/wireguard/IFNAME.sock):
        # the interface names follow the lab's own prefix (aws, aws1, ... under trial -j).
        self.branch.write_conf(branch_conf(main_key, PW_HASH, lab.prefix + "w1",
                                           users=BRANCH_TEST_USERS))
        self.addCleanup(self.main.stop)
        self.addCleanup(self.branch.stop)
        self.branch.start()
        self.main.start()
        # The branch's WAN is the ISP's fixed lease; its LAN PC takes a lease from it.
        self.wait_for(lambda: "%s/%d" % (BRANCH_WAN_IP, BRANCH_WAN_PREFIX) in lab.run(
            "bserver", ["ip", "-br", "addr", "show", "wan0"], check=False).stdout,
            30, "the branch's WAN lease %s" % BRANCH_WAN_IP)
        self.pc1 = lab.dhclient("pc1")["ip_address"]
        self.bpc1 = lab.dhclient("bpc1")["ip_address"]
        for server in (self.main, self.branch):
            try:
                server.wait_services(["vpn"], timeout=30)
            except Exception as e:
                self.fail("%s\n%s" % (e, self.context()))

    def context(self):
        return "--- main server:\n%s\n--- branch server:\n%s%s" % (
            self.main.log()[-3000:], self.branch.log()[-3000:],
            "".join("\n--- %s (baresip):\n%s" % (p.name, p.log_tail()[-1500:])
                    for p in self.phones))

    def wait_for(self, predicate, timeout, what):
        return wait_until(self, predicate, what, timeout, self.context)

    def ping(self, host, address, count=3, deadline=20):
        """Ping until `count` replies or `deadline` s (the first may wait for a handshake)."""
        return self.lab.run(host, ["ping", "-c", str(count), "-i", "0.3", "-w", str(deadline),
                                   address], check=False, timeout=deadline + 10)

    def assert_ping(self, host, address, **kw):
        done = self.ping(host, address, **kw)
        self.assertEqual(done.returncode, 0, "%s could not ping %s:\n%s\n%s" % (
            host, address, client_report(done), self.context()))

    def dig(self, host, server, name, qtype="A"):
        done = self.lab.run(host, ["dig", "+time=3", "+tries=1", "@" + server, name, qtype],
                            check=False, timeout=20)
        return done

    def api(self, path, server=None, host="admin"):
        server = server or self.main
        status, body = api_request(self.lab, host, server.lan_ip, server.ca_file, path)
        if status != 200:
            self.fail("GET /api/v1%s: %d %r\n%s" % (path, status, body[:500], self.context()))
        return body

    # -------------------------------------------------------- phones

    def phone(self, host, name, ext, password, registrar, ip, freq):
        work = os.path.join(self.lab.state_dir, "phones")
        os.makedirs(work, exist_ok=True)
        tone = os.path.join(work, "%s-%d.wav" % (name, freq))
        tone_wav(tone, freq, 30)
        gateway = registrar
        self.lab.run(host, ["ip", "addr", "replace", ip + "/24", "dev", "eth0"])
        self.lab.run(host, ["ip", "route", "replace", "default", "via", gateway])
        phone = Baresip(self.lab, host, work, tone, SipAccount(ext, password, registrar, bind_ip=ip),
                        name=name)
        self.addCleanup(phone.stop)
        self.phones.append(phone)
        phone.start()
        return phone

    def registered(self, server, admin_host, user):
        def check():
            try:
                regs = json.loads(self.api("/sip/registrations", server, admin_host))
            except (OSError, ValueError, AssertionError):
                return None
            return any(r["user"] == user for r in regs)
        self.wait_for(check, 15, "%s registered at %s" % (user, server.name))

    def both_phones(self):
        name, ext, ip, password = PHONES["phone1"]
        alice = self.phone("phone1", name, ext, password, SERVER_IP, ip, 440)
        self.registered(self.main, "admin", name)
        dave = self.phone("bphone1", "dave", "201", "dave-pw", BRANCH_LAN_IP, BRANCH_PHONE_IP, 900)
        self.registered(self.branch, "bpc1", "dave")
        return alice, dave

    # -------------------------------------------------------- the tests

    def test_lans_reach_each_other_and_the_wan_carries_only_wireguard(self):
        # The tunnel first (its handshake), then a capture over pings both ways.
        self.assert_ping("pc1", self.bpc1)
        capture = Capture(self.lab, "server", "wan0")
        try:
            self.assert_ping("pc1", self.bpc1, count=5, deadline=10)
            self.assert_ping("bpc1", self.pc1, count=5, deadline=10)
        finally:
            capture.stop()
        packets = capture.ipv4()
        ends = {(MAIN_WAN_IP, WG_PORT), (BRANCH_WAN_IP, WG_PORT)}
        wireguard = [p for p in packets
                     if p[0] == 17 and {(p[1], p[2]), (p[3], p[4])} == ends]
        others = [p for p in packets if p not in wireguard]
        self.assertGreaterEqual(len(wireguard), 20, "too few WireGuard packets on wan0: %s"
                                % packets)
        self.assertEqual(others, [], "the WAN carried more than WireGuard between the servers "
                         "(proto, src, sport, dst, dport):\n%s" % others)

    def test_pc1_resolves_the_branch_pcs_dhcp_name_through_the_main_server(self):
        self.assert_ping("pc1", self.bpc1)
        done = self.dig("pc1", SERVER_IP, "bpc1.branch.example.com")
        self.assertEqual(done.returncode, 0, client_report(done))
        self.assertIn("status: NOERROR", done.stdout, client_report(done))
        answers = [line.split()[-1] for line in done.stdout.splitlines()
                   if line and not line.startswith(";") and "\tA\t" in line.replace(" ", "\t")]
        self.assertEqual(answers, [self.bpc1], client_report(done))

    def test_the_wan_gets_no_private_address_for_any_office_name(self):
        names = list(OFFICE_NAMES) + ["corp.example.com", "admin.example.com", "lan.example.com",
                                      "wan.example.com", "pc1.example.com",
                                      "bpc1.branch.example.com", "allworx.branch.example.com"]
        seen = {}
        for name in names:
            done = self.dig("inet", MAIN_WAN_IP, name)
            self.assertEqual(done.returncode, 0, "no DNS answer on the WAN for %s:\n%s"
                             % (name, client_report(done)))
            seen[name] = [line.split()[-1] for line in done.stdout.splitlines()
                          if line and not line.startswith(";") and line.split()[3:4] == ["A"]]
        leaked = {name: addresses for name, addresses in seen.items()
                  if any(any(ipaddress.ip_address(a) in net for net in PRIVATE)
                         for a in addresses)}
        self.assertEqual(leaked, {}, "private addresses answered to the WAN: %s" % seen)
        self.assertEqual(seen["www.example.com"], [MAIN_WAN_IP], seen)

    def test_a_call_to_the_branch_rings_there_with_audio_both_ways(self):
        alice, dave = self.both_phones()
        before_a, before_d = alice.recordings(), dave.recordings()
        mark_a, mark_d = alice.mark(), dave.mark()
        alice.command("dial", "201")
        incoming = dave.wait_event("CALL_INCOMING", 15, mark_d)
        self.assertIn("101", str(incoming), (incoming, self.context()))
        dave.command("accept")
        alice.wait_event("CALL_ESTABLISHED", 15, mark_a)
        self.wait_for(lambda: dave.heard_for(before_d, 440, 1.5), 20,
                      "alice's tone at the branch (dave hears 440 Hz)")
        self.wait_for(lambda: alice.heard_for(before_a, 900, 1.5), 20,
                      "dave's tone in the main office (alice hears 900 Hz)")
        alice.command("hangup")
        dave.wait_event("CALL_CLOSED", 15, mark_d)

    def test_with_the_branch_server_stopped_the_call_fails_within_5s(self):
        alice, dave = self.both_phones()
        self.assert_ping("pc1", BRANCH_LAN_IP)
        self.branch.stop()
        mark = alice.mark()
        started = time.monotonic()
        alice.command("dial", "201")
        closed = alice.wait_event("CALL_CLOSED", 10, mark)
        took = time.monotonic() - started
        self.assertLessEqual(took, 5.5, "the call took %.1f s to fail: %s\n%s"
                             % (took, closed, self.context()))
        self.assertNotIn("CALL_ESTABLISHED", [e.get("type") for e in alice.events[mark:]])
        self.assertIn("480", str(closed), (closed, self.context()))

    def test_the_laptop_config_from_the_api_reaches_pop3_on_the_lan(self):
        text = self.api("/devices/laptop/wireguard.conf").decode()
        client = LabWireGuardClient(self.lab, "laptop", PREFIX + "w2")
        self.addCleanup(client.down)
        try:
            config = client.up(text)
        except Exception as e:
            self.fail("the laptop's config did not come up: %s\n%s\n%s" % (
                e, text, process_report(self.lab, "wg-laptop-%sw2" % PREFIX)))
        self.assertEqual(config.endpoint, (MAIN_WAN_IP, WG_PORT), text)
        self.assert_ping("laptop", SERVER_IP)
        sock = socket_in_ns(self.lab.ns("laptop"))
        sock.settimeout(10)
        sock.connect((SERVER_IP, 110))

        class LaptopPOP3(poplib.POP3):
            def _create_socket(self, timeout):
                return sock
        name, _, _, password = PHONES["phone1"]
        box = LaptopPOP3(SERVER_IP, 110, timeout=10)
        self.assertTrue(box.getwelcome().startswith(b"+OK"), box.getwelcome())
        box.user(name)
        box.pass_(password)
        box.quit()
        [peer] = client.peers()
        self.assertGreater(peer["last_handshake_time_sec"], 0, peer)

    def test_the_sites_api_shows_the_branchs_recent_handshake(self):
        self.assert_ping("pc1", self.bpc1)

        def sites():
            answer = json.loads(self.api("/sites"))
            listed = answer.get("sites", []) if isinstance(answer, dict) else answer
            return {s["name"]: s for s in listed}

        def handshake():
            return sites().get("branch", {}).get("last_handshake")
        when = self.wait_for(handshake, 10, "a handshake with the branch in /api/v1/sites")
        at = datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
        age = datetime.datetime.now(datetime.timezone.utc) - at
        self.assertLess(abs(age.total_seconds()), 180, when)
        site = sites()["branch"]
        self.assertGreater(site["rx_bytes"], 0, site)
        self.assertEqual(site["address"], "192.168.99.2", site)
