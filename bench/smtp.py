"""
SMTP benchmark: messages/s accepted and fsynced, allworx against Postfix.

Both servers run on loopback high ports with their data in one scratch
directory on the same filesystem, and Postfix's `smtp-source` (Debian package
postfix) sends the same load to each: N messages over S parallel sessions.
allworx says 250 only after the message is fsynced into the Maildir; Postfix
says 250 after its queue file is fsynced and delivers to a Maildir
afterwards. Afterwards every message must be in the Maildir (nothing lost).

    .venv/bin/python -m bench.smtp [--messages 2000] [--sessions 10] [--size 1024] [--rounds 3]
                                   [--profile DIR]

It reports the row "SMTP accepted and fsynced (smtp-source)" (goal 1.2x
Postfix) with the peak memory of allworx's server process beside the peak of
Postfix's whole process tree (master, smtpd, cleanup, qmgr, virtual...), read
before either is stopped. With --profile DIR (or make bench's), a py-spy
flame graph of the server during its first measured round is kept in DIR.

Postfix runs as its own instance (own config_directory, queue and Maildir in
the scratch directory, listening only on 127.0.0.1), started and stopped by
this script; the system's Postfix service is never started. Needs root (Postfix
drops to its `postfix` user) and the postfix package.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench import common  # noqa: E402

ROW = "SMTP accepted and fsynced (smtp-source)"
GOAL = 1.2

BENCH_DOMAIN = "bench.example"
PW_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$ERLlCFcNeGK550IgXEvC6g$"
           "wjiY1y6LH8GV9JTqJGT4odM/ewS7TCrb4fLs23rAQ64")

ALLWORX_CONF = """\
[system]
domain = {domain}
hostname = allworx
[lan]
interface = lo
address = 192.168.2.254/24
[wan]
mode = disabled
[security]
mode = lan-only
[dhcp]
enabled = no
[dns]
enabled = no
use_forwarders = no
primary = 192.168.2.1
[web]
admin_password = {pw}
[mail]
smtp_port = {port}
submission_port = {sub_port}
max_message_size = 10M
[pop3]
enabled = no
[user box]
password = {pw}
"""


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc=None, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %s before listening on %d" % (proc.returncode, port))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listens on 127.0.0.1:%d after %ss" % (port, timeout))


def count_maildir(path):
    total = 0
    for sub in ("new", "cur"):
        try:
            total += len(os.listdir(os.path.join(path, sub)))
        except FileNotFoundError:
            pass
    return total


# ---------------------------------------------------------------- allworx

def serve(conf_path, data_dir):
    """Run only the mail service of allworx (no network changes) until killed."""
    from twisted.internet import reactor
    from allworx.config import load_config
    from allworx.protocols.mail.service import MailService
    from allworx.office import Office

    office = Office(load_config(conf_path), path=conf_path, data_dir=data_dir)
    mail = MailService(office)
    mail.startService()
    reactor.addSystemEventTrigger("before", "shutdown", mail.stopService)
    reactor.run()


def start_allworx(work, port):
    conf = os.path.join(work, "allworx.conf")
    with open(conf, "w") as f:
        f.write(ALLWORX_CONF.format(domain=BENCH_DOMAIN, pw=PW_HASH, port=port, sub_port=free_port()))
    data = os.path.join(work, "allworx-data")
    log = open(os.path.join(work, "allworx.log"), "wb")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", conf, data],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    wait_port(port, proc)
    return proc, os.path.join(data, "mail", "box")


# ---------------------------------------------------------------- postfix

def start_postfix(work, port):
    if shutil.which("postfix") is None or shutil.which("smtp-source") is None:
        raise RuntimeError("needs the Debian package postfix (postfix, smtp-source)")
    etc = os.path.join(work, "postfix-etc")
    spool = os.path.join(work, "postfix-spool")
    data = os.path.join(work, "postfix-data")
    boxes = os.path.join(work, "postfix-maildirs")
    for d in (etc, spool, data, boxes):
        os.makedirs(d, exist_ok=True)
    import pwd
    import grp
    uid = pwd.getpwnam("postfix").pw_uid
    gid = grp.getgrnam("postfix").gr_gid
    os.chown(data, uid, gid)
    os.chown(boxes, uid, gid)
    with open(os.path.join(etc, "main.cf"), "w") as f:
        f.write("\n".join([
            "compatibility_level = 3.6",
            "queue_directory = %s" % spool,
            "data_directory = %s" % data,
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "inet_interfaces = loopback-only",
            "inet_protocols = ipv4",
            "myhostname = postfix.bench.localdomain",
            "mydestination =",
            "mynetworks = 127.0.0.0/8",
            "virtual_mailbox_domains = %s" % BENCH_DOMAIN,
            "virtual_mailbox_base = %s" % boxes,
            "virtual_mailbox_maps = static:box/",
            "virtual_uid_maps = static:%d" % uid,
            "virtual_gid_maps = static:%d" % gid,
            "maillog_file_prefixes = %s" % work,
            "maillog_file = %s" % os.path.join(work, "postfix.log"),
            "biff = no",
            "",
        ]))
    with open("/etc/postfix/master.cf") as f:
        master = f.read().splitlines()
    out = []
    for line in master:
        fields = line.split()
        if fields[:2] == ["smtp", "inet"]:
            line = "127.0.0.1:%d inet n - n - - smtpd" % port
        out.append(line)
    with open(os.path.join(etc, "master.cf"), "w") as f:
        f.write("\n".join(out) + "\n")
    done = subprocess.run(["postfix", "-c", etc, "start"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("postfix did not start (see %s): %s" % (
            os.path.join(work, "postfix.log"), done.stderr.strip()))
    wait_port(port)
    return etc, os.path.join(boxes, "box")


def postfix_master_pid(work):
    """The pid of the bench's Postfix master (its pid file in the queue directory), or None."""
    try:
        with open(os.path.join(work, "postfix-spool", "pid", "master.pid")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_postfix(etc):
    subprocess.run(["postfix", "-c", etc, "stop"], capture_output=True)


# ---------------------------------------------------------------- load

def blast(port, messages, sessions, size, to_domain, persistent):
    argv = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-f", "sender@source.example", "-t", "box@%s" % to_domain]
    if persistent:
        argv.append("-d")
    argv.append("127.0.0.1:%d" % port)
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError("smtp-source failed: %s" % (done.stderr or done.stdout).strip())
    return elapsed


def wait_count(path, expected, timeout=120):
    deadline = time.monotonic() + timeout
    n = count_maildir(path)
    while n < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        n = count_maildir(path)
    return n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024, help="message size in bytes")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    parser.add_argument("--persistent", action="store_true",
                        help="send many messages per connection (smtp-source -d)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--profile", metavar="DIR",
                        help="keep a py-spy flame graph of the server's first measured round in DIR")
    parser.add_argument("--serve", nargs=2, metavar=("CONF", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(*args.serve)
    if args.profile:
        os.environ[common.PROFILE_ENV] = os.path.abspath(args.profile)
    if os.geteuid() != 0:
        print("bench/smtp.py needs root (Postfix runs as its own user)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="allworx-bench-smtp-", dir="/var/tmp")
    os.chmod(work, 0o755)
    aw_proc = pf_etc = None
    try:
        aw_port, pf_port = free_port(), free_port()
        aw_proc, aw_box = start_allworx(work, aw_port)
        pf_etc, pf_box = start_postfix(work, pf_port)
        # A short warm-up for each, not counted.
        blast(aw_port, 50, args.sessions, args.size, BENCH_DOMAIN, args.persistent)
        blast(pf_port, 50, args.sessions, args.size, BENCH_DOMAIN, args.persistent)
        aw_base = wait_count(aw_box, 50)
        pf_base = wait_count(pf_box, 50)
        # Alternate rounds (the machine may be busy with other work); best of each.
        results = {"allworx": [], "postfix": []}
        expected = {"allworx": aw_base, "postfix": pf_base}
        lost = 0
        print("load before the rounds: %s" % common.load(), flush=True)
        for n in range(args.rounds):
            for name, port, box in (("allworx", aw_port, aw_box), ("postfix", pf_port, pf_box)):
                base = expected[name]
                flame = common.Flame(aw_proc.pid, "smtp", max(2, args.messages / 400.0)) \
                    if name == "allworx" and n == 0 else None
                if flame is not None:
                    flame.__enter__()
                try:
                    elapsed = blast(port, args.messages, args.sessions, args.size, BENCH_DOMAIN,
                                    args.persistent)
                finally:
                    if flame is not None:
                        flame.__exit__(None, None, None)
                on_disk_now = count_maildir(box) - base
                delivered = wait_count(box, base + args.messages) - base
                expected[name] = base + delivered
                lost += args.messages - delivered
                results[name].append((elapsed, on_disk_now, delivered))
        print("smtp-source -s %d -m %d -l %d%s, loopback, same filesystem, %d alternating rounds"
              % (args.sessions, args.messages, args.size, " -d" if args.persistent else "",
                 args.rounds))
        best = {}
        for name, rounds in results.items():
            rates = ["%.0f" % (args.messages / e) for e, _, _ in rounds]
            elapsed, now, delivered = min(rounds)
            best[name] = elapsed
            print("  %-8s best %6.0f msg/s accepted+fsynced (rounds: %s msg/s); in the Maildir "
                  "when the last 250 came: %d of %d; delivered in all: %d of %d" % (
                      name, args.messages / elapsed, ", ".join(rates), now, args.messages,
                      sum(d for _, _, d in rounds), args.messages * len(rounds)))
        aw_mb = common.peak_rss_mb(aw_proc.pid)
        pf_pid = postfix_master_pid(work)
        pf_mb = common.peak_rss_mb(pf_pid) if pf_pid else None
        if pf_mb is not None:
            print("  " + common.memory_line("SMTP", aw_mb, "Postfix (all its processes)", pf_mb))
        print("  messages lost: %d; load now %s" % (lost, common.load()))
        common.result(ROW, args.messages / best["allworx"], args.messages / best["postfix"],
                      "Postfix", "msg/s", GOAL, allworx_mb=aw_mb, peer_mb=pf_mb,
                      note="%d lost" % lost if lost else "")
        return 0 if lost == 0 else 1
    finally:
        if pf_etc:
            stop_postfix(pf_etc)
        if aw_proc is not None:
            aw_proc.terminate()
            try:
                aw_proc.wait(10)
            except subprocess.TimeoutExpired:
                aw_proc.kill()
        if args.keep:
            print("scratch directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main() or 0)
