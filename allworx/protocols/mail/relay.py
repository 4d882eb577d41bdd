# -*- test-case-name: allworx.tests.mail.test_queue -*-
"""
Sending one queued message to one domain: where (the smarthost, or the
domain's MX hosts through the server's own resolver) and how (twisted.mail's
ESMTP client), and what each recipient's outcome was.

Outcomes are `sent`, `temporary` (try again later) or `permanent` (bounce).
"""

import io

import attr
from twisted.internet import defer, error as net_error, ssl
from twisted.internet.abstract import isIPAddress
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.names import error as dns_error

from allworx.protocols.mail.dsn import status_for

log = Logger()


@attr.s(frozen=True, slots=True)
class Outcome:
    """What became of one recipient in one attempt."""

    kind = attr.ib()        # "sent" | "temporary" | "permanent"
    status = attr.ib()      # enhanced status code, 2.0.0 / 4.4.1 / 5.1.1 ...
    text = attr.ib()


def outcome_for_reply(code, text):
    """The Outcome of an SMTP reply code (and its text) for a recipient."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = "%d %s" % (code, text) if code and code > 0 else text
    if 200 <= code < 300:
        return Outcome("sent", "2.0.0", text)
    if 500 <= code < 600:
        return Outcome("permanent", status_for(code, text.split(" ", 1)[-1]), text)
    return Outcome("temporary", status_for(code if code >= 400 else 0, text.split(" ", 1)[-1]), text)


def _stuffing_transform(protocol):
    """
    Twisted's transform dot-stuffs each chunk alone, so a line that starts a
    chunk (or the message) is missed; this one remembers the last byte sent.
    """
    state = {"last": b"\n"}

    def transform(chunk):
        protocol.resetTimeout()
        if not chunk:
            return chunk
        out = chunk.replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n..")
        if chunk[:1] == b"." and state["last"] == b"\n":
            out = b"." + out
        state["last"] = chunk[-1:]
        return out
    return transform


class _Sender(smtp.ESMTPSender):
    """
    ESMTPSender with dot-stuffing that is correct across chunk boundaries, and
    that notes on its factory when it started TLS (so a failed handshake can
    be retried in the clear, as opportunistic TLS does).
    """

    def esmtpState_starttls(self, code, resp):
        self.factory.tls_started = True
        return smtp.ESMTPSender.esmtpState_starttls(self, code, resp)

    def smtpState_data(self, code, resp):
        self.transformChunk = _stuffing_transform(self)
        return smtp.ESMTPSender.smtpState_data(self, code, resp)


class _SenderFactory(smtp.ESMTPSenderFactory):
    protocol = _Sender
    noisy = False
    tls_started = False


class SmtpRelay:
    """Routes and sends messages to other mail servers."""

    def __init__(self, reactor, resolver, helo_name, smarthost=None, timeout=120,
                 smtp_port=25):
        self.reactor = reactor
        self.resolver = resolver
        self.helo_name = helo_name
        self.smarthost = smarthost      # (host, port) or None
        self.timeout = timeout
        self.smtp_port = smtp_port

    @defer.inlineCallbacks
    def route(self, domain):
        """[(ip, port), ...] to try for `domain`; raises RouteError."""
        if self.smarthost is not None:
            host, port = self.smarthost
            ip = yield self._address(host)
            log.info("route for {domain}: smarthost {ip}:{port}", domain=domain, ip=ip, port=port)
            return [(ip, port)]
        try:
            answers, _, _ = yield self.resolver.lookupMailExchange(domain)
        except dns_error.DomainError:
            raise RouteError(Outcome("permanent", "5.1.2", "domain %s does not exist" % domain))
        except Exception as e:
            raise RouteError(Outcome("temporary", "4.4.3", "MX lookup for %s failed: %s"
                                     % (domain, _describe(e))))
        mx = sorted((a.payload.preference, str(a.payload.name)) for a in answers
                    if a.type == 15 and a.name.name.decode("ascii", "replace").lower().rstrip(".") == domain)
        if mx and len(mx) == 1 and mx[0][1] in ("", "."):
            raise RouteError(Outcome("permanent", "5.1.10", "%s accepts no mail (null MX)" % domain))
        names = [name for _, name in mx] or [domain]
        hosts = []
        for name in names:
            try:
                ip = yield self._address(name)
            except RouteError:
                continue
            hosts.append((ip, self.smtp_port))
        if not hosts:
            raise RouteError(Outcome("temporary", "4.4.3", "no address for the mail servers of %s" % domain))
        log.info("route for {domain}: {hosts} ({how})", domain=domain,
                 hosts=" ".join("%s:%d" % h for h in hosts), how="MX" if mx else "no MX: A record")
        return hosts

    @defer.inlineCallbacks
    def _address(self, host):
        if isIPAddress(host):
            return host
        try:
            ip = yield self.resolver.getHostByName(host)
        except dns_error.DomainError:
            raise RouteError(Outcome("permanent", "5.4.4", "host %s does not exist" % host))
        except Exception as e:
            raise RouteError(Outcome("temporary", "4.4.3", "cannot resolve %s: %s" % (host, _describe(e))))
        return ip

    @defer.inlineCallbacks
    def deliver(self, domain, sender, recipients, data):
        """{recipient: Outcome} after trying `domain`'s servers in turn."""
        try:
            hosts = yield self.route(domain)
        except RouteError as e:
            return {r: e.outcome for r in recipients}
        last = None
        for ip, port in hosts:
            outcomes, tls_failed = yield self._send(ip, port, sender, recipients, data, True)
            if tls_failed:
                log.info("TLS with {ip}:{port} failed; sending in the clear", ip=ip, port=port)
                outcomes, _ = yield self._send(ip, port, sender, recipients, data, False)
            if any(o.kind != "temporary" for o in outcomes.values()) or not outcomes:
                return outcomes
            last = outcomes
        return last

    def _send(self, ip, port, sender, recipients, data, tls):
        """({recipient: Outcome}, whether a started TLS session broke the connection)."""
        result = defer.Deferred()
        # Opportunistic TLS (RFC 3207 as MTAs use it): encrypt when offered,
        # without checking the certificate; most MX certificates would fail.
        context = ssl.CertificateOptions() if tls else None
        factory = _SenderFactory(
            None, None, sender, list(recipients), io.BytesIO(data), result,
            retries=0, timeout=self.timeout, contextFactory=context,
            heloFallback=True, requireAuthentication=False,
            requireTransportSecurity=False, hostname=None)
        factory.domain = self.helo_name.encode("ascii") if isinstance(self.helo_name, str) else self.helo_name
        self.reactor.connectTCP(ip, port, factory, timeout=30)

        def sent(res):
            _, addresses = res
            return _per_recipient(recipients, addresses, None), False

        def failed(f):
            exc = f.value
            addresses = getattr(exc, "addresses", None)
            code = getattr(exc, "code", -1)
            resp = getattr(exc, "resp", b"") or b""
            if isinstance(exc, (smtp.SMTPConnectError, net_error.ConnectError)) or code in (-1, None):
                where = "%s:%d" % (ip, port)
                return ({r: Outcome("temporary", "4.4.1", "cannot talk to %s: %s" % (where, _describe(exc)))
                         for r in recipients}, tls and factory.tls_started)
            return _per_recipient(recipients, addresses, outcome_for_reply(code, resp)), False
        return result.addCallbacks(sent, failed)


def _per_recipient(recipients, addresses, default):
    out = {}
    for addr, code, resp in addresses or ():
        key = addr.decode("utf-8", "replace") if isinstance(addr, bytes) else str(addr)
        out[key] = outcome_for_reply(code, resp)
    for r in recipients:
        if r not in out:
            out[r] = default or Outcome("temporary", "4.4.1", "no answer for this recipient")
    # A failure of the whole message (MAIL FROM or DATA) overrides the RCPT answers.
    if default is not None:
        for r, o in list(out.items()):
            if o.kind == "sent":
                out[r] = default
    return out


def _describe(exc):
    text = getattr(exc, "resp", None) or str(exc) or exc.__class__.__name__
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(text.split())[:200]


class RouteError(Exception):
    """No way to reach a domain's mail servers; `outcome` says if it is worth trying again."""

    def __init__(self, outcome):
        Exception.__init__(self, outcome.text)
        self.outcome = outcome
