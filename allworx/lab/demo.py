# -*- test-case-name: allworx.tests.lab.test_namespaces -*-
"""
`make run`: the virtual office with the server in it, in the foreground.

Builds the lab (with its telephony provider, Kamailio at sip.internet.example,
and its ACME CA, pebble at acme.internet.example, from which the server takes
its certificate when tap.conf names it in [tls] acme_directory),
starts `twistd -n allworx` in the server's namespace with the given tap.conf,
lets the lab PCs take DHCP leases, forwards 127.0.0.1:8080 of this machine to
the admin pages (no route or address of this machine changes), writes the
outside phones' baresip configurations, prints how to reach everything and how
to call the office from outside, and on Ctrl-C stops the server and removes
the lab.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

from allworx.lab.namespaces import Lab
from allworx.lab.processes import LabError, unavailable_reason
from allworx.lab.topology import (
    ACME_DIRECTORY,
    ACME_DOMAIN,
    ACME_MANAGEMENT_PORT,
    LAB_PROGRAMS,
    OFFICE_NUMBERS,
    OUTSIDE_PASSWORDS,
    OUTSIDE_PHONES,
    PROVIDER_DOMAIN,
    PROVIDER_IP,
    TRUNK_SECRET,
    TRUNK_USER,
)

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def banner(admin_port, local_port, data_dir, config, phones="", keys="STATE/inet/dkim"):
    return """
================================================================================
 allworx is running in the virtual office (lab prefix awx).

 Admin pages:   https://127.0.0.1:{local}/   user admin, password admin-demo
                (forwarded to {lan}:{admin} on the office LAN; its certificate is
                signed by the server's own CA, {data}/tls/ca.crt, or, with
                [tls] acme_directory, by the lab's ACME CA below)
 Config:        {config} (the admin pages edit this file)
 Data:          {data}

 Try it from the lab's PCs and phones:
   allworx lab exec pc1 ip addr show eth0        # its DHCP lease from the server
   allworx lab exec pc1 dig www.example.com      # the office zone
   allworx lab exec pc1 curl -s http://198.51.100.10/whoami   # NAT: shows the WAN address
   allworx lab exec pc1 swaks --server 192.168.2.254 --to bob@example.com
   allworx lab exec inet swaks --server <WAN address> --to alice@example.com
   allworx lab exec inet swaks --server <WAN address> --to alice@example.com \\
       --local-interface 198.51.100.66      # listed in dnsbl.internet.example: 554
   {python} -m allworx.lab.mailsender --keys {keys} \\
       --from news@internet.example --to alice@example.com --out /tmp/signed.eml
   allworx lab exec inet swaks --server <WAN address> --from news@internet.example \\
       --to alice@example.com --data @/tmp/signed.eml     # DKIM-signed: dkim=pass
   allworx lab status
{phones}
 Ctrl-C stops the server and removes the virtual office.
================================================================================
""".format(local=local_port, lan="192.168.2.254", admin=admin_port,
           config=config, data=data_dir, phones=phones, keys=keys,
           python=sys.executable)


def acme_banner(lab, config):
    """How the office's certificate comes from the lab's ACME CA, and how to trust its root."""
    lines = ["", " ACME CA on the lab's internet: %s (pebble)" % ACME_DIRECTORY]
    if config.tls.acme_directory != ACME_DIRECTORY:
        lines.append("   not used: set [tls] acme_directory = %s to take the office's "
                     "certificate from it" % ACME_DIRECTORY)
        return "\n".join(lines) + "\n"
    try:
        root = lab.acme_root()
    except LabError as e:
        root = "(not fetched: %s)" % e
    lines += [
        "   the office's certificate comes from it (Status page: certificates); its root,",
        "   new at each start of pebble, is in %s; trust it to verify, e.g." % root,
        "   allworx lab exec pc1 openssl s_client -connect imap.example.com:993 -CAfile %s"
        % root,
        "   fetch it again: allworx lab exec inet curl --cacert %s https://%s:%d/roots/0"
        % (lab.acme_https_ca, ACME_DOMAIN, ACME_MANAGEMENT_PORT),
    ]
    return "\n".join(lines) + "\n"


def phone_banner(lab, config_name):
    """How to call the office from the lab's internet: the provider, the
    office's trunk account and numbers, the outside phones and how to run one."""
    lines = [
        "",
        " Telephony provider (ITSP) on the lab's internet: %s (%s, Kamailio)"
        % (PROVIDER_DOMAIN, PROVIDER_IP),
        "   its log: %s" % os.path.join(lab.state_dir, "logs", "provider.log"),
        "   the office's trunk account: username %s, secret %s," % (TRUNK_USER, TRUNK_SECRET),
        "   numbers %s (a [trunk] in %s registers it)" % (" ".join(OFFICE_NUMBERS), config_name),
        " Outside phones (accounts at the provider; baresip in the inet host):",
    ]
    for user, number in sorted(OUTSIDE_PHONES.items()):
        lines.append("   %-6s %s  password %s" % (user, number, OUTSIDE_PASSWORDS[user]))
        lines.append("          allworx lab exec inet baresip -f " + lab.outside_phone_dir(user))
    lines += [
        "   In baresip: /dial %s (or %s) calls the office, /dial %s calls %s;"
        % (OFFICE_NUMBERS[0], OFFICE_NUMBERS[0][2:], OUTSIDE_PHONES["bob"], "bob"),
        "   /accept, /hangup, /quit. No sound card: a phone sends a 440 Hz tone and",
        "   records what it hears in its directory's snd/.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="allworx-demo", description=__doc__)
    parser.add_argument("--config", default="tap.conf")
    parser.add_argument("--data-dir", default="run-data")
    parser.add_argument("--local-port", type=int, default=8080,
                        help="port on 127.0.0.1 of this machine for the admin pages")
    args = parser.parse_args(argv)

    reason = unavailable_reason(LAB_PROGRAMS + ("socat", "dhclient"))
    if reason:
        sys.stderr.write("make run: %s\n" % reason)
        return 2
    from allworx.config import ConfigErrors, load_config
    try:
        config = load_config(args.config)
    except ConfigErrors as e:
        sys.stderr.write(e.report() + "\n")
        return 1

    config_path = os.path.abspath(args.config)
    data_dir = os.path.abspath(args.data_dir)
    os.makedirs(data_dir, exist_ok=True)
    lab = Lab()
    print("building the virtual office ...", flush=True)
    lab.up()
    server = None
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server = lab.popen("server", [TWISTD, "-n", "--pidfile=", "--logfile=-",
                                      "allworx", "-c", config_path, "--data-dir", data_dir],
                           name="allworx-server", stdout=None, stderr=None,
                           # the HTTPS of the lab's ACME CA, by requests' own variable
                           env=dict(os.environ, REQUESTS_CA_BUNDLE=lab.acme_https_ca))
        time.sleep(2)
        for host in ("pc1", "pc2", "phone1", "phone2"):
            # The lab's own dhclient script: the lease applies inside the
            # namespace only, never to this machine's /etc or /run.
            lab.dhclient(host, "eth0", wait=False)
        lab.forward_port(args.local_port, "admin", "192.168.2.254", config.web.admin_port)
        phones = phone_banner(lab, os.path.basename(config_path)) + acme_banner(lab, config)
        print(banner(config.web.admin_port, args.local_port, data_dir, config_path, phones,
                     keys=lab.mail_keys.directory), flush=True)
        while not stopping and server.poll() is None:
            time.sleep(0.5)
        if server.poll() is not None and not stopping:
            print("the server exited with status %s" % server.returncode, flush=True)
    finally:
        print("stopping the server and removing the virtual office ...", flush=True)
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        try:
            lab.down()
        except LabError as e:
            sys.stderr.write("lab down: %s\n" % e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
