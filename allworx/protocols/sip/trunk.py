# -*- test-case-name: allworx.tests.sip.test_trunk -*-
"""
Trunks: the office's accounts at its telephony provider (SPEC 15).

`TrunkRegistration` keeps one `[trunk]` registered with the provider, an
automat machine whose states are what the Phones page shows:

    registering --200--> registered --half the granted expiry--> refreshing
         |                                                         |
         +-- 401/403 after credentials, 403, 404 --> auth_failed <--+
         +-- no answer, 5xx, other refusals -------> unreachable <--+
    auth_failed, unreachable --30 s, 60 s, ... 30 min--> registering
    not_registering (register = no): never registers; its addresses are
    resolved all the same, to know the provider's requests by their source.
    any state --stop--> stopped (REGISTER with Expires: 0 once if bound)

A 401/407 is answered once per attempt (once more when the provider says
the nonce was stale); a refresh or retry first repeats the last answer with
the next nonce count, which a 401 merely turns into a fresh challenge. An
answer refused again is an authentication failure, retried 30 s later and
then at doubling intervals: two REGISTERs in the minute after it. Every
REGISTER of one registration carries the same Call-ID and the next CSeq.

The provider's name is resolved through an injected `resolve(host)` (a Deferred of an
address; IP literals need none) at every attempt (every 30 min for register = no).

`TrunkManager` runs one registration per `[trunk]` of the office's config,
restarts one whose registration keys changed, stops removed ones, answers
`status()` (ITrunks, the API's `/api/v1/sip/trunks`), tells whether a
source address is a provider's (`is_provider`), where a trunk's requests go
(`destination`), and counts each trunk's channels.
"""

import ipaddress
import os
import time

from automat import MethodicalMachine
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from allworx.interfaces import ITrunks
from allworx.protocols.sip import digest
from allworx.protocols.sip.core import Destination
from allworx.protocols.sip.message import NameAddr, Request, SipParseError, SipUri

log = Logger()

RETRY_FIRST = 30.0          # the first retry after a failure, doubling ...
RETRY_MAX = 30 * 60.0       # ... up to this
UNREGISTER_WAIT = 2.0       # how long stopping waits for the answers to Expires: 0
MAX_EXPIRES = 86400

# The keys whose change restarts a registration; the others (numbers,
# caller_id, channels, number_format) apply without touching it.
REGISTRATION_KEYS = ("registrar", "username", "auth_user", "secret", "transport",
                     "outbound_proxy", "expires", "register", "proxy")


def rfc3339(when):
    """A POSIX time as RFC 3339 UTC text, or None."""
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def hostport_text(hostport):
    host, port = hostport
    return host if port is None else "%s:%d" % (host, port)


def _ip_literal(host):
    """The address a host text is, or None when it is a name."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _uri_host(host):
    return "[%s]" % host if ":" in host and not host.startswith("[") else host


def registration_keys(trunk):
    return tuple(getattr(trunk, k, None) for k in REGISTRATION_KEYS)


def trunks_of(config):
    """The config's trunks (name -> Trunk); {} before the config knows of them."""
    return getattr(config, "trunks", None) or {}


class TrunkRegistration:
    """One trunk's registration with its provider (see the module's docstring)."""

    _machine = MethodicalMachine()

    def __init__(self, name, trunk, core, resolve):
        self.name = name
        self.trunk = trunk
        self.core = core
        self.clock = core.clock
        self.resolve = resolve
        self.call_id = "%s@allworx" % os.urandom(10).hex()
        self.from_tag = core.new_tag()
        self.cseq = 0
        self.expires_wanted = trunk.expires
        self.since = self.clock.seconds()
        self.shown = self.state
        self.bound_until = None       # when the provider's binding of us ends
        self.last_error = None
        self.failures = 0
        self.timer = None
        self.attempt = 0              # responses of an older attempt are ignored
        self.destination = None       # where requests go: the proxy, resolved
        self.addresses = frozenset()  # the registrar's and the proxy's addresses
        self.challenge = None         # (code, parsed challenge) last answered
        self.nc = 0
        self.unregistered = defer.succeed(None)

    # ------------------------------------------------------------ what it shows

    @_machine.serializer()
    def _machine_state(self, state):
        return state

    @property
    def state(self):
        """registered, registering, auth_failed, unreachable, not_registering or stopped."""
        return {"idle": "registering", "refreshing": "registered"}.get(
            self._machine_state(), self._machine_state())

    @property
    def expires(self):
        """When the registration ends (POSIX), while registered; else None."""
        return self.bound_until if self.state == "registered" else None

    def _feed(self, name, *args):
        getattr(self, "_" + name)(*args)
        if self.state != self.shown:
            self.shown = self.state
            self.since = self.clock.seconds()

    # ------------------------------------------------------------ the public inputs

    def start(self):
        self._feed("begin" if self.trunk.register else "passive")

    def stop(self):
        """Stop; a Deferred that fires when Expires: 0 was answered (or at once)."""
        self._feed("halt")
        return self.unregistered

    # ------------------------------------------------------------ the machine

    @_machine.state(initial=True, serialized="idle")
    def idle(self):
        "Made, not started."

    @_machine.state(serialized="registering")
    def registering(self):
        "A REGISTER is on its way (resolving, sent, or answering a challenge)."

    @_machine.state(serialized="registered")
    def registered(self):
        "The provider granted the registration; a refresh is due at half its time."

    @_machine.state(serialized="refreshing")
    def refreshing(self):
        "Registered, and the refresh REGISTER is on its way."

    @_machine.state(serialized="auth_failed")
    def auth_failed(self):
        "The provider refused the credentials; a retry is due."

    @_machine.state(serialized="unreachable")
    def unreachable(self):
        "No answer, no address, or a server error; a retry is due."

    @_machine.state(serialized="not_registering")
    def not_registering(self):
        "register = no: the provider sends calls to the WAN address."

    @_machine.state(serialized="stopped")
    def stopped(self):
        "Removed, changed or the server stops."

    @_machine.input()
    def _begin(self):
        "Start registering."

    @_machine.input()
    def _passive(self):
        "Start without registering (register = no)."

    @_machine.input()
    def _granted(self, expires):
        "A 2xx to our REGISTER, for `expires` seconds."

    @_machine.input()
    def _refused(self, error):
        "The provider refused the credentials."

    @_machine.input()
    def _lost(self, error):
        "No answer, no address, or any other failure."

    @_machine.input()
    def _due(self):
        "The refresh or retry timer ran out."

    @_machine.input()
    def _halt(self):
        "Stop for good."

    @_machine.output()
    def _attempt(self):
        """Resolve the provider, then send a REGISTER."""
        self._resolving(self._first_register, lambda error: self._feed("lost", error))

    @_machine.output()
    def _lookup(self):
        """register = no: only learn the provider's addresses (retried if that fails)."""
        self._resolving(self._resolved_only, self._note_failure)

    @_machine.output()
    def _bound(self, expires):
        self.failures = 0
        self.last_error = None
        self.bound_until = self.clock.seconds() + expires
        self._schedule(expires / 2.0)

    @_machine.output()
    def _failed(self, error):
        self._note_failure(error)

    @_machine.output()
    def _end(self):
        self._cancel_timer()
        self.attempt += 1

    @_machine.output()
    def _unregister(self):
        """Expires: 0, once, when the provider still holds a binding of ours."""
        now = self.clock.seconds()
        if self.bound_until is None or self.bound_until <= now or self.destination is None:
            return
        self.bound_until = None
        self.unregistered = done = defer.Deferred()

        def fire(*_):
            if not done.called:
                done.callback(None)

        def answered(response):
            found = self._challenge_of(response) if response.code in (401, 407) else None
            if found is None:
                return fire()
            # The one challenge of the unregister is answered; nothing is retried.
            self._request(0, self._authorization(*found),
                          lambda r: r.code >= 200 and fire(), fire)
        auth = None if self.challenge is None else self._authorization(*self.challenge)
        self._request(0, auth, lambda r: r.code >= 200 and answered(r), fire)

    idle.upon(_begin, enter=registering, outputs=[_attempt])
    idle.upon(_passive, enter=not_registering, outputs=[_lookup])
    idle.upon(_halt, enter=stopped, outputs=[])
    for _s in (registering, refreshing):
        _s.upon(_granted, enter=registered, outputs=[_bound])
        _s.upon(_refused, enter=auth_failed, outputs=[_failed])
        _s.upon(_lost, enter=unreachable, outputs=[_failed])
        _s.upon(_halt, enter=stopped, outputs=[_end, _unregister])
    registered.upon(_due, enter=refreshing, outputs=[_attempt])
    registered.upon(_halt, enter=stopped, outputs=[_end, _unregister])
    for _s in (auth_failed, unreachable):
        _s.upon(_due, enter=registering, outputs=[_attempt])
        _s.upon(_halt, enter=stopped, outputs=[_end, _unregister])
    not_registering.upon(_due, enter=not_registering, outputs=[_lookup])
    not_registering.upon(_halt, enter=stopped, outputs=[_end])
    for _i in (_begin, _passive, _granted, _refused, _lost, _due, _halt):
        stopped.upon(_i, enter=stopped, outputs=[])
    del _s, _i

    # ------------------------------------------------------------ timers

    def _schedule(self, delay):
        self._cancel_timer()
        self.timer = self.clock.callLater(delay, self._timer_fired)

    def _timer_fired(self):
        self.timer = None
        self._feed("due")

    def _cancel_timer(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _note_failure(self, error):
        self.failures += 1
        self.last_error = error
        delay = min(RETRY_FIRST * 2 ** (self.failures - 1), RETRY_MAX)
        log.info("trunk {name}: {error}; retrying in {delay:.0f} s", name=self.name,
                 error=error, delay=delay)
        self._schedule(delay)

    # ------------------------------------------------------------ addresses

    def _resolving(self, then, failed):
        """Resolve, then `then(attempt)` or `failed(text)`, unless a newer attempt began."""
        self._cancel_timer()
        self.attempt += 1
        attempt = self.attempt
        self._resolve_all().addCallbacks(
            lambda _: attempt == self.attempt and then(attempt),
            lambda f: attempt == self.attempt and failed(f.getErrorMessage()))

    def _resolved_only(self, attempt):
        self.failures, self.last_error = 0, None
        self._schedule(RETRY_MAX)       # looked up again now and then: providers move

    def _first_register(self, attempt):
        # The last challenge answered again (next nonce count) saves a round
        # trip where the provider still takes that nonce; its 401 is then a
        # fresh challenge, answered once as usual.
        auth = None if self.challenge is None else self._authorization(*self.challenge)
        self._send(attempt, self.expires_wanted, auth)

    def _resolve_one(self, host):
        literal = _ip_literal(host)
        if literal is not None:
            return defer.succeed(literal)
        return defer.maybeDeferred(self.resolve, host)

    def _resolve_all(self):
        """Resolve the proxy (where requests go) and the registrar; fails with the reason."""
        trunk = self.trunk
        proxy_host, proxy_port = trunk.proxy
        hosts = [proxy_host]
        for other in (trunk.registrar, trunk.outbound_proxy):
            if other is not None and other[0] not in hosts:
                hosts.append(other[0])
        d = defer.DeferredList([self._resolve_one(h) for h in hosts], consumeErrors=True)

        def gathered(results):
            ok, first = results[0]
            if not ok:
                raise LookupError("cannot resolve %s: %s" % (proxy_host, first.getErrorMessage()))
            self.destination = Destination(trunk.transport.upper(), str(first), proxy_port)
            self.addresses = frozenset(str(v) for good, v in results if good)
        return d.addCallback(gathered)

    # ------------------------------------------------------------ REGISTER

    def _request(self, expires, authorization, on_response, on_timeout):
        """Build and send one REGISTER to the resolved proxy."""
        trunk, dest = self.trunk, self.destination
        host = _uri_host(trunk.registrar[0])
        aor = "sip:%s@%s" % (trunk.username, host)
        self.cseq += 1
        contact = "<%s>" % self.contact_uri
        headers = [("Via", self.core.via_for(dest)), ("Max-Forwards", "70"),
                   ("From", "<%s>;tag=%s" % (aor, self.from_tag)), ("To", "<%s>" % aor),
                   ("Call-ID", self.call_id), ("CSeq", "%d REGISTER" % self.cseq),
                   ("Contact", contact), ("Expires", str(expires)), ("User-Agent", "allworx")]
        if authorization is not None:
            headers.append(authorization)
        request = Request(headers, method="REGISTER", uri=self.request_uri)
        self.core.request(request, dest, on_response=on_response, on_timeout=on_timeout)
        return request

    @property
    def contact_uri(self):
        """sip:USERNAME@OUR_ADDRESS:PORT, our address as the provider sees it."""
        dest = self.destination
        params = "" if dest.transport == "UDP" else ";transport=%s" % dest.transport.lower()
        port = self.core.port_for(dest.transport) if dest.transport == "TLS" else self.core.port
        return "sip:%s@%s:%d%s" % (self.trunk.username, _uri_host(self.core.local_host(dest.host)),
                                   port, params)

    @property
    def request_uri(self):
        return "sip:%s" % hostport_text((_uri_host(self.trunk.registrar[0]), self.trunk.registrar[1]))

    def _challenge_of(self, response):
        """(code, parsed challenge) of a 401/407 this client can answer, else None."""
        header = "WWW-Authenticate" if response.code == 401 else "Proxy-Authenticate"
        challenge = digest.choose(response.get_all(header))
        return None if challenge is None else (response.code, challenge)

    def _authorization(self, code, challenge):
        """The (header, value) answering a challenge, counting uses of its nonce."""
        if self.challenge is None or self.challenge[1]["nonce"] != challenge["nonce"]:
            self.nc = 0
        self.challenge = (code, challenge)
        self.nc += 1
        value = digest.answer(challenge, "REGISTER", self.request_uri, self.trunk.auth_user,
                              self.trunk.secret, nc=self.nc)
        return ("Authorization" if code == 401 else "Proxy-Authorization", value)

    def _send(self, attempt, expires, authorization=None, answers=0):
        """One REGISTER of an attempt; `answers` counts the challenges it already answered."""
        dest = self.destination

        def response(r):
            if attempt == self.attempt and r.code >= 200:
                self._answered(attempt, expires, r, answers)

        def timeout():
            if attempt == self.attempt:
                self._feed("lost", "no answer from %s:%d (%s)" % (dest.host, dest.port,
                                                                  dest.transport))
        self._request(expires, authorization, response, timeout)

    def _answered(self, attempt, expires, response, answers):
        code = response.code
        where = "%s:%d" % (self.destination.host, self.destination.port)
        said = "%d %s" % (code, response.reason)
        if 200 <= code < 300:
            granted = _granted_expiry(response, expires, self.contact_uri)
            if granted > 0:
                return self._feed("granted", granted)
            return self._feed("lost", "%s from %s granted no registration" % (said, where))
        if code in (401, 407):
            found = self._challenge_of(response)
            if found is None:
                return self._feed("refused", "%s from %s: no challenge this server can answer"
                                  % (said, where))
            stale = (found[1].get("stale") or "").lower() == "true"
            if answers == 0 or (answers == 1 and stale):
                return self._send(attempt, expires, self._authorization(*found), answers + 1)
            return self._feed("refused", "%s from %s: the provider refused the credentials "
                              "of %s" % (said, where, self.trunk.auth_user))
        if code == 423:
            wanted = response.get("Min-Expires", "")
            if wanted.isdigit() and expires < int(wanted) <= MAX_EXPIRES:
                self.expires_wanted = int(wanted)
                return self._send(attempt, self.expires_wanted)
        if code in (403, 404):
            return self._feed("refused", "%s from %s" % (said, where))
        return self._feed("lost", "%s from %s" % (said, where))


def _granted_expiry(response, asked, ours):
    """
    The seconds a 2xx grants our Contact (`ours`, a URI): its expires
    parameter (matched by user, host and port, else by user alone: a
    provider behind NAT handling may rewrite the address), else Expires,
    else what we asked.
    """
    mine = SipUri.parse(ours)
    exact, loose = None, None
    for value in response.get_all("Contact"):
        try:
            contact = NameAddr.parse(value)
            uri = SipUri.parse(contact.uri)
        except SipParseError:
            continue
        given = contact.params.get("expires") or ""
        if uri.user != mine.user or not given.isdigit():
            continue
        if (uri.host, uri.port or 5060) == (mine.host, mine.port or 5060):
            exact = int(given)
        elif loose is None:
            loose = int(given)
    header = response.get("Expires", "")
    for found in (exact, loose, int(header) if header.isdigit() else None, asked):
        if found is not None:
            return min(found, MAX_EXPIRES)


@implementer(ITrunks)
class TrunkManager:
    """The registrations of every `[trunk]`, followed live, and each trunk's channels."""

    def __init__(self, core, office, resolve):
        self.core = core
        self.office = office
        self.resolve = resolve
        self.registrations = {}      # name -> TrunkRegistration, in config order
        self.in_use = {}             # name -> calls in progress
        self.running = False

    # ------------------------------------------------------------ life

    def start(self):
        self.running = True
        self._follow(trunks_of(self.office.config))

    def stop(self):
        """Stop every registration; a Deferred fired when the unregisters are answered (at most
        UNREGISTER_WAIT seconds)."""
        self.running = False
        waits = [reg.stop() for reg in self.registrations.values()]
        self.registrations = {}
        return self._bounded(defer.DeferredList(waits))

    def _bounded(self, d):
        """A Deferred firing (with None) when `d` does, or after UNREGISTER_WAIT seconds."""
        done = defer.Deferred()

        def fire(_=None):
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)
        timer = self.core.clock.callLater(UNREGISTER_WAIT, fire)
        d.addBoth(fire)
        return done

    def config_changed(self, old, new):
        """Start added trunks, stop removed ones, restart those whose registration keys changed."""
        if self.running:
            self._follow(trunks_of(new))

    def _follow(self, trunks):
        for name in list(self.registrations):
            if name not in trunks:
                log.info("trunk {name} removed", name=name)
                self.registrations.pop(name).stop()
                self.in_use.pop(name, None)
        out = {}
        for name, trunk in trunks.items():
            reg = self.registrations.get(name)
            if reg is not None and registration_keys(reg.trunk) != registration_keys(trunk):
                # The new one starts once the old one's Expires: 0 is answered (or
                # UNREGISTER_WAIT passed), so that it cannot remove the new binding.
                log.info("trunk {name} changed: registering again", name=name)
                new = out[name] = TrunkRegistration(name, trunk, self.core, self.resolve)
                self._bounded(reg.stop()).addCallback(lambda _, new=new: new.start())
            elif reg is None:
                reg = out[name] = TrunkRegistration(name, trunk, self.core, self.resolve)
                reg.start()
            else:
                reg.trunk = trunk
                out[name] = reg
        self.registrations = out

    # ------------------------------------------------------------ ITrunks

    def status(self):
        """SPEC 15's `/api/v1/sip/trunks` objects, in config order."""
        out = []
        for name, reg in self.registrations.items():
            out.append({
                "name": name, "registrar": hostport_text(reg.trunk.registrar),
                "state": reg.state, "since": rfc3339(reg.since), "expires": rfc3339(reg.expires),
                "last_error": reg.last_error, "channels": reg.trunk.channels,
                "channels_in_use": self.in_use.get(name, 0)})
        return out

    # ------------------------------------------------------------ for calls

    def _name(self, trunk):
        if isinstance(trunk, str):
            return trunk
        for name, reg in self.registrations.items():
            if reg.trunk is trunk:
                return name
        return getattr(trunk, "name", None)

    def is_provider(self, host):
        """The trunk whose registrar or outbound proxy resolves to `host`, else None."""
        for reg in self.registrations.values():
            if host in reg.addresses:
                return reg.trunk
        return None

    def destination(self, trunk):
        """Where the trunk's requests go (the resolved proxy), or None before it resolved."""
        reg = self.registrations.get(self._name(trunk))
        return None if reg is None else reg.destination

    def acquire(self, trunk):
        """Take one of the trunk's channels; False when all are in use (or no such trunk)."""
        name = self._name(trunk)
        reg = self.registrations.get(name)
        if reg is None or self.in_use.get(name, 0) >= reg.trunk.channels:
            return False
        self.in_use[name] = self.in_use.get(name, 0) + 1
        return True

    def release(self, trunk):
        name = self._name(trunk)
        if self.in_use.get(name, 0) > 0:
            self.in_use[name] -= 1

    def pick_outbound(self):
        """
        The first trunk (config order) with a free channel, preferring those
        that can carry a call now (registered, or register = no, with an
        address); None when every channel is taken.
        """
        free = [reg for name, reg in self.registrations.items()
                if self.in_use.get(name, 0) < reg.trunk.channels]
        for reg in free:
            if reg.state in ("registered", "not_registering") and reg.destination is not None:
                return reg.trunk
        return free[0].trunk if free else None
