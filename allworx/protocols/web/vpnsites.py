# -*- test-case-name: allworx.tests.web.test_vpnsites -*-
"""
The Sites page, the JSON of `GET /api/v1/sites` and the tunnel's metrics
(SPEC 16): each `[site]` with its endpoint, tunnel address, networks, last
handshake, bytes in and out (the engine's peer with the site's public
key) and whether its server answered the last probe over the tunnel; the
remote devices with their handshake and bytes; this server's public key
(to give the other offices); and the `[vpn]` keys. Live data comes from
the vpn service's IVpnPeers (`Views.vpn`); None means it is not running.
(`allworx.protocols.web.sites` is another thing: the intranet and public
websites.)
"""

import calendar
import time

from twisted.internet import defer
from twisted.logger import Logger
from prometheus_client.core import GaugeMetricFamily

from allworx.protocols.web import changes
from allworx.protocols.web import forms
from allworx.protocols.web.forms import Field
from allworx.protocols.web.mailsecurity import rfc3339
from allworx.protocols.web.pagebase import Page, Redirect, ago_or_in
from allworx.vpnkeys import VpnKeyError, public_key, read_device_key, read_server_key

log = Logger()

HERE = "/sites"

SETTINGS = (
    Field("vpn.enabled", "Tunnel on", "checkbox",
          help="WireGuard for other offices and remote devices; its port opens on the WAN."),
    Field("vpn.interface", "Interface", help="Default awg0."),
    Field("vpn.port", "UDP port", help="Default 51820; open on the WAN in every security mode."),
    Field("vpn.address", "Tunnel address",
          help="This server's address in the tunnel, with the subnet: 192.168.99.1/24."),
    Field("vpn.endpoint", "Endpoint for devices",
          help="host[:port] remote devices dial; empty: the WAN address."),
)


def _epoch(value):
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def configured_endpoint(site):
    """The site's endpoint as tap.conf says it (host:port), or None when it dials us."""
    if site.endpoint is None:
        return None
    host, port = site.endpoint
    return "%s:%d" % (host, port or 51820)


def device_keys(config):
    """{device: its public key}: its own, or that of the key the server made (if made yet)."""
    out = {}
    for name, device in config.devices.items():
        if device.public_key:
            out[name] = device.public_key
            continue
        try:
            private = read_device_key(config.system.data_dir, name)
        except (VpnKeyError, ValueError):
            private = None
        if private:
            out[name] = public_key(private)
    return out


def peer_names(config):
    """{public key: "site NAME" / "device NAME"} of the configured peers."""
    out = {site.public_key: "site %s" % name for name, site in config.sites.items()}
    out.update({key: "device %s" % name for name, key in device_keys(config).items()})
    return out


def sites_json(config, peers, status):
    """
    The objects of GET /api/v1/sites, in name order: a peer is a site's by
    its public key; a site never probed yet answers false, checked_at null.
    """
    by_key = {p.get("public_key"): p for p in peers}
    out = []
    for name in sorted(config.sites):
        site = config.sites[name]
        peer = by_key.get(site.public_key, {})
        probe = status.get(name) or {}
        out.append({
            "name": name,
            "endpoint": peer.get("endpoint") or configured_endpoint(site),
            "address": str(site.address),
            "networks": [str(n) for n in site.networks],
            "last_handshake": rfc3339(peer.get("last_handshake")) if peer.get("last_handshake")
            else None,
            "rx_bytes": int(peer.get("rx_bytes") or 0),
            "tx_bytes": int(peer.get("tx_bytes") or 0),
            "server_answers": probe.get("server_answers") is True,
            "checked_at": rfc3339(probe.get("checked_at")) if probe.get("checked_at") is not None
            else None,
        })
    return out


def live(view):
    """A Deferred of (peers, site status) from an IVpnPeers; ([], {}) if none or when it fails."""
    if view is None:
        return defer.succeed(([], {}))
    d = defer.maybeDeferred(view.peers)

    def with_status(peers):
        return list(peers or ()), dict(view.site_status() or {})

    def failed(failure):
        log.failure("vpn: reading the tunnel's peers failed", failure)
        return [], {}
    return d.addCallback(with_status).addErrback(failed)


def amount(n):
    """Bytes as people read them: 1.5 MB."""
    n = float(n or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1000.0
    return "%d B" % n


def _when(now, text):
    if not text:
        return "never"
    when = calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    return ago_or_in(now, when)


def rows(config, peers, status, now, running):
    """The page's tables: the sites and the devices, as text."""
    sites = []
    for s in sites_json(config, peers, status):
        probe = status.get(s["name"]) or {}
        sites.append(dict(s, networks=" ".join(s["networks"]), endpoint=s["endpoint"] or "",
                          handshake=_when(now, s["last_handshake"]), rx=amount(s["rx_bytes"]),
                          tx=amount(s["tx_bytes"]),
                          answers=("not checked yet" if probe.get("checked_at") is None or not running
                                   else "answers" if s["server_answers"] else "no answer"),
                          checked=_when(now, s["checked_at"]) if s["checked_at"] else ""))
    by_key = {p.get("public_key"): p for p in peers}
    keys = device_keys(config)
    devices = []
    for name in sorted(config.devices):
        d = config.devices[name]
        peer = by_key.get(keys.get(name), {})
        devices.append({"name": name, "user": d.user, "address": str(d.address),
                        "handshake": _when(now, rfc3339(peer.get("last_handshake"))
                                           if peer.get("last_handshake") else None),
                        "rx": amount(peer.get("rx_bytes")), "tx": amount(peer.get("tx_bytes")),
                        "endpoint": peer.get("endpoint") or ""})
    return {"sites": sites, "devices": devices}


def server_public_key(view, data_dir):
    """This server's public key: the running service's, else from its key file; None if none."""
    key = getattr(view, "public_key", None) if view is not None else None
    if key:
        return key
    try:
        private = read_server_key(data_dir)
    except VpnKeyError:
        return None
    return public_key(private) if private else None


class SitesPage(Page):
    """The other offices and remote devices on the tunnel, live; the [vpn] keys."""

    slug, title, template = "sites", "Sites", "sites.html"
    refresh = "tunnel"

    def prepare(self, ctx, sub):
        """The live part (the engine's peers, the probes), fetched before the page renders."""
        if sub:
            return defer.fail(KeyError("page %s/%s" % (HERE, "/".join(sub))))
        view = ctx.views.vpn
        d = live(view)
        return d.addCallback(lambda found: rows(ctx.office.config, found[0], found[1],
                                                ctx.clock.seconds(), view is not None))

    def context_for(self, ctx, sub, query):
        if sub:
            raise KeyError("page %s/%s" % (HERE, "/".join(sub)))
        office, view = ctx.office, ctx.views.vpn
        config = office.config
        out = {"running": view is not None, "enabled": config.vpn.enabled,
               "public_key": server_public_key(view, config.system.data_dir),
               "fields": SETTINGS, "current": forms.current_settings(office, SETTINGS)}
        out.update(rows(config, [], {}, ctx.clock.seconds(), False))
        return out

    def do_save(self, ctx, form, sub):
        office = ctx.office
        values = forms.section_changes(office, SETTINGS, "vpn", form)
        if not values:
            return Redirect("Nothing changed in the tunnel settings.", HERE)
        changes.apply_settings(office, {"vpn": values})
        return Redirect("Tunnel settings saved.", HERE)


class VpnCollector:
    """
    The tunnel's metrics for /metrics: per peer (labelled `site NAME` or
    `device NAME`) bytes in and out, the last handshake (epoch seconds) and
    its age; per site whether its server answers (0/1). `refresh()` reads
    the engine's peers (a Deferred) before a scrape; `collect()` gives what
    it read.
    """

    def __init__(self, office, views, clock):
        self.office = office
        self.views = views
        self.clock = clock
        self.peers = []
        self.status = {}

    def refresh(self):
        def keep(found):
            self.peers, self.status = found
        return live(self.views.vpn).addCallback(keep)

    def collect(self):
        if self.views.vpn is None:
            return
        config = self.office.config
        names = peer_names(config)
        labels = ["peer"]
        rx = GaugeMetricFamily("allworx_vpn_peer_rx_bytes", "Bytes received from a tunnel peer",
                               labels=labels)
        tx = GaugeMetricFamily("allworx_vpn_peer_tx_bytes", "Bytes sent to a tunnel peer",
                               labels=labels)
        last = GaugeMetricFamily("allworx_vpn_peer_last_handshake_seconds",
                                 "When the last handshake with a peer was (epoch seconds; "
                                 "0: never)", labels=labels)
        age = GaugeMetricFamily("allworx_vpn_peer_handshake_age_seconds",
                                "Seconds since the last handshake with a peer (absent: never)",
                                labels=labels)
        now = self.clock.seconds()
        for p in self.peers:
            label = [names.get(p.get("public_key"), p.get("public_key") or "")]
            rx.add_metric(label, int(p.get("rx_bytes") or 0))
            tx.add_metric(label, int(p.get("tx_bytes") or 0))
            when = _epoch(p.get("last_handshake"))
            last.add_metric(label, when or 0)
            if when:
                age.add_metric(label, max(0.0, now - when))
        answers = GaugeMetricFamily("allworx_vpn_site_server_answers",
                                    "1 when the site's server answered the last probe over "
                                    "the tunnel", labels=["site"])
        for name in sorted(config.sites):
            probe = self.status.get(name) or {}
            answers.add_metric([name], 1 if probe.get("server_answers") is True else 0)
        yield from (rx, tx, last, age, answers)
