# -*- test-case-name: allworx.tests.mail.test_dmarc -*-
"""
DMARC (RFC 7489): does the From header's domain stand behind this message?

The policy record is looked up at `_dmarc.FROM-DOMAIN`, then, when there is
none, at `_dmarc.ORGANIZATIONAL-DOMAIN`. The organizational domain is the
registrable domain, found without the Public Suffix List: the last three
labels when the last two are one of a small built-in list of common
multi-label public suffixes (co.uk, com.au, ...) or a generic second level
under a country code (com.es, co.at, org.pl... SECOND_LEVELS), else the last
two labels. (Without the second rule, attacker.com.es and bank.com.es shared
"com.es" and were aligned.)
The message passes when SPF passed for a domain aligned with the From
domain, or a DKIM signature passed with an aligned d= (relaxed: the same
organizational domain; strict, adkim=s / aspf=s: the same name). The policy
is p=, or sp= for a subdomain when the record is the organizational
domain's; pct= is not sampled (the policy applies to every message).

Results: pass, fail, none (no record), temperror, permerror (no single
From domain); with the policy (none | quarantine | reject) when a record
was found. A From header with more than MAX_FROM_DOMAINS domains (RFC 7489
6.6.1) fails with quarantine at least: the ones past the limit are not
looked up, and one of them may be the forged name.
"""

import email.utils
import unicodedata

import attr
from twisted.internet import defer

from allworx.protocols.mail import dnslookup
from allworx.protocols.mail.authresults import field_name, split_head, unfolded_value
from allworx.protocols.mail.dnslookup import TempError

MULTI_LABEL_SUFFIXES = frozenset("""
co.uk org.uk me.uk ltd.uk plc.uk net.uk ac.uk gov.uk nhs.uk sch.uk
com.au net.au org.au edu.au gov.au asn.au id.au
co.nz net.nz org.nz govt.nz ac.nz
co.jp ne.jp or.jp ac.jp go.jp
com.br net.br org.br gov.br
com.cn net.cn org.cn gov.cn
co.in net.in org.in firm.in gen.in ind.in
co.za org.za gov.za
com.mx org.mx gob.mx
com.ar com.tr com.sg com.hk com.tw com.my com.ph com.pk com.ua com.co com.pe com.vn
co.kr or.kr co.il org.il co.id or.id co.th in.th
""".split())
SECOND_LEVELS = frozenset("com co net org gov edu ac or ne go gob mil ltd plc sch govt nhs".split())
MAX_FROM_DOMAINS = 5
_POLICIES = ("none", "quarantine", "reject")
_BADNESS = {"fail": 4, "temperror": 3, "permerror": 2, "none": 1, "pass": 0}


@attr.s(frozen=True, slots=True)
class DmarcResult:
    """result word, the From domain, the policy that applies ("" without a record), why."""

    result = attr.ib()
    domain = attr.ib()
    policy = attr.ib(default="")
    reason = attr.ib(default="")


def organizational_domain(domain):
    """The registrable domain of `domain` (see the module's note on suffixes)."""
    labels = domain.lower().rstrip(".").split(".")
    if len(labels) >= 3 and (".".join(labels[-2:]) in MULTI_LABEL_SUFFIXES or
                             len(labels[-1]) == 2 and labels[-2] in SECOND_LEVELS):
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _visible(text):
    """`text` without control, format (zero-width...) and space characters: a reader
    sees `bank.example\\x0b` or `bank.example\\u200b` as bank.example, so that is
    the domain whose policy applies (it was looked up as written: no record)."""
    return "".join(c for c in text if unicodedata.category(c)[0] not in "CZ")


def from_domains(message):
    """The distinct domains of the From header(s) of `message`, lower case."""
    fields, _ = split_head(message)
    values = [unfolded_value(f) for f in fields if field_name(f) == b"from"]
    out = []
    for _, address in email.utils.getaddresses(values):
        domain = _visible(address.rpartition("@")[2]).rstrip(">").lower().rstrip(".")
        if domain and domain not in out:
            out.append(domain)
    return out


def parse_record(text):
    """The tags of a DMARC record ({name: value}), or None when it is not one."""
    tags = {}
    for part in text.split(";"):
        name, eq, val = part.partition("=")
        if eq:
            tags.setdefault(name.strip().lower(), val.strip())
    if tags.get("v", "").upper() != "DMARC1" or not text.strip().lower().startswith("v"):
        return None
    return tags


@defer.inlineCallbacks
def find_record(resolver, domain):
    """(tags, the domain where found) or (None, None); TempError when the DNS fails."""
    org = organizational_domain(domain)
    for where in (domain,) if org == domain else (domain, org):
        answers = yield dnslookup.txt(resolver, "_dmarc." + where)
        records = [t for t in (parse_record(a) for a in answers) if t is not None]
        if len(records) == 1:
            return records[0], where
        if len(records) > 1:
            return None, None       # RFC 7489 6.6.3: more than one is none at all
    return None, None


def aligned(identity, from_domain, strict):
    identity = (identity or "").lower().rstrip(".")
    if strict:
        return identity == from_domain
    return bool(identity) and organizational_domain(identity) == organizational_domain(from_domain)


@defer.inlineCallbacks
def check_domain(resolver, domain, spf, dkim_results):
    """The DmarcResult for one From domain given SPF (SpfResult) and DKIM (DkimResults)."""
    try:
        tags, where = yield find_record(resolver, domain)
    except TempError as e:
        return DmarcResult("temperror", domain, "", str(e))
    if tags is None:
        return DmarcResult("none", domain, "", "no DMARC record")
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        policy = "none"
    if where != domain and tags.get("sp", "").lower() in _POLICIES:
        policy = tags["sp"].lower()
    spf_ok = spf is not None and spf.result == "pass" and \
        aligned(spf.domain, domain, tags.get("aspf", "r").lower() == "s")
    dkim_ok = [r.domain for r in dkim_results if r.result == "pass" and
               aligned(r.domain, domain, tags.get("adkim", "r").lower() == "s")]
    if spf_ok or dkim_ok:
        how = "DKIM d=%s" % dkim_ok[0] if dkim_ok else "SPF %s" % spf.domain
        return DmarcResult("pass", domain, policy, "aligned %s" % how)
    return DmarcResult("fail", domain, policy, "neither SPF nor DKIM aligned with %s" % domain)


@defer.inlineCallbacks
def check(resolver, message, spf, dkim_results):
    """
    The DmarcResult of a message: the worst over its From domains (a second
    From header cannot hide a failing one); permerror without any.
    """
    domains = from_domains(message)
    if not domains:
        return DmarcResult("permerror", "", "", "no From domain")
    results = []
    for domain in domains[:MAX_FROM_DOMAINS]:
        results.append((yield check_domain(resolver, domain, spf, dkim_results)))
    if len(domains) > MAX_FROM_DOMAINS:
        results.append(DmarcResult("fail", domains[MAX_FROM_DOMAINS], "quarantine",
                                   "more than %d From domains" % MAX_FROM_DOMAINS))
    return max(results, key=lambda r: (_BADNESS[r.result], _POLICIES.index(r.policy or "none")))
