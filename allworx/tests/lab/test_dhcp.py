# -*- test-case-name: allworx.tests.lab.test_dhcp -*-
"""
The DHCP and SNTP servers in the virtual office (lab prefix `awd`), with
real clients: ISC dhclient and busybox udhcpc on the lab's PCs and phones.
They need root where `ip netns` works; without it, or without a client, they
fail and say why.
"""

import os
import signal
import sys
import time

from twisted.trial import unittest

from allworx.protocols.dhcp.journal import replay
from allworx.tests.confs import PW_HASH
from allworx.tests.lab.fixtures import client_report, process_report, start_lab
from allworx.tests.lab.server import LabServer

PREFIX = "awd"
RESERVED_MAC = "02:00:00:00:00:50"

CONF = """\
[system]
domain = example.com
hostname = allworx

[lan]
interface = lan0
address = 192.168.2.254/24
{lan_gateway}

[wan]
interface = wan0
mode = {wan_mode}
{wan_static}

[security]
mode = {mode}

[dhcp]
range = 1-100
lease_time = 1h

[dns]
primary = 203.0.113.1
{secondary}

[ntp]
enabled = yes

[web]
admin_password = {pw}

[host printer]
mac = 02:00:00:00:00:50
address = 192.168.2.150
"""


def conf(mode):
    if mode == "lan-only":
        return CONF.format(mode=mode, lan_gateway="gateway = 192.168.2.1", wan_mode="disabled",
                           wan_static="", secondary="secondary = 203.0.113.3", pw=PW_HASH)
    return CONF.format(mode=mode, lan_gateway="", wan_mode="static",
                       wan_static="address = 203.0.113.2/24\ngateway = 203.0.113.1",
                       secondary="", pw=PW_HASH)


UDHCPC_SCRIPT = """#!/bin/sh
# Records what udhcpc was given; on bound/renew puts the address on the interface.
case "$1" in
bound|renew)
  ip addr replace "$ip/$mask" dev "$interface"
  {{ echo "event=$1"; echo "ip=$ip"; echo "mask=$mask"; echo "router=$router";
     echo "dns=$dns"; echo "domain=$domain"; echo "ntpsrv=$ntpsrv"; echo "lease=$lease"; }} > {out}.tmp
  mv {out}.tmp {out} ;;
esac
exit 0
"""


def sntp_query(lab, host, server="192.168.2.254"):
    """
    (length, mode, stratum, offset: server minus local clock in seconds) of
    the answer to one SNTP query from `host`, and the client's report.
    """
    code = ("import socket,struct,time\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3)\n"
            "s.sendto(b'\\x23'+b'\\0'*47,(%r,123));t0=time.time()\n"
            "d,a=s.recvfrom(512);t1=time.time()\n"
            "x=struct.unpack('!Q',d[40:48])[0]/2**32-2208988800\n"
            "print(len(d),d[0]&7,d[1],x-(t0+t1)/2)\n" % server)
    done = lab.run(host, [sys.executable, "-c", code])
    out = done.stdout.split()
    return (int(out[0]), int(out[1]), int(out[2]), float(out[3])), client_report(done)


WAN_DISCOVER = r"""
import socket, struct, sys, time, os
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, 25, sys.argv[1].encode())
s.bind(("0.0.0.0", 68))
xid = os.getpid()
packet = (struct.pack("!BBBBIHH", 1, 1, 6, 0, xid, 0, 0x8000) + bytes(16)
          + bytes.fromhex("02a100009999") + bytes(10 + 64 + 128)
          + bytes.fromhex("63825363") + bytes([53, 1, 1, 255]))
s.sendto(packet, ("255.255.255.255", 67))
s.settimeout(0.2)
seen = set()
deadline = time.time() + 2
while time.time() < deadline:
    try:
        data = s.recv(2048)
    except socket.timeout:
        continue
    if len(data) > 240 and struct.unpack("!I", data[4:8])[0] == xid:
        i = 240
        while i + 1 < len(data) and data[i] != 255:
            if data[i] == 0:
                i += 1
                continue
            if data[i] == 54:
                seen.add(socket.inet_ntoa(data[i + 2:i + 6]))
            i += 2 + data[i + 1]
print(" ".join(sorted(seen)))
"""


class DhcpLabTests(unittest.TestCase):

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("dhclient", "udhcpc"))
        self.said = {}

    def start_server(self, mode):
        self.server = LabServer(self.lab, conf(mode))
        self.addCleanup(self.server.stop)
        self.server.start()
        return self.server

    def dhclient(self, host):
        """ISC dhclient on `host`: (the lease it reported, what it printed)."""
        lease = self.lab.dhclient(host)
        return lease, process_report(self.lab, "dhclient-%s-eth0" % host)

    def udhcpc(self, host, once=True):
        """
        Run udhcpc in `host`; returns (its Popen or None, the path of its
        record). `udhcpc_said(host)` is what it printed.
        """
        out = os.path.join(self.lab.state_dir, "udhcpc-%s.env" % host)
        script = out + ".sh"
        with open(script, "w") as f:
            f.write(UDHCPC_SCRIPT.format(out=out))
        os.chmod(script, 0o755)
        if os.path.exists(out):
            os.unlink(out)
        argv = ["udhcpc", "-i", "eth0", "-f", "-t", "5", "-T", "1", "-s", script,
                "-O", "ntpsrv", "-x", "hostname:%s" % host]
        if once:
            self.said[host] = client_report(self.lab.run(host, argv + ["-n", "-q"], timeout=20))
            return None, out
        proc = self.lab.popen(host, argv, name="udhcpc-%s" % host)
        self.said[host] = None
        self.wait_file(out, host)
        return proc, out

    def udhcpc_said(self, host):
        """What udhcpc in `host` printed, for assertion messages."""
        return self.said[host] or process_report(self.lab, "udhcpc-%s" % host)

    def wait_file(self, path, host, timeout=15):
        """Wait for the record of udhcpc in `host`."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                self.fail("no %s within %ss\n%s" % (path, timeout, self.udhcpc_said(host)))
            time.sleep(0.05)

    def read_env(self, path):
        with open(path) as f:
            return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)

    def assertInPool(self, address, said=""):
        last = int(address.split(".")[-1])
        self.assertTrue(address.startswith("192.168.2.") and 1 <= last <= 100,
                        "%s\n%s" % (address, said))

    def journal_leases(self):
        with open(os.path.join(self.server.data_dir, "dhcp", "leases.journal"), "rb") as f:
            return {ip: lease.mac for ip, lease in replay(f.readlines())[0].items()}

    def test_firewall_nat_clients_reservation_release_and_kill9(self):
        self.start_server("firewall-nat")
        # ISC dhclient on pc1.
        lease, said = self.dhclient("pc1")
        self.assertInPool(lease["ip_address"], said)
        self.assertEqual(lease["subnet_mask"], "255.255.255.0", said)
        self.assertEqual(lease["routers"], "192.168.2.254", said)
        self.assertEqual(lease["domain_name_servers"], "192.168.2.254", said)
        self.assertEqual(lease["domain_name"], "example.com", said)
        self.assertEqual(lease["ntp_servers"], "192.168.2.254", said)
        self.assertEqual(lease["dhcp_server_identifier"], "192.168.2.254", said)
        self.assertEqual(lease["dhcp_lease_time"], "3600", said)
        pc1_ip = lease["ip_address"]
        # busybox udhcpc on phone1, kept running for a renewal later.
        udhcpc, record = self.udhcpc("phone1", once=False)
        got = self.read_env(record)
        said = self.udhcpc_said("phone1")
        self.assertInPool(got["ip"], said)
        self.assertNotEqual(got["ip"], pc1_ip, said)
        self.assertEqual((got["mask"], got["router"], got["dns"].strip(), got["domain"],
                          got["ntpsrv"].strip(), got["lease"]),
                         ("24", "192.168.2.254", "192.168.2.254", "example.com",
                          "192.168.2.254", "3600"), said)
        phone1_ip = got["ip"]
        # A reserved MAC gets its address.
        self.lab.run("pc2", ["ip", "link", "set", "eth0", "address", RESERVED_MAC])
        lease, said = self.dhclient("pc2")
        self.assertEqual(lease["ip_address"], "192.168.2.150", said)
        # The time server answers a PC with the server's clock.
        (size, mode, stratum, offset), report = sntp_query(self.lab, "pc1")
        self.assertEqual((size, mode), (48, 4), report)
        self.assertIn(stratum, (3, 16), report)     # the host clock, as the kernel judges it
        self.assertLess(abs(offset), 0.5, report)
        # A DISCOVER on the WAN side gets no answer from this server (the
        # same probe from a LAN host shows the server answering it).
        lan = self.lab.run("phone2", [sys.executable, "-c", WAN_DISCOVER, "eth0"])
        self.assertEqual(lan.stdout.split(), ["192.168.2.254"], client_report(lan))
        wan = self.lab.run("isp", [sys.executable, "-c", WAN_DISCOVER, "server"])
        self.assertNotIn("192.168.2.254", wan.stdout.split(), client_report(wan))
        self.assertNotIn("203.0.113.2", wan.stdout.split(), client_report(wan))
        # RELEASE frees the address.
        self.lab.dhclient_release("pc2")
        self.server.wait_for("released 192.168.2.150", timeout=10)
        deadline = time.monotonic() + 5   # the journal's record follows the log line
        while "192.168.2.150" in self.journal_leases() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertNotIn("192.168.2.150", self.journal_leases())
        self.assertEqual(self.journal_leases()[pc1_ip], "02:a1:00:00:02:01")

        # kill -9 and start again: the leases were on disk before each ACK.
        self.server.kill9()
        self.server.start()
        # udhcpc renews (unicast REQUEST from its address) and keeps it.
        os.unlink(record)
        udhcpc.send_signal(signal.SIGUSR1)
        self.wait_file(record, "phone1")
        renewed = self.read_env(record)
        self.assertEqual((renewed["event"], renewed["ip"]), ("renew", phone1_ip),
                         self.udhcpc_said("phone1"))
        # dhclient asks again for its address (INIT-REBOOT) and keeps it.
        lease, said = self.dhclient("pc1")
        self.assertEqual(lease["ip_address"], pc1_ip, said)
        # A new PC gets neither.
        self.lab.run("pc2", ["ip", "link", "set", "eth0", "address", "02:a1:00:00:02:77"])
        self.lab.run("pc2", ["ip", "addr", "flush", "dev", "eth0"])
        lease, said = self.dhclient("pc2")
        fresh = lease["ip_address"]
        self.assertInPool(fresh, said)
        self.assertNotIn(fresh, (pc1_ip, phone1_ip), said)
        log = self.server.log()
        self.assertNotIn("Traceback", log)

    def test_phones_get_option_66_by_vendor_class(self):
        # SPEC 19: a vendor class the server knows gets the provisioning URL,
        # any other client that asks for option 66 the server's address (TFTP).
        self.start_server("firewall-nat")
        lease = self.lab.dhclient("phone1", vendor_class="baresip")
        said = process_report(self.lab, "dhclient-phone1-eth0")
        self.assertInPool(lease["ip_address"], said)
        self.assertEqual(lease.get("tftp_server_name"), "192.168.2.254", said)
        lease = self.lab.dhclient("phone2", vendor_class="yealink SIP-T46S")
        said = process_report(self.lab, "dhclient-phone2-eth0")
        self.assertEqual(lease.get("tftp_server_name"), "http://192.168.2.254:8089/", said)
        lease, said = self.dhclient("pc1")      # asks for no option 66, sends no vendor class
        self.assertNotIn("tftp_server_name", lease, said)
        # The leases keep what each client said it is.
        with open(os.path.join(self.server.data_dir, "dhcp", "leases.journal"), "rb") as f:
            vendors = {l.mac: l.vendor_class for l in replay(f.readlines())[0].values()}
        self.assertEqual((vendors.get("02:a1:00:00:02:11"), vendors.get("02:a1:00:00:02:12"),
                          vendors.get("02:a1:00:00:02:01", "none")),
                         ("baresip", "yealink SIP-T46S", None), vendors)

    def test_lan_only_options_and_rogue_server(self):
        self.start_server("lan-only")
        lease, said = self.dhclient("pc1")
        self.assertInPool(lease["ip_address"], said)
        self.assertEqual(lease["routers"], "192.168.2.1", said)
        self.assertEqual(lease["domain_name_servers"], "203.0.113.1 203.0.113.3", said)
        self.assertEqual(lease["domain_name"], "example.com", said)
        self.assertEqual(lease["subnet_mask"], "255.255.255.0", said)
        self.assertEqual(lease["ntp_servers"], "192.168.2.254", said)
        _, record = self.udhcpc("phone2")
        got = self.read_env(record)
        said = self.udhcpc_said("phone2")
        self.assertInPool(got["ip"], said)
        self.assertEqual((got["router"], got["dns"].split(), got["domain"], got["ntpsrv"].strip()),
                         ("192.168.2.1", ["203.0.113.1", "203.0.113.3"], "example.com",
                          "192.168.2.254"), said)
        # Another DHCP server appears on the LAN: the server says so.
        self.lab.run("pc2", ["ip", "addr", "add", "192.168.2.99/24", "dev", "eth0"])
        self.lab.popen("pc2", [
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
            "--interface=eth0", "--bind-interfaces", "--pid-file=",
            "--dhcp-range=192.168.2.201,192.168.2.210,2m",
            "--dhcp-leasefile=%s" % os.path.join(self.lab.state_dir, "rogue.leases")],
            name="rogue-dnsmasq")
        self.server.stop()
        self.server.start()
        self.server.wait_for("another DHCP server, 192.168.2.99", timeout=15)
