# -*- test-case-name: allworx.tests.web.test_lines -*-
"""
The Phone lines page (SPEC 15): the office's trunks to its telephony
provider, its outside numbers, ring groups and auto attendants, each added,
changed and removed in place, and the `[sip]` dialling rules and remote
phones. A save writes only what the admin changed, in the words typed: the
rest of the record keeps tap.conf's own words, and a form saved unchanged
changes nothing. A trunk's password is never shown; left empty it stays.
The SIP service follows each change live (a trunk registers, re-registers or
unregisters).
"""

import attr
from twisted.internet import defer

from allworx.config import RECORD_NAME, RECORD_SECTIONS, REQUIRED, ConfigError, ConfigErrors
from allworx.config.checks import invalid_name
from allworx.protocols.web import changes
from allworx.protocols.web import forms
from allworx.protocols.web.pagebase import Page, Redirect, listed, relative_rfc3339

# The kinds of record the page edits, in the order of its sections.
LINE_KINDS = ("trunk", "number", "group", "attendant")
LABELS = {"trunk": "trunk", "number": "number", "group": "ring group", "attendant": "attendant"}
HERE = "/lines"


def name_errors(kind, name, values):
    """
    For a name the kind does not allow (or none): that error and every error
    of the values a record of that kind would have, so the admin sees them
    all at once (the office stops at the name).
    """
    if name and RECORD_NAME[kind].fullmatch(name):
        return []
    section = "%s %s" % (kind, name)
    errors = [ConfigError(section, None, 0, invalid_name(kind, name) if name
                          else "a name is required")]
    for f in attr.fields(RECORD_SECTIONS[kind]):
        if "parse" not in f.metadata:
            continue
        text = values.get(f.name, "").strip()
        if not text:
            if f.default is REQUIRED:
                errors.append(ConfigError(section, f.name, 0, "is required"))
            continue
        try:
            f.metadata["parse"](text)
        except ValueError as e:
            errors.append(ConfigError(section, f.name, 0, str(e)))
    return errors


def target_text(text, empty="the operator"):
    return text or empty


def menu_text(values):
    """`1: sales, 2: 102` for an attendant's keys."""
    return ", ".join("%d: %s" % (d, values["key_%d" % d]) for d in range(10)
                     if values.get("key_%d" % d))


class LinesPage(Page):
    """Trunks, numbers, ring groups, attendants and the dialling rules."""

    slug, title, template = "lines", "Phone lines", "lines.html"
    kinds = {"%s_%s" % (op, kind): kind for kind in LINE_KINDS for op in ("add", "save")}

    def accepts(self, sub):
        """/lines/edit/KIND/NAME."""
        return not sub or (len(sub) == 3 and sub[0] == "edit" and sub[1] in LINE_KINDS)

    def context(self, ctx, sub):
        office = ctx.office
        config = office.config
        editing = dict.fromkeys(LINE_KINDS)
        if sub:
            if len(sub) != 3 or sub[0] != "edit" or sub[1] not in LINE_KINDS:
                raise KeyError("page /lines/%s" % "/".join(sub))
            kind, name = sub[1], sub[2]
            if name not in getattr(config, changes.PLURALS[kind]):
                raise KeyError("%s %s" % (kind, name))
            editing[kind] = forms.current_record(office, kind, name)
        rows = {kind: [forms.current_record(office, kind, name)
                       for name in sorted(getattr(config, changes.PLURALS[kind]))]
                for kind in LINE_KINDS}
        now = ctx.clock.seconds()
        states = {t.get("name"): t for t in listed(ctx.views.trunks, "status")}
        for row in rows["trunk"]:
            t = states.get(row["name"])
            row["state"] = (t.get("state") or "").replace("_", " ") if t else ""
            row["since"] = relative_rfc3339(now, t.get("since")) if t else ""
            row["last_error"] = (t.get("last_error") or "") if t else ""
        for row in rows["attendant"]:
            row["menu"] = menu_text(row)
        return {
            "rows": rows, "editing": editing, "labels": LABELS, "kinds": LINE_KINDS,
            "line_fields": {kind: forms.RECORD_FIELDS[kind] for kind in LINE_KINDS},
            "defaults": {kind: forms.default_record(kind) for kind in LINE_KINDS},
            "trunks_running": ctx.views.trunks is not None,
            "fields": forms.DIALLING, "current": forms.current_settings(office, forms.DIALLING),
            "target_text": target_text,
        }

    def action(self, ctx, name, form, sub):
        """`add_KIND`, `save_KIND`, `delete_KIND` for each kind of line record; `save_dialling`."""
        op, _, kind = name.partition("_")
        if kind in LINE_KINDS and op in ("add", "save", "delete"):
            return defer.maybeDeferred(getattr(self, "_%s_line" % op), ctx, kind, form)
        return Page.action(self, ctx, name, form, sub)

    # ---- records

    def _add_line(self, ctx, kind, form):
        name, sent = forms.record_changes(kind, form)
        errors = name_errors(kind, name, sent)
        if errors:
            raise ConfigErrors(errors)
        # What says the default stays out of tap.conf: the default stays a default.
        values = forms.changed_values(forms.RECORD_FIELDS[kind], forms.default_record(kind), sent)
        changes.save_record(ctx.office, kind, name, values, "create")
        return Redirect("Added %s %s." % (LABELS[kind], name), HERE)

    def _save_line(self, ctx, kind, form):
        office = ctx.office
        name, sent = forms.record_changes(kind, form)
        if name not in getattr(office.config, changes.PLURALS[kind]):
            raise KeyError("%s %s" % (kind, name))
        values = forms.changed_values(forms.RECORD_FIELDS[kind],
                                      forms.current_record(office, kind, name), sent)
        if not values:
            return Redirect("Nothing changed in %s %s." % (LABELS[kind], name), HERE)
        # The keys left alone keep the file's words (a blank password: the stored one).
        words = changes.record_texts(office, kind, name)
        changes.save_record(office, kind, name, dict(words, **values), "replace")
        return Redirect("Saved %s %s." % (LABELS[kind], name), HERE)

    def _delete_line(self, ctx, kind, form):
        name = form.get("name", "")
        changes.delete_record(ctx.office, kind, name)
        return Redirect("Deleted %s %s." % (LABELS[kind], name), HERE)

    # ---- [sip] dialling rules and remote phones

    def do_save_dialling(self, ctx, form, sub):
        office = ctx.office
        values = forms.section_changes(office, forms.DIALLING, "sip", form)
        if not values:
            return Redirect("Nothing changed in the dialling rules.", HERE)
        changes.apply_settings(office, {"sip": values})
        return Redirect("Dialling rules saved.", HERE)
