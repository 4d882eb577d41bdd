"""
The layout's rules, checked on the source: no import circle (module or
function level), nothing imported from a higher layer, no oversized module,
and every `test-case-name` header names a module that exists.
"""

import ast
import importlib.util
import os
import re

from twisted.trial import unittest

import allworx

PACKAGE_DIR = os.path.dirname(os.path.abspath(allworx.__file__))

# Modules allowed over MAX_LINES: wire codecs and declarative schemas.
MAX_LINES = 600
OVERSIZE_ALLOWED = {
    "allworx.config.model",        # the declarative schema of tap.conf
}

# Layers, lowest first. A module may import modules of its own layer or below.
SHARED = 0      # allworx/*.py pieces every layer uses, and the config
CORE = 1        # the office, its password checker, the guards, the service base
SERVICES = 2    # allworx.protocols.*, allworx.routing.*
SERVER = 3      # allworx.service (the wiring), tap, cli, the lab


def layer(module):
    if module in ("allworx.service", "allworx.tap", "allworx.cli") or module.startswith("allworx.lab"):
        return SERVER
    if module.startswith(("allworx.protocols.", "allworx.routing.")):
        return SERVICES
    if module in ("allworx.office", "allworx.auth", "allworx.guards", "allworx.servicebase"):
        return CORE
    return SHARED


def package_of(module):
    """The protocol or routing package a module belongs to (e.g. allworx.protocols.dns)."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] in ("protocols", "routing"):
        return ".".join(parts[:3])
    return None


# Imports across service packages that the design makes: the WAN client uses
# the DHCP codec and the network service runs the WAN client; SIP drives the
# voice pieces; the web shows the zone as built.
ACROSS_ALLOWED = {
    ("allworx.routing.wanclient", "allworx.protocols.dhcp.codec"),
    ("allworx.routing.network", "allworx.routing.wanclient"),
    ("allworx.protocols.sip", "allworx.protocols.voice"),
    ("allworx.protocols.web", "allworx.protocols.dns.zone"),
}


def source_modules():
    """{module name: path} of every module of the package except the tests."""
    out = {}
    root = os.path.dirname(PACKAGE_DIR)
    for dirpath, dirnames, filenames in os.walk(PACKAGE_DIR):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "tests")]
        for name in filenames:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                if module.endswith(".__init__"):
                    module = module[:-len(".__init__")]
                out[module] = path
    return out


def imports_of(path, module, known):
    """Every allworx module `path` imports, at any level (functions included)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")
                parent = parent[:len(parent) - node.level + (1 if is_package else 0)]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                candidate = base + "." + alias.name
                found.add(candidate if candidate in known else base)
    return {name for name in found if name in known and name != module}


class ArchitectureTests(unittest.TestCase):

    def setUp(self):
        self.modules = source_modules()
        known = set(self.modules)
        self.graph = {m: imports_of(p, m, known) for m, p in self.modules.items()}

    def test_no_import_circle(self):
        circles = []
        state = {}

        def visit(module, stack):
            state[module] = "open"
            stack.append(module)
            for target in sorted(self.graph[module]):
                if state.get(target) == "open":
                    circles.append(" -> ".join(stack[stack.index(target):] + [target]))
                elif target not in state:
                    visit(target, stack)
            stack.pop()
            state[module] = "done"

        for module in sorted(self.graph):
            if module not in state:
                visit(module, [])
        self.assertEqual(circles, [], "import circles:\n" + "\n".join(circles))

    def test_nothing_from_a_higher_layer(self):
        upward = ["%s imports %s" % (m, t) for m, targets in sorted(self.graph.items())
                  for t in sorted(targets) if layer(t) > layer(m)]
        self.assertEqual(upward, [], "\n".join(upward))

    def test_service_packages_keep_to_themselves(self):
        """A protocol does not reach into another's modules (the wiring hands objects over)."""
        across = []
        for module, targets in sorted(self.graph.items()):
            mine = package_of(module)
            if mine is None:
                continue
            for target in sorted(targets):
                theirs = package_of(target)
                if theirs is None or theirs == mine:
                    continue
                if not any(mine == a and (target == b or target.startswith(b + "."))
                           for a, b in ACROSS_ALLOWED):
                    across.append("%s imports %s" % (module, target))
        self.assertEqual(across, [], "\n".join(across))

    def test_modules_are_small(self):
        big = []
        for module, path in sorted(self.modules.items()):
            with open(path) as f:
                lines = sum(1 for _ in f)
            if lines > MAX_LINES and module not in OVERSIZE_ALLOWED:
                big.append("%s: %d lines" % (module, lines))
        self.assertEqual(big, [], "\n".join(big))

    def test_test_case_names_exist(self):
        header = re.compile(r"test-case-name:\s*([\w.]+(?:\s*,\s*[\w.]+)*)")
        missing = []
        for dirpath, dirnames, filenames in os.walk(PACKAGE_DIR):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in filenames:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    head = f.read(400)
                m = header.search(head)
                if not m:
                    continue
                for target in m.group(1).split(","):
                    target = target.strip()
                    try:
                        spec = importlib.util.find_spec(target)
                    except ModuleNotFoundError:
                        spec = None
                    if spec is None:
                        missing.append("%s names %s" % (os.path.relpath(path, PACKAGE_DIR), target))
        self.assertEqual(missing, [], "\n".join(missing))
