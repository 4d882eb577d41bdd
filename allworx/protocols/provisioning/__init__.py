"""
The provisioning service (SPEC 19): each phone's configuration file, made
from the office, served by HTTP(S) and TFTP on the LAN to the address that
holds the phone's DHCP lease.
"""
