"""
Tests for bench.common and bench.run_all: the rows benchmarks report and
`make bench`'s closing table.
"""

import io
import json
import os
import sys

from twisted.trial import unittest

from bench import common, run_all


class ResultTests(unittest.TestCase):

    def test_a_row_printed_and_kept(self):
        path = self.mktemp()
        self.patch(os, "environ", dict(os.environ, **{common.RESULTS_ENV: path}))
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        ratio = common.result("DNS zone answers", 90000.0, 60000.0, "dnsmasq", "q/s", 1.0,
                              allworx_mb=40.0, peer_mb=4.0)
        self.assertEqual(ratio, 1.5)
        self.assertIn("RESULT DNS zone answers: allworx 90,000 q/s, dnsmasq 60,000 "
                      "(ratio 1.50, goal >= 1.00: holds)", out.getvalue())
        common.result("start-up", 1.5, 0.5, "dnsmasq", "s", "< 2 s", higher_is_better=False)
        with open(path) as f:
            rows = [json.loads(line) for line in f]
        self.assertEqual([r["holds"] for r in rows], [True, None])
        self.assertAlmostEqual(rows[1]["ratio"], 1 / 3.0)
        text = run_all.table(rows)
        self.assertIn("| DNS zone answers | 90,000 q/s | dnsmasq 60,000 | 1.50 | >= 1.00 | yes "
                      "| 40 / 4 MB |", text)
        self.assertIn("| start-up | 1.50 s | dnsmasq 0.50 | 0.33 | < 2 s | - | - |", text)

    def test_a_missed_goal_is_marked(self):
        self.patch(os, "environ", {k: v for k, v in os.environ.items()
                                   if k != common.RESULTS_ENV})
        self.patch(sys, "stdout", io.StringIO())
        self.assertEqual(common.result("x", 1.0, 2.0, "peer", "/s", 0.8), 0.5)
        row = {"path": "x", "allworx": 1.0, "peer": 2.0, "peer_name": "peer", "unit": "/s",
               "ratio": 0.5, "goal": 0.8, "holds": False}
        self.assertIn("| 0.50 | >= 0.80 | **no** |", run_all.table([row]))

    def test_peak_memory_of_this_process(self):
        self.assertGreater(common.peak_rss_mb(os.getpid()), 1.0)
        self.assertIn(os.getpid(), common.process_tree(os.getpid()))
        self.assertEqual(common.peak_rss_mb(2 ** 22 + 7), 0)

    def test_unknown_benchmark(self):
        self.patch(run_all.sys, "stderr", open(os.devnull, "w"))
        with self.assertRaises(SystemExit) as e:
            run_all.main(["nosuch"])
        self.assertEqual(e.exception.code, 2)
