# -*- test-case-name: allworx.tests.voice.test_relay -*-
"""
RTP relay benchmark: N concurrent outside calls of G.711 (172-byte packets
every 20 ms, both directions) through the media anchor of outside calls,
side by side with rtpengine, for a series of N.

    .venv/bin/python -m bench.relay [--calls 50,100,200,300,400] [--seconds 10]

For each N, in one run and with the same load generator:
  direct    the generator's streams straight from one side to the other (no
            relay): its own loss and jitter, the baseline;
  allworx   N `RelaySession`s on a Twisted reactor in a process of their own
            (this script with `--serve`), inside on 127.0.0.1, outside on
            127.0.0.2;
  rtpengine the Debian `rtpengine-daemon` run here as a plain process with
            userspace forwarding only (`--table=-1`) on 127.0.0.1, its calls
            set up over its ng control protocol (bencode over UDP: offer,
            answer, delete).
The generator is bench/rtpgen.c (built here with cc): one process, a few
sockets per side (127.0.0.3 the phones, 127.0.0.4 the provider), epoll and a
timerfd, the streams' send times spread over the 20 ms. It reports per
stream the packets received of the measured window and the RFC 3550
interarrival jitter at the receiver. Printed per peer and N: loss %, jitter
(mean over streams; the relay's added jitter is that minus the direct run's),
the relay's CPU % over the measured window and its peak memory. A peer holds
N calls when loss < 0.1 % and added jitter < 5 ms at N and at every smaller N
of the series; the ratio is the N allworx holds over the N rtpengine holds. Loopback traffic only;
needs root only for the generator's big socket buffers (SO_RCVBUFFORCE).
"""

import argparse
import json
import os
import re
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

INSIDE, OUTSIDE = "127.0.0.1", "127.0.0.2"     # the relay's two addresses
PHONES, PROVIDER = "127.0.0.3", "127.0.0.4"    # the generator's two sides
ALLWORX_PORTS = (20000, 29999)
RTPENGINE_PORTS = (30000, 39999)
NG_PORT = 22299
SOCKETS = 4                                    # generator sockets per side
MAX_LOSS, MAX_ADDED_JITTER = 0.1, 5.0          # % and ms: a peer "holds" N calls


# ---------------------------------------------------------------- allworx's relay, in its own process

def serve(plan_path, ports_path):
    """N RelaySessions on the reactor; their ports written to `ports_path`, stats at SIGTERM."""
    from twisted.internet import reactor

    from allworx.protocols.voice.relay import RelaySession

    with open(plan_path) as f:
        plan = json.load(f)
    sessions = []
    for a_host, a_port, b_host, b_port in plan["calls"]:
        session = RelaySession(reactor, INSIDE, OUTSIDE, tuple(plan["range"]))
        session.expect_inside(a_host, a_port)
        session.expect_outside(b_host, b_port)
        sessions.append(session)

    def write(path, value):
        with open(path + ".tmp", "w") as f:
            json.dump(value, f)
        os.rename(path + ".tmp", path)

    def dump():
        totals = {}
        for session in sessions:
            for key, value in session.stats().items():
                if isinstance(value, int):
                    totals[key] = totals.get(key, 0) + value
        write(ports_path + ".stats", totals)

    reactor.addSystemEventTrigger("before", "shutdown", dump)
    reactor.callWhenRunning(write, ports_path,
                            [[s.inside_port, s.outside_port] for s in sessions])
    reactor.run()
    return 0


def start_allworx(work, calls):
    """The runner with one session per call; (process, [(A's destination, B's destination)])."""
    plan, ports = os.path.join(work, "plan.json"), os.path.join(work, "ports.json")
    for path in (ports, ports + ".stats"):
        if os.path.exists(path):
            os.unlink(path)
    with open(plan, "w") as f:
        json.dump({"calls": [list(a) + list(b) for a, b in calls], "range": ALLWORX_PORTS}, f)
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", plan, ports],
                            stdout=open(os.path.join(work, "allworx.log"), "w"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not os.path.exists(ports):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError("the relay runner did not start: see %s/allworx.log" % work)
        time.sleep(0.05)
    with open(ports) as f:
        pairs = json.load(f)
    return proc, [((INSIDE, i), (OUTSIDE, o)) for i, o in pairs]


def allworx_stats(work):
    try:
        with open(os.path.join(work, "ports.json.stats")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------- rtpengine and its ng protocol

def bencode(value):
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    return b"d" + b"".join(bencode(k) + bencode(value[k]) for k in sorted(value)) + b"e"


def bdecode(data, i=0):
    """(value, index after it) of the bencoded value at data[i:]."""
    kind = data[i:i + 1]
    if kind == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if kind in (b"l", b"d"):
        i += 1
        items = []
        while data[i:i + 1] != b"e":
            item, i = bdecode(data, i)
            items.append(item)
        if kind == b"l":
            return items, i + 1
        return {items[n].decode(): items[n + 1] for n in range(0, len(items), 2)}, i + 1
    colon = data.index(b":", i)
    size = int(data[i:colon])
    return data[colon + 1:colon + 1 + size], colon + 1 + size


class Ng:
    """A client of rtpengine's ng control protocol."""

    def __init__(self, port):
        self.address = (INSIDE, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2)
        self.cookie = 0

    def command(self, **fields):
        self.cookie += 1
        cookie = b"b%d" % self.cookie
        message = cookie + b" " + bencode({k.replace("_", "-"): v for k, v in fields.items()})
        for _ in range(3):
            self.sock.sendto(message, self.address)
            try:
                while True:
                    reply = self.sock.recv(65535)
                    if reply.startswith(cookie + b" "):
                        answer = bdecode(reply, len(cookie) + 1)[0]
                        if answer.get("result") not in (b"ok", b"pong"):
                            raise RuntimeError("rtpengine: %r" % answer)
                        return answer
            except socket.timeout:
                continue
        raise RuntimeError("rtpengine does not answer on %s:%d" % self.address)


def sdp(host, port, session):
    return ("v=0\r\no=- %d 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n"
            % (session, host, host, port))


def sdp_address(body):
    text = body.decode()
    return (re.search(r"^c=IN IP4 (\S+)", text, re.M).group(1),
            int(re.search(r"^m=audio (\d+)", text, re.M).group(1)))


def start_rtpengine(work):
    binary = shutil.which("rtpengine") or "/usr/bin/rtpengine"
    if not os.path.exists(binary):
        return None
    _require_free(NG_PORT)
    proc = subprocess.Popen([binary, "--config-file=none", "--foreground", "--log-stderr",
                             "--table=-1", "--interface=%s" % INSIDE,
                             "--listen-ng=%s:%d" % (INSIDE, NG_PORT),
                             "--port-min=%d" % RTPENGINE_PORTS[0], "--port-max=%d" % RTPENGINE_PORTS[1],
                             "--delete-delay=0", "--log-level=4"],
                            stdout=open(os.path.join(work, "rtpengine.log"), "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    ng = Ng(NG_PORT)
    deadline = time.monotonic() + 15
    while True:
        try:
            ng.command(command="ping")
            return proc, ng
        except RuntimeError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError("rtpengine did not start: see %s/rtpengine.log" % work)


def rtpengine_calls(ng, calls, tag):
    """Offer/answer for each call; [(A's destination, B's destination)]."""
    routes = []
    for n, (a, b) in enumerate(calls):
        call_id = "%s-%d" % (tag, n)
        offer = ng.command(command="offer", call_id=call_id, from_tag="a%d" % n, sdp=sdp(a[0], a[1], n))
        answer = ng.command(command="answer", call_id=call_id, from_tag="a%d" % n, to_tag="b%d" % n,
                            sdp=sdp(b[0], b[1], n))
        routes.append((sdp_address(answer["sdp"]), sdp_address(offer["sdp"])))
    return routes


def rtpengine_delete(ng, count, tag):
    for n in range(count):
        ng.command(command="delete", call_id="%s-%d" % (tag, n), from_tag="a%d" % n)


# ---------------------------------------------------------------- the generator

def build_generator():
    """bench/rtpgen.c compiled once into a temp dir (again when the source is newer)."""
    source = os.path.join(HERE, "rtpgen.c")
    binary = os.path.join(tempfile.gettempdir(), "allworx-bench-rtpgen")
    if not os.path.exists(binary) or os.path.getmtime(binary) < os.path.getmtime(source):
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise RuntimeError("no C compiler: install build-essential (make deps)")
        subprocess.check_call([cc, "-O2", "-Wall", "-o", binary + ".new", source])
        os.rename(binary + ".new", binary)
    return binary


def _require_free(port, host=INSIDE):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((host, port))
    except OSError:
        raise RuntimeError("UDP %s:%d is already in use: stop whatever holds it first" % (host, port))
    finally:
        probe.close()


def generator_sockets(host):
    """SOCKETS free ports on `host` (the kernel's picks)."""
    probes = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(SOCKETS)]
    for probe in probes:
        probe.bind((host, 0))
    ports = [(host, probe.getsockname()[1]) for probe in probes]
    for probe in probes:
        probe.close()
    return ports


def run_generator(binary, sockets, streams, warmup, seconds, pid=None):
    """
    Send and receive `streams` ([(socket index, destination)]); the result
    dict, with the CPU % and peak memory of process `pid` over the window.
    """
    plan = ["%g %g %d %d %d" % (warmup, seconds, 300, len(sockets), len(streams))]
    plan += ["%s %d" % s for s in sockets]
    plan += ["%d %s %d" % (i, host, port) for i, (host, port) in streams]
    proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write("\n".join(plan) + "\n")
    proc.stdin.close()
    cpu0 = t0 = cpu1 = t1 = None
    for line in proc.stdout:
        line = line.strip()
        if line == "measure":
            t0, cpu0 = time.monotonic(), cpu_seconds(pid)
        elif line == "end":
            t1, cpu1 = time.monotonic(), cpu_seconds(pid)
        elif line.startswith("{"):
            result = json.loads(line)
            break
    else:
        raise RuntimeError("the generator failed: %s" % proc.stderr.read())
    proc.wait()
    expected = result["per_stream"] * result["streams"]
    received = sum(min(r, result["per_stream"]) for r in result["received"])
    jitters = sorted(j for j in result["jitter_mean_ms"] if j >= 0) or [float("nan")]
    return {
        "loss": 100.0 * (expected - received) / expected,
        "jitter": sum(jitters) / len(jitters),
        "jitter_p99": jitters[min(len(jitters) - 1, int(len(jitters) * 0.99))],
        "jitter_max": max(result["jitter_max_ms"]),
        "send_late_max": result["send_late_max_ms"],
        "cpu": (cpu1 - cpu0) / (t1 - t0) * 100 if pid is not None and t1 else None,
        "peak_mb": peak_memory(pid) if pid is not None else None,
    }


def streams_for(routes):
    """Two streams a call: A -> its destination from A's socket, B -> its destination from B's."""
    streams = []
    for n, (to_a_side, to_b_side) in enumerate(routes):
        streams.append((n % SOCKETS, to_a_side))
        streams.append((SOCKETS + n % SOCKETS, to_b_side))
    return streams


# ---------------------------------------------------------------- processes

def stop(proc):
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def cpu_seconds(pid):
    """User+system CPU of a process, all its threads (from /proc)."""
    if pid is None:
        return 0.0
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def peak_memory(pid):
    """VmHWM of a process in MB."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- the series

def held(rows, peer):
    """The largest N of the series that this N and every smaller one held (loss < 0.1 %, added jitter < 5 ms)."""
    best = 0
    for n in sorted(n for p, n in rows if p == peer):
        r = rows[(peer, n)]
        if r["loss"] >= MAX_LOSS or r["added_jitter"] >= MAX_ADDED_JITTER:
            break
        best = n
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="50,100,200,300,400", help="concurrent calls to try")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent before measuring")
    parser.add_argument("--no-rtpengine", action="store_true")
    parser.add_argument("--serve", nargs=2, metavar=("PLAN", "PORTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(*args.serve)

    binary = build_generator()
    work = tempfile.mkdtemp(prefix="allworx-bench-relay-")
    rtpengine = None if args.no_rtpengine else start_rtpengine(work)
    rows = {}
    try:
        for n in [int(x) for x in args.calls.split(",") if x]:
            sockets = generator_sockets(PHONES) + generator_sockets(PROVIDER)
            a_side, b_side = sockets[:SOCKETS], sockets[SOCKETS:]
            calls = [(a_side[i % SOCKETS], b_side[i % SOCKETS]) for i in range(n)]
            direct = run_generator(binary, sockets, streams_for([(b, a) for a, b in calls]),
                                   args.warmup, args.seconds)
            rows[("direct", n)] = dict(direct, added_jitter=0.0)
            proc, routes = start_allworx(work, calls)
            try:
                result = run_generator(binary, sockets, streams_for(routes),
                                       args.warmup, args.seconds, proc.pid)
            finally:
                stop(proc)
            result["relay"] = allworx_stats(work)
            rows[("allworx", n)] = dict(result, added_jitter=max(0.0, result["jitter"] - direct["jitter"]))
            if rtpengine is not None:
                tag = "n%d" % n
                routes = rtpengine_calls(rtpengine[1], calls, tag)
                try:
                    result = run_generator(binary, sockets, streams_for(routes),
                                           args.warmup, args.seconds, rtpengine[0].pid)
                finally:
                    rtpengine_delete(rtpengine[1], n, tag)
                rows[("rtpengine", n)] = dict(result, added_jitter=max(0.0, result["jitter"]
                                                                         - direct["jitter"]))
            report_row(rows, n)
    finally:
        if rtpengine is not None:
            stop(rtpengine[0])
    report(rows, args)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report_row(rows, n):
    for peer in ("direct", "allworx", "rtpengine"):
        r = rows.get((peer, n))
        if r is None:
            continue
        print("%5d calls %-9s loss %7.3f %%  jitter mean %6.3f ms (added %6.3f) p99 %6.3f max %7.3f  "
              "CPU %s  peak %s  gen late max %.1f ms%s"
              % (n, peer, r["loss"], r["jitter"], r["added_jitter"], r["jitter_p99"], r["jitter_max"],
                 "%5.1f %%" % r["cpu"] if r["cpu"] is not None else "    -  ",
                 "%5.1f MB" % r["peak_mb"] if r["peak_mb"] is not None else "   -    ",
                 r["send_late_max"],
                 "  relay drops %s" % {k: v for k, v in r["relay"].items() if k in ("dropped", "send_errors")}
                 if r.get("relay") else ""), flush=True)


def report(rows, args):
    print("RTP relay benchmark: G.711 172-byte packets every 20 ms both ways, %.0f s measured after %.0f s, "
          "loopback; load average %s" % (args.seconds, args.warmup, " ".join(
              open("/proc/loadavg").read().split()[:3])))
    a, r = held(rows, "allworx"), held(rows, "rtpengine")
    print("calls held (loss < %.1f %%, added jitter < %.0f ms): allworx %d, rtpengine %s%s"
          % (MAX_LOSS, MAX_ADDED_JITTER, a, r if ("rtpengine", max(n for _, n in rows)) in rows else "-",
             "; ratio allworx/rtpengine = %.2f" % (a / r) if r else ""))


if __name__ == "__main__":
    sys.exit(main())
