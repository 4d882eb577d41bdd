# -*- test-case-name: allworx.tests.provisioning.test_vendors -*-
"""
The generic file `{mac}.baresip`: baresip's own lines in one file. A line
starting `<sip:` is a line of baresip's `accounts` file; every other line
that is not a comment is a line of its `config` (`key value`). Who reads it
splits it by that rule (the lab's phones do).
"""

MODEL = "generic"
COMMON = ()
CONTENT_TYPE = "text/plain; charset=utf-8"


def file_name(mac):
    return "%s.baresip" % mac


def _clean(text):
    # One line, no characters that end a baresip parameter or the line.
    return "".join(ch for ch in str(text) if ch.isprintable() and ch not in ";<>\"")


def render(f):
    host = f.server if f.port == 5060 else "%s:%d" % (f.server, f.port)
    transport = "" if f.transport == "udp" else ";transport=%s" % f.transport
    account = ("<sip:%s@%s%s>;auth_user=%s;auth_pass=%s;regint=%d;mwi=yes"
               % (f.extension, host, transport, f.extension, f.secret, f.register_every))
    lines = [
        "# allworx generic provisioning for %s" % f.mac,
        "# %s, extension %s%s" % (_clean(f.display_name), f.extension,
                                  ", " + _clean(f.label) if f.label else ""),
        "# voicemail %s" % f.voicemail,
        account,
        "dns_server %s:53" % f.dns,
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")
