# -*- test-case-name: allworx.tests.firewall.test_policy -*-
"""
The firewall's decisions as plain data and one pure function.

`FlowPolicy` holds what the decisions depend on: the security mode, the LAN
and WAN addresses, which of the server's ports are LAN-only, the DMZ's open
ports and the `[forward]` entries with their targets resolved. `verdict(policy,
flow)` says what happens to the first packet of a new flow and why; `decide`
adds the packet mark that selects a forward's DNAT in the kernel ruleset.

The decisions, in the order they are taken:

- the server's own traffic, and LAN to the server: accepted;
- from the LAN: a source outside the LAN subnet is dropped (spoofed); in
  lan-only mode forwarding is rejected; router mode forwards; the firewall
  modes accept connection openings (masqueraded by the kernel ruleset);
- from the WAN: replies to the server's WAN DHCP client pass in every mode;
  lan-only drops the rest; router mode forwards everything except the
  server's LAN-only services; in the firewall modes, to the WAN address: a
  `[forward]` port goes to its LAN target (it wins over the server's own use
  of the port), a LAN-only service is dropped, DMZ mode accepts only
  `dmz_open` (and the SIP media ports when SIP is open), firewall-nat accepts
  the server's other ports; anything else from the WAN (the LAN, broadcasts,
  other addresses, TCP without SYN) is dropped without a word.

Addresses are kept as 32-bit integers: the hook builds a `Flow` for every new
flow, so the decision must be cheap.
"""

import ipaddress
from typing import NamedTuple

import attr

ACCEPT = "accept"
DROP = "drop"
REJECT = "reject"
ACTIONS = (ACCEPT, DROP, REJECT)

# Where a flow's first packet came from.
LAN = "lan"
WAN = "wan"
LOCAL = "local"     # the server's own outbound traffic
SIDES = (LAN, WAN, LOCAL)

TCP = 6
UDP = 17
ICMP = 1
PROTO_NAMES = {TCP: "tcp", UDP: "udp", ICMP: "icmp"}
ICMP_ECHO_REQUEST = 8

# Packet marks for the forwards' DNAT: MARK_BASE | index (1-based).
MARK_BASE = 0x0A770000
MARK_MASK = 0xFFFF0000

FIREWALL_MODES = ("firewall-nat", "firewall-nat-dmz")


def ip_int(value):
    """An IPv4 address (text or ipaddress object) as a 32-bit integer."""
    return int(ipaddress.IPv4Address(str(value)))


def ip_text(value):
    """A 32-bit integer address back as dotted text."""
    return str(ipaddress.IPv4Address(value))


def proto_name(proto):
    """`tcp`, `udp`, `icmp` or the protocol number as text."""
    return PROTO_NAMES.get(proto, str(proto))


class Flow(NamedTuple):
    """
    The first packet of a new flow, as much of it as a decision needs.

    `src`/`dst` are 32-bit integers; `sport`/`dport` are ports for TCP and
    UDP, and for ICMP `dport` is the ICMP type (sport 0). `syn` is True when a
    TCP packet has SYN without ACK (a connection opening); always True for
    other protocols. A named tuple: the hook makes one per new flow.
    """

    proto: int
    src: int
    sport: int
    dst: int
    dport: int
    side: str
    syn: bool = True

    def describe(self):
        """`tcp 203.0.113.9:4000 -> 203.0.113.2:25 from wan`, for logs."""
        if self.proto in (TCP, UDP):
            return "%s %s:%d -> %s:%d from %s" % (
                proto_name(self.proto), ip_text(self.src), self.sport,
                ip_text(self.dst), self.dport, self.side)
        return "%s %s -> %s from %s" % (proto_name(self.proto), ip_text(self.src),
                                        ip_text(self.dst), self.side)


@attr.s(frozen=True, slots=True)
class ForwardRule:
    """A `[forward]` with its target resolved: WAN port -> LAN address and port."""

    name = attr.ib()
    proto = attr.ib()           # "tcp" | "udp"
    wan_port = attr.ib()
    target = attr.ib()          # IPv4Address, or None when a host has no address
    to_port = attr.ib()
    mark = attr.ib()
    host = attr.ib(default=None)  # the host name when `to` names one

    @property
    def reason(self):
        if self.target is None:
            return "forward %s: host %s has no address" % (self.name, self.host)
        return "forward %s to %s:%d" % (self.name, self.target, self.to_port)


def lan_only_ports(config):
    """
    {(proto, port): service name} of the server's LAN-side services: never
    reachable from the WAN in any mode (guide 4.3, SPEC 3).
    """
    ports = {
        ("tcp", config.web.admin_port): "admin pages",
        ("tcp", config.ldap.port): "LDAP",
        ("udp", config.ntp.port): "NTP",
        ("udp", 67): "DHCP server",
    }
    if not config.pop3.wan:
        ports[("tcp", config.pop3.port)] = "POP3 (LAN only unless [pop3] wan)"
        ports[("tcp", config.pop3.pop3s_port)] = "POP3S (LAN only unless [pop3] wan)"
    if not config.imap.wan:
        ports[("tcp", config.imap.port)] = "IMAP (LAN only unless [imap] wan)"
        ports[("tcp", config.imap.imaps_port)] = "IMAPS (LAN only unless [imap] wan)"
    if not config.sip.wan:
        ports[("tcp", config.sip.tls_port)] = "SIP over TLS (LAN only unless [sip] wan)"
    if config.provisioning.enabled:
        # The phones' files (SPEC 19): HTTP, HTTPS on the next port, TFTP.
        port = config.provisioning.port
        ports[("tcp", port)] = ports[("tcp", port + 1)] = "phone provisioning"
        ports[("udp", 69)] = "phone provisioning (TFTP)"
    return ports


def public_ports(config):
    """{(proto, port): service name} of the server's own WAN-side services."""
    ports = {
        ("tcp", config.mail.smtp_port): "SMTP",
        ("tcp", config.mail.submission_port): "mail submission",
        ("tcp", config.web.http_port): "web (www)",
        ("udp", config.dns.port): "DNS (the office zone)",
        ("tcp", config.dns.port): "DNS (the office zone)",
        ("udp", config.sip.port): "SIP",
        ("tcp", config.sip.port): "SIP",
    }
    if config.mail.submissions_port:
        ports[("tcp", config.mail.submissions_port)] = "mail submission over TLS"
    if config.pop3.wan:
        ports[("tcp", config.pop3.port)] = "POP3"
        ports[("tcp", config.pop3.pop3s_port)] = "POP3S"
    if config.imap.wan:
        ports[("tcp", config.imap.port)] = "IMAP"
        ports[("tcp", config.imap.imaps_port)] = "IMAPS"
    if config.sip.wan:
        ports[("tcp", config.sip.tls_port)] = "SIP over TLS (remote phones)"
    if config.vpn.enabled:
        ports[("udp", config.vpn.port)] = VPN_PORT_NAME
    return ports


# The WireGuard port is open on the WAN in every mode, DMZ included (SPEC 16).
VPN_PORT_NAME = "WireGuard (sites and remote access)"


def resolve_forwards(config, host_addresses=None):
    """
    The `[forward]` entries as ForwardRules, in name order. A target naming
    a host follows `host_addresses[name]` (its DHCP lease) when known, else
    the `[host]` reservation.
    """
    host_addresses = host_addresses or {}
    rules = []
    for index, name in enumerate(sorted(config.forwards), 1):
        f = config.forwards[name]
        target, host = f.to[0], None
        if isinstance(target, str):
            host = target
            target = host_addresses.get(host)
            if target is None and host in config.hosts:
                target = config.hosts[host].address
        if target is not None:
            target = ipaddress.IPv4Address(str(target))
            if target not in config.lan_network or target == config.lan_ip:
                target = None
        rules.append(ForwardRule(name, f.proto, f.wan_port, target, f.to_port,
                                 MARK_BASE | index, host))
    return tuple(rules)


@attr.s(frozen=True)
class FlowPolicy:
    """
    Everything a verdict depends on; build it with `FlowPolicy.build`.
    Frozen: a change in the office makes a new policy.
    """

    mode = attr.ib()
    lan_network = attr.ib()     # IPv4Network
    lan_ip = attr.ib()          # IPv4Address
    wan_ip = attr.ib()          # IPv4Address or None
    wan_network = attr.ib()     # IPv4Network or None
    lan_interface = attr.ib()
    wan_interface = attr.ib()
    lan_only = attr.ib()        # {(proto, port): name}
    public = attr.ib()          # {(proto, port): name}
    dmz_open = attr.ib()        # frozenset of (proto, port)
    forwards = attr.ib()        # tuple of ForwardRule
    sip_port = attr.ib(default=None)    # the SIP service's port, None when disabled
    rtp_ports = attr.ib(default=None)   # (low, high): its media ports
    vpn_interface = attr.ib(default=None)   # the tunnel's interface, None when off
    vpn_port = attr.ib(default=None)        # its UDP port on the WAN
    # Integer forms for the hot path, derived in __attrs_post_init__.
    _fast = attr.ib(init=False, repr=False, eq=False)

    @classmethod
    def build(cls, config, wan_address=None, host_addresses=None):
        """The policy for `config`, the WAN address in use (IPv4Interface or
        None) and the LAN hosts' current DHCP addresses {name: address}."""
        if wan_address is None and config.wan.mode == "static":
            wan_address = config.wan.address
        return cls(
            mode=config.security.mode,
            lan_network=config.lan_network, lan_ip=config.lan_ip,
            wan_ip=wan_address.ip if wan_address is not None else None,
            wan_network=wan_address.network if wan_address is not None else None,
            lan_interface=config.lan.interface, wan_interface=config.wan.interface,
            lan_only=lan_only_ports(config), public=public_ports(config),
            dmz_open=frozenset((proto, port) for port, proto in config.security.dmz_open),
            forwards=resolve_forwards(config, host_addresses),
            sip_port=config.sip.port if config.sip.enabled else None,
            rtp_ports=config.sip.rtp_ports if config.sip.enabled else None,
            vpn_interface=config.vpn.interface if config.vpn.enabled else None,
            vpn_port=config.vpn.port if config.vpn.enabled else None)

    def __attrs_post_init__(self):
        net = self.lan_network
        wan_bcast = (int(self.wan_network.broadcast_address)
                     if self.wan_network is not None else None)
        proto_num = {"tcp": TCP, "udp": UDP}
        object.__setattr__(self, "_fast", {
            "lan_net": int(net.network_address),
            "lan_mask": int(net.netmask),
            "lan_ip": int(self.lan_ip),
            "lan_bcast": int(net.broadcast_address),
            "wan_ip": int(self.wan_ip) if self.wan_ip is not None else None,
            "wan_bcast": wan_bcast,
            "lan_only": {(proto_num[p], port): "%s is LAN-only" % name
                         for (p, port), name in self.lan_only.items()},
            "public": {(proto_num[p], port): name for (p, port), name in self.public.items()},
            "dmz_open": frozenset([(proto_num[p], port) for p, port in self.dmz_open] +
                                  ([(UDP, self.vpn_port)] if self.vpn_port else [])),
            # In DMZ mode the media ports follow SIP: open when its port is.
            "dmz_rtp": self.rtp_ports if (("udp", self.sip_port) in self.dmz_open or
                                          ("tcp", self.sip_port) in self.dmz_open) else None,
            "forwards": {(proto_num[r.proto], r.wan_port): r for r in self.forwards},
        })

    @property
    def inspects(self):
        """True in the modes whose new flows the hook decides."""
        return self.mode in FIREWALL_MODES

    @property
    def nat(self):
        """True in the modes that masquerade the LAN behind the WAN address."""
        return self.mode in FIREWALL_MODES


# Reasons are constants: the hook keeps them in the log without formatting.
R_LOCAL = "the server's own traffic"
R_LAN_TO_SERVER = "LAN to the server"
R_LAN_OUT = "LAN to the internet, masqueraded behind the WAN address"
R_SPOOFED = "source is not a LAN address"
R_NO_SYN = "TCP without SYN opens no connection"
R_LAN_INVISIBLE = "the LAN is not visible from the WAN"
R_NOT_OURS = "not addressed to this office"
R_NO_WAN = "the WAN address is not known yet"
R_DHCP_CLIENT = "DHCP reply to the server's WAN client"
R_BROADCAST = "broadcast from the WAN"
R_PING = "ping of the server's WAN address"
R_ICMP = "ICMP type not served on the WAN"
R_PROTO = "protocol not served on the WAN"
R_OWN_PORT = "the server's own WAN address (guarded only in DMZ mode)"
R_DMZ_OPEN = "open in dmz_open"
R_DMZ_STEALTH = "DMZ stealth: port not in dmz_open"
R_DMZ_RTP = "RTP media port (SIP is in dmz_open)"
R_DMZ_PING = "DMZ stealth: no ping"
R_DMZ_PROTO = "DMZ stealth: protocol not open"
R_ROUTER = "router mode: forwarded, no firewall"
R_LAN_ONLY_MODE_LAN = "lan-only mode: the server does not route"
R_LAN_ONLY_MODE_WAN = "lan-only mode: the WAN is unused"


def verdict(policy, flow):
    """
    What happens to the first packet of `flow` under `policy`: (action, reason)
    with action one of ACCEPT, DROP, REJECT and reason a sentence.
    """
    action, reason, _ = decide(policy, flow)
    return action, reason


def decide(policy, flow):
    """`verdict` plus the packet mark that selects a forward's DNAT (0: none)."""
    f = policy._fast
    side = flow.side
    if side == LOCAL:
        return ACCEPT, R_LOCAL, 0
    dst = flow.dst
    proto = flow.proto
    mode = policy.mode
    to_server = dst == f["lan_ip"] or (f["wan_ip"] is not None and dst == f["wan_ip"])
    in_lan = (dst & f["lan_mask"]) == f["lan_net"]

    if side == LAN:
        if (flow.src & f["lan_mask"]) != f["lan_net"] and flow.src != 0:
            return DROP, R_SPOOFED, 0
        if to_server or in_lan or dst == 0xFFFFFFFF:
            return ACCEPT, R_LAN_TO_SERVER, 0
        if mode == "lan-only":
            return REJECT, R_LAN_ONLY_MODE_LAN, 0
        if mode == "router":
            return ACCEPT, R_ROUTER, 0
        if proto == TCP and not flow.syn:
            return DROP, R_NO_SYN, 0
        return ACCEPT, R_LAN_OUT, 0

    # From the WAN.
    if proto == UDP and flow.sport == 67 and flow.dport == 68:
        return ACCEPT, R_DHCP_CLIENT, 0
    if mode == "lan-only":
        return DROP, R_LAN_ONLY_MODE_WAN, 0
    key = (proto, flow.dport)
    if to_server:
        # LAN-side services are guarded in every mode that uses the WAN.
        lan_only = f["lan_only"].get(key) if proto in (TCP, UDP) else None
        if mode == "router":
            if lan_only is not None:
                return DROP, lan_only, 0
            return ACCEPT, R_ROUTER, 0
        if dst != f["wan_ip"]:
            # The LAN address reached from the WAN side.
            return DROP, R_LAN_INVISIBLE, 0
        if proto in (TCP, UDP):
            rule = f["forwards"].get(key)
            if rule is not None:
                if proto == TCP and not flow.syn:
                    return DROP, R_NO_SYN, 0
                if rule.target is None:
                    return DROP, rule.reason, 0
                return ACCEPT, rule.reason, rule.mark
            if lan_only is not None:
                return DROP, lan_only, 0
            if proto == TCP and not flow.syn:
                return DROP, R_NO_SYN, 0
            if mode == "firewall-nat-dmz":
                if key in f["dmz_open"]:
                    return ACCEPT, R_DMZ_OPEN, 0
                rtp = f["dmz_rtp"]
                if proto == UDP and rtp is not None and rtp[0] <= flow.dport <= rtp[1]:
                    return ACCEPT, R_DMZ_RTP, 0
                return DROP, R_DMZ_STEALTH, 0
            name = f["public"].get(key)
            return ACCEPT, (name or R_OWN_PORT), 0
        if proto == ICMP:
            if mode == "firewall-nat-dmz":
                return DROP, R_DMZ_PING if flow.dport == ICMP_ECHO_REQUEST else R_DMZ_PROTO, 0
            if flow.dport == ICMP_ECHO_REQUEST:
                return ACCEPT, R_PING, 0
            return DROP, R_ICMP, 0
        return DROP, R_DMZ_PROTO if mode == "firewall-nat-dmz" else R_PROTO, 0
    if mode == "router":
        return ACCEPT, R_ROUTER, 0
    if in_lan:
        return DROP, R_LAN_INVISIBLE, 0
    if dst == 0xFFFFFFFF or dst == f["wan_bcast"] or (dst >> 28) == 0xE:
        return DROP, R_BROADCAST, 0
    if f["wan_ip"] is None:
        return DROP, R_NO_WAN, 0
    return DROP, R_NOT_OURS, 0
