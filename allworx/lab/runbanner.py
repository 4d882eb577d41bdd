# -*- test-case-name: allworx.tests.lab.test_demo -*-
"""
What `make run` prints last: one banner, once the server is ready and its
WAN lease is known, that says where everything is (the admin pages and how
to log in, the runtime config, the server's log, the WAN address), how to
make a call with the lab's phones, and commands to try, each one as it
works when pasted into a new shell (`allworx` is on PATH after `make run`).
"""

import os
import sys

from allworx.lab.labphones import LAB_PHONES
from allworx.lab.processes import LabError
from allworx.lab.sites import BRANCH_USERS
from allworx.lab.topology import (
    ACME_DIRECTORY,
    ACME_DOMAIN,
    ACME_MANAGEMENT_PORT,
    BRANCH_DOMAIN,
    BRANCH_LAN_IP,
    BRANCH_LAN_NET,
    BRANCH_WAN_IP,
    LAPTOP_IP,
    OFFICE_DOMAIN,
    OFFICE_NUMBERS,
    OUTSIDE_PASSWORDS,
    OUTSIDE_PHONES,
    PROVIDER_DOMAIN,
    PROVIDER_IP,
    SERVER_LAN_IP,
    TRUNK_SECRET,
    TRUNK_USER,
    TUNNEL_MAIN_IP,
)

RULE = "=" * 80
DEMO_PASSWORD = "admin-demo"


def login_text(admin_hash, verify=None):
    """How to log in to the admin pages: the demo's password when the
    config's admin hash is still its, else where the password comes from."""
    if verify is None:
        from allworx.passwords import verify_password as verify
    try:
        demo = bool(admin_hash) and verify(admin_hash, DEMO_PASSWORD)
    except Exception:
        demo = False
    if demo:
        return ("user admin, password %s (the demo's; every demo password is NAME-demo,\n"
                "                as tap.conf says; change it on the Users page)" % DEMO_PASSWORD)
    return ("user admin, with the password whose hash is the config's admin password\n"
            "                (`allworx passwd` makes a new hash)")


def command_text(which=None, venv_script=None, realpath=os.path.realpath):
    """Where the `allworx` command of the banner's lines comes from."""
    import shutil
    found = (which or shutil.which)("allworx")
    venv_script = venv_script or os.path.join(os.path.dirname(sys.executable), "allworx")
    if found is None:
        return ("not on PATH: run the lines below with %s for `allworx`\n"
                "                (as root, `make link` puts a link in /usr/local/bin)" % venv_script)
    real = realpath(found)
    if real != found:
        return "%s (a link to %s)" % (found, real)
    return found


def wan_text(wan_ip):
    if wan_ip:
        return "%s (the ISP's DHCP lease)" % wan_ip
    return ("not known yet (no lease from the ISP); see it with\n"
            "                allworx lab exec server ip -br addr show wan0")


def office_phones_text(phones_said):
    """The lab's phones, what became of each, and how to make a call."""
    lines = ["", " Office phones (baresip in the lab's phone hosts, registered with the servers):"]
    for host, phone in sorted(LAB_PHONES.items()):
        lines.append("   %-8s %-6s extension %s at %s: %s" % (
            host, phone.user, phone.ext, phone.registrar,
            phones_said.get(host, "not started")))
    lines += [
        " Make a call (the Phones page shows it while it lasts; the command prints its",
        " progress and hangs up after --hold seconds):",
        "   allworx lab call phone1 102     # alice calls bob; bob's phone answers",
        "   allworx lab call phone2 400     # bob's voicemail (PIN 2345)",
    ]
    return "\n".join(lines) + "\n"


def banner(admin_port, local_port, data_dir, config, phones="", keys="STATE/inet/dkim",
           login="user admin, password " + DEMO_PASSWORD, source=None, log_path=None,
           wan_ip=None, prefix="awx", command=None):
    """The whole banner; `phones` is the text of the sections below the main one."""
    wan = wan_ip or "<WAN address>"
    where = ("%s: a copy of %s made at this start;\n"
             "                the admin pages change the copy, never that file, and the\n"
             "                copy goes with the lab at Ctrl-C" % (config, source)
             if source else "%s (the admin pages edit this file)" % config)
    return """
{rule}
 allworx is running in the virtual office (lab prefix {prefix}).

 Admin pages:   https://127.0.0.1:{local}/
 Log in as:     {login}
                (forwarded to {lan}:{admin} on the office LAN; its certificate is
                signed by the server's own CA, {data}/tls/ca.crt, or, with
                [tls] acme_directory, by the lab's ACME CA below)
 Config:        {where}
 Server log:    {log} (its events are on the Logs page too)
 Data:          {data}
 WAN address:   {wan_text}
 Command:       {command}

 Try it from the lab's PCs and phones:
   allworx lab exec pc1 ip addr show eth0        # its DHCP lease from the server
   allworx lab exec pc1 dig www.example.com      # the office zone
   allworx lab exec pc1 curl -s http://198.51.100.10/whoami   # NAT: shows the WAN address
   allworx lab exec pc1 swaks --server {lan} --to bob@example.com
   allworx lab exec inet swaks --server {wan} --to alice@example.com
   allworx lab exec inet swaks --server {wan} --to alice@example.com \\
       --local-interface 198.51.100.66      # listed in dnsbl.internet.example: 554
   {python} -m allworx.lab.mailsender --keys {keys} \\
       --from news@internet.example --to alice@example.com --out /tmp/signed.eml
   allworx lab exec inet swaks --server {wan} --from news@internet.example \\
       --to alice@example.com --data @/tmp/signed.eml     # DKIM-signed: dkim=pass
   allworx lab status
{phones}
 Ctrl-C stops the servers and removes the virtual office.
{rule}
""".format(rule=RULE, prefix=prefix, local=local_port, lan=SERVER_LAN_IP, admin=admin_port,
           login=login, where=where, log=log_path or "(the terminal)", data=data_dir,
           wan=wan, wan_text=wan_text(wan_ip), phones=phones, keys=keys,
           command=command or command_text(),
           python=sys.executable)


def acme_banner(lab, config):
    """How the office's certificate comes from the lab's ACME CA, and how to trust its root."""
    lines = ["", " ACME CA on the lab's internet: %s (pebble)" % ACME_DIRECTORY]
    if config.tls.acme_directory != ACME_DIRECTORY:
        lines.append("   not used: set [tls] acme_directory = %s to take the office's "
                     "certificate from it" % ACME_DIRECTORY)
        return "\n".join(lines) + "\n"
    try:
        root = lab.acme_root()
    except LabError as e:
        root = "(not fetched: %s)" % e
    lines += [
        "   the office's certificate comes from it (Status page: certificates); its root,",
        "   new at each start of pebble, is in %s; trust it to verify, e.g." % root,
        "   allworx lab exec pc1 openssl s_client -connect imap.example.com:993 -CAfile %s"
        % root,
        "   fetch it again: allworx lab exec inet curl --cacert %s https://%s:%d/roots/0"
        % (lab.acme_https_ca, ACME_DOMAIN, ACME_MANAGEMENT_PORT),
    ]
    return "\n".join(lines) + "\n"


def phone_banner(lab, config_name):
    """How to call the office from the lab's internet: the provider, the
    office's trunk account and numbers, the outside phones and how to run one."""
    lines = [
        "",
        " Telephony provider (ITSP) on the lab's internet: %s (%s, Kamailio)"
        % (PROVIDER_DOMAIN, PROVIDER_IP),
        "   its log: %s" % os.path.join(lab.state_dir, "logs", "provider.log"),
        "   the office's trunk account: username %s, secret %s," % (TRUNK_USER, TRUNK_SECRET),
        "   numbers %s (a [trunk] in %s registers it)" % (" ".join(OFFICE_NUMBERS), config_name),
        " Outside phones (accounts at the provider; baresip in the inet host):",
    ]
    for user, number in sorted(OUTSIDE_PHONES.items()):
        lines.append("   %-6s %s  password %s" % (user, number, OUTSIDE_PASSWORDS[user]))
        lines.append("          allworx lab exec inet baresip -f " + lab.outside_phone_dir(user))
    lines += [
        "   In baresip: /dial %s (or %s) calls the office, /dial %s calls %s;"
        % (OFFICE_NUMBERS[0], OFFICE_NUMBERS[0][2:], OUTSIDE_PHONES["bob"], "bob"),
        "   /accept, /hangup, /quit. No sound card: a phone sends a 440 Hz tone and",
        "   records what it hears in its directory's snd/.",
    ]
    return "\n".join(lines) + "\n"


def branch_banner(lab, branch_config, branch_dir, laptop_config, laptop_said="",
                  branch_port=8081, laptop_ifname="awg2"):
    """How to reach the branch office and the laptop (`laptop_said`: how its tunnel went)."""
    lines = [
        "",
        " Branch office (site `branch`, %s), joined over WireGuard:" % BRANCH_DOMAIN,
        "   its server in bserver: WAN %s (the ISP's fixed lease), LAN %s, tunnel 192.168.99.2"
        % (BRANCH_WAN_IP, BRANCH_LAN_IP),
        "   admin pages: https://127.0.0.1:%d/ (admin, admin-demo; through bpc1)" % branch_port,
        "   config %s, data %s," % (branch_config, branch_dir),
        "   log %s" % os.path.join(lab.state_dir, "logs", "allworx-branch.log"),
        "   its phones' accounts (registrar %s, LAN %s):" % (BRANCH_LAN_IP, BRANCH_LAN_NET),
    ]
    for user, (full, ext, password, pin) in sorted(BRANCH_USERS.items()):
        lines.append("     %-5s %s  %-11s password %s, voicemail PIN %s" % (user, ext, full,
                                                                         password, pin))
    lines += [
        "   try: allworx lab exec pc1 ping -c 3 bpc1.%s    # across the tunnel" % BRANCH_DOMAIN,
        "        allworx lab call phone1 201   # a main-office phone calls the branch's dave",
        "        allworx lab exec bserver ip -br addr",
        " Laptop on the internet (%s; [device laptop] of alice in the config), joined over"
        % LAPTOP_IP,
        "   WireGuard: its config, from the admin API, in %s;" % laptop_config,
        "   wireguard-go %s in it. %s" % (laptop_ifname, laptop_said or ""),
        "   allworx lab exec laptop ping -c 3 192.168.2.254",
        "   allworx lab exec laptop curl -u alice:alice-demo pop3://192.168.2.254/   # POP3",
        "   allworx lab exec laptop dig @%s pc1.%s   # the office's DNS through the tunnel"
        % (TUNNEL_MAIN_IP, OFFICE_DOMAIN),
        "   by hand: %s -m allworx.lab.wgclient --interface awg3 CONFIG" % sys.executable,
    ]
    return "\n".join(lines) + "\n"
