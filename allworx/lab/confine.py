# -*- test-case-name: allworx.tests.lab.test_confine -*-
"""
What `allworx lab exec` runs a command in, and how `allworx lab down` finds
every process of the lab.

A command run by hand in a lab host (`allworx lab exec pc1 dhclient -v eth0`)
is a client program of the host machine: left alone, it writes its pid file to
/run, its leases to /var/lib/dhcp and its hooks' files to /run, all shared
with the machine (and with every other lab host). `confined_argv` runs it in
the host's network namespace and, in the private mount namespace that
`ip netns exec` gives it, with directories of the lab's own over those:

    /run            STATE/hosts/HOST/run (the lab's state directory, the
                    namespaces' files and the resolver file of the host
                    namespace are bound into it again, so paths the banner
                    shows keep working)
    /var/lib/dhcp   STATE/hosts/HOST/var/lib/dhcp (where present on the machine)

Nothing is mounted in the machine's own mount namespace (ip netns exec makes
the command's mounts slaves: none propagate back), and `down()` removes the
directories with the rest of the state.

A daemon that such a command leaves behind (dhclient forks into the
background) runs in the lab host's network namespace: `namespace_pids` finds
every process whose /proc/PID/ns/net is one of the lab's namespaces, which is
how `down()` ends it, by PID, never by a name pattern.
"""

import os
import shlex
import signal
import time

# The machine's directories a command in a lab host gets its own copy of
# (each but /run only where the machine has it: a mount point must exist).
PRIVATE_DIRS = ("/run", "/var/lib/dhcp")
RESOLV_CONF = "/etc/resolv.conf"


def host_root(state_dir, host):
    """The directory of a lab host's own files (STATE/hosts/HOST)."""
    return os.path.join(state_dir, "hosts", host)


def _bind_back(run_dir, path):
    """Where `path` (a directory under /run) is bound in the host's own /run, or None."""
    if path == "/run" or not path.startswith("/run/"):
        return None
    return os.path.join(run_dir, os.path.relpath(path, "/run"))


def prepare(state_dir, host, ns, keep=(), exists=os.path.exists, realpath=os.path.realpath,
            makedirs=None):
    """
    Make the lab host's directories and return the shell script that
    mounts them and execs its arguments. `keep` are directories under /run
    that stay visible inside (the lab's state root, /run/netns).
    """
    makedirs = makedirs or (lambda path: os.makedirs(path, mode=0o755, exist_ok=True))
    root = host_root(state_dir, host)
    run_dir = root + "/run"
    lines = ["set -e"]
    makedirs(run_dir)
    for path in keep:
        inside = _bind_back(run_dir, path)
        if inside is not None and exists(path):
            makedirs(inside)
            lines.append("mount --rbind %s %s" % (shlex.quote(path), shlex.quote(inside)))
    # The resolver file `ip netns exec` bound (over /etc/resolv.conf, or over
    # the file in /run that a symlinked /etc/resolv.conf names) is bound again.
    resolver = realpath(RESOLV_CONF)
    netns_resolver = "/etc/netns/%s/resolv.conf" % ns
    rebind = None
    inside = _bind_back(run_dir, resolver)
    if inside is not None and exists(netns_resolver):
        makedirs(os.path.dirname(inside))
        if not exists(inside):
            open(inside, "a").close()
        rebind = "mount --bind %s %s" % (shlex.quote(netns_resolver), shlex.quote(resolver))
    lines.append("mount --rbind %s /run" % shlex.quote(run_dir))
    if rebind:
        lines.append(rebind)
    for path in PRIVATE_DIRS[1:]:
        if exists(path):
            own = root + path
            makedirs(own)
            lines.append("mount --bind %s %s" % (shlex.quote(own), shlex.quote(path)))
    lines.append('exec "$@"')
    return "\n".join(lines)


def confined_argv(state_dir, state_root, host, ns, command):
    """The argv that runs `command` in lab host `host` (namespace `ns`) with
    its own /run and /var/lib/dhcp (see the module docstring)."""
    script = prepare(state_dir, host, ns, keep=(state_root, "/run/netns"))
    return (["ip", "netns", "exec", ns, "sh", "-c", script, "allworx-lab-exec"]
            + [str(a) for a in command])


def namespace_inodes(ns_names, netns_dir="/run/netns"):
    """{(st_dev, st_ino)} of the named network namespaces that exist."""
    found = set()
    for name in ns_names:
        try:
            st = os.stat(os.path.join(netns_dir, name))
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


def namespace_pids(inodes, proc="/proc", me=None):
    """The PIDs of every process whose network namespace is one of `inodes`."""
    me = os.getpid() if me is None else me
    pids = []
    if not inodes:
        return pids
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(os.path.join(proc, entry, "ns", "net"))
            with open(os.path.join(proc, entry, "stat"), "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if (st.st_dev, st.st_ino) in inodes and state != b"Z":
            pids.append(int(entry))
    return sorted(pids)


def end_processes(find, timeout=3.0, sleep=time.sleep, clock=time.monotonic, kill=os.kill):
    """
    End the processes `find()` returns: SIGTERM, then SIGKILL to those still
    there after `timeout`. Returns the PIDs that outlived both (normally none).
    """
    pids = find()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = clock() + timeout
        while pids and clock() < deadline:
            sleep(0.05)
            pids = [pid for pid in find() if pid in pids]
        if not pids:
            return []
    return pids
