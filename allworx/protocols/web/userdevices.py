# -*- test-case-name: allworx.tests.web.test_wgdevices -*-
"""
A user's remote devices on the Users page (SPEC 16): the list on each
user's page (name, tunnel address, whose key, links to the config and its
QR code), a device added (every error at once, values as typed) or
removed, a new server-made key; and the device's own page,
`/users/USER/device/NAME`, showing its config as text and as a QR code
from one answer (so a server-made private key, shown once, is in both).
"""

import base64

from allworx.config import ConfigError, ConfigErrors
from allworx.protocols.web import changes
from allworx.protocols.web import forms
from allworx.protocols.web import wgdevices
from allworx.protocols.web.forms import Field
from allworx.protocols.web.lines import name_errors
from allworx.protocols.web.pagebase import Redirect

DEVICE_FIELDS = (
    Field("name", "Device name", help="Like alice-phone: letters, digits, '.', '_', '-'."),
    Field("address", "Tunnel address", help="Its address inside the tunnel subnet, no prefix."),
    Field("public_key", "Public key",
          help="Empty: the server makes the key pair and shows the private key once, in the "
               "device's config. Else the public key of a key pair the device made itself."),
)

KEY_STATES = {
    "own": "its own key",
    "waiting": "server-made; the private key not shown yet",
    "shown": "server-made; the private key was shown",
}


def devices_of(config, user):
    """The names of `user`'s devices, sorted."""
    return sorted(n for n, d in config.devices.items() if d.user == user)


def device_rows(config, user):
    data_dir = config.system.data_dir
    return [{"name": n, "address": str(config.devices[n].address),
             "key": KEY_STATES[wgdevices.key_state(config, data_dir, n)],
             "server_made": wgdevices.server_made(config.devices[n])}
            for n in devices_of(config, user)]


def device_page(ctx, user, name):
    """The context of `/users/USER/device/NAME`: the config text and its QR code (data: URI)."""
    office = ctx.office
    config = office.config
    device = config.devices.get(name)
    if device is None or device.user != user:
        raise KeyError("device %s of %s" % (name, user))
    out = {"device": name, "user": user, "address": str(device.address), "problem": None,
           "conf": None, "qr": None, "server_made": wgdevices.server_made(device)}
    try:
        text = wgdevices.client_config(config, config.system.data_dir, office.wan_address, name)
    except wgdevices.NoConfig as e:
        out["problem"] = str(e)
        return out
    out["conf"] = text
    out["shown_once"] = "PrivateKey = %s\n" % wgdevices.SHOWN_ONCE in text
    out["qr"] = "data:image/png;base64," + base64.b64encode(wgdevices.qr_png(text)).decode()
    return out


class DeviceActions:
    """The Users page's device forms: `add_device`, `delete_device`, `new_key`."""

    def _owner(self, ctx, sub):
        if not sub or sub[0] not in ctx.office.config.users:
            raise KeyError("user %s" % (sub[0] if sub else ""))
        return sub[0]

    def do_add_device(self, ctx, form, sub):
        user = self._owner(ctx, sub)
        name, values = forms.record_changes("device", form, DEVICE_FIELDS)
        values = {k: v.strip() for k, v in values.items() if v.strip()}
        values["user"] = user
        errors = name_errors("device", name, values)
        if errors:
            raise ConfigErrors(errors)
        changes.save_record(ctx.office, "device", name, values, "create")
        return Redirect("Added device %s: open it for its config." % name,
                        "/users/%s/device/%s" % (user, name))

    def do_delete_device(self, ctx, form, sub):
        user = self._owner(ctx, sub)
        name = form.get("name", "")
        if name not in devices_of(ctx.office.config, user):
            raise KeyError("device %s of %s" % (name, user))
        changes.delete_record(ctx.office, "device", name)
        return Redirect("Deleted device %s." % name, "/users/%s" % user)

    def do_new_key(self, ctx, form, sub):
        user = self._owner(ctx, sub)
        name = form.get("name", "")
        if name not in devices_of(ctx.office.config, user):
            raise KeyError("device %s of %s" % (name, user))
        d = wgdevices.renew_key(ctx, name)

        def own(failure):
            failure.trap(ValueError)
            raise ConfigErrors([ConfigError("device %s" % name, "public_key", 0,
                                            str(failure.value))])
        d.addErrback(own)
        return d.addCallback(lambda _: Redirect(
            "Device %s has a new key; the old one no longer works. Its private key is "
            "shown below, once." % name, "/users/%s/device/%s" % (user, name)))
