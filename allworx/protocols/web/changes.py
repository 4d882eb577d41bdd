# -*- test-case-name: allworx.tests.web.test_api, allworx.tests.web.test_pages, allworx.tests.web.test_secrets -*-
"""
The changes the admin pages and the API make, in one place so both apply the
same rules: plain passwords are hashed (argon2, in a thread) together with the
user's SIP digest, so are voicemail PINs (shown only as "set" / "not set";
sending either back keeps the PIN), fetch-account passwords shown masked are
kept, several sections change at once or not at all. Every function ends in
an Office call, which validates the whole config and raises `ConfigErrors`
naming the section, key and line; nothing changes on error.
"""

import re
from urllib.parse import urlsplit

import attr

from twisted.internet import defer, threads

from allworx.config import (
    RECORD_PLURALS, RECORD_SECTIONS, SETTINGS_SECTIONS, ConfigError, ConfigErrors,
    check_value_text, format_value, keys_of, parse_pin)
from allworx.passwords import hash_password, hash_pin, is_hashed, sip_digest

# Shown instead of a stored secret; sending it back means "keep what is there".
MASK = "********"

PLURALS = RECORD_PLURALS

# What the pages and the API show for a voicemail PIN; either sent back keeps it.
PIN_SET = "set"
PIN_NOT_SET = "not set"

# Keys that only the server writes, never a form or a script.
SERVER_KEYS = {"user": ("sip_digest",), "web": ("admin_password",)}

# Keys of records that the pages and the API set but never show: hashes and
# a trunk's secret. Left out of a replace (or sent empty), the stored one stays.
HIDDEN_KEYS = {"user": ("password", "sip_digest"), "trunk": ("secret",)}


def shown_values(values, kind):
    """A record's `{key: text}` without the keys never shown."""
    return {k: v for k, v in values.items() if k not in HIDDEN_KEYS.get(kind, ())}


def record_values(office, kind, name):
    """`{key: text}` of an existing record, as tap.conf has it."""
    record = getattr(office.config, PLURALS[kind])[name]
    cls = RECORD_SECTIONS[kind]
    return {f.name: format_value(cls, f.name, getattr(record, f.name)) for f in keys_of(cls)}


def file_texts(office, section):
    """
    `{key: text}` of a section exactly as tap.conf has it (the admin's own
    words: `1d` stays `1d`), only the keys the file sets; {} without it.
    """
    doc = office.config.doc
    found = doc.section(section) if doc is not None else None
    return {e.key: e.value for e in found.entries()} if found is not None else {}


def record_texts(office, kind, name):
    """`{key: text}` of a record as tap.conf words it (`file_texts`)."""
    return file_texts(office, "%s %s" % (kind, name))


def worded_values(values, texts):
    """Values as the model formats them, with the file's own words where it has some."""
    return dict(values, **{k: v for k, v in texts.items() if k in values})


def settings_values(office, section):
    """`{key: text}` of a settings section (secrets, such as `metrics_token`, left out)."""
    cls = SETTINGS_SECTIONS[section]
    current = getattr(office.config, section)
    return {f.name: format_value(cls, f.name, getattr(current, f.name))
            for f in keys_of(cls) if f.name not in SERVER_KEYS.get(section, ()) and f.repr}


def with_whole_file(office, errors, sections, skip=()):
    """
    `errors` (the mistakes keys show on their own) and those the whole file
    would show with the other keys of `sections` ({section: {key: text}})
    written (one value against another, a reference), found without changing
    anything: every mistake of a request at once.
    """
    doc = office.config.doc.copy()
    named = {(e.section, e.key) for e in errors}
    for section, values in sections.items():
        target = doc.ensure_section(section)
        for k, text in values.items():
            if (section, k) not in named and k not in skip and text.strip():
                target.set(k, text.strip())
    try:
        office.preview_text(doc.render())
    except ConfigErrors as e:
        return errors + [x for x in e.errors if (x.section, x.key) not in named]
    return errors


def unwritten(cls, values, shown, texts):
    """
    `values` as they are to be written: those the file leaves out and that
    mean what is shown anyway (the default) left out, and those that mean
    what the file says already in the file's words (`true` stays `true` when
    `yes` comes back, `5` when `5.0` does); so a record or section sent back
    as read changes nothing, and a default stays a default.
    """
    fields = attr.fields_dict(cls)

    def same(text, before):
        try:
            parse = fields[text[0]].metadata["parse"]
            return parse(text[1].strip()) == parse(before.strip())
        except (KeyError, ValueError):
            return False
    out = {}
    for k, v in values.items():
        if k in texts:
            out[k] = texts[k] if v.strip() and same((k, v), texts[k]) else v
        elif shown.get(k) is None or not same((k, v), shown[k]):
            out[k] = v
    return out


def pin_state(user):
    """What the pages and the API show of a user's voicemail PIN."""
    return PIN_SET if user.voicemail_pin else PIN_NOT_SET


def mask_fetch_urls(text):
    """pop3_fetch URLs with each password replaced by MASK, for showing."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", lambda m: m.group(1) + MASK + "@", text)


def unmask_fetch_urls(text, accounts):
    """
    Put back the stored password of each URL that came back with MASK, matched
    by scheme, user, host and port; a masked URL that matches nothing is an error.
    """
    stored = {a.display: a.url for a in accounts}
    out = []
    for url in text.split():
        if (":%s@" % MASK) in url:
            parts = urlsplit(url.replace(MASK, "x"))
            try:
                port = parts.port or (995 if parts.scheme == "pop3s" else 110)
            except ValueError:
                port = None
            display = "%s://%s@%s:%s" % (parts.scheme, parts.username, parts.hostname, port)
            if display not in stored:
                raise ValueError("%s is a new account: type its password instead of %s"
                                 % (display, MASK))
            url = stored[display]
        out.append(url)
    return " ".join(out)


def _refuse(section, key, message):
    return ConfigErrors([ConfigError(section, key, 0, message)])


def check_keys(kind, values, section):
    """Refuse keys that only the server writes (sip_digest, the admin hash)."""
    errors = key_errors(kind, None, values, section)
    if errors:
        raise ConfigErrors(errors)


def key_errors(kind, cls, values, section, skip=()):
    """
    Every mistake of `values` ({key: text}) that shows without the rest of
    the file, all at once: keys only the server writes, unknown keys, values
    their key cannot read (`cls` None: only the first). The whole file's
    checks (references, overlaps) follow when there are none.
    """
    errors = []
    fields = attr.fields_dict(cls) if cls is not None else None
    for k, text in values.items():
        if k in SERVER_KEYS.get(kind, ()):
            errors.append(ConfigError(section, k, 0, "is set by the server (from the password), "
                                                     "not by hand"))
        elif fields is None or k in skip:
            continue
        elif k not in fields or "parse" not in fields[k].metadata:
            errors.append(ConfigError(section, k, 0, "unknown key"))
        elif text.strip():
            try:
                fields[k].metadata["parse"](text.strip())
            except ValueError as e:
                errors.append(ConfigError(section, k, 0, str(e)))
    return errors


def apply_settings(office, changes):
    """
    Change keys of one or more settings sections together: `{section: {key:
    text}}`. With several sections the whole file changes at once, so a
    combination (a WAN and the security mode that needs it) is checked whole.
    """
    changes = {s: v for s, v in changes.items() if v}
    errors = []
    for section, values in changes.items():
        if section not in SETTINGS_SECTIONS:
            errors.append(ConfigError(section, None, 0, "unknown section"))
            continue
        errors += key_errors(section, SETTINGS_SECTIONS[section], values, section)
    if errors:
        raise ConfigErrors(with_whole_file(office, errors, {
            s: v for s, v in changes.items() if s in SETTINGS_SECTIONS}))
    changes = {s: unwritten(SETTINGS_SECTIONS[s], v, settings_values(office, s),
                            file_texts(office, s))
               for s, v in changes.items()}
    changes = {s: v for s, v in changes.items() if v}
    if not changes:
        return office.config
    return office.update_sections(changes)


def _hash_user(values, extension, domain, deferToThread):
    plain = values.pop("password")
    if plain.startswith("$argon2"):
        # An existing hash (a script copying users between offices): kept as is.
        values["password"] = plain
        return defer.succeed(values)

    def hashed(result):
        values["password"] = result
        if extension:
            values["sip_digest"] = sip_digest(extension, domain, plain)
        else:
            values.pop("sip_digest", None)
        return values
    return deferToThread(hash_password, plain).addCallback(hashed)


def _pin_value(section, values, existing):
    """
    The `voicemail_pin` text to store from what was sent: "set" / "not set"
    (what the pages and API show) keep the stored PIN, "" clears it, digits
    are a new PIN (hashed later), a hash is copied as it is.
    """
    pin = values["voicemail_pin"].strip()
    if pin in (PIN_SET, PIN_NOT_SET):
        return (existing.voicemail_pin or "") if existing is not None else ""
    if pin and not is_hashed(pin):
        try:
            check_value_text(pin)
            parse_pin(pin)          # its error does not repeat the PIN
        except ValueError as e:
            raise _refuse(section, "voicemail_pin", str(e))
    return pin


def _hash_new_pin(values, deferToThread):
    """Hash a PIN given as digits (in a thread, as passwords are)."""
    pin = values.get("voicemail_pin", "")
    if not pin or is_hashed(pin):
        return defer.succeed(values)

    def hashed(result):
        values["voicemail_pin"] = result
        return values
    return deferToThread(hash_pin, pin).addCallback(hashed)


def save_user(office, name, values, mode, deferToThread=threads.deferToThread):
    """
    Create (`mode="create"`), replace (`"replace"`) or change (`"patch"`) a
    user from form or JSON text. A `password` is plain text: it is hashed in a
    thread, and the SIP digest is written with it. An empty password on a
    change keeps the stored one. A `voicemail_pin` is digits, hashed in a
    thread too ("set" / "not set" keep it). Returns a Deferred firing with
    (config, warnings).
    """
    section = "user %s" % name
    values = {k: (v if isinstance(v, str) else "" if v is None else str(v)) for k, v in values.items()}
    existing = office.config.users.get(name)
    warnings = []
    if mode == "create" and existing is not None:
        return defer.fail(_refuse(section, None, "user %s already exists" % name))
    if mode != "create" and existing is None:
        return defer.fail(KeyError(section))
    # Every mistake at once: the keys' own, the PIN's, the fetch accounts', the password's.
    errors = key_errors("user", RECORD_SECTIONS["user"], values, section,
                        skip=("password", "voicemail_pin", "pop3_fetch"))
    if existing is not None and not errors:
        values = unwritten(RECORD_SECTIONS["user"], values, record_values(office, "user", name),
                           record_texts(office, "user", name))
    # A change keeps the file's words for the keys it does not touch (and
    # leaves out the keys the file leaves out: their defaults stay defaults).
    merged = record_texts(office, "user", name) if existing is not None and mode == "patch" else {}
    if existing is not None and mode == "replace":
        # A replace keeps what only the server can know: the hash and digest.
        merged = {k: v for k, v in record_values(office, "user", name).items()
                  if k in ("password", "sip_digest")}
    merged.update(values)
    if "pop3_fetch" in values and existing is not None:
        try:
            merged["pop3_fetch"] = unmask_fetch_urls(values["pop3_fetch"], existing.pop3_fetch)
        except ValueError as e:
            errors.append(ConfigError(section, "pop3_fetch", 0, str(e)))
    if "voicemail_pin" in values:
        try:
            merged["voicemail_pin"] = _pin_value(section, values, existing)
        except ConfigErrors as e:
            errors += e.errors
    plain = values.get("password", "")
    if mode == "create" and not plain.strip():
        errors.append(ConfigError(section, "password", 0, "is required for a new user"))
    if errors:
        return defer.fail(ConfigErrors(with_whole_file(office, errors, {section: values},
                                                       skip=("password", "voicemail_pin",
                                                             "pop3_fetch"))))
    extension = merged.get("extension", "").strip()
    domain = office.config.system.domain
    if plain.strip():
        d = _hash_user(dict(merged, password=plain), extension, domain, deferToThread)
    else:
        # No new password: the stored hash (and digest) stay.
        merged["password"] = existing.password
        if existing is not None and (existing.extension or "") != extension and existing.sip_digest:
            warnings.append("the extension changed: set the password again so phones "
                            "can register as %s" % (extension or "no extension"))
        d = defer.succeed(merged)

    actor = office.actor_now()      # the hashes come later, in a thread

    def apply(final):
        create = True if mode == "create" else False
        return office.put_record("user", name, final, create=create, actor=actor), warnings
    d.addCallback(_hash_new_pin, deferToThread)
    return d.addCallback(apply)


def save_record(office, kind, name, values, mode):
    """
    Create, replace or change a record other than a user (an alias, host,
    trunk, group, ...). Returns the new config; raises ConfigErrors or
    KeyError (no such record).
    """
    if kind == "user":
        raise ValueError("users go through save_user (their passwords are hashed)")
    if kind not in RECORD_SECTIONS:
        raise _refuse(kind, None, "unknown kind of record")
    section = "%s %s" % (kind, name)
    values = {k: (v if isinstance(v, str) else "" if v is None else str(v)) for k, v in values.items()}
    existing = getattr(office.config, PLURALS[kind]).get(name)
    errors = key_errors(kind, RECORD_SECTIONS[kind], values, section)
    if errors:
        raise ConfigErrors(with_whole_file(office, errors, {section: values}))
    if mode == "create":
        if existing is not None:
            raise _refuse(section, None, "%s %s already exists" % (kind, name))
        return office.put_record(kind, name, values, create=True)
    if existing is None:
        raise KeyError(section)
    # A secret sent empty, or left out of a replace, keeps the stored one
    # (the pages and the API never show it, so cannot send it back).
    hidden = HIDDEN_KEYS.get(kind, ())
    values = {k: v for k, v in values.items() if k not in hidden or v.strip()}
    values = unwritten(RECORD_SECTIONS[kind], values, record_values(office, kind, name),
                       record_texts(office, kind, name))
    if mode == "patch":
        # The keys left alone keep the file's words (and those it leaves out stay out).
        return office.put_record(kind, name, dict(record_texts(office, kind, name), **values),
                                 create=False)
    kept = {k: v for k, v in record_values(office, kind, name).items() if k in hidden}
    return office.put_record(kind, name, dict(kept, **values), create=False)


def delete_record(office, kind, name):
    """Remove a record; KeyError if missing, ConfigErrors if others refer to it."""
    return office.delete_record(kind, name)


def change_admin_password(office, plain, deferToThread=threads.deferToThread):
    """
    The logged-in admin's own password: his `[user]`'s (hashed in a thread,
    with the SIP digest), or, for the old login `admin` without a user yet,
    `[web] admin_password`, which that same change moves to `[user admin]`.
    """
    if not plain or not plain.strip():
        return defer.fail(_refuse("web", "admin_password", "the new password is empty"))
    if len(plain) < 8:
        return defer.fail(_refuse("web", "admin_password", "use at least 8 characters"))
    actor = office.actor_now()
    if actor[0] in office.config.users:
        return save_user(office, actor[0], {"password": plain}, "patch", deferToThread)
    d = deferToThread(hash_password, plain)
    return d.addCallback(lambda hashed: office.update_settings("web", {"admin_password": hashed},
                                                               actor=actor))


def restore(office, text):
    """Replace tap.conf with a backup after validating it whole."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse(None, None, "the file is not UTF-8 text")
    if not text.strip():
        raise _refuse(None, None, "the file is empty")
    return office.replace_text(text)
