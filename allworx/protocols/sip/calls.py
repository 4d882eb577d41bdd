# -*- test-case-name: allworx.tests.sip.test_calls -*-
"""
Calls between extensions: the server is a forking, record-routing stateful
proxy (RFC 3261 section 16), and hands a call to its own voicemail user
agent when nobody answers.

Why a proxy for these: the phones on an office LAN reach each other
directly, so the SDP passes through untouched and the media flows phone to
phone, never through this process; a proxy keeps one dialog per call (what
the phones see is what they sent), so every SIP feature the phones share
(re-INVITE for hold, INFO, UPDATE) works without the server knowing it.
What a PBX needs beyond routing is met inside the proxy model: forking to
every registered phone with CANCEL of the others, the voicemail timer (the
proxy CANCELs the branches and lets the server's own UA answer, which is
just one more UAS behind the proxy), and call records (Record-Route keeps
the server on the path of BYE). Calls that leave the LAN are the B2BUA's
(outside.py): the router hands it what a phone dials after the outbound
prefix, and the B2BUA's inbound calls come back in here over the LOCAL
transport, so they ring phones by the same rules.

A `ForkedCall` keeps one server transaction towards the caller and one
client transaction per callee phone.
"""

import os

import attr
from prometheus_client import Counter, Gauge
from twisted.logger import Logger
from zope.interface import implementer

from allworx.interfaces import ICalls
from allworx.protocols.sip.core import FORK_BRANCH, LOCAL, Destination
from allworx.protocols.sip.dialplan import classify
from allworx.protocols.sip.history import CallEntry
from allworx.protocols.sip.message import NameAddr, Request, SipParseError, SipUri, make_response
from allworx.protocols.sip.nat import MediaAnchors, fix_contact, record_route
from allworx.protocols.sip.sites import site_for

log = Logger()

CALLS = Counter("allworx_sip_calls_total", "Calls between extensions, by outcome", ["outcome"])
ACTIVE = Gauge("allworx_sip_active_calls", "Calls ringing or in progress")

CANCEL_GUARD = 4.0      # seconds to wait for CANCELled phones before answering 487
MAX_FORWARDS = 3        # forwards followed for one call (no loops between users)


@attr.s(slots=True)
class CallRecord:
    """A call as the admin pages show it."""

    call_id = attr.ib()
    caller = attr.ib()
    callee = attr.ib()
    state = attr.ib()          # "ringing" | "answered" | "voicemail"
    started = attr.ib()
    # For the call history (internal calls only; outside calls keep their own).
    caller_name = attr.ib(default=None, metadata={"private": True})
    internal = attr.ib(default=False, metadata={"private": True})
    answered_at = attr.ib(default=None, metadata={"private": True})
    answered_by = attr.ib(default=None, metadata={"private": True})
    outcome = attr.ib(default=None, metadata={"private": True})


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

    def __init__(self, router, request, st, source, user, bindings, group=None, hunt_at=0):
        self.router = router
        self.core = router.core
        self.request = request
        self.st = st
        self.source = source
        self.user = user            # the user whose phones ring (None for a ring group)
        self.group = group          # the [group] ringing, if any
        self.hunt_at = hunt_at      # the member ringing, for a hunt group
        self.who = user.name if user is not None else "group %s" % group.name
        self.branches = []
        self.answered = False
        self.done = False
        self.caller_gone = False
        self.timer = None
        st.on_cancel = self.caller_cancelled
        media = router.media
        dests = [self.router.destination(b) for b in bindings]
        if any(media.crosses(source, d) for d in dests):
            # Between the LAN and a remote phone: the media goes through a relay.
            media.open(request.call_id)
        for b, dest in zip(bindings, dests):
            self.branches.append(Branch(b, self._copy_for(b, dest), dest))

    def _copy_for(self, binding, dest):
        req = self.request
        copy = Request(list(req.headers), req.body, method=req.method, uri=binding.contact)
        copy.set("Max-Forwards", str(int(req.get("Max-Forwards", "70")) - 1))
        copy.remove("Route")
        media = self.router.media
        if media.crosses(self.source, dest):
            # One entry for each side (RFC 5658): each phone reaches us at
            # the address of its own side; the remote phone's Contact names
            # where its packets come from.
            copy.add("Record-Route", record_route(self.core, self.source), first=True)
            copy.add("Record-Route", record_route(self.core, dest), first=True)
            if media.side(self.source) == "outside":
                fix_contact(copy, self.source)
            media.anchor(copy, self.source, dest)
        else:
            copy.add("Record-Route", "<sip:%s:%d;lr>" % (self.core.local_host(dest.host),
                                                         self.core.port), first=True)
        copy.add("Via", self.core.via_for(dest, FORK_BRANCH + os.urandom(8).hex()), first=True)
        return copy

    def _passing(self, branch, response):
        """A phone's 1xx/2xx on its way to the caller: the Contact and SDP of a remote phone's."""
        self.router.media.passing(response, branch.dest, self.source)
        return response

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
                self.st.respond(self._passing(branch, self._relay(response)))
            return
        if code < 300:
            branch.final = code
            if not self.answered and not self.done:
                self.answered = True
                self.done = True
                self._stop_timer()
                self.cancel_others(branch)
                self.router.answered(self.request.call_id, branch.binding.extension or branch.binding.user)
                CALLS.labels("answered").inc()
                if not self.router.media.crosses(branch.dest, self.source):
                    self.router.media.close(self.request.call_id)   # answered on the caller's side
                response = self._passing(branch, self._relay(response))
                if self.source.transport == LOCAL:
                    # For the B2BUA's call record: which extension took the outside call.
                    response.set("X-Allworx-Answered-By", branch.binding.extension or branch.binding.user)
                self.st.respond(response)
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
        log.info("call {call_id} to {who}: no phone took it ({codes})",
                 call_id=self.request.call_id, who=self.who, codes=codes)
        self.router.unanswered(self, "busy" if 486 in codes else "failed", codes)

    def no_answer(self):
        self.timer = None
        if self.done or self.caller_gone:
            return
        self.done = True
        log.info("call {call_id} to {who}: no answer", call_id=self.request.call_id, who=self.who)
        self.cancel_others(None)
        self.router.unanswered(self, "no_answer", [480])

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
        self.router.outcome(self.request.call_id, "missed")
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
        self.history = None        # ICallHistory: internal calls are kept there when they end
        # The relays of calls between the LAN and remote phones; the service
        # sets `media.factory` (it makes RelaySessions).
        self.media = MediaAnchors(office)

    @property
    def takes_messages(self):
        """Whether a call nobody takes can leave a message: only with a mail store."""
        return self.mail_store is not None

    def destination(self, binding):
        return Destination(binding.transport, binding.source[0], binding.source[1],
                           self.core.connections_get(*binding.source))

    def active_calls(self):
        return [attr.asdict(c, filter=lambda a, v: not a.metadata.get("private"))
                for c in self.calls.values()]

    def _record(self, request, callee, state, internal=False):
        name, number = caller_of(request, self.office.config)
        self.calls[request.call_id] = CallRecord(request.call_id, number or name, callee, state,
                                                 self.clock.seconds(), caller_name=name or None,
                                                 internal=internal)
        ACTIVE.set(len(self.calls))

    def answered(self, call_id, by=None):
        record = self.calls.get(call_id)
        if record is not None:
            record.state = "answered"
            record.answered_at = self.clock.seconds()
            record.answered_by = by

    def outcome(self, call_id, outcome):
        record = self.calls.get(call_id)
        if record is not None:
            record.outcome = outcome

    def knows(self, call_id):
        """True while a call of that Call-ID rings or runs through this router."""
        return call_id in self.calls or call_id in self.media.relays

    def crossing(self, message, source, to):
        """A message the core passes on in a dialog between phones (from `source` to `to`)."""
        self.media.passing(message, source, to)

    def ended(self, call_id):
        self.media.close(call_id)
        record = self.calls.pop(call_id, None)
        if record is None:
            return
        ACTIVE.set(len(self.calls))
        if record.internal and self.history is not None:
            self._keep(record)

    def _keep(self, record):
        """An internal call's entry in the call history."""
        now = self.clock.seconds()
        outcome = record.outcome or {"answered": "answered", "voicemail": "voicemail"}.get(
            record.state, "missed")
        answered_at = record.answered_at if outcome == "answered" else None
        try:
            self.history.record(CallEntry(
                id=record.call_id[:64], start=record.started, end=now, direction="internal",
                from_=record.caller, from_name=record.caller_name, to=record.callee,
                answered_by=record.answered_by if outcome == "answered" else None, trunk=None,
                duration_s=int(round(now - answered_at)) if answered_at else 0, outcome=outcome))
        except Exception:
            log.failure("call record of {call_id} not kept", call_id=record.call_id)

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
        # The router's local names (`voicemail-101`, `group-sales`, `attendant-main`):
        # the B2BUA's inside legs, and a phone the attendant transferred (REFER).
        if number.startswith("voicemail-"):
            user = config.user_by_extension(number[len("voicemail-"):])
            if user is not None:
                self._record(request, user.extension, "voicemail",
                             internal=source.transport != LOCAL)
                return self.to_voicemail(request, st, source, user)
        site = site_for(config, number)
        if site is not None and self.core.sites is not None:
            # Another office's extension: its server, over the tunnel (sites.py).
            self._record(request, number, "ringing", internal=source.transport != LOCAL)
            return self.core.sites.outbound(request, st, source, site, number)
        dialled = classify(number, config, config.users.get(request.caller or ""))
        if dialled is not None and dialled.kind in ("outside", "emergency"):
            if self.core.outside is None or source.transport == LOCAL or request.site is not None:
                return st.respond_code(404, to_tag=self.core.new_tag())
            CALLS.labels("outside").inc()
            self._record(request, dialled.number, "ringing")
            caller = config.users.get(request.caller or "")
            return self.core.outside.outbound(request, st, source, dialled.number, caller)
        group = None
        if number.startswith("group-"):
            group = config.groups.get(number[len("group-"):])
        elif dialled is not None and dialled.kind == "group":
            group = config.group_by_number(number)
        if group is not None:
            self._record(request, group.number, "ringing", internal=source.transport != LOCAL)
            return self.ring_group(request, st, source, group)
        attendant = None
        if number.startswith("attendant-"):
            attendant = config.attendants.get(number[len("attendant-"):])
        elif dialled is not None and dialled.kind == "attendant":
            attendant = config.attendant_by_number(number)
        if attendant is not None and getattr(self.core, "attendant", None) is not None:
            self._record(request, attendant.number or attendant.name, "answered",
                         internal=source.transport != LOCAL)
            return self.core.attendant.answer(request, st, source, attendant)
        if dialled is not None and dialled.kind == "extension":
            user = config.user_by_extension(dialled.number)
        else:
            user = self.target_user(request)
        if user is None:
            CALLS.labels("not_found").inc()
            log.info("call to unknown number {number}", number=number)
            return st.respond_code(404, to_tag=self.core.new_tag())
        self._record(request, user.extension or user.name, "ringing",
                     internal=source.transport != LOCAL)
        self.ring_user(request, st, source, user)

    # ------------------------------------------------------------ users and groups

    def _phones(self, user, source):
        """The user's registered phones, never the calling phone itself."""
        return [b for b in self.core.registrar.contacts_of(user.name)
                if b.source != (source.host, source.port)]

    def ring_user(self, request, st, source, user, hops=0):
        """Ring a user's phones, honouring forward_always and do-not-disturb."""
        config = self.office.config
        if getattr(user, "forward_always", None) and hops < MAX_FORWARDS:
            log.info("call to {user}: forwarded (always)", user=user.name)
            return self.forward(request, st, source, user, user.forward_always, hops)
        if getattr(user, "dnd", False):
            log.info("call to {user}: do not disturb", user=user.name)
            return self._unanswered_user(request, st, source, user, "busy", [486], hops)
        bindings = self._phones(user, source)
        if not bindings:
            log.info("call to {user}: no phone registered", user=user.name)
            return self._unanswered_user(request, st, source, user, "unavailable", [480], hops)
        call = ForkedCall(self, request, st, source, user, bindings)
        call.hops = hops
        call.start(config.sip.voicemail_timeout)

    def ring_group(self, request, st, source, group, at=0):
        """Ring a group: every member's phones at once, or one member after the other (hunt)."""
        config = self.office.config
        members = [config.user_by_extension(ext) for ext in group.members]
        members = [u for u in members if u is not None and not getattr(u, "dnd", False)]
        if group.strategy == "hunt":
            while at < len(members) and not self._phones(members[at], source):
                at += 1
            bindings = self._phones(members[at], source) if at < len(members) else []
        else:
            bindings = [b for u in members for b in self._phones(u, source)]
        if not bindings:
            return self.group_fallback(request, st, source, group, [480])
        call = ForkedCall(self, request, st, source, None, bindings, group=group, hunt_at=at)
        call.start(group.ring_timeout)

    def group_fallback(self, request, st, source, group, codes):
        if group.fallback is not None:
            log.info("call to group {group}: nobody answered; to {target}", group=group.name,
                     target=group.fallback)
            return self.route_target(request, st, source, group.fallback)
        return self._refuse(request, st, codes)

    def unanswered(self, call, why, codes):
        """Nobody took `call` (a ForkedCall): the next member, a fallback, forwarding or voicemail."""
        request, st, source = call.request, call.st, call.source
        self.media.close(request.call_id)
        group = call.group
        if group is not None:
            if group.strategy == "hunt":
                return self.ring_group(request, st, source, group, call.hunt_at + 1)
            return self.group_fallback(request, st, source, group, codes)
        return self._unanswered_user(request, st, source, call.user, why, codes,
                                     getattr(call, "hops", 0))

    def _unanswered_user(self, request, st, source, user, why, codes, hops=0):
        forward = getattr(user, "forward_busy", None) if why == "busy" else getattr(
            user, "forward_noanswer", None)
        if forward and hops < MAX_FORWARDS:
            log.info("call to {user}: forwarded ({why})", user=user.name, why=why)
            return self.forward(request, st, source, user, forward, hops)
        if self.takes_messages:
            return self.to_voicemail(request, st, source, user)
        return self._refuse(request, st, codes)

    def _refuse(self, request, st, codes):
        """No mailbox to take a message: the caller hears the phones' answer."""
        best = 486 if 486 in codes else min(codes)
        CALLS.labels("busy" if best == 486 else "failed").inc()
        self.outcome(request.call_id, "busy" if best == 486 else ("missed" if best == 480 else "failed"))
        st.respond(make_response(request, best, to_tag=self.core.new_tag()))
        self.ended(request.call_id)

    def forward(self, request, st, source, user, target, hops):
        """Send a call for `user` on to `target` (an extension, or an outside number the user pays for)."""
        config = self.office.config
        text = str(getattr(target, "value", target))
        other = config.user_by_extension(text)
        if other is not None:
            return self.ring_user(request, st, source, other, hops + 1)
        number = text if text.startswith("+") else None
        if number is None:
            dialled = classify(text, config, user)
            if dialled is not None and dialled.kind in ("outside", "emergency"):
                number = dialled.number
        if number is None or self.core.outside is None:
            log.warn("call to {user}: forwarding to {target} leads nowhere", user=user.name, target=text)
            return self._refuse(request, st, [404])
        return self.core.outside.outbound(request, st, source, number, user)

    def route_target(self, request, st, source, target):
        """Send the call to a TARGET of the config (a group's fallback)."""
        config = self.office.config
        try:
            target = config.resolve_target(target)
        except ValueError as e:
            log.warn("call {call_id}: {error}", call_id=request.call_id, error=str(e))
            return self._refuse(request, st, [404])
        if target.kind == "extension":
            user = config.user_by_extension(target.value)
            return self.ring_user(request, st, source, user, MAX_FORWARDS - 1)
        if target.kind == "voicemail":
            return self.to_voicemail(request, st, source, config.user_by_extension(target.value))
        if target.kind == "group":
            return self.ring_group(request, st, source, config.groups[target.value])
        attendant = getattr(self.core, "attendant", None)
        if target.kind == "attendant" and attendant is not None:
            return attendant.answer(request, st, source, config.attendants[target.value])
        return self._refuse(request, st, [480])

    def to_voicemail(self, request, st, source, user):
        if request.call_id in self.calls:
            self.calls[request.call_id].state = "voicemail"
        CALLS.labels("voicemail").inc()
        self.core.ua.deposit(request, st, source, user)
