# -*- test-case-name: allworx.tests.lab.test_sites -*-
"""
The lab's two offices joined (SPEC 16): the configuration text that puts the
main office and the branch on one WireGuard tunnel, and the branch's own
tap.conf.

The main office's server (`server`, 192.168.2.0/24, example.com) dials the
branch's server (`bserver`, 192.168.3.0/24, branch.example.com) at its fixed
WAN lease, 203.0.113.130:51820; the branch is the side that is dialled (no
endpoint: WireGuard learns the main office's from its handshake). Each side's
`[site]` names the other's public key, which `allworx.vpnkeys` makes in each
data directory before either server starts (as `allworx vpn pubkey` does).
The main office also has a `[device laptop]` for one of its users, with a
key the server makes. Text only; `demo` and the lab tests write and start it.
"""

from allworx.lab.topology import (
    BRANCH_DOMAIN,
    BRANCH_EXTENSIONS,
    BRANCH_LAN_IP,
    BRANCH_LAN_NET,
    BRANCH_WAN_IP,
    ISP_WAN_IP,
    LAN_NET,
    OFFICE_DOMAIN,
    TUNNEL_BRANCH_IP,
    TUNNEL_LAPTOP_IP,
    TUNNEL_MAIN_IP,
    TUNNEL_NET,
    WG_PORT,
)
from allworx.passwords import hash_password, sip_digest
from allworx.vpnkeys import ensure_server_key, public_key

MAIN_EXTENSIONS = "100-199"
TUNNEL_PREFIX = TUNNEL_NET.split("/")[1]
# The branch's people: user -> (full name, extension, password); each
# password is also the voicemail PIN's seed, as in tap.conf's NAME-demo.
BRANCH_USERS = {
    "dave": ("Dave Dunn", "201", "dave-demo", "2011"),
    "erin": ("Erin Ellis", "202", "erin-demo", "2022"),
}
LAPTOP = "laptop"


def server_public_key(data_dir):
    """The public key of the server whose data directory is `data_dir`,
    making its private key there first if it has none (as `allworx vpn
    pubkey` does before the first start)."""
    private, _ = ensure_server_key(data_dir)
    return public_key(private)


def vpn_section(interface, address):
    return ("\n[vpn]\nenabled = yes\ninterface = %s\nport = %d\naddress = %s/%s\n"
            % (interface, WG_PORT, address, TUNNEL_PREFIX))


def site_section(name, key, address, networks, extensions, domain, endpoint=None):
    text = ("\n[site %s]\npublic_key = %s\naddress = %s\nnetworks = %s\nextensions = %s\n"
            "domain = %s\n" % (name, key, address, networks, extensions, domain))
    if endpoint:
        text += "endpoint = %s\n" % endpoint
    return text


def main_office_sections(branch_key, interface="awg0", laptop_user="alice"):
    """What the main office's tap.conf adds: its [vpn], the branch's
    [site branch] (dialled at its fixed lease) and the [device laptop] of
    `laptop_user`, whose key the server makes."""
    return (vpn_section(interface, TUNNEL_MAIN_IP)
            + site_section("branch", branch_key, TUNNEL_BRANCH_IP, BRANCH_LAN_NET,
                           BRANCH_EXTENSIONS, BRANCH_DOMAIN,
                           endpoint="%s:%d" % (BRANCH_WAN_IP, WG_PORT))
            + "\n[device %s]\nuser = %s\naddress = %s\n" % (LAPTOP, laptop_user,
                                                           TUNNEL_LAPTOP_IP))


def user_sections(users, domain):
    """[user NAME] sections for {name: (full name, extension, password, pin)}."""
    text = ""
    for name, (full, ext, password, pin) in sorted(users.items()):
        text += ("\n[user %s]\nfull_name = %s\nextension = %s\nvoicemail_pin = %s\n"
                 "password = %s\nsip_digest = %s\n"
                 % (name, full, ext, pin, hash_password(password),
                    sip_digest(ext, domain, password)))
    return text


def branch_conf(main_key, admin_password_hash, interface="awg1", users=None,
                voicemail_timeout=20):
    """
    The branch's whole tap.conf: its LAN and domain, WAN by DHCP from the
    ISP, DHCP and DNS for its LAN, its admin (`[user admin]`, `admin = yes`,
    the main office admin's password hash), its users (BRANCH_USERS unless
    `users`), and its [vpn] with the main office as [site main].
    """
    return ("""# The lab's branch office (written by allworx.lab.sites).
[system]
hostname = allworx
domain = {domain}

[lan]
interface = lan0
address = {lan_ip}/24

[wan]
interface = wan0
mode = dhcp

[security]
mode = firewall-nat

[dhcp]
enabled = yes
range = 1-100

[dns]
primary = {isp}

[user admin]
full_name = Branch Administrator
password = {admin}
admin = yes

[sip]
voicemail_timeout = {timeout}
rtp_ports = 20000-20100
""".format(domain=BRANCH_DOMAIN, lan_ip=BRANCH_LAN_IP, isp=ISP_WAN_IP,
           admin=admin_password_hash, timeout=voicemail_timeout)
            + user_sections(BRANCH_USERS if users is None else users, BRANCH_DOMAIN)
            + vpn_section(interface, TUNNEL_BRANCH_IP)
            + site_section("main", main_key, TUNNEL_MAIN_IP, LAN_NET, MAIN_EXTENSIONS,
                           OFFICE_DOMAIN))


def set_site_key(text, site, key):
    """
    `text` (a tap.conf) with the `public_key` of `[site SITE]` set to `key`,
    every other line as it was; None if it has no such section.
    """
    lines = text.splitlines(keepends=True)
    header = "[site %s]" % site
    inside = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            if inside:
                break
            inside = stripped == header
        elif inside and stripped.split("=", 1)[0].strip() == "public_key":
            lines[i] = "public_key = %s\n" % key
            return "".join(lines)
    return None
