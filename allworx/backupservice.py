# -*- test-case-name: allworx.tests.core.test_backupservice -*-
"""
Backups of the whole office, restores and the history of tap.conf, as the
web sees them (`allworx.interfaces.IBackups`).

- Kept backups: `data_dir/backups/allworx-YYYYmmdd-HHMMSS[-why].tar.gz`,
  made every `[system] backup_every` (off by default) and before each
  restore; the newest `[system] backup_keep` are kept.
- A restore (`restore(fileobj, actor)`): the uploaded archive (already on
  disk under data_dir) is checked whole (allworx.backup.check_archive, and
  its tap.conf read as this server would: `Office.preview_text`); then the
  state before is written as a backup; then the data is extracted into
  `data_dir/.restore-new-*`. Up to there a failure changes nothing. Then
  the services holding data are stopped and built again around the swap
  (`restart(swap)`, given by the server: every protocol service is stopped,
  `swap` renames the old data aside and the new in and replaces tap.conf
  through the office, then the services are built afresh and started, so
  each reads its data (mailboxes, leases, queue, keys) from the new files).
  The answer goes out before that: the page and the API say the services
  are restarting, and the admin logs in again (sessions do not survive).

Everything that touches files runs in a thread (`defer_to_thread`).
"""

import calendar
import os
import re
import shutil
import tempfile
import time

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger
from zope.interface import implementer

from allworx.atomicfile import ensure_directory
from allworx.backup import (
    BackupError, archive_chunks, check_archive, extract_data, remove_tree, swap_data,
    write_archive)
from allworx.config.hidden import hide_secrets
from allworx.interfaces import IBackups

log = Logger()

BACKUP_NAME = re.compile(r"^allworx-\d{8}-\d{6}(-[a-z-]+)?\.tar\.gz$")
MAX_UPLOAD = 4 * 1024 ** 3          # bytes of an uploaded archive
SPARE = 64 * 1024 * 1024            # free space left beside an upload
RESTART_DELAY = 0.5                 # seconds between the answer and the restart


def backup_name(when, reason=""):
    """`allworx-20240102-030405[-reason].tar.gz` for a POSIX time (UTC)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
    return "allworx-%s%s.tar.gz" % (stamp, "-" + reason if reason else "")


@implementer(IBackups)
class BackupService(service.Service):
    """
    The backups of `office` (its data_dir and tap.conf). `restart(swap)`
    restarts the services around `swap()` (a Deferred); without it a
    restore only swaps (unit tests give their own).
    """

    name = "backup"

    def __init__(self, office, reactor, restart=None, defer_to_thread=threads.deferToThread,
                 now=time.time):
        self.office = office
        self.reactor = reactor
        self.restart = restart if restart is not None else (lambda swap: swap())
        self.defer_to_thread = defer_to_thread
        self.now = now
        self._timer = None
        self.busy = False           # a restore or a backup is being made
        self._writing = defer.succeed(None)

    # ------------------------------------------------------------ places

    @property
    def data_dir(self):
        return self.office.config.system.data_dir

    @property
    def directory(self):
        return os.path.join(self.data_dir, "backups")

    # ------------------------------------------------------------ life

    def startService(self):
        service.Service.startService(self)
        self._schedule()

    def stopService(self):
        service.Service.stopService(self)
        self._cancel()
        return self._writing

    def config_changed(self, event):
        """The server calls it on each ConfigChanged: `[system] backup_every` may have changed."""
        if event.touches("system"):
            self._schedule()

    def _cancel(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _schedule(self):
        """Set the timer for the next scheduled backup (after the newest kept one)."""
        self._cancel()
        every = self.office.config.system.backup_every
        if not every or not self.running:
            return
        kept = self._list()
        last = kept[0]["when"] if kept else None
        delay = every if last is None else max(0, last + every - self.now())
        self._timer = self.reactor.callLater(delay, self._scheduled)

    def _scheduled(self):
        self._timer = None
        d = self.make_backup("")
        d.addErrback(lambda f: log.failure("backup: the scheduled backup failed", f))
        d.addBoth(lambda _: self._schedule())

    # ------------------------------------------------------------ backups

    def archive_chunks(self):
        return archive_chunks(self.office.document_text(), self.data_dir)

    def _list(self):
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if not BACKUP_NAME.match(name):
                continue
            try:
                st = os.stat(os.path.join(self.directory, name))
            except OSError:
                continue
            when = calendar.timegm(time.strptime(name[8:23], "%Y%m%d-%H%M%S"))
            out.append({"name": name, "size": st.st_size, "when": when,
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))})
        out.sort(key=lambda b: b["name"][8:23], reverse=True)
        return out

    def backups(self):
        return [{k: b[k] for k in ("name", "size", "time")} for b in self._list()]

    def backup_path(self, name):
        if not isinstance(name, str) or not BACKUP_NAME.match(name):
            raise KeyError("backup %s" % name)
        path = os.path.join(self.directory, name)
        if not os.path.isfile(path):
            raise KeyError("backup %s" % name)
        return path

    def delete_backup(self, name):
        os.unlink(self.backup_path(name))
        log.info("backup: {name} deleted", name=name)

    def make_backup(self, reason="manual"):
        """Write a backup under data_dir/backups (one at a time); a Deferred of its name."""
        text = self.office.document_text()
        data_dir, directory = self.data_dir, self.directory
        name = backup_name(self.now(), "" if reason in ("", "scheduled") else reason)
        keep = self.office.config.system.backup_keep

        result = defer.Deferred()

        def write(_):
            d = self.defer_to_thread(_write_backup, directory, name, text, data_dir, keep)

            def done(size):
                log.info("backup: {name} written ({size} bytes)", name=name, size=size)
                result.callback(name)
            # The chain only waits for this write; the caller hears how it went.
            return d.addCallbacks(done, result.errback)
        self._writing = self._writing.addBoth(write)
        return result

    # ------------------------------------------------------------ restoring

    def upload_file(self, length=None):
        """A temporary file under data_dir for an upload; BackupError if it would not fit."""
        if length is not None and length > MAX_UPLOAD:
            raise BackupError("an archive may have at most %d bytes" % MAX_UPLOAD)
        ensure_directory(self.data_dir)
        free = free_space(self.data_dir)
        if length is not None and length + SPARE > free:
            raise BackupError("not enough free space in %s for %d bytes (%d free)"
                              % (self.data_dir, length, free))
        return tempfile.TemporaryFile(prefix=".upload-", dir=self.data_dir)

    def restore(self, fileobj, actor):
        if self.busy:
            return defer.fail(BackupError("a restore is already under way"))
        self.busy = True
        d = self._restore(fileobj, actor)

        def idle(result):
            self.busy = False
            return result
        return d.addErrback(idle)

    @defer.inlineCallbacks
    def _restore(self, fileobj, actor):
        manifest = yield self.defer_to_thread(check_archive, fileobj)
        # Read as this server would read it (ConfigErrors: nothing changes).
        config = self.office.preview_text(manifest.config_text)
        target = config.system.data_dir
        pre = yield self.make_backup("pre-restore")
        stamp = "%d-%d" % (self.now(), os.getpid())
        staged = os.path.join(target, ".restore-new-" + stamp)
        ensure_directory(target)
        try:
            yield self.defer_to_thread(extract_data, fileobj, staged)
        except Exception:
            yield self.defer_to_thread(remove_tree, staged)
            raise
        log.info("backup: restoring {files} file(s) ({bytes} bytes), the state before kept "
                 "as {pre}", files=manifest.files, bytes=manifest.size, pre=pre)
        answer = {"restored": True, "pre_restore_backup": pre, "files": manifest.files,
                  "bytes": manifest.size, "restarting": True}
        self.reactor.callLater(RESTART_DELAY, self._swap_in, target, staged, stamp,
                               manifest.config_text, actor)
        return answer

    def _swap_in(self, target, staged, stamp, text, actor):
        graveyard = os.path.join(target, ".restore-old-" + stamp)

        @defer.inlineCallbacks
        def swap():
            try:
                yield self.defer_to_thread(swap_data, target, staged, graveyard)
                self.office.replace_text(text, actor=(_name(actor), "restore"))
            except Exception:
                log.failure("backup: the restore could not swap the data in; the state "
                            "before is in {backups}", backups=self.directory)
                raise
            finally:
                yield self.defer_to_thread(remove_tree, staged)
            yield self.defer_to_thread(remove_tree, graveyard)
            log.info("backup: restore done")

        d = defer.maybeDeferred(self.restart, swap)
        d.addErrback(lambda f: log.failure("backup: the restore failed", f))

        def idle(_):
            self.busy = False
        return d.addBoth(idle)

    # ------------------------------------------------------------ history

    def _history(self):
        history = self.office.history
        if history is None:
            raise KeyError("configuration history (not kept on this server)")
        return history

    def history(self):
        history = self.office.history
        return history.entries() if history is not None else []

    def version(self, number):
        history = self._history()
        entry = history.entry(number)
        # Shown, not kept: the secrets' values masked (SPEC 11).
        return dict(entry, diff=hide_secrets(history.diff(number)),
                    text=hide_secrets(history.text(number)), previous=history.previous(number))

    def revert(self, number, actor):
        text = self._history().text(number)
        self.office.replace_text(text, actor=actor)
        log.info("config: reverted to version {number} by {actor}", number=number,
                 actor=_name(actor))
        return self._history().entries()[0]


def free_space(path):
    """Bytes free for us on the file system of `path`."""
    return shutil.disk_usage(path).free


def _name(actor):
    return actor[0] if isinstance(actor, tuple) else actor


def _write_backup(directory, name, text, data_dir, keep):
    """Write one backup (via a temporary name), then keep only the newest `keep`."""
    ensure_directory(directory)
    path = os.path.join(directory, name)
    tmp = os.path.join(directory, ".tmp-" + name)
    try:
        size = write_archive(tmp, text, data_dir)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    names = sorted((n for n in os.listdir(directory) if BACKUP_NAME.match(n)),
                   key=lambda n: n[8:23], reverse=True)
    for old in names[keep:]:
        try:
            os.unlink(os.path.join(directory, old))
        except OSError:
            pass
    return size


__all__ = ["BackupService", "BackupError", "backup_name"]
