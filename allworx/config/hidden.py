# -*- test-case-name: allworx.tests.core.test_hidden -*-
"""
tap.conf's text as the pages and the API may show it (a kept version, a
diff between two): the value of every secret key (the model's `shown=False`
keys: password hashes, SIP digests, voicemail PINs, a trunk's password, the
metrics token) and the password in each fetch URL replaced by a mask (SPEC
11: secrets are set, never read). The text kept on disk is not touched.
"""

import re

import attr

from allworx.config.model import RECORD_SECTIONS, SETTINGS_SECTIONS

MASK = "********"


def secret_keys():
    """The names of the keys whose values are never shown."""
    return frozenset(f.name for cls in list(SETTINGS_SECTIONS.values()) + list(RECORD_SECTIONS.values())
                     for f in attr.fields(cls) if "parse" in f.metadata and not f.repr)


_URL_PASSWORD = re.compile(r"(\b(?:pop3s?|imaps?)://[^:/@\s]*:)[^@\s]*@")


def hide_secrets(text):
    """`text` (tap.conf or a unified diff of it) with secret values masked, line by line."""
    if not text:
        return text
    key = re.compile(r"^([-+ ]?[ \t]*(?:%s)[ \t]*=[ \t]*)(\S.*?)$"
                     % "|".join(sorted(map(re.escape, secret_keys()))))
    out = []
    for line in text.split("\n"):
        line = key.sub(lambda m: m.group(1) + MASK, line)
        out.append(_URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", line))
    return "\n".join(out)
