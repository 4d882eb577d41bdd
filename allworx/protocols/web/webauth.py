# -*- test-case-name: allworx.tests.web.test_webauth -*-
"""
Who may use the admin port over HTTP without a page session (SPEC 10, 11):
HTTP Basic as a user (the API, `/metrics`), checked through the shared login
throttle and remembered a minute; and `/metrics`, which also takes the
bearer token of `[web] metrics_token`. Whether the user is an admin is the
caller's question (`AdminContext.may_administer`).
"""

import base64
import hashlib
import secrets

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from allworx.auth import admin_secret
from allworx.guards import login_name, until_text
from allworx.protocols.web.admin import LockedOut, finish, peer_of

log = Logger()


class LoginRefused(Exception):
    """An HTTP login refused: `code` 401 (wrong or none) or 429 (locked out), and why."""

    def __init__(self, code, reason):
        Exception.__init__(self, reason)
        self.code = code
        self.reason = reason


BASIC_CACHE_SECONDS = 60


def basic_login(ctx, request, header, cache):
    """
    A Deferred firing with the user an HTTP Basic `header` logs in (admin or
    not), or failing with LoginRefused (401, or 429 while locked out, with
    Retry-After set). A good login is remembered in `cache` for a minute,
    keyed by what was checked, so a changed password ends it; it is taken
    from there only while the throttle holds nothing against the source or
    the user at it (otherwise it goes through the throttle like any login).
    """
    scheme, _, value = header.partition(b" ")
    try:
        if scheme.lower() != b"basic":
            raise ValueError(scheme)
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode(
            "utf-8").partition(":")
        if not sep:
            raise ValueError("no colon")
    except (ValueError, UnicodeDecodeError):
        return defer.fail(LoginRefused(401, "the Authorization header is not HTTP Basic"))
    config = ctx.office.config
    name = login_name(config, user)
    key = hashlib.sha256(("%s\0%s\0%s" % (user, password, admin_secret(config, name)))
                         .encode("utf-8")).hexdigest()
    now = ctx.clock.seconds()
    source = peer_of(request)
    checked = cache.get(key)
    # Remembered, and neither the source nor the user at it is locked out or
    # slowed down: a locked source must not test passwords against the cache.
    if (checked is not None and now - checked[0] < BASIC_CACHE_SECONDS
            and ctx.throttle.ready(source, name)):
        return defer.succeed(checked[1])
    d = ctx.authenticate(source, user, password)

    def result(avatar):
        if avatar is None:
            raise LoginRefused(401, "wrong user name or password")
        if len(cache) > 100:
            cache.clear()
        cache[key] = (now, avatar)
        return avatar

    def locked(failure):
        failure.trap(LockedOut)
        request.setHeader(b"retry-after", str(failure.value.seconds).encode())
        raise LoginRefused(429, "too many failed logins %s: %s (in %d s)" % (
            ctx.locked_whom(source, user), until_text(failure.value.until),
            failure.value.seconds))
    d.addCallbacks(result, locked)
    return d


class AdminOnly(resource.Resource):
    """
    A resource (`/metrics`) for an admin only (SPEC 11): a page session of an
    admin, HTTP Basic as an admin, or `Authorization: Bearer TOKEN` with
    `[web] metrics_token`. Otherwise 401 (403 for a user who is no admin).
    """

    isLeaf = True

    def __init__(self, ctx, wrapped):
        resource.Resource.__init__(self)
        self.ctx = ctx
        self.wrapped = wrapped
        self._basic_ok = {}

    def bearer(self, request, given):
        """
        The bearer token checked: a wrong one counts as a failed login of its
        source in the shared throttle, and a locked source is refused (429).
        """
        source, throttle = peer_of(request), self.ctx.throttle
        until = throttle.check(source)
        if until:
            request.setHeader(b"retry-after", str(throttle.locked_for(source)).encode())
            return defer.fail(LoginRefused(429, "too many failed logins from %s: %s"
                                           % (source, until_text(until))))
        token = self.ctx.office.config.web.metrics_token
        if token is not None and secrets.compare_digest(token.encode(), given):
            return defer.succeed(None)
        throttle.failed(source)
        log.warn("/metrics: a wrong bearer token from {peer}", peer=source)
        return defer.fail(LoginRefused(401, "wrong bearer token"))

    def render(self, request):
        header = request.getHeader(b"authorization")
        if header is None:
            session = self.ctx.session_for(request)
            user = session.user if session is not None else None
            d = defer.succeed(user) if user is not None else defer.fail(
                LoginRefused(401, "log in as an admin (a page session or HTTP Basic), or send "
                                  "Authorization: Bearer with [web] metrics_token"))
        elif header[:7].lower() == b"bearer ":
            d = self.bearer(request, header[7:].strip())
        else:
            d = basic_login(self.ctx, request, header, self._basic_ok)

        def allowed(user):
            if user is not None and not self.ctx.may_administer(user):
                raise LoginRefused(403, "%s is not an admin" % user)
            body = self.wrapped.render(request)
            if body is not server.NOT_DONE_YET:
                finish(request, body)

        def refused(failure):
            failure.trap(LoginRefused)
            request.setResponseCode(failure.value.code)
            if failure.value.code == 401:
                request.setHeader(b"www-authenticate",
                                  b'Basic realm="allworx admin", charset="UTF-8"')
                request.responseHeaders.addRawHeader(b"www-authenticate",
                                                     b'Bearer realm="allworx metrics"')
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")
            finish(request, (failure.value.reason + "\n").encode("utf-8"))
        d.addCallback(allowed)
        d.addErrback(refused)
        d.addErrback(lambda f: (log.failure("/metrics failed", f), finish(request, b"")))
        return server.NOT_DONE_YET
