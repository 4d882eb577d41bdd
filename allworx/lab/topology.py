# -*- test-case-name: allworx.tests.lab.test_namespaces -*-
"""
What the virtual office looks like: its hosts, the links between them, their
addresses and routes, the names its internet knows, and the programs it runs.
Data only; `allworx.lab.namespaces` builds it.
"""

import attr

DEFAULT_PREFIX = "awx"
STATE_ROOT = "/run/allworx-lab"
NETNS_ETC = "/etc/netns"

SERVER_LAN_IP = "192.168.2.254"
ADMIN_IP = "192.168.2.200"
ISP_WAN_IP = "203.0.113.1"
ISP_INET_IP = "198.51.100.1"
INET_IP = "198.51.100.10"
# The internet telephony provider (ITSP, Kamailio) runs in `inet` on an
# address of its own; the outside phones (baresip, in `inet` too) each have one.
PROVIDER_IP = "198.51.100.20"
PROVIDER_DOMAIN = "sip.internet.example"
PROVIDER_PORT = 5060
# The office's trunk account at the provider, and the numbers (DIDs) it has.
TRUNK_USER = "office"
TRUNK_SECRET = "office-trunk-secret"
OFFICE_NUMBERS = ("+15551230000", "+15551230001")
# The outside phones' accounts at the provider: user -> E.164 number, its
# password, and the address in `inet` its phone binds.
OUTSIDE_PHONES = {"alice": "+15557770001", "bob": "+15557770002"}
OUTSIDE_PASSWORDS = {"alice": "alice-outside-pw", "bob": "bob-outside-pw"}
OUTSIDE_PHONE_IPS = {"alice": "198.51.100.31", "bob": "198.51.100.32"}
# The lab's ACME CA (pebble, in `inet`): its directory, its management
# port (pebble's roots), and the office's names the ISP's DNS gives the
# server's WAN lease (by the DHCP name OFFICE_WAN_NAME), so that pebble's
# HTTP-01 checks reach the server's port 80.
ACME_IP = "198.51.100.30"
ACME_DOMAIN = "acme.internet.example"
ACME_PORT = 14000
ACME_MANAGEMENT_PORT = 15000
ACME_DIRECTORY = "https://%s:%d/dir" % (ACME_DOMAIN, ACME_PORT)
ACME_PORTS = (("tcp", ACME_PORT), ("tcp", ACME_MANAGEMENT_PORT))
OFFICE_DOMAIN = "example.com"
OFFICE_WAN_NAME = "office"
OFFICE_NAMES = tuple("%s.%s" % (label, OFFICE_DOMAIN) for label in (
    "allworx", "www", "smtp", "pop", "imap", "mail", "autoconfig", "autodiscover"))
# The internet's mail senders (`allworx.lab.mailsender`): INET_IP sends for
# MAIL_DOMAIN, DKIM-signed with the lab's own keys (selectors MAIL_SELECTORS,
# made once per lab under its state directory and published by the ISP's DNS).
# FORGED_DOMAIN (the forger's victim, p=reject) and QUARANTINE_DOMAIN
# (p=quarantine) allow no lab address to send for them. DNSBL_ZONE, the
# internet's blocklist, lists LISTED_IP (an address of `inet` of its own, which
# swaks sends from with --local-interface) and, as every DNSBL does, 127.0.0.2.
MAIL_DOMAIN = "internet.example"
MAIL_SELECTORS = ("lab", "lab-ed25519")      # RSA 2048, ed25519 (RFC 8463)
FORGED_DOMAIN = "bank.example"
FORGED_DOMAIN_IP = "198.51.100.40"           # named in DNS only; no host has it
QUARANTINE_DOMAIN = "promo.example"
DNSBL_ZONE = "dnsbl.internet.example"
LISTED_IP = "198.51.100.66"
DNSBL_REASON = "listed in the lab's blocklist: see http://%s/%s" % (DNSBL_ZONE, LISTED_IP)
# name -> TXT strings: the senders' SPF and DMARC policies and the blocklist's
# reasons (the DKIM keys are added by `peers.LabPeers.dnsmasq_config`).
DNS_TXT = {
    MAIL_DOMAIN: "v=spf1 ip4:%s -all" % INET_IP,
    "_dmarc." + MAIL_DOMAIN: "v=DMARC1; p=reject",
    FORGED_DOMAIN: "v=spf1 a -all",
    "_dmarc." + FORGED_DOMAIN: "v=DMARC1; p=reject",
    QUARANTINE_DOMAIN: "v=spf1 ip4:%s -all" % FORGED_DOMAIN_IP,
    "_dmarc." + QUARANTINE_DOMAIN: "v=DMARC1; p=quarantine",
}
# The blocklist's entries: client address -> its TXT reason. A listed
# address's name in the zone (its octets reversed) has A 127.0.0.2.
DNSBL_LISTED = {
    LISTED_IP: DNSBL_REASON,
    "127.0.0.2": "the test entry every DNSBL lists",
}
DNSBL_ANSWER = "127.0.0.2"

LAN_NET = "192.168.2.0/24"
WAN_DHCP_RANGE = ("203.0.113.10", "203.0.113.50")

# The second office, `branch`: its server (`bserver`), LAN switch (`blan`),
# a PC and a phone, with a LAN and a domain of its own. Its WAN is another
# of the ISP's customer segments, the upper half of the ISP's 203.0.113.0/24
# (203.0.113.128/25, the ISP at .129; the ISP answers ARP for it on the main
# office's segment), where its lease is fixed by MAC (BRANCH_WAN_IP, named
# BRANCH_WAN_NAME.isp.example), so that the main office can dial its
# WireGuard port. Only the documentation ranges the lab may use.
BRANCH_DOMAIN = "branch.example.com"
BRANCH_LAN_IP = "192.168.3.254"
BRANCH_LAN_NET = "192.168.3.0/24"
BRANCH_EXTENSIONS = "200-299"
BRANCH_WAN_PREFIX = 25
BRANCH_WAN_NET = "203.0.113.128/25"
BRANCH_ISP_IP = "203.0.113.129"
BRANCH_WAN_IP = "203.0.113.130"
BRANCH_WAN_NAME = "branch"
BRANCH_WAN_DHCP_RANGE = ("203.0.113.140", "203.0.113.160")
# The sites' tunnel: the main office's server, the branch's, and the laptop.
TUNNEL_NET = "192.168.99.0/24"
TUNNEL_MAIN_IP = "192.168.99.1"
TUNNEL_BRANCH_IP = "192.168.99.2"
TUNNEL_LAPTOP_IP = "192.168.99.10"
WG_PORT = 51820
# A remote user's laptop on the internet (its own link to the ISP; the ISP
# answers ARP for it on the internet host's segment and the other way round).
LAPTOP_IP = "198.51.100.50"

LAN_HOSTS = ("pc1", "pc2", "phone1", "phone2", "admin")
BRANCH_LAN_HOSTS = ("bpc1", "bphone1")
BRANCH_HOSTS = ("bserver", "blan") + BRANCH_LAN_HOSTS
HOSTS = ("server", "lan") + LAN_HOSTS + ("isp", "inet") + BRANCH_HOSTS + ("laptop",)
BRIDGE = "br0"
# The LAN switches: host -> its bridge (each LAN port on it is a Link to it).
SWITCHES = {"lan": BRIDGE, "blan": BRIDGE}
IFNAMSIZ = 15

# What `up` itself runs; dhclient, socat and the test clients are optional.
LAB_PROGRAMS = ("ip", "ss", "sysctl", "dnsmasq", "kamailio", "pebble")

# The Debian package that brings each program the lab or its tests run (the
# Makefile's RUN_PACKAGES or TEST_PACKAGES names every one of them).
PACKAGES = {
    "ip": "iproute2",
    "ss": "iproute2",
    "sysctl": "procps",
    "dnsmasq": "dnsmasq-base",
    "kamailio": "kamailio",
    "pebble": "pebble",
    "dhclient": "isc-dhcp-client",
    "udhcpc": "udhcpc",
    "socat": "socat",
    "dig": "bind9-dnsutils",
    "curl": "curl",
    "openssl": "openssl",
    "ping": "iputils-ping",
    "traceroute": "traceroute",
    "nmap": "nmap",
    "swaks": "swaks",
    "mbsync": "isync",
    "ldapsearch": "ldap-utils",
    "ldapwhoami": "ldap-utils",
    "ldapmodify": "ldap-utils",
    "iptables-save": "iptables",
    "baresip": "baresip-core",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "wireguard-go": "wireguard-go",
    "ntpdig": "ntpsec-ntpdig",
    "busybox": "busybox",
    "tftp": "tftp-hpa",
}

# What a program needs for what the tests do with it beyond its Depends (only
# recommended, so `--no-install-recommends` leaves it out).
RECOMMENDS_NEEDED = {
    "swaks": ("libnet-ssleay-perl",),   # STARTTLS: Net::SSLeay
}


@attr.s(frozen=True)
class Link:
    """A veth pair: interface `a_if` in host `a`, `b_if` in host `b`."""

    a = attr.ib()
    a_if = attr.ib()
    b = attr.ib()
    b_if = attr.ib()
    a_mac = attr.ib(default=None)


def _lan_port(host, mac, switch="lan"):
    return Link(host, "eth0", switch, host, mac)


# Switch and ISP ports are named after the host they lead to. Host ends have
# fixed MACs so tests can write DHCP reservations for them.
LINKS = (
    Link("server", "lan0", "lan", "server", "02:a1:00:00:02:fe"),
    _lan_port("pc1", "02:a1:00:00:02:01"),
    _lan_port("pc2", "02:a1:00:00:02:02"),
    _lan_port("phone1", "02:a1:00:00:02:11"),
    _lan_port("phone2", "02:a1:00:00:02:12"),
    _lan_port("admin", "02:a1:00:00:02:c8"),
    Link("server", "wan0", "isp", "server", "02:a1:00:00:71:fe"),
    Link("inet", "eth0", "isp", "inet", "02:a1:00:00:64:0a"),
    Link("bserver", "lan0", "blan", "bserver", "02:a2:00:00:03:fe"),
    _lan_port("bpc1", "02:a2:00:00:03:01", "blan"),
    _lan_port("bphone1", "02:a2:00:00:03:11", "blan"),
    Link("bserver", "wan0", "isp", "bserver", "02:a2:00:00:02:fe"),
    Link("laptop", "eth0", "isp", "laptop", "02:a1:00:00:64:32"),
)

ADDRESSES = (
    ("admin", "eth0", ADMIN_IP + "/24"),
    ("isp", "server", ISP_WAN_IP + "/24"),
    ("isp", "inet", ISP_INET_IP + "/24"),
    ("inet", "eth0", INET_IP + "/24"),
    ("inet", "eth0", PROVIDER_IP + "/24"),
    ("inet", "eth0", ACME_IP + "/24"),
) + tuple(("inet", "eth0", ip + "/24") for _, ip in sorted(OUTSIDE_PHONE_IPS.items())) + (
    ("inet", "eth0", LISTED_IP + "/24"),
    ("isp", "bserver", "%s/%d" % (BRANCH_ISP_IP, BRANCH_WAN_PREFIX)),
    ("laptop", "eth0", LAPTOP_IP + "/24"),
)

DEFAULT_ROUTES = (
    ("admin", "eth0", SERVER_LAN_IP),
    ("inet", "eth0", ISP_INET_IP),
    ("laptop", "eth0", ISP_INET_IP),
)
# The laptop shares the internet's subnet on a link of its own: the ISP
# routes its address there and answers ARP for each side on the other's.
HOST_ROUTES = (("isp", "laptop", LAPTOP_IP + "/32"),)
PROXY_ARP = (("isp", "inet"), ("isp", "laptop"), ("isp", "server"))

NAMESERVERS = {
    "server": "127.0.0.1",
    "lan": "127.0.0.1",
    "isp": "127.0.0.1",
    "inet": ISP_WAN_IP,
    **{host: SERVER_LAN_IP for host in LAN_HOSTS},
    "bserver": "127.0.0.1",
    "blan": "127.0.0.1",
    **{host: BRANCH_LAN_IP for host in BRANCH_LAN_HOSTS},
    "laptop": ISP_WAN_IP,
}

DNS_HOSTS = {
    "internet.example": INET_IP,
    "web.internet.example": INET_IP,
    "mail.internet.example": INET_IP,
    PROVIDER_DOMAIN: PROVIDER_IP,
    ACME_DOMAIN: ACME_IP,
    FORGED_DOMAIN: FORGED_DOMAIN_IP,
}
DNS_MX = (("internet.example", "mail.internet.example", 10),)

# Ports the internet host serves, checked before `up` returns.
INET_PORTS = (("tcp", 80), ("tcp", 7), ("udp", 7), ("tcp", 25), ("tcp", 110))
ISP_PORTS = (("udp", 53), ("tcp", 53), ("udp", 67))
ISP_NTP_PORTS = (("udp", 123),)      # the ISP's time server (allworx.lab.timeserver)
PROVIDER_PORTS = (("udp", PROVIDER_PORT), ("tcp", PROVIDER_PORT))

ISP_DNSMASQ = "isp-dnsmasq"
ISP_NTP = "isp-ntp"
INET_SERVICES = "inet-services"
PROVIDER = "provider"
ACME_CA = "acme-ca"
