# -*- test-case-name: allworx.tests.core.test_config_change -*-
"""
A change's Config built from the one before it: a document copied from the
previous Config's and edited (allworx.inifile notes what was edited) is read
again only where it was edited. Every section it did not touch is what the
previous Config made of it (the same objects), so a change to one record of
an office of thousands costs that record and the cross-checks that read its
kind (allworx.config.noted), not a walk over every section.

It gives the Config `config_from_document` gives for the same document, or
leaves the work to it: whenever the edits are not known, a section edited
does not read or build cleanly, or a cross-check fails, the whole document
is read as `config_from_document` reads it, so the errors and their lines
are exactly those of a full read.
"""

from allworx.config import checks
from allworx.config.checks import config_from_document
from allworx.config.model import RECORD_NAME, RECORD_PLURALS, RECORD_SECTIONS, SETTINGS_SECTIONS, Config


def config_after_edits(doc, previous, path=None, data_dir=None):
    """
    The Config of `doc`, a copy of `previous.doc` edited since; raises
    ConfigErrors naming every problem, as `config_from_document` does.
    """
    config = None
    if previous is not None and previous.doc is not None:
        config = _from_previous(doc, previous, path, data_dir)
    if config is None:
        config = config_from_document(doc, path=path, data_dir=data_dir)
    return config


class _LazyDeclared:
    """{kind: the names of its sections}, each kind's set made when a check first asks for it."""

    __slots__ = ("_records", "_made")

    def __init__(self, records):
        self._records = records
        self._made = {}

    def get(self, kind, default=None):
        names = self._made.get(kind)
        if names is None:
            items = self._records.get(kind)
            if items is None:
                return default
            names = self._made[kind] = set(items)
        return names


def _kept(section, cls):
    """The model kept on `section` (unedited since it read cleanly as `cls`), or None."""
    kept = section.model
    return kept[2] if kept is not None and kept[0] == section.name and kept[1] is cls else None


def _model(section, cls):
    """What `section` reads and builds as (kept on it), or None when it does not, cleanly."""
    obj = _kept(section, cls)
    if obj is not None:
        return obj
    errors = []
    values, failed = checks._read_section(section, cls, errors)
    # As a full read builds it (and keeps the model on the section when it is clean).
    obj = checks._built(section.kind, section.label, (cls, values, section, failed, not errors),
                        errors)
    return None if errors else obj


def _normal(section):
    kind, label = section.kind, section.label
    return "%s %s" % (kind, label) if label else kind


def _class_of(section):
    """The model class of a section's kind, or None for a name `config_from_document` refuses."""
    kind, label = section.kind, section.label
    if label is None:
        return SETTINGS_SECTIONS.get(kind)
    cls = RECORD_SECTIONS.get(kind)
    if cls is None or not RECORD_NAME[kind].match(label):
        return None
    return cls


def _from_previous(doc, previous, path, data_dir):
    origin = previous.doc
    edits = doc.edits(origin)
    if edits is None or doc.preamble != origin.preamble:
        return None
    touched, removed = edits
    # The previous Config's own dicts (a Config's are never changed in place),
    # each copied before its first change here: the kinds not changed stay the
    # same objects, which the cross-checks' notes and `changed_sections` see at once.
    records = {kind: getattr(previous, RECORD_PLURALS[kind]) for kind in RECORD_SECTIONS}
    copied = set()

    def writable(kind):
        if kind not in copied:
            copied.add(kind)
            records[kind] = dict(records[kind])
        return records[kind]

    for name in removed:
        kind, _, label = name.partition(" ")
        if kind not in RECORD_SECTIONS or not label:
            return None         # a settings section removed: its defaults, read whole
        writable(kind).pop(label, None)
    settings = {}
    for section in touched:
        if doc.find(section.name) is not section:
            if _normal(section) in removed:
                continue        # removed after it was edited (added again: in `touched` too)
            return None
        cls = _class_of(section)
        obj = _model(section, cls) if cls is not None else None
        if obj is None:
            return None
        if section.label is None:
            settings[section.kind] = obj
        else:
            writable(section.kind)[section.label] = obj
    for kind, cls in SETTINGS_SECTIONS.items():
        if kind in settings:
            continue
        section = doc.find(kind)
        if section is None:
            errors = []
            obj = checks._build(kind, None, cls, {}, None, (), errors)
            if errors or obj is None:
                return None
        else:
            obj = _kept(section, cls)
            if obj is None:
                return None
        settings[kind] = obj
    config = Config(doc=doc, path=path, **settings, **{
        RECORD_PLURALS[kind]: items for kind, items in records.items()})
    if data_dir:
        config = config.with_data_dir(data_dir)
    errors = []
    # No lines for the errors: on any, the full read names them.
    checks._cross_check(config, {}, errors, True, _LazyDeclared(records), doc.checked)
    if errors:
        return None
    return config
