# -*- test-case-name: allworx.tests.core.test_cli -*-
"""The `allworx` command: check a config, hash a password, end login lock-outs, drive the lab."""

import argparse
import getpass
import ipaddress
import os
import sys
import time

USAGE = """usage: allworx check PATH
       allworx passwd [--sip EXT@DOMAIN | --pin]
       allworx unlock [USER] [SOURCE] [--source ADDR] [-c PATH] [--data-dir DIR]
       allworx vpn pubkey [-c PATH] [--data-dir DIR]
       allworx lab up|down|status|exec HOST CMD... [--prefix P]
"""


def check(argv, out=sys.stdout, err=sys.stderr):
    """
    `allworx check PATH`: print every error with section, key and line; and
    warnings that do not stop the server: a file others may read, PINs not
    yet hashed.
    """
    from allworx.config import ConfigErrors, load_config
    parser = argparse.ArgumentParser(prog="allworx check")
    parser.add_argument("path")
    args = parser.parse_args(argv)
    for warning in mode_warnings(args.path):
        err.write("%s: warning: %s\n" % (args.path, warning))
    try:
        config = load_config(args.path)
    except ConfigErrors as e:
        err.write(e.report() + "\n")
        err.write("%d error(s)\n" % len(e.errors))
        return 1
    for warning in pin_warnings(config):
        err.write("%s: warning: %s\n" % (args.path, warning))
    out.write("%s: ok (%s.%s, %s, %d users)\n" % (
        args.path, config.system.hostname, config.system.domain,
        config.security.mode, len(config.users)))
    return 0


def mode_warnings(path):
    """A warning when group or others may read or change tap.conf."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return []
    if not mode & 0o077:
        return []
    who = " and ".join(w for w, bits in (("its group", 0o070), ("others", 0o007)) if mode & bits)
    what = " or ".join(w for w, bits in (("read", 0o044), ("change", 0o022), ("run", 0o011))
                       if mode & bits)
    return ["mode %04o lets %s %s it, and it holds password hashes and SIP digests: "
            "chmod 600 %s" % (mode, who, what, path)]


def pin_warnings(config):
    """A warning for each voicemail PIN still written as digits."""
    from allworx.passwords import is_hashed
    return ["[user %s] voicemail_pin: stored as typed; the server writes it hashed at its next "
            "change of this file (or run 'allworx passwd --pin' and paste the line)" % u.name
            for u in sorted(config.users.values(), key=lambda u: u.name)
            if u.voicemail_pin and not is_hashed(u.voicemail_pin)]


def passwd(argv, stdin=None, out=sys.stdout, err=sys.stderr):
    """
    `allworx passwd [--sip EXT@DOMAIN | --pin]`: read a password, print its
    hash for tap.conf; with --sip also the `sip_digest` line a phone's login
    needs; with --pin read a voicemail PIN and print its `voicemail_pin` line.
    """
    from allworx.config import check_value_text, parse_digits, parse_domain
    from allworx.passwords import hash_password, hash_pin, sip_digest
    parser = argparse.ArgumentParser(prog="allworx passwd")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--sip", metavar="EXT@DOMAIN",
                      help="also print sip_digest for this extension and domain")
    what.add_argument("--pin", action="store_true", help="hash a voicemail PIN instead")
    args = parser.parse_args(argv)
    if args.sip is not None:
        ext, _, domain = args.sip.partition("@")
        try:
            check_value_text(args.sip)
            ext = parse_digits(2, 8)(ext)
            domain = parse_domain(domain)
        except ValueError as e:
            err.write("allworx passwd: --sip takes EXTENSION@DOMAIN, e.g. 101@example.com: %s\n" % e)
            return 2
    first = _read_secret(stdin or sys.stdin, "PIN" if args.pin else "Password", err)
    if first is None:
        return 1
    if args.pin:
        try:
            out.write("voicemail_pin = %s\n" % hash_pin(parse_digits(4, 10)(first)))
        except ValueError as e:
            err.write("allworx passwd: the PIN: %s\n" % e)
            return 1
    elif args.sip:
        out.write("password = %s\n" % hash_password(first))
        out.write("sip_digest = %s\n" % sip_digest(ext, domain, first))
    else:
        out.write(hash_password(first) + "\n")
    return 0


def _read_secret(stdin, what, err):
    """A password or PIN from the terminal (asked twice) or a line of stdin; None if refused."""
    if stdin.isatty():
        first = getpass.getpass("%s: " % what)
        if getpass.getpass("Again: ") != first:
            err.write("allworx passwd: the two differ\n")
            return None
    else:
        first = stdin.readline().rstrip("\r\n")
    if not first:
        err.write("allworx passwd: the %s is empty\n" % what.lower())
        return None
    return first


def unlock(argv, out=sys.stdout, err=sys.stderr, sleep=time.sleep, now=time.time):
    """
    `allworx unlock [USER] [SOURCE]`: end the login lock-outs of USER (at
    SOURCE, or everywhere), or of everything at `--source ADDR`; with neither,
    list the lock-outs in force. The running server keeps them in
    data_dir/lockouts.json; this leaves it a request in data_dir, which it
    takes within a second (or at its next start).
    """
    from allworx.config import ConfigErrors, load_config
    from allworx.guards import login_name
    from allworx.lockoutfile import LockoutFile
    parser = argparse.ArgumentParser(
        prog="allworx unlock", description="End login lock-outs (every protocol's) in the running "
        "server: USER's (at SOURCE, or everywhere), or everything at --source ADDR; with neither, "
        "list the lock-outs in force.")
    parser.add_argument("user", nargs="?", help="a user name, extension or mail address")
    parser.add_argument("source", nargs="?", help="the address the user is locked out at")
    parser.add_argument("--source", dest="source_option", metavar="ADDR",
                        help="the address to unlock (every user locked out there, with no USER)")
    parser.add_argument("-c", "--config", default="tap.conf", help="the server's tap.conf (for data_dir)")
    parser.add_argument("--data-dir", help="the server's data directory, if given it on its command line")
    parser.add_argument("--wait", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait for the running server to take the request")
    args = parser.parse_args(argv)
    if args.source and args.source_option and args.source != args.source_option:
        err.write("allworx unlock: two different sources: %s and %s\n" % (args.source, args.source_option))
        return 2
    source = args.source or args.source_option
    if source is not None:
        try:
            source = str(ipaddress.ip_address(source.strip()))
        except ValueError:
            err.write("allworx unlock: %r is not an IP address\n" % source)
            return 2
    try:
        config = load_config(args.config)
    except ConfigErrors as e:
        err.write(e.report() + "\n")
        return 1
    data_dir = args.data_dir or config.system.data_dir
    if not os.path.isdir(data_dir):
        err.write("allworx unlock: there is no data directory %s (has the server run with it?)\n"
                  % data_dir)
        return 1
    store = LockoutFile(data_dir)
    in_force = store.read(now=now())
    if args.user is None and source is None:
        for e in in_force:
            out.write("%s: %s\n" % (_lockout_text(e), _until(e)))
        if not in_force:
            out.write("no login is locked out\n")
        return 0
    user = login_name(config, args.user) if args.user is not None else None
    key = user.strip().lower() if user is not None else None
    ended = [e for e in in_force if (key is None or e["user"] == key)
             and (source is None or e["source"] == source)]
    request = store.request_unlock(user, source)
    waited = 0.0
    while store.has_request(request) and waited < args.wait:
        sleep(0.1)
        waited += 0.1
    what = " at ".join(x for x in (user, source) if x) if user else "everyone at %s" % source
    if store.has_request(request):
        err.write("allworx unlock: the server has not taken the request for %s (is it running, "
                  "with its data in %s?); it is applied when the server starts\n"
                  % (what, os.path.dirname(store.path)))
        return 0
    for e in ended:
        out.write("unlocked %s (was %s)\n" % (_lockout_text(e), _until(e)))
    if not ended:
        out.write("%s: no lock-out in force; failed logins forgotten\n" % what)
    return 0


def _lockout_text(entry):
    if entry["user"] is None:
        return "source %s (every user who failed there)" % entry["source"]
    return "%s at %s" % (entry["user"], entry["source"])


def _until(entry):
    return "locked until %s after %s failures" % (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry["until"])), entry["failures"])


def vpn(argv, out=sys.stdout, err=sys.stderr):
    """
    `allworx vpn pubkey [-c PATH]`: print the server's WireGuard public key
    alone on one line, for the other site's `[site] public_key`. The key is
    made at the server's first start with `[vpn] enabled = yes`; asked
    before that start, this makes it (the same way, in the same place), so
    two offices can exchange keys before either runs: the server then uses
    it. Without `[vpn] enabled = yes` it makes nothing and says so.
    """
    from allworx.config import ConfigErrors, load_config
    from allworx.vpnkeys import VpnKeyError, ensure_server_key, public_key, server_key_path
    parser = argparse.ArgumentParser(prog="allworx vpn")
    parser.add_argument("what", choices=["pubkey"])
    parser.add_argument("-c", "--config", default="tap.conf", help="the server's tap.conf (for data_dir)")
    parser.add_argument("--data-dir", help="the server's data directory, if given it on its command line")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigErrors as e:
        err.write(e.report() + "\n")
        return 1
    if not config.vpn.enabled:
        err.write("allworx vpn: [vpn] is not enabled in %s (set enabled = yes and an address; "
                  "the key is made then)\n" % args.config)
        return 1
    data_dir = args.data_dir or config.system.data_dir
    try:
        key, made = ensure_server_key(data_dir)
    except (OSError, VpnKeyError) as e:
        err.write("allworx vpn: %s\n" % e)
        return 1
    if made:
        err.write("allworx vpn: made the server's key %s\n" % server_key_path(data_dir))
    out.write(public_key(key) + "\n")
    return 0


def lab(argv):
    from allworx.lab import cli as labcli
    return labcli.main(argv)


COMMANDS = {"check": check, "passwd": passwd, "unlock": unlock, "vpn": vpn, "lab": lab}


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
