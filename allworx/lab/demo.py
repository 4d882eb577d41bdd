# -*- test-case-name: allworx.tests.lab.test_namespaces -*-
"""
`make run`: the virtual office with the server in it, in the foreground.

Builds the lab, starts `twistd -n allworx` in the server's namespace with the
given tap.conf, lets the lab PCs take DHCP leases, forwards 127.0.0.1:8080 of
this machine to the admin pages (no route or address of this machine changes),
prints how to reach everything, and on Ctrl-C stops the server and removes the
lab.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

from allworx.lab.namespaces import Lab
from allworx.lab.processes import LabError, unavailable_reason

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def banner(admin_port, local_port, data_dir, config):
    return """
================================================================================
 allworx is running in the virtual office (lab prefix awx).

 Admin pages:   http://127.0.0.1:{local}/   user admin, password admin-demo
                (forwarded to {lan}:{admin} on the office LAN)
 Config:        {config} (the admin pages edit this file)
 Data:          {data}

 Try it from the lab's PCs and phones:
   allworx lab exec pc1 ip addr show eth0        # its DHCP lease from the server
   allworx lab exec pc1 dig www.example.com      # the office zone
   allworx lab exec pc1 curl -s http://198.51.100.10/whoami   # NAT: shows the WAN address
   allworx lab exec pc1 swaks --server 192.168.2.254 --to bob@example.com
   allworx lab exec inet swaks --server <WAN address> --to alice@example.com
   allworx lab status

 Ctrl-C stops the server and removes the virtual office.
================================================================================
""".format(local=local_port, lan="192.168.2.254", admin=admin_port,
           config=config, data=data_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="allworx-demo", description=__doc__)
    parser.add_argument("--config", default="tap.conf")
    parser.add_argument("--data-dir", default="run-data")
    parser.add_argument("--local-port", type=int, default=8080,
                        help="port on 127.0.0.1 of this machine for the admin pages")
    args = parser.parse_args(argv)

    reason = unavailable_reason(("ip", "dnsmasq", "socat", "dhclient"))
    if reason:
        sys.stderr.write("make run: %s\n" % reason)
        return 2
    from allworx.config import ConfigErrors, load_config
    try:
        config = load_config(args.config)
    except ConfigErrors as e:
        sys.stderr.write(e.report() + "\n")
        return 1

    config_path = os.path.abspath(args.config)
    data_dir = os.path.abspath(args.data_dir)
    os.makedirs(data_dir, exist_ok=True)
    lab = Lab()
    print("building the virtual office ...", flush=True)
    lab.up()
    server = None
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server = lab.popen("server", [TWISTD, "-n", "--pidfile=", "--logfile=-",
                                      "allworx", "-c", config_path, "--data-dir", data_dir],
                           name="allworx-server", stdout=None, stderr=None)
        time.sleep(2)
        for host in ("pc1", "pc2", "phone1", "phone2"):
            # The lab's own dhclient script: the lease applies inside the
            # namespace only, never to this machine's /etc or /run.
            lab.dhclient(host, "eth0", wait=False)
        lab.forward_port(args.local_port, "admin", "192.168.2.254", config.web.admin_port)
        print(banner(config.web.admin_port, args.local_port, data_dir, config_path), flush=True)
        while not stopping and server.poll() is None:
            time.sleep(0.5)
        if server.poll() is not None and not stopping:
            print("the server exited with status %s" % server.returncode, flush=True)
    finally:
        print("stopping the server and removing the virtual office ...", flush=True)
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        try:
            lab.down()
        except LabError as e:
            sys.stderr.write("lab down: %s\n" % e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
