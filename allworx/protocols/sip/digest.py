# -*- test-case-name: allworx.tests.sip.test_digest -*-
"""
The client side of HTTP digest authentication as SIP uses it (RFC 2617,
RFC 7616 for SHA-256, RFC 8760 for SIP): reading a provider's challenge
(WWW-Authenticate or Proxy-Authenticate) and writing the Authorization or
Proxy-Authorization value that answers it. Pure functions, no Twisted.

The server side (checking what phones send) is the registrar's; this module
is what the server uses when it is itself the client: a trunk registering
with its provider, a call leaving through a trunk.
"""

import hashlib
import os
import re

HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}

# The order of preference when a provider offers several challenges.
PREFERENCE = ("SHA-256", "SHA-256-SESS", "MD5", "MD5-SESS")

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)')


class DigestError(ValueError):
    """A challenge this client cannot answer; the text says why."""


def parse_challenge(value):
    """
    `Digest realm="x", nonce="y", qop="auth,auth-int", ...` -> a dict with
    lower-case keys (quoted values unescaped) and `scheme` ("Digest").
    Raises DigestError for another scheme or a challenge without nonce.
    """
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError("not a Digest challenge: %r" % value[:40])
    out = {"scheme": "Digest"}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            raise DigestError("unreadable challenge near %r" % rest[pos:pos + 30])
        quoted = m.group(2)
        out[m.group(1).lower()] = (re.sub(r"\\(.)", r"\1", quoted) if quoted is not None
                                   else m.group(3))
        pos = m.end()
    if not out.get("nonce"):
        raise DigestError("challenge without a nonce")
    return out


def _algorithm(challenge):
    name = (challenge.get("algorithm") or "MD5").upper()
    base = name[:-5] if name.endswith("-SESS") else name
    if base not in HASHES:
        raise DigestError("unsupported digest algorithm %s" % name)
    return name, HASHES[base], name.endswith("-SESS")


def _qop(challenge):
    """'auth', or None when the challenge offers no qop; DigestError for auth-int only."""
    offered = challenge.get("qop")
    if offered is None:
        return None
    options = [q.strip().lower() for q in offered.split(",") if q.strip()]
    if "auth" not in options:
        raise DigestError("only qop=%s offered (auth-int is not supported)" % offered)
    return "auth"


def supported(challenge):
    """True when `answer` can answer this challenge (parsed dict)."""
    try:
        _algorithm(challenge)
        _qop(challenge)
    except DigestError:
        return False
    return True


def choose(values):
    """
    Of several challenge header values (one per algorithm, RFC 8760), the
    one to answer: the most preferred algorithm this client supports. Returns
    the parsed challenge, or None when none can be answered.
    """
    best, rank = None, len(PREFERENCE)
    for value in values:
        try:
            challenge = parse_challenge(value)
        except DigestError:
            continue
        if not supported(challenge):
            continue
        name = (challenge.get("algorithm") or "MD5").upper()
        r = PREFERENCE.index(name)
        if r < rank:
            best, rank = challenge, r
    return best


def _quote(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def answer(challenge_value, method, uri, username, password, cnonce=None, nc=1):
    """
    The Authorization (or Proxy-Authorization) header value answering a
    challenge (header text, or a dict from `parse_challenge`) for a request
    of `method` to `uri`. MD5 and SHA-256 (and their -sess forms), with qop
    auth when offered, else the RFC 2069 form. `cnonce` defaults to random.
    """
    challenge = (parse_challenge(challenge_value) if isinstance(challenge_value, str)
                 else challenge_value)
    name, h, sess = _algorithm(challenge)
    qop = _qop(challenge)

    def hexdigest(text):
        return h(text.encode("utf-8")).hexdigest()

    realm, nonce = challenge.get("realm", ""), challenge["nonce"]
    if cnonce is None and (qop or sess):
        cnonce = os.urandom(8).hex()
    nc_text = "%08x" % nc
    ha1 = hexdigest("%s:%s:%s" % (username, realm, password))
    if sess:
        ha1 = hexdigest("%s:%s:%s" % (ha1, nonce, cnonce))
    ha2 = hexdigest("%s:%s" % (method, uri))
    if qop:
        response = hexdigest(":".join((ha1, nonce, nc_text, cnonce, qop, ha2)))
    else:
        response = hexdigest(":".join((ha1, nonce, ha2)))
    parts = ["username=%s" % _quote(username), "realm=%s" % _quote(realm),
             "nonce=%s" % _quote(nonce), "uri=%s" % _quote(uri),
             "response=%s" % _quote(response),
             "algorithm=%s" % (challenge.get("algorithm") or name)]
    if cnonce is not None and (qop or sess):
        parts.append("cnonce=%s" % _quote(cnonce))
    if "opaque" in challenge:
        parts.append("opaque=%s" % _quote(challenge["opaque"]))
    if qop:
        parts += ["qop=%s" % qop, "nc=%s" % nc_text]
    return "Digest " + ", ".join(parts)
