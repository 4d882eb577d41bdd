# -*- test-case-name: allworx.tests.web.test_sessions -*-
"""
Admin sessions, kept on the server and timed by the injected reactor clock
(no wall-clock reads, so tests drive them with task.Clock). The login
lock-out is the shared one, `allworx.guards.LoginThrottle`.
"""

import secrets

import attr

SESSION_COOKIE = b"allworx_session"


@attr.s(slots=True)
class Session:
    """One browser's session: who is logged in, its CSRF token, one-shot notices."""

    id = attr.ib()
    csrf = attr.ib()
    created = attr.ib()
    last_seen = attr.ib()
    user = attr.ib(default=None)     # None until a successful login
    notices = attr.ib(factory=list)

    def take_notices(self):
        """The notices queued for the next page shown, emptied."""
        out, self.notices = self.notices, []
        return out


class SessionStore:
    """
    Server-side sessions by random id. A session ends after `idle` seconds
    without a request or `lifetime` seconds after it began, whichever comes
    first; the store never holds more than `limit` sessions (oldest go first).
    """

    def __init__(self, clock, idle=30 * 60, lifetime=12 * 3600, limit=1000):
        self.clock = clock
        self.idle = idle
        self.lifetime = lifetime
        self.limit = limit
        self._sessions = {}

    def create(self, user=None):
        """A new session (its id is 256 random bits)."""
        now = self.clock.seconds()
        self._purge(now)
        while len(self._sessions) >= self.limit:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.id]
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, user)
        self._sessions[session.id] = session
        return session

    def get(self, session_id):
        """The live session with this id (touched), or None if unknown or expired."""
        if isinstance(session_id, bytes):
            session_id = session_id.decode("ascii", "replace")
        session = self._sessions.get(session_id or "")
        if session is None:
            return None
        now = self.clock.seconds()
        if self._expired(session, now):
            del self._sessions[session.id]
            return None
        session.last_seen = now
        return session

    def login(self, session, user):
        """Start a logged-in session in place of `session` (a new id: no fixation)."""
        if session is not None:
            self._sessions.pop(session.id, None)
        fresh = self.create(user)
        if session is not None:
            fresh.notices = list(session.notices)
        return fresh

    def end(self, session_id):
        """Forget a session (logout)."""
        if isinstance(session_id, bytes):
            session_id = session_id.decode("ascii", "replace")
        self._sessions.pop(session_id, None)

    def end_all(self):
        """Forget every session (the admin password changed)."""
        self._sessions.clear()

    def __len__(self):
        return len(self._sessions)

    def _expired(self, session, now):
        return now - session.last_seen > self.idle or now - session.created > self.lifetime

    def _purge(self, now):
        for session in [s for s in self._sessions.values() if self._expired(s, now)]:
            del self._sessions[session.id]


def tokens_match(expected, given):
    """Constant-time comparison of a CSRF token with what a form sent."""
    if not expected or not given:
        return False
    if isinstance(given, bytes):
        given = given.decode("ascii", "replace")
    return secrets.compare_digest(expected, given)
