# -*- test-case-name: allworx.tests.web.test_apijson -*-
"""
What the API's JSON says (SPEC 10): yes/no keys as booleans, ports and counts
as numbers, everything else (durations and sizes among them) as the text
tap.conf holds, in the admin's own words (`12h` stays `12h`); the running
services' times (a lease's or a registration's `expires`, ...) as RFC 3339
UTC strings.
"""

import datetime

import attr

from allworx.config import RECORD_SECTIONS, SETTINGS_SECTIONS, ConfigError, ConfigErrors
from allworx.config.values import JSON_BOOLEAN, JSON_NUMBER, json_type
from allworx.protocols.web import changes

# Keys of the running services' records that hold a POSIX time.
TIME_KEYS = frozenset(("expires", "time", "started", "answered_at", "created", "next_attempt",
                       "last_seen", "first_seen", "since", "last_success", "until"))


def typed(cls, name, value, text):
    """One key as JSON: the model's `value` for a boolean or a number, else the file's `text`."""
    kind = json_type(attr.fields_dict(cls)[name].metadata["parse"])
    if kind == JSON_BOOLEAN:
        return bool(value)
    if kind == JSON_NUMBER:
        return value
    return text


def typed_values(cls, model, texts):
    """`{key: JSON value}` for the keys in `texts` (`{key: text}`), read from `model`."""
    return {k: typed(cls, k, getattr(model, k), v) for k, v in texts.items()}


def settings_json(office, section):
    """A settings section as the API shows it (the admin hash left out)."""
    texts = changes.worded_values(changes.settings_values(office, section),
                                  changes.file_texts(office, section))
    return typed_values(SETTINGS_SECTIONS[section], getattr(office.config, section), texts)


def record_fields_json(office, kind, name):
    """A record's keys as the API shows them, secrets left out (the caller adds `name`)."""
    texts = changes.worded_values(changes.record_values(office, kind, name),
                                  changes.record_texts(office, kind, name))
    texts = changes.shown_values(texts, kind)
    record = getattr(office.config, changes.PLURALS[kind])[name]
    return typed_values(RECORD_SECTIONS[kind], record, texts)


def rfc3339(when):
    """A POSIX time as RFC 3339 UTC (`2024-05-01T14:32:00Z`); None for none (or 0)."""
    if when is None or isinstance(when, bool) or not when:
        return None
    return datetime.datetime.fromtimestamp(float(when), datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def with_times(obj):
    """JSON-ready data (from `plain`) with every number under a TIME_KEYS key as RFC 3339."""
    if isinstance(obj, dict):
        return {k: (rfc3339(v) if k in TIME_KEYS and isinstance(v, (int, float))
                    and not isinstance(v, bool) else with_times(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [with_times(v) for v in obj]
    return obj


class ApiError(Exception):
    """An answer other than 200: status code, short error, reason for a person."""

    def __init__(self, code, error, reason, **extra):
        Exception.__init__(self, reason)
        self.code = code
        self.error = error
        self.reason = reason
        self.extra = extra


def error_field(error):
    """The field an API client sees for a ConfigError: its key, else `name`/section."""
    if error.key:
        return error.key
    if error.section and error.section.split(" ", 1)[0] in RECORD_SECTIONS:
        return "name"
    return error.section or "body"


def invalid_body(errors):
    """
    The 400 body for ConfigErrors: the first field and reason, and all of
    them. The first error that names a key comes first: a record's own
    complaint ("has no records") often only follows from a value refused.
    """
    items = [{"section": e.section, "key": e.key, "message": e.message,
              "field": error_field(e), "reason": e.message, "line": e.line or None}
             for e in errors]
    keyed = [item for item in items if item["key"]]
    first = (keyed or items or [{"field": "body", "reason": "invalid"}])[0]
    return {"error": "invalid", "field": first["field"], "reason": first["reason"],
            "errors": items}


def as_text(key, value):
    """A JSON value as the text of a tap.conf key."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return (", " if key == "mx" else " ").join(str(v) for v in value)
    raise ApiError(400, "invalid", "expected text, a number, true/false or a list of text",
                   field=key)


def texts_of(data, section, kind):
    """
    A JSON body's fields as tap.conf texts (`as_text`). A field of the wrong
    JSON type is named together with every other mistake the fields show on
    their own (ConfigErrors).
    """
    values, errors = {}, []
    for k, v in data.items():
        try:
            values[k] = as_text(k, v)
        except ApiError as e:
            errors.append(ConfigError(section, k, 0, e.reason))
    if errors:
        cls = SETTINGS_SECTIONS.get(kind) or RECORD_SECTIONS.get(kind)
        skip = ("password", "voicemail_pin", "pop3_fetch") if kind == "user" else ()
        raise ConfigErrors(errors + changes.key_errors(kind, cls, values, section, skip))
    return values


def plain(obj):
    """A service's record (attrs, dict or object) as JSON-ready data."""
    if attr.has(type(obj)):
        obj = attr.asdict(obj, recurse=False)
    elif not isinstance(obj, dict) and hasattr(obj, "__dict__"):
        obj = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return str(obj)
