# -*- test-case-name: allworx.tests.core.test_auth -*-
"""
One authentication story (twisted.cred): a checker over the office's users
that POP3, SMTP AUTH, LDAP bind and the admin pages share. Hash checks run in
a thread: argon2 is slow on purpose and must not stall the reactor.
"""

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import threads
from zope.interface import implementer

from allworx.passwords import verify_password

# The avatar id of the admin pages' own login ([web] admin_password).
ADMIN = "admin"


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
    """The admin pages' login: user `admin` with `[web] admin_password`."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, office, deferToThread=threads.deferToThread):
        self.office = office
        self._defer = deferToThread

    def requestAvatarId(self, creds):
        name = _text(creds.username)
        d = self._defer(verify_password, self.office.config.web.admin_password,
                        _text(creds.password))
        d.addCallback(lambda ok: ADMIN if ok and name == ADMIN else _refuse())
        return d


def _refuse():
    raise error.UnauthorizedLogin("wrong user name or password")


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


_DUMMY_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$ERLlCFcNeGK550IgXEvC6g$"
               "wjiY1y6LH8GV9JTqJGT4odM/ewS7TCrb4fLs23rAQ64")
