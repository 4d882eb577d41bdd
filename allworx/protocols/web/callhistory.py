# -*- test-case-name: allworx.tests.web.test_callhistory -*-
"""
The call history as the web shows it (SPEC 15): the query parameters of
`GET /api/v1/calls` and of the Phones page's table (checked: a bad one is
named), the CSV export (SPEC 15's columns in order, a header row, cells a
spreadsheet would take for a formula made inert), and the table's rows and
paging links. The calls themselves come from the SIP service's
ICallHistory (`Views.call_history`).
"""

import csv
import datetime
import io
import time
from urllib.parse import urlencode

import attr
from twisted.logger import Logger

from allworx.interfaces import CALL_DIRECTIONS, CALL_FIELDS, CALL_OUTCOMES

log = Logger()

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
PAGE_SIZE = 25          # rows of the Phones page's table
FORMATS = ("json", "csv")
# What a spreadsheet reads as the start of a formula (and the controls that hide one).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class BadParameter(ValueError):
    """A query parameter that cannot be used: its name and why."""

    def __init__(self, name, reason):
        ValueError.__init__(self, "%s: %s" % (name, reason))
        self.name = name
        self.reason = reason


@attr.s(frozen=True, kw_only=True)
class CallQuery:
    """What a request asks of the call history."""

    limit = attr.ib(default=DEFAULT_LIMIT)     # None: every matching call (CSV)
    offset = attr.ib(default=0)
    direction = attr.ib(default=None)
    outcome = attr.ib(default=None)
    search = attr.ib(default=None)
    since = attr.ib(default=None)              # POSIX seconds
    until = attr.ib(default=None)
    format = attr.ib(default="json")

    def page_args(self):
        """The keyword arguments of ICallHistory.page."""
        return {"limit": self.limit, "offset": self.offset, "direction": self.direction,
                "outcome": self.outcome, "search": self.search, "since": self.since,
                "until": self.until}


def _whole(name, text, low, high=None):
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(name, "%r is not a whole number" % text)
    if value < low or (high is not None and value > high):
        raise BadParameter(name, "must be %s" % (
            "at least %d" % low if high is None else "from %d to %d" % (low, high)))
    return value


def _choice(name, text, choices):
    if text not in choices:
        raise BadParameter(name, "%r is not one of %s" % (text, ", ".join(choices)))
    return text


def _moment(name, text):
    """RFC 3339 (`2024-01-05T10:15:00Z`) or a date (midnight UTC), as POSIX seconds."""
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise BadParameter(name, "%r is not an RFC 3339 time or a date" % text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def parse_query(args, max_limit=MAX_LIMIT):
    """
    A CallQuery from query parameters (`{name: text}`): limit (1..max_limit;
    a CSV without one has every call), offset, direction, outcome, q (text
    in a number or name), since/until (on the start), format (json | csv).
    Empty values count as absent and other names are ignored; BadParameter
    names the first bad one.
    """
    given = {k: v.strip() for k, v in args.items() if isinstance(v, str) and v.strip()}
    out = {}
    if "format" in given:
        out["format"] = _choice("format", given["format"], FORMATS)
    if "limit" in given:
        out["limit"] = _whole("limit", given["limit"], 1,
                              None if out.get("format") == "csv" else max_limit)
    elif out.get("format") == "csv":
        out["limit"] = None
    if "offset" in given:
        out["offset"] = _whole("offset", given["offset"], 0)
    if "direction" in given:
        out["direction"] = _choice("direction", given["direction"], CALL_DIRECTIONS)
    if "outcome" in given:
        out["outcome"] = _choice("outcome", given["outcome"], CALL_OUTCOMES)
    if "q" in given:
        out["search"] = given["q"]
    for name in ("since", "until"):
        if name in given:
            out[name] = _moment(name, given[name])
    return CallQuery(**out)


def csv_cell(value):
    """A CSV cell's text: None empty; a formula-like start made text with a leading '."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_bytes(entries):
    """The CSV export (UTF-8, CRLF): a header row of CALL_FIELDS, then one row per call."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CALL_FIELDS)
    for entry in entries:
        row = entry.as_json()
        writer.writerow([csv_cell(row.get(name)) for name in CALL_FIELDS])
    return out.getvalue().encode("utf-8")


def duration_text(seconds):
    """`0:42`, `12:05`, `1:02:03`."""
    seconds = int(seconds or 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "%d:%02d:%02d" % (hours, minutes, secs) if hours else "%d:%02d" % (minutes, secs)


def _row(entry):
    return {"start": time.strftime("%Y-%m-%d %H:%M", time.gmtime(entry.start)),
            "direction": entry.direction, "from": entry.from_, "from_name": entry.from_name or "",
            "to": entry.to, "answered_by": entry.answered_by or "", "trunk": entry.trunk or "",
            "duration": duration_text(entry.duration_s), "outcome": entry.outcome}


def history_context(history, args):
    """
    The Phones page's call history: the filters (from the query `args`,
    `{name: text}`), a page of rows newest first, the counts and the links
    to newer and older pages. A bad filter is shown and the rest ignored.
    """
    out = {"history_running": history is not None, "history_error": None,
           "directions": CALL_DIRECTIONS, "outcomes": CALL_OUTCOMES, "history": [],
           "history_total": 0, "history_first": 0, "history_last": 0,
           "newer": None, "older": None}
    wanted = {k: v for k, v in args.items() if k in ("direction", "outcome", "q", "offset")}
    try:
        query = parse_query(wanted)
    except BadParameter as e:
        out["history_error"] = "The filter %s was ignored: %s." % (e.name, e.reason)
        query = CallQuery()
    query = attr.evolve(query, limit=PAGE_SIZE)
    out["filters"] = {"direction": query.direction or "", "outcome": query.outcome or "",
                      "q": query.search or ""}
    keep = {k: v for k, v in out["filters"].items() if v}
    out["csv_href"] = "/api/v1/calls?" + urlencode(dict(keep, format="csv"))
    if history is None:
        return out
    try:
        entries, total = history.page(**query.page_args())
    except Exception:
        log.failure("admin pages: the call history failed")
        return out
    out["history"] = [_row(e) for e in entries]
    out["history_total"] = total
    if entries:
        out["history_first"], out["history_last"] = query.offset + 1, query.offset + len(entries)
    if query.offset > 0:
        out["newer"] = _link(keep, max(0, query.offset - PAGE_SIZE))
    if query.offset + PAGE_SIZE < total:
        out["older"] = _link(keep, query.offset + PAGE_SIZE)
    return out


def _link(filters, offset):
    params = dict(filters, offset=str(offset)) if offset else dict(filters)
    return "/phones" + ("?" + urlencode(params) if params else "") + "#history"
