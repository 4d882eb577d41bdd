# -*- test-case-name: allworx.tests.mail.test_multidrop -*-
"""
Multi-drop routing (guide 8.2): a message fetched from the office's one
mailbox at the ISP goes to every local user or alias its recipient headers
name (To, Cc, Delivered-To, X-Original-To, Envelope-To), each once; when none
is local, to the admin user. Pure: headers in, recipient names out.
"""

import email.parser
import email.policy
import email.utils

from allworx.protocols.mail.aliases import ADMIN_USER, classify, local_part

RECIPIENT_HEADERS = ("to", "cc", "delivered-to", "x-original-to", "envelope-to")
_HEAD_LIMIT = 256 * 1024


def header_addresses(message):
    """Every address in the recipient headers of `message` (bytes), in order, lower case."""
    end = message.find(b"\n\n")
    crlf = message.find(b"\r\n\r\n")
    if crlf >= 0 and (end < 0 or crlf < end):
        end = crlf
    head = message[:end if end >= 0 else _HEAD_LIMIT][:_HEAD_LIMIT]
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    values = []
    for name in RECIPIENT_HEADERS:
        for value in parsed.get_all(name) or ():
            values.append(str(value))
    out = []
    for _, addr in email.utils.getaddresses(values):
        addr = addr.strip().strip("<>").lower()
        if "@" in addr and addr not in out:
            out.append(addr)
    return out


def route(config, message, fallback=ADMIN_USER):
    """
    The local names (users or aliases) `message` should go to, each once, in
    header order; `[fallback]` when no recipient header names one.
    """
    names = []
    for addr in header_addresses(message):
        if classify(config, addr) == "local":
            name = local_part(config, addr)
            if name not in names:
                names.append(name)
    return names or [fallback]
