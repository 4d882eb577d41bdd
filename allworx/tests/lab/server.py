# -*- test-case-name: allworx.tests.lab.test_firewall -*-
"""
The real server (`twistd -n allworx`) run in a lab's server namespace, for
integration tests: start it with a tap.conf, wait until it is ready and until
the services a test needs are up (as its admin API reports them), stop it
gracefully or with kill -9, read its log.
"""

import json
import os
import signal
import sys
import time

from allworx.lab.processes import LabError
from allworx.lab.topology import SERVER_LAN_IP

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
READY = "allworx ready:"


class LabServer:
    """One allworx process in `lab`'s server namespace (or the branch's, `bserver`)."""

    def __init__(self, lab, conf_text, name="allworx", data_dir=None, env=None,
                 host="server", lan_ip=SERVER_LAN_IP, admin_host="admin"):
        self.lab = lab
        # The lab host it runs in, its LAN address, and the host the admin API is asked from.
        self.host, self.lan_ip, self.admin_host = host, lan_ip, admin_host
        self.env = env          # the server's environment (None: this process's)
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
        self.proc = self.lab.popen(self.host, [
            TWISTD, "-n", "--pidfile=", "--logfile=-", "allworx",
            "-c", self.conf_path, "--data-dir", self.data_dir],
            name=self.name, stdout=log, stderr=log, env=self.env)
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

    @property
    def ca_file(self):
        """The server's own CA certificate (made at its first start): what clients trust."""
        return os.path.join(self.data_dir, "tls", "ca.crt")

    def curl_https(self):
        """curl's options to verify the server's certificate (the admin port is HTTPS)."""
        return ["--cacert", self.ca_file]

    def services(self, admin_port=8080, password="admin-demo"):
        """
        (services, curl's CompletedProcess): the services' states as the admin
        API's /api/v1/status reports them to curl on the lab's admin host,
        {name: {"state": ..., "detail": ...}}, or None if it did not answer.
        """
        done = self.lab.run(self.admin_host, [
            "curl", "-sS", "-m", "3", "-u", "admin:" + password] + self.curl_https() + [
            "https://%s:%d/api/v1/status" % (self.lan_ip, admin_port)],
            check=False, timeout=15)
        try:
            return json.loads(done.stdout)["services"], done
        except (ValueError, KeyError, TypeError):
            return None, done

    def wait_services(self, names, timeout=30.0, states=("up",), **api):
        """
        Wait until the admin API reports each service of `names` in one of
        `states`; returns every service's state. Raises LabError, with what
        the API said and the log, when the server exits, when one of them is
        disabled (by its config: that does not change by waiting) or after
        `timeout`.
        """
        deadline = time.monotonic() + timeout
        while True:
            services, done = self.services(**api)
            pending = [n for n in names
                       if (services or {}).get(n, {}).get("state") not in states]
            if not pending:
                return services
            exited = self.proc is not None and self.proc.poll() is not None
            disabled = any(services[n].get("state") == "disabled"
                           for n in pending if services and n in services)
            if exited or disabled or time.monotonic() > deadline:
                if services is None:
                    said = "the admin API did not answer: curl exit %s: %s" % (
                        done.returncode, (done.stderr or done.stdout).strip()[-500:])
                else:
                    said = "; ".join("%s %s (%s)" % (n, services.get(n, {}).get("state"),
                                                     services.get(n, {}).get("detail"))
                                     for n in pending)
                raise LabError("%s: %s not %s%s: %s\n%s" % (
                    self.name, ", ".join(pending), "/".join(states),
                    " (the server exited %s)" % self.proc.returncode if exited
                    else "" if disabled else " within %ss" % timeout, said,
                    self.log()[-4000:]))
            time.sleep(0.2)

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
