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

With it the second office, `branch` (`allworx.lab.sites`): its server runs in
`bserver` with its own tap.conf and data (--branch-data-dir), both servers'
keys are made before they start, and tap.conf gets the main office's [vpn],
[site branch] and [device laptop] the first time (later only the branch's key
is kept current). The laptop's client config, fetched from the admin API once
the server answers, is saved for `python -m allworx.lab.wgclient`.
"""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

from allworx.lab.maildir import write_atomically
from allworx.lab.namespaces import Lab
from allworx.lab.processes import LabError, unavailable_reason
from allworx.lab.sites import (
    BRANCH_USERS,
    LAPTOP,
    branch_conf,
    main_office_sections,
    server_public_key,
    set_site_key,
)
from allworx.lab.topology import (
    ACME_DIRECTORY,
    ACME_DOMAIN,
    ACME_MANAGEMENT_PORT,
    BRANCH_DOMAIN,
    BRANCH_LAN_IP,
    BRANCH_LAN_NET,
    BRANCH_WAN_IP,
    LAB_PROGRAMS,
    LAPTOP_IP,
    OFFICE_NUMBERS,
    OUTSIDE_PASSWORDS,
    OUTSIDE_PHONES,
    PROVIDER_DOMAIN,
    PROVIDER_IP,
    TRUNK_SECRET,
    TRUNK_USER,
)

BRANCH_PORT = 8081

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


def join_branch(config_path, data_dir, branch_dir, admin_password_hash):
    """
    Make both servers' keys, write the branch's tap.conf (kept if there,
    with its [site main] key brought up to date) and give tap.conf its
    [vpn], [site branch] and [device laptop] if it has no [site branch]
    (else just the branch's current key). Returns (branch config path,
    what was done to tap.conf, a sentence).
    """
    os.makedirs(branch_dir, exist_ok=True)
    main_key = server_public_key(data_dir)
    branch_key = server_public_key(branch_dir)
    branch_path = os.path.join(branch_dir, "tap.conf")
    if os.path.exists(branch_path):
        with open(branch_path) as f:
            text = f.read()
        updated = set_site_key(text, "main", main_key)
        if updated is not None and updated != text:
            write_atomically(branch_path, updated.encode())
    else:
        write_atomically(branch_path, branch_conf(main_key, admin_password_hash).encode())
    with open(config_path) as f:
        text = f.read()
    updated = set_site_key(text, "branch", branch_key)
    if updated is None:
        if "\n[vpn]" in "\n" + text:
            return branch_path, ("%s has a [vpn] but no [site branch]: the offices are not "
                                 "joined (add one with public_key = %s)" % (config_path, branch_key))
        updated = text.rstrip("\n") + "\n\n# ---- Added by `make run`: the lab's branch office and " \
            "a laptop (docs/VPN.md).\n" + main_office_sections(branch_key)
        note = "added [vpn], [site branch] and [device laptop] to %s" % config_path
    elif updated != text:
        note = "updated the branch's public key in %s" % config_path
    else:
        note = "%s joins the branch already" % config_path
    if updated != text:
        write_atomically(config_path, updated.encode())
    return branch_path, note


def fetch_laptop_config(lab, config, data_dir, path, stopping, timeout=120):
    """
    Fetch the laptop's client config from the admin API (from the lab's
    admin host) into `path` once the server answers; the private key is in
    it only the first time, so it is kept. Prints what happened.
    """
    # By the server's name: an ACME certificate names no address.
    name = "%s.%s" % (config.system.hostname, config.system.domain)
    url = "https://%s:%d/api/v1/devices/%s/wireguard.conf" % (
        name, config.web.admin_port, LAPTOP)
    resolve = "%s:%d:192.168.2.254" % (name, config.web.admin_port)
    deadline = time.monotonic() + timeout
    said = ""
    while not stopping and time.monotonic() < deadline:
        cas = [os.path.join(data_dir, "tls", "ca.crt")]
        if config.tls.acme_directory == ACME_DIRECTORY:
            try:
                cas.insert(0, lab.acme_root())
            except LabError:
                pass
        for ca in cas:
            done = lab.run("admin", ["curl", "-sS", "-f", "-m", "5", "-u", "admin:admin-demo",
                                     "--resolve", resolve, "--cacert", ca, url],
                           check=False, timeout=20)
            said = "; ".join(filter(None, [said if ca != cas[0] else "", "with %s: %s" % (
                ca, (done.stderr or done.stdout).strip()[-200:])]))
            if done.returncode == 0 and "[Interface]" in done.stdout:
                write_atomically(path, done.stdout.encode())
                os.chmod(path, 0o600)
                print(" laptop: its WireGuard config is in %s" % path, flush=True)
                return True
        time.sleep(2)
    print(" laptop: no config from %s (%s); the Users page offers it" % (url, said), flush=True)
    return False


def branch_banner(lab, branch_config, branch_dir, laptop_config):
    """How to reach the branch office and the laptop."""
    lines = [
        "",
        " Branch office (site `branch`, %s), joined over WireGuard:" % BRANCH_DOMAIN,
        "   its server in bserver: WAN %s (the ISP's fixed lease), LAN %s, tunnel 192.168.99.2"
        % (BRANCH_WAN_IP, BRANCH_LAN_IP),
        "   admin pages: https://127.0.0.1:%d/ (admin, admin-demo; through bpc1)" % BRANCH_PORT,
        "   config %s, data %s," % (branch_config, branch_dir),
        "   log %s" % os.path.join(lab.state_dir, "logs", "allworx-branch.log"),
        "   its phones' accounts (registrar %s, LAN %s):" % (BRANCH_LAN_IP, BRANCH_LAN_NET),
    ]
    for user, (full, ext, password, pin) in sorted(BRANCH_USERS.items()):
        lines.append("     %-5s %s  %-11s password %s, voicemail PIN %s" % (user, ext, full,
                                                                         password, pin))
    lines += [
        "   try: allworx lab exec pc1 ping bpc1.%s    # across the tunnel" % BRANCH_DOMAIN,
        "        a main-office phone dials 201; allworx lab exec server ip -br addr",
        " Laptop on the internet (%s; [device laptop] of alice in the config):" % LAPTOP_IP,
        "   its config: %s (once fetched, see below)" % laptop_config,
        "   %s -m allworx.lab.wgclient %s   # wireguard-go in the laptop" % (sys.executable,
                                                                           laptop_config),
        "   then: allworx lab exec laptop ping 192.168.2.254",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="allworx-demo", description=__doc__)
    parser.add_argument("--config", default="tap.conf")
    parser.add_argument("--data-dir", default="run-data")
    parser.add_argument("--local-port", type=int, default=8080,
                        help="port on 127.0.0.1 of this machine for the admin pages")
    parser.add_argument("--branch-data-dir", default="run-data-branch",
                        help="the branch server's data directory (its tap.conf is made there)")
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
    branch_dir = os.path.abspath(args.branch_data_dir)
    os.makedirs(data_dir, exist_ok=True)
    branch_config, note = join_branch(config_path, data_dir, branch_dir,
                                      config.web.admin_password)
    print(note, flush=True)
    try:
        config = load_config(args.config)
        branch_settings = load_config(branch_config)
    except ConfigErrors as e:
        sys.stderr.write(e.report() + "\n")
        return 1
    lab = Lab()
    print("building the virtual office ...", flush=True)
    lab.up()
    server = branch = None
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
        # The branch's server logs to the lab's logs/allworx-branch.log.
        branch = lab.popen("bserver", [TWISTD, "-n", "--pidfile=", "--logfile=-", "allworx",
                                       "-c", branch_config, "--data-dir", branch_dir],
                           name="allworx-branch")
        time.sleep(2)
        for host in ("pc1", "pc2", "phone1", "phone2", "bpc1", "bphone1"):
            # The lab's own dhclient script: the lease applies inside the
            # namespace only, never to this machine's /etc or /run.
            lab.dhclient(host, "eth0", wait=False)
        lab.forward_port(args.local_port, "admin", "192.168.2.254", config.web.admin_port)
        lab.forward_port(BRANCH_PORT, "bpc1", BRANCH_LAN_IP, branch_settings.web.admin_port)
        laptop_config = os.path.join(data_dir, "laptop-wireguard.conf")
        phones = (phone_banner(lab, os.path.basename(config_path)) + acme_banner(lab, config)
                  + branch_banner(lab, branch_config, branch_dir, laptop_config))
        print(banner(config.web.admin_port, args.local_port, data_dir, config_path, phones,
                     keys=lab.mail_keys.directory), flush=True)
        if not os.path.exists(laptop_config):
            threading.Thread(target=fetch_laptop_config, daemon=True, args=(
                lab, config, data_dir, laptop_config, stopping)).start()
        while not stopping and server.poll() is None:
            time.sleep(0.5)
        if server.poll() is not None and not stopping:
            print("the server exited with status %s" % server.returncode, flush=True)
    finally:
        print("stopping the servers and removing the virtual office ...", flush=True)
        for proc in (server, branch):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (server, branch):
            if proc is not None and proc.poll() is None:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        try:
            lab.down()
        except LabError as e:
            sys.stderr.write("lab down: %s\n" % e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
