# -*- test-case-name: allworx.tests.core.test_phonebook -*-
"""
The phone book of phones that configure themselves (SPEC 19), IPhoneBook:
each phone's own SIP secret and the sightings of phones that asked the
provisioning service for their files.

- Secrets live in `data_dir/phones/secrets.json` (mode 0600, the directory
  0700), written atomically and before `secret` or `rotate` returns, so a
  secret handed to a phone is never one the server forgets. A secret is 128
  random bits as URL-safe text (22 characters: no quoting needed in any
  vendor's file format). A secrets file that cannot be read is kept aside
  (`secrets.json.unreadable-TIME`), logged, and new secrets are made: the
  phones get them at their next fetch.
- Sightings live in `data_dir/phones/seen.json`: at most MAX_SIGHTINGS MACs,
  the one seen longest ago dropped first. A provisioning fetch only changes
  memory; the file is written at most once every WRITE_DELAY seconds (and on
  `flush`, which the server calls when it stops), so a phone that fetches in
  a loop cannot make the server write in one.

MACs are taken in any notation and kept as 12 lowercase hex digits
(`allworx.config.phones.normalise_mac`); a malformed one is a ValueError.
"""

import base64
import collections
import json
import os
import time

import attr
from twisted.internet import defer, threads
from twisted.logger import Logger
from zope.interface import implementer

from allworx.atomicfile import JsonStateFile, ensure_directory, write_atomically
from allworx.config.phones import MODELS, normalise_mac
from allworx.interfaces import IPhoneBook

log = Logger()

MAX_SIGHTINGS = 500
WRITE_DELAY = 30.0          # seconds a sighting may wait before seen.json is written
SECRET_BYTES = 16           # 128 bits


def new_secret():
    """128 random bits as URL-safe base64 text without padding (22 characters)."""
    return base64.urlsafe_b64encode(os.urandom(SECRET_BYTES)).decode("ascii").rstrip("=")


@attr.s(frozen=True, slots=True)
class Sighting:
    """A phone that asked for its file: the latest request of that MAC."""

    mac = attr.ib()
    address = attr.ib()             # text: the address it asked from (its lease's)
    model = attr.ib()               # one of MODELS, or None: not guessed
    filename = attr.ib()
    user_agent = attr.ib(default=None)
    last_fetch = attr.ib(default=0.0)   # POSIX seconds

    def to_json(self):
        return attr.asdict(self)

    @classmethod
    def from_json(cls, value):
        """A Sighting from its JSON object; ValueError when it does not read as one."""
        if not isinstance(value, dict):
            raise ValueError("not an object")
        model = value.get("model")
        if model is not None and model not in MODELS:
            model = None
        texts = [value.get(k) for k in ("address", "filename")]
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("address or filename missing")
        agent = value.get("user_agent")
        return cls(mac=normalise_mac(str(value.get("mac", ""))), address=texts[0], model=model,
                   filename=texts[1], user_agent=agent if isinstance(agent, str) else None,
                   last_fetch=float(value.get("last_fetch") or 0))


@implementer(IPhoneBook)
class PhoneBook:
    """
    IPhoneBook under `data_dir/phones`. `clock` times the sightings and the
    delayed writes (a reactor, or a task.Clock in tests); `defer_to_thread`
    runs the writes of seen.json (in tests: run them at once).
    """

    def __init__(self, data_dir, clock, defer_to_thread=threads.deferToThread,
                 max_sightings=MAX_SIGHTINGS):
        self.directory = os.path.join(data_dir, "phones")
        self.secrets_path = os.path.join(self.directory, "secrets.json")
        self.clock = clock
        self.max_sightings = max_sightings
        self._secrets = self._load_secrets()        # mac -> {"secret", "made"}
        self._seen_file = JsonStateFile(os.path.join(self.directory, "seen.json"),
                                        "phone sightings", defer_to_thread)
        self._seen = self._load_seen()              # mac -> Sighting, the oldest first
        self._write_call = None

    # ------------------------------------------------------------ secrets

    def secret(self, mac):
        mac = normalise_mac(mac)
        entry = self._secrets.get(mac)
        if entry is None:
            return self._replace(mac, "made")
        return entry["secret"]

    def rotate(self, mac):
        return self._replace(normalise_mac(mac), "replaced")

    def held_secret(self, mac):
        """
        The secret the phone itself holds: after a rotation, the previous one
        until the phone has fetched its file again (a check-sync NOTIFY the
        phone challenges is answered with what the phone knows), else the
        current one. Registration never takes the previous one.
        """
        mac = normalise_mac(mac)
        entry = self._secrets.get(mac)
        if entry is None:
            return self.secret(mac)
        seen = self._seen.get(mac)
        if entry.get("previous") and (seen is None or seen.last_fetch < entry["made"]):
            return entry["previous"]
        return entry["secret"]

    def has_secret(self, mac):
        """True when the phone has a secret already (nothing is made)."""
        return normalise_mac(mac) in self._secrets

    def _replace(self, mac, how):
        secret = new_secret()
        secrets = dict(self._secrets)
        entry = {"secret": secret, "made": self.clock.seconds()}
        if how == "replaced" and mac in secrets:
            entry["previous"] = secrets[mac]["secret"]
        secrets[mac] = entry
        self._write_secrets(secrets)        # raises OSError, leaving memory as it was
        self._secrets = secrets
        log.info("SIP secret of phone {mac} {how}", mac=mac, how=how)
        return secret

    def _write_secrets(self, secrets):
        ensure_directory(self.directory)
        text = json.dumps({"version": 1, "secrets": secrets}, indent=1, sort_keys=True) + "\n"
        write_atomically(self.secrets_path, text)

    def _load_secrets(self):
        try:
            with open(self.secrets_path, encoding="utf-8") as f:
                data = json.load(f)
            secrets = data["secrets"]
            out = {}
            for mac, entry in secrets.items():
                if not isinstance(entry.get("secret"), str) or not entry["secret"]:
                    raise ValueError("phone %s has no secret" % mac)
                out[normalise_mac(mac)] = {"secret": entry["secret"],
                                           "made": float(entry.get("made") or 0)}
                if isinstance(entry.get("previous"), str) and entry["previous"]:
                    out[normalise_mac(mac)]["previous"] = entry["previous"]
            return out
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            aside = "%s.unreadable-%d" % (self.secrets_path, int(time.time()))
            try:
                os.rename(self.secrets_path, aside)
            except OSError:
                aside = None
            log.error("phone secrets in {path} could not be read ({why}); kept as {aside}; "
                      "each phone gets a new secret at its next fetch",
                      path=self.secrets_path, why=str(e) or type(e).__name__, aside=aside)
            return {}

    # ------------------------------------------------------------ sightings

    def sighted(self, mac, address, model, filename, user_agent=None):
        mac = normalise_mac(mac)
        if model is not None and model not in MODELS:
            raise ValueError("%r is not a phone model: one of %s" % (model, ", ".join(MODELS)))
        first = mac not in self._seen
        self._seen.pop(mac, None)
        self._seen[mac] = Sighting(mac=mac, address=str(address), model=model,
                                   filename=str(filename), user_agent=user_agent,
                                   last_fetch=self.clock.seconds())
        while len(self._seen) > self.max_sightings:
            self._seen.popitem(last=False)
        if first:
            log.info("phone {mac} ({model}) asked for {filename} from {address}", mac=mac,
                     model=model or "model unknown", filename=filename, address=address)
        if self._write_call is None:
            self._write_call = self.clock.callLater(WRITE_DELAY, self.flush)

    def sightings(self):
        return dict(self._seen)

    def flush(self):
        """Write seen.json now if a sighting waits (a Deferred, fired once written)."""
        if self._write_call is None:
            return defer.succeed(None)
        if self._write_call.active():
            self._write_call.cancel()
        self._write_call = None
        return self._seen_file.save([s.to_json() for s in self._seen.values()])

    def _load_seen(self):
        seen = collections.OrderedDict()
        value = self._seen_file.load()
        if value is None:
            return seen
        if not isinstance(value, list):
            log.warn("ignoring {path}: not a list of sightings", path=self._seen_file.path)
            return seen
        rows = []
        for item in value:
            try:
                rows.append(Sighting.from_json(item))
            except (ValueError, TypeError) as e:
                log.warn("ignoring a sighting in {path}: {why}", path=self._seen_file.path,
                         why=str(e))
        for s in sorted(rows, key=lambda s: s.last_fetch)[-self.max_sightings:]:
            seen.pop(s.mac, None)
            seen[s.mac] = s
        return seen
