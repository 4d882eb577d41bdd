# -*- test-case-name: allworx.tests.core.test_auth -*-
"""
One authentication story (twisted.cred): a checker over the office's users
that POP3, SMTP AUTH, LDAP bind and the admin pages share. Hash checks run in
a thread: argon2 is slow on purpose and must not stall the reactor.
"""

import hashlib

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer, threads
from twisted.python.failure import Failure
from zope.interface import implementer

from allworx.passwords import verify_password

# The user name the old admin login ([web] admin_password) answers to.
ADMIN = "admin"


class LegacyAdmin(str):
    """The avatar of a login with the old `[web] admin_password`: the text `admin`."""


LEGACY_ADMIN = LegacyAdmin(ADMIN)


def user_for_login(config, login):
    """The user a login names: `alice`, `alice@example.com`, or an extension."""
    login = (login.decode("utf-8", "replace") if isinstance(login, bytes) else login).strip().lower()
    local, sep, domain = login.partition("@")
    if sep and domain not in (config.system.domain,
                              "%s.%s" % (config.system.hostname, config.system.domain)):
        return None
    user = config.users.get(local)
    if user is None and local.isdigit():
        user = config.user_by_extension(local)
    return user


@implementer(ICredentialsChecker)
class OfficeUserChecker:
    """Checks a user name (or address, or extension) and password against tap.conf."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, office, deferToThread=threads.deferToThread):
        self.office = office
        self._defer = deferToThread

    def requestAvatarId(self, creds):
        user = user_for_login(self.office.config, creds.username)
        if user is None:
            # Hash anyway, so a wrong name costs the same time as a wrong password.
            d = self._defer(verify_password, _DUMMY_HASH, _text(creds.password))
            d.addCallback(lambda _: _refuse())
            return d
        d = self._defer(verify_password, user.password, _text(creds.password))
        d.addCallback(lambda ok: user.name if ok else _refuse())
        return d


@implementer(ICredentialsChecker)
class AdminChecker:
    """
    The admin pages' and API's login (SPEC 10): any user of tap.conf with his
    own password (by name, address or extension), giving his user name;
    whether he may use the pages is `is_admin`'s question, so a colleague
    who is no admin hears "not allowed" rather than "wrong password". The old
    `[web] admin_password`, while a config still has it, logs in `admin`.

    Logins that arrive while the same one (the same password against the
    same hashes) is being checked share that check: a script or monitor
    sending several requests at once with one password costs one argon2 run,
    not one each (each login still goes through the throttle on its own).
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, office, deferToThread=threads.deferToThread):
        self.office = office
        self._defer = deferToThread
        self._checking = {}     # digest of (password, hashes) -> Deferreds waiting for its check

    def requestAvatarId(self, creds):
        config = self.office.config
        name, password = _text(creds.username).strip(), _text(creds.password)
        user = user_for_login(config, name)
        legacy = config.web.admin_password if name.lower() == ADMIN else None
        # (hash, who it logs in): the old admin password first, then the user's own.
        tries = [(h, who) for h, who in ((legacy, LEGACY_ADMIN),
                                         (user.password if user is not None else None,
                                          user.name if user is not None else None)) if h]

        def check():
            if not tries:
                # Hash anyway, so a wrong name costs the same time as a wrong password.
                verify_password(_DUMMY_HASH, password)
            for hashed, who in tries:
                if verify_password(hashed, password):
                    return who
            return None
        key = hashlib.sha256("\0".join([password] + ["%s\0%s" % t for t in tries])
                             .encode("utf-8", "surrogatepass")).digest()
        d = defer.Deferred()
        waiting = self._checking.get(key)
        if waiting is not None:
            waiting.append(d)
        else:
            self._checking[key] = [d]
            self._defer(check).addBoth(self._checked, key)
        d.addCallback(lambda avatar: avatar if avatar is not None else _refuse())
        return d

    def _checked(self, result, key):
        for d in self._checking.pop(key):
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)


def is_admin(config, name):
    """Whether the user `name` may use the admin pages and the API now."""
    if name is None:
        return False
    if isinstance(name, LegacyAdmin) and config.web.admin_password is not None:
        return True
    user = config.users.get(name)
    return user is not None and user.admin


def admin_secret(config, name):
    """What a cached login of `name` was checked against (it changes with the password)."""
    user = config.users.get(name) if name else None
    return "%s\0%s" % (config.web.admin_password or "", user.password if user is not None else "")


def _refuse():
    raise error.UnauthorizedLogin("wrong user name or password")


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


_DUMMY_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$ERLlCFcNeGK550IgXEvC6g$"
               "wjiY1y6LH8GV9JTqJGT4odM/ewS7TCrb4fLs23rAQ64")
