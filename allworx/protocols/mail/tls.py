# -*- test-case-name: allworx.tests.mail.test_service -*-
"""
The certificate for STARTTLS, STLS and POP3S: `data_dir/tls/mail.pem` (the
private key and the certificate, PEM). On first start a self-signed one is
made for `hostname.domain`; put a real one in its place (same file, key and
chain) and restart, or change the config, to use it.
"""

import datetime
import os

from twisted.internet import ssl
from twisted.logger import Logger

from allworx.atomicfile import write_atomically

log = Logger()

CERT_FILE = "mail.pem"


def cert_path(data_dir):
    """Where the mail services' key and certificate live."""
    return os.path.join(data_dir, "tls", CERT_FILE)


def make_self_signed(hostname, now, days=3650):
    """
    PEM bytes of a new private key (EC P-256) and a self-signed certificate for
    `hostname`, valid from a day before `now` (POSIX seconds) for `days`.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
            + cert.public_bytes(serialization.Encoding.PEM))


def ensure_certificate(data_dir, hostname, now):
    """The path of the mail certificate, made (self-signed, valid from `now`) if there is none."""
    path = cert_path(data_dir)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_atomically(path, make_self_signed(hostname, now), mode=0o600)
        log.info("made a self-signed mail certificate for {hostname} in {path}; "
                 "replace it with a real one to stop clients' warnings", hostname=hostname, path=path)
    return path


def server_options(path):
    """Twisted TLS options for a server from a PEM file with key and certificate(s)."""
    with open(path, "rb") as f:
        pem = f.read()
    try:
        cert = ssl.PrivateCertificate.loadPEM(pem)
    except Exception as e:
        raise ValueError("%s: not a PEM private key and certificate: %s" % (path, e))
    extra = [c.original for c in _chain(pem)[1:]]   # intermediates after the first
    return ssl.CertificateOptions(privateKey=cert.privateKey.original,
                                  certificate=cert.original,
                                  extraCertChain=extra or None)


def _chain(pem):
    marker = b"-----BEGIN CERTIFICATE-----"
    parts = pem.split(marker)[1:]
    return [ssl.Certificate.loadPEM(marker + p) for p in parts]
