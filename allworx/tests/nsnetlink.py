"""
A pyroute2 IPRoute whose netlink socket lives in a named network namespace,
made without forking the test process.

pyroute2's own `IPRoute(netns=NAME)` forks a copy of the process to open the
socket in the namespace. A trial worker that forks carries its AMP pipes and
unflushed buffers into the copy, and a worker of `trial -j` was seen dying
(exit 1, no traceback) right after such a test. Here the calling thread
enters the namespace with setns(2) (a thread's own network namespace), the
socket is made and bound there, and the thread returns to where it was. The
socket stays in the namespace it was made in.
"""

import ctypes
import os

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "setns: %s" % os.strerror(errno))


def in_netns(name, make):
    """Call `make()` with this thread in network namespace `name` (as `ip
    netns` names it) and return its result; the thread is back in its own
    namespace afterwards, whatever `make` did."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join("/run/netns", name), os.O_RDONLY)
        try:
            _setns(target)
            try:
                return make()
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def iproute_in(name):
    """An IPRoute talking to namespace `name`'s kernel tables."""
    from pyroute2 import IPRoute

    def make():
        ipr = IPRoute()
        ipr.get_links()     # the socket is set up now, inside the namespace
        return ipr
    return in_netns(name, make)
