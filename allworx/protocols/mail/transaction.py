# -*- test-case-name: allworx.tests.mail.test_smtp -*-
"""
The SMTP mail transaction (RFC 5321 3.3) as a state machine:

    idle --MAIL--> has_sender --RCPT--> has_recipients --DATA--> receiving
      ^                                                              |
      +------------------- end of data, or RSET / HELO --------------+

A command out of sequence gets the reply RFC 5321 asks for (503, or 554 for
DATA without a recipient); `reset` returns to idle from anywhere. Policy
(who may send to whom) is decided before an input is given; this machine only
keeps the order and the envelope.

Every command of every message passes through here, so the machine is a
plain attribute and a few comparisons (an automat machine built a wrapper
function on each input: about a tenth of the SMTP server's own time per
message). `TRANSITIONS` spells out the whole table; the tests check the
methods against it.
"""

from allworx.protocols.mail.smtpwire import Reply

IDLE, HAS_SENDER, HAS_RECIPIENTS, RECEIVING = "idle", "has_sender", "has_recipients", "receiving"

_NEED_MAIL_RCPT = (503, "5.5.1", "need MAIL before RCPT")
_NEED_MAIL_DATA = (503, "5.5.1", "need MAIL before DATA")
_NEED_RCPT = (554, "5.5.1", "no valid recipients")
_NESTED = (503, "5.5.1", "nested MAIL command")
_NOT_RECEIVING = (503, "5.5.1", "no message is being received")
_IN_DATA = (503, "5.5.1", "a message is being received")

# (state, input) -> the state entered, or the refusal (code, status, text)
# given with the state unchanged. `reset` enters IDLE from every state.
TRANSITIONS = {
    (IDLE, "mail"): HAS_SENDER,
    (IDLE, "rcpt"): _NEED_MAIL_RCPT,
    (IDLE, "data"): _NEED_MAIL_DATA,
    (IDLE, "message_ended"): _NOT_RECEIVING,
    (HAS_SENDER, "mail"): _NESTED,
    (HAS_SENDER, "rcpt"): HAS_RECIPIENTS,
    (HAS_SENDER, "data"): _NEED_RCPT,
    (HAS_SENDER, "message_ended"): _NOT_RECEIVING,
    (HAS_RECIPIENTS, "mail"): _NESTED,
    (HAS_RECIPIENTS, "rcpt"): HAS_RECIPIENTS,
    (HAS_RECIPIENTS, "data"): RECEIVING,
    (HAS_RECIPIENTS, "message_ended"): _NOT_RECEIVING,
    (RECEIVING, "mail"): _IN_DATA,
    (RECEIVING, "rcpt"): _IN_DATA,
    (RECEIVING, "data"): _IN_DATA,
    (RECEIVING, "message_ended"): IDLE,
}


class MailTransaction:
    """The envelope of the message being received: sender, recipients, state."""

    __slots__ = ("state", "sender", "recipients", "body_type", "_seen")

    def __init__(self):
        self.state = IDLE
        self._forget()

    def _step(self, name):
        target = TRANSITIONS[self.state, name]
        if type(target) is tuple:
            raise Reply(*target)
        self.state = target

    # ------------------------------------------------------------ inputs

    def mail(self, sender, body_type):
        """MAIL FROM was accepted by policy."""
        self._step("mail")
        self.sender, self.recipients, self.body_type, self._seen = sender, [], body_type, set()

    def rcpt(self, address):
        """RCPT TO was accepted by policy (a second RCPT of the same address, any case, is one)."""
        self._step("rcpt")
        key = address.lower()
        if key not in self._seen:
            self._seen.add(key)
            self.recipients.append(address)

    def data(self):
        """The client sent DATA."""
        self._step("data")

    def message_ended(self):
        """The end of the message arrived: returns [(sender, recipients)] and forgets them."""
        self._step("message_ended")
        envelope = (self.sender, self.recipients)
        self._forget()
        return [envelope]

    def reset(self):
        """RSET, HELO/EHLO, STARTTLS: forget the transaction."""
        self.state = IDLE
        self._forget()

    def _forget(self):
        self.sender, self.recipients, self.body_type, self._seen = None, [], None, set()

    # ------------------------------------------------------------ questions

    @property
    def open(self):
        """True between MAIL and the end of the message (AUTH is refused then)."""
        return self.sender is not None
