#!/usr/bin/env python3
"""Turn trial's closing line into `N passed, M failed` (skips counted apart).

Reads trial's saved output on stdin and prints the one summary line. Exit
status: non-zero when trial failed (its status is the first argument), when
anything failed, or when nothing passed."""

import re
import sys


def summarize(text):
    m = None
    for m in re.finditer(r"^(PASSED|FAILED) \(([^)]*)\)\s*$", text, re.M):
        pass
    if m is None:
        return None
    counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2)))
    passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
    failed = counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
    return passed, failed, counts.get("skips", 0)


def main():
    status = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    text = sys.stdin.read()
    result = summarize(text)
    if result is None:
        print("0 passed, 1 failed")
        print("(trial printed no summary: the run did not complete)")
        return 1
    passed, failed, skipped = result
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    if passed == 0:
        return 1
    return status or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
