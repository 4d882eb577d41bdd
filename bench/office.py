"""
An office of a given size on disk, in a pair of network namespaces, for the
start-up and scale benchmarks (bench/startup.py, bench/scale.py).

The office: `users` users (password, extension, SIP digest), `leases` DHCP
leases in the journal (each with a host name, so each is a DNS name),
`records` [host] sections (zone records), one mailbox (user u0001) holding
`messages` messages, and the server's full tap.conf (every service on). It is
built once under a directory and reused while its sizes are the same.

The namespaces: SRV holds the server (`lan0`, 192.168.2.254/18) and CLI the
client side (`eth0`, 192.168.3.254/18) of one veth pair; the benchmark's
own process moves into CLI (setns), so every probe is real LAN traffic and
nothing touches the host's network. Needs root. The LAN is a /18 because
5,000 leases need more than a /24, but the only addresses that carry
traffic are those two, in the lab's documentation ranges: the leases (from
192.168.4.0 up, FIRST_HOST) and the [host] records (down from host 16000)
are data the server loads, names and counts, never a destination.
"""

import ctypes
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib

from bench import common
from bench.common import netns_down

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SRV = "awb-office-srv"
CLI = "awb-office-cli"
NETWORK = "192.168.0.0"
SERVER_IP = "192.168.2.254"
CLIENT_IP = "192.168.3.254"
PREFIXLEN = 18
NETMASK = "255.255.192.0"
FIRST_HOST = 1024          # 192.168.4.0: pools and leases start past the two live addresses
LAST_RECORD_HOST = 16000   # [host] records count down from here
DOMAIN = "bench.example"
HOSTNAME = "allworx"
MAILBOX_USER = "u0001"
PASSWORD = "admin-demo"
PW_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$ERLlCFcNeGK550IgXEvC6g$"
           "wjiY1y6LH8GV9JTqJGT4odM/ewS7TCrb4fLs23rAQ64")   # admin-demo
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
CLONE_NEWNET = 0x40000000

CONF = """\
[system]
domain = {domain}
hostname = {hostname}
data_dir = {data}

[lan]
interface = lan0
address = {server}/{prefixlen}

[wan]
mode = disabled

[security]
mode = lan-only

[dhcp]
range = {pool}

[dns]
use_forwarders = no
primary = {server}

[web]
admin_password = {pw}
"""


# ---------------------------------------------------------------- namespaces

def down():
    """Remove the benchmark's namespaces (and with them the veth pair)."""
    netns_down(SRV, CLI)


def up():
    """Both namespaces and the LAN between them (fresh)."""
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    common.two_namespaces(SRV, CLI, "%s/%d" % (SERVER_IP, PREFIXLEN), "%s/%d" % (CLIENT_IP, PREFIXLEN))


def enter_client_namespace():
    """Move this process into CLI: every socket it opens from now on is on the LAN."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/var/run/netns/%s" % CLI, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns %s" % CLI)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the office on disk

def user_name(n):
    return "u%04d" % n


def pool_text(leases):
    """Host numbers of a pool holding `leases` (and room to spare) inside the LAN."""
    return "%d-%d" % (FIRST_HOST, FIRST_HOST + leases + 200)


def conf_text(data, users, records, leases, pool=None):
    """The whole tap.conf of an office of this size."""
    from allworx.passwords import sip_digest
    out = [CONF.format(domain=DOMAIN, hostname=HOSTNAME, data=data, server=SERVER_IP,
                       prefixlen=PREFIXLEN, pool=pool or pool_text(leases), pw=PW_HASH)]
    for n in range(1, users + 1):
        ext = str(1000 + n)
        out.append("[user %s]\nfull_name = User %d\nextension = %s\npassword = %s\n"
                   "sip_digest = %s\n" % (user_name(n), n, ext, PW_HASH,
                                          sip_digest(ext, DOMAIN, PASSWORD)))
    for n in range(records):
        out.append("[host h%05d]\nmac = 02:10:%02x:%02x:%02x:01\naddress = %s\n" % (
            n, (n >> 16) & 255, (n >> 8) & 255, n & 255, host_ip(LAST_RECORD_HOST - n)))
    return "\n".join(out)


def host_ip(number):
    """The LAN address with host number `number` (inside NETWORK/PREFIXLEN)."""
    base = struct.unpack("!I", socket.inet_aton(NETWORK))[0]
    return socket.inet_ntoa(struct.pack("!I", base + number))


def lease_mac(n):
    return "02:20:%02x:%02x:%02x:%02x" % ((n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)


def journal_line(record):
    body = json.dumps(record, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(body), body)


def write_leases(data, leases, records, now, first):
    """`leases` bound leases (a day left, host names pc00000...) from host number `first` on."""
    path = os.path.join(data, "dhcp", "leases.journal")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        for n in range(leases):
            f.write(journal_line({"op": "bind", "mac": lease_mac(n), "ip": host_ip(first + n),
                                  "expires": now + 86400, "host": "pc%05d" % n}))


def message(n):
    return ("Return-Path: <sender%d@source.example>\nFrom: Sender %d <sender%d@source.example>\n"
            "To: %s@%s\nSubject: message %d\nDate: Mon, 07 Dec 2026 00:00:00 +0000\n"
            "Message-ID: <m%d@source.example>\n\n%s\n" % (
                n, n, n, MAILBOX_USER, DOMAIN, n, n, "office mail body line\n" * 20)).encode()


def write_mailbox(data, messages):
    """The one big mailbox: `messages` read messages in cur/ (Maildir names, S flag)."""
    base = os.path.join(data, "mail", MAILBOX_USER)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    cur = os.path.join(base, "cur")
    stamp = 1796601600
    for n in range(messages):
        body = message(n)
        name = "%d.M%dP1.bench,S=%d:2,S" % (stamp + n // 100, n, len(body))
        fd = os.open(os.path.join(cur, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)


def build(work, users, leases, records, messages, pool=None):
    """
    The office under `work` (tap.conf, data/): rebuilt when its sizes
    differ from what is there; the leases are always written anew (a day
    left from now). Returns the tap.conf path.
    """
    data = os.path.join(work, "data")
    conf = conf_text(data, users, records, leases, pool)
    # The sizes and the tap.conf they make: an office left by an older layout (its
    # addresses, its keys) is rebuilt, not reused with a tap.conf that no longer fits.
    sizes = {"users": users, "leases": leases, "records": records, "messages": messages,
             "pool": pool, "version": 1, "conf": hashlib.sha256(conf.encode()).hexdigest()}
    marker = os.path.join(work, "sizes.json")
    try:
        with open(marker) as f:
            same = json.load(f) == sizes
    except (OSError, ValueError):
        same = False
    if not same:
        if os.path.exists(work):
            shutil.rmtree(work)
        os.makedirs(data)
        started = time.monotonic()
        write_mailbox(data, messages)
        with open(os.path.join(work, "tap.conf"), "w") as f:
            f.write(conf)
        with open(marker, "w") as f:
            json.dump(sizes, f)
        print("built the office in %s (%.1f s): %d users, %d leases, %d records, %d messages"
              % (work, time.monotonic() - started, users, leases, records, messages), flush=True)
    # In a pool of its own size the leases fill it from the start (the [host]
    # addresses sit at its far end); a narrow pool keeps them past it.
    write_leases(data, leases, records, int(time.time()),
                 FIRST_HOST + 300 + records if pool else FIRST_HOST)
    return os.path.join(work, "tap.conf")


def wide_pool_allowed(leases):
    """Whether tap.conf takes a pool of this size (the DHCP pool may span the subnet)."""
    from allworx.config import ConfigErrors, parse_config
    try:
        parse_config(CONF.format(domain=DOMAIN, hostname=HOSTNAME, data="/nonexistent",
                                 server=SERVER_IP, prefixlen=PREFIXLEN, pool=pool_text(leases),
                                 pw=PW_HASH))
        return True
    except ConfigErrors as e:
        return not any(err.section == "dhcp" and err.key == "range" for err in e.errors)


def start_server(conf, log_path):
    """`twistd -n allworx` in SRV: (Popen, the moment just before it was started)."""
    argv = ["ip", "netns", "exec", SRV, TWISTD, "-n", "--pidfile=", "--logfile", log_path,
            "allworx", "-c", conf]
    log = open(log_path + ".out", "w")
    began = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=ROOT), start_new_session=True)
    return proc, began


def stop_server(proc, timeout=20):
    """SIGTERM the server's process group, then SIGKILL if it lingers."""
    import signal
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
