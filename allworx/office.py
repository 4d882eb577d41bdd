# -*- test-case-name: allworx.tests.core.test_office, allworx.tests.core.test_injection -*-
"""
The live state of the office: one source of truth for the configuration and
for the facts services share as events (the WAN address and how it came, DHCP
service's health), with observers so every service reconfigures itself when
something changes.

Every change to the configuration goes through `Office`: it is applied to a
copy of tap.conf's document, the whole copy is validated, the text to be
written is read back and must give the same model (so no value can add a
line, a key or a section the change did not mean), then it is written
atomically with mode 0600 (it holds password hashes and SIP digests) and only
then becomes the live config; a bad change raises `ConfigErrors` and changes
nothing. The copy shares its unedited sections, and what each was read as,
with the live document, so a change costs what it changes: only the sections
it edited are read again and read back (allworx.inifile).

Each change may say who made it: `actor=` a name, or a pair (name, via:
"web", "api", "cli", ...); otherwise whoever `acting` names around it, else
"server". With a history attached (`keep_history`) every change is kept
as a version of tap.conf (allworx.confighistory).
"""

import contextlib
import ipaddress

import attr
from twisted.logger import Logger

from allworx.config import (
    RECORD_SECTIONS, SETTINGS_SECTIONS, ConfigError, ConfigErrors,
    config_from_document, format_value, keys_of, parse_config, parse_pin)
from allworx.config.checks import NO_ADMIN, invalid_name, reads_back
from allworx.config.incremental import config_after_edits
from allworx.config.model import RECORD_NAME, RECORD_PLURALS
from allworx.atomicfile import write_atomically
from allworx.inifile import IniDocument, Section
from allworx.passwords import hash_pin, is_hashed

# tap.conf holds argon2 hashes and SIP digests (password-equivalent for SIP).
CONFIG_MODE = 0o600
# Hosts whose side (LAN or not) `is_lan_peer` remembers at most.
LAN_PEER_CACHE = 4096

log = Logger()


# ---------------------------------------------------------------- events

@attr.s(frozen=True, slots=True)
class ConfigChanged:
    """The configuration was replaced; `sections` names what differs."""

    old = attr.ib()
    new = attr.ib()
    sections = attr.ib()

    def touches(self, *names):
        """True when any of the named sections (`dhcp`, `user`, ...) changed."""
        return any(n in self.sections for n in names)


@attr.s(frozen=True, slots=True)
class LeaseEvent:
    """A DHCP lease on the LAN was granted, renewed, released or expired."""

    kind = attr.ib()        # "granted" | "renewed" | "released" | "expired" | "declined"
    mac = attr.ib()
    address = attr.ib()     # ipaddress.IPv4Address
    hostname = attr.ib(default=None)
    expires = attr.ib(default=None)  # POSIX time the lease ends


@attr.s(frozen=True, slots=True)
class WanAddressChanged:
    """The WAN interface's address (IPv4Interface or None) changed."""

    old = attr.ib()
    new = attr.ib()
    source = attr.ib()      # "static" | "dhcp" | "lost"
    gateway = attr.ib(default=None)


@attr.s(frozen=True, slots=True)
class MailboxChanged:
    """A user's mailbox gained or lost messages (voicemail counts for MWI)."""

    user = attr.ib()
    voicemail_new = attr.ib(default=0)
    voicemail_old = attr.ib(default=0)


@attr.s(frozen=True, slots=True)
class DkimKeysChanged:
    """DKIM keys were made or dropped under data_dir/dkim: the zone publishes them again."""

    published = attr.ib(default=())     # the selectors published now


@attr.s(frozen=True, slots=True)
class ServiceStatus:
    """Whether a service is up, and a sentence saying where it listens or why not."""

    name = attr.ib()
    state = attr.ib()       # "up" | "down" | "disabled" | "degraded"
    detail = attr.ib(default="")


class Office:
    """
    The configuration and runtime state of the office, with observers.

    Observers subscribe to an event class (`ConfigChanged`, `LeaseEvent`, ...)
    and are called synchronously, in order, by `emit`; an observer that raises
    is logged and does not stop the others.
    """

    def __init__(self, config, path=None, data_dir=None):
        # `data_dir` from the command line outranks the file, now and after changes.
        self._data_dir = data_dir
        if data_dir:
            config = config.with_data_dir(data_dir)
        self.config = config
        self.path = path if path is not None else config.path
        self.status = {}
        self.wan_address = config.wan.address if config.wan.mode == "static" else None
        # How the WAN address came: "static", "dhcp", "lost", "disabled" or None.
        self.wan_source = "static" if self.wan_address is not None else None
        self._observers = []
        self._lan_peers = {}        # host -> is_lan_peer, under the config at key None
        self._doc = config.doc if config.doc is not None else IniDocument()
        self._rendered = None       # self._doc rendered, once asked for
        self._pins_hashed = False   # every PIN of self._doc is a hash (a change of ours wrote it)
        self._acting = None         # (actor, via) of the changes being made, see `acting`
        self.history = None         # a ConfigHistory once `keep_history` is called

    # -------------------------------------------------------- observers

    def subscribe(self, event_class, callback):
        """Call `callback(event)` for each event of `event_class`; returns an unsubscribe."""
        entry = (event_class, callback)
        self._observers.append(entry)

        def unsubscribe():
            if entry in self._observers:
                self._observers.remove(entry)
        return unsubscribe

    def emit(self, event):
        for event_class, callback in list(self._observers):
            if isinstance(event, event_class):
                try:
                    callback(event)
                except Exception:
                    log.failure("observer {callback!r} failed on {event!r}",
                                callback=callback, event=event)

    # -------------------------------------------------------- runtime facts

    def set_status(self, name, state, detail=""):
        """Record a service's health; logged when it changes."""
        status = ServiceStatus(name, state, detail)
        if self.status.get(name) != status:
            self.status[name] = status
            log.info("{service}: {state}{sep}{detail}", service=name, state=state,
                     sep=": " if detail else "", detail=detail)
            self.emit(status)

    def set_wan_address(self, address, source, gateway=None):
        """The network service reports the WAN address it applied or lost."""
        old = self.wan_address
        if old == address and self.wan_source == source:
            return
        self.wan_address = address
        self.wan_source = source
        self.emit(WanAddressChanged(old, address, source, gateway))

    @property
    def wan_ip(self):
        return self.wan_address.ip if self.wan_address is not None else None

    def is_lan_peer(self, host):
        """
        True for a peer on the LAN side: inside the LAN subnet, the tunnel's
        subnet or a site's networks, or this host itself. Sound because the
        network service turns on strict reverse-path filtering, so a LAN
        source address cannot arrive on the WAN. Asked for
        every datagram of several protocols, so the answers are kept (per
        config, for a bounded number of hosts).
        """
        cache = self._lan_peers
        if cache.get(None) is not self.config:
            cache.clear()
            cache[None] = self.config
        side = cache.get(host)
        if side is None:
            if len(cache) > LAN_PEER_CACHE:
                cache.clear()
                cache[None] = self.config
            side = cache[host] = self._is_lan_peer(host)
        return side

    def _is_lan_peer(self, host):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address):
            ip = ip.ipv4_mapped or ip
            if isinstance(ip, ipaddress.IPv6Address):
                return ip.is_loopback
        # The tunnel counts as LAN (SPEC 16): WireGuard admits a source only
        # from the peer whose allowed IPs hold it, and strict reverse-path
        # filtering drops those addresses on the WAN (they route to the tunnel).
        return ip in self.config.lan_network or ip.is_loopback or self.config.is_tunnel_side(ip)

    # -------------------------------------------------------- config changes

    def document_text(self):
        """tap.conf as it stands (what a backup downloads)."""
        if self._rendered is None:
            self._rendered = self._doc.render()
        return self._rendered

    def update_settings(self, section, values, actor=None):
        """
        Change keys of a settings section (`dhcp`, `security`, ...).
        `values` maps key -> text (or a model value, written back by its key's
        format). Returns the new Config; raises ConfigErrors and changes nothing
        when the result is invalid.
        """
        return self.update_sections({section: values}, actor=actor)

    def update_sections(self, changes, actor=None):
        """
        Change keys of several settings sections at once, `{section: {key:
        text}}`, so a combination (a WAN and the security mode that needs it)
        is checked whole; as update_settings.
        """
        doc = self._doc.copy()
        errors = []
        for section, values in changes.items():
            cls = SETTINGS_SECTIONS.get(section)
            if cls is None:
                errors.append(ConfigError(section, None, 0, "unknown section"))
                continue
            target = doc.ensure_section(section)
            for k, v in values.items():
                if not _is_key(cls, k):
                    errors.append(ConfigError(section, k, 0, "unknown key"))
                    continue
                text = self._text(cls, k, v)
                if text == "" and attr.fields_dict(cls)[k].default is not attr.NOTHING:
                    target.remove(k)
                else:
                    target.set(k, text)
        if errors:
            raise ConfigErrors(errors)
        return self._apply(doc, actor)

    def put_record(self, kind, name, values, create=None, actor=None):
        """
        Create or replace `[kind name]` with exactly `values` (key -> text).
        `create=True` refuses an existing name, `create=False` a missing one.
        """
        if kind not in RECORD_SECTIONS:
            raise ConfigErrors([ConfigError(kind, None, 0, "unknown kind of record")])
        cls = RECORD_SECTIONS[kind]
        section_name = "%s %s" % (kind, name)
        if not isinstance(name, str) or not RECORD_NAME[kind].fullmatch(name):
            raise ConfigErrors([ConfigError(section_name, None, 0, invalid_name(kind, name))])
        doc = self._doc.copy()
        existing = doc.section(section_name)
        if create is True and existing is not None:
            doc.number()
            raise ConfigErrors([ConfigError(section_name, None, existing.line, "already exists")])
        if create is False and existing is None:
            raise KeyError(section_name)
        target = doc.ensure_section(section_name)
        keep = set()
        for k, v in values.items():
            self._check_key(section_name, cls, k)
            text = self._text(cls, k, v)
            if text != "":
                target.set(k, text)
                keep.add(k)
        for entry in target.entries():
            if entry.key not in keep:
                target.remove(entry.key)
        return self._apply(doc, actor)

    def patch_record(self, kind, name, values, actor=None):
        """Change some keys of an existing `[kind name]`; KeyError if missing."""
        current = getattr(self.config, _plural(kind)).get(name)
        if current is None:
            raise KeyError("%s %s" % (kind, name))
        cls = RECORD_SECTIONS[kind]
        merged = {f.name: format_value(cls, f.name, getattr(current, f.name))
                  for f in keys_of(cls)}
        merged.update(values)
        return self.put_record(kind, name, merged, create=False, actor=actor)

    def delete_record(self, kind, name, actor=None):
        """Remove `[kind name]`; KeyError if missing, ConfigErrors if others need it."""
        section_name = "%s %s" % (kind, name)
        doc = self._doc.copy()
        if doc.section(section_name) is None:
            raise KeyError(section_name)
        doc.remove_section(section_name)
        return self._apply(doc, actor)

    def replace_text(self, text, actor=None):
        """Restore a whole tap.conf (a backup); validated before anything changes."""
        config = parse_config(text, path=self.path)
        return self._apply(config.doc, actor, restore=True)

    def preview_text(self, text):
        """
        The Config a whole tap.conf would become here (the command line's
        data_dir applied), without changing anything; ConfigErrors if invalid.
        """
        config = parse_config(text, path=self.path, data_dir=self._data_dir)
        return config

    # -------------------------------------------------------- who changes it

    @contextlib.contextmanager
    def acting(self, actor, via):
        """
        Within it, changes made without naming an `actor` are recorded as
        made by `actor` (a name) through `via` ("web", "api", "cli", ...).
        """
        before = self._acting
        self._acting = (actor, via)
        try:
            yield
        finally:
            self._acting = before

    def actor_now(self):
        """Who the change being made now is by: (actor, via); ("server", "server") by default."""
        return self._acting or ("server", "server")

    def keep_history(self, history):
        """
        Record every change in `history` (an allworx.confighistory.ConfigHistory);
        tap.conf as it stands is kept first if it differs from the newest
        version (edited by hand while no one was looking).
        """
        self.history = history
        text = self.document_text()
        latest = history.latest_text()
        if latest == text:
            return
        sections = ["(first version kept)"]
        if latest is not None:
            try:
                sections = sorted(changed_sections(
                    parse_config(latest, path=self.path, data_dir=self._data_dir), self.config))
            except ConfigErrors:
                sections = ["(the newest kept version no longer reads)"]
        self._record(history, text, sections, ("file", "file"))

    def _check_key(self, section, cls, k):
        if not _is_key(cls, k):
            raise ConfigErrors([ConfigError(section, k, 0, "unknown key")])

    @staticmethod
    def _text(cls, k, v):
        if isinstance(v, str):
            return v.strip()
        if v is None:
            return ""
        return format_value(cls, k, v)

    def _apply(self, doc, actor=None, restore=False):
        who = self._who(actor)
        moved = text = None
        if who[1] in ("web", "api") and not restore:
            text = doc.render()
            if text != self.document_text():
                moved = move_admin_password(doc)
        edits = doc.edits(self._doc)
        # Always (not short-circuited by `moved`); only the sections edited when
        # those are known and every other PIN was hashed by an earlier change.
        whole = edits is None or not self._pins_hashed
        hashed = hash_plain_pins(doc, None if whole else list(edits[0]))
        if moved or hashed:
            text = None
        try:
            new = config_after_edits(doc, self.config, path=self.path, data_dir=self._data_dir)
        except ConfigErrors as e:
            raise self._last_admin_named(e)
        if text is None:
            text = doc.render()
        data, written = self._read_back(text, new, edits[0] if edits is not None else None)
        if self.path:
            write_atomically(self.path, data, mode=CONFIG_MODE)
        old = self.config
        # Line numbers in later errors match the file written (given when one is read).
        written.doc.renumber_later()
        new = written.with_data_dir(self._data_dir) if self._data_dir else written
        self._doc = written.doc
        self._pins_hashed = True
        self._rendered = text
        self.config = new
        changed = changed_sections(old, new)
        if "wan" in changed and new.wan.mode == "static":
            self.set_wan_address(new.wan.address, "static", new.wan.gateway)
        if moved:
            log.warn("{moved}; [web] admin_password removed (the admin is a user with "
                     "admin = yes)", moved=moved)
        log.info("configuration changed by {actor} ({via}): {sections}", actor=who[0], via=who[1],
                 sections=", ".join(sorted(changed)) or "nothing")
        if self.history is not None:
            self._record(self.history, data, changed, who)
        self.emit(ConfigChanged(old, new, frozenset(changed)))
        return new

    def _last_admin_named(self, errors):
        """A change that leaves no admin is refused naming the admin(s) it removes."""
        admins = self.config.admins
        if not admins:
            return errors
        named = "user %s" % admins[0]
        out = [ConfigError(named, "admin", 0, "%s %s the last admin: give another user "
                           "admin = yes first" % (" and ".join(admins),
                                                  "is" if len(admins) == 1 else "are"))
               if e.message == NO_ADMIN else e for e in errors.errors]
        return ConfigErrors(out)

    def _who(self, actor):
        if actor is None:
            return self.actor_now()
        if isinstance(actor, tuple):
            return actor
        return (actor, self.actor_now()[1])

    @staticmethod
    def _record(history, text, sections, who):
        try:
            history.record(text, sections, who[0], who[1])
        except Exception:
            log.failure("could not keep the configuration's version in {dir}", dir=history.directory)

    def _read_back(self, text, meant, edited=None):
        """
        The bytes to write and the Config they read back as, which must be
        the Config the change meant (`meant`); otherwise ConfigErrors naming
        what would differ, and nothing is written. `edited`: the only sections
        not yet known to read back, when that is known.
        """
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ConfigErrors([ConfigError(None, None, 0, "cannot be written as UTF-8: %s" % e)])
        if reads_back(meant, edited):
            return data, meant
        try:
            written = parse_config(data.decode("utf-8"), path=self.path, data_dir=self._data_dir)
        except ConfigErrors as e:
            raise ConfigErrors([ConfigError(x.section, x.key, 0, "the file written would not "
                                            "read back: %s" % x.message) for x in e.errors])
        if written != meant:
            raise ConfigErrors(differences(meant, written))
        return data, written


def _is_key(cls, k):
    return k in attr.fields_dict(cls) and "parse" in attr.fields_dict(cls)[k].metadata


def _plural(kind):
    return RECORD_PLURALS[kind]


def move_admin_password(doc):
    """
    The old admin login, `[web] admin_password`, moved to `[user admin]` with
    `admin = yes` (SPEC 10), in the document about to be written; what was
    done, or None when there was nothing to move. A new `[user admin]` gets
    the same hash as its `password`. An existing `[user admin]` keeps its own
    password and SIP digest (its mailbox and phone go on working) and gains
    `admin = yes`: from then on `admin` logs in to the pages with that password.
    """
    web = doc.find("web")
    if web is None or web.get("admin_password") is None:
        return None
    web = doc.own(web)                  # to edit
    entry = web.get("admin_password")
    hashed = entry.value.strip()
    # The comment lines just above the key describe it: they go with it.
    at = web.items.index(entry)
    start = at
    while start > 0 and isinstance(web.items[start - 1], str) and \
            web.items[start - 1].lstrip().startswith(("#", ";")) and \
            "admin" in web.items[start - 1].lower():
        start -= 1
    web.items[start:at] = []
    web.edited()
    web.remove("admin_password")
    user = doc.section("user admin")
    if not hashed:
        return "[web] admin_password was empty"
    if user is None:
        # Before the other users (at the end when there are none).
        user = Section("user admin")
        at = next((n for n, s in enumerate(doc.sections) if s.kind == "user"), len(doc.sections))
        doc.sections.insert(at, user)
        doc.untrack()
        if at < len(doc.sections) - 1:
            user.items.append("")
        user.set("full_name", "Administrator")
        user.set("password", hashed)
        user.set("admin", "yes")
        return "the admin login moved to [user admin] (same password)"
    user.set("admin", "yes")
    return ("[user admin] existed: it now has admin = yes and `admin` logs in with "
            "its own password")


def hash_plain_pins(doc, sections=None):
    """
    Replace each voicemail PIN typed into tap.conf as digits with its hash
    (SPEC 1: "stored as a hash on the next write"). It blocks for one argon2
    hash per such PIN, once: the pages and the API hash a new PIN in a
    thread before it gets here, so only PINs from a hand-edited file do.
    Only `sections` (of `doc`) when given. How many it hashed.
    """
    hashed = 0
    for section in (doc.sections if sections is None else sections):
        kept = section.model        # what it was read as, while unedited
        if kept is not None and kept[0] == section.name and (
                kept[3] != "user" or not kept[2].voicemail_pin or is_hashed(kept[2].voicemail_pin)):
            continue
        if section.kind != "user":
            continue
        entry = section.get("voicemail_pin")
        if entry is None or is_hashed(entry.value):
            continue
        try:
            pin = parse_pin(entry.value)
        except ValueError:
            continue            # the validation that follows names it
        doc.own(section).set("voicemail_pin", hash_pin(pin))
        hashed += 1
    return hashed


def differences(meant, written):
    """ConfigErrors' items for each key whose value would read back otherwise."""
    errors = []

    def compare(section, cls, a, b):
        if a is None or b is None:
            errors.append(ConfigError(section, None, 0, "would %s tap.conf when read back" % (
                "appear in" if a is None else "be missing from")))
            return
        for f in keys_of(cls):
            if getattr(a, f.name) != getattr(b, f.name):
                # A secret (a trunk's) is never repeated, not even in an error.
                shown = ("as %r" % format_value(cls, f.name, getattr(b, f.name))
                         if f.repr else "differently")
                errors.append(ConfigError(section, f.name, 0, "would read back from tap.conf "
                                          "%s, not as given" % shown))
    for name, cls in SETTINGS_SECTIONS.items():
        compare(name, cls, getattr(meant, name), getattr(written, name))
    for kind, cls in RECORD_SECTIONS.items():
        a, b = getattr(meant, _plural(kind)), getattr(written, _plural(kind))
        for label in sorted(set(a) | set(b)):
            if a.get(label) != b.get(label):
                compare("%s %s" % (kind, label), cls, a.get(label), b.get(label))
    return errors or [ConfigError(None, None, 0, "would not read back from tap.conf as given")]


def changed_sections(old, new):
    """Names of the settings sections and record kinds that differ."""
    out = set()
    for name in SETTINGS_SECTIONS:
        if getattr(old, name) != getattr(new, name):
            out.add(name)
    for kind in RECORD_SECTIONS:
        if getattr(old, _plural(kind)) != getattr(new, _plural(kind)):
            out.add(kind)
    return out
