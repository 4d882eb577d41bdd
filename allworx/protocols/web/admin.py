# -*- test-case-name: allworx.tests.web.test_pages -*-
"""
The admin side of the web service over HTTP: the login with lock-out,
server-side sessions in a cookie (HttpOnly, SameSite=Strict, Secure over TLS),
a CSRF token checked on every form, and the pages of `allworx.protocols.web.pages`
rendered with Jinja2. `/api/` and `/metrics` hang off the same root.
"""

import base64
import os
from urllib.parse import quote, urlsplit

import jinja2
from twisted.cred import credentials, error as cred_error
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.web import resource, server, static

from allworx.auth import ADMIN as ADMIN_USER, AdminChecker, LegacyAdmin, is_admin
from allworx.config import ConfigErrors
from allworx.interfaces import Views
from allworx import guards
from allworx.guards import LoginThrottle, login_name, until_text
from allworx.protocols.web import forms
from allworx.protocols.web import pages
from allworx.protocols.web.dashboard import vendor_files
from allworx.protocols.web.metrics import WEB_CHANGES, WEB_LOGINS
from allworx.protocols.web.sessions import SESSION_COOKIE, SessionStore, tokens_match

log = Logger()

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES_DIR = os.path.join(HERE, "templates")
STATIC_DIR = os.path.join(HERE, "static")

SECURITY_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"),
)


class NotFoundPage:
    """What the 404 page passes as its `page`: the menu, with no page marked."""

    slug, title, refresh = "", "Not found", None


NOT_FOUND = NotFoundPage()


class LockedOut(Exception):
    """
    Too many failed logins (of this user, or from this source): `seconds`
    until it may try again, `until` the clock time (0 if unknown).
    """

    def __init__(self, seconds, until=0):
        Exception.__init__(self, "locked out for %d seconds" % seconds)
        self.seconds = seconds
        self.until = until


def peer_of(request):
    """The client's address as text."""
    return getattr(request.getClientAddress(), "host", "") or ""


def form_of(request):
    """The submitted form as `{name: text}` (first value of each; uploads decoded as UTF-8)."""
    out = {}
    for k, values in (request.args or {}).items():
        if not values:
            continue
        name = k.decode("utf-8", "replace")
        value = values[0]
        if isinstance(value, bytes):
            if name == "file":
                out[name] = value  # a backup: changes.restore checks its encoding
                continue
            value = value.decode("utf-8", "replace")
        out[name] = value
    return out


def actor_of(ctx, request):
    """Who a (logged-in) request is: its page session's user, or its HTTP Basic user name."""
    checked = getattr(request, "admin_user", None)     # set once the login was checked
    if checked is not None:
        return str(checked)
    session = ctx.session_for(request)
    header = request.getHeader(b"authorization")
    if header is None and session is not None and session.user is not None:
        return session.user
    try:
        decoded = base64.b64decode(header.partition(b" ")[2].strip()).decode("utf-8")
        return decoded.partition(":")[0] or "api"
    except (AttributeError, ValueError, UnicodeDecodeError):
        return "api"


def safe_next(target):
    """A post-login destination on this site only (no `//evil.example`)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/status"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/status"
    return target


class AdminContext:
    """
    What every admin resource shares: the office, the running services' `views`,
    sessions, lock-out, templates.
    """

    def __init__(self, office, clock, defer_to_thread=threads.deferToThread, checker=None,
                 views=None, throttle=None):
        self.office = office
        self.views = views if views is not None else Views()
        self.clock = clock
        self.defer_to_thread = defer_to_thread
        self.sessions = SessionStore(clock)
        self.throttle = throttle if throttle is not None else LoginThrottle(clock)
        self.checker = checker if checker is not None else AdminChecker(office, defer_to_thread)
        if office.config.web.admin_password is not None:
            log.warn("web: {why}", why=self.legacy_warning())
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
            autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)

    # ---- sessions

    def session_for(self, request):
        """The request's live session, or None."""
        return self.sessions.get(request.getCookie(SESSION_COOKIE))

    def set_cookie(self, request, session):
        request.addCookie(SESSION_COOKIE, session.id.encode("ascii"), path=b"/",
                          httpOnly=True, sameSite="strict", secure=request.isSecure() or None)

    def clear_cookie(self, request):
        request.addCookie(SESSION_COOKIE, b"", path=b"/", httpOnly=True, sameSite="strict",
                          max_age=b"0", secure=request.isSecure() or None)

    # ---- login

    def authenticate(self, source, username, password):
        """
        Check a login through the login throttle (later, after repeated
        failures). A Deferred firing with the user name that logged in (an
        admin or not: `may_administer` says) or None for a wrong name or
        password, or failing with LockedOut (the password unchecked).
        """
        name = login_name(self.office.config, username)
        d = self.throttle.attempt(source, name, lambda: self.checker.requestAvatarId(
            credentials.UsernamePassword(username, password)))

        def ok(avatar):
            self.throttle.succeeded(source, name)
            if not self.may_administer(avatar):
                WEB_LOGINS.labels("forbidden").inc()
                log.warn("admin login of {user} from {source} refused: not an admin",
                         user=avatar, source=source)
                return avatar
            WEB_LOGINS.labels("success").inc()
            log.info("admin login of {user} from {source}", user=avatar, source=source)
            if isinstance(avatar, LegacyAdmin):
                log.warn("admin logged in with [web] admin_password, which is obsolete: the "
                         "first change through the pages or API moves it to [user admin]")
            return avatar

        def bad(failure):
            if failure.check(guards.LockedOut):
                WEB_LOGINS.labels("locked").inc()
                until = failure.value.until
                raise LockedOut(max(1, int(until - self.clock.seconds() + 0.999)), until)
            failure.trap(cred_error.UnauthorizedLogin)
            WEB_LOGINS.labels("failure").inc()
            locked_now = self.throttle.failed(source, name)
            log.warn("admin login refused from {source}{locked}", source=source,
                     locked=": locked out" if locked_now else "")
            return None
        d.addCallbacks(ok, bad)
        return d

    def locked_whom(self, source, login):
        """Whose lock-out refused a login: `for alice from ADDR`, or `from ADDR` (the source's)."""
        if self.throttle.locked_until(source):
            return "from %s" % source
        return "for %s from %s" % (login_name(self.office.config, login) or "this user", source)

    def may_administer(self, name):
        """Whether the user `name` (a session's, a login's) may use the pages and API now."""
        return is_admin(self.office.config, name)

    def legacy_warning(self):
        """The pages' warning while tap.conf still has the old `[web] admin_password`."""
        if self.office.config.web.admin_password is None:
            return None
        return ("[web] admin_password is obsolete: the first change you make here moves it to "
                "[user admin] with admin = yes%s." % (
                    " (that user keeps his own password, which is then the admin login)"
                    if ADMIN_USER in self.office.config.users else ", same password"))

    # ---- rendering

    def render(self, request, template, **context):
        """Render a template to bytes with the security headers set."""
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        context.setdefault("pages", pages.PAGES)
        context.setdefault("admin_warning", self.legacy_warning())
        context.setdefault("hostname", "%s.%s" % (self.office.config.system.hostname,
                                                  self.office.config.system.domain))
        return self.templates.get_template(template).render(**context).encode("utf-8")

    def render_not_found(self, request, what=None):
        """
        The styled 404 page for a path that names nothing: with the menu when
        the request is logged in, with a link to the login when not.
        """
        request.setResponseCode(404)
        session = self.session_for(request)
        logged_in = session is not None and session.user is not None
        path = request.path.decode("utf-8", "replace")
        if logged_in:
            return self.render(request, "notfound.html", page=NOT_FOUND, csrf=session.csrf,
                               logged_in=True, path=path, what=what)
        return self.render(request, "notfound.html", page=None, csrf=None, logged_in=False,
                           path=path, what=what)

    def render_page(self, request, page, session, sub, state=None, more=None):
        """A page with its context (and `more` of it), the session's notices and a form's errors."""
        form = state

        def value(action, name, current="", kind="text"):
            if form is not None and form.action == action:
                if kind == "checkbox":
                    # Unticked, it was not sent at all: show it unticked again.
                    return "yes" if form.values.get(name) else "no"
                if name in form.values:
                    v = form.values[name]
                    return v if isinstance(v, str) else ""
            return current

        def error(action, name):
            if form is not None and form.action == action:
                return form.errors.get(name)
            return None

        query = form_of(request) if request.method in (b"GET", b"HEAD") else {}
        context = page.context_for(self, sub, query)
        context.update(more or {})
        return self.render(
            request, page.template_for(sub), page=page, csrf=session.csrf,
            notices=session.take_notices(), form=form, value=value, error=error,
            office=self.office, config=self.office.config, **context)


def forbidden(ctx, request, user):
    """403 for a logged-in user who is not (or no longer) an admin."""
    request.setResponseCode(403)
    return ctx.render(request, "message.html", title="Not allowed",
                      message="%s may not use the admin pages (not an admin)." % user)


def finish(request, body):
    """Write a body (unless the request went away) and finish."""
    if request.finished or getattr(request, "_disconnected", False):
        return
    if body:
        request.write(body)
    request.finish()


def redirect(request, location, code=303):
    request.setResponseCode(code)
    request.setHeader(b"location", location.encode("utf-8"))
    request.setHeader(b"cache-control", b"no-store")
    return b""


class PageResource(resource.Resource):
    """One admin page: GET shows it, POST runs one of its forms' actions."""

    isLeaf = True

    def __init__(self, ctx, page):
        resource.Resource.__init__(self)
        self.ctx = ctx
        self.page = page

    def render(self, request):
        sub = [seg.decode("utf-8", "replace") for seg in request.postpath if seg]
        if not self.page.accepts(sub):
            # `/status/extra`: a path under a page that has none such.
            return self.ctx.render_not_found(request)
        session = self.ctx.session_for(request)
        if session is None or session.user is None:
            return redirect(request, "/login?next=" + quote(request.path.decode("utf-8", "replace")))
        if not self.ctx.may_administer(session.user):
            return forbidden(self.ctx, request, session.user)
        if request.method in (b"GET", b"HEAD"):
            return self.show(request, session, sub)
        if request.method == b"POST":
            return self.post(request, session, sub)
        request.setResponseCode(405)
        request.setHeader(b"allow", b"GET, HEAD, POST")
        return b"method not allowed"

    def show(self, request, session, sub):
        if self.page.slug == "backup" and sub == ["tap.conf"]:
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"content-disposition", b'attachment; filename="tap.conf"')
            request.setHeader(b"cache-control", b"no-store")
            return self.ctx.office.document_text().encode("utf-8")
        try:
            # A page may offer files below it: (content type, file name, bytes) or None.
            download = getattr(self.page, "download", None)
            sent = download(self.ctx, sub) if download is not None else None
            if sent is not None:
                content_type, filename, body = sent
                request.setHeader(b"content-type", content_type)
                request.setHeader(b"content-disposition",
                                  b'attachment; filename="%s"' % filename.encode("ascii"))
                request.setHeader(b"cache-control", b"no-store")
                return body
            prepare = getattr(self.page, "prepare", None)
            if prepare is not None:
                return self.show_live(request, session, sub, prepare)
            return self.ctx.render_page(request, self.page, session, sub)
        except KeyError as e:
            return self.not_found(request, e)

    def not_found(self, request, e):
        return self.ctx.render_not_found(request, str(e.args[0]) if e.args else None)

    def show_live(self, request, session, sub, prepare):
        """A page whose `prepare` first fetches its live part (a Deferred of more context)."""
        d = defer.maybeDeferred(prepare, self.ctx, sub)
        d.addCallback(lambda more: finish(request, self.ctx.render_page(
            request, self.page, session, sub, more=more)))

        def failed(failure):
            if failure.check(KeyError):
                return finish(request, self.not_found(request, failure.value))
            log.failure("admin page {page} failed", failure, page=self.page.slug)
            request.setResponseCode(500)
            finish(request, self.ctx.render(request, "message.html", title="Error",
                                            message="The page failed: %s"
                                            % failure.getErrorMessage()))
        d.addErrback(failed)
        return server.NOT_DONE_YET

    def post(self, request, session, sub):
        form = form_of(request)
        if not tokens_match(session.csrf, form.get("csrf")):
            log.warn("admin form without a valid CSRF token from {peer}", peer=peer_of(request))
            WEB_CHANGES.labels("page", "csrf").inc()
            request.setResponseCode(403)
            return self.ctx.render(request, "message.html", title="Form refused",
                                   message="The form had no valid security token (CSRF). "
                                           "Nothing was changed. Reload the page and try again.")
        action = form.get("action", "")
        here = request.path.decode("utf-8", "replace")
        with self.ctx.office.acting(session.user, "web"):
            d = defer.maybeDeferred(self.page.action, self.ctx, action, form, sub)

        def done(notice):
            WEB_CHANGES.labels("page", "ok").inc()
            log.info("admin page {page}: {action} done", page=self.page.slug, action=action)
            session.notices.append(str(notice))
            finish(request, redirect(request, getattr(notice, "location", here)))

        def failed(failure):
            if failure.check(ConfigErrors):
                WEB_CHANGES.labels("page", "invalid").inc()
                state = forms.form_errors(action, form, failure.value.errors,
                                          self.page.record_section(action, form))
                log.info("admin page {page}: {action} refused: {errors}", page=self.page.slug,
                         action=action, errors="; ".join(state.general))
                request.setResponseCode(400)
                try:
                    body = self.ctx.render_page(request, self.page, session, sub, state)
                except KeyError:
                    body = redirect(request, "/" + self.page.slug)
                finish(request, body)
            elif failure.check(KeyError):
                session.notices.append("There is no %s (it may have just been removed)."
                                       % failure.value.args[0])
                finish(request, redirect(request, "/" + self.page.slug))
            else:
                log.failure("admin page {page}: {action} failed", failure, page=self.page.slug,
                            action=action)
                request.setResponseCode(500)
                finish(request, self.ctx.render(request, "message.html", title="Error",
                                                message="The server failed to do that: %s"
                                                % failure.getErrorMessage()))
        d.addCallbacks(done, failed)
        return server.NOT_DONE_YET


class LoginResource(resource.Resource):
    """`/login`: the form, the check with lock-out, a fresh session on success."""

    isLeaf = True

    def __init__(self, ctx):
        resource.Resource.__init__(self)
        self.ctx = ctx

    def _form(self, request, session, message=None, code=200):
        request.setResponseCode(code)
        target = safe_next((request.args.get(b"next") or [b""])[0].decode("utf-8", "replace"))
        return self.ctx.render(request, "login.html", csrf=session.csrf, message=message,
                               next=target, notices=session.take_notices(), page=None)

    def render_GET(self, request):
        session = self.ctx.session_for(request)
        if session is not None and session.user is not None:
            return redirect(request, "/status")
        if session is None:
            session = self.ctx.sessions.create()
            self.ctx.set_cookie(request, session)
        return self._form(request, session)

    def render_POST(self, request):
        session = self.ctx.session_for(request)
        form = form_of(request)
        if session is None or not tokens_match(session.csrf, form.get("csrf")):
            session = self.ctx.sessions.create()
            self.ctx.set_cookie(request, session)
            WEB_LOGINS.labels("csrf").inc()
            return self._form(request, session, "The login form expired or was not sent "
                              "from this site. Please try again.", 403)
        source = peer_of(request)
        d = self.ctx.authenticate(source, form.get("username", ""), form.get("password", ""))

        def checked(user):
            if user is None:
                finish(request, self._form(request, session, "Wrong user name or password.", 401))
                return
            if not self.ctx.may_administer(user):
                finish(request, self._form(
                    request, session, "%s is not an admin: ask an admin to set admin = yes on "
                    "the Users page." % user, 403))
                return
            fresh = self.ctx.sessions.login(session, user)
            self.ctx.set_cookie(request, fresh)
            finish(request, redirect(request, safe_next(form.get("next", ""))))

        def locked(failure):
            failure.trap(LockedOut)
            minutes = (failure.value.seconds + 59) // 60
            finish(request, self._form(
                request, session, "Too many failed logins %s: %s (in %d minute%s)." % (
                    self.ctx.locked_whom(source, form.get("username", "")),
                    until_text(failure.value.until), minutes, "" if minutes == 1 else "s"), 429))
        d.addCallbacks(checked, locked)
        d.addErrback(lambda f: (log.failure("login failed", f),
                                finish(request, self._form(request, session, "Login failed.", 500))))
        return server.NOT_DONE_YET


class LogoutResource(resource.Resource):
    """`/logout` (POST with the CSRF token): end the session."""

    isLeaf = True

    def __init__(self, ctx):
        resource.Resource.__init__(self)
        self.ctx = ctx

    def render_POST(self, request):
        session = self.ctx.session_for(request)
        form = form_of(request)
        if session is not None and tokens_match(session.csrf, form.get("csrf")):
            self.ctx.sessions.end(session.id)
            self.ctx.clear_cookie(request)
        return redirect(request, "/login")

    def render_GET(self, request):
        return redirect(request, "/status")


class NotFoundResource(resource.Resource):
    """Any path that names nothing: the styled 404 page (SPEC 10)."""

    isLeaf = True

    def __init__(self, ctx):
        resource.Resource.__init__(self)
        self.ctx = ctx

    def render(self, request):
        return self.ctx.render_not_found(request)


class StaticFiles(static.File):
    """The pages' static files: no directory listings (a directory is not found)."""

    def directoryListing(self):
        return self.childNotFound


class Branch(resource.Resource):
    """A directory of fixed children; anything else under it, and itself, is not found."""

    def __init__(self, missing, children):
        resource.Resource.__init__(self)
        self.missing = missing
        for name, child in children.items():
            self.putChild(name, child)

    def getChild(self, path, request):
        return self.missing

    def render(self, request):
        return self.missing.render(request)


class AdminRoot(resource.Resource):
    """The admin port's tree: pages, login/logout, static files, /api, /metrics."""

    def __init__(self, ctx, api=None, metrics=None):
        resource.Resource.__init__(self)
        self.ctx = ctx
        missing = NotFoundResource(ctx)
        files = StaticFiles(STATIC_DIR)
        files.childNotFound = missing
        # Chart.js from its Debian package
        files.putChild(b"vendor", Branch(missing, vendor_files().children))
        self.putChild(b"static", files)
        self.putChild(b"login", LoginResource(ctx))
        self.putChild(b"logout", LogoutResource(ctx))
        if api is not None:
            self.putChild(b"api", api)
        if metrics is not None:
            self.putChild(b"metrics", metrics)
        for page in pages.PAGES:
            self.putChild(page.slug.encode(), PageResource(ctx, page))

    def getChild(self, path, request):
        if path == b"":
            return self
        return NotFoundResource(self.ctx)

    def getChildWithDefault(self, path, request):
        # `/login/extra`, `/logout/extra`: nothing is there.
        if path in (b"login", b"logout") and any(request.postpath):
            return NotFoundResource(self.ctx)
        return resource.Resource.getChildWithDefault(self, path, request)

    def render_GET(self, request):
        return redirect(request, "/status", 302)
