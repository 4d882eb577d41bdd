# -*- test-case-name: allworx.tests.web.test_logs -*-
"""
The server's log events as the web shows them (SPEC 20): the query of
`GET /api/v1/logs` and of the Logs page (service, level, since, limit, the
`before` cursor, a search text `q`; checked: a bad one is named), its JSON
(`{"events": [...], "next"}`, newest first, times in RFC 3339), its OpenAPI
description, and the Logs page (filters, search, paging; `static/logs.js`
tails it live). The events come from `Views.logs` (an ILogEvents).
"""

import datetime
import math
import time
from urllib.parse import urlencode

import attr
from twisted.logger import Logger

from allworx.eventlog import LEVELS, OTHER, SERVICES, parse_level
from allworx.protocols.web.callhistory import BadParameter
from allworx.protocols.web.pagebase import Page

log = Logger()

HERE = "/logs"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PAGE_SIZE = 100
SEARCH_BATCH = 500      # events asked for at a time while searching
SERVICE_NAMES = SERVICES + (OTHER,)


@attr.s(frozen=True, kw_only=True)
class LogQuery:
    """What a request asks of the log."""

    service = attr.ib(default=None)
    level = attr.ib(default=None)
    since = attr.ib(default=None)       # epoch seconds
    limit = attr.ib(default=DEFAULT_LIMIT)
    before = attr.ib(default=None)      # an event id: older ones only
    search = attr.ib(default=None)

    def filters(self):
        """The ILogEvents.events keywords but the limit and the cursor."""
        return {"service": self.service, "level": self.level, "since": self.since}


def moment(name, text):
    """Epoch seconds of an RFC 3339 time, a date (midnight UTC) or a number of seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadParameter(name, "%r is not an RFC 3339 time or epoch seconds" % text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def parse_query(args, max_limit=MAX_LIMIT):
    """
    A LogQuery from query parameters (`{name: text}`): service (a config
    section's name, or "server"), level (the least: debug, info, warn,
    error, critical), since, limit (1..max_limit), before (an answer's
    `next`), q (text in the message or a field). Empty values count as
    absent, other names are ignored; BadParameter names the first bad one.
    """
    given = {k: v.strip() for k, v in args.items() if isinstance(v, str) and v.strip()}
    out = {}
    if "service" in given:
        service = given["service"].lower()
        if service not in SERVICE_NAMES:
            raise BadParameter("service", "%r is not one of %s" % (given["service"],
                                                                   ", ".join(SERVICE_NAMES)))
        out["service"] = service
    if "level" in given:
        try:
            out["level"] = parse_level(given["level"])
        except ValueError as e:
            raise BadParameter("level", str(e))
    if "since" in given:
        out["since"] = moment("since", given["since"])
    for name, low, high in (("limit", 1, max_limit), ("before", 1, None)):
        if name in given:
            try:
                value = int(given[name])
            except ValueError:
                raise BadParameter(name, "%r is not a whole number" % given[name])
            if value < low or (high is not None and value > high):
                raise BadParameter(name, "must be from %d to %d" % (low, high) if high
                                   else "must be at least %d" % low)
            out[name] = value
    if "q" in given:
        out["search"] = given["q"][:200]
    return LogQuery(**out)


def matches(event, text):
    """Whether the search text is in the event's message, service or fields (any case)."""
    text = text.lower()
    if text in str(event.get("message", "")).lower() or text == event.get("service"):
        return True
    return any(text in ("%s=%s" % (k, v)).lower() for k, v in (event.get("fields") or {}).items())


def find(view, query):
    """
    (events, next) of `view` for `query`: the service's own filters, and the
    search text applied here, page by page of the log, until `limit` events
    match; `next` is then the id of the last one when older ones may match.
    """
    if not query.search:
        return view.events(limit=query.limit, before=query.before, **query.filters())
    found, cursor = [], query.before
    while True:
        events, older = view.events(limit=SEARCH_BATCH, before=cursor, **query.filters())
        for event in events:
            if matches(event, query.search):
                if len(found) == query.limit:
                    return found, found[-1].get("id")
                found.append(event)
        if older is None:
            return found, None
        cursor = older


def rfc3339(when):
    """Epoch seconds as RFC 3339 UTC with milliseconds (`2026-12-07T10:00:00.250Z`)."""
    try:
        when = float(when)
        whole = int(when // 1)
        return "%s.%03dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)),
                             int((when - whole) * 1000))
    except (TypeError, ValueError, OverflowError):
        return None


def event_json(event):
    """An event as the API gives it: time in RFC 3339, its id for cursors and tails."""
    out = {"time": rfc3339(event.get("time")), "service": event.get("service") or OTHER,
           "level": event.get("level") or "info", "message": event.get("message") or "",
           "fields": dict(event.get("fields") or {})}
    if event.get("id") is not None:
        out["id"] = event["id"]
    return out


def logs_json(view, query):
    """The body of GET /api/v1/logs."""
    events, cursor = find(view, query)
    return {"events": [event_json(e) for e in events], "next": cursor}


def logs_paths():
    """GET /api/v1/logs in the OpenAPI document."""
    def param(name, schema, description):
        return {"name": name, "in": "query", "required": False, "schema": schema,
                "description": description}
    event = {"type": "object", "required": ["time", "service", "level", "message", "fields"],
             "properties": {
                 "time": {"type": "string", "format": "date-time"},
                 "service": {"type": "string", "enum": list(SERVICE_NAMES)},
                 "level": {"type": "string", "enum": list(LEVELS)},
                 "message": {"type": "string"},
                 "fields": {"type": "object", "description": (
                     "the event's own facts (JSON values; secrets never included)")},
                 "id": {"type": "integer", "description": "increases with each event"}}}
    return {"/api/v1/logs": {"get": {
        "summary": "The server's recent structured log events, newest first",
        "parameters": [
            param("service", {"type": "string", "enum": list(SERVICE_NAMES)},
                  "only this service's events (named as the config sections)"),
            param("level", {"type": "string", "enum": list(LEVELS)}, "this level or higher"),
            param("since", {"type": "string"}, "RFC 3339 time or epoch seconds: no older events"),
            param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                            "default": DEFAULT_LIMIT}, "events at most"),
            param("before", {"type": "integer"}, "an earlier answer's next: the older page"),
            param("q", {"type": "string"}, "text in the message or a field (any case)")],
        "responses": {
            "200": {"description": "events and the cursor of the older page (null: no more)",
                    "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "events": {"type": "array", "items": event},
                        "next": {"type": "integer", "nullable": True}}}}}},
            "400": {"description": "a bad parameter, named",
                    "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/Error"}}}},
            "401": {"description": "No or wrong credentials"},
            "503": {"description": "the log is not kept (not the running server)"}}}}}


def fields_text(fields):
    return " ".join("%s=%s" % (k, v) for k, v in sorted(fields.items()))


def page_row(event):
    when = float(event.get("time") or 0)
    return {"id": event.get("id") or "", "time": time.strftime("%Y-%m-%d %H:%M:%S",
                                                               time.gmtime(when)),
            # never after the event's time: the tail asks for events since then
            "epoch": "%.3f" % (math.floor(when * 1000) / 1000),
            "service": event.get("service") or OTHER,
            "level": event.get("level") or "info", "message": event.get("message") or "",
            "fields": fields_text(event.get("fields") or {})}


class LogsPage(Page):
    """The server's recent events: filters by service and level, search, paging, live tail."""

    slug, title, template = "logs", "Logs", "logs.html"

    def context_for(self, ctx, sub, query):
        if sub:
            raise KeyError("page %s/%s" % (HERE, "/".join(sub)))
        view = ctx.views.logs
        out = {"running": view is not None, "services": SERVICE_NAMES, "levels": LEVELS,
               "filter_error": None, "events": [], "older": None, "newest": None,
               "paged": False}
        wanted = {k: v for k, v in query.items() if k in ("service", "level", "q", "before")}
        try:
            parsed = parse_query(wanted)
        except BadParameter as e:
            out["filter_error"] = "The filter %s was ignored: %s." % (e.name, e.reason)
            parsed = LogQuery()
        parsed = attr.evolve(parsed, limit=PAGE_SIZE)
        out["filters"] = {"service": parsed.service or "", "level": parsed.level or "",
                          "q": parsed.search or ""}
        out["paged"] = parsed.before is not None
        if view is None:
            return out
        try:
            events, cursor = find(view, parsed)
        except Exception:
            log.failure("admin pages: the log events failed")
            return out
        out["events"] = [page_row(e) for e in events]
        keep = {k: v for k, v in out["filters"].items() if v}
        if cursor is not None:
            out["older"] = HERE + "?" + urlencode(dict(keep, before=str(cursor)))
        if out["paged"]:
            out["newest"] = HERE + ("?" + urlencode(keep) if keep else "")
        return out
