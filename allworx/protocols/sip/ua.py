# -*- test-case-name: allworx.tests.sip.test_ua -*-
"""
The server's own SIP user agent: it answers calls that go to voicemail
(leaving a message) and calls to the voicemail number (the phone menu).

Each answered call is a `LocalCall`: a dialog (2xx retransmitted until the
ACK, BYE either way, INFO for DTMF) and an RTP endpoint on a port of
`[sip] rtp_ports`. A `Deposit` plays the greeting, records, and delivers the
mail on hang-up; a `Retrieval` runs the `VoicemailMenu`.
"""

import os

from twisted.internet import defer, error, threads
from twisted.logger import Logger

from allworx.passwords import is_hashed, verify_pin
from allworx.protocols.sip.calls import caller_of
from allworx.protocols.sip.message import NameAddr, Request, SipParseError, make_response
from allworx.protocols.sip.transaction import T1, T2
from allworx.protocols.voice import dtmf
from allworx.protocols.voice.greeting import PromptLibrary, beep
from allworx.protocols.voice.rtp import MediaClock, RtpEndpoint
from allworx.protocols.voice.sdp import SdpError, make_answer, parse_offer
from allworx.protocols.voice.voicemail import (
    MAX_GREETING, MAX_RECORDING, Mailbox, MediaPlayer, Recorder, VoicemailMenu,
    load_greeting, store_greeting, voicemail_mail)

log = Logger()

MIN_MESSAGE = 0.5       # seconds: shorter recordings are not delivered
MEDIA_TIMEOUT = 30.0    # seconds without RTP from the caller: the call is dead
MENU_IDLE = 120.0       # seconds without a key in the phone menu: goodbye


class LocalCall:
    """One call the server answered: dialog state and media."""

    contact_user = "voicemail"          # the user part of our Contact
    allow = "INVITE, ACK, CANCEL, BYE, INFO, OPTIONS"

    def __init__(self, agent, request, st, source, offer):
        self.agent = agent
        self.core = agent.core
        self.request = request
        self.st = st
        self.source = source
        self.offer = offer
        self.local_tag = self.core.new_tag()
        self.remote_target = request.uri
        contact = request.get("Contact")
        if contact:
            try:
                self.remote_target = NameAddr.parse(contact).uri
            except SipParseError:
                pass
        self.cseq = 1
        self.acked = False
        self.ended = False
        self.ok = None
        self.retransmit_call = None
        self.watchdog = None
        self.idle_limit = None
        self.last_key = None
        self.interval = T1
        self.started_at = None
        self.media = None
        self.player = MediaPlayer(offer.payload_type, on_done=self._played)
        self.detector = dtmf.DtmfDetector(self.digit)

    # ------------------------------------------------------------ answering

    def answer(self, port):
        local = self.core.local_host(self.source.host)
        self.media = port
        body = make_answer(local, port.getHost().port, self.offer.payload_type,
                           self.offer.event_type)
        ok = make_response(self.request, 200, to_tag=self.local_tag, extra=[
            ("Contact", self.contact()),
            ("Allow", self.allow),
            ("Content-Type", "application/sdp")])
        ok.body = body
        self.ok = ok
        self.answered_at = self.core.clock.seconds()
        self.st.respond(ok)
        self.retransmit_call = self.core.clock.callLater(self.interval, self._retransmit_ok)

    def contact(self):
        return "<sip:%s@%s:%d>" % (self.contact_user, self.core.local_host(self.source.host),
                                   self.core.port)

    def _retransmit_ok(self):
        self.retransmit_call = None
        if self.acked or self.ended:
            return
        left = self.answered_at + 64 * T1 - self.core.clock.seconds()
        if left <= 1e-9:
            log.info("voicemail call {call_id}: no ACK for our 200", call_id=self.request.call_id)
            self.hang_up()
            return
        self.core.send(self.ok, self.source)
        self.interval = min(self.interval * 2, T2)
        self.retransmit_call = self.core.clock.callLater(min(self.interval, left), self._retransmit_ok)

    def acknowledged(self):
        if self.acked:
            return
        self.acked = True
        if self.retransmit_call is not None and self.retransmit_call.active():
            self.retransmit_call.cancel()
        self.started_at = self.core.clock.seconds()
        self.last_key = self.started_at
        self.media.protocol.start_sending(self.agent.media_clock)
        self.watchdog = self.core.clock.callLater(10.0, self._watch)
        self.begin()

    def _watch(self):
        """Hang up a call whose caller vanished (no RTP) or sits idle in the menu."""
        self.watchdog = None
        if self.ended:
            return
        now = self.core.clock.seconds()
        heard = self.media.protocol.last_received or self.started_at
        if now - heard > MEDIA_TIMEOUT:
            log.info("voicemail call {call_id}: no media for {seconds:.0f} s", call_id=self.request.call_id,
                     seconds=now - heard)
            self.hang_up()
            return
        if self.idle_limit is not None and now - self.last_key > self.idle_limit:
            log.info("voicemail call {call_id}: no key for {seconds:.0f} s", call_id=self.request.call_id,
                     seconds=now - self.last_key)
            self.hang_up()
            return
        self.watchdog = self.core.clock.callLater(10.0, self._watch)

    # ------------------------------------------------------------ media

    def audio(self, payload):
        """A G.711 payload from the caller, in order."""

    def digit(self, d):
        """A DTMF key from RTP or INFO."""

    def _played(self):
        """The player ran out."""

    # ------------------------------------------------------------ the dialog

    def in_dialog(self, request, st):
        method = request.method
        if method == "ACK":
            self.acknowledged()
        elif method == "BYE":
            st.respond(make_response(request, 200))
            self.finish("caller hung up")
        elif method == "INFO":
            try:
                d = dtmf.parse_info(request.get("Content-Type"), request.body)
            except dtmf.DtmfError:
                st.respond(make_response(request, 415 if request.body else 200))
                return
            st.respond(make_response(request, 200))
            self.digit(d)
        elif method == "INVITE":
            # A re-INVITE (hold, refresh): keep our media as it is.
            ok = make_response(request, 200, extra=[("Content-Type", "application/sdp")])
            ok.body = self.ok.body
            st.respond(ok)
        else:
            st.respond(make_response(request, 200 if method in ("OPTIONS", "UPDATE") else 405))

    def hang_up(self):
        """We end the call: BYE to the caller."""
        if self.ended:
            return
        self.core.request(self.new_request("BYE"), self.source)
        self.finish("we hung up")

    def new_request(self, method, extra=()):
        """A request of ours in this dialog (its CSeq the next), to send to `self.source`."""
        req = self.request
        frm = req.get("To")
        if "tag=" not in frm:
            frm = "%s;tag=%s" % (frm, self.local_tag)
        self.cseq += 1
        return Request([("Via", self.core.via_for(self.source)), ("Max-Forwards", "70"),
                        ("From", frm), ("To", req.get("From")), ("Call-ID", req.call_id),
                        ("CSeq", "%d %s" % (self.cseq, method))] + list(extra),
                       method=method, uri=self.remote_target)

    def finish(self, why):
        if self.ended:
            return
        self.ended = True
        if self.retransmit_call is not None and self.retransmit_call.active():
            self.retransmit_call.cancel()
        if self.watchdog is not None and self.watchdog.active():
            self.watchdog.cancel()
        if self.media is not None:
            rtp = self.media.protocol
            rtp.stop()
            log.info("voicemail RTP of call {call_id}: {received} packets received, {lost} lost",
                     call_id=self.request.call_id, received=rtp.jitter.received, lost=rtp.jitter.lost)
        self.agent.forget(self)
        self.core.calls.ended(self.request.call_id)
        log.info("voicemail call {call_id} ended: {why}", call_id=self.request.call_id, why=why)
        self.done()

    def done(self):
        """After the call: subclasses deliver what they recorded."""

    def begin(self):
        """The call is established."""


class Deposit(LocalCall):
    """Leaving a message: greeting, tone, recording, mail on hang-up."""

    def __init__(self, agent, request, st, source, offer, user):
        LocalCall.__init__(self, agent, request, st, source, offer)
        self.user = user
        self.recorder = Recorder(offer.payload_type, MAX_RECORDING, on_full=self.hang_up)
        self.recording_started = None

    def begin(self):
        greeting = load_greeting(self.agent.greeting_dir, self.user.name) or self.agent.prompts.get("greeting")
        self.player.play([greeting, beep()])

    def _played(self):
        if not self.recorder.on and not self.ended and self.recording_started is None:
            self.recording_started = self.core.clock.seconds()
            self.recorder.start()
            log.info("voicemail recording for {user} started", user=self.user.name)

    def audio(self, payload):
        self.recorder.audio(payload)

    def digit(self, d):
        if d == "#" and self.recorder.on:
            self.hang_up()

    def done(self):
        pcm = self.recorder.stop()
        seconds = len(pcm) / 16000.0
        if seconds < MIN_MESSAGE:
            log.info("voicemail for {user}: nothing recorded", user=self.user.name)
            return
        self.agent.deliver(self.user, caller_of(self.request, self.agent.office.config), pcm)


class Retrieval(LocalCall):
    """Hearing messages: the phone menu."""

    def __init__(self, agent, request, st, source, offer):
        LocalCall.__init__(self, agent, request, st, source, offer)
        self.idle_limit = MENU_IDLE
        self.recorder = Recorder(offer.payload_type, MAX_GREETING)
        self.menu = VoicemailMenu(self, agent.prompts.get, agent.find_user, agent.mailbox,
                                  agent.check_pin)

    def begin(self):
        user = self.agent.core.registrar.user_at((self.source.host, self.source.port))
        if user is not None:
            self.menu.start_known(user)
        else:
            self.menu.start_unknown()

    # The menu's io:
    def play(self, segments):
        self.player.play(segments)

    def record(self):
        self.recorder.start()

    def stop_recording(self):
        return self.recorder.stop()

    def save_greeting(self, user, pcm):
        self.agent.save_greeting(user, pcm)

    def _played(self):
        if not self.ended:
            self.agent.core.clock.callLater(0, self._menu_played)

    def _menu_played(self):
        if not self.ended:
            self.menu.played()

    def audio(self, payload):
        self.recorder.audio(payload)

    def digit(self, d):
        if not self.ended:
            self.last_key = self.core.clock.seconds()
            self.menu.key(d)

    def done(self):
        self.menu.stop()


class VoicemailAgent:
    """Answers the calls that voicemail takes; owns the RTP ports and the prompts."""

    def __init__(self, core, office, clock, mail_store, listen_udp,
                 defer_to_thread=threads.deferToThread):
        self.core = core
        self.defer_to_thread = defer_to_thread
        self.office = office
        self.clock = clock
        self.mail_store = mail_store     # IMailStore; None: no mailboxes
        self.calls = {}            # (call_id, local tag) -> LocalCall
        self._listen_udp = listen_udp
        self.next_port = None
        self.prompts = PromptLibrary(os.path.join(self.voicemail_dir, "prompts"))
        self.deliveries = []       # Deferreds of mails being delivered (tests wait on them)
        self.media_clock = MediaClock(clock)

    @property
    def voicemail_dir(self):
        return os.path.join(self.office.config.system.data_dir, "voicemail")

    @property
    def greeting_dir(self):
        return os.path.join(self.voicemail_dir, "greetings")

    def start(self):
        if not self.prompts.spoken:
            d = threads.deferToThread(self.prompts.render)
            d.addCallback(lambda n: n and log.info("voicemail: {n} spoken prompts rendered", n=n))
            d.addErrback(lambda f: log.failure("rendering prompts failed", f))

    def stop(self):
        for call in list(self.calls.values()):
            call.hang_up()

    # ------------------------------------------------------------ lookups for the menu

    def find_user(self, key, by_name=False):
        config = self.office.config
        user = config.users.get(key) if by_name else config.user_by_extension(key)
        if user is None:
            return None
        return (user.name, user.voicemail_pin)

    def check_pin(self, stored, entered):
        """A Deferred: does `entered` match? A hash is checked in a thread (argon2 is slow)."""
        if is_hashed(stored):
            return self.defer_to_thread(verify_pin, stored, entered)
        return defer.succeed(verify_pin(stored, entered))

    def mailbox(self, user):
        return Mailbox(self.mail_store, user, self.greeting_dir)

    def save_greeting(self, user, pcm):
        d = threads.deferToThread(store_greeting, self.greeting_dir, user, pcm)
        d.addCallback(lambda _: log.info("voicemail greeting of {user} recorded", user=user))
        d.addErrback(lambda f: log.failure("saving the greeting of {user} failed", f, user=user))
        return d

    # ------------------------------------------------------------ calls

    def owns(self, request):
        return (request.call_id, request.to_tag) in self.calls

    def forget(self, call):
        self.calls.pop((call.request.call_id, call.local_tag), None)

    def in_dialog(self, request, st, source):
        call = self.calls.get((request.call_id, request.to_tag))
        if call is not None:
            call.in_dialog(request, st)

    def deposit(self, request, st, source, user):
        self.answer_call(Deposit, request, st, source, user)

    def retrieve(self, request, st, source):
        self.answer_call(Retrieval, request, st, source)

    def answer_call(self, cls, request, st, source, *args):
        """
        Answer `request` as a `cls` (a LocalCall) made with `*args` after the
        offer: G.711 on an RTP port of ours, the call kept in our dialogs.
        """
        try:
            offer = parse_offer(request.body)
        except SdpError as e:
            log.info("voicemail call {call_id} refused: {error}", call_id=request.call_id, error=str(e))
            self.core.calls.ended(request.call_id)
            return st.respond(make_response(request, 488, "Not Acceptable Here (%s)" % e,
                                            to_tag=self.core.new_tag()))
        call = cls(self, request, st, source, offer, *args)
        endpoint = RtpEndpoint(self.clock, offer.payload_type, offer.event_type,
                               on_audio=lambda p: call.audio(p), on_event=call.detector.packet)
        endpoint.source = call.player.frame
        endpoint.set_remote(offer.host, offer.port)
        port = self._bind(endpoint)
        if port is None:
            self.core.calls.ended(request.call_id)
            return st.respond(make_response(request, 503, "No free RTP port",
                                            to_tag=self.core.new_tag()))
        self.calls[(request.call_id, call.local_tag)] = call
        st.on_cancel = lambda: call.finish("cancelled")
        call.answer(port)

    def _bind(self, endpoint):
        low, high = self.office.config.sip.rtp_ports
        listen = self._listen_udp
        span = (high - low) // 2 + 1
        if self.next_port is None or not low <= self.next_port <= high:
            self.next_port = low + (low % 2)
        for _ in range(span):
            port = self.next_port
            self.next_port += 2
            if self.next_port > high:
                self.next_port = low + (low % 2)
            try:
                return listen(port, endpoint)
            except (error.CannotListenError, OSError):
                continue
        return None

    def deliver(self, user, caller, pcm):
        store = self.mail_store
        if store is None:
            log.error("voicemail for {user} lost: no mail store", user=user.name)
            return None
        message = voicemail_mail(self.office.config.system.domain, user.name, caller,
                                 self.clock.seconds(), pcm)
        d = store.deliver([user.name], message)
        d.addCallback(lambda r: log.info("voicemail for {user} from {caller} delivered ({seconds:.1f} s)",
                                         user=user.name, caller=caller[1] or caller[0],
                                         seconds=len(pcm) / 16000.0))
        d.addErrback(lambda f: log.failure("voicemail for {user} not delivered", f, user=user.name))
        self.deliveries.append(d)
        d.addBoth(lambda r: (self.deliveries.remove(d) if d in self.deliveries else None, r)[1])
        return d
