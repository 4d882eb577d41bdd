# -*- test-case-name: allworx.tests.web.test_logs -*-
"""
`GET /api/v1/logs` (SPEC 20), added to `OfficeApi`'s routes when this
module is imported (the web service does): the server's recent events,
newest first, filtered by service, level, time and text, with a cursor to
the older page (`allworx.protocols.web.logview`).
"""

from allworx.protocols.web import logview
from allworx.protocols.web.admin import form_of
from allworx.protocols.web.api import ApiError, OfficeApi, guarded
from allworx.protocols.web.callhistory import BadParameter

app = OfficeApi.app


@app.route("/v1/logs", methods=["GET"])
@guarded
def logs(self, request):
    """Recent events: {"events": [...], "next"}."""
    view = self._view("logs", "the event log")
    try:
        query = logview.parse_query(form_of(request))
    except BadParameter as e:
        raise ApiError(400, "invalid", str(e), field=e.name, errors=[
            {"section": "logs", "key": e.name, "message": e.reason}])
    return logview.logs_json(view, query)
