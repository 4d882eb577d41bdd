# -*- test-case-name: allworx.tests.dhcp.test_service -*-
"""
What the DHCP server answers (RFC 2131 section 4.3), without sockets: a
decoded request in, an `Outcome` out (the reply, where it goes, and what
happened to the lease). The options handed out follow the guide (SPEC 4):
netmask of the LAN, router and DNS by security mode, the office domain, the
server as time server when `[ntp] enabled`, lease time with T1/T2; and to
desk phones, by their vendor class, where their provisioning file is (SPEC
19, `phoneoptions`).
"""

import re

import attr

from allworx.protocols.dhcp import codec as c
from allworx.protocols.dhcp.codec import BROADCAST, CLIENT_PORT, SERVER_PORT, ZERO
from allworx.protocols.dhcp.phoneoptions import PhonePointers, phone_vendor, vendor_class_text

# The hardware address the server's own rogue-server probe uses (locally
# administered, unicast): requests from it are never answered.
PROBE_MAC = "0a:61:77:78:70:72"

# The longest client identifier (option 61) answered: one option's worth (RFC
# 3396 lets a client send more, but every reply echoes it, RFC 6842).
MAX_CLIENT_ID = 255

# Options the server may hand out, in the order they are sent when the client
# does not say which it wants.
SERVED_CODES = (c.SUBNET_MASK, c.ROUTER, c.DNS_SERVERS, c.DOMAIN_NAME,
                c.BROADCAST_ADDRESS, c.NTP_SERVERS)


def served_options(config):
    """The configuration options for LAN clients (code -> raw bytes), per SPEC 4."""
    net = config.lan_network
    out = {c.SUBNET_MASK: c.pack_option(c.SUBNET_MASK, net.netmask)}
    if config.router_for_lan is not None:
        out[c.ROUTER] = c.pack_option(c.ROUTER, [config.router_for_lan])
    if config.dns_for_lan:
        out[c.DNS_SERVERS] = c.pack_option(c.DNS_SERVERS, config.dns_for_lan)
    out[c.DOMAIN_NAME] = c.pack_option(c.DOMAIN_NAME, config.system.domain)
    out[c.BROADCAST_ADDRESS] = c.pack_option(c.BROADCAST_ADDRESS, net.broadcast_address)
    if config.ntp.enabled:
        out[c.NTP_SERVERS] = c.pack_option(c.NTP_SERVERS, [config.lan_ip])
    return out


_NOT_LABEL = re.compile(r"[^a-z0-9-]+")


def clean_hostname(raw):
    """A client's host name (option 12) as a DNS label, or None if nothing usable is left."""
    if not raw:
        return None
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    label = _NOT_LABEL.sub("-", text.split(".")[0].strip().lower()).strip("-")[:63].strip("-")
    return label or None


@attr.s(slots=True)
class Outcome:
    """
    The answer to one request: `reply` (a DhcpPacket) to send to `destination`
    (ip, port) — through a raw frame to `hw_dest` when the client has no
    address yet — and `event` ("granted", "renewed", "released", "declined")
    about `lease`. `durable` replies wait until the lease is journaled.
    `note` says why nothing was sent, for the log.
    """

    reply = attr.ib(default=None)
    destination = attr.ib(default=None)
    hw_dest = attr.ib(default=None)
    event = attr.ib(default=None)
    lease = attr.ib(default=None)
    note = attr.ib(default=None)

    @property
    def durable(self):
        return self.event in ("granted", "renewed")


def reply_destination(request, reply):
    """Where a reply goes (RFC 2131 4.1): ((ip, port), hardware address for a raw send or None)."""
    text = c.address_text
    if request.giaddr != ZERO:
        return (text(request.giaddr), SERVER_PORT), None
    if reply.message_type == c.NAK:
        return (text(BROADCAST), CLIENT_PORT), None
    if request.ciaddr != ZERO:
        return (text(request.ciaddr), CLIENT_PORT), None
    if request.broadcast or request.htype != 1 or request.hlen != 6:
        return (text(BROADCAST), CLIENT_PORT), None
    return (text(reply.yiaddr), CLIENT_PORT), request.mac


class DhcpResponder:
    """
    The server's decisions for one LAN: `handle(request)` -> Outcome, using
    the lease pool. `reconfigure(config)` takes a new configuration.
    """

    def __init__(self, config, pool):
        self.pool = pool
        self._cache = {}
        self._handlers = {c.DISCOVER: self._discover, c.REQUEST: self._request,
                          c.DECLINE: self._decline, c.RELEASE: self._release,
                          c.INFORM: self._inform}
        self.reconfigure(config)

    def reconfigure(self, config):
        """Take a new configuration: server address, LAN, options (caches dropped)."""
        self.config = config
        self.server_ip = config.lan_ip
        self.network = config.lan_network
        self._net_i = int(self.network.network_address)
        self._mask_i = int(self.network.netmask)
        self.options = served_options(config)
        self.phones = PhonePointers.from_config(config)
        self._families = {}
        self._server_id = c.pack_option(c.SERVER_ID, self.server_ip)
        self._cache = {}

    # ------------------------------------------------------------ options

    def _requested_codes(self, prl):
        """The option codes to send for a parameter request list (raw bytes or None)."""
        if prl is None:
            return SERVED_CODES
        # The netmask always (every client needs it), then what was asked
        # for, in the client's order.
        return [c.SUBNET_MASK] + [code for code in prl if code != c.SUBNET_MASK]

    def family_of(self, request):
        """The phone family of a request's vendor class (option 60), or None (memoised:
        a LAN has few distinct vendor classes)."""
        raw = request.options.get(c.VENDOR_CLASS)
        if not raw:
            return None
        try:
            return self._families[raw]
        except KeyError:
            family = phone_vendor(raw)
            if len(self._families) < 256:
                self._families[bytes(raw)] = family
            return family

    def _option_block(self, message_type, lease_time, prl, family=None):
        """
        The encoded options of a reply, but for the per-client ones; cached
        by (type, lease time, request list, phone family) because clients
        send few distinct lists, so the hot path copies bytes instead of
        building options.
        """
        key = (message_type, lease_time, prl, family)
        block = self._cache.get(key)
        if block is None:
            items = [(c.MESSAGE_TYPE, bytes((message_type,))), (c.SERVER_ID, self._server_id)]
            if message_type != c.NAK:
                if lease_time is not None:
                    t1, t2 = c.renewal_times(lease_time)
                    items += [(c.LEASE_TIME, c.pack_option(c.LEASE_TIME, lease_time)),
                              (c.RENEWAL_TIME, c.pack_option(c.RENEWAL_TIME, t1)),
                              (c.REBINDING_TIME, c.pack_option(c.REBINDING_TIME, t2))]
                items += [(code, self.options[code])
                          for code in dict.fromkeys(self._requested_codes(prl))
                          if code in self.options]
                items += self.phones.options(family, prl)
            block = c.encode_options(items)
            if len(self._cache) < 1024:
                self._cache[key] = block
        return block

    def build_reply(self, request, message_type, yiaddr=ZERO, lease_time=None, message=None):
        """A reply packet to `request` with the server's options."""
        prl = request.options.get(c.PARAMETER_REQUEST_LIST)
        block = self._option_block(message_type, lease_time, bytes(prl) if prl else prl,
                                   self.family_of(request))
        extra = []
        if message:
            extra.append((c.MESSAGE, message.encode("utf-8")[:250]))
        client_id = request.options.get(c.CLIENT_ID)
        if client_id is not None:
            extra.append((c.CLIENT_ID, client_id))   # RFC 6842: echo the client identifier
        if extra:
            block += c.encode_options(extra)
        return c.DhcpPacket(
            op=c.BOOTREPLY, xid=request.xid, chaddr=request.chaddr, htype=request.htype,
            hlen=request.hlen, flags=request.flags, giaddr=request.giaddr,
            ciaddr=request.ciaddr if message_type in (c.ACK, c.INFORM) else ZERO,
            yiaddr=yiaddr, options={c.MESSAGE_TYPE: bytes((message_type,))},
            encoded_options=block)

    def on_lan(self, address):
        """True when `address` is in the LAN subnet (integer arithmetic: the hot path)."""
        return int(address) & self._mask_i == self._net_i

    # ------------------------------------------------------------ decisions

    def handle(self, request):
        """The Outcome for one decoded request."""
        if request.op != c.BOOTREQUEST:
            return Outcome(note="not a request")
        kind = request.message_type
        if kind is None:
            return Outcome(note="BOOTP without a DHCP message type is not served")
        if request.giaddr != ZERO and not self.on_lan(request.giaddr):
            return Outcome(note="relayed from %s, outside the LAN" % request.giaddr)
        mac = request.mac
        if mac == PROBE_MAC:
            return Outcome(note="the server's own probe")
        if len(request.options.get(c.CLIENT_ID, b"")) > MAX_CLIENT_ID:
            # Echoed in every reply (RFC 6842): one this long would not fit one.
            return Outcome(note="client identifier of more than %d bytes" % MAX_CLIENT_ID)
        handler = self._handlers.get(kind)
        if handler is None:
            return Outcome(note="%s is a server's message" % c.MESSAGE_NAMES[kind])
        return handler(request, mac)

    def _send(self, request, reply, **kw):
        destination, hw = reply_destination(request, reply)
        return Outcome(reply=reply, destination=destination, hw_dest=hw, **kw)

    def _discover(self, request, mac):
        lease = self.pool.offer(mac, request.get(c.REQUESTED_ADDRESS),
                                clean_hostname(request.options.get(c.HOST_NAME)),
                                vendor_class_text(request.options.get(c.VENDOR_CLASS)))
        if lease is None:
            return Outcome(note="pool exhausted")
        reply = self.build_reply(request, c.OFFER, lease.address, self._lease_time(lease))
        return self._send(request, reply, lease=lease)

    def _lease_time(self, lease):
        return self.pool.settings.lease_time

    def _request(self, request, mac):
        raw_server_id = request.options.get(c.SERVER_ID)
        server_id = None if raw_server_id is None else request.get(c.SERVER_ID)
        requested = request.get(c.REQUESTED_ADDRESS)
        hostname = clean_hostname(request.options.get(c.HOST_NAME))
        if server_id is not None:
            # SELECTING: answering one server's OFFER.
            if raw_server_id != self._server_id:
                offered = self.pool.lease_of(mac)
                if offered is not None and offered.state == "offered":
                    self.pool.forget(offered.address)
                return Outcome(note="client chose server %s" % server_id)
            if requested is None and request.ciaddr == ZERO:
                return Outcome(note="REQUEST names this server but no address")
            # Some old clients put the address in ciaddr instead of option 50.
            address = requested if requested is not None else request.ciaddr
        elif requested is not None:
            address = requested           # INIT-REBOOT
        elif request.ciaddr != ZERO:
            address = request.ciaddr      # RENEWING or REBINDING
        else:
            return Outcome(note="REQUEST without an address")
        if not self.on_lan(address):
            return self._nak(request, "%s is not on this LAN" % address)
        binding = self.pool.request(mac, address, hostname,
                                    vendor_class_text(request.options.get(c.VENDOR_CLASS)))
        if binding is None:
            return self._nak(request, "%s: %s" % (address, self.pool.last_refusal))
        lease = binding.lease
        reply = self.build_reply(request, c.ACK, lease.address, self._lease_time(lease))
        return self._send(request, reply, event=binding.kind, lease=lease)

    def _nak(self, request, why):
        reply = self.build_reply(request, c.NAK, message=why)
        return self._send(request, reply, note="NAK: " + why)

    def _decline(self, request, mac):
        if request.get(c.SERVER_ID) != self.server_ip:
            return Outcome(note="DECLINE for another server")
        address = request.get(c.REQUESTED_ADDRESS)
        lease = self.pool.decline(mac, address) if address is not None else None
        if lease is None:
            return Outcome(note="DECLINE of an address the client did not hold")
        return Outcome(event="declined", lease=lease)

    def _release(self, request, mac):
        lease = self.pool.release(mac, request.ciaddr)
        if lease is None:
            return Outcome(note="RELEASE of an address the client did not hold")
        return Outcome(event="released", lease=lease)

    def _inform(self, request, mac):
        if request.ciaddr == ZERO or not self.on_lan(request.ciaddr):
            return Outcome(note="INFORM from outside the LAN")
        reply = self.build_reply(request, c.ACK)
        return self._send(request, reply)
