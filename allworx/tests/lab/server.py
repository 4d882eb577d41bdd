"""
The real server (`twistd -n allworx`) run in a lab's server namespace, for
integration tests: start it with a tap.conf, wait until it is ready, stop it
gracefully or with kill -9, read its log.
"""

import os
import signal
import sys
import time

from allworx.lab.namespaces import LabError

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
READY = "allworx ready:"


class LabServer:
    """One allworx process in `lab`'s server namespace."""

    def __init__(self, lab, conf_text, name="allworx", data_dir=None):
        self.lab = lab
        self.name = name
        self.dir = os.path.join(lab.state_dir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.conf_path = os.path.join(self.dir, "tap.conf")
        self.data_dir = data_dir or os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "twistd.log")
        self.write_conf(conf_text)
        self.proc = None
        self._log_offset = 0

    def write_conf(self, text):
        with open(self.conf_path, "w") as f:
            f.write(text)

    def start(self, timeout=30.0):
        """Start the server and wait for its ready line; returns the log so far."""
        if self.proc is not None and self.proc.poll() is None:
            raise LabError("server %s already running" % self.name)
        self._log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "ab")
        self.proc = self.lab.popen("server", [
            TWISTD, "-n", "--pidfile=", "--logfile=-", "allworx",
            "-c", self.conf_path, "--data-dir", self.data_dir],
            name=self.name, stdout=log, stderr=log)
        log.close()
        return self.wait_for(READY, timeout)

    def log(self):
        """The log text of the current run."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, text, timeout=30.0):
        """Wait until `text` appears in this run's log; raises with the log if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.log()
            if text in current:
                return current
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError("server exited (%s) before %r:\n%s"
                               % (self.proc.returncode, text, current[-4000:]))
            time.sleep(0.1)
        raise LabError("no %r within %ss:\n%s" % (text, timeout, self.log()[-4000:]))

    def stop(self, timeout=15.0):
        """SIGTERM and wait: the server undoes what it applied."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
        self.lab.stop(self.proc)
        self.proc = None

    def kill9(self):
        """kill -9: nothing gets to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.lab.stop(self.proc)
        self.proc = None
