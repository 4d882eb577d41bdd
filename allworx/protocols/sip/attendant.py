# -*- test-case-name: allworx.tests.sip.test_attendant -*-
"""
The auto attendant (SPEC 15 `[attendant NAME]`): the server answers, plays
the greeting and runs the menu (allworx.protocols.voice.attendant_menu),
then transfers the caller where the menu says.

A call is an `AttendantCall`, a `LocalCall` of the voicemail user agent
(ua.py): the same answer with G.711, RTP port, DTMF by RFC 4733 and INFO,
and watchdog, and the dialog kept among the user agent's, so the caller's
in-dialog requests reach it. The call router hands the agent the calls to an
attendant's number, to `attendant-NAME` (an inbound number's TARGET) and to
TARGETs that name an attendant.

Routing is a blind transfer (RFC 3515): a REFER in the dialog with the
caller, `Refer-To: <sip:ADDRESS@LAN address>`, ADDRESS the call router's
local name of the TARGET (`101`, `voicemail-101`, `group-sales`,
`attendant-main`). The caller is a phone of the LAN (which follows the
REFER itself) or the inside leg of the B2BUA (an outside call). On 202 we
wait for the NOTIFYs: a 2xx in one ends our part (BYE), and so does
`LET_GO` seconds after the 202; a refusal of the REFER, or a NOTIFY with a
failure, plays "cannot transfer" and then hangs up.
"""

import os
import time

from twisted.internet import threads
from twisted.logger import Logger

from allworx.config.values import Target
from allworx.protocols.sip.message import SipParseError, make_response
from allworx.protocols.sip.outside import local_address
from allworx.protocols.sip.ua import LocalCall
from allworx.protocols.voice.attendant_greetings import AttendantGreetings
from allworx.protocols.voice.attendant_menu import PROMPTS, TONES, AttendantMenu
from allworx.protocols.voice.greeting import PromptLibrary

log = Logger()

LET_GO = 4.0        # seconds after the 202 that we hang up without a 2xx NOTIFY


def sipfrag_code(body):
    """The status code of a message/sipfrag body (`SIP/2.0 200 OK`), or None."""
    first = (body or b"").split(b"\n", 1)[0].strip().split()
    if len(first) >= 2 and first[0].upper().startswith(b"SIP/") and first[1].isdigit():
        return int(first[1])
    return None


class AttendantCall(LocalCall):
    """One caller of an attendant: the menu, then the transfer."""

    contact_user = "attendant"
    allow = "INVITE, ACK, CANCEL, BYE, INFO, OPTIONS, NOTIFY"

    def __init__(self, ua, request, st, source, offer, owner, attendant):
        LocalCall.__init__(self, ua, request, st, source, offer)
        self.owner = owner
        self.attendant = attendant
        self.playing = 0            # which play() the player's end belongs to
        self.refer = None           # the REFER's client transaction
        self.transfer = None        # None | "sent" | "accepted" | "failed" | "done"
        self.let_go = None
        self.menu = AttendantMenu(self, self.core.clock, attendant, owner.greeting(attendant),
                                  owner.prompts.get, owner.numbers(), owner.operator(), owner.now)

    def answer(self, port):
        LocalCall.answer(self, port)
        # The call history's duration counts from here.
        self.core.calls.answered(self.request.call_id, self.attendant.number or self.attendant.name)

    def begin(self):
        log.info("attendant {name}: call {call_id} answered", name=self.attendant.name,
                 call_id=self.request.call_id)
        self.menu.start()

    # ------------------------------------------------------------ the menu's io

    def play(self, segments):
        self.playing += 1
        self.player.play(segments)

    def stop_playing(self):
        self.playing += 1
        self.player.stop()

    def _played(self):
        if not self.ended:
            which = self.playing
            self.core.clock.callLater(0, self._menu_played, which)

    def _menu_played(self, which):
        if not self.ended and which == self.playing:
            self.menu.played()

    def digit(self, d):
        if not self.ended:
            self.menu.key(d)

    def route(self, target):
        """Transfer the caller to `target` (a TARGET of the config, None: nowhere)."""
        address = self.owner.address_of(target)
        if address is None:
            log.warn("attendant {name}: call {call_id} has nowhere to go ({target})",
                     name=self.attendant.name, call_id=self.request.call_id, target=target)
            return self._failed()
        refer_to = "<sip:%s@%s>" % (address, self.owner.lan_host())
        log.info("attendant {name}: call {call_id} to {address}", name=self.attendant.name,
                 call_id=self.request.call_id, address=address)
        self.transfer = "sent"
        refer = self.new_request("REFER", [
            ("Contact", self.contact()), ("Refer-To", refer_to),
            ("Referred-By", "<sip:%s@%s>" % (self.attendant.number or "attendant-" + self.attendant.name,
                                             self.owner.lan_host()))])
        self.refer = self.core.request(refer, self.source, on_response=self._refer_answered,
                                       on_timeout=lambda: self._refer_answered(None))

    def _refer_answered(self, response):
        if self.ended or self.transfer != "sent":
            return
        if response is not None and response.code < 200:
            return
        if response is not None and response.code < 300:
            self.transfer = "accepted"
            self.let_go = self.core.clock.callLater(LET_GO, self._transferred, "no final NOTIFY")
            return
        log.info("attendant {name}: the REFER of call {call_id} was refused ({code})",
                 name=self.attendant.name, call_id=self.request.call_id,
                 code=response.code if response is not None else "no answer")
        self._failed()

    def _transferred(self, why):
        self.let_go = None
        if self.transfer in ("sent", "accepted"):
            self.transfer = "done"
            self.hang_up()
            log.info("attendant {name}: call {call_id} transferred ({why})",
                     name=self.attendant.name, call_id=self.request.call_id, why=why)

    def _failed(self):
        self.transfer = "failed"
        self._stop_let_go()
        if not self.ended:
            self.menu.transfer_failed()

    def _stop_let_go(self):
        if self.let_go is not None and self.let_go.active():
            self.let_go.cancel()
        self.let_go = None

    # ------------------------------------------------------------ the dialog

    def in_dialog(self, request, st):
        if request.method != "NOTIFY":
            return LocalCall.in_dialog(self, request, st)
        event = (request.get("Event") or request.get("o") or "").split(";")[0].strip().lower()
        if event != "refer" or self.transfer is None:
            return st.respond(make_response(request, 489, "Bad Event"))
        st.respond(make_response(request, 200))
        code = sipfrag_code(request.body)
        if code is None or code < 200:
            return
        if code < 300:
            self._transferred("NOTIFY %d" % code)
        elif self.transfer in ("sent", "accepted"):
            log.info("attendant {name}: the transfer of call {call_id} failed ({code})",
                     name=self.attendant.name, call_id=self.request.call_id, code=code)
            self._failed()

    def hang_up(self):
        self.menu.stop()
        LocalCall.hang_up(self)

    def done(self):
        self.menu.stop()
        self._stop_let_go()


class Attendant:
    """
    The auto attendants: answers their calls (through the voicemail user
    agent `core.ua`) and keeps their greetings and prompts, spoken by
    espeak-ng in a thread. `speak(text, path)` renders a text (tests give a
    fake); `localtime(seconds)` gives the server's local time (its zone).
    """

    def __init__(self, core, office, clock, defer_to_thread=threads.deferToThread, speak=None,
                 localtime=time.localtime):
        self.core = core
        self.office = office
        self.clock = clock
        self.defer_to_thread = defer_to_thread
        self.localtime = localtime
        directory = os.path.join(office.config.system.data_dir, "voicemail", "attendant")
        self.prompts = PromptLibrary(os.path.join(directory, "prompts"), PROMPTS, TONES, speak=speak)
        extra = {} if speak is None else {"speak": speak}
        self.greetings = AttendantGreetings(directory, office.config.system.data_dir, **extra)
        self.rendering = None       # the Deferred of a render running in a thread

    def start(self):
        """Render the prompts and the greetings that have no spoken version yet (in a thread)."""
        if self.office.config.attendants:
            self.render()

    def render(self):
        if self.rendering is not None:
            return self.rendering
        attendants = list(self.office.config.attendants.values())

        def work():
            return self.prompts.render() + self.greetings.render(attendants)

        def over(result):
            self.rendering = None
            if result:
                log.info("attendant: {n} spoken prompts and greetings rendered", n=result)
        d = self.rendering = self.defer_to_thread(work)
        d.addCallback(over)
        d.addErrback(lambda f: (setattr(self, "rendering", None),
                                log.failure("rendering the attendant's greetings failed", f)))
        return d

    # ------------------------------------------------------------ for the calls

    def greeting(self, attendant):
        if self.greetings.stale(attendant):
            self.render()        # the text is new or changed: the tones play meanwhile
        return self.greetings.get(attendant)

    def numbers(self):
        """{digits: Target} of everything one may dial in the menu."""
        config = self.office.config
        out = {}
        for a in config.attendants.values():
            if a.number:
                out[a.number] = Target("attendant", a.name)
        for g in config.groups.values():
            if g.number:
                out[g.number] = Target("group", g.name)
        for u in config.users.values():
            if u.extension:
                out[u.extension] = Target("extension", u.extension)
        return out

    def operator(self):
        return self.office.config.operator_extension

    def now(self):
        """(weekday, minute of the day) of the server's local time; Monday is 0."""
        t = self.localtime(self.clock.seconds())
        return t.tm_wday, t.tm_hour * 60 + t.tm_min

    def lan_host(self):
        return str(self.office.config.lan_ip)

    def address_of(self, target):
        """The call router's local name of a TARGET, or None when it names nothing."""
        if target is None:
            return None
        try:
            return local_address(self.office.config.resolve_target(target))
        except (ValueError, SipParseError):
            return None

    # ------------------------------------------------------------ calls

    def answer(self, request, st, source, attendant):
        """Answer a call for `attendant` (the config's `Attendant`)."""
        self.core.ua.answer_call(AttendantCall, request, st, source, self, attendant)
