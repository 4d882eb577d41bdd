# -*- test-case-name: allworx.tests.web.test_api -*-
"""
The JSON API under `/api/v1/` (SPEC 10), routed with klein. It makes the same
changes as the pages through `allworx.protocols.web.changes` (so the same validation),
authenticates with HTTP Basic as `admin` or a page session (which must send
its CSRF token in `X-CSRF-Token` to change anything), and answers bad input
with 400 and a JSON body naming the field and the reason.
"""

import functools
import ipaddress
import json
import time

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger

from allworx.config import RECORD_PLURALS, SETTINGS_SECTIONS, ConfigErrors
from allworx.guards import login_name
from allworx.protocols.web import apipages, callhistory, changes, dashboard, mailsecurity
from allworx.protocols.web.apijson import (  # noqa: F401 (ApiError, as_text: the API's names)
    ApiError, as_text, invalid_body, plain, record_fields_json, settings_json, texts_of, with_times)
from allworx.protocols.web.admin import actor_of, form_of
from allworx.protocols.web.webauth import LoginRefused, basic_login
from allworx.protocols.web.metrics import WEB_CHANGES
from allworx.protocols.web.openapi import openapi_document
from allworx.protocols.web.sessions import tokens_match

log = Logger()

KINDS = {plural: kind for kind, plural in RECORD_PLURALS.items()}
UNSAFE = (b"POST", b"PUT", b"PATCH", b"DELETE")
MAX_BODY = 1024 * 1024


def not_admin(user):
    return ApiError(403, "forbidden", "%s is not an admin (admin = yes on the Users page)" % user)


def guarded(method):
    """Authenticate first, then run the handler; map failures to JSON answers."""
    @functools.wraps(method)
    def handler(self, request, **kwargs):
        d = self.authorize(request)
        d.addCallback(lambda _: self.acting(request, method, **kwargs))
        d.addCallback(lambda result: self.respond(request, 200, result)
                      if not isinstance(result, bytes) else result)
        d.addErrback(self.failed, request)
        return d
    return handler


class OfficeApi:
    """The `/api/v1` routes over the office."""

    app = Klein()

    def __init__(self, ctx):
        self.ctx = ctx
        self._basic_ok = {}   # sha256(user:pass:hash) -> clock time it was checked

    def resource(self):
        """The twisted.web resource to mount at `/api`."""
        return self.app.resource()

    # ---- plumbing

    def respond(self, request, code, body):
        """Finish with a JSON body."""
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8")

    def failed(self, failure, request):
        """Turn a failure into its JSON answer."""
        if failure.check(ApiError):
            e = failure.value
            body = {"error": e.error, "reason": e.reason}
            body.update(e.extra)
            # Every refusal in SPEC 10's shape too: {"errors": [{"section", "key", "message"}]}.
            body.setdefault("errors", [{"section": None, "key": e.extra.get("field"),
                                        "message": e.reason}])
            if e.code == 401:
                request.setHeader(b"www-authenticate", b'Basic realm="allworx admin", charset="UTF-8"')
            return self.respond(request, e.code, body)
        if failure.check(ConfigErrors):
            WEB_CHANGES.labels("api", "invalid").inc()
            return self.respond(request, 400, invalid_body(failure.value.errors))
        if failure.check(KeyError):
            reason = "there is no %s" % failure.value.args[0]
            return self.respond(request, 404, {"error": "not found", "reason": reason, "errors": [
                {"section": None, "key": None, "message": reason}]})
        log.failure("API {method} {path} failed", failure,
                    method=request.method.decode(), path=request.path.decode("utf-8", "replace"))
        return self.respond(request, 500, {"error": "internal", "reason": failure.getErrorMessage()})

    def acting(self, request, method, **kwargs):
        """Run a handler with its changes recorded as made by the request's user through the API."""
        with self.ctx.office.acting(actor_of(self.ctx, request), "api"):
            return method(self, request, **kwargs)

    def authorize(self, request, body_types=(b"application/json",)):
        """A Deferred that fires when the request may proceed, or fails with ApiError."""
        session = self.ctx.session_for(request)
        unsafe = request.method in UNSAFE
        if unsafe:
            ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
            length = request.getHeader(b"content-length")
            if ctype not in body_types and (length not in (None, b"0") or request.method != b"DELETE"):
                return defer.fail(ApiError(415, "unsupported media type", "send the body as "
                                           "Content-Type: %s" % body_types[0].decode()))
        header = request.getHeader(b"authorization")
        if header is None and session is not None and session.user is not None:
            if not self.ctx.may_administer(session.user):
                return defer.fail(not_admin(session.user))
            if unsafe and not tokens_match(session.csrf, request.getHeader(b"x-csrf-token")):
                return defer.fail(ApiError(403, "forbidden",
                                           "a page session must send its X-CSRF-Token to change things"))
            request.admin_user = session.user
            return defer.succeed(True)
        if header is None:
            return defer.fail(ApiError(401, "unauthorized",
                                       "log in with HTTP Basic as an admin user (or a session "
                                       "from the admin pages)"))
        d = basic_login(self.ctx, request, header, self._basic_ok)

        def allowed(user):
            if not self.ctx.may_administer(user):
                raise not_admin(user)
            request.admin_user = user
            return True

        def refused(failure):
            failure.trap(LoginRefused)
            e = failure.value
            raise ApiError(e.code, "locked out" if e.code == 429 else "unauthorized", e.reason)
        return d.addCallbacks(allowed, refused)

    def body(self, request):
        """The request's JSON object, as {key: text}."""
        raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(raw) > MAX_BODY:
            raise ApiError(413, "too large", "the body is larger than %d bytes" % MAX_BODY)
        try:
            data = json.loads(raw.decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError) as e:
            raise ApiError(400, "invalid", "the body is not JSON: %s" % e, field="body")
        if not isinstance(data, dict):
            raise ApiError(400, "invalid", "expected a JSON object of fields", field="body")
        return data

    def paged(self, request, items, render):
        """A page of a list (`apipages`); a bad `limit` or `offset` is a 400 naming it."""
        try:
            return apipages.paged(request, items if isinstance(items, apipages.Counted)
                                  else list(items), render)
        except apipages.PageError as e:
            raise ApiError(400, "invalid", str(e), field=e.name)

    def changed(self, what):
        """Count and log an accepted change."""
        WEB_CHANGES.labels("api", "ok").inc()
        log.info("API changed {what}", what=what)

    # ---- index and description

    @app.route("/v1/openapi.json", methods=["GET"])
    def openapi(self, request):
        """The OpenAPI document (no login needed to read it)."""
        return self.respond(request, 200, openapi_document())

    @app.route("/v1/", methods=["GET"])
    @guarded
    def index(self, request):
        """
        The API's paths (SPEC 10: `{"paths": [...]}`, every path of the OpenAPI
        document, which describes every path served); `resources` is the same
        list under the name earlier versions used.
        """
        paths = sorted(openapi_document()["paths"])
        return {"paths": paths, "resources": paths, "openapi": "/api/v1/openapi.json"}

    @app.route("/v1/status", methods=["GET"])
    @guarded
    def status(self, request):
        """WAN address, security mode, services; the dashboard's facts and alerts."""
        office = self.ctx.office
        return dict({"wan_address": str(office.wan_address) if office.wan_address else None,
                     "wan_source": office.wan_source,
                     "security_mode": office.config.security.mode,
                     "services": {s.name: {"state": s.state, "detail": s.detail}
                                  for s in office.status.values()}},
                    **dashboard.status_extra(self.ctx))

    # ---- settings

    def _section(self, section):
        if section not in SETTINGS_SECTIONS:
            raise ApiError(404, "not found", "no settings section %r; one of %s"
                           % (section, ", ".join(SETTINGS_SECTIONS)))
        return section

    @app.route("/v1/settings", methods=["GET"])
    @guarded
    def settings_all(self, request):
        """Every settings section."""
        return {s: settings_json(self.ctx.office, s) for s in SETTINGS_SECTIONS}

    @app.route("/v1/settings/<section>", methods=["GET"])
    @guarded
    def settings_get(self, request, section):
        """One settings section, key -> text."""
        return settings_json(self.ctx.office, self._section(section))

    @app.route("/v1/settings/<section>", methods=["PUT", "PATCH"])
    @guarded
    def settings_put(self, request, section):
        """Change keys of a section; `admin_password` is plain text, stored hashed."""
        self._section(section)
        values = texts_of(self.body(request), section, section)
        if section == "web" and "admin_password" in values:
            plain_password = values.pop("admin_password")
            d = changes.change_admin_password(self.ctx.office, plain_password, self.ctx.defer_to_thread)
            # Page sessions of the old password end; the rest of [web] goes
            # with it only if the password was accepted.
            d.addCallback(lambda _: self.ctx.sessions.end_all())
            d.addCallback(lambda _: changes.apply_settings(self.ctx.office, {section: values}))
        else:
            d = defer.maybeDeferred(changes.apply_settings, self.ctx.office, {section: values})
        d.addCallback(lambda _: self.changed("[%s]" % section))
        d.addCallback(lambda _: settings_json(self.ctx.office, section))
        return d

    # ---- records

    def _kind(self, plural):
        kind = KINDS.get(plural)
        if kind is None:
            raise ApiError(404, "not found", "no collection %r" % plural)
        return kind

    def record_json(self, kind, name):
        """
        A record as the API shows it (no hashes, no trunk secret; a PIN as
        set/not set; fetch passwords masked).
        """
        office = self.ctx.office
        if name not in getattr(office.config, changes.PLURALS[kind]):
            raise KeyError("%s %s" % (kind, name))
        values = record_fields_json(office, kind, name)
        values["name"] = name
        if kind == "user":
            values["voicemail_pin"] = changes.pin_state(office.config.users[name])
            values["pop3_fetch"] = changes.mask_fetch_urls(values["pop3_fetch"])
            values["mail"] = "%s@%s" % (name, office.config.system.domain)
            values["admin"] = office.config.users[name].admin
            fetch = self.ctx.views.fetch.status if self.ctx.views.fetch is not None else {}
            values["pop3_fetch_status"] = {
                a.display: with_times(plain(fetch.get(a.display)))
                for a in office.config.users[name].pop3_fetch}
        return values

    def _save(self, request, kind, name, mode):
        data = self.body(request)
        if "name" in data and data["name"] != name and mode != "create":
            raise ApiError(400, "invalid", "the name in the body differs from the URL", field="name")
        data.pop("name", None)
        for k in ("mail", "pop3_fetch_status"):
            data.pop(k, None)   # read-only facts a client may echo back
        values = texts_of(data, "%s %s" % (kind, name), kind)
        if mode == "create" and name in getattr(self.ctx.office.config, changes.PLURALS[kind]):
            raise ApiError(409, "exists", "%s %s already exists" % (kind, name), field="name")
        if kind == "user":
            d = changes.save_user(self.ctx.office, name, values, mode, self.ctx.defer_to_thread)
            d.addCallback(lambda result: result[1])
        else:
            d = defer.maybeDeferred(changes.save_record, self.ctx.office, kind, name, values, mode)
            d.addCallback(lambda _: [])

        def done(warnings):
            self.changed("[%s %s]" % (kind, name))
            out = self.record_json(kind, name)
            if warnings:
                out["warnings"] = warnings
            return out
        return d.addCallback(done)

    @app.route("/v1/<plural>", methods=["GET"])
    @guarded
    def records_list(self, request, plural):
        """A page of a collection's records, by name (`limit`, `offset`)."""
        kind = self._kind(plural)
        names = sorted(getattr(self.ctx.office.config, changes.PLURALS[kind]))
        return self.paged(request, names, lambda n: self.record_json(kind, n))

    @app.route("/v1/<plural>", methods=["POST"])
    @guarded
    def records_create(self, request, plural):
        """Create a record; its name is in the body."""
        kind = self._kind(plural)
        peek = self.body(request)
        request.content.seek(0)
        name = peek.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "invalid", "a name is required", field="name")
        d = self._save(request, kind, name.strip(), "create")

        def created(out):
            request.setHeader(b"location", ("/api/v1/%s/%s" % (plural, out["name"])).encode())
            return self.respond(request, 201, out)
        return d.addCallback(created)

    @app.route("/v1/<plural>/<name>", methods=["GET"])
    @guarded
    def record_get(self, request, plural, name):
        """One record."""
        return self.record_json(self._kind(plural), name)

    @app.route("/v1/<plural>/<name>", methods=["PUT"])
    @guarded
    def record_put(self, request, plural, name):
        """Create or replace a record."""
        kind = self._kind(plural)
        exists = name in getattr(self.ctx.office.config, changes.PLURALS[kind])
        return self._save(request, kind, name, "replace" if exists else "create")

    @app.route("/v1/<plural>/<name>", methods=["PATCH"])
    @guarded
    def record_patch(self, request, plural, name):
        """Change some fields of a record."""
        return self._save(request, self._kind(plural), name, "patch")

    @app.route("/v1/<plural>/<name>", methods=["DELETE"])
    @guarded
    def record_delete(self, request, plural, name):
        """Remove a record (refused while others refer to it)."""
        kind = self._kind(plural)
        changes.delete_record(self.ctx.office, kind, name)
        self.changed("[%s %s] deleted" % (kind, name))
        request.setResponseCode(204)
        return b""

    # ---- live, read-only views

    def _view(self, slot, what):
        value = getattr(self.ctx.views, slot)
        if value is None:
            raise ApiError(503, "not running", "%s not running" % what)
        return value

    @app.route("/v1/dhcp/leases", methods=["GET"])
    @guarded
    def leases(self, request):
        """A page of the DHCP server's leases."""
        table = self._view("leases", "DHCP server")
        if hasattr(table, "leases_page"):   # the page alone made, whatever the pool's size
            table = apipages.Counted(table.lease_count, table.leases_page)
        else:
            table = table.active_leases()
        return self.paged(request, table, lambda l: with_times(plain(l)))

    @app.route("/v1/connections", methods=["GET"])
    @guarded
    def connections(self, request):
        """The firewall's recent decisions, newest first, and counts."""
        log_ = self._view("connections", "firewall")
        limit = _int_arg(request, b"limit", 200, 1, 10000)
        return {"counts": plain(log_.counts),
                "entries": [with_times(plain(e)) for e in log_.recent(limit)]}

    @app.route("/v1/mail/queue", methods=["GET"])
    @guarded
    def mail_queue(self, request):
        """A page of the outbound mail queue."""
        entries = self._view("mail_queue", "mail queue").entries()
        return self.paged(request, entries, lambda e: with_times(plain(e)))

    @app.route("/v1/mail/queue/<queue_id>/retry", methods=["POST"])
    @guarded
    def mail_retry(self, request, queue_id):
        """Try a queued message again now."""
        queue = self._view("mail_queue", "mail queue")
        d = defer.maybeDeferred(queue.retry, queue_id)
        return d.addCallback(lambda _: {"retrying": queue_id})

    @app.route("/v1/mail/queue/<queue_id>", methods=["DELETE"])
    @guarded
    def mail_delete(self, request, queue_id):
        """Drop a queued message."""
        queue = self._view("mail_queue", "mail queue")
        d = defer.maybeDeferred(queue.remove, queue_id)

        def gone(_):
            request.setResponseCode(204)
            return b""
        return d.addCallback(gone)

    @app.route("/v1/mail/security", methods=["GET"])
    @guarded
    def mail_security(self, request):
        """DNS records to publish, the last decisions on incoming mail, Junk counts (SPEC 18)."""
        view = self._view("mail_security", "mail service")
        verdict = (request.args.get(b"verdict") or [b""])[0].decode("utf-8", "replace") or None
        if verdict is not None and verdict not in mailsecurity.VERDICTS:
            raise ApiError(400, "invalid", "verdict is one of %s" % ", ".join(mailsecurity.VERDICTS),
                           field="verdict")
        limit = _int_arg(request, b"limit", mailsecurity.API_LIMIT, 1, mailsecurity.DECISIONS_KEPT)
        return mailsecurity.security_json(view, limit, verdict)

    @app.route("/v1/mail/dkim/rotate", methods=["POST"])
    @guarded
    def dkim_rotate(self, request):
        """New DKIM keys under a new selector."""
        d = mailsecurity.rotate(self._view("mail_security", "mail service"))
        d.addCallback(lambda selector: self.changed("the DKIM keys (%s)" % selector) or selector)
        return d.addCallback(lambda selector: {"selector": selector})

    @app.route("/v1/sip/registrations", methods=["GET"])
    @guarded
    def registrations(self, request):
        """A page of the registered phones."""
        bindings = self._view("registrations", "SIP registrar").bindings()
        return self.paged(request, bindings, lambda b: with_times(plain(b)))

    @app.route("/v1/sip/trunks", methods=["GET"])
    @guarded
    def trunks(self, request):
        """The trunks to the telephony provider and their registration (SPEC 15)."""
        return [with_times(plain(t)) for t in self._view("trunks", "SIP trunks").status()]

    @app.route("/v1/sip/calls", methods=["GET"])
    @guarded
    def calls(self, request):
        """A page of the calls in progress."""
        calls = self._view("calls", "SIP proxy").active_calls()
        return self.paged(request, calls, lambda c: with_times(plain(c)))

    @app.route("/v1/calls", methods=["GET"])
    @guarded
    def call_history(self, request):
        """Ended calls, newest first: JSON, or CSV with ?format=csv."""
        history = self._view("call_history", "call history")
        try:
            query = callhistory.parse_query(form_of(request))
        except callhistory.BadParameter as e:
            raise ApiError(400, "invalid", str(e), field=e.name)
        entries, total = history.page(**query.page_args())
        if query.format == "csv":
            request.setHeader(b"content-type", b"text/csv; charset=utf-8")
            request.setHeader(b"content-disposition", b'attachment; filename="calls.csv"')
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"x-content-type-options", b"nosniff")
            return callhistory.csv_bytes(entries)
        return {"calls": [e.as_json() for e in entries], "total": total,
                "limit": query.limit, "offset": query.offset}

    # ---- login lock-outs

    @app.route("/v1/lockouts", methods=["GET"])
    @guarded
    def lockouts(self, request):
        """The login throttle's lock-outs in force."""
        return {"lockouts": [lockout_json(l) for l in self.ctx.throttle.lockouts()]}

    @app.route("/v1/lockouts/unlock", methods=["POST"])
    @guarded
    def unlock(self, request):
        """End lock-outs: {"user", "source"} (either may be left out, not both)."""
        data = self.body(request)
        user, source = data.get("user"), data.get("source")
        for key, value in (("user", user), ("source", source)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ApiError(400, "invalid", "%s must be text (or left out)" % key, field=key)
        if user is None and source is None:
            raise ApiError(400, "invalid", "name a user, a source or both", field="user")
        if source is not None:
            try:
                source = str(ipaddress.ip_address(source.strip()))
            except ValueError:
                raise ApiError(400, "invalid", "%r is not an IP address" % source, field="source")
        if user is not None:
            user = login_name(self.ctx.office.config, user.strip())    # 101, alice@... -> alice
        ended = self.ctx.throttle.unlock(user, source, by="the API")
        return {"unlocked": [lockout_json(l) for l in ended]}

    # ---- backup

    # (GET /v1/backup, the whole office, and its tap.conf alone: backupweb)

    @app.route("/v1/backup", methods=["PUT"])
    @guarded
    def restore(self, request):
        """Replace tap.conf with a backup, validated whole first."""
        data = self.body(request)
        text = data.get("text")
        if not isinstance(text, str):
            raise ApiError(400, "invalid", "expected {\"text\": \"<the whole tap.conf>\"}", field="text")
        changes.restore(self.ctx.office, text)
        self.changed("everything (restore)")
        return {"restored": True, "bytes": len(text.encode("utf-8"))}

    @app.handle_errors(Exception)
    def not_found(self, request, failure):
        """Unknown paths and methods, as JSON."""
        from werkzeug.exceptions import MethodNotAllowed, NotFound
        if failure.check(NotFound):
            reason = "there is no %s in the API (GET /api/v1/ lists its paths)" % (
                request.path.decode("utf-8", "replace"))
            return self.respond(request, 404, {"error": "not found", "reason": reason, "errors": [
                {"section": None, "key": None, "message": reason}]})
        if failure.check(MethodNotAllowed):
            reason = "%s is not allowed here" % request.method.decode()
            return self.respond(request, 405, {"error": "method not allowed", "reason": reason,
                                               "errors": [{"section": None, "key": None,
                                                           "message": reason}]})
        return self.failed(failure, request)


def lockout_json(lockout):
    """A lock-out as the API shows it (`user` null: the whole source)."""
    return {"user": lockout.user, "source": lockout.source, "failures": lockout.failures,
            "until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(lockout.until))}


def _int_arg(request, name, default, low, high):
    try:
        value = int((request.args.get(name) or [default])[0])
    except (TypeError, ValueError):
        raise ApiError(400, "invalid", "%s must be a whole number" % name.decode(), field=name.decode())
    return max(low, min(high, value))

