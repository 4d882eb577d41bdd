"""Tests for allworx.protocols.mail.dkimsign: signing what the queue sends, rotation of the keys."""

import json
import os

import dkim
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from allworx.dkimkeys import DkimKeys, mail_dns_records
from allworx.office import DkimKeysChanged
from allworx.protocols.mail import service as mail_service
from allworx.protocols.mail.dkimsign import (
    DkimSigner, from_domains, header_fields, next_selector)
from allworx.protocols.mail.queue import QueueEntry
from allworx.protocols.mail.relay import Outcome
from allworx.tests.dkimtesting import dnsfunc_for, install_keys
from allworx.tests.mailtesting import FakeRelay, PlainChecker, make_office, make_store, sync_thread

MSG = (b"From: Alice Archer <alice@example.com>\nTo: friend@internet.example\n"
       b"Subject: hello\nDate: Mon, 07 Dec 2026 10:00:00 +0000\nMessage-ID: <1@example.com>\n"
       b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nX-Mailer: test\n\n"
       b"Dear friend,\n\nthe plans.\n")
TEMP = Outcome("temporary", "4.4.1", "try later")
PERM = Outcome("permanent", "5.1.1", "550 5.1.1 no such user")
SENT = Outcome("sent", "2.0.0", "250 ok")


def verdicts(message, config):
    """dkimpy's verdict on each signature of `message`, against the records our zone publishes."""
    dnsfunc = dnsfunc_for(config, DkimKeys(config.system.data_dir))
    d = dkim.DKIM(message)
    out = []
    for i in range(len(signatures(message))):
        try:
            out.append(d.verify(idx=i, dnsfunc=dnsfunc))
        except dkim.DKIMException:
            out.append(False)
    return out


def signatures(message):
    """The DKIM-Signature tags of `message`, topmost first: [{tag: value}]."""
    out = []
    for name, value in header_fields(message):
        if name == b"dkim-signature":
            tags = {}
            for part in value.split(b";"):
                k, _, v = part.partition(b"=")
                tags[k.strip().decode()] = b"".join(v.split()).decode()
            out.append(tags)
    return out


class SignTests(unittest.TestCase):

    def setUp(self):
        self.office = make_office(self)
        self.keys = install_keys(self.office.config.system.data_dir)
        self.signer = DkimSigner(self.office, MemoryReactorClock(), sync_thread)

    def verify(self, message):
        return verdicts(message, self.office.config)

    def test_signed_twice_and_both_verify(self):
        signed, selectors = self.signer.sign(MSG)
        self.assertEqual(selectors, ["allworx"])
        self.assertTrue(signed.endswith(MSG))
        sigs = signatures(signed)
        self.assertEqual([(s["a"], s["s"], s["d"], s["c"]) for s in sigs], [
            ("rsa-sha256", "allworx", "example.com", "relaxed/relaxed"),
            ("ed25519-sha256", "allworx-ed25519", "example.com", "relaxed/relaxed")])
        self.assertEqual(sigs[0]["h"], "from:to:subject:date:message-id:mime-version:content-type:from")
        self.assertEqual(self.verify(signed), [True, True])
        # Also once the relay made it CRLF, as it goes on the wire.
        self.assertEqual(self.verify(signed.replace(b"\n", b"\r\n")), [True, True])

    def test_a_changed_message_fails(self):
        signed, _ = self.signer.sign(MSG)
        self.assertEqual(self.verify(signed.replace(b"the plans", b"the money")), [False, False])
        # From is oversigned: a second From added above breaks the signatures.
        forged = signed.replace(b"From: Alice", b"From: ceo@example.com\nFrom: Alice")
        self.assertEqual(self.verify(forged), [False, False])

    def test_subdomain_from_is_ours(self):
        msg = MSG.replace(b"alice@example.com", b"MAILER-DAEMON@allworx.example.com")
        signed, selectors = self.signer.sign(msg)
        self.assertEqual(selectors, ["allworx"])
        self.assertEqual(self.verify(signed), [True, True])

    def test_from_not_ours_is_left_as_it_came(self):
        forwarded = (b"DKIM-Signature: v=1; a=rsa-sha256; d=internet.example; s=x; b=abc; bh=def\n"
                     + MSG.replace(b"alice@example.com", b"pal@internet.example"))
        self.assertEqual(self.signer.sign(forwarded), (forwarded, []))
        lookalike = MSG.replace(b"alice@example.com", b"alice@notexample.com")
        self.assertEqual(self.signer.sign(lookalike), (lookalike, []))
        for bad in (MSG.replace(b"From: Alice Archer <alice@example.com>\n", b""),
                    MSG.replace(b"From: Alice Archer <alice@example.com>",
                                b"From: alice@example.com, eve@evil.example"),
                    MSG.replace(b"From: Alice", b"From: alice@example.com\nFrom: Alice")):
            self.assertEqual(self.signer.sign(bad), (bad, []), bad)

    def test_mail_from_the_internet_with_our_from_is_not_signed(self):
        came_in = (b"Authentication-Results: allworx.example.com; spf=fail smtp.mailfrom=example.com\n"
                   + MSG)
        self.assertEqual(self.signer.sign(came_in), (came_in, []))
        # Someone else's results do not count.
        theirs = b"Authentication-Results: mx.internet.example; spf=pass\n" + MSG
        self.assertEqual(self.signer.sign(theirs)[1], ["allworx"])

    def test_records_for_the_mail_security_page(self):
        rows = self.signer.records()
        self.assertEqual([(r["name"], r["purpose"], r["source"]) for r in rows], [
            ("allworx._domainkey.example.com", "dkim", "built-in"),
            ("allworx-ed25519._domainkey.example.com", "dkim", "built-in"),
            ("example.com", "spf", "built-in"),
            ("_dmarc.example.com", "dmarc", "built-in")])
        self.assertEqual(rows[0]["value"], self.keys.txt("allworx"))

    def test_without_keys_unsigned(self):
        empty = DkimSigner(make_office(self), MemoryReactorClock(), sync_thread)
        self.assertEqual(empty.sign(MSG), (MSG, []))

    def test_folded_headers(self):
        msg = MSG.replace(b"Subject: hello", b"Subject: hello\n  folded\tline")
        signed, _ = self.signer.sign(msg)
        self.assertEqual(self.verify(signed), [True, True])
        self.assertEqual(from_domains(header_fields(msg)), ["example.com"])


class QueueSigningTests(unittest.TestCase):
    """The queue signs as a message enters: what is on disk and what leaves; bounces too."""

    def setUp(self):
        self.answer = SENT
        self.relay = FakeRelay(lambda domain, rcpt: self.answer)
        self.office, self.store, self.queue, self.clock = make_store(self, relay=self.relay)
        self.keys = install_keys(self.office.config.system.data_dir)
        self.signer = DkimSigner(self.office, self.clock, sync_thread)
        self.queue.signer = self.signer
        self.signer.queue = self.queue
        self.events = []
        self.office.subscribe(DkimKeysChanged, self.events.append)
        self.queue.load()
        self.queue.start()

    def send(self, message=MSG, sender="alice@example.com", rcpts=("friend@internet.example",)):
        out = []
        self.store.deliver(list(rcpts), message, sender).addBoth(out.append)
        self.assertNotIsInstance(out[0], Exception)
        return out[0]

    def verify_all(self, message):
        return verdicts(message, self.office.config)

    def entry_json(self):
        [name] = [n for n in os.listdir(self.queue.directory) if n.endswith(".json")]
        with open(os.path.join(self.queue.directory, name)) as f:
            return json.load(f)

    def test_queued_file_is_signed_and_records_the_selector(self):
        self.answer = TEMP
        self.send()
        self.assertEqual(self.entry_json()["dkim"], ["allworx"])
        [name] = [n for n in os.listdir(self.queue.directory) if n.endswith(".eml")]
        with open(os.path.join(self.queue.directory, name), "rb") as f:
            self.assertEqual(self.verify_all(f.read()), [True, True])
        self.clock.advance(0)
        self.assertEqual(self.verify_all(self.relay.calls[0][3]), [True, True])

    def test_local_copies_are_not_signed(self):
        self.send(rcpts=("alice@example.com", "friend@internet.example"))
        self.clock.advance(0)
        [(_, _, _, sent)] = self.relay.calls
        self.assertEqual(len(signatures(sent)), 2)
        new = os.path.join(self.store.maildir("alice"), "new")
        [name] = os.listdir(new)
        with open(os.path.join(new, name), "rb") as f:
            self.assertEqual(signatures(f.read()), [])

    def test_forwarded_mail_keeps_its_own_signature(self):
        foreign = MSG.replace(b"alice@example.com", b"pal@internet.example")
        self.send(foreign, sender="pal@internet.example")
        self.clock.advance(0)
        self.assertEqual(self.relay.calls[0][3], foreign)

    def test_bounce_is_signed(self):
        self.answer = PERM
        # An outside sender (an alias forwarding out): its bounce goes out through the queue.
        self.send(MSG, sender="pal@internet.example", rcpts=("nobody@internet.example",))
        self.clock.advance(0)
        self.clock.advance(0)
        bounces = [c for c in self.relay.calls if c[1] == ""]
        self.assertEqual(len(bounces), 1, self.relay.calls)
        bounce = bounces[0][3]
        self.assertIn(b"From: Mail Delivery System <MAILER-DAEMON@allworx.example.com>", bounce)
        self.assertEqual([s["s"] for s in signatures(bounce)], ["allworx", "allworx-ed25519"])
        self.assertEqual(self.verify_all(bounce), [True, True])

    def test_old_entries_count_as_unsigned(self):
        entry = QueueEntry.from_json(json.dumps({"id": "1", "sender": "", "recipients": ["a@b.c"],
                                                 "created": 0}).encode())
        self.assertEqual(entry.dkim, ())
        self.assertEqual(QueueEntry.from_json(entry.to_json()), entry)

    def test_rotation_keeps_the_old_selector_while_the_queue_holds_it(self):
        self.clock.advance(1796601600)     # 2026-12-07
        checked = []
        deliver = self.relay.deliver

        def verifying(domain, sender, rcpts, data):
            # As a receiver would: against the records published at that moment.
            checked.append(self.verify_all(data))
            return deliver(domain, sender, rcpts, data)
        self.relay.deliver = verifying
        self.answer = TEMP
        self.send()
        self.clock.advance(0)
        out = []
        self.signer.rotate().addBoth(out.append)
        self.assertEqual(out, ["allworx-20261207"])
        self.assertEqual(self.office.config.mail.dkim_selector, "allworx-20261207")
        self.assertEqual(self.keys.retired(), ["allworx"])
        published = [r.label for r in mail_dns_records(self.office.config, DkimKeys(
            self.office.config.system.data_dir)) if r.purpose == "dkim"]
        self.assertEqual(published, ["allworx-20261207._domainkey",
                                     "allworx-20261207-ed25519._domainkey",
                                     "allworx._domainkey", "allworx-ed25519._domainkey"])
        self.assertTrue(self.events)
        # New mail is signed with the new keys; the queued one still verifies with the old.
        self.send()
        self.assertEqual(self.queue.selectors_in_use(), {"allworx", "allworx-20261207"})
        # A second rotation the same day gets another name.
        self.assertEqual(next_selector("allworx-20261207", self.clock.seconds(),
                                       {"allworx-20261207"}), "allworx-20261207-2")
        # Delivered: the old selector has no queued message left, and goes.
        self.events.clear()
        self.answer = SENT
        self.clock.advance(3600)
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(self.keys.retired(), [])
        self.assertEqual(sorted(os.listdir(self.keys.directory)),
                         ["allworx-20261207.ed25519.pem", "allworx-20261207.rsa.pem", "state.json"])
        self.assertEqual([e.published for e in self.events],
                         [("allworx-20261207", "allworx-20261207-ed25519")])
        self.assertEqual(checked, [[True, True]] * 3)

    def test_rotation_with_an_empty_queue_drops_the_old_keys_at_once(self):
        out = []
        self.signer.rotate().addBoth(out.append)
        self.assertEqual(out, ["allworx-19700101"])
        self.assertEqual(self.keys.retired(), [])
        self.assertFalse(os.path.exists(os.path.join(self.keys.directory, "allworx.rsa.pem")))

    def test_a_removed_entry_releases_its_selector(self):
        self.answer = TEMP
        self.send()
        self.clock.advance(0)
        self.signer.rotate()
        self.assertEqual(self.keys.retired(), ["allworx"])
        [entry] = self.queue.entries()
        self.queue.remove(entry["id"])
        self.assertEqual(self.keys.retired(), [])

    def test_retired_selectors_survive_a_restart_until_unused(self):
        self.answer = TEMP
        self.send()
        self.clock.advance(0)
        self.signer.rotate()
        # A new process: the queue from disk still holds the old selector.
        _, store, queue, clock = make_store(self, office=self.office, relay=self.relay)
        signer = DkimSigner(self.office, clock, sync_thread)
        queue.signer, signer.queue = signer, queue
        queue.load()
        signer.start()
        self.assertEqual(self.keys.retired(), ["allworx"])
        self.assertEqual(queue.selectors_in_use(), {"allworx"})

    def test_next_selector(self):
        day = 1796601600
        self.assertEqual(next_selector("allworx", day, set()), "allworx-20261207")
        self.assertEqual(next_selector("allworx-20250101", day, set()), "allworx-20261207")
        self.assertEqual(next_selector("allworx-20261207-2", day, {"allworx-20261207"}),
                         "allworx-20261207-3")
        long = "a" * 40
        self.assertEqual(len(next_selector(long, day, set())), 40)


class ServiceTests(unittest.TestCase):
    """The mail service makes the keys at first start and follows `[mail] dkim_selector`."""

    def setUp(self):
        self.office = make_office(self)
        self.office.update_settings("mail", {"smtp_port": "2525", "submission_port": "2587"})
        self.events = []
        self.office.subscribe(DkimKeysChanged, self.events.append)
        self.mail = mail_service.MailService(self.office, MemoryReactorClock(), PlainChecker({}),
                                             sync_thread)
        self.mail.startService()
        self.addCleanup(self.mail.stopService)
        self.keys = DkimKeys(self.office.config.system.data_dir)

    def test_keys_made_at_first_start(self):
        self.assertTrue(self.keys.has("allworx"))
        self.assertEqual([e.published for e in self.events], [("allworx", "allworx-ed25519")])
        self.assertIs(self.mail.queue.signer, self.mail.dkim)

    def test_selector_changed_by_hand(self):
        self.office.update_settings("mail", {"dkim_selector": "office2"})
        self.assertTrue(self.keys.has("office2"))
        # Nothing queued with the old one: it is dropped at once.
        self.assertFalse(self.keys.has("allworx"))
        self.assertEqual(self.events[-1].published, ("office2", "office2-ed25519"))
