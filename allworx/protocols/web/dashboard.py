# -*- test-case-name: allworx.tests.web.test_dashboard -*-
"""
The Status page as the office's dashboard (SPEC 20): the server's facts
(version, uptimes, CPU, memory, the data dir's disk, the WAN lease and the
gateway's health), the alerts at the top (a rogue DHCP server, a trunk
down, the disk filling, the certificate expiring, the mail queue stuck, the
clock not synchronised), the services and counts, and the live charts that
`static/dashboard.js` draws from `/api/v1/stats` with Chart.js. Chart.js is
Debian's `libjs-chart.js`, served at `/static/vendor/chart.min.js`
(`vendor_files`); without it the page says so instead of drawing.

The same facts and alerts extend `GET /api/v1/status` (`status_extra`).
"""

import os
import time

from twisted.logger import Logger
from twisted.web import resource, static

import allworx
from allworx.hostfacts import HostFacts
from allworx.protocols.web.mailsecurity import rfc3339
from allworx.protocols.web.pagebase import Page, ago_or_in, listed
from allworx.protocols.web.sites import ca_url, trust_help
from allworx.protocols.web.timestatus import time_alerts, time_json, time_text

log = Logger()

CHART_JS = "/usr/share/javascript/chart.js/chart.min.js"
CHART_URL = "/static/vendor/chart.min.js"

DISK_FULL_PERCENT = 90.0
CERTIFICATE_DAYS = 14
QUEUE_STUCK_SECONDS = 3600
TRUNK_DOWN = ("auth_failed", "unreachable")

# The charts: a title and the series drawn together (the stats API's names).
CHARTS = (
    ("WAN throughput", ("wan.rx_bps", "wan.tx_bps")),
    ("LAN throughput", ("lan.rx_bps", "lan.tx_bps")),
    ("Firewall: new flows and drops", ("firewall.new_flows", "firewall.drops")),
    ("DNS: queries and cache hits", ("dns.queries", "dns.cache_hit_ratio")),
    ("DHCP leases in use", ("dhcp.leases",)),
    ("Mail in, out and queued", ("mail.in", "mail.out", "mail.queue")),
    ("Calls and registered phones", ("sip.calls", "sip.registered")),
)
RANGES = ("hour", "day", "week")


def chart_js_path():
    """The Chart.js file served to the page, or None when it is not installed."""
    return CHART_JS if os.path.isfile(CHART_JS) else None


def vendor_files():
    """The `/static/vendor/` resource: Chart.js from the Debian package (404 if missing)."""
    vendor = resource.Resource()
    path = chart_js_path()
    if path is not None:
        vendor.putChild(b"chart.min.js", static.File(path, defaultType="text/javascript"))
    return vendor


def host_facts(ctx):
    """The context's HostFacts (made at first use, on its clock)."""
    host = getattr(ctx, "host_facts", None)
    if host is None:
        host = ctx.host_facts = HostFacts(ctx.clock)
    return host


def _call(view, method, default=None):
    """`view.method()`, or `default` when there is no such view or it fails (logged)."""
    if view is None:
        return default
    try:
        return getattr(view, method)()
    except Exception:
        log.failure("dashboard: {view!r}.{method}() failed", view=view, method=method)
        return default


def lease_count(table):
    """
    How many leases the DHCP server's table holds: its `lease_count()`, which
    makes no records (a table without it: the length of its list); 0, logged,
    when it fails (one broken service must not take the page down).
    """
    if not hasattr(table, "lease_count"):
        return len(listed(table, "active_leases"))
    try:
        return table.lease_count()
    except Exception:
        log.failure("admin pages: {obj!r}.lease_count() failed", obj=table)
        return 0


def facts(ctx):
    """The server's facts (POSIX times; `as_json` turns them into RFC 3339)."""
    host, views = host_facts(ctx), ctx.views
    data_dir = ctx.office.config.system.data_dir
    return {
        "version": allworx.__version__,
        "uptime": host.uptime(),
        "cpu": host.cpu.read(),
        "memory": host.memory(),
        "disk": host.disk(data_dir),
        "wan_lease": _call(views.wan, "lease"),
        "gateway": _call(views.wan, "gateway_health"),
        "clock": host.clock_state(),
        "time": _call(views.time, "status"),
        "certificate_expires": _call(views.certificates, "expires"),
    }


def _alert(kind, message, severity="warning"):
    return {"kind": kind, "severity": severity, "message": message}


def alerts(ctx, found):
    """What needs the admin: [{"kind", "severity", "message"}], the worst first."""
    views, now = ctx.views, ctx.clock.seconds()
    out = []
    for w in listed(views.rogues, "warnings"):
        message = getattr(w, "message", None) or (w.get("message") if isinstance(w, dict) else w)
        out.append(_alert("rogue_dhcp", str(message), "critical"))
    for t in listed(views.trunks, "status"):
        if t.get("state") in TRUNK_DOWN:
            out.append(_alert("trunk_down", "Trunk %s is down (%s)%s." % (
                t.get("name"), str(t.get("state")).replace("_", " "),
                ": %s" % t["last_error"] if t.get("last_error") else ""), "critical"))
    disk = found["disk"]
    if disk.get("used_percent") is not None and disk["used_percent"] >= DISK_FULL_PERCENT:
        out.append(_alert("disk_full", "The disk of the data dir %s is %.0f%% full." % (
            disk["path"], disk["used_percent"]), "critical"))
    expires = found["certificate_expires"]
    if expires is not None and expires - now < CERTIFICATE_DAYS * 86400:
        out.append(_alert("certificate_expiring", "The server's certificate %s %s." % (
            "expired" if expires <= now else "expires", ago_or_in(now, expires)),
            "critical" if expires <= now else "warning"))
    entries = listed(views.mail_queue, "entries")
    failing = [e for e in entries if e.get("last_error")]
    created = [e["created"] for e in entries if isinstance(e.get("created"), (int, float))]
    oldest = min(created) if created else None
    if failing or (oldest is not None and now - oldest > QUEUE_STUCK_SECONDS):
        parts = []
        if oldest is not None and now - oldest > QUEUE_STUCK_SECONDS:
            parts.append("the oldest message has waited %s" % duration_text(now - oldest))
        if failing:
            parts.append("%d message(s) failed to send (last: %s)"
                         % (len(failing), failing[-1]["last_error"]))
        out.append(_alert("mail_queue_stuck", "The mail queue is stuck: %s." % "; ".join(parts)))
    out.extend(_alert(kind, message) for kind, message in time_alerts(found["time"],
                                                                      found["clock"]))
    out.sort(key=lambda a: a["severity"] != "critical")
    return out


def as_json(found, alerts_found):
    """The facts and alerts as `GET /api/v1/status` adds them (times RFC 3339 UTC)."""
    out = dict(found)
    lease = found["wan_lease"]
    if lease is not None:
        out["wan_lease"] = dict(lease, **{k: rfc3339(lease.get(k))
                                          for k in ("obtained", "renews", "expires")})
    gateway = found["gateway"]
    if gateway is not None:
        out["gateway"] = dict(gateway, last_at=rfc3339(gateway.get("last_at")))
    out["certificate_expires"] = rfc3339(found["certificate_expires"])
    out["time"] = time_json(found["time"])
    out["alerts"] = alerts_found
    return out


def status_extra(ctx):
    """The keys the dashboard adds to `GET /api/v1/status`."""
    found = facts(ctx)
    return as_json(found, alerts(ctx, found))


def size_text(n):
    """Bytes as people read them: `1.5 GB`."""
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024.0


def duration_text(seconds):
    """`3d 4h` / `5m` for a span of seconds, or "?"."""
    if seconds is None:
        return "?"
    return ago_or_in(0, seconds)[3:]


def fact_rows(found, now):
    """(label, text) for the page's facts list."""
    up, cpu, mem, disk = found["uptime"], found["cpu"], found["memory"], found["disk"]
    rows = [("Version", "allworx %s" % found["version"]),
            ("Uptime", "server %s, machine %s" % (duration_text(up["process_s"]),
                                                   duration_text(up["machine_s"])))]
    window = ("over the last %ss" % int(cpu["window_s"]) if cpu.get("window_s")
              else "since boot")
    rows.append(("CPU", "%s machine, %s this server (%s)" % (
        "?" if cpu.get("machine") is None else "%.0f%%" % cpu["machine"],
        "?" if cpu.get("process") is None else "%.0f%%" % cpu["process"], window)))
    rows.append(("Memory", "%s of %s used (%s); this server %s" % (
        size_text(None if mem["total"] is None or mem["available"] is None
                  else mem["total"] - mem["available"]), size_text(mem["total"]),
        "?" if mem["used_percent"] is None else "%.0f%%" % mem["used_percent"],
        size_text(mem["process_rss"]))))
    rows.append(("Disk", "%s (the data dir %s)" % (
        "?" if disk["used_percent"] is None else "%.0f%% used, %s free of %s" % (
            disk["used_percent"], size_text(disk["free"]), size_text(disk["total"])),
        disk["path"])))
    lease = found["wan_lease"]
    if lease is not None:
        rows.append(("WAN lease", "%s from %s, renews %s, expires %s (%s)" % (
            lease["address"], lease["server"], ago_or_in(now, lease["renews"]),
            ago_or_in(now, lease["expires"]), rfc3339(lease["expires"]))))
    gateway = found["gateway"]
    if gateway is not None and gateway.get("gateway"):
        if gateway.get("error") and not gateway.get("answered"):
            text = "cannot probe: %s" % gateway["error"]
        elif not gateway.get("probes"):
            text = "not probed yet"
        else:
            text = "%s, %.0f%% loss over the last %d probes (every %ds)" % (
                "no answer" if gateway["latency_ms"] is None
                else "%.1f ms" % gateway["latency_ms"], 100 * gateway["loss"],
                gateway["probes"], gateway["every_s"])
        rows.append(("WAN gateway %s" % gateway["gateway"], text))
    clock = found["clock"]
    rows.append(("Clock", {True: "synchronised", False: "not synchronised",
                           None: "unknown"}[clock.get("synchronised")]
                 + (" (%s)" % clock["source"] if clock.get("source") else "")))
    if found["time"] is not None:
        rows.append(("Time server", time_text(found["time"], now)))
    return rows


class StatusPage(Page):
    """
    The dashboard: alerts, the server's facts, the WAN, each service and
    why, counts (each saying its window) and the live charts.
    """

    slug, title, template = "status", "Status", "status.html"
    refresh = "live"    # the alerts and facts, every 10 s (static/refresh.js)

    def context(self, ctx, sub):
        office, views = ctx.office, ctx.views
        config = office.config
        now = ctx.clock.seconds()
        found = facts(ctx)
        counts = [("Users", len(config.users)), ("Aliases", len(config.aliases)),
                  ("Reserved hosts", len(config.hosts)), ("DNS records", len(config.records)),
                  ("LAN devices on the WAN", len(config.forwards))]
        if views.leases is not None:
            counts.append(("DHCP leases", lease_count(views.leases)))
        if views.registrations is not None:
            counts.append(("Phones registered", len(listed(views.registrations, "bindings"))))
        if views.mail_queue is not None:
            counts.append(("Messages queued", len(listed(views.mail_queue, "entries"))))
        since = found["uptime"]["process_s"]
        window = ("since the server started %s" % ago_or_in(0, -since)
                  if since is not None else "since the server started")
        if views.connections is not None:
            for verdict, n in sorted(views.connections.counts.items()):
                counts.append(("Flows %s" % verdict, "%s %s" % (n, window)))
        return {
            "wan_address": office.wan_address,
            "wan_source": office.wan_source,
            "services": sorted(office.status.values(), key=lambda s: s.name),
            "counts": counts,
            "alerts": alerts(ctx, found),
            "facts": fact_rows(found, now),
            "charts": [(title, " ".join(names)) for title, names in CHARTS],
            "ranges": RANGES,
            "chart_js": CHART_URL if chart_js_path() is not None else None,
            "stats_running": views.stats is not None,
            "generated": time.strftime("%H:%M:%S UTC", time.gmtime(now)),
            "trust_help": trust_help(ca_url(config)),
        }
