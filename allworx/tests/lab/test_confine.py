"""
Tests for allworx.lab.confine: `allworx lab exec` keeps a client's files in
the lab, and `allworx lab down` ends what it left running.

`ConfineTests` run anywhere; `LabExecTests` build a real lab (needs root).
"""

import os
import signal
import subprocess
import sys

from twisted.trial import unittest

from allworx.lab import cli, confine
from allworx.tests.lab.fixtures import require_programs, start_lab, wait_until


class ConfineTests(unittest.TestCase):
    """The mount script and the search for the lab's processes, without root."""

    def setUp(self):
        self.state = self.mktemp()
        os.makedirs(self.state)

    def script(self, resolver="/etc/resolv.conf", machine=("/var/lib/dhcp", "/run/netns")):
        made = []
        there = set(machine) | {"/etc/netns/awx-pc1/resolv.conf"}
        script = confine.prepare(
            self.state, "pc1", "awx-pc1", keep=("/run/allworx-lab", "/run/netns"),
            exists=lambda p: p in there or os.path.exists(p) and p.startswith(self.state),
            realpath=lambda p: resolver, makedirs=lambda p: (made.append(p),
                                                               os.makedirs(p, exist_ok=True)))
        return script, made

    def test_run_and_dhcp_are_the_hosts_own(self):
        script, made = self.script()
        root = os.path.join(self.state, "hosts", "pc1")
        lines = script.splitlines()
        self.assertEqual(lines[0], "set -e")
        self.assertEqual(lines[-1], 'exec "$@"')
        # The lab's state root is absent here, so only /run/netns is bound back.
        self.assertIn("mount --rbind /run/netns %s/run/netns" % root, lines)
        self.assertIn("mount --rbind %s/run /run" % root, lines)
        self.assertIn("mount --bind %s/var/lib/dhcp /var/lib/dhcp" % root, lines)
        self.assertLess(lines.index("mount --rbind /run/netns %s/run/netns" % root),
                        lines.index("mount --rbind %s/run /run" % root))
        self.assertIn(root + "/var/lib/dhcp", made)
        self.assertNotIn("/etc/netns", script)

    def test_resolver_in_run_is_bound_again(self):
        resolver = "/run/systemd/resolve/stub-resolv.conf"
        script, made = self.script(resolver=resolver)
        lines = script.splitlines()
        rebind = "mount --bind /etc/netns/awx-pc1/resolv.conf " + resolver
        self.assertEqual(lines.index(rebind), lines.index(
            "mount --rbind %s/hosts/pc1/run /run" % self.state) + 1)
        self.assertTrue(os.path.exists(os.path.join(
            self.state, "hosts", "pc1", "run", "systemd", "resolve", "stub-resolv.conf")))

    def test_no_dhcp_directory_on_the_machine(self):
        script, made = self.script(machine=())
        self.assertNotIn("/var/lib/dhcp", script)

    def test_argv(self):
        argv = confine.confined_argv(self.state, "/run/allworx-lab", "pc1", "awx-pc1",
                                     ["dhclient", "-v", "eth0"])
        self.assertEqual(argv[:5], ["ip", "netns", "exec", "awx-pc1", "sh"])
        self.assertEqual(argv[-4:], ["allworx-lab-exec", "dhclient", "-v", "eth0"])
        # The script execs its arguments as given: no word is re-split by the shell.
        done = subprocess.run(["sh", "-c", 'exec "$@"', "x", "printf", "%s|", "a b", "c"],
                              stdout=subprocess.PIPE, text=True)
        self.assertEqual(done.stdout, "a b|c|")

    def test_namespace_pids_finds_by_inode(self):
        me = os.stat("/proc/self/ns/net")
        mine = confine.namespace_pids({(me.st_dev, me.st_ino)}, me=-1)
        self.assertIn(os.getpid(), mine)
        self.assertNotIn(os.getpid(), confine.namespace_pids({(me.st_dev, me.st_ino)}))
        self.assertEqual(confine.namespace_pids({(me.st_dev, me.st_ino + 10 ** 9)}), [])
        self.assertEqual(confine.namespace_pids(set()), [])

    def test_namespace_inodes_skips_missing(self):
        self.assertEqual(confine.namespace_inodes(["no-such-ns"], netns_dir=self.state), set())

    def test_end_processes_terms_then_kills(self):
        alive = {10, 11}
        sent = []
        now = [0.0]

        def kill(pid, sig):
            sent.append((pid, sig))
            if sig == signal.SIGKILL or pid == 10:
                alive.discard(pid)

        def sleep(seconds):
            now[0] += seconds

        left = confine.end_processes(lambda: sorted(alive), timeout=1.0, sleep=sleep,
                                     clock=lambda: now[0], kill=kill)
        self.assertEqual(left, [])
        self.assertEqual(sent, [(10, signal.SIGTERM), (11, signal.SIGTERM),
                                (11, signal.SIGKILL)])

    def test_end_processes_with_none(self):
        self.assertEqual(confine.end_processes(lambda: [], kill=lambda *a: self.fail(a)), [])


def _snapshot(directory):
    """{name: (size, mtime)} of the files directly in `directory`."""
    found = {}
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        st = os.lstat(os.path.join(directory, name))
        found[name] = (st.st_size, st.st_mtime_ns)
    return found


class LabExecTests(unittest.TestCase):
    """A real lab: the README's `lab exec ... dhclient -v` example, then `lab down`."""

    def setUp(self):
        require_programs(self, ["dhclient"])
        self.lab = start_lab(self, prefix="awe")

    def test_dhclient_files_stay_in_the_lab_and_down_ends_it(self):
        lab = self.lab
        before = {d: _snapshot(d) for d in ("/run", "/var/lib/dhcp")}
        log = os.path.join(self.mktemp())
        with open(log, "w") as err:
            code = subprocess.run(
                [sys.executable, "-m", "allworx.cli", "lab", "exec", "--prefix", lab.prefix,
                 "server", "dhclient", "-v", "wan0"], stdout=err, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, timeout=60).returncode
        with open(log) as f:
            said = f.read()
        self.assertEqual(code, 0, said)
        root = confine.host_root(lab.state_dir, "server")
        pid_file = os.path.join(root, "run", "dhclient.pid")
        wait_until(self, lambda: os.path.exists(pid_file), pid_file, 10,
                   lambda: "in the host's run: %s\n%s"
                   % (sorted(os.listdir(os.path.join(root, "run"))), said), interval=0.05)
        with open(pid_file) as f:
            daemon = int(f.read().split()[0])
        leases = os.path.join(root, "var", "lib", "dhcp", "dhclient.leases")
        self.assertTrue(os.path.exists(leases), said)
        with open(leases) as f:
            self.assertIn("203.0.113.", f.read())
        # Nothing of dhclient's on the machine's own /run and /var/lib/dhcp.
        for directory, files in before.items():
            now = _snapshot(directory)
            made = sorted(n for n in now if "dhclient" in n or "dhcp" in n
                          if now[n] != files.get(n))
            self.assertEqual(made, [], directory)
        self.assertTrue(os.path.exists("/proc/%d" % daemon), said)
        inodes = confine.namespace_inodes([lab.ns("server")])
        self.assertIn(daemon, confine.namespace_pids(inodes))

        # `allworx lab down` ends it, with no warning.
        self.assertEqual(cli.main(["down", "--prefix", lab.prefix]), 0)
        wait_until(self, lambda: _ended(daemon), "dhclient %d ended by lab down" % daemon, 5,
                   interval=0.05)
        self.assertFalse(os.path.exists(lab.state_dir))


def _ended(pid):
    """True once `pid` is gone or a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
