# -*- test-case-name: allworx.tests.lab.test_namespaces -*-
"""
How the lab runs things: commands in its namespaces, and the processes it
starts and keeps track of.

Every process the lab starts has a pid file in STATE/pids/NAME.pid with its
PID, its start time (so a recycled PID is never taken for it), its host and
its command line; its output goes to STATE/logs/NAME.log. `LabRunner` has the
names, the commands and the process table of a lab, without any of its hosts;
`peers.LabPeers` and `namespaces.Lab` build on it.
"""

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time

import attr

from allworx.lab.maildir import write_atomically
from allworx.lab.topology import (
    DEFAULT_PREFIX,
    HOSTS,
    LAB_PROGRAMS,
    PACKAGES,
    STATE_ROOT,
)

NOT_ROOT = "allworx lab needs root: it creates network namespaces"


class LabError(Exception):
    """The lab cannot do what was asked; the message says why and what to do."""


class LabCommandError(LabError, subprocess.CalledProcessError):
    """A command run in the lab failed; its output is part of the message."""

    def __str__(self):
        text = subprocess.CalledProcessError.__str__(self)
        for stream in (self.stdout, self.stderr):
            if stream:
                if isinstance(stream, bytes):
                    stream = stream.decode("utf-8", "replace")
                text += "\n" + stream.strip()
        return text


def is_root():
    return os.geteuid() == 0


def require_root():
    """Raise LabError if this process cannot create network namespaces."""
    if not is_root():
        raise LabError(NOT_ROOT)


def missing_programs(programs):
    """The programs of `programs` not on PATH, each with its Debian package."""
    return ["%s (Debian package %s)" % (p, PACKAGES.get(p, "?"))
            for p in programs if shutil.which(p) is None]


def unavailable_reason(programs=LAB_PROGRAMS):
    """Why a lab cannot be built here (a sentence), or None if it can."""
    if not is_root():
        return NOT_ROOT
    missing = missing_programs(programs)
    if missing:
        return "allworx lab needs " + ", ".join(missing)
    try:
        subprocess.run(["ip", "netns", "list"], check=True, timeout=10,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (subprocess.SubprocessError, OSError) as e:
        return "`ip netns` does not work here: %s" % (e,)
    return None


def _valid_prefix(instance, attribute, value):
    # Short and plain: it names namespaces and directories.
    if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", value):
        raise ValueError("lab prefix must be 1-8 lower-case letters or digits, "
                         "starting with a letter: %r" % (value,))


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def _proc_stat(pid):
    """(state, start time in clock ticks) of a process, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


@attr.s(frozen=True)
class LabProcess:
    """
    A process the lab started, as its pid file records it.

    The start time guards against a recycled PID: a process is only ours
    (alive, or to be killed) if its start time is the one recorded.
    """

    name = attr.ib()
    pid = attr.ib()
    started = attr.ib()
    host = attr.ib()
    command = attr.ib(default="")

    def alive(self):
        stat = _proc_stat(self.pid)
        return stat is not None and stat[1] == self.started and stat[0] != "Z"

    def format(self):
        return "%d\nstart=%d\nhost=%s\ncmd=%s\n" % (
            self.pid, self.started, self.host or "", " ".join(self.command.split()))

    @classmethod
    def parse(cls, name, text):
        lines = text.splitlines()
        fields = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
        return cls(name=name, pid=int(lines[0]), started=int(fields.get("start", -1)),
                   host=fields.get("host") or None, command=fields.get("cmd", ""))


@attr.s
class LabRunner:
    """
    The commands and processes of one lab, named by `prefix`, with its state
    under `state_root`/`prefix`. Every method that touches the system needs root.
    """

    prefix = attr.ib(default=DEFAULT_PREFIX, validator=_valid_prefix)
    state_root = attr.ib(default=STATE_ROOT)
    _children = attr.ib(factory=dict, init=False, repr=False)

    # ------------------------------------------------------------ names

    @property
    def state_dir(self):
        return os.path.join(self.state_root, self.prefix)

    def ns(self, host):
        """The namespace name of a lab host, e.g. `awx-pc1`."""
        if host not in HOSTS:
            raise LabError("no lab host %r; the hosts are %s"
                           % (host, ", ".join(HOSTS)))
        return "%s-%s" % (self.prefix, host)

    def _path(self, *parts):
        return os.path.join(self.state_dir, *parts)

    # ------------------------------------------------------------ commands
    # Every external command goes through _command; `ip` through _ip.

    def _command(self, argv, check=True, timeout=30, capture=True, text=True,
                 input=None, **kw):
        if capture:
            kw.setdefault("stdout", subprocess.PIPE)
            kw.setdefault("stderr", subprocess.PIPE)
        try:
            done = subprocess.run(argv, timeout=timeout, text=text, input=input,
                                  **kw)
        except FileNotFoundError:
            raise LabError("cannot run %s: %s"
                           % (argv[0], ", ".join(missing_programs([argv[0]]))
                              or "not found"))
        if check and done.returncode != 0:
            raise LabCommandError(done.returncode, argv, done.stdout, done.stderr)
        return done

    def _ip(self, host, *args, check=True):
        """Run `ip` in a host's namespace (`host` None: the host namespace)."""
        argv = ["ip"] + (["-n", self.ns(host)] if host else []) + list(args)
        return self._command(argv, check=check)

    def _ip_json(self, host, *args):
        out = self._ip(host, "-j", *args, check=False)
        if out.returncode != 0 or not out.stdout.strip():
            return []
        return json.loads(out.stdout)

    def _in_ns(self, host, argv):
        return ["ip", "netns", "exec", self.ns(host)] + [str(a) for a in argv]

    def _netns_list(self):
        out = self._command(["ip", "netns", "list"])
        return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}

    def _sysctl(self, host, *settings):
        self._command(self._in_ns(host, ["sysctl", "-q", "-w", *settings]))

    # ------------------------------------------------------------ running things

    def run(self, host, argv, check=True, timeout=30, input=None, text=True,
            capture=True, **kw):
        """
        Run a command in a lab host and wait for it: a CompletedProcess with
        its output (str unless `text` is False). Raises LabCommandError on a
        non-zero exit if `check`, subprocess.TimeoutExpired after `timeout`.
        """
        return self._command(self._in_ns(host, argv), check=check, timeout=timeout,
                             input=input, text=text, capture=capture, **kw)

    def popen(self, host, argv, name=None, **kw):
        """
        Start a background process in a lab host; `down()` (or `stop(proc)`)
        kills it by PID. Its output goes to logs/NAME.log unless `stdout` or
        `stderr` are given. Returns the Popen.
        """
        name = name or "%s-%s" % (host, os.path.basename(str(argv[0])))
        if self._alive(name) is not None:
            name = "%s-%d" % (name, time.monotonic_ns())
        return self._spawn(name, host, argv, **kw)

    def _spawn(self, name, host, argv, **kw):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise LabError("bad process name %r" % (name,))
        argv = [str(a) for a in argv]
        full = self._in_ns(host, argv) if host else argv
        log_path = self._path("logs", name + ".log")
        with open(log_path, "ab") as log_file:
            kw.setdefault("stdin", subprocess.DEVNULL)
            kw.setdefault("stdout", log_file)
            kw.setdefault("stderr", subprocess.STDOUT)
            # Its own session: a signal to its process group reaches every
            # child it forks, and nothing from our terminal reaches it.
            proc = subprocess.Popen(full, start_new_session=True, **kw)
        self._record(name, proc.pid, host, " ".join(argv))
        self._children[proc.pid] = proc
        proc.lab_name = name
        return proc

    def _record(self, name, pid, host, command):
        stat = _proc_stat(pid)
        record = LabProcess(name, pid, stat[1] if stat else -1, host, command)
        write_atomically(self._path("pids", name + ".pid"), record.format().encode())
        return record

    def log_text(self, name, limit=3000):
        """The end (`limit` characters) of what the process the lab ran as
        `name` printed, stdout and stderr (its logs/NAME.log); "" if nothing."""
        try:
            text = read_file(self._path("logs", name + ".log")).decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return text[-limit:]

    def processes(self):
        """The processes the lab started (LabProcess), alive or not."""
        try:
            names = sorted(os.listdir(self._path("pids")))
        except FileNotFoundError:
            return []
        found = []
        for filename in names:
            if filename.endswith(".pid"):
                try:
                    found.append(LabProcess.parse(filename[:-4],
                                                  read_file(self._path("pids", filename)).decode()))
                except (ValueError, IndexError, FileNotFoundError):
                    continue
        return found

    def _alive(self, name):
        for proc in self.processes():
            if proc.name == name and proc.alive():
                return proc
        return None

    def _in_place(self, proc):
        """Whether a process is in its host's current namespace (not in one
        that was deleted and rebuilt under the same name)."""
        if proc.host is None:
            return True
        try:
            return (os.stat("/proc/%d/ns/net" % proc.pid).st_ino
                    == os.stat(os.path.join("/run/netns", self.ns(proc.host))).st_ino)
        except OSError:
            return False

    def _ensure_running(self, name):
        """The live, in-place process `name`, or None after clearing a stray one."""
        proc = self._alive(name)
        if proc is not None and self._in_place(proc):
            return proc
        self._stop_named(name)
        return None

    def stop(self, proc, timeout=5.0):
        """Stop a process the lab started: a Popen, a LabProcess or its name."""
        if isinstance(proc, str):
            name = proc
        elif isinstance(proc, LabProcess):
            name = proc.name
        else:
            name = getattr(proc, "lab_name", None)
            if name is None:
                raise LabError("not a process the lab started: %r" % (proc,))
        self._stop_named(name, timeout)

    def _stop_named(self, name, timeout=5.0):
        for record in self.processes():
            if record.name == name:
                self._kill(record, timeout)
                os.unlink(self._path("pids", record.name + ".pid"))

    def _kill(self, record, timeout):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not record.alive():
                break
            try:
                if os.getpgid(record.pid) == record.pid:
                    os.killpg(record.pid, sig)
                else:
                    os.kill(record.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while record.alive() and time.monotonic() < deadline:
                self._reap(record.pid)
                time.sleep(0.02)
        self._reap(record.pid)

    def _reap(self, pid):
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            del self._children[pid]

    def wait_listening(self, host, ports, proc=None, timeout=20):
        """
        Wait until lab host `host` (None: the host namespace) listens on
        every (proto, port) of `ports`, proto "tcp" or "udp". Raises
        LabError, with the process's log if `proc` (a Popen of `popen`) is
        given, once `timeout` has passed or `proc` has exited.
        """
        wanted = set(ports)
        deadline = time.monotonic() + timeout
        while True:
            argv = ["ss", "-Hlntu"]
            out = self._command(self._in_ns(host, argv) if host else argv)
            listening = set()
            for line in out.stdout.splitlines():
                fields = line.split()
                if len(fields) >= 5:
                    listening.add((fields[0], int(fields[4].rsplit(":", 1)[1])))
            if wanted <= listening:
                return
            exited = proc is not None and proc.poll() is not None
            if exited or time.monotonic() > deadline:
                where = host or "the host namespace"
                missing = sorted(wanted - listening)
                if proc is None:
                    raise LabError("nothing listens on %s in %s after %ss"
                                   % (missing, where, timeout))
                log = self._path("logs", proc.lab_name + ".log")
                tail = read_file(log).decode("utf-8", "replace")[-2000:] if os.path.exists(log) else ""
                raise LabError("%s in %s did not start (%s); missing %s; its log %s:\n%s"
                               % (proc.lab_name, where,
                                  "exited %s" % proc.returncode if exited else "timed out",
                                  missing, log, tail))
            time.sleep(0.05)

    def forward_port(self, local_port, host, remote_ip, remote_port):
        """
        Relay 127.0.0.1:`local_port` of the host machine to `remote_ip`:
        `remote_port` as seen from lab host `host` (socat, one connection per
        fork). E.g. forward_port(8080, "admin", "192.168.2.254", 8080) shows
        the admin pages to the machine's browser. Returns the LabProcess.
        """
        name = "forward-%d" % local_port
        running = self._alive(name)
        if running is not None:
            return running
        self._stop_named(name)
        ipaddress.IPv4Address(remote_ip)
        missing = missing_programs(["socat"])
        if missing:
            raise LabError("forward_port needs " + ", ".join(missing))
        target = "ip netns exec %s socat STDIO TCP\\:%s\\:%d" % (
            self.ns(host), remote_ip, remote_port)
        proc = self._spawn(name, None, [
            "socat", "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % local_port,
            "EXEC:" + target])
        self.wait_listening(None, [("tcp", local_port)], proc, timeout=5)
        return self._alive(name)
