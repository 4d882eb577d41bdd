# -*- test-case-name: allworx.tests.ntp.test_labtime -*-
"""
The lab ISP's time server: a small SNTP server (RFC 4330) of the lab's own,
at 203.0.113.1 in the `isp` namespace, that the office's server polls
through `[ntp] servers` (SPEC 6, 12).

Why our own: Debian's NTP servers (chrony, ntpsec, openntpd) start a daemon
on the host when their package is installed, and the lab must not touch the
host's clock or services. This one only reads the host clock, never sets it.

It plays the ISP's reference clock: stratum 1, reference id `LAB`, leap
indicator 0, whatever the host kernel thinks of the clock, since in the lab
the host clock is the truth by definition. `DIR/ntp-offset`, when present,
holds seconds (e.g. `2.5`) added to every time it tells, read at each
request: a test makes the ISP's clock differ from the office's host clock
and sees the office's server measure and serve the difference.

    python -m allworx.lab.timeserver --dir STATE/isp [--port 123]
"""

import argparse
import os
import sys

from twisted.internet import protocol
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from allworx.protocols.ntp.wire import PACKET, short, to_ntp

log = Logger()

OFFSET_FILE = "ntp-offset"
STRATUM = 1
REFID = b"LAB\0"


def read_offset(directory):
    """The seconds `DIR/ntp-offset` asks to add (0 when absent or unreadable)."""
    try:
        with open(os.path.join(directory, OFFSET_FILE)) as f:
            return float(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0.0


def reply(data, received, transmit, offset=0.0):
    """The answer to an SNTP client request `data` (None for anything else)."""
    if len(data) < PACKET.size:
        return None
    version, mode = (data[0] >> 3) & 7, data[0] & 7
    if mode != 3 or not 1 <= version <= 4:
        return None
    out = PACKET.pack((version << 3) | 4, STRATUM, max(6, min(data[2], 10)), -20,
                      0, short(0.0001), REFID, to_ntp(int(received + offset)), 0,
                      to_ntp(received + offset), to_ntp(transmit + offset))
    return out[:24] + data[40:48] + out[32:]


class LabTimeServer(protocol.DatagramProtocol):
    """Answers every client request from the host clock plus the offset file's seconds."""

    noisy = False

    def __init__(self, reactor, directory):
        self.reactor = reactor
        self.directory = directory

    def datagramReceived(self, data, addr):
        received = self.reactor.seconds()
        answer = reply(data, received, self.reactor.seconds(), read_offset(self.directory))
        if answer is None:
            log.info("not an SNTP request from {peer}", peer=addr[0])
            return
        self.transport.write(answer, addr)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m allworx.lab.timeserver",
                                     description="The lab ISP's SNTP server (stratum 1).")
    parser.add_argument("--dir", required=True, help="where ntp-offset may be (the ISP's state)")
    parser.add_argument("--port", type=int, default=123)
    args = parser.parse_args(argv)
    from twisted.internet import reactor
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    reactor.listenUDP(args.port, LabTimeServer(reactor, args.dir))
    log.info("lab time server on udp {port}, stratum {stratum}", port=args.port, stratum=STRATUM)
    reactor.run()


if __name__ == "__main__":
    main()
