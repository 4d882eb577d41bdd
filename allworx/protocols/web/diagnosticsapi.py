# -*- test-case-name: allworx.tests.web.test_diagnostics -*-
"""
`POST /api/v1/diagnostics/{ping|dns|tcp|traceroute}` (SPEC 20), added to
`OfficeApi`'s routes when this module is imported (the web service does).

The body is JSON `{"target", "port" (tcp), "server" (dns)}`, checked by
`allworx.diagnostics.parse_request` (400 in the errors format naming each bad
key); the answer is `text/plain` written line by line as the run goes, the
last line its summary. At most two runs go at once (429 beyond); a client
that goes away stops its run (and the child process).
"""

import weakref

from twisted.internet import defer

from allworx import diagnostics
from allworx.protocols.web.api import ApiError, OfficeApi, guarded

app = OfficeApi.app

# One runner per admin context (its cap is shared by every request there).
_RUNNERS = weakref.WeakKeyDictionary()


def install(ctx, runner):
    """Use `runner` (a `diagnostics.Diagnostics`) for the admin context `ctx`."""
    _RUNNERS[ctx] = runner
    return runner


def runner_for(ctx):
    """The context's runner, made on first use over the context's reactor and live config."""
    runner = _RUNNERS.get(ctx)
    if runner is None:
        runner = install(ctx, diagnostics.Diagnostics(ctx.clock, lambda: ctx.office.config))
    return runner


def invalid(errors):
    """The 400 for diagnostics.Invalid: the errors format, each key and its message."""
    items = [{"section": "diagnostics", "key": key, "field": key, "message": message,
              "reason": message} for key, message in errors]
    return ApiError(400, "invalid", items[0]["message"], field=items[0]["key"], errors=items)


@app.route("/v1/diagnostics/<kind>", methods=["POST"])
@guarded
def run_diagnostic(self, request, kind):
    """Run a diagnostic from the server; its lines stream back as text/plain."""
    if kind not in diagnostics.KINDS:
        raise ApiError(404, "not found", "no diagnostic %r; one of %s"
                       % (kind, ", ".join(diagnostics.KINDS)))
    try:
        check = diagnostics.parse_request(kind, self.body(request))
    except diagnostics.Invalid as e:
        raise invalid(e.errors)

    def emit(line):
        if not request.finished:
            request.write(line.encode("utf-8") + b"\n")
    try:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        run = runner_for(self.ctx).start(check, emit)
    except diagnostics.Busy as e:
        request.setHeader(b"retry-after", b"5")
        raise ApiError(429, "busy", str(e))
    except diagnostics.Unavailable as e:
        raise ApiError(503, "unavailable", str(e))
    # The client went away (or klein cancels): stop the child at once.
    request.notifyFinish().addErrback(lambda _: run.stop("stopped: the client went away"))
    done = run.done
    done.addCallback(lambda _: b"")
    done.addErrback(lambda f: f.trap(defer.CancelledError) and b"")
    return done
