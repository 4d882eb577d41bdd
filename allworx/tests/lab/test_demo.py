"""
Tests of `make run`'s laptop step (allworx.lab.demo) without the lab: the
laptop's client config fetched from the admin API through a fake `Lab.run`
that plays curl on the admin host; an earlier run's ACME certificate told
from this run's by its root. No root needed.
"""

import os
import stat
import subprocess

from twisted.trial import unittest

from allworx.config import parse_config
from allworx.lab import demo, runbanner
from allworx.lab.processes import LabError
from allworx.tests.confs import MINIMAL

KEYED = """[Interface]
Address = 192.168.99.10/32
DNS = 192.168.99.1
PrivateKey = aGVsbG8taGVsbG8taGVsbG8taGVsbG8taGVsbG8tIT0=

[Peer]
PublicKey = ScIhbkcxXib/g4wb+NyakX2odI9WRQZ4eokNDhb9kRg=
Endpoint = 203.0.113.46:51820
AllowedIPs = 192.168.2.0/24, 192.168.99.0/24, 192.168.3.0/24
"""
SHOWN = KEYED.replace(KEYED.split("PrivateKey = ")[1].split("\n")[0], "(shown once)")
CONF_URL = "https://allworx.example.com:8080/api/v1/devices/laptop/wireguard.conf"
KEY_URL = "https://allworx.example.com:8080/api/v1/devices/laptop/key"
UNVERIFIED = "curl: (60) SSL certificate problem: unable to get local issuer certificate"


class FakeCurl:
    """`Lab.run` for curl on the admin host: answers by (CA file, method, URL)."""

    def __init__(self, answers):
        self.answers = answers      # (ca, method, url) -> list of (returncode, stdout, stderr)
        self.calls = []

    def __call__(self, host, argv, check=True, timeout=30):
        assert host == "admin" and argv[0] == "curl" and not check, (host, argv, check)
        ca = argv[argv.index("--cacert") + 1]
        method = argv[argv.index("-X") + 1] if "-X" in argv else "GET"
        url = argv[-1]
        self.calls.append((ca, method, url, argv))
        replies = self.answers.get((ca, method, url)) or [(60, "", UNVERIFIED)]
        code, out, err = replies.pop(0) if len(replies) > 1 else replies[0]
        return subprocess.CompletedProcess(argv, code, out, err)


class FakeLab:
    def __init__(self, run, root="/state/acme/root.pem"):
        self.run = run
        self.root = root

    def acme_root(self):
        if self.root is None:
            raise LabError("pebble is not answering")
        return self.root


def config(acme=True):
    text = MINIMAL.replace("[web]", "[web]\nadmin_port = 8080")
    if "admin_port = 8080" not in text:
        text += "\n[web]\nadmin_port = 8080\n"
    if acme:
        text += "\n[tls]\nacme_directory = %s\n" % demo.ACME_DIRECTORY
    return parse_config(text)


class LaptopConfigTests(unittest.TestCase):

    def setUp(self):
        self.data = "/data"
        self.own_ca = "/data/tls/ca.crt"
        self.path = os.path.join(os.path.abspath(self.mktemp()), "laptop", "wireguard.conf")

    def fetch(self, curl, lab=None, acme=True, timeout=10):
        lab = lab or FakeLab(curl)
        clock = [0.0]
        self.said = []
        return demo.fetch_laptop_config(
            lab, config(acme), self.data, self.path, [], timeout=timeout,
            sleep=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0],
            say=self.said.append)

    def test_the_cas_that_may_sign_the_admin_port(self):
        self.assertEqual(demo.admin_cas(FakeLab(None), config(), self.data),
                         ["/state/acme/root.pem", self.own_ca])
        self.assertEqual(demo.admin_cas(FakeLab(None, root=None), config(), self.data),
                         [self.own_ca])
        self.assertEqual(demo.admin_cas(FakeLab(None), config(acme=False), self.data),
                         [self.own_ca])

    def test_verified_by_the_ca_that_signed_it_and_saved(self):
        # The ACME root does not verify (pebble has not issued yet); the server's own CA does.
        curl = FakeCurl({(self.own_ca, "GET", CONF_URL): [(0, KEYED, "")]})
        self.assertEqual(self.fetch(curl), KEYED)
        with open(self.path) as f:
            self.assertEqual(f.read(), KEYED)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual([c[:3] for c in curl.calls],
                         [("/state/acme/root.pem", "GET", CONF_URL), (self.own_ca, "GET", CONF_URL)])
        for _, _, _, argv in curl.calls:
            self.assertIn("allworx.example.com:8080:192.168.2.254",
                          argv[argv.index("--resolve") + 1])
            self.assertFalse({"-k", "--insecure"} & set(argv), argv)

    def test_a_key_shown_before_is_made_anew(self):
        root = "/state/acme/root.pem"
        curl = FakeCurl({(root, "GET", CONF_URL): [(0, SHOWN, ""), (0, KEYED, "")],
                         (root, "POST", KEY_URL): [(0, '{"public_key": "x"}', "")]})
        self.assertEqual(self.fetch(curl), KEYED)
        self.assertEqual([c[1:3] for c in curl.calls],
                         [("GET", CONF_URL), ("POST", KEY_URL), ("GET", CONF_URL)])
        post = curl.calls[1][3]
        self.assertEqual(post[post.index("-H"):post.index("-H") + 4],
                         ["-H", "Content-Type: application/json", "--data", "{}"])

    def test_tries_until_the_server_answers(self):
        curl = FakeCurl({(self.own_ca, "GET", CONF_URL): [
            (7, "", "curl: (7) Failed to connect"), (7, "", "curl: (7) Failed to connect"),
            (0, KEYED, "")]})
        self.assertEqual(self.fetch(curl, acme=False), KEYED)
        self.assertEqual(len(curl.calls), 3)

    def test_never_verified_says_so_and_saves_nothing(self):
        curl = FakeCurl({})
        self.assertIsNone(self.fetch(curl, timeout=6))
        self.assertFalse(os.path.exists(self.path))
        self.assertEqual(len(curl.calls), 6)        # both CAs, three times
        self.assertEqual(self.said, [
            " laptop: no config from %s (with /state/acme/root.pem: %s; with %s: %s); the Users "
            "page offers it" % (CONF_URL, UNVERIFIED, self.own_ca, UNVERIFIED)])

    def test_an_answer_that_is_no_config_is_not_taken(self):
        curl = FakeCurl({(self.own_ca, "GET", CONF_URL): [(0, "<html>login</html>", "")]})
        self.assertIsNone(self.fetch(curl, acme=False, timeout=2))
        self.assertFalse(os.path.exists(self.path))
        self.assertIn("the answer was no client config with a key: '<html>", self.said[0])

    def test_a_key_that_cannot_be_made_anew(self):
        curl = FakeCurl({(self.own_ca, "GET", CONF_URL): [(0, SHOWN, "")],
                         (self.own_ca, "POST", KEY_URL): [(22, "", "curl: (22) 409")]})
        self.assertIsNone(self.fetch(curl, acme=False, timeout=2))
        self.assertIn("curl: (22) 409", self.said[0])


class StaleAcmeCertificateTests(unittest.TestCase):
    """Pebble makes a new root at each start: an earlier run's certificate is dropped."""

    def setUp(self):
        from allworx.certificates import make_ca, make_leaf
        self.data = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.data, "tls"))
        self.roots = {}
        for name in ("earlier", "now"):
            key, cert = make_ca("pebble root %s" % name, 1.8e9)
            self.roots[name] = (key, cert, os.path.join(self.data, name + ".pem"))
            with open(self.roots[name][2], "wb") as f:
                f.write(cert)
        key, cert, _ = self.roots["earlier"]
        self.acme = os.path.join(self.data, "tls", "acme.pem")
        leaf_key, leaf = make_leaf(key, cert, ["allworx.example.com"], [], 1.8e9)
        with open(self.acme, "wb") as f:
            f.write(leaf_key + leaf)

    def test_known_by_its_root(self):
        self.assertTrue(demo.stale_acme_certificate(self.data, self.roots["now"][2]))
        self.assertFalse(demo.stale_acme_certificate(self.data, self.roots["earlier"][2]))
        os.unlink(self.acme)
        self.assertFalse(demo.stale_acme_certificate(self.data, self.roots["now"][2]))

    def test_removed_before_the_server_starts(self):
        lab = FakeLab(None, root=self.roots["earlier"][2])
        self.assertIsNone(demo.drop_stale_acme_certificate(lab, config(), self.data))
        self.assertTrue(os.path.exists(self.acme))
        self.assertIsNone(demo.drop_stale_acme_certificate(
            FakeLab(None, root=self.roots["now"][2]), config(acme=False), self.data))
        self.assertTrue(os.path.exists(self.acme))
        said = demo.drop_stale_acme_certificate(FakeLab(None, root=self.roots["now"][2]),
                                                config(), self.data)
        self.assertIn("removed %s: an earlier run's pebble issued it" % self.acme, said)
        self.assertFalse(os.path.exists(self.acme))
        said = demo.drop_stale_acme_certificate(FakeLab(None, root=None), config(), self.data)
        self.assertIn("pebble is not answering", said)


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


class RuntimeConfigTests(unittest.TestCase):
    """`make run` runs the server on a copy of the example tap.conf."""

    def test_a_copy_in_the_state_directory(self):
        source = os.path.join(self.mktemp())
        with open(source, "w") as f:
            f.write("# the example\n[system]\nhostname = x\n")
        os.chmod(source, 0o644)
        before = os.stat(source)
        state = self.mktemp()
        os.makedirs(state)
        path = demo.runtime_config(source, state)
        self.assertEqual(path, os.path.join(state, "tap.conf"))
        with open(path) as f:
            self.assertEqual(f.read(), "# the example\n[system]\nhostname = x\n")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        # What the run does to its config (the branch's sections, the admin
        # pages' changes) lands in the copy; the example is untouched.
        demo.join_branch(path, self.mktemp(), self.mktemp(), "")
        with open(path) as f:
            self.assertIn("[site branch]", f.read())
        with open(source) as f:
            self.assertEqual(f.read(), "# the example\n[system]\nhostname = x\n")
        after = os.stat(source)
        self.assertEqual((after.st_mtime_ns, after.st_ino), (before.st_mtime_ns, before.st_ino))

    def test_a_new_copy_each_run(self):
        source = self.mktemp()
        state = self.mktemp()
        os.makedirs(state)
        with open(source, "w") as f:
            f.write("[system]\n")
        path = demo.runtime_config(source, state)
        with open(path, "a") as f:
            f.write("changed by the pages\n")
        demo.runtime_config(source, state)
        with open(path) as f:
            self.assertEqual(f.read(), "[system]\n")


class Proc:
    def __init__(self, code=None):
        self.code = code

    def poll(self):
        return self.code


class BannerTests(unittest.TestCase):

    def test_waits_for_the_ready_line(self):
        path = self.mktemp()
        now = [0.0]

        def sleep(seconds):
            now[0] += seconds
            if now[0] >= 1:
                with open(path, "w") as f:
                    f.write("... allworx ready: 9 services\n")
        self.assertTrue(demo.wait_for_text(path, demo.READY, Proc(), 5, sleep=sleep,
                                           clock=lambda: now[0]))
        self.assertFalse(demo.wait_for_text(self.mktemp(), demo.READY, Proc(), 5,
                                            sleep=sleep, clock=lambda: now[0]))
        self.assertFalse(demo.wait_for_text(path + "x", demo.READY, Proc(1), 5))
        # An earlier run's ready line, before `offset`, does not count.
        size = os.path.getsize(path)
        self.assertFalse(demo.wait_for_text(path, demo.READY, Proc(), 5, offset=size,
                                            sleep=lambda s: now.__setitem__(0, now[0] + s),
                                            clock=lambda: now[0]))

    def test_login(self):
        from allworx.passwords import hash_password
        self.assertIn("user admin, password admin-demo (the demo's",
                      demo.login_text(hash_password("admin-demo")))
        text = demo.login_text(hash_password("other"))
        self.assertNotIn("admin-demo", text)
        self.assertIn("allworx passwd", text)

    def test_everything_a_new_user_needs(self):
        text = demo.banner(8080, 8080, "/d/run-data", "/run/allworx-lab/awx/tap.conf",
                           demo.office_phones_text({"phone1": "started on 192.168.2.11"}),
                           login=demo.login_text("$argon2id$...", verify=lambda h, p: True),
                           source="/repo/tap.conf", log_path="/d/run-data/allworx.log",
                           wan_ip="203.0.113.23")
        for part in ("https://127.0.0.1:8080/", "user admin, password admin-demo",
                     "/run/allworx-lab/awx/tap.conf: a copy of /repo/tap.conf",
                     "never that file", "Server log:    /d/run-data/allworx.log",
                     "Logs page", "WAN address:   203.0.113.23",
                     "swaks --server 203.0.113.23 --to alice@example.com",
                     "allworx lab call phone1 102",
                     "phone1   alice  extension 101 at 192.168.2.254: started on 192.168.2.11",
                     "phone2   bob    extension 102 at 192.168.2.254: not started"):
            self.assertIn(part, text)
        self.assertNotIn("<WAN address>", text)
        # It ends with its rule: nothing of it comes after.
        self.assertTrue(text.rstrip("\n").endswith("=" * 80))
        linked = runbanner.command_text(which=lambda name: "/usr/local/bin/allworx",
                                        realpath=lambda path: "/r/.venv/bin/allworx")
        self.assertIn(" Command:       /usr/local/bin/allworx (a link to /r/.venv/bin/allworx)",
                      demo.banner(8080, 8080, "/d", "/c", command=linked))
        missing = runbanner.command_text(which=lambda name: None, venv_script="/r/.venv/bin/allworx")
        self.assertIn("not on PATH: run the lines below with /r/.venv/bin/allworx", missing)
        unknown = demo.banner(8080, 8080, "/d", "/c", wan_ip=None)
        self.assertIn("allworx lab exec server ip -br addr show wan0", unknown)

    def test_the_banners_commands_are_the_clis(self):
        """Each `allworx ...` line of the banner parses as the command line does."""
        from allworx.tests.core.test_readme import assert_cli_accepts
        text = demo.banner(8080, 8080, "/d", "/c", demo.office_phones_text({}),
                           wan_ip="203.0.113.23")
        commands = [line.strip().split("  #")[0].rstrip(" \\").strip()
                    for line in text.splitlines() if line.strip().startswith("allworx lab ")]
        self.assertGreater(len(commands), 8)
        for command in commands:
            assert_cli_accepts(self, command)
