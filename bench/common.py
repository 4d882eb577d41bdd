"""
What every benchmark shares: peak memory of a process tree, the machine's
load, a flame graph of the server under load (py-spy), and the rows of
`make bench`'s closing table.

A benchmark reports each figure it has a goal for with `result(...)`: it
prints the row at once and, when `make bench` (bench/run_all.py) runs it,
appends it to the file named by $ALLWORX_BENCH_RESULTS (one JSON object per
line), from which run_all prints one table at the end and, with
`--record`, adds it to docs/BENCHMARKS.md.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

RESULTS_ENV = "ALLWORX_BENCH_RESULTS"
PROFILE_ENV = "ALLWORX_BENCH_PROFILE"      # a directory: write flame graphs there
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(argv, check=True, **kw):
    """Run a command, its output captured as text."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(argv, check=check, text=True, **kw)


def nsx(ns, *argv, **kw):
    """Run a command in network namespace `ns`."""
    return sh(["ip", "netns", "exec", ns] + list(argv), **kw)


def netns_down(*names):
    """Remove the benchmark's own namespaces `names` that exist (by name)."""
    existing = sh(["ip", "netns", "list"]).stdout.split()
    for ns in names:
        if ns in existing:
            sh(["ip", "netns", "del", ns], check=False)


def two_namespaces(server_ns, client_ns, server_cidr, client_cidr):
    """
    Fresh `server_ns` and `client_ns` (IPv4 only, lo up) joined by a veth
    pair: lan0 (`server_cidr`) in the server's, eth0 (`client_cidr`) in the
    client's. Removes namespaces of those names first.
    """
    netns_down(server_ns, client_ns)
    for ns in (server_ns, client_ns):
        sh(["ip", "netns", "add", ns])
        # IPv4 only: no IPv6 link-local chatter from the veth pair either.
        for which in ("all", "default"):
            nsx(ns, "sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % which)
        nsx(ns, "ip", "link", "set", "lo", "up")
    sh(["ip", "link", "add", "eth0", "netns", client_ns, "type", "veth", "peer", "lan0",
        "netns", server_ns])
    nsx(server_ns, "ip", "addr", "add", server_cidr, "dev", "lan0")
    nsx(client_ns, "ip", "addr", "add", client_cidr, "dev", "eth0")
    nsx(server_ns, "ip", "link", "set", "lan0", "up")
    nsx(client_ns, "ip", "link", "set", "eth0", "up")


def load():
    """The 1-minute load average, as printed beside figures."""
    return "%.1f" % os.getloadavg()[0]


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def process_tree(pid):
    """`pid` and every descendant alive now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def peak_rss_mb(pid, tree=True):
    """
    Peak resident memory (VmHWM) in MB of `pid`, summed over its process
    tree when `tree` (a peer such as Postfix or Kea runs several processes).
    Read it before the process ends.
    """
    pids = process_tree(pid) if tree else [pid]
    return sum(_status_kb(p, "VmHWM") for p in pids) / 1024.0


def rss_mb(pid, tree=True):
    """Resident memory now (VmRSS) in MB, summed over the tree when `tree`."""
    pids = process_tree(pid) if tree else [pid]
    return sum(_status_kb(p, "VmRSS") for p in pids) / 1024.0


def memory_line(name, allworx_mb, peer_name, peer_mb):
    """The line each benchmark prints beside its figures."""
    ratio = allworx_mb / peer_mb if peer_mb else float("nan")
    return "%s peak memory: allworx %.1f MB, %s %.1f MB (ratio %.2f)" % (
        name, allworx_mb, peer_name, peer_mb, ratio)


def result(path, allworx, peer, peer_name, unit, goal, allworx_mb=None, peer_mb=None,
           note="", higher_is_better=True, holds=None):
    """
    One row of the closing table: `path` (what is measured), allworx's and
    the peer's figure in `unit`, the goal as a ratio allworx/peer (None:
    no goal; a string: a goal in words, such as "< 2 s", whose outcome the
    caller gives as `holds`). `higher_is_better=False` for times: the
    ratio is then peer/allworx.
    Prints the row; appends it to $ALLWORX_BENCH_RESULTS when set.
    Returns the ratio.
    """
    if peer:
        ratio = allworx / peer if higher_is_better else peer / allworx
    else:
        ratio = None
    if isinstance(goal, (int, float)):
        holds = None if ratio is None else ratio >= goal
    row = {"path": path, "allworx": allworx, "peer": peer, "peer_name": peer_name,
           "unit": unit, "ratio": ratio, "goal": goal, "holds": holds,
           "allworx_mb": allworx_mb, "peer_mb": peer_mb, "note": note,
           "load": load(), "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    print("RESULT %s: allworx %s %s, %s %s (ratio %s, goal %s%s)%s" % (
        path, _num(allworx), unit, peer_name, _num(peer), _num(ratio, "%.2f"),
        ">= %.2f" % goal if isinstance(goal, (int, float)) else goal or "-",
        "" if holds is None else (": holds" if holds else ": MISSED"),
        (" [%s]" % note) if note else ""), flush=True)
    dest = os.environ.get(RESULTS_ENV)
    if dest:
        with open(dest, "a") as f:
            f.write(json.dumps(row) + "\n")
    return ratio


def _num(v, pattern=None):
    if v is None:
        return "-"
    if pattern:
        return pattern % v
    if isinstance(v, float) and v < 100:
        return "%.2f" % v
    return "{:,}".format(int(round(v)))


class Flame:
    """
    `with Flame(pid, "dns-zone", seconds):` records a py-spy flame graph of
    the server while the block runs, when $ALLWORX_BENCH_PROFILE names a
    directory (`make bench PROFILE=dir`, or `--profile DIR` of a benchmark).
    Sampling costs the server a little: figures from a profiled run are
    not the ones to compare.
    """

    def __init__(self, pid, name, seconds, directory=None, rate=100):
        self.pid, self.name, self.seconds, self.rate = pid, name, seconds, rate
        self.directory = directory or os.environ.get(PROFILE_ENV)
        self.proc = None
        self.path = None

    def __enter__(self):
        if not self.directory:
            return self
        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        os.makedirs(self.directory, exist_ok=True)
        self.path = os.path.join(self.directory, "%s.svg" % self.name)
        self.proc = subprocess.Popen(
            [spy, "record", "--pid", str(self.pid), "--output", self.path,
             "--duration", str(int(self.seconds) + 1), "--rate", str(self.rate),
             "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc):
        if self.proc is None:
            return False
        try:
            _, err = self.proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            _, err = self.proc.communicate()
        if self.proc.returncode == 0:
            print("flame graph: %s" % self.path, flush=True)
        else:
            print("flame graph %s failed: %s" % (self.name, err.decode(errors="replace")[-300:]),
                  flush=True)
        return False
