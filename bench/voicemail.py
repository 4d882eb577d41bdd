# -*- test-case-name: allworx.tests.voice.test_voicemail -*-
"""
Voicemail benchmark: concurrent voicemail recordings (calls to an extension
with no phone, straight to voicemail, each sending 20 ms PCMU), stepping the
number of calls up until a step fails: 0.1 % of the RTP lost, a call not
answered or not ended, or a message short of what was sent.

    .venv/bin/python -m bench.voicemail [--calls 300,600,900] [--seconds 8] [--all] [--profile DIR]

The server is allworx's SIP service alone (bench/sip.py's `--serve` child:
127.0.0.1, an in-memory mailbox, so SIP and RTP are what is measured). The
generator here places the N calls (INVITE, the 407 answered as user 1000,
ACK), sends every call's RTP in the same 20 ms tick (bursts of N packets,
harder than phones spread over the 20 ms), hangs all up, and waits until
the server has ended every call: the loss is the RTP sent that the calls'
endpoints did not receive, counted once every call has ended (a call the
server has not ended in time fails the step; it is not counted as loss).
A server that falls behind can also lose audio without losing packets (a
call's greeting, and so its recording, starting late, or nothing recorded
at all), so a step also needs every call to leave a message holding at least
the `--seconds` sent after the greeting (2 s are allowed for the greeting).
Per step it prints the calls answered and ended, the RTP sent and received,
the jitter buffers' gaps, the server's CPU and the generator's lateness (a
generator that cannot keep 20 ms makes the figure a lower bound). The
result row is the most calls held (all answered and ended, < 0.1 % loss,
every message complete) at that step and every smaller one. There is no peer: the goal is a number of
calls.
"""

import argparse
import json
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import time

from bench import common
from bench.sip import ALLWORX_PORT, IP, cpu_seconds, digest, header, start_allworx, stop

PATH = "concurrent voicemail recordings, < 0.1 % RTP loss"
GOAL_CALLS = 300
MAX_LOSS = 0.1          # percent


def stats(path):
    """The server's figures (bench/sip.py's --serve writes them every 0.5 s)."""
    for _ in range(20):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            time.sleep(0.1)
    raise RuntimeError("the server's figures in %s cannot be read" % path)


def _sip(method, uri, port, i, call_id, to, cseq, extra=""):
    return ("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s%d-%d\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:1000@example.com>;tag=v%d\r\nTo: %s\r\n"
            "Call-ID: %s\r\nCSeq: %d %s\r\n%sContent-Length: 0\r\n\r\n"
            % (method, uri, IP, port, method[0], i, cseq, i, to, call_id, cseq, method, extra)).encode()


def record_calls(server_port, n, seconds, stats_path, pid):
    """
    `n` simultaneous calls to extension 3000 (no phone: straight to
    voicemail), each sending 20 ms PCMU for `seconds` after its greeting,
    then hung up. Returns a dict of the step's figures, with the CPU the
    server (`pid`) used while the media flowed.
    """
    before = stats(stats_path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((IP, 0))
    port = sock.getsockname()[1]
    calls = {}
    try:
        for i in range(n):
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.bind((IP, 0))
            call_id = "vm%d-%d" % (i, random.getrandbits(30))
            calls[call_id] = {"rtp": rtp, "i": i}
            _invite(sock, server_port, port, calls[call_id], call_id, 1, "")
        answered = _answers(sock, server_port, port, calls, n)
        # The greeting (tones, about 1.5 s) plays, then recording starts: RTP
        # throughout, 20 ms apart, every call in step.
        payload = b"\x7f" * 160
        total = int((seconds + 2.0) / 0.02)
        live = [c for c in calls.values() if "media" in c]
        start, cpu0 = time.monotonic(), cpu_seconds(pid)
        sent = 0
        for k in range(total):
            delay = start + k * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            head = bytes([0x80, 0]) + (k & 0xFFFF).to_bytes(2, "big") + (k * 160).to_bytes(4, "big")
            for call in live:
                call["rtp"].sendto(head + call["ssrc"] + payload, call["media"])
            sent += len(live)
        late = time.monotonic() - (start + total * 0.02)
        media_cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - start) * 100
        for call_id, call in calls.items():
            if "to" in call:
                sock.sendto(_sip("BYE", "sip:voicemail@%s:%d" % (IP, server_port), port, call["i"],
                                 call_id, call["to"], call["cseq"] + 1), (IP, server_port))
        # Every call the server ended has counted its packets; wait for all.
        deadline = time.monotonic() + 20 + n * 0.02
        after = stats(stats_path)
        while after["calls"] - before["calls"] < answered and time.monotonic() < deadline:
            time.sleep(0.3)
            after = stats(stats_path)
    finally:
        sock.close()
        for call in calls.values():
            call["rtp"].close()
    received = after["rtp_received"] - before["rtp_received"]
    ended = after["calls"] - before["calls"]
    deliveries = after["deliveries"] - before["deliveries"]
    return {"calls": n, "answered": answered, "ended": ended, "sent": sent, "received": received,
            "messages": deliveries, "seconds": seconds, "cpu": media_cpu,
            "gaps": after["rtp_lost"] - before["rtp_lost"],
            "loss": 100.0 * (sent - received) / sent if sent else 100.0,
            "recorded": (after["seconds"] - before["seconds"]) / max(1, deliveries), "late": late}


def _invite(sock, server_port, port, call, call_id, cseq, auth):
    rtp_port = call["rtp"].getsockname()[1]
    sdp = ("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
           "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" % (IP, IP, rtp_port))
    i = call["i"]
    call["cseq"] = cseq
    sock.sendto(("INVITE sip:3000@example.com SIP/2.0\r\n"
                 "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bKv%d-%d;rport\r\nMax-Forwards: 70\r\n"
                 "From: <sip:1000@example.com>;tag=v%d\r\nTo: <sip:3000@example.com>\r\n"
                 "Call-ID: %s\r\nCSeq: %d INVITE\r\nContact: <sip:1000@%s:%d>\r\n%s"
                 "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s"
                 % (IP, port, i, cseq, i, call_id, cseq, IP, port, auth, len(sdp), sdp)).encode(),
                (IP, server_port))


def _answers(sock, server_port, port, calls, n):
    """Answer the 407s, ACK the 200s; the number of calls answered."""
    deadline = time.monotonic() + 10 + n * 0.01
    sock.settimeout(0.5)
    answered = 0
    while answered < n and time.monotonic() < deadline:
        try:
            data = sock.recv(65535).decode(errors="replace")
        except socket.timeout:
            continue
        call_id = header(data, "Call-ID")
        call = calls.get(call_id)
        if call is None:
            continue
        if data.startswith("SIP/2.0 407"):
            # This socket is no registered phone: answer the challenge as user 1000.
            auth = digest(header(data, "Proxy-Authenticate"), "INVITE", "sip:3000@example.com",
                          "1000", "secret")
            _invite(sock, server_port, port, call, call_id, 2, "Proxy-Authorization: %s\r\n" % auth)
        elif data.startswith("SIP/2.0 200") and "to" not in call:
            call["to"] = header(data, "To")
            call["media"] = (IP, int(re.search(r"m=audio (\d+)", data).group(1)))
            call["ssrc"] = (call["i"] + 1).to_bytes(4, "big")
            sock.sendto(_sip("ACK", "sip:voicemail@%s:%d" % (IP, server_port), port, call["i"],
                             call_id, call["to"], call["cseq"]), (IP, server_port))
            answered += 1
    return answered


def held(steps):
    """The most calls of the steps that held (all answered, loss < 0.1 %), up to the first failure."""
    best = 0
    for step in sorted(steps, key=lambda s: s["calls"]):
        if not ok(step):
            break
        best = step["calls"]
    return best


def ok(step):
    """All answered and ended, < 0.1 % RTP lost, every call a message of all that was sent."""
    return (step["answered"] == step["ended"] == step["messages"] == step["calls"]
            and step["loss"] < MAX_LOSS and step["recorded"] >= step["seconds"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="300,600,900,1200,1600,2000,2500,3000",
                        help="concurrent calls of each step, in order (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="seconds of RTP each call sends after its greeting (default 8)")
    parser.add_argument("--all", action="store_true",
                        help="run every step even after one fails")
    parser.add_argument("--profile", metavar="DIR",
                        help="keep a py-spy flame graph of the server under each step in DIR")
    args = parser.parse_args(argv)
    if args.profile:
        os.environ[common.PROFILE_ENV] = os.path.abspath(args.profile)
    counts = sorted(int(x) for x in args.calls.split(",") if x.strip())
    if not counts or counts[0] <= 0:
        parser.error("--calls needs positive numbers, such as 150,300")
    work = tempfile.mkdtemp(prefix="allworx-bench-vm-")
    steps = []
    proc = None
    try:
        proc, stats_path = start_allworx(work)
        for n in counts:
            with common.Flame(proc.pid, "voicemail-%d" % n, args.seconds + 2):
                step = record_calls(ALLWORX_PORT, n, args.seconds, stats_path, proc.pid)
            steps.append(step)
            print("%5d calls: %d answered, %d ended, RTP sent %d received %d (loss %.3f %%, "
                  "jitter-buffer gaps %d), %d messages of %.2f s on average, server CPU %.0f %% "
                  "while the media flowed, "
                  "generator late %.0f ms%s, load %s: %s" % (
                      n, step["answered"], step["ended"], step["sent"], step["received"],
                      step["loss"], step["gaps"], step["messages"], step["recorded"], step["cpu"],
                      step["late"] * 1000,
                      " (generator-limited)" if step["late"] > 0.1 else "", common.load(),
                      "held" if ok(step) else "FAILED"), flush=True)
            if not ok(step) and not args.all:
                break
        mb = common.peak_rss_mb(proc.pid, tree=False)
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    best = held(steps)
    print("voicemail peak memory: allworx %.1f MB (no peer)" % mb)
    if steps and best == steps[-1]["calls"] and len(steps) == len(counts):
        note = "every step held; the limit is above %d" % best
    else:
        note = "first failed step %s" % next((s["calls"] for s in steps if s["calls"] > best), "-")
    common.result(PATH, best, None, "-", "calls", ">= %d calls" % GOAL_CALLS, allworx_mb=mb,
                  note=note, holds=best >= GOAL_CALLS)
    return 0 if best >= GOAL_CALLS else 1


if __name__ == "__main__":
    sys.exit(main())
