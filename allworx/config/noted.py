# -*- test-case-name: allworx.tests.core.test_office -*-
"""
The cross-checks between sections, run again only when what they read
changed: a check that passed is noted with every attribute of the Config
(and every kind of `declared`) it read, and the values it saw; when a later
Config gives the same values for all of them, the check would pass again
and is not run. So a change to one record costs the checks that read that
kind of record, not every check over the whole office.
"""

_MISSING = object()


class _Reading:
    """A Config as a check sees it, noting each attribute it reads."""

    __slots__ = ("_noted_config", "_noted")

    def __init__(self, config):
        self._noted_config = config
        self._noted = {}

    def __getattr__(self, name):
        value = getattr(self._noted_config, name)
        self._noted.setdefault(name, value)
        return value


class _Declared:
    """`declared` ({kind: names in the file}) as a check sees it, noting each kind it asks for."""

    __slots__ = ("_declared", "_noted")

    def __init__(self, declared):
        self._declared = declared
        self._noted = {}

    def get(self, kind, default=None):
        value = self._declared.get(kind, _MISSING)
        self._noted.setdefault(kind, value)
        return default if value is _MISSING else value


def _same(a, b):
    """Whether a check reading `b` where it read `a` sees the same thing (mappings: in the same order)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        if a != b:
            return False
    except Exception:
        return False
    return list(a) == list(b) if isinstance(a, dict) else True


def _unchanged(seen, config, declared):
    reads, kinds = seen
    for name, value in reads.items():
        try:
            now = getattr(config, name)
        except Exception:       # a derived fact that fails now: the check says why
            return False
        if not _same(value, now):
            return False
    return all(_same(value, declared.get(kind, _MISSING)) for kind, value in kinds.items())


def run_checks(checks, config, err, declared, notes):
    """
    Run each of `checks` (`check(config, err, declared)`) that `notes`
    ({check name: what it read when it passed}, updated here) does not show
    passing with the same inputs. `err` must append to a list that
    `errors()` counts: its length says whether a check passed.
    """
    errors = err.errors
    for check in checks:
        name = check.__qualname__
        seen = notes.get(name)
        if seen is not None and _unchanged(seen, config, declared):
            continue
        reading, kinds = _Reading(config), _Declared(declared)
        before = len(errors)
        check(reading, err, kinds)
        if len(errors) == before:
            notes[name] = (reading._noted, kinds._noted)
        else:
            notes.pop(name, None)
