# -*- test-case-name: allworx.tests.mail.test_smtp -*-
"""
The SMTP mail transaction (RFC 5321 3.3) as a state machine (automat):

    idle --MAIL--> has_sender --RCPT--> has_recipients --DATA--> receiving
      ^                                                              |
      +------------------- end of data, or RSET / HELO --------------+

A command out of sequence gets the reply RFC 5321 asks for (503, or 554 for
DATA without a recipient); `reset` returns to idle from anywhere. Policy
(who may send to whom) is decided before an input is given; this machine only
keeps the order and the envelope.
"""

from automat import MethodicalMachine

from allworx.protocols.mail.smtpwire import Reply


class MailTransaction:
    """The envelope of the message being received: sender, recipients, state."""

    _machine = MethodicalMachine()

    def __init__(self):
        self.sender = None
        self.recipients = []
        self.body_type = None

    # ------------------------------------------------------------ states

    @_machine.state(initial=True)
    def idle(self):
        "No transaction: MAIL starts one."

    @_machine.state()
    def has_sender(self):
        "MAIL accepted; waiting for RCPT."

    @_machine.state()
    def has_recipients(self):
        "At least one RCPT accepted; more RCPT or DATA."

    @_machine.state()
    def receiving(self):
        "DATA accepted; the message is arriving."

    # ------------------------------------------------------------ inputs

    @_machine.input()
    def mail(self, sender, body_type):
        "MAIL FROM was accepted by policy."

    @_machine.input()
    def rcpt(self, address):
        "RCPT TO was accepted by policy."

    @_machine.input()
    def data(self):
        "The client sent DATA."

    @_machine.input()
    def message_ended(self):
        "The end of the message arrived; returns (sender, recipients)."

    @_machine.input()
    def reset(self):
        "RSET, HELO/EHLO, STARTTLS: forget the transaction."

    # ------------------------------------------------------------ outputs

    @_machine.output()
    def _start(self, sender, body_type):
        self.sender, self.recipients, self.body_type = sender, [], body_type

    @_machine.output()
    def _add(self, address):
        if address.lower() not in (r.lower() for r in self.recipients):
            self.recipients.append(address)

    @_machine.output()
    def _take(self):
        envelope = (self.sender, self.recipients)
        self._forget()
        return envelope

    @_machine.output()
    def _clear(self):
        self._forget()

    def _forget(self):
        self.sender, self.recipients, self.body_type = None, [], None

    # Refusals, one per input signature (automat matches them exactly).

    @_machine.output()
    def _nested(self, sender, body_type):
        raise Reply(503, "5.5.1", "nested MAIL command")

    @_machine.output()
    def _rcpt_needs_mail(self, address):
        raise Reply(503, "5.5.1", "need MAIL before RCPT")

    @_machine.output()
    def _data_needs_mail(self):
        raise Reply(503, "5.5.1", "need MAIL before DATA")

    @_machine.output()
    def _data_needs_rcpt(self):
        raise Reply(554, "5.5.1", "no valid recipients")

    @_machine.output()
    def _not_receiving(self):
        raise Reply(503, "5.5.1", "no message is being received")

    @_machine.output()
    def _mail_in_data(self, sender, body_type):
        raise Reply(503, "5.5.1", "a message is being received")

    @_machine.output()
    def _rcpt_in_data(self, address):
        raise Reply(503, "5.5.1", "a message is being received")

    @_machine.output()
    def _data_in_data(self):
        raise Reply(503, "5.5.1", "a message is being received")

    # ------------------------------------------------------------ transitions

    idle.upon(mail, enter=has_sender, outputs=[_start])
    idle.upon(rcpt, enter=idle, outputs=[_rcpt_needs_mail])
    idle.upon(data, enter=idle, outputs=[_data_needs_mail])
    idle.upon(message_ended, enter=idle, outputs=[_not_receiving])
    idle.upon(reset, enter=idle, outputs=[_clear])

    has_sender.upon(mail, enter=has_sender, outputs=[_nested])
    has_sender.upon(rcpt, enter=has_recipients, outputs=[_add])
    has_sender.upon(data, enter=has_sender, outputs=[_data_needs_rcpt])
    has_sender.upon(message_ended, enter=has_sender, outputs=[_not_receiving])
    has_sender.upon(reset, enter=idle, outputs=[_clear])

    has_recipients.upon(mail, enter=has_recipients, outputs=[_nested])
    has_recipients.upon(rcpt, enter=has_recipients, outputs=[_add])
    has_recipients.upon(data, enter=receiving, outputs=[])
    has_recipients.upon(message_ended, enter=has_recipients, outputs=[_not_receiving])
    has_recipients.upon(reset, enter=idle, outputs=[_clear])

    receiving.upon(mail, enter=receiving, outputs=[_mail_in_data])
    receiving.upon(rcpt, enter=receiving, outputs=[_rcpt_in_data])
    receiving.upon(data, enter=receiving, outputs=[_data_in_data])
    receiving.upon(message_ended, enter=idle, outputs=[_take])
    receiving.upon(reset, enter=idle, outputs=[_clear])

    # ------------------------------------------------------------ questions

    @property
    def open(self):
        """True between MAIL and the end of the message (AUTH is refused then)."""
        return self.sender is not None
