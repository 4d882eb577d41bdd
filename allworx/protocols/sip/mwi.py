# -*- test-case-name: allworx.tests.sip.test_mwi -*-
"""
Message waiting (RFC 3842 over RFC 6665): phones SUBSCRIBE to the
`message-summary` event of their user's mailbox and get a NOTIFY with the
voicemail counts at once and whenever the mail store emits `MailboxChanged`
for that user.
"""

import attr
from prometheus_client import Counter
from twisted.logger import Logger

from allworx.guards import until_text
from allworx.protocols.sip.message import NameAddr, Request, SipParseError, SipUri, make_response

log = Logger()

NOTIFIES = Counter("allworx_sip_mwi_notify_total", "message-summary NOTIFYs sent")

DEFAULT_EXPIRES = 3600
MAX_SUBSCRIPTIONS = 1000


def summary_body(account, new, old):
    """The application/simple-message-summary body (RFC 3842 section 5.2)."""
    return ("Messages-Waiting: %s\r\nMessage-Account: %s\r\nVoice-Message: %d/%d (0/0)\r\n"
            % ("yes" if new else "no", account, new, old)).encode("ascii")


@attr.s(slots=True)
class Subscription:
    """One phone's subscription to a user's message summary."""

    user = attr.ib()
    call_id = attr.ib()
    local_tag = attr.ib()
    remote_from = attr.ib()      # the subscriber's From (our To)
    local_to = attr.ib()         # the subscriber's To with our tag (our From)
    target = attr.ib()           # the subscriber's Contact URI
    dest = attr.ib()
    expires_at = attr.ib()
    cseq = attr.ib(default=0)


class MessageWaiting:
    """
    Keeps subscriptions and sends NOTIFYs; `mailbox_changed(event)` is
    handed each `MailboxChanged` by the service.
    """

    def __init__(self, core, office, clock, mail_store):
        self.core = core
        self.office = office
        self.clock = clock
        self.mail_store = mail_store     # IMailStore for the counts; None: no mailboxes
        self.subs = {}       # (call_id, local_tag) -> Subscription

    def owns(self, request):
        return request.method == "SUBSCRIBE" and (request.call_id, request.to_tag) in self.subs

    def counts(self, user):
        store = self.mail_store
        if store is None:
            return 0, 0
        counter = getattr(store, "voicemail_counts", None)
        if counter is not None:
            return counter(user)
        infos = [m for m in store.list_messages(user) if m.voicemail]
        return sum(1 for m in infos if not m.seen), sum(1 for m in infos if m.seen)

    def subscribe(self, request, st, source):
        event = (request.get("Event") or "").split(";")[0].strip().lower()
        if event != "message-summary":
            return st.respond(make_response(request, 489, to_tag=self.core.new_tag(),
                                            extra=[("Allow-Events", "message-summary")]))
        try:
            expires = int(request.get("Expires", str(DEFAULT_EXPIRES)))
            target = NameAddr.parse(request.get("Contact", "")).uri
            SipUri.parse(target)
            number = SipUri.parse(request.uri).user
        except (ValueError, SipParseError):
            return st.respond(make_response(request, 400, to_tag=self.core.new_tag()))
        expires = max(0, min(expires, DEFAULT_EXPIRES))
        sub = self.subs.get((request.call_id, request.to_tag)) if request.to_tag else None
        if sub is None:
            config = self.office.config
            user = config.user_by_extension(number) or config.users.get(number)
            # A number nobody has is refused the way a mailbox one may not
            # watch is: nobody learns which extensions exist.
            refusal = self._authorize(request, source, user)
            if refusal is not None:
                return st.respond(refusal)
            if len(self.subs) >= MAX_SUBSCRIPTIONS:
                return st.respond(make_response(request, 503, "Too many subscriptions",
                                                to_tag=self.core.new_tag()))
            tag = self.core.new_tag()
            sub = Subscription(user.name, request.call_id, tag, request.get("From"),
                               "%s;tag=%s" % (request.get("To"), tag), target, source,
                               self.clock.seconds() + expires)
            if expires:
                self.subs[(request.call_id, tag)] = sub
        else:
            sub.expires_at = self.clock.seconds() + expires
            sub.target, sub.dest = target, source
        st.respond(make_response(request, 200 if expires else 202, to_tag=sub.local_tag, extra=[
            ("Expires", str(expires)),
            ("Contact", "<sip:%s:%d>" % (self.core.local_host(source.host), self.core.port))]))
        if not expires:
            self.subs.pop((sub.call_id, sub.local_tag), None)
        log.info("message-waiting subscription of {user} from {peer} ({expires} s)",
                 user=sub.user, peer="%s:%d" % (source.host, source.port), expires=expires)
        self.notify(sub, terminated=not expires)

    def _authorize(self, request, source, user):
        """
        None when `source` may watch `user`'s mailbox: a phone of the user
        registered from that host, or digest credentials of the user;
        otherwise the response to send (401 challenge or 403). A `user` of
        None (no such number) is never admitted, and answered alike.
        """
        registrar = self.core.registrar
        if registrar is None:
            return None if user is not None else make_response(request, 404, to_tag=self.core.new_tag())
        if user is not None and registrar.registered_from(user.name, source.host):
            return None
        authorization = request.get("Authorization")
        # Digest answers count in the one login throttle, as REGISTER's do:
        # a locked login is refused unchecked, a wrong one counts.
        who = registrar.digest_user(authorization)
        until = registrar.throttle.check(source.host, who) if who is not None else 0
        if until:
            return make_response(request, 403, "Forbidden (%s)" % until_text(until),
                                 to_tag=self.core.new_tag())
        status, value = registrar.checker.check(request, authorization)
        if status == "ok":
            registrar.throttle.succeeded(source.host, who)
        elif status == "fail":
            registrar.throttle.failed(source.host, who)
        if status == "ok" and user is not None and value.name == user.name:
            return None
        if status in ("challenge", "stale"):
            return make_response(request, 401, to_tag=self.core.new_tag(),
                                 extra=registrar.checker.challenge_headers(request, stale=status == "stale"))
        log.info("message-waiting subscription to {user} from {peer} refused",
                 user=user.name if user is not None else request.uri,
                 peer="%s:%d" % (source.host, source.port))
        return make_response(request, 403, to_tag=self.core.new_tag())

    def mailbox_changed(self, event):
        now = self.clock.seconds()
        for key, sub in list(self.subs.items()):
            if sub.expires_at <= now:
                del self.subs[key]
            elif sub.user == event.user:
                self.notify(sub, counts=(event.voicemail_new, event.voicemail_old))

    def notify(self, sub, counts=None, terminated=False):
        new, old = counts if counts is not None else self.counts(sub.user)
        sub.cseq += 1
        remaining = max(0, int(sub.expires_at - self.clock.seconds()))
        state = "terminated;reason=timeout" if terminated else "active;expires=%d" % remaining
        user = self.office.config.users.get(sub.user)
        account = "sip:%s@%s" % (user.extension if user and user.extension else sub.user,
                                 self.office.config.system.domain)
        req = Request([("Via", self.core.via_for(sub.dest)), ("Max-Forwards", "70"),
                       ("From", sub.local_to), ("To", sub.remote_from), ("Call-ID", sub.call_id),
                       ("CSeq", "%d NOTIFY" % sub.cseq), ("Event", "message-summary"),
                       ("Subscription-State", state),
                       ("Contact", "<sip:%s:%d>" % (self.core.local_host(sub.dest.host), self.core.port)),
                       ("Content-Type", "application/simple-message-summary")],
                      summary_body(account, new, old), method="NOTIFY", uri=sub.target)
        NOTIFIES.inc()
        self.core.request(req, sub.dest)
