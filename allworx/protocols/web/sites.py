# -*- test-case-name: allworx.tests.web.test_sites -*-
"""
The two websites on `[web] http_port`: the intranet (`corp.DOMAIN`) for LAN
peers from `data_dir/intranet`, the public site (`www.DOMAIN`) for everyone
else from `data_dir/www`. Static files only, with content types, Last-Modified
and ETag for conditional GET, no directory listings, no dot-files, nothing
outside the site's directory (not by `..`, not by a symbolic link). A site
without an index.html shows a generated default page. Mail clients' set-up
documents (`mailsetup`) are answered before either site's files. Both answer
`/ca.crt`: the server's own CA certificate (PEM), which the intranet's
default page and the admin pages link to with how to trust it. With an ACME
CA, both answer its HTTP-01 challenges at `/.well-known/acme-challenge/TOKEN`
to any peer.
"""

import html
import os

from twisted.web import resource, static
from twisted.web.http import CACHED

from allworx.protocols.web.mailsetup import setup_document, setup_reachable

INTRANET_DIR = "intranet"
SMALL_FILE = 256 * 1024   # sent in one write; larger files are streamed
PUBLIC_DIR = "www"
CA_PATH = b"ca.crt"
WELL_KNOWN, ACME_CHALLENGE = b".well-known", b"acme-challenge"


def ca_url(config):
    """Where the CA certificate is offered: `http://corp.DOMAIN/ca.crt` (SPEC 17)."""
    port = config.web.http_port
    return "http://corp.%s%s/ca.crt" % (config.system.domain, "" if port == 80 else ":%d" % port)


def trust_help(url="/ca.crt"):
    """HTML: where the server's CA certificate is and how to trust it on common systems."""
    url = html.escape(url)
    return (
        "<h2>Trusting this server's certificates</h2>"
        "<p>The server signs its own certificates (mail, phones, these pages). Install "
        "<a href=\"%s\">its CA certificate</a> once per device and they are trusted:</p><ul>"
        "<li>Windows: open the file, <em>Install Certificate</em>, Local Machine, "
        "<em>Trusted Root Certification Authorities</em>.</li>"
        "<li>macOS: open it in Keychain Access (System keychain), then set "
        "<em>When using this certificate</em> to <em>Always Trust</em>.</li>"
        "<li>iOS / iPadOS: download it in Safari, install the profile in Settings, then "
        "turn it on in Settings, General, About, <em>Certificate Trust Settings</em>.</li>"
        "<li>Android: Settings, Security, Encryption &amp; credentials, <em>Install a "
        "certificate</em>, CA certificate.</li>"
        "<li>Firefox (its own store): Settings, Privacy &amp; Security, <em>View "
        "Certificates</em>, Authorities, Import, and tick <em>identify websites</em>.</li>"
        "</ul>" % url)


class CaCertificate(resource.Resource):
    """`/ca.crt`: the CA certificate of the moment, from `ca_pem()` (bytes or None)."""

    isLeaf = True

    def __init__(self, ca_pem):
        resource.Resource.__init__(self)
        self.ca_pem = ca_pem

    def render_GET(self, request):
        pem = self.ca_pem()
        if pem is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"this server has no CA certificate\n"
        request.setHeader(b"content-type", b"application/x-x509-ca-cert")
        request.setHeader(b"content-disposition", b'attachment; filename="ca.crt"')
        return pem

    def render_HEAD(self, request):
        self.render_GET(request)
        return b""


class AcmeChallenge(resource.Resource):
    """
    `/.well-known/acme-challenge/TOKEN`: the key authorization `answer(token)`
    gives (RFC 8555 8.3), or 404 for a token it does not know.
    """

    isLeaf = True

    def __init__(self, answer):
        resource.Resource.__init__(self)
        self.answer = answer

    def render_GET(self, request):
        rest = request.postpath
        token = rest[1].decode("ascii", "replace") if len(rest) == 2 and rest[0] == ACME_CHALLENGE \
            else None
        value = self.answer(token) if token else None
        if value is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"no such challenge\n"
        request.setHeader(b"content-type", b"application/octet-stream")
        return value.encode("ascii")

    def render_HEAD(self, request):
        self.render_GET(request)
        return b""


def site_dirs(config):
    """(intranet directory, public directory) under the data dir."""
    base = config.system.data_dir
    return os.path.join(base, INTRANET_DIR), os.path.join(base, PUBLIC_DIR)


def inside(root, path, real_root=None):
    """True when `path`, with symbolic links resolved, is `root` or below it."""
    real_root = real_root or os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root + os.sep)


def default_page(kind, config):
    """The generated index page of a site that has none yet (bytes of HTML)."""
    domain = html.escape(config.system.domain)
    if kind == "intranet":
        title = "corp.%s" % domain
        body = ("<p>This is the office intranet, seen only from the office LAN.</p>"
                "<p>Put its pages in <code>%s/%s/</code> on the server, starting with "
                "<code>index.html</code>.</p>"
                "<ul><li>Mail: <code>%s</code> (POP3 and SMTP on this server)</li>"
                "<li>Address book: LDAP at <code>corp.%s</code></li></ul>%s"
                % (html.escape(config.system.data_dir), INTRANET_DIR, domain, domain,
                   trust_help(ca_url(config))))
    else:
        title = "www.%s" % domain
        body = ("<p>Welcome. This site is being set up.</p>"
                "<p>Its owner can publish pages in <code>%s/</code> on the office server.</p>"
                % PUBLIC_DIR)
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>%s</title><style>body{font-family:system-ui,sans-serif;max-width:40em;"
            "margin:2em auto;padding:0 1em;color:#222;line-height:1.5}h1{color:#135}"
            "code{background:#eef;padding:0 .2em}</style></head>"
            "<body><h1>%s</h1>%s</body></html>" % (title, title, body))
    return page.encode("utf-8")


class DefaultPage(resource.Resource):
    """A site's generated index page."""

    isLeaf = True

    def __init__(self, kind, office):
        resource.Resource.__init__(self)
        self.kind = kind
        self.office = office

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return default_page(self.kind, self.office.config)

    def render_HEAD(self, request):
        self.render_GET(request)
        return b""


class SiteFiles(static.File):
    """
    twisted.web's static File, confined to its site's directory: dot-files
    and escaping links are "not found", directories without an index are
    not listed (the site root shows its default page instead).
    """

    kind = None
    office = None
    site_root = None
    real_root = None

    @classmethod
    def for_site(cls, path, kind, office):
        """The root of one site."""
        root = cls(path)
        root.kind, root.office, root.site_root = kind, office, os.path.abspath(path)
        root.real_root = os.path.realpath(path)
        return root

    def createSimilarFile(self, path):
        f = static.File.createSimilarFile(self, path)
        f.kind, f.office, f.site_root, f.real_root = (
            self.kind, self.office, self.site_root, self.real_root)
        return f

    def getChild(self, path, request):
        name = path.decode("utf-8", "replace") if isinstance(path, bytes) else path
        if name.startswith(".") or "\x00" in name or "\\" in name:
            return self.childNotFound
        self.restat(False)  # roots are kept between requests: look again
        if not name and not self.isdir() and self.path == self.site_root:
            return DefaultPage(self.kind, self.office)  # no directory yet
        child = static.File.getChild(self, path, request)
        child_path = getattr(child, "path", None)
        if child_path is not None and not inside(self.site_root, child_path, self.real_root):
            return self.childNotFound
        return child

    def directoryListing(self):
        if os.path.realpath(self.path) == os.path.realpath(self.site_root):
            return DefaultPage(self.kind, self.office)
        return self.childNotFound

    def render_GET(self, request):
        self.restat(False)
        # Every File below the root came through getChild, which checked
        # that its real path stays inside the site.
        if self.exists() and not self.isdir():
            stat = os.stat(self.path)
            tag = ('"%x-%x-%x"' % (stat.st_ino, stat.st_size, int(stat.st_mtime * 1000))).encode()
            if request.setETag(tag) == CACHED:
                return b""
            if stat.st_size <= SMALL_FILE and not request.getHeader(b"range"):
                return self._render_small(request, stat)
        return static.File.render_GET(self, request)

    def _render_small(self, request, stat):
        # A small file goes out in one write: no producer, no reactor turns
        # per chunk (static.File streams everything through a cooperator).
        if self.type is None:
            self.type, self.encoding = static.getTypeAndEncoding(
                self.basename(), self.contentTypes, self.contentEncodings, self.defaultType)
        request.setHeader(b"accept-ranges", b"bytes")
        try:
            with open(self.path, "rb") as f:
                data = f.read(SMALL_FILE + 1)
        except PermissionError:
            return self.forbidden.render(request)
        if request.setLastModified(stat.st_mtime) is CACHED:
            return b""
        self._setContentHeaders(request, len(data))
        return b"" if request.method == b"HEAD" else data


class SiteBySide(resource.Resource):
    """
    Serves the intranet to LAN peers and the public site to everyone else;
    `/ca.crt` to both when `ca_pem` (a callable: PEM bytes or None) is given,
    and ACME's HTTP-01 challenges when `acme_answer` (token -> key
    authorization or None) is.
    """

    def __init__(self, office, ca_pem=None, acme_answer=None):
        resource.Resource.__init__(self)
        self.office = office
        self._roots = (None, None, None)
        self.ca = CaCertificate(ca_pem) if ca_pem is not None else None
        self.acme = AcmeChallenge(acme_answer) if acme_answer is not None else None

    def site_for(self, request):
        """The site the peer of `request` sees."""
        dirs = site_dirs(self.office.config)
        if self._roots[0] != dirs:
            self._roots = (dirs, SiteFiles.for_site(dirs[0], "intranet", self.office),
                           SiteFiles.for_site(dirs[1], "public", self.office))
        return self._roots[1] if self._lan(request) else self._roots[2]

    def _lan(self, request):
        return self.office.is_lan_peer(getattr(request.getClientAddress(), "host", None))

    def getChildWithDefault(self, path, request):
        if path == CA_PATH and self.ca is not None and not request.postpath:
            return self.ca
        if path == WELL_KNOWN and self.acme is not None and request.postpath[:1] == [ACME_CHALLENGE]:
            return self.acme
        document = setup_document(
            seg.decode("utf-8", "replace") for seg in request.prepath + request.postpath)
        if document is not None and setup_reachable(
                self.office.config, (request.getHeader(b"host") or b"").decode("latin-1"),
                self._lan(request)):
            return document(self.office)
        return self.site_for(request).getChildWithDefault(path, request)

    def render(self, request):
        return self.site_for(request).render(request)


def ensure_site_dirs(config):
    """Create both site directories if missing."""
    for path in site_dirs(config):
        os.makedirs(path, mode=0o755, exist_ok=True)
