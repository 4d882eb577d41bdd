# -*- test-case-name: allworx.tests.lab.test_acme -*-
"""
The lab's ACME CA: pebble (RFC 8555 test server, Debian package `pebble`)
in the `inet` namespace on ACME_IP, its directory at ACME_DIRECTORY
(https://acme.internet.example:14000/dir), its management port 15000
(`/roots/0`: the root it signs with, new at each start).

pebble serves HTTPS with a certificate of its own; Debian's package ships
none, so `up` makes a small CA for it (STATE/acme/https-ca.pem, the bundle
a client of the directory trusts: the server is given it as
REQUESTS_CA_BUNDLE). It checks HTTP-01 challenges on port 80 of the names
ordered, resolved through the ISP's dnsmasq (-dnsserver), which points the
office's names at the server's WAN lease; PEBBLE_VA_NOSLEEP=1 makes it check
at once. `up` writes STATE/acme/pebble.json and runs `pebble` in the
foreground as the lab process `acme-ca`; `down` stops it by that PID.
"""

import json
import os
import time

from allworx.certificates import make_ca, make_leaf
from allworx.lab.maildir import write_atomically
from allworx.lab.processes import LabError
from allworx.lab.topology import (
    ACME_CA,
    ACME_DOMAIN,
    ACME_IP,
    ACME_MANAGEMENT_PORT,
    ACME_PORT,
    ACME_PORTS,
    ISP_WAN_IP,
)


class LabAcme:
    """The ACME CA part of a Lab (a mixin: it uses the lab's runner)."""

    @property
    def acme_dir(self):
        """pebble's directory: its config, its HTTPS key and certificate, the CA of those."""
        return self._path("acme")

    @property
    def acme_https_ca(self):
        """The CA file that verifies pebble's HTTPS (directory and management port)."""
        return os.path.join(self.acme_dir, "https-ca.pem")

    def acme_config(self):
        """The text of pebble's configuration."""
        return json.dumps({"pebble": {
            "listenAddress": "%s:%d" % (ACME_IP, ACME_PORT),
            "managementListenAddress": "%s:%d" % (ACME_IP, ACME_MANAGEMENT_PORT),
            "certificate": os.path.join(self.acme_dir, "https-cert.pem"),
            "privateKey": os.path.join(self.acme_dir, "https-key.pem"),
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }}, indent=2) + "\n"

    def _acme_https_files(self, now):
        """Make pebble's HTTPS certificate and its CA, once per lab."""
        if os.path.exists(self.acme_https_ca):
            return
        ca_key, ca_cert = make_ca("allworx lab: %s HTTPS" % ACME_DOMAIN, now)
        key, cert = make_leaf(ca_key, ca_cert, [ACME_DOMAIN], [ACME_IP], now)
        write_atomically(os.path.join(self.acme_dir, "https-key.pem"), key)
        write_atomically(os.path.join(self.acme_dir, "https-cert.pem"), cert)
        write_atomically(self.acme_https_ca, ca_cert)

    def _ensure_acme(self):
        """Write pebble's files; (re)start it if they changed or it is not running."""
        os.makedirs(self.acme_dir, exist_ok=True)
        self._acme_https_files(time.time())
        path = os.path.join(self.acme_dir, "pebble.json")
        text = self.acme_config()
        try:
            with open(path) as f:
                same = f.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            write_atomically(path, text.encode())
            self._stop_named(ACME_CA)
        if self._ensure_running(ACME_CA) is None:
            self.start_acme()

    def start_acme(self):
        """Start pebble in `inet`; returns once its directory and management ports listen."""
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        proc = self._spawn(ACME_CA, "inet", [
            "pebble", "-config", os.path.join(self.acme_dir, "pebble.json"),
            "-dnsserver", "%s:53" % ISP_WAN_IP], env=env)
        self.wait_listening("inet", ACME_PORTS, proc)
        return proc

    def stop_acme(self):
        self._stop_named(ACME_CA)

    def acme_root(self):
        """
        The root pebble signs with (PEM, from its management port's
        /roots/0, new at each start of pebble), also written to
        STATE/acme/root.pem; returns that path.
        """
        done = self.run("inet", [
            "curl", "-sS", "-m", "10", "--cacert", self.acme_https_ca,
            "https://%s:%d/roots/0" % (ACME_DOMAIN, ACME_MANAGEMENT_PORT)], check=False)
        if done.returncode != 0 or "BEGIN CERTIFICATE" not in done.stdout:
            raise LabError("pebble's root: curl exit %s: %s%s" % (
                done.returncode, done.stderr.strip(), done.stdout[:200]))
        path = os.path.join(self.acme_dir, "root.pem")
        write_atomically(path, done.stdout.encode())
        return path
