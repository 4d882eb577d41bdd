"""
The pure pieces of bench.mailauth: the addresses and names of its two
namespaces, the DNS records of its internet, every server's configuration
text, the signed test message, and the checks of a delivered message's
headers (what each server's checks wrote into it).
"""

import base64
import email.parser
import email.policy
import email.utils

from bench.smtp import PW_HASH

PREFIX = "awmb"
GEN, MTA = PREFIX + "-gen", PREFIX + "-mta"
MTA_IP, MTA_LAN = "203.0.113.1", "192.168.2.254"
GEN_IP, GEN_LAN, LISTED_IP, DNS_IP = "203.0.113.10", "192.168.2.10", "203.0.113.66", "203.0.113.53"
AW_PORT, PF_PORT = 2525, 2526
DOMAIN = "bench.example"
AUTHSERV = "allworx." + DOMAIN
PF_AUTHSERV = "postfix.bench.localdomain"
SENDER_DOMAIN = "sender.example"
SELECTOR = "bench"
RBL = "rbl.example"
HELO = "mail." + SENDER_DOMAIN
SENDER = "news@" + SENDER_DOMAIN
RCPT = "box@" + DOMAIN
RESOLV_DIR = "/etc/netns/" + MTA

ALLWORX_CONF = """\
[system]
domain = {domain}
hostname = allworx
[lan]
interface = lo
address = {lan}/24
[wan]
mode = disabled
[security]
mode = lan-only
[dns]
primary = {dns}
[web]
admin_password = {pw}
[mail]
smtp_port = {port}
submission_port = 2587
submissions_port = 0
max_message_size = 10M
dnsbl = {rbl}
greylist = no
[pop3]
enabled = no
[user box]
password = {pw}
"""

WORDS = ("the quarterly report is attached below and the meeting moves to thursday at ten "
         "please bring the figures for the north office and the notes from last week so we "
         "can close the open points before the holidays thanks for your help").split()


# ---------------------------------------------------------------- pure helpers

def allworx_conf():
    return ALLWORX_CONF.format(domain=DOMAIN, lan=MTA_LAN, dns=DNS_IP, pw=PW_HASH, port=AW_PORT,
                               rbl=RBL)


def reverse_name(ip, zone):
    """The name asked for `ip` under `zone` (a DNSBL zone or in-addr.arpa)."""
    return ".".join(reversed(ip.split("."))) + "." + zone


def txt_line(name, value):
    """A dnsmasq `txt-record` line; values longer than 255 go as several strings."""
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
    return "txt-record=%s,%s" % (name, ",".join('"%s"' % c for c in chunks))


def dns_records(dkim_public):
    """The TXT records (name, value) of the bench's internet."""
    return [
        (SENDER_DOMAIN, "v=spf1 ip4:203.0.113.0/24 -all"),
        (HELO, "v=spf1 a -all"),
        ("%s._domainkey.%s" % (SELECTOR, SENDER_DOMAIN), "v=DKIM1; k=rsa; p=%s" % dkim_public),
        ("_dmarc." + SENDER_DOMAIN, "v=DMARC1; p=reject; adkim=r; aspf=r"),
        (reverse_name(LISTED_IP, RBL), "listed by the bench: %s sends spam" % LISTED_IP),
        (reverse_name("127.0.0.2", RBL), "the RFC 5782 test entry"),
    ]


def dnsmasq_conf(work, dkim_public):
    """The internet's DNS: local data only (NXDOMAIN for the rest of its zones)."""
    lines = ["listen-address=" + DNS_IP, "bind-interfaces", "port=53", "no-resolv", "no-hosts",
             "no-poll", "keep-in-foreground", "log-facility=/dev/null", "local-ttl=3600",
             "cache-size=10000", "dns-forward-max=1000",
             "pid-file=%s/dnsmasq.pid" % work,
             "local=/%s/" % SENDER_DOMAIN, "local=/%s/" % RBL, "local=/113.0.203.in-addr.arpa/",
             "host-record=%s,%s" % (HELO, GEN_IP),
             "mx-host=%s,%s,10" % (SENDER_DOMAIN, HELO),
             "address=/%s/127.0.0.2" % reverse_name(LISTED_IP, RBL),
             "address=/%s/127.0.0.2" % reverse_name("127.0.0.2", RBL)]
    lines += [txt_line(name, value) for name, value in dns_records(dkim_public)]
    return "\n".join(lines) + "\n"


def postfix_main_cf(work, uid, gid):
    return "\n".join([
        "compatibility_level = 3.6",
        "queue_directory = %s/postfix-spool" % work,
        "data_directory = %s/postfix-data" % work,
        "mail_owner = postfix",
        "setgid_group = postdrop",
        "inet_interfaces = all",
        "inet_protocols = ipv4",
        "myhostname = " + PF_AUTHSERV,
        "mydestination =",
        "mynetworks = 127.0.0.0/8",
        "virtual_mailbox_domains = " + DOMAIN,
        "virtual_mailbox_base = %s/postfix-maildirs" % work,
        "virtual_mailbox_maps = static:box/",
        "virtual_uid_maps = static:%d" % uid,
        "virtual_gid_maps = static:%d" % gid,
        "smtpd_recipient_restrictions = reject_unauth_destination, reject_rbl_client %s,"
        " check_policy_service unix:private/policyd-spf" % RBL,
        "policyd-spf_time_limit = 3600",
        "smtpd_milters = unix:%s/opendkim/opendkim.sock" % work,
        "non_smtpd_milters =",
        "milter_default_action = tempfail",
        "maillog_file_prefixes = " + work,
        "maillog_file = %s/postfix.log" % work,
        "biff = no",
        "",
    ])


def postfix_master_cf(base, policy_conf):
    """Debian's master.cf with smtpd on PF_PORT, nothing chrooted (the
    resolver and the policy service live outside the spool), and the
    policyd-spf spawn service."""
    out = []
    for line in base.splitlines():
        fields = line.split()
        if line[:1] not in ("", "#", " ", "\t") and len(fields) >= 8:
            if fields[:2] == ["smtp", "inet"]:
                fields[0] = str(PF_PORT)
            fields[4] = "n"
            line = " ".join(fields)
        out.append(line)
    out += ["policyd-spf unix - n n - 0 spawn",
            "  user=nobody argv=/usr/bin/policyd-spf %s" % policy_conf]
    return "\n".join(out) + "\n"


POLICYD_SPF_CONF = """\
debugLevel = 1
TestOnly = 1
HELO_reject = Fail
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = False
skip_addresses = 127.0.0.0/8,::ffff:127.0.0.0/104,::1
"""


def opendkim_conf(work):
    """OpenDKIM verifying, on a unix socket (as Debian sets it up), the bench's DNS."""
    return "\n".join([
        "Mode v",
        "Socket local:%s/opendkim/opendkim.sock" % work,
        "AuthservID " + PF_AUTHSERV,
        "Nameservers " + DNS_IP,
        "Canonicalization relaxed/simple",
        "UserID opendkim",
        "UMask 000",
        "Syslog yes",
        "SyslogSuccess yes",
        "",
    ])


def make_key():
    """(private key PEM, the public key as a DKIM p= value): RSA 2048."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(der).decode("ascii")


def make_message(size, date=None):
    """An ordinary text message of about `size` bytes, CRLF line ends, unsigned."""
    head = ("From: Sender News <%s>\r\nTo: <%s>\r\nSubject: Quarterly report and Thursday\r\n"
            "Date: %s\r\nMessage-ID: <bench-1@%s>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
            "Content-Transfer-Encoding: 7bit\r\n\r\n" % (
                SENDER, RCPT, date or email.utils.formatdate(), SENDER_DOMAIN))
    lines, line, i = [], [], 0
    total = len(head)
    while total < size:
        word = WORDS[i % len(WORDS)]
        i += 1
        line.append(word)
        if len(line) == 12:
            text = " ".join(line)
            lines.append(text)
            total += len(text) + 2
            line = []
    if line:
        lines.append(" ".join(line))
    return (head + "\r\n".join(lines) + "\r\n").encode("ascii")


def sign(message, private_pem):
    """The message with one DKIM-Signature (d=sender.example, rsa-sha256, relaxed/relaxed)."""
    import dkim
    sig = dkim.sign(message, SELECTOR.encode(), SENDER_DOMAIN.encode(), private_pem,
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id",
                                     b"mime-version", b"content-type"])
    return sig + message


def headers_of(raw):
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw, headersonly=True)


def peer_problems(raw):
    """What is missing from a message Postfix delivered: [] when OpenDKIM
    verified it (dkim=pass) and policyd-spf passed it (Received-SPF: Pass)."""
    msg = headers_of(raw)
    problems = []
    ar = [" ".join(v.split()) for v in msg.get_all("Authentication-Results", [])]
    if not any(v.startswith(PF_AUTHSERV) and "dkim=pass" in v for v in ar):
        problems.append("no OpenDKIM dkim=pass (Authentication-Results: %s)" % (ar or "none"))
    spf = [" ".join(v.split()) for v in msg.get_all("Received-SPF", [])]
    if not any(v.lower().startswith("pass") for v in spf):
        problems.append("no policyd-spf Received-SPF: Pass (%s)" % (spf or "none"))
    return problems


def allworx_problems(raw):
    """What is missing from a message allworx delivered: [] when its own
    Authentication-Results says spf, dkim and dmarc pass."""
    msg = headers_of(raw)
    ours = [" ".join(v.split()) for v in msg.get_all("Authentication-Results", [])
            if v.strip().startswith(AUTHSERV)]
    if not ours:
        return ["no Authentication-Results of %s" % AUTHSERV]
    return ["no %s=pass in its Authentication-Results (%s)" % (method, ours[0])
            for method in ("spf", "dkim", "dmarc") if "%s=pass" % method not in ours[0]]


def percentile(values, q):
    """The q-th percentile (0-100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(round(q / 100.0 * len(ordered) + 0.4999)))
    return ordered[min(rank, len(ordered)) - 1]
