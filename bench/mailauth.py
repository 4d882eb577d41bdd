"""
Inbound mail authentication benchmark: messages/s accepted from the internet
with every check on, allworx against Postfix + OpenDKIM + policyd-spf, and
the latency the checks add to one message.

    .venv/bin/python -m bench.mailauth [--messages 1000] [--sessions 10] [--size 2048]
                                       [--rounds 3] [--latency 200] [--keep]

Two namespaces of its own: awmb-gen (the internet: the load generator at
203.0.113.10, a DNSBL-listed sender at 203.0.113.66, and the internet's DNS,
dnsmasq at 203.0.113.53) and awmb-mta (both mail servers, 203.0.113.1 on the
WAN link, 192.168.2.254 on a LAN address of the same link). The DNS publishes
for sender.example an SPF record passing the generator (`ip4:203.0.113.0/24`),
a DKIM key (selector `bench`, RSA 2048, made for this run), a DMARC record
(`p=reject`), the HELO name's SPF and PTR; and the DNSBL zone rbl.example
lists only 203.0.113.66 (and the RFC 5782 test entry). The message is signed
once with dkimpy and sent as-is by every client.

- allworx: its mail service and its own caching DNS service in one process
  (one reactor, as in production), the DNS forwarding to the internet's DNS;
  tap.conf sets `[mail] dnsbl = rbl.example` and leaves the content filter at
  its defaults, so whatever inbound checks the tree has (SPEC 18: SPF, DKIM,
  DMARC, DNSBL, content) run on every message from the WAN.
- Postfix (its own instance, as in bench/smtp.py, started in awmb-mta with
  /etc/netns/awmb-mta/resolv.conf naming the internet's DNS; the host's
  /etc/resolv.conf is never touched): `check_policy_service` to policyd-spf
  (Debian, spawned per smtpd, its Debian defaults: reject on Fail, a
  Received-SPF header), `reject_rbl_client rbl.example`, and OpenDKIM
  (`Mode v`, a milter on a unix socket as Debian sets it up, the same DNS, no
  DNSSEC anchor).
  Postfix has no DMARC or content filter here (OpenDMARC and a spam filter are
  not part of the peer), so allworx does more work per message.

A sanity step first: one message through each server; Postfix's copy must
show OpenDKIM's `dkim=pass` and policyd-spf's `Received-SPF: Pass` and the
listed address must get 554 at RCPT from Postfix, or the bench stops; for
allworx it prints a WARNING line when its copy has no Authentication-Results
of its own (the checks are not in this tree: the figures are the plain path)
or the listed address is not refused. Then `--rounds` alternating rounds of
smtp-source (Debian postfix) from awmb-gen: `--messages` over `--sessions`
parallel sessions, one connection a message, best round of each, every
message counted in the Maildirs afterwards. Latency: `--latency` messages
one at a time (one connection each, connect to the 250 after DATA) to allworx
from the WAN address (checks) and from the LAN address (LAN clients skip every
check), and to Postfix from the WAN: p50/p95 and the difference.
Needs root; removes its namespaces, processes and scratch directory after.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench.mailauthconf import (  # noqa: E402
    AW_PORT, DNS_IP, GEN, GEN_IP, GEN_LAN, HELO, LISTED_IP, MTA, MTA_IP, MTA_LAN,
    PF_PORT, POLICYD_SPF_CONF, RBL, RCPT, RESOLV_DIR, SELECTOR, SENDER, SENDER_DOMAIN,
    allworx_conf, allworx_problems, dnsmasq_conf, make_key, make_message, opendkim_conf,
    peer_problems, percentile, postfix_main_cf, postfix_master_cf, sign)
from bench import common  # noqa: E402
from bench.smtp import count_maildir  # noqa: E402


# ---------------------------------------------------------------- probe (runs in awmb-gen)

def probe(spec):
    """One client job in the generator's namespace; prints a JSON result."""
    import smtplib
    host, port, source = spec["host"], spec["port"], spec.get("source")
    if spec["do"] == "wait":
        deadline = time.monotonic() + spec.get("timeout", 30)
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return {"ok": True}
            except OSError:
                time.sleep(0.1)
        return {"ok": False}
    if spec["do"] == "rcpt":
        with smtplib.SMTP(host, port, local_hostname=HELO, source_address=(source, 0),
                          timeout=30) as s:
            s.ehlo(HELO)
            s.mail(SENDER)
            code, text = s.rcpt(RCPT)
            return {"code": code, "text": text.decode("utf-8", "replace")}
    with open(spec["message"], "rb") as f:
        data = f.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    latencies, errors = [], []
    for _ in range(spec["count"]):
        start = time.perf_counter()
        try:
            s = smtplib.SMTP(host, port, local_hostname=HELO, source_address=(source, 0), timeout=30)
            s.sendmail(SENDER, [RCPT], data)
            latencies.append(time.perf_counter() - start)
            s.quit()
        except (smtplib.SMTPException, OSError) as e:
            errors.append(str(e))
    return {"latencies": latencies, "errors": errors}


# ---------------------------------------------------------------- namespaces and processes

def sh(argv, check=True, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    done = subprocess.run([str(a) for a in argv], timeout=kw.pop("timeout", 120), **kw)
    if check and done.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, argv)), done.returncode,
                                                    (done.stderr or done.stdout).strip()))
    return done


def in_ns(ns, *argv):
    return ["ip", "netns", "exec", ns] + [str(a) for a in argv]


def run_probe(spec, timeout=600):
    done = sh(in_ns(GEN, sys.executable, "-m", "bench.mailauth", "--probe", json.dumps(spec)),
              cwd=ROOT, timeout=timeout)
    return json.loads(done.stdout.strip().splitlines()[-1])


def down():
    existing = sh(["ip", "netns", "list"]).stdout.split()
    for ns in (GEN, MTA):
        if ns in existing:
            sh(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(RESOLV_DIR, ignore_errors=True)


def up():
    down()
    for ns in (GEN, MTA):
        sh(["ip", "netns", "add", ns])
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
    sh(["ip", "link", "add", "eth0", "netns", GEN, "type", "veth", "peer", "wan0", "netns", MTA])
    for ns, dev, addresses in ((GEN, "eth0", (GEN_IP, LISTED_IP, DNS_IP, GEN_LAN)),
                               (MTA, "wan0", (MTA_IP, MTA_LAN))):
        for ip in addresses:
            sh(["ip", "-n", ns, "addr", "add", ip + "/24", "dev", dev])
        sh(["ip", "-n", ns, "link", "set", dev, "up"])
    os.makedirs(RESOLV_DIR, exist_ok=True)
    with open(os.path.join(RESOLV_DIR, "resolv.conf"), "w") as f:
        f.write("nameserver %s\noptions timeout:2 attempts:2\n" % DNS_IP)


def serve(conf_path, data_dir):
    """allworx's mail service and its own DNS (the mail's resolver) in one reactor."""
    from twisted.internet import reactor
    from allworx.config import load_config
    from allworx.office import Office
    from allworx.protocols.dns.service import DnsService
    from allworx.protocols.mail.service import MailService

    office = Office(load_config(conf_path), path=conf_path, data_dir=data_dir)
    services = [DnsService(office), MailService(office)]
    for svc in services:
        svc.startService()
    for svc in reversed(services):
        reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    reactor.run()


class Bench:
    """The namespaces, the DNS, both servers; `close()` removes all of it."""

    def __init__(self, work):
        self.work = work
        self.procs = []
        self.pf_etc = None
        self.message = os.path.join(work, "message.eml")
        self.aw_box = self.pf_box = None

    def start(self, size):
        pem, public = make_key()
        with open(self.message, "wb") as f:
            f.write(sign(make_message(size), pem).replace(b"\r\n", b"\n"))
        up()
        self.spawn("dnsmasq", GEN, "dnsmasq", "-C", self.write("dnsmasq.conf",
                                                               dnsmasq_conf(self.work, public)))
        self.resolves()
        self.aw_box = self.start_allworx()
        self.pf_box = self.start_postfix()

    def write(self, name, text):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def spawn(self, name, ns, *argv):
        log = open(os.path.join(self.work, name + ".log"), "wb")
        proc = subprocess.Popen(in_ns(ns, *argv), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append((name, proc))
        return proc

    def resolves(self):
        """The internet's DNS answers the DKIM key from the server's side."""
        name = "%s._domainkey.%s" % (SELECTOR, SENDER_DOMAIN)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            out = sh(in_ns(MTA, "dig", "@" + DNS_IP, "+short", "+time=1", "+tries=1", name, "TXT"),
                     check=False).stdout
            if "DKIM1" in out:
                return
            time.sleep(0.2)
        raise RuntimeError("dnsmasq does not answer %s (see %s/dnsmasq.log)" % (name, self.work))

    def wait(self, port, proc=None, what="server"):
        if not run_probe({"do": "wait", "host": MTA_IP, "port": port, "timeout": 30})["ok"]:
            state = "" if proc is None else " (exit status %s)" % proc.poll()
            raise RuntimeError("%s does not listen on %s:%d%s; logs in %s" % (
                what, MTA_IP, port, state, self.work))

    def start_allworx(self):
        conf = self.write("allworx.conf", allworx_conf())
        data = os.path.join(self.work, "allworx-data")
        proc = self.spawn("allworx", MTA, sys.executable, "-m", "bench.mailauth", "--serve",
                          conf, data)
        self.wait(AW_PORT, proc, "allworx")
        return os.path.join(data, "mail", "box")

    def start_postfix(self):
        import grp
        import pwd
        for tool in ("postfix", "smtp-source", "opendkim", "policyd-spf", "dnsmasq"):
            if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool):
                raise RuntimeError("needs %s (Debian: postfix opendkim postfix-policyd-spf-python "
                                   "dnsmasq)" % tool)
        uid, gid = pwd.getpwnam("postfix").pw_uid, grp.getgrnam("postfix").gr_gid
        etc = os.path.join(self.work, "postfix-etc")
        for d in ("postfix-etc", "postfix-spool", "postfix-data", "postfix-maildirs"):
            os.makedirs(os.path.join(self.work, d), exist_ok=True)
        for d in ("postfix-data", "postfix-maildirs"):
            os.chown(os.path.join(self.work, d), uid, gid)
        policy = self.write("policyd-spf.conf", POLICYD_SPF_CONF)
        with open("/etc/postfix/master.cf") as f:
            master = postfix_master_cf(f.read(), policy)
        with open(os.path.join(etc, "main.cf"), "w") as f:
            f.write(postfix_main_cf(self.work, uid, gid))
        with open(os.path.join(etc, "master.cf"), "w") as f:
            f.write(master)
        os.makedirs(os.path.join(self.work, "opendkim"), exist_ok=True)
        os.chown(os.path.join(self.work, "opendkim"), pwd.getpwnam("opendkim").pw_uid, -1)
        milter = self.spawn("opendkim", MTA, "/usr/sbin/opendkim", "-f", "-x",
                            self.write("opendkim.conf", opendkim_conf(self.work)))
        sock = os.path.join(self.work, "opendkim", "opendkim.sock")
        deadline = time.monotonic() + 15
        while not os.path.exists(sock) and milter.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if not os.path.exists(sock):
            raise RuntimeError("opendkim made no socket (see %s/opendkim.log)" % self.work)
        done = sh(in_ns(MTA, "postfix", "-c", etc, "start"), check=False)
        if done.returncode != 0:
            raise RuntimeError("postfix did not start (see %s/postfix.log): %s" % (
                self.work, done.stderr.strip()))
        self.pf_etc = etc
        self.wait(PF_PORT, what="postfix")
        return os.path.join(self.work, "postfix-maildirs", "box")

    def close(self):
        if self.pf_etc:
            sh(in_ns(MTA, "postfix", "-c", self.pf_etc, "stop"), check=False)
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        down()


# ---------------------------------------------------------------- measurements

def delivered_count(box):
    """Messages in the INBOX and the Junk folder (Maildir++ .Junk)."""
    return count_maildir(box) + count_maildir(os.path.join(box, ".Junk"))


def wait_count(box, expected, timeout=120):
    deadline = time.monotonic() + timeout
    n = delivered_count(box)
    while n < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        n = delivered_count(box)
    return n


def newest(box):
    """The bytes of the most recently delivered message (INBOX or Junk) and its folder."""
    found = []
    for folder in ("", ".Junk"):
        for sub in ("new", "cur"):
            d = os.path.join(box, folder, sub)
            for name in os.listdir(d) if os.path.isdir(d) else ():
                path = os.path.join(d, name)
                found.append((os.stat(path).st_mtime_ns, path, folder or "INBOX"))
    _, path, folder = max(found)
    with open(path, "rb") as f:
        return f.read(), folder


def blast(bench, port, messages, sessions):
    argv = ["smtp-source", "-s", sessions, "-m", messages, "-F", bench.message, "-f", SENDER,
            "-t", RCPT, "-M", HELO, "%s:%d" % (MTA_IP, port)]
    start = time.monotonic()
    done = sh(in_ns(GEN, *argv), check=False, timeout=1800)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError("smtp-source failed: %s" % (done.stderr or done.stdout).strip())
    return elapsed


def sanity(bench):
    """One message through each server and the listed address at each:
    (warnings for allworx, fatal problems of the peer)."""
    warnings, fatal = [], []
    key = "%s._domainkey.%s" % (SELECTOR, SENDER_DOMAIN)
    out = sh(in_ns(MTA, "dig", "@127.0.0.1", "+short", "+time=2", "+tries=1", key, "TXT"),
             check=False).stdout
    if "DKIM1" not in out:
        fatal.append("allworx: its own resolver (127.0.0.1:53 in %s) does not answer %s: %s"
                     % (MTA, key, out.strip() or "nothing"))
    for name, port, box in (("allworx", AW_PORT, bench.aw_box), ("postfix", PF_PORT, bench.pf_box)):
        before = delivered_count(box)
        blast(bench, port, 1, 1)
        if wait_count(box, before + 1, timeout=30) < before + 1:
            (fatal if name == "postfix" else warnings).append(
                "%s: the sanity message was not delivered (logs in %s)" % (name, bench.work))
            continue
        raw, folder = newest(box)
        if name == "postfix":
            fatal += ["postfix: " + p for p in peer_problems(raw)]
        else:
            warnings += ["allworx: %s: its inbound checks are not in this tree (or did not pass), "
                         "the figures are its plain path" % p for p in allworx_problems(raw)]
            if folder != "INBOX":
                warnings.append("allworx: the sanity message went to %s" % folder)
        reply = run_probe({"do": "rcpt", "host": MTA_IP, "port": port, "source": LISTED_IP})
        if reply["code"] != 554 or RBL not in reply["text"]:
            line = "%s: the DNSBL-listed %s got %s %s at RCPT, not 554 naming %s" % (
                name, LISTED_IP, reply["code"], reply["text"], RBL)
            (fatal if name == "postfix" else warnings).append(line)
    return warnings, fatal


def latency(bench, port, source, count):
    """`count` messages one at a time from `source`: (latencies in s, errors)."""
    host = MTA_LAN if source == GEN_LAN else MTA_IP
    result = run_probe({"do": "send", "host": host, "port": port, "source": source,
                        "message": bench.message, "count": count})
    return result["latencies"], result["errors"]


def ms(value):
    return "-" if value is None else "%.1f ms" % (value * 1000)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=2048, help="message size in bytes (about)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    parser.add_argument("--latency", type=int, default=200, help="messages one at a time per case")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--serve", nargs=2, metavar=("CONF", "DATA"), help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(*args.serve)
    if args.probe:
        print(json.dumps(probe(json.loads(args.probe))), flush=True)
        return 0
    if os.geteuid() != 0:
        print("bench.mailauth needs root (namespaces; Postfix runs as its own user)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="allworx-bench-mailauth-", dir="/var/tmp")
    os.chmod(work, 0o755)
    bench = Bench(work)
    try:
        bench.start(args.size)
        warnings, fatal = sanity(bench)
        for line in warnings:
            print("WARNING " + line, flush=True)
        if fatal:
            for line in fatal:
                print("FAILED " + line, flush=True)
            return 1
        print("sanity: postfix's copy has OpenDKIM dkim=pass and policyd-spf Received-SPF: Pass; "
              "%s is refused at RCPT by postfix%s" % (
                  LISTED_IP, "" if warnings else " and allworx; allworx's copy has its "
                  "Authentication-Results with spf, dkim and dmarc pass"), flush=True)
        return measure(bench, args, warnings)
    finally:
        bench.close()
        if args.keep:
            print("scratch directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def measure(bench, args, warnings):
    # Warm-up (smtpd and policyd-spf processes, caches), not counted.
    boxes = {"allworx": (AW_PORT, bench.aw_box), "postfix": (PF_PORT, bench.pf_box)}
    expected = {}
    for name, (port, box) in boxes.items():
        base = delivered_count(box)
        blast(bench, port, 50, args.sessions)
        expected[name] = wait_count(box, base + 50)
    results = {"allworx": [], "postfix": []}
    lost = 0
    for _ in range(args.rounds):
        for name, (port, box) in boxes.items():
            base = expected[name]
            elapsed = blast(bench, port, args.messages, args.sessions)
            delivered = wait_count(box, base + args.messages) - base
            expected[name] = base + delivered
            lost += args.messages - delivered
            results[name].append(elapsed)
    lat = {
        "allworx WAN (checks)": latency(bench, AW_PORT, GEN_IP, args.latency),
        "allworx LAN (no checks)": latency(bench, AW_PORT, GEN_LAN, args.latency),
        "postfix WAN (checks)": latency(bench, PF_PORT, GEN_IP, args.latency),
    }
    print("load average %s; smtp-source -s %d -m %d, %d-byte DKIM-signed message, one connection "
          "a message, from 203.0.113.10 over a veth; %d alternating rounds" % (
              " ".join(open("/proc/loadavg").read().split()[:3]), args.sessions, args.messages,
              os.path.getsize(bench.message), args.rounds))
    best = {}
    for name, rounds in results.items():
        best[name] = args.messages / min(rounds)
        print("  %-8s best %6.0f msg/s accepted (rounds: %s msg/s)" % (
            name, best[name], ", ".join("%.0f" % (args.messages / e) for e in rounds)))
    ratio = best["allworx"] / best["postfix"]
    print("  ratio allworx/postfix: %.2f (goal >= 0.5); messages lost: %d%s" % (
        ratio, lost, " (allworx measured WITHOUT its inbound checks, see WARNING)"
        if warnings else ""))
    # A row of make bench's table only when what was measured is the product with its checks.
    common.result("SMTP with SPF, DKIM, DMARC and DNSBL checks (smtp-source)", best["allworx"],
                  best["postfix"], "Postfix+OpenDKIM+policyd-spf", "msg/s",
                  0.5 if not warnings and not lost else "checks on, nothing lost",
                  note="messages lost: %d" % lost,
                  holds=None if not warnings and not lost else False)
    print("latency per message, one at a time (%d each, connect to the 250 after DATA):"
          % args.latency)
    for name, (values, errors) in lat.items():
        print("  %-24s p50 %s  p95 %s%s" % (name, ms(percentile(values, 50)),
                                             ms(percentile(values, 95)),
                                             "  (%d failed: %s)" % (len(errors), errors[0])
                                             if errors else ""))
    wan, lan = lat["allworx WAN (checks)"][0], lat["allworx LAN (no checks)"][0]
    if wan and lan:
        print("  added by allworx's checks: p50 %s, p95 %s" % (
            ms(percentile(wan, 50) - percentile(lan, 50)),
            ms(percentile(wan, 95) - percentile(lan, 95))))
    failed = lost or any(errors for _, errors in lat.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main() or 0)
