# -*- test-case-name: allworx.tests.lab.test_labphones -*-
"""
The lab's office phones: a real SIP client (baresip, headless) in each phone
host, registered with the server as a lab user's extension, so that the
Phones page shows them after `make run`; and `allworx lab call HOST NUMBER`,
which has one of them place a call and reports its progress.

Each phone is baresip with no terminal UI, driven over its ctrl_tcp module
(netstring-framed JSON on 127.0.0.1:CTRL_PORT inside the phone's namespace:
`{"command": "dial", "params": "102"}`; its events, such as
`{"event": true, "type": "CALL_ESTABLISHED"}`, arrive on the same connection).
There is no sound card in the lab: a phone sends its own tone (LabPhone.tone:
phone1 440 Hz, phone2 660, bphone1 880), plays what it hears to nowhere and
records it (sndfile, STATE/phones/HOST/heard), so that `allworx lab call`
says which tone came back: audio both ways, not only signalling. It answers calls itself (answermode auto), so a
call between two lab phones is answered at once. Its `mwi` module is not
loaded (in baresip 1.0 it spins the CPU when the server's NOTIFY answers).
Its files are in STATE/phones/HOST; the lab runs it as process `phone-HOST`.

The phones provision themselves (SPEC 19), as a desk phone does: each phone
host's dhclient sends the vendor class `baresip` and asks for option 66; the
lab reads option 66 from the lease, fetches `{mac}.baresip` from it with curl
(an `http://` URL as given, a bare address over TFTP), and splits the file
into baresip's `accounts` (the `<sip:` lines) and `config` (every other
line), keeping the lab's own settings (the control port, the tone, the
address to listen on). When there is no option 66 or the fetch fails, the
phone starts with its hand-made account (LAB_PHONES) and says why.
"""

import ctypes
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
import wave

import attr

from allworx.lab.maildir import write_atomically
from allworx.lab.processes import LabError
from allworx.lab.tones import longest_tone, wav_samples
from allworx.lab.topology import BRANCH_LAN_IP, LINKS, SERVER_LAN_IP

CTRL_PORT = 4444
RTP_PORTS = (30000, 30099)
CLONE_NEWNET = 0x40000000
BARESIP_MODULES = "/usr/lib/baresip/modules"
# What the lab's phones say they are in DHCP option 60. No vendor the server
# knows by name: it answers with option 66 = its LAN address (TFTP).
PHONE_VENDOR_CLASS = "baresip"
FETCH_TIMEOUT = 10
# Config keys the lab sets itself, whatever the provisioned file says: the
# phone's address, its control port and its sound (there is no sound card).
LAB_KEYS = ("poll_method", "sip_listen", "rtp_ports", "module_path", "audio_source",
            "ausrc_srate", "ausrc_channels", "audio_player", "audio_alert",
            "ctrl_tcp_listen", "snd_path")
# sndfile writes what each call sent and heard as WAV files under the
# phone's `heard` directory (HEARD_DIR): `allworx lab call` and the tests
# read the tone the other end sent from them.
LAB_MODULES = (("module", ("g711", "ausine", "aubridge", "sndfile")),
               ("module_app", ("account", "menu", "ctrl_tcp")))
# Modules a provisioned file may name that the lab never loads: mwi spins the
# CPU in baresip 1.0 when the server's NOTIFY answers; stdio wants a terminal.
SKIPPED_MODULES = ("mwi", "stdio", "cons")
HEARD_DIR = "heard"
KEEP_RECORDINGS = 20


@attr.s(frozen=True)
class LabPhone:
    """The account a lab phone registers: extension `ext` of user `user`
    (password `password`) at the server whose LAN address is `registrar`;
    it sends a sine of `tone` Hz into every call."""

    user = attr.ib()
    ext = attr.ib()
    password = attr.ib(repr=False)
    registrar = attr.ib()
    tone = attr.ib(default=440)

    def account_line(self):
        """The phone's line of baresip's `accounts` file."""
        return ("<sip:{ext}@{reg}>;auth_user={ext};auth_pass={pw};regint=300;"
                "answermode=auto;audio_codecs=PCMU\n").format(
                    ext=self.ext, reg=self.registrar, pw=self.password)


# The repository's tap.conf (the users' demo passwords are NAME-demo) and the
# branch's (allworx.lab.sites.BRANCH_USERS).
LAB_PHONES = {
    "phone1": LabPhone("alice", "101", "alice-demo", SERVER_LAN_IP, tone=440),
    "phone2": LabPhone("bob", "102", "bob-demo", SERVER_LAN_IP, tone=660),
    "bphone1": LabPhone("dave", "201", "dave-demo", BRANCH_LAN_IP, tone=880),
}


def _lab_lines(ip, directory, tone=440):
    """The config lines the lab sets for a phone listening for SIP on `ip`,
    its files in `directory`, sending a `tone` Hz sine."""
    return [
        "poll_method epoll",
        "sip_listen %s:5060" % ip,
        "rtp_ports %d-%d" % RTP_PORTS,
        "module_path " + BARESIP_MODULES,
        # ausine makes 48 kHz stereo only; baresip resamples it to the codec's rate.
        "audio_source ausine,%d" % tone,
        "ausrc_srate 48000",
        "ausrc_channels 2",
        "audio_player aubridge,nowhere",
        "audio_alert aubridge,nowhere",
        "ctrl_tcp_listen 127.0.0.1:%d" % CTRL_PORT,
        "snd_path " + os.path.join(directory, HEARD_DIR),
    ] + ["%s %s.so" % (key, m) for key, names in LAB_MODULES for m in names]


def phone_files(phone, directory, ip):
    """{path: text}: baresip's config, accounts and contacts for `phone`
    listening for SIP on `ip` (its DHCP address): the hand-made account."""
    config = "\n".join([
        "# allworx lab: office phone of %s (extension %s) at %s"
        % (phone.user, phone.ext, phone.registrar)] + _lab_lines(ip, directory, phone.tone)) + "\n"
    return {os.path.join(directory, "config"): config,
            os.path.join(directory, "accounts"): phone.account_line(),
            os.path.join(directory, "contacts"): ""}


# ------------------------------------------------------------ provisioning

def host_mac(host):
    """The fixed MAC of a lab host's eth0 (topology.LINKS), as 12 lowercase hex digits."""
    for link in LINKS:
        if link.a == host and link.a_if == "eth0" and link.a_mac:
            return link.a_mac.replace(":", "").lower()
    raise LabError("lab host %r has no fixed MAC" % (host,))


def provisioning_url(lease, mac):
    """
    Where a phone with `mac` (12 hex digits) fetches its generic file, from
    option 66 of its dhclient lease: an `http(s)://` URL is the directory,
    anything else is the TFTP server's address. None without option 66.
    """
    server = (lease or {}).get("tftp_server_name", "").strip()
    if not server:
        return None
    name = "%s.baresip" % mac
    if re.match(r"(?i)^https?://", server):
        return server + ("" if server.endswith("/") else "/") + name
    if not re.fullmatch(r"[A-Za-z0-9.:-]+", server):
        raise ValueError("option 66 %r is neither a URL nor a server address" % server)
    return "tftp://%s/%s" % (server, name)


def split_generic(text):
    """
    The generic provisioning file (baresip's own lines) split by the rule
    of the contract: `<sip:` lines are `accounts` lines, every other line
    that is not blank or a comment is a `config` line. Returns (config
    lines, account lines); ValueError if it has no account.
    """
    config, accounts = [], []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        (accounts if line.startswith("<sip:") else config).append(line)
    if not accounts:
        raise ValueError("the provisioned file has no <sip: account line")
    return config, accounts


def _module_name(line):
    key, _, value = line.partition(" ")
    if key not in ("module", "module_app", "module_tmp"):
        return None
    return os.path.basename(value.strip())[:-3] if value.strip().endswith(".so") \
        else value.strip()


def provisioned_files(text, directory, ip, source, modules_dir=BARESIP_MODULES, tone=440):
    """
    {path: text}: baresip's config, accounts and contacts from a fetched
    generic file (`source` names where from, for the comment): its config
    lines but for the lab's own keys (LAB_KEYS) and modules baresip does not
    have or the lab never loads, then the lab's lines; its accounts, each
    answering calls itself (answermode=auto) unless it says otherwise.
    """
    fetched, accounts = split_generic(text)
    lab = _lab_lines(ip, directory, tone)
    have = {line for line in lab}
    config = ["# allworx lab: provisioned from %s" % source]
    for line in fetched:
        key = line.split(None, 1)[0]
        module = _module_name(line)
        if key in LAB_KEYS or line in have:
            continue
        if module is not None and (module in SKIPPED_MODULES or not os.path.exists(
                os.path.join(modules_dir, module + ".so"))):
            continue
        config.append(line)
    config += lab
    lines = [a if ";answermode=" in a else a + ";answermode=auto" for a in accounts]
    return {os.path.join(directory, "config"): "\n".join(config) + "\n",
            os.path.join(directory, "accounts"): "\n".join(lines) + "\n",
            os.path.join(directory, "contacts"): ""}


def fetch_provisioning(lab, host, url, timeout=FETCH_TIMEOUT):
    """The text of `url` fetched with curl inside lab host `host`; LabError
    (with curl's own words) when it fails."""
    done = lab.run(host, ["curl", "--silent", "--show-error", "--fail",
                          "--max-time", str(timeout), url],
                   check=False, timeout=timeout + 5)
    if done.returncode != 0:
        raise LabError("curl %s: exit %d: %s" % (url, done.returncode,
                                                 (done.stderr or "").strip()[-300:]))
    return done.stdout


def process_name(host):
    return "phone-" + host


def phone_setup(lab, host, ip, lease, directory):
    """
    ({path: text}, sentence): the files lab phone `host` starts with, from
    its provisioning server (option 66 of `lease`) or, when that fails, its
    hand-made account, and a sentence saying which (and why).
    """
    try:
        url = provisioning_url(lease, host_mac(host))
        if url is None:
            raise LabError("no option 66 in its DHCP lease")
        return (provisioned_files(fetch_provisioning(lab, host, url), directory, ip, url,
                                  tone=LAB_PHONES[host].tone),
                "provisioned from %s" % url)
    except (LabError, ValueError, OSError) as e:
        return (phone_files(LAB_PHONES[host], directory, ip),
                "hand-made account; provisioning failed: %s" % e)


def phone_directory(lab, host):
    """Where lab phone `host` keeps its baresip files (and `heard`)."""
    return os.path.join(lab.state_dir, "phones", host)


def _forget_old_recordings(directory, keep=KEEP_RECORDINGS):
    """Remove all but the newest `keep` recordings (a call writes two)."""
    heard = os.path.join(directory, HEARD_DIR)
    names = sorted(recordings(directory),
                   key=lambda n: os.stat(os.path.join(heard, n)).st_mtime)
    for name in names[:max(0, len(names) - keep)]:
        os.unlink(os.path.join(heard, name))


def start_phone(lab, host, ip, lease=None):
    """Write lab phone `host`'s files (provisioned, see phone_setup) and
    start its baresip (replacing one already running). Returns (the Popen,
    a sentence on where its account came from)."""
    directory = phone_directory(lab, host)
    os.makedirs(os.path.join(directory, HEARD_DIR), exist_ok=True)
    _forget_old_recordings(directory)
    files, how = phone_setup(lab, host, ip, lease, directory)
    for path, text in files.items():
        write_atomically(path, text.encode())
    lab.stop(process_name(host))
    return lab.popen(host, ["baresip", "-f", directory], name=process_name(host),
                     stdin=subprocess.DEVNULL), how


def start_phones_when_leased(lab, hosts, stopping, timeout=60, sleep=time.sleep,
                             clock=time.monotonic):
    """
    Start each lab phone of `hosts` once its dhclient has a lease (its SIP
    address). Returns {host: sentence} of what happened to each.
    """
    said = {}
    deadline = clock() + timeout
    waiting = list(hosts)
    while waiting and not stopping and clock() < deadline:
        for host in list(waiting):
            lease = lab.dhclient_lease(host)
            if lease and lease.get("ip_address"):
                try:
                    _, how = start_phone(lab, host, lease["ip_address"], lease)
                    said[host] = "started on %s (%s)" % (lease["ip_address"], how)
                except (LabError, OSError) as e:
                    said[host] = "did not start: %s" % e
                waiting.remove(host)
        if waiting:
            sleep(0.5)
    for host in waiting:
        said[host] = "not started: no DHCP lease in %d s" % timeout
    return said


def socket_in_ns(ns, family=socket.AF_INET, kind=socket.SOCK_STREAM, proto=0):
    """A socket created inside network namespace `ns` (setns in a throwaway thread)."""
    out = {}

    def make():
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = os.open("/run/netns/" + ns, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                out["error"] = OSError(ctypes.get_errno(), "setns failed")
                return
            out["sock"] = socket.socket(family, kind, proto)
        finally:
            os.close(fd)
    t = threading.Thread(target=make)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["sock"]


def netstring(body):
    return b"%d:%s," % (len(body), body)


class NetstringReader:
    """Netstrings out of a byte stream: `feed` bytes, then `messages()`
    yields each complete one's JSON (text that is not JSON is skipped)."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        self.buf += data

    def messages(self):
        while True:
            length, colon, rest = self.buf.partition(b":")
            if not colon or not length.isdigit() or len(rest) < int(length) + 1:
                if colon and not length.isdigit():
                    raise ValueError("not a netstring: %r" % self.buf[:40])
                return
            n = int(length)
            body, self.buf = rest[:n], rest[n + 1:]
            try:
                yield json.loads(body)
            except ValueError:
                continue


class PhoneControl:
    """A connection to a lab phone's ctrl_tcp: `command` sends, `next` waits."""

    def __init__(self, sock):
        self.sock = sock
        self.reader = NetstringReader()
        self.pending = []

    @classmethod
    def connect(cls, ns, port=CTRL_PORT, timeout=5):
        sock = socket_in_ns(ns)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        return cls(sock)

    def command(self, command, params=""):
        body = json.dumps({"command": command, "params": params, "token": command})
        self.sock.sendall(netstring(body.encode()))

    def next(self, timeout):
        """The next message (a dict), or None after `timeout` seconds."""
        deadline = time.monotonic() + max(0, timeout)
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not data:
                raise LabError("the phone closed its control connection")
            self.reader.feed(data)
            self.pending.extend(self.reader.messages())
        return self.pending.pop(0)

    def close(self):
        self.sock.close()


# What the events of a call say, as `allworx lab call` prints them.
PROGRESS = {
    "CALL_OUTGOING": "calling",
    "CALL_PROGRESS": "ringing (early media)",
    "CALL_RINGING": "ringing",
    "CALL_ESTABLISHED": "answered",
}


def place_call(control, number, hold=10.0, answer_timeout=40.0, say=print,
               clock=time.monotonic):
    """
    Dial `number` on a lab phone (a PhoneControl), report each step with
    `say`, keep the call up `hold` seconds once answered, then hang up.
    Returns 0 when the call was answered, 1 when it was not (refused, busy,
    no answer in `answer_timeout`).
    """
    control.command("dial", number)
    say("dialling %s ..." % number)
    answered = False
    deadline = clock() + answer_timeout
    hung_up = False
    while True:
        msg = control.next(deadline - clock())
        if msg is None:
            if answered and not hung_up:
                say("hanging up after %g s" % hold)
                control.command("hangup")
                hung_up = True
                deadline = clock() + 5
                continue
            if hung_up:
                say("the phone did not report the call's end")
                return 0
            say("no answer in %g s: hanging up" % answer_timeout)
            control.command("hangup")
            return 1
        if msg.get("response"):
            if msg.get("token") in ("dial", "hangup") and msg.get("ok") is False:
                say("the phone refused %s: %s" % (msg.get("token"), msg.get("data", "").strip()))
                if msg.get("token") == "dial":
                    return 1
            continue
        kind = msg.get("type", "")
        if kind == "CALL_ESTABLISHED" and not answered:
            answered = True
            say("answered by %s; the Phones page shows the call" % (msg.get("peeruri") or number))
            deadline = clock() + hold
        elif kind == "CALL_CLOSED":
            reason = (msg.get("param") or "").strip() or "no reason given"
            say("call ended: %s" % reason)
            return 0 if answered else 1
        elif kind in PROGRESS and kind != "CALL_ESTABLISHED":
            say(PROGRESS[kind])


# ------------------------------------------------------------ what a call heard

def recordings(directory):
    """The names of the WAV files sndfile has written in a phone's `heard`
    directory (its files in `directory`); empty when there are none."""
    try:
        return set(os.listdir(os.path.join(directory, HEARD_DIR)))
    except OSError:
        return set()


def finished_heard(directory, before):
    """
    (samples, rate) of what the phone heard in its newest call, the decoded
    audio sndfile wrote in a file not named in `before`, once baresip has
    closed it (the RIFF size then matches the file); None until then.
    """
    names = sorted(n for n in recordings(directory) - set(before) if "dec" in n)
    if not names:
        return None
    path = os.path.join(directory, HEARD_DIR, names[-1])
    try:
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < 44 or int.from_bytes(data[4:8], "little") + 8 != len(data):
            return None
        return wav_samples(data)
    except (OSError, EOFError, ValueError, wave.Error, struct.error):
        return None


def describe_heard(samples, rate, own_tone):
    """
    (sentence, heard anything): what a call's decoded audio holds, for
    `allworx lab call`: the longest run of another lab phone's tone, else
    whether it was sound (a prompt, speech) or silence (no audio came back).
    """
    if not samples or not rate:
        return "heard nothing: the phone recorded no audio", False
    best = (0.0, None)
    for host, phone in sorted(LAB_PHONES.items()):
        if phone.tone == own_tone:
            continue
        seconds, _ = longest_tone(samples, rate, phone.tone)
        if seconds > best[0]:
            best = (seconds, (host, phone.tone))
    if best[1] is not None and best[0] >= 0.5:
        return ("heard %s's %d Hz tone for %.1f s: audio both ways"
                % (best[1][0], best[1][1], best[0]), True)
    loud = sum(1 for x in samples if abs(x) > 300)
    if loud > len(samples) // 100:
        return ("heard %.1f s of sound (no lab phone's tone: a prompt or a recording)"
                % (len(samples) / rate), True)
    return "heard %.1f s of silence: no audio reached this phone" % (len(samples) / rate), False
