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
is kept current). Once the server answers, the laptop joins: its client
config is fetched from the admin API (`/api/v1/devices/laptop/wireguard.conf`,
over HTTPS verified with the CA that signed the admin port's certificate: the
lab's ACME root or the server's own CA), written to the lab's state
directory (a new key is asked for when an earlier run saw the server's), and
`allworx.lab.wgclient` brings wireguard-go up in the laptop with it. Pebble
makes a new root at each start: the server's certificate from an earlier
run's pebble (which nothing the lab has verifies) is removed before the
server starts, so it asks pebble again.
"""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

from allworx import atomicfile
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
    OFFICE_DOMAIN,
    OFFICE_NUMBERS,
    OUTSIDE_PASSWORDS,
    OUTSIDE_PHONES,
    PROVIDER_DOMAIN,
    PROVIDER_IP,
    TRUNK_SECRET,
    TRUNK_USER,
    TUNNEL_MAIN_IP,
)
from allworx.lab.wgclient import NOT_SHOWN, LabWireGuardClient

BRANCH_PORT = 8081
LAPTOP_IFNAME = "awg2"

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


def admin_cas(lab, config, data_dir):
    """
    The CA files that may verify the admin port's certificate, the likelier
    first: with tap.conf's `[tls] acme_directory` naming the lab's CA, the
    certificate comes from pebble once issued, so pebble's root (new at each
    start of pebble, fetched now) comes first; the server's own CA
    (DATA/tls/ca.crt) signs the certificate until then and without ACME.
    """
    cas = [os.path.join(data_dir, "tls", "ca.crt")]
    if config.tls.acme_directory == ACME_DIRECTORY:
        try:
            cas.insert(0, lab.acme_root())
        except LabError:
            pass
    return cas


def stale_acme_certificate(data_dir, root_path):
    """
    Whether the server's last certificate from the ACME CA (DATA/tls/acme.pem)
    was issued under another root than pebble's of now (`root_path`): pebble
    makes a new root at each start, so a certificate from an earlier run's
    pebble verifies with nothing the lab still has, yet the server would
    serve it for years (it is good for its names).
    """
    from cryptography import x509
    try:
        with open(os.path.join(data_dir, "tls", "acme.pem"), "rb") as f:
            chain = x509.load_pem_x509_certificates(f.read())
        with open(root_path, "rb") as f:
            root = x509.load_pem_x509_certificate(f.read())
    except FileNotFoundError:
        return False
    top = chain[-1]
    if top == root:
        return False
    try:
        top.verify_directly_issued_by(root)
    except Exception:
        return True
    return False


def drop_stale_acme_certificate(lab, config, data_dir):
    """
    Before the server starts: an ACME certificate of an earlier run's pebble
    is removed, so the server serves its own CA's and asks pebble again (as
    at its first start). Returns a sentence, or None when nothing was done.
    """
    if config.tls.acme_directory != ACME_DIRECTORY:
        return None
    try:
        root = lab.acme_root()
    except LabError as e:
        return "the lab's ACME CA has no root to check the server's certificate with (%s)" % e
    if not stale_acme_certificate(data_dir, root):
        return None
    path = os.path.join(data_dir, "tls", "acme.pem")
    os.unlink(path)
    return ("removed %s: an earlier run's pebble issued it and its root is gone; the server "
            "asks the lab's ACME CA again" % path)


class AdminApi:
    """
    The admin API as curl on the lab's admin host reaches it: by the
    server's name (an ACME certificate names no address), resolved to its
    LAN address, the certificate verified with one of `cas` (never
    without). `run` is `Lab.run`.
    """

    def __init__(self, run, config, cas, password="admin-demo"):
        self.run = run
        name = "%s.%s" % (config.system.hostname, config.system.domain)
        port = config.web.admin_port
        self.base = "https://%s:%d/api/v1" % (name, port)
        self.resolve = "%s:%d:%s" % (name, port, config.lan_ip)
        self.cas = list(cas)
        self.password = password
        self.said = ""

    def call(self, path, method="GET"):
        """The answer's text, or None (then `said` tells what curl said with each CA)."""
        said = []
        for ca in self.cas:
            argv = ["curl", "-sS", "-f", "-m", "5", "-u", "admin:" + self.password,
                    "--resolve", self.resolve, "--cacert", ca]
            if method != "GET":
                argv += ["-X", method, "-H", "Content-Type: application/json", "--data", "{}"]
            done = self.run("admin", argv + [self.base + path], check=False, timeout=20)
            if done.returncode == 0:
                return done.stdout
            said.append("with %s: %s" % (ca, (done.stderr or done.stdout).strip()[-200:]))
        self.said = "; ".join(said)
        return None


def laptop_config_text(api):
    """
    One try at the laptop's client config with its private key, or None.
    The server shows a key it made once; a config that says it was shown
    (an earlier run's, whose copy went with the lab's state) gets a new key.
    """
    path = "/devices/%s/wireguard.conf" % LAPTOP
    text = api.call(path)
    if text is not None and NOT_SHOWN in text:
        if api.call("/devices/%s/key" % LAPTOP, method="POST") is None:
            return None
        text = api.call(path)
    if text is None:
        return None
    if "[Interface]" not in text or NOT_SHOWN in text:
        api.said = "the answer was no client config with a key: %r" % text[:200]
        return None
    return text


def _say(text):
    print(text, flush=True)


def fetch_laptop_config(lab, config, data_dir, path, stopping, timeout=120,
                        sleep=time.sleep, clock=time.monotonic, say=_say):
    """
    Fetch the laptop's client config from the admin API once the server
    answers, into `path` (0600, in the lab's state directory). Returns its
    text, or None (and says why) after `timeout` or when stopping.
    """
    deadline = clock() + timeout
    api = None
    while not stopping and clock() < deadline:
        api = AdminApi(lab.run, config, admin_cas(lab, config, data_dir))
        text = laptop_config_text(api)
        if text is not None:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            atomicfile.write_atomically(path, text.encode(), mode=0o600)
            return text
        sleep(2)
    say(" laptop: no config from %s/devices/%s/wireguard.conf (%s); the Users page offers it"
        % (api.base if api else "the admin API", LAPTOP, api.said if api else "stopped"))
    return None


def start_laptop(lab, config, data_dir, path, stopping, clients):
    """
    The laptop joins the office: its config fetched, wireguard-go brought up
    in it (`wgclient`, kept in `clients` to be taken down). Prints the outcome.
    """
    text = fetch_laptop_config(lab, config, data_dir, path, stopping)
    if text is None or stopping:
        return
    client = LabWireGuardClient(lab, "laptop", LAPTOP_IFNAME)
    clients.append(client)
    try:
        joined = client.up(text)
    except (LabError, ValueError, OSError) as e:
        print(" laptop: its tunnel did not come up: %s" % e, flush=True)
        return
    print(" laptop: %s up as %s with the config in %s; it reaches the office's LAN, e.g.\n"
          "   allworx lab exec laptop curl -u alice:alice-demo pop3://%s/"
          % (LAPTOP_IFNAME, joined.address, path, config.lan_ip), flush=True)


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
        " Laptop on the internet (%s; [device laptop] of alice in the config), joined over"
        % LAPTOP_IP,
        "   WireGuard once the server answers (see below): its config, from the admin API,",
        "   in %s; wireguard-go %s in it. Then it reaches the office:" % (laptop_config,
                                                                       LAPTOP_IFNAME),
        "   allworx lab exec laptop ping 192.168.2.254",
        "   allworx lab exec laptop curl -u alice:alice-demo pop3://192.168.2.254/   # POP3",
        "   allworx lab exec laptop dig @%s pc1.%s   # the office's DNS through the tunnel"
        % (TUNNEL_MAIN_IP, OFFICE_DOMAIN),
        "   by hand: %s -m allworx.lab.wgclient --interface awg3 CONFIG" % sys.executable,
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
    # The branch's admin logs in with the main office admin's password.
    admin = config.users.get("admin") or config.users.get((config.admins or [None])[0])
    branch_config, note = join_branch(config_path, data_dir, branch_dir,
                                      config.web.admin_password or admin.password)
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
    note = drop_stale_acme_certificate(lab, config, data_dir)
    if note:
        print(note, flush=True)
    server = branch = None
    stopping = []
    laptops = []

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
        laptop_config = os.path.join(lab.state_dir, LAPTOP, "wireguard.conf")
        phones = (phone_banner(lab, os.path.basename(config_path)) + acme_banner(lab, config)
                  + branch_banner(lab, branch_config, branch_dir, laptop_config))
        print(banner(config.web.admin_port, args.local_port, data_dir, config_path, phones,
                     keys=lab.mail_keys.directory), flush=True)
        threading.Thread(target=start_laptop, daemon=True, args=(
            lab, config, data_dir, laptop_config, stopping, laptops)).start()
        while not stopping and server.poll() is None:
            time.sleep(0.5)
        if server.poll() is not None and not stopping:
            print("the server exited with status %s" % server.returncode, flush=True)
    finally:
        print("stopping the servers and removing the virtual office ...", flush=True)
        for client in laptops:
            client.down()
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
