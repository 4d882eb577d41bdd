# -*- test-case-name: allworx.tests.mail.test_aliases -*-
"""
Who a mail address of the office means (pure functions over a Config).

An address is local when its domain is the office's domain or
`hostname.domain`; its local part then names a user, an alias, or nobody.
Aliases expand to users and outside addresses (guide 9.2): an alias named like
a user that lists that user keeps the user's local copy and sends the other
copies out; aliases may name other aliases; each alias is expanded once per
message and a loop is an error. A user's `email_forward` adds an outside copy.
"""

import attr

# Names every mail domain must accept (RFC 5321 4.5.1, RFC 2142); unless an
# alias of that name says otherwise they reach the user named admin, else the
# address `[system] admin_email`, else the first user of tap.conf.
ROLE_NAMES = ("postmaster", "abuse")
ADMIN_USER = "admin"
MAX_DEPTH = 8


class AliasLoop(ValueError):
    """An alias names itself, directly or through others; `path` shows how."""

    def __init__(self, path):
        self.path = tuple(path)
        ValueError.__init__(self, "alias loop: %s" % " -> ".join(self.path))


@attr.s(frozen=True, slots=True)
class Expansion:
    """The local users (names) and outside addresses a set of recipients reaches."""

    users = attr.ib(default=())
    external = attr.ib(default=())
    unknown = attr.ib(default=())

    def __add__(self, other):
        return Expansion(_merge(self.users, other.users),
                         _merge(self.external, other.external),
                         _merge(self.unknown, other.unknown))


def _merge(a, b):
    seen = dict.fromkeys(a)
    for item in b:
        seen.setdefault(item, None)
    return tuple(seen)


def local_domains(config):
    """The domains whose mail this server keeps: `example.com`, `allworx.example.com`."""
    domain = config.system.domain
    return (domain, "%s.%s" % (config.system.hostname, domain))


def split_address(address):
    """`Alice@Example.COM` -> ('alice', 'example.com'); a bare name has domain ''."""
    text = address.decode("utf-8", "replace") if isinstance(address, bytes) else address
    text = text.strip().strip("<>").strip()
    local, sep, domain = text.rpartition("@")
    if not sep:
        return text.lower(), ""
    return local.lower(), domain.lower().rstrip(".")


def local_part(config, address):
    """The local part when `address` belongs to the office (or is a bare name), else None."""
    local, domain = split_address(address)
    if domain and domain not in local_domains(config):
        return None
    return local


def classify(config, address):
    """
    'local' (a user or alias of the office), 'unknown' (the office's domain but
    nobody there) or 'external' (another domain).
    """
    local = local_part(config, address)
    if local is None:
        return "external"
    if local in config.users or local in config.aliases:
        return "local"
    if local in ROLE_NAMES and _role_target(config) is not None:
        return "local"
    return "unknown"


def expand(config, recipients):
    """
    The Expansion of `recipients` (addresses or bare names): users deduplicated,
    outside addresses deduplicated, names that match nobody in `unknown`.
    Raises AliasLoop when aliases lead back to themselves.
    """
    total = Expansion()
    done_aliases = set()
    for address in recipients:
        local = local_part(config, address)
        if local is None:
            total += Expansion(external=("%s@%s" % split_address(address),))
            continue
        total += _expand_local(config, local, (), done_aliases)
    return total


def _expand_local(config, name, path, done):
    if name in config.aliases:
        if name in path:
            raise AliasLoop(path + (name,))
        if len(path) >= MAX_DEPTH:
            raise AliasLoop(path + (name,))
        if name in done:
            return Expansion()  # each alias once per message
        done.add(name)
        out = Expansion()
        for target in config.aliases[name].to:
            if "@" in target:
                local = local_part(config, target)
                if local is None:
                    out += Expansion(external=(target.strip().lower(),))
                    continue
                target = local
            if target == name and name in config.users:
                out += _user(config, name)   # the push model's local copy (guide 9.2)
            else:
                out += _expand_local(config, target, path + (name,), done)
        return out
    if name in config.users:
        return _user(config, name)
    if name in ROLE_NAMES:
        target = _role_target(config)
        if target is not None:
            if "@" in target:
                return Expansion(external=(target.lower(),))
            return _user(config, target)
    return Expansion(unknown=(name,))


def _role_target(config):
    """Who postmaster@ and abuse@ reach without an alias: a user name, an address or None."""
    if ADMIN_USER in config.users:
        return ADMIN_USER
    if config.system.admin_email:
        return config.system.admin_email
    return next(iter(config.users), None)


def _user(config, name):
    forward = config.users[name].email_forward
    return Expansion(users=(name,), external=(forward.lower(),) if forward else ())
