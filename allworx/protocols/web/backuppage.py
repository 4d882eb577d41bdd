# -*- test-case-name: allworx.tests.web.test_backup -*-
"""
The Backup/Restore page and the Config history page (SPEC 10, 20).

Backup/Restore: the whole office as one archive (a link to `GET
/api/v1/backup`), its restore (the file is sent by the page's script to
`POST /api/v1/backup`, not as a form, so a large archive is never parsed
in memory), the kept backups (download, delete, "back up now") with the
schedule (`[system] backup_every`, `backup_keep`), and, as before, tap.conf
alone: downloaded, or uploaded and validated whole.

Config history: tap.conf's kept versions with who, when and what, each
with its diff from the one before and a button that makes it the
configuration again (a change like any other, recorded in turn).
"""

from allworx.config import ConfigError, ConfigErrors
from allworx.protocols.web import changes
from allworx.protocols.web.forms import F
from allworx.protocols.web.pagebase import Page, Redirect, SettingsPage

SCHEDULE = (
    F("system.backup_every", "Back up every",
      help="off, or a duration from 1h: 12h, 1d, 1w. Backups go to data_dir/backups."),
    F("system.backup_keep", "Backups kept", help="The newest this many are kept (pre-restore ones count)."),
)


def size_text(size):
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return ("%d %s" % (size, unit)) if unit == "bytes" else ("%.1f %s" % (size, unit))
        size /= 1024.0


class BackupPage(SettingsPage):
    """The whole office's backup and restore; tap.conf alone; the kept backups."""

    slug, title, template = "backup", "Backup/Restore", "backup.html"
    fields = SCHEDULE

    def context(self, ctx, sub):
        out = SettingsPage.context(self, ctx, sub)
        backups = ctx.views.backup
        kept = backups.backups() if backups is not None else []
        out.update({"path": ctx.office.path, "size": len(ctx.office.document_text().encode()),
                    "available": backups is not None,
                    "kept": [dict(b, size_text=size_text(b["size"])) for b in kept],
                    "busy": backups is not None and backups.busy})
        return out

    def do_save(self, ctx, form, sub):
        SettingsPage.do_save(self, ctx, form, sub)
        return "The backup schedule was saved."

    def do_restore(self, ctx, form, sub):
        text = form.get("file") or form.get("text") or ""
        changes.restore(ctx.office, text)
        return "The configuration was restored and applied."

    def _backups(self, ctx):
        if ctx.views.backup is None:
            raise ConfigErrors([ConfigError(None, None, 0, "backups are not available here")])
        return ctx.views.backup

    def do_backup_now(self, ctx, form, sub):
        d = self._backups(ctx).make_backup()
        return d.addCallback(lambda name: "Backup %s written." % name)

    def do_delete_backup(self, ctx, form, sub):
        name = form.get("name", "")
        self._backups(ctx).delete_backup(name)
        return "Deleted %s." % name

    def accepts(self, sub):
        """/backup/tap.conf: the configuration alone."""
        return not sub or sub == ["tap.conf"]

    def download(self, ctx, sub):
        """`/backup/tap.conf` is answered by the admin root; kept archives by the API."""
        return None


class HistoryPage(Page):
    """tap.conf's versions: who changed what and when, the diff, and a revert."""

    slug, title, template = "history", "Config history", "history.html"

    def context(self, ctx, sub):
        backups = ctx.views.backup
        versions = []
        if backups is not None:
            for entry in backups.history():
                version = backups.version(entry["id"])
                versions.append(dict(entry, diff=version["diff"],
                                     time_text=entry["time"].replace("T", " ").replace("Z", " UTC")))
        current = versions[0]["id"] if versions else None
        return {"available": backups is not None, "versions": versions, "current": current}

    def do_revert(self, ctx, form, sub):
        try:
            number = int(form.get("version", ""))
        except ValueError:
            raise ConfigErrors([ConfigError(None, None, 0, "no such version")])
        if ctx.views.backup is None:
            raise ConfigErrors([ConfigError(None, None, 0, "no history is kept here")])
        entry = ctx.views.backup.revert(number, ctx.office.actor_now())
        return Redirect("The configuration is version %d again (kept as version %d)."
                        % (number, entry["id"]), "/history")
