"""
Test doubles for the SIP tests: an office with phones' users, a SipCore on
a task.Clock whose sent messages are captured, fake RTP ports, a fake mail
store (IMailStore), and a phone that builds requests and answers digest
challenges.
"""

import hashlib
import itertools
import os

from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from allworx.config import parse_config
from allworx.interfaces import IMailStore
from allworx.office import MailboxChanged, Office
from allworx.passwords import sip_digest
from allworx.protocols.sip import service as sip
from allworx.protocols.sip.core import Destination
from allworx.protocols.sip.message import parse
from allworx.protocols.sip.credentials import parse_authorization
from allworx.tests.confs import NETWORK, PW_HASH

CONF = NETWORK + """
[dns]
primary = 203.0.113.1

[web]
admin_password = {pw}

[sip]
voicemail_timeout = 20
rtp_ports = 20000-20010

[user alice]
full_name = Alice Archer
extension = 101
voicemail_pin = 1234
password = {pw}
sip_digest = {alice}

[user bob]
full_name = Bob Baker
extension = 102
voicemail_pin = 2345
password = {pw}
sip_digest = {bob}

[user carol]
extension = 103
password = {pw}
"""

PASSWORDS = {"101": "alice-pw", "102": "bob-pw"}


def office(data_dir, extra=""):
    text = CONF.format(pw=PW_HASH,
                       alice=sip_digest("101", "example.com", "alice-pw"),
                       bob=sip_digest("102", "example.com", "bob-pw")) + extra
    return Office(parse_config(text).with_data_dir(data_dir))


@implementer(IMailStore)
class FakeMailStore:
    """Mailboxes in memory, with the voicemail counts events of the real one."""

    def __init__(self, office):
        self.office = office
        self.boxes = {}
        self.ids = itertools.count(1)

    def deliver(self, recipients, message, sender=None):
        for user in recipients:
            uid = "m%03d" % next(self.ids)
            self.boxes.setdefault(user, {})[uid] = [message, False]
            self._changed(user)
        return defer.succeed(None)

    def list_messages(self, user):
        from allworx.protocols.mail.store import MessageInfo
        return [MessageInfo(uid, len(m), seen, b"X-Allworx-Voicemail: yes" in m)
                for uid, (m, seen) in sorted(self.boxes.get(user, {}).items())]

    def read_message(self, user, uid):
        return self.boxes[user][uid][0]

    def delete_message(self, user, uid):
        del self.boxes[user][uid]
        self._changed(user)

    def mark_seen(self, user, uid):
        self.boxes[user][uid][1] = True
        self._changed(user)

    def voicemail_counts(self, user):
        infos = [m for m in self.list_messages(user) if m.voicemail]
        return sum(1 for m in infos if not m.seen), sum(1 for m in infos if m.seen)

    def _changed(self, user):
        new, old = self.voicemail_counts(user)
        self.office.emit(MailboxChanged(user, new, old))


class FakeUdpPort:
    """What listenUDP returns, for RTP endpoints: records what is written."""

    def __init__(self, port, protocol):
        self.port = port
        self.protocol = protocol
        self.written = []
        self.closed = False

    def getHost(self):
        class Host:
            pass
        h = Host()
        h.port = self.port
        return h

    def write(self, data, addr):
        self.written.append((data, addr))

    def stopListening(self):
        self.closed = True


class UdpMemoryReactor(MemoryReactorClock):
    """MemoryReactorClock that also records listenUDP (FakeUdpPorts by port number)."""

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.udpPorts = {}

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        p = FakeUdpPort(port, protocol)
        protocol.makeConnection(p)
        self.udpPorts[port] = p
        return p


class Harness:
    """
    A SipCore with its parts on a Clock; `sent` holds (message, destination).
    Voicemail goes to a FakeMailStore (`store`), or nowhere with
    `mailboxes=False`. MailboxChanged reaches message waiting as the
    service would hand it.
    """

    def __init__(self, data_dir, mailboxes=True, extra="", phonebook=None, leases=None):
        self.office = office(data_dir, extra)
        self.clock = task.Clock()
        self.store = FakeMailStore(self.office) if mailboxes else None
        self.rtp_ports = []
        self.core = sip.build_core(self.office, self.clock, self.store, listen_udp=self._listen,
                                   phonebook=phonebook, leases=leases)
        self.sent = []
        self.core.send_raw = lambda data, dest: self.sent.append((data, dest))
        self.office.subscribe(MailboxChanged, self.core.mwi.mailbox_changed)

    def _listen(self, port, protocol):
        p = FakeUdpPort(port, protocol)
        protocol.makeConnection(p)
        self.rtp_ports.append(p)
        return p

    def receive(self, data, source=("192.168.2.11", 5060), transport="UDP"):
        if isinstance(data, str):
            data = data.encode()
        self.core.receive(data, Destination(transport, source[0], source[1]))

    def take(self):
        """The messages sent since the last call, parsed, with their destinations."""
        out = [(parse(data), dest) for data, dest in self.sent if data.strip()]
        self.sent = []
        return out


class Phone:
    """Builds requests as a phone at `address` would and answers digest challenges."""

    counter = itertools.count(1)

    def __init__(self, harness, ext, address, port=5060, password=None):
        self.h = harness
        self.ext = ext
        self.address = (address, port)
        self.password = password or PASSWORDS.get(ext, "x")
        self.call_id = "c%d-%s@%s" % (next(self.counter), ext, address)
        self.cseq = 0
        self.tag = "t" + os.urandom(3).hex()

    def request(self, method, uri, headers=(), body=b"", call_id=None, to_tag=None,
                cseq=None, branch=None, to=None):
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or "z9hG4bK" + os.urandom(5).hex()
        to = to or "<%s>" % uri
        if to_tag:
            to += ";tag=" + to_tag
        lines = ["%s %s SIP/2.0" % (method, uri),
                 "Via: SIP/2.0/UDP %s:%d;branch=%s;rport" % (self.address[0], self.address[1], branch),
                 "Max-Forwards: 70",
                 "From: <sip:%s@example.com>;tag=%s" % (self.ext, self.tag),
                 "To: %s" % to,
                 "Call-ID: %s" % (call_id or self.call_id),
                 "CSeq: %d %s" % (cseq, method),
                 "Contact: <sip:%s@%s:%d>" % (self.ext, self.address[0], self.address[1])]
        lines += list(headers)
        if isinstance(body, str):
            body = body.encode()
        lines.append("Content-Length: %d" % len(body))
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    patient = False     # wait (on the clock) for answers the login throttle holds back

    def send(self, data):
        self.h.receive(data, self.address)
        out = self.h.take()
        self.waited = 0
        while self.patient and not out and self.waited < 60:
            self.h.clock.advance(0.25)
            self.waited += 0.25
            out = self.h.take()
        return out

    def authorization(self, challenge, method, uri, algorithm="MD5", password=None, nc=1):
        fields = parse_authorization(challenge)
        h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]
        ha1 = h(("%s:example.com:%s" % (self.ext, password or self.password)).encode()).hexdigest()
        ha2 = h(("%s:%s" % (method, uri)).encode()).hexdigest()
        ncs = "%08x" % nc
        resp = h(("%s:%s:%s:%s:auth:%s" % (ha1, fields["nonce"], ncs, "abc", ha2)).encode()).hexdigest()
        return ('Digest username="%s", realm="example.com", nonce="%s", uri="%s", response="%s", '
                'algorithm=%s, qop=auth, nc=%s, cnonce="abc"'
                % (self.ext, fields["nonce"], uri, resp, algorithm, ncs))

    def invite(self, uri, headers=(), body=b"", password=None):
        """
        INVITE `uri` as a phone does: a 407 challenge is ACKed and answered
        with Proxy-Authorization (MD5). What the server sent to the last
        INVITE (to the first when it was not challenged).
        """
        out = self.send(self.request("INVITE", uri, headers, body))
        final = [m for m, _ in out if not m.is_request and m.code >= 200]
        if not final or final[0].code != 407:
            return out
        ack = self.request("ACK", uri, cseq=self.cseq, to_tag=final[0].to_tag,
                           branch=final[0].top_via.branch)
        assert self.send(ack) == [], "the ACK of a challenge drew an answer"
        challenge = [v for k, v in final[0].headers
                     if k == "Proxy-Authenticate" and "algorithm=MD5" in v][0]
        auth = self.authorization(challenge, "INVITE", uri, password=password)
        return self.send(self.request("INVITE", uri, list(headers) + ["Proxy-Authorization: " + auth],
                                      body))

    def register(self, expires=3600, algorithm="MD5", password=None, contact=None, headers=()):
        """REGISTER with a digest round; returns the final response."""
        uri = "sip:example.com"
        headers = ["Expires: %d" % expires] + list(headers)
        out = self.send(self.request("REGISTER", uri, headers, to="<sip:%s@example.com>" % self.ext))
        challenge = [v for k, v in out[-1][0].headers if k == "WWW-Authenticate"
                     and ("algorithm=%s" % algorithm) in v]
        if not challenge:
            return out[-1][0]
        auth = self.authorization(challenge[0], "REGISTER", uri, algorithm, password)
        data = self.request("REGISTER", uri, headers + ["Authorization: " + auth],
                            to="<sip:%s@example.com>" % self.ext)
        if contact:
            data = data.replace(b"Contact: <sip:%s@%s:%d>" % (self.ext.encode(), self.address[0].encode(),
                                                               self.address[1]), contact.encode())
        out = self.send(data)
        return out[-1][0] if out else None


OFFER = ("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
         "m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
         "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n")


def offer(ip="192.168.2.11", port=40000):
    return OFFER.format(ip=ip, port=port)
