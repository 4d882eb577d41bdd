# -*- test-case-name: allworx.tests.sip.test_outside -*-
"""
Calls that leave the LAN: the server is a back-to-back user agent (B2BUA)
between the phone side and the provider, and anchors the media.

Why a B2BUA here when calls between phones are proxied (docs/SIP.md): the
phones sit on private addresses behind the server's NAT and the provider
sees only the WAN address, so the SDP must name the server's own ports on
each side; the provider's dialog carries the office's caller ID, its
credentials and its own CSeq space, which a proxy would have to patch into
every request of the phone's dialog; and holding the outside caller with
music, transferring them, or counting a trunk's channels all act on one
side only. Two dialogs (`legs.py`) joined by an `OutsideCall`, with an RTP
relay session between them, make each of those a local matter.

Inbound, the inside leg is an INVITE the B2BUA sends through the server's
own call router (over the in-process "LOCAL" transport of the core), so an
outside caller reaches extensions, ring groups, the attendant and voicemail
by exactly the rules an inside caller does.
"""

import os

from twisted.logger import Logger

from allworx.guards import ClientRateLimit
from allworx.protocols.sip.core import LOCAL, Destination
from allworx.protocols.sip.dialplan import EMERGENCY, for_provider, from_provider
from allworx.protocols.sip.history import CallEntry
from allworx.protocols.sip.legs import LegBook, UacLeg, UasLeg, uri_user
from allworx.protocols.sip.message import NameAddr, SipParseError, SipUri, make_response
from allworx.protocols.sip.transfer import Transfer
from allworx.protocols.voice.sdp import SdpError, parse_offer, rewrite_sdp, sdp_direction

log = Logger()

MEDIA_TIMEOUT = 60.0      # seconds without RTP either way: the call is dead
# Toll-fraud guard: outside calls one user may start, as a token bucket (a
# burst of OUTBOUND_BURST, then one every 60/OUTBOUND_PER_MINUTE seconds).
# Emergency numbers are never limited.
OUTBOUND_PER_MINUTE = 6
OUTBOUND_BURST = 10
WATCH_EVERY = 10.0
PASSED_CODES = (404, 480, 486, 503, 600, 603, 403, 484, 488)


def set_direction(body, direction, version):
    """`body` (SDP) with its direction attribute set and the o= version set to `version`."""
    out = []
    for line in body.decode("utf-8", "replace").splitlines():
        if line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            continue
        if line.startswith("o="):
            parts = line.split()
            if len(parts) >= 6:
                parts[2] = str(version)
                line = " ".join(parts)
        out.append(line)
    out.append("a=" + direction)
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


ANSWER_DIRECTION = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive",
                    "sendrecv": "sendrecv"}


class OutsideCall:
    """
    One call bridged between `inside` and `outside` legs. `caller` is the
    leg that sent the first INVITE (the other one is started by us).
    """

    def __init__(self, b2b, direction, trunk, relay, record):
        self.b2b = b2b
        self.core = b2b.core
        self.direction = direction          # "inbound" | "outbound"
        self.trunk = trunk
        self.relay = relay
        self.record = record                # dict of the call record's fields
        self.caller = None
        self.callee = None
        self.inside = None
        self.outside = None
        self.started = self.core.clock.seconds()
        self.answered_at = None
        self.done = False
        self.watchdog = None
        self.sdp_version = {}
        self.held = False
        self.legs = []                      # every dialog of the call, old inside legs too
        # Where the inside party reaches the relay: the LAN address, or the WAN
        # address for a remote phone ([sip] wan) dialling out.
        self.inside_host = b2b.lan_host
        self.transfer = None                # the REFER being carried out (transfer.py)

    # ------------------------------------------------------------ addresses

    def side_of(self, leg):
        return "inside" if leg is self.inside else "outside"

    def other(self, leg):
        return self.outside if leg is self.inside else self.inside

    def our_sdp(self, leg, body):
        """The SDP we show `leg`: `body` (the other side's) with our relay address for that side."""
        if leg is self.inside:
            return rewrite_sdp(body, self.inside_host, self.relay.inside_port)
        return rewrite_sdp(body, self.b2b.wan_host, self.relay.outside_port)

    def learn(self, leg, body):
        """The far end of `leg` named its media address in `body`."""
        try:
            offer = parse_offer(body)
        except SdpError:
            return
        if leg is self.inside:
            self.relay.expect_inside(offer.host, offer.port)
        else:
            self.relay.expect_outside(offer.host, offer.port)

    @staticmethod
    def payload_type(leg):
        """The G.711 payload type the far end of `leg` offered first (PCMU when unknown)."""
        try:
            return parse_offer(leg.sdp or b"").payload_type
        except SdpError:
            return 0

    # ------------------------------------------------------------ the legs' events

    def leg_progress(self, leg, response):
        if leg is not self.callee or self.done:
            return
        body = b""
        if response.body:
            self.learn(leg, response.body)
            body = self.our_sdp(self.caller, response.body)
        code = response.code if response.code in (180, 181, 182, 183) else 183
        if code == 183 and not body:
            code = 180
        self.caller.progress(code, body)

    def leg_answered(self, leg, response):
        if leg is not self.callee or self.done:
            leg.bye("call already over")
            return
        self.learn(leg, leg.sdp or b"")
        self.answered_at = self.core.clock.seconds()
        answered_by = response.get("X-Allworx-Answered-By")
        contact_user = ""
        try:
            contact_user = SipUri.parse(NameAddr.parse(response.get("Contact", "")).uri).user
        except SipParseError:
            pass
        if self.direction == "inbound":
            if contact_user == "voicemail":
                self.record["outcome"] = "voicemail"
            else:
                self.record["outcome"] = "answered"
                self.record["answered_by"] = answered_by
        else:
            self.record["outcome"] = "answered"
            self.record["answered_by"] = self.record["to"]
        self.caller.accept(self.our_sdp(self.caller, leg.sdp or b""))
        self.watchdog = self.core.clock.callLater(WATCH_EVERY, self._watch)
        log.info("outside call {call_id}: answered", call_id=self.caller.call_id)

    def leg_acked(self, leg):
        pass

    def leg_failed(self, leg, code, reason):
        if self.done:
            return
        if leg is self.callee:
            answer = code if code in PASSED_CODES else (503 if code >= 500 or code in (401, 407, 408) else code)
            self.record["outcome"] = "busy" if code in (486, 600) else (
                "missed" if code in (480, 487, 408) else "failed")
            log.info("outside call {call_id}: {code} {reason} from the {side}", call_id=self.caller.call_id,
                     code=code, reason=reason, side=self.side_of(leg))
            self.caller.reject(answer, reason if answer == code else None)
        self.finish("failed %d" % code)

    def leg_ended(self, leg, why):
        if self.done or leg not in (self.inside, self.outside):
            return      # a leg the call has let go (transferred away)
        if leg is self.inside and self.transfer is not None:
            self.transfer.referrer_ended()
            return
        if why == "cancelled" and self.answered_at is None:
            self.record["outcome"] = "missed"
        other = self.other(leg)
        if other is not None:
            other.bye(why)
        self.finish(why)

    def leg_reinvite(self, leg, request, st):
        body = request.body
        if body:
            direction = sdp_direction(body)
            self.learn(leg, body)
            held = direction in ("sendonly", "inactive")
            if leg is self.inside and held != self.held:
                self.held = held
                if held:
                    self.relay.hold("outside", self.b2b.music(self.payload_type(self.outside)))
                else:
                    self.relay.resume("outside")
            version = self.sdp_version.get(self.side_of(leg), 1) + 1
            self.sdp_version[self.side_of(leg)] = version
            other = self.other(leg)
            source = (other.sdp if other is not None and other.sdp else body)
            answer = set_direction(self.our_sdp(leg, source), ANSWER_DIRECTION[direction], version)
        else:
            other = self.other(leg)
            answer = self.our_sdp(leg, other.sdp if other is not None and other.sdp else b"")
        leg.answer_reinvite(request, st, answer)

    def leg_info(self, leg, request):
        other = self.other(leg)
        if other is not None and other.state == "confirmed" and request.body:
            other.send("INFO", request.body, request.get("Content-Type"))

    def leg_refer(self, leg, request, st):
        if leg is not self.inside or self.answered_at is None:
            return st.respond(make_response(request, 403, "Forbidden (only the office side transfers)"))
        if self.transfer is not None:
            return st.respond(make_response(request, 491, "Request Pending"))
        self.transfer = Transfer(self, leg, request)
        self.transfer.start(st)

    # ------------------------------------------------------------ transfer

    def adopt(self, leg):
        self.legs.append(leg)
        self.b2b.adopt(leg)

    def party(self):
        """(number, name) of the outside party."""
        if self.direction == "inbound":
            return self.record["from"], self.record["from_name"] or self.record["from"]
        return self.record["to"], self.record["to"]

    def transferred(self, transfer, leg, response):
        """The transfer's new leg answered: it becomes the inside leg."""
        self.transfer = None
        leg.owner = self
        if self.callee is self.inside:
            self.callee = leg
        else:
            self.caller = leg
        self.inside = leg
        self.learn(leg, leg.sdp or b"")
        if self.held:
            self.held = False
            self.relay.resume("outside")
        by = response.get("X-Allworx-Answered-By")
        if by:
            self.record["answered_by"] = by

    def transfer_failed(self, transfer):
        self.transfer = None
        if transfer.referrer_gone:
            self.hang_up("transfer failed")

    # ------------------------------------------------------------ life

    def _watch(self):
        self.watchdog = None
        if self.done:
            return
        idle = self.relay.idle_for(self.core.clock.seconds())
        if idle > MEDIA_TIMEOUT and not self.held:
            log.info("outside call {call_id}: no media for {s:.0f} s; hanging up",
                     call_id=self.caller.call_id, s=idle)
            self.hang_up("no media")
            return
        self.watchdog = self.core.clock.callLater(WATCH_EVERY, self._watch)

    def hang_up(self, why):
        for leg in self.legs:
            leg.bye(why)
        self.finish(why)

    def finish(self, why):
        if self.done:
            return
        self.done = True
        if self.watchdog is not None and self.watchdog.active():
            self.watchdog.cancel()
        self.watchdog = None
        now = self.core.clock.seconds()
        stats = getattr(self.relay, "stats", None)
        if stats is not None:
            log.info("outside call {call_id}: media {stats}", call_id=self.caller.call_id, stats=stats())
        self.relay.close()
        self.b2b.ended(self, now, why)


class OutsideCalls(LegBook):
    """
    The B2BUA: starts outside calls for the call router (outbound) and for
    the core (inbound from a provider), and owns their dialogs.

    `trunks` is the TrunkManager; `relay_factory()` makes an RTP relay
    session; `history` (ICallHistory or None) gets each call's record;
    `music()` gives a music-on-hold source for a held outside caller.
    """

    def __init__(self, core, office, clock, trunks, relay_factory, history=None, music=None):
        self.core = core
        self.office = office
        self.clock = clock
        self.trunks = trunks
        self.relay_factory = relay_factory
        self.history = history
        self.music = music or (lambda payload_type: None)
        self.legs = {}          # (call_id, our tag) -> leg
        self.calls = set()
        self.outbound_limit = ClientRateLimit(clock, rate=OUTBOUND_PER_MINUTE / 60.0,
                                              burst=OUTBOUND_BURST)

    @property
    def lan_host(self):
        return str(self.office.config.lan_ip)

    @property
    def wan_host(self):
        ip = self.office.wan_ip
        return str(ip) if ip is not None else self.lan_host

    def contact(self, host):
        return "<sip:b2b-%s@%s:%d>" % (os.urandom(4).hex(), host, self.core.port)

    # ------------------------------------------------------------ the core's questions

    def provider_of(self, host):
        """The trunk whose provider sends from `host`, or None."""
        return self.trunks.is_provider(host) if self.trunks is not None else None

    def active(self):
        return [dict(c.record, state="answered" if c.answered_at else "ringing") for c in self.calls]

    def adopt(self, leg):
        self.legs[leg.key] = leg

    # ------------------------------------------------------------ outbound

    def outbound(self, request, st, source, number, user):
        """A phone of `user` (config User) dialled the outside `number` (E.164, or an emergency number)."""
        config = self.office.config
        emergency = number in EMERGENCY
        tag = self.core.new_tag()
        if user is None:
            return st.respond(make_response(request, 403, "Forbidden (sign in to call out)", to_tag=tag))
        if not emergency and not getattr(user, "outside", True):
            log.info("call out by {user} to {number} refused: outside = no", user=user.name, number=number)
            return st.respond(make_response(request, 403, "Forbidden (no outside calls for this user)",
                                            to_tag=tag))
        if not emergency and not self.outbound_limit.allow(user.name):
            log.warn("call out by {user} to {number} refused: more than {n} outside calls a minute",
                     user=user.name, number=number, n=OUTBOUND_PER_MINUTE)
            return st.respond(make_response(request, 403, "Forbidden (too many outside calls; "
                                            "wait a minute)", to_tag=tag))
        trunk = self.trunks.pick_outbound() if self.trunks is not None else None
        if trunk is None:
            return st.respond(make_response(request, 503, "No outside line free", to_tag=tag))
        try:
            parse_offer(request.body)
        except SdpError as e:
            return st.respond(make_response(request, 488, "Not Acceptable Here (%s)" % e, to_tag=tag))
        # A remote phone ([sip] wan) reaches the relay on the WAN address too.
        remote = source.transport != LOCAL and not self.office.is_lan_peer(source.host)
        relay = self.relay_factory(inside_on_wan=True) if remote else self.relay_factory()
        if relay is None:
            return st.respond(make_response(request, 503, "No free RTP port", to_tag=tag))
        self.trunks.acquire(trunk)
        host = trunk.registrar[0]
        dialled = number if emergency else for_provider(number, trunk, config.sip)
        caller_id = trunk.presented_id
        record = self._record("outbound", caller_id, user.full_name or user.name, number, trunk.name)
        record["from"] = user.extension or user.name
        call = OutsideCall(self, "outbound", trunk, relay, record)
        if remote:
            call.inside_host = self.wan_host
        call.inside = call.caller = UasLeg(self.core, call, request, st, source,
                                           self.contact(call.inside_host))
        call.learn(call.caller, request.body)
        display = (user.full_name or user.name).replace('"', "")
        dest = self.trunks.destination(trunk)
        call.outside = call.callee = UacLeg(
            self.core, call, dest, "sip:%s@%s" % (dialled, host),
            '"%s" <sip:%s@%s>' % (display, caller_id, host), "<sip:%s@%s>" % (dialled, host),
            self.contact(self.wan_host), rewrite_sdp(request.body, self.wan_host, relay.outside_port),
            extra=[("P-Asserted-Identity", '"%s" <sip:%s@%s>' % (display, caller_id, host)),
                   ("User-Agent", "allworx")],
            credentials=(trunk.auth_user, trunk.secret))
        self._start(call)
        log.info("outside call {call_id}: {user} to {number} by trunk {trunk}",
                 call_id=request.call_id, user=user.name, number=number, trunk=trunk.name)

    # ------------------------------------------------------------ inbound

    def inbound(self, request, st, source, trunk):
        """An INVITE from the provider of `trunk`."""
        config = self.office.config
        tag = self.core.new_tag()
        try:
            called = uri_user(request.uri) or SipUri.parse(NameAddr.parse(request.get("To", "")).uri).user
            number = from_provider(called, config.sip)
        except (SipParseError, ValueError):
            number = None
        if number is None or number not in self._office_numbers(config):
            log.info("call from the provider of {trunk} for a number we do not have ({uri})",
                     trunk=trunk.name, uri=request.uri)
            return st.respond(make_response(request, 404, to_tag=tag))
        try:
            parse_offer(request.body)
        except SdpError as e:
            return st.respond(make_response(request, 488, "Not Acceptable Here (%s)" % e, to_tag=tag))
        if not self.trunks.acquire(trunk):
            return st.respond(make_response(request, 486, "All lines of the trunk busy", to_tag=tag))
        relay = self.relay_factory()
        if relay is None:
            self.trunks.release(trunk)
            return st.respond(make_response(request, 503, "No free RTP port", to_tag=tag))
        frm = NameAddr.parse(request.get("From", ""))
        try:
            caller_number = from_provider(SipUri.parse(frm.uri).user, config.sip)
        except (SipParseError, ValueError):
            caller_number = None
        caller_number = caller_number or "anonymous"
        caller_name = (frm.display or caller_number).replace('"', "")
        target = self._inside_user(config, number)
        record = self._record("inbound", caller_number, frm.display or None, number, trunk.name)
        call = OutsideCall(self, "inbound", trunk, relay, record)
        call.outside = call.caller = UasLeg(self.core, call, request, st, source, self.contact(self.wan_host))
        call.learn(call.caller, request.body)
        lan = self.lan_host
        call.inside = call.callee = UacLeg(
            self.core, call, Destination("LOCAL", lan, self.core.port), "sip:%s@%s" % (target, lan),
            '"%s" <sip:%s@%s>' % (caller_name, caller_number, lan), "<sip:%s@%s>" % (target, lan),
            self.contact(lan), rewrite_sdp(request.body, lan, relay.inside_port))
        self._start(call)
        log.info("outside call {call_id}: {caller} for {number} by trunk {trunk} -> {target}",
                 call_id=request.call_id, caller=caller_number, number=number, trunk=trunk.name,
                 target=target)

    def _office_numbers(self, config):
        numbers = set(getattr(config, "numbers", {}))
        for trunk in getattr(config, "trunks", {}).values():
            numbers.update(trunk.numbers)
        return numbers

    def _inside_user(self, config, number):
        """The Request-URI user of the inside leg for a call to `number`: where `[number]` sends it."""
        entry = getattr(config, "numbers", {}).get(number)
        target = getattr(entry, "to", None)
        if target is None:
            return config.operator_extension or "0"
        return local_address(config.resolve_target(target))

    # ------------------------------------------------------------ shared

    def _record(self, direction, from_, from_name, to, trunk):
        return {"id": os.urandom(8).hex(), "start": self.clock.seconds(), "end": None,
                "direction": direction, "from": from_, "from_name": from_name, "to": to,
                "answered_by": None, "trunk": trunk, "duration_s": 0, "outcome": "failed"}

    def _start(self, call):
        call.adopt(call.caller)
        call.adopt(call.callee)
        self.calls.add(call)
        call.callee.start()
        if call.direction == "inbound":
            call.caller.progress(180)

    def ended(self, call, now, why):
        self.calls.discard(call)
        for leg in call.legs:
            self.legs.pop(leg.key, None)
        self.trunks.release(call.trunk)
        for leg in call.legs:
            self.core.calls.ended(leg.call_id)
        record = call.record
        record["end"] = now
        if call.answered_at is not None:
            record["duration_s"] = int(round(now - call.answered_at))
        log.info("outside call {call_id} ended ({why}): {outcome}", call_id=call.caller.call_id,
                 why=why, outcome=record["outcome"])
        if self.history is not None:
            try:
                self.history.record(CallEntry(
                    id=record["id"], start=record["start"], end=record["end"],
                    direction=record["direction"], from_=record["from"],
                    from_name=record["from_name"], to=record["to"],
                    answered_by=record["answered_by"], trunk=record["trunk"],
                    duration_s=record["duration_s"], outcome=record["outcome"]))
            except Exception:
                log.failure("call record of {call_id} not kept", call_id=call.caller.call_id)

    def stop(self):
        for call in list(self.calls):
            call.hang_up("server stopping")


def local_address(target):
    """The inside leg's Request-URI user for a resolved TARGET (call router's local names)."""
    kind, value = target.kind, target.value
    if kind == "extension":
        return value
    if kind == "voicemail":
        return "voicemail-" + value
    return "%s-%s" % (kind, value)
