# -*- test-case-name: allworx.tests.lab.test_provider -*-
"""
The lab's internet telephony provider (ITSP): Kamailio in the `inet`
namespace on its own address (PROVIDER_IP, UDP and TCP 5060), known to the
ISP's DNS as `sip.internet.example`, with the office's trunk account and
the outside phones' accounts of `allworx.lab.topology`.

`allworx lab up` writes STATE/provider/kamailio.cfg (from the template
`kamailio.cfg.in` beside this module) and the db_text tables of its
accounts (STATE/provider/db/), then runs `kamailio -DD -E` in the
foreground of its own session as the lab process `provider` (pid file
STATE/pids/provider.pid, log STATE/logs/provider.log); `down` stops it by
that PID. What it does with calls is described in the template.
"""

import glob
import os

import attr

from allworx.lab.maildir import write_atomically
from allworx.lab.peers import LabPeers
from allworx.lab.processes import LabError
from allworx.lab.topology import (
    OFFICE_NUMBERS,
    OUTSIDE_PASSWORDS,
    OUTSIDE_PHONE_IPS,
    OUTSIDE_PHONES,
    PROVIDER,
    PROVIDER_DOMAIN,
    PROVIDER_IP,
    PROVIDER_PORT,
    PROVIDER_PORTS,
    TRUNK_SECRET,
    TRUNK_USER,
)

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kamailio.cfg.in")
MODULE_DIRS = ("/usr/lib/*/kamailio/modules", "/usr/lib/kamailio/modules",
               "/usr/local/lib*/kamailio/modules")
# db_text's table of table versions, and the subscriber table's version
# that Kamailio 5.x's auth_db expects.
SUBSCRIBER_VERSION = 7


@attr.s(frozen=True)
class ProviderAccount:
    """An account at the provider: `numbers` (E.164) reach its contact."""

    user = attr.ib()
    password = attr.ib(repr=False)
    numbers = attr.ib(default=())
    display = attr.ib(default="")


def default_accounts():
    """The office's trunk and the outside phones, as topology names them."""
    accounts = [ProviderAccount(TRUNK_USER, TRUNK_SECRET, tuple(OFFICE_NUMBERS), "Office")]
    for user, number in sorted(OUTSIDE_PHONES.items()):
        accounts.append(ProviderAccount(user, OUTSIDE_PASSWORDS[user], (number,),
                                        user.capitalize()))
    return tuple(accounts)


def dialled_forms(e164):
    """The Request-URI users that reach an E.164 number: as is, and for a
    North American number also 1 + ten digits and the ten digits alone."""
    forms = [e164]
    if e164.startswith("+1") and len(e164) == 12:
        forms += [e164[1:], e164[2:]]
    return forms


def kamailio_modules():
    """The directory of Kamailio's modules (Debian: /usr/lib/<triplet>/...)."""
    for pattern in MODULE_DIRS:
        for path in sorted(glob.glob(pattern)):
            if os.path.exists(os.path.join(path, "tm.so")):
                return path
    raise LabError("no Kamailio modules (tm.so) in %s: install Debian package kamailio"
                   % ", ".join(MODULE_DIRS))


def _quoted(text):
    """A Kamailio config string literal (no quotes or backslashes inside)."""
    if any(c in text for c in '"\\\n'):
        raise ValueError("not for a Kamailio string: %r" % (text,))
    return '"%s"' % text


def _any_of(var, values):
    return " || ".join("%s == %s" % (var, _quoted(v)) for v in values)


def caller_block(accounts, domain=PROVIDER_DOMAIN):
    """route[CALLER]'s body: the From each caller's call shows."""
    lines = []
    for n, account in enumerate(accounts):
        lines.append("\t%sif ($var(caller) == %s) {" % ("} else " if n else "", _quoted(account.user)))
        if not account.numbers:
            continue
        first = "sip:%s@%s" % (account.numbers[0], domain)
        if len(account.numbers) == 1:
            lines.append("\t\tuac_replace_from(%s, %s);" % (_quoted(account.display), _quoted(first)))
            continue
        # A trunk with several numbers presents any of them (From or
        # P-Asserted-Identity), as sent; anything else shows its first.
        lines += [
            "\t\tif (%s) {" % _any_of("$fU", account.numbers),
            "\t\t\treturn;",
            "\t\t}",
            "\t\tif (is_present_hf(\"P-Asserted-Identity\")) {",
            "\t\t\t$var(pai) = $(hdr(P-Asserted-Identity){tobody.user});",
            "\t\t\tif (%s) {" % _any_of("$var(pai)", account.numbers),
            "\t\t\t\treturn;",
            "\t\t\t}",
            "\t\t}",
            "\t\tuac_replace_from(%s);" % _quoted(first),
        ]
    lines.append("\t}")
    return "\n".join(lines)


def callee_block(accounts):
    """route[CALLEE]'s body: $var(aor) (and $var(did) for a trunk) of the
    dialled number, or 404."""
    lines = []
    for account in accounts:
        trunk = len(account.numbers) > 1
        for number in account.numbers:
            lines.append("\t%sif (%s) {" % ("} else " if lines else "", _any_of(
                "$rU", dialled_forms(number) + ([] if trunk else [account.user]))))
            lines.append("\t\t$var(aor) = %s;" % _quoted(account.user))
            if trunk:
                lines.append("\t\t$var(did) = %s;" % _quoted(number))
    lines += [
        "\t} else {" if lines else "\t{",
        "\t\tsl_send_reply(\"404\", \"Not Found\");",
        "\t\texit;",
        "\t}",
    ]
    return "\n".join(lines)


def _dbtext_field(text):
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("\n", "\\n")


def subscriber_table(accounts, domain=PROVIDER_DOMAIN):
    """db_text's `subscriber` table of `accounts` (plain passwords: auth_db
    computes HA1 itself)."""
    rows = ["id(int,auto) username(string) domain(string) password(string) "
            "ha1(string,null) ha1b(string,null)"]
    for n, account in enumerate(accounts, 1):
        rows.append("%d:%s:%s:%s::" % (n, _dbtext_field(account.user), _dbtext_field(domain),
                                       _dbtext_field(account.password)))
    return "\n".join(rows) + "\n"


def baresip_files(user, directory):
    """
    {path: text} of a baresip configuration that makes a person at a
    terminal outside phone `user` (topology's OUTSIDE_PHONES): its account
    at the provider, SIP on its own address in `inet`; with no sound card
    in the lab it sends a 440 Hz tone and records what it hears (sndfile)
    under `directory`/snd.
    """
    ip = OUTSIDE_PHONE_IPS[user]
    octet = int(ip.rsplit(".", 1)[1])
    config = "\n".join([
        "# allworx lab: outside phone %s (%s) at the provider %s" % (
            user, OUTSIDE_PHONES[user], PROVIDER_DOMAIN),
        "sip_listen %s:5060" % ip,
        "rtp_ports %d-%d" % (octet * 1000 + 500, octet * 1000 + 599),
        "module_path /usr/lib/baresip/modules",
        # ausine makes 48 kHz stereo only; baresip resamples it to the codec's rate.
        "audio_source ausine,440",
        "ausrc_srate 48000",
        "ausrc_channels 2",
        "audio_player aubridge,nowhere",
        "audio_alert aubridge,nowhere",
        "snd_path " + os.path.join(directory, "snd"),
    ] + ["module %s.so" % m for m in ("stdio", "g711", "ausine", "aubridge", "sndfile")]
      + ["module_app %s.so" % m for m in ("account", "menu")]) + "\n"
    account = ("<sip:%s@%s>;auth_pass=%s;regint=600;answermode=manual;audio_codecs=PCMU\n"
               % (user, PROVIDER_DOMAIN, OUTSIDE_PASSWORDS[user]))
    return {os.path.join(directory, "config"): config,
            os.path.join(directory, "accounts"): account,
            os.path.join(directory, "contacts"): ""}


def version_table():
    return ("id(int,auto) table_name(string) table_version(int)\n"
            "1:subscriber:%d\n" % SUBSCRIBER_VERSION)


@attr.s
class LabProvider(LabPeers):
    """
    The lab with its provider: `provider_accounts` (ProviderAccount) are the
    accounts Kamailio knows (default: topology's trunk and outside phones).
    """

    provider_accounts = attr.ib(factory=default_accounts)

    @property
    def provider_dir(self):
        """The provider's directory: kamailio.cfg, db/, run/, its pid file."""
        return self._path("provider")

    def provider_config(self, modules=None):
        """The text of the provider's kamailio.cfg."""
        with open(TEMPLATE) as f:
            text = f.read()
        values = {
            "PREFIX": self.prefix,
            "DOMAIN": PROVIDER_DOMAIN,
            "IP": PROVIDER_IP,
            "PORT": str(PROVIDER_PORT),
            "DBDIR": os.path.join(self.provider_dir, "db"),
            "MODULES": modules or kamailio_modules(),
            "CALLER": caller_block(self.provider_accounts),
            "CALLEE": callee_block(self.provider_accounts),
        }
        for key, value in values.items():
            text = text.replace("{{%s}}" % key, value)
        if "{{" in text:
            raise LabError("unfilled placeholder in %s: %s"
                           % (TEMPLATE, text[text.index("{{"):][:40]))
        return text

    def _provider_files(self):
        db = os.path.join(self.provider_dir, "db")
        return {
            os.path.join(self.provider_dir, "kamailio.cfg"): self.provider_config(),
            os.path.join(db, "subscriber"): subscriber_table(self.provider_accounts),
            os.path.join(db, "version"): version_table(),
        }

    def _ensure_provider(self):
        """Write the provider's files; (re)start Kamailio if they changed or it is not running."""
        for sub in ("db", "run"):
            os.makedirs(os.path.join(self.provider_dir, sub), exist_ok=True)
        changed = False
        for path, text in self._provider_files().items():
            try:
                with open(path) as f:
                    same = f.read() == text
            except FileNotFoundError:
                same = False
            if not same:
                write_atomically(path, text.encode())
                changed = True
        if changed:
            self._stop_named(PROVIDER)
        if self._ensure_running(PROVIDER) is None:
            self.start_provider()

    def start_provider(self):
        """Start Kamailio (the provider) in `inet`; returns once it listens."""
        proc = self._spawn(PROVIDER, "inet", [
            "kamailio", "-DD", "-E",
            "-f", os.path.join(self.provider_dir, "kamailio.cfg"),
            "-P", os.path.join(self.provider_dir, "kamailio.pid"),
            "-Y", os.path.join(self.provider_dir, "run"),
            "-m", "32", "-M", "8"])
        self.wait_listening("inet", PROVIDER_PORTS, proc)
        return proc

    def outside_phone_dir(self, user):
        """
        Write the baresip configuration of outside phone `user` for a person
        to use (`baresip_files`); its directory, for
        `allworx lab exec inet baresip -f DIR`.
        """
        directory = os.path.join(self.provider_dir, "phones", user)
        os.makedirs(os.path.join(directory, "snd"), exist_ok=True)
        for path, text in baresip_files(user, directory).items():
            write_atomically(path, text.encode())
        return directory

    def stop_provider(self):
        """Stop the provider (its registrations are lost: they live in memory)."""
        self._stop_named(PROVIDER)
