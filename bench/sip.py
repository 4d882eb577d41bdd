# -*- test-case-name: allworx.tests.sip.test_service -*-
"""
SIP benchmark: registrations/s (REGISTER -> 401 -> REGISTER with digest ->
200), call setups/s (INVITE -> 100/180/200 -> ACK -> BYE -> 200 through the
server to a registered answering phone). Concurrent voicemail recordings
are bench/voicemail.py's (it uses this module's server).

    python -m bench.sip [--sipp-seconds 5] [--rounds 3] [--no-python] [--profile DIR]
                        [--duration 8] [--window 64]

The server under test is allworx's SIP service alone (`--serve`, a child
process on 127.0.0.1, an in-memory mailbox so only SIP and RTP are
measured), started as the product starts it. The figures that count come
from SIPp (built once from the peer's source into /tmp/allworx-bench-sipp)
running the peer's scenarios (../shared/peers/sip/) against allworx and
against Kamailio (Debian package `kamailio`, the peer's configuration) in the
same run: the offered rate grows by 1.5x while a step has no failed call and
no retransmission, then one step between the last pass and the first
failure. REGISTER then runs `--rounds` consecutive rounds at the best rate
on the same server (nonces and bindings piling up), each printed: it must
stay steady. Peak memory of allworx and of Kamailio's process tree is
printed beside, and the two rows of `make bench` ("SIP REGISTER with digest
(SIPp)", "SIP calls INVITE-200-ACK-BYE (SIPp)") are reported with
bench.common.result; `--profile DIR` keeps py-spy flame graphs of allworx
under each load.

Before that (unless `--no-python`), a Python UA keeping a window of
transactions in flight on one UDP socket runs the same scenarios against
both servers (a like-for-like generator, far lighter than SIPp).
"""

import argparse
import hashlib
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEER_DIR = os.path.join(ROOT, "..", "shared", "peers", "sip")
sys.path.insert(0, ROOT)

from bench import common  # noqa: E402  (ROOT on the path first, when run as a script)

IP = "127.0.0.1"
ALLWORX_PORT = 15060
KAMAILIO_PORT = 15070
USERS = 200
UAS_EXT = "2000"
PEER_FIGURES = "Kamailio+SIPp (peer README, 2 cores): REGISTER with digest 12,700-13,400/s; calls 3,360/s"


# ---------------------------------------------------------------- the server under test

def serve(port, data_dir, stats_path):
    """Run allworx's SIP service alone on 127.0.0.1:port with an in-memory mailbox."""
    from twisted.internet import defer, reactor
    from twisted.logger import globalLogBeginner, globalLogPublisher
    from zope.interface import implementer

    from allworx.config import parse_config
    from allworx.interfaces import IMailStore
    from allworx.office import Office
    from allworx.protocols.sip import service as sip
    from allworx.protocols.voice.voicemail import wav_of
    from allworx.tap import settle_when_running
    from allworx.protocols.voice.wav import duration, from_wav

    text = server_conf(data_dir, port)
    office = Office(parse_config(text))
    stats = {"deliveries": 0, "seconds": 0.0, "rtp_received": 0, "rtp_lost": 0, "calls": 0}

    @implementer(IMailStore)
    class CountingStore:
        def deliver(self, recipients, message, sender=None):
            stats["deliveries"] += 1
            stats["seconds"] += duration(from_wav(wav_of(message)))
            return defer.succeed(None)

        def list_messages(self, user):
            return []

    def observe(event):
        if event.get("log_format", "").startswith("voicemail RTP"):
            stats["rtp_received"] += event["received"]
            stats["rtp_lost"] += event["lost"]
            stats["calls"] += 1
    globalLogPublisher.addObserver(observe)
    globalLogBeginner.beginLoggingTo([], redirectStandardIO=False, discardBuffer=True)

    service = sip.SipService(office, CountingStore(), reactor)
    service.core.ua.prompts.spoken = True        # tones: no espeak run in the benchmark

    def listeners(config):
        proto = sip.SipDatagram(service.core)

        def udp():
            service.udp = reactor.listenUDP(port, proto, interface=IP)
            service.udp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            return service.udp
        return [("udp %d" % port, port, udp)]
    service.build_listeners = listeners
    service.startService()
    settle_when_running(reactor)      # as the twistd plugin does (allworx.tap)
    if service.failed:
        sys.exit("cannot serve SIP: %s" % "; ".join(service.failed))

    # The collector's share of the server's time, by generation (printed with the figures).
    import gc
    gc_started = [0.0]
    stats["gc"] = {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0]}

    def collecting(phase, info):
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            stats["gc"]["collections"][info["generation"]] += 1
            stats["gc"]["seconds"][info["generation"]] += time.perf_counter() - gc_started[0]
    gc.callbacks.append(collecting)

    def dump():
        with open(stats_path + ".tmp", "w") as f:
            json.dump(stats, f)
        os.replace(stats_path + ".tmp", stats_path)
    from twisted.internet import task
    task.LoopingCall(dump).start(0.5)
    # The figures are on disk every 0.5 s: on SIGTERM or SIGINT, just go.
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    signal.signal(signal.SIGINT, lambda *a: os._exit(0))
    reactor.run(installSignalHandlers=False)


def server_conf(data_dir, port):
    from allworx.passwords import sip_digest
    from allworx.tests.confs import PW_HASH
    users = []
    for n in range(USERS):
        ext = str(1000 + n)
        users.append("[user u%s]\nextension = %s\npassword = %s\nsip_digest = %s\n"
                     % (ext, ext, PW_HASH, sip_digest(ext, "example.com", "secret")))
    users.append("[user uas]\nextension = %s\npassword = %s\nsip_digest = %s\n"
                 % (UAS_EXT, PW_HASH, sip_digest(UAS_EXT, "example.com", "secret")))
    users.append("[user vm]\nextension = 3000\npassword = %s\n" % PW_HASH)
    return """[system]
domain = example.com
hostname = allworx
data_dir = {data}

[lan]
interface = lo
address = 127.0.0.1/8

[wan]
interface = wan0
mode = disabled

[security]
mode = lan-only

[dns]
primary = 198.51.100.1

[web]
admin_password = {pw}

[sip]
port = {port}
voicemail_timeout = 20
rtp_ports = 20000-29999

""".format(data=data_dir, pw=PW_HASH, port=port) + "\n".join(users)


# ---------------------------------------------------------------- the load generator

def digest(challenge, method, uri, user, password):
    fields = dict((m.group(1).lower(), m.group(2) or m.group(3)) for m in
                  re.finditer(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', challenge))
    realm, nonce = fields["realm"], fields["nonce"]
    ha1 = hashlib.md5(("%s:%s:%s" % (user, realm, password)).encode()).hexdigest()
    ha2 = hashlib.md5(("%s:%s" % (method, uri)).encode()).hexdigest()
    cnonce = "%08x" % random.getrandbits(32)
    if "qop" in fields:
        resp = hashlib.md5(("%s:%s:00000001:%s:auth:%s" % (ha1, nonce, cnonce, ha2)).encode()).hexdigest()
        return ('Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
                'algorithm=MD5, qop=auth, nc=00000001, cnonce="%s"' % (user, realm, nonce, uri, resp, cnonce))
    resp = hashlib.md5(("%s:%s:%s" % (ha1, nonce, ha2)).encode()).hexdigest()
    return ('Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=MD5'
            % (user, realm, nonce, uri, resp))


def header(text, name):
    m = re.search(r"(?im)^%s\s*:\s*(.*)$" % re.escape(name), text)
    return m.group(1).strip() if m else None


class Generator:
    """A UDP user agent on 127.0.0.1 that keeps a window of scenarios in flight."""

    def __init__(self, server_port, domain, users):
        self.server = (IP, server_port)
        self.domain = domain
        self.users = users                  # [(username, password)]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((IP, 0))
        self.port = self.sock.getsockname()[1]
        self.uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.uas.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.uas.bind((IP, 0))
        self.uas_port = self.uas.getsockname()[1]
        self.seq = 0

    def _id(self):
        self.seq += 1
        return "%d-%d" % (self.seq, random.getrandbits(30))

    def _send(self, text, sock=None, to=None):
        (sock or self.sock).sendto(text.encode(), to or self.server)

    def register_msg(self, user, call_id, cseq, auth=None, port=None, expires=3600):
        port = port or self.port
        lines = ["REGISTER sip:%s SIP/2.0" % self.domain,
                 "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s;rport" % (IP, port, self._id()),
                 "Max-Forwards: 70", "From: <sip:%s@%s>;tag=%s" % (user, self.domain, call_id[:8]),
                 "To: <sip:%s@%s>" % (user, self.domain), "Call-ID: %s" % call_id,
                 "CSeq: %d REGISTER" % cseq, "Contact: <sip:%s@%s:%d>" % (user, IP, port),
                 "Expires: %d" % expires, "User-Agent: allworx-bench"]
        if auth:
            lines.append("Authorization: " + auth)
        return "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n"

    def register_uas(self, user, password):
        """Register the answering phone (on its own socket); True on 200."""
        call_id = "uas-" + self._id()
        self._send(self.register_msg(user, call_id, 1, port=self.uas_port), self.uas)
        for cseq in (2, 3):
            self.uas.settimeout(3)
            data = self.uas.recv(65535).decode()
            code = int(data.split()[1])
            if code == 200:
                return True
            if code in (401, 407):
                auth = digest(header(data, "WWW-Authenticate") or header(data, "Proxy-Authenticate"),
                              "REGISTER", "sip:%s" % self.domain, user, password)
                self._send(self.register_msg(user, call_id, cseq, auth, port=self.uas_port), self.uas)
        return False

    def run_registers(self, seconds, window):
        """Completed authenticated registrations per second over `seconds`."""
        pending = {}                 # call_id -> (user, password, started)
        done = failed = 0
        start = time.monotonic()
        end = start + seconds
        latencies = []
        user_index = 0
        self.sock.setblocking(False)
        while True:
            now = time.monotonic()
            while now < end and len(pending) < window:
                user, password = self.users[user_index % len(self.users)]
                user_index += 1
                call_id = "r" + self._id()
                pending[call_id] = (user, password, now)
                self._send(self.register_msg(user, call_id, 1))
            if not pending and now >= end:
                break
            if now > end + 5:
                failed += len(pending)
                break
            r, _, _ = select.select([self.sock], [], [], 0.05)
            if not r:
                continue
            for _ in range(256):
                try:
                    data = self.sock.recv(65535).decode("utf-8", "replace")
                except BlockingIOError:
                    break
                call_id = header(data, "Call-ID") or header(data, "i")
                entry = pending.get(call_id)
                if entry is None:
                    continue
                code = int(data.split()[1])
                if code in (401, 407):
                    auth = digest(header(data, "WWW-Authenticate"), "REGISTER", "sip:%s" % self.domain,
                                  entry[0], entry[1])
                    self._send(self.register_msg(entry[0], call_id, 2, auth))
                elif code == 200:
                    del pending[call_id]
                    done += 1
                    latencies.append(time.monotonic() - entry[2])
                elif code >= 300:
                    del pending[call_id]
                    failed += 1
        elapsed = time.monotonic() - start
        return done / elapsed, failed, _p(latencies, 0.5), _p(latencies, 0.99)

    def run_calls(self, seconds, window, callee):
        """Completed INVITE/200/ACK/BYE/200 calls per second through the server to the UAS."""
        pending = {}
        done = failed = 0
        latencies = []
        start = time.monotonic()
        end = start + seconds
        self.sock.setblocking(False)
        self.uas.setblocking(False)
        sdp = ("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
               "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" % (IP, IP))
        while True:
            now = time.monotonic()
            while now < end and len(pending) < window:
                call_id = "c" + self._id()
                tag = call_id[:10]
                msg = ("INVITE sip:%s@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s;rport\r\n"
                       "Max-Forwards: 70\r\nFrom: <sip:1000@%s>;tag=%s\r\nTo: <sip:%s@%s>\r\n"
                       "Call-ID: %s\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@%s:%d>\r\n"
                       "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s"
                       % (callee, self.domain, IP, self.port, self._id(), self.domain, tag, callee,
                          self.domain, call_id, IP, self.port, len(sdp), sdp))
                pending[call_id] = {"t": now, "tag": tag, "state": "inviting"}
                self._send(msg)
            if not pending and now >= end:
                break
            if now > end + 5:
                failed += len(pending)
                break
            r, _, _ = select.select([self.sock, self.uas], [], [], 0.05)
            for sock in r:
                for _ in range(256):
                    try:
                        data, addr = sock.recvfrom(65535)
                    except BlockingIOError:
                        break
                    text = data.decode("utf-8", "replace")
                    if sock is self.uas:
                        self._uas(text, addr)
                        continue
                    call_id = header(text, "Call-ID")
                    call = pending.get(call_id)
                    if call is None or not text.startswith("SIP/2.0"):
                        continue
                    code = int(text.split()[1])
                    method = header(text, "CSeq").split()[1]
                    if method == "INVITE" and code == 200 and call["state"] == "inviting":
                        call["state"] = "up"
                        to = header(text, "To")
                        rr = header(text, "Record-Route")
                        contact = re.search(r"<([^>]+)>", header(text, "Contact")).group(1)
                        route = "Route: %s\r\n" % rr if rr else ""
                        for m, cseq in (("ACK", 1), ("BYE", 2)):
                            self._send("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s;rport\r\n"
                                       "%sMax-Forwards: 70\r\nFrom: <sip:1000@%s>;tag=%s\r\nTo: %s\r\n"
                                       "Call-ID: %s\r\nCSeq: %d %s\r\nContent-Length: 0\r\n\r\n"
                                       % (m, contact, IP, self.port, self._id(), route, self.domain,
                                          call["tag"], to, call_id, cseq, m))
                    elif method == "BYE" and code == 200:
                        del pending[call_id]
                        done += 1
                        latencies.append(time.monotonic() - call["t"])
                    elif code >= 300 and method == "INVITE":
                        del pending[call_id]
                        failed += 1
        elapsed = time.monotonic() - start
        return done / elapsed, failed, _p(latencies, 0.5), _p(latencies, 0.99)

    def _uas(self, text, addr):
        """The answering phone: 180 then 200 to INVITE, 200 to BYE, nothing to ACK."""
        if text.startswith("SIP/2.0"):
            return
        method = text.split(" ", 1)[0]
        if method == "ACK":
            return
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].strip().lower() in
                ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "record-route")]
        if method == "INVITE":
            keep = [h + ";tag=uas1" if h.lower().startswith(("to:", "t:")) else h for h in keep]
            sdp = ("v=0\r\no=- 2 2 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
                   "m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" % (IP, IP))
            base = "\r\n".join(keep)
            self.uas.sendto(("SIP/2.0 180 Ringing\r\n%s\r\nContent-Length: 0\r\n\r\n" % base).encode(), addr)
            self.uas.sendto(("SIP/2.0 200 OK\r\n%s\r\nContact: <sip:%s@%s:%d>\r\n"
                             "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s"
                             % (base, UAS_EXT, IP, self.uas_port, len(sdp), sdp)).encode(), addr)
        else:
            self.uas.sendto(("SIP/2.0 200 OK\r\n%s\r\nContent-Length: 0\r\n\r\n"
                             % "\r\n".join(keep)).encode(), addr)


def _p(values, q):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


# ---------------------------------------------------------------- peers

def _require_free(port):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((IP, port))
    except OSError:
        raise RuntimeError("UDP %s:%d is already in use: stop whatever holds it first" % (IP, port))
    finally:
        probe.close()


def start_allworx(work):
    _require_free(ALLWORX_PORT)
    stats = os.path.join(work, "stats.json")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(ALLWORX_PORT),
                             os.path.join(work, "data"), stats],
                            stdout=open(os.path.join(work, "allworx.log"), "w"), stderr=subprocess.STDOUT)
    _wait_port(ALLWORX_PORT, proc)
    return proc, stats


def start_kamailio(work, auth=True):
    kam = shutil.which("kamailio") or "/usr/sbin/kamailio"
    if not os.path.exists(kam):
        return None
    _require_free(KAMAILIO_PORT)
    cfg = open(os.path.join(PEER_DIR, "kamailio.cfg")).read().replace("127.0.0.1:5060", "127.0.0.1:%d" % KAMAILIO_PORT)
    path = os.path.join(work, "kamailio.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    rundir = os.path.join(work, "kam-run")
    os.makedirs(rundir, exist_ok=True)
    proc = subprocess.Popen([kam, "-DD", "-E", "-f", path] + (["-A", "WITH_AUTH"] if auth else []) +
                            ["-m", "256", "-M", "16", "-Y", rundir, "-A", "KAM_CHILDREN=4"],
                            stdout=open(os.path.join(work, "kamailio.log"), "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_port(KAMAILIO_PORT, proc)
    except RuntimeError:
        return None
    return proc


def _wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((IP, 0))
    probe.settimeout(0.3)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        probe.sendto(("OPTIONS sip:%s:%d SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bKp%d\r\n"
                      "Max-Forwards: 70\r\nFrom: <sip:p@x>;tag=1\r\nTo: <sip:%s:%d>\r\nCall-ID: probe%d\r\n"
                      "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                      % (IP, port, IP, probe.getsockname()[1], time.monotonic_ns(), IP, port,
                         time.monotonic_ns())).encode(), (IP, port))
        try:
            probe.recv(65535)
            probe.close()
            return
        except socket.timeout:
            pass
    raise RuntimeError("no SIP answer on port %d" % port)


def stop(proc):
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM) if _own_group(proc) else proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _own_group(proc):
    try:
        return os.getpgid(proc.pid) == proc.pid
    except OSError:
        return False


def cpu_seconds(pid):
    """User+system CPU of a process and its children threads (from /proc)."""
    try:
        fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def kamailio_cpu(proc):
    total = 0.0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getpgid(int(pid)) == proc.pid:
                    total += cpu_seconds(int(pid))
            except OSError:
                pass
    return total


# ---------------------------------------------------------------- SIPp (the peer's load generator)

SIPP_CACHE = os.path.join(tempfile.gettempdir(), "allworx-bench-sipp")
UAC_PORT, UAS_PORT = 15081, 15082


def find_or_build_sipp():
    """$SIPP, or a SIPp built once from the peer's source tarball into a temp dir; None if impossible."""
    path = os.environ.get("SIPP") or os.path.join(SIPP_CACHE, "build", "sipp")
    if os.access(path, os.X_OK):
        return path
    tarball = os.path.join(PEER_DIR, "sipp-src.tar.gz")
    if not os.path.exists(tarball) or shutil.which("cmake") is None:
        return None
    os.makedirs(SIPP_CACHE, exist_ok=True)
    print("building SIPp from %s (once, into %s) ..." % (tarball, SIPP_CACHE), flush=True)
    try:
        subprocess.run(["tar", "xzf", tarball, "-C", SIPP_CACHE], check=True)
        version = os.path.join(SIPP_CACHE, "sipp", "include", "version.h")
        if not os.path.exists(version) or "#error" in open(version).read():
            with open(version, "w") as f:
                f.write('#define SIPP_VERSION "v3.7-local"\n')
        with open(os.path.join(SIPP_CACHE, "build.log"), "w") as log_file:
            subprocess.run(["cmake", "-S", os.path.join(SIPP_CACHE, "sipp"), "-B",
                            os.path.join(SIPP_CACHE, "build"), "-DCMAKE_BUILD_TYPE=Release",
                            "-DUSE_PCAP=0", "-DUSE_SCTP=0", "-DUSE_GSL=1"],
                           check=True, stdout=log_file, stderr=subprocess.STDOUT)
            subprocess.run(["make", "-C", os.path.join(SIPP_CACHE, "build"), "-j%d" % os.cpu_count(), "sipp"],
                           check=True, stdout=log_file, stderr=subprocess.STDOUT)
    except (OSError, subprocess.CalledProcessError) as e:
        print("SIPp could not be built (%s; needs cmake g++ libssl-dev libncurses-dev libpugixml-dev "
              "libgsl-dev): see %s/build.log" % (e, SIPP_CACHE))
        return None
    return path if os.access(path, os.X_OK) else None


def sipp_step(sipp, port, args, rate, seconds, work, hold=0.0):
    """One SIPp UAC run at `rate` for `seconds`: (passed, achieved rate, successes, failures, retransmissions)."""
    m = max(1, int(rate * seconds))
    stf = os.path.join(work, "sipp-stat-%d-%d.csv" % (port, time.monotonic_ns()))
    t0 = time.monotonic()
    done = subprocess.run([sipp, "%s:%d" % (IP, port), "-i", IP, "-p", str(UAC_PORT)] + args +
                          ["-r", str(int(rate)), "-rp", "1000", "-m", str(m), "-nostdin",
                           "-recv_timeout", "5000", "-timeout", "%ds" % int(seconds * 3 + 30),
                           "-buff_size", str(4 << 20), "-trace_stat", "-stf", stf, "-fd", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    wall = time.monotonic() - t0
    succ = fail = retr = 0
    try:
        rows = open(stf).read().strip().splitlines()
        names = rows[0].split(";")
        last = rows[-1].split(";")
        col = {n: i for i, n in enumerate(names)}
        succ, fail, retr = (int(last[col[k]]) for k in
                            ("SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)"))
    except (OSError, IndexError, KeyError, ValueError):
        pass
    achieved = succ / max(0.001, wall - hold)
    passed = done.returncode == 0 and succ == m and fail == 0 and retr == 0
    return passed, achieved, succ, fail, retr


def sipp_search(sipp, port, args, start, seconds, work, hold=0.0, steps=12):
    """
    Raise the rate by 1.5x while steps pass, then try once between the last
    step that passed and the one that failed: (best achieved rate, the best
    passing offered rate, the step that failed or None).
    """
    best, offered, failed, rate = 0.0, 0, None, start
    for _ in range(steps):
        passed, achieved, succ, fail, retr = sipp_step(sipp, port, args, rate, seconds, work, hold)
        if not passed:
            failed = (rate, succ, fail, retr)
            break
        best, offered = max(best, achieved), rate
        rate = int(rate * 1.5)
    if failed is not None and offered:
        between = int(offered * 1.22)
        passed, achieved, succ, fail, retr = sipp_step(sipp, port, args, between, seconds, work, hold)
        if passed:
            best, offered = max(best, achieved), between
        else:
            failed = (between, succ, fail, retr)
    return best, offered, failed


def sipp_rounds(sipp, port, args, rate, seconds, work, rounds):
    """
    `rounds` consecutive steps at `rate` on the same server (its nonces and
    registrations piling up as they would under a sustained burst):
    [(passed, achieved, successes, failures, retransmissions)], each printed.
    """
    out = []
    for n in range(rounds):
        step = sipp_step(sipp, port, args, rate, seconds, work)
        out.append(step)
        print("    round %d at %d/s: %s, %.0f/s achieved, %d ok, %d failed, %d retransmissions (load %s)"
              % (n + 1, rate, "passed" if step[0] else "FAILED", step[1], step[2], step[3], step[4],
                 common.load()), flush=True)
    return out


def sipp_register_and_serve_uas(sipp, port, work, scenario, csv):
    """Register the UAS contact with `scenario`, then run `sipp -sn uas`; the Popen or None."""
    done = subprocess.run([sipp, "%s:%d" % (IP, port), "-i", IP, "-p", str(UAS_PORT), "-sf", scenario,
                           "-inf", csv, "-m", "1", "-nostdin", "-recv_timeout", "3000", "-timeout", "10s"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    if done.returncode != 0:
        return None
    proc = subprocess.Popen([sipp, "-sn", "uas", "-i", IP, "-p", str(UAS_PORT), "-nostdin",
                             "-buff_size", str(4 << 20), "-timeout", "3600s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    time.sleep(1)
    return proc if proc.poll() is None else None


def sipp_tests(sipp, server, port, work, seconds, users_csv, uas_csv, uas_name, uas_scenario, starts,
               pid=None, rounds=3):
    """
    The peer's reg_auth and call scenarios against one server (the process
    `pid`, for its flame graph): [(server, test, rate, failed step, rounds)].
    REGISTER is then run `rounds` times more at the best rate found: it must
    stay steady (the nonce book and the bindings grow as each round goes).
    """
    out = []
    reg_args = ["-sf", os.path.join(PEER_DIR, "register_auth.xml"), "-inf", users_csv]
    if "reg_auth" in starts:
        best, offered, failed = sipp_search(sipp, port, reg_args, starts["reg_auth"], seconds, work)
        steady = []
        if offered and rounds:
            print("  %s REGISTER with digest, %d consecutive rounds at the best rate:" % (server, rounds))
            with common.Flame(pid or 0, "sip-register-%s" % server, rounds * seconds) if pid else _Nothing():
                steady = sipp_rounds(sipp, port, reg_args, offered, seconds, work, rounds)
        out.append((server, "reg_auth", best, failed, steady))
    if "call" in starts:
        uas = sipp_register_and_serve_uas(sipp, port, work, uas_scenario, uas_csv)
        if uas is None:
            out.append((server, "call", 0.0, "the SIPp UAS could not register", []))
        else:
            try:
                args = ["-sf", os.path.join(PEER_DIR, "uac_call.xml"), "-s", uas_name, "-d", "500"]
                best, offered, failed = sipp_search(sipp, port, args, starts["call"], seconds, work, hold=0.5)
                if offered and pid:
                    # The flame graph of calls at the best rate found (not counted in the figure).
                    with common.Flame(pid, "sip-calls-%s" % server, seconds):
                        sipp_step(sipp, port, args, offered, seconds, work, hold=0.5)
                out.append((server, "call", best, failed, []))
            finally:
                stop(uas)
    return out


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_sipp_suite(sipp, work, seconds, kamailio=True, rounds=3):
    """
    SIPp against allworx and Kamailio, the same scenarios, rate search and
    rounds for both: ([(server, test, rate, failed step, rounds)],
    {server: peak memory in MB}).
    """
    results, memory = [], {}
    users_csv = os.path.join(work, "allworx-users.csv")
    with open(users_csv, "w") as f:
        f.write("SEQUENTIAL\n" + "".join("%d;[authentication username=%d password=secret]\n"
                                          % (1000 + n, 1000 + n) for n in range(USERS)))
    uas_csv = os.path.join(work, "allworx-uas.csv")
    with open(uas_csv, "w") as f:
        f.write("SEQUENTIAL\n%s;[authentication username=%s password=secret]\n" % (UAS_EXT, UAS_EXT))
    proc, _ = start_allworx(work)
    try:
        results += sipp_tests(sipp, "allworx", ALLWORX_PORT, work, seconds, users_csv, uas_csv, UAS_EXT,
                              os.path.join(PEER_DIR, "register_auth.xml"),
                              {"reg_auth": 500, "call": 100}, pid=proc.pid, rounds=rounds)
        memory["allworx"] = common.peak_rss_mb(proc.pid)
    finally:
        stop(proc)
    peer_users = os.path.join(PEER_DIR, "users.csv")
    peer_uas = os.path.join(PEER_DIR, "uas_user.csv")
    for auth, test, start in ((True, "reg_auth", 1000), (False, "call", 300)) if kamailio else ():
        kam = start_kamailio(work, auth=auth)
        if kam is None:
            continue
        try:
            scenario = os.path.join(PEER_DIR, "register_auth.xml" if auth else "register_noauth.xml")
            results += sipp_tests(sipp, "kamailio", KAMAILIO_PORT, work, seconds, peer_users, peer_uas,
                                  "uas", scenario, {test: start}, rounds=rounds)
            memory["kamailio"] = max(memory.get("kamailio", 0.0), common.peak_rss_mb(kam.pid))
        finally:
            stop(kam)
    return results, memory


def report_sipp(sipp_results, memory, seconds):
    """Print the SIPp figures, each REGISTER round, memory, and the two result rows."""
    print("SIPp (peer scenarios register_auth.xml, uac_call.xml -d 500; rate x1.5 while a %.0f s step "
          "has 0 failed calls and 0 retransmissions, then once between; load %s):"
          % (seconds, common.load()))
    for server, test, best, failed, steady in sipp_results:
        print("  %-9s %-9s %8.0f /s%s" % (server, test, best,
                                         "" if failed is None else "  (next step failed: %s)" % (failed,)))
        if steady:
            rates = [r[1] for r in steady]
            print("  %-9s %-9s rounds %s /s: %s" % (
                server, test, ", ".join("%.0f" % r for r in rates),
                "steady" if all(r[0] for r in steady) and min(rates) >= 0.8 * max(rates)
                else "NOT steady"))
    by = {(s_, t): (b, st) for s_, t, b, _, st in sipp_results}
    if "allworx" in memory:
        print(common.memory_line("SIP", memory["allworx"], "Kamailio", memory.get("kamailio", 0.0)))
    rows = (("reg_auth", "SIP REGISTER with digest (SIPp)", 0.5, "registrations/s"),
            ("call", "SIP calls INVITE-200-ACK-BYE (SIPp)", 0.8, "calls/s"))
    for test, path, goal, unit in rows:
        if ("allworx", test) not in by:
            continue
        mine, steady = by[("allworx", test)]
        peer = by.get(("kamailio", test), (None, []))[0]
        note = ""
        if steady:
            note = "rounds at the best rate: %s /s" % ", ".join("%.0f" % r[1] for r in steady)
        common.result(path, mine, peer or None, "Kamailio", unit, goal,
                      allworx_mb=memory.get("allworx"), peer_mb=memory.get("kamailio"), note=note)


def python_generator(args, work):
    """The Python generator's runs against both servers, printed."""
    results = []
    proc, _stats = start_allworx(work)
    try:
        users = [(str(1000 + n), "secret") for n in range(USERS)]
        gen = Generator(ALLWORX_PORT, "example.com", users)
        cpu0 = cpu_seconds(proc.pid)
        rate, failed, p50, p99 = gen.run_registers(args.duration, args.window)
        cpu = (cpu_seconds(proc.pid) - cpu0) / args.duration * 100
        results.append(("allworx", "reg_auth", rate, failed, p50, p99, cpu))
        if not gen.register_uas(UAS_EXT, "secret"):
            raise RuntimeError("the answering phone could not register")
        cpu0 = cpu_seconds(proc.pid)
        rate, failed, p50, p99 = gen.run_calls(args.duration, args.window, UAS_EXT)
        cpu = (cpu_seconds(proc.pid) - cpu0) / args.duration * 100
        results.append(("allworx", "call", rate, failed, p50, p99, cpu))
    finally:
        stop(proc)

    # Kamailio: digest REGISTER with -A WITH_AUTH; calls without auth (the
    # peer's `call` test; allworx does not challenge INVITEs from a registered
    # phone's address, which the generator's calls come from).
    users = [("u%05d" % (n + 1), "secret") for n in range(USERS)]
    kam = None if args.no_kamailio else start_kamailio(work, auth=True)
    if kam is not None:
        try:
            gen = Generator(KAMAILIO_PORT, "127.0.0.1", users)
            cpu0 = kamailio_cpu(kam)
            rate, failed, p50, p99 = gen.run_registers(args.duration, args.window)
            cpu = (kamailio_cpu(kam) - cpu0) / args.duration * 100
            results.append(("kamailio", "reg_auth", rate, failed, p50, p99, cpu))
        finally:
            stop(kam)
    kam = None if args.no_kamailio else start_kamailio(work, auth=False)
    if kam is not None:
        try:
            gen = Generator(KAMAILIO_PORT, "127.0.0.1", users)
            if gen.register_uas("uas", "secret"):
                cpu0 = kamailio_cpu(kam)
                rate, failed, p50, p99 = gen.run_calls(args.duration, args.window, "uas")
                cpu = (kamailio_cpu(kam) - cpu0) / args.duration * 100
                results.append(("kamailio", "call", rate, failed, p50, p99, cpu))
        finally:
            stop(kam)

    print("SIP benchmark (Python generator, window %d, %.0f s per test, UDP on 127.0.0.1)"
          % (args.window, args.duration))
    for server, test, rate, failed, p50, p99, cpu in results:
        print("%-9s %-9s %8.0f /s  failed %d  latency p50 %.1f ms p99 %.1f ms  server CPU %.0f%%"
              % (server, test, rate, failed, p50, p99, cpu))
    by = {(s, t): r for s, t, r, *_ in results}
    for test in ("reg_auth", "call"):
        if ("kamailio", test) in by and by[("kamailio", test)]:
            print("ratio %-9s allworx/kamailio = %.2f (same generator)"
                  % (test, by[("allworx", test)] / by[("kamailio", test)]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per rate test")
    parser.add_argument("--window", type=int, default=64, help="scenarios in flight")
    parser.add_argument("--no-kamailio", action="store_true")
    parser.add_argument("--no-sipp", action="store_true", help="skip the SIPp runs")
    parser.add_argument("--sipp-seconds", type=float, default=5.0, help="seconds per SIPp step")
    parser.add_argument("--rounds", type=int, default=3,
                        help="consecutive REGISTER rounds at the best rate (steady under load)")
    parser.add_argument("--no-python", action="store_true",
                        help="skip the Python generator's runs")
    parser.add_argument("--profile", metavar="DIR", help="keep py-spy flame graphs of the server in DIR")
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "DATA_DIR", "STATS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(int(args.serve[0]), args.serve[1], args.serve[2])
    if args.profile:
        os.environ[common.PROFILE_ENV] = os.path.abspath(args.profile)

    work = tempfile.mkdtemp(prefix="allworx-bench-sip-")
    print("SIP benchmark, load %s at the start" % common.load(), flush=True)
    if not args.no_python:
        python_generator(args, work)
    print(PEER_FIGURES)
    sipp = None if args.no_sipp else find_or_build_sipp()
    if sipp is not None:
        sipp_results, memory = run_sipp_suite(sipp, work, args.sipp_seconds, kamailio=not args.no_kamailio,
                                              rounds=args.rounds)
        report_sipp(sipp_results, memory, args.sipp_seconds)
    elif not args.no_sipp:
        print("SIPp is missing and could not be built: no result rows (see above)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
