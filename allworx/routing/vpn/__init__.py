"""The WireGuard tunnel of sites and remote access (SPEC 16): config as peers, the UAPI and netlink engines, the service."""
