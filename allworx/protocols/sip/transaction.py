# -*- test-case-name: allworx.tests.sip.test_transaction -*-
"""
SIP transactions (RFC 3261 section 17) on an injected clock: retransmission
over UDP and the timers A-K, so the rest of the server speaks in requests and
final answers and never counts retransmissions itself.

Each transaction is a small state machine whose states are those of the
RFC's figures 5-8 (calling/trying, proceeding, completed, confirmed,
terminated). A transaction sends through a `send(message)` callable given by
the transport layer and reports to its user through callbacks.

Unlike the voicemail menu (automat), these machines are written as a state
attribute and one method per event: every SIP message crosses one, so they
are on the hot path measured by bench/sip.py, and each has only the few
transitions of its RFC figure, each commented by the timer it starts.
"""

from twisted.logger import Logger

from allworx.protocols.sip.message import Request, make_response

log = Logger()

T1 = 0.5
T2 = 4.0
T4 = 5.0


def _nothing(*args):
    """What a terminated transaction's callbacks become."""


class _Timers:
    """Named delayed calls on an IReactorTime, cancelled as a group."""

    def __init__(self, clock):
        self.clock = clock
        self.calls = {}

    def start(self, name, delay, fn):
        self.stop(name)
        self.calls[name] = self.clock.callLater(delay, self._fire, name, fn)

    def _fire(self, name, fn):
        self.calls.pop(name, None)
        fn()

    def stop(self, name):
        call = self.calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def stop_all(self):
        for name in list(self.calls):
            self.stop(name)


class ClientTransaction:
    """
    An INVITE (timers A, B, D) or non-INVITE (timers E, F, K) client
    transaction. `on_response(response)` gets each response the user must
    see (provisional and the first final one); `on_timeout()` is called when
    no final response came in time (B or F). The transaction ACKs non-2xx
    finals of an INVITE itself.
    """

    def __init__(self, request, send, clock, reliable=False, on_response=None,
                 on_timeout=None, on_terminated=None):
        self.request = request
        self.send = send
        self.reliable = reliable
        self.on_response = on_response or (lambda r: None)
        self.on_timeout = on_timeout or (lambda: None)
        self.on_terminated = on_terminated or (lambda: None)
        self.timers = _Timers(clock)
        self.invite = request.method == "INVITE"
        self.state = "calling" if self.invite else "trying"
        self.interval = T1
        self.ack = None
        self.final = None

    @property
    def key(self):
        return (self.request.top_via.branch, self.request.method)

    def start(self):
        self.send(self.request)
        if not self.reliable:
            self.timers.start("A/E", self.interval, self._retransmit)
        self.timers.start("B/F", 64 * T1, self._timeout)

    def _retransmit(self):
        if self.state not in ("calling", "trying", "proceeding") or (self.invite and self.state == "proceeding"):
            return
        self.send(self.request)
        if self.invite:
            self.interval *= 2
        else:
            self.interval = min(self.interval * 2, T2) if self.state == "trying" else T2
        self.timers.start("A/E", self.interval, self._retransmit)

    def _timeout(self):
        if self.state in ("calling", "trying", "proceeding"):
            on_timeout = self.on_timeout
            self._terminate()
            on_timeout()

    def receive(self, response):
        """A response whose Via branch and CSeq method match this transaction."""
        code = response.code
        if self.state in ("calling", "trying", "proceeding"):
            if code < 200:
                if self.state != "proceeding":
                    self.state = "proceeding"
                    if self.invite:
                        self.timers.stop("A/E")
                self.on_response(response)
                return
            self.final = response
            if self.invite and code < 300:
                on_response = self.on_response
                self._terminate()
                on_response(response)
                return
            if self.invite:
                self.ack = self._make_ack(response)
                self.send(self.ack)
            self.state = "completed"
            self.timers.stop("A/E")
            self.timers.stop("B/F")
            wait = 0 if self.reliable else (32.0 if self.invite else T4)
            self.timers.start("D/K", wait, self._terminate)
            self.on_response(response)
        elif self.state == "completed" and self.invite and code >= 300:
            self.send(self.ack)      # the final was retransmitted: our ACK was lost

    def _make_ack(self, response):
        """ACK for a non-2xx final (RFC 3261 17.1.1.3)."""
        req = self.request
        headers = [("Via", req.get("Via"))]
        for name in ("Route",):
            headers += [(name, v) for v in req.get_all(name)]
        headers += [("Max-Forwards", "70"), ("From", req.get("From")),
                    ("To", response.get("To")), ("Call-ID", req.call_id),
                    ("CSeq", "%d ACK" % req.cseq[0])]
        return Request(headers, method="ACK", uri=req.uri)

    def _terminate(self):
        if self.state == "terminated":
            return
        self.state = "terminated"
        self.timers.stop_all()
        on_terminated = self.on_terminated
        # The user's callbacks lead back to it (a call holds its transactions):
        # let go of them, so that both are freed when the last reference goes
        # and not left, a hundred objects a call, to the cyclic collector.
        self.on_response = self.on_timeout = self.on_terminated = _nothing
        on_terminated()


class ServerTransaction:
    """
    An INVITE (timers G, H, I) or non-INVITE (timer J) server transaction.
    Its user calls `respond(response)`; retransmitted requests are answered
    with the last response. `on_ack()` is told of the ACK to a non-2xx final.
    """

    def __init__(self, request, send, clock, reliable=False, on_terminated=None):
        self.request = request
        self.send = send
        self.reliable = reliable
        self.on_terminated = on_terminated or (lambda: None)
        self.on_ack = lambda: None
        self.timers = _Timers(clock)
        self.invite = request.method == "INVITE"
        self.state = "proceeding" if self.invite else "trying"
        self.last = None
        self.interval = T1
        self.cancelled = False
        # When set, a completed non-INVITE transaction hands its final
        # response to `keep_final(response)` and ends: the owner answers the
        # retransmissions for Timer J from a compact table instead.
        self.keep_final = None

    def respond(self, response):
        """Send a response (the transaction's rules say when it ends)."""
        if self.state in ("completed", "confirmed", "terminated"):
            return
        self.last = response
        self.send(response)
        code = response.code
        if code < 200:
            self.state = "proceeding"
            return
        if self.invite and code < 300:
            # 2xx: the UA core (or the far end, for a proxy) retransmits it.
            self._terminate()
            return
        self.state = "completed"
        if self.invite:
            if not self.reliable:
                self.timers.start("G", self.interval, self._retransmit)
            self.timers.start("H", 64 * T1, self._terminate)
        elif self.keep_final is not None and not self.reliable:
            self.keep_final(response)
            self._terminate()
        else:
            self.timers.start("J", 0 if self.reliable else 64 * T1, self._terminate)

    def respond_code(self, code, reason=None, to_tag=None, extra=()):
        self.respond(make_response(self.request, code, reason, to_tag, extra))

    def _retransmit(self):
        if self.state != "completed":
            return
        self.send(self.last)
        self.interval = min(self.interval * 2, T2)
        self.timers.start("G", self.interval, self._retransmit)

    def retransmission(self):
        """The client sent the request again: repeat our last response."""
        if self.last is not None and self.state in ("proceeding", "trying", "completed"):
            self.send(self.last)

    def ack(self):
        """The ACK for our non-2xx final arrived."""
        if self.state == "completed" and self.invite:
            self.state = "confirmed"
            self.timers.stop("G")
            self.timers.stop("H")
            self.timers.start("I", 0 if self.reliable else T4, self._terminate)
            self.on_ack()

    def _terminate(self):
        if self.state == "terminated":
            return
        self.state = "terminated"
        self.timers.stop_all()
        on_terminated = self.on_terminated
        # As a client transaction's: what its user set refers back to it.
        self.on_terminated = self.on_ack = _nothing
        self.keep_final = self.on_cancel = None
        on_terminated()
