# -*- test-case-name: allworx.tests.web.test_vpnsites -*-
"""
The API routes of sites and remote devices (SPEC 16), added to
`OfficeApi`'s routes when this module is imported (the web service does):

- `GET /api/v1/sites`: each site's tunnel state (`vpnsites.sites_json`);
  a site's record itself stays at `/api/v1/sites/{name}`, and
  `POST /api/v1/sites` still creates one (the records' routes);
- `GET /api/v1/devices/{name}/wireguard.conf` and `.../wireguard.png`: the
  device's client config as text and as a QR code (`wgdevices`; a
  server-made private key in the first answer only);
- `POST /api/v1/devices/{name}/key`: a new server-made key, shown once in
  the next config; the tunnel takes it at once.

The devices themselves (`GET /api/v1/devices`, `PUT`/`POST`/`DELETE
/api/v1/devices/{name}`) are records like the others.
"""

from allworx.protocols.web import vpnsites, wgdevices
from allworx.protocols.web.api import ApiError, OfficeApi, guarded

app = OfficeApi.app


def _config_answer(api, request, name, kind):
    office = api.ctx.office
    config = office.config
    try:
        text = wgdevices.client_config(config, config.system.data_dir, office.wan_address, name)
    except wgdevices.NoConfig as e:
        raise ApiError(503, "unavailable", str(e))
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    if kind == "png":
        request.setHeader(b"content-type", wgdevices.PNG_TYPE)
        return wgdevices.qr_png(text)
    request.setHeader(b"content-type", wgdevices.CONF_TYPE)
    request.setHeader(b"content-disposition",
                      ('attachment; filename="%s.conf"' % name).encode("ascii"))
    return text.encode("utf-8")


@app.route("/v1/sites", methods=["GET"])
@guarded
def vpn_sites(self, request):
    """Each site: endpoint, address, networks, last handshake, bytes, whether its server answers."""
    config = self.ctx.office.config
    d = vpnsites.live(self.ctx.views.vpn)
    return d.addCallback(lambda found: vpnsites.sites_json(config, found[0], found[1]))


@app.route("/v1/devices/<name>/wireguard.conf", methods=["GET"])
@guarded
def device_conf(self, request, name):
    """The device's WireGuard client config (text)."""
    return _config_answer(self, request, name, "conf")


@app.route("/v1/devices/<name>/wireguard.png", methods=["GET"])
@guarded
def device_png(self, request, name):
    """The device's WireGuard client config as a QR code (PNG)."""
    return _config_answer(self, request, name, "png")


@app.route("/v1/devices/<name>/key", methods=["POST"])
@guarded
def device_new_key(self, request, name):
    """A new server-made key for the device; its private half is in the next config, once."""
    d = wgdevices.renew_key(self.ctx, name)

    def made(key):
        self.changed("the key of device %s" % name)
        return {"public_key": key}

    def own(failure):
        failure.trap(ValueError)
        raise ApiError(409, "own key", str(failure.value))
    return d.addCallbacks(made, own)
