# -*- test-case-name: allworx.tests.web.test_phones -*-
"""
The phones that configure themselves (SPEC 19) as the Phones page and
`/api/v1/phones` show and change them, in one place so both say and do the
same:

- `phone_rows`: every `[phone MAC]` section (state `assigned`) and every
  MAC the provisioning service saw asking for its file without one (state
  `new`), with the address that holds its DHCP lease (else the one it asked
  from), its last fetch and whether it is registered (a binding of its
  owner's extension from that address; for a new phone, any binding from it);
- `give`: write a phone's `[phone MAC]` section through the office's record
  machinery (every mistake at once, nothing half-written), the model guessed
  from the sighting when the admin names none;
- `new_secret` and `resync`: a new SIP secret (never shown) and the
  vendor's check-sync, waited for a few seconds at most.
"""

from twisted.internet import defer
from twisted.logger import Logger

from allworx.auth import user_for_login
from allworx.config import RECORD_SECTIONS, ConfigError, ConfigErrors
from allworx.config.phones import MODELS, normalise_mac
from allworx.protocols.web import changes
from allworx.protocols.web.apijson import rfc3339
from allworx.protocols.web.metrics import field
from allworx.protocols.web.pagebase import listed

log = Logger()

ASSIGNED, NEW = "assigned", "new"
# How long an answer waits for the phone to take its check-sync; a phone that
# is slower still gets it, the answer just says "not known yet" (None).
RESYNC_WAIT = 4.0
# The keys of a phone as the API shows it (SPEC 19), in that order.
PHONE_KEYS = ("mac", "model", "user", "label", "address", "last_fetch", "registered", "state")
# The keys an admin sets; the others are facts a client may echo back.
WRITABLE = ("user", "model", "label")


class NotRunning(Exception):
    """What a change needs is not running here (the phone book)."""


def mac_or_none(text):
    """12 lowercase hex digits, or None when `text` is no MAC."""
    try:
        return normalise_mac(str(text or ""))
    except ValueError:
        return None


def checked_mac(text):
    """The MAC of a URL or a form as 12 lowercase hex digits; ConfigErrors naming it."""
    mac = mac_or_none(text)
    if mac is None:
        try:
            normalise_mac(str(text or ""))
        except ValueError as e:
            raise ConfigErrors([ConfigError("phone %s" % text, "mac", 0, str(e))])
    return mac


def section_of(config, mac):
    """The name of the `[phone]` section of `mac` (as tap.conf writes it), or None."""
    for name, phone in config.phones.items():
        if phone.mac == mac:
            return name
    return None


def sightings_of(views):
    """{mac: sighting} from the phone book; {} without one (or if it fails, logged)."""
    book = views.phones
    if book is None:
        return {}
    try:
        found = book.sightings()
    except Exception:
        log.failure("admin pages: the phone book's sightings() failed")
        return {}
    return {m: s for m, s in ((mac_or_none(k), v) for k, v in dict(found).items()) if m}


def _host(source):
    """The host of a binding's `host:port` (or `[v6]:port`)."""
    text = str(source or "")
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def phone_rows(config, views):
    """
    Every phone, assigned ones (by MAC) then new ones (by MAC): dicts of
    PHONE_KEYS, `last_fetch` as POSIX seconds or None, plus `section` (the
    tap.conf section name, None for a new phone), `full_name` and `extension`
    of the owner, `filename` and `user_agent` of the last fetch.
    """
    seen = sightings_of(views)
    leased = {}
    for lease in listed(views.leases, "active_leases"):
        mac = mac_or_none(field(lease, "mac"))
        if mac is not None:
            leased[mac] = str(field(lease, "address"))
    bound = [(str(field(b, "extension", "")), _host(field(b, "source")))
             for b in listed(views.registrations, "bindings")]

    def row(mac, state, phone=None):
        s = seen.get(mac)
        address = leased.get(mac) or (field(s, "address") if s is not None else None)
        address = str(address) if address else None
        owner = config.users.get(phone.user) if phone is not None else None
        ext = owner.extension if owner is not None else None
        guess = field(s, "model") if s is not None else None
        return {
            "mac": mac, "state": state, "section": None if phone is None else phone.name,
            "model": (phone.model if phone is not None and phone.model else
                      guess if guess in MODELS else None),
            "user": phone.user if phone is not None else None,
            "full_name": (owner.full_name or owner.name) if owner is not None else None,
            "extension": ext,
            "label": phone.label if phone is not None else "",
            "address": address,
            "last_fetch": field(s, "last_fetch") if s is not None else None,
            "registered": address is not None and any(
                host == address and (phone is None or e == str(ext)) for e, host in bound),
            "filename": field(s, "filename") if s is not None else None,
            "user_agent": field(s, "user_agent") if s is not None else None,
        }
    assigned = {}
    for phone in config.phones.values():
        assigned.setdefault(phone.mac, phone)
    return ([row(mac, ASSIGNED, assigned[mac]) for mac in sorted(assigned)]
            + [row(mac, NEW) for mac in sorted(seen) if mac not in assigned])


def phone_json(row):
    """A phone as `/api/v1/phones` gives it (SPEC 19)."""
    out = {k: row[k] for k in PHONE_KEYS}
    out["last_fetch"] = rfc3339(row["last_fetch"])
    return out


def phones_json(config, views):
    return [phone_json(r) for r in phone_rows(config, views)]


def find(config, views, mac):
    """The row of one phone (assigned or seen); KeyError if neither."""
    for r in phone_rows(config, views):
        if r["mac"] == mac:
            return r
    raise KeyError("phone %s" % mac)


def give(office, views, mac, values, mode="assign"):
    """
    Write the `[phone MAC]` section: `values` {user, model, label} as text;
    `mode` `assign` (create, or change only the keys given), `replace`
    (create, or the keys given and no others) or `patch` (change an existing
    one). The user may be named by name, extension or address; a new
    section takes the model the sighting guessed when none is given. Returns
    True if the section is new. ConfigErrors naming every mistake; KeyError
    for a patch of a phone without a section.
    """
    config = office.config
    existing = section_of(config, mac)
    name = existing or mac
    values = {k: ("" if v is None else v) for k, v in values.items()}
    user = values.get("user")
    if isinstance(user, str) and user.strip():
        found = user_for_login(config, user)
        if found is not None:
            values["user"] = found.name
    if existing is None:
        if mode == "patch":
            raise KeyError("phone %s" % mac)
        if not str(values.get("user") or "").strip():
            # Named with the other mistakes the keys show (the file's checks need an owner).
            section = "phone %s" % name
            values.pop("user", None)
            raise ConfigErrors([ConfigError(section, "user", 0, "who the phone is given to: a "
                                            "user's name or extension")]
                               + changes.key_errors("phone", RECORD_SECTIONS["phone"], values,
                                                    section))
        if not str(values.get("model") or "").strip():
            guess = sightings_of(views).get(mac)
            guess = field(guess, "model") if guess is not None else None
            values.pop("model", None)
            if guess in MODELS:
                values["model"] = guess
        changes.save_record(office, "phone", name, values, "create")
        return True
    changes.save_record(office, "phone", name, values, "replace" if mode == "replace" else "patch")
    return False


def remove(office, mac):
    """Remove the phone's `[phone]` section; KeyError if it has none."""
    name = section_of(office.config, mac)
    if name is None:
        raise KeyError("phone %s" % mac)
    changes.delete_record(office, "phone", name)


def resync(views, clock, mac, wait=RESYNC_WAIT):
    """
    Tell the phone to fetch its settings again: a Deferred firing True (it
    took the check-sync), False (not registered, refused, no phone system
    running) or None (no
    answer within `wait` seconds; the phone still gets it). Never fails.
    """
    checksync = views.checksync
    if checksync is None:
        log.info("phone {mac}: no check-sync (the phone system is not running)", mac=mac)
        return defer.succeed(False)
    answer = defer.Deferred()

    def fired(took):
        log.info("phone {mac}: check-sync {outcome}", mac=mac,
                 outcome="taken" if took else "not taken (not registered, or refused)")
        if not answer.called:
            timer.cancel()
            answer.callback(bool(took))

    def failed(failure):
        log.failure("phone {mac}: check-sync failed", failure, mac=mac)
        fired(False)

    def late():
        answer.callback(None)
    timer = clock.callLater(wait, late)
    defer.maybeDeferred(checksync.resync, mac).addCallbacks(fired, failed)
    return answer


def new_secret(office, views, clock, mac):
    """
    A new SIP secret for an assigned phone (never shown), then its
    check-sync (see `resync`). KeyError without a `[phone]` section,
    NotRunning without a phone book.
    """
    if section_of(office.config, mac) is None:
        raise KeyError("phone %s" % mac)
    if views.phones is None:
        raise NotRunning("the phone book (provisioning) is not running")
    d = defer.maybeDeferred(views.phones.rotate, mac)
    d.addCallback(lambda _secret: log.info("phone {mac}: new SIP secret", mac=mac))
    return d.addCallback(lambda _: resync(views, clock, mac))


def resync_words(took):
    """What the page says of a check-sync's outcome."""
    if took:
        return "The phone was told to fetch its settings again."
    if took is None:
        return "The phone is told to fetch its settings again."
    return ("The phone is not registered (or refused the check-sync): it takes its settings "
            "when it next asks for them (restart it to make that now).")
