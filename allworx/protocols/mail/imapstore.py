# -*- test-case-name: allworx.tests.mail.test_imap -*-
"""
The IMAP view of the users' Maildirs (SPEC 17): folders, UIDs and flags.

- INBOX is the user's Maildir itself, reached only through the mail store
  (`MailStore`), so POP3, voicemail and IMAP share one set of messages and
  a flag set here counts for message waiting. The other folders are
  Maildir++ subfolders (`USER/.Sent/{tmp,new,cur}`; "a/b" is `.a.b`), the
  special-use ones (`Sent`, `Drafts`, `Trash`, `Junk`) made for every user.
- Flags live in the file name (`:2,DFRST`), as Dovecot and mbsync expect.
- UIDs: a file `allworx-uidlist` in each folder's directory: a first line
  `V UIDVALIDITY UIDNEXT`, then `UID NAME` per message. A UID handed out is
  appended and fsynced before anyone is told of it, so UIDs and UIDVALIDITY
  stay the same across restarts; lines of messages gone stay until they
  outnumber the rest, when the file is replaced atomically with only the
  messages there are (and a torn last line, from a crash, is dropped and
  the file replaced). UIDNEXT is the larger of the first line's and the
  highest UID in the file plus one.
- `Folder` is one folder shared by every session of its user; each session
  has a `View` (its own sequence numbers) that is told of changes and says
  what to report (`changes`): EXPUNGE, EXISTS and FETCH FLAGS lines.
"""

import collections
import os
import re

from twisted.logger import Logger

from allworx.atomicfile import ensure_directory, fsync_directory, write_atomically
from allworx.protocols.mail.durable import PendingFile
from allworx.protocols.mail.imapkeywords import Keywords
from allworx.protocols.mail.store import pop3_octets, to_lf

log = Logger()

UIDLIST = "allworx-uidlist"
SUBSCRIPTIONS = "allworx-subscriptions"
SEPARATOR = "/"
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}
JUNK = "Junk"
TRASH = "Trash"
FLAG_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S",
                "\\Deleted": "T"}
LETTER_FLAGS = {v: k for k, v in FLAG_LETTERS.items()}
_BY_LOWER = {k.lower(): v for k, v in FLAG_LETTERS.items()}
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_NAME_OK = re.compile(r"^[^\x00-\x1f\x7f.%*\\]{1,200}$")
CHANGE_LOG = 4096           # changes a folder remembers for its views (older: a full look)
COMPACT_AFTER = 100         # stale uidlist lines (of messages gone) always allowed
IDLE_FOLDERS = 16           # folders no session has open kept loaded (the last left)...
IDLE_MESSAGES = 250000      # ...holding at most this many messages in all


class FolderError(Exception):
    """A folder operation refused, with the reason for the client (a NO)."""


def letters_of(flags, keywords=None):
    """Maildir letters of IMAP flag names; keywords (imapkeywords.Keywords) given letters too."""
    out = set()
    for flag in flags:
        letter = _BY_LOWER.get(flag.lower())
        if letter is None and keywords is not None and not flag.startswith("\\"):
            letter = keywords.letter(flag, make=True)
        if letter:
            out.add(letter)
    return "".join(sorted(out))


def flags_of(letters, keywords=None):
    """IMAP flag names of Maildir letters (the keywords' too, given the folder's)."""
    found = [flag for flag in SYSTEM_FLAGS if FLAG_LETTERS[flag] in letters]
    if keywords is not None:
        found.extend(n for n in (keywords.name(c) for c in letters if c.islower()) if n)
    return found


def _order(name):
    stamp, _, rest = name.partition(".")
    return (int(stamp) if stamp.isdigit() else 0, name)


def check_name(name):
    """The folder name, or FolderError when it cannot be one (on disk or in IMAP)."""
    parts = name.split(SEPARATOR)
    if not all(_NAME_OK.match(p) for p in parts):
        raise FolderError("bad mailbox name")
    return name


class InboxStorage:
    """INBOX: the user's Maildir, all through the mail store."""

    def __init__(self, store, user):
        self.store = store
        self.user = user
        self.path = store.maildir(user)

    def entries(self):
        return self.store.flags(self.user)

    def open(self, name):
        return self.store.open_message(self.user, name)

    def set_flags(self, name, letters, sync=True):
        self.store.set_flags(self.user, name, letters, sync)

    def sync(self):
        self.store.sync_flags(self.user)

    def delete(self, name):
        self.store.delete_message(self.user, name)

    def add(self, data, letters):
        return self.store.add_message(self.user, data, letters)

    def forget(self):
        """Nothing kept here: the store keeps INBOX current."""


class SubStorage:
    """A Maildir++ subfolder, kept here (nothing else reads it)."""

    def __init__(self, store, path):
        self.store = store
        self.path = path
        self._files = None      # name -> (path, letters)

    def _scan(self):
        files = {}
        for sub in ("new", "cur"):
            try:
                names = os.listdir(os.path.join(self.path, sub))
            except FileNotFoundError:
                continue
            for fname in names:
                name, _, info = fname.partition(":2,")
                files[name] = (os.path.join(self.path, sub, fname), info if sub == "cur" else "")
        return files

    @property
    def files(self):
        if self._files is None:
            self._files = self._scan()
        return self._files

    def entries(self):
        return {name: letters for name, (_, letters) in self.files.items()}

    def forget(self):
        """Something else put mail here (the store's Junk delivery): look again."""
        self._files = None

    def open(self, name):
        try:
            return open(self.files[name][0], "rb")
        except (KeyError, FileNotFoundError):
            raise KeyError(name)

    def set_flags(self, name, letters, sync=True):
        path, old = self.files[name]
        target = os.path.join(self.path, "cur", name + ":2," + letters)
        if target != path:
            os.rename(path, target)
            if sync:
                self.sync()
            self.files[name] = (target, letters)

    def sync(self):
        fsync_directory(os.path.join(self.path, "cur"))

    def delete(self, name):
        path, _ = self.files.pop(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def add(self, data, letters):
        data = to_lf(data)
        name = "%s,W=%d" % (self.store.new_id(), pop3_octets(data))
        path = os.path.join(self.path, "cur", name + ":2," + letters)
        d = self.store.writer.write([PendingFile(os.path.join(self.path, "tmp", name), path, data)])

        def written(_):
            self.files[name] = (path, letters)
            return name
        return d.addCallback(written)


class Folder:
    """
    One folder of one user, shared by that user's sessions: the UID of each
    message (`uids`, name -> UID; `order`, [(UID, name)] ascending), its flag
    letters (`flags`), and the views to tell of changes.

    Each change (a UID gone, a UID's flags changed) is numbered (`version`)
    and kept in `log` (the last CHANGE_LOG of them, those after
    `log_start`), so a view asks only what changed since it was last told
    rather than comparing every message: a delivery to a big INBOX idled on
    by many sessions costs each of them the change, not the mailbox.
    """

    def __init__(self, name, storage, now):
        self.name = name
        self.keywords = Keywords(storage.path)
        self.storage = storage
        self.views = set()
        self.uids = {}
        self.order = []
        self.by_uid = {}
        self.flags = {}
        self.version = 0
        self.log = []           # (version, UID, gone) for versions log_start+1 .. version
        self.log_start = 0
        self.stale = 0          # lines in the uidlist of messages gone
        self.rewrite = False    # the uidlist must be replaced whole (a torn line)
        self._snapshot = None   # (UIDs in order, {UID: letters}) for new views, until a change
        self._unseen = self.first_unseen = None     # how many are not seen (and the first), until a change
        self.uidvalidity, self.uidnext = self._load(now)
        self.reconcile()

    def _uidlist(self):
        return os.path.join(self.storage.path, UIDLIST)

    def _load(self, now):
        try:
            with open(self._uidlist()) as f:
                text = f.read()
            lines = text.splitlines()
            if not text.endswith("\n"):
                lines.pop()             # an append cut short by a crash: never told
                self.rewrite = True
            _, validity, nextuid = lines[0].split()
            for line in lines[1:]:
                uid, name = line.split(" ", 1)
                self.uids[name] = int(uid)
            return int(validity), max([int(nextuid)] + [u + 1 for u in self.uids.values()])
        except FileNotFoundError:
            return max(1, int(now)) & 0xFFFFFFFF, 1
        except (ValueError, IndexError):
            log.warn("imap: {path} is damaged: UIDs start again", path=self._uidlist())
            self.uids = {}
            return max(1, int(now)) & 0xFFFFFFFF, 1

    def _save(self):
        lines = ["V %d %d" % (self.uidvalidity, self.uidnext)]
        lines.extend("%d %s" % (uid, name) for uid, name in self.order)
        write_atomically(self._uidlist(), "\n".join(lines) + "\n")
        self.stale = 0
        self.rewrite = False

    def _append(self, new):
        with open(self._uidlist(), "a") as f:
            f.write("".join("%d %s\n" % (self.uids[name], name) for name in new))
            f.flush()
            os.fsync(f.fileno())

    def _note(self, uid, gone):
        self.version += 1
        self.log.append((self.version, uid, gone))
        if len(self.log) > CHANGE_LOG:
            drop = len(self.log) // 2
            self.log_start = self.log[drop - 1][0]
            del self.log[:drop]

    def changes_since(self, version):
        """[(UID, gone)] changed after `version`, or None when that is older than the log."""
        if version < self.log_start:
            return None
        return [(uid, gone) for _, uid, gone in self.log[version - self.log_start:]]

    def reconcile(self):
        """Match the UIDs to the messages there are now; True when anything changed."""
        current = self.storage.entries()
        old = self.flags
        changed = current != old
        if changed:
            uids = self.uids
            for name, letters in current.items():
                if old.get(name, letters) != letters and name in uids:
                    self._note(uids[name], False)
        gone = [name for name in self.uids if name not in current]
        for name in gone:
            self._note(self.uids.pop(name), True)
        new = sorted((n for n in current if n not in self.uids), key=_order)
        for name in new:
            self.uids[name] = self.uidnext
            self.uidnext += 1
        self.flags = current
        if gone or len(self.order) + len(new) != len(self.uids):
            self.order = sorted((uid, name) for name, uid in self.uids.items())
            self.by_uid = {uid: name for uid, name in self.order}
        elif new:       # new UIDs are above every other: they go at the end
            for name in new:
                self.order.append((self.uids[name], name))
                self.by_uid[self.uids[name]] = name
        self.stale += len(gone)
        if changed or gone or new:
            self._snapshot = self._unseen = None
        if self.rewrite or self.stale > max(COMPACT_AFTER, len(self.uids)) or \
                not os.path.exists(self._uidlist()):
            self._save()
        elif new:
            self._append(new)
        return changed or bool(gone or new)

    def snapshot(self):
        """
        (UIDs in order, {UID: flag letters}) as they are now, shared by the
        views opened until the folder next changes: never changed in place.
        """
        if self._snapshot is None:
            flags = self.flags
            self._snapshot = ([uid for uid, _ in self.order],
                              {uid: flags[name] for uid, name in self.order})
        return self._snapshot

    def refresh(self):
        """The storage changed (delivery, POP3, phone, another session): tell every view."""
        if self.reconcile():
            for view in list(self.views):
                view.folder_changed()

    def set_flags(self, name, letters):
        if self.set_flags_of([(name, letters)]):
            raise KeyError(name)

    def set_flags_of(self, changes):
        """
        Several messages' flags ((name, letters) pairs) with one directory
        fsync, done before this returns, and one refresh of the views
        (not one of each per message: a STORE of a thousand is one command).
        The names of messages that were gone.
        """
        gone = set()
        try:
            for name, letters in changes:
                try:
                    self.storage.set_flags(name, letters, sync=False)
                except KeyError:
                    gone.add(name)
        finally:
            if len(gone) < len(changes):
                self.storage.sync()
            self.refresh()
        return gone

    def expunge(self, names):
        for name in names:
            try:
                self.storage.delete(name)
            except KeyError:
                pass
        self.refresh()

    def add(self, data, letters):
        """Store a message; fires with its UID once on disk and numbered."""
        d = self.storage.add(data, letters)

        def added(name):
            self.refresh()
            return self.uids[name]
        return d.addCallback(added)

    def status(self):
        if self._unseen is None:        # and the place of the first (SELECT's [UNSEEN n])
            flags = self.flags
            self._unseen = sum(1 for letters in flags.values() if "S" not in letters)
            self.first_unseen = next((i + 1 for i, (_, name) in enumerate(self.order)
                                      if "S" not in flags[name]), None) if self._unseen else None
        return {"MESSAGES": len(self.order), "RECENT": 0, "UIDNEXT": self.uidnext,
                "UIDVALIDITY": self.uidvalidity, "UNSEEN": self._unseen}


class Mailboxes:
    """
    Every user's folders, loaded when first used and kept while sessions
    use them; the store's listener keeps INBOX current. The last folders
    left (`idle`, IDLE_FOLDERS of them, IDLE_MESSAGES at most) stay loaded
    too, so the next SELECT neither reads the uidlist nor lists the Maildir
    again: one is taken back only while its uidlist (and, for a subfolder,
    its new/ and cur/) are as they were when it was left, else loaded anew.
    """

    def __init__(self, store, reactor):
        self.store = store
        self.reactor = reactor
        self.folders = {}        # (user, name) -> Folder
        self.idle = collections.OrderedDict()   # (user, name) -> [Folder, signature, dirty]
        self.trainers = []       # callables (user, message bytes, is_spam): the spam filter
        store.listeners.append(self.inbox_changed)
        store.folder_listeners.append(self.folder_changed)

    def filed(self, user, source, target, data):
        """
        A message was copied, moved or appended (`source` None) into
        `target`: into Junk it is spam to learn; out of Junk into a folder
        other than Trash, ham.
        """
        if target == JUNK and source != JUNK:
            is_spam = True
        elif source == JUNK and target not in (JUNK, TRASH):
            is_spam = False
        else:
            return
        for trainer in list(self.trainers):
            try:
                trainer(user, data, is_spam)
            except Exception:
                log.failure("imap: training {user}'s spam filter failed", user=user)

    def inbox_changed(self, user):
        folder = self.folders.get((user, "INBOX"))
        if folder is not None:
            folder.refresh()
        kept = self.idle.get((user, "INBOX"))
        if kept is not None:
            kept[2] = True      # matched to the store when next used

    def folder_changed(self, user, name):
        """The store put mail in another folder (Junk): its open sessions see it."""
        self.idle.pop((user, name), None)
        folder = self.folders.get((user, name))
        if folder is not None:
            folder.storage.forget()
            folder.refresh()

    def _dir(self, user, name):
        root = self.store.maildir(user)
        if name == "INBOX":
            return root
        return os.path.join(root, "." + name.replace(SEPARATOR, "."))

    def ensure_user(self, user):
        """Make the user's Maildir and special-use folders, subscribed, if missing."""
        root = self.store.maildir(user)
        for sub in ("tmp", "new", "cur"):
            ensure_directory(os.path.join(root, sub))
        made = False
        for name in SPECIAL_USE:
            if not os.path.isdir(os.path.join(self._dir(user, name), "cur")):
                for sub in ("tmp", "new", "cur"):
                    ensure_directory(os.path.join(self._dir(user, name), sub))
                made = True
        if made or not os.path.exists(os.path.join(root, SUBSCRIPTIONS)):
            subs = self.subscriptions(user) | {"INBOX"} | set(SPECIAL_USE)
            self.save_subscriptions(user, subs)

    def names(self, user):
        """Every folder of the user: INBOX first, then the others sorted."""
        root = self.store.maildir(user)
        out = []
        try:
            entries = os.listdir(root)
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if entry.startswith(".") and entry not in (".", "..") and \
                    os.path.isdir(os.path.join(root, entry, "cur")):
                out.append(entry[1:].replace(".", SEPARATOR))
        return ["INBOX"] + sorted(out)

    def exists(self, user, name):
        return name == "INBOX" or os.path.isdir(os.path.join(self._dir(user, name), "cur"))

    def folder(self, user, name):
        """The Folder (shared), or None when there is no such folder."""
        if name.upper() == "INBOX":
            name = "INBOX"
        key = (user, name)
        folder = self.folders.get(key)
        if folder is None:
            if not self.exists(user, name):
                self.idle.pop(key, None)
                return None
            folder = self._take_idle(key)
        if folder is None:
            if name == "INBOX":
                storage = InboxStorage(self.store, user)
            else:
                storage = SubStorage(self.store, self._dir(user, name))
            folder = self.folders[key] = Folder(name, storage, self.reactor.seconds())
        return folder

    def release(self, folder, view):
        """A view is done with its folder; an unused folder goes to the idle ones."""
        folder.views.discard(view)
        if not folder.views:
            for key, f in list(self.folders.items()):
                if f is folder:
                    del self.folders[key]
                    self._keep_idle(key, folder)

    @staticmethod
    def _signature(folder):
        """What must not have changed behind an idle folder's back (None: keep nothing)."""
        paths = [folder._uidlist()]
        if not isinstance(folder.storage, InboxStorage):
            paths += [os.path.join(folder.storage.path, sub) for sub in ("new", "cur")]
        out = []
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                return None
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _keep_idle(self, key, folder):
        signature = self._signature(folder)
        if signature is None:
            return
        self.idle.pop(key, None)
        self.idle[key] = [folder, signature, False]
        total = sum(len(f.uids) for f, _, _ in self.idle.values())
        while self.idle and (len(self.idle) > IDLE_FOLDERS or total > IDLE_MESSAGES):
            _, (dropped, _, _) = self.idle.popitem(last=False)
            total -= len(dropped.uids)

    def _take_idle(self, key):
        """The idle folder of `key` if it is still what is on disk, or None."""
        kept = self.idle.pop(key, None)
        if kept is None:
            return None
        folder, signature, dirty = kept
        if self._signature(folder) != signature:
            return None
        if dirty:
            folder.reconcile()
        self.folders[key] = folder
        return folder

    def create(self, user, name):
        check_name(name)
        if name.upper() == "INBOX" or self.exists(user, name):
            raise FolderError("mailbox already exists")
        parts = name.split(SEPARATOR)           # and the superior names it needs (RFC 3501 6.3.3)
        for n in (SEPARATOR.join(parts[:i]) for i in range(1, len(parts) + 1)):
            for sub in ("tmp", "new", "cur"):
                ensure_directory(os.path.join(self._dir(user, n), sub))

    def delete(self, user, name):
        if name.upper() == "INBOX" or name in SPECIAL_USE:
            raise FolderError("this mailbox cannot be deleted")
        if not self.exists(user, name):
            raise FolderError("no such mailbox")
        if any(n.startswith(name + SEPARATOR) for n in self.names(user)):
            raise FolderError("mailbox has inferior hierarchical names")
        folder = self.folders.pop((user, name), None)
        self.idle.pop((user, name), None)
        path = self._dir(user, name)
        for sub in ("tmp", "new", "cur"):
            d = os.path.join(path, sub)
            for f in os.listdir(d):
                os.unlink(os.path.join(d, f))
            os.rmdir(d)
        for f in os.listdir(path):
            os.unlink(os.path.join(path, f))
        os.rmdir(path)
        if folder is not None:
            folder.reconcile()
            for view in list(folder.views):
                view.folder_changed()

    def rename(self, user, old, new):
        check_name(new)
        if old.upper() == "INBOX" or old in SPECIAL_USE:
            raise FolderError("this mailbox cannot be renamed")
        if not self.exists(user, old):
            raise FolderError("no such mailbox")
        # its inferior names go with it (RFC 3501 6.3.5): Work/Sub becomes New/Sub
        moves = [(n, new + n[len(old):]) for n in [old] + sorted(
            n for n in self.names(user) if n.startswith(old + SEPARATOR))]
        if any(self.exists(user, check_name(to)) for _, to in moves):
            raise FolderError("mailbox already exists")
        if any(getattr(self.folders.get((user, n)), "views", None) for n, _ in moves):
            raise FolderError("mailbox is in use")      # selected (APPEND or COPY leave none)
        for n, to in moves:
            self.folders.pop((user, n), None)
            self.idle.pop((user, n), None)
            self.idle.pop((user, to), None)
            os.rename(self._dir(user, n), self._dir(user, to))

    def subscriptions(self, user):
        try:
            with open(os.path.join(self.store.maildir(user), SUBSCRIPTIONS)) as f:
                return {line for line in f.read().splitlines() if line}
        except FileNotFoundError:
            return set()

    def save_subscriptions(self, user, names):
        write_atomically(os.path.join(self.store.maildir(user), SUBSCRIPTIONS),
                         "".join(n + "\n" for n in sorted(names)))
