# -*- test-case-name: allworx.tests.web.test_pages -*-
"""
The admin pages, named as in the guide. Each page says what it shows (a
context for its template) and what its forms do (actions ending in an Office
call through `allworx.protocols.web.changes`). The HTTP side (sessions, CSRF, redirects)
is in `allworx.protocols.web.admin`.
"""

import re
import time

from twisted.internet import defer

from allworx.config import BUILTIN_NAMES, ConfigError, ConfigErrors
from allworx.protocols.dns.zone import zone_entries
from allworx.protocols.web import changes
from allworx.protocols.web import forms
from allworx.protocols.web import logtables
from allworx.protocols.web import mailsetup
from allworx.protocols.web.backuppage import BackupPage, HistoryPage
from allworx.protocols.web.dashboard import StatusPage
from allworx.protocols.web.diagnosticspage import DiagnosticsPage
from allworx.protocols.web.lines import LinesPage
from allworx.protocols.web.logview import LogsPage
from allworx.protocols.web.mailsecurity import MailSecurityPage
from allworx.protocols.web.phonespage import PhonesPage
from allworx.protocols.web.vpnsites import SitesPage
from allworx.protocols.web.metrics import field
from allworx.protocols.web.userdevices import (
    DEVICE_FIELDS, DeviceActions, device_page, device_rows, devices_of)
from allworx.protocols.web.pagebase import (
    Page, RecordActions, Redirect, SettingsPage, ago_or_in, listed, with_warnings)


NOT_RUNNING = "%s not running"
CONNECTION_KEYS = ("time", "proto", "src", "sport", "dst", "dport", "side", "action", "reason")
QUEUE_KEYS = ("id", "sender", "recipients", "attempts", "next_attempt", "last_error")


def clock_time(when):
    """HH:MM:SS (UTC) of a POSIX time, for logs."""
    try:
        return time.strftime("%H:%M:%S", time.gmtime(float(when)))
    except (TypeError, ValueError, OverflowError):
        return str(when or "")


def host_label(hostname):
    """A [host] name made from a DHCP client's host name, or None if none fits."""
    if not hostname:
        return None
    if isinstance(hostname, bytes):
        hostname = hostname.decode("ascii", "replace")
    label = re.sub(r"[^a-z0-9-]+", "-", hostname.split(".")[0].lower()).strip("-")[:63]
    return label if label and label not in BUILTIN_NAMES else None


def fetch_summary(entry, now):
    """One line about a POP3 fetch account's last result (the mail service's status dict)."""
    if entry is None:
        return "not fetched yet"
    if not isinstance(entry, dict):
        return str(entry)
    parts = [str(entry.get("state") or "")]
    if entry.get("last_success") is not None:
        parts.append("last fetched %s" % ago_or_in(now, entry["last_success"]))
    if entry.get("fetched"):
        parts.append("%s message(s) so far" % entry["fetched"])
    if entry.get("error"):
        parts.append("error: %s" % entry["error"])
    if entry.get("next_attempt") is not None:
        parts.append("next %s" % ago_or_in(now, entry["next_attempt"]))
    return "; ".join(p for p in parts if p)


def configured_zone(config, wan_ip):
    """
    The office zone as the configuration and the WAN address make it (guide
    10): the DNS zone's own rows (`zone_entries`), names relative to the
    domain, without the LAN's reverse zone.
    """
    domain = config.system.domain
    rows = []
    for e in zone_entries(config, wan_ip or None):
        if e.name == domain:
            rows.append(("@", e.rtype, e.value))
        elif e.name.endswith("." + domain):
            rows.append((e.name[:-len(domain) - 1], e.rtype, e.value))
    return rows


def served_rows(zone):
    """(name, type, value, ttl, source) of the zone the DNS service serves."""
    sources = {(e.name, e.rtype, e.value): e.source for e in zone.entries}
    return [(n, t, v, ttl, sources.get((n, t, v), "")) for n, t, v, ttl in zone.rows()]


class NetworkPage(SettingsPage):
    """Server name, domain, LAN address, WAN mode and address (guide 2, 3)."""

    slug, title, template = "network", "Network Settings", "network.html"
    fields = forms.NETWORK


class SecurityPage(SettingsPage, RecordActions):
    """Security mode, DMZ ports, and the LAN devices made visible on the WAN."""

    slug, title, template = "security", "Security Settings", "security.html"
    fields = forms.SECURITY
    kinds = {"add_forward": "forward", "save_forward": "forward"}

    def context(self, ctx, sub):
        out = SettingsPage.context(self, ctx, sub)
        out["forwards"] = sorted(ctx.office.config.forwards.values(), key=lambda f: f.name)
        out["forward_fields"] = forms.RECORD_FIELDS["forward"]
        out["editing"] = self.editing(ctx, "forward", sub)
        return out

    def do_add_forward(self, ctx, form, sub):
        return self._add(ctx, "forward", form)

    def do_save_forward(self, ctx, form, sub):
        return self._save(ctx, "forward", form)

    def do_delete_forward(self, ctx, form, sub):
        return self._delete(ctx, "forward", form)


class DhcpPage(SettingsPage, RecordActions):
    """DHCP settings, reservations and the live lease table."""

    slug, title, template = "dhcp", "Servers - DHCP", "dhcp.html"
    fields = forms.DHCP
    kinds = {"add_host": "host", "save_host": "host"}
    refresh = "leases"

    def context(self, ctx, sub):
        out = SettingsPage.context(self, ctx, sub)
        office = ctx.office
        out["hosts"] = sorted(office.config.hosts.values(), key=lambda h: h.name)
        out["host_fields"] = forms.RECORD_FIELDS["host"]
        out["editing"] = self.editing(ctx, "host", sub)
        try:
            first, last = office.config.pool
            out["pool"] = "%s - %s" % (first, last)
        except ValueError:
            out["pool"] = ""
        leases = ctx.views.leases
        out["leases_running"] = leases is not None
        now = ctx.clock.seconds()
        reserved = {h.mac for h in office.config.hosts.values()}
        out["leases"] = [{
            "address": str(field(l, "address", "")), "mac": field(l, "mac", ""),
            "hostname": field(l, "hostname", "") or "", "state": field(l, "state", "active"),
            "expires": ago_or_in(now, field(l, "expires")),
            "reserve_as": None if field(l, "mac") in reserved else host_label(field(l, "hostname")),
        } for l in sorted(listed(leases, "active_leases"),
                          key=lambda l: tuple(int(x) for x in str(field(l, "address", "0")).split(".")
                                              if x.isdigit()))]
        out["warnings"] = listed(ctx.views.rogues, "warnings")
        return out

    def do_add_host(self, ctx, form, sub):
        return self._add(ctx, "host", form)

    def do_save_host(self, ctx, form, sub):
        return self._save(ctx, "host", form)

    def do_delete_host(self, ctx, form, sub):
        return self._delete(ctx, "host", form)


class DnsPage(SettingsPage, RecordActions):
    """Forwarders, the use-forwarders switch, static records, the zone as served."""

    slug, title, template = "dns", "DNS Server", "dns.html"
    fields = forms.DNS
    kinds = {"add_record": "record", "save_record": "record"}

    def context(self, ctx, sub):
        out = SettingsPage.context(self, ctx, sub)
        office = ctx.office
        out["records"] = sorted(office.config.records.values(), key=lambda r: r.name)
        out["record_fields"] = forms.RECORD_FIELDS["record"]
        out["editing"] = self.editing(ctx, "record", sub)
        zone = ctx.views.zone.zone if ctx.views.zone is not None else None
        out["zone_rows"] = served_rows(zone) if zone is not None else None
        out["zone_served"] = zone.as_text() if zone is not None else None
        out["zone_configured"] = configured_zone(office.config, office.wan_ip)
        out["domain"] = office.config.system.domain
        return out

    def do_add_record(self, ctx, form, sub):
        return self._add(ctx, "record", form)

    def do_save_record(self, ctx, form, sub):
        return self._save(ctx, "record", form)

    def do_delete_record(self, ctx, form, sub):
        return self._delete(ctx, "record", form)


class AliasPage(Page, RecordActions):
    """The domain's mail aliases, edited in place."""

    slug, title, template = "aliases", "Message Alias", "aliases.html"
    kinds = {"add_alias": "alias", "save_alias": "alias"}

    def context(self, ctx, sub):
        # Each alias in the file's own words (its spacing, its order).
        return {"aliases": [forms.current_record(ctx.office, "alias", name)
                            for name in sorted(ctx.office.config.aliases)],
                "alias_fields": forms.RECORD_FIELDS["alias"],
                "domain": ctx.office.config.system.domain}

    def accepts(self, sub):
        return not sub      # aliases are edited in place: no page of their own

    def do_add_alias(self, ctx, form, sub):
        return self._add(ctx, "alias", form)

    def do_save_alias(self, ctx, form, sub):
        return self._save(ctx, "alias", form)

    def do_delete_alias(self, ctx, form, sub):
        return self._delete(ctx, "alias", form)


class UsersPage(DeviceActions, Page):
    """
    Every user, and the login lock-outs in force; one user's page at
    /users/NAME with their remote devices; a device's config at
    /users/NAME/device/DEVICE.
    """

    slug, title, template = "users", "Users", "users.html"
    kinds = {"add_user": "user", "save_user": "user", "add_device": "device"}

    def context(self, ctx, sub):
        office = ctx.office
        config = office.config
        fetch = ctx.views.fetch.status if ctx.views.fetch is not None else {}
        now = ctx.clock.seconds()
        users = []
        for u in sorted(config.users.values(), key=lambda u: u.name):
            users.append({
                "name": u.name, "full_name": u.full_name, "extension": u.extension or "",
                "mail": "%s@%s" % (u.name, config.system.domain),
                "email_forward": u.email_forward or "",
                "pin": changes.pin_state(u), "admin": u.admin,
                "fetch": [(a.display, fetch_summary(fetch.get(a.display), now)) for a in u.pop3_fetch],
                "devices": devices_of(config, u.name),
            })
        out = {"users": users, "user_fields": forms.RECORD_FIELDS["user"], "editing": None,
               "user_defaults": forms.default_record("user"),
               "lockouts": lockout_rows(ctx.throttle, now)}
        if sub and sub[0]:
            name = sub[0]
            if name not in config.users:
                raise KeyError("user %s" % name)
            if len(sub) == 3 and sub[1] == "device":
                out.update(device_page(ctx, name, sub[2]))
                return out
            out["editing"] = name
            out["current"] = shown_user(office, name)
            out["devices"] = device_rows(config, name)
            out["device_fields"] = DEVICE_FIELDS
            out["vpn_enabled"] = config.vpn.enabled
        return out

    def accepts(self, sub):
        """/users/NAME, /users/NAME/mobileconfig, /users/NAME/device/DEVICE."""
        return (len(sub) <= 1 or (len(sub) == 2 and sub[1] == "mobileconfig")
                or (len(sub) == 3 and sub[1] == "device"))

    def template_for(self, sub):
        if len(sub) == 3 and sub[1] == "device":
            return "device.html"
        return "user.html" if sub and sub[0] else "users.html"

    def download(self, ctx, sub):
        """/users/NAME/mobileconfig: the user's Apple configuration profile."""
        if len(sub) != 2 or sub[1] != "mobileconfig":
            return None
        user = ctx.office.config.users.get(sub[0])
        if user is None:
            raise KeyError("user %s" % sub[0])
        try:
            body = mailsetup.mobileconfig(ctx.office.config, user)
        except LookupError:
            raise KeyError("mail set-up profile while mail is off")
        return mailsetup.PROFILE_TYPE, "%s.mobileconfig" % user.name, body

    def do_add_user(self, ctx, form, sub):
        name, values = forms.record_changes("user", form)
        if not name:
            raise ConfigErrors([ConfigError("user ", None, 0, "a name is required")])
        values["pop3_fetch"] = " ".join(values.get("pop3_fetch", "").split())
        # What says the default stays out of tap.conf (the default stays a default).
        values = forms.changed_values(forms.RECORD_FIELDS["user"], forms.default_record("user"),
                                      values)
        d = changes.save_user(ctx.office, name, values, "create", ctx.defer_to_thread)
        return d.addCallback(lambda result: with_warnings("Added user %s." % name, result[1]))

    def do_save_user(self, ctx, form, sub):
        name = form.get("name", "")
        if name not in ctx.office.config.users:
            raise KeyError("user %s" % name)
        _, sent = forms.record_changes("user", form)
        sent["pop3_fetch"] = "\n".join(sent.get("pop3_fetch", "").split())
        # Only what the admin changed is written: the rest keeps the file's
        # words. The password and PIN are never shown: empty keeps them.
        values = forms.changed_values(forms.RECORD_FIELDS["user"], shown_user(ctx.office, name),
                                      sent)
        if "pop3_fetch" in values:
            values["pop3_fetch"] = " ".join(values["pop3_fetch"].split())
        if form.get("clear_voicemail_pin"):
            values["voicemail_pin"] = ""
        d = changes.save_user(ctx.office, name, values, "patch", ctx.defer_to_thread)
        return d.addCallback(lambda result: with_warnings("Saved user %s." % name, result[1]))

    def do_delete_user(self, ctx, form, sub):
        name = form.get("name", "")
        changes.delete_record(ctx.office, "user", name)
        return Redirect("Deleted user %s." % name, "/users")

    def do_unlock(self, ctx, form, sub):
        """End a lock-out: a user's at a source, or (no user) everything at a source."""
        user, source = form.get("user", "").strip() or None, form.get("source", "").strip() or None
        if source is None:
            raise ConfigErrors([ConfigError(None, None, 0, "which source to unlock is missing")])
        ended = ctx.throttle.unlock(user, source, by="the admin pages")
        what = "%s at %s" % (user, source) if user else "everyone at %s" % source
        return Redirect("Unlocked %s." % what if ended else
                        "%s was not locked out (any more)." % what.capitalize(), "/users")


def shown_user(office, name):
    """A user's form as the page shows it: fetch passwords masked, one account a line."""
    current = forms.current_record(office, "user", name)
    current["pop3_fetch"] = "\n".join(changes.mask_fetch_urls(current["pop3_fetch"]).split())
    return current


def lockout_rows(throttle, now):
    """The throttle's lock-outs in force, as the Users page lists them."""
    return [{"user": l.user or "", "source": l.source, "failures": l.failures,
             "who": l.describe(), "until": clock_time(l.until) + " UTC",
             "lifts": ago_or_in(now, l.until)} for l in throttle.lockouts()]


class ServicesPage(SettingsPage):
    """Mail, POP3, phones, directory, time server and web ports; the admin password."""

    slug, title, template = "services", "Servers - Mail, Phones, Directory", "services.html"
    fields = forms.SERVICES

    def do_admin_password(self, ctx, form, sub):
        new, again = form.get("new_password", ""), form.get("confirm_password", "")
        if new != again:
            raise ConfigErrors([ConfigError("web", "admin_password", 0, "the two passwords differ")])
        d = changes.change_admin_password(ctx.office, new, ctx.defer_to_thread)

        def done(_):
            ctx.sessions.end_all()
            return Redirect("The admin password changed: log in with the new one.", "/login")
        return d.addCallback(done)


class MailQueuePage(Page):
    """The outbound queue, with retry and delete."""

    slug, title, template = "mailqueue", "Mail queue", "mailqueue.html"

    def context_for(self, ctx, sub, query):
        queue = ctx.views.mail_queue
        now = ctx.clock.seconds()
        entries = [{k: field(e, k) for k in QUEUE_KEYS} for e in listed(queue, "entries")]
        out = logtables.queue_context(entries, query)
        out.update({"running": queue is not None, "entries": [{
            "id": e["id"] or "", "sender": e["sender"] or "<>",
            "recipients": ", ".join(e["recipients"] or ()),
            "attempts": e["attempts"] or 0,
            "next_attempt": ago_or_in(now, e["next_attempt"]),
            "last_error": e["last_error"] or "",
        } for e in out["rows"]]})
        return out

    def _queue(self, ctx):
        queue = ctx.views.mail_queue
        if queue is None:
            raise ConfigErrors([ConfigError(None, None, 0, NOT_RUNNING % "the mail queue is")])
        return queue

    def do_retry(self, ctx, form, sub):
        d = defer.maybeDeferred(self._queue(ctx).retry, form.get("id", ""))
        return d.addCallback(lambda _: "Message %s will be tried again now." % form.get("id", ""))

    def do_delete(self, ctx, form, sub):
        d = defer.maybeDeferred(self._queue(ctx).remove, form.get("id", ""))
        return d.addCallback(lambda _: "Message %s deleted from the queue." % form.get("id", ""))


class ConnectionsPage(Page):
    """The firewall's recent decisions with their reasons: filtered, searched, paged."""

    slug, title, template = "connections", "Connections", "connections.html"
    refresh = "connlog"

    def context_for(self, ctx, sub, query):
        connlog = ctx.views.connections
        entries = [{k: field(e, k) for k in CONNECTION_KEYS}
                   for e in logtables.recent_connections(connlog)]
        counts = sorted((getattr(connlog, "counts", None) or {}).items()) if connlog is not None else []
        out = {"running": connlog is not None, "counts": counts,
               "mode": ctx.office.config.security.mode}
        out.update(logtables.connections_context(entries, query))
        return out


PAGES = [StatusPage(), NetworkPage(), SecurityPage(), DhcpPage(), DnsPage(), AliasPage(),
         UsersPage(), ServicesPage(), MailQueuePage(), MailSecurityPage(), PhonesPage(), LinesPage(),
         SitesPage(), ConnectionsPage(), LogsPage(), DiagnosticsPage(), BackupPage(),
         HistoryPage()]
PAGES_BY_SLUG = {p.slug: p for p in PAGES}

# The menu's names: short, one or two words each, so the whole menu fits on one
# line at 1280 px; each page's heading keeps the guide's full name.
MENU_NAMES = {"network": "Network", "security": "Security", "dhcp": "DHCP", "dns": "DNS",
              "aliases": "Aliases", "services": "Services", "backup": "Backup",
              "history": "History"}
for _page in PAGES:
    _page.menu = MENU_NAMES.get(_page.slug, _page.title)
