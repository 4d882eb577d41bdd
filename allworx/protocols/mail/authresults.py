# -*- test-case-name: allworx.tests.mail.test_authresults -*-
"""
The Authentication-Results header (RFC 8601) of mail from the internet.

The server writes one, on top, whose authserv-id is `hostname.DOMAIN`:
`allworx.example.com; spf=pass smtp.mailfrom=u@d; dkim=pass header.d=d
header.s=s header.a=rsa-sha256; dmarc=pass (p=reject) header.from=d`. Any
Authentication-Results header a message brings that claims that id (the
name compared without case, folded or not, after any comment) is removed
first, so nobody can forge our verdict; headers of other ids are kept.
"""

import re

_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.@]+$")


def authserv_id(config):
    """This server's authserv-id: `hostname.DOMAIN`."""
    return "%s.%s" % (config.system.hostname, config.system.domain)


def split_head(message):
    """(header fields (each with its continuation lines and line ends), the rest)."""
    message = bytes(message)
    if message.startswith((b"\r\n", b"\n")):
        return [], message
    ends = [i for i in (message.find(b"\r\n\r\n"), message.find(b"\n\n")) if i >= 0]
    if not ends:
        head, rest = message, b""
    else:
        end = min(ends)
        cut = end + (2 if message[end:end + 2] == b"\r\n" else 1)
        head, rest = message[:cut], message[cut:]
    fields = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields, rest


def field_name(field):
    return field.split(b":", 1)[0].strip().lower()


def unfolded_value(field):
    """The text after the colon, continuation lines joined."""
    value = field.split(b":", 1)[1] if b":" in field else b""
    return re.sub(rb"\r?\n", b"", value).decode("utf-8", "replace").strip()


def _strip_comments(text):
    """Text without leading CFWS: whitespace and (possibly nested) comments,
    whose quoted-pairs (`\\(`, `\\)`) count as plain characters (RFC 5322 3.2.2)."""
    text = text.lstrip()
    while text.startswith("("):
        depth, i, escaped = 0, 0, False
        for i, c in enumerate(text):
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    break
        text = text[i + 1:].lstrip()
    return text


def claimed_id(field):
    """The authserv-id an Authentication-Results field claims (lower case; a
    quoted-string's content, RFC 8601's `value` may be one; no final dot)."""
    text = _strip_comments(unfolded_value(field))
    quoted = re.match(r'"((?:[^"\\]|\\.)*)"', text)
    if quoted:
        text = re.sub(r"\\(.)", r"\1", quoted.group(1)).strip()
    return re.split(r"[\s;(]", text, 1)[0].lower().rstrip(".")


def remove_ours(message, server_id):
    """(`message` without the A-R headers claiming `server_id`, how many were removed)."""
    fields, rest = split_head(message)
    kept = [f for f in fields if not (field_name(f) == b"authentication-results" and
                                      claimed_id(f) == server_id.lower())]
    return b"".join(kept) + rest, len(fields) - len(kept)


def _pvalue(value):
    value = str(value)
    if _TOKEN.match(value):
        return value
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


def value(server_id, spf=None, dkim=(), dmarc=None):
    """
    The header's value (unfolded): the authserv-id, then `spf=` (an
    spf.SpfResult), one `dkim=` per dkimverify.DkimResult (`dkim=none`
    without any), `dmarc=` (a dmarc.DmarcResult).
    """
    parts = [server_id]
    if spf is not None:
        name, _, prop = spf.auth_property().partition("=")
        parts.append("spf=%s %s=%s" % (spf.result, name, _pvalue(prop)))
    if dkim:
        for r in dkim:
            text = "dkim=%s header.d=%s header.s=%s" % (r.result, _pvalue(r.domain),
                                                         _pvalue(r.selector))
            if r.algorithm:
                text += " header.a=%s" % _pvalue(r.algorithm)
            parts.append(text)
    else:
        parts.append("dkim=none")
    if dmarc is not None:
        text = "dmarc=%s" % dmarc.result
        if dmarc.policy:
            text += " (p=%s)" % dmarc.policy
        if dmarc.domain:
            text += " header.from=%s" % _pvalue(dmarc.domain)
        parts.append(text)
    return "; ".join(parts)


def header(text):
    """The header field for a value from `value`, folded after each `;` (LF line ends)."""
    return ("Authentication-Results: " + text.replace("; ", ";\n\t") + "\n").encode(
        "utf-8", "replace")
