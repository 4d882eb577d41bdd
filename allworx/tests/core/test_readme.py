"""
The README and the docs as a new user reads them: every command in a shell
block of README.md is one the command line accepts as printed (`allworx ...`
parsed by the CLI's own parsers, `make TARGET` a target of the Makefile),
and the docs, the README and the page templates name no file outside the
repository.
"""

import contextlib
import io
import os
import re
import shlex

from twisted.trial import unittest

from allworx import cli
from allworx.lab import cli as labcli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def read(*parts):
    with open(os.path.join(REPO, *parts)) as f:
        return f.read()


def shell_blocks(markdown):
    """The lines of each ```sh block, continuation lines joined."""
    lines = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip():
                lines.append(line.strip())
    return lines


def inline_commands(markdown, program="allworx"):
    """`allworx ...` in inline code spans, but not templates (COMMAND, USER ...)."""
    found = []
    for span in re.findall(r"`([^`\n]+)`", markdown):
        if span.startswith(program + " ") and not re.search(r"\b[A-Z]{3,}\b", span):
            found.append(span)
    return found


def make_targets():
    return set(re.findall(r"^([a-z][a-z-]*):", read("Makefile"), re.M))


def assert_cli_accepts(testcase, line):
    """Fail `testcase` unless `allworx ...` `line` parses as the CLI parses it."""
    argv = shlex.split(line, comments=True)
    testcase.assertEqual(argv[0], "allworx", line)
    first, rest = (argv[1], argv[2:]) if len(argv) > 1 else (None, [])
    if first in ("-h", "--help", "--version") or (first == "help" and not rest):
        return
    if first == "help":
        testcase.assertIn(rest[0], cli.COMMANDS, line)
        return
    testcase.assertIn(first, cli.COMMANDS, line)
    parser = labcli._parser() if first == "lab" else cli.PARSERS[first]()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(rest)
    except SystemExit as e:
        testcase.assertIn(e.code, (0, None), "%s: %s" % (line, err.getvalue()))


class ReadmeCommandTests(unittest.TestCase):

    def test_every_shell_line_works_as_printed(self):
        lines = shell_blocks(read("README.md"))
        self.assertIn("allworx lab exec pc1 dhclient -v eth0", lines)
        self.assertIn("allworx lab call phone1 102", [l.split("#")[0].strip() for l in lines])
        targets = make_targets()
        for line in lines:
            words = shlex.split(line, comments=True)
            if words[0] == "make":
                self.assertIn(words[1], targets, line)
            elif words[0] == "allworx":
                assert_cli_accepts(self, line)
            else:
                self.fail("a README command that is neither make nor allworx: %r" % line)

    def test_inline_commands_parse(self):
        commands = inline_commands(read("README.md"))
        self.assertIn("allworx check tap.conf", commands)
        for command in commands:
            assert_cli_accepts(self, command)

    def test_a_bad_command_is_caught(self):
        self.assertRaises(self.failureException, assert_cli_accepts, self,
                          "allworx lab exec nowhere true")
        self.assertRaises(self.failureException, assert_cli_accepts, self, "allworx frob")
        self.assertRaises(self.failureException, assert_cli_accepts, self,
                          "allworx lab call phone1")

    def test_make_targets_named_in_the_readme_exist(self):
        targets = make_targets()
        for target in re.findall(r"`make ([a-z-]+)`", read("README.md")):
            self.assertIn(target, targets)


class StandAloneDocsTests(unittest.TestCase):
    """The docs, the README and the pages name nothing outside the repository."""

    def documents(self):
        yield "README.md"
        for name in sorted(os.listdir(os.path.join(REPO, "docs"))):
            yield os.path.join("docs", name)
        templates = os.path.join("allworx", "protocols", "web", "templates")
        for name in sorted(os.listdir(os.path.join(REPO, templates))):
            yield os.path.join(templates, name)

    def test_no_path_outside_the_repository(self):
        found = []
        for path in self.documents():
            if not os.path.isfile(os.path.join(REPO, path)):
                continue
            here = os.path.dirname(os.path.join(REPO, path))
            for n, line in enumerate(read(path).splitlines(), 1):
                # A relative path up from the document must name a file of the repository.
                for relative in re.findall(r"(?<![\w/.])(?:\.\./)+[\w./-]*", line):
                    target = os.path.normpath(os.path.join(here, relative))
                    if not ((target + os.sep).startswith(REPO + os.sep)
                            and os.path.exists(target)):
                        found.append("%s:%d: %s" % (path, n, line.strip()))
                if "/work/" in line:
                    found.append("%s:%d: %s" % (path, n, line.strip()))
        self.assertEqual(found, [])
