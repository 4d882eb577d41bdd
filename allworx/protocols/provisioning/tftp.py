# -*- test-case-name: allworx.tests.provisioning.test_tftp -*-
"""
TFTP for phones that fetch their files only that way: RFC 1350, read-only,
with the option extension (RFC 2347), blksize 8-65464 (RFC 2348), timeout
and tsize (RFC 2349). A read request on port 69 starts a transfer from a
port of its own (the server's transfer ID); each block waits for its ACK
and is sent again on a timeout, a few times, before the transfer is given
up. One transfer per client address and port: a repeated request while it
runs is the same request and is not answered twice.

`Transfer` is the sending side as a state machine on an injected clock;
`TftpServer` and `TransferProtocol` put it on sockets. What a name gives
comes from `files.Provisioner` (403 -> error 2, 404 -> error 1).
"""

import struct

from twisted.internet import protocol
from twisted.logger import Logger

log = Logger()

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
# Error codes (RFC 1350, 2347).
UNDEFINED, NOT_FOUND, ACCESS, DISK_FULL, ILLEGAL, UNKNOWN_TID, EXISTS, NO_USER, OPTIONS = range(9)
BLKSIZE_MIN, BLKSIZE_MAX, DEFAULT_BLKSIZE = 8, 65464, 512
TIMEOUT_MIN, TIMEOUT_MAX = 1, 255
DEFAULT_TIMEOUT = 3.0
RETRIES = 5
MAX_TRANSFERS = 64          # at once, in all
MAX_PER_HOST = 4            # at once, from one address


class TftpError(Exception):
    """A request that is answered with an ERROR packet: code and message."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code
        self.message = message


def error_packet(code, message):
    return struct.pack("!HH", ERROR, code) + message.encode("ascii", "replace") + b"\0"


def data_packet(block, payload):
    return struct.pack("!HH", DATA, block & 0xFFFF) + payload


def oack_packet(options):
    return struct.pack("!H", OACK) + b"".join(
        k.encode("ascii") + b"\0" + str(v).encode("ascii") + b"\0" for k, v in options)


def parse_request(data):
    """(opcode, filename, mode, {option: value}) of an RRQ or WRQ; TftpError else."""
    if len(data) < 4:
        raise TftpError(ILLEGAL, "packet too short")
    opcode = struct.unpack("!H", data[:2])[0]
    if opcode not in (RRQ, WRQ):
        raise TftpError(ILLEGAL, "not a request")
    if not data.endswith(b"\0"):
        raise TftpError(ILLEGAL, "request not terminated")
    fields = data[2:-1].split(b"\0")
    if len(fields) < 2 or len(fields) % 2:
        raise TftpError(ILLEGAL, "malformed request")
    try:
        texts = [f.decode("ascii") for f in fields]
    except UnicodeDecodeError:
        raise TftpError(ILLEGAL, "request not in ASCII")
    options = {}
    for key, value in zip(texts[2::2], texts[3::2]):
        options[key.lower()] = value
    return opcode, texts[0], texts[1].lower(), options


def negotiate(options, size):
    """(blksize, timeout, [(option, value) to acknowledge]) for a request's options
    (unknown or invalid ones are left out, as RFC 2347 allows); TftpError for a
    block size below 8."""
    blksize, timeout, acked = DEFAULT_BLKSIZE, DEFAULT_TIMEOUT, []
    if "blksize" in options:
        try:
            wanted = int(options["blksize"])
        except ValueError:
            raise TftpError(OPTIONS, "blksize is not a number")
        if wanted < BLKSIZE_MIN:
            raise TftpError(OPTIONS, "blksize below %d" % BLKSIZE_MIN)
        blksize = min(wanted, BLKSIZE_MAX)
        acked.append(("blksize", blksize))
    if "timeout" in options:
        try:
            wanted = int(options["timeout"])
        except ValueError:
            wanted = 0
        if TIMEOUT_MIN <= wanted <= TIMEOUT_MAX:
            timeout = float(wanted)
            acked.append(("timeout", wanted))
    if "tsize" in options:
        acked.append(("tsize", size))
    return blksize, timeout, acked


def netascii(body):
    """RFC 764's NVT ASCII: CR LF for a line end, CR NUL for a lone CR."""
    return body.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


class Transfer:
    """
    Sending one file: `send(packet)` to the client, `clock` for timeouts,
    `finished(ok, why)` called once at the end. Starts with an OACK when
    options were acknowledged (then waits for ACK 0), else with DATA 1.
    """

    def __init__(self, clock, send, body, blksize=DEFAULT_BLKSIZE, timeout=DEFAULT_TIMEOUT,
                 acked=(), retries=RETRIES, finished=None):
        self.clock = clock
        self.send = send
        self.body = body
        self.blksize = blksize
        self.timeout = timeout
        self.acked = list(acked)
        self.retries = retries
        self.finished = finished or (lambda ok, why: None)
        self.block = 0          # the block sent last (0: the OACK), absolute, no wrap
        self.last = (len(body) // blksize) + 1      # a short (maybe empty) block ends it
        self.packet = None
        self.tries = 0
        self.timer = None
        self.done = False

    def start(self):
        if self.acked:
            self._transmit(oack_packet(self.acked))
        else:
            self._next()

    def _next(self):
        self.block += 1
        start = (self.block - 1) * self.blksize
        self._transmit(data_packet(self.block, self.body[start:start + self.blksize]))

    def _transmit(self, packet):
        self.packet, self.tries = packet, 0
        self.send(packet)
        self._arm()

    def _arm(self):
        self._cancel()
        self.timer = self.clock.callLater(self.timeout, self._timed_out)

    def _cancel(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _timed_out(self):
        self.timer = None
        if self.tries >= self.retries:
            self._end(False, "no acknowledgement of block %d after %d tries"
                      % (self.block, self.retries + 1))
            return
        self.tries += 1
        self.send(self.packet)
        self._arm()

    def ack(self, number):
        """An ACK of block `number` (16 bits) arrived."""
        if self.done or number != self.block & 0xFFFF:
            # An old ACK (a duplicate, or one that crossed a resend): answering it
            # would send every block twice from then on (the Sorcerer's Apprentice).
            return
        if self.block == self.last:
            self._end(True, "sent")
        else:
            self._next()

    def error(self, code, message):
        """The client gave up (an ERROR packet, e.g. 8 refusing the options)."""
        if not self.done:
            self._end(False, "the client ended it: error %d %s" % (code, message))

    def abort(self, why):
        if not self.done:
            self._end(False, why)

    def _end(self, ok, why):
        self.done = True
        self._cancel()
        self.finished(ok, why)


class TransferProtocol(protocol.DatagramProtocol):
    """The transfer's own port: packets from its client drive the Transfer;
    anyone else gets error 5 (unknown transfer ID)."""

    noisy = False

    def __init__(self, peer):
        self.peer = peer
        self.transfer = None

    def send(self, packet):
        if self.transport is not None:
            self.transport.write(packet, self.peer)

    def datagramReceived(self, data, addr):
        if addr != self.peer:
            self.transport.write(error_packet(UNKNOWN_TID, "unknown transfer ID"), addr)
            return
        if len(data) < 4 or self.transfer is None:
            return
        opcode, number = struct.unpack("!HH", data[:4])
        if opcode == ACK:
            self.transfer.ack(number)
        elif opcode == ERROR:
            self.transfer.error(number, data[4:].split(b"\0", 1)[0].decode("ascii", "replace"))
        else:
            self.send(error_packet(ILLEGAL, "only ACK or ERROR expected"))
            self.transfer.abort("the client sent opcode %d" % opcode)


class TftpServer(protocol.DatagramProtocol):
    """
    Port 69: read requests from LAN peers (`is_lan(host)`), rate-limited by
    the provisioner per address. `listen(protocol)` opens a transfer's own
    port (on the LAN address) and returns it.
    """

    noisy = False

    def __init__(self, provisioner, clock, listen, is_lan, timeout=DEFAULT_TIMEOUT,
                 retries=RETRIES):
        self.provisioner = provisioner
        self.clock = clock
        self.listen = listen
        self.is_lan = is_lan
        self.timeout = timeout
        self.retries = retries
        self.transfers = {}         # (host, port) -> (Transfer, its port)

    def datagramReceived(self, data, addr):
        host = addr[0]
        if not self.is_lan(host):
            log.debug("tftp: request from {peer}, not on the LAN: ignored", peer=host)
            return
        if addr in self.transfers:
            return      # the same request again: its transfer answers it
        if not self.provisioner.allow(host):
            log.debug("tftp: {peer} asks too often: dropped", peer=host)
            return
        try:
            self._request(data, addr)
        except TftpError as e:
            log.info("tftp: {peer}: error {code} {message}", peer=host, code=e.code,
                     message=e.message)
            self.transport.write(error_packet(e.code, e.message), addr)

    def _request(self, data, addr):
        opcode, name, mode, options = parse_request(data)
        if opcode == WRQ:
            raise TftpError(ACCESS, "this server only gives files")
        if mode not in ("octet", "netascii"):
            raise TftpError(ILLEGAL, "mode %s not supported" % mode)
        if len(self.transfers) >= MAX_TRANSFERS or sum(
                1 for h, _ in self.transfers if h == addr[0]) >= MAX_PER_HOST:
            raise TftpError(UNDEFINED, "busy, try again")
        answer = self.provisioner.fetch(name[1:] if name.startswith("/") else name,
                                        addr[0], via="tftp")
        if answer.code == 403:
            raise TftpError(ACCESS, answer.why)
        if answer.code != 200:
            raise TftpError(NOT_FOUND, answer.why or "file not found")
        body = netascii(answer.body) if mode == "netascii" else answer.body
        blksize, timeout, acked = negotiate(options, len(body))
        if "timeout" not in dict(acked):
            timeout = self.timeout
        proto = TransferProtocol(addr)
        try:
            port = self.listen(proto)
        except OSError as e:
            raise TftpError(UNDEFINED, "cannot open a transfer port: %s" % e)
        transfer = Transfer(self.clock, proto.send, body, blksize, timeout, acked,
                            self.retries, lambda ok, why: self._finished(addr, name, ok, why))
        proto.transfer = transfer
        self.transfers[addr] = (transfer, port)
        transfer.start()

    def _finished(self, addr, name, ok, why):
        transfer, port = self.transfers.pop(addr, (None, None))
        if port is not None:
            port.stopListening()
        if ok:
            log.debug("tftp: {name} sent to {peer}", name=name, peer=addr[0])
        else:
            log.info("tftp: {name} to {peer} not finished: {why}", name=name, peer=addr[0],
                     why=why)

    def stop(self):
        """End every transfer (the service stops)."""
        for transfer, _ in list(self.transfers.values()):
            transfer.abort("the service stopped")
