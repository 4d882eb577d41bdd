"""Tests for allworx.office: validated, atomic, observed changes."""

import ipaddress

import attr
from twisted.trial import unittest

from allworx import office as O
from allworx.config import ConfigErrors, checks, load_config
from allworx.tests.confs import MINIMAL, PW_HASH


class OfficeTestMixin:

    def make_office(self, text=MINIMAL):
        self.path = self.mktemp()
        with open(self.path, "w") as f:
            f.write("# my notes\n" + text)
        self.office = O.Office(load_config(self.path))
        self.events = []
        self.office.subscribe(O.ConfigChanged, self.events.append)
        return self.office

    def on_disk(self):
        with open(self.path) as f:
            return f.read()


class ChangeTests(OfficeTestMixin, unittest.TestCase):

    def setUp(self):
        self.make_office()

    def test_update_settings_writes_and_notifies(self):
        new = self.office.update_settings("dhcp", {"range": "10-20", "lease_time": "2h"})
        self.assertEqual(str(new.pool[0]), "192.168.2.10")
        self.assertIs(self.office.config, new)
        self.assertEqual(len(self.events), 1)
        self.assertEqual(self.events[0].sections, frozenset({"dhcp"}))
        self.assertTrue(self.events[0].touches("dhcp"))
        text = self.on_disk()
        self.assertIn("# my notes", text)
        self.assertIn("[dhcp]\nrange = 10-20\nlease_time = 2h\n", text)
        self.assertEqual(load_config(self.path).dhcp.lease_time, 7200)

    def test_bad_change_changes_nothing(self):
        before, config = self.on_disk(), self.office.config
        e = self.assertRaises(ConfigErrors, self.office.update_settings, "dhcp", {"range": "1-999"})
        self.assertEqual((e.errors[0].section, e.errors[0].key), ("dhcp", "range"))
        self.assertEqual(self.on_disk(), before)
        self.assertIs(self.office.config, config)
        self.assertEqual(self.events, [])

    def test_unknown_key_refused(self):
        e = self.assertRaises(ConfigErrors, self.office.update_settings, "dhcp", {"rnage": "1-5"})
        self.assertEqual(e.errors[0].key, "rnage")

    def test_put_patch_delete_record(self):
        self.office.put_record("user", "carol", {"full_name": "Carol C", "password": PW_HASH,
                                                 "extension": "103"}, create=True)
        self.assertEqual(self.office.config.users["carol"].extension, "103")
        self.assertRaises(ConfigErrors, self.office.put_record, "user", "carol",
                          {"password": PW_HASH}, create=True)
        self.office.patch_record("user", "carol", {"full_name": "Carol Chen"})
        carol = self.office.config.users["carol"]
        self.assertEqual((carol.full_name, carol.extension), ("Carol Chen", "103"))
        self.office.delete_record("user", "carol")
        self.assertNotIn("carol", self.office.config.users)
        self.assertNotIn("carol", self.on_disk())
        self.assertRaises(KeyError, self.office.delete_record, "user", "carol")

    def test_delete_referenced_user_refused(self):
        """bob is in alias sales: removing him would leave a dangling name."""
        e = self.assertRaises(ConfigErrors, self.office.delete_record, "user", "bob")
        self.assertEqual(e.errors[0].section, "alias sales")
        self.assertIn("bob", self.office.config.users)

    def test_replace_text_restores_backup(self):
        backup = self.office.document_text()
        self.office.update_settings("dhcp", {"range": "10-20"})
        self.office.replace_text(backup)
        self.assertEqual(self.office.config.dhcp.range, (1, 100))
        self.assertRaises(ConfigErrors, self.office.replace_text, "[system]\n")
        self.assertEqual(self.office.config.dhcp.range, (1, 100))

    def test_model_values_are_formatted(self):
        self.office.update_settings("mail", {"relay_from_wan": True, "fetch_interval": 600})
        self.assertIn("relay_from_wan = yes", self.on_disk())
        self.assertEqual(self.office.config.mail.fetch_interval, 600)

    def test_data_dir_override_survives_changes(self):
        office = O.Office(load_config(self.path), data_dir="/tmp/elsewhere")
        office.update_settings("dhcp", {"range": "10-20"})
        self.assertEqual(office.config.system.data_dir, "/tmp/elsewhere")



class CostOfAChangeTests(OfficeTestMixin, unittest.TestCase):
    """A change reads, checks and reads back what it changes, not the whole file."""

    def setUp(self):
        self.make_office(MINIMAL + "".join("\n[alias a%d]\nto = bob\n" % n for n in range(40)))
        self.read = []
        real = checks._read_section

        def counting(section, cls, *rest):
            self.read.append(section.name)
            return real(section, cls, *rest)
        self.patch(checks, "_read_section", counting)

    def numbering(self, doc):
        doc.number()        # the lines are given again when first read after a change
        return [(s.name, s.line, [(e.key, e.line) for e in s.entries()]) for s in doc.sections]

    def test_only_the_changed_section_is_read(self):
        self.office.put_record("alias", "a7", {"to": "alice"})
        # Once to validate it, once to read its lines back.
        self.assertEqual(self.read, ["alias a7", "alias a7"])
        self.assertEqual(load_config(self.path), self.office.config)
        self.assertEqual(self.office.config.aliases["a7"].to, ("alice",))

    def test_lines_are_those_of_the_file_written(self):
        """After a change that moves the sections below it, errors name the file's lines."""
        self.office.update_settings("system", {"hostname": "box", "admin_email": "a@example.com"})
        self.office.delete_record("alias", "a3")
        self.office.put_record("alias", "a9", {"to": "alice bob"})
        self.assertEqual(self.numbering(self.office.config.doc),
                         self.numbering(load_config(self.path).doc))
        e = self.assertRaises(ConfigErrors, self.office.put_record, "alias", "a20", {"to": "nobody"})
        self.assertEqual(e.errors[0].line, load_config(self.path).doc.section("alias a20").get("to").line)

    def test_a_refused_change_leaves_the_live_document_as_it_was(self):
        before = self.office.document_text()
        numbering = self.numbering(self.office.config.doc)
        self.assertRaises(ConfigErrors, self.office.put_record, "alias", "a5", {"to": "nobody"})
        self.assertRaises(ConfigErrors, self.office.put_record, "alias", "a6",
                          {"to": "alice\n[alias x]\nto = bob"})
        self.assertEqual(self.office.config.doc.render(), before)
        self.assertEqual(self.numbering(self.office.config.doc), numbering)
        self.assertEqual(self.office.config.aliases["a5"].to, ("bob",))


    def checks_run(self):
        ran = []

        def counting(check):
            def run(*args):
                ran.append(check.__name__)
                return check(*args)
            run.__qualname__ = check.__qualname__
            return run
        self.patch(checks, "CROSS_CHECKS", tuple(counting(c) for c in checks.CROSS_CHECKS))
        return ran

    def test_only_the_checks_that_read_what_changed_run(self):
        ran = self.checks_run()
        self.office.put_record("alias", "a7", {"to": "alice"})
        self.assertEqual(ran, ["_check_aliases"])
        del ran[:]
        self.office.update_settings("lan", {"address": "192.168.2.253/24"})
        self.assertIn("_check_network", ran)
        self.assertNotIn("_check_aliases", ran)

    def test_a_check_not_run_for_a_while_still_refuses(self):
        """The checks that a change's inputs reach run, whatever ran before."""
        ran = self.checks_run()
        self.office.put_record("host", "printer", {"mac": "52:54:00:00:00:01",
                                                   "address": "192.168.2.50"})
        self.office.put_record("alias", "a7", {"to": "alice"})
        self.assertNotIn("_check_hosts_records", ran[ran.index("_check_aliases"):])
        e = self.assertRaises(ConfigErrors, self.office.update_settings, "lan",
                              {"address": "10.9.0.1/24"})
        self.assertIn("host printer", [x.section for x in e.errors])
        e = self.assertRaises(ConfigErrors, self.office.put_record, "alias", "a8", {"to": "nobody"})
        self.assertEqual([(x.section, x.key) for x in e.errors], [("alias a8", "to")])
        self.assertEqual(load_config(self.path), self.office.config)


class RuntimeTests(OfficeTestMixin, unittest.TestCase):

    def setUp(self):
        self.make_office()

    def test_observers_isolated(self):
        seen = []

        def broken(event):
            raise RuntimeError("boom")
        self.office.subscribe(O.LeaseEvent, broken)
        unsubscribe = self.office.subscribe(O.LeaseEvent, seen.append)
        event = O.LeaseEvent("granted", "02:00:00:00:00:01", None, "pc1")
        self.office.emit(event)
        self.assertEqual(seen, [event])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        unsubscribe()
        self.office.emit(event)
        self.assertEqual(seen, [event])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_wan_address(self):
        self.assertEqual(str(self.office.wan_ip), "203.0.113.2")
        changes = []
        self.office.subscribe(O.WanAddressChanged, changes.append)
        self.office.set_wan_address(None, "lost")
        self.office.set_wan_address(None, "lost")
        self.assertEqual(len(changes), 1)
        self.assertIsNone(self.office.wan_ip)

    def test_side_of_peer(self):
        self.assertTrue(self.office.is_lan_peer("192.168.2.7"))
        self.assertTrue(self.office.is_lan_peer("127.0.0.1"))
        self.assertTrue(self.office.is_lan_peer("::ffff:192.168.2.7"))
        self.assertFalse(self.office.is_lan_peer("198.51.100.10"))
        self.assertFalse(self.office.is_lan_peer("not an ip"))

    def test_side_of_peer_follows_the_lan(self):
        """The remembered answers go with the config they were made under."""
        self.assertTrue(self.office.is_lan_peer("192.168.2.7"))
        self.assertFalse(self.office.is_lan_peer("192.168.3.7"))
        self.office.config = attr.evolve(self.office.config, lan=attr.evolve(
            self.office.config.lan, address=ipaddress.IPv4Interface("192.168.3.254/24")))
        self.assertFalse(self.office.is_lan_peer("192.168.2.7"))
        self.assertTrue(self.office.is_lan_peer("192.168.3.7"))
        for n in range(O.LAN_PEER_CACHE + 10):
            self.office.is_lan_peer("198.51.%d.%d" % (n // 250, n % 250))
        self.assertLessEqual(len(self.office._lan_peers), O.LAN_PEER_CACHE + 2)
        self.assertTrue(self.office.is_lan_peer("192.168.3.7"))

    def test_status_emitted_once(self):
        seen = []
        self.office.subscribe(O.ServiceStatus, seen.append)
        self.office.set_status("dns", "up", "listening on udp 53")
        self.office.set_status("dns", "up", "listening on udp 53")
        self.assertEqual(len(seen), 1)
        self.assertEqual(self.office.status["dns"].state, "up")
