# -*- test-case-name: allworx.tests.web.test_logtables -*-
"""
Filters, search and paging of the connection log, the mail queue and the
mail decisions (allworx.protocols.web.logtables), through the pages over
in-memory HTTP and directly.
"""

import re

from allworx.protocols.web import logtables
from allworx.tests.web.test_mailsecurity import FakeMailSecurity, decision
from allworx.tests.web.test_pages import FakeLog, LoggedIn


def flows(count):
    """count decisions, newest first: pc n % 5 + 10 to port 80 or 443, every 7th dropped."""
    out = []
    for n in range(count - 1, -1, -1):
        out.append({"time": n, "proto": "tcp" if n % 2 else "udp",
                    "src": "192.168.2.%d" % (n % 5 + 10), "sport": 40000 + n,
                    "dst": "198.51.100.%d" % (n % 3 + 1), "dport": 443 if n % 4 else 80,
                    "side": "lan", "action": "drop" if n % 7 == 0 else "accept",
                    "reason": "rule %d" % n})
    return out


class Recording(FakeLog):
    def __init__(self, entries, counts):
        FakeLog.__init__(self, entries, counts)
        self.asked = []

    def recent(self, limit=200):
        self.asked.append(limit)
        return FakeLog.recent(self, limit)


class ConnectionPageTests(LoggedIn):

    def setUp(self):
        LoggedIn.setUp(self)
        self.log = Recording(flows(300), {"accept": 257, "drop": 43})
        self.c.ctx.views.connections = self.log

    def rows(self, text):
        return re.findall(r'<tr class="(\w+)"><td>[^<]*</td><td>(\w+)</td><td>([\d.:]+)</td>'
                          r'<td>([\d.:]+)</td>', text)

    def test_every_kept_decision_paged(self):
        text = self.c.get("/connections").text
        self.assertEqual(self.log.asked, [logtables.CONNECTIONS_READ])
        rows = self.rows(text)
        self.assertEqual(len(rows), logtables.PAGE_SIZE)
        self.assertEqual(rows[0][2], "192.168.2.14:40299")
        self.assertIn("Decisions 1 to 50 of 300", text)
        self.assertIn('href="/connections?page=2#connlog"', text)
        text = self.c.get("/connections?page=6").text
        self.assertEqual(self.rows(text)[-1][2], "192.168.2.10:40000")
        self.assertIn('href="/connections?page=5#connlog"', text)
        self.assertNotIn("page=7", text)

    def test_filters(self):
        text = self.c.get("/connections?address=192.168.2.12&port=80&verdict=accept").text
        rows = self.rows(text)
        self.assertTrue(rows)
        for action, _, src, dst in rows:
            self.assertEqual(action, "accept")
            self.assertTrue(src.startswith("192.168.2.12:"), src)
            self.assertTrue(dst.endswith(":80"), dst)
        expected = [e for e in flows(300) if e["src"] == "192.168.2.12" and e["dport"] == 80
                    and e["action"] == "accept"]
        self.assertIn("of %d matching" % len(expected), text)
        self.assertIn('value="192.168.2.12"', text)
        self.assertIn("<option selected>accept</option>", text)
        # A network, and the destination counts too.
        rows = self.rows(self.c.get("/connections?address=198.51.100.2/32").text)
        self.assertTrue(rows)
        self.assertTrue(all(dst.startswith("198.51.100.2:") for _, _, _, dst in rows))

    def test_search_and_paging_keep_the_filters(self):
        text = self.c.get("/connections?q=RULE+1&verdict=accept").text
        self.assertTrue(self.rows(text))
        self.assertIn("page=2", text)
        link = re.search(r'href="(/connections\?[^"]*page=2[^"]*)"', text).group(1)
        self.assertIn("q=RULE+1", link)
        self.assertIn("verdict=accept", link)
        self.assertIn("No decision matches.", self.c.get("/connections?q=nothing-like-it").text)

    def test_bad_filters_named_and_ignored(self):
        text = self.c.get("/connections?address=pc1&port=99999&verdict=maybe").text
        self.assertIn("The filter address=pc1 was ignored", text)
        self.assertIn("The filter port=99999 was ignored", text)
        self.assertIn("The filter verdict=maybe was ignored", text)
        self.assertEqual(len(self.rows(text)), logtables.PAGE_SIZE)


class QueueEntry:
    """A queue entry as an object (the page reads attributes or keys)."""

    def __init__(self, n):
        self.id = "q%03d" % n
        self.sender = "user%d@example.com" % (n % 4)
        self.recipients = ["friend%d@example.net" % (n % 3), "boss@example.org"]
        self.attempts = n % 5
        self.next_attempt = None
        self.last_error = "451 greylisted" if n % 2 else "connection refused"


class Queue:
    def __init__(self, count):
        self.items = [QueueEntry(n) for n in range(count)]

    def entries(self):
        return list(self.items)

    def retry(self, queue_id):
        pass

    def remove(self, queue_id):
        pass


class QueuePageTests(LoggedIn):

    def setUp(self):
        LoggedIn.setUp(self)
        self.c.ctx.views.mail_queue = Queue(120)

    def ids(self, text):
        return re.findall(r"<tr><td><code>(q\d+)</code>", text)

    def test_paged(self):
        text = self.c.get("/mailqueue").text
        self.assertEqual(len(self.ids(text)), logtables.PAGE_SIZE)
        self.assertIn("Messages 1 to 50 of 120", text)
        self.assertEqual(self.ids(self.c.get("/mailqueue?page=3").text)[-1], "q119")

    def test_sender_recipient_search(self):
        text = self.c.get("/mailqueue?sender=USER1@&recipient=friend2").text
        ids = self.ids(text)
        self.assertEqual(ids, ["q%03d" % n for n in range(120) if n % 4 == 1 and n % 3 == 2])
        self.assertIn("matching (120 queued)", text)
        ids = self.ids(self.c.get("/mailqueue?q=greylisted").text)
        self.assertEqual(len(ids), logtables.PAGE_SIZE)
        self.assertTrue(all(int(i[1:]) % 2 for i in ids))
        self.assertIn("No queued message matches.", self.c.get("/mailqueue?q=zzz").text)


class DecisionFilterTests(LoggedIn):

    def setUp(self):
        LoggedIn.setUp(self)
        decisions = [decision(n, "junk" if n % 3 == 0 else "accepted",
                              recipients=["alice@example.com" if n % 2 else "bob@example.com"])
                     for n in range(1, 81)]     # oldest first, as the fake keeps them
        self.c.ctx.views.mail_security = FakeMailSecurity(self.c.office, decisions)

    def senders(self, text):
        return re.findall(r"<td>(sender\d+@internet\.example)</td><td>([^<]*)</td>", text)

    def test_sender_recipient_and_search(self):
        text = self.c.get("/mailsecurity?recipient=bob&verdict=junk").text
        rows = self.senders(text)
        expected = [n for n in range(80, 0, -1) if n % 2 == 0 and n % 3 == 0]
        self.assertEqual([s for s, _ in rows], ["sender%d@internet.example" % n for n in expected])
        self.assertTrue(all(r == "bob@example.com" for _, r in rows))
        self.assertIn('value="bob"', text)
        rows = self.senders(self.c.get("/mailsecurity?sender=sender7&q=reason+7").text)
        self.assertEqual({s for s, _ in rows}, {"sender7@internet.example",
                                                "sender70@internet.example",
                                                "sender71@internet.example",
                                                "sender72@internet.example",
                                                "sender73@internet.example",
                                                "sender74@internet.example",
                                                "sender75@internet.example",
                                                "sender76@internet.example",
                                                "sender77@internet.example",
                                                "sender78@internet.example",
                                                "sender79@internet.example"})
        self.assertIn("No decision matches.", self.c.get("/mailsecurity?q=nothing").text)

    def test_paging_keeps_the_filters(self):
        text = self.c.get("/mailsecurity?recipient=alice").text
        link = re.search(r'href="(/mailsecurity\?[^"]*page=2[^"]*)"', text).group(1)
        self.assertIn("recipient=alice", link)


class HelperTests(LoggedIn):

    def test_paged_past_the_end_shows_the_last(self):
        items = list(range(120))
        rows, number, pages, first, last = logtables.paged(items, "9", 50)
        self.assertEqual((rows, number, pages, first, last), (items[100:], 3, 3, 101, 120))
        self.assertEqual(logtables.paged([], "x", 50), ([], 1, 1, 0, 0))
