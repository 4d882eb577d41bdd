# -*- test-case-name: allworx.tests.mail.test_queue -*-
"""
Delivery status notifications (RFC 3464): the bounce a sender gets when the
queue gives up on some recipients. Pure: a function from the facts to bytes.
"""

import email.utils

DAEMON = "MAILER-DAEMON"


def build_bounce(reporting_host, queue_id, sender, failures, original, now,
                 expired=False, max_original=64 * 1024):
    """
    The bounce message (bytes, LF line ends) to `sender` for `failures`, a list
    of (recipient, status code such as 5.1.1, diagnostic text). It carries the
    original message's header (and the start of its body, up to `max_original`).
    """
    boundary = "%s/%s" % (queue_id, reporting_host)
    date = email.utils.formatdate(now, localtime=False)
    head, sep, body = original.partition(b"\n\n")
    if len(original) > max_original:
        original_part = b"text/rfc822-headers", head + b"\n"
    else:
        original_part = b"message/rfc822", original
    reason = ("could not be delivered for 5 days" if expired
              else "could not be delivered")
    lines = [
        "From: Mail Delivery System <%s@%s>" % (DAEMON, reporting_host),
        "To: <%s>" % sender,
        "Subject: Undelivered Mail Returned to Sender",
        "Date: %s" % date,
        "Message-ID: <%s.bounce@%s>" % (queue_id, reporting_host),
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="%s"' % boundary,
        "",
        "This is a MIME-encapsulated message.",
        "",
        "--%s" % boundary,
        "Content-Type: text/plain; charset=utf-8",
        "",
        "This is the mail system at %s." % reporting_host,
        "",
        "Your message %s to the following recipients:" % reason,
        "",
    ]
    for rcpt, status, text in failures:
        lines.append("  <%s>: %s" % (rcpt, _one_line(text)))
    lines += [
        "",
        "--%s" % boundary,
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; %s" % reporting_host,
        "X-Allworx-Queue-ID: %s" % queue_id,
        "Arrival-Date: %s" % date,
        "",
    ]
    for rcpt, status, text in failures:
        lines += [
            "Final-Recipient: rfc822; %s" % rcpt,
            "Action: failed",
            "Status: %s" % status,
            "Diagnostic-Code: smtp; %s" % _one_line(text),
            "",
        ]
    lines += ["--%s" % boundary, "Content-Type: %s" % original_part[0].decode(), "", ""]
    text = "\n".join(lines).encode("utf-8")
    return text + original_part[1].rstrip(b"\n") + ("\n\n--%s--\n" % boundary).encode()


def _one_line(text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split())[:400]


def status_for(code, text=""):
    """An enhanced status code for an SMTP reply: its own if it starts with one, else 5.0.0/4.0.0."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    first = text.split(" ", 1)[0] if text else ""
    parts = first.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] in ("2", "4", "5"):
        return first
    return "%d.0.0" % (code // 100) if code and code >= 400 else "4.4.1"
