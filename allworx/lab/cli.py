# -*- test-case-name: allworx.tests.lab.test_namespaces -*-
"""
`allworx lab up|down|status|exec HOST CMD...|call PHONE NUMBER`: the virtual office from the
command line (`allworx.cli` hands it everything after `lab`). A command of
`exec` runs with the lab host's own /run and /var/lib/dhcp
(`allworx.lab.confine`); `call` drives a lab phone (`allworx.lab.labphones`).
"""

import argparse
import signal
import subprocess
import sys
import textwrap
import time

from allworx.lab.labphones import (
    CTRL_PORT,
    LAB_PHONES,
    PhoneControl,
    describe_heard,
    finished_heard,
    phone_directory,
    place_call,
    process_name,
    recordings,
)
from allworx.lab.namespaces import Lab
from allworx.lab.processes import LabError, require_root
from allworx.lab.topology import DEFAULT_PREFIX, HOSTS, SERVER_LAN_IP, STATE_ROOT


EXAMPLES = {
    None: ["allworx lab up", "allworx lab status", "allworx lab exec pc1 dhclient -v eth0",
           "allworx lab down"],
    "up": ["allworx lab up", "allworx lab up --wan-lease 600 --forward-admin 8080"],
    "down": ["allworx lab down", "allworx lab down --prefix awt"],
    "status": ["allworx lab status"],
    "exec": ["allworx lab exec pc1 dhclient -v eth0", "allworx lab exec phone1 ip addr"],
    "call": ["allworx lab call phone1 102", "allworx lab call phone2 400 --hold 20"],
}


def _epilog(action):
    return "examples:\n" + "".join("  %s\n" % e for e in EXAMPLES[action])


def _parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", default=argparse.SUPPRESS, metavar="P",
                        help="namespace name prefix (default: %s)" % DEFAULT_PREFIX)
    common.add_argument("--state-root", default=argparse.SUPPRESS, metavar="DIR",
                        help="state directory root (default: %s)" % STATE_ROOT)
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="allworx lab", parents=[common], formatter_class=raw, epilog=_epilog(None),
        description=textwrap.fill(
            "The virtual office: network namespaces with the allworx server's LAN, WAN, "
            "ISP and internet. Needs root. Each action's options: allworx lab ACTION --help.", 78))
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    parser.actions = {}

    def action(name, text):
        parser.actions[name] = sub.add_parser(
            name, parents=[common], help=text, description=textwrap.fill(text, 78), formatter_class=raw,
            epilog=_epilog(name))
        return parser.actions[name]

    up = action("up", "build (or repair) the lab; prints its status")
    up.add_argument("--wan-lease", type=int, default=120, metavar="SECONDS",
                    help="lease time of the ISP's DHCP server (default: 120)")
    up.add_argument("--forward-admin", type=int, metavar="PORT",
                    help="relay 127.0.0.1:PORT to the admin pages, %s:8080 (default: none)"
                         % SERVER_LAN_IP)
    action("down", "remove the lab")
    action("status", "show namespaces, addresses and processes (exit 0 if the lab is whole, "
                     "1 with its problems listed)")
    ex = action("exec", "run a command in a lab host: exec HOST CMD... (exits with its status); "
                        "it has the host's own /run and /var/lib/dhcp, kept in the lab's state, "
                        "and `allworx lab down` ends whatever it leaves running")
    ex.add_argument("host", choices=HOSTS, metavar="HOST",
                    help="one of " + ", ".join(HOSTS))
    ex.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD",
                    help="the command and its arguments")
    call = action("call", "have a lab phone (its baresip, registered with the server as a lab "
                          "user's extension) dial NUMBER and print the call's progress; it hangs "
                          "up after --hold seconds and says what it heard (exit 0 if the call was "
                          "answered and sound came back, 1 if not, 2 if the phone is not "
                          "there)")
    call.add_argument("host", choices=sorted(LAB_PHONES), metavar="PHONE",
                      help="one of " + ", ".join(sorted(LAB_PHONES)))
    call.add_argument("number", metavar="NUMBER",
                      help="what to dial: an extension, a group, 400 for voicemail ...")
    call.add_argument("--hold", type=float, default=10.0, metavar="SECONDS",
                      help="how long the call stays up once answered (default: 10)")
    call.add_argument("--answer-timeout", type=float, default=40.0, metavar="SECONDS",
                      help="how long to wait for an answer (default: 40)")
    return parser


def helps():
    """The help of `allworx lab` and of each of its actions, for `allworx --help`."""
    parser = _parser()
    return [parser.format_help()] + [p.format_help() for p in parser.actions.values()]


def main(argv=None):
    """`allworx lab up|down|status|exec HOST CMD...|call PHONE NUMBER`; `argv` follows `lab`."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        require_root()
        kw = {"prefix": getattr(args, "prefix", DEFAULT_PREFIX),
              "state_root": getattr(args, "state_root", STATE_ROOT)}
        if args.action == "up":
            kw["wan_lease_seconds"] = args.wan_lease
        try:
            lab = Lab(**kw)
        except ValueError as e:
            raise LabError(str(e))
        if args.action == "up":
            lab.up()
            if args.forward_admin:
                lab.forward_port(args.forward_admin, "admin", SERVER_LAN_IP, 8080)
            print(lab.status())
            return 0
        if args.action == "down":
            for warning in lab.down():
                print("warning: " + warning, file=sys.stderr)
            return 0
        if args.action == "status":
            print(lab.status())
            problems = lab.problems()
            for problem in problems:
                print("problem: " + problem)
            return 1 if problems else 0
        if args.action == "call":
            return _call(lab, args)
        return _exec(lab, args.host, args.command)
    except LabError as e:
        print("allworx lab: %s" % (e,), file=sys.stderr)
        return 2


def _call(lab, args):
    record = lab._alive(process_name(args.host))
    if record is None:
        raise LabError("no phone runs in %s: `make run` starts the lab's phones"
                       % lab.ns(args.host))
    try:
        control = PhoneControl.connect(lab.ns(args.host))
    except OSError as e:
        raise LabError("cannot reach %s's phone (ctrl_tcp 127.0.0.1:%d): %s"
                       % (args.host, CTRL_PORT, e))
    def say(text):
        print("%s: %s" % (args.host, text), flush=True)
    directory = phone_directory(lab, args.host)
    before = recordings(directory)
    try:
        code = place_call(control, args.number, hold=args.hold,
                          answer_timeout=args.answer_timeout, say=say)
    except OSError as e:
        raise LabError("%s's phone: %s" % (args.host, e))
    finally:
        control.close()
    if code != 0:
        return code
    # baresip closes the call's recording as the call ends; a moment at most.
    deadline = time.monotonic() + 3
    heard = finished_heard(directory, before)
    while heard is None and time.monotonic() < deadline:
        time.sleep(0.1)
        heard = finished_heard(directory, before)
    sentence, sound = describe_heard(*(heard or ([], 0)), own_tone=LAB_PHONES[args.host].tone)
    say(sentence)
    return 0 if sound else 1


def _exec(lab, host, command):
    if not command:
        raise LabError("exec needs a command: allworx lab exec HOST CMD...")
    if lab.ns(host) not in lab._netns_list():
        raise LabError("namespace %s does not exist: run `allworx lab up` first"
                       % lab.ns(host))
    proc = None

    def relay(signum, frame):
        if proc is not None and signum != signal.SIGINT:
            proc.send_signal(signum)

    # Ctrl-C reaches the command from the terminal and is the command's to
    # handle; a SIGTERM or SIGHUP sent to us is passed on to it. (Handled,
    # not ignored: the command starts with the default dispositions.)
    relayed = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, relay) for signum in relayed}
    try:
        proc = subprocess.Popen(lab.exec_argv(host, command))
        code = proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
