"""Tests of the SIP transaction timers (RFC 3261 17) on task.Clock."""

from twisted.internet import task
from twisted.trial import unittest

from allworx.protocols.sip.message import make_response, parse
from allworx.protocols.sip.transaction import T1, T2, T4, ClientTransaction, ServerTransaction


def request(method):
    return parse(("%s sip:102@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.2.254;branch=z9hG4bKt\r\n"
                  "From: <sip:101@example.com>;tag=a\r\nTo: <sip:102@example.com>\r\nCall-ID: x\r\n"
                  "CSeq: 1 %s\r\nContent-Length: 0\r\n\r\n" % (method, method)).encode())


class ClientTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.sent = []
        self.responses = []
        self.timeouts = []

    def make(self, method, reliable=False):
        ct = ClientTransaction(request(method), self.sent.append, self.clock, reliable,
                               on_response=self.responses.append,
                               on_timeout=lambda: self.timeouts.append(True))
        ct.start()
        return ct

    def test_timer_a_doubles_and_b_times_out(self):
        ct = self.make("INVITE")
        times = []
        while not self.timeouts:
            before = len(self.sent)
            self.clock.advance(0.25)
            if len(self.sent) > before:
                times.append(self.clock.seconds())
        self.assertEqual(times[:4], [0.5, 1.5, 3.5, 7.5])
        self.assertEqual(self.clock.seconds(), 64 * T1)
        self.assertEqual(ct.state, "terminated")

    def test_provisional_stops_a_and_non_2xx_is_acked(self):
        ct = self.make("INVITE")
        ct.receive(make_response(ct.request, 180, to_tag="b"))
        self.clock.advance(10)
        self.assertEqual(len(self.sent), 1)
        final = make_response(ct.request, 486, to_tag="b")
        ct.receive(final)
        self.assertEqual(self.sent[-1].method, "ACK")
        self.assertEqual(self.sent[-1].to_tag, "b")
        ct.receive(final)                       # retransmitted final: ACK again
        self.assertEqual([m.method for m in self.sent[1:]], ["ACK", "ACK"])
        self.assertEqual([r.code for r in self.responses], [180, 486])
        self.clock.advance(32)                  # timer D
        self.assertEqual(ct.state, "terminated")

    def test_2xx_ends_the_invite_transaction(self):
        ct = self.make("INVITE")
        ct.receive(make_response(ct.request, 200, to_tag="b"))
        self.assertEqual(ct.state, "terminated")
        self.assertEqual(len(self.sent), 1)

    def test_timer_e_caps_at_t2_and_k(self):
        ct = self.make("BYE")
        self.clock.pump([0.5, 1, 2, 4, 4, 4])
        gaps = [4.0, 4.0]
        self.assertEqual(len(self.sent), 7)
        self.assertEqual(T2, gaps[0])
        ct.receive(make_response(ct.request, 200))
        self.assertEqual(ct.state, "completed")
        self.clock.advance(T4)
        self.assertEqual(ct.state, "terminated")
        self.assertEqual(self.timeouts, [])

    def test_reliable_transport_does_not_retransmit(self):
        self.make("OPTIONS", reliable=True)
        self.clock.advance(31)
        self.assertEqual(len(self.sent), 1)
        self.clock.advance(1)
        self.assertEqual(self.timeouts, [True])


class ServerTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.sent = []

    def test_invite_non_2xx_timer_g_until_ack_then_i(self):
        st = ServerTransaction(request("INVITE"), self.sent.append, self.clock)
        st.respond_code(100)
        st.retransmission()
        self.assertEqual([m.code for m in self.sent], [100, 100])
        st.respond_code(486, to_tag="z")
        self.clock.pump([0.5, 1, 2])
        self.assertEqual([m.code for m in self.sent], [100, 100, 486, 486, 486, 486])
        acked = []
        st.on_ack = lambda: acked.append(True)
        st.ack()
        self.assertEqual(st.state, "confirmed")
        self.clock.advance(10)
        self.assertEqual(len(self.sent), 6)
        self.assertEqual(acked, [True])
        self.assertEqual(st.state, "terminated")

    def test_invite_timer_h_without_ack(self):
        ended = []
        st = ServerTransaction(request("INVITE"), self.sent.append, self.clock,
                               on_terminated=lambda: ended.append(True))
        st.respond_code(404)
        self.clock.advance(64 * T1)
        self.assertEqual(ended, [True])

    def test_non_invite_timer_j(self):
        st = ServerTransaction(request("REGISTER"), self.sent.append, self.clock)
        st.respond_code(200)
        st.retransmission()
        self.assertEqual([m.code for m in self.sent], [200, 200])
        st.respond_code(500)                    # a second final is ignored
        self.assertEqual(len(self.sent), 2)
        self.clock.advance(64 * T1)
        self.assertEqual(st.state, "terminated")

    def test_2xx_to_invite_terminates_at_once(self):
        st = ServerTransaction(request("INVITE"), self.sent.append, self.clock)
        st.respond_code(200, to_tag="q")
        self.assertEqual(st.state, "terminated")
