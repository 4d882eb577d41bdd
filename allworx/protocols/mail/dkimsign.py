# -*- test-case-name: allworx.tests.mail.test_dkimsign -*-
"""
DKIM signatures on outbound mail (SPEC 18, RFC 6376 and RFC 8463).

`DkimSigner.sign` is called by the outbound queue as a message enters it
(`OutboundQueue.prepare`), so what is on disk is what leaves, bounces
included (they enter the queue the same way). A message whose From is in
the office's domain (or a subdomain) gets two DKIM-Signature headers,
rsa-sha256 under `[mail] dkim_selector` and ed25519-sha256 under
`SELECTOR-ed25519`, d=DOMAIN, relaxed/relaxed. Mail whose From is another
domain's (an alias forwarding outside) is left as it came, with its own
signatures; so is mail that came in from the internet (it carries our own
Authentication-Results header), so a forged From of ours is never signed.
Signing runs in the reactor: a few ms per message (dkimpy's RSA), plus the
body canonicalization (tens of ms per MB).

Rotation (`rotate`): keys under a new selector (`BASE-YYYYMMDD`, then
`-2`, ...), made current through `[mail] dkim_selector`; the old selector is
retired and stays published until no queue entry carries it (each entry
records the selectors it was signed with), then its keys are removed.
"""

import email.utils
import re
import time

import dkim
from twisted.internet import threads
from twisted.logger import Logger

from allworx.dkimkeys import DkimKeys, mail_dns_records
from allworx.office import DkimKeysChanged

log = Logger()

# The header fields signed, when present (each instance); From once more, so
# none can be added (oversigning).
SIGNED_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
                  b"in-reply-to", b"references", b"mime-version", b"content-type",
                  b"content-transfer-encoding", b"content-disposition", b"content-language")
OVERSIGNED = (b"from",)
CANONICALIZE = (b"relaxed", b"relaxed")
MAX_SELECTOR = 40
_DATED = re.compile(r"-\d{8}(-\d+)?$")


def header_fields(data):
    """[(lower-case name, unfolded value)] of a message's header (bytes, LF or CRLF)."""
    head = re.split(rb"\r?\n\r?\n", data, 1)[0]
    fields = []
    for line in re.split(rb"\r?\n(?![ \t])", head):
        name, sep, value = line.partition(b":")
        if sep and name and not name[:1].isspace():
            fields.append((name.strip().lower(), re.sub(rb"\r?\n", b"", value).strip()))
    return fields


def from_domains(fields):
    """The domains of the From header's addresses; None when it has none or one is not an address."""
    values = [v.decode("utf-8", "replace") for n, v in fields if n == b"from"]
    if len(values) != 1:
        return None
    addresses = email.utils.getaddresses(values)
    domains = []
    for _, address in addresses:
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain:
            return None
        domains.append(domain.lower().rstrip("."))
    return domains or None


def in_domain(domain, office_domain):
    office_domain = office_domain.lower()
    return domain == office_domain or domain.endswith("." + office_domain)


def came_from_internet(fields, authserv_id):
    """True when the message carries our own Authentication-Results: it came in from the WAN."""
    for name, value in fields:
        if name == b"authentication-results":
            first = re.split(rb"[\s;]", value.strip(), 1)[0].decode("ascii", "replace")
            if first.lower() == authserv_id.lower():
                return True
    return False


def next_selector(current, now, taken):
    """The selector a rotation moves to: BASE-YYYYMMDD, then BASE-YYYYMMDD-2 ... not in `taken`."""
    base = _DATED.sub("", current)
    date = time.strftime("%Y%m%d", time.gmtime(now))
    n = 1
    while True:
        suffix = "-%s" % date + ("-%d" % n if n > 1 else "")
        candidate = base[:MAX_SELECTOR - len(suffix)].rstrip("-") + suffix
        if candidate not in taken and candidate != current:
            return candidate
        n += 1


class DkimSigner:
    """
    Signs what the queue sends and keeps the keys: made at `start`, current
    with `[mail] dkim_selector` (`selector_changed`), rotated by `rotate`;
    `queue` (set by the mail service) says which selectors are still in use.
    """

    def __init__(self, office, reactor, defer_to_thread=threads.deferToThread):
        self.office = office
        self.reactor = reactor
        self.defer_to_thread = defer_to_thread
        self.queue = None
        self._keys = None

    @property
    def keys(self):
        """The `DkimKeys` of the current data_dir."""
        data_dir = self.office.config.system.data_dir
        if self._keys is None or self._keys.data_dir != data_dir:
            self._keys = DkimKeys(data_dir)
        return self._keys

    def _changed(self):
        config = self.office.config
        self.office.emit(DkimKeysChanged(tuple(self.keys.published(config.mail.dkim_selector))))

    # ------------------------------------------------------------ keys

    def start(self):
        """Make the current selector's keys if missing (once: RSA blocks briefly); drop unused retired ones."""
        selector = self.office.config.mail.dkim_selector
        made = self.keys.ensure(selector)
        self.keys.restore(selector)
        if made:
            self._changed()
        self.collect()

    def selector_changed(self, old, new):
        """`[mail] dkim_selector` went from `old` to `new`: keys for it, `old` retired."""
        if old == new:
            return
        keys = self.keys
        changed = bool(keys.ensure(new))
        if new in keys.retired():
            keys.restore(new)
            changed = True
        if old not in keys.retired() and keys.has(old):
            keys.retire(old)
            changed = True
        log.info("dkim: signing with selector {new}; {old} retired", new=new, old=old)
        if changed:
            self._changed()
        self.collect()

    def rotate(self):
        """New keys under a new selector, made current; fires with the selector."""
        config = self.office.config
        old = config.mail.dkim_selector
        keys = self.keys
        taken = set(keys.retired()) | {old}
        new = next_selector(old, self.reactor.seconds(), taken)
        while keys.has(new):    # keys left from elsewhere: a fresh name instead
            taken.add(new)
            new = next_selector(old, self.reactor.seconds(), taken)
        d = self.defer_to_thread(keys.ensure, new)     # RSA generation: not in the reactor

        def made(_):
            self.office.update_settings("mail", {"dkim_selector": new})
            # The mail service follows the change too; this is for a signer without one.
            self.selector_changed(old, self.office.config.mail.dkim_selector)
            return new
        return d.addCallback(made)

    def records(self):
        """The mail's DNS records as `IMailSecurity.records()` lists them (dicts)."""
        config = self.office.config
        return [r.as_dict(config.system.domain) for r in mail_dns_records(config, self.keys)]

    def in_use(self):
        """The selectors queued messages were signed with."""
        return self.queue.selectors_in_use() if self.queue is not None else set()

    def collect(self):
        """Drop each retired selector no queued message carries; True when any went."""
        keys = self.keys
        used = self.in_use()
        gone = [s for s in keys.retired() if s not in used
                and s != self.office.config.mail.dkim_selector]
        for selector in gone:
            keys.drop(selector)
        if gone:
            self._changed()
        return bool(gone)

    def entry_left(self, selectors):
        """A queue entry signed with `selectors` left the queue."""
        if selectors and set(selectors) & set(self.keys.retired()):
            self.collect()

    # ------------------------------------------------------------ signing

    def sign(self, data):
        """(message, selectors): `data` with DKIM-Signature headers on top, or as it was."""
        config = self.office.config
        domain = config.system.domain
        fields = header_fields(data)
        domains = from_domains(fields)
        if not domains or not all(in_domain(d, domain) for d in domains):
            return data, []
        authserv_id = "%s.%s" % (config.system.hostname, domain)
        if came_from_internet(fields, authserv_id):
            log.info("dkim: not signing mail from the internet with a From of ours")
            return data, []
        keys = self.keys.signing_keys(config.mail.dkim_selector)
        if not keys:
            log.error("dkim: no key for selector {selector}: mail leaves unsigned",
                      selector=config.mail.dkim_selector)
            return data, []
        present = [name for name, _ in fields if name in SIGNED_HEADERS]
        include = present + [h for h in OVERSIGNED if h in present]
        signatures, used = [], []
        try:
            signer = dkim.DKIM(data, linesep=b"\n")
            for key in keys:
                signatures.append(signer.sign(
                    key.selector.encode("ascii"), domain.encode("ascii"), key.key,
                    signature_algorithm=key.algorithm, canonicalize=CANONICALIZE,
                    include_headers=include))
                used.append(key.selector)
        except Exception as e:  # dkimpy's errors, or a header it cannot take
            log.error("dkim: message left unsigned: {error}", error=str(e))
            return data, []
        return b"".join(_line(s) for s in signatures) + data, [config.mail.dkim_selector]


def _line(signature):
    return signature if signature.endswith(b"\n") else signature + b"\n"
