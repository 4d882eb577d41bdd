"""
VRFY must not tell who exists (issue 21, item 6): every name, user, alias or
nobody, with or without the domain, gets the same answer, from the WAN and
from the LAN alike.
"""

from twisted.trial import unittest

from allworx.tests.mail.test_smtp import LAN, WAN, Session

NAMES = [b"alice", b"alice@example.com", b"admin", b"carol", b"team", b"postmaster",
         b"nobody", b"nobody@example.com", b"Alice Archer", b"<alice@example.com>",
         b"someone@elsewhere.example", b""]


class VrfyTests(unittest.TestCase):

    def answers(self, peer):
        s = Session(self, peer=peer)
        s.replies()
        s.send(b"EHLO prober.example\r\n")
        s.replies()
        out = {}
        for name in NAMES:
            s.send(b"VRFY " + name + b"\r\n")
            out[name] = s.replies()
        return out

    def test_every_name_is_answered_alike_from_the_wan_and_the_lan(self):
        for peer in (WAN, LAN):
            answers = self.answers(peer)
            self.assertEqual(answers[b"alice"], ["252 2.5.2 cannot verify, but will accept and try"])
            for name, lines in answers.items():
                self.assertEqual(lines, answers[b"alice"], "VRFY %r from %s" % (name, peer))
