# -*- test-case-name: allworx.tests.core.test_tap -*-
"""`twistd allworx`: options and the service maker."""

import sys

from twisted.python import usage

from allworx.config import ConfigErrors, load_config


class Options(usage.Options):
    """Command line of `twistd allworx`."""

    synopsis = "[-c PATH] [--data-dir DIR]"
    longdesc = ("Run the whole office server (router, firewall, DHCP, DNS, mail, "
                "phones, directory, admin pages) from one config file.")
    optParameters = [
        ["config", "c", "tap.conf", "Path to the configuration file."],
        ["data-dir", None, None, "Runtime data directory (overrides [system] data_dir)."],
    ]

    def postOptions(self):
        try:
            self.loaded = load_config(self["config"])
        except ConfigErrors as e:
            # The same text as `allworx check`, and no traceback: the file is wrong.
            sys.stderr.write(e.report() + "\n")
            sys.stderr.write("allworx: refusing to start: %d error(s) in %s\n"
                             % (len(e.errors), self["config"]))
            raise SystemExit(1)


def settle_when_running(reactor):
    """Once every service has started: the collector tuned for a server (allworx.heap)."""
    from allworx.heap import settle_heap
    reactor.callWhenRunning(settle_heap)


def makeService(options):
    from twisted.internet import reactor

    from allworx.service import make_server
    server = make_server(options.loaded, data_dir=options["data-dir"])
    settle_when_running(reactor)
    return server
