"""A fake phone book and lease table, and the office the provisioning tests use."""


from allworx.config import parse_config
from allworx.protocols.provisioning.vendors.facts import TimeZone
from allworx.tests.confs import MINIMAL
from allworx.phonebook import Sighting

BERLIN = TimeZone(name="Europe/Berlin", posix="CET-1CEST,M3.5.0,M10.5.0/3", offset=3600)

PHONES = """
[phone 00:15:65:12:34:56]
user = alice
model = yealink
label = Front desk

[phone 0004f2aabbcc]
user = bob
model = polycom

[phone 000b82000001]
user = alice
model = grandstream

[phone 00:04:13:00:00:02]
user = bob
model = snom

[phone 001122000003]
user = alice
model = cisco-spa

[phone 02aa00000004]
user = bob
model = generic
label = Lab <phone>; "two"

[phone 001565000005]
user = bob
"""


def office_config(extra=""):
    return parse_config(MINIMAL + PHONES + extra)



class FakePhoneBook:
    """IPhoneBook: secrets "secret-MAC", sightings kept in a list."""

    def __init__(self):
        self.seen = []
        self.secrets = {}

    def secret(self, mac):
        return self.secrets.setdefault(mac, "secret-" + mac)

    def has_secret(self, mac):
        return mac in self.secrets

    def rotate(self, mac):
        self.secrets[mac] = "rotated-" + mac
        return self.secrets[mac]

    def sighted(self, mac, address, model, filename, user_agent=None):
        self.seen.append(Sighting(mac, address, model, filename, user_agent))

    def sightings(self):
        return {s.mac: s for s in self.seen}


class FakeLeases:
    """ILeaseTable: {mac: address} (plus a vendor class per MAC, if given); its
    MACs written as the DHCP server writes them, aa:bb:cc:dd:ee:ff."""

    def __init__(self, leases=None, vendor_classes=None):
        self.leases = dict(leases or {})
        self.vendor_classes = dict(vendor_classes or {})

    def active_leases(self):
        out = []
        for mac, address in self.leases.items():
            lease = {"mac": ":".join(mac[i:i + 2] for i in range(0, 12, 2)), "address": address, "hostname": None, "expires": 2e9,
                     "state": "bound"}
            if mac in self.vendor_classes:
                lease["vendor_class"] = self.vendor_classes[mac]
            out.append(lease)
        return out
