# -*- test-case-name: allworx.tests.core.test_config, allworx.tests.core.test_config_outside -*-
"""
Loading tap.conf: `load_config` reads the whole file and returns a `Config`,
or raises `ConfigErrors` listing every problem with its section, key and line;
the checks between keys and sections (ranges inside the LAN, references) run
after each section has been read on its own.
"""

import difflib

import attr

from allworx.config.model import (
    BUILTIN_NAMES, RECORD_NAME, RECORD_NAME_HINT, RECORD_PLURALS, RECORD_SECTIONS, REQUIRED,
    SETTINGS_SECTIONS, Config, keys_of)
from allworx.config.telephony import EMERGENCY
from allworx.config.values import Target, format_score, parse_email
from allworx.config.noted import run_checks
from allworx.config.phones import check_phones
from allworx.config.vpn import check_vpn
from allworx.inifile import IniDocument, IniSyntaxError


# ---------------------------------------------------------------- errors

@attr.s(frozen=True, slots=True)
class ConfigError:
    """One problem in the file, pinned to a section, key and line."""

    section = attr.ib()
    key = attr.ib()
    line = attr.ib()
    message = attr.ib()

    def __str__(self):
        where = "[%s]" % self.section if self.section else "file"
        if self.key:
            where += " %s" % self.key
        if self.line:
            where = "line %d: %s" % (self.line, where)
        return "%s: %s" % (where, self.message)

    def as_dict(self):
        return {"section": self.section, "key": self.key, "line": self.line,
                "message": self.message}


class ConfigErrors(ValueError):
    """Every error found in a config, in file order."""

    def __init__(self, errors, path=None):
        self.errors = sorted(errors, key=lambda e: (e.line or 0, e.section or "", e.key or ""))
        self.path = path
        ValueError.__init__(self, self.report())

    def report(self):
        head = "%s: " % self.path if self.path else ""
        return "\n".join(head + str(e) for e in self.errors)


def _did_you_mean(word, choices):
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return "; did you mean %r?" % close[0] if close else ""


# ---------------------------------------------------------------- loading

def load_config(path, data_dir=None):
    """Read and validate the file at `path`; raises ConfigErrors."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigErrors([ConfigError(None, None, 0, "cannot read: %s" % e.strerror)], path)
    except UnicodeDecodeError as e:
        raise ConfigErrors([ConfigError(None, None, 0, "not UTF-8 text: %s" % e)], path)
    return parse_config(text, path=path, data_dir=data_dir)


def parse_config(text, path=None, data_dir=None):
    """Validate INI `text` into a Config; raises ConfigErrors."""
    try:
        doc = IniDocument.parse(text)
    except IniSyntaxError as e:
        raise ConfigErrors([ConfigError(None, None, e.line, "%s: %r" % (e.reason, e.text.strip()))], path)
    return config_from_document(doc, path=path, data_dir=data_dir)


def config_from_document(doc, path=None, data_dir=None):
    """Validate a parsed document; raises ConfigErrors naming every problem."""
    doc.number()        # its errors name the lines of the text it renders
    errors = []
    settings = {}
    records = {kind: {} for kind in RECORD_SECTIONS}
    read = []   # the sections read, in order: the lines the cross-checks' errors name
    seen = {}
    fresh = []  # (kind, label) of the records read here: the others are their models already

    for section in doc.sections:
        # An unedited section that read cleanly before is the same object again.
        kept = section.model
        if kept is not None and kept[0] == section.name:
            name, cls, obj, kind, label, norm = kept
            if norm not in seen:
                seen[norm] = section.line
                read.append(section)
                if label is None:
                    settings[kind] = (cls, obj, section, (), obj)
                else:
                    records[kind][label] = obj
                continue
        kind, label = section.kind, section.label
        norm = "%s %s" % (kind, label) if label else kind
        if norm in seen:
            errors.append(ConfigError(section.name, None, section.line,
                                      "duplicate section (first at line %d)" % seen[norm]))
            continue
        seen[norm] = section.line
        if kind in SETTINGS_SECTIONS and label is None:
            cls = SETTINGS_SECTIONS[kind]
        elif kind in RECORD_SECTIONS and label:
            cls = RECORD_SECTIONS[kind]
            if not RECORD_NAME[kind].match(label):
                errors.append(ConfigError(section.name, None, section.line,
                                          invalid_name(kind, label)))
                continue
        elif kind in RECORD_SECTIONS:
            errors.append(ConfigError(section.name, None, section.line,
                                      "needs a name: [%s NAME]" % kind))
            continue
        elif kind in SETTINGS_SECTIONS:
            errors.append(ConfigError(section.name, None, section.line,
                                      "[%s] takes no name" % kind))
            continue
        else:
            errors.append(ConfigError(section.name, None, section.line,
                                      "unknown section" + _did_you_mean(
                                          kind, list(SETTINGS_SECTIONS) + list(RECORD_SECTIONS))))
            continue
        read.append(section)
        before = len(errors)
        values, failed = _read_section(section, cls, errors)
        parsed = (cls, values, section, failed, len(errors) == before)
        if label is None:
            settings[kind] = parsed
        else:
            records[kind][label] = parsed
            fresh.append((kind, label))

    built = {}
    for kind, cls in SETTINGS_SECTIONS.items():
        built[kind] = _built(kind, None, settings.get(kind, (cls, {}, None, (), False)), errors)
    declared = {kind: set(items) for kind, items in records.items()}
    # Each record built in place (the order of the sections stays), dropped if it cannot be.
    for kind, label in fresh:
        items = records[kind]
        obj = _built(kind, label, items[label], errors)
        if obj is None:
            del items[label]
        else:
            items[label] = obj
    lines = _Lines(read)

    config = Config(doc=doc, path=path, **built, **{
        RECORD_PLURALS[kind]: items for kind, items in records.items()})
    complete = all(v is not None for v in built.values())
    if data_dir and complete:
        config = config.with_data_dir(data_dir)
    _cross_check(config, lines, errors, complete, declared, doc.checked)
    if errors:
        raise ConfigErrors(errors, path)
    return config


def invalid_name(kind, label):
    """The message for a section name its kind does not allow."""
    hint = RECORD_NAME_HINT.get(kind)
    return "%r is not a valid %s name%s" % (label, kind, ": expected " + hint if hint else "")


class _Lines:
    """(section name, key) -> line of the sections read, for the cross-checks' errors (made when asked)."""

    def __init__(self, sections):
        self.sections = sections
        self.found = None

    def get(self, key, default=None):
        if self.found is None:
            found = {}
            for section in self.sections:
                for entry in section.entries():
                    found[(section.name, entry.key)] = entry.line
                found[(section.name, None)] = section.line
            self.found = found
        return self.found.get(key, default)


def _read_section(section, cls, errors):
    """Parse each key of `section`: (values, keys that failed to parse)."""
    fields = {f.name: f for f in keys_of(cls)}
    values = {}
    failed = set()
    for entry in section.entries():
        if entry.key in values:
            errors.append(ConfigError(section.name, entry.key, entry.line, "duplicate key"))
            continue
        field = fields.get(entry.key)
        if field is None:
            errors.append(ConfigError(section.name, entry.key, entry.line,
                                      "unknown key" + _did_you_mean(entry.key, fields)))
            continue
        try:
            values[entry.key] = field.metadata["parse"](entry.value)
        except ValueError as e:
            errors.append(ConfigError(section.name, entry.key, entry.line, str(e)))
            failed.add(entry.key)
    return values, failed


def _built(kind, label, parsed, errors):
    """
    The model of a section read (`parsed`: cls, values, section, failed, and
    the model kept from before, or whether it read cleanly); kept on the
    section when it builds without a mistake.
    """
    cls, values, section, failed, kept = parsed
    if kept is not True and kept is not False:
        return kept
    before = len(errors)
    obj = _build(kind, label, cls, values, section, failed, errors)
    if kept and obj is not None and section is not None and len(errors) == before:
        section.model = (section.name, cls, obj, kind, label,
                         "%s %s" % (kind, label) if label else kind)
    return obj


def _build(kind, label, cls, values, section, failed, errors):
    required = [f.name for f in keys_of(cls) if f.default is REQUIRED]
    if any(k in failed for k in required):
        return None
    missing = [k for k in required if k not in values]
    name = section.name if section is not None else kind
    line = section.line if section is not None else 0
    for k in missing:
        errors.append(ConfigError(name, k, line, "is required" if section is not None
                                  else "is required (the section [%s] is missing)" % kind))
    if missing:
        return None
    # Keys that failed to parse are absent here: their defaults stand in so
    # the cross-checks still run; the error is already recorded.
    if label is not None:
        return cls(name=label, **values)
    return cls(**values)


def _cross_check(c, lines, errors, complete=True, declared=None, notes=None):
    """
    Checks between keys and sections: ranges inside the LAN, references.
    With sections that failed to load (`complete` false, those sections None)
    the groups of checks that need them are skipped, the others still run, so
    one pass reports as much as it can. With all loaded, a check that passed
    before with the same inputs is not run again (`notes`: allworx.config.noted).
    """

    def err(section, key, message):
        errors.append(ConfigError(section, key, lines.get((section, key)) or
                                  lines.get((section, None)) or 0, message))
    err.errors = errors

    if complete and notes is not None:
        run_checks(CROSS_CHECKS, c, err, declared or {}, notes)
        return
    for check in WHOLE_CHECKS:
        try:
            check(c, err, declared or {})
        except AttributeError:
            if complete:
                raise


def _check_network(c, err, declared):
    lan = c.lan.address
    if c.wan.mode != "disabled" and not c.wan.interface:
        err("wan", "interface", "is required when mode is %s" % c.wan.mode)
    if c.wan.interface and c.wan.interface == c.lan.interface:
        err("wan", "interface", "is the same interface as the LAN")
    if c.wan.mode == "static":
        if c.wan.address is None:
            err("wan", "address", "is required when mode is static")
        if c.wan.gateway is None:
            err("wan", "gateway", "is required when mode is static")
    if c.wan.address is not None and c.wan.address.network.overlaps(lan.network):
        err("wan", "address", "%s overlaps the LAN %s" % (c.wan.address.network, lan.network))
    if (c.wan.address is not None and c.wan.gateway is not None
            and c.wan.gateway not in c.wan.address.network):
        err("wan", "gateway", "%s is not in the WAN subnet %s" % (c.wan.gateway, c.wan.address.network))
    if c.lan.gateway is not None and c.lan.gateway not in lan.network:
        err("lan", "gateway", "%s is not in the LAN subnet %s" % (c.lan.gateway, lan.network))
    if c.lan.gateway is not None and c.lan.gateway == lan.ip:
        err("lan", "gateway", "is the server's own LAN address")
    # Security
    if c.security.mode != "lan-only" and c.wan.mode == "disabled":
        err("security", "mode", "%s needs a WAN: set [wan] mode to static or dhcp, "
            "or use lan-only" % c.security.mode)


def _check_services(c, err, declared):
    try:
        first, last = c.pool
        if first == last == c.lan_ip:
            err("dhcp", "range", "holds only the server's own address %s: no address "
                "is left to lend" % first)
    except ValueError as e:
        err("dhcp", "range", str(e))
    # DNS
    if c.dns.use_forwarders and c.dns.enabled and c.dns.primary is None:
        err("dns", "primary", "is required when use_forwarders = yes (the ISP's DNS server)")
    if c.security.mode == "lan-only" and c.dhcp.enabled and c.dns.primary is None:
        err("dns", "primary", "is required in lan-only mode: DHCP hands it out as the DNS server")
    low, high = c.sip.rtp_ports
    if low <= c.sip.port <= high:
        err("sip", "rtp_ports", "includes the SIP port %d" % c.sip.port)
    if c.mail.spam_reject <= c.mail.spam_threshold:
        err("mail", "spam_reject", "must be above spam_threshold (%s): mail scored between them "
            "goes to Junk" % format_score(c.mail.spam_threshold))


NO_ADMIN = ("no admin: give a user `admin = yes` (the admin pages and the API "
            "need one)")


def _check_users(c, err, declared):
    if not c.admins and c.web.admin_password is None:
        err("web", None, NO_ADMIN)
    extensions = {}
    for u in c.users.values():
        section = "user %s" % u.name
        if u.extension:
            if u.extension in extensions:
                err(section, "extension", "%s is already the extension of user %s"
                    % (u.extension, extensions[u.extension]))
            extensions[u.extension] = u.name
            if c.sip is not None and u.extension == c.sip.voicemail_number:
                err(section, "extension", "%s is the voicemail number" % u.extension)


def _check_aliases(c, err, declared):
    # Apart from the users' checks, so that changing an alias does not check every user.
    for a in c.aliases.values():
        section = "alias %s" % a.name
        if not a.to:
            err(section, "to", "names nobody")
        for target in a.to:
            if "@" in target:
                try:
                    parse_email(target)
                except ValueError as e:
                    err(section, "to", str(e))
            elif target not in declared.get("user", c.users) and target not in c.aliases:
                err(section, "to", "names unknown user or alias %r%s" % (
                    target, _did_you_mean(target, list(c.users) + list(c.aliases))))
        loop = _alias_loop(c, a.name)
        if loop:
            err(section, "to", "alias loop: %s" % " -> ".join(loop))


def _check_hosts_records(c, err, declared):
    for r in c.records.values():
        section = "record %s" % r.name
        if r.name in BUILTIN_NAMES or r.name == c.system.hostname:
            err(section, None, "%r is a built-in name of the zone" % r.name)
        if r.name in c.hosts:
            err(section, None, "%r is already a [host]" % r.name)
        if r.cname and (r.a or r.mx or r.txt):
            err(section, "cname", "a name with a cname can have no other records")
        if r.cname and r.name == "@":
            err(section, "cname", "the domain itself cannot be a cname")
        if not (r.a or r.mx or r.cname or r.txt):
            err(section, None, "has no records (a, mx, cname or txt)")
    macs, addrs = {}, {}
    for h in c.hosts.values():
        section = "host %s" % h.name
        if h.name in BUILTIN_NAMES or h.name == c.system.hostname:
            err(section, None, "%r is a built-in name of the zone" % h.name)
        if h.mac in macs:
            err(section, "mac", "%s is already reserved for host %s" % (h.mac, macs[h.mac]))
        macs[h.mac] = h.name
        if h.address is None:
            continue  # a named dynamic client
        if h.address in addrs:
            err(section, "address", "%s is already reserved for host %s" % (h.address, addrs[h.address]))
        addrs[h.address] = h.name
    lan = c.lan.address
    for h in c.hosts.values():
        section = "host %s" % h.name
        if h.address is None:
            continue
        if h.address not in lan.network:
            err(section, "address", "%s is not in the LAN subnet %s" % (h.address, lan.network))
        elif h.address in (lan.ip, lan.network.network_address, lan.network.broadcast_address):
            err(section, "address", "%s is not a usable host address" % h.address)


def _check_forwards(c, err, declared):
    ports = {}
    for f in c.forwards.values():
        k = (f.proto, f.wan_port)
        if k in ports:
            err("forward %s" % f.name, "wan_port", "%d/%s is already forwarded by %s"
                % (f.wan_port, f.proto, ports[k]))
        ports[k] = f.name
    for f in c.forwards.values():
        section = "forward %s" % f.name
        target = f.to[0]
        if isinstance(target, str):
            if target not in declared.get("host", c.hosts):
                err(section, "to", "names unknown host %r%s" % (
                    target, _did_you_mean(target, c.hosts)))
        elif target not in c.lan_network or target == c.lan_ip:
            err(section, "to", "%s is not a LAN device's address in %s" % (target, c.lan_network))


# ---------------------------------------------------------------- the phone system's numbers

def _complete(c, declared, *kinds):
    """Whether every declared record of `kinds` loaded (else lookups may miss)."""
    return all(set(declared.get(k, ())) <= set(getattr(c, RECORD_PLURALS[k])) for k in kinds)


def _internal_numbers(c):
    """[(number, what it is, section, key)] of everything dialled inside the office."""
    out = [(u.extension, "the extension of user %s" % u.name, "user %s" % u.name, "extension")
           for u in c.users.values() if u.extension]
    out.append((c.sip.voicemail_number, "the voicemail number", "sip", "voicemail_number"))
    out += [(g.number, "the number of group %s" % g.name, "group %s" % g.name, "number")
            for g in c.groups.values()]
    out += [(a.number, "the number of attendant %s" % a.name, "attendant %s" % a.name, "number")
            for a in c.attendants.values() if a.number]
    return out


def _check_numbering(c, err, declared):
    """Trunks' numbers, and numbers dialled inside that clash or would be dialled out."""
    owner = {}
    for t in c.trunks.values():
        for n in t.numbers:
            if n in owner:
                err("trunk %s" % t.name, "numbers", "%s is already a number of trunk %s"
                    % (n, owner[n]))
            owner.setdefault(n, t.name)
    for n in c.numbers.values():
        if n.name not in owner and _complete(c, declared, "trunk"):
            err("number %s" % n.name, None, "no [trunk] has %s in its numbers" % n.name)
    # Users' extensions and the voicemail number are checked with the users.
    taken = {}
    for number, what, section, key in _internal_numbers(c):
        if number in taken and section.split(" ", 1)[0] in ("group", "attendant"):
            err(section, key, "%s is already %s" % (number, taken[number]))
        taken.setdefault(number, what)
    if not declared.get("trunk", c.trunks):
        return          # nothing is dialled out
    prefix = c.sip.outbound_prefix
    for number, what, section, key in _internal_numbers(c):
        if number in EMERGENCY:
            err(section, key, "%s is an emergency number: it is always dialled out" % number)
        elif number.startswith(prefix):
            err(section, key, "%s starts with the outbound prefix %s: %s would be dialled out"
                % (number, prefix, number))


def _check_call_targets(c, err, declared):
    """TARGETs, ring group members, the operator and users' call forwarding."""
    users_ok = _complete(c, declared, "user")
    complete = _complete(c, declared, "user", "group", "attendant")
    names = set(declared.get("group", ())) | set(declared.get("attendant", ()))

    def check(section, key, target):
        if target is None:
            return None
        try:
            return c.resolve_target(target)
        except ValueError as e:
            if target.kind == "name" and target.value not in names:
                err(section, key, str(e) + _did_you_mean(target.value, names))
            elif complete and target.kind != "name":
                err(section, key, str(e))
            return None

    sip = c.sip
    if sip.operator and users_ok and c.user_by_extension(sip.operator) is None:
        err("sip", "operator", "no user has the extension %s" % sip.operator)
    for n in c.numbers.values():
        section = "number %s" % n.name
        check(section, "to", n.to)
        if n.to is None and c.operator_extension is None:
            err(section, "to", "is empty (the operator), but no user has an extension")
    for g in c.groups.values():
        section = "group %s" % g.name
        if not g.members:
            err(section, "members", "has no members")
        for m in g.members:
            if users_ok and c.user_by_extension(m) is None:
                err(section, "members", "no user has the extension %s" % m)
        if check(section, "fallback", g.fallback) == Target("group", g.name):
            err(section, "fallback", "is the group itself")
    for a in c.attendants.values():
        section = "attendant %s" % a.name
        for k in ["key_%d" % d for d in range(10)] + ["fallback", "after_hours"]:
            check(section, k, getattr(a, k))
    trunks = declared.get("trunk", c.trunks)
    for u in c.users.values():
        section = "user %s" % u.name
        for k in ("forward_always", "forward_busy", "forward_noanswer"):
            target = getattr(u, k)
            if target is None:
                continue
            if target.kind == "extension":
                if target.value == u.extension:
                    err(section, k, "is the user's own extension")
                else:
                    check(section, k, target)
            elif not trunks:
                err(section, k, "is an outside number, but there is no [trunk] to call it by")
            elif not u.outside:
                err(section, k, "is an outside number, but the user may not call outside "
                    "(outside = no)")
            elif not target.value.startswith(("+", sip.outbound_prefix)):
                err(section, k, "write an outside number as a phone dials it (the outbound "
                    "prefix %s first) or as +E.164" % sip.outbound_prefix)


def _alias_loop(c, start):
    """The path of a loop through aliases starting at `start`, or None."""
    def walk(name, path):
        for t in c.aliases[name].to:
            if t == name and t in c.users:
                continue  # the user behind an alias of the same name (guide 9.2)
            if t == start:
                return path + [t]
            if t in c.aliases and t not in path:
                found = walk(t, path + [t])
                if found:
                    return found
        return None
    return walk(start, [start])


def _check_users_aliases(c, err, declared):
    """Both, as one group: with sections missing, the aliases go unchecked when the users cannot be."""
    _check_users(c, err, declared)
    _check_aliases(c, err, declared)


# The groups run with some sections missing (each stops at the first it needs)...
WHOLE_CHECKS = (_check_network, _check_services, _check_users_aliases, _check_hosts_records,
                _check_forwards, _check_numbering, _check_call_targets, check_vpn, check_phones)
# ... and with all loaded, where each is run again only when what it reads changed.
CROSS_CHECKS = (_check_network, _check_services, _check_users, _check_aliases, _check_hosts_records,
                _check_forwards, _check_numbering, _check_call_targets, check_vpn, check_phones)


def reads_back(config, sections=None):
    """
    True when each section of `config`'s document not known to read back as
    it is (edited since it was read) reads back on its own as the model it
    gave; the others read back as they were read. Then the whole text reads
    back as `config`: a section's lines never reach into the next one's
    (rendering puts a blank line before each header). False when one does
    not, or it cannot tell: read the whole text back to name what differs.
    `sections`: the only ones that may be unchecked (those edited), if known.
    """
    doc = config.doc
    if doc is None:
        return False
    todo = [s for s in (doc.sections if sections is None else sections) if not s.verified]
    for section in todo:
        kept = section.model
        if kept is None or kept[0] != section.name:
            return False
        try:
            alone = IniDocument.parse("\n".join(section.lines()) + "\n")
        except IniSyntaxError:
            return False
        if alone.preamble or len(alone.sections) != 1 or alone.sections[0].name != section.name:
            return False
        again = alone.sections[0]
        errors = []
        values, failed = _read_section(again, kept[1], errors)
        obj = _build(again.kind, again.label, kept[1], values, again, failed, errors)
        if errors or obj is None or obj != kept[2]:
            return False
    for section in todo:
        section.verified = True
    return True
