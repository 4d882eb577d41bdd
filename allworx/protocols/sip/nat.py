# -*- test-case-name: allworx.tests.sip.test_remote -*-
"""
Remote phones (`[sip] wan = yes`): what the proxy does for a phone that
registers from the internet, usually from behind a NAT of its own.

- Sides. A peer is "inside" (the LAN, or the B2BUA's in-process LOCAL legs)
  or "outside" (beyond the LAN). Who may speak from outside at all is the
  core's and the registrar's business (a provider, a registered phone's own
  address, or digest credentials); this module only carries their calls.
- Contacts. A NATed phone writes its private address in Contact. Its
  registration is reached at the address the REGISTER came from already
  (the router's branches and `Registrar.destination_of` use the binding's
  source); in a dialog, the Contact of what a remote phone sends through
  the proxy is rewritten to that source address (its transport kept), so
  the other phone's in-dialog requests find the way (`fix_contact`).
- Media. A call between an inside and an outside phone is anchored like an
  outside call: `MediaAnchors` keeps one `RelaySession` per such call (the
  relay's LAN socket faces the LAN phone, its WAN socket the remote phone),
  rewrites every SDP that crosses sides (the INVITE, its 1xx/2xx, re-INVITEs
  and their answers) to the relay's address on the receiving side, and
  tells the relay where the sending side said it listens. Calls between two
  LAN phones keep their media direct.
- Keep-alive. `KeepAlive` sends an OPTIONS every `KEEPALIVE_SECONDS` to each
  phone registered over UDP from outside, while its binding lives, so that
  its NAT keeps open the mapping our requests reach it by. Over TCP and TLS
  the phone's own CRLF pings keep the connection (the service answers them).
"""

import os

from twisted.logger import Logger

from allworx.protocols.sip.core import LOCAL, Destination
from allworx.protocols.sip.message import NameAddr, Request, SipParseError, SipUri
from allworx.protocols.voice.sdp import SdpError, parse_offer, rewrite_sdp

log = Logger()

KEEPALIVE_SECONDS = 25.0
INSIDE, OUTSIDE = "inside", "outside"


def side_of(office, dest):
    """INSIDE for the LAN (and the LOCAL transport), OUTSIDE beyond it."""
    if dest.transport == LOCAL or office.is_lan_peer(dest.host):
        return INSIDE
    return OUTSIDE


def fix_contact(message, source):
    """
    Point `message`'s Contact at `source` (a Destination: where it came
    from), keeping the user, and the transport as a parameter for TCP and
    TLS. A Contact that does not parse is left alone (the core refuses those
    in new INVITEs).
    """
    value = message.get("Contact")
    if value is None:
        return
    try:
        contact = NameAddr.parse(value)
        user = SipUri.parse(contact.uri).user
    except SipParseError:
        return
    host = "[%s]" % source.host if ":" in source.host else source.host
    uri = "sip:%s%s:%d" % ("%s@" % user if user else "", host, source.port)
    if source.transport != "UDP":
        uri += ";transport=%s" % source.transport.lower()
    message.set("Contact", NameAddr(contact.display, uri, contact.params).format())


def record_route(core, dest):
    """Our Record-Route entry facing `dest` (its side's address; the transport beyond UDP)."""
    host = core.local_host(dest.host)
    transport = dest.transport.upper()
    if transport in ("TCP", "TLS"):
        return "<sip:%s:%d;transport=%s;lr>" % (host, core.port_for(transport), transport.lower())
    return "<sip:%s:%d;lr>" % (host, core.port)


class MediaAnchors:
    """
    The relays of calls between the LAN and remote phones, by Call-ID.
    `factory()` makes a RelaySession (or returns None when no ports are free).
    """

    def __init__(self, office, factory=None):
        self.office = office
        self.factory = factory
        self.relays = {}

    def side(self, dest):
        return side_of(self.office, dest)

    def crosses(self, a, b):
        """True when a message from `a` to `b` goes between the LAN and beyond."""
        return self.side(a) != self.side(b)

    def open(self, call_id):
        """A new relay for a call (closing the one it had), or None without one."""
        self.close(call_id)
        if self.factory is None or self.office.wan_ip is None:
            log.warn("call {call_id} between the LAN and a remote phone: no media relay "
                     "(no WAN address or no relay)", call_id=call_id)
            return None
        relay = self.factory()
        if relay is not None:
            self.relays[call_id] = relay
        return relay

    def close(self, call_id):
        relay = self.relays.pop(call_id, None)
        if relay is not None:
            stats = relay.stats() if hasattr(relay, "stats") else None
            log.info("call {call_id}: media relay closed {stats}", call_id=call_id, stats=stats or "")
            relay.close()

    def host(self, side):
        if side == INSIDE:
            return str(self.office.config.lan_ip)
        return str(self.office.wan_ip)

    def anchor(self, message, source, to):
        """
        Rewrite the SDP of `message` (from `source`, going to `to`) to the
        call's relay when it crosses sides, and tell the relay where the
        sender listens. True when it was rewritten.
        """
        relay = self.relays.get(message.call_id)
        if relay is None or not message.body or not self.crosses(source, to):
            return False
        try:
            offer = parse_offer(message.body)
        except SdpError as e:
            log.info("call {call_id}: SDP not anchored ({error})", call_id=message.call_id,
                     error=str(e))
            return False
        sender, receiver = self.side(source), self.side(to)
        if offer.host != "0.0.0.0":
            (relay.expect_inside if sender == INSIDE else relay.expect_outside)(offer.host, offer.port)
        port = relay.inside_port if receiver == INSIDE else relay.outside_port
        message.body = rewrite_sdp(message.body, self.host(receiver), port)
        return True

    def passing(self, message, source, to):
        """A message the proxy passes on in a dialog: the remote phone's Contact, and the media."""
        if self.side(source) == OUTSIDE and self.crosses(source, to):
            fix_contact(message, source)
        self.anchor(message, source, to)


class KeepAlive:
    """
    OPTIONS every KEEPALIVE_SECONDS to the phones registered over UDP from
    beyond the LAN; the timer runs only while there is one.
    """

    def __init__(self, core, registrar, clock):
        self.core = core
        self.registrar = registrar
        self.clock = clock
        self.timer = None
        self.sent = 0
        registrar.on_change.append(self.changed)

    def remote_bindings(self):
        office = self.core.office
        return [b for contacts in list(self.registrar.by_user.values()) for b in contacts.values()
                if b.transport == "UDP" and not office.is_lan_peer(b.source[0])]

    def changed(self, user=None):
        if self.timer is None and self.remote_bindings():
            self.timer = self.clock.callLater(KEEPALIVE_SECONDS, self.tick)

    def stop(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def tick(self):
        self.timer = None
        self.registrar.expire()
        bindings = self.remote_bindings()
        for binding in bindings:
            self.ping(binding)
        if bindings:
            self.timer = self.clock.callLater(KEEPALIVE_SECONDS, self.tick)

    def ping(self, binding):
        dest = Destination("UDP", binding.source[0], binding.source[1])
        core = self.core
        ours = "sip:%s" % core.office.config.system.domain
        request = Request([
            ("Via", core.via_for(dest)), ("Max-Forwards", "70"),
            ("From", "<%s>;tag=%s" % (ours, core.new_tag())), ("To", "<%s>" % binding.contact),
            ("Call-ID", "ka-%s" % os.urandom(8).hex()), ("CSeq", "1 OPTIONS"),
            ("User-Agent", "allworx")], method="OPTIONS", uri=binding.contact)
        self.sent += 1
        # Sent once, outside any transaction: a lost one is no matter, the
        # next comes 25 s later until the binding expires; the answer, which
        # finds no transaction, is dropped.
        core.send(request, dest)
