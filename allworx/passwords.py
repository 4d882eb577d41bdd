# -*- test-case-name: allworx.tests.core.test_auth -*-
"""
Password hashes for tap.conf (argon2id, via argon2-cffi: a maintained, audited
implementation of the current recommendation, better than anything hand-made).
"""

import hmac

import argon2

_hasher = argon2.PasswordHasher()


def hash_password(plain):
    """An argon2id hash of `plain` for a `password =` key."""
    if not plain:
        raise ValueError("the password is empty")
    return _hasher.hash(plain)


def verify_password(hashed, plain):
    """True when `plain` matches `hashed`; False for any mismatch or bad hash."""
    if not hashed or plain is None:
        return False
    try:
        return _hasher.verify(hashed, plain)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def hash_pin(pin):
    """
    The `voicemail_pin` value for the digits of a PIN: argon2id as for
    passwords. A PIN has few possible values, so no hash makes it safe to
    publish; the slow hash makes a search of a stolen tap.conf cost hours
    for 6 digits rather than a moment, and keeps the PIN out of sight in the
    file, its backups and the pages. It is checked in a thread (the phone
    menu waits on a Deferred), never on the reactor.
    """
    if not pin:
        raise ValueError("the PIN is empty")
    return _hasher.hash(pin)


def is_hashed(stored):
    """True for a hash this module wrote (argon2), False for a PIN typed into tap.conf."""
    return bool(stored) and stored.startswith("$argon2")


def verify_pin(stored, entered):
    """
    True when `entered` (the digits a caller keyed) matches the stored PIN:
    its hash, or (from a tap.conf not yet rewritten) the digits themselves,
    compared in constant time. False when no PIN is set.
    """
    if not stored or not entered:
        return False
    if is_hashed(stored):
        return verify_password(stored, entered)
    return hmac.compare_digest(stored.encode("utf-8"), entered.encode("utf-8"))


def sip_digest(username, realm, plain):
    """
    The `sip_digest` value of a user: H(username:realm:password) in MD5 and
    SHA-256 (RFC 3261 section 22, RFC 8760). SIP digest needs this pre-image
    of the password, which the argon2 hash cannot give; it only lets one
    authenticate as that phone in that realm, as a PBX's stored HA1 does.
    """
    import hashlib
    a1 = ("%s:%s:%s" % (username, realm, plain)).encode("utf-8")
    return "md5:%s sha256:%s" % (hashlib.md5(a1).hexdigest(), hashlib.sha256(a1).hexdigest())


def parse_sip_digest(text):
    """`md5:HEX sha256:HEX` -> {'MD5': hex, 'SHA-256': hex}."""
    out = {}
    for part in text.split():
        algo, sep, value = part.partition(":")
        name = {"md5": "MD5", "sha256": "SHA-256"}.get(algo.lower())
        if not sep or name is None or not all(c in "0123456789abcdef" for c in value.lower()):
            raise ValueError("expected 'md5:HEX sha256:HEX' from 'allworx passwd --sip', got %r" % part)
        if len(value) != (32 if name == "MD5" else 64):
            raise ValueError("the %s digest has the wrong length" % name)
        out[name] = value.lower()
    return out
