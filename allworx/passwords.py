# -*- test-case-name: allworx.tests.core.test_auth -*-
"""
Password hashes for tap.conf (argon2id, via argon2-cffi: a maintained, audited
implementation of the current recommendation, better than anything hand-made).
"""

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
