# -*- test-case-name: allworx.tests.lab.test_provider -*-
"""
A tiny SIP UA of the lab tests' own, over UDP in a lab host, that talks to
the lab's provider (Kamailio at PROVIDER_IP, `allworx.lab.provider`): it
sends requests, answering a 401 or 407 once with digest credentials (MD5,
qop auth or none), receives the requests the provider sends it and answers
them. It stands in for the office's trunk in test_provider and asks the
provider's registrar which contacts an account has (`bindings`), which is
how a test knows a phone has registered there.
"""

import hashlib
import re
import socket
import time

from allworx.lab.topology import OUTSIDE_PASSWORDS, OUTSIDE_PHONE_IPS, PROVIDER_DOMAIN, PROVIDER_IP
from allworx.tests.lab.fixtures import wait_until
from allworx.tests.lab.phones import socket_in_ns

# Where a ProviderUA asking for an outside phone's bindings binds (beside
# the phone's own 5060 on the phone's address).
QUERY_PORT = 5090


def digest_header(challenge, method, uri, user, password, nc=1):
    """The Authorization value answering a Digest `challenge` (MD5, qop auth or none)."""
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = fields["realm"], fields["nonce"]

    def md5(text):
        return hashlib.md5(text.encode()).hexdigest()
    ha1, ha2 = md5("%s:%s:%s" % (user, realm, password)), md5("%s:%s" % (method, uri))
    value = 'Digest username="%s", realm="%s", nonce="%s", uri="%s", algorithm=MD5' % (
        user, realm, nonce, uri)
    if "auth" in fields.get("qop", "").split(","):
        cnonce = "%08x" % (time.monotonic_ns() & 0xFFFFFFFF)
        response = md5("%s:%s:%08x:%s:auth:%s" % (ha1, nonce, nc, cnonce, ha2))
        value += ', qop=auth, nc=%08x, cnonce="%s"' % (nc, cnonce)
    else:
        response = md5("%s:%s:%s" % (ha1, nonce, ha2))
    value += ', response="%s"' % response
    if "opaque" in fields:
        value += ', opaque="%s"' % fields["opaque"]
    return value


def header(message, name):
    """The first value of header `name` in a SIP message (text), or None."""
    match = re.search(r"(?mi)^%s\s*:\s*(.*?)\r?$" % re.escape(name), message)
    return match.group(1) if match else None


def offer(ip, port=40000):
    return ("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").format(ip=ip, port=port)


class ProviderUA:
    """
    A tiny SIP UA over UDP in a lab host: sends requests (answering a 401 or
    407 once with digest credentials) and receives requests sent to it.
    """

    def __init__(self, lab, host, address, user=None, password=None):
        self.sock = socket_in_ns(lab.ns(host), kind=socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.address = address
        self.user, self.password = user, password
        self.n = 0

    def close(self):
        self.sock.close()

    def _build(self, method, uri, call_id, cseq, to, extra=(), body="", contact=True):
        self.n += 1
        lines = ["%s %s SIP/2.0" % (method, uri),
                 "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK-awu-%d-%d;rport"
                 % (self.address + (time.monotonic_ns(), self.n)),
                 "Max-Forwards: 70",
                 "From: <sip:%s@%s>;tag=awu%d" % (self.user or "anonymous", PROVIDER_DOMAIN,
                                                  hash(call_id) & 0xFFFF),
                 "To: <%s>" % to,
                 "Call-ID: %s" % call_id,
                 "CSeq: %d %s" % (cseq, method)]
        if contact:
            lines.append("Contact: <sip:%s@%s:%d>" % ((self.user or "anonymous",) + self.address))
        lines += list(extra)
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append("Content-Length: %d" % len(body.encode()))
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def receive(self, timeout=5.0, want=None):
        """The next message (text) for which `want(text)` holds, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                return None
            text = data.decode("utf-8", "replace")
            if want is None or want(text):
                return text

    def request(self, method, uri, to=None, extra=(), body="", authenticate=True, contact=True):
        """Send a request; its final answer (text), after one digest round if asked."""
        call_id = "awu-%d@%s" % (time.monotonic_ns(), self.address[0])
        to = to or uri
        cseq = 1
        message = self._build(method, uri, call_id, cseq, to, extra, body, contact)
        credentials = []
        while True:
            self.sock.sendto(message, (PROVIDER_IP, 5060))
            answer = self.receive(5.0, lambda t: t.startswith("SIP/2.0 ") and call_id in t
                                  and not re.match(r"SIP/2.0 1\d\d ", t))
            if answer is None:
                raise AssertionError("no final answer to %s %s" % (method, uri))
            code = int(answer.split()[1])
            if method == "INVITE":
                self._ack(answer, uri, call_id, cseq)
            if code not in (401, 407) or not authenticate or credentials:
                return answer
            name = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
            value = digest_header(header(answer, name), method, uri, self.user, self.password)
            credentials = ["%s: %s" % ("Authorization" if code == 401 else
                                       "Proxy-Authorization", value)]
            cseq += 1
            message = self._build(method, uri, call_id, cseq, to,
                                  list(extra) + credentials, body, contact)

    def _ack(self, answer, uri, call_id, cseq):
        via = header(answer, "Via")
        ack = ["ACK %s SIP/2.0" % uri, "Via: " + via, "Max-Forwards: 70",
               "From: " + header(answer, "From"), "To: " + header(answer, "To"),
               "Call-ID: " + call_id, "CSeq: %d ACK" % cseq, "Content-Length: 0"]
        self.sock.sendto(("\r\n".join(ack) + "\r\n\r\n").encode(), (PROVIDER_IP, 5060))

    def register(self, expires=300):
        return self.request("REGISTER", "sip:" + PROVIDER_DOMAIN,
                            to="sip:%s@%s" % (self.user, PROVIDER_DOMAIN),
                            extra=["Expires: %d" % expires])

    def bindings(self):
        """The contacts registered for this UA's account (a REGISTER without
        Contact asks the registrar), as the 200's Contact header text."""
        answer = self.request("REGISTER", "sip:" + PROVIDER_DOMAIN,
                              to="sip:%s@%s" % (self.user, PROVIDER_DOMAIN), contact=False)
        if not answer.startswith("SIP/2.0 200 "):
            raise AssertionError("the registrar's bindings of %s: %s" % (self.user, answer))
        return header(answer, "Contact") or ""

    def reply(self, request, code, reason):
        """Answer a received request (text) with `code`, adding a To tag."""
        keep = [line for line in request.split("\r\n\r\n")[0].split("\r\n")[1:]
                if line.split(":")[0].strip().lower() in ("via", "from", "to", "call-id",
                                                          "cseq", "record-route")]
        keep = [line + ";tag=office1" if line.lower().startswith("to:") else line
                for line in keep]
        text = "SIP/2.0 %d %s\r\n%s\r\nContent-Length: 0\r\n\r\n" % (
            code, reason, "\r\n".join(keep))
        self.sock.sendto(text.encode(), (PROVIDER_IP, 5060))


def wait_registered(testcase, lab, user, context=lambda: ""):
    """
    Wait until outside phone `user` (topology's OUTSIDE_PHONES) has its
    contact (its address, port 5060) registered at the provider; fail
    `testcase` with `context()` if it does not within 15 s.
    """
    query = ProviderUA(lab, "inet", (OUTSIDE_PHONE_IPS[user], QUERY_PORT), user,
                       OUTSIDE_PASSWORDS[user])
    try:
        wait_until(testcase, lambda: "@%s:5060" % OUTSIDE_PHONE_IPS[user] in query.bindings(),
                   "%s's registration at the provider" % user, 15, context)
    finally:
        query.close()
