# -*- test-case-name: allworx.tests.core.test_cli -*-
"""The `allworx` command: check a config, hash a password, end login lock-outs, drive the lab."""

import argparse
import difflib
import getpass
import ipaddress
import os
import sys
import textwrap
import time

import allworx

USAGE = """usage: allworx check PATH
       allworx passwd [--sip EXT@DOMAIN | --pin]
       allworx unlock [USER] [SOURCE] [--source ADDR] [-c PATH] [--data-dir DIR] [--wait SECONDS]
       allworx vpn pubkey [-c PATH] [--data-dir DIR]
       allworx lab up|down|status|exec HOST CMD...|call PHONE NUMBER [--prefix P] [--state-root DIR]
       allworx help [COMMAND] | --help | -h | --version
"""

SUMMARIES = (
    ("check", "check a tap.conf: every error with its section, key and line"),
    ("passwd", "hash a password (or a voicemail PIN) for tap.conf"),
    ("unlock", "list login lock-outs, or end them in the running server"),
    ("vpn", "print the server's WireGuard public key for the other site"),
    ("lab", "build, inspect and use the virtual office (network namespaces; needs root)"),
    ("help", "describe every command, or one: allworx help COMMAND"),
)


class _Parser(argparse.ArgumentParser):
    """
    An ArgumentParser that names an unknown option first, before any missing
    argument (`allworx check --bogus` says `--bogus`, not that PATH is missing).
    """

    def parse_args(self, args=None, namespace=None):
        known = [o for action in self._actions for o in action.option_strings]
        for arg in args:
            if arg == "--":
                break
            name = arg.split("=", 1)[0]
            if not arg.startswith("-") or _is_number(arg) or name in known or arg[:2] in known:
                continue
            if not (arg.startswith("--") and [o for o in known if o.startswith(name)]):
                self.error("unrecognized arguments: %s" % arg)
        return argparse.ArgumentParser.parse_args(self, args, namespace)


def _is_number(arg):
    try:
        float(arg)
        return True
    except ValueError:
        return False


def _parser(prog, description, examples):
    """A command's parser: its description, then its options, then examples."""
    return _Parser(
        prog=prog, description=textwrap.fill(description, 78), formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + "".join("  %s\n" % e for e in examples))


CONFIG_HELP = "the server's tap.conf, read for data_dir (default: tap.conf)"
DATA_DIR_HELP = "the server's data directory, if it was given one on its command line " \
                "(default: data_dir of the config)"


def _check_parser():
    parser = _parser(
        "allworx check",
        "Check a tap.conf as the server would at its start: print every error with its "
        "section, key and line, and exit 1 if there is one; warn (without failing) of a file "
        "others may read and of voicemail PINs not yet hashed. On success print the host "
        "name, security mode and number of users, and exit 0.",
        ["allworx check /etc/allworx/tap.conf"])
    parser.add_argument("path", metavar="PATH", help="the config file to check")
    return parser


def check(argv, out=sys.stdout, err=sys.stderr):
    """
    `allworx check PATH`: print every error with section, key and line; and
    warnings that do not stop the server: a file others may read, PINs not
    yet hashed, the obsolete `[web] admin_password`.
    """
    from allworx.config import ConfigErrors, load_config
    args = _check_parser().parse_args(argv)
    for warning in mode_warnings(args.path):
        err.write("%s: warning: %s\n" % (args.path, warning))
    try:
        config = load_config(args.path)
    except ConfigErrors as e:
        err.write(e.report() + "\n")
        err.write("%d error(s)\n" % len(e.errors))
        return 1
    for warning in pin_warnings(config) + admin_warnings(config):
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


def admin_warnings(config):
    """A warning while the old admin login, `[web] admin_password`, is there."""
    if config.web.admin_password is None:
        return []
    if "admin" in config.users:
        then = ("[user admin] then gets admin = yes and keeps its own password, which "
                "becomes the admin login")
    else:
        then = "it becomes [user admin] with admin = yes and the same password"
    return ["[web] admin_password is obsolete: admins are users with admin = yes; the first "
            "change through the admin pages or API moves it (%s). To do it by hand: remove "
            "it and set admin = yes on a user." % then]


def _passwd_parser():
    parser = _parser(
        "allworx passwd",
        "Read a password and print its argon2 hash, the value of a user's `password` key "
        "in tap.conf. At a terminal it asks twice, without echo; otherwise it reads one line "
        "of standard input. Ctrl-D or Ctrl-C at the prompt cancels (exit 1).",
        ["allworx passwd",
         "allworx passwd --sip 101@example.com   # password and sip_digest lines for a phone",
         "allworx passwd --pin                   # a voicemail_pin line",
         "echo 's3cret words' | allworx passwd"])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--sip", metavar="EXT@DOMAIN",
                      help="print the `password` line and the `sip_digest` line a phone of "
                           "extension EXT in DOMAIN logs in with (default: the hash alone)")
    what.add_argument("--pin", action="store_true",
                      help="read a voicemail PIN (4 to 10 digits) and print its "
                           "`voicemail_pin` line instead")
    return parser


def passwd(argv, stdin=None, out=sys.stdout, err=sys.stderr):
    """
    `allworx passwd [--sip EXT@DOMAIN | --pin]`: read a password, print its
    hash for tap.conf; with --sip also the `sip_digest` line a phone's login
    needs; with --pin read a voicemail PIN and print its `voicemail_pin` line.
    """
    from allworx.config import check_value_text, parse_digits, parse_domain
    from allworx.passwords import hash_password, hash_pin, sip_digest
    args = _passwd_parser().parse_args(argv)
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
    """
    A password or PIN from the terminal (asked twice) or a line of stdin;
    None if refused or cancelled (Ctrl-D or Ctrl-C).
    """
    tty = stdin.isatty()
    try:
        if tty:
            first = getpass.getpass("%s: " % what)
            if getpass.getpass("Again: ") != first:
                err.write("allworx passwd: the two differ\n")
                return None
        else:
            first = stdin.readline().rstrip("\r\n")
    except (EOFError, KeyboardInterrupt):
        err.write("%sallworx passwd: cancelled\n" % ("\n" if tty else ""))
        return None
    if not first:
        err.write("allworx passwd: the %s is empty\n" % what.lower())
        return None
    return first


def _unlock_parser():
    parser = _parser(
        "allworx unlock",
        "End login lock-outs (every protocol's) in the running server: USER's (at SOURCE, "
        "or everywhere), or everything at --source ADDR; with neither, list the lock-outs "
        "in force. The request is left in the data directory; the server takes it within a "
        "second, or at its next start.",
        ["allworx unlock -c /etc/allworx/tap.conf             # list the lock-outs",
         "allworx unlock alice -c /etc/allworx/tap.conf",
         "allworx unlock alice 192.168.2.10 -c /etc/allworx/tap.conf",
         "allworx unlock --source 192.168.2.10 -c /etc/allworx/tap.conf"])
    parser.add_argument("user", nargs="?", metavar="USER",
                        help="a user name, extension or mail address")
    parser.add_argument("source", nargs="?", metavar="SOURCE",
                        help="the address the user is locked out at (default: every address)")
    parser.add_argument("--source", dest="source_option", metavar="ADDR",
                        help="the address to unlock (every user locked out there, with no USER)")
    parser.add_argument("-c", "--config", default="tap.conf", metavar="PATH", help=CONFIG_HELP)
    parser.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    parser.add_argument("--wait", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait for the running server to take the request "
                             "(default: 5)")
    return parser


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
    args = _unlock_parser().parse_args(argv)
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
        return "source %s (every login from it)" % entry["source"]
    return "%s at %s" % (entry["user"], entry["source"])


def _until(entry):
    return "locked until %s after %s failures" % (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry["until"])), entry["failures"])


def _vpn_parser():
    parser = _parser(
        "allworx vpn",
        "pubkey: print the server's WireGuard public key alone on one line, for the other "
        "site's `[site] public_key`. Asked before the server's first start with `[vpn] "
        "enabled = yes`, it makes the key the server will use; without [vpn] enabled it "
        "makes nothing and exits 1.",
        ["allworx vpn pubkey -c /etc/allworx/tap.conf"])
    parser.add_argument("what", choices=["pubkey"], metavar="pubkey",
                        help="the one action: print the public key")
    parser.add_argument("-c", "--config", default="tap.conf", metavar="PATH", help=CONFIG_HELP)
    parser.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    return parser


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
    args = _vpn_parser().parse_args(argv)
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


def _lab_helps():
    from allworx.lab import cli as labcli
    return labcli.helps()


COMMANDS = {"check": check, "passwd": passwd, "unlock": unlock, "vpn": vpn, "lab": lab}
PARSERS = {"check": _check_parser, "passwd": _passwd_parser, "unlock": _unlock_parser,
           "vpn": _vpn_parser}


def full_help():
    """`allworx --help`: every command, what it does, and each one's arguments and options."""
    width = max(len(name) for name, _ in SUMMARIES)
    parts = ["allworx %s: the small office's server, from the command line.\n\n%s\ncommands:\n%s\n"
             "options:\n  -h, --help  show this help and exit (also: allworx help [COMMAND])\n"
             "  --version   print the version and exit\n\n"
             "Each command in detail (also: allworx COMMAND --help):\n" % (
                 allworx.__version__, USAGE,
                 "".join("  %-*s  %s\n" % (width, name, text) for name, text in SUMMARIES))]
    for name in COMMANDS:
        helps = _lab_helps() if name == "lab" else [PARSERS[name]().format_help()]
        parts.append("\n".join(["-" * 60] + helps))
    return "\n".join(parts)


def unknown(word, err):
    """The error for a command that does not exist, with the nearest one if any is close."""
    what = "option" if word.startswith("-") else "command"
    close = difflib.get_close_matches(word.lstrip("-") if what == "option" else word,
                                      list(COMMANDS) + ["help"], n=1)
    if close and what == "command":
        err.write("allworx: unknown command %r (did you mean %r?)\n" % (word, close[0]))
    else:
        err.write("allworx: unknown %s %r\nrun 'allworx --help' for the commands and options\n"
                  % (what, word))
    return 2


def main(argv=None, out=None, err=None):
    argv = sys.argv[1:] if argv is None else argv
    out, err = out or sys.stdout, err or sys.stderr
    if not argv:
        err.write(USAGE + "run 'allworx --help' for what each command does\n")
        return 2
    first, rest = argv[0], argv[1:]
    if first in ("-h", "--help") or (first == "help" and not rest):
        out.write(full_help())
        return 0
    if first == "--version":
        out.write("allworx %s\n" % allworx.__version__)
        return 0
    if first == "help":
        first, rest = rest[0], rest[1:] + ["--help"]
    if first not in COMMANDS:
        return unknown(first, err)
    try:
        return COMMANDS[first](rest)
    except SystemExit as e:
        # argparse's answer to --help (0) or to a bad argument (2, with the
        # command and the argument named on stderr).
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 2


def entry():
    sys.exit(main())


if __name__ == "__main__":
    entry()
