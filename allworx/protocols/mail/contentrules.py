# -*- test-case-name: allworx.tests.mail.test_contentrules -*-
"""
The built-in content rules of the spam filter (SPEC 18), each a name,
modest points and a text, SpamAssassin's way: header oddities, suspicious
URLs, MIME oddities, and points from the authentication results (SPF,
DKIM, DMARC) the inbound checks found.

Messages are parsed with the `email` package (compat32: it never raises on
garbage), but the work is bounded: at most MAX_PARTS parts looked at, a text
part's first TEXT_PART_LIMIT characters decoded, at most TEXT_LIMIT of text in all;
`parse_message` and `texts` are what the Bayes filter reads too.
"""

import binascii
import codecs
import email
import email.header
import email.policy
import email.utils
import html
import ipaddress
import quopri
import re
import time
import urllib.parse

from allworx.protocols.mail.attachments import MAX_PARTS, decoded_payload

PARSE_LIMIT = 32 * 1024 * 1024          # above it only the header is parsed
TEXT_PART_LIMIT = 512 * 1024            # of a bigger text part only this much is decoded
TEXT_LIMIT = 1024 * 1024                # text kept of one message in all

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

SHORTENERS = frozenset("""
    bit.ly tinyurl.com goo.gl t.co ow.ly is.gd buff.ly rebrand.ly cutt.ly shorturl.at
    tiny.cc rb.gy t.ly bl.ink s.id v.gd qr.ae lnkd.in
""".split())

COMMON_CHARSETS = frozenset("""
    us-ascii ascii utf-8 utf8 iso-8859-1 iso-8859-15 latin1 latin-1 windows-1252 cp1252
    iso-8859-2 windows-1250 utf-16 iso-8859-9 windows-1254
""".split())

_URL = re.compile(r"""(?i)\bhttps?://[^\s<>"'()]{1,2000}""")
_HREF = re.compile(r"""(?is)<a\s[^>]*?href\s*=\s*["']?([^"'\s>]+)""")
_RAW_TEXT = re.compile(r"(?i)<(script|style)\b")
_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
_DOMAIN_TEXT = re.compile(r"(?i)^\s*(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?:[/:?#]\S*)?\s*$")


# ------------------------------------------------------------ parsing

def parse_message(raw):
    """An `email.message.Message` of the bytes (compat32; only the header when huge)."""
    if len(raw) > PARSE_LIMIT:
        end = raw.find(b"\n\n")
        end2 = raw.find(b"\r\n\r\n")
        cut = min(e for e in (end, end2, PARSE_LIMIT) if e >= 0)
        raw = raw[:cut] + b"\n\n"
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def header_text(message, name):
    """A header decoded (RFC 2047 words) to text, "" when absent or undecodable."""
    value = message.get(name)
    if value is None:
        return ""
    if isinstance(value, email.header.Header):
        value = str(value)
    try:
        return str(email.header.make_header(email.header.decode_header(value)))[:2000]
    except Exception:
        return str(value)[:2000]


def _markup(text):
    """
    (start, end, kind) of each tag, comment, script and style element of
    HTML, in order. A scan with `str.find` that only moves forward, so its
    time is linear in the text whatever an attacker writes (regular
    expressions for the same thing backtrack quadratically on a text of
    unclosed `<a `, `<!--` or `<script`); whatever is left unclosed runs to
    the end, as in a browser. kind: "tag", "comment", or "raw".
    """
    lower = text.lower()
    pos = 0
    while True:
        start = text.find("<", pos)
        if start < 0:
            return
        if text.startswith("<!--", start):
            end = text.find("-->", start + 4)
            end = len(text) if end < 0 else end + 3
            kind = "comment"
        else:
            end = text.find(">", start + 1)
            if end < 0:
                yield start, len(text), "tag"
                return
            end += 1
            kind = "tag"
            raw = _RAW_TEXT.match(text, start, end)
            if raw is not None:
                close = lower.find("</" + raw.group(1).lower(), end)
                close = len(text) if close < 0 else text.find(">", close)
                end = len(text) if close < 0 else close + 1
                kind = "raw"
        yield start, end, kind
        pos = end


def strip_html(text, joint=" "):
    """Visible text of HTML (tags, scripts, styles and comments become `joint`; entities decoded)."""
    out, pos = [], 0
    for start, end, _ in _markup(text):
        out.append(text[pos:start])
        out.append(joint)
        pos = end
    out.append(text[pos:])
    return html.unescape("".join(out))


def links(text, limit=500):
    """[(href, label text)] of the first `limit` `<a href>` elements of HTML (linear time)."""
    out, opened = [], None          # opened: (href, where its label starts)
    for start, end, kind in _markup(text):
        if kind != "tag":
            continue
        tag = text[start:end]
        if opened is not None and tag[:3].lower() == "</a" and \
                (len(tag) == 4 or not tag[3].isalnum()):
            out.append((opened[0], strip_html(text[opened[1]:start], "")))
            opened = None
            if len(out) >= limit:
                break
            continue
        if opened is None:
            m = _HREF.match(tag)
            if m is not None:
                opened = (m.group(1), end)
    return out


def _charset_of(part):
    try:
        return (part.get_content_charset() or "us-ascii").lower()
    except Exception:
        return "us-ascii"


def text_parts(message):
    """[(part, content subtype, decoded text)] of the text/plain and text/html parts (bounded)."""
    out = []
    total = 0
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS or total >= TEXT_LIMIT:
            break
        if part.get_content_maintype() != "text" or part.is_multipart():
            continue
        sub = part.get_content_subtype()
        if sub not in ("plain", "html"):
            continue
        if part.get_filename() and "attachment" in str(part.get("Content-Disposition", "")).lower():
            continue
        data = _head_of(part, TEXT_PART_LIMIT)
        if data is None:
            continue
        charset = _charset_of(part)
        try:
            text = data.decode(charset, "replace")
        except (LookupError, ValueError):
            text = data.decode("latin-1")
        text = text[:TEXT_LIMIT - total]
        total += len(text)
        out.append((part, sub, text))
    return out


def _head_of(part, limit):
    """The part's decoded bytes; of a big part, only what its first `limit` characters give."""
    raw = part.get_payload()
    if not isinstance(raw, str) or len(raw) <= limit:
        return decoded_payload(part, limit)
    head = raw[:limit]
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        chars = re.sub(r"[^A-Za-z0-9+/]", "", head)
        return binascii.a2b_base64(chars[:len(chars) // 4 * 4])
    data = head.encode("ascii", "surrogateescape")
    if cte == "quoted-printable":
        return quopri.decodestring(data[:data.rfind(b"\n") + 1] or data)
    return data


def texts(message):
    """The readable text of the body: plain parts, and HTML parts with the tags stripped."""
    return [strip_html(text) if sub == "html" else text for _, sub, text in text_parts(message)]


# ------------------------------------------------------------ the rules

def _host_of(url):
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.strip(".").lower()


def _is_ip(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host.isdigit() and len(host) > 4      # http://3232235777/ is an address too


def _registered(host):
    """The last two labels of a host name (enough to compare link text and target)."""
    return ".".join(host.split(".")[-2:])


def header_rules(message, now=None):
    """Rules about the header: [(name, points, text)]."""
    hits = []
    if message.get("Date") is None:
        hits.append(("MISSING_DATE", 1.0, "no Date header"))
    else:
        try:
            when = email.utils.parsedate_to_datetime(str(message.get("Date"))).timestamp()
        except Exception:
            hits.append(("INVALID_DATE", 1.0, "the Date header cannot be read"))
        else:
            now = time.time() if now is None else now
            if when > now + 2 * 86400:
                hits.append(("DATE_IN_FUTURE", 1.5, "Date is more than two days ahead"))
    if message.get("Message-ID") is None:
        hits.append(("MISSING_MID", 0.5, "no Message-ID header"))
    if message.get("Subject") is None:
        hits.append(("MISSING_SUBJECT", 0.5, "no Subject header"))
    if message.get("To") is None and message.get("Cc") is None:
        hits.append(("MISSING_TO", 0.5, "no To or Cc header"))
    sender = header_text(message, "From")
    name, addr = email.utils.parseaddr(sender)
    if not addr or "@" not in addr:
        hits.append(("FROM_NO_ADDRESS", 1.5, "From has no usable address"))
    else:
        domain = addr.rsplit("@", 1)[1].lower()
        for other in _ADDRESS.findall(name):
            if other.lower() != domain:
                hits.append(("FROM_NAME_OTHER_ADDR", 2.0,
                             "From's display name shows another address"))
                break
    subject = header_text(message, "Subject")
    letters = [c for c in subject if c.isalpha()]
    if len(letters) >= 10 and all(c.isupper() for c in letters):
        hits.append(("SUBJ_ALL_CAPS", 1.0, "Subject is all capitals"))
    if subject.count("!") >= 3:
        hits.append(("SUBJ_EXCLAIM", 1.0, "Subject has three or more exclamation marks"))
    mailer = header_text(message, "X-Mailer")
    if "outlook" in mailer.lower() and message.get("Thread-Index") is None:
        hits.append(("FORGED_OUTLOOK", 1.5, "claims Outlook but lacks Outlook's headers"))
    return hits


def body_rules(message):
    """Rules about the body and its MIME structure: [(name, points, text)]."""
    hits = []
    parts = text_parts(message)
    subs = {sub for _, sub, _ in parts}
    if "html" in subs and "plain" not in subs:
        hits.append(("HTML_ONLY", 0.8, "HTML only, no text part"))
    for part, _, _ in parts:
        if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
            hits.append(("BASE64_TEXT", 0.8, "text body in base64"))
            break
    for part, _, _ in parts:
        charset = _charset_of(part)
        try:
            codecs.lookup(charset)
        except LookupError:
            hits.append(("UNKNOWN_CHARSET", 1.0, "text in an unknown charset"))
            break
        if charset not in COMMON_CHARSETS:
            hits.append(("UNUSUAL_CHARSET", 0.3, "text in an unusual charset"))
            break
    urls = []
    for _, sub, text in parts:
        urls.extend(_URL.findall(text))
        if GTUBE in text:
            hits.append(("GTUBE", 1000.0, "the GTUBE test string"))
    hosts = {_host_of(u) for u in urls[:1000]}
    if any(_is_ip(h) for h in hosts if h):
        hits.append(("URL_BARE_IP", 1.5, "a link to a bare IP address"))
    if any(h in SHORTENERS for h in hosts):
        hits.append(("URL_SHORTENER", 0.8, "a link through a URL shortener"))
    for _, sub, text in parts:
        if sub == "html" and _mismatched_link(text):
            hits.append(("HTML_LINK_MISMATCH", 2.0, "a link's text shows another site than its target"))
            break
    return hits


def _mismatched_link(text):
    for href, label in links(text):
        shown = _DOMAIN_TEXT.match(label)
        target = _host_of(html.unescape(href))
        if shown and target and _registered(shown.group(1).lower()) != _registered(target):
            return True
    return False


def auth_rules(facts):
    """Points from the authentication results of the inbound checks: [(name, points, text)]."""
    if facts is None:
        return []
    hits = []
    spf = (facts.spf or "none").lower()
    dmarc = (facts.dmarc or "none").lower()
    dkim = [str(r).lower() for _, _, r in (facts.dkim or ())]
    if spf == "fail":
        hits.append(("SPF_FAIL", 3.0, "SPF says the sending host may not send for the domain"))
    elif spf == "softfail":
        hits.append(("SPF_SOFTFAIL", 1.0, "SPF softfail for the sending host"))
    if dkim and "pass" not in dkim and any(r in ("fail", "permerror", "neutral") for r in dkim):
        hits.append(("DKIM_INVALID", 1.5, "a DKIM signature that does not verify"))
    if dmarc == "fail":
        hits.append(("DMARC_FAIL", 2.0, "DMARC fails (the domain asks for no action)"))
    if not dkim and spf in ("none", "neutral"):
        hits.append(("NO_AUTH", 0.3, "neither DKIM nor SPF vouches for the sender"))
    if "pass" in dkim and dmarc == "pass":
        hits.append(("DMARC_PASS", -0.5, "DMARC passes"))
    return hits


def evaluate(message, facts=None, now=None):
    """Every rule that hits: [(name, points, text)]."""
    return header_rules(message, now) + body_rules(message) + auth_rules(facts)
