# -*- test-case-name: allworx.tests.web.test_timestatus -*-
"""
The time server on the dashboard (SPEC 6, 20): one line saying what LAN
clients are told and why (the upstream followed, the host clock's offset
from it, when it was last polled and its stratum), and the clock alerts
from the same truth the time server answers by.
"""

from allworx.protocols.web.mailsecurity import rfc3339
from allworx.protocols.web.pagebase import ago_or_in

OFFSET_ALERT_S = 1.0        # a host clock this far off the upstream is worth saying


def _why_none(status):
    """Why no upstream is followed: the servers' last errors, or that none is named."""
    servers = status.get("servers") or []
    if not servers:
        return "no upstream named in [ntp] servers"
    return "no upstream answered its last 3 polls (%s)" % "; ".join(
        "%s: %s" % (s["name"], s.get("error") or "not polled yet") for s in servers)


def time_text(status, now):
    """The dashboard's "Time server" line for ITimeStatus.status()."""
    if not status.get("serving"):
        return "off ([ntp] enabled = no)"
    if status["source"] == "upstream":
        up = [s for s in status["servers"] if s["name"] == status["upstream"]]
        polled = up[0]["last_poll"] if up else None
        return ("following %s (%s, stratum %d): host clock offset %+.3f s, last polled %s; "
                "serving stratum %d" % (
                    status["upstream"], status["address"], status["upstream_stratum"],
                    status["offset_s"], ago_or_in(now, polled) or "never", status["stratum"]))
    if status["leap"] == 3:
        return ("%s; serving the host clock as not synchronised (leap indicator 3, stratum %d): "
                "the kernel says it is unsynchronised" % (_why_none(status), status["stratum"]))
    return "%s; serving the host clock (synchronised, says the kernel) at stratum %d" % (
        _why_none(status), status["stratum"])


def time_alerts(status, clock):
    """
    [(kind, message)]: the clock is not synchronised (what the time server
    answers by when it serves, else the kernel's `clock`), or the host clock
    is far off the upstream the time server follows.
    """
    if status is not None and status.get("serving"):
        if status["leap"] == 3:
            return [("clock_unsynchronised",
                     "The clock is not synchronised: %s and the kernel says the host clock is "
                     "unsynchronised, so the time server tells LAN clients not to trust it; "
                     "times in logs, mail and certificates may be wrong." % _why_none(status))]
        offset = status.get("offset_s")
        if offset is not None and abs(offset) >= OFFSET_ALERT_S:
            return [("clock_offset",
                     "The host clock is %+.1f s off the time server %s: LAN clients get the "
                     "corrected time, but logs, mail and certificates use the host clock."
                     % (offset, status["upstream"]))]
        return []
    if clock.get("synchronised") is False:
        return [("clock_unsynchronised", "The clock is not synchronised: times in logs, mail "
                 "and certificates may be wrong.")]
    return []


def time_json(status):
    """ITimeStatus.status() with its times in RFC 3339 UTC."""
    if status is None:
        return None
    return dict(status, servers=[dict(s, last_poll=rfc3339(s["last_poll"]),
                                      last_answer=rfc3339(s["last_answer"]))
                                 for s in status["servers"]])
