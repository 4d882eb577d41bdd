# -*- test-case-name: allworx.tests.mail.test_authresults -*-
"""
DKIM verification (RFC 6376) of mail from the internet, without blocking.

The DKIM-Signature headers are read here (d=, s=, a=); the public keys at
`s._domainkey.d` are fetched first, asynchronously, through the injected
resolver; then dkimpy checks each signature (`dkim.DKIM(message).verify(idx=i,
dnsfunc=...)`) with a dnsfunc that answers from what was fetched. rsa-sha256
and ed25519-sha256 both verify. Results per signature: pass, fail, neutral
(not checked: beyond the first MAX_SIGNATURES), permerror (no or bad key,
broken signature, or a key too costly to use: more than MAX_KEY_BITS, an
exponent above MAX_EXPONENT, a record longer than MAX_KEY_RECORD; with a
made-up exponent as long as its modulus one 16384-bit key held the reactor
14 s), temperror (the key's lookup failed), and policy: the signature
verifies but its l= leaves part of the body unsigned (RFC 6376 8.2: text
appended after the signed length; such a signature does not count for
DMARC).
"""

import re

import base64
import binascii

import attr
import dkim
from dkim.canonicalization import CanonicalizationPolicy
from dkim.crypto import UnparsableKeyError, parse_public_key
from twisted.internet import defer

from allworx.protocols.mail import dnslookup
from allworx.protocols.mail.authresults import field_name, split_head, unfolded_value

MAX_SIGNATURES = 5
MAX_KEY_RECORD = 4096
MAX_KEY_BITS = 8192
MAX_EXPONENT = 2 ** 32


@attr.s(frozen=True, slots=True)
class DkimResult:
    """One signature: d=, s=, a= and the result word."""

    domain = attr.ib()
    selector = attr.ib()
    algorithm = attr.ib()
    result = attr.ib()
    reason = attr.ib(default="")


def signatures(message):
    """The tags ({name: value}) of each DKIM-Signature field, in the message's order."""
    fields, _ = split_head(message)
    out = []
    for field in fields:
        if field_name(field) != b"dkim-signature":
            continue
        tags = {}
        for part in unfolded_value(field).split(";"):
            name, eq, val = part.partition("=")
            if eq:
                tags[name.strip()] = re.sub(r"\s+", "", val)
        out.append(tags)
    return out


def key_name(tags):
    return "%s._domainkey.%s" % (tags.get("s", ""), tags.get("d", "").rstrip("."))


def _crlf(message):
    return re.sub(rb"\r?\n", b"\r\n", bytes(message))


@defer.inlineCallbacks
def verify(resolver, message):
    """Fires with a list of DkimResult, one per signature (empty for an unsigned message)."""
    found = signatures(message)
    wanted = {key_name(t).lower() for t in found[:MAX_SIGNATURES]
              if t.get("d") and t.get("s")}
    keys = {}
    names = sorted(wanted)
    answers = yield defer.DeferredList([dnslookup.txt(resolver, n) for n in names],
                                       consumeErrors=True)
    for name, (ok, answer) in zip(names, answers):
        keys[name] = answer if ok else None         # None: temperror
    data = _crlf(message)
    results = []
    for i, tags in enumerate(found):
        domain, selector = tags.get("d", "").lower(), tags.get("s", "")
        algorithm = tags.get("a", "")
        if i >= MAX_SIGNATURES:
            results.append(DkimResult(domain, selector, algorithm, "neutral", "too many signatures"))
            continue
        results.append(DkimResult(domain, selector, algorithm,
                                  *_check(data, i, tags, keys)))
    return results


def _check(data, index, tags, keys):
    if not tags.get("d") or not tags.get("s"):
        return "permerror", "signature without d= or s="
    name = key_name(tags).lower()
    records = keys.get(name)
    if records is None:
        return "temperror", "no answer for %s" % name
    records = [r for r in records if "p=" in r]
    if not records:
        return "permerror", "no key at %s" % name

    def dnsfunc(asked, timeout=5):
        asked = asked.decode("ascii", "replace") if isinstance(asked, bytes) else asked
        if asked.rstrip(".").lower() != name:
            return None
        return records[0].encode("utf-8")
    costly = _too_costly(records[0])
    if costly:
        return "permerror", "key at %s refused: %s" % (name, costly)
    verifier = dkim.DKIM(data)
    try:
        ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
    except dkim.KeyFormatError as e:
        return "permerror", "bad key: %s" % e
    except dkim.ValidationError as e:
        text = str(e)
        if "mismatch" in text or "expired" in text:
            return "fail", text
        return "permerror", "bad signature: %s" % text
    except dkim.DKIMException as e:
        return "fail", str(e)
    except Exception as e:          # dkimpy on input it did not expect
        return "permerror", "%s: %s" % (type(e).__name__, e)
    if not ok:
        return "fail", "signature did not verify"
    return _unsigned_tail(verifier, tags) or ("pass", "")


def _key_tags(record):
    tags = {}
    for part in record.split(";"):
        name, eq, val = part.partition("=")
        if eq:
            tags[name.strip()] = re.sub(r"\s+", "", val)
    return tags


def _too_costly(record):
    """Why the key record is refused before any arithmetic with it, or ""."""
    if len(record) > MAX_KEY_RECORD:
        return "a key record of %d characters" % len(record)
    tags = _key_tags(record)
    if tags.get("k", "rsa").lower() != "rsa":
        return ""
    try:
        key = parse_public_key(base64.b64decode(tags.get("p", ""), validate=False))
    except (binascii.Error, UnparsableKeyError, ValueError, IndexError, TypeError):
        return ""           # dkimpy says what is wrong with it
    if key["modulus"].bit_length() > MAX_KEY_BITS:
        return "a %d-bit key" % key["modulus"].bit_length()
    if not 1 < key["publicExponent"] <= MAX_EXPONENT:
        return "an exponent of %d bits" % key["publicExponent"].bit_length()
    return ""


def _unsigned_tail(verifier, tags):
    """("policy", why) when the signature's l= leaves some of the body unsigned, else None."""
    if "l" not in tags:
        return None
    try:
        signed = int(tags["l"])
        policy = CanonicalizationPolicy.from_c_value(tags.get("c", "simple/simple").encode())
        length = len(policy.canonicalize_body(verifier.body))
    except Exception:           # dkimpy verified with these: not expected
        return "policy", "l= body length not understood"
    if length > signed:
        return "policy", "l=%d leaves %d bytes of the body unsigned" % (signed, length - signed)
    return None
