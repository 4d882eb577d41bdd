"""Tests of calls between extensions: forking, CANCEL, busy, not found, voicemail fallback."""

from twisted.trial import unittest

from allworx.protocols.sip.message import make_response
from allworx.tests.siphelpers import Harness, Phone, offer


class CallTests(unittest.TestCase):

    def setUp(self, mailboxes=True):
        self.h = Harness(self.mktemp(), mailboxes=mailboxes)
        self.alice = Phone(self.h, "101", "192.168.2.11")
        self.bob1 = Phone(self.h, "102", "192.168.2.12")
        self.bob2 = Phone(self.h, "102", "192.168.2.13")
        for p in (self.alice, self.bob1, self.bob2):
            self.assertEqual(p.register().code, 200)
        self.h.take()

    def invite(self, target="102"):
        data = self.alice.request("INVITE", "sip:%s@example.com" % target,
                                  ["Content-Type: application/sdp"], offer())
        return self.alice.send(data)

    def forked(self, out):
        return {dest.host: m for m, dest in out if m.is_request and m.method == "INVITE"}

    def reply(self, request, code, tag):
        """A phone's response to a forked request, as it arrives at the server."""
        resp = make_response(request, code, to_tag=tag)
        if code == 200:
            resp.add("Contact", "<sip:102@%s>" % request.uri.split("@")[1])
        return resp.to_bytes()

    def test_fork_ring_answer_cancels_the_other(self):
        out = self.invite()
        self.assertEqual(out[0][0].code, 100)
        branches = self.forked(out)
        self.assertEqual(set(branches), {"192.168.2.12", "192.168.2.13"})
        b1 = branches["192.168.2.12"]
        self.assertEqual(b1.get("Max-Forwards"), "69")
        self.assertTrue(b1.get("Record-Route").startswith("<sip:192.168.2.254:5060;lr"))
        self.assertEqual(len(b1.vias), 2)
        self.assertEqual(b1.body, offer().encode())
        # Both ring: each 180 is relayed to alice with our Via removed.
        for host, msg in branches.items():
            self.h.receive(self.reply(msg, 180, "r" + host[-2:]), (host, 5060))
        relayed = self.h.take()
        self.assertEqual([m.code for m, _ in relayed], [180, 180])
        self.assertEqual(relayed[0][1].host, "192.168.2.11")
        self.assertEqual(len(relayed[0][0].vias), 1)
        # bob1 answers: alice gets the 200; bob2 gets a CANCEL.
        self.h.receive(self.reply(b1, 200, "r12"), ("192.168.2.12", 5060))
        out = self.h.take()
        kinds = sorted((str(m.code) if not m.is_request else m.method, d.host) for m, d in out)
        self.assertEqual(kinds, [("200", "192.168.2.11"), ("CANCEL", "192.168.2.13")])
        calls = self.h.core.registrar.active_calls()
        self.assertEqual([(c["callee"], c["state"]) for c in calls], [("102", "answered")])
        # The voicemail timer no longer matters.
        self.h.clock.advance(30)
        self.assertFalse(self.h.core.ua.calls)

    def test_in_dialog_ack_and_bye_follow_the_route(self):
        branches = self.forked(self.invite())
        b1 = branches["192.168.2.12"]
        self.h.receive(self.reply(b1, 200, "r12"), ("192.168.2.12", 5060))
        self.h.take()
        for method in ("ACK", "BYE"):
            data = self.alice.request(method, "sip:102@192.168.2.12", ["Route: <sip:192.168.2.254:5060;lr>"],
                                      to_tag="r12", to="<sip:102@example.com>",
                                      cseq=1 if method == "ACK" else 2)
            out = self.alice.send(data)
            self.assertEqual([(m.method, d.host) for m, d in out], [(method, "192.168.2.12")])
            self.assertIsNone(out[0][0].get("Route"))
        bye = out[0][0]
        self.h.receive(make_response(bye, 200).to_bytes(), ("192.168.2.12", 5060))
        back = self.h.take()
        self.assertEqual([(m.code, d.host) for m, d in back], [(200, "192.168.2.11")])
        self.assertEqual(self.h.core.registrar.active_calls(), [])

    def test_caller_cancel(self):
        branches = self.forked(self.invite())
        for host, msg in branches.items():
            self.h.receive(self.reply(msg, 180, "r" + host[-2:]), (host, 5060))
        self.h.take()
        invite = self.alice.request("INVITE", "sip:102@example.com", cseq=1)
        cancel = self.alice.request("CANCEL", "sip:102@example.com", cseq=1,
                                    branch=None)
        # The CANCEL must carry the INVITE's branch: rebuild it from what we sent.
        del invite
        sent_branch = self.h.core.server_tx and [k for k in self.h.core.server_tx if k[3] == "INVITE"][0][0]
        cancel = cancel.replace(cancel.split(b"branch=")[1].split(b";")[0], sent_branch.encode())
        out = self.alice.send(cancel)
        kinds = sorted((str(m.code) if not m.is_request else m.method, m.cseq[1], d.host) for m, d in out)
        self.assertEqual(kinds, [("200", "CANCEL", "192.168.2.11"),
                                 ("CANCEL", "CANCEL", "192.168.2.12"), ("CANCEL", "CANCEL", "192.168.2.13")])
        # The phones end their INVITEs with 487: then alice gets her 487.
        for host, msg in branches.items():
            self.h.receive(self.reply(msg, 487, "r" + host[-2:]), (host, 5060))
        out = self.h.take()
        self.assertEqual(sorted(d.host for m, d in out if m.is_request and m.method == "ACK"),
                         ["192.168.2.12", "192.168.2.13"])
        self.assertEqual([m.code for m, d in out if not m.is_request], [487])
        self.assertEqual(self.h.core.registrar.active_calls(), [])

    def test_caller_cancel_with_a_silent_phone_ends_after_the_guard(self):
        branches = self.forked(self.invite())
        self.h.take()
        key = [k for k in self.h.core.server_tx if k[3] == "INVITE"][0]
        cancel = self.alice.request("CANCEL", "sip:102@example.com", cseq=1)
        cancel = cancel.replace(cancel.split(b"branch=")[1].split(b";")[0], key[0].encode())
        out = self.alice.send(cancel)
        self.assertEqual([m.code for m, d in out if not m.is_request], [200])
        self.assertEqual(len(branches), 2)
        self.h.clock.advance(4)
        self.assertEqual([m.code for m, d in self.h.take() if not m.is_request], [487])

    def test_unknown_number_is_404(self):
        out = self.invite("999")
        self.assertEqual([m.code for m, _ in out], [100, 404])

    def test_busy_everywhere_goes_to_voicemail(self):
        branches = self.forked(self.invite())
        for host, msg in branches.items():
            self.h.receive(self.reply(msg, 486, "r" + host[-2:]), (host, 5060))
        out = self.h.take()
        acks = [d.host for m, d in out if m.is_request and m.method == "ACK"]
        self.assertEqual(sorted(acks), ["192.168.2.12", "192.168.2.13"])
        ok = [m for m, d in out if not m.is_request and m.code == 200]
        self.assertEqual(len(ok), 1)
        self.assertIn(b"m=audio 20000 RTP/AVP 0 101", ok[0].body)

    def test_no_answer_goes_to_voicemail_after_the_timeout(self):
        branches = self.forked(self.invite())
        for host, msg in branches.items():
            self.h.receive(self.reply(msg, 180, "r" + host[-2:]), (host, 5060))
        self.h.take()
        self.h.clock.advance(19)
        self.assertEqual(self.h.take(), [])
        self.h.clock.advance(1)
        out = self.h.take()
        kinds = sorted((str(m.code) if not m.is_request else m.method, d.host) for m, d in out)
        self.assertEqual(kinds, [("200", "192.168.2.11"), ("CANCEL", "192.168.2.12"), ("CANCEL", "192.168.2.13")])

    def test_not_registered_goes_straight_to_voicemail(self):
        out = Phone(self.h, "101", "192.168.2.11").send(
            self.alice.request("INVITE", "sip:103@example.com", ["Content-Type: application/sdp"], offer()))
        self.assertEqual([m.code for m, _ in out], [100, 200])

    def test_dial_by_name(self):
        branches = self.forked(self.invite("bob"))
        self.assertEqual(len(branches), 2)

    def test_invite_from_the_wan_is_never_served(self):
        outsider = Phone(self.h, "101", "198.51.100.10")
        out = outsider.send(outsider.request("INVITE", "sip:102@example.com", body=offer()))
        self.assertEqual([m.code for m, _ in out], [403])
        self.assertEqual(self.h.core.registrar.active_calls(), [])

    def test_max_forwards_and_loops(self):
        data = self.alice.request("INVITE", "sip:102@example.com", body=offer())
        out = self.alice.send(data.replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
        self.assertEqual([m.code for m, _ in out], [483])
        looped = data.replace(b"Max-Forwards: 70",
                              b"Via: SIP/2.0/UDP 192.168.2.254:5060;branch=z9hG4bKawloop\r\nMax-Forwards: 70")
        out = self.alice.send(looped)
        self.assertEqual([m.code for m, _ in out], [482])

    def test_retransmitted_invite_gets_the_last_response(self):
        data = self.alice.request("INVITE", "sip:999@example.com", body=offer())
        first = self.alice.send(data)
        again = self.alice.send(data)
        self.assertEqual([m.code for m, _ in first], [100, 404])
        self.assertEqual([m.code for m, _ in again], [404])

    def test_busy_without_a_mail_store_is_486(self):
        self.setUp(mailboxes=False)
        branches = self.forked(self.invite())
        for host, msg in branches.items():
            self.h.receive(self.reply(msg, 486 if host.endswith("12") else 480, "r" + host[-2:]),
                           (host, 5060))
        out = self.h.take()
        self.assertEqual([m.code for m, d in out if not m.is_request], [486])
        self.assertEqual(self.h.core.registrar.active_calls(), [])

    def test_removed_user_loses_registrations(self):
        self.h.office.delete_record("user", "bob")
        self.h.core.registrar.forget_removed()
        self.assertEqual(self.h.core.registrar.contacts_of("bob"), [])
        self.assertEqual(len(self.h.core.registrar.contacts_of("alice")), 1)


class ForkingPropertyTests(unittest.TestCase):
    """Whatever the phones answer, in whatever order, the caller gets exactly one final answer."""

    from hypothesis import given, settings, strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["192.168.2.12", "192.168.2.13"]),
                              st.sampled_from([180, 183, 200, 486, 480, 603, 500])),
                    max_size=6),
           st.sampled_from([None, 0, 1, 2, 3]),
           st.booleans())
    def test_one_final_answer(self, events, cancel_at, timeout):
        h = Harness(self.mktemp())
        alice = Phone(h, "101", "192.168.2.11")
        for p in (alice, Phone(h, "102", "192.168.2.12"), Phone(h, "102", "192.168.2.13")):
            p.register()
        h.take()
        data = alice.request("INVITE", "sip:102@example.com", ["Content-Type: application/sdp"], offer())
        out = alice.send(data)
        branches = {d.host: m for m, d in out if m.is_request and m.method == "INVITE"}
        finals = [m for m, d in out if not m.is_request and m.code >= 200]
        for i, (host, code) in enumerate(events):
            if cancel_at == i:
                branch = [k for k in h.core.server_tx if k[3] == "INVITE"]
                if branch:
                    cancel = alice.request("CANCEL", "sip:102@example.com", cseq=1)
                    cancel = cancel.replace(cancel.split(b"branch=")[1].split(b";")[0], branch[0][0].encode())
                    h.receive(cancel, alice.address)
            resp = make_response(branches[host], code, to_tag="r" + host[-2:])
            if code == 200:
                resp.add("Contact", "<sip:102@%s>" % host)
            h.receive(resp.to_bytes(), (host, 5060))
        if timeout:
            h.clock.advance(25)
        out = h.take()
        finals += [m for m, d in out if not m.is_request and m.cseq[1] == "INVITE" and m.code >= 200
                   and d.host == "192.168.2.11"]
        # Timer G repeats a non-2xx final until the caller ACKs: count each answer once.
        codes = [code for code, _ in dict.fromkeys((m.code, m.to_tag) for m in finals)]
        # A second phone's 200 may follow the first (RFC 3261 16.7); otherwise one final.
        non_2xx = [c for c in codes if c >= 300]
        self.assertLessEqual(len(non_2xx), 1, codes)
        if non_2xx:
            self.assertEqual([c for c in codes if c < 300], [], codes)
