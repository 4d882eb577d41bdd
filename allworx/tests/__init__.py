"""
The tests (trial). `make test` and `make unit` run the hypothesis tests with
the "ci" profile: derandomized, so a run of the same code always tries the
same examples and main stays green or red for a reason; run them with
HYPOTHESIS_PROFILE=explore (random examples, kept in .hypothesis/) to look for
new failures, and keep what they find as @example. Both profiles run without
the time limits (deadline, the too-slow health check): on a loaded 2-core CI
machine they failed tests for the machine's speed, not the code's.
"""

import os

from hypothesis import HealthCheck, settings

_UNTIMED = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", derandomize=True, database=None, **_UNTIMED)
settings.register_profile("explore", **_UNTIMED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "explore"))


def _record_worker_exit():
    """
    In a worker of `trial -j`, leave a note of how the worker ended in its
    own directory (_trial_temp/N/worker-exit.log): a fatal signal's stacks
    (faulthandler), an uncaught exception's traceback, and a line at exit.
    A worker was once seen ending with status 1 and nothing in err.log.
    """
    import atexit
    import faulthandler
    import sys
    import time
    import traceback

    if not sys.argv or not sys.argv[0].endswith("workertrial.py"):
        return
    log = open(os.path.abspath("worker-exit.log"), "a", buffering=1)
    faulthandler.enable(log, all_threads=True)
    previous = sys.excepthook

    def excepthook(kind, value, tb):
        log.write("%s pid %d: uncaught exception\n" % (time.strftime("%H:%M:%S"), os.getpid()))
        traceback.print_exception(kind, value, tb, file=log)
        previous(kind, value, tb)
    sys.excepthook = excepthook
    atexit.register(lambda: log.write("%s pid %d: exiting\n"
                                      % (time.strftime("%H:%M:%S"), os.getpid())))


_record_worker_exit()
