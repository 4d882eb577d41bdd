# -*- test-case-name: allworx.tests.mail.test_store -*-
"""
The users' mailboxes: one Maildir per user under `data_dir/mail/USER`.

`MailStore` implements `IMailStore` (allworx/interfaces.py): the mail
service's `store`, which SIP and the admin pages are given. Everything the server delivers goes through
`deliver`: SMTP, POP3 fetching, bounces, voicemail. Aliases expand there,
outside addresses go to the outbound queue, and the returned Deferred fires
only when every copy (and the queue entry) is fsynced.

Messages are stored with LF line ends (the Maildir convention); a message's
UID is its Maildir base name, so it is the same in every POP3 session. A
message that has been read lives in `cur/` with the `S` flag. Voicemail is a
message with the header `X-Allworx-Voicemail: yes`; when a user's count of
new or heard voicemail changes the store emits `MailboxChanged`.

A scan of a Maildir (once per mailbox and process) opens only the messages
its index (`allworx-index`: each uid's POP3 size and voicemail mark) does
not know yet, so a restart does not read 100,000 messages again.

IMAP keeps every flag in the name the Maildir way (`ID:2,FRS`: Draft,
Flagged, Replied, Seen, Trashed); `set_flags` renames the file (and fsyncs
the directory) and `add_message` stores a message with its flags. Whoever
changed a mailbox (delivery, POP3, phone, IMAP), the callables in
`listeners` are called with the user's name, at once, so IMAP sessions learn
of it. Copies delivered to a user's Junk folder (`deliver(..., junk=USERS)`:
Maildir++ `USER/.Junk`, made when missing) are told to `folder_listeners`,
callables(user, folder name).
"""

import email.header
import email.parser
import itertools
import os
import re

import attr
from prometheus_client import Counter
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from allworx.atomicfile import ensure_directory, fsync_directory, write_atomically
from allworx.interfaces import IMailStore
from allworx.protocols.mail.aliases import AliasLoop, expand
from allworx.protocols.mail.durable import PendingFile
from allworx.office import MailboxChanged

log = Logger()

DELIVERED = Counter("allworx_mail_delivered_total",
                    "Message copies delivered, by destination (local mailbox or remote server)",
                    ["destination"])

VOICEMAIL_HEADER = b"x-allworx-voicemail"
_VOICEMAIL = re.compile(rb"(?im)^x-allworx-voicemail:[ \t]*yes[ \t]*$")
_HEADER_READ = 32 * 1024       # enough for the header of any sane message
_FLAG_READ = 8 * 1024          # where X-Allworx-Voicemail is looked for when scanning
_SIZE_TAG = re.compile(r",W=(\d+)")
INDEX = "allworx-index"        # per Maildir: what a scan learnt by reading each message
INDEX_HEADER = "allworx-index 1"
INDEX_SLACK = 64               # messages read (or lines stale) before the index is written again


class NoRecipients(KeyError):
    """None of the recipients is a user, an alias or an outside address."""

    def __str__(self):
        return "no mailbox for %s" % ", ".join(self.args[0])


@attr.s(frozen=True, slots=True)
class MessageInfo:
    """
    One message of a mailbox as the pages, POP3 and voicemail see it.
    `size` is in octets as POP3 counts them (CRLF line ends); `sender` is the
    From header; `date` the Date header as text.
    """

    uid = attr.ib()
    size = attr.ib()
    seen = attr.ib()
    voicemail = attr.ib()
    date = attr.ib(default="")
    sender = attr.ib(default="")
    subject = attr.ib(default="")


@attr.s(frozen=True, slots=True)
class Delivered:
    """What `deliver` did: the id, the local users and the outside addresses."""

    id = attr.ib()
    users = attr.ib()
    external = attr.ib()


def to_lf(message):
    """A message with LF line ends: CRLF, bare CR and bare LF all become LF."""
    return bytes(message).replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def pop3_octets(lf_data):
    """The size of a stored message as POP3 counts it (every LF sent as CRLF)."""
    return len(lf_data) + lf_data.count(b"\n")


def is_voicemail(lf_data):
    """True when the message's header carries `X-Allworx-Voicemail: yes`."""
    end = lf_data.find(b"\n\n")
    head = lf_data if end < 0 else lf_data[:end + 1]
    return bool(_VOICEMAIL.search(head))


def header_summary(lf_head):
    """(date, from, subject) from the start of a stored message, decoded for display."""
    msg = email.parser.BytesHeaderParser().parsebytes(lf_head)
    out = []
    for name in ("Date", "From", "Subject"):
        value = msg.get(name, "")
        try:
            value = str(email.header.make_header(email.header.decode_header(value)))
        except Exception:
            value = str(value)
        out.append(" ".join(value.split()))
    return tuple(out)



@attr.s(slots=True)
class _Entry:
    uid = attr.ib()
    path = attr.ib()
    size = attr.ib()
    seen = attr.ib()
    voicemail = attr.ib()
    summary = attr.ib(default=None)
    flags = attr.ib(default="")


class _Listing:
    """
    A mailbox's messages in order: `uids` and their POP3 `sizes`, `total`
    octets. It only ever grows at the end (a delivery newer than the last);
    any other change makes a new one, so a POP3 session keeps the first
    `len(uids)` it saw at log-in without a copy.
    """

    __slots__ = ("uids", "sizes", "total")

    def __init__(self, uids, sizes):
        self.uids = uids
        self.sizes = sizes
        self.total = sum(sizes)

    def append(self, uid, size):
        self.uids.append(uid)
        self.sizes.append(size)
        self.total += size


def _read_head(path):
    """The start of a message file, where its voicemail header would be."""
    with open(path, "rb") as f:
        return f.read(_FLAG_READ)


def _load_index(path):
    """{uid: (POP3 size, voicemail)} from a Maildir's index; {} when missing or damaged."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError):
        return {}
    if lines[0] != INDEX_HEADER or lines[-1] != "":
        return {}           # not ours, or cut short: read the messages again
    out = {}
    try:
        for line in lines[1:-1]:
            uid, size, voicemail = line.rsplit(" ", 2)
            out[uid] = (int(size), voicemail == "v")
    except ValueError:
        log.warn("mail: {path} is damaged: the messages are read again", path=path)
        return {}
    return out


def _uid_of(name):
    return name.split(":", 1)[0]


def _order(uid):
    stamp, _, rest = uid.partition(".")
    return (int(stamp) if stamp.isdigit() else 0, uid)


@implementer(IMailStore)
class MailStore:
    """Maildirs per user, with aliases, the outbound queue and voicemail counts."""

    def __init__(self, office, writer, reactor, queue=None):
        self.office = office
        self.writer = writer
        self.reactor = reactor
        self.queue = queue
        self._mailboxes = {}        # user -> {uid: _Entry}
        self._listings = {}         # user -> _Listing of its mailbox, oldest first
        self._ensured = set()
        self._sequence = itertools.count()
        self._tag = "P%d%s" % (os.getpid(), os.urandom(3).hex())
        self.listeners = []         # callables(user) told of every change to a mailbox
        self.folder_listeners = []  # callables(user, folder) told of mail put in another folder

    # ------------------------------------------------------------ places

    @property
    def root(self):
        return os.path.join(self.office.config.system.data_dir, "mail")

    def maildir(self, user):
        """The Maildir directory of a user."""
        if not user or "/" in user or user.startswith("."):
            raise KeyError(user)
        return os.path.join(self.root, user)

    def _ensure(self, user):
        if user not in self._ensured:
            base = self.maildir(user)
            for sub in ("tmp", "new", "cur"):
                ensure_directory(os.path.join(base, sub))
            self._ensured.add(user)

    def new_id(self):
        """A name unique to this server, sorting by arrival: `1700000000123456789.M4P77ab12cd`."""
        return "%d.M%d%s" % (int(self.reactor.seconds() * 1e9), next(self._sequence), self._tag)

    # ------------------------------------------------------------ delivery

    def junk_folder(self, user):
        """The Maildir++ directory of a user's Junk folder."""
        return os.path.join(self.maildir(user), ".Junk")

    def junk_count(self, user):
        """How many messages the user's Junk folder holds."""
        total = 0
        for sub in ("new", "cur"):
            try:
                total += len(os.listdir(os.path.join(self.junk_folder(user), sub)))
            except FileNotFoundError:
                pass
        return total

    def deliver(self, recipients, message, sender=None, junk=()):
        """
        Store `message` for `recipients` (addresses or names); aliases expand,
        outside addresses are queued; the copies of the users named in `junk`
        go to their Junk folder. Fires with `Delivered` once all is on disk.
        """
        config = self.office.config
        try:
            expansion = expand(config, recipients)
        except AliasLoop as e:
            log.error("mail not delivered: {error}", error=str(e))
            return defer.fail(e)
        for name in expansion.unknown:
            log.warn("mail for unknown local name {name} dropped", name=name)
        if not expansion.users and not expansion.external:
            return defer.fail(NoRecipients(list(recipients)))
        data = to_lf(message)
        msg_id = self.new_id()
        size = pop3_octets(data)
        # The POP3 size rides in the name (",W=", as Dovecot does), so a
        # login lists a mailbox without reading every message.
        name = "%s,W=%d" % (msg_id, size)
        files, placed, junked = [], [], []
        try:
            for user in expansion.users:
                self._ensure(user)
                base = self.maildir(user)
                if user in junk:
                    base = self.junk_folder(user)
                    for sub in ("tmp", "new", "cur"):
                        ensure_directory(os.path.join(base, sub))
                    junked.append(user)
                else:
                    placed.append(user)
                files.append(PendingFile(os.path.join(base, "tmp", name),
                                         os.path.join(base, "new", name), data))
        except OSError as e:
            return defer.fail(e)
        entry = None
        if expansion.external:
            if self.queue is None:
                return defer.fail(RuntimeError("no outbound queue for %s" % ", ".join(expansion.external)))
            try:
                entry, queue_files = self.queue.prepare(sender or "", expansion.external, data, msg_id)
            except Exception as e:
                return defer.fail(e)
            files.extend(queue_files)
        d = self.writer.write(files)

        def written(_):
            voicemail = is_voicemail(data)
            for user in placed:
                DELIVERED.labels("local").inc()
                self._added(user, _Entry(name, os.path.join(self.maildir(user), "new", name),
                                         size, False, voicemail), voicemail)
            for user in junked:
                DELIVERED.labels("junk").inc()
                self._folder_changed(user, "Junk")
            if entry is not None:
                self.queue.admit(entry)
            log.debug("delivered {id} to {users} {external} (Junk: {junked})", id=msg_id,
                      users=placed, external=expansion.external, junked=junked)
            return Delivered(msg_id, tuple(placed + junked), expansion.external)
        return d.addCallback(written)

    # ------------------------------------------------------------ reading

    def _box(self, user):
        box = self._mailboxes.get(user)
        if box is None:
            box, outdated = self._scan(user)
            self._mailboxes[user] = box
            if outdated:
                self.save_index(user)
        return box

    def _scan(self, user):
        """
        The user's messages from new/ and cur/, each file opened only when
        the Maildir's index (`INDEX`: POP3 size and voicemail of each uid,
        whose file never changes) does not know it yet; the index is written
        again once INDEX_SLACK were read or went.
        """
        if user not in self.office.config.users:
            raise KeyError(user)
        box = {}
        base = self.maildir(user)
        known = _load_index(os.path.join(base, INDEX))
        read = 0
        for sub in ("new", "cur"):
            directory = os.path.join(base, sub)
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            directory += os.sep
            for name in names:
                path = directory + name
                flags = name.partition(":2,")[2] if sub == "cur" else ""
                uid = _uid_of(name)
                if uid in known:
                    size, voicemail = known[uid]
                else:
                    try:
                        head = _read_head(path)
                    except OSError:
                        continue
                    read += 1
                    tag = _SIZE_TAG.search(uid)
                    # Without a size in its name, the file is counted when first asked.
                    size, voicemail = int(tag.group(1)) if tag else None, is_voicemail(head)
                box[uid] = _Entry(uid, path, size, "S" in flags, voicemail, flags=flags)
        return box, read >= INDEX_SLACK or len(known) - (len(box) - read) >= INDEX_SLACK

    def save_index(self, user):
        """Write the index of a scanned mailbox (every size counted first)."""
        box = self._box(user)
        lines = [INDEX_HEADER]
        for uid, entry in box.items():
            if "\n" in uid:
                continue        # no line of its own: read at each scan
            try:
                size = self._size(entry)
            except OSError:
                continue        # gone since the scan
            lines.append("%s %d %s" % (uid, size, "v" if entry.voicemail else "-"))
        try:
            write_atomically(os.path.join(self.maildir(user), INDEX), "\n".join(lines) + "\n")
        except OSError as e:
            log.warn("mail: {user}'s index not written: {error}", user=user, error=str(e))

    def _size(self, entry):
        if entry.size is None:
            with open(entry.path, "rb") as f:
                entry.size = pop3_octets(f.read())
        return entry.size

    def listing(self, user):
        """
        The user's messages oldest first, as a `_Listing` (uids, sizes,
        total) that later deliveries only extend: sorted once, then kept
        until a message goes (no headers read).
        """
        listing = self._listings.get(user)
        if listing is None:
            box = self._box(user)
            uids = sorted(box, key=_order)
            listing = self._listings[user] = _Listing(uids, [self._size(box[uid]) for uid in uids])
        return listing

    def sizes(self, user):
        """[(uid, POP3 size)] of a user's messages, oldest first (no headers read)."""
        listing = self.listing(user)
        return list(zip(listing.uids, listing.sizes))

    def list_messages(self, user):
        """MessageInfo for each message of `user`, oldest first; KeyError for no such user."""
        box = self._box(user)
        out = []
        for uid in sorted(box, key=_order):
            entry = box[uid]
            if entry.summary is None:
                try:
                    with open(entry.path, "rb") as f:
                        head = f.read(_HEADER_READ)
                    end = head.find(b"\n\n")
                    entry.summary = header_summary(head if end < 0 else head[:end + 1])
                except OSError:
                    continue
            date, sender, subject = entry.summary
            out.append(MessageInfo(uid, self._size(entry), entry.seen, entry.voicemail,
                                   date, sender, subject))
        return out

    def read_message(self, user, uid):
        """The message's bytes (LF line ends); KeyError if it is gone."""
        entry = self._box(user).get(uid)
        if entry is None:
            raise KeyError(uid)
        try:
            with open(entry.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            self._box(user).pop(uid, None)
            self._listings.pop(user, None)
            raise KeyError(uid)

    def open_message(self, user, uid):
        """A binary file object of the message (for POP3 to stream); KeyError if gone."""
        entry = self._box(user).get(uid)
        if entry is None:
            raise KeyError(uid)
        try:
            return open(entry.path, "rb")
        except FileNotFoundError:
            raise KeyError(uid)

    # ------------------------------------------------------------ changing

    def delete_message(self, user, uid):
        """Remove one message; KeyError if it is not there."""
        box = self._box(user)
        counts = self.voicemail_counts(user)
        entry = box.pop(uid, None)
        if entry is None:
            raise KeyError(uid)
        self._listings.pop(user, None)
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            pass
        self._announce(user, counts)
        self._changed(user)

    def mark_seen(self, user, uid):
        """Flag a message as read: it moves to cur/ with the S flag (its other flags kept)."""
        entry = self._box(user).get(uid)
        if entry is None:
            raise KeyError(uid)
        if not entry.seen:
            self.set_flags(user, uid, entry.flags + "S")

    def flags(self, user):
        """{uid: Maildir flag letters} of a user's messages ("" for those in new/)."""
        return {uid: entry.flags for uid, entry in self._box(user).items()}

    def set_flags(self, user, uid, letters, sync=True):
        """
        Give a message exactly these Maildir flag letters (`FRS`...): it is
        renamed into cur/ and the directory fsynced, so the change is on disk
        when this returns (with `sync` false the caller calls `sync_flags`
        once after several). KeyError if the message is gone.
        """
        entry = self._box(user).get(uid)
        if entry is None:
            raise KeyError(uid)
        letters = "".join(sorted(set(letters)))
        target = os.path.join(self.maildir(user), "cur", uid + ":2," + letters)
        if target == entry.path:
            return
        counts = self.voicemail_counts(user)
        try:
            os.rename(entry.path, target)
        except FileNotFoundError:
            self._box(user).pop(uid, None)
            self._listings.pop(user, None)
            self._changed(user)
            raise KeyError(uid)
        if sync:
            fsync_directory(os.path.dirname(target))
        entry.path, entry.flags, entry.seen = target, letters, "S" in letters
        self._announce(user, counts)
        self._changed(user)

    def sync_flags(self, user):
        """Put the renames of `set_flags(..., sync=False)` on disk: one fsync of cur/."""
        fsync_directory(os.path.join(self.maildir(user), "cur"))

    def add_message(self, user, message, letters=""):
        """
        Store `message` in the user's own mailbox with these flag letters (no
        aliases, no forwarding: IMAP APPEND); fires with its uid once on disk.
        """
        try:
            self._ensure(user)
            self._box(user)
        except (KeyError, OSError) as e:
            return defer.fail(e)
        data = to_lf(message)
        size = pop3_octets(data)
        uid = "%s,W=%d" % (self.new_id(), size)
        letters = "".join(sorted(set(letters)))
        base = self.maildir(user)
        path = os.path.join(base, "cur", uid + ":2," + letters)
        d = self.writer.write([PendingFile(os.path.join(base, "tmp", uid), path, data)])

        def written(_):
            self._added(user, _Entry(uid, path, size, "S" in letters, is_voicemail(data),
                                     flags=letters), is_voicemail(data))
            return uid
        return d.addCallback(written)

    def voicemail_counts(self, user):
        """(new, heard) voicemail messages of a user."""
        new = heard = 0
        for entry in self._box(user).values():
            if entry.voicemail:
                if entry.seen:
                    heard += 1
                else:
                    new += 1
        return new, heard

    def _added(self, user, entry, voicemail):
        box = self._mailboxes.get(user)
        if box is None:
            if not voicemail:
                return      # read from disk when someone first asks
            box = self._box(user)
            counts = self.voicemail_counts(user)
            if entry.uid in box:
                counts = (counts[0] - 1, counts[1])
        else:
            counts = self.voicemail_counts(user)
        replaced = entry.uid in box
        box[entry.uid] = entry
        listing = self._listings.get(user)
        if listing is not None:
            if not replaced and (not listing.uids or
                                 _order(entry.uid) > _order(listing.uids[-1])):
                listing.append(entry.uid, entry.size)
            else:
                del self._listings[user]
        if voicemail:
            self._announce(user, counts)
        self._changed(user)

    def _changed(self, user):
        for listener in list(self.listeners):
            try:
                listener(user)
            except Exception:
                log.failure("a mailbox listener failed for {user}", user=user)

    def _folder_changed(self, user, folder):
        for listener in list(self.folder_listeners):
            try:
                listener(user, folder)
            except Exception:
                log.failure("a folder listener failed for {user}", user=user)

    def _announce(self, user, before):
        after = self.voicemail_counts(user)
        if after != before:
            self.office.emit(MailboxChanged(user, after[0], after[1]))

    def forget(self, user=None):
        """Drop cached mailbox listings (a user was removed or renamed)."""
        if user is None:
            self._mailboxes.clear()
            self._listings.clear()
            self._ensured.clear()
        else:
            self._mailboxes.pop(user, None)
            self._listings.pop(user, None)
            self._ensured.discard(user)
