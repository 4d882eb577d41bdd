"""
The server's web side: the admin pages and JSON API on `[web] admin_port`
(LAN only), Prometheus metrics, and the intranet and public sites on
`[web] http_port`. `allworx.protocols.web.service.WebService` is the "web" child.
"""
