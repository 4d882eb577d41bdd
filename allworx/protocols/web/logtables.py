# -*- test-case-name: allworx.tests.web.test_logtables -*-
"""
Filters, search and paging of the pages' other logs (SPEC 20), done on the
server from the query string so a link shows the same rows:

- the connection log (`/connections`): address (source or destination; an
  address or a network), port (either end), verdict, and a search text;
- the mail queue (`/mailqueue`) and the decisions on mail from the internet
  (`/mailsecurity`): sender, recipient and a search text (the decisions'
  verdict filter is the Mail security page's own).

A filter that cannot be used is named on the page and ignored. Each table
pages by `?page=N` (1 is the newest), keeping its filters in its links.
"""

import ipaddress
import time
from urllib.parse import urlencode

from twisted.logger import Logger

log = Logger()

CONNECTION_VERDICTS = ("accept", "drop", "reject")    # the firewall's (routing.firewall.policy)
CONNECTIONS_READ = 2000     # the firewall keeps this many decisions; all are filtered
PAGE_SIZE = 50
MAX_SEARCH = 200


def page_number(text):
    """`?page=` as a number from 1 (anything else: 1)."""
    try:
        return max(1, int(text))
    except (TypeError, ValueError):
        return 1


def paged(items, page_text, size=PAGE_SIZE):
    """
    (the page's items, its number, the count of pages, first, last): pages
    of `size`, a number past the last one showing the last.
    """
    pages = max(1, (len(items) + size - 1) // size)
    number = min(page_number(page_text), pages)
    start = (number - 1) * size
    chosen = items[start:start + size]
    return chosen, number, pages, (start + 1 if chosen else 0), start + len(chosen)


def page_links(here, filters, number, pages, anchor=""):
    """(newer, older): the links to the neighbouring pages with the same filters, or None."""
    keep = {k: v for k, v in filters.items() if v}

    def link(n):
        params = dict(keep, page=str(n)) if n > 1 else keep
        return here + ("?" + urlencode(params) if params else "") + anchor
    return (link(number - 1) if number > 1 else None,
            link(number + 1) if number < pages else None)


def search_text(query):
    return (query.get("q") or "").strip()[:MAX_SEARCH]


def contains(values, text):
    """Whether `text` (any case) is in one of `values` as text."""
    text = text.lower()
    return any(text in str(v).lower() for v in values if v is not None)


# ---- the connection log

def parse_connection_filters(query):
    """({"address", "port", "verdict", "q"} as given, the predicate, the errors)."""
    shown = {name: (query.get(name) or "").strip() for name in ("address", "port", "verdict")}
    shown["q"] = search_text(query)
    errors, tests = [], []
    if shown["address"]:
        try:
            network = ipaddress.ip_network(shown["address"], strict=False)
        except ValueError:
            errors.append("The filter address=%s was ignored: it is not an address or a "
                          "network." % shown["address"])
        else:
            def in_network(e):
                for key in ("src", "dst"):
                    try:
                        if ipaddress.ip_address(str(e.get(key))) in network:
                            return True
                    except ValueError:
                        continue
                return False
            tests.append(in_network)
    if shown["port"]:
        try:
            port = int(shown["port"])
            if not 0 <= port <= 65535:
                raise ValueError(port)
        except ValueError:
            errors.append("The filter port=%s was ignored: it is a number from 0 to 65535."
                          % shown["port"])
        else:
            tests.append(lambda e: port in (e.get("sport"), e.get("dport")))
    if shown["verdict"]:
        if shown["verdict"] not in CONNECTION_VERDICTS:
            errors.append("The filter verdict=%s was ignored: it is one of %s." % (
                shown["verdict"], ", ".join(CONNECTION_VERDICTS)))
        else:
            tests.append(lambda e: e.get("action") == shown["verdict"])
    if shown["q"]:
        tests.append(lambda e: contains(
            (e.get("proto"), "%s:%s" % (e.get("src"), e.get("sport")),
             "%s:%s" % (e.get("dst"), e.get("dport")), e.get("action"), e.get("reason"),
             e.get("side")), shown["q"]))
    return shown, (lambda e: all(test(e) for test in tests)), errors


def clock_time(when):
    try:
        return time.strftime("%H:%M:%S", time.gmtime(float(when)))
    except (TypeError, ValueError, OverflowError):
        return str(when or "")


def recent_connections(connlog):
    """Every decision the firewall keeps, newest first ([] without it, or if it fails: logged)."""
    if connlog is None:
        return []
    try:
        return list(connlog.recent(CONNECTIONS_READ))
    except Exception:
        log.failure("admin pages: the connection log failed")
        return []


def connection_row(e):
    def text(key):
        return "" if e.get(key) is None else e[key]
    return {"time": clock_time(e.get("time")), "proto": text("proto"),
            "src": "%s:%s" % (text("src"), text("sport")),
            "dst": "%s:%s" % (text("dst"), text("dport")),
            "action": text("action"), "reason": text("reason")}


def connections_context(entries, query):
    """The Connections page's table: filters from `query`, a page of rows, links, counts."""
    shown, wanted, errors = parse_connection_filters(query)
    matching = [e for e in entries if isinstance(e, dict) and wanted(e)]
    rows, number, pages, first, last = paged(matching, query.get("page"))
    newer, older = page_links("/connections", shown, number, pages, "#connlog")
    return {"entries": [connection_row(e) for e in rows], "filters": shown,
            "filter_errors": errors, "verdicts": CONNECTION_VERDICTS,
            "filtered": any(shown.values()), "matching": len(matching), "first": first,
            "last": last, "newer": newer, "older": older, "page_number": number}


# ---- mail: the queue and the decisions

def parse_mail_filters(query):
    """({"sender", "recipient", "q"} as given, the predicate on an entry or decision)."""
    shown = {name: (query.get(name) or "").strip()[:MAX_SEARCH] for name in ("sender",
                                                                              "recipient")}
    shown["q"] = search_text(query)

    def recipients(e):
        found = e.get("recipients") or ()
        return [found] if isinstance(found, str) else list(found)

    def wanted(e):
        if shown["sender"] and not contains((e.get("sender") or "<>",), shown["sender"]):
            return False
        if shown["recipient"] and not contains(recipients(e), shown["recipient"]):
            return False
        if shown["q"]:
            return contains([e.get(k) for k in ("id", "sender", "client", "helo", "verdict",
                                                "reason", "last_error")] + recipients(e),
                            shown["q"])
        return True
    return shown, wanted


def queue_context(entries, query):
    """The Mail queue page's table: filters and search from `query`, a page, links."""
    shown, wanted = parse_mail_filters(query)
    matching = [e for e in entries if wanted(e)]
    rows, number, pages, first, last = paged(matching, query.get("page"))
    newer, older = page_links("/mailqueue", shown, number, pages)
    return {"rows": rows, "filters": shown, "filtered": any(shown.values()),
            "matching": len(matching), "total": len(entries), "first": first, "last": last,
            "newer": newer, "older": older}
