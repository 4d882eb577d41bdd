# -*- test-case-name: allworx.tests.web.test_pages, allworx.tests.web.test_lines -*-
"""
What every admin page is made of: `Page` (its name in the menu, template,
context and form actions), `SettingsPage` and `RecordActions` for the forms
that edit settings keys and records, `Redirect`, a notice that names the
page to go to next, and the helpers that read the running services' views. The pages themselves are in `allworx.protocols.web.pages`
and `allworx.protocols.web.lines`.
"""

import calendar
import time

from twisted.internet import defer
from twisted.logger import Logger

from allworx.config import ConfigError, ConfigErrors
from allworx.protocols.web import changes
from allworx.protocols.web import forms

log = Logger()


def listed(obj, method):
    """
    What a service's interface method `method` returns, as a list; [] when
    there is no such service, or when it fails (logged: one broken service
    must not take the page down).
    """
    if obj is None:
        return []
    try:
        return list(getattr(obj, method)())
    except Exception:
        log.failure("admin pages: {obj!r}.{method}() failed", obj=obj, method=method)
        return []


def ago_or_in(now, when):
    """`in 3h 20m` / `5m ago` for a POSIX time, relative to the reactor's clock."""
    if when is None:
        return ""
    try:
        delta = float(when) - now
    except (TypeError, ValueError):
        return str(when)
    span = abs(int(delta))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if span >= size:
            parts.append("%d%s" % (span // size, unit))
            span %= size
        if len(parts) == 2:
            break
    text = " ".join(parts) or "%ds" % span
    return ("in " + text) if delta >= 0 else (text + " ago")


def relative_rfc3339(now, text):
    """`5m ago` / `in 1h` for an RFC 3339 UTC time as the API gives it; "" for None."""
    if not text:
        return ""
    try:
        when = calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return str(text)
    return ago_or_in(now, when)


def who(config, number, name=None):
    """
    A caller or callee as the pages show it: `Alice Archer (101)` for an
    extension of the directory, `Name (number)` with the display name the
    call brought, else the number as it is.
    """
    number = str(number or "")
    label = name_of(config, number, name)
    if label:
        return "%s (%s)" % (label, number) if number else label
    return number


def name_of(config, number, name=None):
    """The name `who` shows for a number: the directory's, else `name`; "" for none."""
    user = config.user_by_extension(number) if number else None
    if user is not None:
        return user.full_name or user.name
    return str(name) if name and name != number else ""


class Page:
    """One admin page: its name in the menu, its template, its context, its actions."""

    slug = ""
    title = ""
    template = ""
    refresh = None      # element id the page's script refreshes, if any
    menu = None         # its name in the menu, if shorter than the title

    def context(self, ctx, sub):
        return {}

    def context_for(self, ctx, sub, query):
        """The context with the request's query (`{name: text}`); most pages need only `context`."""
        return self.context(ctx, sub)

    def accepts(self, sub):
        """
        Whether the path segments below the page (`sub`) can name something
        here: none for most pages, `edit/NAME` where a record is edited;
        anything else is not found (404).
        """
        return not sub or (isinstance(self, RecordActions) and len(sub) == 2
                           and sub[0] == "edit")

    def template_for(self, sub):
        """The template for this page (a sub-path may pick another)."""
        return self.template

    def action(self, ctx, name, form, sub):
        """Run the form action `name`: a Deferred firing with a notice."""
        method = getattr(self, "do_" + name, None)
        if method is None:
            raise ConfigErrors([ConfigError(None, None, 0, "unknown action %r" % name)])
        return defer.maybeDeferred(method, ctx, form, sub)

    def record_section(self, name, form):
        """For errors: the tap.conf section a record action touches."""
        kind = getattr(self, "kinds", {}).get(name)
        return "%s %s" % (kind, form.get("name", "").strip()) if kind else None


class SettingsPage(Page):
    """A page whose main form edits settings keys."""

    fields = ()

    def context(self, ctx, sub):
        return {"fields": self.fields, "current": forms.current_settings(ctx.office, self.fields)}

    def do_save(self, ctx, form, sub):
        # Only what the admin changed is written: the rest keeps the file's words.
        values = forms.changed_settings(ctx.office, self.fields, form)
        if not values:
            return "Nothing changed in %s." % self.title
        changes.apply_settings(ctx.office, values)
        return "%s saved." % self.title


class RecordActions:
    """Add and delete actions for the records a page lists (`kinds`: action -> kind)."""

    kinds = {}

    def _add(self, ctx, kind, form):
        name, values = forms.record_changes(kind, form)
        if not name:
            raise ConfigErrors([ConfigError("%s " % kind, None, 0, "a name is required")])
        changes.save_record(ctx.office, kind, name, values, "create")
        return "Added %s %s." % (kind, name)

    def _save(self, ctx, kind, form):
        name, sent = forms.record_changes(kind, form)
        office = ctx.office
        if name not in getattr(office.config, changes.PLURALS[kind]):
            raise KeyError("%s %s" % (kind, name))
        # Only what the admin changed is written: the rest keeps the file's words.
        values = forms.changed_values(forms.RECORD_FIELDS[kind],
                                      forms.current_record(office, kind, name), sent)
        if not values:
            return Redirect("Nothing changed in %s %s." % (kind, name), "/" + self.slug)
        changes.save_record(office, kind, name, values, "patch")
        return Redirect("Saved %s %s." % (kind, name), "/" + self.slug)

    def editing(self, ctx, kind, sub):
        """The record being edited (`/PAGE/edit/NAME`), or None; KeyError if unknown."""
        if len(sub) == 2 and sub[0] == "edit":
            return forms.current_record(ctx.office, kind, sub[1])
        return None

    def _delete(self, ctx, kind, form):
        name = form.get("name", "")
        changes.delete_record(ctx.office, kind, name)
        return "Deleted %s %s." % (kind, name)


def with_warnings(notice, warnings):
    return " ".join([notice] + ["Note: %s." % w for w in warnings])


class Redirect(str):
    """A notice that also names the page to go to next."""

    def __new__(cls, text, location):
        self = str.__new__(cls, text)
        self.location = location
        return self
