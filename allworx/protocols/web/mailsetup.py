# -*- test-case-name: allworx.tests.web.test_mailsetup -*-
"""
Mail clients' automatic set-up (SPEC 17, guide 8.3): the documents that
tell a client where the office's mail servers are, from the same ports as
the zone's SRV records (`allworx.protocols.dns.zone.mail_services`).

- Thunderbird's autoconfig (Mozilla's clientConfig 1.1) at
  `/mail/config-v1.1.xml` and `/.well-known/autoconfig/mail/config-v1.1.xml`;
- Outlook's Autodiscover, the POX schema, answered to a POST of
  `/autodiscover/autodiscover.xml` (the request is read with expat, no
  DOCTYPE or entities, at most `MAX_REQUEST` bytes; anything else is a 400);
- an Apple configuration profile (.mobileconfig) for one user, with no
  password in it (the device asks for it).

A service that is off (its section disabled or its port 0) is left out of
every document. The login name is the address's local part everywhere.
"""

import plistlib
import uuid
from xml.parsers import expat
from xml.sax.saxutils import escape

from twisted.web import resource

from allworx.protocols.dns.zone import mail_services

AUTOCONFIG_PATHS = (("mail", "config-v1.1.xml"),
                    (".well-known", "autoconfig", "mail", "config-v1.1.xml"))
AUTODISCOVER_PATH = ("autodiscover", "autodiscover.xml")
MAX_REQUEST = 8 * 1024   # an Autodiscover request is a few hundred bytes

REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
PROFILE_TYPE = b"application/x-apple-aspen-config"

# (SRV label, protocol, socket type) in the order clients should try them.
INCOMING = (("_imaps._tcp", "imap", "SSL"), ("_imap._tcp", "imap", "STARTTLS"),
            ("_pop3s._tcp", "pop3", "SSL"))
OUTGOING = (("_submissions._tcp", "smtp", "SSL"), ("_submission._tcp", "smtp", "STARTTLS"))


class BadRequest(ValueError):
    """An Autodiscover request that cannot be read; the message says why."""


def servers(config, offered):
    """(protocol, host name, port, socket type) of each of `offered` that is on."""
    domain = config.system.domain
    ports = {label: (port, target) for label, port, target in mail_services(config)}
    out = []
    for label, protocol, socket_type in offered:
        port, target = ports[label]
        if port:
            out.append((protocol, "%s.%s" % (target, domain), port, socket_type))
    return out


# ---------------------------------------------------------------- Thunderbird

def autoconfig_xml(config):
    """The clientConfig document (bytes, UTF-8)."""
    domain = escape(config.system.domain)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<clientConfig version="1.1">',
             '  <emailProvider id="%s">' % domain,
             '    <domain>%s</domain>' % domain,
             '    <displayName>%s mail</displayName>' % domain,
             '    <displayShortName>%s</displayShortName>' % domain]
    for element, offered in (("incomingServer", INCOMING), ("outgoingServer", OUTGOING)):
        for protocol, host, port, socket_type in servers(config, offered):
            lines += ['    <%s type="%s">' % (element, protocol),
                      '      <hostname>%s</hostname>' % escape(host),
                      '      <port>%d</port>' % port,
                      '      <socketType>%s</socketType>' % socket_type,
                      '      <authentication>password-cleartext</authentication>',
                      '      <username>%EMAILLOCALPART%</username>',
                      '    </%s>' % element]
    lines += ['  </emailProvider>', '</clientConfig>', '']
    return "\n".join(lines).encode("utf-8")


class AutoconfigDocument(resource.Resource):
    """GET (or HEAD) the clientConfig; `?emailAddress=` is accepted (the
    document is the same for every address of the domain)."""

    isLeaf = True

    def __init__(self, office):
        resource.Resource.__init__(self)
        self.office = office

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return autoconfig_xml(self.office.config)

    def render_HEAD(self, request):
        self.render_GET(request)
        return b""


# ---------------------------------------------------------------- Outlook

def read_autodiscover_request(body):
    """
    The (address, response schema) of a POX Autodiscover request; BadRequest
    when the body is too large, not XML, declares a DOCTYPE or entities, or
    names no address.
    """
    if len(body) > MAX_REQUEST:
        raise BadRequest("request body over %d bytes" % MAX_REQUEST)
    found = {}
    path = []

    def refuse(*args):
        raise BadRequest("DOCTYPE and entity declarations are not accepted")

    def start(name, attrs):
        path.append(name.rpartition(" ")[2])
        if len(path) > 16:
            raise BadRequest("elements nested too deep")

    def end(name):
        path.pop()

    def text(data):
        if path and path[-1] in ("EMailAddress", "AcceptableResponseSchema"):
            found[path[-1]] = found.get(path[-1], "") + data
            if len(found[path[-1]]) > 320:
                raise BadRequest("%s too long" % path[-1])

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(body, True)
    except expat.ExpatError as e:
        raise BadRequest("not well-formed XML: %s" % expat.ErrorString(e.code))
    address = found.get("EMailAddress", "").strip()
    local, at, domain = address.partition("@")
    if not (local and at and domain) or any(c.isspace() or c in "<>\"" for c in address):
        raise BadRequest("the request names no e-mail address (EMailAddress)")
    return address, found.get("AcceptableResponseSchema", OUTLOOK_NS).strip()


def autodiscover_xml(config, address, schema=OUTLOOK_NS):
    """The POX response for `address` (bytes): its settings, or an error for
    another domain or a schema other than Outlook's."""
    local, _, domain = address.rpartition("@")
    head = ['<?xml version="1.0" encoding="utf-8"?>', '<Autodiscover xmlns="%s">' % RESPONSE_NS]
    if schema != OUTLOOK_NS or domain.lower() != config.system.domain:
        code, why = ("601", "Provider is not available") if schema != OUTLOOK_NS else (
            "600", "Invalid Request")
        return "\n".join(head + [
            '  <Response>', '    <Error>',
            '      <ErrorCode>%s</ErrorCode>' % code,
            '      <Message>%s</Message>' % why,
            '    </Error>', '  </Response>', '</Autodiscover>', '']).encode("utf-8")
    lines = head + ['  <Response xmlns="%s">' % OUTLOOK_NS,
                    '    <Account>',
                    '      <AccountType>email</AccountType>',
                    '      <Action>settings</Action>']
    # Outlook takes the first of each type: the implicit-TLS ports first.
    for protocol, host, port, socket_type in servers(config, INCOMING + OUTGOING):
        lines += ['      <Protocol>',
                  '        <Type>%s</Type>' % protocol.upper(),
                  '        <Server>%s</Server>' % escape(host),
                  '        <Port>%d</Port>' % port,
                  '        <DomainRequired>off</DomainRequired>',
                  '        <LoginName>%s</LoginName>' % escape(local),
                  '        <SPA>off</SPA>',
                  '        <SSL>%s</SSL>' % ("on" if socket_type == "SSL" else "off")]
        if socket_type == "STARTTLS":
            lines.append('        <Encryption>TLS</Encryption>')
        lines += ['        <AuthRequired>on</AuthRequired>']
        if protocol == "smtp":
            lines.append('        <UsePOPAuth>on</UsePOPAuth>')
        lines.append('      </Protocol>')
    lines += ['    </Account>', '  </Response>', '</Autodiscover>', '']
    return "\n".join(lines).encode("utf-8")


class AutodiscoverDocument(resource.Resource):
    """POST an Autodiscover request, get the settings; a bad request is a 400."""

    isLeaf = True

    def __init__(self, office):
        resource.Resource.__init__(self)
        self.office = office

    def render_POST(self, request):
        body = request.content.read(MAX_REQUEST + 1) if request.content is not None else b""
        try:
            address, schema = read_autodiscover_request(body)
        except BadRequest as e:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return ("bad Autodiscover request: %s\n" % e).encode("utf-8")
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return autodiscover_xml(self.office.config, address, schema)

    def render_GET(self, request):
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Autodiscover takes a POST of the request XML\n"


SETUP_NAMES = ("autoconfig", "autodiscover")


def setup_document(path):
    """The resource class for the request path `path` (text segments) when it
    is one of the set-up documents, else None."""
    path = tuple(path)
    if path in AUTOCONFIG_PATHS:
        return AutoconfigDocument
    if tuple(p.lower() for p in path) == AUTODISCOVER_PATH:
        return AutodiscoverDocument
    return None


def setup_reachable(config, host, lan):
    """
    Whether a request by the name `host` (the Host header) from the LAN
    (`lan`) or the WAN is given the set-up documents: LAN peers by every
    name of the server; WAN peers (the set-up names hold the WAN address
    outside) by `autoconfig` and `autodiscover` only, so the public site's
    own files stay as they are.
    """
    if lan:
        return True
    name = (host or "").partition(":")[0].lower().rstrip(".")
    return name in ["%s.%s" % (n, config.system.domain) for n in SETUP_NAMES]


# ---------------------------------------------------------------- Apple

def mobileconfig(config, user):
    """
    The configuration profile (plist bytes) of `user` (a config User): one
    com.apple.mail.managed payload, IMAP over TLS if IMAP is on (else POP3),
    SMTP over TLS, and no password. Its identifiers are the same at every
    download, so installing it again replaces it.
    """
    domain = config.system.domain
    address = "%s@%s" % (user.name, domain)
    incoming = servers(config, INCOMING)
    outgoing = servers(config, OUTGOING)
    if not incoming or not outgoing:
        raise LookupError("mail is off: no profile to make")
    imap = [s for s in incoming if s[0] == "imap"]
    protocol, in_host, in_port, _ = (imap or incoming)[0]
    _, out_host, out_port, _ = outgoing[0]
    base = "%s.allworx.mail" % ".".join(reversed(domain.split(".")))
    payload = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": "%s.%s.account" % (base, user.name),
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, "account." + address)).upper(),
        "PayloadDisplayName": "Mail (%s)" % address,
        "EmailAccountDescription": address,
        "EmailAccountName": user.full_name or user.name,
        "EmailAccountType": "EmailTypeIMAP" if protocol == "imap" else "EmailTypePOP",
        "EmailAddress": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": in_host,
        "IncomingMailServerPortNumber": in_port,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": user.name,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": out_host,
        "OutgoingMailServerPortNumber": out_port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": user.name,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": "%s.%s" % (base, user.name),
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, "profile." + address)).upper(),
        "PayloadDisplayName": "%s mail for %s" % (domain, user.full_name or user.name),
        "PayloadDescription": "Sets up %s on this device (the password is asked for)." % address,
        "PayloadOrganization": domain,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [payload],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)
