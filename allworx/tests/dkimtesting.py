"""Shared pieces of the DKIM tests: keys made once per run, a dnsfunc answered from our records."""

import os

from allworx.dkimkeys import DkimKeys, mail_dns_records

_made = {}


def fixed_keys(selector="allworx"):
    """{kind: PEM bytes} for `selector`: made once per test run (RSA takes a moment), then reused."""
    if selector not in _made:
        directory = os.path.abspath(os.path.join("dkim-fixtures", selector))
        keys = DkimKeys(directory)
        keys.ensure(selector)
        out = {}
        for kind in ("rsa", "ed25519"):
            with open(os.path.join(keys.directory, "%s.%s.pem" % (selector, kind)), "rb") as f:
                out[kind] = f.read()
        _made[selector] = out
    return _made[selector]


def install_keys(data_dir, selector="allworx"):
    """Put `selector`'s fixed keys under data_dir/dkim, as `DkimKeys.ensure` would."""
    keys = DkimKeys(data_dir)
    os.makedirs(keys.directory, mode=0o700, exist_ok=True)
    for kind, pem in fixed_keys(selector).items():
        path = os.path.join(keys.directory, "%s.%s.pem" % (selector, kind))
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(pem)
    return keys


def dnsfunc_for(config, keys):
    """A dkimpy dnsfunc answering DKIM key questions from the records the zone publishes."""
    domain = config.system.domain
    table = {}
    for r in mail_dns_records(config, keys):
        name = domain if r.label == "@" else "%s.%s" % (r.label, domain)
        table[name + "."] = r.value.encode()

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return table.get(name if name.endswith(".") else name + ".")
    return dnsfunc
