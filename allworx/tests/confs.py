"""Config texts shared by the tests: a minimal valid office and builders."""

from allworx.passwords import sip_digest

# Precomputed so tests need not hash at import: the password is "admin-demo".
PW_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$ERLlCFcNeGK550IgXEvC6g$"
           "wjiY1y6LH8GV9JTqJGT4odM/ewS7TCrb4fLs23rAQ64")

# Alice's voicemail PIN "1234" as the server stores it (argon2 with the
# cheapest settings, so the tests that check it stay quick).
PIN_HASH = ("$argon2id$v=19$m=1024,t=1,p=1$hrYM4Ak+M9SG94zJS+x02w$"
            "/bOVINLyhnK6750EWh0Rx1sdCZAT3I/8h6Mpr1iNb+k")

# The office's network as every test config has it: the lab's addresses,
# a static WAN, firewall-nat. Test configs add their own sections after it.
NETWORK = """\
[system]
domain = example.com
hostname = allworx

[lan]
interface = lan0
address = 192.168.2.254/24

[wan]
interface = wan0
mode = static
address = 203.0.113.2/24
gateway = 203.0.113.1

[security]
mode = firewall-nat
"""

MINIMAL = NETWORK + """
[dns]
primary = 203.0.113.1

[web]
admin_password = {pw}

[user alice]
full_name = Alice Archer
extension = 101
voicemail_pin = {pin}
password = {pw}
sip_digest = {digest}

[user bob]
full_name = Bob Baker
extension = 102
password = {pw}

[alias sales]
to = alice bob
""".format(pw=PW_HASH, pin=PIN_HASH, digest=sip_digest("101", "example.com", "admin-demo"))


# The same office in today's words (SPEC 10): no [web] admin_password, alice
# is the admin.
ADMIN_USERS = MINIMAL.replace("[web]\nadmin_password = %s\n" % PW_HASH, "").replace(
    "[user alice]\n", "[user alice]\nadmin = yes\n")


def with_sections(extra, base=MINIMAL):
    """`base` with `extra` (more sections) appended."""
    return base + "\n" + extra
