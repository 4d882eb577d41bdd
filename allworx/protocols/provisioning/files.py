# -*- test-case-name: allworx.tests.provisioning.test_files -*-
"""
Who gets which file (SPEC 19), the same for HTTP and TFTP: `Provisioner.
fetch(name, address)` answers 200 with the file, 403 when `address` does
not hold the DHCP lease of the MAC the name carries, 404 for a name outside
the set or a phone with nothing to give yet. Every per-MAC request from the
lease holder is told to the phone book (IPhoneBook.sighted): a MAC with no
`[phone]` section shows up as a new phone, a known one gets its last fetch.
"""

import attr
from twisted.logger import Logger

from allworx.config.phones import normalise_mac
from allworx.guards import ClientRateLimit
from allworx.protocols.provisioning import vendors
from allworx.protocols.provisioning.vendors.facts import build_facts, host_timezone

log = Logger()


@attr.s(frozen=True, slots=True)
class Answer:
    code = attr.ib()                    # 200, 403, 404, 429
    body = attr.ib(default=b"", repr=False)
    content_type = attr.ib(default="text/plain; charset=utf-8")
    why = attr.ib(default="")           # the sentence logged and sent with an error


def _error(code, why):
    return Answer(code, (why + "\n").encode("utf-8"), why=why)


class Provisioner:
    """
    The files of the office's phones: `config()` is the configuration of the
    moment, `phonebook` an IPhoneBook, `leases` an ILeaseTable (its lease
    dicts may carry `vendor_class`), `clock` for the rate limit per address.
    """

    def __init__(self, config, phonebook, leases, clock, timezone=host_timezone,
                 rate=2.0, burst=30):
        self.config = config
        self.phonebook = phonebook
        self.leases = leases
        self.timezone = timezone
        self.limit = ClientRateLimit(clock, rate=rate, burst=burst)

    def allow(self, address):
        """Whether `address` may ask for one more file now."""
        return self.limit.allow(address)

    def lease_of(self, mac):
        """The active lease of `mac` (12 lowercase hex digits), or None."""
        for lease in self.leases.active_leases() if self.leases is not None else ():
            try:
                if normalise_mac(lease.get("mac") or "") == mac:
                    return lease
            except ValueError:      # not an Ethernet address
                continue
        return None

    def fetch(self, name, address, user_agent=None, via="http"):
        """The Answer to `address` asking for the file `name`."""
        wanted = vendors.resolve(name)
        if wanted is None:
            log.debug("provisioning: {address} asked for {name!r} ({via}): not a file",
                      address=address, name=name, via=via)
            return _error(404, "no such file")
        config = self.config()
        if wanted.mac is None:
            body = vendors.render_common(name, str(config.lan_ip), self.timezone())
            return Answer(200, body, vendors.content_type(wanted.models[0]))
        lease = self.lease_of(wanted.mac)
        if lease is None or lease.get("address") != address:
            holder = lease.get("address") if lease else "nobody"
            log.warn("provisioning: {address} asked for {name} ({via}) of MAC {mac}, whose "
                     "lease {holder} holds: refused", address=address, name=name, via=via,
                     mac=wanted.mac, holder=holder)
            return _error(403, "this address does not hold the lease of that phone")
        phone = config.phone_by_mac(wanted.mac)
        model = vendors.guess_model(wanted, lease.get("vendor_class"), user_agent,
                                    phone.model if phone is not None else None)
        if self.phonebook is not None:
            self.phonebook.sighted(wanted.mac, address, model, name, user_agent)
        if phone is None:
            log.info("provisioning: new phone {mac} ({model}) at {address} asked for {name} "
                     "({via}): nothing to give until it has a [phone] section", mac=wanted.mac,
                     model=model or "model unknown", address=address, name=name, via=via)
            return _error(404, "this phone is not given to anyone yet")
        user = config.users.get(phone.user)
        if model is None or user is None or user.extension is None or self.phonebook is None:
            if model is None:
                why = "its model is not known: set model in [phone %s]" % phone.name
            elif self.phonebook is None:
                why = "the server keeps no phone secrets (no phone book)"
            else:
                why = "its owner has no extension"
            log.warn("provisioning: {mac} asked for {name}: {why}", mac=wanted.mac,
                     name=name, why=why)
            return _error(404, "no file for this phone: " + why)
        facts = build_facts(config, phone, self.phonebook.secret(wanted.mac), self.timezone())
        log.info("provisioning: {name} ({model}) to {address} ({via}) for {user}",
                 name=name, model=model, address=address, via=via, user=phone.user)
        return Answer(200, vendors.render(wanted, model, facts), vendors.content_type(model))
