# -*- test-case-name: allworx.tests.sip.test_sites -*-
"""
Calls between sites (SPEC 16): an extension in another `[site]`'s
`extensions` is called at that site's server, over the tunnel; that
server's INVITEs are trusted by their source address.

Outbound, the server is a back-to-back user agent between the phone and the
site's server (docs/SIP.md says why): the phone's dialog ends here (`UasLeg`)
and a new one starts towards `sip:EXT@SITE_ADDRESS:5060` over UDP
(`UacLeg`), with From `"Full Name" <sip:EXT@OUR_DOMAIN>` whoever the phone
said it was. The SDP passes untouched both ways: the LANs route to each
other through the tunnel, so media goes phone to phone. The site must say
something (a 100 is enough) within `SITE_TIMEOUT` seconds of the INVITE,
or the caller hears 480 (SPEC: within 5 s) and our INVITE is given up (its
transaction lives on, so a late provisional answer is CANCELled and a late
2xx ended with BYE). Once the site answered, its ring time and its own
voicemail apply; its final refusals pass to the caller.

Inbound, `admit` trusts an INVITE whose source is a site's tunnel address:
the tunnel authenticated it (WireGuard accepts from a peer only the
addresses of its AllowedIPs, and the network service's strict reverse-path
filter drops a tunnel address arriving on the LAN); never a header. The call
router then rings a local extension as for a LAN phone, the From shown as
the site sent it; unanswered, the call ends in that user's voicemail here.
A site's call never leaves again: no outside line (calls.py) and no other
site (`SiteCalls.outbound`).
"""

import os

from twisted.logger import Logger

from allworx.config.vpn import in_range
from allworx.protocols.sip.core import LOCAL, Destination
from allworx.protocols.sip.legs import LegBook, UacLeg, UasLeg, with_tag
from allworx.protocols.sip.message import NameAddr, Request, SipParseError, SipUri, make_response

log = Logger()

SITE_PORT = 5060
SITE_TIMEOUT = 4.0      # seconds the site has to answer anything, before the caller hears 480


def site_for(config, number):
    """
    The `[site]` whose `extensions` hold `number`, or None. The office's own
    numbers win (a user's extension, a group's or an attendant's number,
    the voicemail number), though the config's checks keep them apart.
    """
    if not (number and number.isascii() and number.isdigit()):
        return None
    if (config.user_by_extension(number) is not None or config.group_by_number(number) is not None
            or config.attendant_by_number(number) is not None
            or number == config.sip.voicemail_number):
        return None
    for name in sorted(config.sites):
        site = config.sites[name]
        if any(in_range(number, r) for r in site.extensions):
            return site
    return None


def site_at(config, host):
    """The `[site]` whose server's tunnel address is `host`, or None."""
    if not config.vpn.enabled:
        return None
    return next((s for s in config.sites.values() if str(s.address) == host), None)


def _caller(request, config):
    """(display name, number) the site is shown for the caller of `request`."""
    user = config.users.get(request.caller or "")
    if user is not None:
        return (user.full_name or user.name, user.extension or user.name)
    try:
        frm = NameAddr.parse(request.get("From", ""))
        return (frm.display, SipUri.parse(frm.uri).user)
    except SipParseError:
        return ("", "anonymous")


class SiteCall:
    """A phone's call to another site: the phone's leg (`caller`) and the site's (`callee`)."""

    def __init__(self, calls, site, number, request):
        self.calls = calls
        self.core = calls.core
        self.site = site
        self.number = number
        self.call_id = request.call_id      # the phone's: the call router's record
        self.caller = None
        self.callee = None
        self.timer = None
        self.done = False
        self.answered = False
        self.reinviting = False

    def other(self, leg):
        return self.callee if leg is self.caller else self.caller

    def start(self):
        self.callee.start()
        self.timer = self.core.clock.callLater(SITE_TIMEOUT, self.silent)

    def _stop_timer(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def silent(self):
        """SITE_TIMEOUT after the INVITE: without a word from the site, 480."""
        self.timer = None
        if self.done or self.callee.provisional or self.callee.state != "early":
            return
        log.info("call {call_id} to {number}: site {site} ({address}) does not answer",
                 call_id=self.call_id, number=self.number, site=self.site.name,
                 address=self.site.address)
        self.callee.cancel()
        self.calls.router.outcome(self.call_id, "missed")
        self.caller.reject(480, "Temporarily Unavailable (site %s does not answer)" % self.site.name)
        self.finish("site silent")

    # ------------------------------------------------------------ the legs' events

    def leg_progress(self, leg, response):
        if leg is not self.callee or self.done:
            return
        self._stop_timer()
        code = response.code if response.code in (180, 181, 182, 183) else 183
        if code == 183 and not response.body:
            code = 180
        self.caller.progress(code, response.body)

    def leg_answered(self, leg, response):
        if leg is not self.callee or self.done:
            leg.bye("call already over")
            return
        self._stop_timer()
        self.answered = True
        self.calls.router.answered(self.call_id, self.number)
        self.caller.accept(leg.sdp or b"")
        log.info("call {call_id} to {number} at site {site}: answered", call_id=self.call_id,
                 number=self.number, site=self.site.name)

    def leg_acked(self, leg):
        pass

    def leg_failed(self, leg, code, reason):
        if self.done:
            return
        self._stop_timer()
        if leg is self.callee:
            if code == 408:
                answer, reason = 480, "Temporarily Unavailable (site %s does not answer)" % self.site.name
            elif code in (401, 407):
                # The site asks for a password: its [site] for us is missing or wrong.
                log.warn("site {site} refuses our calls ({code}): does its config have a [site] "
                         "for this server?", site=self.site.name, code=code)
                answer, reason = 403, "Forbidden (site %s does not trust this server)" % self.site.name
            else:
                answer = code
            self.calls.router.outcome(self.call_id, "busy" if code in (486, 600) else (
                "missed" if code in (480, 487, 408) else "failed"))
            log.info("call {call_id} to {number} at site {site}: {code} {reason}",
                     call_id=self.call_id, number=self.number, site=self.site.name, code=code,
                     reason=reason)
            self.caller.reject(answer, reason)
        self.finish("failed %d" % code)

    def leg_ended(self, leg, why):
        if self.done:
            return
        if why == "cancelled" and not self.answered:
            self.calls.router.outcome(self.call_id, "missed")
        self.other(leg).bye(why)
        self.finish(why)

    def leg_reinvite(self, leg, request, st):
        """A re-INVITE (hold, a new media address) goes to the other side; its answer comes back."""
        other = self.other(leg)
        if not request.body or other.state != "confirmed" or self.reinviting:
            if self.reinviting:
                return st.respond(make_response(request, 491))
            return leg.answer_reinvite(request, st, other.sdp or b"")
        self.reinviting = True

        def answered(response):
            self.reinviting = False
            if response is None:
                return st.respond(make_response(request, 500, "Server Internal Error (no answer)"))
            if 200 <= response.code < 300:
                _ack(other, sent, response)
                other.sdp = response.body or other.sdp
                return leg.answer_reinvite(request, st, other.sdp or b"")
            st.respond(make_response(request, response.code, response.reason))
        sent = other.send("INVITE", request.body, request.get("Content-Type"), on_response=answered)

    def leg_info(self, leg, request):
        other = self.other(leg)
        if other.state == "confirmed" and request.body:
            other.send("INFO", request.body, request.get("Content-Type"))

    def leg_refer(self, leg, request, st):
        st.respond(make_response(request, 403, "Forbidden (no transfer of a call to another site)"))

    # ------------------------------------------------------------ life

    def hang_up(self, why):
        for leg in (self.caller, self.callee):
            leg.bye(why)
        self.finish(why)

    def finish(self, why):
        if self.done:
            return
        self.done = True
        self._stop_timer()
        self.calls.ended(self, why)


def _ack(leg, invite, response):
    """The ACK of a 2xx to a re-INVITE we sent in `leg`'s dialog."""
    headers = [("Via", leg.core.via_for(leg.dest)), ("Max-Forwards", "70")]
    headers += [("Route", r) for r in leg.route_set]
    headers += [("From", invite.get("From")), ("To", with_tag(leg.remote_addr, leg.remote_tag)),
                ("Call-ID", leg.call_id), ("CSeq", "%d ACK" % invite.cseq[0])]
    leg.core.send(Request(headers, method="ACK", uri=leg.remote_target), leg.dest)


class SiteCalls(LegBook):
    """Calls to other sites (outbound B2BUA) and the trust of their servers (inbound)."""

    def __init__(self, core, office, clock):
        self.core = core
        self.office = office
        self.clock = clock
        self.legs = {}          # (call_id, our tag) -> leg
        self.calls = set()

    @property
    def router(self):
        return self.core.calls

    # ------------------------------------------------------------ the core's questions

    def admit(self, request, source):
        """
        True (the request marked authenticated and `site`) when `source` is a
        site's server: its tunnel address, authenticated by the tunnel.
        """
        if source.transport == LOCAL:
            return False
        site = site_at(self.office.config, source.host)
        if site is None:
            return False
        request.authenticated = True
        request.site = site.name
        return True

    # ------------------------------------------------------------ outbound

    def outbound(self, request, st, source, site, number):
        """A phone (or an inside leg) called `number`, an extension of `site`."""
        config = self.office.config
        tag = self.core.new_tag()
        if request.site is not None:
            log.info("call from site {from_} to {number} of site {site} refused: no transit",
                     from_=request.site, number=number, site=site.name)
            self.router.outcome(request.call_id, "failed")
            st.respond(make_response(request, 403, "Forbidden (no calls through to another site)",
                                     to_tag=tag))
            return self.router.ended(request.call_id)
        display, caller = _caller(request, config)
        address = str(site.address)
        ours = str(config.vpn.address.ip) if config.vpn.address is not None else \
            self.core.local_host(address)
        name = '"%s" ' % display.replace('"', "") if display else ""
        call = SiteCall(self, site, number, request)
        call.caller = UasLeg(self.core, call, request, st, source, self._contact(
            self.core.local_host(source.host)))
        call.callee = UacLeg(
            self.core, call, Destination("UDP", address, SITE_PORT), "sip:%s@%s" % (number, address),
            '%s<sip:%s@%s>' % (name, caller, config.system.domain),
            "<sip:%s@%s>" % (number, site.domain or address), self._contact(ours), request.body,
            extra=[("User-Agent", "allworx")])
        for leg in (call.caller, call.callee):
            self.legs[leg.key] = leg
        self.calls.add(call)
        log.info("call {call_id}: {caller} to {number} at site {site} ({address})",
                 call_id=request.call_id, caller=caller, number=number, site=site.name,
                 address=address)
        call.start()

    def _contact(self, host):
        return "<sip:site-%s@%s:%d>" % (os.urandom(4).hex(), host, self.core.port)

    def ended(self, call, why):
        self.calls.discard(call)
        for leg in (call.caller, call.callee):
            self.legs.pop(leg.key, None)
        self.router.ended(call.call_id)

    def stop(self):
        for call in list(self.calls):
            call.hang_up("server stopping")
