"""
`make bench`: every benchmark in turn, each side by side with its peer, each
printing its own figures and ratios, then one table of every path: allworx,
the peer, the ratio, the goal and whether it holds. Run on a quiet machine:
the figures are only comparable within one run.

    python -m bench.run_all [--record] [--profile DIR] [NAME ...]

`--record` adds the table, dated, to docs/BENCHMARKS.md; `--profile DIR`
has each benchmark keep a py-spy flame graph of the server under load in
DIR (profiled figures are a little lower: compare unprofiled runs).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench.common import PROFILE_ENV, REPO, RESULTS_ENV, _num

BENCHES = ["dns", "dhcp", "firewall", "smtp", "mailauth", "sip", "voicemail", "relay", "wan_dhcp",
           "web", "imap", "sites", "startup", "scale"]


def table(rows):
    """The closing table (markdown) of the rows the benchmarks reported."""
    lines = ["| path | allworx | peer | ratio | goal | holds | peak memory allworx / peer |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        goal = r["goal"]
        goal = ">= %.2f" % goal if isinstance(goal, (int, float)) else (goal or "-")
        holds = {True: "yes", False: "**no**", None: "-"}[r["holds"]]
        mem = "-"
        if r.get("allworx_mb") is not None:
            mem = "%.0f / %s MB" % (r["allworx_mb"], "-" if r.get("peer_mb") is None
                                    else "%.0f" % r["peer_mb"])
        lines.append("| %s | %s %s | %s | %s | %s | %s | %s |" % (
            r["path"], _num(r["allworx"]), r["unit"],
            "-" if r["peer"] is None else "%s %s" % (r["peer_name"] or "", _num(r["peer"])),
            _num(r["ratio"], "%.2f"), goal, holds, mem))
    return "\n".join(lines)


def record(text, when):
    """Insert the dated table at the top of docs/BENCHMARKS.md's history."""
    path = os.path.join(REPO, "docs", "BENCHMARKS.md")
    with open(path) as f:
        doc = f.read()
    entry = "## %s (`make bench`, load %.1f at the end)\n%s\n\n" % (
        when, os.getloadavg()[0], text)
    at = doc.find("\n## ")
    doc = doc + "\n" + entry if at < 0 else doc[:at + 1] + entry + doc[at + 1:]
    with open(path + ".tmp", "w") as f:
        f.write(doc)
    os.replace(path + ".tmp", path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true",
                        help="add the closing table, dated, to docs/BENCHMARKS.md")
    parser.add_argument("--profile", metavar="DIR",
                        help="keep a flame graph of the server under each load in DIR")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="benchmarks to run (default: all: %s)" % " ".join(BENCHES))
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error("no benchmark %s (there are: %s)" % (", ".join(unknown), " ".join(BENCHES)))
    env = dict(os.environ)
    fd, results = tempfile.mkstemp(prefix="allworx-bench-", suffix=".jsonl")
    os.close(fd)
    env[RESULTS_ENV] = results
    if args.profile:
        env[PROFILE_ENV] = os.path.abspath(args.profile)
    failed = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        for name in args.names or BENCHES:
            print("\n==== bench/%s.py ====" % name, flush=True)
            if subprocess.call([sys.executable, "-m", "bench." + name], env=env) != 0:
                failed.append(name)
        with open(results) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    finally:
        os.unlink(results)
    text = table(rows)
    print("\n==== every path (%s) ====\n%s" % (started, text))
    missed = [r["path"] for r in rows if r["holds"] is False]
    print("\n%d paths, %d hold their goal, %d miss it%s" % (
        len(rows), sum(1 for r in rows if r["holds"]), len(missed),
        (": " + "; ".join(missed)) if missed else ""))
    if args.record:
        record(text, started)
        print("recorded in docs/BENCHMARKS.md")
    if failed:
        print("\nfailed: %s" % ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
