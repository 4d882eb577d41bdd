# -*- test-case-name: allworx.tests.web.test_backup -*-
"""
The API routes of backups and tap.conf's history (SPEC 20), added to
`OfficeApi`'s routes when this module is imported (the web service does):

- `GET /api/v1/backup`: the whole office as a .tar.gz, streamed: each piece
  is made in a thread (`IBackups.archive_chunks`) and written when the
  connection takes it (a push producer), so memory does not grow with it;
- `POST /api/v1/backup` with such an archive as the body (Content-Type
  application/gzip): restored (`IBackups.restore`), or 400 saying why and
  nothing changed; the body goes to a file under data_dir
  (`large_bodies`, up to 4 GB, refused 507 when there is no room);
- `GET /api/v1/backup/tap.conf`: the configuration alone (`PUT
  /api/v1/backup` with {"text"} still restores it alone: api.py);
- `GET /api/v1/backups`, `POST /api/v1/backups` (one now),
  `GET`/`DELETE /api/v1/backups/{name}`: the kept backups;
- `GET /api/v1/config/history`, `GET /api/v1/config/history/{id}` (with
  its diff), `POST /api/v1/config/history/{id}/revert`.
"""

import time

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from allworx.backup import BackupError
from allworx.protocols.web.admin import actor_of
from allworx.protocols.web.api import ApiError, OfficeApi, guarded

log = Logger()

app = OfficeApi.app

ARCHIVE_TYPES = (b"application/gzip", b"application/x-gzip", b"application/octet-stream",
                 b"application/x-compressed-tar")
MAX_UPLOAD = 4 * 1024 ** 3
FILE_CHUNK = 256 * 1024


def large_bodies(backups):
    """The routes whose body is an archive: {(method, path): (limit, file maker)}."""
    return {(b"POST", b"/api/v1/backup"): (MAX_UPLOAD, backups.upload_file)}


@implementer(IPushProducer)
class _Flow:
    """Whether the connection wants more (paused by the transport) or went away."""

    def __init__(self):
        self.stopped = False
        self._resumed = None

    def pauseProducing(self):
        if self._resumed is None:
            self._resumed = defer.Deferred()

    def resumeProducing(self):
        waiting, self._resumed = self._resumed, None
        if waiting is not None:
            waiting.callback(None)

    def stopProducing(self):
        self.stopped = True
        self.resumeProducing()

    def ready(self):
        """A Deferred that fires when more may be written."""
        return self._resumed if self._resumed is not None else defer.succeed(None)


@defer.inlineCallbacks
def stream(request, pieces, defer_to_thread):
    """
    Write each piece of the iterator `pieces` (each made in a thread) as the
    connection takes it; fires (with b"", for klein to finish the answer)
    when all is written. A failure part way cuts the connection, so the
    client sees an incomplete download, never a complete-looking one.
    """
    flow = _Flow()
    request.registerProducer(flow, True)
    request.notifyFinish().addErrback(lambda _: flow.stopProducing())
    try:
        while not flow.stopped:
            piece = yield defer_to_thread(next, pieces, None)
            if piece is None or flow.stopped:
                break
            request.write(piece)
            yield flow.ready()
    except defer.CancelledError:
        flow.stopped = True         # the client went away
    except Exception:
        log.failure("web: a download failed part way; its connection is cut")
        request.channel.transport.abortConnection()
    finally:
        try:
            pieces.close()          # a generator's files closed now
        except (AttributeError, ValueError):
            pass                    # not a generator, or still in its thread (left to GC)
        request.unregisterProducer()
    return b""


def _file_pieces(path):
    with open(path, "rb") as f:
        while True:
            piece = f.read(FILE_CHUNK)
            if not piece:
                return
            yield piece


def _backups(api):
    backups = api.ctx.views.backup
    if backups is None:
        raise ApiError(503, "unavailable", "backups are not available on this server")
    return backups


def _attachment(request, name, content_type=b"application/gzip"):
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-disposition", b'attachment; filename="%s"' % name.encode("ascii"))
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")


def _stream_answer(api, request, name, pieces):
    _attachment(request, name)
    return stream(request, pieces, api.ctx.defer_to_thread)


@app.route("/v1/backup", methods=["GET"])
@guarded
def backup_download(self, request):
    """The whole office as a .tar.gz, streamed."""
    backups = _backups(self)
    config = self.ctx.office.config
    stamp = self.ctx.clock.seconds()
    name = "allworx-%s-%s.tar.gz" % (config.system.hostname,
                                     time.strftime("%Y%m%d-%H%M%S", time.gmtime(stamp)))
    log.info("web: a backup of the whole office is being downloaded")
    return _stream_answer(self, request, name, backups.archive_chunks())


@app.route("/v1/backup/tap.conf", methods=["GET"])
@guarded
def backup_config(self, request):
    """tap.conf as it stands."""
    _attachment(request, "tap.conf", b"text/plain; charset=utf-8")
    return self.ctx.office.document_text().encode("utf-8")


@app.route("/v1/backup", methods=["POST"])
def backup_restore(self, request):
    """Restore the whole office from the archive in the body; checked whole first."""
    d = self.authorize(request, body_types=ARCHIVE_TYPES)

    def restore(_):
        return _backups(self).restore(request.content, actor_of(self.ctx, request))

    def refused(failure):
        failure.trap(BackupError)
        log.warn("web: a restore was refused: {why}", why=str(failure.value))
        raise ApiError(400, "invalid archive", str(failure.value))
    d.addCallback(restore)
    d.addErrback(refused)
    d.addCallback(lambda answer: (self.changed("everything (whole restore)"),
                                  self.respond(request, 200, answer))[1])
    d.addErrback(self.failed, request)
    return d


@app.route("/v1/backups", methods=["GET"])
@guarded
def backups_list(self, request):
    """The kept backups, newest first."""
    return {"backups": _backups(self).backups()}


@app.route("/v1/backups", methods=["POST"])
@guarded
def backups_make(self, request):
    """Write a backup now; answers its name."""
    d = _backups(self).make_backup()
    return d.addCallback(lambda name: {"name": name})


@app.route("/v1/backups/<name>", methods=["GET"])
@guarded
def backups_get(self, request, name):
    """One kept backup, streamed."""
    path = _backups(self).backup_path(name)
    return _stream_answer(self, request, name, _file_pieces(path))


@app.route("/v1/backups/<name>", methods=["DELETE"])
@guarded
def backups_delete(self, request, name):
    """Remove a kept backup."""
    _backups(self).delete_backup(name)
    request.setResponseCode(204)
    return b""


def _number(text):
    try:
        return int(text)
    except ValueError:
        raise KeyError("config version %s" % text)


@app.route("/v1/config/history", methods=["GET"])
@guarded
def history_list(self, request):
    """tap.conf's kept versions, newest first."""
    return {"versions": _backups(self).history()}


@app.route("/v1/config/history/<id>", methods=["GET"])
@guarded
def history_get(self, request, id):
    """One version: who, when, sections, its diff from the one before and its text."""
    return _backups(self).version(_number(id))


@app.route("/v1/config/history/<id>/revert", methods=["POST"])
@guarded
def history_revert(self, request, id):
    """Make a version the configuration again (validated; kept as a new version)."""
    entry = _backups(self).revert(_number(id), self.ctx.office.actor_now())
    self.changed("the configuration (reverted to version %s)" % id)
    return {"reverted": _number(id), "version": entry}
