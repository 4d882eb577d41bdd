# -*- test-case-name: allworx.tests.voice.test_voicemail -*-
"""
Voicemail: leaving a message (greeting, tone, recording, delivered as mail)
and hearing messages by phone (the menu of SPEC 8 as an automat machine).

The pieces here have no sockets: `VoicemailMenu` decides what to play and do
for each key, `Mailbox` reads and changes a user's voicemail through the
mail store (IMailStore), `voicemail_mail` builds the message, and
`MediaPlayer` / `Recorder` turn PCM into 20 ms G.711 frames and back. The SIP
side (allworx.protocols.sip.ua) wires them to a call.
"""

import email.message
import email.parser
import email.policy
import email.utils
import os

from automat import MethodicalMachine
from twisted.internet import defer
from twisted.logger import Logger

from allworx.atomicfile import ensure_directory, write_atomically
from allworx.passwords import verify_pin
from allworx.protocols.voice import g711
from allworx.protocols.voice.greeting import beep
from allworx.protocols.voice.rtp import FRAME
from allworx.protocols.voice.wav import WavError, duration, from_wav, to_wav

log = Logger()

MAX_RECORDING = 180          # seconds of a voicemail message
MAX_GREETING = 60
PIN_TRIES = 3


# ---------------------------------------------------------------- media

_ENCODED = {}       # (id(pcm), payload type) -> (pcm, codes): a small shared cache

class MediaPlayer:
    """
    A queue of PCM segments played as G.711 frames: `frame()` gives the next
    160 codes (silence when idle), and `on_done()` is called once when the
    queue has played out.
    """

    def __init__(self, payload_type, on_done=None):
        self.payload_type = payload_type
        self.silence = bytes([g711.silence(payload_type)]) * FRAME
        self.queue = []
        self.current = b""
        self.offset = 0
        self.on_done = on_done or (lambda: None)
        self.busy = False
        self._cache = {}

    def encoded(self, pcm):
        """G.711 of `pcm`; prompts and greetings shared by calls are encoded once."""
        key = (id(pcm), self.payload_type)
        hit = _ENCODED.get(key)
        if hit is not None and hit[0] is pcm:
            return hit[1]
        codes = g711.encode(pcm, self.payload_type)
        if len(_ENCODED) > 64:
            _ENCODED.clear()
        _ENCODED[key] = (pcm, codes)
        return codes

    def play(self, segments):
        """Replace whatever is playing with `segments` (PCM bytes each)."""
        self.queue = [self.encoded(s) for s in segments if s]
        self.current, self.offset = b"", 0
        self.busy = True

    def stop(self):
        self.queue, self.current, self.offset, self.busy = [], b"", 0, False

    def frame(self):
        if not self.busy:
            return self.silence
        out = b""
        while len(out) < FRAME:
            if self.offset >= len(self.current):
                if not self.queue:
                    break
                self.current, self.offset = self.queue.pop(0), 0
            take = self.current[self.offset:self.offset + FRAME - len(out)]
            self.offset += len(take)
            out += take
        if len(out) < FRAME:
            out += self.silence[:FRAME - len(out)]
        if self.offset >= len(self.current) and not self.queue:
            self.busy = False
            self.current = b""
            self.on_done()
        return out


class Recorder:
    """Collects G.711 payloads while on, up to a length; `pcm()` decodes them."""

    def __init__(self, payload_type, max_seconds=MAX_RECORDING, on_full=None):
        self.payload_type = payload_type
        self.limit = int(max_seconds * 8000)
        self.codes = bytearray()
        self.on = False
        self.on_full = on_full or (lambda: None)

    def start(self):
        self.codes = bytearray()
        self.on = True

    def stop(self):
        self.on = False
        return self.pcm()

    def audio(self, payload):
        if not self.on:
            return
        room = self.limit - len(self.codes)
        self.codes += payload[:room]
        if len(self.codes) >= self.limit:
            self.on = False
            self.on_full()

    def pcm(self):
        return g711.decode(bytes(self.codes), self.payload_type)


# ---------------------------------------------------------------- the message

def voicemail_mail(domain, user, caller, when, pcm):
    """
    The mail for one voicemail: To the user, From the caller (a known user's
    address, else voicemail@domain with the caller's name), the header
    `X-Allworx-Voicemail: yes`, a text part and the WAV attachment.
    `caller` is (display name, number or URI); `when` POSIX seconds.
    """
    name, number = caller
    seconds = duration(pcm)
    msg = email.message.EmailMessage()
    label = "%s (%s)" % (name, number) if name and name != number else (number or "unknown caller")
    msg["From"] = email.utils.formataddr((label, "voicemail@%s" % domain))
    msg["To"] = "%s@%s" % (user, domain)
    msg["Subject"] = "Voicemail from %s, %d:%02d" % (label, seconds // 60, seconds % 60)
    msg["Date"] = email.utils.formatdate(when, localtime=False)
    msg["Message-ID"] = email.utils.make_msgid("voicemail", domain)
    msg["X-Allworx-Voicemail"] = "yes"
    msg["X-Allworx-Caller"] = number or "unknown"
    msg["X-Allworx-Duration"] = "%.1f" % seconds
    msg.set_content("Voicemail for %s\n\nFrom: %s\nReceived: %s\nLength: %.1f seconds\n\n"
                    "The recording is attached (WAV, 8 kHz).\n"
                    % (user, label, email.utils.formatdate(when, localtime=False), seconds))
    stamp = email.utils.formatdate(when, localtime=False)
    del stamp
    msg.add_attachment(to_wav(pcm), maintype="audio", subtype="wav",
                       filename="voicemail-%d.wav" % int(when))
    return msg.as_bytes(policy=email.policy.SMTP)


def wav_of(message_bytes):
    """The first audio/wav attachment of a mail, or None."""
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(message_bytes)
    for part in msg.walk():
        if part.get_content_type() in ("audio/wav", "audio/x-wav", "audio/wave"):
            return part.get_payload(decode=True)
    return None


class Mailbox:
    """One user's voicemail as the phone menu sees it, through IMailStore."""

    def __init__(self, store, user, greeting_dir):
        self.store = store
        self.user = user
        self.greeting_dir = greeting_dir

    def messages(self):
        """uids of voicemail: new ones oldest first, then heard ones oldest first."""
        infos = [m for m in self.store.list_messages(self.user) if m.voicemail]
        return [m.uid for m in infos if not m.seen] + [m.uid for m in infos if m.seen]

    def audio(self, uid):
        """The PCM of a message; None if it is gone or has no audio."""
        try:
            wav = wav_of(self.store.read_message(self.user, uid))
            return from_wav(wav) if wav else None
        except (KeyError, WavError):
            return None

    def delete(self, uid):
        try:
            self.store.delete_message(self.user, uid)
        except KeyError:
            pass

    def save(self, uid):
        try:
            self.store.mark_seen(self.user, uid)
        except KeyError:
            pass

    def greeting_path(self):
        return greeting_path(self.greeting_dir, self.user)


def greeting_path(greeting_dir, user):
    return os.path.join(greeting_dir, user, "greeting.wav")


def load_greeting(greeting_dir, user):
    """A user's recorded greeting (PCM) or None."""
    try:
        with open(greeting_path(greeting_dir, user), "rb") as f:
            return from_wav(f.read())
    except (OSError, WavError):
        return None


def store_greeting(greeting_dir, user, pcm):
    """Write a greeting atomically (blocking: run it in a thread)."""
    path = greeting_path(greeting_dir, user)
    ensure_directory(os.path.dirname(path))
    write_atomically(path, to_wav(pcm), mode=0o600)


# ---------------------------------------------------------------- the menu

def _check_pin_now(stored, entered):
    """check_pin without a thread: for PINs stored as digits (and tests)."""
    return verify_pin(stored, entered)


class VoicemailMenu:
    """
    The phone menu of SPEC 8. `io` plays and records:
    `io.play(segments)` (PCM list; the caller calls `played()` when done),
    `io.stop_playing()`, `io.record()`, `io.stop_recording() -> pcm`,
    `io.save_greeting(user, pcm)`, `io.hang_up()`.
    `prompts(name)` gives prompt audio; `find_user(extension)` -> (user
    name, stored pin) or None; `mailbox(user)` -> Mailbox;
    `check_pin(stored, entered)` -> Deferred firing True when the keyed PIN
    matches the stored one (its hash: the caller runs that in a thread).
    Keys pressed while a PIN is checked are dropped; `stop()` when the call
    ends, so a check that finishes after it does nothing.
    """

    _m = MethodicalMachine()

    def __init__(self, io, prompts, find_user, mailbox, check_pin=None):
        self.io = io
        self.prompts = prompts
        self.find_user = find_user
        self.mailbox_of = mailbox
        self.check_pin = check_pin or _check_pin_now
        self.checking = False
        self.stopped = False
        self.user = None
        self.pin = None
        self.digits = ""
        self.tries = 0
        self.box = None
        self.uids = []
        self.index = 0
        self.phase = None       # what is playing in `listening`: "message" | "prompt"

    # ------------------------------------------------------------ states

    @_m.state(initial=True)
    def idle(self):
        "Before the call is answered."

    @_m.state()
    def extension(self):
        "Collecting the extension (caller not known), ended by #."

    @_m.state()
    def pin_entry(self):
        "Collecting the PIN, ended by #."

    @_m.state()
    def listening(self):
        "Playing messages and options; keys act on the current message."

    @_m.state()
    def greeting(self):
        "Recording a new greeting until #."

    @_m.state()
    def finished(self):
        "Saying goodbye; the call ends when it has played."

    # ------------------------------------------------------------ inputs

    @_m.input()
    def start_known(self, user):
        "The call comes from a registered phone of `user`."

    @_m.input()
    def start_unknown(self):
        "The caller is not a known phone."

    @_m.input()
    def key(self, digit):
        "A DTMF key."

    @_m.input()
    def played(self):
        "What was playing has finished."

    @_m.input()
    def _user_found(self):
        "The extension names a user with a PIN."

    @_m.input()
    def _pin_accepted(self):
        "The PIN matched."

    @_m.input()
    def _give_up(self):
        "Too many wrong tries."

    @_m.input()
    def _record_greeting(self):
        "0 was pressed."

    @_m.input()
    def _greeting_done(self):
        "# ended the greeting."

    # ------------------------------------------------------------ outputs

    @_m.output()
    def _know_user(self, user):
        found = self.find_user(user, by_name=True)
        self.user, self.pin = (found if found else (user, None))
        self.digits = ""
        self.io.play([self.prompts("enter_pin")])

    @_m.output()
    def _ask_extension(self):
        self.digits = ""
        self.io.play([self.prompts("enter_extension")])

    @_m.output()
    def _collect_extension(self, digit):
        if digit != "#":
            self.digits = (self.digits + digit)[-12:]
            return
        found = self.find_user(self.digits, by_name=False)
        self.digits = ""
        if found is None:
            self._wrong()
            if self.tries < PIN_TRIES:
                self.io.play([self.prompts("bad_pin"), self.prompts("enter_extension")])
            return
        self.user, self.pin = found
        self._user_found()

    @_m.output()
    def _ask_pin(self):
        self.digits = ""
        self.io.play([self.prompts("enter_pin")])

    @_m.output()
    def _collect_pin(self, digit):
        if self.checking:
            return
        if digit != "#":
            self.digits = (self.digits + digit)[-12:]
            return
        entered, self.digits = self.digits, ""
        if not self.pin:
            self._pin_checked(False)        # no PIN set: never logs in
            return
        self.checking = True
        d = defer.maybeDeferred(self.check_pin, self.pin, entered)
        d.addErrback(self._check_failed)
        d.addCallback(self._pin_checked)

    def _check_failed(self, failure):
        log.failure("voicemail: checking the PIN of {user} failed", failure, user=self.user)
        return False

    def _pin_checked(self, ok):
        self.checking = False
        if self.stopped:
            return
        if ok:
            log.info("voicemail: {user} logged in by phone", user=self.user)
            self._pin_accepted()
            return
        log.info("voicemail: wrong PIN for {user}", user=self.user)
        self._wrong()
        if self.tries < PIN_TRIES:
            self.io.play([self.prompts("bad_pin"), self.prompts("enter_pin")])

    def stop(self):
        """The call ended: a PIN check still running is ignored when it ends."""
        self.stopped = True

    def _wrong(self):
        self.tries += 1
        if self.tries >= PIN_TRIES:
            self._give_up()

    @_m.output()
    def _open_mailbox(self):
        self.box = self.mailbox_of(self.user)
        self.uids = self.box.messages()
        self.index = 0
        self._play_current([])

    def _play_current(self, before):
        while self.index < len(self.uids):
            audio = self.box.audio(self.uids[self.index])
            if audio is not None:
                self.phase = "message"
                self.io.play(before + [audio])
                return
            self.index += 1
        self.phase = "prompt"
        self.io.play(before + [self.prompts("no_messages")])

    @_m.output()
    def _listening_key(self, digit):
        have = self.index < len(self.uids)
        if digit == "0":
            self._record_greeting()
        elif digit == "*":
            self.phase = "prompt"
            self.io.play([self.prompts("options")])
        elif digit == "5" and have:
            self._play_current([])
        elif digit == "7" and have:
            self.box.delete(self.uids[self.index])
            self.index += 1
            self._play_current([self.prompts("deleted")])
        elif digit == "9" and have:
            self.box.save(self.uids[self.index])
            self.index += 1
            self._play_current([self.prompts("saved")])
        elif digit == "6" and have:
            self.index += 1
            self._play_current([])

    @_m.output()
    def _after_playing(self):
        if self.phase == "message":
            self.phase = "prompt"
            self.io.play([self.prompts("options")])

    @_m.output()
    def _start_greeting(self):
        self.io.play([self.prompts("record_greeting"), beep()])
        self.io.record()

    @_m.output()
    def _greeting_key(self, digit):
        if digit == "#":
            self._greeting_done()

    @_m.output()
    def _save_greeting(self):
        pcm = self.io.stop_recording()
        self.io.save_greeting(self.user, pcm)
        self.phase = "prompt"
        self.io.play([self.prompts("greeting_saved"), self.prompts("options")])

    @_m.output()
    def _say_goodbye(self):
        self.io.play([self.prompts("goodbye")])

    @_m.output()
    def _hang_up(self):
        self.io.hang_up()

    # ------------------------------------------------------------ transitions

    idle.upon(start_known, enter=pin_entry, outputs=[_know_user])
    idle.upon(start_unknown, enter=extension, outputs=[_ask_extension])
    idle.upon(key, enter=idle, outputs=[])
    idle.upon(played, enter=idle, outputs=[])
    extension.upon(key, enter=extension, outputs=[_collect_extension])
    extension.upon(played, enter=extension, outputs=[])
    extension.upon(_user_found, enter=pin_entry, outputs=[_ask_pin])
    extension.upon(_give_up, enter=finished, outputs=[_say_goodbye])
    pin_entry.upon(key, enter=pin_entry, outputs=[_collect_pin])
    pin_entry.upon(played, enter=pin_entry, outputs=[])
    pin_entry.upon(_pin_accepted, enter=listening, outputs=[_open_mailbox])
    pin_entry.upon(_give_up, enter=finished, outputs=[_say_goodbye])
    listening.upon(key, enter=listening, outputs=[_listening_key])
    listening.upon(played, enter=listening, outputs=[_after_playing])
    listening.upon(_record_greeting, enter=greeting, outputs=[_start_greeting])
    greeting.upon(key, enter=greeting, outputs=[_greeting_key])
    greeting.upon(played, enter=greeting, outputs=[])
    greeting.upon(_greeting_done, enter=listening, outputs=[_save_greeting])
    finished.upon(key, enter=finished, outputs=[])
    finished.upon(played, enter=finished, outputs=[_hang_up])
