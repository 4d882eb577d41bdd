# -*- test-case-name: allworx.tests.dhcp.test_phoneoptions -*-
"""
Where a desk phone on the LAN finds its configuration (SPEC 19): the DHCP
options that point it at the provisioning service, chosen by the vendor
class the phone sends (option 60, matched without case as a substring).

- A phone of a known family gets the service's HTTP address,
  `http://LAN_ADDRESS:PORT/`, in option 66 (every family reads a URL there),
  whether or not it asked for the option: phones count on it. Families with
  a place of their own get it too:
  - Polycom: option 160, the boot server option its firmware prefers over 66
    (Polycom UC Software administrator's guide, "Boot Server": option 160,
    then 66).
  - Cisco SPA (and Linksys before it): option 160 with the full profile URL,
    `$MA` being the phone's macro for its MAC in lowercase hex (Cisco Small
    Business provisioning guide, "Profile Rules" and "Macro Expansion"), and
    option 150 (the TFTP server list its older firmware reads).
  - Snom: option 67 with the file name (`{mac}` is expanded by the phone to
    its MAC in capitals), and the same two tunnelled in option 43, which the
    phone prefers over the plain ones since firmware 7.3.17 (snom wiki,
    "Auto Provisioning/DHCP/Options": sub-options 66 and 67, NUL ended).
- Any other client (no vendor class, or one we do not know) that asks for
  option 66 gets the server's LAN address there: a TFTP server name, what
  phones that speak only TFTP expect.

Nothing is sent when `[provisioning] enabled = no`. Pure: config in, option
bytes out; the responder sends them on the LAN only.
"""

import attr

from allworx.protocols.dhcp import codec as c

# Vendor families by what their vendor class contains (lowercase), in the
# order they are tried. The names are the `model` values of `[phone]`.
VENDORS = (
    ("yealink", ("yealink",)),
    ("polycom", ("polycom",)),
    ("grandstream", ("grandstream",)),
    ("snom", ("snom",)),
    ("cisco-spa", ("cisco", "linksys")),
)

# The longest vendor class kept with a lease (shown on the pages).
MAX_VENDOR_CLASS = 64


def phone_vendor(raw):
    """The phone family (a `[phone] model`) of a vendor class (option 60 bytes or text), or None."""
    if not raw:
        return None
    text = raw.lower() if isinstance(raw, str) else bytes(raw).decode("latin-1").lower()
    for family, needles in VENDORS:
        if any(needle in text for needle in needles):
            return family
    return None


def vendor_class_text(raw):
    """A vendor class as printable text for the lease record (at most MAX_VENDOR_CLASS
    characters; other bytes dropped), or None when nothing printable is left."""
    if not raw:
        return None
    text = bytes(raw).decode("latin-1") if not isinstance(raw, str) else raw
    kept = "".join(ch for ch in text if " " <= ch <= "~").strip()[:MAX_VENDOR_CLASS].strip()
    return kept or None


def _encapsulated(items):
    """Option 43 sub-options (code, text), each value NUL ended as snom reads them."""
    out = bytearray()
    for code, text in items:
        value = text.encode("ascii") + b"\0"
        out += bytes((code, len(value))) + value
    return bytes(out)


@attr.s(frozen=True, slots=True)
class PhonePointers:
    """
    The provisioning options for one configuration: `for_family[family]`, the
    (code, raw) pairs always sent to a phone of that family, and `tftp`, the
    raw option 66 for any other client that asks for it; all empty when
    provisioning is off.
    """

    url = attr.ib()
    for_family = attr.ib()
    tftp = attr.ib()

    @classmethod
    def from_config(cls, config):
        settings = config.provisioning
        if not settings.enabled:
            return cls(url=None, for_family={}, tftp=None)
        lan = str(config.lan_ip)
        url = "http://%s:%d/" % (lan, settings.port)
        base = [(c.TFTP_SERVER_NAME, c.pack_option(c.TFTP_SERVER_NAME, url))]
        snom_file = "{mac}.xml"
        for_family = {family: list(base) for family, _ in VENDORS}
        for_family["polycom"].append((c.PROVISIONING_URL, c.pack_option(c.PROVISIONING_URL, url)))
        for_family["cisco-spa"] += [
            (c.PROVISIONING_URL, c.pack_option(c.PROVISIONING_URL, url + "spa$MA.xml")),
            (c.TFTP_SERVERS, c.pack_option(c.TFTP_SERVERS, [lan]))]
        for_family["snom"] += [
            (c.BOOTFILE_NAME, c.pack_option(c.BOOTFILE_NAME, snom_file)),
            (c.VENDOR_SPECIFIC, _encapsulated([(c.TFTP_SERVER_NAME, url),
                                               (c.BOOTFILE_NAME, snom_file)]))]
        return cls(url=url, for_family={f: tuple(v) for f, v in for_family.items()},
                   tftp=c.pack_option(c.TFTP_SERVER_NAME, lan))

    def options(self, family, requested):
        """
        The (code, raw) pairs to add to a reply for a client of `family` (None:
        unknown) whose parameter request list is `requested` (codes, or None).
        """
        if family is not None:
            return self.for_family.get(family, ())
        if self.tftp is not None and requested and c.TFTP_SERVER_NAME in requested:
            return ((c.TFTP_SERVER_NAME, self.tftp),)
        return ()
