"""A sender's X-Allworx-Voicemail header is dropped on arrival: only the server marks voicemail."""

from twisted.trial import unittest

from allworx.protocols.mail.smtpwire import drop_server_headers
from allworx.protocols.mail.store import is_voicemail


class ServerOnlyHeaderTests(unittest.TestCase):

    def test_dropped_with_its_continuation(self):
        message = (b"From: x@y\r\nX-Allworx-Voicemail: yes\r\n  folded\r\nSubject: hi\r\n\r\n"
                   b"X-Allworx-Voicemail: yes in the body stays\r\n")
        out = drop_server_headers(message)
        self.assertEqual(out, b"From: x@y\r\nSubject: hi\r\n\r\nX-Allworx-Voicemail: yes in the body stays\r\n")
        self.assertFalse(is_voicemail(out.replace(b"\r\n", b"\n")))

    def test_any_case_and_lf_only(self):
        out = drop_server_headers(b"x-allworx-VOICEMAIL :yes\nSubject: a\n\nbody\n")
        self.assertEqual(out, b"Subject: a\n\nbody\n")

    def test_untouched_without_it(self):
        message = b"Subject: a\r\nX-Other: 1\r\n\r\nbody"
        self.assertIs(drop_server_headers(message), message)


class ArrivalTests(unittest.TestCase):
    """Over SMTP, from the WAN or the LAN, the header never reaches the store."""

    def test_a_senders_voicemail_header_is_dropped_on_arrival(self):
        from allworx.tests.mail.test_smtp import LAN, WAN, Session, mail_transaction
        for peer in (WAN, LAN):
            session = Session(self, peer=peer)
            session.send(mail_transaction(body=b"X-Allworx-Voicemail: yes\r\nSubject: fake\r\n\r\nhi\r\n"))
            [(recipients, message, sender, _)] = session.delivery.calls
            self.assertNotIn(b"X-Allworx-Voicemail", message)
            self.assertIn(b"Subject: fake", message)
