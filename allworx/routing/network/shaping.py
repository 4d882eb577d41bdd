# -*- test-case-name: allworx.tests.network.test_shaping -*-
"""
Voice first on the WAN uplink (SPEC 16, guide 11): with `[wan] upload_kbit`
set, the WAN interface's egress is shaped a little under the line's speed,
so the queue builds here, where voice can jump it, and not in the modem.

The tree, through pyroute2's `tc` (this kernel has HTB, TBF and u32; no
fq_codel, cake or sfq, so the leaves are pfifo):

    1:   htb root, default 1:20
    1:1  class rate = ceil = upload_kbit
    1:10 voice  prio 0, rate min(upload, max(256 kbit, 30 %)), ceil upload; pfifo 10:
    1:20 the rest  prio 1, rate what is left (at least 8 kbit), ceil upload; pfifo 20:

u32 filters on the root put into 1:10 IPv4 packets whose DSCP is EF (46,
RTP: allworx.dscp marks what the server sends; phones mark their own) or
CS3 (24, SIP), and the tunnel's small packets (below).

WireGuard does not copy the inner packet's DSCP to the outer header, so
marked voice inside the tunnel leaves the WAN unmarked. What the shaper
can see is the size: an RTP packet of G.711 in the tunnel is ~270 bytes on
the wire, bulk transfers are full-size packets. So UDP from the WireGuard
port (`[vpn] port`, which WireGuard sends everything from) shorter than
512 bytes goes to the voice class: cross-site calls (and the tunnel's own
TCP acknowledgements, keep-alives and small DNS answers) go first, while
big transfers through the tunnel share the default class with the rest.
Without `[vpn] enabled` there is no tunnel filter.

`plan_shaping(config, wan_interface)` is the tree a config asks for (a
`Shaping`, or None for none); `tc_calls(shaping, index)` the `IPRoute.tc`
calls that build it; `WanShaper` applies it, replaces it when the plan
changes (a new root: the old one is deleted first, with its classes and
filters) and removes it when shaping is switched off or the service stops.
With shaping on, the root qdisc of the WAN interface is ours.

The server's own TCP (an upload from its namespace: mail, backups) hands
the qdisc GSO packets of up to 64 KB, which HTB sends as one: at 2 Mbit/s
one of them holds the line for 260 ms, and a voice packet behind it in the
modem waits as long. So while shaping, the WAN's `gso_max_size` is lowered
to what the line sends in about 10 ms (`gso_size`, at least 3,000 bytes:
two full-size packets, the fewest TCP puts in one anyway) and put back to
what it was when shaping ends. It acts on connections opened after the
change (a socket takes the size when it connects) and not on forwarded
packets (GRO's are segmented only after the qdisc). Should the server die
while shaping, the lowered size stays until the interface is made anew.
"""

import errno

import attr
from twisted.logger import Logger

from allworx.routing.network.links import InterfaceMissing, _netlink_error

log = Logger()

ETH_P_IP = 0x0800
ROOT, PARENT, VOICE, BULK = 0x10000, 0x10001, 0x10010, 0x10020
VOICE_LEAF, BULK_LEAF = 0x100000, 0x200000
DEFAULT_MINOR = 0x20
VOICE_FLOOR_KBIT = 256
VOICE_SHARE = 0.30
BULK_FLOOR_KBIT = 8
VOICE_QUEUE = 64            # packets: 1.3 s of one call; voice never waits long anyway
BULK_QUEUE_SECONDS = 0.2    # the default class's queue: about this long at the full rate
TUNNEL_SMALL = 512          # outer packets of the tunnel shorter than this are voice
EF, CS3 = 0xB8, 0x60
DSCP_MASK = 0xFC
GSO_HOLD_SECONDS = 0.010    # one local GSO packet holds the uplink about this long at most
GSO_FLOOR = 3000            # bytes: two full-size packets


@attr.s(frozen=True, slots=True)
class Shaping:
    """One shaping tree: rates in kbit/s; `tunnel_port` the WireGuard port, or None."""

    interface = attr.ib()
    upload_kbit = attr.ib()
    voice_kbit = attr.ib()
    bulk_kbit = attr.ib()
    tunnel_port = attr.ib(default=None)

    def describe(self):
        return "%s shaped to %d kbit/s (voice %d kbit/s guaranteed)" % (
            self.interface, self.upload_kbit, self.voice_kbit)


def plan_shaping(config, wan_interface):
    """The tree `config` asks for on `wan_interface` (None: the WAN is unused), or None."""
    kbit = config.wan.upload_kbit
    if not kbit or not wan_interface:
        return None
    voice = min(kbit, max(VOICE_FLOOR_KBIT, int(kbit * VOICE_SHARE)))
    bulk = max(BULK_FLOOR_KBIT, kbit - voice)
    port = config.vpn.port if config.vpn.enabled else None
    return Shaping(wan_interface, kbit, voice, bulk, port)


def gso_size(upload_kbit):
    """The WAN's gso_max_size while shaping at `upload_kbit`, in bytes."""
    return max(GSO_FLOOR, int(upload_kbit * 1000 / 8 * GSO_HOLD_SECONDS))


def byte_keys(matches):
    """
    u32 keys in pyroute2's text form for (offset, value, mask) byte matches
    in the IP header. One key per byte: pyroute2 packs the nonzero bytes of a
    wider mask next to each other, which would move a match such as
    `0x05000000/0x0f00fe00`.
    """
    return ["0x%02x/0x%02x+%d" % (value, mask, offset) for offset, value, mask in matches]


def filter_matches(shaping):
    """(preference, byte matches) of each filter into the voice class."""
    out = [(1, [(1, EF, DSCP_MASK)]),
           (2, [(1, CS3, DSCP_MASK)])]
    if shaping.tunnel_port is not None:
        port = shaping.tunnel_port
        out.append((3, [(0, 0x05, 0x0F),                         # a 20-byte header (no options)
                        (2, 0x00, (~(TUNNEL_SMALL - 1) >> 8) & 0xFF),   # total length < 512
                        (9, 17, 0xFF),                            # UDP
                        (20, port >> 8, 0xFF), (21, port & 0xFF, 0xFF)]))  # from the WG port
    return out


def _kbit(value):
    return "%dkbit" % value


def tc_calls(shaping, index):
    """The `IPRoute.tc` calls, as (args, kwargs), that build `shaping` on interface `index`."""
    upload = shaping.upload_kbit
    bulk_queue = max(16, min(1000, int(upload * 1000 * BULK_QUEUE_SECONDS / (1500 * 8))))
    calls = [
        (("add", "htb", index, ROOT), {"default": DEFAULT_MINOR}),
        (("add-class", "htb", index, PARENT),
         {"parent": ROOT, "rate": _kbit(upload), "ceil": _kbit(upload)}),
        (("add-class", "htb", index, VOICE),
         {"parent": PARENT, "rate": _kbit(shaping.voice_kbit), "ceil": _kbit(upload), "prio": 0}),
        (("add-class", "htb", index, BULK),
         {"parent": PARENT, "rate": _kbit(shaping.bulk_kbit), "ceil": _kbit(upload), "prio": 1}),
        (("add", "pfifo", index, VOICE_LEAF), {"parent": VOICE, "limit": VOICE_QUEUE}),
        (("add", "pfifo", index, BULK_LEAF), {"parent": BULK, "limit": bulk_queue}),
    ]
    for preference, matches in filter_matches(shaping):
        calls.append((("add-filter", "u32", index),
                      {"parent": ROOT, "prio": preference, "protocol": ETH_P_IP,
                       "target": VOICE, "keys": byte_keys(matches)}))
    return calls


class WanShaper:
    """
    Keeps the WAN's shaping tree as planned, over a `links.Netlink` (its
    `ipr` is pyroute2's IPRoute or a fake). `shape(plan)` returns a problem
    sentence, or None when the tree is as planned (or the interface is not
    there yet: the network service reports that and applies again).
    """

    def __init__(self, netlink):
        self.netlink = netlink
        self.applied = None         # the Shaping in force
        self.index = None           # the interface index it is on
        self.gso = None             # (index, gso_max_size before ours) while ours is set

    def shape(self, wanted):
        if wanted is not None and wanted == self.applied and self._index(wanted) == self.index:
            return None
        if wanted is None and self.applied is None:
            return None
        self.remove()
        if wanted is None:
            return None
        index = self._index(wanted)
        if index is None:
            return None
        action = "shape the uplink of %s" % wanted.interface
        self._delete_root(index)     # what stood there before (a previous run's tree)
        try:
            for args, kwargs in tc_calls(wanted, index):
                self.netlink.ipr.tc(*args, **kwargs)
        except Exception as e:
            if getattr(e, "code", None) is None:
                raise
            self._delete_root(index)
            problem = str(_netlink_error(e, action))
            log.warn("network: {problem}", problem=problem)
            return problem
        self.applied, self.index = wanted, index
        self._lower_gso(index, gso_size(wanted.upload_kbit))
        log.info("network: {what}", what=wanted.describe())
        return None

    def remove(self):
        """Take our tree off (the interface gets its default queue back)."""
        applied, self.applied = self.applied, None
        if applied is None:
            return
        if self._index(applied) == self.index:
            self._delete_root(self.index)
        self._restore_gso()
        log.info("network: {ifname} no longer shaped", ifname=applied.interface)
        self.index = None

    def _lower_gso(self, index, size):
        """The interface's GSO packets no bigger than `size` (never raised); the old size kept."""
        try:
            link = list(self.netlink.ipr.get_links(index))[0]
            before = link.get("IFLA_GSO_MAX_SIZE")
            if before is None or before <= size:
                return
            self.netlink.ipr.link("set", index=index, gso_max_size=size)
        except Exception as e:
            if getattr(e, "code", None) is None:
                raise
            log.warn("network: {problem}", problem=str(_netlink_error(
                e, "lower the GSO size of interface %d" % index)))
            return
        self.gso = (index, before)
        log.info("network: GSO packets on interface {index} at most {size} bytes while "
                 "shaping (were {before})", index=index, size=size, before=before)

    def _restore_gso(self):
        gso, self.gso = self.gso, None
        if gso is None:
            return
        index, before = gso
        try:
            self.netlink.ipr.link("set", index=index, gso_max_size=before)
        except Exception as e:
            code = getattr(e, "code", None)
            if code is None:
                raise
            if code != errno.ENODEV:        # an interface gone took its setting with it
                log.warn("network: {problem}", problem=str(_netlink_error(
                    e, "restore the GSO size of interface %d" % index)))

    def _index(self, shaping):
        try:
            return self.netlink.index(shaping.interface)
        except InterfaceMissing:
            return None

    def _delete_root(self, index):
        try:
            self.netlink.ipr.tc("del", "htb", index, ROOT)
        except Exception as e:
            code = getattr(e, "code", None)
            if code is None:
                raise
            if code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                log.warn("network: {problem}", problem=str(
                    _netlink_error(e, "remove the shaping of interface %d" % index)))

