"""
The peers' own start-up for bench/startup.py: each started the way its
Debian package runs it, with its own config, pid and state under a scratch
directory, listening only on the benchmark's LAN address in the server
namespace (bench/office.py), holding the same office where it has one (the
leases for dnsmasq and Kea, the mailbox and users for Dovecot), and timed
from its start to each of its ports answering (the same probes as allworx).
A peer that is not installed, or does not start, is named and left out.
"""

import json
import os
import shutil
import statistics
import subprocess
import time

from bench import common, office
from bench.office import DOMAIN, MAILBOX_USER, PW_HASH, SERVER_IP, SRV

PEER_SIP = "/work/shared/peers/sip"


def _start_probes():
    from bench import startup       # the probes (imported late: startup imports this module)
    return startup


class Peer:
    name = None
    what = None          # what it serves, as printed
    program = None

    def ports(self, probes):
        raise NotImplementedError

    def prepare(self, args, work):
        """Write the config under `work`; the argv (run in SRV)."""
        raise NotImplementedError

    def pid(self, proc, work):
        """The pid whose process tree is the peer (a daemon's master)."""
        return proc.pid

    def stop(self, proc, work):
        office.stop_server(proc)

    def measure(self, args, work, rounds):
        """(median seconds to every port answering, peak MB), or None when it cannot run."""
        if shutil.which(self.program) is None:
            print("  %-9s not installed (%s): left out" % (self.name, self.program), flush=True)
            return None
        probes = _start_probes()
        if os.path.exists(work):
            shutil.rmtree(work)
        os.makedirs(work)
        argv = self.prepare(args, work)
        times, peaks = [], []
        for n in range(rounds):
            log = open(os.path.join(work, "out-%d.log" % n), "w")
            began = time.monotonic()
            proc = subprocess.Popen(["ip", "netns", "exec", SRV] + argv, cwd=work, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=dict(os.environ, KEA_PIDFILE_DIR=work, KEA_LOCKFILE_DIR=work))
            try:
                answered = probes.wait_answers(self.ports(probes), None if self.daemon else proc,
                                               began, timeout=30)
                times.append(max(answered.values()))
                peaks.append(common.peak_rss_mb(self.pid(proc, work)))
            except RuntimeError as e:
                print("  %-9s did not start: %s (see %s)" % (self.name, e, log.name), flush=True)
                return None
            finally:
                self.stop(proc, work)
        return statistics.median(times), max(peaks)

    daemon = False


class Dnsmasq(Peer):
    name, what, program = "dnsmasq", "DNS and DHCP", "dnsmasq"

    def ports(self, probes):
        return {k: probes.ALLWORX_PORTS[k] for k in ("dns", "dhcp")}

    def prepare(self, args, work):
        leases = os.path.join(work, "dnsmasq.leases")
        now = int(time.time())
        first = office.FIRST_HOST
        with open(leases, "w") as f:
            for n in range(args.leases):
                f.write("%d %s %s pc%05d *\n" % (now + 86400, office.lease_mac(n),
                                                 office.host_ip(first + n), n))
        last = office.host_ip(first + args.leases + 200)
        return ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--user=root",
                "--interface=lan0", "--bind-interfaces", "--pid-file=", "--no-resolv", "--no-hosts",
                "--domain=" + DOMAIN, "--no-ping", "--quiet-dhcp", "--dhcp-authoritative",
                "--dhcp-range=%s,%s,%s,1h" % (office.host_ip(first), last, office.NETMASK),
                "--dhcp-lease-max=%d" % (args.leases + 1000), "--dhcp-leasefile=" + leases]


class Kea(Peer):
    name, what, program = "kea", "DHCP", "kea-dhcp4"

    def ports(self, probes):
        return {"dhcp": probes.ALLWORX_PORTS["dhcp"]}

    def prepare(self, args, work):
        leases = os.path.join(work, "leases4.csv")
        now = int(time.time())
        with open(leases, "w") as f:
            f.write("address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,"
                    "hostname,state,user_context,pool_id\n")
            for n in range(args.leases):
                f.write("%s,%s,,86400,%d,1,0,0,pc%05d,0,,0\n" % (
                    office.host_ip(office.FIRST_HOST + n), office.lease_mac(n), now + 86400, n))
        conf = os.path.join(work, "kea-dhcp4.json")
        with open(conf, "w") as f:
            json.dump({"Dhcp4": {
                "interfaces-config": {"interfaces": ["lan0"], "dhcp-socket-type": "udp"},
                "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 0,
                                   "name": leases},
                "valid-lifetime": 86400,
                "subnet4": [{"id": 1, "subnet": "%s/%d" % (office.NETWORK, office.PREFIXLEN),
                             "pools": [{"pool": "%s - %s" % (
                    office.host_ip(office.FIRST_HOST),
                    office.host_ip(office.FIRST_HOST + args.leases + 200))}]}],
                "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                             "output_options": [{"output": os.path.join(work, "kea.log")}]}]}}, f)
        return ["kea-dhcp4", "-c", conf]


class Postfix(Peer):
    name, what, program = "postfix", "SMTP", "postfix"
    daemon = True

    def ports(self, probes):
        return {"smtp": probes.ALLWORX_PORTS["smtp"]}

    def prepare(self, args, work):
        import grp
        import pwd
        etc, spool, data = (os.path.join(work, d) for d in ("etc", "spool", "data"))
        for d in (etc, spool, data):
            os.makedirs(d, exist_ok=True)
        os.chown(data, pwd.getpwnam("postfix").pw_uid, grp.getgrnam("postfix").gr_gid)
        with open(os.path.join(etc, "main.cf"), "w") as f:
            f.write("\n".join([
                "compatibility_level = 3.6", "queue_directory = %s" % spool,
                "data_directory = %s" % data, "mail_owner = postfix", "setgid_group = postdrop",
                "inet_interfaces = %s" % SERVER_IP, "inet_protocols = ipv4",
                "myhostname = postfix.%s" % DOMAIN, "mydestination =",
                "mynetworks = %s/%d" % (office.NETWORK, office.PREFIXLEN),
                "maillog_file_prefixes = %s" % work,
                "maillog_file = %s" % os.path.join(work, "postfix.log"), "biff = no", ""]))
        shutil.copy("/etc/postfix/master.cf", os.path.join(etc, "master.cf"))
        self.etc = etc
        return ["postfix", "-c", etc, "start"]

    def pid(self, proc, work):
        with open(os.path.join(work, "spool", "pid", "master.pid")) as f:
            return int(f.read().split()[0])

    def stop(self, proc, work):
        subprocess.run(["ip", "netns", "exec", SRV, "postfix", "-c", self.etc, "stop"],
                       capture_output=True)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while os.path.exists(os.path.join(work, "spool", "pid", "master.pid")) and \
                time.monotonic() < deadline:
            time.sleep(0.05)


DOVECOT_CONF = """\
base_dir = {work}/run
state_dir = {work}/state
instance_name = allworx-bench-startup
listen = {ip}
protocols = {protocols}
log_path = {work}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 0
mail_location = maildir:{mail}/%u:INDEX={work}/index/%u:CONTROL={work}/index/%u
passdb {{
  driver = passwd-file
  args = {work}/users
}}
userdb {{
  driver = passwd-file
  args = {work}/users
}}
"""


class Dovecot(Peer):
    name, what, program = "dovecot", "POP3 and IMAP", "dovecot"

    def served(self):
        """imap, and pop3 when the Debian package dovecot-pop3d is installed too."""
        return [p for p in ("pop3", "imap") if os.path.exists("/usr/lib/dovecot/%s" % p)]

    def ports(self, probes):
        return {k: probes.ALLWORX_PORTS[k] for k in self.served()}

    def prepare(self, args, work):
        mail = os.path.join(args.work, "office", "data", "mail")
        os.makedirs(os.path.join(work, "index"))
        with open(os.path.join(work, "users"), "w") as f:
            for n in range(1, args.users + 1):
                f.write("%s:{ARGON2ID}%s:0:0::%s/%s::\n" % (office.user_name(n), PW_HASH, mail,
                                                          office.user_name(n)))
        conf = os.path.join(work, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(DOVECOT_CONF.format(work=work, ip=SERVER_IP, mail=mail,
                                        protocols=" ".join(self.served())))
        self.what = " and ".join(p.upper() for p in self.served())
        assert MAILBOX_USER == office.user_name(1)
        return ["dovecot", "-F", "-c", conf]


class Kamailio(Peer):
    name, what, program = "kamailio", "SIP", "kamailio"

    def ports(self, probes):
        return {"sip": probes.ALLWORX_PORTS["sip"]}

    def prepare(self, args, work):
        with open(os.path.join(PEER_SIP, "kamailio.cfg")) as f:
            cfg = f.read().replace("listen=udp:127.0.0.1:5060", "listen=udp:%s:5060" % SERVER_IP)
        path = os.path.join(work, "kamailio.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        os.makedirs(os.path.join(work, "run"))
        return ["kamailio", "-DD", "-E", "-f", path, "-A", "WITH_AUTH", "-m", "256", "-M", "16",
                "-Y", os.path.join(work, "run"), "-A", "KAM_CHILDREN=4"]


PEERS = [Dnsmasq(), Kea(), Postfix(), Dovecot(), Kamailio()]
