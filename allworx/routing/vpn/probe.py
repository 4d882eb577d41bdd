# -*- test-case-name: allworx.tests.vpn.test_probe -*-
"""
Whether each `[site]`'s server answers over the tunnel (SPEC 16, the Sites
page): every 30 s, for each site, a SIP OPTIONS over UDP to its tunnel
address, port 5060, and, when the site names a `domain`, a DNS query for
that domain's SOA to its address, port 53. Any SIP response (whatever its
status) or any DNS answer to our query within 2 s means the server
answers; neither means it does not.

One UDP socket per site and round, on an ephemeral port, closed when the
round ends. The packets go to the site's tunnel address, so the kernel
sends them through the tunnel from this server's tunnel address (the
address the site's SIP server trusts). An answer counts only from the
address asked and only if it matches the request (the Call-ID, the DNS
message id).
"""

import os

from twisted.internet import defer, protocol, task
from twisted.logger import Logger
from twisted.names import dns

log = Logger()

INTERVAL = 30.0         # seconds between rounds
TIMEOUT = 2.0           # seconds a server has to answer
SIP_PORT = 5060
DNS_PORT = 53


def _token(n=8):
    return os.urandom(n).hex()


def options_request(target, local_host, local_port, domain, call_id, branch, tag):
    """A minimal SIP OPTIONS (RFC 3261 11) to `target` (the site's address), as bytes."""
    lines = [
        "OPTIONS sip:%s:%d SIP/2.0" % (target, SIP_PORT),
        "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s;rport" % (local_host, local_port, branch),
        "Max-Forwards: 70",
        "From: <sip:allworx@%s>;tag=%s" % (domain, tag),
        "To: <sip:%s:%d>" % (target, SIP_PORT),
        "Call-ID: %s" % call_id,
        "CSeq: 1 OPTIONS",
        "Accept: application/sdp",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def soa_query(domain, message_id):
    """A DNS query for `domain`'s SOA, as bytes."""
    m = dns.Message(id=message_id, recDes=0)
    m.queries = [dns.Query(domain.encode("ascii"), dns.SOA, dns.IN)]
    return m.toStr()


def is_sip_response(data, call_id):
    """Whether `data` is a SIP response to the request with `call_id`."""
    if not data.startswith(b"SIP/2.0 "):
        return False
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"call-id", b"i"):
            return value.strip() == call_id.encode("ascii")
    return False


def is_dns_answer(data, message_id):
    """Whether `data` is a DNS response with `message_id`."""
    m = dns.Message()
    try:
        m.fromStr(data)
    except Exception:
        return False
    return bool(m.answer) and m.id == message_id


class _Probe(protocol.DatagramProtocol):
    """One site, one round: the requests sent, the first matching answer fires `done` True."""

    def __init__(self, address, domain, our_domain, local_host):
        self.address = address
        self.domain = domain
        self.our_domain = our_domain
        self.local_host = local_host
        self.call_id = "%s@%s" % (_token(), our_domain)
        self.dns_id = int.from_bytes(os.urandom(2), "big")
        self.done = defer.Deferred()

    def startProtocol(self):
        port = self.transport.getHost().port
        self._send(options_request(self.address, self.local_host, port, self.our_domain,
                                   self.call_id, _token(), _token(4)), SIP_PORT)
        if self.domain:
            self._send(soa_query(self.domain, self.dns_id), DNS_PORT)

    def _send(self, data, port):
        try:
            self.transport.write(data, (self.address, port))
        except OSError as e:       # no route (the tunnel is not up): no answer will come
            log.info("vpn: probe to {address}:{port} not sent: {why}", address=self.address,
                     port=port, why=e)

    def datagramReceived(self, data, addr):
        if addr[0] != self.address or self.done.called:
            return
        if ((addr[1] == SIP_PORT and is_sip_response(data, self.call_id))
                or (addr[1] == DNS_PORT and is_dns_answer(data, self.dns_id))):
            self.done.callback(True)

    def give_up(self):
        if not self.done.called:
            self.done.callback(False)


class SiteProber:
    """
    Probes the sites of `config()` (called each round, so live changes
    count) every `interval` seconds on `reactor`; `status()` says what the
    last probe of each found: {site: {"server_answers", "checked_at"}}.
    """

    def __init__(self, reactor, config, interval=INTERVAL, timeout=TIMEOUT):
        self.reactor = reactor
        self.config = config
        self.interval = interval
        self.timeout = timeout
        self.results = {}       # site name -> (answers: bool, checked_at: epoch)
        self._loop = None
        self._round = None

    def start(self):
        if self._loop is None:
            self._loop = task.LoopingCall(self.probe_all)
            self._loop.clock = self.reactor
            self._loop.start(self.interval, now=True)

    def stop(self):
        if self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None

    def status(self):
        """{site: {"server_answers": bool or None, "checked_at": epoch or None}} of the sites configured."""
        out = {}
        for name in self.config().sites:
            answers, when = self.results.get(name, (None, None))
            out[name] = {"server_answers": answers, "checked_at": when}
        return out

    def probe_all(self):
        """One round over every site; a Deferred firing when all have answered or timed out."""
        if self._round is not None:
            return self._round      # the last round is still waiting (never longer than timeout)
        config = self.config()
        local = config.vpn.address.ip if config.vpn.address is not None else "0.0.0.0"
        rounds = [self.probe(name, site, config.system.domain, str(local))
                  for name, site in sorted(config.sites.items())]
        self._round = defer.gatherResults(rounds)

        def ended(result):
            self._round = None
            return None
        return self._round.addBoth(ended)

    def probe(self, name, site, our_domain, local_host):
        """Probe one site; records and fires its result (True, False)."""
        probe = _Probe(str(site.address), site.domain, our_domain, local_host)
        try:
            port = self.reactor.listenUDP(0, probe)
        except Exception as e:
            log.warn("vpn: cannot probe site {site}: {why}", site=name, why=e)
            port = None
            probe.give_up()
        timer = self.reactor.callLater(self.timeout, probe.give_up) if port is not None else None

        def record(answers):
            if timer is not None and timer.active():
                timer.cancel()
            if port is not None:
                port.stopListening()
            was = self.results.get(name, (None, None))[0]
            self.results[name] = (answers, self.reactor.seconds())
            if was is not None and was != answers:
                log.info("vpn: site {site}'s server {now} over the tunnel", site=name,
                         now="answers again" if answers else "no longer answers")
            return answers
        return probe.done.addCallback(record)
