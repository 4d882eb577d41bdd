"""
`make bench`: every benchmark in turn, each side by side with its peer, each
printing its own figures and ratios. Run on a quiet machine: the figures are
only comparable within one run.
"""

import subprocess
import sys

BENCHES = ["dns", "dhcp", "firewall", "smtp", "mailauth", "sip", "relay", "wan_dhcp", "web", "imap", "sites"]


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or BENCHES
    failed = []
    for name in names:
        print("\n==== bench/%s.py ====" % name, flush=True)
        if subprocess.call([sys.executable, "-m", "bench." + name]) != 0:
            failed.append(name)
    if failed:
        print("\nfailed: %s" % ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
