# -*- test-case-name: allworx.tests.core.test_cli -*-
"""The `allworx` command: check a config, hash a password, drive the lab."""

import argparse
import getpass
import sys

USAGE = """usage: allworx check PATH
       allworx passwd
       allworx lab up|down|status|exec HOST CMD... [--prefix P]
"""


def check(argv, out=sys.stdout, err=sys.stderr):
    """`allworx check PATH`: print every error with section, key and line."""
    from allworx.config import ConfigErrors, load_config
    parser = argparse.ArgumentParser(prog="allworx check")
    parser.add_argument("path")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.path)
    except ConfigErrors as e:
        err.write(e.report() + "\n")
        err.write("%d error(s)\n" % len(e.errors))
        return 1
    out.write("%s: ok (%s.%s, %s, %d users)\n" % (
        args.path, config.system.hostname, config.system.domain,
        config.security.mode, len(config.users)))
    return 0


def passwd(argv, stdin=None, out=sys.stdout, err=sys.stderr):
    """
    `allworx passwd [--sip EXT@DOMAIN]`: read a password, print its hash for
    tap.conf; with --sip also the `sip_digest` line a phone's login needs.
    """
    from allworx.passwords import hash_password, sip_digest
    parser = argparse.ArgumentParser(prog="allworx passwd")
    parser.add_argument("--sip", metavar="EXT@DOMAIN",
                        help="also print sip_digest for this extension and domain")
    args = parser.parse_args(argv)
    if args.sip and "@" not in args.sip:
        err.write("allworx passwd: --sip takes EXTENSION@DOMAIN, e.g. 101@example.com\n")
        return 2
    stdin = stdin or sys.stdin
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            err.write("allworx passwd: the passwords differ\n")
            return 1
    else:
        first = stdin.readline().rstrip("\r\n")
    if not first:
        err.write("allworx passwd: the password is empty\n")
        return 1
    if args.sip:
        ext, domain = args.sip.split("@", 1)
        out.write("password = %s\n" % hash_password(first))
        out.write("sip_digest = %s\n" % sip_digest(ext, domain, first))
    else:
        out.write(hash_password(first) + "\n")
    return 0


def lab(argv):
    from allworx.lab import cli as labcli
    return labcli.main(argv)


COMMANDS = {"check": check, "passwd": passwd, "lab": lab}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write(USAGE)
        return 2
    return COMMANDS[argv[0]](argv[1:])


def entry():
    sys.exit(main())


if __name__ == "__main__":
    entry()
