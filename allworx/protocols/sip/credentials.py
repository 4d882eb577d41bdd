# -*- test-case-name: allworx.tests.sip.test_registrar -*-
"""
The server side of SIP digest authentication (RFC 3261 section 22, RFC
7616/8760 for SHA-256), as the registrar, call admission and message
waiting use it: the challenge to send, the nonces (`NonceBook`), and
`DigestChecker`, which checks an answer against the user's `sip_digest`
or the own secret of any `[phone]` given to that user (SPEC 19).

The digest user name is the user's extension and the realm the office's
domain; the stored H(extension:realm:password) of both algorithms lets the
server check a phone without ever holding the password. Nonces carry their
own time and an HMAC, so they need no table to be checked; a table of the
nonce counts seen refuses replays. An unknown user's answer is checked
against decoy digests, so that even the work done is the same.
"""

import collections
import hashlib
import hmac
import itertools
import os
import re

from twisted.logger import Logger

log = Logger()

NONCE_LIFETIME = 300
MAX_LIVE_NONCES = 20000      # nonce counts kept at most (the oldest go first)

ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}

# User agents that fail on a challenge whose algorithm they do not know
# instead of skipping it (RFC 8760 section 2.4 wants them to skip): libre
# based phones (baresip 1.x) stop at SHA-256. They are challenged with MD5
# only; every other phone gets SHA-256 first and MD5 second.
MD5_ONLY_AGENTS = ("baresip", "libre")
ISSUED_MEMO = 4096          # nonces made and not yet answered, read without their MAC


_ALGORITHMS_OF = {}        # User-Agent text -> what challenge_algorithms gives


def challenge_algorithms(request):
    """The algorithms to offer a phone, preferred first."""
    text = request.get("User-Agent") or ""
    hit = _ALGORITHMS_OF.get(text)
    if hit is None:
        agent = text.lower()
        hit = ("MD5",) if any(name in agent for name in MD5_ONLY_AGENTS) else ("SHA-256", "MD5")
        if len(_ALGORITHMS_OF) >= 1024:
            _ALGORITHMS_OF.clear()
        _ALGORITHMS_OF[text] = hit
    return hit


# The quoted value as runs of plain characters between escapes (one step per
# run, not per character): what `"((?:[^"\\]|\\.)*)"` matches, twice as fast.
_AUTH_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("([^"\\]*(?:\\.[^"\\]*)*)"|([^,\s]*))\s*,?')
_AUTH_PARAM_PLAIN = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"([^"]*)"|([^,\s]*))')
_LAST_AUTH = [None, None]      # the value parsed last and its fields: a REGISTER reads it twice


def parse_authorization(value):
    """`Digest k=v, k="v"` -> dict with lower-case keys; ValueError if not digest."""
    if value == _LAST_AUTH[0]:
        return dict(_LAST_AUTH[1])
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError("not a Digest authorization")
    out = {}
    if "\\" not in rest:
        # No escapes (what phones send): the same fields by a pattern half the cost.
        for name, quoted, bare in _AUTH_PARAM_PLAIN.findall(rest):
            out[name.lower()] = quoted or bare
    else:
        for name, whole, quoted, bare in _AUTH_PARAM.findall(rest):
            # The quoted form matched when its text starts with a quote and the bare form is empty.
            out[name.lower()] = quoted if whole[:1] == '"' and not bare else whole
    _LAST_AUTH[:] = [value, out]
    return dict(out)


def digest_response(algorithm, ha1, method, uri, nonce, nc=None, cnonce=None, qop=None):
    """The expected `response` of RFC 2617/7616 given HA1 (hex)."""
    h = ALGORITHMS[algorithm]
    ha2 = h(("%s:%s" % (method, uri)).encode()).hexdigest()
    if qop:
        text = "%s:%s:%s:%s:%s:%s" % (ha1, nonce, nc, cnonce, qop, ha2)
    else:
        text = "%s:%s:%s" % (ha1, nonce, ha2)
    return h(text.encode()).hexdigest()


class NonceBook:
    """
    Makes nonces that carry their time and a serial number, checks them,
    and refuses replays.

    The nonce counts seen are kept in the order of each nonce's first use,
    with the time the nonce was made: every `use` drops the expired entries
    at the front (each entry is dropped once, so expiry costs O(1) amortised
    and never scans the book), and when more than `max_live` are kept the
    oldest goes. A nonce made no later than one that went that way before
    its time (`floor`, a serial number) and not in the book is stale from
    then on, so eviction never lets a replay in: the phone is simply
    challenged again.
    """

    def __init__(self, clock, secret=None, lifetime=NONCE_LIFETIME, max_live=MAX_LIVE_NONCES):
        self.clock = clock
        self.secret = secret or os.urandom(32)
        self.lifetime = lifetime
        self.max_live = max_live
        self.serials = itertools.count(1)
        self.counts = collections.OrderedDict()   # nonce -> (highest nc, time made, serial)
        self.floor = 0
        self.last = (None, None)        # the nonce parsed last and what it gave
        # Nonces made lately and not yet answered -> (time made, serial): a phone's
        # answer comes within milliseconds, and is then read without its MAC.
        self.issued = {}
        self._issued_secret = self.secret

    def _mac(self, text):
        # Keyed BLAKE2s (RFC 7693 section 2.9: a MAC by itself), 96 bits: one C call a nonce.
        key = self.secret
        if len(key) > 32:           # BLAKE2s keys are at most 32 bytes: a longer secret is hashed
            key = hashlib.blake2s(key).digest()
        return hashlib.blake2s(text.encode(), key=key, digest_size=12).hexdigest()

    def make(self):
        # Time, serial, MAC: unique by the serial, unforgeable and unpredictable by the MAC.
        made, serial = int(self.clock.seconds()), next(self.serials)
        head = "%x.%x" % (made, serial)
        nonce = "%s.%s" % (head, self._mac(head))
        issued = self._issued()
        if len(issued) >= ISSUED_MEMO:
            issued.clear()
        issued[nonce] = (made, serial)
        return nonce

    def _issued(self):
        if self._issued_secret is not self.secret:      # a new secret: what the old one made goes
            self.issued.clear()
            self._issued_secret = self.secret
        return self.issued

    def _parse(self, nonce):
        """(time made, serial) of a nonce of ours, or None."""
        last = self.last
        if last[0] == nonce:
            return last[1]          # `check` then `use` of one answer: its MAC once
        parsed = self._issued().pop(nonce, None)
        if parsed is None:
            parsed = self._parse_new(nonce)
        self.last = (nonce, parsed)
        return parsed

    def _parse_new(self, nonce):
        head, _, mac = nonce.rpartition(".")
        parts = head.split(".")
        if len(parts) != 2 or not nonce.isascii() or not hmac.compare_digest(self._mac(head), mac):
            return None
        try:
            return int(parts[0], 16), int(parts[1], 16)
        except ValueError:
            return None

    def check(self, nonce, nc):
        """'ok', 'stale' (ours but too old, or evicted) or 'bad'; `nc` int (0 without qop)."""
        parsed = self._parse(nonce)
        if parsed is None:
            return "bad"
        made, serial = parsed
        if self.clock.seconds() - made > self.lifetime:
            return "stale"
        if serial <= self.floor and nonce not in self.counts:
            return "stale"
        return "ok"

    def use(self, nonce, nc):
        """Record a nonce count (of a nonce `check` passed); False if it was seen already (a replay)."""
        self._expire()
        entry = self.counts.get(nonce)
        if entry is not None:
            if nc <= entry[0]:
                return False
            self.counts[nonce] = (nc, entry[1], entry[2])      # its place in the order kept
            return True
        parsed = self._parse(nonce)
        if parsed is None or parsed[1] <= self.floor:
            return False
        # A tuple of numbers: the garbage collector stops walking it after one look.
        self.counts[nonce] = (nc, parsed[0], parsed[1])
        while len(self.counts) > self.max_live:
            _, (_, _, serial) = self.counts.popitem(last=False)
            self.floor = max(self.floor, serial)
        return True

    def _expire(self):
        """Drop the expired entries at the front (an expired one further back waits its turn)."""
        oldest = self.clock.seconds() - self.lifetime
        counts = self.counts
        while counts:
            nonce = next(iter(counts))
            if counts[nonce][1] >= oldest:
                return
            del counts[nonce]


class DigestChecker:
    """
    Checks an Authorization/Proxy-Authorization header against the office's
    users: each user's password (`sip_digest`) and the secrets of the user's
    phones in `phonebook` (IPhoneBook; None: passwords only).
    """

    def __init__(self, office, nonces, phonebook=None):
        self.office = office
        self.nonces = nonces
        self.phonebook = phonebook
        # What an unknown user's answer is checked against: nobody knows it,
        # and checking it costs what a real user's check costs.
        self.decoys = {name: h(os.urandom(16)).hexdigest() for name, h in ALGORITHMS.items()}

    def challenge_headers(self, request, header="WWW-Authenticate", stale=False):
        realm = self.office.config.system.domain
        nonce = self.nonces.make()
        extra = ", stale=true" if stale else ""
        return [(header, 'Digest realm="%s", nonce="%s", algorithm=%s, qop="auth"%s'
                 % (realm, nonce, algo, extra)) for algo in challenge_algorithms(request)]

    def check(self, request, value):
        """
        ('ok', user), ('stale', None), ('fail', reason) or ('challenge', None)
        for a credentials header value (None: no credentials).
        """
        return self.check_phone(request, value)[:2]

    def phone_secrets(self, user, algorithm):
        """[(mac, HA1)] of the user's [phone]s: H(extension:realm:secret)."""
        if self.phonebook is None or not user.extension:
            return []
        config = self.office.config
        h = ALGORITHMS[algorithm]
        out = []
        for phone in config.phones.values():
            # A phone that never fetched its file holds no secret: nothing to
            # try, and none is made here (a file write on the SIP path).
            if phone.user != user.name or not self.phonebook.has_secret(phone.mac):
                continue
            try:
                secret = self.phonebook.secret(phone.mac)
            except (OSError, ValueError) as e:
                log.warn("phone {mac} of {user}: no secret ({error})", mac=phone.mac,
                         user=user.name, error=str(e))
                continue
            out.append((phone.mac, h(("%s:%s:%s" % (user.extension, config.system.domain, secret))
                                     .encode()).hexdigest()))
        return out

    def digests_per_check(self, config):
        """1 (the password) + the most [phone]s one user has (0 without a phone book)."""
        if self.phonebook is None or not config.phones:
            return 1
        counts = {}
        for phone in config.phones.values():
            counts[phone.user] = counts.get(phone.user, 0) + 1
        return 1 + max(counts.values())

    def check_phone(self, request, value):
        """
        As `check`, with a third item: the MAC of the [phone] whose own
        secret answered, or None (the user's password, or no success).
        """
        if value is None:
            return "challenge", None, None
        try:
            fields = parse_authorization(value)
        except ValueError:
            return "fail", "not digest credentials", None
        config = self.office.config
        username = fields.get("username", "")
        algorithm = (fields.get("algorithm") or "MD5").upper()
        if algorithm not in ALGORITHMS:
            return "fail", "algorithm %s not supported" % algorithm, None
        if fields.get("realm") != config.system.domain:
            return "fail", "wrong realm", None
        nonce = fields.get("nonce", "")
        qop = fields.get("qop")
        nc_text = fields.get("nc", "0") if qop else "0"
        try:
            nc = int(nc_text, 16)
        except ValueError:
            return "fail", "bad nonce count", None
        state = self.nonces.check(nonce, nc)
        if state == "bad":
            return "fail", "nonce not ours", None
        user = config.user_by_extension(username)
        candidates = []         # (mac or None for the password, HA1)
        if user is not None:
            ha1 = dict(user.sip_digest).get(algorithm) if user.sip_digest else None
            if ha1 is not None:
                candidates.append((None, ha1))
            candidates += self.phone_secrets(user, algorithm)
            if not candidates:
                log.warn("SIP user {user} has no sip_digest: set the password again "
                         "(allworx passwd --sip or the Users page) so phones can register",
                         user=user.name)
        known = bool(candidates)
        # Every check costs the same whoever is named: as many digests as the
        # user with the most phones needs, the rest against decoys nobody knows.
        while len(candidates) < self.digests_per_check(config):
            candidates.append((None, self.decoys[algorithm]))
        # Bytes: compare_digest refuses str that is not ASCII, and the answer is the sender's.
        answer = fields.get("response", "").encode("utf-8", "surrogateescape")
        matched = []
        for mac, ha1 in candidates:
            expected = digest_response(algorithm, ha1, request.method, fields.get("uri", ""),
                                       nonce, fields.get("nc"), fields.get("cnonce"), qop)
            if hmac.compare_digest(expected.encode(), answer):
                matched.append(mac)
        if not known:
            return "fail", "no such user or no digest", None
        if not matched:
            return "fail", "wrong response", None
        if state == "stale":
            return "stale", None, None
        if not self.nonces.use(nonce, nc):
            return "fail", "nonce count replayed", None
        return "ok", user, matched[0]
