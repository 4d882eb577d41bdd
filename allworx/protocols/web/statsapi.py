# -*- test-case-name: allworx.tests.web.test_statsapi -*-
"""
The statistics' API routes (SPEC 20), added to `OfficeApi`'s routes when this
module is imported (the web service does):

- `GET /api/v1/stats`: `{"series": [{"name", "unit", "path"}, ...]}`;
- `GET /api/v1/stats/{name}?range=hour|day|week` (hour when left out):
  `{"name", "unit", "step_s", "points": [[RFC 3339, value], ...]}`, oldest
  first; 400 for another range, 404 for a name that is not a series.
"""

from allworx.protocols.web.api import ApiError, OfficeApi, guarded
from allworx.protocols.web.mailsecurity import rfc3339

app = OfficeApi.app

RANGES = ("hour", "day", "week")


def _stats(api):
    view = api.ctx.views.stats
    if view is None:
        raise ApiError(503, "not running", "the statistics are not kept by this server")
    return view


def points_json(found):
    """An IStats answer with its epoch times as RFC 3339 text."""
    return {"name": found["name"], "unit": found["unit"], "step_s": found["step_s"],
            "points": [[rfc3339(when), value] for when, value in found["points"]]}


@app.route("/v1/stats", methods=["GET"])
@guarded
def stats_series(self, request):
    """The series kept: name, unit and where their points are."""
    return {"series": _stats(self).series()}


@app.route("/v1/stats/<name>", methods=["GET"])
@guarded
def stats_points(self, request, name):
    """One series over the last hour (10 s steps), day (5 min) or week (30 min)."""
    view = _stats(self)
    wanted = request.args.get(b"range", [b"hour"])[-1].decode("utf-8", "replace")
    if wanted not in RANGES:
        message = "range is one of %s" % ", ".join(RANGES)
        raise ApiError(400, "invalid", message, field="range", errors=[
            {"section": "stats", "key": "range", "message": message}])
    try:
        found = view.points(name, wanted)
    except KeyError:
        raise ApiError(404, "not found", "there is no series %s" % name)
    return points_json(found)
