"""Tests for allworx.routing.firewall.ruleset: the policy as iptables chains, applied and removed."""

import os
import shutil
import subprocess

from hypothesis import given, settings, strategies as st

from twisted.internet.testing import MemoryReactor
from twisted.trial import unittest

from allworx.routing.firewall import ruleset as R
from allworx.routing.firewall.policy import FlowPolicy
from allworx.tests.firewall.test_policy import make_config

MODES = ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")


def chains_for(mode, **kw):
    return R.compile_chains(FlowPolicy.build(make_config(mode), **kw))


class CompileTests(unittest.TestCase):

    def test_firewall_mode_queues_new_flows_without_bypass(self):
        c = chains_for("firewall-nat")
        self.assertEqual(c[("mangle", "AWX-PRE")],
                         ["-i wan0 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 24"])
        forward = c[("filter", "AWX-FORWARD")]
        self.assertEqual(forward[0], "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
        self.assertIn("-i lan0 -o wan0 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 24",
                      forward)
        self.assertEqual(forward[-1], "-j DROP")
        text = R.describe(c)
        self.assertNotIn("bypass", text)
        # Probes conntrack calls INVALID never reach the stack (no RST from closed ports).
        self.assertIn("-i wan0 -m conntrack --ctstate INVALID -j DROP", c[("filter", "AWX-INPUT")])

    def test_masquerade_and_forward_dnat(self):
        c = chains_for("firewall-nat-dmz")
        self.assertEqual(c[("nat", "AWX-POST")], ["-s 192.168.2.0/24 -o wan0 -j MASQUERADE"])
        self.assertEqual(c[("nat", "AWX-PRE")], [
            "-p tcp -m mark --mark 0x0a770001 -j DNAT --to-destination 192.168.2.150:80",
            "-p udp -m mark --mark 0x0a770002 -j DNAT --to-destination 192.168.2.20:27015"])

    def test_forward_follows_the_host(self):
        import ipaddress
        c = chains_for("firewall-nat", host_addresses={"printer": ipaddress.IPv4Address(
            "192.168.2.77")})
        self.assertIn("-p tcp -m mark --mark 0x0a770001 -j DNAT --to-destination "
                      "192.168.2.77:80", c[("nat", "AWX-PRE")])

    def test_lan_only_ports_guarded_in_every_mode_with_a_wan(self):
        for mode in MODES:
            inp = chains_for(mode)[("filter", "AWX-INPUT")]
            self.assertIn("-i wan0 -p tcp -m multiport --dports 110,143,389,993,995,5061,8080,8089,8090 -j DROP",
                          inp,
                          mode)
            self.assertIn("-i wan0 -p udp -m multiport --dports 67,69,123 -j DROP", inp, mode)
            # The WAN DHCP client's replies come before any drop.
            self.assertLess(inp.index("-i wan0 -p udp --sport 67 --dport 68 -j ACCEPT"),
                            len(inp) - 1, mode)

    def test_router_mode_has_no_queue_and_no_nat(self):
        text = R.describe(chains_for("router"))
        self.assertNotIn("NFQUEUE", text)
        self.assertNotIn("MASQUERADE", text)
        self.assertNotIn("DNAT", text)
        self.assertEqual(chains_for("router")[("filter", "AWX-FORWARD")], [])

    def test_lan_only_forwards_nothing(self):
        c = chains_for("lan-only")
        self.assertEqual(c[("filter", "AWX-FORWARD")], [
            "-i lan0 -j REJECT --reject-with icmp-admin-prohibited", "-j DROP"])
        self.assertEqual(c[("filter", "AWX-INPUT")][-1], "-i wan0 -j DROP")
        self.assertNotIn("NFQUEUE", R.describe(c))

    def test_lan_only_without_a_wan(self):
        from allworx.config import parse_config
        from allworx.tests.confs import MINIMAL
        text = MINIMAL.replace("mode = firewall-nat", "mode = lan-only").replace(
            "interface = wan0\nmode = static\naddress = 203.0.113.2/24\ngateway = 203.0.113.1\n",
            "mode = disabled\n")
        c = R.compile_chains(FlowPolicy.build(parse_config(text)))
        self.assertNotIn("wan", R.describe(c))
        self.assertEqual(c[("filter", "AWX-FORWARD")][-1], "-j DROP")

    def test_bad_interface_name_is_named(self):
        import attr
        policy = attr.evolve(FlowPolicy.build(make_config()), lan_interface="lan 0; rm")
        e = self.assertRaises(R.RulesetError, R.compile_chains, policy)
        self.assertIn("LAN interface name", str(e))


forward_sections = st.lists(
    st.tuples(st.sampled_from(["tcp", "udp"]), st.integers(1, 65535),
              st.integers(1, 253), st.one_of(st.none(), st.integers(1, 65535))),
    max_size=6, unique_by=lambda f: (f[0], f[1]))


class RandomConfigTests(unittest.TestCase):

    @settings(max_examples=60, deadline=None)
    @given(st.sampled_from(MODES), forward_sections, st.integers(1, 65535),
           st.integers(1, 65535))
    def test_any_valid_office_compiles(self, mode, forwards, admin_port, ldap_port):
        from allworx.config import ConfigErrors, parse_config
        from allworx.tests.confs import MINIMAL, with_sections
        extra = "[security]\nmode = %s\n\n[ldap]\nport = %d\n" % (mode, ldap_port)
        for i, (proto, wan_port, host, to_port) in enumerate(forwards):
            if host == 254:
                continue
            extra += "\n[forward f%d]\nproto = %s\nwan_port = %d\nto = 192.168.2.%d%s\n" % (
                i, proto, wan_port, host, ":%d" % to_port if to_port else "")
        base = MINIMAL.replace("[security]\nmode = firewall-nat\n", "").replace(
            "[web]\n", "[web]\nadmin_port = %d\n" % admin_port)
        try:
            config = parse_config(with_sections(extra, base))
        except ConfigErrors:
            return
        policy = FlowPolicy.build(config)
        chains = R.compile_chains(policy)
        dnat = chains[("nat", "AWX-PRE")]
        if policy.inspects:
            self.assertEqual(len(dnat), len([r for r in policy.forwards if r.target]))
            for r in policy.forwards:
                self.assertIn("-p %s -m mark --mark 0x%08x -j DNAT --to-destination %s:%d"
                              % (r.proto, r.mark, r.target, r.to_port), dnat)
        else:
            self.assertEqual(dnat, [])
        script = R.restore_script(chains)
        self.assertEqual(script.count("COMMIT"), 3)
        for _, builtin, mine in R.JUMPS:
            self.assertIn("-I %s 1 -j %s" % (builtin, mine), script)


SAVED = """\
# Generated by iptables-save
*mangle
:PREROUTING ACCEPT [0:0]
:AWX-PRE - [0:0]
-A PREROUTING -j AWX-PRE
-A PREROUTING -j AWX-PRE
-A AWX-PRE -i wan0 -j NFQUEUE --queue-num 24
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:AWX-INPUT - [0:0]
-A INPUT -j AWX-INPUT
-A INPUT -j other
COMMIT
"""


class ScriptTests(unittest.TestCase):

    def test_parse_saved(self):
        state = R.parse_saved(SAVED)
        self.assertEqual(state["mangle"][0], {"AWX-PRE"})
        self.assertEqual(state["mangle"][1][("PREROUTING", "AWX-PRE")], 2)
        self.assertEqual(state["filter"][1][("INPUT", "AWX-INPUT")], 1)
        self.assertNotIn(("INPUT", "other"), state["filter"][1])

    def test_restore_leaves_one_jump_each(self):
        script = R.restore_script(chains_for("firewall-nat"), SAVED)
        mangle = script.split("*mangle\n")[1].split("COMMIT")[0]
        self.assertIn("-D PREROUTING -j AWX-PRE\n", mangle)
        self.assertNotIn("-I PREROUTING", mangle)
        filt = script.split("*filter\n")[1].split("COMMIT")[0]
        self.assertNotIn("-I INPUT", filt)
        self.assertIn("-I FORWARD 1 -j AWX-FORWARD", filt)
        self.assertIn(":AWX-FORWARD - [0:0]", filt)

    def test_removal(self):
        script = R.removal_script(SAVED)
        self.assertEqual(script.count("-D PREROUTING -j AWX-PRE"), 2)
        self.assertIn("-D INPUT -j AWX-INPUT", script)
        self.assertIn("-X AWX-INPUT", script)
        self.assertNotIn("other", script)
        self.assertNotIn("*nat", script)

    def test_removal_of_nothing(self):
        self.assertNotIn("*", R.removal_script(""))


class RunnerTests(unittest.TestCase):

    def test_apply_runs_save_then_restore(self):
        reactor = MemoryReactor()
        spawned = []
        reactor.spawnProcess = lambda proto, exe, argv, env=None: spawned.append((proto, argv))
        runner = R.IptablesRunner(reactor)
        d = runner.apply(chains_for("firewall-nat"))
        proto, argv = spawned[0]
        self.assertEqual(argv, ["iptables-save"])
        proto.outReceived(SAVED.encode())
        proto.processEnded(_ended(0))
        proto, argv = spawned[1]
        self.assertEqual(argv, ["iptables-restore", "--noflush"])
        proto.processEnded(_ended(0))
        self.assertIsNone(self.successResultOf(d))

    def test_failure_names_the_command_and_its_error(self):
        reactor = MemoryReactor()
        spawned = []
        reactor.spawnProcess = lambda proto, exe, argv, env=None: spawned.append(proto)
        d = R.IptablesRunner(reactor).remove()
        spawned[0].errReceived(b"iptables-save: permission denied\n")
        spawned[0].processEnded(_ended(1))
        f = self.failureResultOf(d, R.RulesetError)
        self.assertIn("iptables-save failed (exit 1): iptables-save: permission denied",
                      str(f.value))


def _ended(code):
    from twisted.internet import error
    from twisted.python.failure import Failure
    if code == 0:
        return Failure(error.ProcessDone(0))
    return Failure(error.ProcessTerminated(code))


class KernelTests(unittest.TestCase):
    """The scripts as the kernel takes them, in a throwaway network namespace."""

    def setUp(self):
        # A precondition that fails fails the test: a skip would hide a regression.
        if os.geteuid() != 0:
            self.fail("needs root to load iptables rules in a namespace (run the tests as root)")
        missing = [tool for tool in ("unshare", "iptables-restore", "iptables-save")
                   if shutil.which(tool) is None]
        if missing:
            self.fail("needs %s (Debian packages util-linux, iptables)" % ", ".join(missing))

    def in_fresh_netns(self, scripts):
        """Apply each script in turn in one new namespace; the final iptables-save."""
        files = []
        for i, script in enumerate(scripts):
            path = self.mktemp()
            with open(path, "w") as f:
                f.write(script)
            files.append(path)
        shell = " && ".join("iptables-restore --noflush < %s" % p for p in files)
        done = subprocess.run(["unshare", "-n", "sh", "-c", shell + " && iptables-save"],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    def test_every_mode_loads_and_replaces_and_removes(self):
        for mode in MODES:
            first = R.restore_script(chains_for(mode))
            saved = self.in_fresh_netns([first])
            state = R.parse_saved(saved)
            for table, builtin, mine in R.JUMPS:
                self.assertEqual(state[table][1][(builtin, mine)], 1, (mode, table, builtin))
            # Re-applying on top keeps one jump each; removal leaves nothing of ours.
            again = R.restore_script(chains_for("firewall-nat-dmz"), saved)
            saved2 = self.in_fresh_netns([first, again])
            self.assertEqual(R.parse_saved(saved2)["filter"][1][("FORWARD", "AWX-FORWARD")], 1)
            self.assertIn("NFQUEUE", saved2)
            gone = self.in_fresh_netns([first, again, R.removal_script(saved2)])
            self.assertNotIn("AWX-", gone, mode)
