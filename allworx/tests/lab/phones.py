# -*- test-case-name: allworx.tests.lab.test_sip -*-
"""
Phones for the lab tests: `Baresip`, a baresip phone in a lab host driven
headless over ctrl_tcp with one SIP account (`SipAccount`), and the audio
helpers that tell what a phone heard (a tone's WAV, Goertzel power, the
decoded audio baresip is still writing).

The same class is an office phone on the LAN registered at the server
(test_sip) and an outside phone in `inet` registered at the lab's provider
(test_provider; `outside_phone` makes one). Several phones may share one
lab host: each then needs its own SIP address (`SipAccount.bind_ip`,
baresip's sip_listen), control port and RTP port range. The outside phones
listen for SIP on topology's OUTSIDE_PHONE_IPS (alice 198.51.100.31, bob
.32), with control ports 4431 and 4432 and RTP ports 31000-31099 and
32000-32099. baresip 1.0 has no setting for its media address: it puts the
first address of the interface in its SDP, which in `inet` is the internet
host's 198.51.100.10, so the outside phones' media is at 198.51.100.10 on
their own RTP ports (still end to end: the provider never relays it).
"""

import json
import os
import struct
import subprocess
import threading
import time
import wave

import attr

from allworx.lab.labphones import socket_in_ns
from allworx.lab.tones import longest_tone, pcm_so_far, wav_samples
from allworx.lab.topology import (
    OUTSIDE_PASSWORDS,
    OUTSIDE_PHONE_IPS,
    PROVIDER_DOMAIN,
)

CTRL_PORT = 4444
RTP_PORTS = (30000, 30100)


@attr.s(frozen=True)
class SipAccount:
    """
    A phone's SIP account: it registers as `user`@`domain` (every `regint`
    seconds; 0: never) with digest `auth_user` (default `user`) and
    `password`. Requests go to `domain` (DNS, as a phone's would) unless
    `registrar` ("host" or "host:port") names where to send them; the phone
    listens on `bind_ip` port 5060 (None: baresip's own choice).
    """

    user = attr.ib()
    password = attr.ib(repr=False)
    domain = attr.ib()
    registrar = attr.ib(default=None)
    bind_ip = attr.ib(default=None)
    transport = attr.ib(default="udp")
    regint = attr.ib(default=300)
    auth_user = attr.ib(default=None)

    def baresip_line(self):
        """The account as a line of baresip's `accounts` file."""
        params = ";transport=%s" % self.transport if self.transport != "udp" else ""
        line = "<sip:%s@%s%s>;auth_user=%s;auth_pass=%s;regint=%d" % (
            self.user, self.domain, params, self.auth_user or self.user, self.password,
            self.regint)
        if self.registrar:
            line += ';outbound="sip:%s%s"' % (self.registrar, params)
        return line + ";answermode=manual;audio_codecs=PCMU"


class Baresip:
    """
    One baresip phone in lab host `host`, driven over ctrl_tcp (netstring
    JSON) on 127.0.0.1:`ctrl_port` there. `name` labels it (its directory
    under `workdir`, its lab process baresip-NAME); it sends `source_wav`
    as its microphone and records what it hears.
    """

    def __init__(self, lab, host, workdir, source_wav, account, name=None,
                 ctrl_port=CTRL_PORT, rtp_ports=RTP_PORTS):
        self.lab = lab
        self.host = host
        self.account = account
        self.name = name or account.user
        self.ip = account.bind_ip
        self.ctrl_port = ctrl_port
        self.rtp_ports = rtp_ports
        self.dir = os.path.join(workdir, self.name)
        self.snd = os.path.join(self.dir, "snd")
        os.makedirs(self.snd, exist_ok=True)
        self.source_wav = source_wav
        self.events = []
        self.responses = []
        self.lock = threading.Condition()
        self.proc = None
        self.sock = None

    @property
    def process_name(self):
        return "baresip-" + self.name

    def write_config(self):
        listen = "sip_listen %s:5060\n" % self.ip if self.ip else ""
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write("""poll_method epoll
audio_path /usr/share/baresip
audio_player aubridge,nowhere
audio_source aufile,{src}
audio_alert aubridge,nowhere
audio_srate 8000-48000
module_path /usr/lib/baresip/modules
module stdio.so
module_app menu.so
module g711.so
module aufile.so
module aubridge.so
module sndfile.so
module_app account.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{ctrl}
snd_path {snd}
rtp_ports {rtp[0]}-{rtp[1]}
{listen}""".format(src=self.source_wav, ctrl=self.ctrl_port, snd=self.snd,
                   rtp=self.rtp_ports, listen=listen))
        with open(os.path.join(self.dir, "accounts"), "w") as f:
            f.write(self.account.baresip_line() + "\n")
        open(os.path.join(self.dir, "contacts"), "w").close()

    def start(self):
        self.write_config()
        self.proc = self.lab.popen(self.host, ["baresip", "-f", self.dir], name=self.process_name,
                                   stdin=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket_in_ns(self.lab.ns(self.host))
                self.sock.connect(("127.0.0.1", self.ctrl_port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("%s: no ctrl_tcp on port %d\n%s"
                                         % (self.name, self.ctrl_port, self.log_tail()))
                time.sleep(0.2)
        threading.Thread(target=self._reader, daemon=True).start()

    def stop(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.lab.stop(self.proc)

    def _reader(self):
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b":" in buf:
                length, _, rest = buf.partition(b":")
                if not length.isdigit() or len(rest) < int(length) + 1:
                    break
                n = int(length)
                body, buf = rest[:n], rest[n + 1:]
                try:
                    msg = json.loads(body)
                except ValueError:
                    continue
                with self.lock:
                    (self.events if msg.get("event") else self.responses).append(msg)
                    self.lock.notify_all()

    def command(self, command, params=""):
        body = json.dumps({"command": command, "params": params, "token": command}).encode()
        self.sock.sendall(b"%d:%s," % (len(body), body))

    def wait_event(self, kind, timeout=15, since=0):
        """The first event of type `kind` after the `since`-th (a `mark()`)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for e in self.events[since:]:
                    if e.get("type") == kind:
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: no %s within %ss; events %r\n%s" % (
                        self.name, kind, timeout,
                        [(e.get("type"), e.get("param")) for e in self.events],
                        self.log_tail()))
                self.lock.wait(left)

    def log_tail(self):
        """The end of what baresip printed (stdout and stderr)."""
        return self.lab.log_text(self.process_name)

    def mark(self):
        with self.lock:
            return len(self.events)

    def dtmf(self, digits):
        """
        Key presses: with stdio and a pipe, each character goes out as RFC
        4733. A key lasts until baresip releases it 250 ms later, so keys
        are spaced by a key's length (this is the key's audio, not a wait
        for the server).
        """
        for d in digits:
            self.proc.stdin.write(d.encode())
            self.proc.stdin.flush()
            time.sleep(0.35)

    def recordings(self, since_names=()):
        return sorted(n for n in os.listdir(self.snd) if n not in since_names)

    def hearing(self, before):
        """(samples, rate) the phone has heard so far in its newest call after `before`."""
        names = [n for n in self.recordings(before) if "dec" in n]
        if not names:
            return [], 0
        return pcm_so_far(os.path.join(self.snd, names[-1]))

    def heard_for(self, before, freq, seconds):
        """Whether the phone has heard `freq` for `seconds` in a row in its
        newest call after `before`: the sample index after that run, else None."""
        samples, rate = self.hearing(before)
        length, end = longest_tone(samples, rate, freq)
        return end if length >= seconds else None

    def finished_recording(self, before):
        """
        (samples, rate) of the newest call's decoded audio once baresip has
        closed the file (its header then gives the full size), else None.
        """
        names = [n for n in self.recordings(before) if "dec" in n]
        if not names:
            return None
        path = os.path.join(self.snd, names[-1])
        try:
            with open(path, "rb") as f:
                data = f.read()
            if len(data) < 8 or struct.unpack("<I", data[4:8])[0] + 8 != len(data):
                return None
            samples, rate = wav_samples(data)
        except (OSError, EOFError, wave.Error, struct.error):
            return None
        return (samples, rate) if samples else None


def outside_phone(lab, user, workdir, source_wav):
    """
    Outside phone `user` (alice or bob of topology's OUTSIDE_PHONES): a
    Baresip in `inet` with its account at the provider, not yet started;
    `sipua.wait_registered` waits for its registration once started.
    """
    ip = OUTSIDE_PHONE_IPS[user]
    octet = int(ip.rsplit(".", 1)[1])
    account = SipAccount(user, OUTSIDE_PASSWORDS[user], PROVIDER_DOMAIN, bind_ip=ip)
    return Baresip(lab, "inet", workdir, source_wav, account, ctrl_port=4400 + octet,
                   rtp_ports=(octet * 1000, octet * 1000 + 99))
