"""
IMAP benchmark: allworx's IMAP server against Dovecot (Debian dovecot-imapd)
on the same Maildirs under the same client load, in one run.

    .venv/bin/python -m bench.imap [--sessions 250,500,1000,1500] [--messages 2000]
                                   [--clients 4] [--rounds 3]

1. IDLE sessions held: N sessions (20 a user, each user from its own
   127.0.1.x address, both servers allow 30 a user), each logged in over
   TLS (993-style, implicit TLS for both: allworx refuses LOGIN in the
   clear), INBOX selected, IDLE; after a hold of a few seconds the sessions
   still open are counted, and the server's memory (VmRSS of
   /proc/PID/status and Pss of smaps_rollup, summed over every process of
   the server) less its memory before the first session, per session.
2. New-mail latency while the N sessions idle: one mail at a time to users
   in turn, and the time until each of that user's idling sessions has the
   untagged EXISTS. allworx: over its own SMTP port on loopback, the clock
   started just before the final "." of DATA is sent (allworx writes and
   fsyncs the file, then tells the sessions). Dovecot: the same kind of file
   written and fsynced in the user's Maildir tmp/, the clock started just
   before it is renamed into new/ (Dovecot's IDLE learns of it by inotify).
3. FETCH throughput: one user with M messages of 5-50 KB, K concurrent
   clients each doing `UID FETCH a:b (BODY.PEEK[])` in chunks of 100 over
   the whole mailbox; MB/s (literal bytes) and messages/s, best of the
   alternating rounds.

The load generator is this file run with `--load` in its own process (one
asyncio loop). Dovecot runs as a plain process (`dovecot -F -c CONFIG`,
everything under the scratch directory, its mail processes as `nobody`),
never the system's service, with the certificate allworx made for itself;
its IDLE needs one inotify instance a session, so fs.inotify.max_user_instances
is raised for the run when lower and put back afterwards. Needs root.
"""

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench import common  # noqa: E402
from bench.smtp import free_port, serve, wait_port  # noqa: E402

DOMAIN = "bench.example"
PASSWORD = "bench-imap-pw"
PER_USER = 20
CHUNK = 100
MAIL_UID = MAIL_GID = 65534         # nobody/nogroup: Dovecot's mail processes
INOTIFY = "/proc/sys/fs/inotify/max_user_instances"

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
smtp_port = {smtp}
submission_port = {sub}
submissions_port = 0
max_message_size = 10M
[pop3]
enabled = no
[imap]
port = {imap}
imaps_port = {imaps}
"""

DOVECOT_CONF = """\
base_dir = {work}/dovecot-run
state_dir = {work}/dovecot-state
instance_name = allworx-bench-imap
listen = 127.0.0.1
protocols = imap
log_path = {work}/dovecot.log
ssl = required
ssl_cert = <{work}/dovecot-cert.pem
ssl_key = <{work}/dovecot-key.pem
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:{mail}/%u:INDEX={work}/dovecot-index/%u
passdb {{
  driver = passwd-file
  args = {work}/dovecot-users
}}
userdb {{
  driver = passwd-file
  args = {work}/dovecot-users
}}
protocol imap {{
  mail_max_userip_connections = 30
}}
default_process_limit = {procs}
default_client_limit = {clients}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = {clients}
  vsz_limit = 1G
}}
service imap {{
  process_limit = {procs}
}}
service anvil {{
  client_limit = {anvil}
}}
service auth {{
  client_limit = {clients}
}}
"""


# ---------------------------------------------------------------- the Maildirs

def _message(rng, size, n):
    head = ("From: Sender {n} <sender{n}@source.example>\nTo: someone@{d}\n"
            "Subject: bench message {n}\nDate: Mon, 07 Dec 2026 00:00:00 +0000\n"
            "Message-ID: <bench{n}@source.example>\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=us-ascii\n\n").format(n=n, d=DOMAIN)
    words = "lorem ipsum dolor sit amet office mail server benchmark idle fetch".split()
    lines = []
    left = size - len(head)
    while left > 0:
        line = " ".join(rng.choice(words) for _ in range(11))[:max(1, left - 1)]
        lines.append(line)
        left -= len(line) + 1
    return (head + "\n".join(lines) + "\n").encode()


def maildir_name(data, n, tag="bench"):
    """A Maildir file name with both size tags (S= bytes on disk, W= with CRLF)."""
    return "%d.M%dP%d.%s,S=%d,W=%d" % (time.time(), n, os.getpid(), tag, len(data),
                                       len(data) + data.count(b"\n"))


def seed(mail_root, users, fetch_user, messages, inbox, rng):
    """Every user's Maildir: `inbox` small messages each, `messages` of 5-50 KB for fetch_user."""
    total = 0
    for user in users + [fetch_user]:
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(mail_root, user, sub), exist_ok=True)
        count = messages if user == fetch_user else inbox
        for n in range(count):
            size = rng.randint(5000, 50000) if user == fetch_user else 800
            data = _message(rng, size, n)
            if user == fetch_user:
                total += len(data) + data.count(b"\n")
            with open(os.path.join(mail_root, user, "cur", maildir_name(data, n) + ":2,S"), "wb") as f:
                f.write(data)
    chown_tree(mail_root)
    return total


def chown_tree(path):
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), MAIL_UID, MAIL_GID)
    os.lchown(path, MAIL_UID, MAIL_GID)


# ---------------------------------------------------------------- the servers

def start_allworx(work, users, pw_hash):
    ports = {k: free_port() for k in ("smtp", "sub", "imap", "imaps")}
    conf = os.path.join(work, "allworx.conf")
    with open(conf, "w") as f:
        f.write(ALLWORX_CONF.format(domain=DOMAIN, pw=pw_hash, **ports))
        for user in users:
            f.write("[user %s]\npassword = %s\n" % (user, pw_hash))
    data = os.path.join(work, "allworx-data")
    log = open(os.path.join(work, "allworx.log"), "wb")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", conf, data],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    wait_port(ports["imaps"], proc)
    return proc, ports


def start_dovecot(work, mail_root, users, pw_hash, sessions):
    if shutil.which("dovecot") is None:
        raise RuntimeError("needs the Debian package dovecot-imapd")
    with open(os.path.join(work, "allworx-data", "tls", "server.pem")) as f:
        pem = f.read()
    blocks = ["-----BEGIN" + b for b in pem.split("-----BEGIN")[1:]]
    with open(os.path.join(work, "dovecot-key.pem"), "w") as f:
        f.write("".join(b for b in blocks if "PRIVATE KEY" in b.split("\n")[0]))
    with open(os.path.join(work, "dovecot-cert.pem"), "w") as f:
        f.write("".join(b for b in blocks if "CERTIFICATE" in b.split("\n")[0]))
    with open(os.path.join(work, "dovecot-users"), "w") as f:
        for user in users:
            f.write("%s:{ARGON2ID}%s:%d:%d::%s/%s::\n" % (user, pw_hash, MAIL_UID, MAIL_GID,
                                                        mail_root, user))
    index = os.path.join(work, "dovecot-index")
    os.makedirs(index, exist_ok=True)
    os.lchown(index, MAIL_UID, MAIL_GID)
    port = free_port()
    conf = os.path.join(work, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(DOVECOT_CONF.format(work=work, mail=mail_root, port=port,
                                    procs=sessions + 500, clients=2 * sessions + 1000,
                                    anvil=3 * sessions + 2000))
    proc = subprocess.Popen(["dovecot", "-F", "-c", conf], stdout=open(
        os.path.join(work, "dovecot.out"), "wb"), stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc, port


def stop(proc):
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- the load generator

def process_tree(root):
    """root and every process below it."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    return tree


def memory(root):
    """(VmRSS, Pss) in kB summed over the server's processes, and how many processes."""
    rss = pss = 0
    pids = process_tree(root)
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                rss += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            with open("/proc/%d/smaps_rollup" % pid) as f:
                pss += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return rss, pss, len(pids)


def client_tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE         # loopback only; the server's CA is not the point
    return ctx


async def command(reader, writer, tag, text):
    """Send one command; the untagged lines before its tagged OK."""
    writer.write(b"%s %s\r\n" % (tag, text))
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed during %s" % text.split()[0].decode())
        if line.startswith(tag + b" "):
            if line.split()[1] != b"OK":
                raise RuntimeError(line.decode(errors="replace").strip())
            return lines
        lines.append(line)


async def log_in(port, user, source, ctx, mailbox_command=b"SELECT INBOX"):
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost", local_addr=(source, 0),
        limit=1 << 20)
    greeting = await reader.readline()
    if not greeting.startswith(b"* OK"):
        raise RuntimeError("greeting %r" % greeting)
    await command(reader, writer, b"a", b"LOGIN %s %s" % (user.encode(), PASSWORD.encode()))
    await command(reader, writer, b"b", mailbox_command)
    return reader, writer


class IdleSession:
    """One session logged in, INBOX selected, idling; notes when each EXISTS came."""

    def __init__(self, user):
        self.user = user
        self.alive = False
        self.exists = []
        self.writer = None

    async def open(self, port, source, ctx):
        reader, self.writer = await log_in(port, self.user, source, ctx)
        self.writer.write(b"c IDLE\r\n")
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed before IDLE began")
            if line.startswith(b"+"):
                break
        self.alive = True
        asyncio.ensure_future(self._listen(reader))

    async def _listen(self, reader):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                if line.endswith(b" EXISTS\r\n"):
                    self.exists.append(time.monotonic())
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, ValueError):
            pass
        self.alive = False


async def deliver_smtp(port, user, n):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def expect(code):
        while True:
            line = await reader.readline()
            if not line.startswith(code):
                raise RuntimeError("SMTP: %r" % line)
            if line[3:4] == b" ":
                return
    await expect(b"220")
    for text, code in ((b"EHLO load.example", b"250"), (b"MAIL FROM:<load@source.example>", b"250"),
                       (b"RCPT TO:<%s@%s>" % (user.encode(), DOMAIN.encode()), b"250"),
                       (b"DATA", b"354")):
        writer.write(text + b"\r\n")
        await expect(code)
    body = _message(random.Random(n), 1000, n).replace(b"\n", b"\r\n")
    writer.write(body)
    await writer.drain()
    t0 = time.monotonic()
    writer.write(b".\r\n")
    await expect(b"250")
    writer.write(b"QUIT\r\n")
    writer.close()
    return t0


def deliver_file(mail_root, user, n):
    data = _message(random.Random(n), 1000, n)
    name = maildir_name(data, n, "load")
    tmp = os.path.join(mail_root, user, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chown(tmp, MAIL_UID, MAIL_GID)
    t0 = time.monotonic()
    os.rename(tmp, os.path.join(mail_root, user, "new", name))
    return t0


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


async def idle_phase(spec):
    ctx = client_tls()
    sessions, failures, steps = [], [], []
    gate = asyncio.Semaphore(spec["parallel"])
    base = memory(spec["pid"])
    serial = [0]

    async def open_one(i):
        user_index = i // PER_USER
        s = IdleSession(spec["users"][user_index])
        async with gate:
            try:
                await s.open(spec["port"], "127.0.1.%d" % (user_index + 1), ctx)
            except Exception as e:      # counted and reported: a refused session is a result
                failures.append("%s: %s" % (type(e).__name__, e))
        return s

    for n in spec["sizes"]:
        sessions.extend(await asyncio.gather(*(open_one(i) for i in range(len(sessions), n))))
        await asyncio.sleep(spec["hold"])
        held = [s for s in sessions if s.alive]
        rss, pss, procs = memory(spec["pid"])
        latencies, late = [], 0
        for user in spec["users"][:min(spec["probe_users"], n // PER_USER)]:
            mine = [s for s in held if s.user == user and s.alive]
            before = [len(s.exists) for s in mine]
            serial[0] += 1
            if spec["deliver"] == "smtp":
                t0 = await deliver_smtp(spec["smtp_port"], user, serial[0])
            else:
                t0 = deliver_file(spec["mail_root"], user, serial[0])
            deadline = time.monotonic() + spec["wait"]
            while time.monotonic() < deadline and any(
                    len(s.exists) == b for s, b in zip(mine, before)):
                await asyncio.sleep(0.001)
            for s, b in zip(mine, before):
                if len(s.exists) > b:
                    latencies.append((s.exists[b] - t0) * 1000.0)
                else:
                    late += 1
        steps.append({"n": n, "held": len(held), "rss_kb": rss - base[0], "pss_kb": pss - base[1],
                      "rss_total_kb": rss, "procs": procs, "p50_ms": percentile(latencies, 50),
                      "p99_ms": percentile(latencies, 99), "samples": len(latencies), "late": late})
    for s in sessions:
        if s.writer is not None:
            s.writer.close()
    return {"steps": steps, "failures": failures[:5], "failed": len(failures),
            "base_rss_kb": base[0], "base_pss_kb": base[1]}


async def fetch_one(reader, writer, uids):
    got = count = 0
    for i in range(0, len(uids), CHUNK):
        part = uids[i:i + CHUNK]
        writer.write(b"f UID FETCH %d:%d (BODY.PEEK[])\r\n" % (part[0], part[-1]))
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed during FETCH")
            if line.endswith(b"}\r\n"):
                size = int(line[line.rindex(b"{") + 1:-3])
                await reader.readexactly(size)
                got += size
                count += 1
            elif line.startswith(b"f "):
                if not line.startswith(b"f OK"):
                    raise RuntimeError(line.decode(errors="replace").strip())
                break
    return got, count


async def fetch_phase(spec):
    ctx = client_tls()
    clients = []
    for k in range(spec["clients"]):
        reader, writer = await log_in(spec["port"], spec["user"], "127.0.2.%d" % (k + 1), ctx,
                                      b"EXAMINE INBOX")
        lines = await command(reader, writer, b"s", b"UID SEARCH ALL")
        uids = sorted(int(u) for line in lines if line.startswith(b"* SEARCH")
                      for u in line.split()[2:])
        clients.append((reader, writer, uids))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    done = await asyncio.gather(*(fetch_one(r, w, u) for r, w, u in clients))
    elapsed = time.monotonic() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    for _, writer, _ in clients:
        writer.close()
    return {"elapsed": elapsed, "bytes": sum(b for b, _ in done), "messages": sum(c for _, c in done),
            "load_cpu": (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / elapsed}


def run_load(spec):
    """In the load generator's process: one phase, its result as JSON on stdout."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    phase = idle_phase if spec["phase"] == "idle" else fetch_phase
    print(json.dumps(asyncio.run(phase(spec))), flush=True)


def load(spec, timeout=1800):
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--load", json.dumps(spec)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError("load generator failed: %s" % done.stderr.strip()[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the run

def fmt(v, pattern="%.1f"):
    return "-" if v is None else pattern % v


def print_idle(name, result):
    print("  %s: %d sessions refused or failed%s" % (
        name, result["failed"], (" (first: %s)" % "; ".join(result["failures"])) if result["failed"] else ""))
    print("    %6s %6s %12s %12s %9s %9s %8s %6s" % ("N", "held", "RSS/session", "PSS/session",
                                                   "p50 ms", "p99 ms", "samples", "late"))
    for s in result["steps"]:
        print("    %6d %6d %9.1f kB %9.1f kB %9s %9s %8d %6d" % (
            s["n"], s["held"], s["rss_kb"] / max(1, s["held"]), s["pss_kb"] / max(1, s["held"]),
            fmt(s["p50_ms"], "%.2f"), fmt(s["p99_ms"], "%.2f"), s["samples"], s["late"]))


def held_up_to(steps):
    """The largest N at which every session was held, at it and at every smaller N."""
    best = 0
    for step in steps:
        if step["held"] != step["n"]:
            break
        best = step["n"]
    return best


def report_idle(idle):
    print("1+2. IDLE sessions held, memory per session (all the server's processes, less "
          "before the first session), new-mail latency to EXISTS")
    for name in ("allworx", "dovecot"):
        print_idle(name, idle[name])
    held = {n: held_up_to(idle[n]["steps"]) for n in idle}
    print("  held at every step up to: allworx %d, dovecot %d, ratio %.2f (goal: allworx >= 1000 "
          "on 2 cores)" % (held["allworx"], held["dovecot"], held["allworx"] / max(1, held["dovecot"])))
    common.result("IMAP IDLE sessions held, new mail seen", held["allworx"], held["dovecot"] or None,
                  "Dovecot", "sessions", ">= 1000 sessions", holds=held["allworx"] >= 1000)
    last = {n: idle[n]["steps"][-1] for n in idle}
    print("  memory per session at %d: allworx %.1f kB, dovecot %.1f kB (Pss); notification p50 "
          "allworx %s ms, dovecot %s ms" % (
              last["allworx"]["n"], last["allworx"]["pss_kb"] / max(1, last["allworx"]["held"]),
              last["dovecot"]["pss_kb"] / max(1, last["dovecot"]["held"]),
              fmt(last["allworx"]["p50_ms"], "%.2f"), fmt(last["dovecot"]["p50_ms"], "%.2f")))


def fetch_phases(args, aw_port, dv_port, mail_root, total, aw_pid):
    fetch = {"allworx": [], "dovecot": []}
    spec = {"phase": "fetch", "user": "fetch", "clients": args.clients}
    for name, port in (("allworx", aw_port), ("dovecot", dv_port)):
        load(dict(spec, port=port, clients=1))      # warm-up: caches and Dovecot's index
        chown_tree(mail_root)                       # the folders allworx made at login
    spy = None
    if args.profile:
        spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-r", "200", "-f", "raw", "-o", args.profile,
                                "-p", str(aw_pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(args.rounds):
        for name, port in (("allworx", aw_port), ("dovecot", dv_port)):
            if spy is None or name == "allworx":
                fetch[name].append(load(dict(spec, port=port)))
    if spy is not None:
        spy.send_signal(2)
        spy.wait()
        fetch["dovecot"].append(load(dict(spec, port=dv_port)))
    print("3. FETCH: %d clients x %d messages (%.1f MB with CRLF), UID FETCH (BODY.PEEK[]) "
          "in chunks of %d, %d alternating rounds" % (args.clients, args.messages, total / 1e6,
                                                      CHUNK, args.rounds))
    best = {}
    for name, rounds in fetch.items():
        r = min(rounds, key=lambda x: x["elapsed"])
        best[name] = r
        print("  %-8s best %7.1f MB/s %7.0f msg/s (rounds: %s MB/s; load generator CPU %.0f %%); "
              "%d bytes, %d messages a round" % (
                  name, r["bytes"] / r["elapsed"] / 1e6, r["messages"] / r["elapsed"],
                  ", ".join("%.1f" % (x["bytes"] / x["elapsed"] / 1e6) for x in rounds),
                  100 * r["load_cpu"], r["bytes"], r["messages"]))
    ratio = best["dovecot"]["elapsed"] / best["allworx"]["elapsed"]
    print("  ratio allworx/dovecot FETCH: %.2f (goal >= 0.5)" % ratio)
    wrong = [n for n, r in best.items() if r["messages"] != args.clients * args.messages]
    common.result("IMAP UID FETCH of whole messages", best["allworx"]["bytes"] / best["allworx"]["elapsed"] / 1e6,
                  best["dovecot"]["bytes"] / best["dovecot"]["elapsed"] / 1e6, "Dovecot", "MB/s",
                  0.5 if not wrong else "every message fetched", holds=None if not wrong else False)
    if wrong:
        print("  messages missing from the FETCH of: %s" % ", ".join(wrong))
    return 1 if wrong else 0


def raise_inotify(sessions):
    with open(INOTIFY) as f:
        old = int(f.read())
    wanted = 2 * sessions + 256
    if old < wanted:
        with open(INOTIFY, "w") as f:
            f.write("%d\n" % wanted)
        print("fs.inotify.max_user_instances %d -> %d for the run (Dovecot's IDLE)" % (old, wanted))
    return old


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="250,500,1000,1500", help="N idle sessions, ascending")
    parser.add_argument("--messages", type=int, default=2000, help="messages in the FETCH mailbox")
    parser.add_argument("--inbox", type=int, default=1000,
                        help="messages (800 bytes) in each idle user's INBOX")
    parser.add_argument("--clients", type=int, default=4, help="concurrent FETCH clients")
    parser.add_argument("--rounds", type=int, default=3, help="alternating FETCH rounds")
    parser.add_argument("--probe-users", type=int, default=10,
                        help="users sent one mail each at every N (20 sessions a user)")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds the sessions idle before counting")
    parser.add_argument("--phases", default="idle,fetch", help="which parts to run")
    parser.add_argument("--profile", help="py-spy the allworx server during FETCH into this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--serve", nargs=2, metavar=("CONF", "DATA"), help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(*args.serve)
    if args.load:
        return run_load(json.loads(args.load))
    if os.geteuid() != 0:
        print("bench/imap.py needs root (Dovecot's mail processes run as nobody)", file=sys.stderr)
        return 2
    import argon2
    sizes = sorted(int(n) for n in args.sessions.split(","))
    users = ["u%03d" % i for i in range((sizes[-1] + PER_USER - 1) // PER_USER)]
    # The same argon2id hash for both servers, cheap (1 MiB, t=1): logins are not what is measured.
    pw_hash = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    work = tempfile.mkdtemp(prefix="allworx-bench-imap-", dir="/var/tmp")
    os.chmod(work, 0o755)
    mail_root = os.path.join(work, "allworx-data", "mail")
    aw = dv = None
    old_inotify = None
    try:
        total = seed(mail_root, users, "fetch", args.messages, args.inbox, random.Random(17))
        aw, aw_ports = start_allworx(work, users + ["fetch"], pw_hash)
        dv, dv_port = start_dovecot(work, mail_root, users + ["fetch"], pw_hash, sizes[-1])
        old_inotify = raise_inotify(sizes[-1])
        common = {"phase": "idle", "users": users, "sizes": sizes, "hold": args.hold,
                  "probe_users": args.probe_users, "wait": 40.0, "parallel": 32}
        phases = args.phases.split(",")
        print("IMAP over TLS on loopback, the same Maildirs; %d users of %d idle sessions each, "
              "%d messages in each of their INBOXes" % (len(users), PER_USER, args.inbox))
        if "idle" in phases:
            idle = {"allworx": load(dict(common, port=aw_ports["imaps"], pid=aw.pid, deliver="smtp",
                                         smtp_port=aw_ports["smtp"]))}
            chown_tree(mail_root)
            idle["dovecot"] = load(dict(common, port=dv_port, pid=dv.pid, deliver="file",
                                        mail_root=mail_root))
            chown_tree(mail_root)
            report_idle(idle)
        if "fetch" in phases:
            return fetch_phases(args, aw_ports["imaps"], dv_port, mail_root, total, aw.pid)
        return 0
    finally:
        stop(dv)
        stop(aw)
        if old_inotify is not None:
            with open(INOTIFY, "w") as f:
                f.write("%d\n" % old_inotify)
        if args.keep:
            print("scratch directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main() or 0)
