# -*- test-case-name: allworx.tests.ldap.test_service -*-
"""
The office address book over LDAP (SPEC 9), served with ldaptor on the LAN.

The tree is built from the users of tap.conf and rebuilt whenever they (or the
domain) change: `dc=example,dc=com` -> `ou=people` -> `uid=NAME` entries of
class inetOrgPerson with cn, sn, mail and telephoneNumber (the extension).
Anyone on the LAN may search anonymously; a simple bind as a user checks that
user's password through the office's one twisted.cred checker, behind the
shared login throttle (answered later after repeated failures, refused while
locked out); every write is refused with insufficientAccessRights; peers on
the WAN are hung up on; each peer holds at most its share of connections,
under a cap in all (beyond it: a notice of disconnection, busy).

Malformed requests get a result code and one line in the log, never a
traceback (what a request may hold is checked in `wire.py`: invalidDNSyntax,
protocolError, inappropriateMatching). A message that cannot be decoded at
all gets the Notice of Disconnection (protocolError) and the connection is
closed (RFC 4511 4.1.1).
"""

from ldaptor import interfaces as ldap_interfaces
from ldaptor.inmemory import ReadOnlyInMemoryLDAPEntry
from ldaptor.protocols import pureldap
from ldaptor.protocols.ldap import distinguishedname, ldaperrors
from ldaptor.protocols.ldap.ldapserver import LDAPServer, LDAPServerConnectionLostException
from prometheus_client import Counter, Gauge
from twisted.cred import credentials, error as cred_error
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python import components

from allworx.auth import OfficeUserChecker, user_for_login
from allworx.guards import LockedOut, LoginThrottle, PeerConnectionLimit, PeerLimit, until_text
from allworx.protocols.ldap.wire import (
    DECODER, MAX_MESSAGE_ID, NOTICE_OF_DISCONNECTION, check_ava, checked_filter, is_root_dse, parse_dn,
    text)
from allworx.servicebase import ListeningService

log = Logger()

LDAP_REQUESTS = Counter(
    "allworx_ldap_requests_total", "LDAP requests handled, by operation and result",
    ["operation", "result"])
LDAP_REFUSED = Counter(
    "allworx_ldap_refused_connections_total", "LDAP connections refused because the peer is not on the LAN")
LDAP_ENTRIES = Gauge("allworx_ldap_people", "People in the LDAP address book")

WHOAMI_OID = b"1.3.6.1.4.1.4203.1.11.3"  # RFC 4532
# Result codes that say the request itself was malformed: these are logged.
_MALFORMED = frozenset([ldaperrors.LDAPProtocolError.resultCode, ldaperrors.LDAPInvalidDNSyntax.resultCode,
                        ldaperrors.LDAPInappropriateMatching.resultCode])
MAX_BUFFER = 64 * 1024                    # a request larger than this is hostile
MAX_CONNECTIONS_PER_PEER = 32
MAX_CONNECTIONS = 512

# RFC 4511 4.4.1: the notice of disconnection, "busy" (51), told to a refused connection.
BUSY_NOTICE = pureldap.LDAPMessage(pureldap.LDAPExtendedResponse(
    resultCode=ldaperrors.LDAPBusy.resultCode, responseName=b"1.3.6.1.4.1.1466.20036",
    errorMessage=b"too many connections, try again later"), id=0).toWire()


# ---------------------------------------------------------------- the tree (pure)

def base_dn(domain):
    """`example.com` -> `dc=example,dc=com`."""
    return ",".join("dc=%s" % label for label in domain.split("."))


def people_dn(domain):
    """Where the users live: `ou=people,dc=example,dc=com`."""
    return "ou=people," + base_dn(domain)


def user_dn(name, domain):
    """A user's entry: `uid=alice,ou=people,dc=example,dc=com`."""
    return "uid=%s,%s" % (name, people_dn(domain))


def person_attributes(user, domain):
    """The inetOrgPerson attributes of one `[user]` (no password is ever exposed)."""
    full = user.full_name.strip() or user.name
    words = full.split()
    attrs = {
        "objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson"],
        "uid": [user.name],
        "cn": [full],
        "sn": [words[-1]],
        "displayName": [full],
        "mail": ["%s@%s" % (user.name, domain)],
    }
    if len(words) > 1:
        attrs["givenName"] = [" ".join(words[:-1])]
    if user.extension:
        attrs["telephoneNumber"] = [user.extension]
    return attrs


def _wire(attrs):
    # Filters from the wire carry bytes; ldaptor compares values as they are stored.
    return {k: [v.encode("utf-8") for v in vs] for k, vs in attrs.items()}


def build_tree(config):
    """A read-only in-memory ldaptor tree of the office's people."""
    domain = config.system.domain
    labels = domain.split(".")
    root = ReadOnlyInMemoryLDAPEntry(base_dn(domain), _wire({
        "objectClass": ["top", "dcObject", "organization"],
        "dc": [labels[0]],
        "o": [domain],
    }))
    people = root.addChild("ou=people", _wire({
        "objectClass": ["top", "organizationalUnit"], "ou": ["people"]}))
    for name in sorted(config.users):
        people.addChild("uid=%s" % name, _wire(person_attributes(config.users[name], domain)))
    return root


def bind_name_to_user(config, bind_dn):
    """
    The user a bind DN names, or None: `uid=NAME,ou=people,BASE`, or for
    convenience a plain login (`alice`, `alice@example.com`, an extension).
    """
    text = bind_dn.decode("utf-8", "replace") if isinstance(bind_dn, bytes) else bind_dn
    if "=" not in text:
        user = user_for_login(config, text)
        return user.name if user is not None else None
    try:
        dn = distinguishedname.DistinguishedName(stringValue=text)
    except Exception:
        return None
    rdns = dn.split()
    parent = distinguishedname.DistinguishedName(people_dn(config.system.domain))
    if len(rdns) < 2 or distinguishedname.DistinguishedName(listOfRDNs=rdns[1:]) != parent:
        return None
    avas = rdns[0].split()
    if len(avas) != 1 or avas[0].attributeType.lower() != "uid":
        return None
    name = avas[0].value.lower()
    return name if name in config.users else None


def _why(error, tb=None):
    """One line for the log: what went wrong, and where when it was not expected."""
    if isinstance(error, ldaperrors.LDAPException):
        line = error.toWire().decode("utf-8", "replace")
    else:
        line = "%s: %s" % (type(error).__name__, error)
    if tb is not None:
        while tb.tb_next is not None:
            tb = tb.tb_next
        line += " (%s:%d)" % (tb.tb_frame.f_code.co_filename.rsplit("/", 1)[-1], tb.tb_lineno)
    return line[:200]


# ---------------------------------------------------------------- the wire

class AddressBookServer(LDAPServer):
    """ldaptor's LDAP server made read-only, with binds checked by the office."""

    boundName = None
    berdecoder = DECODER

    def dataReceived(self, data):
        if len(self.buffer) + len(data) > MAX_BUFFER:
            log.info("ldap: request from {peer} too large, hanging up", peer=self._peer())
            self.transport.loseConnection()
            return
        try:
            LDAPServer.dataReceived(self, data)
        except Exception as e:
            # Malformed BER, or a response where a request belongs: the
            # Notice of Disconnection, then hang up.
            LDAP_REQUESTS.labels("malformed", "refused").inc()
            log.info("ldap: malformed input from {peer}, hanging up: {why}", peer=self._peer(),
                     why=_why(e))
            self.buffer = b""
            if self.connected:
                self.queue(0, pureldap.LDAPExtendedResponse(
                    resultCode=ldaperrors.LDAPProtocolError.resultCode,
                    responseName=NOTICE_OF_DISCONNECTION, errorMessage=b"malformed message"))
            self.transport.loseConnection()

    def _peer(self):
        peer = self.transport.getPeer() if self.transport else None
        return getattr(peer, "host", "?")

    def handle(self, msg):
        # ldaptor's own dispatch, without its traceback for an error that is
        # not an LDAP result: that is answered too, and logged in one line.
        if not isinstance(msg.value, pureldap.LDAPProtocolRequest):
            raise ValueError("not an LDAP request: %s" % type(msg.value).__name__)
        if not isinstance(msg.id, int) or not 0 < msg.id <= MAX_MESSAGE_ID:
            raise ValueError("bad message id")
        name = msg.value.__class__.__name__
        handler = getattr(self, "handle_" + name, self.handleUnknown)
        d = defer.maybeDeferred(handler, msg.value, msg.controls,
                                lambda response: self._cbHandle(response, msg.id))
        d.addErrback(self._failed, name)
        d.addCallback(self._cbHandle, msg.id)
        d.addErrback(self._unsent)

    def _failed(self, failure, name):
        """The answer to a request that raised: its LDAP result code, else protocolError."""
        operation = name.replace("LDAP", "").replace("Request", "").lower()
        if failure.check(ldaperrors.LDAPException):
            code, message = failure.value.resultCode, failure.value.message
            if code in _MALFORMED:
                log.info("ldap: {operation} from {peer} refused: {why}", operation=operation,
                         peer=self._peer(), why=_why(failure.value))
        else:
            code, message = ldaperrors.LDAPProtocolError.resultCode, b"could not handle the request"
            log.warn("ldap: {operation} from {peer} failed: {why}", operation=operation,
                     peer=self._peer(), why=_why(failure.value, failure.getTracebackObject()))
        return self._callErrorHandler(name=name, resultCode=code, errorMessage=message)

    def _unsent(self, failure):
        if failure.check(LDAPServerConnectionLostException):
            return None             # the client hung up before its answer was ready
        log.warn("ldap: could not answer {peer}, hanging up: {why}", peer=self._peer(),
                 why=_why(failure.value, failure.getTracebackObject()))
        self.transport.loseConnection()
        return None

    def handle_LDAPAbandonRequest(self, request, controls, reply):
        """Nothing runs long enough to abandon; RFC 4511 4.11: no answer."""
        return None

    # ---- bind

    def handle_LDAPBindRequest(self, request, controls, reply):
        if request.version != 3:
            raise ldaperrors.LDAPProtocolError("only LDAP version 3 is supported")
        self.checkControls(controls)
        if not isinstance(request.dn, bytes):
            raise ldaperrors.LDAPProtocolError("the bind name is not a string")
        if b"=" in request.dn:
            parse_dn(request.dn)
        if not isinstance(request.auth, bytes):
            LDAP_REQUESTS.labels("bind", "unsupported").inc()
            raise ldaperrors.LDAPAuthMethodNotSupported("only simple bind is supported")
        if request.dn == b"" and request.auth == b"":
            self.boundUser = self.boundName = None
            LDAP_REQUESTS.labels("bind", "anonymous").inc()
            return pureldap.LDAPBindResponse(resultCode=ldaperrors.Success.resultCode)
        if request.auth == b"":
            # RFC 4513 5.1.2: an unauthenticated bind must not pass as the user.
            LDAP_REQUESTS.labels("bind", "refused").inc()
            raise ldaperrors.LDAPUnwillingToPerform("unauthenticated bind (a name without a password)")
        peer = self._peer()
        config = self.factory.office.config
        name = bind_name_to_user(config, request.dn)
        who = name or request.dn
        creds = credentials.UsernamePassword(name.encode() if name else request.dn, request.auth)
        d = self.factory.throttle.attempt(peer, who, lambda: self.factory.checker.requestAvatarId(creds))

        def ok(avatar):
            if name is None or avatar != name:
                raise cred_error.UnauthorizedLogin()
            self.boundName = name
            self.factory.throttle.succeeded(peer, who)
            dn = user_dn(name, config.system.domain)
            LDAP_REQUESTS.labels("bind", "success").inc()
            log.info("ldap: {peer} bound as {user}", peer=self._peer(), user=name)
            return pureldap.LDAPBindResponse(resultCode=ldaperrors.Success.resultCode, matchedDN=dn)

        def refused(failure):
            if failure.check(LockedOut):
                LDAP_REQUESTS.labels("bind", "locked").inc()
                raise ldaperrors.LDAPUnwillingToPerform(
                    "too many failed binds from %s: %s" % (peer, until_text(failure.value.until)))
            failure.trap(cred_error.UnauthorizedLogin)
            self.boundName = None
            self.factory.throttle.failed(peer, who)
            LDAP_REQUESTS.labels("bind", "invalid").inc()
            log.info("ldap: bind as {dn} from {peer} refused", peer=self._peer(),
                     dn=request.dn.decode("utf-8", "replace"))
            raise ldaperrors.LDAPInvalidCredentials("wrong name or password")
        d.addCallbacks(ok, refused)
        return d

    def extendedRequest_WhoAmI(self, data, reply):
        """RFC 4532 "Who am I?": the bound user's DN, or empty when anonymous."""
        who = b""
        if self.boundName is not None:
            who = ("dn:" + user_dn(self.boundName, self.factory.office.config.system.domain)).encode()
        return pureldap.LDAPExtendedResponse(resultCode=ldaperrors.Success.resultCode, response=who)
    extendedRequest_WhoAmI.oid = WHOAMI_OID

    def extendedRequest_LDAPPasswordModifyRequest(self, data, reply):
        LDAP_REQUESTS.labels("passwd", "refused").inc()
        raise ldaperrors.LDAPInsufficientAccessRights(
            "the directory is read-only: change passwords in the admin pages")
    extendedRequest_LDAPPasswordModifyRequest.oid = LDAPServer.extendedRequest_LDAPPasswordModifyRequest.oid

    def getRootDSE(self, request, reply):
        root = ldap_interfaces.IConnectedLDAPEntry(self.factory)
        reply(pureldap.LDAPSearchResultEntry(objectName="", attributes=[
            ("supportedLDAPVersion", ["3"]),
            ("namingContexts", [root.dn.getText()]),
            ("supportedExtension", [WHOAMI_OID.decode()]),
        ]))
        return pureldap.LDAPSearchResultDone(resultCode=ldaperrors.Success.resultCode)

    def checkControls(self, controls):
        # ldaptor's, with a control type that is not a string refused.
        for control_type, critical, _ in controls or ():
            if critical:
                raise ldaperrors.LDAPUnavailableCriticalExtension(
                    "unknown control %s" % text(control_type, "a control type"))

    def handle_LDAPSearchRequest(self, request, controls, reply):
        d = defer.maybeDeferred(self._search, request, controls, reply)

        def count(result):
            code = getattr(result, "resultCode", 0)
            LDAP_REQUESTS.labels("search", "success" if code == 0 else "error").inc()
            return result

        def failed(failure):
            LDAP_REQUESTS.labels("search", "error").inc()
            return failure
        d.addCallbacks(count, failed)
        return d

    def _search(self, request, controls, reply):
        # ldaptor's search, with the request checked first and without its
        # traceback for an error that is not an LDAP result.
        self.checkControls(controls)
        for attribute in request.attributes:
            text(attribute, "an attribute name")
        request.filter = checked_filter(request.filter)
        if is_root_dse(request):
            return self.getRootDSE(request, reply)
        base = parse_dn(request.baseObject)
        d = ldap_interfaces.IConnectedLDAPEntry(self.factory).lookup(base)
        d.addCallback(self._cbSearchGotBase, base, request, reply)
        return d

    def handle_LDAPCompareRequest(self, request, controls, reply):
        self.checkControls(controls)
        parse_dn(request.entry)
        check_ava(request.ava)
        return LDAPServer.handle_LDAPCompareRequest(self, request, controls, reply)

    # ---- writes: all refused

    def _read_only(self, operation):
        LDAP_REQUESTS.labels(operation, "refused").inc()
        raise ldaperrors.LDAPInsufficientAccessRights(
            "the directory is read-only: edit users in the admin pages")

    def handle_LDAPAddRequest(self, request, controls, reply):
        self._read_only("add")

    def handle_LDAPDelRequest(self, request, controls, reply):
        self._read_only("delete")

    def handle_LDAPModifyRequest(self, request, controls, reply):
        self._read_only("modify")

    def handle_LDAPModifyDNRequest(self, request, controls, reply):
        self._read_only("modifydn")


class AddressBookFactory(protocol.ServerFactory):
    """Builds LDAP connections for LAN peers only; holds the current tree."""

    protocol = AddressBookServer

    def __init__(self, office, checker=None, clock=None, throttle=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.office = office
        self.checker = checker if checker is not None else OfficeUserChecker(office)
        # Password guessing by bind: the login throttle every protocol uses.
        self.throttle = throttle if throttle is not None else LoginThrottle(clock)
        self._root = None
        self._built_from = None

    def current_root(self):
        """The tree for the office's config as it is now (rebuilt after a change)."""
        config = self.office.config
        if self._built_from is not config:
            self._root = build_tree(config)
            self._built_from = config
            LDAP_ENTRIES.set(len(config.users))
        return self._root

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        if not self.office.is_lan_peer(host):
            LDAP_REFUSED.inc()
            log.info("ldap: refused connection from {peer} (not on the LAN)", peer=host)
            return None
        return protocol.ServerFactory.buildProtocol(self, addr)


components.registerAdapter(lambda factory: factory.current_root(), AddressBookFactory,
                           ldap_interfaces.IConnectedLDAPEntry)


# ---------------------------------------------------------------- the service

class LdapService(ListeningService):
    """
    The "ldap" child: listens on `[ldap] port` while enabled, follows changes
    live. The guards (a LoginThrottle for binds, a PeerLimit) may be given, to
    share them with other services.
    """

    def __init__(self, office, reactor=None, checker=None, throttle=None, peer_limit=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.factory = AddressBookFactory(office, checker, clock=reactor, throttle=throttle)
        self.peers = peer_limit if peer_limit is not None else PeerLimit(
            MAX_CONNECTIONS_PER_PEER, cap=MAX_CONNECTIONS)
        ListeningService.__init__(self, "ldap", office)

    def bound_settings(self, config):
        """Only the switch and the port decide what listens."""
        return (config.ldap.enabled, config.ldap.port)

    def disabled_reason(self, config):
        return None if config.ldap.enabled else "turned off in [ldap]"

    def build_listeners(self, config):
        port = config.ldap.port
        limited = PeerConnectionLimit(self.factory, self.peers, "ldap", busy=BUSY_NOTICE)
        return [("tcp/%d" % port, port,
                 lambda: self.reactor.listenTCP(port, limited, interface=""))]

    def config_changed(self, event):
        if event.touches("user", "system"):
            self.factory.current_root()
            log.info("ldap: address book rebuilt with {count} people", count=len(event.new.users))
