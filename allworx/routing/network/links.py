# -*- test-case-name: allworx.tests.network.test_service -*-
"""
The kernel's network settings that the network service changes, and a ledger
of exactly what it changed so that it can put things back.

Four kinds of change, each a frozen value: `LinkUp`, `Address`,
`DefaultRoute` and `Sysctl`. `NetworkLedger.converge(desired)` makes the
kernel match a list of them, undoing the changes no longer wanted, and
`restore()` undoes everything it did and nothing else: an address that was
already on the interface stays, a default route it displaced comes back, a
sysctl gets its old value.

Netlink goes through pyroute2's `IPRoute` (any object with its methods will
do, which is how the tests run without a kernel). The calls are short and
synchronous, so they run on the reactor thread.
"""

import errno
import ipaddress
import os

import attr

FAMILY_INET = 2  # socket.AF_INET, the only family the office routes
MAIN_TABLE = 254
RTNH_F_ONLINK = 4


# ---------------------------------------------------------------- errors

class NetworkSettingError(Exception):
    """A change to the network could not be made; the message says why."""


class InterfaceMissing(NetworkSettingError):
    """The named interface is not there (wrong name in tap.conf, or unplugged)."""

    def __init__(self, ifname):
        NetworkSettingError.__init__(self, "interface %s does not exist" % ifname)
        self.ifname = ifname


class NotPermitted(NetworkSettingError):
    """The process lacks CAP_NET_ADMIN (or root) for a change."""

    def __init__(self, action):
        NetworkSettingError.__init__(
            self, "no permission to %s (needs root or CAP_NET_ADMIN)" % action)


def _netlink_error(e, action):
    """Our error for a pyroute2 NetlinkError raised while doing `action`."""
    code = getattr(e, "code", None)
    if code in (errno.EPERM, errno.EACCES):
        return NotPermitted(action)
    reason = os.strerror(code).lower() if isinstance(code, int) and code > 0 else str(e)
    return NetworkSettingError("cannot %s: %s" % (action, reason))


# ---------------------------------------------------------------- changes

@attr.s(frozen=True, slots=True)
class LinkUp:
    """Interface `ifname` is administratively up."""

    ifname = attr.ib()

    @property
    def interfaces(self):
        return (self.ifname,)

    def describe(self):
        return "%s up" % self.ifname


@attr.s(frozen=True, slots=True)
class Address:
    """Interface `ifname` carries `address` (an IPv4Interface, address and prefix)."""

    ifname = attr.ib()
    address = attr.ib(converter=ipaddress.IPv4Interface)

    @property
    def interfaces(self):
        return (self.ifname,)

    def describe(self):
        return "%s %s" % (self.ifname, self.address)


@attr.s(frozen=True, slots=True)
class DefaultRoute:
    """
    The main table's default route goes via `gateway` on `ifname`; `onlink`
    when the gateway is outside the interface's subnet (an ISP that hands
    out a /32, say) and is to be reached directly on the link anyway.
    """

    gateway = attr.ib(converter=ipaddress.IPv4Address)
    ifname = attr.ib()
    onlink = attr.ib(default=False, converter=lambda v: v in (True, "True", "true", 1))

    @property
    def interfaces(self):
        return (self.ifname,)

    def describe(self):
        return "default route via %s on %s%s" % (self.gateway, self.ifname,
                                                 " (on-link)" if self.onlink else "")


@attr.s(frozen=True, slots=True)
class Sysctl:
    """A value under /proc/sys, e.g. `net/ipv4/ip_forward` = `1`."""

    path = attr.ib()
    value = attr.ib()
    interface = attr.ib(default=None)  # the interface the setting belongs to, if any

    @property
    def interfaces(self):
        return (self.interface,) if self.interface else ()

    def describe(self):
        return "%s = %s" % (self.path.replace("/", "."), self.value)


# Order of application; removal runs the other way round.
APPLY_ORDER = (Sysctl, LinkUp, Address, DefaultRoute)


# ---------------------------------------------------------------- the kernel

class Netlink:
    """
    The few rtnetlink operations the office needs, over an IPRoute-like
    object, with errors turned into `NetworkSettingError`s that name the
    interface or the missing permission.
    """

    def __init__(self, ipr):
        self.ipr = ipr

    def close(self):
        self.ipr.close()

    def index(self, ifname):
        """The interface's index; InterfaceMissing if there is none by that name."""
        found = self.ipr.link_lookup(ifname=ifname)
        if not found:
            raise InterfaceMissing(ifname)
        return found[0]

    def exists(self, ifname):
        return bool(self.ipr.link_lookup(ifname=ifname))

    def _link(self, ifname):
        return list(self.ipr.get_links(self.index(ifname)))[0]

    def mac(self, ifname):
        """The interface's hardware address, `aa:bb:cc:dd:ee:ff`."""
        return self._link(ifname).get("IFLA_ADDRESS")

    def is_up(self, ifname):
        return bool(self._link(ifname)["flags"] & 1)  # IFF_UP

    def has_carrier(self, ifname):
        """IFF_LOWER_UP: a cable, or a veth peer, is there."""
        return bool(self._link(ifname)["flags"] & 0x10000)

    def set_link(self, ifname, up):
        action = "bring %s %s" % (ifname, "up" if up else "down")
        self._call(action, self.ipr.link, "set", index=self.index(ifname),
                   state="up" if up else "down")

    def addresses(self, ifname):
        """The IPv4 addresses on the interface, as IPv4Interface values."""
        out = []
        for msg in self.ipr.get_addr(index=self.index(ifname), family=FAMILY_INET):
            out.append(ipaddress.IPv4Interface("%s/%d" % (msg.get("IFA_ADDRESS"),
                                                          msg["prefixlen"])))
        return out

    def add_address(self, ifname, address):
        self._call("add %s to %s" % (address, ifname), self.ipr.addr, "add",
                   index=self.index(ifname), address=str(address.ip),
                   prefixlen=address.network.prefixlen)

    def remove_address(self, ifname, address):
        """Remove it; True if it was there."""
        try:
            self._remove("remove %s from %s" % (address, ifname), self.ipr.addr, "del",
                       index=self.index(ifname), address=str(address.ip),
                       prefixlen=address.network.prefixlen)
        except _Gone:
            return False
        return True

    def default_routes(self):
        """The main table's IPv4 default routes: (gateway or None, ifname or None, metric)."""
        names = {}
        out = []
        for msg in self.ipr.get_routes(family=FAMILY_INET, dst_len=0, table=MAIN_TABLE):
            if msg.get("dst_len", 0) != 0:
                continue
            oif = msg.get("RTA_OIF")
            if oif is not None and oif not in names:
                links = list(self.ipr.get_links(oif))
                names[oif] = links[0].get("IFLA_IFNAME") if links else None
            gw = msg.get("RTA_GATEWAY")
            out.append((ipaddress.IPv4Address(gw) if gw else None,
                        names.get(oif), msg.get("RTA_PRIORITY")))
        return out

    def add_default_route(self, gateway, ifname, metric=None, onlink=False):
        kw = {"priority": metric} if metric is not None else {}
        if onlink:
            kw["flags"] = RTNH_F_ONLINK
        self._call("add the default route via %s on %s" % (gateway, ifname),
                   self.ipr.route, "add", dst="0.0.0.0/0", gateway=str(gateway),
                   oif=self.index(ifname), **kw)

    def remove_default_route(self, gateway, ifname, metric=None):
        """Remove it; True if it was there."""
        kw = {"priority": metric} if metric is not None else {}
        try:
            index = self.index(ifname) if ifname else None
            route_kw = dict(kw, oif=index) if index is not None else kw
            if gateway is not None:
                route_kw["gateway"] = str(gateway)
            self._remove("remove the default route via %s" % gateway, self.ipr.route,
                       "del", dst="0.0.0.0/0", **route_kw)
        except (_Gone, InterfaceMissing):
            return False
        return True

    def _call(self, action, method, *args, **kw):
        try:
            return method(*args, **kw)
        except Exception as e:
            if getattr(e, "code", None) is None:
                raise
            raise _netlink_error(e, action)

    def _remove(self, action, method, *args, **kw):
        """Like _call, for a removal: `_Gone` when it is not there (any more)."""
        try:
            return method(*args, **kw)
        except Exception as e:
            code = getattr(e, "code", None)
            if code in (errno.ESRCH, errno.EADDRNOTAVAIL, errno.ENOENT):
                raise _Gone(action)
            if code is None:
                raise
            raise _netlink_error(e, action)


class _Gone(NetworkSettingError):
    """What was to be removed is not there (the kernel removed it already)."""


class Sysctls:
    """Reads and writes values under /proc/sys of this process's namespace."""

    _open = staticmethod(open)

    def __init__(self, root="/proc/sys"):
        self.root = root

    def _file(self, path):
        return os.path.join(self.root, path)

    def exists(self, path):
        return os.path.exists(self._file(path))

    def read(self, path):
        with self._open(self._file(path)) as f:
            return f.read().strip()

    def write(self, path, value):
        try:
            with self._open(self._file(path), "w") as f:
                f.write("%s\n" % value)
        except PermissionError:
            raise NotPermitted("write /proc/sys/%s" % path)
        except FileNotFoundError:
            raise NetworkSettingError("cannot set %s: /proc/sys/%s does not exist"
                                      % (path.replace("/", "."), path))


# ---------------------------------------------------------------- the ledger

@attr.s(slots=True)
class _Applied:
    """One change in force and how to undo it."""

    change = attr.ib()
    ours = attr.ib()             # False: it was so before us, undo leaves it
    previous = attr.ib(default=None)  # displaced route / old sysctl value


class NetworkLedger:
    """
    Applies network changes and remembers which of them it made, so that
    `restore()` undoes exactly those. `converge(desired)` returns
    (applied, removed, problems): the changes made now, the ones undone,
    and one sentence per change that could not be made.
    """

    def __init__(self, netlink, sysctls):
        self.netlink = netlink
        self.sysctls = sysctls
        self._applied = {}       # change -> _Applied
        self._sysctl_originals = {}  # path -> value before our first write
        self._displaced = {}     # DefaultRoute -> routes it displaced, while it is re-added

    @property
    def in_force(self):
        """The changes the ledger holds as applied, in application order."""
        return _ordered(self._applied)

    def original_sysctl(self, path):
        """The value `path` had before the ledger first wrote it (else: now)."""
        if path in self._sysctl_originals:
            return self._sysctl_originals[path]
        return self.sysctls.read(path)

    def converge(self, desired):
        desired = list(dict.fromkeys(desired))
        wanted = set(desired)
        removed, applied, problems = [], [], []
        for change in reversed(self.in_force):
            if change not in wanted:
                self._undo_into(change, removed, problems)
        self._forget_vanished()
        missing = set()
        for change in _ordered(desired):
            if change in self._applied:
                continue
            absent = [i for i in change.interfaces if not self._exists(i)]
            if absent:
                missing.update(absent)
                continue
            try:
                if self._apply(change).ours:
                    applied.append(change)
            except NetworkSettingError as e:
                problems.append(str(e))
        problems = ["interface %s does not exist" % i for i in sorted(missing)] + problems
        return applied, removed, list(dict.fromkeys(problems))

    def restore(self):
        """Undo every change this ledger made; returns (sentences, problems)."""
        removed, problems = [], []
        for change in reversed(self.in_force):
            self._undo_into(change, removed, problems)
        return removed, problems

    def _exists(self, ifname):
        return self.netlink.exists(ifname)

    def _forget_vanished(self):
        """
        Forget changes the kernel (or someone) took back, so they are made
        again: removing an address takes the routes through it along.
        """
        routes = []
        for change in self.in_force:
            if isinstance(change, Sysctl):
                continue
            if not self._in_effect(change, routes):
                record = self._applied.pop(change)
                if isinstance(change, DefaultRoute) and record.ours and record.previous:
                    self._displaced[change] = record.previous

    def _in_effect(self, change, routes):
        """Whether the kernel has `change` now (`routes`: a cache, filled on first use)."""
        if isinstance(change, Sysctl):
            try:
                return self.sysctls.read(change.path) == str(change.value)
            except OSError:
                return False
        if not self._exists(change.ifname):
            return False
        if isinstance(change, Address):
            return change.address in self.netlink.addresses(change.ifname)
        if isinstance(change, DefaultRoute):
            if not routes:
                routes.append(self.netlink.default_routes())
            return any(gw == change.gateway and dev == change.ifname
                       for gw, dev, _ in routes[0])
        return self.netlink.is_up(change.ifname)

    # -------------------------------------------------------- after a crash

    def snapshot(self):
        """What this ledger changed and how to undo it, as JSON-able data."""
        ours = []
        for change in self.in_force:
            record = self._applied[change]
            if record.ours:
                ours.append({"change": change_to_json(change),
                             "previous": _previous_to_json(change, record.previous)})
        return {"version": 1, "ours": ours}

    def adopt(self, snapshot):
        """
        Take over the changes a previous run recorded in `snapshot` (it may
        have been killed before it could undo them) that are still in force,
        so that they are undone like our own. Returns the changes adopted.
        """
        adopted, routes = [], []
        items = snapshot.get("ours", []) if isinstance(snapshot, dict) else []
        for item in items:
            try:
                change = change_from_json(item["change"])
                previous = _previous_from_json(change, item.get("previous"))
            except (KeyError, TypeError, ValueError):
                continue
            if change in self._applied or not self._in_effect(change, routes):
                continue
            self._applied[change] = _Applied(change, True, previous)
            if isinstance(change, Sysctl):
                self._sysctl_originals[change.path] = previous
            adopted.append(change)
        return adopted

    # -------------------------------------------------------- apply

    def _apply(self, change):
        handler = getattr(self, "_apply_" + type(change).__name__)
        record = self._applied[change] = handler(change)
        return record

    def _apply_Sysctl(self, change):
        current = self.sysctls.read(change.path)
        self._sysctl_originals.setdefault(change.path, current)
        if current != str(change.value):
            self.sysctls.write(change.path, change.value)
        ours = self._sysctl_originals[change.path] != str(change.value)
        return _Applied(change, ours, self._sysctl_originals[change.path])

    def _apply_LinkUp(self, change):
        if self.netlink.is_up(change.ifname):
            return _Applied(change, ours=False)
        self.netlink.set_link(change.ifname, up=True)
        return _Applied(change, ours=True)

    def _apply_Address(self, change):
        if change.address in self.netlink.addresses(change.ifname):
            return _Applied(change, ours=False)
        self.netlink.add_address(change.ifname, change.address)
        return _Applied(change, ours=True)

    def _apply_DefaultRoute(self, change):
        present = self.netlink.default_routes()
        if any(gw == change.gateway and dev == change.ifname for gw, dev, _ in present):
            return _Applied(change, ours=False)
        displaced = []
        for gw, dev, metric in present:
            if metric in (None, 0):
                # Same metric: ours could not be added beside it. It comes back on undo.
                self.netlink.remove_default_route(gw, dev, metric)
                displaced.append((gw, dev, metric))
        self.netlink.add_default_route(change.gateway, change.ifname, onlink=change.onlink)
        displaced = self._displaced.pop(change, []) + displaced
        return _Applied(change, ours=True, previous=displaced)

    # -------------------------------------------------------- undo

    def _undo_into(self, change, removed, problems):
        """Undo one change if it was ours; a sentence for `removed` or `problems`."""
        record = self._applied.pop(change)
        if not record.ours:
            if isinstance(change, Sysctl):
                self._sysctl_originals.pop(change.path, None)
            return
        try:
            getattr(self, "_undo_" + type(change).__name__)(record)
        except NetworkSettingError as e:
            problems.append(str(e))
        else:
            removed.append(_undone_text(record))

    def _undo_Sysctl(self, record):
        path = record.change.path
        if self.sysctls.read(path) != record.previous:
            self.sysctls.write(path, record.previous)
        self._sysctl_originals.pop(path, None)

    def _undo_LinkUp(self, record):
        if self.netlink.exists(record.change.ifname):
            self.netlink.set_link(record.change.ifname, up=False)

    def _undo_Address(self, record):
        if self.netlink.exists(record.change.ifname):
            self.netlink.remove_address(record.change.ifname, record.change.address)

    def _undo_DefaultRoute(self, record):
        c = record.change
        if self.netlink.exists(c.ifname):
            self.netlink.remove_default_route(c.gateway, c.ifname)
        for gw, dev, metric in record.previous or ():
            if dev is None or self.netlink.exists(dev):
                try:
                    self.netlink.add_default_route(gw, dev, metric)
                except NetworkSettingError:
                    pass  # its gateway went away with its address: nothing to put back


_KINDS = {cls.__name__: cls for cls in APPLY_ORDER}


def change_to_json(change):
    """A change as a dict of strings (its kind and fields)."""
    data = {"kind": type(change).__name__}
    for field in attr.fields(type(change)):
        value = getattr(change, field.name)
        data[field.name] = value if value is None or isinstance(value, bool) else str(value)
    return data


def change_from_json(data):
    """The change `change_to_json` wrote; ValueError/KeyError if it is not one."""
    cls = _KINDS[data["kind"]]
    return cls(**{f.name: data[f.name] for f in attr.fields(cls) if f.name in data})


def _previous_to_json(change, previous):
    if isinstance(change, DefaultRoute):
        return [[str(gw) if gw else None, dev, metric] for gw, dev, metric in previous or ()]
    return previous


def _previous_from_json(change, data):
    if isinstance(change, DefaultRoute):
        return [(ipaddress.IPv4Address(gw) if gw else None, dev, metric)
                for gw, dev, metric in data or ()]
    if isinstance(change, Sysctl):
        if not isinstance(data, str):
            raise ValueError("a sysctl needs its old value")
    return data


def _undone_text(record):
    change = record.change
    if isinstance(change, LinkUp):
        return "%s down again" % change.ifname
    if isinstance(change, Sysctl):
        return "%s back to %s" % (change.path.replace("/", "."), record.previous)
    return "%s removed" % change.describe()


def _ordered(changes):
    return sorted(changes, key=lambda c: APPLY_ORDER.index(type(c)))
