# -*- test-case-name: allworx.tests.lab.test_firewall -*-
"""
Firewall benchmark: new flows per second decided by the flow hook against
the same kernel ruleset with the NFQUEUE rules replaced by ACCEPT, and bulk
throughput (iperf3) LAN->internet through firewall-nat against plain kernel
forwarding. Run as root:

    .venv/bin/python -m bench.firewall [--seconds 2] [--iperf-seconds 3] [--flood-only]

It builds three namespaces of its own (awfb-gen on the LAN, awfb-srv the
server with lan0/wan0, awfb-sink the internet), runs the real firewall
service (Office + FirewallService) in awfb-srv, generates one-packet UDP
flows from many source/destination ports in awfb-gen (and TCP SYN floods
with hping3, one new flow per source port), counts what arrives
in awfb-sink (an iptables counter there), reads the queue's drop counters
from /proc/net/netfilter/nfnetlink_queue, prints the figures and ratios, and
removes everything it made. The result row is the flood's best round of the
hook against the kernel's; the server's peak memory is printed beside it (the
kernel alone has no process), and `--profile DIR` keeps a flame graph of the
hook under each flood.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench import common

PATH = "new flows/s through the NFQUEUE hook"
GOAL = 0.9

PREFIX = "awfb"
GEN, SRV, SINK = PREFIX + "-gen", PREFIX + "-srv", PREFIX + "-sink"
GEN_IP, LAN_IP, WAN_IP, SINK_IP = "192.168.2.10", "192.168.2.254", "203.0.113.2", "203.0.113.1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The machine is shared: both sides of every comparison run at this priority,
# so that other work on it disturbs the figures less.
NICE = ["nice", "-n", "-10"]

# One-packet UDP flows: `sockets` source ports x every destination port.
GENERATOR = r"""
import socket, sys, time
dst, rate, seconds, nsock = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
socks = []
for i in range(nsock):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    socks.append(s)
payload = b"x"
sent = 0
start = time.perf_counter()
end = start + seconds
port = 1024
si = 0
while True:
    now = time.perf_counter()
    if now >= end:
        break
    if rate > 0:
        due = (now - start) * rate
        if sent >= due:
            time.sleep(min(0.001, (sent - due) / rate))
            continue
    s = socks[si]
    for _ in range(64):
        try:
            s.sendto(payload, (dst, port))
            sent += 1
        except OSError:
            pass
        port += 1
        if port > 65535:
            port = 1024
            si = (si + 1) % nsock
            s = socks[si]
print(sent, time.perf_counter() - start)
"""

CONFIG_EXTRA = """
[security]
mode = firewall-nat
"""


def sh(argv, check=True, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    done = subprocess.run([str(a) for a in argv], timeout=kw.pop("timeout", 60), **kw)
    if check and done.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, argv)), done.returncode,
                                                    done.stderr.strip()))
    return done


def nsx(ns, *argv, **kw):
    return sh(["ip", "netns", "exec", ns] + list(argv), **kw)


# ---------------------------------------------------------------- namespaces

def down():
    existing = sh(["ip", "netns", "list"]).stdout.split()
    for ns in (GEN, SRV, SINK):
        if ns in existing:
            sh(["ip", "netns", "del", ns], check=False)


def up():
    down()
    for ns in (GEN, SRV, SINK):
        sh(["ip", "netns", "add", ns])
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
    sh(["ip", "link", "add", "eth0", "netns", GEN, "type", "veth", "peer", "lan0", "netns", SRV])
    sh(["ip", "link", "add", "wan0", "netns", SRV, "type", "veth", "peer", "eth0",
        "netns", SINK])
    for ns, dev, cidr in ((GEN, "eth0", GEN_IP + "/24"), (SRV, "lan0", LAN_IP + "/24"),
                          (SRV, "wan0", WAN_IP + "/24"), (SINK, "eth0", SINK_IP + "/24")):
        sh(["ip", "-n", ns, "addr", "add", cidr, "dev", dev])
        sh(["ip", "-n", ns, "link", "set", dev, "up"])
    sh(["ip", "-n", GEN, "route", "add", "default", "via", LAN_IP])
    sh(["ip", "-n", SINK, "route", "add", "192.168.2.0/24", "via", WAN_IP])
    nsx(SRV, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    # The sink swallows the flows silently and counts them (UDP, TCP SYN).
    nsx(SINK, "iptables", "-A", "INPUT", "-p", "udp", "--dport", "1024:65535", "-j", "DROP")
    nsx(SINK, "iptables", "-A", "INPUT", "-p", "tcp", "--syn", "--dport", "9", "-j", "DROP")


def sink_count(proto="udp"):
    out = nsx(SINK, "iptables", "-L", "INPUT", "-v", "-x", "-n").stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] == "DROP" and fields[3] in (proto, {"udp": "17", "tcp": "6"}[proto]):
            return int(fields[0])
    return 0


def queue_drops():
    """(queue_dropped, user_dropped) of our queue in the server namespace."""
    out = nsx(SRV, "cat", "/proc/net/netfilter/nfnetlink_queue", check=False).stdout
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "24":
            return int(f[5]), int(f[6])
    return 0, 0


def flush_conntrack():
    nsx(SRV, "conntrack", "-F", check=False)


# ---------------------------------------------------------------- the server side

def serve(conf_path):
    """Run the firewall service alone (in the server namespace) until SIGTERM."""
    sys.path.insert(0, ROOT)
    from twisted.internet import reactor
    from allworx.config import load_config
    from allworx.office import Office, ServiceStatus
    from allworx.routing.firewall.service import FirewallService

    office = Office(load_config(conf_path))
    svc = FirewallService(office)

    def status(event):
        if event.name == "firewall":
            print("STATUS", event.state, event.detail, flush=True)
    office.subscribe(ServiceStatus, status)

    def report():
        hook = svc.hook
        print("STATS " + json.dumps({
            "packets": hook.packets if hook else 0, "reads": hook.reads if hook else 0,
            "errors": hook.errors if hook else 0, "sends": getattr(hook, "sends", 0),
            "counts": svc.connections.counts}),
            flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", report)
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    reactor.callWhenRunning(svc.startService)
    reactor.run()


class Server:
    """The firewall service running in the server namespace."""

    def __init__(self, conf_path):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", SRV] + NICE + [sys.executable, "-m", "bench.firewall",
             "--serve", conf_path], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("firewall did not start: %s" % self.proc.stderr.read())
            if line.startswith("STATUS up"):
                return
            if line.startswith("STATUS down"):
                raise RuntimeError(line)

    def stop(self):
        """SIGTERM; returns the hook's statistics."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        for line in out.splitlines():
            if line.startswith("STATS "):
                return json.loads(line[6:])
        return {}

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def kernel_only_rules(conf_path):
    """The ruleset the service would apply, with NFQUEUE replaced by ACCEPT."""
    sys.path.insert(0, ROOT)
    from allworx.config import load_config
    from allworx.routing.firewall.policy import FlowPolicy
    from allworx.routing.firewall.ruleset import compile_chains, restore_script
    chains = compile_chains(FlowPolicy.build(load_config(conf_path)))
    chains = {k: [r.replace("-j NFQUEUE --queue-num 24", "-j ACCEPT") for r in v]
              for k, v in chains.items()}
    saved = nsx(SRV, "iptables-save").stdout
    return restore_script(chains, saved)


def remove_rules():
    sys.path.insert(0, ROOT)
    from allworx.routing.firewall.ruleset import removal_script
    script = removal_script(nsx(SRV, "iptables-save").stdout)
    nsx(SRV, "iptables-restore", "--noflush", input=script)


# ---------------------------------------------------------------- measurements

def flows(rate, seconds, sockets=4):
    """Send new flows for `seconds` (rate 0: as fast as possible): (sent, delivered, elapsed)."""
    flush_conntrack()
    before = sink_count()
    out = nsx(GEN, *NICE, sys.executable, "-c", GENERATOR, SINK_IP, rate, seconds, sockets,
              timeout=seconds + 30).stdout.split()
    sent, elapsed = int(out[0]), float(out[1])
    # Wait until the queue has drained: the count stops moving.
    delivered, deadline = -1, time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = sink_count() - before
        if now == delivered:
            break
        delivered = now
    flush_conntrack()
    return sent, delivered, elapsed


def syn_flood(seconds):
    """hping3 --flood: TCP SYNs to the sink, each from the next source port
    (a new flow each): (delivered, elapsed)."""
    flush_conntrack()
    before = sink_count("tcp")
    start = time.monotonic()
    nsx(GEN, *NICE, "timeout", "-s", "INT", seconds, "hping3", "--flood", "-q", "-S", "-p", "9",
        "-s", "1024", SINK_IP, check=False, timeout=seconds + 20)
    elapsed = time.monotonic() - start
    delivered, deadline = -1, time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = sink_count("tcp") - before
        if now == delivered:
            break
        delivered = now
    flush_conntrack()
    return delivered, elapsed


def iperf(seconds):
    server = subprocess.Popen(["ip", "netns", "exec", SINK, "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = nsx(GEN, *NICE, "iperf3", "-c", SINK_IP, "-t", seconds, "-J", timeout=seconds + 30).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"]
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


def cpu_seconds(pid):
    """User + system CPU seconds a process has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="each flow run (default 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="flood runs of each side, interleaved; the best counts (default 3)")
    parser.add_argument("--iperf-seconds", type=int, default=3)
    parser.add_argument("--flood-only", action="store_true",
                        help="only the UDP floods (no SYN flood, paced search or iperf3)")
    parser.add_argument("--profile", metavar="DIR",
                        help="keep a py-spy flame graph of the hook under each flood in DIR")
    parser.add_argument("--serve", metavar="CONF", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    if args.profile:
        os.environ[common.PROFILE_ENV] = os.path.abspath(args.profile)
    if os.geteuid() != 0:
        print("bench.firewall needs root (network namespaces, iptables)", file=sys.stderr)
        return 2
    sys.path.insert(0, ROOT)
    from allworx.tests.confs import MINIMAL, with_sections
    tmp = tempfile.mkdtemp(prefix="awfb-")
    conf = os.path.join(tmp, "tap.conf")
    with open(conf, "w") as f:
        f.write(with_sections(CONFIG_EXTRA,
                              MINIMAL.replace("[security]\nmode = firewall-nat\n", "")))
    server = None
    T = args.seconds
    memory = 0.0
    try:
        print("load %s" % common.load())
        up()
        # 1. Flood, interleaved: the kernel alone (same ruleset, NFQUEUE -> ACCEPT)
        #    and the hook; the best round of each counts (the machine is shared).
        kernel, hook_flood, cpu_per_flow = 0.0, 0.0, []
        for round_ in range(args.rounds):
            nsx(SRV, "iptables-restore", "--noflush", input=kernel_only_rules(conf))
            sent, got, el = flows(0, T)
            remove_rules()
            kernel = max(kernel, got / el)
            print("round %d kernel only (NFQUEUE->ACCEPT), flood: sent %d, delivered %d in "
                  "%.2fs: %.0f new flows/s" % (round_ + 1, sent, got, el, got / el))
            server = Server(conf)
            d0, c0 = queue_drops(), cpu_seconds(server.proc.pid)
            with common.Flame(server.proc.pid, "firewall-flood-%d" % (round_ + 1), T):
                sent, got, el = flows(0, T)
            d1, c1 = queue_drops(), cpu_seconds(server.proc.pid)
            memory = max(memory, common.peak_rss_mb(server.proc.pid))
            stats = server.stop()
            server = None
            hook_flood = max(hook_flood, got / el)
            cpu_per_flow.append((c1 - c0) / max(1, stats.get("packets", 1)))
            print("round %d flow hook, flood: sent %d, delivered %d in %.2fs: %.0f new "
                  "flows/s (queue full drops %d, socket drops %d); %d reads, %.1f per read, "
                  "%d verdict sends; hook process CPU %.1f us per flow; load %s" % (
                      round_ + 1, sent, got, el, got / el, d1[0] - d0[0], d1[1] - d0[1],
                      stats.get("reads", 0), stats.get("packets", 0) / max(1, stats.get("reads", 1)),
                      stats.get("sends", 0), cpu_per_flow[-1] * 1e6, common.load()))
        if args.flood_only:
            print()
            return summary(args, hook_flood, kernel, None, None, cpu_per_flow, None, memory)
        # TCP: SYN floods (hping3), kernel alone then the hook.
        if shutil.which("hping3"):
            nsx(SRV, "iptables-restore", "--noflush", input=kernel_only_rules(conf))
            k_tcp, k_el = syn_flood(T)
            remove_rules()
            server = Server(conf)
            h_tcp, h_el = syn_flood(T)
            server.stop()
            server = None
            tcp = (h_tcp / h_el, k_tcp / k_el)
            print("TCP SYN flood (hping3): kernel only %.0f new flows/s, hook %.0f new flows/s"
                  % (tcp[1], tcp[0]))
        else:
            tcp = None
        # 2. The hook paced: the highest rate it keeps up with, no flow lost.
        server = Server(conf)
        rate = max(1000.0, hook_flood * 0.95)
        sustained = None
        for attempt in range(6):
            d0 = queue_drops()
            p_sent, p_got, p_el = flows(rate, T)
            d1 = queue_drops()
            lost = (d1[0] - d0[0]) + (d1[1] - d0[1])
            offered = p_sent / p_el
            print("flow hook, paced at %.0f/s: offered %.0f/s, delivered %d of %d, "
                  "queue drops %d" % (rate, offered, p_got, p_sent, lost))
            if lost == 0 and p_got == p_sent:
                sustained = (offered, p_got / p_el, p_sent)
                if offered < rate * 0.9:
                    print("  (the generator could not offer the rate asked: the figure is "
                          "generator-limited, a lower bound for the hook)")
                break
            rate *= 0.9
        stats = server.stop()
        server = None
        print("hook verdicts: %s, %d errors" % (stats.get("counts"), stats.get("errors", 0)))
        # 3. Bulk throughput: firewall-nat (hook bound, established flows in the
        #    kernel) against plain forwarding without any ruleset; interleaved, best of each.
        plain = through = 0.0
        for round_ in range(args.rounds):
            plain = max(plain, iperf(args.iperf_seconds))
            server = Server(conf)
            through = max(through, iperf(args.iperf_seconds))
            server.stop()
            server = None
        print()
        return summary(args, hook_flood, kernel, sustained, tcp, cpu_per_flow, (through, plain),
                       memory)
    finally:
        if server is not None:
            server.kill()
        down()
        try:
            os.unlink(conf)
            os.rmdir(tmp)
        except OSError:
            pass


def summary(args, hook_flood, kernel, sustained, tcp, cpu_per_flow, bulk, memory):
    """The closing lines and the result row."""
    print("new flows/s, flood (best of %d): hook %.0f / kernel %.0f = ratio %.2f" % (
        args.rounds, hook_flood, kernel, hook_flood / kernel))
    if sustained is not None:
        print("new flows/s, no loss: hook %.0f (all %d flows delivered, no queue drop) / "
              "kernel %.0f = ratio %.2f" % (sustained[1], sustained[2], kernel,
                                             sustained[1] / kernel))
    elif not args.flood_only:
        print("new flows/s, no loss: no paced rate without drops found")
    if tcp is not None:
        print("TCP new flows/s, SYN flood: hook %.0f / kernel %.0f = ratio %.2f" % (
            tcp[0], tcp[1], tcp[0] / tcp[1]))
    print("hook process CPU per decided flow: %.1f us (best %.1f)" % (
        sum(cpu_per_flow) / len(cpu_per_flow) * 1e6, min(cpu_per_flow) * 1e6))
    if bulk is not None:
        through, plain = bulk
        print("iperf3 LAN->internet: firewall-nat %.2f Gbit/s / plain forwarding %.2f Gbit/s"
              " = ratio %.2f" % (through / 1e9, plain / 1e9, through / plain))
    print("firewall peak memory: allworx %.1f MB (the kernel alone: no process)" % memory)
    common.result(PATH, hook_flood, kernel, "kernel alone", "flows/s", GOAL,
                  allworx_mb=memory, note="UDP flood, best of %d rounds" % args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
