"""
Remote phones end to end (lab prefix `awr`): the real server with `[sip]
wan = yes`, office phone alice (phone1, extension 101, on the LAN) and bob's
phone on the internet (baresip in `inet` at REMOTE_IP, registering to the
office's WAN address). The remote phone registers over UDP and calls 101,
audio both ways through the server's relay; a second remote phone registers
over TLS on `tls_port` (the server's self-signed certificate: baresip 1.0
has no `sip_verify_server`, and without `sip_cafile` it does not check) and
calls 101 too. A stranger on the internet gets a challenge, not a call.

Synchronised on events only: the admin API (registrations), baresip's
ctrl_tcp events, and the tones each phone hears.
"""

import os
import socket

from twisted.trial import unittest

from allworx.lab.topology import OUTSIDE_PHONE_IPS
from allworx.tests.lab.fixtures import wait_until, start_lab
from allworx.lab.tones import tone_wav
from allworx.tests.lab.phones import Baresip, SipAccount, socket_in_ns
from allworx.tests.lab.test_sip import PHONES, SERVER_IP, api_get, conf

PREFIX = "awr"
OFFICE_WAN_IP = "203.0.113.2"           # the lab server's static WAN address (confs.MINIMAL)
REMOTE_IP = "198.51.100.40"             # bob's phone on the internet over UDP
REMOTE_TLS_IP = "198.51.100.41"         # and over TLS
assert REMOTE_IP not in OUTSIDE_PHONE_IPS.values()


class RemotePhoneLabTests(unittest.TestCase):
    """A phone on the internet registers to the office and calls an extension."""

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("baresip",))
        from allworx.tests.lab.server import LabServer
        self.work = os.path.join(self.lab.state_dir, "phones")
        os.makedirs(self.work, exist_ok=True)
        self.phones = []
        self.server = LabServer(self.lab, "")
        text = conf(self.server.data_dir).replace("[sip]\n", "[sip]\nwan = yes\n")
        text = text.replace("voicemail_timeout = 4", "voicemail_timeout = 20")
        self.server.write_conf(text)
        self.addCleanup(self.server.stop)
        self.server.start()
        self.lab.run("server", ["ip", "addr", "add", SERVER_IP + "/24", "dev", "lan0"], check=False)
        _, ext, ip, _ = PHONES["phone1"]
        self.lab.run("phone1", ["ip", "addr", "add", ip + "/24", "dev", "eth0"], check=False)
        self.lab.run("phone1", ["ip", "link", "set", "lo", "up"])
        self.lab.run("phone1", ["ip", "route", "replace", "default", "via", SERVER_IP])
        for address in (REMOTE_IP, REMOTE_TLS_IP):
            self.lab.run("inet", ["ip", "addr", "add", address + "/24", "dev", "eth0"], check=False)

    def context(self):
        return "--- server:\n%s%s" % (
            self.server.log()[-5000:],
            "".join("\n--- %s (baresip):\n%s" % (p.name, p.log_tail()[-2500:]) for p in self.phones))

    def wait_for(self, predicate, timeout, what):
        return wait_until(self, predicate, what, timeout, self.context)

    def registered_at(self, host):
        """The registrations whose Contact names `host` (a TLS phone's connection may come from another)."""
        return [b for b in api_get(self.lab, "phone1", "/sip/registrations")
                if "@%s:" % host in b["contact"]]

    def phone(self, host, name, account, freq, ctrl_port=None, rtp_ports=None):
        tone = os.path.join(self.work, "%s-%d.wav" % (name, freq))
        tone_wav(tone, freq, 30)
        kw = {}
        if ctrl_port:
            kw = {"ctrl_port": ctrl_port, "rtp_ports": rtp_ports}
        phone = Baresip(self.lab, host, self.work, tone, account, name=name, **kw)
        self.addCleanup(phone.stop)
        self.phones.append(phone)
        phone.start()
        return phone

    def office_phone(self):
        name, ext, ip, password = PHONES["phone1"]
        phone = self.phone("phone1", name, SipAccount(ext, password, SERVER_IP, bind_ip=ip), 440)
        self.wait_for(lambda: self.registered_at(ip), 15, "the office phone's registration")
        return phone

    def remote_phone(self, ip, transport, freq):
        _, ext, _, password = PHONES["phone2"]
        octet = int(ip.rsplit(".", 1)[1])
        account = SipAccount(ext, password, OFFICE_WAN_IP, bind_ip=ip, transport=transport)
        phone = self.phone("inet", "remote-%s" % transport, account, freq, ctrl_port=4400 + octet,
                           rtp_ports=(octet * 1000, octet * 1000 + 99))
        [binding] = self.wait_for(lambda: self.registered_at(ip), 20,
                                  "the remote phone's registration over %s" % transport.upper())
        # Its contact is reached where the REGISTER came from (baresip's TLS
        # connection leaves from the namespace's first address, like a NAT's).
        self.assertTrue(binding["source"].startswith("198.51.100."), binding)
        self.assertEqual(";transport=tls" in binding["contact"], transport == "tls", binding)
        return phone

    def call_office(self, remote, office, freq):
        """`remote` dials 101; the office answers; each hears the other's tone."""
        before_o, before_r = office.recordings(), remote.recordings()
        mark_o, mark_r = office.mark(), remote.mark()
        remote.command("dial", "101")
        office.wait_event("CALL_INCOMING", 15, mark_o)
        office.command("accept")
        remote.wait_event("CALL_ESTABLISHED", 15, mark_r)
        self.wait_for(lambda: office.heard_for(before_o, freq, 1.5), 20,
                      "the remote phone's %d Hz in the office" % freq)
        self.wait_for(lambda: remote.heard_for(before_r, 440, 1.5), 20,
                      "the office's 440 Hz at the remote phone")
        remote.command("hangup")
        office.wait_event("CALL_CLOSED", 15, mark_o)

    def test_remote_phones_register_over_udp_and_tls_and_call_in(self):
        office = self.office_phone()
        remote = self.remote_phone(REMOTE_IP, "udp", 1200)
        self.call_office(remote, office, 1200)
        remote.stop()

        secure = self.remote_phone(REMOTE_TLS_IP, "tls", 900)
        self.call_office(secure, office, 900)

        # A stranger on the internet is challenged, not routed.
        sock = socket_in_ns(self.lab.ns("inet"), socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("198.51.100.10", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        sock.sendto(("INVITE sip:101@%s SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.10:%d;branch=z9hG4bKst1\r\n"
                     "Max-Forwards: 70\r\nFrom: <sip:x@198.51.100.10>;tag=1\r\nTo: <sip:101@%s>\r\n"
                     "Call-ID: stranger-1\r\nCSeq: 1 INVITE\r\nContact: <sip:x@198.51.100.10:%d>\r\n"
                     "Content-Length: 0\r\n\r\n" % (OFFICE_WAN_IP, port, OFFICE_WAN_IP, port)).encode(),
                    (OFFICE_WAN_IP, 5060))
        answer = sock.recv(4096)
        self.assertTrue(answer.startswith(b"SIP/2.0 407"), answer)
