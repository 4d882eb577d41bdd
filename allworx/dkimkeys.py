# -*- test-case-name: allworx.tests.core.test_dkimkeys -*-
"""
The office's DKIM keys (SPEC 18) and the mail records of its zone.

`DkimKeys(data_dir)` keeps the keys under `data_dir/dkim/` (directory 0700,
files 0600): for a selector S an RSA 2048 key `S.rsa.pem` (signatures with
selector S) and an ed25519 key `S.ed25519.pem` (selector `S-ed25519`).
`ensure(S)` makes what is missing; RSA generation blocks for a few tens of
milliseconds, which the mail service accepts once, at first start. A
selector retired by a rotation is listed in `state.json` there and stays
published until the outbound queue holds nothing signed with it.

Both the mail service (which signs) and the DNS service (which publishes)
read the keys from here; `mail_dns_records` is what the zone and the Mail
security page publish: DKIM keys, SPF at the domain, DMARC at `_dmarc`, each
replaced by a `[record]` of the same name that has a `txt`.
"""

import base64
import ipaddress
import json
import os

import attr
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.logger import Logger

from allworx.atomicfile import ensure_directory, write_atomically

log = Logger()

ED25519_SUFFIX = "-ed25519"
RSA_BITS = 2048
STATE_FILE = "state.json"


def ed25519_selector(selector):
    """The selector of the ed25519 key that goes with RSA selector `selector`."""
    return selector + ED25519_SUFFIX


def _rsa_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    # dkimpy reads the PKCS#1 form ("BEGIN RSA PRIVATE KEY").
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _ed25519_key():
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


@attr.s(frozen=True, slots=True)
class SigningKey:
    """A key as dkimpy signs with it: algorithm, selector, and the key bytes it takes."""

    algorithm = attr.ib()   # b"rsa-sha256" | b"ed25519-sha256"
    selector = attr.ib()    # str
    key = attr.ib(repr=False)   # RSA: PEM; ed25519: base64 of the raw 32-byte private key


class DkimKeys:
    """The key files under `data_dir/dkim/`, their DNS values, and the retired selectors."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.directory = os.path.join(data_dir, "dkim")
        self._loaded = {}       # file path -> (SigningKey, TXT value)

    # ------------------------------------------------------------ files

    def _file(self, selector, kind):
        return os.path.join(self.directory, "%s.%s.pem" % (selector, kind))

    def _files_of(self, selector):
        """(file, kind, base selector) of a published selector, or None when there is none."""
        rsa_file = self._file(selector, "rsa")
        if os.path.exists(rsa_file):
            return rsa_file, "rsa", selector
        if selector.endswith(ED25519_SUFFIX):
            base = selector[:-len(ED25519_SUFFIX)]
            ed_file = self._file(base, "ed25519")
            if os.path.exists(ed_file):
                return ed_file, "ed25519", base
        return None

    def has(self, selector):
        """True when both keys of RSA selector `selector` are on disk."""
        return all(os.path.exists(self._file(selector, kind)) for kind in ("rsa", "ed25519"))

    def ensure(self, selector):
        """
        Make the keys of `selector` that are missing (blocking: RSA takes a
        few tens of ms). Returns the selectors whose keys were made.
        """
        ensure_directory(self.directory)
        made = []
        for kind, make, name in (("rsa", _rsa_key, selector),
                                 ("ed25519", _ed25519_key, ed25519_selector(selector))):
            path = self._file(selector, kind)
            if not os.path.exists(path):
                write_atomically(path, make(), mode=0o600)
                self._loaded.pop(path, None)
                made.append(name)
        if made:
            log.info("dkim: made the key(s) of selector(s) {selectors} in {directory}",
                     selectors=", ".join(made), directory=self.directory)
        return made

    def refresh(self):
        """Forget what was read from disk (another service changed the files)."""
        self._loaded.clear()

    def _load(self, selector):
        found = self._files_of(selector)
        if found is None:
            return None
        path, kind, _ = found
        cached = self._loaded.get(path)
        if cached is not None:
            return cached
        try:
            with open(path, "rb") as f:
                private = serialization.load_pem_private_key(f.read(), password=None)
        except (OSError, ValueError, TypeError) as e:
            log.error("dkim: the key {path} cannot be read: {error}", path=path, error=str(e))
            return None
        if kind == "rsa":
            if not isinstance(private, rsa.RSAPrivateKey):
                log.error("dkim: {path} is not an RSA key", path=path)
                return None
            pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
            public = private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            loaded = (SigningKey(b"rsa-sha256", selector, pem),
                      "v=DKIM1; k=rsa; p=%s" % base64.b64encode(public).decode("ascii"))
        else:
            if not isinstance(private, ed25519.Ed25519PrivateKey):
                log.error("dkim: {path} is not an ed25519 key", path=path)
                return None
            raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                        serialization.NoEncryption())
            public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                       serialization.PublicFormat.Raw)
            loaded = (SigningKey(b"ed25519-sha256", selector, base64.b64encode(raw)),
                      "v=DKIM1; k=ed25519; p=%s" % base64.b64encode(public).decode("ascii"))
        self._loaded[path] = loaded
        return loaded

    def txt(self, selector):
        """The DNS TXT value of `selector`'s key (`v=DKIM1; k=...; p=...`), or None."""
        loaded = self._load(selector)
        return loaded[1] if loaded is not None else None

    def signing_keys(self, selector):
        """The two `SigningKey`s of RSA selector `selector` (RSA first); those on disk."""
        out = []
        for name in (selector, ed25519_selector(selector)):
            loaded = self._load(name)
            if loaded is not None:
                out.append(loaded[0])
        return out

    # ------------------------------------------------------------ retirement

    def _state(self):
        try:
            with open(os.path.join(self.directory, STATE_FILE)) as f:
                state = json.load(f)
            retired = state.get("retired", [])
            return {"retired": [s for s in retired if isinstance(s, str)]}
        except FileNotFoundError:
            return {"retired": []}
        except (OSError, ValueError, AttributeError) as e:
            log.warn("dkim: ignoring {file}: {error}", file=STATE_FILE, error=str(e))
            return {"retired": []}

    def _save(self, state):
        ensure_directory(self.directory)
        write_atomically(os.path.join(self.directory, STATE_FILE),
                         json.dumps(state, indent=1, sort_keys=True) + "\n")

    def retired(self):
        """The RSA selectors replaced by a rotation whose keys are still published."""
        return list(self._state()["retired"])

    def retire(self, selector):
        """`selector` is no longer current: kept published until `drop`."""
        state = self._state()
        if selector not in state["retired"]:
            state["retired"].append(selector)
            self._save(state)

    def restore(self, selector):
        """`selector` is current (again): not retired."""
        state = self._state()
        if selector in state["retired"]:
            state["retired"].remove(selector)
            self._save(state)

    def drop(self, selector):
        """Remove a retired selector: its key files and its place in the state."""
        for kind in ("rsa", "ed25519"):
            path = self._file(selector, kind)
            self._loaded.pop(path, None)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        state = self._state()
        if selector in state["retired"]:
            state["retired"].remove(selector)
            self._save(state)
        log.info("dkim: retired selector {selector} dropped", selector=selector)

    def published(self, current):
        """The selectors to publish, RSA and ed25519: `current`'s, then the retired ones'."""
        out = []
        for base in [current] + [s for s in self.retired() if s != current]:
            for name in (base, ed25519_selector(base)):
                if self._files_of(name) is not None and name not in out:
                    out.append(name)
        return out


# ---------------------------------------------------------------- the records

@attr.s(frozen=True, slots=True)
class MailRecord:
    """
    One record the office's mail needs in DNS. Iterates as the 5-tuple
    (label, "TXT", value, purpose, note); `source` says whether a `[record]`
    replaced the built-in value.
    """

    label = attr.ib()       # relative to the domain: "@", "_dmarc", "S._domainkey"
    rtype = attr.ib()
    value = attr.ib()       # the text, unquoted
    purpose = attr.ib()     # "dkim" | "spf" | "dmarc"
    note = attr.ib(default="")
    source = attr.ib(default="built-in")    # "built-in" | "record"

    def __iter__(self):
        return iter((self.label, self.rtype, self.value, self.purpose, self.note))

    def as_dict(self, domain):
        """The record as `IMailSecurity.records()` lists it."""
        name = domain if self.label == "@" else "%s.%s" % (self.label, domain)
        return {"name": name, "type": self.rtype, "value": self.value, "purpose": self.purpose,
                "source": self.source, "note": self.note}


def spf_value(config):
    """The SPF policy: the MX hosts only, or with the smarthost too (soft fail then)."""
    smarthost = config.mail.smarthost
    if not smarthost:
        return "v=spf1 mx -all"
    host = str(smarthost[0])
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        mechanism = "a:%s" % host
    else:
        mechanism = "%s:%s" % ("ip4" if ip.version == 4 else "ip6", ip)
    return "v=spf1 mx %s ~all" % mechanism


def _overrides(label, record):
    """Whether `[record label]` replaces the built-in record of that name."""
    if record is None or not record.txt:
        return False
    if label == "@":
        # The apex may hold other TXT records (site verifications): only an SPF one replaces.
        return record.txt.strip().lower().startswith("v=spf1")
    return True


def mail_dns_records(config, keys):
    """
    The `MailRecord`s of the office's mail: the DKIM keys `keys` (a
    `DkimKeys`, or None) publish for `[mail] dkim_selector` and the retired
    selectors, SPF at the domain and DMARC at `_dmarc`; a `[record]` of the
    same name with a `txt` gives the value instead (source "record").
    """
    current = config.mail.dkim_selector
    rows = []
    if keys is not None:
        for selector in keys.published(current):
            value = keys.txt(selector)
            if value is None:
                continue
            note = ("" if selector in (current, ed25519_selector(current)) else
                    "retired key: published until no queued mail is signed with it")
            rows.append(MailRecord(selector + "._domainkey", "TXT", value, "dkim", note))
    note = ""
    if config.mail.smarthost:
        note = ("mail leaves through the smarthost: add your provider's own SPF include "
                "(include:...) to this record")
    rows.append(MailRecord("@", "TXT", spf_value(config), "spf", note))
    rows.append(MailRecord("_dmarc", "TXT", "v=DMARC1; p=quarantine", "dmarc"))
    out = []
    for row in rows:
        record = config.records.get(row.label)
        if _overrides(row.label, record):
            row = attr.evolve(row, value=record.txt.strip(), source="record")
        out.append(row)
    return out
