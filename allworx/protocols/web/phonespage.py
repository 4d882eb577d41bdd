# -*- test-case-name: allworx.tests.web.test_phonespage -*-
"""
The Phones page: trunks, registrations, calls in progress and the call
history, and the phones that configure themselves (SPEC 19): the assigned
ones (owner, model, label, address, last fetch, registered) with a "New
secret" button each, and the new ones ("new phone: Yealink, 192.168.2.37,
asked 2m ago") with a form that gives one to a user in one step. The rows
and changes are `phonelist`'s, the same as `/api/v1/phones`; no secret is
ever shown.
"""

from allworx.protocols.web import phonelist
from allworx.protocols.web.callhistory import history_context
from allworx.protocols.web.metrics import field
from allworx.protocols.web.pagebase import (
    Page, ago_or_in, listed, name_of, relative_rfc3339, who)

# How the page names each model (tap.conf's words are the `model` values).
MODEL_NAMES = {"yealink": "Yealink", "polycom": "Polycom", "grandstream": "Grandstream",
               "snom": "Snom", "cisco-spa": "Cisco SPA", "generic": "Generic (baresip)"}


def pretty_mac(mac):
    """`001565abcdef` -> `00:15:65:ab:cd:ef`, as phones print it on their labels."""
    return ":".join(mac[i:i + 2] for i in range(0, 12, 2))


def model_name(model):
    return MODEL_NAMES.get(model, "unknown model") if model else "unknown model"


def phone_context(config, views, now):
    """The Phones page's phones: `phones` (assigned), `new_phones` (newest first), `owners`."""
    rows = phonelist.phone_rows(config, views)
    assigned = [dict(r, shown_mac=pretty_mac(r["mac"]), model_name=model_name(r["model"]),
                     owner=who(config, r["extension"], r["full_name"]) or r["user"],
                     fetched=ago_or_in(now, r["last_fetch"]) or "never")
                for r in rows if r["state"] == phonelist.ASSIGNED]
    new = [dict(r, shown_mac=pretty_mac(r["mac"]), model_name=model_name(r["model"]),
                asked=ago_or_in(now, r["last_fetch"]) or "")
           for r in rows if r["state"] == phonelist.NEW]
    new.sort(key=lambda r: -(r["last_fetch"] or 0))
    owners = [(u.name, "%s (%s)" % (u.full_name or u.name, u.extension))
              for u in sorted(config.users.values(), key=lambda u: u.name)
              if u.extension is not None]
    return {"phones": assigned, "new_phones": new, "owners": owners,
            "models": [(m, MODEL_NAMES[m]) for m in MODEL_NAMES],
            "phonebook_running": views.phones is not None}


class PhonesPage(Page):
    """Trunks, registered phones, calls, the call history and the phones that set themselves up."""

    slug, title, template = "phones", "Phones", "phones.html"
    refresh = "phones"

    def context(self, ctx, sub):
        reg, calls = ctx.views.registrations, ctx.views.calls
        now = ctx.clock.seconds()
        config = ctx.office.config
        out = {"running": reg is not None, "bindings": [{
            "user": who(config, field(b, "extension", ""), field(b, "user", "")),
            "extension": field(b, "extension", ""),
            "contact": field(b, "contact", ""), "source": field(b, "source", ""),
            "expires": ago_or_in(now, field(b, "expires")),
        } for b in listed(reg, "bindings")], "calls": [{
            "caller": who(config, field(c, "caller", ""), field(c, "caller_name")),
            "callee": who(config, field(c, "callee", "")),
            "state": field(c, "state", ""), "started": ago_or_in(now, field(c, "started")),
        } for c in listed(calls, "active_calls")],
            "has_trunks": ctx.views.trunks is not None, "trunks": [{
            "name": t.get("name", ""), "registrar": t.get("registrar", ""),
            "state": (t.get("state") or "").replace("_", " "),
            "since": relative_rfc3339(now, t.get("since")),
            "expires": relative_rfc3339(now, t.get("expires")),
            "last_error": t.get("last_error") or "",
            "channels": "%s of %s" % (t.get("channels_in_use", 0), t.get("channels", "")),
        } for t in listed(ctx.views.trunks, "status")]}
        out.update(phone_context(config, ctx.views, now))
        return out

    def context_for(self, ctx, sub, query):
        """Also the call history, filtered and paged by the query."""
        out = self.context(ctx, sub)
        out.update(history_context(ctx.views.call_history, query))
        config = ctx.office.config
        for row in out["history"]:
            # Callers with names: the directory's, else the one the call brought.
            row["from_name"] = name_of(config, row["from"], row["from_name"])
            row["to_name"] = name_of(config, row["to"])
            row["answered_by"] = who(config, row["answered_by"])
        return out

    def record_section(self, name, form):
        """The give form's errors mark its own keys (a new phone's section is named by its MAC)."""
        mac = phonelist.mac_or_none(form.get("mac"))
        return "phone %s" % mac if name == "give" and mac is not None else None

    # ---- actions

    def do_give(self, ctx, form, sub):
        mac = phonelist.checked_mac(form.get("mac"))
        values = {k: form.get(k, "") for k in phonelist.WRITABLE}
        phonelist.give(ctx.office, ctx.views, mac, values, "assign")
        phone = ctx.office.config.phone_by_mac(mac)
        owner = ctx.office.config.users[phone.user]
        given = "Phone %s given to %s." % (pretty_mac(mac), who(ctx.office.config, owner.extension,
                                                               owner.full_name or owner.name))
        d = phonelist.resync(ctx.views, ctx.clock, mac)
        return d.addCallback(lambda took: "%s %s" % (given, phonelist.resync_words(took)))

    def do_new_secret(self, ctx, form, sub):
        mac = phonelist.checked_mac(form.get("mac"))
        try:
            d = phonelist.new_secret(ctx.office, ctx.views, ctx.clock, mac)
        except phonelist.NotRunning as e:
            return "No new secret: %s." % e
        return d.addCallback(lambda took: "Phone %s has a new SIP secret. %s" % (
            pretty_mac(mac), phonelist.resync_words(took)))

    def do_remove(self, ctx, form, sub):
        mac = phonelist.checked_mac(form.get("mac"))
        phonelist.remove(ctx.office, mac)
        return ("Phone %s removed: it is a new phone again the next time it asks for its "
                "settings." % pretty_mac(mac))
