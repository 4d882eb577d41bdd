# -*- test-case-name: allworx.tests.web.test_phones -*-
"""
The API routes of the phones that configure themselves (SPEC 19), added to
`OfficeApi`'s routes when this module is imported (the web service does):

- `GET /api/v1/phones`: every phone, assigned and new (`phonelist.PHONE_KEYS`);
  `GET /api/v1/phones/{mac}` one of them (any MAC notation);
- `POST /api/v1/phones/{mac}` {"user", "model"?, "label"?}: give the phone to
  a user in one step (its `[phone MAC]` section written, or the keys given
  changed), then its check-sync; `PUT` the same, replacing the section's keys;
  `PATCH` changes an assigned phone; `DELETE` removes its section;
- `POST /api/v1/phones/{mac}/secret`: a new SIP secret (never shown) and a
  check-sync.

A change answers the phone as GET shows it, with `resync`: true (the phone
took the check-sync), false (not registered, or refused) or null (no answer
within a few seconds).
"""

from allworx.protocols.web import phonelist
from allworx.protocols.web.api import ApiError, OfficeApi, guarded
from allworx.protocols.web.apijson import texts_of

app = OfficeApi.app


def _answer(api, mac, took):
    out = phonelist.phone_json(phonelist.find(api.ctx.office.config, api.ctx.views, mac))
    out["resync"] = took
    return out


def _values(mac, data):
    """The keys a body sets: facts echoed back are dropped, a different MAC refused."""
    for key in ("mac", "name"):
        if key in data and phonelist.mac_or_none(data[key]) != mac:
            raise ApiError(400, "invalid", "the %s in the body differs from the URL" % key,
                           field=key)
    body = {k: v for k, v in data.items() if k not in phonelist.PHONE_KEYS + ("name",)
            or k in phonelist.WRITABLE}
    return texts_of(body, "phone %s" % mac, "phone")


def _change(api, request, mac_text, mode):
    mac = phonelist.checked_mac(mac_text)
    values = _values(mac, api.body(request))
    created = phonelist.give(api.ctx.office, api.ctx.views, mac, values, mode)
    api.changed("[phone %s]" % mac)
    if created:
        request.setHeader(b"location", ("/api/v1/phones/%s" % mac).encode("ascii"))
    d = phonelist.resync(api.ctx.views, api.ctx.clock, mac)
    d.addCallback(lambda took: api.respond(request, 201 if created else 200,
                                           _answer(api, mac, took)))
    return d


@app.route("/v1/phones", methods=["GET"])
@guarded
def phones(self, request):
    """The phones, a page at a time: assigned ones, then those seen asking for their files (SPEC 19)."""
    return self.paged(request, phonelist.phones_json(self.ctx.office.config, self.ctx.views),
                      lambda phone: phone)


@app.route("/v1/phones/<mac>", methods=["GET"])
@guarded
def phone_get(self, request, mac):
    """One phone, by its MAC in any notation."""
    mac = phonelist.checked_mac(mac)
    return phonelist.phone_json(phonelist.find(self.ctx.office.config, self.ctx.views, mac))


@app.route("/v1/phones/<mac>", methods=["POST"])
@guarded
def phone_give(self, request, mac):
    """Give the phone to a user (create its section, or change the keys given)."""
    return _change(self, request, mac, "assign")


@app.route("/v1/phones/<mac>", methods=["PUT"])
@guarded
def phone_put(self, request, mac):
    """Create or replace the phone's section."""
    return _change(self, request, mac, "replace")


@app.route("/v1/phones/<mac>", methods=["PATCH"])
@guarded
def phone_patch(self, request, mac):
    """Change keys of an assigned phone's section."""
    return _change(self, request, mac, "patch")


@app.route("/v1/phones/<mac>", methods=["DELETE"])
@guarded
def phone_delete(self, request, mac):
    """Remove the phone's section (it shows as a new phone again when it next asks)."""
    mac = phonelist.checked_mac(mac)
    phonelist.remove(self.ctx.office, mac)
    self.changed("[phone %s] deleted" % mac)
    request.setResponseCode(204)
    return b""


@app.route("/v1/phones/<mac>/secret", methods=["POST"])
@guarded
def phone_secret(self, request, mac):
    """A new SIP secret for the phone (never shown), and its check-sync."""
    mac = phonelist.checked_mac(mac)
    try:
        d = phonelist.new_secret(self.ctx.office, self.ctx.views, self.ctx.clock, mac)
    except phonelist.NotRunning as e:
        raise ApiError(503, "not running", str(e))
    d.addCallback(lambda took: self.changed("the SIP secret of phone %s" % mac) or took)
    return d.addCallback(lambda took: dict(_answer(self, mac, took), rotated=True))

