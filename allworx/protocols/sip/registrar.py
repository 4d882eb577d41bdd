# -*- test-case-name: allworx.tests.sip.test_registrar -*-
"""
The SIP registrar (RFC 3261 section 10) with digest authentication (section
22, RFC 7616/8760 for SHA-256) against each user's `sip_digest`, or against
the own secret (IPhoneBook, SPEC 19) of any `[phone]` given to that user: a
provisioned phone cannot know the user's password, so it proves itself with
the secret the server wrote into its file.

The digest user name is the user's extension and the realm the office's
domain; the stored H(extension:realm:password) of both algorithms lets the
server check a phone without ever holding the password. Nonces carry their
own time and an HMAC, so they need no table to be checked; a table of the
nonce counts seen refuses replays. Unknown users and wrong passwords are
answered alike (403 to a wrong answer, a fresh 401 to none) so nobody learns
which part was wrong, and an unknown user's answer is checked against a decoy
digest so that even the work done is the same. Logins go through the shared
login throttle's one rule: after repeated failures the password is checked
(and answered) later, then a locked login is refused unchecked; a REGISTER
without credentials names no user, checks nothing and is always challenged
(later to a source that keeps failing), so a phone behind a locked source
can still register.

`admit_call` decides the same for a new INVITE before the call router looks
at the number: a registered phone's own address is trusted (its REGISTER
proved who it is), anyone else must answer a 407 challenge with
Proxy-Authorization, whichever extension the INVITE names.

The service's `registrations` (IRegistrations), handed to the admin pages.
"""


import attr
from prometheus_client import Gauge
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from allworx.counting import LabelledCounter
from allworx.guards import LockedOut, LoginThrottle, login_name, until_text
from allworx.interfaces import IRegistrations
from allworx.protocols.sip.core import CHALLENGE_TAG
from allworx.protocols.sip.credentials import DigestChecker, NonceBook, parse_authorization
from allworx.protocols.sip.message import NameAddr, SipParseError, SipUri, make_response

log = Logger()

REGISTERS = LabelledCounter("allworx_sip_registers_total", "REGISTER requests by outcome", "outcome")
BINDINGS = Gauge("allworx_sip_bindings", "Current SIP contact bindings")

DEFAULT_EXPIRES = 3600
MAX_EXPIRES = 3600
MIN_EXPIRES = 60
MAX_CONTACTS = 5

_OUTCOMES = REGISTERS.counts


def _outcome(name):
    """Count a REGISTER outcome."""
    _OUTCOMES[name] += 1


@attr.s(slots=True)
class Binding:
    """One registered contact of a user."""

    user = attr.ib()
    extension = attr.ib()
    contact = attr.ib()         # the contact URI text
    source = attr.ib()          # (host, port) the REGISTER came from
    transport = attr.ib()       # "UDP" | "TCP"
    expires_at = attr.ib()
    call_id = attr.ib(default="")
    cseq = attr.ib(default=0)
    user_agent = attr.ib(default=None)  # its User-Agent header
    mac = attr.ib(default=None)         # the [phone] whose own secret it proved itself with


@implementer(IRegistrations)
class Registrar:
    """
    Handles REGISTER requests and keeps the bindings; `handle(request,
    source, transport)` returns a Response or a Deferred of one (slowed down
    after repeated failures). `throttle` is the login throttle (its own by
    default).
    """

    def __init__(self, office, clock, checker=None, calls=None, throttle=None, phonebook=None):
        self.office = office
        self.clock = clock
        self.checker = checker or DigestChecker(office, NonceBook(clock), phonebook)
        self.throttle = throttle if throttle is not None else LoginThrottle(clock)
        self.by_user = {}          # user name -> {contact: Binding}
        # Indexes of the same bindings, so that the lookups of every call and
        # relayed request do not scan the office: contact -> [Binding], and
        # (source, transport) -> {(user, contact): Binding}, in the order made.
        # Every change goes through _add and _remove.
        self.by_contact = {}
        self.by_source = {}
        self.calls = calls         # the call router, for active_calls()
        self.on_change = []        # callbacks(user) when a user's bindings change
        # No binding expires before this time: `expire` is O(1) until then
        # (every lookup calls it; a sweep of the whole book per INVITE grew
        # with the office).
        self.next_expiry = float("inf")

    # ------------------------------------------------------------ IRegistrations

    def bindings(self):
        self.expire()
        out = []
        for user, contacts in sorted(self.by_user.items()):
            for b in contacts.values():
                out.append({"user": b.user, "extension": b.extension, "contact": b.contact,
                            "source": "%s:%d" % b.source, "expires": b.expires_at})
        return out

    def active_calls(self):
        return self.calls.active_calls() if self.calls is not None else []

    # ------------------------------------------------------------ lookups

    def contacts_of(self, user_name):
        """The live bindings of a user."""
        self.expire()
        return list(self.by_user.get(user_name, {}).values())

    def forget_removed(self):
        """
        Drop the bindings of users no longer in the configuration (or without
        an extension, or without a password or phone), and those a phone made
        with its own secret once it is no longer that user's [phone].
        """
        config = self.office.config
        phones = {}
        for phone in config.phones.values():
            phones.setdefault(phone.user, set()).add(phone.mac)
        for name in list(self.by_user):
            user = config.users.get(name)
            if user is None or not user.extension or not (user.sip_digest or name in phones):
                for b in list(self.by_user[name].values()):
                    self._remove(b)
                log.info("SIP registrations of {user} dropped: the user changed", user=name)
                self._changed(name)
                continue
            contacts = self.by_user[name]
            gone = [c for c, b in contacts.items()
                    if b.mac is not None and b.mac not in phones.get(name, ())]
            for c in gone:
                log.info("SIP registration of {user} at {contact} dropped: phone {mac} is no "
                         "longer theirs", user=name, contact=c, mac=contacts[c].mac)
                self._remove(contacts[c])
            if gone:
                self._changed(name)
        BINDINGS.set(sum(len(c) for c in self.by_user.values()))

    def destination_of(self, contact):
        """(transport, host, port) a registered contact URI is reached at, or None."""
        found = self.by_contact.get(contact)
        if found:
            b = found[0]
            return (b.transport, b.source[0], b.source[1])
        return None

    def phone_at(self, source, transport):
        """The user with a live registration from exactly `source` (host, port) over `transport`, or None."""
        now = self.clock.seconds()
        for b in self.by_source.get((tuple(source), transport), {}).values():
            if b.expires_at > now:
                return b.user
        return None

    def registered_from(self, user_name, host):
        """True when one of the user's phones registered from `host`."""
        return any(b.source[0] == host for b in self.contacts_of(user_name))

    def user_at(self, source):
        """The user whose phone registered from `source` (host, port), or None."""
        self.expire()
        for contacts in self.by_user.values():
            for b in contacts.values():
                if b.source == source:
                    return b.user
        for contacts in self.by_user.values():
            for b in contacts.values():
                if b.source[0] == source[0]:
                    return b.user
        return None

    def expire(self):
        now = self.clock.seconds()
        if now < self.next_expiry:
            return
        soonest = float("inf")
        for user in list(self.by_user):
            contacts = self.by_user[user]
            gone = [c for c, b in contacts.items() if b.expires_at <= now]
            for c in gone:
                self._remove(contacts[c])
                log.info("SIP registration of {user} at {contact} expired", user=user, contact=c)
            if user in self.by_user:
                soonest = min(soonest, min(b.expires_at for b in contacts.values()))
            if gone:
                self._changed(user)
        self.next_expiry = soonest
        BINDINGS.set(sum(len(c) for c in self.by_user.values()))

    def bind(self, binding):
        """Keep `binding` (in place of that user's binding of its contact, if any)."""
        contacts = self.by_user.get(binding.user)
        old = contacts.get(binding.contact) if contacts is not None else None
        if old is not None and old.source == binding.source and old.transport == binding.transport:
            self._refresh(contacts, old, binding)
            return
        if old is not None:
            self._remove(old)
        self.by_user.setdefault(binding.user, {})[binding.contact] = binding
        self.by_contact.setdefault(binding.contact, []).append(binding)
        self.by_source.setdefault((binding.source, binding.transport), {})[
            (binding.user, binding.contact)] = binding
        if binding.expires_at < self.next_expiry:
            self.next_expiry = binding.expires_at

    def _refresh(self, contacts, old, binding):
        """
        `binding` in place of `old` (same user, contact, source and transport):
        every index ends as `_remove(old)` then adding `binding` leaves it (each
        moved to the end of its order), without dropping and making them again.
        """
        user, contact = binding.user, binding.contact
        if len(contacts) == 1:
            del self.by_user[user]
            self.by_user[user] = contacts
        del contacts[contact]
        contacts[contact] = binding
        same = self.by_contact[contact]
        if len(same) == 1:
            del self.by_contact[contact]
            same[0] = binding
            self.by_contact[contact] = same
        else:
            same[:] = [b for b in same if b is not old]
            same.append(binding)
        key = (binding.source, binding.transport)
        at = self.by_source[key]
        if len(at) == 1:
            del self.by_source[key]
            self.by_source[key] = at
        del at[(user, contact)]
        at[(user, contact)] = binding
        if binding.expires_at < self.next_expiry:
            self.next_expiry = binding.expires_at

    def _remove(self, binding):
        """Forget `binding` everywhere (a user without bindings left goes too)."""
        contacts = self.by_user.get(binding.user)
        if contacts is not None and contacts.get(binding.contact) is binding:
            del contacts[binding.contact]
            if not contacts:
                del self.by_user[binding.user]
        same = self.by_contact.get(binding.contact)
        if same is not None:
            same[:] = [b for b in same if b is not binding]
            if not same:
                del self.by_contact[binding.contact]
        key = (binding.source, binding.transport)
        at = self.by_source.get(key)
        if at is not None:
            if at.get((binding.user, binding.contact)) is binding:
                del at[(binding.user, binding.contact)]
            if not at:
                del self.by_source[key]

    def _changed(self, user):
        for cb in self.on_change:
            cb(user)

    # ------------------------------------------------------------ REGISTER

    def _slow(self, source_host, response):
        delay = self.throttle.delay(source_host)
        if not delay:
            return response
        d = defer.Deferred()
        self.clock.callLater(delay, d.callback, response)
        return d

    def digest_user(self, value):
        """The user an Authorization header names, for the throttle (None without one)."""
        try:
            name = parse_authorization(value).get("username") if value else None
        except ValueError:
            return None
        return login_name(self.office.config, name) if name else None

    def handle(self, request, source, transport="UDP"):
        """Answer one REGISTER from `source` (host, port): a Response, or a Deferred of one."""
        authorization = request.get("Authorization")
        who = self.digest_user(authorization)
        if who is None or self.throttle.ready(source[0], who):
            return self._checked(request, source, transport, authorization, who)
        d = self.throttle.attempt(source[0], who, lambda: self._checked(
            request, source, transport, authorization, who))
        return d.addErrback(self._locked, request)

    def _locked(self, failure, request, to_tag=None):
        failure.trap(LockedOut)
        if request.method == "REGISTER":
            _outcome("locked")
        return make_response(request, 403, "Forbidden (%s)" % until_text(failure.value.until),
                             to_tag=to_tag or _tag(request))

    def _checked(self, request, source, transport, authorization, who):
        status, value, mac = self.checker.check_phone(request, authorization)
        if status == "challenge":
            _outcome("challenged")
            return self._slow(source[0], make_response(
                request, 401, to_tag=_tag(request), extra=self.checker.challenge_headers(request)))
        if status == "stale":
            _outcome("stale")
            return make_response(request, 401, to_tag=_tag(request),
                                 extra=self.checker.challenge_headers(request, stale=True))
        if status == "fail":
            _outcome("refused")
            self.throttle.failed(source[0], who)
            log.info("SIP REGISTER from {source} refused: {reason}",
                     source="%s:%d" % source, reason=value)
            refused = make_response(request, 403, to_tag=_tag(request))
            # With a user named, the throttle held the attempt already.
            return refused if who is not None else self._slow(source[0], refused)
        self.throttle.succeeded(source[0], who)
        user = value
        try:
            to_user = _uri_user(request.get("To"))
        except SipParseError:
            return make_response(request, 400, "Bad To header")
        if to_user not in (user.extension, user.name):
            _outcome("refused")
            return make_response(request, 403, to_tag=_tag(request))
        return self._update(request, user, source, transport, mac)

    def admit_call(self, request, source, transport="UDP"):
        """
        None when a new INVITE from `source` may be routed (and the request is
        marked authenticated), else the stateless answer to send, or a
        Deferred of it: a 407 challenge, or 403 to wrong credentials. Nothing
        here depends on the number the INVITE names.
        """
        phone_user = self.phone_at(source, transport)
        if phone_user is not None:
            request.authenticated = True
            request.caller = phone_user
            return None
        credentials = request.get("Proxy-Authorization")
        who = self.digest_user(credentials)
        tag = CHALLENGE_TAG + _tag(request)
        if who is None or self.throttle.ready(source[0], who):
            return self._admit_checked(request, source, credentials, who, tag)
        # The throttle's one rule, as for REGISTER: later after failures, then locked.
        d = self.throttle.attempt(source[0], who, lambda: self._admit_checked(
            request, source, credentials, who, tag))
        return d.addErrback(self._locked, request, tag)

    def _admit_checked(self, request, source, credentials, who, tag):
        status, value = self.checker.check(request, credentials)
        if status == "ok":
            self.throttle.succeeded(source[0], who)
            request.authenticated = True
            request.caller = who
            return None
        if status == "fail":
            self.throttle.failed(source[0], who)
            log.info("SIP {method} from {source} refused: {reason}", method=request.method,
                     source="%s:%d" % source, reason=value)
            refused = make_response(request, 403, to_tag=tag)
            # With a user named, the throttle held the attempt already.
            return refused if who is not None else self._slow(source[0], refused)
        challenge = make_response(request, 407, to_tag=tag, extra=self.checker.challenge_headers(
            request, "Proxy-Authenticate", stale=status == "stale"))
        return challenge if status == "stale" else self._slow(source[0], challenge)

    def _update(self, request, user, source, transport, mac=None):
        now = self.clock.seconds()
        header_expires = request.get("Expires")
        try:
            default = int(header_expires) if header_expires is not None else DEFAULT_EXPIRES
        except ValueError:
            return make_response(request, 400, "Bad Expires header")
        contacts = request.get_all("Contact")
        mine = self.by_user.get(user.name, {})
        before = len(mine)
        changed = False
        if contacts == ["*"]:
            if default != 0:
                return make_response(request, 400, "Contact * needs Expires: 0")
            changed = bool(mine)
            for b in list(mine.values()):
                self._remove(b)
        else:
            for value in contacts:
                try:
                    uri, expires_text = _contact(value)
                    expires = int(default if expires_text is None else expires_text)
                except (SipParseError, ValueError):
                    return make_response(request, 400, "Bad Contact header")
                if expires == 0:
                    gone = mine.get(uri)
                    if gone is not None:
                        self._remove(gone)
                        changed = True
                    continue
                if expires < MIN_EXPIRES:
                    return make_response(request, 423, extra=[("Min-Expires", str(MIN_EXPIRES))])
                expires = min(expires, MAX_EXPIRES)
                old = mine.get(uri)
                if old is not None and old.call_id == request.call_id and request.cseq[0] <= old.cseq:
                    return make_response(request, 500, "Out of order REGISTER")
                if old is None and len(mine) >= MAX_CONTACTS:
                    _outcome("too_many")
                    log.warn("SIP user {user} already has {n} phones registered; refused {contact}",
                             user=user.name, n=MAX_CONTACTS, contact=uri)
                    return make_response(request, 403, "Too many registrations (at most %d per user)"
                                         % MAX_CONTACTS)
                self.bind(Binding(user.name, user.extension, uri, tuple(source), transport,
                                  now + expires, request.call_id, request.cseq[0],
                                  request.get("User-Agent"), mac))
                mine = self.by_user[user.name]
                if old is None:
                    changed = True
                    log.info("SIP {user} ({ext}) registered at {contact} from {source}",
                             user=user.name, ext=user.extension, contact=uri,
                             source="%s:%d" % tuple(source))
        _outcome("ok")
        if len(mine) != before:
            BINDINGS.inc(len(mine) - before)       # not a count over every user per REGISTER
        resp = make_response(request, 200, to_tag=_tag(request))
        for b in mine.values():
            resp.add("Contact", "<%s>;expires=%d" % (b.contact, max(0, int(b.expires_at - now))))
        if changed:
            self._changed(user.name)
        return resp


def _tag(request):
    """
    Our To tag for `request`: the same for every answer of one registration
    (401, then 200), from its Call-ID and From. The process's string hash:
    nothing outside needs it stable across restarts, and it costs no digest.
    """
    return "%010x" % (hash((request.get("Call-ID", ""), request.get("From", ""))) & 0xFFFFFFFFFF)


# A phone sends the same To and Contact texts at every REGISTER: what they
# give is kept by text (strings only; dropped all at once past 4,096).
_READ = {}


def _uri_user(value):
    """The user part of a To value's SIP URI; SipParseError if it is none."""
    key = ("To", value)
    hit = _READ.get(key)
    if hit is None:
        hit = SipUri.parse(NameAddr.parse(value).uri).user
        _remember(key, hit)
    return hit


def _contact(value):
    """(URI text, its expires parameter or None) of a Contact value with a SIP URI; SipParseError else."""
    key = ("Contact", value)
    hit = _READ.get(key)
    if hit is None:
        na = NameAddr.parse(value)
        SipUri.parse(na.uri)
        if "expires" in na.params and na.params["expires"] is None:
            raise SipParseError("expires without a value")
        hit = (na.uri, na.params.get("expires"))
        _remember(key, hit)
    return hit


def _remember(key, value):
    if len(_READ) >= 4096:
        _READ.clear()
    _READ[key] = value
