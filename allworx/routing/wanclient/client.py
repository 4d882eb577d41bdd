# -*- test-case-name: allworx.tests.wanclient.test_client -*-
"""
The DHCP client of the WAN interface (RFC 2131 client side; guide 5: it
takes the address, netmask and router, never DNS servers or domain).

Three parts:

- `DhcpClientCore` (`allworx.routing.wanclient.core`) plus the automat
  machine built here by `_build_machine`: the
  states INIT, SELECTING, REQUESTING, BOUND, RENEWING, REBINDING and
  INIT-REBOOT, plus CHECKING (the final ARP check of a new address, RFC 2131
  4.4.1, ending in BOUND or a DHCPDECLINE), declared as transitions on
  `TypeMachineBuilder`, the way Twisted declares ClientService's. Timers (retransmission with exponential
  backoff, T1, T2, lease end) run on the injected IReactorTime, so the tests
  drive the whole protocol with `task.Clock` and a fake wire.
- `PacketWire` (`allworx.routing.wanclient.wire`): a packet socket on the
  interface in the reactor, so a client with no address can send from
  0.0.0.0 and hear replies to an address it does not have yet.
- `WanDhcpClient`: wires the two together, loads and saves the lease under
  data_dir (so a restart asks for the same address: INIT-REBOOT), and tells
  its listener (the network service) `dhcp_bound`, `dhcp_lost`,
  `dhcp_state_changed`.

Why not pyroute2's DHCP client: it is an asyncio program with its own event
loop and its own idea of applying addresses and running hooks; here the
reactor owns the loop and the network service owns the interfaces. Why not
scapy: importing it takes over a second and its packet objects are heavy;
the client needs a few hundred bytes of struct packing (the DHCP codec it
shares with the LAN server, `allworx.protocols.dhcp.codec`, and its own
messages in `allworx.routing.wanclient.packets`).
"""

from typing import Protocol

from automat import TypeMachineBuilder, pep614
from twisted.internet import threads
from twisted.logger import Logger

from allworx.atomicfile import JsonStateFile
from allworx.routing.wanclient.core import (  # noqa: F401  (NAK_DELAY: tests time the pause)
    DECLINE_WAIT, NAK_DELAY, PROBE_SPACING, PROBE_WAIT, DhcpClientCore)
from allworx.protocols.dhcp.codec import MESSAGE, read_option
from allworx.routing.wanclient.packets import DhcpMessage, Lease
from allworx.routing.wanclient.wire import PacketWire

log = Logger()

class _Inputs(Protocol):
    """What can happen to the client: calls, replies, timers."""

    def start(self) -> None:
        "Begin with no lease to reuse."

    def start_reboot(self, lease: Lease) -> None:
        "Begin by asking to keep a saved, unexpired lease (INIT-REBOOT)."

    def discover(self) -> None:
        "The pause in INIT is over: broadcast DHCPDISCOVER."

    def offer(self, msg: DhcpMessage, lease: Lease) -> None:
        "A usable DHCPOFFER arrived."

    def offers_in(self) -> None:
        "The time to collect offers is over: request the best one."

    def ack(self, lease: Lease) -> None:
        "A usable DHCPACK arrived."

    def nak(self, msg: DhcpMessage) -> None:
        "A DHCPNAK arrived."

    def retransmit(self) -> None:
        "No answer yet: send the last message again."

    def give_up(self) -> None:
        "No answer after every retransmission: start over."

    def keep_saved(self, lease: Lease) -> None:
        "INIT-REBOOT went unanswered but the saved lease is still valid: use it."

    def renew(self) -> None:
        "T1: ask the server that granted the lease to extend it."

    def rebind(self) -> None:
        "T2: ask any server."

    def expire(self) -> None:
        "The lease ran out."

    def address_free(self) -> None:
        "CHECKING: no other host answered the ARP probes for the new address."

    def address_in_use(self, mac: str) -> None:
        "CHECKING: the host with this MAC answered for the new address."

    def link_returned(self) -> None:
        "The interface's carrier came back: the network may have changed (RFC 2131 3.7)."

    def stop(self) -> None:
        "Stop: cancel timers; the lease stays saved for the next start."


def _build_machine():
    builder = TypeMachineBuilder(_Inputs, DhcpClientCore)
    stopped = builder.state("STOPPED")
    init = builder.state("INIT")
    selecting = builder.state("SELECTING")
    requesting = builder.state("REQUESTING")
    init_reboot = builder.state("INIT-REBOOT")
    bound = builder.state("BOUND")
    renewing = builder.state("RENEWING")
    rebinding = builder.state("REBINDING")
    # Not one of RFC 2131's states by name: its "final check" of a new
    # address (4.4.1) between the DHCPACK and BOUND, done by ARP.
    checking = builder.state("CHECKING")

    @pep614(stopped.upon(_Inputs.start).to(init))
    def begin(c, s):
        s.enter("INIT")
        s.schedule("discover", 0, c.discover)

    @pep614(stopped.upon(_Inputs.start_reboot).to(init_reboot))
    def begin_reboot(c, s, lease):
        s.preferred, s.preferred_lease = lease.address.ip, lease
        s.enter("INIT-REBOOT")
        s.new_exchange()
        s.send_request("init-reboot")
        s.schedule("retransmit", s.backoff(), s.retry_due)

    @pep614(init.upon(_Inputs.discover).to(selecting))
    def discover(c, s):
        s.enter("SELECTING")
        s.new_exchange()
        s.offers = []
        s.send_discover()
        s.schedule("retransmit", s.backoff(), s.retry_due)

    @pep614(selecting.upon(_Inputs.retransmit).loop())
    def rediscover(c, s):
        s.send_discover()
        s.schedule("retransmit", s.backoff(), s.retry_due)

    @pep614(selecting.upon(_Inputs.offer).loop())
    def collect(c, s, msg, lease):
        log.info("wan: DHCPOFFER of {address} from {server}",
                 address=str(lease.address), server=str(lease.server))
        s.offers.append((msg, lease))
        if s.preferred is not None and lease.address.ip == s.preferred:
            s.cancel("select")
            c.offers_in()   # automat runs it once this transition is complete
        elif len(s.offers) == 1:
            s.schedule("select", s.select_window, c.offers_in)

    @pep614(selecting.upon(_Inputs.offers_in).to(requesting))
    def request(c, s):
        s.chosen = choose_offer(s.offers, s.preferred)
        s.enter("REQUESTING")
        s.attempt = 0
        s.send_request("selecting")
        s.schedule("retransmit", s.backoff(), s.retry_due)

    @pep614(requesting.upon(_Inputs.retransmit).loop())
    @pep614(init_reboot.upon(_Inputs.retransmit).loop())
    def rerequest(c, s):
        s.send_request("selecting" if s.state == "REQUESTING" else "init-reboot")
        s.schedule("retransmit", s.backoff(), s.retry_due)

    @pep614(requesting.upon(_Inputs.give_up).to(init))
    @pep614(init_reboot.upon(_Inputs.give_up).to(init))
    def start_over(c, s):
        s.wire.end_probe()
        s.checking = None
        s.lose("no answer from any DHCP server")
        s.enter("INIT")
        s.schedule("discover", 0, c.discover)

    @pep614(requesting.upon(_Inputs.ack).to(checking))
    def check(c, s, lease):
        s.checking = lease
        s.enter("CHECKING")
        log.info("wan: checking that {ip} is free (ARP)", ip=str(lease.address.ip))
        s.wire.start_probe(lease.address.ip, s.mac, s.conflict)
        s.schedule("probe", PROBE_SPACING, s.wire.probe_again)
        s.schedule("probed", PROBE_WAIT, c.address_free)

    @pep614(checking.upon(_Inputs.address_free).to(bound))
    def checked(c, s):
        s.wire.end_probe()
        lease, s.checking = s.checking, None
        s.bound(lease)

    @pep614(checking.upon(_Inputs.address_in_use).to(init))
    def decline(c, s, mac):
        s.wire.end_probe()
        lease, s.checking = s.checking, None
        log.warn("wan: {ip} is already used by {mac}; DHCPDECLINE to {server}",
                 ip=str(lease.address.ip), mac=mac, server=str(lease.server))
        s.send_decline(lease)
        s.preferred = None
        s.enter("INIT")
        s.schedule("discover", DECLINE_WAIT, c.discover)

    @pep614(init_reboot.upon(_Inputs.ack).to(bound))
    @pep614(renewing.upon(_Inputs.ack).to(bound))
    @pep614(rebinding.upon(_Inputs.ack).to(bound))
    @pep614(init_reboot.upon(_Inputs.keep_saved).to(bound))
    def bind(c, s, lease):
        s.bound(lease)

    @pep614(requesting.upon(_Inputs.nak).to(init))
    @pep614(init_reboot.upon(_Inputs.nak).to(init))
    @pep614(renewing.upon(_Inputs.nak).to(init))
    @pep614(rebinding.upon(_Inputs.nak).to(init))
    def refused(c, s, msg):
        text = read_option(msg.options, MESSAGE, "")
        reason = "DHCPNAK from %s%s" % (msg.server_id, ": " + text if text else "")
        log.warn("wan: {reason}", reason=reason)
        s.lose(reason)
        s.enter("INIT")
        s.schedule("discover", NAK_DELAY, c.discover)

    @pep614(bound.upon(_Inputs.renew).to(renewing))
    def renew(c, s):
        s.enter("RENEWING")
        s.new_exchange()
        s.send_request("renewing")
        s.schedule("retransmit", s.retry_interval(s.lease.rebind_at), s.retry_due)

    @pep614(renewing.upon(_Inputs.retransmit).loop())
    def rerenew(c, s):
        s.send_request("renewing")
        s.schedule("retransmit", s.retry_interval(s.lease.rebind_at), s.retry_due)

    @pep614(bound.upon(_Inputs.rebind).to(rebinding))
    @pep614(renewing.upon(_Inputs.rebind).to(rebinding))
    def rebind(c, s):
        s.enter("REBINDING")
        s.new_exchange()
        s.send_request("rebinding")
        s.schedule("retransmit", s.retry_interval(s.lease.expires_at), s.retry_due)

    @pep614(rebinding.upon(_Inputs.retransmit).loop())
    def rerebind(c, s):
        s.send_request("rebinding")
        s.schedule("retransmit", s.retry_interval(s.lease.expires_at), s.retry_due)

    @pep614(bound.upon(_Inputs.link_returned).to(init_reboot))
    @pep614(renewing.upon(_Inputs.link_returned).to(init_reboot))
    @pep614(rebinding.upon(_Inputs.link_returned).to(init_reboot))
    def verify(c, s):
        # The address stays in use while the server confirms it; only the
        # lease's end still counts.
        s.cancel("t1", "t2")
        s.preferred, s.preferred_lease = s.lease.address.ip, s.lease
        s.enter("INIT-REBOOT")
        s.new_exchange()
        s.send_request("init-reboot")
        s.schedule("retransmit", s.backoff(), s.retry_due)

    @pep614(selecting.upon(_Inputs.link_returned).loop())
    def rediscover_now(c, s):
        s.attempt = 0
        s.send_discover()
        s.schedule("retransmit", s.backoff(), s.retry_due)

    @pep614(init_reboot.upon(_Inputs.link_returned).loop())
    def rerequest_now(c, s):
        s.attempt = 0
        s.send_request("init-reboot")
        s.schedule("retransmit", s.backoff(), s.retry_due)

    requesting.upon(_Inputs.link_returned).to(init)(start_over)
    checking.upon(_Inputs.link_returned).to(init)(start_over)
    init.upon(_Inputs.link_returned).loop().returns(None)
    stopped.upon(_Inputs.link_returned).loop().returns(None)

    @pep614(bound.upon(_Inputs.expire).to(init))
    @pep614(renewing.upon(_Inputs.expire).to(init))
    @pep614(rebinding.upon(_Inputs.expire).to(init))
    @pep614(init_reboot.upon(_Inputs.expire).to(init))
    def expired(c, s):
        s.lose("lease of %s expired" % s.lease.address)
        s.enter("INIT")
        s.schedule("discover", 0, c.discover)

    for state in (init, selecting, requesting, checking, init_reboot, bound, renewing,
                  rebinding):
        @pep614(state.upon(_Inputs.stop).to(stopped))
        def halt(c, s):
            s.cancel()
            s.wire.end_probe()
            s.checking = None
            s.enter("STOPPED")
    stopped.upon(_Inputs.stop).loop().returns(None)

    return builder.build()


_Machine = _build_machine()


def make_client_machine(core):
    """The automat machine driving `core`; its inputs are `_Inputs`' methods."""
    machine = _Machine(core)
    core.machine = machine
    return machine


def choose_offer(offers, preferred=None):
    """The offer to request: the one of the address we had, else the first."""
    for offer in offers:
        if preferred is not None and offer[1].address.ip == preferred:
            return offer
    return offers[0]


# ---------------------------------------------------------------- persistence

class LeaseFile:
    """The WAN lease kept under data_dir (JSON), so a restart can ask for it again."""

    def __init__(self, path, defer_to_thread=threads.deferToThread):
        self.file = JsonStateFile(path, "the WAN DHCP lease", defer_to_thread)

    def load(self):
        """The saved Lease, or None (missing or unusable: logged)."""
        data = self.file.load()
        if data is None:
            return None
        try:
            return Lease.from_json(data)
        except ValueError as e:
            log.warn("wan: ignoring {path}: {why}", path=self.file.path, why=str(e))
            return None

    def save(self, lease):
        return self.file.save(lease.as_json())

    def clear(self):
        """Forget the saved lease."""
        return self.file.clear()


# ---------------------------------------------------------------- the client

class WanDhcpClient:
    """
    The WAN interface's DHCP client as the network service uses it:
    `start()`, `stop()`, `state`, `lease`. `listener` gets `dhcp_bound(lease,
    renewed)`, `dhcp_lost(reason)` and `dhcp_state_changed(state)`.
    """

    def __init__(self, ifname, mac, listener, reactor, lease_path, hostname=None,
                 avoid=(), wire_factory=PacketWire, store=None, jitter=None):
        self.ifname = ifname
        self.store = store if store is not None else LeaseFile(lease_path)
        self.core = DhcpClientCore(mac, reactor, wire=None, listener=listener,
                                   store=self.store, hostname=hostname, avoid=avoid,
                                   ifname=ifname, jitter=jitter)
        self.wire = wire_factory(ifname, reactor, self.core.receive)
        self.core.wire = self.wire
        self.machine = make_client_machine(self.core)

    @property
    def state(self):
        return self.core.state

    @property
    def lease(self):
        return self.core.lease

    def start(self):
        """Open the sockets and begin: INIT-REBOOT with a saved lease, else INIT."""
        self.wire.open()
        saved = self.store.load()
        if saved is not None and saved.expires_at > self.core.now() + 1:
            log.info("wan: asking again for {address} (saved lease)",
                     address=str(saved.address))
            self.machine.start_reboot(saved)
        else:
            if saved is not None:
                self.core.preferred = saved.address.ip
            self.machine.start()

    def link_returned(self):
        """The WAN's carrier is back (cable replugged, modem restarted): check the lease."""
        log.info("wan: {ifname} link is back", ifname=self.ifname)
        self.machine.link_returned()

    def stop(self, release=False):
        """
        Stop timers and close the sockets. The lease stays saved for the next
        start, unless `release`: then the server is told (DHCPRELEASE) and the
        saved lease is forgotten (the WAN is no longer run by DHCP).
        """
        if release and self.core.lease is not None:
            self.core.send_release()
            self.store.clear()
        self.machine.stop()
        self.wire.close()
