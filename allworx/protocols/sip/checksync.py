# -*- test-case-name: allworx.tests.sip.test_checksync -*-
"""
Telling a provisioned phone to fetch its file again (SPEC 19, ICheckSync):
an out-of-dialog NOTIFY with the phone's vendor event, `Subscription-State:
terminated`, sent to the contact the phone registered.

The events, as the vendors' administrator guides name them:
- Yealink, Polycom, Grandstream, and baresip-style generic phones:
  `Event: check-sync`. A Yealink phone with `sip.notify_reboot_enable = 0`
  re-provisions without a reboot unless the event says `reboot=true`
  (Yealink administrator guide, "How to reboot the IP phone remotely");
  a Polycom phone reboots only when its files changed, with
  `voIpProt.SIP.specialEvent.checkSync.alwaysReboot = 0`.
- Snom: `Event: check-sync;reboot=false` (re-read the settings, no reboot;
  the same event Gigaset's provisioning documentation describes).
- Cisco/Linksys SPA: `Event: resync`.

Which contact is the phone: a registration the phone made with its own
secret (the registrar notes the MAC), else one from the address that holds
the MAC's DHCP lease (or, without the lease table, the address it last
fetched its file from), else a registration of the owner whose User-Agent
names that vendor. A phone that challenges the NOTIFY (Polycom and Yealink
may) is answered once with its own credentials: the extension and its secret.

`config_changed` resyncs each phone whose file would change: its `[phone]`
section, its owner's name, extension or password, or the server's address,
domain, SIP ports, voicemail number or provisioning port. Several changes
in a row make one NOTIFY per phone (RESYNC_DELAY).
"""

import os

from prometheus_client import Counter
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from allworx.config.phones import normalise_mac
from allworx.interfaces import ICheckSync
from allworx.protocols.sip.core import Destination
from allworx.protocols.sip.digest import DigestError, answer
from allworx.protocols.sip.message import Request

log = Logger()

RESYNCS = Counter("allworx_sip_checksync_total", "check-sync NOTIFYs by outcome", ["outcome"])

RESYNC_DELAY = 2.0

EVENTS = {
    "yealink": "check-sync",
    "polycom": "check-sync",
    "grandstream": "check-sync",
    "generic": "check-sync",
    "snom": "check-sync;reboot=false",
    "cisco-spa": "resync",
}

# What each family's User-Agent header contains (lower case).
AGENTS = {
    "yealink": ("yealink",),
    "polycom": ("polycom",),
    "grandstream": ("grandstream",),
    "snom": ("snom",),
    "cisco-spa": ("cisco/spa", "linksys/spa", "cisco-spa"),
    "generic": ("baresip",),
}


def model_of_agent(user_agent):
    """The phone family a User-Agent names, or None."""
    agent = (user_agent or "").lower()
    for model, marks in AGENTS.items():
        if any(m in agent for m in marks):
            return model
    return None


def _same_mac(text, mac):
    try:
        return normalise_mac(str(text)) == mac
    except ValueError:
        return False


def file_inputs(config, mac):
    """What a phone's file is made of, as a value to compare; None without a [phone] section."""
    phone = config.phone_by_mac(mac)
    if phone is None:
        return None
    user = config.users.get(phone.user)
    owner = (user.full_name, user.extension, user.password, user.sip_digest) if user else None
    return (phone, owner, str(config.lan_ip), config.system.domain, config.sip.port,
            config.sip.tls_port, config.sip.voicemail_number, config.provisioning)


@implementer(ICheckSync)
class CheckSync:
    """
    ICheckSync over the SIP core: `registrar` for the contacts, `phonebook`
    (IPhoneBook) for the secret and the last fetch, `leases` (ILeaseTable,
    may be None) for the phone's address.
    """

    def __init__(self, core, registrar, office, clock, phonebook=None, leases=None):
        self.core = core
        self.registrar = registrar
        self.office = office
        self.clock = clock
        self.phonebook = phonebook
        self.leases = leases
        self.pending = {}       # mac -> (IDelayedCall of a coalesced resync, Binding seen then)

    # ------------------------------------------------------------ which contact

    def address_of(self, mac):
        """The phone's address: its lease's, else where it last fetched from; or None."""
        if self.leases is not None:
            for lease in self.leases.active_leases():      # dicts: mac, address, ...
                if _same_mac(lease.get("mac"), mac):
                    return str(lease["address"])
        if self.phonebook is not None:
            seen = self.phonebook.sightings().get(mac)
            if seen is not None:
                return seen.address
        return None

    def model_of(self, phone, mac):
        if phone is not None and phone.model is not None:
            return phone.model
        if self.phonebook is not None:
            seen = self.phonebook.sightings().get(mac)
            if seen is not None and seen.model is not None:
                return seen.model
        return None

    def binding_of(self, mac, phone, model):
        """The registration that is this phone, or None."""
        self.registrar.expire()
        every = [b for contacts in self.registrar.by_user.values() for b in contacts.values()]
        for b in every:
            if b.mac == mac:
                return b
        address = self.address_of(mac)
        if address is not None:
            for b in every:
                if b.source[0] == address:
                    return b
        if phone is not None and model is not None:
            for b in self.registrar.contacts_of(phone.user):
                if model_of_agent(b.user_agent) == model:
                    return b
        return None

    # ------------------------------------------------------------ ICheckSync

    def resync(self, mac):
        try:
            mac = normalise_mac(mac)
        except ValueError as e:
            log.warn("no check-sync: {why}", why=str(e))
            return defer.succeed(False)
        try:
            return self._resync(mac, self._cancel(mac))
        except Exception:
            log.failure("check-sync of phone {mac} failed", mac=mac)
            return defer.succeed(False)

    def _resync(self, mac, earlier=None):
        """`earlier`: the phone's registration when the change was seen (the change may end it)."""
        config = self.office.config
        phone = config.phone_by_mac(mac)
        binding = self.binding_of(mac, phone, self.model_of(phone, mac))
        if binding is None and earlier is not None and earlier.expires_at > self.clock.seconds():
            binding = earlier
        if binding is None:
            RESYNCS.labels("unregistered").inc()
            log.info("phone {mac} is not registered: no check-sync sent (it gets its new "
                     "file when it next starts)", mac=mac)
            return defer.succeed(False)
        model = self.model_of(phone, mac) or model_of_agent(binding.user_agent)
        event = EVENTS.get(model, "check-sync")
        done = defer.Deferred()
        dest = Destination(binding.transport, binding.source[0], binding.source[1])
        request = self._notify(binding, dest, event)
        log.info("check-sync ({event}) to phone {mac} at {contact}", event=event, mac=mac,
                 contact=binding.contact)
        self._send(request, dest, mac, binding, done, challenged=False)
        return done

    def _notify(self, binding, dest, event, cseq=1, call_id=None, tag=None, auth=None):
        core = self.core
        domain = self.office.config.system.domain
        headers = [
            ("Via", core.via_for(dest)), ("Max-Forwards", "70"),
            ("From", "<sip:%s>;tag=%s" % (domain, tag or core.new_tag())),
            ("To", "<sip:%s@%s>" % (binding.extension, domain)),
            ("Call-ID", call_id or "cs-%s@%s" % (os.urandom(8).hex(), domain)),
            ("CSeq", "%d NOTIFY" % cseq), ("Event", event),
            ("Subscription-State", "terminated"),
            ("Contact", "<sip:%s:%d>" % (core.local_host(dest.host), core.port_for(dest.transport))),
            ("User-Agent", "allworx")]
        if auth is not None:
            headers.append(auth)
        return Request(headers, method="NOTIFY", uri=binding.contact)

    def _send(self, request, dest, mac, binding, done, challenged):
        def on_response(response):
            if response.code < 200 or done.called:
                return
            if response.code in (401, 407) and not challenged:
                again = self._answer(request, response, mac, binding, dest)
                if again is not None:
                    self._send(again, dest, mac, binding, done, challenged=True)
                    return
            ok = 200 <= response.code < 300
            RESYNCS.labels("ok" if ok else "refused").inc()
            if not ok:
                log.info("phone {mac} refused check-sync: {code} {reason}", mac=mac,
                         code=response.code, reason=response.reason)
            done.callback(ok)

        def on_timeout():
            if not done.called:
                RESYNCS.labels("timeout").inc()
                log.info("phone {mac} did not answer check-sync at {contact}", mac=mac,
                         contact=binding.contact)
                done.callback(False)
        self.core.request(request, dest, on_response=on_response, on_timeout=on_timeout)

    def _answer(self, request, response, mac, binding, dest):
        """The NOTIFY again with the phone's own credentials, or None when it cannot be answered."""
        if self.phonebook is None or self.office.config.phone_by_mac(mac) is None:
            return None
        name = "WWW-Authenticate" if response.code == 401 else "Proxy-Authenticate"
        header = "Authorization" if response.code == 401 else "Proxy-Authorization"
        try:
            # After a rotation the phone still holds the previous secret until it
            # has fetched its file: answer with what the phone knows.
            held = getattr(self.phonebook, "held_secret", self.phonebook.secret)
            value = answer(response.get(name) or "", "NOTIFY", request.uri, binding.extension,
                           held(mac))
        except (DigestError, OSError, ValueError) as e:
            log.info("phone {mac} challenged check-sync: cannot answer ({why})", mac=mac, why=str(e))
            return None
        tag = request.get("From").partition(";tag=")[2]
        return self._notify(binding, dest, request.get("Event"), request.cseq[0] + 1,
                            request.call_id, tag, (header, value))

    # ------------------------------------------------------------ following tap.conf

    def config_changed(self, event):
        """
        Resync (a little later, once) each phone whose file the change
        alters. Called before the registrar forgets what the change ends: a
        phone given to another user is still reached at the contact it
        registered as its old owner's.
        """
        if not event.touches("phone", "user", "lan", "system", "sip", "provisioning"):
            return
        for phone in event.new.phones.values():
            if file_inputs(event.old, phone.mac) != file_inputs(event.new, phone.mac):
                self._later(phone.mac, event.old)

    def _later(self, mac, old_config):
        if mac in self.pending:
            return
        old = old_config.phone_by_mac(mac)
        binding = self.binding_of(mac, old, old.model if old is not None else None)
        self.pending[mac] = (self.clock.callLater(RESYNC_DELAY, self.resync, mac), binding)

    def _cancel(self, mac):
        """Cancel a coalesced resync; the registration it noted, or None."""
        call, binding = self.pending.pop(mac, (None, None))
        if call is not None and call.active():
            call.cancel()
        return binding

    def stop(self):
        for mac in list(self.pending):
            self._cancel(mac)
