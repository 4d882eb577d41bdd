# -*- test-case-name: allworx.tests.lab.test_fixtures -*-
"""
Fixtures of the namespace tests: a fresh lab per test, claimed so that test
processes running side by side each get their own; preconditions that fail
the test (a test that could not run has not passed); and the report of a
real client's run for assertion messages. The server run in a lab is
`allworx.tests.lab.server.LabServer`.
"""

import socket
import time

from allworx.lab.namespaces import Lab
from allworx.lab.processes import LabError, missing_programs, unavailable_reason
from allworx.lab.topology import LAB_PROGRAMS

# How much of a client's stdout and stderr an assertion message shows.
REPORT_LIMIT = 3000


def wait_until(testcase, predicate, what, timeout=30.0, context=lambda: "", interval=0.2):
    """
    Poll `predicate` (a real client, the admin API, a file) until it gives
    something true, which is returned; past `timeout` seconds fail
    `testcase` saying `what` did not happen, with `context()` (the server's
    log, a phone's) in the message. Polling a condition with a deadline, not
    sleeping a guessed time: the test goes on the moment it holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            testcase.fail("%s did not happen within %ss\n%s" % (what, timeout, context()))
        time.sleep(interval)


def require_programs(testcase, programs):
    """Fail `testcase` unless every program of `programs` is on PATH; the
    message names each missing one with its Debian package."""
    missing = missing_programs(programs)
    if missing:
        testcase.fail("this test needs " + ", ".join(missing))


def start_lab(testcase, prefix="awt", programs=(), factory=Lab, **kw):
    """
    Build a fresh lab for a trial test and tear it down in its cleanup.

    Fails the test, with the reason, when not root, when `ip netns` does not
    work, or when a program of `programs` (beyond the lab's own) is missing.
    `factory(prefix=..., **kw)` makes the Lab (a subclass may change its
    dnsmasq configuration). Test processes running side by side (`trial -j`)
    each get their own prefix: the first of `prefix`, `prefix`1, `prefix`2 ...
    that no other live process holds; whatever an earlier, crashed run left
    under it is removed first.
    """
    reason = unavailable_reason(LAB_PROGRAMS + tuple(programs))
    if reason:
        testcase.fail(reason)
    lab, claim = claim_lab(prefix, factory=factory, **kw)
    testcase.addCleanup(claim.close)
    lab.down()
    testcase.addCleanup(lab.down)
    lab.up()
    return lab


def claim_lab(prefix="awt", factory=Lab, **kw):
    """
    (Lab, claim) for the first free prefix of `prefix`, `prefix`1, ...: the
    claim is an abstract Unix socket bound to the prefix's name, so it is
    released when closed or when this process dies. Close it after down().
    """
    for n in range(100):
        candidate = prefix if n == 0 else "%s%d" % (prefix, n)
        claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            claim.bind("\0allworx-lab/" + candidate)
        except OSError:
            claim.close()
            continue
        return factory(prefix=candidate, **kw), claim
    raise LabError("no free lab prefix from %s to %s99" % (prefix, prefix))


def _tail(stream):
    if isinstance(stream, bytes):
        stream = stream.decode("utf-8", "replace")
    stream = (stream or "").rstrip()
    if len(stream) > REPORT_LIMIT:
        stream = "[...]" + stream[-REPORT_LIMIT:]
    return stream or "(nothing)"


def client_report(done):
    """
    What a client said, for an assertion's message: its command line, exit
    status, stdout and stderr (the last REPORT_LIMIT characters of each).
    `done` is a CompletedProcess, as `lab.run` returns it.
    """
    argv = done.args if isinstance(done.args, (list, tuple)) else [done.args]
    # `ip netns exec NS` is the lab's wrapper, not the client.
    if list(argv[:3]) == ["ip", "netns", "exec"]:
        argv = ["[%s]" % argv[3]] + list(argv[4:])
    command = " ".join(str(a) for a in argv)
    if len(command) > 300:
        command = command[:300] + "..."
    return "%s\nexit status %s\n--- stdout\n%s\n--- stderr\n%s" % (
        command, done.returncode, _tail(done.stdout), _tail(done.stderr))


def process_report(lab, name):
    """What a client the lab ran in the background (or dhclient) as `name`
    printed, for an assertion's message."""
    return "%s printed:\n%s" % (name, lab.log_text(name, REPORT_LIMIT) or "(nothing)")
