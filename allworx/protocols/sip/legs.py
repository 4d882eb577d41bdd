# -*- test-case-name: allworx.tests.sip.test_outside -*-
"""
The dialogs the server holds as a user agent on each side of a call it
bridges (a call to or from an outside line: `outside.py`).

A `Leg` is one dialog (RFC 3261 12): Call-ID, the two tags, the remote
target, the route set and the CSeq counters; it sends BYE, re-INVITE and
INFO inside the dialog and passes what the far end sends to its owner.
`UacLeg` is a dialog the server starts (an INVITE it sends: to the provider,
or through its own call router to the phones), answering a 401/407 once when
it has credentials, ACKing the 2xx (again for each retransmission) and
CANCELling when asked before the answer. `UasLeg` is a dialog the far end
started (the INVITE of a phone dialling out, or of the provider calling in):
provisional answers, the 2xx retransmitted until the ACK (RFC 3261 13.3.1.4),
and refusals.

The owner receives `leg_progress(leg, response)`, `leg_answered(leg,
response)`, `leg_failed(leg, code, reason)`, `leg_acked(leg)`,
`leg_ended(leg, why)`, `leg_reinvite(leg, request, st)`, `leg_info(leg,
request)` and `leg_refer(leg, request, st)`.
"""

import os

from twisted.logger import Logger

from allworx.protocols.sip.digest import answer
from allworx.protocols.sip.message import NameAddr, Request, SipParseError, SipUri, make_response
from allworx.protocols.sip.transaction import T1, T2

log = Logger()

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY"


def with_tag(value, tag):
    """A From/To value with `tag` set (replacing any tag it had)."""
    addr = NameAddr.parse(value)
    params = dict(addr.params)
    params["tag"] = tag
    return NameAddr(addr.display, addr.uri, params).format()


class Leg:
    """One dialog of the server's (see the module's docstring)."""

    def __init__(self, core, owner, dest):
        self.core = core
        self.owner = owner
        self.dest = dest            # where our in-dialog requests are sent
        self.call_id = None
        self.local_tag = core.new_tag()
        self.remote_tag = None
        self.local_addr = None      # our From (UAC) or To (UAS) value, without tag
        self.remote_addr = None
        self.remote_target = None
        self.route_set = []
        self.cseq = 0
        self.state = "early"        # early | confirmed | ended
        self.contact = None
        self.sdp = None             # the far end's last SDP
        self.ended_why = None

    @property
    def key(self):
        return (self.call_id, self.local_tag)

    # ------------------------------------------------------------ requests of ours

    def new_request(self, method, body=b"", content_type=None, extra=()):
        self.cseq += 1
        headers = [("Via", self.core.via_for(self.dest)), ("Max-Forwards", "70")]
        headers += [("Route", r) for r in self.route_set]
        headers += [("From", with_tag(self.local_addr, self.local_tag)),
                    ("To", with_tag(self.remote_addr, self.remote_tag) if self.remote_tag
                     else self.remote_addr),
                    ("Call-ID", self.call_id), ("CSeq", "%d %s" % (self.cseq, method))]
        if method in ("INVITE", "REFER", "UPDATE", "SUBSCRIBE", "NOTIFY"):
            headers.append(("Contact", self.contact))
        headers += list(extra)
        if body:
            headers.append(("Content-Type", content_type or "application/sdp"))
        return Request(headers, body, method=method, uri=self.remote_target)

    def send(self, method, body=b"", content_type=None, extra=(), on_response=None):
        """Send a request inside the dialog; `on_response(response or None)` gets its final answer."""
        request = self.new_request(method, body, content_type, extra)

        def answered(response):
            if response.code >= 200 and on_response is not None:
                on_response(response)
        self.core.request(request, self.dest, on_response=answered,
                          on_timeout=lambda: on_response and on_response(None))
        return request

    def bye(self, why="we hung up"):
        """End the dialog from our side (BYE once confirmed; a UAC leg CANCELs before)."""
        if self.state == "ended":
            return
        if self.state == "confirmed":
            self.send("BYE")
        self._end(why)

    def _end(self, why):
        if self.state != "ended":
            self.state = "ended"
            self.ended_why = why
            self.stopped()

    def stopped(self):
        """The dialog is over: subclasses stop their timers."""

    # ------------------------------------------------------------ requests of theirs

    def in_dialog(self, request, st):
        """A request the far end sent inside this dialog (st is None for ACK)."""
        method = request.method
        if method == "ACK":
            return self.acked()
        if self.state == "ended":
            return st.respond(make_response(request, 481))
        if method == "BYE":
            st.respond(make_response(request, 200))
            self._end("they hung up")
            self.owner.leg_ended(self, "they hung up")
        elif method == "INVITE":
            if request.body:
                self.sdp = request.body
            self._refresh_target(request)
            self.owner.leg_reinvite(self, request, st)
        elif method == "INFO":
            st.respond(make_response(request, 200))
            self.owner.leg_info(self, request)
        elif method == "REFER":
            self.owner.leg_refer(self, request, st)
        elif method in ("OPTIONS", "UPDATE", "NOTIFY"):
            st.respond(make_response(request, 200, extra=[("Allow", ALLOW)]))
        else:
            st.respond(make_response(request, 405, extra=[("Allow", ALLOW)]))

    def acked(self):
        """An ACK arrived (UAS legs care)."""

    def _refresh_target(self, message):
        contact = message.get("Contact")
        if contact:
            try:
                self.remote_target = NameAddr.parse(contact).uri
            except SipParseError:
                pass

    def answer_reinvite(self, request, st, body):
        """Accept a re-INVITE with our SDP `body`."""
        ok = make_response(request, 200, extra=[("Contact", self.contact), ("Allow", ALLOW),
                                                ("Content-Type", "application/sdp")])
        ok.body = body
        st.respond(ok)


class UacLeg(Leg):
    """
    A dialog the server starts with an INVITE to `uri` at `dest`. `from_` and
    `to` are the From and To values (without tag); `credentials` is
    (username, password) for a 401/407, answered once per INVITE.
    """

    def __init__(self, core, owner, dest, uri, from_, to, contact, body, extra=(),
                 credentials=None, call_id=None):
        Leg.__init__(self, core, owner, dest)
        self.call_id = call_id or os.urandom(10).hex()
        self.remote_target = uri
        self.local_addr = from_
        self.remote_addr = to
        self.contact = contact
        self.offer = body
        self.extra = list(extra)
        self.credentials = credentials
        self.auth_answered = False
        self.tx = None
        self.invite = None
        self.provisional = False
        self.cancelled = False
        self.cancel_sent = False
        self.ack = None
        self.answer = None

    def start(self):
        self._send_invite(())

    def _send_invite(self, auth):
        self.invite = self.new_request("INVITE", self.offer, extra=self.extra + [("Allow", ALLOW)] + list(auth))
        self.provisional = False
        self.tx = self.core.request(self.invite, self.dest, on_response=self._response,
                                    on_timeout=lambda: self._failed(408, "Request Timeout"))

    def _response(self, response):
        code = response.code
        if self.state == "ended" and not (200 <= code < 300):
            return
        if code < 200:
            self.provisional = True
            if self.cancelled:
                self._send_cancel()
            elif code > 100:
                if response.body:
                    self.sdp = response.body
                self.owner.leg_progress(self, response)
            return
        if code < 300:
            return self._answered(response)
        if code in (401, 407) and self.credentials and not self.auth_answered and not self.cancelled:
            header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
            challenge = response.get(header)
            if challenge:
                self.auth_answered = True
                user, password = self.credentials
                value = answer(challenge, "INVITE", self.remote_target, user, password)
                name = "Authorization" if code == 401 else "Proxy-Authorization"
                return self._send_invite([(name, value)])
        self._failed(code, response.reason)

    def _failed(self, code, reason):
        if self.state == "ended":
            return
        self._end("failed %d" % code)
        if not self.cancelled:
            self.owner.leg_failed(self, code, reason)

    def _answered(self, response):
        first = self.remote_tag is None or self.state == "early"
        if first:
            self.remote_tag = response.to_tag
            self.route_set = list(reversed(response.get_all("Record-Route")))
            self._refresh_target(response)
            self.sdp = response.body or self.sdp
            self.answer = response
        self._send_ack()
        if not first:
            return
        if self.cancelled or self.state == "ended":
            # Answered after we gave up: take the dialog and end it at once.
            self.state = "confirmed"
            self.bye("answered after cancel")
            return
        self.state = "confirmed"
        self.owner.leg_answered(self, response)

    def _send_ack(self):
        if self.ack is None:
            headers = [("Via", self.core.via_for(self.dest)), ("Max-Forwards", "70")]
            headers += [("Route", r) for r in self.route_set]
            headers += [("From", with_tag(self.local_addr, self.local_tag)),
                        ("To", with_tag(self.remote_addr, self.remote_tag)),
                        ("Call-ID", self.call_id), ("CSeq", "%d ACK" % self.invite.cseq[0])]
            self.ack = Request(headers, method="ACK", uri=self.remote_target)
        self.core.send(self.ack, self.dest)

    def retransmitted(self, response):
        """A 2xx to our INVITE came again (our ACK was lost): ACK it again."""
        if self.ack is not None and response.cseq[0] == self.invite.cseq[0]:
            self.core.send(self.ack, self.dest)

    def cancel(self):
        """Give up before the answer (CANCEL once a provisional answer came, RFC 3261 9.1)."""
        if self.state != "early" or self.cancelled:
            return
        self.cancelled = True
        if self.provisional:
            self._send_cancel()

    def _send_cancel(self):
        if self.cancel_sent:
            return
        self.cancel_sent = True
        req = self.invite
        cancel = Request([("Via", req.get("Via")), ("Max-Forwards", "70"),
                          ("From", req.get("From")), ("To", req.get("To")),
                          ("Call-ID", req.call_id), ("CSeq", "%d CANCEL" % req.cseq[0])]
                         + [("Route", r) for r in req.get_all("Route")],
                         method="CANCEL", uri=req.uri)
        self.core.request(cancel, self.dest)

    def bye(self, why="we hung up"):
        if self.state == "early":
            self.cancel()
            self._end(why)
            return
        Leg.bye(self, why)


class UasLeg(Leg):
    """A dialog the far end started with `request`, answered through its server transaction `st`."""

    def __init__(self, core, owner, request, st, source, contact):
        Leg.__init__(self, core, owner, source)
        self.request = request
        self.st = st
        self.call_id = request.call_id
        self.remote_tag = request.from_tag
        self.local_addr = request.get("To")
        self.remote_addr = request.get("From")
        self.remote_target = request.uri
        self._refresh_target(request)
        self.route_set = list(request.get_all("Record-Route"))
        self.contact = contact
        self.sdp = request.body
        self.ok = None
        self.is_acked = False
        self.retransmit_call = None
        self.interval = T1
        self.answered_at = None
        st.on_cancel = self._cancelled

    def _cancelled(self):
        if self.state != "early":
            return
        self.st.respond(make_response(self.request, 487, to_tag=self.local_tag))
        self._end("cancelled")
        self.owner.leg_ended(self, "cancelled")

    def progress(self, code=180, body=b""):
        if self.state != "early":
            return
        extra = [("Contact", self.contact)]
        if body:
            extra.append(("Content-Type", "application/sdp"))
        response = make_response(self.request, code, to_tag=self.local_tag, extra=extra)
        response.body = body
        self.st.respond(response)

    def accept(self, body):
        """Answer 200 with our SDP; retransmitted until the ACK."""
        if self.state != "early":
            return
        ok = make_response(self.request, 200, to_tag=self.local_tag, extra=[
            ("Contact", self.contact), ("Allow", ALLOW), ("Content-Type", "application/sdp")])
        ok.body = body
        self.ok = ok
        self.state = "confirmed"
        self.answered_at = self.core.clock.seconds()
        self.st.respond(ok)
        if self.dest.transport == "UDP":
            self.retransmit_call = self.core.clock.callLater(self.interval, self._retransmit_ok)

    def reject(self, code, reason=None, extra=()):
        if self.state != "early":
            return
        self.st.respond(make_response(self.request, code, reason, to_tag=self.local_tag, extra=extra))
        self._end("refused %d" % code)

    def _retransmit_ok(self):
        self.retransmit_call = None
        if self.is_acked or self.state == "ended":
            return
        left = self.answered_at + 64 * T1 - self.core.clock.seconds()
        if left <= 1e-9:
            log.info("call {call_id}: no ACK for our 200", call_id=self.call_id)
            self.bye("no ACK")
            self.owner.leg_ended(self, "no ACK")
            return
        self.core.send(self.ok, self.dest)
        self.interval = min(self.interval * 2, T2)
        self.retransmit_call = self.core.clock.callLater(min(self.interval, left), self._retransmit_ok)

    def acked(self):
        if self.is_acked or self.ok is None:
            return
        self.is_acked = True
        self._stop_retransmit()
        self.owner.leg_acked(self)

    def _stop_retransmit(self):
        if self.retransmit_call is not None and self.retransmit_call.active():
            self.retransmit_call.cancel()
        self.retransmit_call = None

    def stopped(self):
        self._stop_retransmit()


def uri_user(uri):
    """The user part of a SIP URI text, or '' when it does not parse."""
    try:
        return SipUri.parse(uri).user
    except SipParseError:
        return ""


class LegBook:
    """
    The core's in-dialog questions for a B2BUA whose `legs` map (Call-ID,
    our tag) to its legs: outside lines and calls to other sites share them.
    """

    def owns(self, request):
        return (request.call_id, request.to_tag) in self.legs

    def in_dialog(self, request, st, source):
        leg = self.legs.get((request.call_id, request.to_tag))
        if leg is not None:
            leg.in_dialog(request, st)

    def stray_response(self, response):
        """A 2xx of our INVITE retransmitted after its transaction ended (our ACK was lost): ACK it again."""
        if response.cseq[1] != "INVITE" or not 200 <= response.code < 300:
            return
        leg = self.legs.get((response.call_id, response.from_tag))
        if leg is not None and hasattr(leg, "retransmitted"):
            leg.retransmitted(response)
