# -*- test-case-name: allworx.tests.web.test_diagnostics -*-
"""
The Diagnostics page (SPEC 20): a form for ping, a DNS lookup, a TCP connect
and a traceroute, whose script (`static/diagnostics.js`) posts it to
`/api/v1/diagnostics/{kind}` with the page's session and CSRF token and shows
the answer's lines in a <pre> as they arrive.
"""

from allworx.diagnostics import DNS_TYPES, KINDS, MAX_RUNNING, TIME_CAP
from allworx.protocols.web.pagebase import Page


class DiagnosticsPage(Page):
    """Ping, DNS, TCP connect and traceroute run from the server, streamed into the page."""

    slug, title, template = "diagnostics", "Diagnostics", "diagnostics.html"

    def context(self, ctx, sub):
        config = ctx.office.config
        forwarders = [str(ip) for ip in (config.dns.primary, config.dns.secondary) if ip]
        return {"kinds": KINDS, "dns_types": DNS_TYPES, "lan_ip": str(config.lan_ip),
                "forwarders": forwarders, "resolver_on": config.dns.enabled,
                "max_running": MAX_RUNNING, "time_cap": TIME_CAP}
