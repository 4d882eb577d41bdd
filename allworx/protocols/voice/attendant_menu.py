# -*- test-case-name: allworx.tests.voice.test_attendant_menu -*-
"""
The auto attendant's menu (SPEC 15 `[attendant]`) as an automat machine.

It has no sockets: the call (allworx.protocols.sip.attendant) gives it the
keys the caller presses and tells it when a prompt has played, and the menu
answers with what to play and where the caller goes (`io.route(target)`,
a TARGET of the config, or None when there is nowhere to go).

- Outside `hours` (the server's local time) the call goes straight to
  `after_hours` when one is set; otherwise the greeting plays.
- A key pressed during the greeting stops it. A key with a `key_N` TARGET
  routes at once; `0` reaches the operator unless `key_0` is set.
- Other digits that begin a number (an extension, a group's or an
  attendant's) are collected, each within `DIGIT_TIMEOUT` of the last: they
  route as soon as they form a number no longer number begins with, or when
  the time is up (or `#` is pressed) on a number.
- No key within `timeout` after the greeting: `fallback`, else the operator.
- A number nobody has: "not a valid number" and the greeting again, at most
  `REPEATS` times; the next goes to the fallback.
- `*` plays the greeting again.
- When the transfer fails (`transfer_failed()`): "cannot transfer", then
  the call ends.
"""

from automat import MethodicalMachine

from allworx.config.values import Target

DIGIT_TIMEOUT = 3.0     # seconds between the digits of a number
REPEATS = 2             # times the menu plays again after a number nobody has

# The attendant's own prompts: (text for espeak-ng, tone pattern without it).
PROMPTS = {
    "menu": "Please enter the extension you are calling, or press 0 for the operator.",
    "invalid": "That is not a valid number.",
    "transfer": "Please hold.",
    "cannot_transfer": "Sorry, the call cannot be transferred. Goodbye.",
}
TONES = {
    "menu": [(480, 200), (0, 100), (620, 200), (0, 300)],
    "invalid": [(300, 250), (0, 100), (300, 250), (0, 200)],
    "transfer": [(440, 150), (0, 150)],
    "cannot_transfer": [(300, 300), (200, 400), (0, 200)],
}


def greeting_tones():
    """The tone pattern of a greeting that is not spoken (yet)."""
    return [(523, 150), (659, 150), (784, 200), (0, 300)]


class AttendantMenu:
    """
    One caller in an attendant's menu. `io` has `play(segments)` (PCM list;
    `played()` is called when it has played out), `stop_playing()`,
    `route(target)` and `hang_up()`. `attendant` is the config's
    `Attendant`; `greeting` its PCM (None: the "menu" prompt); `prompts(name)`
    gives the PCM of the prompts above; `numbers` maps the digits one may dial
    to a Target; `operator` is the operator's extension (or None); `now()`
    gives (weekday, minute of the day) of the server's local time.
    """

    _m = MethodicalMachine()

    def __init__(self, io, clock, attendant, greeting, prompts, numbers, operator, now):
        self.io = io
        self.clock = clock
        self.attendant = attendant
        self.greeting = greeting
        self.prompts = prompts
        self.numbers = numbers
        self.operator = operator
        self.now = now
        self.keys = attendant.menu()
        self.digits = ""
        self.invalid = 0
        self.timer = None
        self.stopped = False
        self.target = None          # where the caller went

    # ------------------------------------------------------------ states

    @_m.state(initial=True)
    def idle(self):
        "Before the call is established."

    @_m.state()
    def opening(self):
        "Deciding between the hours' TARGET and the greeting."

    @_m.state()
    def greeting_playing(self):
        "The greeting plays; a key stops it."

    @_m.state()
    def waiting(self):
        "The greeting has played; waiting for a key until the timeout."

    @_m.state()
    def collecting(self):
        "Digits of a number, each within DIGIT_TIMEOUT."

    @_m.state()
    def routed(self):
        "The caller is being transferred."

    @_m.state()
    def failed(self):
        "The transfer failed: saying so; the call ends when it has played."

    # ------------------------------------------------------------ inputs

    @_m.input()
    def start(self):
        "The call is established."

    @_m.input()
    def key(self, digit):
        "A DTMF key."

    @_m.input()
    def played(self):
        "What was playing has finished."

    @_m.input()
    def transfer_failed(self):
        "The caller could not be transferred."

    @_m.input()
    def _go(self, target):
        "Send the caller to `target`."

    @_m.input()
    def _again(self, before):
        "Play the greeting (again), after the prompts `before`."

    @_m.input()
    def _collect(self, digit):
        "The first digit of a number."

    @_m.input()
    def _no_key(self):
        "Nothing pressed within the timeout after the greeting."

    @_m.input()
    def _digits_over(self):
        "The time for the next digit is up."

    # ------------------------------------------------------------ outputs

    @_m.output()
    def _open(self):
        a = self.attendant
        if a.hours and a.after_hours is not None and not a.hours.covers(*self.now()):
            self._go(a.after_hours)
        else:
            self._again([])

    @_m.output()
    def _play_greeting(self, before):
        self._cancel()
        self.digits = ""
        self.io.play(list(before) + [self.greeting or self.prompts("menu")])

    @_m.output()
    def _wait_for_key(self):
        self._later(self.attendant.timeout, self._no_key)

    @_m.output()
    def _menu_key(self, digit):
        self._cancel()
        if digit in self.keys:
            self._go(self.keys[digit])
        elif digit == "0":
            self._go(self._operator())
        elif digit == "*":
            self._again([])
        elif digit.isdigit() and self._begins(digit):
            self._collect(digit)
        elif digit.isdigit():
            self._nobody()

    @_m.output()
    def _first_digit(self, digit):
        self.io.stop_playing()
        self.digits = digit
        self._next_digit()

    @_m.output()
    def _digit(self, digit):
        self._cancel()
        if digit == "#":
            return self._number_over()
        if digit == "*":
            return self._again([])
        if not digit.isdigit():
            return self._next_digit()
        self.digits += digit
        self._next_digit()

    @_m.output()
    def _digits_timed_out(self):
        self.timer = None
        self._number_over()

    @_m.output()
    def _fallback(self):
        self.timer = None
        fallback = self.attendant.fallback
        self._go(fallback if fallback is not None else self._operator())

    @_m.output()
    def _route(self, target):
        self._cancel()
        self.target = target
        self.io.play([self.prompts("transfer")])
        self.io.route(target)

    @_m.output()
    def _say_cannot(self):
        self.io.play([self.prompts("cannot_transfer")])

    @_m.output()
    def _hang_up(self):
        self.io.hang_up()

    # ------------------------------------------------------------ helpers

    def _operator(self):
        return Target("extension", self.operator) if self.operator else None

    def _begins(self, digits):
        return any(n.startswith(digits) for n in self.numbers)

    def _next_digit(self):
        """Route a number no longer number begins with; refuse digits no number begins with."""
        digits = self.digits
        longer = any(n.startswith(digits) and n != digits for n in self.numbers)
        if digits in self.numbers and not longer:
            return self._go(self.numbers[digits])
        if not longer:
            return self._nobody()
        self._later(DIGIT_TIMEOUT, self._digits_over)

    def _number_over(self):
        if self.digits in self.numbers:
            return self._go(self.numbers[self.digits])
        self._nobody()

    def _nobody(self):
        """Digits that are nobody's number: say so and play the menu again, a few times."""
        self.io.stop_playing()
        self.invalid += 1
        if self.invalid > REPEATS:
            fallback = self.attendant.fallback
            return self._go(fallback if fallback is not None else self._operator())
        self._again([self.prompts("invalid")])

    def _later(self, seconds, then):
        self._cancel()

        def fire():
            self.timer = None
            if not self.stopped:
                then()
        self.timer = self.clock.callLater(seconds, fire)

    def _cancel(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def stop(self):
        """The call ended: no timer fires any more."""
        self.stopped = True
        self._cancel()

    # ------------------------------------------------------------ transitions

    idle.upon(start, enter=opening, outputs=[_open])
    idle.upon(key, enter=idle, outputs=[])
    idle.upon(played, enter=idle, outputs=[])
    opening.upon(_go, enter=routed, outputs=[_route])
    opening.upon(_again, enter=greeting_playing, outputs=[_play_greeting])
    greeting_playing.upon(key, enter=greeting_playing, outputs=[_menu_key])
    greeting_playing.upon(played, enter=waiting, outputs=[_wait_for_key])
    greeting_playing.upon(_go, enter=routed, outputs=[_route])
    greeting_playing.upon(_again, enter=greeting_playing, outputs=[_play_greeting])
    greeting_playing.upon(_collect, enter=collecting, outputs=[_first_digit])
    waiting.upon(key, enter=waiting, outputs=[_menu_key])
    waiting.upon(played, enter=waiting, outputs=[])
    waiting.upon(_no_key, enter=waiting, outputs=[_fallback])
    waiting.upon(_go, enter=routed, outputs=[_route])
    waiting.upon(_again, enter=greeting_playing, outputs=[_play_greeting])
    waiting.upon(_collect, enter=collecting, outputs=[_first_digit])
    collecting.upon(key, enter=collecting, outputs=[_digit])
    collecting.upon(played, enter=collecting, outputs=[])
    collecting.upon(_digits_over, enter=collecting, outputs=[_digits_timed_out])
    collecting.upon(_go, enter=routed, outputs=[_route])
    collecting.upon(_again, enter=greeting_playing, outputs=[_play_greeting])
    routed.upon(key, enter=routed, outputs=[])
    routed.upon(played, enter=routed, outputs=[])
    routed.upon(transfer_failed, enter=failed, outputs=[_say_cannot])
    failed.upon(key, enter=failed, outputs=[])
    failed.upon(played, enter=failed, outputs=[_hang_up])
    failed.upon(transfer_failed, enter=failed, outputs=[])
