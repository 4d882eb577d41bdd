# -*- test-case-name: allworx.tests.network.test_shaping -*-
"""
Sites benchmark (issue 15): two offices joined by WireGuard (wireguard-go,
configured by the `vpn` service's own engine, as allworx/tests/lab/test_vpn.py
does), and voice first on the main office's uplink.

    .venv/bin/python -m bench.sites [--streams 8] [--seconds 10] [--uplink 2000]

Namespaces of its own (`awxsites-PID-a`, `-m`, `-b`): office A, a "modem" M
routing between A's WAN (198.51.100.1) and office B's (203.0.113.2), B. Each
office's LAN address is on its lo (192.168.2.254, 192.168.3.254); the tunnel
joins them (192.168.99.1, .2). Printed, in one run:

1. iperf3 TCP A -> B for 5 s, straight between the WAN addresses and from
   LAN to LAN through the tunnel (no bottleneck): the throughput ratio.
2. ping RTT (30 pings each, 0.1 s apart), direct and through the tunnel: the
   round trip the tunnel adds.
3. The modem's uplink limited to `--uplink` kbit/s (tc TBF with a deep 300 ms
   buffer, as a modem has). STREAMS RTP-like streams (50 packets/s, 172-byte
   payloads, marked EF) from A's LAN to B's LAN through the tunnel, while
   iperf3 (TCP, 2 connections) fills the uplink, for each load: an upload
   to the internet (B's WAN address) and an upload through the tunnel;
   each without shaping and with `[wan] upload_kbit` at 90 % of the uplink
   (the server's WanShaper on A's WAN). Loss %, jitter (RFC 3550, mean over
   streams) and one-way delay p50/p99, side by side, and the ratios.

Needs root, wireguard-go, iperf3, tc. Removes its namespaces and processes by
their own names and PIDs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import attr
from twisted.internet import defer, task, threads

from allworx.config import parse_config
from allworx.office import Office
from allworx.routing.network.links import Netlink
from allworx.routing.network.shaping import WanShaper, plan_shaping
from allworx.routing.vpn.netlink import TunnelLinks
from allworx.routing.vpn.service import VpnService
from allworx.tests.confs import NETWORK, PW_HASH
from allworx.vpnkeys import ensure_server_key, public_key

TAG = "%d" % (os.getpid() % 1000000)
NS = {side: "awxsites-%s-%s" % (TAG, side) for side in "amb"}
WG = {side: "aws%s%s" % (TAG, side) for side in "ab"}
WAN = {"a": "sw%sa" % TAG, "b": "sw%sb" % TAG}
MODEM = {"a": "sw%sma" % TAG, "b": "sw%smb" % TAG}
ADDR = {"a": "198.51.100.1", "b": "203.0.113.2"}
LAN = {"a": "192.168.2.254", "b": "192.168.3.254"}
TUNNEL = {"a": "192.168.99.1", "b": "192.168.99.2"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONF = NETWORK + """
[dns]
primary = 203.0.113.1

[web]
admin_password = {pw}

[vpn]
enabled = yes
interface = {ifname}
address = {tunnel}/24

[site {name}]
public_key = {key}
address = {peer}
networks = {networks}
"""


def run(*argv, check=True):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise RuntimeError("%s failed (exit %d): %s" % (" ".join(argv), done.returncode,
                                                        done.stderr.strip()))
    return done.stdout


def ns(side, *argv, check=True):
    return run("ip", "netns", "exec", NS[side], *argv, check=check)


def build():
    remove()
    for side in "amb":
        run("ip", "netns", "add", NS[side])
        ns(side, "ip", "link", "set", "lo", "up")
    ns("m", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    for side, gateway, prefix in (("a", "198.51.100.254", "198.51.100"),
                                  ("b", "203.0.113.254", "203.0.113")):
        run("ip", "link", "add", WAN[side], "netns", NS[side], "type", "veth", "peer", "name",
            MODEM[side], "netns", NS["m"])
        ns(side, "ip", "addr", "add", ADDR[side] + "/24", "dev", WAN[side])
        ns(side, "ip", "link", "set", WAN[side], "up")
        ns(side, "ip", "route", "add", "default", "via", gateway)
        ns(side, "ip", "addr", "add", LAN[side] + "/32", "dev", "lo")
        ns("m", "ip", "addr", "add", gateway + "/24", "dev", MODEM[side])
        ns("m", "ip", "link", "set", MODEM[side], "up")


def remove():
    present = run("ip", "netns", "list")
    names = {line.split()[0] for line in present.splitlines() if line.strip()}
    for name in NS.values():
        if name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def office(side, data_dir, keys):
    other = "b" if side == "a" else "a"
    text = CONF.format(pw=PW_HASH, ifname=WG[side], tunnel=TUNNEL[side],
                       name="branch" if side == "a" else "main", key=public_key(keys[other]),
                       peer=TUNNEL[other], networks=LAN[other].rsplit(".", 1)[0] + ".0/24")
    if side == "b":
        text = text.replace("192.168.2.254/24", "192.168.3.254/24")
    else:
        text += "endpoint = %s:51820\n" % ADDR["b"]
    return Office(parse_config(text), data_dir=data_dir)


def streams(side, kind, host, count, seconds, **options):
    argv = ["ip", "netns", "exec", NS[side], sys.executable, "-m",
            "allworx.tests.lab.voicestreams", kind, host, "7000", str(count), str(seconds)]
    for key, value in options.items():
        argv += ["--" + key, str(value)]
    return argv


def spawn(argv):
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))


def iperf(side, target, seconds, source=None, parallel=1):
    argv = ["iperf3", "-c", target, "-t", str(seconds), "-P", str(parallel), "--json"]
    if source:
        argv += ["-B", source]
    return ["ip", "netns", "exec", NS[side]] + argv


def throughput(target, source=None):
    out = json.loads(run(*iperf("a", target, 5, source)))
    return out["end"]["sum_received"]["bits_per_second"] / 1e6


def rtt(target):
    out = ns("a", "ping", "-c", "30", "-i", "0.1", "-q", target)
    return float(out.rsplit("=", 1)[1].split("/")[1])


def voice(count, seconds, load_target, load_source=None):
    """Streams through the tunnel while iperf3 uploads: {loss, jitter, p50, p99}."""
    receiver = spawn(streams("b", "receive", LAN["b"], count, seconds))
    if receiver.stdout.readline().strip() != "ready":
        raise RuntimeError("the receiver did not start: " + receiver.stderr.read())
    load = spawn(iperf("a", load_target, seconds + 4, load_source, parallel=2))
    try:
        time.sleep(1.5)         # the upload gets going (a benchmark; the lab tests wait on events)
        sender = spawn(streams("a", "send", LAN["b"], count, seconds, tos="0xb8"))
        sent = json.loads(sender.communicate(timeout=seconds + 30)[0].strip().splitlines()[-1])
        got = json.loads(receiver.communicate(timeout=30)[0].strip().splitlines()[-1])
    finally:
        for p in (load, receiver):
            if p.poll() is None:
                p.kill()
            p.wait()
    per = got["streams"]
    total = sent["sent"] * count
    lost = sum(s["lost"] for s in per) + sum(max(0, sent["sent"] - s["received"] - s["lost"])
                                              for s in per)
    return {"loss": 100.0 * lost / total, "jitter": sum(s["jitter_ms"] for s in per) / len(per),
            "p50": max(s["delay_ms"]["p50"] or 0 for s in per),
            "p99": max(s["delay_ms"]["p99"] or 0 for s in per)}


def measure(args, shaper, shaping):
    direct = throughput(ADDR["b"])
    tunnel = throughput(LAN["b"], LAN["a"])
    print("iperf3 TCP A->B: direct %.0f Mbit/s, through the tunnel %.0f Mbit/s, ratio %.2f"
          % (direct, tunnel, tunnel / direct), flush=True)
    rtt_direct, rtt_tunnel = rtt(ADDR["b"]), rtt(LAN["b"])
    print("ping RTT: direct %.3f ms, through the tunnel %.3f ms, added %.3f ms"
          % (rtt_direct, rtt_tunnel, rtt_tunnel - rtt_direct), flush=True)
    ns("m", "tc", "qdisc", "add", "dev", MODEM["b"], "root", "tbf", "rate",
       "%dkbit" % args.uplink, "burst", "4kb", "latency", "300ms")
    print("\nuplink %d kbit/s (modem TBF, 300 ms buffer); %d streams x 50 pkt/s, 172-byte "
          "payloads, EF, %d s, LAN to LAN through the tunnel" % (args.uplink, args.streams,
                                                               args.seconds), flush=True)
    print("%-30s %-14s %8s %10s %9s %9s" % ("load (iperf3 TCP x2)", "upload_kbit", "loss %",
                                             "jitter ms", "p50 ms", "p99 ms"))
    rows = {}
    for load, target, source in (("upload to the internet", ADDR["b"], None),
                                 ("upload through the tunnel", LAN["b"], LAN["a"])):
        for shaped in (False, True):
            if shaped:
                problem = shaper.shape(shaping)
                if problem:
                    raise RuntimeError(problem)
            r = voice(args.streams, args.seconds, target, source)
            shaper.remove()
            rows[(load, shaped)] = r
            print("%-30s %-14s %8.2f %10.2f %9.1f %9.1f" % (
                load, shaping.upload_kbit if shaped else "0 (off)", r["loss"], r["jitter"],
                r["p50"], r["p99"]), flush=True)
    print("\nratios, without / with shaping:")
    for load, _, _ in (("upload to the internet", 0, 0), ("upload through the tunnel", 0, 0)):
        off, on = rows[(load, False)], rows[(load, True)]
        print("  %-28s loss %.2f%% / %.2f%%, jitter x%.1f, p99 delay x%.1f" % (
            load, off["loss"], on["loss"], off["jitter"] / max(on["jitter"], 0.001),
            off["p99"] / max(on["p99"], 0.001)))


@defer.inlineCallbacks
def main(reactor, args):
    if os.geteuid() != 0:
        raise SystemExit("bench.sites needs root (namespaces, tc, TUN)")
    from pyroute2 import IPRoute
    build()
    services, netlink = [], None
    data = {side: tempfile.mkdtemp(prefix="awxsites-") for side in "ab"}
    pidfile = os.path.join(data["b"], "iperf3.pid")
    try:
        keys = {side: ensure_server_key(data[side])[0] for side in "ab"}
        for side in "ab":
            svc = VpnService(office(side, data[side], keys), reactor,
                             links_factory=lambda s=side: TunnelLinks(IPRoute(netns=NS[s])),
                             userspace_argv=("ip", "netns", "exec", NS[side], "wireguard-go"))
            services.append(svc)
            yield svc.startService()
        ns("b", "iperf3", "-s", "-D", "-I", pidfile)
        ns("a", "ping", "-c", "3", "-w", "10", LAN["b"])      # the handshake
        netlink = Netlink(IPRoute(netns=NS["a"]))
        config = services[0].office.config
        config = attr.evolve(config, wan=attr.evolve(config.wan,
                                                     upload_kbit=args.uplink * 9 // 10))
        shaping = plan_shaping(config, WAN["a"])
        yield threads.deferToThread(measure, args, WanShaper(netlink), shaping)
    finally:
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                subprocess.run(["kill", f.read().strip()], capture_output=True)
        for svc in services:
            yield svc.stopService()
        if netlink is not None:
            netlink.close()
        remove()


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--uplink", type=int, default=2000, help="the modem's uplink, kbit/s")
    return p.parse_args(argv)


if __name__ == "__main__":
    task.react(main, (parse(sys.argv[1:]),))
