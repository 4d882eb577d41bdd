# -*- test-case-name: allworx.tests.sip.test_calls -*-
"""
Calls between extensions: the server is a forking, record-routing stateful
proxy (RFC 3261 section 16), and hands a call to its own voicemail user
agent when nobody answers.

Why a proxy and not a B2BUA: the phones on an office LAN reach each other
directly, so the SDP passes through untouched and the media flows phone to
phone, never through this process; a proxy keeps one dialog per call (what
the phones see is what they sent), so every SIP feature the phones share
(re-INVITE for hold, INFO, UPDATE) works without the server knowing it.
What a PBX needs beyond routing is met inside the proxy model: forking to
every registered phone with CANCEL of the others, the voicemail timer (the
proxy CANCELs the branches and lets the server's own UA answer, which is
just one more UAS behind the proxy), and call records (Record-Route keeps
the server on the path of BYE). A B2BUA would earn its cost only for
features this product does not have (media anchoring, transfer rules,
billing between two legs).

A `ForkedCall` keeps one server transaction towards the caller and one
client transaction per callee phone.
"""

import os

import attr
from prometheus_client import Counter, Gauge
from twisted.logger import Logger
from zope.interface import implementer

from allworx.interfaces import ICalls
from allworx.protocols.sip.core import FORK_BRANCH, Destination
from allworx.protocols.sip.message import NameAddr, Request, SipParseError, SipUri, make_response

log = Logger()

CALLS = Counter("allworx_sip_calls_total", "Calls between extensions, by outcome", ["outcome"])
ACTIVE = Gauge("allworx_sip_active_calls", "Calls ringing or in progress")

CANCEL_GUARD = 4.0      # seconds to wait for CANCELled phones before answering 487


@attr.s(slots=True)
class CallRecord:
    """A call as the admin pages show it."""

    call_id = attr.ib()
    caller = attr.ib()
    callee = attr.ib()
    state = attr.ib()          # "ringing" | "answered" | "voicemail"
    started = attr.ib()


def caller_of(request, config):
    """(display name, number) of a request's caller; a known extension gets its user's name."""
    try:
        frm = NameAddr.parse(request.get("From", ""))
        user = SipUri.parse(frm.uri).user
    except SipParseError:
        return ("", "")
    known = config.user_by_extension(user) or config.users.get(user)
    if known is not None:
        return (known.full_name or known.name, known.extension or known.name)
    return (frm.display, user)


class Branch:
    """One forked copy of the INVITE towards one registered phone."""

    def __init__(self, binding, request, dest):
        self.binding = binding
        self.request = request
        self.dest = dest
        self.tx = None
        self.provisional = False
        self.final = None
        self.cancelled = False


class ForkedCall:
    """One INVITE forked to a callee's phones, with the voicemail timer."""

    def __init__(self, router, request, st, source, user, bindings):
        self.router = router
        self.core = router.core
        self.request = request
        self.st = st
        self.source = source
        self.user = user
        self.branches = []
        self.answered = False
        self.done = False
        self.caller_gone = False
        self.timer = None
        st.on_cancel = self.caller_cancelled
        for b in bindings:
            dest = self.router.destination(b)
            self.branches.append(Branch(b, self._copy_for(b, dest), dest))

    def _copy_for(self, binding, dest):
        req = self.request
        copy = Request(list(req.headers), req.body, method=req.method, uri=binding.contact)
        copy.set("Max-Forwards", str(int(req.get("Max-Forwards", "70")) - 1))
        copy.remove("Route")
        copy.add("Record-Route", "<sip:%s:%d;lr>" % (self.core.local_host(dest.host), self.core.port),
                 first=True)
        copy.add("Via", self.core.via_for(dest, FORK_BRANCH + os.urandom(8).hex()), first=True)
        return copy

    def start(self, timeout):
        for branch in self.branches:
            branch.tx = self.core.request(
                branch.request, branch.dest,
                on_response=lambda r, b=branch: self.branch_response(b, r),
                on_timeout=lambda b=branch: self.branch_failed(b, 408))
        self.timer = self.core.clock.callLater(timeout, self.no_answer)

    def _relay(self, response):
        response.pop_first("Via")
        return response

    def branch_response(self, branch, response):
        code = response.code
        if code < 200:
            branch.provisional = True
            if branch.cancelled:
                self._send_cancel(branch)
            elif code > 100 and not self.done:
                self.st.respond(self._relay(response))
            return
        if code < 300:
            branch.final = code
            if not self.answered and not self.done:
                self.answered = True
                self.done = True
                self._stop_timer()
                self.cancel_others(branch)
                self.router.answered(self.request.call_id)
                CALLS.labels("answered").inc()
                self.st.respond(self._relay(response))
            else:
                # A second phone answered too: its 2xx goes to the caller, who
                # will ACK and BYE that dialog (RFC 3261 16.7 step 5).
                self.core.send(self._relay(response), self.source)
            return
        self.branch_failed(branch, code)

    def branch_failed(self, branch, code):
        branch.final = code
        if self.done or any(b.final is None for b in self.branches):
            return
        self._stop_timer()
        if self.caller_gone:
            self._cancelled_final()
            return
        self.done = True
        codes = [b.final for b in self.branches]
        if not self.router.takes_messages:
            # No mailbox to take a message: the caller hears the phones' answer.
            best = 486 if 486 in codes else min(codes)
            log.info("call {call_id} to {user}: {code}, and no voicemail", code=best,
                     call_id=self.request.call_id, user=self.user.name)
            CALLS.labels("busy" if best == 486 else "failed").inc()
            self.st.respond(make_response(self.request, best, to_tag=self.core.new_tag()))
            self.router.ended(self.request.call_id)
            return
        log.info("call {call_id} to {user}: no phone took it ({codes}); voicemail",
                 call_id=self.request.call_id, user=self.user.name, codes=codes)
        self.router.to_voicemail(self.request, self.st, self.source, self.user)

    def no_answer(self):
        self.timer = None
        if self.done or self.caller_gone:
            return
        self.done = True
        log.info("call {call_id} to {user}: no answer; voicemail",
                 call_id=self.request.call_id, user=self.user.name)
        self.cancel_others(None)
        self.router.to_voicemail(self.request, self.st, self.source, self.user)

    def caller_cancelled(self):
        """
        The caller CANCELled: CANCEL the branches and answer 487 once they
        have all ended (a phone that answered meanwhile wins: its 200 goes
        to the caller, RFC 3261 16.10), or after a short guard time.
        """
        if self.done or self.caller_gone:
            return
        self.caller_gone = True
        self._stop_timer()
        self.cancel_others(None)
        if all(b.final is not None for b in self.branches):
            self._cancelled_final()
        else:
            self.timer = self.core.clock.callLater(CANCEL_GUARD, self._cancelled_final)

    def _cancelled_final(self):
        self.timer = None
        if self.done:
            return
        self._stop_timer()
        self.done = True
        CALLS.labels("cancelled").inc()
        self.st.respond(make_response(self.request, 487, to_tag=self.core.new_tag()))
        self.router.ended(self.request.call_id)

    def _stop_timer(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def cancel_others(self, winner):
        for branch in self.branches:
            if branch is winner or branch.final is not None or branch.cancelled:
                continue
            branch.cancelled = True
            if branch.provisional:
                self._send_cancel(branch)

    def _send_cancel(self, branch):
        """CANCEL a branch (only once it has answered provisionally, RFC 3261 9.1)."""
        if getattr(branch, "cancel_sent", False):
            return
        branch.cancel_sent = True
        req = branch.request
        cancel = Request([("Via", req.get("Via")), ("Max-Forwards", "70"),
                          ("From", req.get("From")), ("To", req.get("To")),
                          ("Call-ID", req.call_id), ("CSeq", "%d CANCEL" % req.cseq[0])],
                         method="CANCEL", uri=req.uri)
        self.core.request(cancel, branch.dest)


@implementer(ICalls)
class CallRouter:
    """
    Routes new INVITEs: to an extension's phones, to voicemail, or 404.
    `mail_store` is where voicemail goes (IMailStore); None when the server
    has no mailboxes.
    """

    def __init__(self, core, office, clock, mail_store):
        self.core = core
        self.office = office
        self.clock = clock
        self.mail_store = mail_store
        self.calls = {}            # call_id -> CallRecord

    @property
    def takes_messages(self):
        """Whether a call nobody takes can leave a message: only with a mail store."""
        return self.mail_store is not None

    def destination(self, binding):
        return Destination(binding.transport, binding.source[0], binding.source[1],
                           self.core.connections_get(*binding.source))

    def active_calls(self):
        return [attr.asdict(c) for c in self.calls.values()]

    def _record(self, request, callee, state):
        name, number = caller_of(request, self.office.config)
        self.calls[request.call_id] = CallRecord(request.call_id, number or name, callee, state,
                                                 self.clock.seconds())
        ACTIVE.set(len(self.calls))

    def answered(self, call_id):
        if call_id in self.calls:
            self.calls[call_id].state = "answered"

    def ended(self, call_id):
        if self.calls.pop(call_id, None) is not None:
            ACTIVE.set(len(self.calls))

    def target_user(self, request):
        """The user a Request-URI names by extension or by name, or None."""
        try:
            number = SipUri.parse(request.uri).user
        except SipParseError:
            return None
        config = self.office.config
        return config.user_by_extension(number) or config.users.get(number)

    def invite(self, request, st, source):
        """A new INVITE from a LAN phone."""
        config = self.office.config
        try:
            number = SipUri.parse(request.uri).user
        except SipParseError:
            return st.respond_code(416)
        if number == config.sip.voicemail_number:
            CALLS.labels("voicemail_menu").inc()
            self._record(request, "voicemail", "voicemail")
            return self.core.ua.retrieve(request, st, source)
        user = self.target_user(request)
        if user is None:
            CALLS.labels("not_found").inc()
            log.info("call to unknown number {number}", number=number)
            return st.respond_code(404, to_tag=self.core.new_tag())
        bindings = self.core.registrar.contacts_of(user.name)
        # Never ring the calling phone itself.
        bindings = [b for b in bindings if b.source != (source.host, source.port)]
        self._record(request, user.extension or user.name, "ringing")
        if not bindings:
            log.info("call to {user}: no phone registered; voicemail", user=user.name)
            return self.to_voicemail(request, st, source, user)
        call = ForkedCall(self, request, st, source, user, bindings)
        call.start(config.sip.voicemail_timeout)

    def to_voicemail(self, request, st, source, user):
        if request.call_id in self.calls:
            self.calls[request.call_id].state = "voicemail"
        CALLS.labels("voicemail").inc()
        self.core.ua.deposit(request, st, source, user)
