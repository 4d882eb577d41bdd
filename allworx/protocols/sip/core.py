# -*- test-case-name: allworx.tests.sip.test_service -*-
"""
The SIP core: the transaction layer and the dispatcher, below every part of
the server that handles requests.

`SipCore` parses what the transports hand it (`receive`), answers garbage
with silence and broken requests with 400, keeps the server and client
transactions, and passes each new request to the part that owns it: REGISTER
to the registrar, INVITE to the call router (calls), requests inside the
server's own calls to its user agent (ua: voicemail), SUBSCRIBE to message
waiting (mwi); requests inside calls between phones are relayed along their
route. Responses go to the matching client transaction or, when they carry
our Via on top, back along the Via path.

A new INVITE is routed only for a sender that proved who it is (a phone's
own registered address, or digest credentials: `Registrar.admit_call`);
anyone else gets the same stateless 407 whatever it names, so nobody learns
which extensions exist. Over UDP, what the core answers a sender that did
not prove itself is never larger than `udp_limit` of the request (twice its
size, at least `UDP_FLOOR`): anything larger is dropped, not sent to an
address nobody verified (RFC 3261 18.1.1, and no use as an amplifier).

`Destination` (where a message goes) and the branch prefixes are here too,
so that the parts can use them without importing the service.
"""

import hashlib
import os
import re

from prometheus_client import Counter
from twisted.internet import defer
from twisted.logger import Logger

from allworx.counting import LabelledCounter
from allworx.protocols.sip.message import NameAddr, SipParseError, SipUri, Via, make_response, parse
from allworx.protocols.sip.timerj import KeptAnswers
from allworx.protocols.sip.transaction import ClientTransaction, ServerTransaction

log = Logger()

MESSAGES = LabelledCounter("allworx_sip_messages_total", "SIP messages received, by kind", "kind")
ERRORS = Counter("allworx_sip_errors_total", "SIP input refused, by reason", ["reason"])

_MESSAGE_COUNTS = MESSAGES.counts


BRANCH_MAGIC = "z9hG4bK"
FORK_BRANCH = BRANCH_MAGIC + "awf"      # our branches of a forked INVITE
RELAY_BRANCH = BRANCH_MAGIC + "awr"     # our branches of relayed in-dialog requests
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REGISTER, SUBSCRIBE, NOTIFY, REFER"
LOCAL = "LOCAL"                         # the in-process transport of the B2BUA's inside legs
CHALLENGE_TAG = "awc"                   # To tags of our stateless challenges and refusals of INVITEs

# A UDP answer to a sender that did not prove itself is at most twice the
# request, or UDP_FLOOR bytes when the request was smaller than half of it
# (a challenge to the smallest request that parses still fits).
UDP_FLOOR = 512


_RPORT = re.compile(r";\s*rport\b(?!=)", re.I)


def udp_limit(size):
    """The most bytes answered over UDP to an unproven request of `size` bytes."""
    return max(2 * size, UDP_FLOOR)


class Destination(tuple):
    """(transport, host, port) a message goes to; `conn` is a TCP connection if any."""

    def __new__(cls, transport, host, port, conn=None):
        self = tuple.__new__(cls, (transport, host, port))
        self.conn = conn
        return self

    transport = property(lambda s: s[0])
    host = property(lambda s: s[1])
    port = property(lambda s: s[2])


def salvage_400(data):
    """A 400 for a request whose parse failed but whose core headers are readable, else None."""
    # surrogateescape: bytes that are not UTF-8 go back out as they came,
    # one byte each (never three bytes of U+FFFD for one of the sender's).
    text = data[:8192].decode("utf-8", "surrogateescape")
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or " SIP/2.0" not in lines[0] or lines[0].startswith("SIP/"):
        return None
    keep = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
            "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}
    headers = []
    for line in lines[1:]:
        if not line.strip():
            break
        name, sep, value = line.partition(":")
        name = keep.get(name.strip().lower())
        if sep and name:
            headers.append((name, value.strip()))
    if not all(any(k == n for k, _ in headers) for n in ("Via", "From", "To", "Call-ID", "CSeq")):
        return None
    lines_out = ["SIP/2.0 400 Bad Request"] + ["%s: %s" % kv for kv in headers]
    return ("\r\n".join(lines_out) + "\r\nContent-Length: 0\r\n\r\n").encode("utf-8", "surrogateescape")


def _contact_is_sip(request):
    """True when a request's Contact, if any, is one SIP URI (a dialog's remote target)."""
    contact = request.get("Contact")
    if contact is None:
        return True
    try:
        SipUri.parse(NameAddr.parse(contact).uri)
    except SipParseError:
        return False
    return True


class SipCore:
    """
    Transactions and dispatch. `send_raw(bytes, destination)` is set by the
    service to write on the right socket. The parts (registrar, calls, ua,
    mwi) are plugged in as attributes.
    """

    def __init__(self, office, clock):
        self.office = office
        self.clock = clock
        self.send_raw = lambda data, dest: None
        self.server_tx = {}       # (branch, sent-by, method) -> ServerTransaction
        self.admitting = set()    # server transaction keys of INVITEs whose login waits
        # key -> the final answer's bytes (b"": kept, nothing to send): Timer J. Bytes
        # alone, nothing the garbage collector has to walk for each of them.
        self.completed = KeptAnswers(clock)
        self.client_tx = {}       # (branch, method) -> ClientTransaction
        self.registrar = None
        self.calls = None
        self.ua = None
        self.mwi = None
        self.outside = None       # the B2BUA of calls to and from outside lines (outside.py)
        self.sites = None         # calls to other sites, trust of their servers (sites.py)
        self.checksync = None     # check-sync NOTIFYs to provisioned phones (checksync.py)
        self._ours = (None, None, None, None)   # (config, WAN address, our hosts, our ports)
        self._replied = (None, None)            # the response `reply` sent last, and its bytes

    # ------------------------------------------------------------ addresses

    @property
    def port(self):
        return self.office.config.sip.port

    def local_host(self, peer_host=None):
        """
        The address a peer reaches us at: loopback for local peers, the WAN
        address for peers beyond the LAN (a provider, a remote phone), else
        the LAN address.
        """
        if peer_host is not None:
            if peer_host.startswith("127.") or peer_host == "::1":
                return "127.0.0.1"
            if not self.office.is_lan_peer(peer_host) and self.office.wan_ip is not None:
                return str(self.office.wan_ip)
        return str(self.office.config.lan_ip)

    def port_for(self, transport):
        """Our port for a transport: `[sip] tls_port` for TLS, else `[sip] port`."""
        return self.office.config.sip.tls_port if transport.upper() == "TLS" else self.port

    def is_us(self, host, port):
        config, wan_ip = self.office.config, self.office.wan_ip
        known = self._ours
        if known[0] is not config or known[1] != wan_ip:
            # Asked several times for every relayed message: made again only when these change.
            hosts = {str(config.lan_ip), "127.0.0.1", "localhost"}
            if wan_ip is not None:
                hosts.add(str(wan_ip))
            known = self._ours = (config, wan_ip, hosts, (config.sip.port, config.sip.tls_port))
        return host in known[2] and (port or 5060) in known[3]

    def new_branch(self):
        return BRANCH_MAGIC + os.urandom(8).hex()

    def new_tag(self):
        return os.urandom(6).hex()

    def via_for(self, dest, branch=None):
        host, port, branch = self.local_host(dest.host), self.port_for(dest.transport), branch or self.new_branch()
        text = "SIP/2.0/%s %s:%d;branch=%s;rport" % (dest.transport, host, port, branch)
        # Our own Via comes back on top of every response (and our transaction's key is read
        # from it): what parsing it gives is known here.
        Via.remember(text, Via(dest.transport.upper(), host, port, {"branch": branch, "rport": None}))
        return text

    # ------------------------------------------------------------ sending

    def send(self, message, dest):
        self.out(message.to_bytes(), dest)

    def out(self, data, dest):
        """Bytes to `dest`: the socket's, or back into this core for the LOCAL transport."""
        if dest.transport == LOCAL:
            self.clock.callLater(0, self.receive, data, Destination(LOCAL, dest.host, self.port))
        else:
            self.send_raw(data, dest)

    def reply(self, request, response, dest):
        """Send a response to `request`; what `bounded` refuses is dropped. Returns what was sent."""
        data = self.bounded(request, response.to_bytes(), dest)
        if data is not None:
            self.out(data, dest)
        self._replied = (response, data)
        return data

    def bounded(self, request, data, dest, size=None):
        """
        `data` when it may answer `request` (of `size` bytes, by default the
        request's) at `dest`, else None: over UDP, a sender that did not prove
        itself gets at most `udp_limit` of what it sent.
        """
        if dest.transport != "UDP" or (request is not None and request.authenticated):
            return data
        size = request.size if size is None else size
        if len(data) <= udp_limit(size):
            return data
        ERRORS.labels("oversized_answer").inc()
        log.debug("SIP answer of {n} bytes to a {size}-byte request from {peer} dropped (UDP)",
                  n=len(data), size=size, peer="%s:%d" % (dest.host, dest.port))
        return None

    def reply_destination(self, request, dest):
        """Where responses to `request` go: back to its source (RFC 3581)."""
        return dest

    def server_transaction(self, request, dest):
        """Create the server transaction of a new request."""
        st = ServerTransaction(request, lambda m: self.reply(request, m, dest), self.clock,
                               reliable=dest.transport != "UDP")
        key = self._st_key(request, request.method)
        st.on_terminated = lambda: self.server_tx.pop(key, None)
        if request.method != "ACK":
            self.server_tx[key] = st
        if request.method != "INVITE":
            st.keep_final = lambda response: self._keep_final(key, request, response, dest)
        st.source = dest
        return st

    def _keep_final(self, key, request, response, dest):
        """Timer J for a completed non-INVITE transaction: its final answer, bytes only (None: none)."""
        replied, data = self._replied
        if replied is not response:
            data = self.bounded(request, response.to_bytes(), dest)
        self._keep(key, data)

    def answer(self, request, response, dest):
        """
        The final answer to a new non-INVITE request, given at once: what its
        server transaction would do (send it; over UDP keep its bytes for
        Timer J's retransmissions), without making one.
        """
        data = self.reply(request, response, dest)
        if dest.transport == "UDP":
            self._keep(self._st_key(request, request.method), data)

    def _keep(self, key, data):
        self.completed.keep(key, data)

    def request(self, request, dest, on_response=None, on_timeout=None):
        """Send a request of ours (its top Via already ours) in a client transaction."""
        ct = ClientTransaction(request, lambda m: self.send(m, dest), self.clock,
                               reliable=dest.transport != "UDP", on_response=on_response,
                               on_timeout=on_timeout)
        key = ct.key
        ct.on_terminated = lambda: self.client_tx.pop(key, None)
        self.client_tx[key] = ct
        ct.start()
        return ct

    @staticmethod
    def _st_key(request, method):
        via = request.top_via
        return (via.branch, via.host, via.port, method)

    # ------------------------------------------------------------ receiving

    def receive(self, data, dest):
        """One datagram or framed stream message from `dest`."""
        if not data or data.isspace():
            return      # keep-alive (no copy of the datagram made to find out)
        try:
            msg = parse(data, stream=dest.transport != "UDP")
        except SipParseError as e:
            ERRORS.labels("malformed").inc()
            log.debug("malformed SIP from {peer}: {error}", peer="%s:%d" % (dest.host, dest.port),
                      error=str(e))
            reply = salvage_400(data)
            if reply is not None and self.bounded(None, reply, dest, size=len(data)) is not None:
                self.out(reply, dest)
            return
        try:
            if msg.is_request:
                _MESSAGE_COUNTS[msg.method if msg.method in ALLOW else "other"] += 1
                self._request(msg, dest)
            else:
                _MESSAGE_COUNTS["response"] += 1
                self._response(msg, dest)
        except SipParseError as e:
            ERRORS.labels("malformed").inc()
            if msg.is_request and msg.method != "ACK":
                self.reply(msg, make_response(msg, 400, "Bad Request (%s)" % str(e)[:60]), dest)
        except Exception:
            ERRORS.labels("internal").inc()
            log.failure("SIP message from {peer} could not be handled",
                        peer="%s:%d" % (dest.host, dest.port))
            if msg.is_request and msg.method != "ACK":
                self.reply(msg, make_response(msg, 500), dest)

    def _response(self, response, dest):
        via = response.top_via
        ct = self.client_tx.get((via.branch, response.cseq[1]))
        if ct is not None:
            ct.receive(response)
            return
        if len(response.vias) == 1 and (self.outside is not None or self.sites is not None):
            # A 2xx of one of our own INVITEs again, its transaction over.
            for part in (self.outside, self.sites):
                if part is not None:
                    part.stray_response(response)
            return
        if self.is_us(via.host, via.port) and len(response.vias) > 1:
            if via.branch.startswith(FORK_BRANCH) and not 200 <= response.code < 300:
                return      # a forked branch whose transaction is over: only 2xx may pass
            # A response to a request relayed statelessly (in-dialog), or a
            # retransmitted 2xx of a forked INVITE: back along the Vias.
            response.pop_first("Via")
            to = self._via_destination(response.top_via)
            if self.calls is not None:
                self.calls.crossing(response, dest, to)
            self.send(response, to)
            if response.cseq[1] == "BYE" and self.calls is not None:
                self.calls.ended(response.call_id)

    def _via_destination(self, via):
        host = via.params.get("received") or via.host
        rport = via.params.get("rport")
        port = int(rport) if rport and rport.isdigit() else (via.port or 5060)
        return Destination(via.transport, host, port, self.connections_get(host, port))

    def connections_get(self, host, port):
        return None

    def _request(self, request, dest):
        via = request.top_via
        # RFC 3261 18.2.1 and RFC 3581: note where it came from, when that is not what
        # the Via says or the sender asks (rport), so responses find the way back.
        if "received" not in via.params and (via.host != dest.host or "rport" in via.params):
            text = request.get("Via")
            params = dict(via.params)
            if "rport" in params and params["rport"] is None:
                text = _RPORT.sub(";rport=%d" % dest.port, text, count=1)
                params["rport"] = str(dest.port)
            text += ";received=%s" % dest.host
            params["received"] = dest.host
            request.replace_first("Via", text)
            # What parsing the new text gives, known already: no second parse of the Via.
            Via.remember(text, Via(via.transport, via.host, via.port, params))
        method = request.method.upper()
        if method != request.method:
            return self.reply(request, make_response(request, 405), dest)
        trunk = None
        remote = dest.transport != LOCAL and not self.office.is_lan_peer(dest.host)
        if remote:
            trunk = self.outside.provider_of(dest.host) if self.outside is not None else None
            remote = trunk is None      # a sender beyond the LAN that is no provider
        if remote and not self.office.config.sip.wan:
            ERRORS.labels("wan").inc()
            log.warn("SIP {method} from the WAN ({peer}) refused", method=method,
                     peer="%s:%d" % (dest.host, dest.port))
            if method != "ACK":
                self.reply(request, make_response(request, 403, "Forbidden (LAN only)"), dest)
            return
        key = self._st_key(request, "INVITE" if method == "ACK" else method)
        st = self.server_tx.get(key)
        if st is not None:
            if method == "ACK":
                st.ack()
            else:
                st.retransmission()
            return
        kept = self.completed.get(key)
        if kept is not None:
            if kept:
                self.out(kept, dest)
            return
        if method == "CANCEL":
            invite = self.server_tx.get(self._st_key(request, "INVITE"))
            cst = self.server_transaction(request, dest)
            if invite is None:
                return cst.respond_code(481)
            cst.respond_code(200, to_tag=getattr(invite, "to_tag", None))
            cancel = getattr(invite, "on_cancel", None)
            if cancel is not None and invite.state == "proceeding":
                cancel()
            return
        if method != "ACK":
            mf = request.get("Max-Forwards")
            if mf is not None and int(mf) == 0 and method not in ("REGISTER", "OPTIONS"):
                return self.reply(request, make_response(request, 483), dest)
        self._route_pop(request)
        if method == "ACK" and (request.to_tag or "").startswith(CHALLENGE_TAG):
            return          # the ACK of a stateless challenge or refusal: nothing to do
        if remote and method != "REGISTER":
            # [sip] wan = yes: beyond the LAN, only a registered phone's own
            # address or digest credentials get further, whatever is asked.
            return self._admit(request, dest, method, self._after_admission)
        self._after_admission(request, dest, method, trunk)

    def _after_admission(self, request, dest, method, trunk=None):
        if request.to_tag:
            return self._in_dialog(request, dest)
        if method == "ACK":
            return          # ACK with no transaction and no dialog: nothing to do
        vias = request.vias
        if len(vias) > 1 and any(self._via_is_us(v) for v in vias[1:]):
            ERRORS.labels("loop").inc()
            return self.reply(request, make_response(request, 482), dest)
        if trunk is not None:
            return self._new_request(request, dest, method, trunk)
        if method == "INVITE" and self.registrar is not None and dest.transport != LOCAL \
                and not request.authenticated:
            if self.sites is not None and self.sites.admit(request, dest):
                return self._new_request(request, dest, method)     # a site's server (sites.py)
            # Before anything looks at the number: every stranger gets the same answer.
            return self._admit(request, dest, method, self._new_request)
        self._new_request(request, dest, method)

    def _admit(self, request, dest, method, then):
        """
        `then(request, dest, method)` once `Registrar.admit_call` admits the
        sender, else its stateless answer (a 407 challenge or a 403; nothing
        for an ACK, which cannot be answered).
        """
        if self.registrar is None:
            return
        key = self._st_key(request, "INVITE" if method == "ACK" else method)
        if key in self.admitting:
            return      # retransmitted while its login waits out the throttle's delay
        verdict = self.registrar.admit_call(request, (dest.host, dest.port), dest.transport)
        if isinstance(verdict, defer.Deferred):
            self.admitting.add(key)

            def decided(answer):
                self.admitting.discard(key)
                self._admitted(request, dest, method, then, answer)
            verdict.addCallback(decided)
            return
        self._admitted(request, dest, method, then, verdict)

    def _admitted(self, request, dest, method, then, answer):
        if answer is None:
            return then(request, dest, method)
        if method == "ACK":
            if self.calls is not None and self.calls.knows(request.call_id):
                # The ACK of a call a WAN caller's credentials opened: ACKs carry none.
                request.authenticated = True
                return then(request, dest, method)
            return
        self.reply(request, answer, dest)

    def _new_request(self, request, dest, method, trunk=None):
        """A new request outside any dialog, its sender admitted: open its transaction and act."""
        if method == "REGISTER" and trunk is None:
            result = self.registrar.handle(request, (dest.host, dest.port), dest.transport)
            if isinstance(result, defer.Deferred):
                # A login the throttle holds back: its transaction absorbs retransmissions.
                result.addCallback(self.server_transaction(request, dest).respond)
            elif result.code == 401:
                # A challenge goes statelessly (as a proxy's digest challenge does): its
                # retransmitted REGISTER is challenged afresh, and a flood of REGISTERs
                # without credentials leaves nothing held for Timer J.
                self.reply(request, result, dest)
            else:
                self.answer(request, result, dest)
            return
        st = self.server_transaction(request, dest)
        if trunk is not None:
            # From a provider: only calls to the office's numbers and keep-alives.
            if method == "INVITE":
                if not _contact_is_sip(request):
                    return st.respond(make_response(request, 400, "Bad Request (Contact)",
                                                    to_tag=self.new_tag()))
                st.respond_code(100)
                return self.outside.inbound(request, st, dest, trunk)
            if method == "OPTIONS":
                return st.respond(make_response(request, 200, to_tag=self.new_tag(), extra=[
                    ("Allow", ALLOW), ("Accept", "application/sdp")]))
            return st.respond(make_response(request, 403, to_tag=self.new_tag()))
        if method == "INVITE":
            if not _contact_is_sip(request):
                # RFC 3261 8.1.1.8: the dialog's remote target, which our BYE would go to.
                return st.respond(make_response(request, 400, "Bad Request (Contact)",
                                                to_tag=self.new_tag()))
            st.respond_code(100)
            self.calls.invite(request, st, dest)
        elif method == "SUBSCRIBE" and self.mwi is not None:
            self.mwi.subscribe(request, st, dest)
        elif method == "OPTIONS":
            st.respond(make_response(request, 200, to_tag=self.new_tag(), extra=[
                ("Allow", ALLOW), ("Accept", "application/sdp")]))
        elif method in ("BYE", "INFO", "NOTIFY", "PRACK", "UPDATE"):
            st.respond_code(481)
        else:
            st.respond(make_response(request, 405, to_tag=self.new_tag(),
                                     extra=[("Allow", ALLOW)]))

    def _via_is_us(self, value):
        try:
            via = Via.parse(value)
        except SipParseError:
            return False
        return self.is_us(via.host, via.port) and via.branch.startswith(BRANCH_MAGIC + "aw")

    def _route_pop(self, request):
        route = request.get("Route")
        if route is None:
            return
        try:
            uri = SipUri.parse(NameAddr.parse(route).uri)
        except SipParseError:
            return
        if self.is_us(uri.host, uri.port):
            request.pop_first("Route")
            # A call between the LAN and the WAN record-routed us twice (one
            # entry for each side): both are ours.
            self._route_pop(request)

    def _in_dialog(self, request, dest):
        for part in (self.outside, self.sites):
            if part is not None and part.owns(request):
                st = None if request.method == "ACK" else self.server_transaction(request, dest)
                return part.in_dialog(request, st, dest)
        if self.ua is not None and self.ua.owns(request):
            st = None if request.method == "ACK" else self.server_transaction(request, dest)
            return self.ua.in_dialog(request, st, dest)
        if self.mwi is not None and self.mwi.owns(request):
            st = self.server_transaction(request, dest)
            return self.mwi.subscribe(request, st, dest)
        if dest.transport != LOCAL and not self.office.is_lan_peer(dest.host) \
                and not request.authenticated:
            # From a provider, inside no dialog of ours: never relayed on.
            if request.method != "ACK":
                self.reply(request, make_response(request, 481), dest)
            return
        return self.relay(request, dest)

    def relay(self, request, dest):
        """Forward an in-dialog request between phones along its route, statelessly."""
        route = request.get("Route")
        try:
            target = SipUri.parse(NameAddr.parse(route).uri if route else request.uri)
        except SipParseError:
            if request.method != "ACK":
                self.reply(request, make_response(request, 416), dest)
            return
        if self.is_us(target.host, target.port):
            if request.method != "ACK":
                self.reply(request, make_response(request, 481), dest)
            return
        mf = int(request.get("Max-Forwards", "70"))
        request.set("Max-Forwards", str(max(0, mf - 1)))
        found = self.registrar.destination_of(request.uri) if self.registrar else None
        to = Destination(*found) if found else None
        if to is None:
            to = Destination(target.params.get("transport", "udp").upper(), target.host,
                             target.port or 5060)
        branch = RELAY_BRANCH + hashlib.sha1(
            (request.top_via.branch + request.method + request.uri).encode()).hexdigest()[:16]
        if request.method == "CANCEL":
            branch = RELAY_BRANCH + hashlib.sha1(
                (request.top_via.branch + "INVITE" + request.uri).encode()).hexdigest()[:16]
        request.add("Via", self.via_for(to, branch), first=True)
        if self.calls is not None:
            self.calls.crossing(request, dest, to)
        self.send(request, to)
        if request.method == "BYE" and self.calls is not None:
            self.calls.ended(request.call_id)
