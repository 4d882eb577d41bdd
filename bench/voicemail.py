# -*- test-case-name: allworx.tests.voice.test_voicemail -*-
"""
Voicemail benchmark: concurrent voicemail recordings (calls to an extension
with no phone, straight to voicemail, each sending 20 ms PCMU), stepping the
number of calls up until the RTP loss reaches 0.1 % or a call is not answered.

    .venv/bin/python -m bench.voicemail [--calls 150,300,450,600] [--seconds 8] [--profile DIR]

The server is allworx's SIP service alone (bench/sip.py's `--serve` child:
127.0.0.1, an in-memory mailbox, so SIP and RTP are what is measured); the
calls and their RTP come from bench/sip.py's generator (every call's packet
sent in the same 20 ms tick: bursts of N packets). Per step it prints the
calls answered, the RTP sent and recorded, the loss the server's jitter
buffers counted, the server's CPU and the generator's lateness (a generator
that cannot keep 20 ms makes the figure a lower bound). The result row is
the most calls held with < 0.1 % loss at that step and every smaller one.
There is no peer: the goal is a number of calls.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

from bench import common
from bench.sip import ALLWORX_PORT, cpu_seconds, run_recordings, start_allworx, stop

PATH = "concurrent voicemail recordings, < 0.1 % RTP loss"
GOAL_CALLS = 300
MAX_LOSS = 0.1          # percent


def held(steps):
    """The most calls of the steps that held (all answered, loss < 0.1 %), up to the first failure."""
    best = 0
    for step in sorted(steps, key=lambda s: s["calls"]):
        if step["answered"] != step["calls"] or step["loss"] >= MAX_LOSS:
            break
        best = step["calls"]
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="150,300,450,600,800,1000",
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
        proc, stats = start_allworx(work)
        for n in counts:
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            with common.Flame(proc.pid, "voicemail-%d" % n, args.seconds + 2):
                answered, sent, received, gaps, loss, recorded, late = run_recordings(
                    ALLWORX_PORT, n, args.seconds, stats)
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
            step = {"calls": n, "answered": answered, "loss": loss}
            steps.append(step)
            ok = answered == n and loss < MAX_LOSS
            print("%5d calls: %d answered, RTP sent %d recorded %d (loss %.3f %%, jitter-buffer "
                  "gaps %d), %.1f s recorded per message, server CPU %.0f %%, generator late "
                  "%.0f ms%s, load %s: %s" % (
                      n, answered, sent, received, loss, gaps, recorded, cpu, late * 1000,
                      " (generator-limited)" if late > 0.1 else "", common.load(),
                      "held" if ok else "FAILED"), flush=True)
            if not ok and not args.all:
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
