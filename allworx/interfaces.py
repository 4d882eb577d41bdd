"""
The seams between services. Each is an attribute of the service that owns
it, handed by `allworx.service` to the services that need it (DNS and the
firewall get the lease table, SIP the mail store, the web a `Views`), and
used by them only through these methods.
"""

import attr
from zope.interface import Attribute, Interface


class IMailStore(Interface):
    """
    The users' mailboxes (Maildir under data_dir/mail/USER). Voicemail uses it
    to deliver and delete; POP3 serves from it. Emits `MailboxChanged` on the
    office when a user's voicemail counts change.
    """

    def deliver(recipients, message, sender=None):
        """
        Deliver `message` (bytes, RFC 5322) to local users and aliases named in
        `recipients` (addresses or user names); aliases expand, external
        addresses are queued for sending. Returns a Deferred that fires once
        every copy is on disk (fsynced).
        """

    def list_messages(user):
        """A list of `MessageInfo` for the user's mailbox, oldest first."""

    def read_message(user, uid):
        """Bytes of one message; KeyError if it is gone."""

    def delete_message(user, uid):
        """Remove one message (voicemail by phone, POP3 DELE on QUIT)."""

    def mark_seen(user, uid):
        """Flag a message as read (voicemail saved, POP3 RETR)."""


class ILeaseTable(Interface):
    """The DHCP server's leases, for DNS names and the admin pages."""

    def active_leases():
        """A list of lease records: mac, address, hostname, expires (POSIX), state,
        vendor_class (the client's option 60 as text, or None)."""

    def lease_count():
        """How many records `active_leases()` gives, without making them."""

    def leases_page(offset, limit):
        """`active_leases()[offset:offset + limit]`, without making the others."""


class IRogueServers(Interface):
    """Other DHCP servers heard answering on the LAN (there should be none)."""

    def warnings():
        """Records with server, first_seen, last_seen, replies and a `message` sentence."""


class IConnectionLog(Interface):
    """The firewall's bounded log of decisions."""

    def recent(limit=200):
        """Newest first: entries with time, proto, src, sport, dst, dport, action, reason."""

    counts = Attribute("dict: verdict -> number of flows decided so far")


class IMailQueue(Interface):
    """The outbound mail queue."""

    def entries():
        """Queued messages: id, sender, recipients, attempts, next_attempt, last_error."""

    def retry(queue_id):
        """Try the message again now."""

    def remove(queue_id):
        """Drop a message from the queue."""


class IMailSecurity(Interface):
    """
    Mail authentication and spam as the admin sees them (SPEC 18): the DNS
    records to publish, the last decisions on incoming mail, Junk counts and
    DKIM key rotation.
    """

    def records():
        """
        The records the office's mail needs in public DNS, as the zone gives
        them: a list of dicts {"name" (fully qualified), "type" ("TXT"),
        "value" (the text), "purpose" ("dkim" | "spf" | "dmarc"),
        "source" ("built-in" | "record": a [record] overrides it),
        "note" (advice, such as the smarthost provider's own SPF include, or "")}.
        """

    def decisions(limit=100):
        """
        The last decisions on incoming mail, newest first: dicts {"time"
        (epoch seconds), "client" (address), "helo", "sender", "recipients"
        (list), "verdict" ("accepted" | "junk" | "refused" | "greylisted"),
        "reason" (text), "score" (float or None), "auth" (the
        Authentication-Results value, or "")}.
        """

    def junk_counts():
        """{user name: number of messages in that user's Junk folder}."""

    def rotate_dkim():
        """
        New keys under a new selector, made current (`[mail] dkim_selector`
        changes); the old selector stays published until the outbound queue
        holds nothing signed with it. Returns (a Deferred of) the new selector.
        """


class IVpnPeers(Interface):
    """The WireGuard tunnel of sites and devices as the Sites page and /metrics see it (SPEC 16)."""

    public_key = Attribute("this server's WireGuard public key (base64), or None while off")

    def peers():
        """
        A Deferred list of dicts, one per peer the engine holds: {"public_key"
        (base64), "endpoint" ("host:port" or None), "last_handshake" (epoch
        seconds or None before the first), "rx_bytes", "tx_bytes"}.
        """

    def site_status():
        """
        {site name: {"server_answers": bool or None (not yet probed),
        "checked_at": epoch seconds or None}}: whether each site's server
        answered the last probe over the tunnel.
        """

    def keys_changed():
        """
        A server-made device key was made anew (the admin pages' "new key"):
        give the tunnel the keys as they are now. A Deferred.
        """


class IStats(Interface):
    """The dashboard's history of the office's counters (SPEC 20)."""

    def series():
        """[{"name", "unit", "path"}] of every series kept."""

    def points(name, range="hour"):
        """
        {"name", "unit", "step_s", "points": [[epoch seconds, value], ...]}
        for `range` hour (10 s steps), day (5 min) or week (30 min); KeyError
        for an unknown name, ValueError for an unknown range.
        """


class ITimeStatus(Interface):
    """What the LAN's time server serves and how its upstreams answer (SPEC 6)."""

    def status():
        """
        {"serving" (bool), "source" ("upstream" or "host"), "upstream" (name or None),
        "address", "upstream_stratum", "offset_s" (the host clock's offset from the
        upstream followed), "stratum" and "leap" (what clients are answered),
        "reference_id", "kernel_synchronised", "servers": [{"name", "address",
        "usable", "reach", "poll_s", "last_poll", "last_answer" (POSIX seconds or
        None), "offset_s", "delay_s", "stratum", "error"}]}.
        """


class IWanStatus(Interface):
    """How the WAN stands (the network service): its DHCP lease and its gateway's health."""

    def lease():
        """
        The WAN DHCP lease in force: {"address" (with prefix), "router",
        "server", "obtained", "renews", "expires" (POSIX seconds)}, or None
        (a static WAN, or no lease yet).
        """

    def gateway_health():
        """
        {"gateway" (address or None), "probes", "answered", "loss" (0..1 or
        None), "latency_ms" (mean of the answers or None), "last_ms",
        "last_at", "every_s", "error" (why it cannot probe, or None)} over the
        last probes (an ICMP echo every few seconds).
        """


class ICertificateState(Interface):
    """The server's TLS certificate as the dashboard's alerts see it."""

    def expires():
        """POSIX time the certificate in use stops being valid, or None (none yet)."""


class ILogEvents(Interface):
    """The server's recent structured log events (SPEC 20)."""

    def events(service=None, level=None, since=None, limit=100, before=None):
        """
        (events, next): newest first, dicts {"time" (epoch), "service",
        "level", "message", "fields"}; `level` is a minimum; `since` an epoch
        time; `before` the cursor of an earlier answer's `next` (None when no
        older events are left).
        """


class IBackups(Interface):
    """Whole-office backups, restores and tap.conf's history (SPEC 20; allworx.backupservice)."""

    def archive_chunks():
        """An iterator of the whole office's .tar.gz in bounded pieces (blocking: run it in a thread)."""

    def upload_file(length=None):
        """A new temporary file under data_dir for an uploaded archive; BackupError when no room."""

    def restore(fileobj, actor):
        """
        Check the archive in `fileobj` whole, keep the state before as a
        backup, then replace config and data (the services start again); a
        Deferred of {"restored", "pre_restore_backup", "files", "bytes"},
        failing with BackupError or ConfigErrors when nothing was changed.
        """

    def backups():
        """The backups kept under data_dir/backups: [{"name", "size", "time"}], newest first."""

    def backup_path(name):
        """The file of a kept backup; KeyError if there is none of that name."""

    def make_backup(reason="manual"):
        """Write a backup now; a Deferred of its name."""

    def delete_backup(name):
        """Remove a kept backup; KeyError if there is none of that name."""

    def history():
        """tap.conf's kept versions, newest first: [{"id", "time", "actor", "via", "sections"}]."""

    def version(number):
        """One version: its entry with "diff" (from the one before) and "text"; KeyError."""

    def revert(number, actor):
        """Make tap.conf version `number` again (a change like any other); ConfigErrors, KeyError."""


class IRegistrations(Interface):
    """The SIP registrar's bindings."""

    def bindings():
        """Current registrations: user, extension, contact, source, expires."""


class ICalls(Interface):
    """The SIP calls in progress."""

    def active_calls():
        """Calls in progress: caller, callee, state, started."""


# The columns of a call history entry, in SPEC 15's order (the JSON keys of
# `as_json()` and the CSV header), and the values two of them take.
CALL_FIELDS = ("id", "start", "end", "direction", "from", "from_name", "to", "answered_by",
               "trunk", "duration_s", "outcome")
CALL_DIRECTIONS = ("inbound", "outbound", "internal")
CALL_OUTCOMES = ("answered", "voicemail", "missed", "busy", "failed")


class ICallHistory(Interface):
    """The SIP service's journal of ended calls (internal and outside)."""

    def page(limit=50, offset=0, direction=None, outcome=None, search=None, since=None,
             until=None):
        """
        (entries, total): the entries matching the filters, newest first, from
        `offset`, at most `limit` of them (None: all), and how many match in
        all. `direction`/`outcome` one of CALL_DIRECTIONS/CALL_OUTCOMES,
        `search` text found in a number or name, `since`/`until` POSIX
        seconds bounding the start (until excluded). Each entry's `as_json()`
        is a dict of CALL_FIELDS (times RFC 3339 UTC). ValueError names a bad
        argument.
        """


class ITrunks(Interface):
    """The SIP trunks to the telephony provider (SPEC 15)."""

    def status():
        """One dict per [trunk], in config order: name, registrar, state (registered,
        registering, auth_failed, unreachable, not_registering), since and expires (RFC 3339
        UTC or None), last_error (text or None), channels, channels_in_use."""


class IZoneSource(Interface):
    """The DNS zone as it is served now (it is replaced on every rebuild)."""

    zone = Attribute("the current zone (rows(), as_text(), entries), or None before the first build")


class IFetchStatus(Interface):
    """POP3 fetching's last result per account."""

    status = Attribute("dict: account display -> {user, account, state, last_attempt, "
                       "last_success, fetched, error, next_attempt, failures, multidrop}")


class IPhoneBook(Interface):
    """
    The phones that configure themselves (SPEC 19), as the provisioning
    service, the registrar and the admin pages share them: each phone's own
    SIP secret and the sightings of phones that asked for their files.
    Owned by `allworx.phonebook.PhoneBook` (state under data_dir/phones, 0600).
    MACs are 12 lowercase hex digits (allworx.config.phones.normalise_mac).
    """

    def secret(mac):
        """The phone's SIP secret (text), made by the server on first use and kept."""

    def rotate(mac):
        """Replace the phone's SIP secret with a new one; returns it."""

    def has_secret(mac):
        """True when the phone has a secret already (none is made)."""

    def held_secret(mac):
        """The secret the phone itself holds: the previous one after a rotation until
        the phone has fetched its file again (to answer its check-sync challenge)."""

    def sighted(mac, address, model, filename, user_agent=None):
        """A phone asked for `filename` from `address` (its lease holder); `model` is
        the family guessed from the file name, vendor class or User-Agent, or None."""

    def sightings():
        """{mac: Sighting} of every phone seen: mac, address, model, filename,
        user_agent, last_fetch (POSIX seconds)."""


class ICheckSync(Interface):
    """Telling a provisioned phone to fetch its configuration again (SPEC 19)."""

    def resync(mac):
        """Send the phone's vendor check-sync NOTIFY to its registered contact; a
        Deferred firing True if the phone took it, False if it is not registered
        or refused; never fails."""


@attr.s(kw_only=True)
class Views:
    """
    What the admin pages, the API and /metrics read of the running services,
    each through its interface; None where this server has no such service.
    """

    leases = attr.ib(default=None)          # ILeaseTable
    rogues = attr.ib(default=None)          # IRogueServers
    connections = attr.ib(default=None)     # IConnectionLog
    zone = attr.ib(default=None)            # IZoneSource
    mail_store = attr.ib(default=None)      # IMailStore
    mail_queue = attr.ib(default=None)      # IMailQueue
    fetch = attr.ib(default=None)           # IFetchStatus
    registrations = attr.ib(default=None)   # IRegistrations
    calls = attr.ib(default=None)           # ICalls
    call_history = attr.ib(default=None)    # ICallHistory
    trunks = attr.ib(default=None)          # ITrunks
    mail_security = attr.ib(default=None)   # IMailSecurity
    vpn = attr.ib(default=None)             # IVpnPeers
    stats = attr.ib(default=None)           # IStats
    logs = attr.ib(default=None)            # ILogEvents
    wan = attr.ib(default=None)             # IWanStatus
    time = attr.ib(default=None)            # ITimeStatus
    certificates = attr.ib(default=None)    # ICertificateState
    backup = attr.ib(default=None)          # IBackups
    phones = attr.ib(default=None)          # IPhoneBook
    checksync = attr.ib(default=None)       # ICheckSync
