# -*- test-case-name: allworx.tests.web.test_apipages -*-
"""
Paging of the API's lists (`/api/v1/users`, `/hosts`, ..., `/dhcp/leases`,
`/mail/queue`, `/sip/registrations`, `/sip/calls`): `?limit=&offset=` as
`GET /api/v1/calls` takes them, a bounded page by default, so that a request
costs the same in an office of 10 users and of 1,000. The body stays the JSON
array it always was (a page of it); the whole list's size is the
`X-Total-Count` header and the next page is a `Link: <...>; rel="next"`
header (RFC 8288), the way GitHub's and GitLab's APIs page an array.
"""

from urllib.parse import urlencode

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class PageError(ValueError):
    """A paging parameter that cannot be used: its name and why."""

    def __init__(self, name, reason):
        ValueError.__init__(self, "%s: %s" % (name, reason))
        self.name = name
        self.reason = reason


def _whole(args, name, default, low, high=None):
    raw = args.get(name.encode())
    if not raw:
        return default
    text = raw[0].decode("utf-8", "replace").strip()
    try:
        value = int(text)
    except ValueError:
        raise PageError(name, "%r is not a whole number" % text)
    if value < low or (high is not None and value > high):
        raise PageError(name, "must be %s" % (
            "at least %d" % low if high is None else "from %d to %d" % (low, high)))
    return value


def page_of(args):
    """(limit, offset) from a request's `args` (bytes -> [bytes]); PageError if bad."""
    return (_whole(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
            _whole(args, "offset", 0, 0))


def next_link(path, args, limit, offset, total):
    """The `Link` header's value for the page after this one, or None on the last page."""
    if offset + limit >= total:
        return None
    query = [(k.decode("utf-8", "replace"), v.decode("utf-8", "replace"))
             for k, values in sorted(args.items()) if k not in (b"limit", b"offset")
             for v in values]
    query += [("limit", str(limit)), ("offset", str(offset + limit))]
    return '<%s?%s>; rel="next"' % (path, urlencode(query))


class Counted:
    """
    A list that says its length (`count()`) and gives a slice (`page(offset,
    limit)`) without being made whole, for `paged`.
    """

    def __init__(self, count, page):
        self._count = count
        self._page = page

    def __len__(self):
        return self._count()

    def __getitem__(self, where):
        if not isinstance(where, slice) or where.step not in (None, 1):
            raise TypeError("Counted gives plain slices only")
        start, stop, _ = where.indices(len(self))
        return self._page(start, max(0, stop - start))


def paged(request, items, render=lambda item: item):
    """
    One page of `items` (a sequence, already in the list's order), each
    rendered only if it is on the page; sets X-Total-Count and, when more
    follow, Link rel="next" on `request`. PageError for a bad parameter.
    """
    limit, offset = page_of(request.args)
    total = len(items)
    request.setHeader(b"x-total-count", str(total).encode())
    link = next_link(request.path.decode("utf-8", "replace"), request.args, limit, offset, total)
    if link is not None:
        request.setHeader(b"link", link.encode("utf-8"))
    return [render(item) for item in items[offset:offset + limit]]


def page_parameters(what):
    """The OpenAPI parameters of a paged list of `what`."""
    return [{"name": "limit", "in": "query", "required": False, "description": "%s per page" % what,
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT}},
            {"name": "offset", "in": "query", "required": False,
             "description": "%s skipped" % what,
             "schema": {"type": "integer", "minimum": 0, "default": 0}}]


PAGE_HEADERS = {
    "X-Total-Count": {"description": "how many there are in the whole list",
                      "schema": {"type": "integer"}},
    "Link": {"description": 'the next page, as <URL>; rel="next" (RFC 8288); absent on the last',
             "schema": {"type": "string"}}}
