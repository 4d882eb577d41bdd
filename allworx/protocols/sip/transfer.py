# -*- test-case-name: allworx.tests.sip.test_transfer -*-
"""
Transfer of an outside call (REFER, RFC 3515; Replaces, RFC 3891).

The phone (or the attendant) on the inside leg of an `OutsideCall` sends
REFER in its dialog with the server. The server accepts it (202), reports
progress to the referrer with NOTIFYs of `message/sipfrag`, and starts a new
inside leg to the Refer-To target while the outside party stays where it is
(its dialog and the relay's WAN side do not change, so the provider sees
nothing). When the new leg answers, the relay's LAN side follows it (a new
peer, re-latched at once) and the old inside leg is let go: the referrer
hangs up itself (RFC 5589), or the server ends its leg a few seconds later.
If the new leg fails, the referrer hears why in the last NOTIFY and still
has the call; a referrer that already hung up (a blind transfer) leaves the
outside party to the server, which ends the call.

- Blind: `Refer-To: <sip:102@server>`, any number the call router knows (an
  extension, a group, `voicemail-101`, `attendant-main`): the new leg goes
  through the router over the LOCAL transport, like every inbound call.
- Attended: the phone has a second call (with 102) and sends `Refer-To:
  <sip:CONTACT?Replaces=...>`: the new INVITE goes straight to the phone
  holding that dialog, with the Replaces header, and that phone hangs up its
  call with the referrer as it takes ours.
"""

from urllib.parse import unquote

from twisted.logger import Logger

from allworx.protocols.sip.core import LOCAL, Destination
from allworx.protocols.sip.legs import UacLeg
from allworx.protocols.sip.message import NameAddr, SipParseError, SipUri, make_response

log = Logger()

LET_GO = 4.0        # seconds the referrer has to hang up by itself after the transfer
REASONS = {100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK"}


def parse_refer_to(value):
    """(uri without headers, user, Replaces header value or None) of a Refer-To; SipParseError."""
    uri = NameAddr.parse(value).uri
    base, _, query = uri.partition("?")
    replaces = None
    for part in query.split("&") if query else ():
        name, _, text = part.partition("=")
        if name.lower() == "replaces":
            replaces = unquote(text)
    parsed = SipUri.parse(base)
    return base, parsed.user, replaces


class Transfer:
    """One REFER of the inside leg of `call` being carried out."""

    def __init__(self, call, referrer, request):
        self.call = call
        self.core = call.core
        self.referrer = referrer
        self.request = request
        self.leg = None
        self.done = False
        self.referrer_gone = False

    # ------------------------------------------------------------ start

    def start(self, st):
        call = self.call
        try:
            uri, user, replaces = parse_refer_to(self.request.get("Refer-To", ""))
        except SipParseError as e:
            return st.respond(make_response(self.request, 400, "Bad Refer-To (%s)" % str(e)[:60]))
        lan = call.b2b.lan_host
        outside = call.outside
        st.respond(make_response(self.request, 202, extra=[("Contact", self.referrer.contact)]))
        self.notify(100)
        if replaces:
            found = self.core.registrar.destination_of(uri) if self.core.registrar else None
            if found is None:
                log.info("transfer of {call_id}: Replaces for {uri}, no phone registered there",
                         call_id=call.caller.call_id, uri=uri)
                return self.failed(404, "Not Found")
            dest = Destination(*found, conn=self.core.connections_get(found[1], found[2]))
            target, extra = uri, [("Replaces", replaces)]
        else:
            dest = Destination(LOCAL, lan, self.core.port)
            target, extra = "sip:%s@%s" % (user, lan), []
        number, name = call.party()
        log.info("outside call {call_id}: transferred by {by} to {to}", call_id=call.caller.call_id,
                 by=self.referrer.remote_addr, to=target)
        self.leg = UacLeg(self.core, self, dest, target,
                          '"%s" <sip:%s@%s>' % (name.replace('"', ""), number, lan),
                          "<%s>" % target.split(";")[0], call.b2b.contact(lan),
                          call.our_sdp(self.referrer, outside.sdp or b""), extra=extra)
        call.adopt(self.leg)
        self.leg.start()

    # ------------------------------------------------------------ the referrer

    def notify(self, code, reason=None):
        """Tell the referrer how the new call goes (a NOTIFY with a sipfrag)."""
        if self.referrer.state != "confirmed":
            return
        final = code >= 200
        body = ("SIP/2.0 %d %s\r\n" % (code, reason or REASONS.get(code, ""))).encode()
        self.referrer.send("NOTIFY", body, "message/sipfrag;version=2.0", extra=[
            ("Event", "refer"),
            ("Subscription-State", "terminated;reason=noresource" if final else "active;expires=60")])

    def referrer_ended(self):
        """The referrer hung up (a blind transfer does so at once)."""
        self.referrer_gone = True

    # ------------------------------------------------------------ the new leg's events

    def leg_progress(self, leg, response):
        if response.code in (180, 183):
            self.notify(response.code)

    def leg_answered(self, leg, response):
        if self.done:
            return leg.bye("transfer already over")
        self.done = True
        self.notify(200)
        self.call.transferred(self, leg, response)
        referrer = self.referrer
        if referrer.state == "confirmed":
            self.core.clock.callLater(LET_GO, lambda: referrer.state == "confirmed" and referrer.bye(
                "transferred"))

    def leg_failed(self, leg, code, reason):
        self.failed(code, reason)

    def failed(self, code, reason):
        if self.done:
            return
        self.done = True
        log.info("transfer of {call_id} failed: {code} {reason}", call_id=self.call.caller.call_id,
                 code=code, reason=reason)
        self.notify(code if code >= 300 else 500, reason)
        self.call.transfer_failed(self)

    def leg_ended(self, leg, why):
        self.failed(487, "Request Terminated")

    def leg_acked(self, leg):
        pass

    def leg_reinvite(self, leg, request, st):
        self.call.leg_reinvite(leg, request, st)

    def leg_info(self, leg, request):
        pass

    def leg_refer(self, leg, request, st):
        st.respond(make_response(request, 491, "Request Pending"))
