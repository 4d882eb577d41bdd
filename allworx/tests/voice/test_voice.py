"""Tests of the voice pieces: G.711, WAV, RTP and the jitter buffer, DTMF, SDP, prompts."""

import math
import os
import socket
import struct

from hypothesis import given, settings, strategies as st
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from allworx.protocols.voice import dtmf

from allworx.protocols.voice import g711
from allworx.protocols.voice.greeting import PROMPTS, PromptLibrary, tone
from allworx.protocols.voice.pool import pool_of
from allworx.protocols.voice.rtp import JitterBuffer, RtpEndpoint, RtpError, RtpPacket
from allworx.protocols.voice.sdp import SdpError, make_answer, parse_offer
from allworx.protocols.voice.wav import WavError, from_wav, to_wav
from allworx.tests.siphelpers import FakeUdpPort, offer


def packet(seq, payload=b"\xff" * 160, pt=0, ts=None):
    return RtpPacket(pt, seq & 0xFFFF, ts if ts is not None else seq * 160, 1234, payload)


class G711Tests(unittest.TestCase):

    def test_known_codes(self):
        self.assertEqual(g711.encode(struct.pack("<h", 0), g711.PCMU), b"\xff")
        self.assertEqual(g711.encode(struct.pack("<h", 0), g711.PCMA), b"\xd5")
        self.assertEqual(struct.unpack("<h", g711.decode(b"\x00", g711.PCMU))[0], -32124)
        self.assertEqual(struct.unpack("<h", g711.decode(b"\x80", g711.PCMU))[0], 32124)

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=200), st.sampled_from([0, 8]))
    def test_round_trip_error_is_bounded(self, samples, pt):
        pcm = struct.pack("<%dh" % len(samples), *samples)
        back = struct.unpack("<%dh" % len(samples), g711.decode(g711.encode(pcm, pt), pt))
        for a, b in zip(samples, back):
            self.assertLessEqual(abs(a - b), max(16, abs(a) // 16 + 8) * 2 + 1100 * (abs(a) > 31000))

    def test_codes_decode_and_encode_back(self):
        for pt in (0, 8):
            for code in range(256):
                pcm = g711.decode(bytes([code]), pt)
                again = g711.encode(pcm, pt)[0]
                self.assertEqual(g711.decode(bytes([again]), pt), pcm)


class WavTests(unittest.TestCase):

    def test_round_trip_and_resample(self):
        pcm = tone(440, 500)
        self.assertEqual(from_wav(to_wav(pcm)), pcm)
        wide = to_wav(tone(440, 500) * 2, rate=16000)
        self.assertAlmostEqual(len(from_wav(wide)) / 16000.0, 0.5, places=2)
        self.assertRaises(WavError, from_wav, b"RIFF....WAVEjunk")


class RtpTests(unittest.TestCase):

    def test_parse_and_build(self):
        p = RtpPacket(8, 65535, 4000000000, 99, b"abc", True)
        q = RtpPacket.parse(p.to_bytes())
        self.assertEqual(q, p)
        csrc_ext = bytes([0x92, 0x00, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2]) + b"\0" * 4 + \
            b"\xbe\xde\x00\x01" + b"\0" * 4 + b"xyz"
        self.assertEqual(RtpPacket.parse(csrc_ext).payload, b"xyz")
        for bad in (b"", b"\x80" * 5, b"\x40" + b"\0" * 11, bytes([0xA0]) + b"\0" * 11 + b"\x00"):
            self.assertRaises(RtpError, RtpPacket.parse, bad)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=80))
    def test_garbage(self, data):
        try:
            RtpPacket.parse(data)
        except RtpError:
            pass

    def test_jitter_buffer_reorders_and_wraps(self):
        jb = JitterBuffer(depth=4)
        order = [65533, 65535, 65534, 0, 2, 1, 3]
        out = []
        for s in order:
            out += [p.seq for p in jb.push(packet(s))]
        self.assertEqual(out, [65533, 65534, 65535, 0, 1, 2, 3])
        self.assertEqual(jb.lost, 0)
        self.assertEqual(jb.push(packet(1)), [])
        self.assertEqual(jb.duplicates, 1)

    def test_jitter_buffer_skips_a_lost_packet_after_depth(self):
        jb = JitterBuffer(depth=3)
        out = []
        for s in [10, 12, 13, 14, 15]:
            out += [p.seq for p in jb.push(packet(s))]
        self.assertEqual(out, [10, 12, 13, 14, 15])
        self.assertEqual(jb.lost, 1)

    @settings(max_examples=100, deadline=None)
    @given(st.permutations(list(range(30))), st.integers(0, 65535))
    def test_jitter_buffer_never_reorders(self, perm, base):
        jb = JitterBuffer(depth=40)
        out = []
        for i in [0] + [p for p in perm if p != 0]:
            out += [p.seq for p in jb.push(packet(base + i))]
        out += [p.seq for p in jb.flush()]
        self.assertEqual(out, [(base + i) & 0xFFFF for i in range(30)])

    def test_endpoint_sends_20ms_frames_on_the_clock(self):
        clock = task.Clock()
        got = []
        ep = RtpEndpoint(clock, 0, 101, on_audio=got.append)
        port = FakeUdpPort(20000, ep)
        ep.makeConnection(port)
        ep.set_remote("192.168.2.11", 40000)
        ep.source = lambda: b"\x7f" * 160
        ep.start_sending()
        clock.pump([0.02] * 50)
        self.assertEqual(len(port.written), 51)
        seqs = [RtpPacket.parse(d).seq for d, _ in port.written]
        self.assertEqual([(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:])], [1] * 50)
        ep.datagramReceived(packet(5).to_bytes(), ("192.168.2.11", 40000))
        ep.datagramReceived(packet(6).to_bytes(), ("10.0.0.1", 40000))     # not the peer
        self.assertEqual(len(got), 1)
        ep.stop()
        self.assertTrue(port.closed)


    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from([0, 0, 0, 8, 101]),
                              st.sampled_from(["plain", "csrc", "extension", "padding"]),
                              st.binary(min_size=1, max_size=8)), max_size=40))
    def test_plain_and_unusual_packets_give_the_same_audio(self, packets):
        # The endpoint reads plain packets without RtpPacket.parse: what it
        # hears must be what the full parse gives, in order, for any mix.
        def wire(seq, pt, form, payload):
            data = packet(seq, payload, pt).to_bytes()
            if form == "csrc":
                return bytes([0x81]) + data[1:12] + b"\x00\x00\x00\x07" + payload
            if form == "extension":
                return bytes([0x90]) + data[1:12] + b"\xbe\xde\x00\x01abcd" + payload
            if form == "padding":
                return bytes([0xA0]) + data[1:] + b"\x00\x00\x03"
            return data

        def hear(fast):
            got, events = [], []
            ep = RtpEndpoint(task.Clock(), 0, 101, on_audio=got.append, on_event=events.append)
            ep.makeConnection(FakeUdpPort(20000, ep))
            ep.set_remote("192.168.2.11", 40000)
            for seq, pt, form, payload in packets:
                data = wire(seq, pt, form, payload)
                if not fast:    # force the full parse: an empty CSRC count is the same packet
                    data = bytes([data[0] | 0x10]) + data[1:12] + b"\x00\x00\x00\x00" + data[12:] \
                        if data[0] == 0x80 else data
                ep.datagramReceived(data, ("192.168.2.11", 40000))
            ep.stop()
            return got, [e.seq for e in events], ep.jitter.lost, ep.jitter.duplicates

        self.assertEqual(hear(True), hear(False))

    def test_endpoint_counts_received_and_sent_packets(self):
        from allworx.protocols.voice import rtp
        received, sent = rtp._RECEIVED._value.get(), rtp._SENT._value.get()
        ep = RtpEndpoint(task.Clock(), 0, 101)
        ep.makeConnection(FakeUdpPort(20000, ep))
        ep.set_remote("192.168.2.11", 40000)
        ep.source = lambda: b"\x7f" * 160
        ep.start_sending()
        ep.datagramReceived(packet(5).to_bytes(), ("192.168.2.11", 40000))
        ep.datagramReceived(b"\x00" * 20, ("192.168.2.11", 40000))       # not RTP
        self.assertEqual((rtp._RECEIVED._value.get() - received, rtp._SENT._value.get() - sent),
                         (1, 1))
        ep.stop()


    @defer.inlineCallbacks
    def test_a_listening_endpoint_is_read_by_the_media_pool(self):
        # Real UDP: after the reactor's next turn the port is no reader of
        # its own; the media sockets' epoll set reads it, until stop().
        got, heard = [], defer.Deferred()

        def audio(payload):
            got.append(payload)
            if len(got) == 2:
                heard.callback(None)
        ep = RtpEndpoint(reactor, 0, on_audio=audio)
        port = reactor.listenUDP(0, ep, interface="127.0.0.1")
        phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(phone.close)
        phone.bind(("127.0.0.1", 0))
        ep.set_remote("127.0.0.1", phone.getsockname()[1])
        yield task.deferLater(reactor, 0, lambda: None)
        pool = pool_of(reactor)
        self.assertNotIn(port, reactor.getReaders())
        self.assertIn(pool, reactor.getReaders())
        self.assertIn(port.socket.fileno(), pool.handlers)
        to = ("127.0.0.1", port.getHost().port)
        phone.sendto(packet(1, b"\x01" * 160).to_bytes(), to)
        phone.sendto(packet(2, b"\x02" * 160).to_bytes(), to)
        yield heard
        self.assertEqual(got, [b"\x01" * 160, b"\x02" * 160])
        fd = port.socket.fileno()
        ep.stop()
        self.assertNotIn(fd, pool.handlers)
        yield task.deferLater(reactor, 0, lambda: None)     # the port closes
        self.assertFalse(port.connected)


    def test_stop_takes_in_what_is_waiting_in_the_socket(self):
        # The BYE is handled before the packets sent ahead of it were read
        # (a busy reactor): they are still the caller's message.
        class Waiting(socket.socket):
            """A socket with datagrams waiting, then EAGAIN."""
            def __init__(self, datagrams):
                socket.socket.__init__(self, socket.AF_INET, socket.SOCK_DGRAM)
                self.datagrams = datagrams

            def recvfrom(self, size):
                if not self.datagrams:
                    raise BlockingIOError(11, "Resource temporarily unavailable")
                return self.datagrams.pop(0)
        phone = ("192.168.2.11", 40000)
        got = []
        ep = RtpEndpoint(task.Clock(), 0, on_audio=got.append)
        port = FakeUdpPort(20000, ep)
        port.socket = Waiting([(packet(seq, bytes([seq]) * 160).to_bytes(), phone)
                               for seq in (1, 3, 2)])
        self.addCleanup(port.socket.close)
        ep.makeConnection(port)
        ep.set_remote(*phone)
        ep.datagramReceived(packet(0, b"\x00" * 160).to_bytes(), phone)
        ep.stop()
        self.assertEqual(got, [bytes([n]) * 160 for n in range(4)])
        self.assertTrue(port.closed)

    def test_stop_takes_in_at_most_five_seconds_of_waiting_packets(self):
        class Flood(socket.socket):
            def recvfrom(self, size):
                return packet(7).to_bytes(), ("192.168.2.11", 40000)
        port = FakeUdpPort(20000, None)
        port.socket = Flood(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(port.socket.close)
        seen = []
        ep = RtpEndpoint(task.Clock(), 0)
        ep.datagramReceived = lambda data, addr: seen.append(addr)
        ep.makeConnection(port)
        ep.stop()
        self.assertEqual(len(seen), 250)


class DtmfTests(unittest.TestCase):

    def test_events_once_per_key(self):
        got = []
        det = dtmf.DtmfDetector(got.append)
        for ts, digit in ((100, "1"), (900, "#")):
            for end in (False, False, True, True, True):
                det.packet(RtpPacket(101, 1, ts, 1, dtmf.make_event(digit, end, 400)))
        self.assertEqual(got, ["1", "#"])
        det.packet(RtpPacket(101, 1, 5, 1, b"\x20\x00\x00\x00"))   # event 32: not DTMF
        self.assertEqual(got, ["1", "#"])

    def test_info_bodies(self):
        self.assertEqual(dtmf.parse_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"), "5")
        self.assertEqual(dtmf.parse_info("application/dtmf-relay", b"Signal=11\r\n"), "#")
        self.assertEqual(dtmf.parse_info("application/dtmf", b"*"), "*")
        self.assertRaises(dtmf.DtmfError, dtmf.parse_info, "text/plain", b"5")
        self.assertRaises(dtmf.DtmfError, dtmf.parse_info, "application/dtmf-relay", b"Duration=1")


class SdpTests(unittest.TestCase):

    def test_offer_and_answer(self):
        o = parse_offer(offer().encode())
        self.assertEqual((o.host, o.port, o.payload_type, o.event_type), ("192.168.2.11", 40000, 0, 101))
        a = make_answer("192.168.2.254", 20000, 0, 101)
        self.assertEqual(parse_offer(a).port, 20000)
        pcma_only = offer().replace("RTP/AVP 0 8 101", "RTP/AVP 8").encode()
        self.assertEqual(parse_offer(pcma_only).payload_type, 8)
        self.assertRaises(SdpError, parse_offer, offer().replace("RTP/AVP 0 8 101", "RTP/AVP 9").encode())
        self.assertRaises(SdpError, parse_offer, b"v=0\r\n")


class PromptTests(unittest.TestCase):

    def test_tones_without_espeak(self):
        lib = PromptLibrary(self.mktemp())
        for name in PROMPTS:
            pcm = lib.get(name)
            self.assertGreater(len(pcm), 1600)
        samples = struct.unpack("<%dh" % 80, tone(1000, 10))
        self.assertLess(abs(samples[2] - int(8000 * math.sin(2 * math.pi * 1000 * 2 / 8000))), 2)


class DurableFilesTests(unittest.TestCase):
    """Greetings and rendered prompts are written atomically: fsynced, renamed, directory fsynced."""

    def record_fsyncs(self):
        from allworx import atomicfile
        synced = []
        real_fsync = os.fsync
        self.patch(atomicfile.os, "fsync", lambda fd: (synced.append(os.path.realpath(
            "/proc/self/fd/%d" % fd)), real_fsync(fd)))
        return synced

    def test_store_greeting(self):
        from allworx.protocols.voice.voicemail import greeting_path, load_greeting, store_greeting
        directory = self.mktemp()
        synced = self.record_fsyncs()
        store_greeting(directory, "alice", tone(440, 100))
        path = os.path.realpath(greeting_path(directory, "alice"))
        self.assertEqual(load_greeting(directory, "alice"), tone(440, 100))
        self.assertEqual(synced[-1], os.path.dirname(path))
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))), ["greeting.wav"])

    def test_rendered_prompts(self):
        from allworx.protocols.voice import greeting
        directory = self.mktemp()
        lib = PromptLibrary(directory)

        def espeak(argv, **kwargs):
            with open(argv[argv.index("-w") + 1], "wb") as f:
                f.write(to_wav(tone(300, 50)))
        self.patch(greeting.shutil, "which", lambda name: "/usr/bin/" + name)
        self.patch(greeting.subprocess, "run", espeak)
        synced = self.record_fsyncs()
        self.assertEqual(lib.render(), len(PROMPTS))
        self.assertTrue(lib.spoken)
        self.assertEqual(lib.get("goodbye"), tone(300, 50))
        self.assertEqual(sorted(os.listdir(directory)), sorted(n + ".wav" for n in PROMPTS))
        self.assertEqual(synced.count(os.path.realpath(directory)), len(PROMPTS))
