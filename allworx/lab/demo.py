# -*- test-case-name: allworx.tests.lab.test_namespaces -*-
"""
`make run`: the virtual office with the server in it, in the foreground.

Builds the lab (with its telephony provider, Kamailio at sip.internet.example,
and its ACME CA, pebble at acme.internet.example, from which the server takes
its certificate when tap.conf names it in [tls] acme_directory), copies the
given tap.conf (the repository's example) to the lab's state directory and
starts `twistd -n allworx` in the server's namespace with that copy, so the
admin pages change the copy and never the repository's file; the server's log
goes to DATA/allworx.log (its events are on the Logs page too). Once the
server is ready it lets the lab PCs and phones take DHCP leases, starts the
phones' SIP clients (`allworx.lab.labphones`: baresip registered as the lab
users' extensions; `allworx lab call phone1 102` places a call), forwards
127.0.0.1:8080 of this machine to the admin pages (no route or address of
this machine changes), writes the outside phones' baresip configurations,
waits for the WAN lease and the laptop's tunnel, and prints one banner, last:
how to reach everything, how to log in, how to call. On Ctrl-C it stops the
servers and removes the lab.

With it the second office, `branch` (`allworx.lab.sites`): its server runs in
`bserver` with its own tap.conf and data (--branch-data-dir), both servers'
keys are made before they start, and the runtime copy gets the main office's
[vpn], [site branch] and [device laptop]. Once the server answers, the laptop joins: its client
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
from allworx.lab.labphones import LAB_PHONES, PHONE_VENDOR_CLASS, start_phones_when_leased
from allworx.lab.maildir import write_atomically
from allworx.lab.namespaces import Lab
from allworx.lab.processes import LabError, unavailable_reason
from allworx.lab.runbanner import (  # noqa: F401 (phone_banner: tests use it from here)
    acme_banner,
    banner,
    branch_banner,
    login_text,
    office_phones_text,
    phone_banner,
)
from allworx.lab.sites import (
    LAPTOP,
    branch_conf,
    main_office_sections,
    server_public_key,
    set_site_key,
)
from allworx.lab.topology import ACME_DIRECTORY, BRANCH_LAN_IP, LAB_PROGRAMS
from allworx.lab.wgclient import NOT_SHOWN, LabWireGuardClient

BRANCH_PORT = 8081
LAPTOP_IFNAME = "awg2"

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def admin_hash(config):
    """The password hash `admin` logs in with: the old [web] admin_password
    while a config still has it, else [user admin]'s, else the first admin's."""
    if config.web.admin_password:
        return config.web.admin_password
    admin = config.users.get("admin")
    if admin is None or not admin.admin:
        admin = config.users[config.admins[0]] if config.admins else None
    return admin.password if admin is not None else None


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


def start_laptop(lab, config, data_dir, path, stopping, clients, said):
    """
    The laptop joins the office: its config fetched, wireguard-go brought up
    in it (`wgclient`, kept in `clients` to be taken down). The outcome, a
    sentence, is appended to `said` (the banner shows it).
    """
    text = fetch_laptop_config(lab, config, data_dir, path, stopping, say=said.append)
    if text is None or stopping:
        return
    client = LabWireGuardClient(lab, "laptop", LAPTOP_IFNAME)
    clients.append(client)
    try:
        joined = client.up(text)
    except (LabError, ValueError, OSError) as e:
        said.append("Its tunnel did not come up: %s" % e)
        return
    said.append("It is up as %s; it reaches the office:" % joined.address)


READY = "allworx ready:"


def runtime_config(source, state_dir):
    """
    The config the server of `make run` uses: a copy of `source` (the
    repository's example tap.conf) in the lab's state directory, mode 0600.
    The admin pages change the copy; the repository's file is only read.
    Returns its path.
    """
    with open(source, "rb") as f:
        text = f.read()
    path = os.path.join(state_dir, "tap.conf")
    atomicfile.write_atomically(path, text, mode=0o600)
    return path


def wait_for_text(path, text, proc, timeout, offset=0, sleep=time.sleep, clock=time.monotonic):
    """Whether `text` appears in file `path` after its first `offset` bytes
    (an earlier run's) before `timeout` passes or `proc` exits."""
    deadline = clock() + timeout
    while clock() < deadline and proc.poll() is None:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                if text.encode() in f.read():
                    return True
        except FileNotFoundError:
            pass
        sleep(0.2)
    return False


def wan_address(lab, host="server", ifname="wan0"):
    """The IPv4 address the server's WAN interface has (its lease), or None."""
    for link in lab._ip_json(host, "addr", "show", "dev", ifname):
        for addr in link.get("addr_info", []):
            if addr.get("family") == "inet":
                return addr.get("local")
    return None


def wait_wan_address(lab, stopping, timeout=60, sleep=time.sleep, clock=time.monotonic):
    deadline = clock() + timeout
    while not stopping and clock() < deadline:
        address = wan_address(lab)
        if address:
            return address
        sleep(0.5)
    return None


def log_tail(path, limit=3000):
    try:
        with open(path, "rb") as f:
            return f.read()[-limit:].decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def main(argv=None):
    parser = argparse.ArgumentParser(prog="allworx-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tap.conf",
                        help="the example config; the server runs on a copy of it in the "
                             "lab's state directory (default: tap.conf)")
    parser.add_argument("--data-dir", default="run-data",
                        help="the server's data directory; its log is allworx.log there "
                             "(default: run-data)")
    parser.add_argument("--local-port", type=int, default=8080,
                        help="port on 127.0.0.1 of this machine for the admin pages")
    parser.add_argument("--branch-data-dir", default="run-data-branch",
                        help="the branch server's data directory (its tap.conf is made there)")
    args = parser.parse_args(argv)

    reason = unavailable_reason(LAB_PROGRAMS + ("socat", "dhclient", "baresip"))
    if reason:
        sys.stderr.write("make run: %s\n" % reason)
        return 2
    from allworx.config import ConfigErrors, load_config
    try:
        config = load_config(args.config)
    except ConfigErrors as e:
        sys.stderr.write(e.report() + "\n")
        return 1

    source_path = os.path.abspath(args.config)
    data_dir = os.path.abspath(args.data_dir)
    branch_dir = os.path.abspath(args.branch_data_dir)
    log_path = os.path.join(data_dir, "allworx.log")
    os.makedirs(data_dir, exist_ok=True)
    lab = Lab()
    server = branch = None
    stopping = []
    laptops = []

    def on_signal(signum, frame):
        stopping.append(signum)
    try:
        print("building the virtual office ...", flush=True)
        lab.up()
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        config_path = runtime_config(source_path, lab.state_dir)
        # The branch's admin logs in with the main office admin's password.
        branch_config, note = join_branch(config_path, data_dir, branch_dir,
                                          admin_hash(config))
        print(note, flush=True)
        try:
            config = load_config(config_path)
            branch_settings = load_config(branch_config)
        except ConfigErrors as e:
            sys.stderr.write(e.report() + "\n")
            return 1
        note = drop_stale_acme_certificate(lab, config, data_dir)
        if note:
            print(note, flush=True)
        print("starting the server (its log: %s) ..." % log_path, flush=True)
        with open(log_path, "ab") as log:
            earlier = log.tell()
            server = lab.popen("server", [TWISTD, "-n", "--pidfile=", "--logfile=-",
                                          "allworx", "-c", config_path, "--data-dir", data_dir],
                               name="allworx-server", stdout=log, stderr=log,
                               # the HTTPS of the lab's ACME CA, by requests' own variable
                               env=dict(os.environ, REQUESTS_CA_BUNDLE=lab.acme_https_ca))
        # The branch's server logs to the lab's logs/allworx-branch.log.
        branch = lab.popen("bserver", [TWISTD, "-n", "--pidfile=", "--logfile=-", "allworx",
                                       "-c", branch_config, "--data-dir", branch_dir],
                           name="allworx-branch")
        if not wait_for_text(log_path, READY, server, 90, offset=earlier):
            print("the server is not ready (%s); the end of its log:\n%s"
                  % ("exited with status %s" % server.returncode if server.poll() is not None
                     else "no ready line in 90 s", log_tail(log_path)), flush=True)
            if server.poll() is not None:
                return 1
        for host in ("pc1", "pc2", "phone1", "phone2", "bpc1", "bphone1"):
            # The lab's own dhclient script: the lease applies inside the
            # namespace only, never to this machine's /etc or /run.
            # Phones say what they are (option 60) and so get option 66.
            lab.dhclient(host, "eth0", wait=False,
                         vendor_class=PHONE_VENDOR_CLASS if host in LAB_PHONES else None)
        lab.forward_port(args.local_port, "admin", config.lan_ip, config.web.admin_port)
        lab.forward_port(BRANCH_PORT, "bpc1", BRANCH_LAN_IP, branch_settings.web.admin_port)
        laptop_config = os.path.join(lab.state_dir, LAPTOP, "wireguard.conf")
        print("waiting for the WAN lease, the phones and the laptop's tunnel ...", flush=True)
        laptop_said = []
        laptop = threading.Thread(target=start_laptop, daemon=True, args=(
            lab, config, data_dir, laptop_config, stopping, laptops, laptop_said))
        laptop.start()
        phones_said = start_phones_when_leased(lab, sorted(LAB_PHONES), stopping)
        wan_ip = wait_wan_address(lab, stopping)
        laptop.join(150)
        if not stopping:
            sections = (office_phones_text(phones_said)
                        + phone_banner(lab, os.path.basename(source_path))
                        + acme_banner(lab, config)
                        + branch_banner(lab, branch_config, branch_dir, laptop_config,
                                        " ".join(laptop_said), BRANCH_PORT, LAPTOP_IFNAME))
            print(banner(config.web.admin_port, args.local_port, data_dir, config_path,
                         sections, keys=lab.mail_keys.directory,
                         login=login_text(admin_hash(config)), source=source_path,
                         log_path=log_path, wan_ip=wan_ip, prefix=lab.prefix), flush=True)
        while not stopping and server.poll() is None:
            time.sleep(0.5)
        if server.poll() is not None and not stopping:
            print("the server exited with status %s; the end of its log (%s):\n%s"
                  % (server.returncode, log_path, log_tail(log_path)), flush=True)
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
