# -*- test-case-name: allworx.tests.lab.test_mailsender -*-
"""
The lab's internet mail senders: messages that the internet host sends to the
office, DKIM-signed for `internet.example` with the lab's own keys or not
signed at all (a forger's, a spammer's).

The keys (`LabDkimKeys`: RSA 2048 for selector `lab`, ed25519 for
`lab-ed25519`) are made once per lab under its state directory
(STATE/inet/dkim/); the ISP's dnsmasq publishes their public halves as
`SELECTOR._domainkey.internet.example`, next to the senders' SPF and DMARC
records (`allworx.lab.topology.DNS_TXT`). swaks cannot sign: a test writes the
message with `message()` and `LabDkimKeys.sign()` to a file and sends it with
`swaks --data @FILE`. From a shell:

    python -m allworx.lab.mailsender --keys STATE/inet/dkim \\
        --from news@internet.example --to alice@example.com --out /tmp/m.eml
    allworx lab exec inet swaks --server WAN --from news@internet.example \\
        --to alice@example.com --data @/tmp/m.eml
"""

import argparse
import base64
import email.policy
import email.utils
import os
import sys
from email.message import EmailMessage

import attr
import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from allworx import atomicfile
from allworx.lab.maildir import write_atomically
from allworx.lab.topology import MAIL_DOMAIN, MAIL_SELECTORS

# The longest string a TXT record holds (RFC 1035 3.3: one length byte).
TXT_STRING_MAX = 255

# What the signatures cover: the usual headers, From twice so that no second
# From can be added after signing.
SIGNED_HEADERS = (b"from", b"from", b"to", b"cc", b"subject", b"date", b"message-id",
                  b"reply-to", b"mime-version", b"content-type",
                  b"content-transfer-encoding")


def txt_strings(value, size=TXT_STRING_MAX):
    """A TXT value cut into the strings of at most `size` characters a record holds."""
    return [value[i:i + size] for i in range(0, len(value), size)] or [""]


def _b64(data):
    return base64.b64encode(data).decode("ascii")


@attr.s(frozen=True)
class LabDkimKeys:
    """
    The internet senders' DKIM keys in `directory` (made by `ensure()`), for
    `domain`: an RSA key for the first selector of `selectors`, an ed25519 key
    for the second.
    """

    directory = attr.ib()
    domain = attr.ib(default=MAIL_DOMAIN)
    selectors = attr.ib(default=MAIL_SELECTORS)

    def _path(self, selector):
        return os.path.join(self.directory, selector + ".key")

    def _algorithm(self, selector):
        return "rsa" if selector == self.selectors[0] else "ed25519"

    def exist(self):
        """Whether every selector's key is there."""
        return all(os.path.exists(self._path(s)) for s in self.selectors)

    def ensure(self):
        """Make the keys that are missing (the directory 0700, the files 0600)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        for selector in self.selectors:
            path = self._path(selector)
            if os.path.exists(path):
                continue
            if self._algorithm(selector) == "rsa":
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                data = key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.TraditionalOpenSSL,
                                         serialization.NoEncryption())
            else:
                # dkimpy's ed25519 private key: the 32-byte seed, base64.
                data = base64.b64encode(os.urandom(32)) + b"\n"
            atomicfile.write_atomically(path, data, mode=0o600)
        return self

    def _private(self, selector):
        with open(self._path(selector), "rb") as f:
            return f.read()

    def txt(self, selector):
        """The DNS TXT value publishing `selector`'s public key."""
        data = self._private(selector)
        if self._algorithm(selector) == "rsa":
            public = serialization.load_pem_private_key(data, None).public_key()
            der = public.public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
            return "v=DKIM1; k=rsa; p=" + _b64(der)
        seed = base64.b64decode(data.strip())
        public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + _b64(raw)

    def records(self):
        """[(name, TXT value)] for DNS; [] until `ensure()` made the keys."""
        if not self.exist():
            return []
        return [("%s._domainkey.%s" % (s, self.domain), self.txt(s)) for s in self.selectors]

    def sign(self, message, selectors=None):
        """`message` (bytes, CRLF) with a DKIM-Signature per selector on top."""
        signatures = []
        for selector in (self.selectors if selectors is None else selectors):
            if self._algorithm(selector) == "rsa":
                algorithm, key = b"rsa-sha256", self._private(selector)
            else:
                algorithm, key = b"ed25519-sha256", self._private(selector).strip()
            signatures.append(dkim.sign(
                message, selector.encode(), self.domain.encode(), key,
                canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=algorithm,
                include_headers=list(SIGNED_HEADERS)))
        return b"".join(signatures) + message


def message(sender, to, subject="lab mail", body="A message from the lab's internet.\n",
            headers=(), attachments=(), date=None):
    """
    A message (bytes, CRLF line ends): From `sender`, To `to`, `headers` more
    (name, value) pairs on top, and `attachments` ((file name, content type,
    bytes)) as MIME parts after the text.
    """
    msg = EmailMessage(policy=email.policy.SMTP)
    for name, value in headers:
        msg[name] = value
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = date or email.utils.formatdate(localtime=False)
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2]
    msg["Message-ID"] = email.utils.make_msgid(domain=domain or None)
    msg.set_content(body)
    for name, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def write_message(path, data):
    """Write a message for `swaks --data @PATH`; returns the swaks argument."""
    write_atomically(path, data)
    return "@" + path


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m allworx.lab.mailsender",
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument("--keys", required=True, help="the keys' directory (made if missing)")
    parser.add_argument("--from", dest="sender", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--subject", default="lab mail")
    parser.add_argument("--body", default="A message from the lab's internet.\n")
    parser.add_argument("--header", action="append", default=[], metavar="NAME: VALUE")
    parser.add_argument("--unsigned", action="store_true", help="do not sign")
    parser.add_argument("--out", help="the file to write (default: standard output)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    headers = []
    for line in args.header:
        name, sep, value = line.partition(":")
        if not sep:
            sys.stderr.write("--header needs NAME: VALUE, got %r\n" % line)
            return 2
        headers.append((name.strip(), value.strip()))
    data = message(args.sender, args.to, args.subject, args.body, headers)
    if not args.unsigned:
        data = LabDkimKeys(args.keys).ensure().sign(data)
    if args.out:
        write_message(args.out, data)
    else:
        sys.stdout.buffer.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
